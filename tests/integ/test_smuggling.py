"""Request smuggling and desync against the real proxy (issue 8, item 3).

One hub, one user, and as that user's "code-server" tests/integ/recording_upstream.py,
which writes every byte the proxy sends it to a file per connection. Each case sends raw
bytes to the hub, then a barrier request on a fresh connection, and then reads what the
upstream received since the case began (the barrier marks the end: whatever the proxy
forwarded for the case was written before it). Each case proves one of:

- refused: the client got the expected 4xx/5xx with `Connection: close`, the connection was
  closed, and the upstream saw no complete request (at most the head and whole chunks of a
  request whose body broke off, on an upstream connection that was then closed, never
  reused). A request whose framing is clean but whose target is refused (absolute-form,
  paths that leave the user's prefix) may keep the connection: then the next request on it
  must arrive upstream alone and clean;
- accepted: the upstream saw exactly the requests meant, each one clean (one framing
  header that matches the body it carries, no chunk extensions or trailers, no hop-by-hop
  headers, the hub's X-Forwarded-* and nothing the client claimed), and the bytes a
  smuggler hoped would become a second request never arrived as one.

The store does not matter here, so the module runs one SQLite hub of its own (a module
fixture, not make_hub, which would run every case once per store backend)."""

import base64
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import Hub, stop_workspaces
from recording_upstream import parse_all
from workspace_util import start_server

