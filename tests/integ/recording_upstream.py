#!/usr/bin/env python3
"""A stand-in for code-server that records every byte it receives.

codehub's local spawner runs `local.code_server` as each user's server with code-server's
arguments (`--auth none --socket PATH --socket-mode 600 --user-data-dir D ... PROJECTS`).
This script takes the same arguments, listens where it is told (`--socket PATH`, or
`--bind-addr HOST:PORT`), answers the spawner's readiness probe (GET /healthz) and every
other request it can parse with a small 200, keep-alive.

For every connection it appends each raw byte it receives, before looking at it, to
`$RECORD_DIR/<user>-<pid>-<seq>.raw` (one file per connection, <seq> counting
connections), and when the connection ends it writes `<same name>.end` with why: `eof`
(the peer closed), `reset`, or `error: REASON` (this parser refused the bytes and closed).
The tests read those files and parse them with `parse_request()` below, the same strict
parser this server uses: it is the observer, not the system under test, so it accepts only
what a careful proxy should send (CRLF line ends, token names, one framing header, plain
chunk lines with no extensions and no trailers) and calls everything else an error.

WebSocket upgrades: a path containing `ws-refuse` gets 403 (the handshake refused, the
connection kept open for more requests); any other gets 101 and from then on the bytes are
only recorded. Python 3 standard library only."""

import base64
import hashlib
import itertools
import os
import re
import socket
import stat
import sys
import threading

TCHAR = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
HEX = re.compile(rb"^[0-9A-Fa-f]+$")
DIGITS = re.compile(rb"^[0-9]+$")
MAX_HEAD = 1 << 20
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ParseError(Exception):
    """The bytes are not a request a careful proxy would send."""


class Request:
    """One parsed request: its head and its body as the framing delivered it."""

    def __init__(self, method, target, version, headers, body, chunked, chunk_sizes, raw):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # [(name, value)] as sent, latin-1 text
        self.body = body
        self.chunked = chunked
        self.chunk_sizes = chunk_sizes
        self.raw = raw

    def all(self, name):
        """Every value of the header `name` (case-insensitive), in order."""
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def get(self, name):
        values = self.all(name)
        return values[0] if values else None

    def __repr__(self):
        return f"<Request {self.method} {self.target} {self.version} {self.headers!r} " \
               f"body={self.body[:80]!r}>"


def _find_crlf(buf, pos, limit):
    """Offset of the next CRLF at or after pos, None when it has not arrived yet. A bare CR
    or a bare LF on the way is an error."""
    i = pos
    while True:
        lf = buf.find(b"\n", i)
        cr = buf.find(b"\r", i)
        if lf < 0 and cr < 0:
            if len(buf) - pos > limit:
                raise ParseError("line too long")
            return None
        if cr < 0 or (0 <= lf < cr):
            raise ParseError("bare LF")
        if cr + 1 >= len(buf):
            return None  # a CR at the end: its LF may still come
        if buf[cr + 1:cr + 2] != b"\n":
            raise ParseError("bare CR")
        if cr - pos > limit:
            raise ParseError("line too long")
        return cr


def parse_request(buf, pos=0):
    """Parses one request from buf[pos:]. Returns (Request, end offset), or None when more
    bytes are needed. Raises ParseError on anything but a clean HTTP/1.x request."""
    start = pos
    eol = _find_crlf(buf, pos, MAX_HEAD)
    if eol is None:
        return None
    line = buf[pos:eol]
    parts = line.split(b" ")
    if len(parts) != 3 or not TCHAR.match(parts[0]) or not parts[1]:
        raise ParseError(f"malformed request line {line[:200]!r}")
    method, target, version = parts
    if any(c <= 0x20 or c >= 0x7F for c in target):
        raise ParseError("bad byte in target")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise ParseError(f"bad version {version[:20]!r}")
    pos = eol + 2
    headers = []
    while True:
        eol = _find_crlf(buf, pos, MAX_HEAD)
        if eol is None:
            return None
        line = buf[pos:eol]
        pos = eol + 2
        if line == b"":
            break
        if line[:1] in (b" ", b"\t"):
            raise ParseError("obs-fold")
        name, sep, value = line.partition(b":")
        if not sep or not TCHAR.match(name):
            raise ParseError(f"bad field name {line[:100]!r}")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            raise ParseError(f"control byte in {name!r}")
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    lower = [k.lower() for k, _ in headers]
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    if len(te) > 1 or len(cl) > 1:
        raise ParseError("duplicate framing header")
    if te and cl:
        raise ParseError("Content-Length with Transfer-Encoding")
    if "host" not in lower and version == b"HTTP/1.1":
        raise ParseError("no Host")
    chunk_sizes = []
    if te:
        if te[0] != "chunked":
            raise ParseError(f"Transfer-Encoding {te[0]!r}")
        body = bytearray()
        while True:
            eol = _find_crlf(buf, pos, 64)
            if eol is None:
                return None
            size_text = buf[pos:eol]
            if not HEX.match(size_text) or len(size_text) > 16:
                raise ParseError(f"bad chunk line {size_text[:80]!r}")
            size = int(size_text, 16)
            chunk_sizes.append(size)
            pos = eol + 2
            if size == 0:
                if len(buf) < pos + 2:
                    return None
                if buf[pos:pos + 2] != b"\r\n":
                    raise ParseError("trailer section or junk after the last chunk")
                pos += 2
                break
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise ParseError("chunk data not followed by CRLF")
            pos += size + 2
        body = bytes(body)
    elif cl:
        if not DIGITS.match(cl[0].encode("latin-1")):
            raise ParseError(f"Content-Length {cl[0]!r}")
        n = int(cl[0])
        if len(buf) < pos + n:
            return None
        body = bytes(buf[pos:pos + n])
        pos += n
    else:
        body = b""
    req = Request(method.decode(), target.decode(), version.decode(), headers, body, bool(te),
                  chunk_sizes, bytes(buf[start:pos]))
    return req, pos


