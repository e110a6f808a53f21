package main

// The HTTP/1.1 side of the WebSocket handshake (RFC 6455 4), hand-written: the benchmark
// wants small per-connection buffers, which net/http's server does not give.

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
)

const (
	acceptGUID  = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
	maxHeadSize = 16 << 10
)

var errHeadTooLarge = errors.New("HTTP head too large")

type head struct {
	first   string // request line or status line
	headers textproto.MIMEHeader
}

// readHead reads an HTTP head (start line and headers up to the empty line). Lines may end
// in CRLF or LF; obs-fold is refused (nothing here sends it).
func readHead(r *bufio.Reader) (head, error) {
	h := head{headers: textproto.MIMEHeader{}}
	total := 0
	for i := 0; ; i++ {
		// ReadSlice keeps the reader's buffer small; a line longer than it is gathered
		// piece by piece.
		var line []byte
		for {
			part, err := r.ReadSlice('\n')
			line = append(line, part...)
			total += len(part)
			if total > maxHeadSize {
				return h, errHeadTooLarge
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return h, err
			}
			break
		}
		s := strings.TrimRight(string(line), "\r\n")
		if i == 0 {
			if s == "" {
				// Tolerate one empty line before a request (RFC 9112 2.2).
				i = -1
				continue
			}
			h.first = s
			continue
		}
		if s == "" {
			return h, nil
		}
		if s[0] == ' ' || s[0] == '\t' {
			return h, fmt.Errorf("obs-fold in HTTP head")
		}
		name, value, ok := strings.Cut(s, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return h, fmt.Errorf("bad header line %q", s)
		}
		h.headers.Add(name, strings.TrimSpace(value))
	}
}

// hasToken reports whether a comma-separated header (all its lines) names token.
func hasToken(h textproto.MIMEHeader, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

func acceptKey(key string) string {
	sum := sha1.Sum([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// checkClientHandshake validates an upgrade request as RFC 6455 4.2.1 asks; it returns
// the Sec-WebSocket-Key, or an error that is worth a 400.
func checkClientHandshake(h head) (string, error) {
	if !hasToken(h.headers, "Upgrade", "websocket") {
		return "", errors.New("no Upgrade: websocket")
	}
	if !hasToken(h.headers, "Connection", "upgrade") {
		return "", errors.New("no Connection: upgrade")
	}
	if v := h.headers.Values("Sec-Websocket-Version"); len(v) != 1 || v[0] != "13" {
		return "", errors.New("Sec-WebSocket-Version is not 13")
	}
	keys := h.headers.Values("Sec-Websocket-Key")
	if len(keys) != 1 {
		return "", errors.New("not exactly one Sec-WebSocket-Key")
	}
	raw, err := base64.StdEncoding.DecodeString(keys[0])
	if err != nil || len(raw) != 16 {
		return "", errors.New("Sec-WebSocket-Key is not the base64 of 16 bytes")
	}
	return keys[0], nil
}

// parseStatus returns the status code of an HTTP/1.1 status line.
func parseStatus(line string) (int, error) {
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || !strings.HasPrefix(proto, "HTTP/1.") || len(rest) < 3 {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	code, err := strconv.Atoi(rest[:3])
	if err != nil {
		return 0, fmt.Errorf("bad status line %q", line)
	}
	return code, nil
}