RECORDER = Path(__file__).resolve().with_name("recording_upstream.py")
NAME = "smug"
PASSWORD = "smugpass123"
MAX_HEAD = 4096
MAX_URL = 2048
MAX_HEADERS = 50
HOP_BY_HOP = ["connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "proxy-authorization", "proxy-authenticate"]
MARK = b"smuggled"


class Env:
    """The hub, the user's session and the recording directory."""

    def __init__(self, hub, cookie, rec_dir):
        self.hub = hub
        self.cookie = cookie
        self.rec_dir = rec_dir
        self.host = f"127.0.0.1:{hub.port}"
        self.prefix = f"/user/{NAME}"

    def auth(self):
        return (f"Host: {self.host}\r\nCookie: codehub-session={self.cookie}\r\n").encode()

    def fill(self, raw):
        """Replaces {P} (the workspace prefix), {A} (Host and session cookie lines) and
        {S} (a complete request for {P}/smuggled) in a template."""
        smuggled = b"GET {P}/" + MARK + b" HTTP/1.1\r\n{A}\r\n"
        raw = raw.replace(b"{S}", smuggled)
        raw = raw.replace(b"{A}", self.auth())
        return raw.replace(b"{P}", self.prefix.encode())


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smuggling")
    rec_dir = Path(tempfile.mkdtemp(prefix="rec-", dir="/tmp"))
    # Run the recorder with this interpreter, whatever the file's mode and shebang.
    launcher = tmp / "recording-code-server"
    launcher.write_text(f"#!/bin/sh\nexec {sys.executable} {RECORDER} \"$@\"\n")
    launcher.chmod(0o755)
    config = (f"http:\n  max_head_size: {MAX_HEAD}\n  max_url_length: {MAX_URL}\n"
              f"  max_headers: {MAX_HEADERS}\n"
              f"local:\n  code_server: {launcher}\n  init_venv: false\n  init_ssh_key: false\n"
              f"  env: [\"RECORD_DIR={rec_dir}\"]\n"
              "cull:\n  timeout: 0\n")
    hub = Hub(tmp, config=config)
    try:
        hub.start()
        s, _ = hub.login(NAME, PASSWORD)
        start_server(hub, s, NAME, timeout=60)
        e = Env(hub, s.cookies.get("codehub-session"), rec_dir)
        # The recorder is what answers: a request goes through and is recorded.
        snap = snapshot(e)
        c = talk(e, e.fill(b"GET {P}/hello HTTP/1.1\r\n{A}\r\n"))
        assert c.statuses() == [200] and c.responses[0][2] == b"recorded\n", c.responses
        seen = observe(e, snap)
        assert [r.target for r in seen.requests] == ["/hello"], seen
        yield e
    finally:
        code = hub.stop()
        stop_workspaces(hub.data_dir)
        if hub.data_dir.parent.name.startswith("chd-"):
            shutil.rmtree(hub.data_dir.parent, ignore_errors=True)
        shutil.rmtree(rec_dir, ignore_errors=True)
        if os.environ.get("CODEHUB_SANITIZED") and code not in (None, 0, -9):
            raise AssertionError(f"sanitized codehub exited {code}:\n{hub.log()[-4000:]}")


# --- the client side -------------------------------------------------------------------------

class Conn:
    """One client connection: the final responses read from it (1xx are kept apart)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.responses = []  # (status, {lower name: [values]}, body)
        self.interim = []
        self.eof = False

    def statuses(self):
        return [r[0] for r in self.responses]

    def _recv(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.time()))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _parse_one(self):
        if b"\r\n\r\n" not in self.buf:
            return None
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        if 100 <= status < 200 and status != 101:
            self.buf = rest
            self.interim.append(status)
            return "interim"
        if status in (101, 204, 304):
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"][0])
            if len(rest) < n:
                return None
            body, rest = rest[:n], rest[n:]
        elif "chunked" in headers.get("transfer-encoding", [""])[0].lower():
            body = b""
            pos = 0
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(rest[pos:eol].split(b";")[0], 16)
                if len(rest) < eol + 2 + size + 2:
                    return None
                body += rest[eol + 2:eol + 2 + size]
                pos = eol + 2 + size + 2
                if size == 0:
                    break
            rest = rest[pos:]
        else:
            if not self.eof:
                return None
            body, rest = rest, b""
        self.buf = rest
        self.responses.append((status, headers, body))
        return "final"

    def read(self, count, timeout=10):
        """Reads until `count` final responses arrived in all (or EOF, or the timeout)."""
        deadline = time.time() + timeout
        while len(self.responses) < count:
            got = self._parse_one()
            if got is not None:
                continue
            if self.eof or time.time() >= deadline or not self._recv(deadline):
                if self.eof:
                    self._parse_one()
                break
        return self

    def closed(self, timeout=10):
        """True when the server closes the connection within timeout."""
        deadline = time.time() + timeout
        while not self.eof and time.time() < deadline:
            self._recv(deadline)
        return self.eof

    def send(self, raw):
        try:
            self.sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass


def talk(e, raw, count=1, timeout=10):
    """Sends raw bytes on a new connection and reads `count` final responses."""
    s = socket.create_connection(("127.0.0.1", e.hub.port), timeout=timeout)
    c = Conn(s)
    c.send(raw)
    c.read(count, timeout)
    return c


# --- the upstream side -------------------------------------------------------------------------

class Seen:
    """What the upstream received between a snapshot and the barrier."""

    def __init__(self):
        self.requests = []  # complete requests, connection by connection
        self.partial = []   # (file name, bytes after the last complete request, how it ended)
        self.errors = []    # (file name, parse error, bytes)
        self.data = b""     # every byte received (the barrier's aside)

    def __repr__(self):
        return f"<Seen requests={self.requests!r} partial={self.partial!r} errors={self.errors!r}>"


def snapshot(e):
    return {p.name: p.stat().st_size for p in e.rec_dir.glob("*.raw")}


def _end_of(e, name):
    p = e.rec_dir / (name[:-4] + ".end")
    return p.read_text().strip() if p.exists() else None


def observe(e, snap, wait_closed=True):
    """Sends the barrier, then returns a Seen of everything since `snap`. Partly sent
    requests must end with their upstream connection closed (waited for)."""
    tag = uuid.uuid4().hex
    c = talk(e, e.fill(b"GET {P}/__barrier/" + tag.encode() + b" HTTP/1.1\r\n{A}\r\n"))
    assert c.statuses() == [200], f"barrier failed: {c.responses}\n{e.hub.log()[-3000:]}"
    c.sock.close()
    # The barrier was recorded before its answer left; give other connections' readers a
    # moment to write what they already hold, until nothing changes.
    last = None
    for _ in range(20):
        now = snapshot(e)
        if now == last:
            break
        last = now
        time.sleep(0.02)
    seen = Seen()
    barriers = 0
    for p in sorted(e.rec_dir.glob("*.raw")):
        data = p.read_bytes()[snap.get(p.name, 0):]
        if not data:
            continue
        reqs, rest, err = parse_all(data)
        for r in reqs:
            if r.get("User-Agent") == "codehub-spawner":
                continue
            if r.target == f"/__barrier/{tag}":
                barriers += 1
                continue
            seen.requests.append(r)
            seen.data += r.raw
        seen.data += rest
        if err is not None:
            seen.errors.append((p.name, err, rest))
        elif rest:
            seen.partial.append((p.name, rest, None))
    assert barriers == 1, f"the barrier did not arrive as one clean request: {seen}"
    if wait_closed:
        deadline = time.time() + 10
        for i, (name, rest, _) in enumerate(seen.partial):
            while _end_of(e, name) is None and time.time() < deadline:
                time.sleep(0.02)
            seen.partial[i] = (name, rest, _end_of(e, name))
    return seen


# --- assertions --------------------------------------------------------------------------------

def assert_refused(c, statuses):
    assert c.responses, f"no response (eof={c.eof}, bytes={c.buf[:200]!r})"
    status, headers, _ = c.responses[-1]
    assert status in statuses, (status, c.responses[-1])
    assert headers.get("connection") == ["close"], headers
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.closed(), "the connection stayed open after a refused request"


def assert_none_forwarded(seen):
    """No complete request and nothing malformed reached the upstream; a head that went
    ahead of a body that then broke off ended with its upstream connection closed."""
    assert seen.requests == [], seen
    assert seen.errors == [], seen
    for name, rest, end in seen.partial:
        assert end is not None, f"{name}: the incomplete request's connection stayed open"
        assert MARK not in rest, rest
    assert MARK not in seen.data, seen.data


def assert_clean(r, host=None, body=b""):
    """One forwarded request, as the proxy must rebuild it."""
    assert r.version == "HTTP/1.1", r
    assert r.target.startswith("/") and not r.target.startswith("//"), r.target
    assert MARK.decode() not in r.target, r
    for name in HOP_BY_HOP:
        assert r.all(name) == [] or (name == "transfer-encoding" and r.chunked), (name, r)
    for name in ("authorization", "forwarded", "x-real-ip", "expect"):
        assert r.all(name) == [], (name, r)
    # The hub's own values, once each; the client's never.
    xf = [k.lower() for k, _ in r.headers if k.lower().startswith("x-forwarded-")]
    assert sorted(xf) == ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"], r
    assert r.get("X-Forwarded-For") == "127.0.0.1", r
    assert r.get("X-Forwarded-Proto") == "http", r
    hosts = r.all("Host")
    assert len(hosts) == 1, r
    if host is not None:
        assert hosts == [host], r
        assert r.get("X-Forwarded-Host") == host, r
    for v in r.all("Cookie"):
        assert "codehub-" not in v.lower(), r
    # Framing: at most one header, and it says what was sent.
    te, cl = r.all("Transfer-Encoding"), r.all("Content-Length")
    assert len(te) + len(cl) <= 1, r
    if te:
        assert te == ["chunked"] and r.chunked
        assert all(n > 0 for n in r.chunk_sizes[:-1]) and r.chunk_sizes[-1] == 0, r
    elif cl:
        assert int(cl[0]) == len(r.body), r
    else:
        assert r.body == b"", r
    assert r.body == body, (r.body, body)


def run(e, raw, count=1, tail=b""):
    """Sends the filled template, then `tail` as is (bytes that must not be filled)."""
    snap = snapshot(e)
    c = talk(e, e.fill(raw) + tail, count)
    return c, snap


# --- refused requests: nothing reaches the upstream ------------------------------------------

BODY0 = b"0\r\n\r\n{S}"
REFUSED = [
    # CL.TE and TE.CL: both framings at once.
    ("cl-te", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n0\r\n\r\n{S}", {400}),
    ("te-cl", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n"
     b"\r\n5c\r\n{S}\r\n0\r\n\r\n", {400}),
    ("cl0-te", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"
     b"\r\n" + BODY0, {400}),
    ("cl-te-obfuscated", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5\r\n"
     b"Transfer-Encoding: xchunked\r\n\r\n" + BODY0, {400}),
    # TE.TE: every spelling a second parser might read differently.
    ("te-xchunked", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: xchunked\r\n\r\n" + BODY0,
     {501}),
    # A trailing HTAB is optional whitespace by RFC 9110, but http-parser 2.9.4 (which splits
    # every head) refuses it: a refusal, never a second reading.
    ("te-chunked-trailing-tab", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked\t\r\n"
     b"\r\n" + BODY0, {400}),
    ("te-chunkedx", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunkedx\r\n\r\n" + BODY0,
     {501}),
    ("te-chunked-identity", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked, identity"
     b"\r\n\r\n" + BODY0, {400}),
    ("te-identity-chunked", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: identity, chunked"
     b"\r\n\r\n" + BODY0, {501}),
    ("te-gzip-chunked", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: gzip, chunked\r\n\r\n"
     + BODY0, {501}),
    ("te-chunked-chunked", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked, chunked"
     b"\r\n\r\n" + BODY0, {400}),
    ("te-two-fields", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n" + BODY0, {400}),
    ("te-two-fields-identity", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n"
     b"Transfer-encoding: identity\r\n\r\n" + BODY0, {400}),
    ("te-empty", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: \r\n\r\n" + BODY0, {400}),
    ("te-quoted", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: \"chunked\"\r\n\r\n" + BODY0,
     {400}),
    ("te-parameter", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked;q=1\r\n\r\n" + BODY0,
     {400}),
    ("te-comma-first", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: ,chunked\r\n\r\n" + BODY0,
     {400}),
    ("te-vertical-tab", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: \x0bchunked\r\n\r\n"
     + BODY0, {400}),
    ("te-form-feed", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding: chunked\x0c\r\n\r\n" + BODY0,
     {400}),
    ("te-space-before-colon", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding : chunked\r\n\r\n"
     + BODY0, {400}),
    ("te-tab-before-colon", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding\t: chunked\r\n\r\n"
     + BODY0, {400}),
    ("te-obs-fold", b"POST {P}/x HTTP/1.1\r\n{A}Transfer-Encoding:\r\n chunked\r\n\r\n" + BODY0,
     {400}),
    ("te-http10", b"POST {P}/x HTTP/1.0\r\n{A}Transfer-Encoding: chunked\r\n\r\n" + BODY0,
     {400}),
    ("te-bare-cr-hidden", b"POST {P}/x HTTP/1.1\r\n{A}X-A: a\rTransfer-Encoding: chunked\r\n"
     b"\r\n" + BODY0, {400}),
    # Line ends.
    ("bare-cr-in-value", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\rb\r\n\r\n{S}", {400}),
    ("bare-cr-after-name", b"GET {P}/x HTTP/1.1\r\n{A}X-A\r: b\r\n\r\n{S}", {400}),
    ("bare-cr-request-line", b"GET {P}/x\r HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("bare-cr-line-end", b"GET {P}/x HTTP/1.1\r\n{A}X-A: b\r\r\n\r\n{S}", {400}),
    ("bare-lf-everywhere", b"GET {P}/x HTTP/1.1\n{A}\n{S}", {400}),
    ("bare-lf-one-field", b"GET {P}/x HTTP/1.1\r\n{A}X-A: b\n\r\n{S}", {400}),
    ("bare-lf-blank-line", b"GET {P}/x HTTP/1.1\r\n{A}\n{S}", {400}),
    ("bare-lf-request-line", b"GET {P}/x HTTP/1.1\n{A}\r\n{S}", {400}),
    ("obs-fold", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\r\n b\r\n\r\n{S}", {400}),
    ("obs-fold-tab", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\r\n\tb\r\n\r\n{S}", {400}),
    ("obs-fold-content-length", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length:\r\n 5\r\n\r\nhello",
     {400}),
    ("space-before-colon", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length : 5\r\n\r\nhello{S}",
     {400}),
    ("space-before-colon-host", b"GET {P}/x HTTP/1.1\r\nHost : evil\r\n{A}\r\n", {400}),
    # Content-Length.
    ("cl-duplicate-same", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5\r\nContent-Length: 5"
     b"\r\n\r\nhello", {400}),
    ("cl-duplicate-different", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5\r\n"
     b"Content-Length: 0\r\n\r\nhello", {400}),
    ("cl-duplicate-case", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 0\r\n"
     b"content-length: 5\r\n\r\nhello", {400}),
    ("cl-list", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5, 5\r\n\r\nhello", {400}),
    ("cl-negative", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: -1\r\n\r\n{S}", {400}),
    ("cl-huge", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 99999999999999999999999\r\n\r\n{S}",
     {400}),
    ("cl-int64-overflow", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 9223372036854775808\r\n"
     b"\r\n{S}", {400}),
    ("cl-non-numeric", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: abc\r\n\r\n{S}", {400}),
    ("cl-plus", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: +5\r\n\r\nhello{S}", {400}),
    ("cl-hex", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 0x5\r\n\r\nhello{S}", {400}),
    ("cl-decimal", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5.0\r\n\r\nhello{S}", {400}),
    ("cl-inner-space", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5 5\r\n\r\nhello{S}", {400}),
    ("cl-empty", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: \r\n\r\n{S}", {400}),
    # NUL and other bytes where they do not belong.
    ("nul-in-value", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\x00b\r\n\r\n{S}", {400}),
    ("nul-in-name", b"GET {P}/x HTTP/1.1\r\n{A}X-\x00A: b\r\n\r\n{S}", {400}),
    ("nul-in-target", b"GET {P}/x\x00y HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("del-in-value", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\x7fb\r\n\r\n{S}", {400}),
    ("escape-in-value", b"GET {P}/x HTTP/1.1\r\n{A}X-A: a\x1bb\r\n\r\n{S}", {400}),
    ("name-parenthesis", b"GET {P}/x HTTP/1.1\r\n{A}X(A): b\r\n\r\n{S}", {400}),
    ("name-at", b"GET {P}/x HTTP/1.1\r\n{A}X@A: b\r\n\r\n{S}", {400}),
    ("name-slash", b"GET {P}/x HTTP/1.1\r\n{A}X/A: b\r\n\r\n{S}", {400}),
    ("name-brackets", b"GET {P}/x HTTP/1.1\r\n{A}[X]: b\r\n\r\n{S}", {400}),
    ("name-quoted", b"GET {P}/x HTTP/1.1\r\n{A}\"X\": b\r\n\r\n{S}", {400}),
    ("name-empty", b"GET {P}/x HTTP/1.1\r\n{A}: b\r\n\r\n{S}", {400}),
    ("name-non-ascii", b"GET {P}/x HTTP/1.1\r\n{A}X-\xc3\x9c: b\r\n\r\n{S}", {400}),
    ("name-vertical-tab", b"POST {P}/x HTTP/1.1\r\n{A}Content-Length\x0b: 5\r\n\r\nhello{S}",
     {400}),
    ("name-del", b"GET {P}/x HTTP/1.1\r\n{A}X\x7f: b\r\n\r\n{S}", {400}),
    ("no-colon", b"GET {P}/x HTTP/1.1\r\n{A}X-A b\r\n\r\n{S}", {400}),
    # The request line.
    ("line-double-space-after-method", b"GET  {P}/x HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-double-space-before-version", b"GET {P}/x  HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-trailing-space", b"GET {P}/x HTTP/1.1 \r\n{A}\r\n{S}", {400}),
    ("line-tab-separators", b"GET\t{P}/x\tHTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-leading-space", b" GET {P}/x HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-space-in-target", b"GET {P}/x y HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-two-blank-lines-first", b"\r\n\r\nGET {P}/x HTTP/1.1\r\n{A}\r\n{S}", {400}),
    ("line-http09", b"GET {P}/x\r\n\r\n{S}", {400}),
    ("line-lowercase-version", b"GET {P}/x http/1.1\r\n{A}\r\n{S}", {400}),
    ("line-version-2", b"GET {P}/x HTTP/2.0\r\n{A}\r\n{S}", {505}),
    ("line-version-1.2", b"GET {P}/x HTTP/1.2\r\n{A}\r\n{S}", {505}),
    ("line-http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n{S}", {505}),
    ("line-bad-method", b"G(T {P}/x HTTP/1.1\r\n{A}\r\n{S}", {400}),
    # Host.
    ("host-missing", b"GET {P}/x HTTP/1.1\r\nCookie: codehub-session={C}\r\n\r\n{S}", {400}),
    ("host-two", b"GET {P}/x HTTP/1.1\r\nHost: evil\r\n{A}\r\n{S}", {400}),
    ("host-with-path", b"GET {P}/x HTTP/1.1\r\nHost: evil/x\r\n"
     b"Cookie: codehub-session={C}\r\n\r\n{S}", {400}),
    ("host-with-userinfo", b"GET {P}/x HTTP/1.1\r\nHost: a@evil\r\n"
     b"Cookie: codehub-session={C}\r\n\r\n{S}", {400}),
    ("host-with-space", b"GET {P}/x HTTP/1.1\r\nHost: a evil\r\n"
     b"Cookie: codehub-session={C}\r\n\r\n{S}", {400}),
    # Limits.
    ("head-too-large", b"GET {P}/x HTTP/1.1\r\n{A}X-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n{S}",
     {431}),
    ("head-too-large-no-lf", b"GET {P}/x HTTP/1.1\r\n{A}X-Big: " + b"a" * (2 * MAX_HEAD),
     {431}),
    ("too-many-fields", b"GET {P}/x HTTP/1.1\r\n{A}"
     + b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS)) + b"\r\n{S}", {431}),
    ("target-too-long", b"GET {P}/" + b"a" * MAX_URL + b" HTTP/1.1\r\n{A}\r\n{S}", {414}),
]


@pytest.mark.parametrize("raw,statuses", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_request_never_reaches_the_upstream(env, raw, statuses):
    raw = raw.replace(b"{H}", env.host.encode()).replace(b"{C}", env.cookie.encode())
    c, snap = run(env, raw)
    assert_refused(c, statuses)
    assert_none_forwarded(observe(env, snap))


# Targets that are not origin-form. Their framing is clean, so the hub answers them itself
# (400) and may keep the connection: the next request on it must then be read exactly where
# the client put it, as a request of its own.
NOT_ORIGIN_FORM = [
    ("absolute-form-evil", b"GET http://evil/user/smug/x HTTP/1.1\r\n{A}\r\n"),
    ("absolute-form-own-host", b"GET http://{H}/user/smug/x HTTP/1.1\r\n{A}\r\n"),
    ("absolute-form-https", b"GET https://evil/user/smug/ HTTP/1.1\r\n{A}\r\n"),
    ("absolute-form-with-body", b"POST http://evil/user/smug/x HTTP/1.1\r\n{A}"
     b"Content-Length: 5\r\n\r\nhello"),
    ("authority-form", b"CONNECT evil:443 HTTP/1.1\r\n{A}\r\n"),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\n{A}\r\n"),
]


@pytest.mark.parametrize("raw", [t[1] for t in NOT_ORIGIN_FORM], ids=[t[0] for t in NOT_ORIGIN_FORM])
def test_non_origin_form_target_never_reaches_the_upstream(env, raw):
    raw = raw.replace(b"{H}", env.host.encode())
    c, snap = run(env, raw)
    assert c.statuses() == [400], (c.responses, env.hub.log()[-2000:])
    assert_none_forwarded(observe(env, snap))
    if c.responses[0][1].get("connection") == ["close"]:
        assert c.closed()
        return
    # Still in sync: a request sent next on the same connection arrives alone and clean.
    snap = snapshot(env)
    c.send(env.fill(b"GET {P}/after HTTP/1.1\r\n{A}\r\n"))
    c.read(2)
    assert c.statuses() == [400, 200], c.responses
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/after"], seen
    assert_clean(seen.requests[0], host=env.host)


# Targets that normalise outside the user's prefix (or cannot be stripped exactly): the
# access rule answers (403 for another user's workspace, 400 for what cannot be read one
# way, 404/401 for the hub's own pages) and the upstream sees nothing.
TRAVERSAL = [
    ("/user/smug/%2e%2e/other/", {403}),
    ("/user/smug/../other/x", {403}),
    ("/user/smug/.%2E/other/", {403}),
    ("/user/smug/%2E%2E/%2E%2E/hub/api/users", {401, 403}),
    ("/user/smug/x/../../other/", {403}),
    ("/user/smug/..%2fother/", {400}),
    ("/user/smug/%2e%2e%2fother/", {400}),
    ("/user/smug%2f..%2fother/", {400}),
    ("/user/smug/..\\other/", {400}),
    ("/user/smug/%5c..%5cother/", {400}),
    ("/user/smug/..;x/other/", {400}),
    ("/user/%73mug/x", {400}),
    ("/user/smugx/", {403}),
    ("/user//other/", {403}),
    ("//evil/user/smug/x", {404}),
]


@pytest.mark.parametrize("path,statuses", TRAVERSAL, ids=[t[0] for t in TRAVERSAL])
def test_path_tricks_never_leave_the_users_prefix(env, path, statuses):
    c, snap = run(env, b"GET " + path.encode() + b" HTTP/1.1\r\n{A}\r\n")
    assert c.responses, c.buf
    assert c.statuses()[0] in statuses, (c.responses, env.hub.log()[-2000:])
    assert_none_forwarded(observe(env, snap))


# --- bodies that break off after the head went upstream ---------------------------------------

# The head is forwarded before the body is read (streaming), so a chunked body that turns
# out malformed leaves the upstream with a head and part of a re-chunked body: the proxy
# must then close that upstream connection, so no parser ever reads the rest (or the next
# request) as this request's body.
BAD_CHUNKS = [
    ("chunk-size-17-digits", b"10000000000000005\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-over-2^62", b"ffffffffffffffff\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-wraps-to-5", b"10000000000000000000000000005\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-negative", b"-5\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-0x", b"0x5\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-plus", b"+5\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-leading-space", b" 5\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-trailing-space", b"5 \r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-not-hex", b"zz\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-size-empty", b"\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-ext-space-before", b"5 ;a=b\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-ext-bad-token", b"5;a=b c\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-ext-unterminated-quote", b"5;a=\"b\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-ext-bare-lf-hidden", b"5;a\nb\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-ext-too-long", b"5;a=" + b"b" * 5000 + b"\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-bare-lf-after-size", b"5\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-bare-cr-after-size", b"5\rhello\r\n0\r\n\r\n{S}"),
    ("chunk-data-too-long", b"5\r\nhelloXX\r\n0\r\n\r\n{S}"),
    ("chunk-data-bare-lf", b"5\r\nhello\n0\r\n\r\n{S}"),
    ("chunk-data-no-crlf", b"5\r\nhello0\r\n\r\n{S}"),
    ("chunk-after-good-one", b"3\r\nabc\r\nzz\r\nhello\r\n0\r\n\r\n{S}"),
    ("chunk-last-bare-lf", b"0\r\n\n{S}"),
    ("chunk-trailer-no-colon", b"0\r\nbad trailer\r\n\r\n{S}"),
    ("chunk-trailer-obs-fold", b"0\r\nX-T: a\r\n b\r\n\r\n{S}"),
    ("chunk-trailer-bare-cr", b"0\r\nX-T: a\rb\r\n\r\n{S}"),
]


@pytest.mark.parametrize("body", [b[1] for b in BAD_CHUNKS], ids=[b[0] for b in BAD_CHUNKS])
def test_bad_chunked_body_leaves_no_request_upstream(env, body):
    c, snap = run(env, b"POST {P}/chunks HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n" + body)
    assert_refused(c, {400})
    seen = observe(env, snap)
    assert_none_forwarded(seen)
    for name, rest, end in seen.partial:
        assert rest.startswith(b"POST /chunks HTTP/1.1\r\n"), rest
        # Only whole chunks went ahead, re-chunked: the good chunk before a bad line, or the
        # data of a chunk whose missing CRLF is noticed only after the data passed.
        head, _, sent = rest.partition(b"\r\n\r\n")
        assert sent in (b"", b"3\r\nabc\r\n", b"5\r\nhello\r\n"), sent


def test_truncated_content_length_body_closes_the_upstream_connection(env):
    """The client announces 100 bytes, sends 10 and leaves: the upstream must not keep a
    connection that still waits for 90 body bytes (the next request would fill them)."""
    c, snap = run(env, b"POST {P}/short HTTP/1.1\r\n{A}Content-Length: 100\r\n\r\n0123456789")
    c.sock.shutdown(socket.SHUT_WR)
    c.read(1, timeout=5)
    c.closed()
    seen = observe(env, snap)
    assert_none_forwarded(seen)
    assert len(seen.partial) == 1, seen
    rest = seen.partial[0][1]
    assert rest.startswith(b"POST /short HTTP/1.1\r\n") and rest.endswith(b"\r\n\r\n0123456789")


# --- accepted requests: exactly one clean request each ---------------------------------------

def one(env, raw, body=b"", count=1, status=200, tail=b""):
    c, snap = run(env, raw, count, tail)
    assert c.statuses() == [status] * count, (c.responses, env.hub.log()[-2000:])
    seen = observe(env, snap)
    assert seen.errors == [] and seen.partial == [], seen
    assert MARK not in seen.data, seen
    assert len(seen.requests) == count, seen
    for r in seen.requests:
        assert_clean(r, host=env.host, body=body)
    return c, seen.requests


# Transfer-Encoding values the parser reads as exactly "chunked" (case-insensitive, OWS
# trimmed): forwarded once, re-chunked, with a rebuilt `Transfer-Encoding: chunked`.
TE_ACCEPTED = [pytest.param(b"chunked", id="plain"),
               pytest.param(b" chunked", id="leading-space"),
               pytest.param(b"   chunked", id="leading-spaces"),
               pytest.param(b"\tchunked", id="leading-tab"),
               pytest.param(b"chunked ", id="trailing-space"),
               pytest.param(b"CHUNKED", id="upper"),
               pytest.param(b"ChUnKeD", id="mixed")]


@pytest.mark.parametrize("value", TE_ACCEPTED)
def test_accepted_transfer_encoding_is_forwarded_rebuilt(env, value):
    raw = (b"POST {P}/te HTTP/1.1\r\n{A}Transfer-Encoding:" + value + b"\r\n\r\n"
           b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n")
    _, (r,) = one(env, raw, body=b"hello world!")
    assert r.target == "/te" and r.chunked
    assert [k for k, _ in r.headers if k.lower() == "transfer-encoding"] == ["Transfer-Encoding"]


CHUNK_EXTENSIONS = [
    ("token", b"5;ext=1\r\nhello\r\n0\r\n\r\n"),
    ("quoted", b"5;ext=\"a;b c\"\r\nhello\r\n0;last=1\r\n\r\n"),
    ("several", b"5;a;b=c;d=\"e\"\r\nhello\r\n0\r\n\r\n"),
    ("quoted-escape", b"5;a=\"x\\\"y\"\r\nhello\r\n0\r\n\r\n"),
    ("upper-hex-leading-zeros", b"0005;X=Y\r\nhello\r\n00\r\n\r\n"),
    ("trailers", b"5\r\nhello\r\n0\r\nX-Trailer: evil\r\nContent-Length: 5\r\n\r\n"),
]


@pytest.mark.parametrize("body", [b[1] for b in CHUNK_EXTENSIONS],
                         ids=[b[0] for b in CHUNK_EXTENSIONS])
def test_chunk_extensions_and_trailers_never_pass(env, body):
    raw = b"POST {P}/ext HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n" + body
    _, (r,) = one(env, raw, body=b"hello")
    # The recorder's parser refuses extensions and trailers, so a clean parse proves it;
    # say it plainly too.
    assert b";" not in r.raw.partition(b"\r\n\r\n")[2], r.raw
    assert b"X-Trailer" not in r.raw and r.all("X-Trailer") == []


CONTENT_LENGTH_ACCEPTED = [("plain", b"5"), ("ows", b"  5  "), ("tab", b"\t5"),
                           ("leading-zeros", b"005"), ("name-case", None)]


@pytest.mark.parametrize("value", [c[1] for c in CONTENT_LENGTH_ACCEPTED],
                         ids=[c[0] for c in CONTENT_LENGTH_ACCEPTED])
def test_content_length_is_forwarded_once_and_matches(env, value):
    field = b"content-LENGTH: 5" if value is None else b"Content-Length:" + value
    _, (r,) = one(env, b"POST {P}/cl HTTP/1.1\r\n{A}" + field + b"\r\n\r\nhello", body=b"hello")
    assert not r.chunked and [int(v) for v in r.all("Content-Length")] == [5]


def test_content_length_zero_and_get_with_body(env):
    _, (r,) = one(env, b"POST {P}/zero HTTP/1.1\r\n{A}Content-Length: 0\r\n\r\n")
    assert r.all("Content-Length") in ([], ["0"])
    _, (r,) = one(env, b"GET {P}/getbody HTTP/1.1\r\n{A}Content-Length: 3\r\n\r\nabc", body=b"abc")
    assert r.method == "GET"


def test_a_large_chunked_body_is_forwarded_whole(env):
    data = os.urandom(300_000)
    chunks = b"".join(b"%x;n=1\r\n" % len(data[i:i + 7000]) + data[i:i + 7000] + b"\r\n"
                      for i in range(0, len(data), 7000))
    raw = b"PUT {P}/big HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n"
    c, (r,) = one(env, raw, body=data, tail=chunks + b"0\r\n\r\n")
    assert c.responses[0][1]["x-recorder-body-length"] == [str(len(data))]


def test_smuggled_request_inside_a_body_stays_body(env):
    """What one parser might take for a second request is body bytes to this one: it
    arrives as the body of the one request, never as a request of its own."""
    inner = env.fill(b"{S}")
    raw = (b"POST {P}/carrier HTTP/1.1\r\n{A}Content-Length: " + str(len(inner)).encode()
           + b"\r\n\r\n" + inner)
    c, snap = run(env, raw)
    assert c.statuses() == [200]
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/carrier"], seen
    assert seen.requests[0].body == inner
    raw = (b"POST {P}/carrier HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n"
           + b"%x\r\n" % len(inner) + inner + b"\r\n0\r\n\r\n")
    c, snap = run(env, raw)
    assert c.statuses() == [200]
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/carrier"], seen
    assert seen.requests[0].body == inner and seen.requests[0].chunked


# --- pipelining ----------------------------------------------------------------------------------

def test_pipelined_requests_arrive_one_by_one(env):
    raw = (b"GET {P}/p1 HTTP/1.1\r\n{A}\r\n"
           b"POST {P}/p2 HTTP/1.1\r\n{A}Content-Length: 5\r\n\r\nhello"
           b"POST {P}/p3 HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n"
           b"\r\n"  # the one CRLF a client may send after a body
           b"GET {P}/p4 HTTP/1.1\r\n{A}\r\n")
    c, snap = run(env, raw, count=4)
    assert c.statuses() == [200] * 4, c.responses
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/p1", "/p2", "/p3", "/p4"], seen
    bodies = [b"", b"hello", b"abc", b""]
    for r, body in zip(seen.requests, bodies):
        assert_clean(r, host=env.host, body=body)
    assert seen.errors == [] and seen.partial == []


PIPELINED_AFTER_ERROR = [
    ("ok-then-bare-cr-then-more",
     b"GET {P}/first HTTP/1.1\r\n{A}\r\nGET {P}/x HTTP/1.1\r\n{A}X: a\rb\r\n\r\n{S}", [200, 400]),
    ("ok-then-cl-te-then-more",
     b"GET {P}/first HTTP/1.1\r\n{A}\r\nPOST {P}/x HTTP/1.1\r\n{A}Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{S}", [200, 400]),
    ("cl-te-then-more",
     b"POST {P}/x HTTP/1.1\r\n{A}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n{S}{S}", [400]),
    ("bad-line-then-more", b"GET  {P}/x HTTP/1.1\r\n{A}\r\n{S}", [400]),
    ("two-crlf-after-body",
     b"POST {P}/first HTTP/1.1\r\n{A}Content-Length: 5\r\n\r\nhello\r\n\r\n{S}", [200, 400]),
    ("chunked-then-junk-line",
     b"POST {P}/first HTTP/1.1\r\n{A}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nX{S}", [200, 501]),
    # An underscore makes an unknown field, not Transfer-Encoding: the request has no body,
    # and the "body" is read as the next request, a malformed one.
    ("te-underscore",
     b"POST {P}/first HTTP/1.1\r\n{A}Transfer_Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{S}",
     [200, 400]),
    ("ok-then-too-large",
     b"GET {P}/first HTTP/1.1\r\n{A}\r\nGET {P}/x HTTP/1.1\r\n{A}X-Big: " + b"a" * MAX_HEAD
     + b"\r\n\r\n{S}", [200, 431]),
]


@pytest.mark.parametrize("raw,statuses", [p[1:] for p in PIPELINED_AFTER_ERROR],
                         ids=[p[0] for p in PIPELINED_AFTER_ERROR])
def test_nothing_after_a_refused_pipelined_request_reaches_the_upstream(env, raw, statuses):
    c, snap = run(env, raw, count=len(statuses))
    assert c.statuses() == statuses, c.responses
    assert_refused(c, {statuses[-1]})
    seen = observe(env, snap)
    assert seen.errors == [] and seen.partial == [], seen
    assert MARK not in seen.data, seen
    if statuses[0] == 200:
        assert [r.target for r in seen.requests] == ["/first"], seen
        assert_clean(seen.requests[0], host=env.host, body=seen.requests[0].body)
        assert seen.requests[0].body in (b"", b"hello")
    else:
        assert seen.requests == [], seen


# --- HTTP/1.0 -----------------------------------------------------------------------------------

def test_http10_without_keep_alive(env):
    c, snap = run(env, b"GET {P}/h10 HTTP/1.0\r\n{A}\r\n{S}")
    assert c.statuses() == [200], c.responses
    assert c.closed(), "an HTTP/1.0 connection without keep-alive must close"
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/h10"], seen
    assert_clean(seen.requests[0], host=env.host)
    assert MARK not in seen.data


def test_http10_keep_alive(env):
    raw = (b"GET {P}/ka1 HTTP/1.0\r\n{A}Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
           b"POST {P}/ka2 HTTP/1.0\r\n{A}Connection: keep-alive\r\nContent-Length: 5\r\n\r\nhello"
           b"GET {P}/ka3 HTTP/1.0\r\n{A}\r\n{S}")
    c, snap = run(env, raw, count=3)
    assert c.statuses() == [200, 200, 200], c.responses
    assert c.responses[0][1].get("connection") == ["keep-alive"]
    assert c.closed(), "the last request had no keep-alive"
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/ka1", "/ka2", "/ka3"], seen
    for r, body in zip(seen.requests, [b"", b"hello", b""]):
        assert_clean(r, host=env.host, body=body)
    assert MARK not in seen.data


def test_http10_body_without_length_is_no_body(env):
    """An HTTP/1.0 request without Content-Length has no body: what follows is the next
    request (here none, as the connection closes after the answer)."""
    c, snap = run(env, b"POST {P}/h10body HTTP/1.0\r\n{A}\r\n{S}")
    assert c.statuses() == [200]
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/h10body"], seen
    assert_clean(seen.requests[0], host=env.host)


def test_http10_without_host_gets_the_public_host(env):
    raw = b"GET {P}/nohost HTTP/1.0\r\nCookie: codehub-session={C}\r\n\r\n"
    c, snap = run(env, raw.replace(b"{C}", env.cookie.encode()))
    assert c.statuses() == [200], c.responses
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/nohost"], seen
    r = seen.requests[0]
    assert r.all("Host") == [env.host], r
    assert r.get("X-Forwarded-Host") == env.host, r


# --- headers the client may not decide -----------------------------------------------------------

def test_spoofed_host_passes_once_and_routes_nowhere_else(env):
    raw = b"GET {P}/host HTTP/1.1\r\nHost: evil.example:8443\r\nCookie: codehub-session={C}\r\n\r\n"
    c, snap = run(env, raw.replace(b"{C}", env.cookie.encode()))
    assert c.statuses() == [200], c.responses
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/host"], seen
    # Host passes as sent (code-server compares Origin with it); X-Forwarded-Host is the
    # same single value, computed by the hub.
    assert_clean(seen.requests[0], host="evil.example:8443")


def test_spoofed_forwarded_headers_are_replaced(env):
    raw = (b"GET {P}/xff HTTP/1.1\r\n{A}X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\n"
           b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n"
           b"x-forwarded-host: evil2.example\r\nX-Forwarded-Port: 443\r\n"
           b"X-Forwarded-Prefix: /user/other\r\nForwarded: for=6.6.6.6;proto=https;host=evil\r\n"
           b"X-Real-IP: 6.6.6.6\r\n\r\n")
    _, (r,) = one(env, raw)
    assert "6.6.6.6" not in r.raw.decode("latin-1") and b"evil" not in r.raw, r.raw
    assert r.all("X-Forwarded-Port") == [] and r.all("X-Forwarded-Prefix") == []


def test_hop_by_hop_headers_are_dropped(env):
    raw = (b"GET {P}/hop HTTP/1.1\r\n{A}Connection: keep-alive, X-Secret, Cookie\r\nX-Secret: 1\r\n"
           b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
           b"Trailer: X-T\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\r\n")
    _, (r,) = one(env, raw)
    assert r.all("X-Secret") == [], r
    # Cookie is named by Connection, so it goes whole: the session with it.
    assert r.all("Cookie") == [], r


def test_api_token_is_not_forwarded(env):
    token = env.hub.token(NAME)
    raw = (b"GET {P}/token HTTP/1.1\r\nHost: {H}\r\nAuthorization: token {T}\r\n\r\n"
           b"GET {P}/bearer HTTP/1.1\r\nHost: {H}\r\nAuthorization: Bearer {T}\r\n\r\n")
    raw = raw.replace(b"{H}", env.host.encode()).replace(b"{T}", token.encode())
    _, reqs = one(env, raw, count=2)
    assert [r.target for r in reqs] == ["/token", "/bearer"]
    assert all(token not in r.raw.decode("latin-1") for r in reqs)


def test_hub_cookies_are_stripped_and_others_kept(env):
    raw = (b"GET {P}/cookie HTTP/1.1\r\nHost: {H}\r\nCookie: theme=dark; "
           b"codehub-session={C}; codehub-xsrf=x; lang=en\r\n\r\n")
    raw = raw.replace(b"{H}", env.host.encode()).replace(b"{C}", env.cookie.encode())
    _, (r,) = one(env, raw)
    assert r.all("Cookie") == ["theme=dark; lang=en"], r


def test_expect_100_continue_is_answered_by_the_hub(env):
    snap = snapshot(env)
    s = socket.create_connection(("127.0.0.1", env.hub.port), timeout=10)
    c = Conn(s)
    c.send(env.fill(b"PUT {P}/expect HTTP/1.1\r\n{A}Content-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n"))
    deadline = time.time() + 10
    while not c.interim and time.time() < deadline and c._recv(deadline):
        c._parse_one()
    assert c.interim == [100], c.buf
    c.send(b"hello")
    c.read(1)
    assert c.statuses() == [200]
    seen = observe(env, snap)
    assert len(seen.requests) == 1, seen
    assert_clean(seen.requests[0], host=env.host, body=b"hello")


# --- upgrades ------------------------------------------------------------------------------------

def ws_request(env, path, extra=b""):
    key = base64.b64encode(os.urandom(16))
    return (b"GET " + path + b" HTTP/1.1\r\n{A}Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
            b"Origin: http://" + env.host.encode() + b"\r\n" + extra + b"\r\n")


def test_h2c_upgrade_is_not_a_tunnel(env):
    """An upgrade other than WebSocket is forwarded as a plain request without Upgrade;
    the bytes sent after it (a smuggler's hope for a tunnel) are never read."""
    raw = (b"GET {P}/h2c HTTP/1.1\r\n{A}Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nOrigin: http://{H}\r\n\r\n{S}")
    raw = raw.replace(b"{H}", env.host.encode())
    c, snap = run(env, raw)
    assert c.statuses() == [200], c.responses
    assert c.closed()
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/h2c"], seen
    assert_clean(seen.requests[0], host=env.host)
    assert seen.requests[0].all("HTTP2-Settings") == []
    assert MARK not in seen.data


def test_websocket_refused_by_the_upstream_opens_no_tunnel(env):
    """The upstream answers the handshake with 403: the client's next bytes must not be
    tunnelled to it as raw bytes (they would be read as a request the hub never checked)."""
    raw = ws_request(env, b"{P}/ws-refuse") + b"{S}"
    c, snap = run(env, raw)
    assert c.statuses() == [403], c.responses
    c.send(env.fill(b"{S}"))
    assert c.closed()
    seen = observe(env, snap)
    assert [r.target for r in seen.requests] == ["/ws-refuse"], seen
    r = seen.requests[0]
    assert r.get("Upgrade") == "websocket" and r.get("Connection") == "Upgrade", r
    assert r.all("Sec-WebSocket-Extensions") == []
    assert seen.errors == [] and seen.partial == [], seen
    assert MARK not in seen.data, seen


def test_websocket_tunnel_carries_only_what_follows_the_101(env):
    raw = ws_request(env, b"{P}/ws", b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
    snap = snapshot(env)
    s = socket.create_connection(("127.0.0.1", env.hub.port), timeout=10)
    c = Conn(s)
    c.send(env.fill(raw))
    c.read(1)
    assert c.statuses() == [101], (c.interim, c.responses)
    c.send(b"tunnel bytes")
    seen = None
    deadline = time.time() + 10
    while time.time() < deadline:
        files = [p for p in env.rec_dir.glob("*.raw")
                 if b"tunnel bytes" in p.read_bytes()[snap.get(p.name, 0):]]
        if files:
            seen = files[0].read_bytes()[snap.get(files[0].name, 0):]
            break
        time.sleep(0.02)
    s.close()
    assert seen is not None, "the tunnel did not carry the bytes"
    head, _, after = seen.partition(b"\r\n\r\n")
    assert after == b"tunnel bytes", seen
    assert b"permessage-deflate" not in head and head.count(b"\r\nUpgrade:") == 1
