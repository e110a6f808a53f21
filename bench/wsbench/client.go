package main

// The client side: `wsbench rtt` (echo round trips) and `wsbench hold` (idle connections).

import (
	"bufio"
	"bytes"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type headerList []string

func (h *headerList) String() string { return strings.Join(*h, ", ") }

func (h *headerList) Set(v string) error {
	name, _, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("header %q is not 'Name: value'", v)
	}
	*h = append(*h, v)
	return nil
}

type target struct {
	addr    string // host:port
	host    string // Host header
	path    string // path and query
	headers headerList
}

func parseTarget(raw string, headers headerList) (target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return target{}, err
	}
	if u.Scheme != "ws" {
		return target{}, fmt.Errorf("only ws:// URLs (got %q)", u.Scheme)
	}
	if u.Port() == "" {
		return target{}, errors.New("the URL needs an explicit port")
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if u.RawQuery != "" {
		path += "?" + u.RawQuery
	}
	return target{addr: u.Host, host: u.Host, path: path, headers: headers}, nil
}

type wsConn struct {
	c   net.Conn
	r   *bufio.Reader
	out []byte
	in  []byte
	rng *rand.Rand
}

func newRNG() *rand.Rand {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.New(rand.NewChaCha8(seed))
}

// dial opens a TCP connection and completes the WebSocket handshake.
func dial(t target, readBuf int, timeout time.Duration) (*wsConn, error) {
	c, err := net.DialTimeout("tcp", t.addr, timeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(timeout))
	ws := &wsConn{c: c, r: bufio.NewReaderSize(c, readBuf), rng: newRNG()}
	var raw [16]byte
	crand.Read(raw[:])
	key := base64.StdEncoding.EncodeToString(raw[:])
	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", t.path, t.host, key)
	for _, h := range t.headers {
		name, value, _ := strings.Cut(h, ":")
		fmt.Fprintf(&req, "%s: %s\r\n", strings.TrimSpace(name), strings.TrimSpace(value))
	}
	req.WriteString("\r\n")
	if _, err := c.Write(req.Bytes()); err != nil {
		c.Close()
		return nil, err
	}
	h, err := readHead(ws.r)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	code, err := parseStatus(h.first)
	if err != nil {
		c.Close()
		return nil, err
	}
	if code != 101 {
		c.Close()
		return nil, fmt.Errorf("handshake: status %d", code)
	}
	if !hasToken(h.headers, "Upgrade", "websocket") || !hasToken(h.headers, "Connection", "upgrade") {
		c.Close()
		return nil, errors.New("handshake: 101 without Upgrade/Connection")
	}
	if h.headers.Get("Sec-Websocket-Accept") != acceptKey(key) {
		c.Close()
		return nil, errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	c.SetDeadline(time.Time{})
	return ws, nil
}

func (ws *wsConn) send(opcode byte, payload []byte) error {
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], ws.rng.Uint32())
	ws.out = appendFrame(ws.out[:0], true, opcode, payload, true, key)
	_, err := ws.c.Write(ws.out)
	return err
}

// readMessage returns the next complete data message (fragments joined into ws.in's
// storage only when the message came in one frame; fragmented ones are copied). Pings are
// answered; a close frame ends with errPeerClosed.
var errPeerClosed = errors.New("peer sent close")

func (ws *wsConn) readMessage() ([]byte, error) {
	var msg []byte
	fragmented := false
	for {
		f, grown, err := readFrame(ws.r, ws.in, false)
		ws.in = grown
		if err != nil {
			return nil, err
		}
		switch f.opcode {
		case opPing:
			if err := ws.send(opPong, f.payload); err != nil {
				return nil, err
			}
			continue
		case opPong:
			continue
		case opClose:
			return nil, errPeerClosed
		case opContinuation:
			if !fragmented {
				return nil, fmt.Errorf("%w: continuation without a start", errProtocol)
			}
			msg = append(msg, f.payload...)
		default:
			if fragmented {
				return nil, fmt.Errorf("%w: new message inside a fragmented one", errProtocol)
			}
			if f.fin {
				return f.payload, nil
			}
			fragmented = true
			msg = append([]byte(nil), f.payload...)
		}
		if f.fin {
			return msg, nil
		}
	}
}

