package main

// RFC 6455 framing, written for this benchmark: enough of the protocol to be a correct
// client and echo server (masking, 7/16/64-bit lengths, control frames), nothing more.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	// Larger frames are refused: nothing in the benchmark sends them, and a peer that
	// announces one is broken.
	maxPayload = 16 << 20
	// Control frames carry at most 125 bytes (RFC 6455 5.5).
	maxControlPayload = 125
)

var errProtocol = errors.New("websocket protocol error")

type frame struct {
	fin     bool
	opcode  byte
	masked  bool
	payload []byte // unmasked; aliases the caller's scratch buffer
}

// readFrame reads one frame from r into scratch (grown when too small; the grown slice is
// returned so the caller can keep it). Masked payloads are unmasked in place.
// requireMask: a server must refuse unmasked client frames (RFC 6455 5.1); a client must
// refuse masked server frames.
func readFrame(r *bufio.Reader, scratch []byte, requireMask bool) (frame, []byte, error) {
	var f frame
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return f, scratch, err
	}
	f.fin = hdr[0]&0x80 != 0
	if hdr[0]&0x70 != 0 {
		return f, scratch, fmt.Errorf("%w: reserved bits set (no extension was negotiated)",
			errProtocol)
	}
	f.opcode = hdr[0] & 0x0f
	f.masked = hdr[1]&0x80 != 0
	if f.masked != requireMask {
		return f, scratch, fmt.Errorf("%w: mask bit %v", errProtocol, f.masked)
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return f, scratch, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
		if n < 126 {
			return f, scratch, fmt.Errorf("%w: non-minimal 16-bit length", errProtocol)
		}
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return f, scratch, err
		}
		n = binary.BigEndian.Uint64(ext[:])
		if n>>63 != 0 || n < 65536 {
			return f, scratch, fmt.Errorf("%w: bad 64-bit length", errProtocol)
		}
	}
	if f.opcode >= opClose {
		if n > maxControlPayload || !f.fin {
			return f, scratch, fmt.Errorf("%w: bad control frame", errProtocol)
		}
	} else if f.opcode > opBinary {
		return f, scratch, fmt.Errorf("%w: unknown opcode %d", errProtocol, f.opcode)
	}
	if n > maxPayload {
		return f, scratch, fmt.Errorf("%w: frame of %d bytes", errProtocol, n)
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return f, scratch, err
		}
	}
	if uint64(cap(scratch)) < n {
		scratch = make([]byte, n)
	}
	f.payload = scratch[:n]
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, scratch, err
	}
	if f.masked {
		maskBytes(f.payload, key, 0)
	}
	return f, scratch, nil
}

// maskBytes XORs b with the masking key, starting at key offset pos (RFC 6455 5.3).
func maskBytes(b []byte, key [4]byte, pos int) {
	for i := range b {
		b[i] ^= key[(pos+i)&3]
	}
}

// appendFrame appends one complete frame to dst and returns it. With mask set, the payload
// is masked with key while copied (the caller's payload is left unchanged).
func appendFrame(dst []byte, fin bool, opcode byte, payload []byte, mask bool, key [4]byte) []byte {
	b0 := opcode & 0x0f
	if fin {
		b0 |= 0x80
	}
	var m byte
	if mask {
		m = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		dst = append(dst, b0, m|byte(n))
	case n < 65536:
		dst = append(dst, b0, m|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(n))
	default:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if mask {
		dst = append(dst, key[:]...)
		start := len(dst)
		dst = append(dst, payload...)
		maskBytes(dst[start:], key, 0)
	} else {
		dst = append(dst, payload...)
	}
	return dst
}

// closePayload builds a close frame's body: a status code and an optional reason.
func closePayload(code uint16, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	return append(b, reason...)
}
