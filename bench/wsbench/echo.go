package main

// `wsbench echo`: the shared upstream. It stands in for code-server behind codehub's local
// spawner: GET /healthz answers 200 (the spawner polls it), any other GET carrying a valid
// handshake is upgraded, and every data frame is echoed back.

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
)

// A small reader: an idle connection then costs its goroutine's stack, this buffer and the
// kernel's socket, so tens of thousands of them stay cheap.
const echoReadBuf = 1024

type echoStats struct {
	conns, upgrades, frames, healthz atomic.Int64
}

func cmdEcho(args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	unixPath := fs.String("unix", "", "listen on this Unix socket path")
	tcpAddr := fs.String("tcp", "", "listen on this TCP address (127.0.0.1:PORT)")
	fs.Parse(args)
	if *unixPath == "" && *tcpAddr == "" {
		return errors.New("echo: give --unix PATH and/or --tcp ADDR")
	}
	var listeners []net.Listener
	if *unixPath != "" {
		ln, err := net.Listen("unix", *unixPath)
		if err != nil {
			return err
		}
		listeners = append(listeners, ln)
	}
	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			return err
		}
		listeners = append(listeners, ln)
	}
	var st echoStats
	for _, ln := range listeners {
		go acceptLoop(ln, &st)
	}
	// codehub stops a server with SIGTERM to its process group: close the listeners (which
	// removes the Unix socket file) and report what was served.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, ln := range listeners {
		ln.Close()
	}
	fmt.Fprintf(os.Stderr, "wsbench echo: %d connections, %d upgrades, %d frames, %d healthz\n",
		st.conns.Load(), st.upgrades.Load(), st.frames.Load(), st.healthz.Load())
	return nil
}

func acceptLoop(ln net.Listener, st *echoStats) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: report and go on, as a server would.
			fmt.Fprintf(os.Stderr, "wsbench echo: accept: %v\n", err)
			continue
		}
		st.conns.Add(1)
		go serveConn(c, st)
	}
}

func writeSimple(c net.Conn, status string, body string, close bool) error {
	conn := ""
	if close {
		conn = "Connection: close\r\n"
	}
	_, err := fmt.Fprintf(c,
		"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s",
		status, len(body), conn, body)
	return err
}

func serveConn(c net.Conn, st *echoStats) {
	defer c.Close()
	r := bufio.NewReaderSize(c, echoReadBuf)
	for {
		h, err := readHead(r)
		if err != nil {
			if err != io.EOF {
				writeSimple(c, "400 Bad Request", err.Error()+"\n", true)
			}
			return
		}
		method, rest, _ := strings.Cut(h.first, " ")
		target, proto, _ := strings.Cut(rest, " ")
		if !strings.HasPrefix(proto, "HTTP/1.") {
			writeSimple(c, "400 Bad Request", "bad request line\n", true)
			return
		}
		keepAlive := proto == "HTTP/1.1" && !hasToken(h.headers, "Connection", "close")
		if method != "GET" || h.headers.Get("Content-Length") != "" ||
			h.headers.Get("Transfer-Encoding") != "" {
			// A body is never expected here; not reading it means the connection must end.
			writeSimple(c, "405 Method Not Allowed", "only GET\n", true)
			return
		}
		path, _, _ := strings.Cut(target, "?")
		if path == "/healthz" {
			st.healthz.Add(1)
			if writeSimple(c, "200 OK", "ok\n", !keepAlive) != nil || !keepAlive {
				return
			}
			continue
		}
		if !hasToken(h.headers, "Upgrade", "websocket") {
			if writeSimple(c, "426 Upgrade Required", "a WebSocket endpoint\n", !keepAlive) != nil ||
				!keepAlive {
				return
			}
			continue
		}
		key, err := checkClientHandshake(h)
		if err != nil {
			writeSimple(c, "400 Bad Request", err.Error()+"\n", true)
			return
		}
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
		if _, err := io.WriteString(c, resp); err != nil {
			return
		}
		st.upgrades.Add(1)
		echoFrames(c, r, st)
		return
	}
}

// echoFrames echoes data frames (same opcode and FIN, unmasked), answers ping with pong and
// close with close, and ends at the first error.
func echoFrames(c net.Conn, r *bufio.Reader, st *echoStats) {
	var scratch, out []byte
	var nokey [4]byte
	for {
		f, grown, err := readFrame(r, scratch, true)
		scratch = grown
		if err != nil {
			if errors.Is(err, errProtocol) {
				out = appendFrame(out[:0], true, opClose, closePayload(1002, "protocol error"),
					false, nokey)
				c.Write(out)
			}
			return
		}
		st.frames.Add(1)
		switch f.opcode {
		case opPing:
			out = appendFrame(out[:0], true, opPong, f.payload, false, nokey)
		case opPong:
			continue
		case opClose:
			// Echo the status code (not the reason); a 1-byte body is malformed.
			var body []byte
			if len(f.payload) == 1 {
				body = closePayload(1002, "")
			} else if len(f.payload) >= 2 {
				body = f.payload[:2]
			}
			out = appendFrame(out[:0], true, opClose, body, false, nokey)
			c.Write(out)
			// The server closes the TCP connection first (RFC 6455 7.1.1).
			return
		default:
			out = appendFrame(out[:0], f.fin, f.opcode, f.payload, false, nokey)
		}
		if _, err := c.Write(out); err != nil {
			return
		}
		// Big messages must not leave big buffers behind on an idle connection.
		if cap(scratch) > 64<<10 {
			scratch = nil
		}
		if cap(out) > 64<<10 {
			out = nil
		}
	}
}