def parse_all(data):
    """Parses a recorded byte stream. Returns (requests, rest, error): the requests read
    completely, the bytes after them, and the ParseError text (None when the rest is just
    the start of a request that never ended)."""
    reqs = []
    pos = 0
    while pos < len(data):
        try:
            got = parse_request(data, pos)
        except ParseError as e:
            return reqs, data[pos:], str(e)
        if got is None:
            break
        req, pos = got
        reqs.append(req)
    return reqs, data[pos:], None


# --- the server -----------------------------------------------------------------------------

_seq = itertools.count(1)
_seq_lock = threading.Lock()


class Recorder:
    def __init__(self, record_dir):
        self.dir = record_dir
        self.prefix = f"{os.environ.get('USER', 'user')}-{os.getpid()}"

    def open(self):
        with _seq_lock:
            n = next(_seq)
        if self.dir is None:
            return None, None
        base = os.path.join(self.dir, f"{self.prefix}-{n:06d}")
        return open(base + ".raw", "ab", buffering=0), base


def _response(status, reason, body=b"", extra=()):
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain",
            f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def serve_connection(conn, recorder):
    log, base = recorder.open()
    buf = bytearray()
    end = "eof"
    tunnel = False
    count = 0
    try:
        while True:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                end = "reset"
                break
            if not data:
                break
            if log is not None:
                log.write(data)
            if tunnel:
                continue
            buf += data
            while True:
                try:
                    got = parse_request(buf)
                except ParseError as e:
                    end = f"error: {e}"
                    return
                if got is None:
                    break
                req, used = got
                del buf[:used]
                count += 1
                reply, close, tunnel = answer(req, count)
                conn.sendall(reply)
                if close:
                    end = "closed after Connection: close"
                    return
                if tunnel:
                    break
    finally:
        try:
            conn.close()
        finally:
            if log is not None:
                log.close()
                with open(base + ".end", "w") as f:
                    f.write(end + "\n")


def answer(req, count):
    """The reply to one request: (bytes, close after it, tunnel from now on)."""
    conn_tokens = [t.strip().lower() for v in req.all("Connection") for t in v.split(",")]
    close = "close" in conn_tokens
    upgrade = (req.get("Upgrade") or "").lower()
    if upgrade == "websocket" and "upgrade" in conn_tokens:
        if "ws-refuse" in req.target:
            return _response(403, "Forbidden", b"refused\n"), False, False
        key = (req.get("Sec-WebSocket-Key") or "").encode("latin-1")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
        head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")
        return head.encode(), False, True
    body = b"" if req.method == "HEAD" else b"recorded\n"
    extra = [f"X-Recorder-Count: {count}", f"X-Recorder-Body-Length: {len(req.body)}"]
    if close:
        extra.append("Connection: close")
    return _response(200, "OK", body, extra), close, False


def parse_args(argv):
    """code-server's arguments: the ones that say where to listen; the rest is ignored."""
    opts = {}
    takes_value = {"--auth", "--socket", "--socket-mode", "--user-data-dir", "--extensions-dir",
                   "--bind-addr", "--port", "--host", "--config", "--log"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" in a:
            k, _, v = a.partition("=")
            opts[k] = v
        elif a in takes_value and i + 1 < len(argv):
            opts[a] = argv[i + 1]
            i += 1
        i += 1
    return opts


def listen(opts):
    if "--socket" in opts:
        path = opts["--socket"]
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, int(opts.get("--socket-mode", "600"), 8))
    else:
        addr = opts.get("--bind-addr", "127.0.0.1:8080")
        host, _, port = addr.rpartition(":")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host.strip("[]") or "0.0.0.0", int(port)))
    s.listen(512)
    return s


def main():
    opts = parse_args(sys.argv[1:])
    record_dir = os.environ.get("RECORD_DIR")
    if record_dir:
        os.makedirs(record_dir, exist_ok=True)
    recorder = Recorder(record_dir or None)
    server = listen(opts)
    print(f"recording upstream listening, recording to {record_dir}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve_connection, args=(conn, recorder), daemon=True).start()


if __name__ == "__main__":
    main()
