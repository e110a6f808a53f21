package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func readOne(wire []byte, requireMask bool) (frame, error) {
	f, _, err := readFrame(bufio.NewReader(bytes.NewReader(wire)), nil, requireMask)
	return f, err
}

func TestAcceptKeyRFCExample(t *testing.T) {
	// RFC 6455 section 1.3.
	if got := acceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("acceptKey = %q", got)
	}
}

func TestFrameRoundTripLengths(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		for _, masked := range []bool{false, true} {
			payload := bytes.Repeat([]byte{0x5a}, n)
			wire := appendFrame(nil, true, opBinary, payload, masked, key)
			wantHdr := 2
			if n >= 126 {
				wantHdr += 2
			}
			if n >= 65536 {
				wantHdr += 6
			}
			if masked {
				wantHdr += 4
			}
			if len(wire) != wantHdr+n {
				t.Fatalf("n=%d masked=%v: frame of %d bytes, want %d", n, masked, len(wire),
					wantHdr+n)
			}
			if masked && n > 0 && bytes.Equal(wire[wantHdr:], payload) {
				t.Fatalf("n=%d: payload not masked on the wire", n)
			}
			f, err := readOne(wire, masked)
			if err != nil {
				t.Fatalf("n=%d masked=%v: %v", n, masked, err)
			}
			if !f.fin || f.opcode != opBinary || !bytes.Equal(f.payload, payload) {
				t.Fatalf("n=%d masked=%v: got fin=%v op=%d len=%d", n, masked, f.fin, f.opcode,
					len(f.payload))
			}
		}
	}
}

func TestReadFrameRefusesBadFrames(t *testing.T) {
	var key [4]byte
	cases := map[string][]byte{
		"unmasked to a server": appendFrame(nil, true, opText, []byte("x"), false, key),
		"reserved bit":         {0x80 | 0x40 | opText, 0x80, 0, 0, 0, 0},
		"unknown opcode":       {0x80 | 0x3, 0x80, 0, 0, 0, 0},
		"fragmented ping":      {opPing, 0x80, 0, 0, 0, 0},
		"long control frame": append([]byte{0x80 | opPing, 0x80 | 126, 0, 126},
			make([]byte, 130)...),
		"non-minimal 16-bit":    {0x80 | opText, 0x80 | 126, 0, 5},
		"non-minimal 64-bit":    {0x80 | opText, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5},
		"64-bit length top bit": {0x80 | opText, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0},
		"too large":             {0x80 | opText, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0},
	}
	for name, wire := range cases {
		if _, err := readOne(wire, true); !errors.Is(err, errProtocol) {
			t.Errorf("%s: err = %v, want a protocol error", name, err)
		}
	}
	// A client refuses masked frames from a server.
	wire := appendFrame(nil, true, opText, []byte("x"), true, [4]byte{9, 9, 9, 9})
	if _, err := readOne(wire, false); !errors.Is(err, errProtocol) {
		t.Errorf("masked to a client: err = %v", err)
	}
	// A truncated frame is an I/O error, not a success.
	wire = appendFrame(nil, true, opText, []byte("hello"), true, key)
	if _, err := readOne(wire[:len(wire)-1], true); err == nil {
		t.Errorf("truncated frame accepted")
	}
}

func TestReadHeadLongLineAndLimit(t *testing.T) {
	long := strings.Repeat("a", 3000)
	in := "GET / HTTP/1.1\r\nX-Long: " + long + "\r\nHost: h\r\n\r\n"
	h, err := readHead(bufio.NewReaderSize(strings.NewReader(in), 64))
	if err != nil || h.headers.Get("X-Long") != long || h.headers.Get("Host") != "h" {
		t.Fatalf("long header line: err=%v", err)
	}
	huge := "GET / HTTP/1.1\r\nX: " + strings.Repeat("b", maxHeadSize) + "\r\n\r\n"
	_, err = readHead(bufio.NewReaderSize(strings.NewReader(huge), 64))
	if err != errHeadTooLarge {
		t.Fatalf("huge head: err=%v", err)
	}
	folded := "GET / HTTP/1.1\r\n folded\r\n\r\n"
	if _, err := readHead(bufio.NewReader(strings.NewReader(folded))); err == nil {
		t.Fatalf("obs-fold accepted")
	}
}