// closeClean sends close 1000 and waits (up to timeout) for the peer's close frame.
func (ws *wsConn) closeClean(timeout time.Duration) error {
	defer ws.c.Close()
	ws.c.SetDeadline(time.Now().Add(timeout))
	if err := ws.send(opClose, closePayload(1000, "")); err != nil {
		return err
	}
	for {
		_, err := ws.readMessage()
		if err == errPeerClosed {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// openAll opens n connections, parallel at a time; failures are counted, with a few
// messages kept.
func openAll(t target, n, parallel, readBuf int, echoSize int) ([]*wsConn, []string, int) {
	conns := make([]*wsConn, n)
	var next atomic.Int64
	var mu sync.Mutex
	errs := []string{}
	failed := 0
	var wg sync.WaitGroup
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				ws, err := dial(t, readBuf, 30*time.Second)
				if err == nil && echoSize > 0 {
					err = ws.roundTrip(makePayload(echoSize), 30*time.Second)
					if err != nil {
						ws.c.Close()
					}
				}
				if err != nil {
					mu.Lock()
					failed++
					if len(errs) < 5 {
						errs = append(errs, err.Error())
					}
					mu.Unlock()
					continue
				}
				conns[i] = ws
			}
		}()
	}
	wg.Wait()
	open := conns[:0]
	for _, c := range conns {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, errs, failed
}

func makePayload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

// roundTrip sends payload as one binary message and checks that the same bytes come back.
func (ws *wsConn) roundTrip(payload []byte, timeout time.Duration) error {
	ws.c.SetDeadline(time.Now().Add(timeout))
	defer ws.c.SetDeadline(time.Time{})
	if err := ws.send(opBinary, payload); err != nil {
		return err
	}
	got, err := ws.readMessage()
	if err != nil {
		return err
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo mismatch: sent %d bytes, got %d", len(payload), len(got))
	}
	return nil
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func cmdRTT(args []string) error {
	fs := flag.NewFlagSet("rtt", flag.ExitOnError)
	rawURL := fs.String("url", "", "ws://127.0.0.1:PORT/path")
	n := fs.Int("conns", 1, "connections, each with one message in flight")
	duration := fs.Float64("duration", 5, "seconds of round trips (after all connections are open)")
	size := fs.Int("size", 32, "message size in bytes")
	parallel := fs.Int("parallel", 16, "handshakes in flight while connecting")
	var headers headerList
	fs.Var(&headers, "header", "extra request header 'Name: value' (repeatable)")
	fs.Parse(args)
	t, err := parseTarget(*rawURL, headers)
	if err != nil {
		return err
	}
	if *n < 1 || *size < 0 || *duration <= 0 {
		return errors.New("rtt: --conns >= 1, --size >= 0, --duration > 0")
	}
	t0 := time.Now()
	conns, connErrs, failed := openAll(t, *n, *parallel, 4096+*size, 0)
	connectTime := time.Since(t0)
	start := time.Now()
	deadline := start.Add(time.Duration(*duration * float64(time.Second)))
	lat := make([][]time.Duration, len(conns))
	var errCount atomic.Int64
	var mu sync.Mutex
	errs := connErrs
	var wg sync.WaitGroup
	for i, ws := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := makePayload(*size)
			ws.c.SetDeadline(deadline.Add(10 * time.Second))
			samples := make([]time.Duration, 0, 4096)
			for {
				t1 := time.Now()
				if !t1.Before(deadline) {
					break
				}
				if err := ws.send(opBinary, payload); err != nil {
					recordErr(&errCount, &mu, &errs, err)
					break
				}
				got, err := ws.readMessage()
				if err != nil {
					recordErr(&errCount, &mu, &errs, err)
					break
				}
				if !bytes.Equal(got, payload) {
					recordErr(&errCount, &mu, &errs, errors.New("echo mismatch"))
					break
				}
				t2 := time.Now()
				if t2.After(deadline) {
					break // finished past the end: not counted
				}
				samples = append(samples, t2.Sub(t1))
			}
			lat[i] = samples
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var closeErrs atomic.Int64
	var cw sync.WaitGroup
	for _, ws := range conns {
		cw.Add(1)
		go func() {
			defer cw.Done()
			if ws.closeClean(5*time.Second) != nil {
				closeErrs.Add(1)
			}
		}()
	}
	cw.Wait()
	var all []time.Duration
	for _, s := range lat {
		all = append(all, s...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(p*float64(len(all))+0.5) - 1
		i = max(0, min(i, len(all)-1))
		return ms(all[i])
	}
	dur := time.Duration(*duration * float64(time.Second))
	printJSON(map[string]any{
		"conns": *n, "opened": len(conns), "connect_failed": failed, "size": *size,
		"duration_s": dur.Seconds(), "elapsed_s": elapsed.Seconds(),
		"connect_s":   connectTime.Seconds(),
		"round_trips": len(all), "rtt_per_s": float64(len(all)) / dur.Seconds(),
		"p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
		"errors": int(errCount.Load()) + failed, "close_errors": closeErrs.Load(),
		"error_samples": errs,
	})
	if len(conns) == 0 {
		return errors.New("rtt: no connection could be opened")
	}
	return nil
}

func recordErr(count *atomic.Int64, mu *sync.Mutex, errs *[]string, err error) {
	count.Add(1)
	mu.Lock()
	if len(*errs) < 5 {
		*errs = append(*errs, err.Error())
	}
	mu.Unlock()
}

func cmdHold(args []string) error {
	fs := flag.NewFlagSet("hold", flag.ExitOnError)
	rawURL := fs.String("url", "", "ws://127.0.0.1:PORT/path")
	n := fs.Int("conns", 1000, "connections to open and hold")
	parallel := fs.Int("parallel", 16, "handshakes in flight while connecting")
	echo := fs.Int("echo", 32, "bytes of one echo round trip on each connection once open (0: none)")
	var headers headerList
	fs.Var(&headers, "header", "extra request header 'Name: value' (repeatable)")
	fs.Parse(args)
	t, err := parseTarget(*rawURL, headers)
	if err != nil {
		return err
	}
	if *n < 1 || *parallel < 1 {
		return errors.New("hold: --conns >= 1, --parallel >= 1")
	}
	t0 := time.Now()
	// The client reads only handshakes, echoes and close frames: a small reader is enough.
	conns, errs, failed := openAll(t, *n, *parallel, 512, *echo)
	printJSON(map[string]any{"open": len(conns), "failed": failed,
		"open_s": time.Since(t0).Seconds(), "error_samples": errs})
	// Held until the driver closes our stdin (or dies, which closes it too).
	io.Copy(io.Discard, os.Stdin)
	t1 := time.Now()
	var lost atomic.Int64
	var lostErr atomic.Value
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < *parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(conns) {
					return
				}
				// A connection that does not answer its close was cut while held.
				if err := conns[i].closeClean(10 * time.Second); err != nil {
					lost.Add(1)
					lostErr.Store(err.Error())
				}
			}
		}()
	}
	wg.Wait()
	out := map[string]any{"closed": len(conns) - int(lost.Load()), "lost": lost.Load(),
		"close_s": time.Since(t1).Seconds()}
	if v := lostErr.Load(); v != nil {
		out["lost_sample"] = v
	}
	printJSON(out)
	return nil
}
