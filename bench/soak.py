#!/usr/bin/env python3
"""Soak: one codehub under mixed load for a long while, with zero errors and a flat RSS.

    bench/soak.py                  full run: 10 minutes of load -> bench/results/soak.json
    bench/soak.py --quick          smoke run: 60 s -> bench/results/tmp/soak-quick.json
    bench/soak.py --duration 120   any length (seconds of load)
    bench/soak.py --errors-only    judge errors and sanitizer reports, not the RSS
    bench/soak.py --report bench/results/soak.json   print the Markdown tables of a result

One real codehub (SQLite store, local spawner, the code-server `make deps` installs, every
other setting at its default) is set up with users made offline (`codehub user add`,
`codehub token create`), two of whom ("web" users) log in through the form and start their
code-server before the load begins. Then, for --duration seconds, all at once:

- http:      keep-alive connections (2 per web user) each sending a steady stream of
             proxied GETs into the workspace: /user/NAME/healthz, /user/NAME/ (code-server's
             302) and the workspace page itself (/user/NAME/?folder=..., the HTML);
- websocket: open / round trip / close cycles through the proxy into code-server: the
             upgrade (session cookie and the hub's Origin) of VS Code's remote-agent socket
             (/user/NAME/?reconnectionToken=...), the first message of VS Code's handshake
             (an "auth" control message) and code-server's answer (a "sign" request), then
             a close frame and the end of the connection;
- websocket_idle: tunnels opened the same way at the start and held for the whole run;
             the client sends nothing, code-server sends its keep-alive message every 5 s;
             each must still deliver one after the load has ended;
- login:     form logins of a pool of users (GET /hub/login for the _xsrf field, POST the
             credentials: 303 and a session cookie), each followed by a session GET
             /hub/api/user (counted under api) and a logout;
- logout:    GET /hub/logout for its form, POST it (303, the cookie cleared), then GET
             /hub/api/user with the old cookie must be 401;
- api:       GET /hub/api/user and GET /hub/api/users/NAME with user-scope tokens, and GET
             /hub/api/users/NAME of the spawn users with an admin token;
- spawn:     a separate pool of users, one thread each, logged in once through the form
             and calling the API as the hub's pages do (session cookie + X-XSRF-Token), in
             a loop: POST /hub/api/users/NAME/server (201 or 202), the progress stream until
             `ready`, one proxied GET /user/NAME/healthz, a few seconds running;
- stop:      then DELETE .../server (204 or 202), until GET /hub/api/users/NAME shows no
             server and nothing pending and code-server's process group is gone.

Every operation and every error (an unexpected status, a connection failure, a timeout, a
WebSocket failure) is counted per kind. Timeouts are generous (a slow answer is not an
error, a failed one is); no timing is judged. Every 2 s the hub's VmRSS (the hub process
only, not the code-servers) and its open descriptors are read from /proc; the sampler waits
while a login POST is in flight, so that the 64 MiB an Argon2id hash holds for its ~0.1 s
is not mistaken for growth (VmHWM at the end shows the peak). Warm-up = the first 20 % of
the run. Verdict: no errors, and RSS flat: after the warm-up no sample further than 5 % from
the median of those samples, and the median of the last minute within 5 % of the median of
the first (minute = 60 s, or half of what follows the warm-up in a shorter run). After the
load the hub is stopped (SIGTERM) and must exit with status 0 and no sanitizer report in its
log. The exit status is 1, with the reasons printed, when any of that fails; the result file
is written anyway. --errors-only leaves the RSS out of the verdict (for a sanitizer build,
whose RSS is mostly the sanitizer's own); tests/integ/test_soak.py runs this in make test.
The least-squares slope of VmRSS and RssAnon after the warm-up is reported too, for
information (a steady creep shows there long before it breaks the 5 %).

Every process this script starts is tracked by PID (code-servers by their process group) and
stopped at the end, also on Ctrl-C or SIGTERM. Only 127.0.0.1 and Unix sockets are used.
Standard library only, plus helpers shared with bench/hub.py and bench/spawn.py.
"""

import argparse
import base64
import collections
import hashlib
import http.client
import json
import os
import re
import socket
import statistics
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import (Sodium, cpu_busy, loadavg, log, proc_cpu_s, proc_status,  # noqa: E402
                 summarize)
from spawn import (CODE_SERVER, CONFIG, PAGE_HEADERS, PASSWORD, Failure, HubSide,  # noqa: E402
                   Jar, cli, copy_binary, exchange, fetch_html, machine_facts,
                   run_scratch, start_hub, stop_server)

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("http", "websocket", "websocket_idle", "login", "logout", "api", "spawn", "stop")
WEB_USERS = ("soak-web-1", "soak-web-2")
LOGIN_USERS = ("soak-login-1", "soak-login-2", "soak-login-3", "soak-login-4")
SPAWN_USERS = ("soak-spawn-1", "soak-spawn-2")
ADMIN = "soak-admin"
SAMPLE_EVERY_S = 2.0
RSS_LIMIT_PCT = 5.0
# Generous per-operation timeouts: other engineers' test suites may share the two cores.
HTTP_TIMEOUT_S = 60
LOGIN_TIMEOUT_S = 120
START_TIMEOUT_S = 240     # the hub's own spawn.start_timeout is 120 s
STOP_TIMEOUT_S = 60
IDLE_FINAL_WAIT_S = 60    # a held tunnel must deliver a keep-alive this soon after the load
# The mix, per second unless said otherwise (--quick uses the same rates, for less time).
MIX = {
    "http_connections_per_web_user": 2,
    "http_requests_per_connection_per_s": 8,
    "websocket_threads": 2,                 # one per web user
    "websocket_cycles_per_thread_per_s": 1,
    "websocket_idle_tunnels": 16,           # spread over the web users
    "login_cycle_every_s": 3,               # login + session whoami + logout, one thread
    "api_requests_per_s": 4,                # one thread, keep-alive
    "spawn_threads": len(SPAWN_USERS),      # one per spawn user
    "spawn_hold_s": 5,                      # running this long between ready and stop
    "spawn_pause_s": 2,                     # after a stop
}


# --- counting ------------------------------------------------------------------------------------