// startEcho runs the echo server's connection loop on a real TCP listener.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var st echoStats
	go acceptLoop(ln, &st)
	return ln.Addr().String()
}

func rawExchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req)
	h, err := readHead(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	return h.first
}

func TestEchoServerHTTP(t *testing.T) {
	addr := startEcho(t)
	got := rawExchange(t, addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.Contains(got, " 200 ") {
		t.Errorf("healthz: %q", got)
	}
	if got := rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.Contains(got, " 426 ") {
		t.Errorf("plain GET: %q", got)
	}
	bad := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if got := rawExchange(t, addr, bad); !strings.Contains(got, " 400 ") {
		t.Errorf("short key: %q", got)
	}
	got = rawExchange(t, addr, "POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
	if !strings.Contains(got, " 405 ") {
		t.Errorf("POST: %q", got)
	}
}

func TestEchoServerWebSocket(t *testing.T) {
	addr := startEcho(t)
	tg, err := parseTarget("ws://"+addr+"/ws?a=b", headerList{"Origin: http://o"})
	if err != nil {
		t.Fatal(err)
	}
	ws, err := dial(tg, 512, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 32, 125, 126, 65536} {
		if err := ws.roundTrip(makePayload(n), 5*time.Second); err != nil {
			t.Fatalf("echo of %d bytes: %v", n, err)
		}
	}
	// A fragmented message comes back as the same fragments, joined by the reader.
	var key [4]byte
	ws.out = appendFrame(ws.out[:0], false, opText, []byte("hel"), true, key)
	ws.out = appendFrame(ws.out, true, opPing, []byte("p"), true, key)
	ws.out = appendFrame(ws.out, true, opContinuation, []byte("lo"), true, key)
	ws.c.Write(ws.out)
	ws.c.SetDeadline(time.Now().Add(5 * time.Second))
	f, _, err := readFrame(ws.r, nil, false)
	if err != nil || f.opcode != opText || f.fin || string(f.payload) != "hel" {
		t.Fatalf("first fragment: %+v %v", f, err)
	}
	f, _, err = readFrame(ws.r, nil, false)
	if err != nil || f.opcode != opPong || string(f.payload) != "p" {
		t.Fatalf("pong: %+v %v", f, err)
	}
	f, _, err = readFrame(ws.r, nil, false)
	if err != nil || f.opcode != opContinuation || !f.fin || string(f.payload) != "lo" {
		t.Fatalf("last fragment: %+v %v", f, err)
	}
	if err := ws.closeClean(5 * time.Second); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func TestEchoServerClosesOnUnmaskedFrame(t *testing.T) {
	addr := startEcho(t)
	tg, _ := parseTarget("ws://"+addr+"/", nil)
	ws, err := dial(tg, 512, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var key [4]byte
	ws.c.Write(appendFrame(nil, true, opText, []byte("x"), false, key))
	ws.c.SetDeadline(time.Now().Add(5 * time.Second))
	f, _, err := readFrame(ws.r, nil, false)
	if err != nil || f.opcode != opClose || len(f.payload) < 2 ||
		f.payload[0] != 0x03 || f.payload[1] != 0xea {
		t.Fatalf("want close 1002, got %+v %v", f, err)
	}
}

func TestDialRefusesWrongStatus(t *testing.T) {
	addr := startEcho(t)
	tg, _ := parseTarget("ws://"+addr+"/healthz", nil)
	// /healthz is answered 200, never upgraded: the handshake must fail.
	_, err := dial(tg, 512, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "status 200") {
		t.Fatalf("err = %v", err)
	}
	if _, err := parseTarget("wss://127.0.0.1:1/", nil); err == nil {
		t.Fatal("wss accepted")
	}
	if _, err := parseTarget("ws://127.0.0.1/", nil); err == nil {
		t.Fatal("URL without port accepted")
	}
}