class Tally:
    """Operations, errors and times per kind, also per minute of the run."""

    def __init__(self, duration_s):
        self.last_minute = max(0, int((duration_s - 1) // 60))
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.ops = collections.Counter()
        self.errors = collections.Counter()
        self.ms = collections.defaultdict(list)
        self.samples = collections.defaultdict(list)
        self.minutes = collections.defaultdict(lambda: {"ops": collections.Counter(),
                                                        "errors": collections.Counter()})
        self.extra = collections.Counter()

    def start(self):
        self.t0 = time.monotonic()

    def _minute(self):
        # What finishes after the load (the last stops, the held tunnels) counts in its last
        # minute.
        return min(int((time.monotonic() - self.t0) // 60), self.last_minute)

    def ok(self, kind, ms=None):
        with self.lock:
            self.ops[kind] += 1
            self.minutes[self._minute()]["ops"][kind] += 1
            if ms is not None:
                self.ms[kind].append(ms)

    def fail(self, kind, what):
        t = round(time.monotonic() - self.t0, 1)
        with self.lock:
            self.ops[kind] += 1
            self.errors[kind] += 1
            self.minutes[self._minute()]["ops"][kind] += 1
            self.minutes[self._minute()]["errors"][kind] += 1
            if len(self.samples[kind]) < 30:
                self.samples[kind].append({"t_s": t, "what": what})
        log(f"ERROR {kind} at {t} s: {what}")


def describe(e):
    return f"{type(e).__name__}: {e}"


NET_ERRORS = (OSError, http.client.HTTPException, ValueError)


class Pacer:
    """Sleeps to keep one operation every `interval` seconds; no catch-up bursts."""

    def __init__(self, interval, stop):
        self.interval = interval
        self.stop = stop
        self.next = time.monotonic()

    def wait(self):
        self.next = max(self.next + self.interval, time.monotonic())
        return not self.stop.wait(max(0.0, self.next - time.monotonic()))


# --- a small WebSocket client, and VS Code's remote-agent framing --------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WSError(Exception):
    pass


class WebSocket:
    """Client side of RFC 6455 over a blocking socket: masked frames out, whole frames in.
    A receive timeout loses nothing (the partial frame stays in the buffer)."""

    def __init__(self, sock, rest):
        self.sock = sock
        self.buf = bytearray(rest)

    @classmethod
    def connect(cls, port, path, headers, timeout):
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", *headers]
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    raise WSError(f"connection closed before the handshake's answer "
                                  f"({len(data)} bytes: {data[:80]!r})")
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            if status_line.split(" ")[1:2] != ["101"]:
                raise WSError(f"handshake answered {status_line!r}")
            want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest())
            if b"sec-websocket-accept: " + want.lower() not in head.lower():
                raise WSError(f"handshake: Sec-WebSocket-Accept is not {want.decode()}: {head!r}")
        except BaseException:
            sock.close()
            raise
        return cls(sock, rest)

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack(">BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def recv(self):
        """One whole message (opcode, payload); continuation frames are joined."""
        parts, first_op = [], None
        while True:
            fin, op, payload = self._frame()
            if op in (0x9, 0xA):   # ping, pong
                if op == 0x9:
                    self.send(0xA, payload)
                continue
            if op == 0x8:
                raise WSError(f"close frame from the server: {payload[:2].hex()}")
            first_op = first_op if first_op is not None else op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    def _frame(self):
        while True:
            b = self.buf
            if len(b) >= 2:
                if b[1] & 0x80:
                    raise WSError("masked frame from the server")
                n, off = b[1] & 0x7F, 2
                if n == 126:
                    n, off = (struct.unpack(">H", b[2:4])[0], 4) if len(b) >= 4 else (None, 4)
                elif n == 127:
                    n, off = (struct.unpack(">Q", b[2:10])[0], 10) if len(b) >= 10 else (None, 10)
                if n is not None and len(b) >= off + n:
                    fin, op = bool(b[0] & 0x80), b[0] & 0x0F
                    payload = bytes(b[off:off + n])
                    del b[:off + n]
                    return fin, op, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WSError("connection closed by the other side")
            self.buf += chunk

    def close(self):
        try:
            self.send(0x8, struct.pack(">H", 1000))
        except OSError:
            pass
        self.sock.close()


# VS Code's PersistentProtocol: each message is a 13-byte header (type, id, ack, length, big
# endian) and the payload. Type 2 is a control message, 9 a keep-alive.
VSC_CONTROL = 2
VSC_KEEPALIVE = 9


class VSCodeSocket:
    """code-server's remote-agent socket, as far as the first step of its handshake."""

    def __init__(self, ws):
        self.ws = ws
        self.stream = bytearray()

    @classmethod
    def open(cls, port, user, cookie, timeout):
        path = (f"/user/{user}/?reconnectionToken={uuid.uuid4()}&reconnection=false"
                "&skipWebSocketFrames=false")
        ws = WebSocket.connect(port, path, [f"Cookie: {cookie}",
                                            f"Origin: http://127.0.0.1:{port}"], timeout)
        return cls(ws)

    def send_control(self, obj):
        data = json.dumps(obj).encode()
        self.ws.send(0x2, struct.pack(">BIII", VSC_CONTROL, 0, 0, len(data)) + data)

    def message(self):
        """The next protocol message (type, payload)."""
        while True:
            if len(self.stream) >= 13:
                mtype, _, _, n = struct.unpack(">BIII", self.stream[:13])
                if len(self.stream) >= 13 + n:
                    payload = bytes(self.stream[13:13 + n])
                    del self.stream[:13 + n]
                    return mtype, payload
            op, data = self.ws.recv()
            if op != 0x2:
                raise WSError(f"unexpected WebSocket opcode {op} from code-server")
            self.stream += data

    def auth_round_trip(self):
        """Sends the client's first handshake message; code-server answers with a sign
        request (keep-alives may come first)."""
        self.send_control({"type": "auth", "auth": "00000000000000000000", "data": "soak"})
        while True:
            mtype, payload = self.message()
            if mtype == VSC_KEEPALIVE:
                continue
            if mtype != VSC_CONTROL:
                raise WSError(f"unexpected message type {mtype} before the sign request")
            answer = json.loads(payload)
            if answer.get("type") != "sign":
                raise WSError(f"code-server answered {payload[:200]!r}")
            return

    def close(self):
        self.ws.close()


# --- the hub and its users -----------------------------------------------------------------------

class Hub:
    """What every worker needs: the port, the data directory, the log, the users' secrets."""

    def __init__(self, procs, port, data_dir, log_path):
        self.procs = procs
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.pid = procs.hub.pid
        self.jars = {}         # web and spawn users -> their browser's cookies
        self.xsrf = {}         # web and spawn users -> the X-XSRF-Token of their session
        self.cookies = {}      # web user -> Cookie header (session + xsrf)
        self.pages = {}        # web user -> path of the workspace page
        self.tokens = {}       # login users and the admin -> API token

    def conn(self, timeout=HTTP_TIMEOUT_S):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def side(self, name):
        return HubSide(self.procs, self.port, self.data_dir, self.log_path, name)


def setup_users(binary, config, data_dir):
    for name in WEB_USERS + LOGIN_USERS + SPAWN_USERS:
        cli(binary, config, data_dir, ["user", "add", name, "--password-stdin"],
            stdin=(PASSWORD + "\n").encode())
    cli(binary, config, data_dir, ["user", "add", ADMIN, "--admin", "--password-stdin"],
        stdin=(PASSWORD + "\n").encode())
    tokens = {}
    for name in LOGIN_USERS:
        tokens[name] = cli(binary, config, data_dir, ["token", "create", name, "--scope", "user",
                                                      "--note", "soak"]).strip()
    tokens[ADMIN] = cli(binary, config, data_dir, ["token", "create", ADMIN, "--scope", "admin",
                                                   "--note", "soak"]).strip()
    return tokens


def read_progress(conn, name, headers):
    """GET .../server/progress until an event says ready (returns) or failed (raises)."""
    conn.request("GET", f"/hub/api/users/{name}/server/progress", headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        raise Failure(f"progress: {resp.status} {resp.read()[:200]!r}")
    events = 0
    while True:
        line = resp.readline()
        if not line:
            raise Failure(f"progress stream ended after {events} events without ready")
        if not line.startswith(b"data:"):
            continue
        events += 1
        ev = json.loads(line[5:])
        if ev.get("failed"):
            raise Failure(f"progress: failed: {ev.get('message')}")
        if ev.get("ready"):
            resp.read()
            return events


def browser_login(hub, name):
    """Form login and the XSRF token of /hub/home, as the hub's own pages do."""
    side = hub.side(name)
    conn, jar = hub.conn(LOGIN_TIMEOUT_S), Jar()
    side.login(conn, jar)
    hub.xsrf[name] = side.home_xsrf(conn, jar)
    hub.jars[name] = jar
    conn.close()


def start_web_user(hub, name):
    """Browser login, start through the API with the session's XSRF token, first page."""
    browser_login(hub, name)
    jar, xsrf = hub.jars[name], hub.xsrf[name]
    conn = hub.conn(START_TIMEOUT_S)
    status, _, body = exchange(conn, "POST", f"/hub/api/users/{name}/server",
                               {"X-XSRF-Token": xsrf}, jar=jar)
    if status == 202:
        read_progress(conn, name, {"X-XSRF-Token": xsrf, "Cookie": jar.header()})
    elif status != 201:
        raise Failure(f"start {name}: {status} {body[:300]!r}")
    hub.side(name)._record_pgid()
    page = fetch_html(conn, f"/user/{name}/", jar=jar)
    conn.close()
    if not page["html"]:
        raise Failure(f"first page of {name}: {page}")
    hub.cookies[name] = jar.header()
    hub.pages[name] = page["path"]


# --- the workers ---------------------------------------------------------------------------------

def keepalive_worker(hub, tally, stop, kind, rate, plan, judge):
    """Steady GETs on one keep-alive connection (a new one after the hub closes it or it
    fails): plan is a list of (path, headers, want), taken in turn; judge(want, status,
    response, body) returns what is wrong with an answer, or None."""
    pacer = Pacer(1.0 / rate, stop)
    conn, i = None, 0
    while pacer.wait():
        path, headers, want = plan[i % len(plan)]
        i += 1
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = hub.conn()
            status, resp, body = exchange(conn, "GET", path, headers)
            ms = (time.perf_counter() - t0) * 1000
            wrong = judge(want, status, resp, body)
            if wrong:
                tally.fail(kind, f"GET {path}: {wrong}")
            else:
                tally.ok(kind, ms)
            if resp.will_close:
                tally.extra[f"{kind}_connection_closed_by_hub"] += 1
                conn.close()
                conn = None
        except NET_ERRORS as e:
            tally.fail(kind, f"GET {path}: {describe(e)}")
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def judge_workspace(want, status, resp, body):
    if status != want:
        return f"{status} {body[:200]!r}"
    if want == 302 and not resp.getheader("Location", "").startswith("./?folder="):
        return f"302 to {resp.getheader('Location')!r}"
    if want == 200 and not body:
        return "200 with an empty body"
    return None


def http_worker(hub, tally, stop, name, rate):
    """Steady proxied GETs into one workspace on one keep-alive connection."""
    headers = {"Cookie": hub.cookies[name], **PAGE_HEADERS}
    plan = [(f"/user/{name}/healthz", headers, 200), (f"/user/{name}/healthz", headers, 200),
            (f"/user/{name}/", headers, 302), (f"/user/{name}/healthz", headers, 200),
            (hub.pages[name], headers, 200)]
    keepalive_worker(hub, tally, stop, "http", rate, plan, judge_workspace)


def websocket_worker(hub, tally, stop, name, rate):
    """Open, one handshake round trip with code-server, close; again."""
    pacer = Pacer(1.0 / rate, stop)
    while pacer.wait():
        t0 = time.perf_counter()
        vs = None
        try:
            vs = VSCodeSocket.open(hub.port, name, hub.cookies[name], HTTP_TIMEOUT_S)
            vs.auth_round_trip()
            tally.ok("websocket", (time.perf_counter() - t0) * 1000)
        except (*NET_ERRORS, WSError) as e:
            tally.fail("websocket", f"{name}: {describe(e)}")
        finally:
            if vs is not None:
                vs.close()


def idle_tunnel(hub, tally, stop, name, opened):
    """One WebSocket held open for the whole run; code-server's keep-alives are read as they
    come. After the load: one more keep-alive must arrive, then a clean close."""
    t0 = time.perf_counter()
    try:
        vs = VSCodeSocket.open(hub.port, name, hub.cookies[name], HTTP_TIMEOUT_S)
        vs.auth_round_trip()
    except (*NET_ERRORS, WSError) as e:
        tally.fail("websocket_idle", f"open ({name}): {describe(e)}")
        return
    finally:
        opened.release()
    open_ms = (time.perf_counter() - t0) * 1000
    vs.ws.sock.settimeout(1.0)
    keepalives = 0
    try:
        while not stop.is_set():
            try:
                mtype, _ = vs.message()
                keepalives += mtype == VSC_KEEPALIVE
            except socket.timeout:
                continue
        # The load is over: the tunnel must still carry code-server's next keep-alive.
        deadline = time.monotonic() + IDLE_FINAL_WAIT_S
        while True:
            try:
                mtype, _ = vs.message()
                if mtype == VSC_KEEPALIVE:
                    keepalives += 1
                    break
            except socket.timeout:
                if time.monotonic() > deadline:
                    raise WSError(f"no keep-alive within {IDLE_FINAL_WAIT_S} s after the load")
        tally.ok("websocket_idle", open_ms)
    except (*NET_ERRORS, WSError) as e:
        tally.fail("websocket_idle", f"held tunnel ({name}) after {keepalives} keep-alives: "
                                     f"{describe(e)}")
    finally:
        with tally.lock:
            tally.extra["websocket_idle_keepalives"] += keepalives
        vs.close()


def login_worker(hub, tally, stop, hash_lock, every):
    """Form login, a session whoami, logout, and the old cookie refused; users in turn."""
    pacer = Pacer(every, stop)
    i = 0
    while pacer.wait():
        name = LOGIN_USERS[i % len(LOGIN_USERS)]
        i += 1
        conn, jar = hub.conn(LOGIN_TIMEOUT_S), Jar()
        try:
            with hash_lock:
                t0, t1, _ = hub.side(name).login(conn, jar)
            tally.ok("login", (t1 - t0) * 1000)
        except (*NET_ERRORS, Failure) as e:
            tally.fail("login", f"{name}: {describe(e)}")
            conn.close()
            continue
        session = jar.cookies.get("codehub-session")
        try:
            t0 = time.perf_counter()
            status, _, body = exchange(conn, "GET", "/hub/api/user", jar=jar)
            if status != 200 or json.loads(body).get("name") != name:
                tally.fail("api", f"session GET /hub/api/user ({name}): {status} {body[:200]!r}")
            else:
                tally.ok("api", (time.perf_counter() - t0) * 1000)
        except NET_ERRORS as e:
            tally.fail("api", f"session GET /hub/api/user ({name}): {describe(e)}")
        try:
            t0 = time.perf_counter()
            logout(conn, jar, session, name)
            tally.ok("logout", (time.perf_counter() - t0) * 1000)
        except (*NET_ERRORS, Failure) as e:
            tally.fail("logout", f"{name}: {describe(e)}")
        conn.close()


def logout(conn, jar, session, name):
    status, _, page = exchange(conn, "GET", "/hub/logout", PAGE_HEADERS, jar=jar)
    m = re.search(rb'name="_xsrf" value="([^"]*)"', page)
    if status != 200 or m is None:
        raise Failure(f"GET /hub/logout: {status}, no _xsrf field")
    body = urllib.parse.urlencode({"_xsrf": m.group(1).decode()})
    status, resp, _ = exchange(conn, "POST", "/hub/logout", {
        "Content-Type": "application/x-www-form-urlencoded", **PAGE_HEADERS}, body=body, jar=jar)
    if status != 303 or "codehub-session" in jar.cookies:
        raise Failure(f"POST /hub/logout: {status}, session cookie "
                      f"{'kept' if 'codehub-session' in jar.cookies else 'cleared'}")
    status, _, body = exchange(conn, "GET", "/hub/api/user",
                               {"Cookie": f"codehub-session={session}"})
    if status != 401:
        raise Failure(f"GET /hub/api/user with the logged-out session of {name}: {status} "
                      f"{body[:200]!r}")


def api_worker(hub, tally, stop, rate):
    plan = []
    for name in LOGIN_USERS:
        auth = {"Authorization": f"Bearer {hub.tokens[name]}"}
        plan += [("/hub/api/user", auth, name), (f"/hub/api/users/{name}", auth, name)]
    admin = {"Authorization": f"Bearer {hub.tokens[ADMIN]}"}
    plan += [(f"/hub/api/users/{name}", admin, name) for name in SPAWN_USERS]
    keepalive_worker(hub, tally, stop, "api", rate, plan, judge_api)


def judge_api(want, status, resp, body):
    if status != 200 or json.loads(body).get("name") != want:
        return f"{status} {body[:200]!r}"
    return None


def spawn_worker(hub, tally, stop, name, hold_s, pause_s):
    """Start (POST, progress until ready, one proxied GET), hold, stop; again. As the hub's
    pages do it: the session cookie and its XSRF token."""
    jar, xsrf = hub.jars[name], {"X-XSRF-Token": hub.xsrf[name]}
    side = hub.side(name)
    while not stop.is_set():
        conn = hub.conn(START_TIMEOUT_S)
        t0 = time.perf_counter()
        started = False
        try:
            status, _, body = exchange(conn, "POST", f"/hub/api/users/{name}/server", xsrf,
                                       body=b"", jar=jar)
            if status not in (201, 202):
                raise Failure(f"POST server: {status} {body[:300]!r}")
            started = True
            # On 201 the stream's first event is already the final one.
            read_progress(conn, name, {"Cookie": jar.header()})
            ready_ms = (time.perf_counter() - t0) * 1000
            status, _, body = exchange(conn, "GET", f"/user/{name}/healthz", jar=jar)
            if status != 200:
                raise Failure(f"GET /user/{name}/healthz right after ready: {status} "
                              f"{body[:200]!r}")
            tally.ok("spawn", ready_ms)
        except (*NET_ERRORS, Failure) as e:
            tally.fail("spawn", f"{name}: {describe(e)}")
        finally:
            conn.close()
        pgid = side._record_pgid()
        if not started and pgid is None:
            stop.wait(pause_s)
            continue
        if started:
            stop.wait(hold_s)
        try:
            ms = stop_server(hub.conn(STOP_TIMEOUT_S), hub.procs, name, xsrf, jar, pgid,
                             stop_timeout_s=STOP_TIMEOUT_S, group_timeout_s=STOP_TIMEOUT_S)
            if started:
                tally.ok("stop", ms)
        except (*NET_ERRORS, Failure) as e:
            tally.fail("stop", f"{name}: {describe(e)}")
        stop.wait(pause_s)


# --- sampling the hub ----------------------------------------------------------------------------

def fds_now(pid, tmp):
    """The hub's open descriptors: how many, by kind (socket, pipe, anon_inode:[eventfd],
    file) and the files' paths (DIR = the temporary directory)."""
    kinds, files = collections.Counter(), []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds[target] += 1
        else:
            kinds["file"] += 1
            files.append(target.replace(str(tmp), "DIR") if tmp else target)
    return {"fds": sum(kinds.values()), "fd_kinds": dict(sorted(kinds.items())),
            "fd_files": sorted(files)}


def sample(pid, t0):
    st = proc_status(pid)
    fds = fds_now(pid, None)
    return {"t_s": round(time.monotonic() - t0, 1), "rss_kib": st["VmRSS_kib"],
            "anon_kib": st.get("RssAnon_kib"), "hwm_kib": st["VmHWM_kib"],
            "threads": st["threads"], "fds": fds["fds"],
            # The store's SQLite connections (opened on demand by its pool, up to 8).
            "sqlite_conns": sum(f.endswith("codehub.sqlite") for f in fds["fd_files"]),
            "cpu_s": round(proc_cpu_s([pid]), 2), "load1": loadavg()}


def sampler(pid, tally, stop, hash_lock, out):
    """Every SAMPLE_EVERY_S: the hub's RSS and descriptors, never during a login POST."""
    next_t = time.monotonic()
    while not stop.is_set():
        got = hash_lock.acquire(timeout=LOGIN_TIMEOUT_S)
        try:
            s = sample(pid, tally.t0)
            s["during_login"] = not got
            out.append(s)
        except (OSError, KeyError):   # the hub is gone (or a zombie without VmRSS)
            return
        finally:
            if got:
                hash_lock.release()
        next_t = max(next_t + SAMPLE_EVERY_S, time.monotonic())
        stop.wait(max(0.0, next_t - time.monotonic()))


def trend(samples, warmup_s, duration_s):
    """Least-squares slopes of VmRSS and RssAnon after the warm-up, KiB per minute: for
    information (the verdict does not use them)."""
    post = [s for s in samples if warmup_s <= s["t_s"] <= duration_s]
    if len(post) < 2:
        return {}
    ts = [s["t_s"] / 60 for s in post]
    return {"rss_kib_per_min": round(statistics.linear_regression(
                ts, [s["rss_kib"] for s in post]).slope, 1),
            "anon_kib_per_min": round(statistics.linear_regression(
                ts, [s["anon_kib"] for s in post]).slope, 1)}


def rss_verdict(samples, warmup_s, duration_s):
    post = [s for s in samples if warmup_s <= s["t_s"] <= duration_s]
    if len(post) < 4:
        return {"ok": False, "reason": f"only {len(post)} samples after the warm-up"}
    window = min(60.0, (duration_s - warmup_s) / 2)
    first = [s["rss_kib"] for s in post if s["t_s"] < warmup_s + window]
    last = [s["rss_kib"] for s in post if s["t_s"] >= duration_s - window]
    if not first or not last:
        # The samples stopped early (the hub died): nothing to compare.
        return {"ok": False, "reason": f"no samples in the last {window:.0f} s of the load"}
    rss = [s["rss_kib"] for s in post]
    med = statistics.median(rss)
    first_med, last_med = statistics.median(first), statistics.median(last)
    dev = max(abs(r - med) for r in rss) / med * 100
    drift = (last_med - first_med) / first_med * 100
    out = {"samples": len(post), "window_s": window, "median_kib": med,
           "first_window_median_kib": first_med, "last_window_median_kib": last_med,
           "drift_pct": round(drift, 2), "max_deviation_pct": round(dev, 2),
           "min_kib": min(rss), "max_kib": max(rss), "limit_pct": RSS_LIMIT_PCT,
           "fds_min": min(s["fds"] for s in post), "fds_max": max(s["fds"] for s in post),
           "trend": trend(samples, warmup_s, duration_s)}
    out["ok"] = dev <= RSS_LIMIT_PCT and abs(drift) <= RSS_LIMIT_PCT
    if not out["ok"]:
        out["reason"] = (f"RSS not flat: max deviation {dev:.2f} % from the post-warm-up "
                         f"median {med:,.0f} KiB, first/last-window medians {first_med:,.0f} / "
                         f"{last_med:,.0f} KiB ({drift:+.2f} %); limit {RSS_LIMIT_PCT} %")
    return out


def hub_log_summary(path, offset):
    """Warnings and errors the hub logged during the load, and request lines by status."""
    levels = collections.Counter()
    events = collections.Counter()
    statuses = collections.Counter()
    bad_requests = collections.Counter()
    lines_kept = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\n")
            m = re.match(r"(\S+Z) (\w+) (\S+)(.*)$", line)
            if not m:
                continue
            level, event, rest = m.group(2).lower(), m.group(3), m.group(4)
            levels[level] += 1
            if event == "request":
                r = re.search(r"method=(\S+) path=(\S+) status=(\d+)", rest)
                if r:
                    statuses[r.group(3)] += 1
                    if int(r.group(3)) >= 500:
                        bad_requests[f"{r.group(1)} {r.group(2).split('?')[0]} "
                                     f"{r.group(3)}"] += 1
            if level in ("warn", "warning", "error", "fatal"):
                events[f"{level} {event}"] += 1
                if len(lines_kept) < 40:
                    lines_kept.append(line[:400])
    return {"levels": dict(levels), "warn_error_events": dict(events.most_common()),
            "request_statuses": dict(sorted(statuses.items())),
            "requests_5xx": dict(bad_requests.most_common(20)), "warn_error_lines": lines_kept}


# --- the run -------------------------------------------------------------------------------------

def run(procs, tmp, args, duration, warmup):
    binary = str(tmp / "codehub")
    copy_binary(args.bin, binary)
    data_dir = tmp / "data"
    config = tmp / "codehub.yaml"
    config.write_text(CONFIG)
    log_path = tmp / "codehub.log"
    for name in WEB_USERS + SPAWN_USERS:
        if len(str(data_dir / "run" / name / "code-server.sock")) >= 107:
            raise Failure(f"socket path too long under {data_dir}")
    command = " ".join(["bench/soak.py", *sys.argv[1:]])
    result = {
        "command": command,
        "machine": machine_facts(binary, Sodium()),
        "settings": {
            "duration_s": duration, "warmup_s": warmup, "sample_every_s": SAMPLE_EVERY_S,
            "rss_limit_pct": RSS_LIMIT_PCT, "mix": MIX,
            "users": {"web": list(WEB_USERS), "login": list(LOGIN_USERS),
                      "spawn": list(SPAWN_USERS), "admin": ADMIN},
            "timeouts_s": {"http": HTTP_TIMEOUT_S, "login": LOGIN_TIMEOUT_S,
                           "start": START_TIMEOUT_S, "stop": STOP_TIMEOUT_S,
                           "idle_final_keepalive": IDLE_FINAL_WAIT_S},
            "config": CONFIG,
            "hub": "CODEHUB_LOCAL_CODE_SERVER=$PWD/.deps/code-server/bin/code-server "
                   "codehub serve --config DIR/codehub.yaml --bind 127.0.0.1:0 "
                   "--data-dir DIR/data 2>>DIR/codehub.log",
            "pinning": "none: the hub, the code-servers and this script share both CPUs",
        },
    }
    log(f"setup in {tmp}")
    tokens = setup_users(binary, config, data_dir)
    port = start_hub(procs, binary, config, data_dir, log_path, tmp)
    hub = Hub(procs, port, data_dir, log_path)
    hub.tokens = tokens
    for name in WEB_USERS:
        start_web_user(hub, name)
        log(f"{name}: code-server running, page {hub.pages[name]}")
    for name in SPAWN_USERS:
        browser_login(hub, name)
    log(f"hub pid {hub.pid} on port {port}")
    time.sleep(2)
    start = {"status": proc_status(hub.pid), **fds_now(hub.pid, tmp)}
    log(f"before the load: VmRSS {start['status']['VmRSS_kib']} KiB, {start['fds']} fds")
    log_offset = log_path.stat().st_size

    tally = Tally(duration)
    stop_load, stop_idle, stop_sampling = threading.Event(), threading.Event(), threading.Event()
    hash_lock = threading.Lock()
    samples = []
    threads = []

    def spawn_thread(target, *a):
        t = threading.Thread(target=target, args=a, daemon=True)
        t.start()
        threads.append(t)
        return t

    tally.start()
    busy0 = cpu_busy()
    sampler_thread = threading.Thread(target=sampler, daemon=True,
                                      args=(hub.pid, tally, stop_sampling, hash_lock, samples))
    sampler_thread.start()
    opened = threading.Semaphore(0)
    idle_threads = []
    for i in range(MIX["websocket_idle_tunnels"]):
        name = WEB_USERS[i % len(WEB_USERS)]
        t = threading.Thread(target=idle_tunnel, args=(hub, tally, stop_idle, name, opened),
                             daemon=True)
        t.start()
        idle_threads.append(t)
        opened.acquire(timeout=HTTP_TIMEOUT_S * 2)
    for name in WEB_USERS:
        for _ in range(MIX["http_connections_per_web_user"]):
            spawn_thread(http_worker, hub, tally, stop_load, name,
                         MIX["http_requests_per_connection_per_s"])
    for name in WEB_USERS[:MIX["websocket_threads"]]:
        spawn_thread(websocket_worker, hub, tally, stop_load, name,
                     MIX["websocket_cycles_per_thread_per_s"])
    spawn_thread(login_worker, hub, tally, stop_load, hash_lock, MIX["login_cycle_every_s"])
    spawn_thread(api_worker, hub, tally, stop_load, MIX["api_requests_per_s"])
    for name in SPAWN_USERS[:MIX["spawn_threads"]]:
        spawn_thread(spawn_worker, hub, tally, stop_load, name, MIX["spawn_hold_s"],
                     MIX["spawn_pause_s"])
    log(f"load running for {duration} s (warm-up {warmup} s)")
    deadline = tally.t0 + duration
    crashed = None
    next_report = tally.t0 + 30
    while time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if procs.hub.poll() is not None:
            crashed = procs.hub.returncode
            log(f"the hub exited with {crashed} during the load")
            break
        if time.monotonic() >= next_report:
            next_report += 30
            s = samples[-1] if samples else {}
            log(f"{time.monotonic() - tally.t0:.0f} s: ops {dict(tally.ops)}, errors "
                f"{sum(tally.errors.values())}, VmRSS {s.get('rss_kib')} KiB, fds {s.get('fds')}")
    stop_load.set()
    for t in threads:
        t.join(timeout=START_TIMEOUT_S + STOP_TIMEOUT_S * 2)
    # The samples that judge the RSS end with the load; the held tunnels are checked after it.
    stop_sampling.set()
    sampler_thread.join(timeout=LOGIN_TIMEOUT_S + 5)
    load_s = time.monotonic() - tally.t0
    busy1 = cpu_busy()
    stop_idle.set()
    for t in idle_threads:
        t.join(timeout=IDLE_FINAL_WAIT_S + 30)
    stuck = [t.name for t in threads + idle_threads if t.is_alive()]
    time.sleep(3)
    end = None
    if procs.hub.poll() is None:
        end = {"status": proc_status(hub.pid), **fds_now(hub.pid, tmp)}
        log(f"after the load: VmRSS {end['status']['VmRSS_kib']} KiB, {end['fds']} fds, "
            f"VmHWM {end['status']['VmHWM_kib']} KiB")
    hub_log = hub_log_summary(log_path, log_offset)

    ops = {}
    for kind in KINDS:
        ms = tally.ms.get(kind, [])
        ops[kind] = {"ops": tally.ops[kind], "errors": tally.errors[kind],
                     "ms": summarize([round(x, 2) for x in ms])}
        if len(ms) >= 2:
            ops[kind]["ms"]["p99"] = round(statistics.quantiles(ms, n=100,
                                                                 method="inclusive")[98], 2)
    rss = rss_verdict(samples, warmup, duration)
    reasons = []
    errors_total = sum(tally.errors.values())
    if errors_total:
        reasons.append(f"{errors_total} errors: " + ", ".join(
            f"{k} {v}" for k, v in tally.errors.items() if v))
    if crashed is not None:
        reasons.append(f"the hub exited with status {crashed} during the load")
    if stuck:
        reasons.append(f"{len(stuck)} worker threads did not finish")
    if not rss["ok"] and not args.errors_only:
        reasons.append(rss["reason"])
    minutes = []
    for m in sorted(tally.minutes):
        in_minute = [s for s in samples if m * 60 <= s["t_s"] < (m + 1) * 60]
        minutes.append({
            "minute": m + 1,
            "rss_median_kib": statistics.median([s["rss_kib"] for s in in_minute])
            if in_minute else None,
            "fds_median": statistics.median([s["fds"] for s in in_minute]) if in_minute else None,
            "ops": dict(tally.minutes[m]["ops"]), "errors": dict(tally.minutes[m]["errors"])})
    result.update({
        "load_s": round(load_s, 1),
        "ops": ops,
        "error_samples": {k: v for k, v in tally.samples.items()},
        "extra": dict(tally.extra),
        "rss": rss,
        "hub": {"start": start, "end": end, "crashed": crashed,
                "cpu_s_during_load": round(samples[-1]["cpu_s"] - samples[0]["cpu_s"], 1)
                if len(samples) >= 2 else None},
        # Busy time of both CPUs during the load (from /proc/stat), in CPUs: the hub, the
        # code-servers, this script and whatever else ran on the machine.
        "machine_busy_cpus": round(sum((busy1[c][0] - busy0[c][0])
                                       / max(1, busy1[c][1] - busy0[c][1]) for c in busy1), 2),
        "samples_delayed_by_a_login": sum(1 for x in samples if x["during_login"]),
        "per_minute": minutes,
        "samples": samples,
        "hub_log": hub_log,
        "verdict": {"ok": not reasons, "reasons": reasons, "errors": errors_total,
                    "rss_flat": rss["ok"], "rss_judged": not args.errors_only},
    })
    # The web users' servers are stopped through the hub too (not counted).
    for name in WEB_USERS:
        try:
            stop_server(hub.conn(STOP_TIMEOUT_S), procs, name, {"X-XSRF-Token": hub.xsrf[name]},
                        hub.jars[name], hub.side(name)._record_pgid(),
                        stop_timeout_s=STOP_TIMEOUT_S)
        except (*NET_ERRORS, Failure) as e:
            log(f"stopping {name}'s server at the end: {describe(e)}")
    return result


# --- report --------------------------------------------------------------------------------------

KIND_TEXT = {
    "http": "proxied GET into code-server: /healthz, / (302), the workspace page; keep-alive",
    "websocket": "WebSocket through the proxy: upgrade, VS Code handshake's auth → sign, close",
    "websocket_idle": "WebSocket held open the whole run (code-server's keep-alive every 5 s), "
                      "still delivering after the load",
    "login": "form login: GET /hub/login, POST credentials (Argon2id) → 303 + session",
    "logout": "GET /hub/logout, POST it → 303; the old session then gets 401",
    "api": "GET /hub/api/user, /hub/api/users/NAME (tokens, and the session after each login)",
    "spawn": "POST …/server, progress stream until ready, one proxied GET",
    "stop": "DELETE …/server until stopped and the process group is gone",
}


def fd_file_diff(start, end):
    """A sentence on the files open after the load that were not open before (and back)."""
    if not end or "fd_files" not in start:
        return ""
    before = collections.Counter(start["fd_files"])
    after = collections.Counter(end["fd_files"])
    added, gone = after - before, before - after
    out = ""
    if added:
        out += " Files open after but not before: " + ", ".join(
            f"`{f}`" + (f" × {n}" if n > 1 else "") for f, n in sorted(added.items())) + "."
    if gone:
        out += " Open before but not after: " + ", ".join(
            f"`{f}`" + (f" × {n}" if n > 1 else "") for f, n in sorted(gone.items())) + "."
    return out


SANITIZER_REPORT = re.compile(r"^==\d+==ERROR: |^SUMMARY: \w+Sanitizer|: runtime error: ")


def sanitizer_reports(log_path):
    """Lines of AddressSanitizer / LeakSanitizer / UndefinedBehaviorSanitizer reports in
    the hub's log (none from a release build)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    return [line[:300] for line in text.splitlines() if SANITIZER_REPORT.search(line)]


def render_markdown(r, source):
    m, s, v = r["machine"], r["settings"], r["verdict"]
    mix = s["mix"]
    kib = lambda x: f"{x:,.0f}" if x is not None else "–"  # noqa: E731
    lines = [
        f"Run `{r['command']}` on {m['date_utc']} ({source}): {s['duration_s']} s of load, "
        f"warm-up {s['warmup_s']:.0f} s, the hub's VmRSS and descriptors every "
        f"{s['sample_every_s']:.0f} s. codehub `{m['codehub']}` (sha256 "
        f"`{m['codehub_binary_sha256'][:16]}…`), code-server {m['code_server'].split(' ')[0]}, "
        f"{m['nproc']} × {m['cpu_model']}, Linux {m['kernel']}.", "",
        f"**Verdict: {'pass' if v['ok'] else 'FAIL'}** — {v['errors']} errors; RSS "
        f"{'flat' if v['rss_flat'] else 'NOT flat'} within {s['rss_limit_pct']:.0f} %"
        f"{'' if v.get('rss_judged', True) else ' (not judged: --errors-only)'}."
        + ("" if v["ok"] else " " + "; ".join(v["reasons"])), "",
        "#### Operations", "",
        f"Mix: {len(s['users']['web']) * mix['http_connections_per_web_user']} HTTP "
        f"connections at {mix['http_requests_per_connection_per_s']} requests/s each, "
        f"{mix['websocket_threads']} WebSocket cycle threads at "
        f"{mix['websocket_cycles_per_thread_per_s']}/s, {mix['websocket_idle_tunnels']} held "
        f"tunnels, a login cycle every {mix['login_cycle_every_s']} s over "
        f"{len(s['users']['login'])} users, {mix['api_requests_per_s']} token API calls/s, "
        f"{mix['spawn_threads']} users starting and stopping their server in a loop "
        f"({mix['spawn_hold_s']} s running, {mix['spawn_pause_s']} s pause). Times are "
        "for information only (nothing is judged on them).", "",
        "| kind | what | ops | errors | ms median | ms p99 | ms max |",
        "|---|---|---|---|---|---|---|"]
    for kind, o in r["ops"].items():
        ms = o["ms"] or {}
        f = lambda k: f"{ms[k]:,.1f}" if k in ms else "–"  # noqa: E731
        lines.append(f"| {kind} | {KIND_TEXT[kind]} | {o['ops']:,} | {o['errors']} | "
                     f"{f('median')} | {f('p99')} | {f('max')} |")
    ex = r.get("extra", {})
    total = sum(o["ops"] for o in r["ops"].values())
    lines += ["", f"{total:,} operations in {r['load_s']:.0f} s; "
              f"{ex.get('websocket_idle_keepalives', 0):,} keep-alives received on the held "
              "tunnels. websocket_idle times are the opening (upgrade + handshake round trip); "
              "spawn times are POST → ready; login times the POST alone.", ""]
    rs = r["rss"]
    st, en = r["hub"]["start"], r["hub"]["end"] or {}
    lines += ["#### Memory and descriptors of the hub", ""]
    if "median_kib" in rs:
        tr = rs.get("trend") or trend(r["samples"], s["warmup_s"], s["duration_s"])
        lines += [
            f"After the warm-up ({rs['samples']} samples): median {kib(rs['median_kib'])} KiB, "
            f"min {kib(rs['min_kib'])}, max {kib(rs['max_kib'])}.", "",
            "| measure | value |", "|---|---|",
            f"| VmRSS before the load | {kib(st['status']['VmRSS_kib'])} KiB |",
            f"| median, first {rs['window_s']:.0f} s after the warm-up | "
            f"{kib(rs['first_window_median_kib'])} KiB |",
            f"| median, last {rs['window_s']:.0f} s of the load | "
            f"{kib(rs['last_window_median_kib'])} KiB |",
            f"| last vs first | **{rs['drift_pct']:+.2f} %** |",
            f"| largest deviation of a sample from the post-warm-up median | "
            f"**{rs['max_deviation_pct']:.2f} %** |",
            f"| flat within {rs['limit_pct']:.0f} % | **{'yes' if rs['ok'] else 'no'}** |",
            f"| trend after the warm-up (least squares; for information): VmRSS, RssAnon | "
            f"{tr.get('rss_kib_per_min', 0):+,.1f}, {tr.get('anon_kib_per_min', 0):+,.1f} "
            "KiB/min |",
            f"| VmRSS / VmHWM after the load | {kib(en.get('status', {}).get('VmRSS_kib'))} / "
            f"{kib(en.get('status', {}).get('VmHWM_kib'))} KiB |",
            f"| open descriptors before / after the load | {st['fds']} / "
            f"{en.get('fds', '–')} |",
            f"| descriptors during the load, after the warm-up (min–max) | "
            f"{rs['fds_min']}–{rs['fds_max']} |",
            f"| hub CPU during the load | {r['hub']['cpu_s_during_load']} s |",
            f"| machine busy during the load (both CPUs, everything that ran) | "
            f"{r.get('machine_busy_cpus', '–')} CPUs |", ""]
    else:
        lines += [rs.get("reason", "no samples"), ""]
    lines += [f"Descriptors by kind before: {st['fd_kinds']}; after: {en.get('fd_kinds')}. "
              "Before = both web users' code-servers running, nothing else; after = the same, "
              "3 s after the last worker finished and the held tunnels closed."
              + fd_file_diff(st, en), "",
              "VmHWM includes the Argon2id hashes of the logins (64 MiB each while it runs); "
              "the RSS samples are taken between logins.", "",
              "#### Per minute", "",
              "| minute | VmRSS median KiB | fds median | "
              + " | ".join(KINDS) + " | errors |",
              "|---" * (len(KINDS) + 4) + "|"]
    for row in r["per_minute"]:
        lines.append(f"| {row['minute']} | {kib(row['rss_median_kib'])} | "
                     f"{kib(row['fds_median'])} | "
                     + " | ".join(str(row["ops"].get(k, 0)) for k in KINDS)
                     + f" | {sum(row['errors'].values())} |")
    lines.append("")
    hl = r["hub_log"]
    lines += [f"The hub's log during the load: lines by level {hl['levels']}; request "
              f"statuses {hl['request_statuses']}; warnings and errors "
              f"{hl['warn_error_events'] or 'none'}.", ""]
    if r["error_samples"]:
        lines += ["#### Errors (first of each kind)", ""]
        for kind, items in r["error_samples"].items():
            for e in items[:5]:
                lines.append(f"- {kind} at {e['t_s']} s: `{e['what'][:300]}`")
        lines.append("")
    lines += ["#### Setup", "", "```sh",
              "codehub user add NAME --password-stdin --config DIR/codehub.yaml "
              "--data-dir DIR/data   # each user",
              "codehub token create NAME --scope user|admin ...",
              s["hub"], "```", "", "with `DIR/codehub.yaml`:", "", "```yaml",
              s["config"].rstrip(), "```", "",
              f"Users: web {', '.join(s['users']['web'])} (form login, server started before "
              f"the load); login {', '.join(s['users']['login'])}; spawn "
              f"{', '.join(s['users']['spawn'])}; admin {s['users']['admin']}. Timeouts: "
              + ", ".join(f"{k} {v} s" for k, v in s["timeouts_s"].items()) + ". Pinning: "
              + s["pinning"] + ".", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 s of load: a smoke run")
    ap.add_argument("--duration", type=int, help="seconds of load (default 600, quick 60)")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", help="result file (default: bench/results/soak.json, "
                    "bench/results/tmp/soak-quick.json with --quick)")
    ap.add_argument("--errors-only", action="store_true",
                    help="judge the errors only, not the RSS: for a sanitizer build, whose "
                    "RSS is mostly its allocator's quarantine and shadow memory")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (the hub's log, the homes)")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown tables of a result")
    args = ap.parse_args()
    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0
    duration = args.duration or (60 if args.quick else 600)
    if duration < 20:
        ap.error("--duration must be at least 20 s")
    warmup = round(duration * 0.2, 1)
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "soak-quick.json"
                                 if args.quick else ROOT / "bench" / "results" / "soak.json"))
    if not os.access(CODE_SERVER, os.X_OK):
        print(f"soak.py: {CODE_SERVER} not found: run make deps", file=sys.stderr)
        return 1
    if not os.access(args.bin, os.X_OK):
        print(f"soak.py: {args.bin} not found: build it first (make build)", file=sys.stderr)
        return 1

    stopped = {}

    def after_stop(procs, tmp):
        stopped["exit"] = procs.hub.returncode if procs.hub is not None else None
        stopped["findings"] = sanitizer_reports(tmp / "codehub.log")

    t0 = time.monotonic()
    result, status = run_scratch(
        "soak-", lambda procs, tmp: run(procs, tmp, args, duration, warmup), keep=args.keep,
        after_stop=after_stop)
    if result is None:
        return status
    # Judged after the hub has been stopped (SIGTERM): a clean exit, and no sanitizer report
    # (LeakSanitizer's comes at exit) in its log.
    verdict = result["verdict"]
    hub_exit, findings = stopped["exit"], stopped["findings"]
    result["hub"]["exit_status"] = hub_exit
    result["hub"]["sanitizer_reports"] = findings[:10]
    if result["hub"]["crashed"] is None and hub_exit != 0:
        verdict["reasons"].append(f"the hub exited with status {hub_exit} when stopped")
    if findings:
        verdict["reasons"].append(f"{len(findings)} sanitizer report lines in the hub's log, "
                                  f"the first: {findings[0]}")
    verdict["ok"] = not verdict["reasons"]
    result["wall_s"] = round(time.monotonic() - t0, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path} ({result['wall_s']} s)")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    if not result["verdict"]["ok"]:
        for reason in result["verdict"]["reasons"]:
            print(f"soak.py: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
