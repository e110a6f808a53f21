#!/usr/bin/env python3
"""Spawn benchmark: codehub's overhead between a login and code-server's first page.

    bench/spawn.py            full run (2.5 minutes, up to 4.5 on a busy machine):
                              30 repetitions of each side; writes bench/results/spawn.json
    bench/spawn.py --quick    smoke run (under a minute): 5 repetitions of each side;
                              writes bench/results/tmp/spawn-quick.json
    bench/spawn.py --report bench/results/spawn.json    print the Markdown tables again

codehub's goal (its issue): the time from the login POST to code-server's first HTML through
the proxy, beside code-server's own start time measured directly in the same run; the
difference is codehub's overhead, to be kept under 50 ms. Three kinds of run alternate,
after one warm-up run of each:

A5    code-server started directly, exactly as codehub's local spawner starts it (same argv,
      environment, working directory, setsid, output appended to ~/code-server.log), on a
      home that codehub initialised; from the spawn, GET / over the Unix socket every 5 ms,
      following code-server's redirect to ./?folder=..., until a 200 with HTML arrives: the
      earliest moment code-server can serve its page.
A100  the same start, but polled as codehub did before it polled from 10 ms (fixed 100 ms): GET /healthz every 100 ms from the spawn
      (one probe at a time, a new connection each), and once it answers 2xx/3xx, GET / and
      the redirect: codehub's own procedure without codehub.
B     through codehub: GET /hub/login (not timed), then the login POST (Argon2id verify),
      GET /hub/home for the XSRF meta tag, POST /hub/api/users/NAME/server (201 once the hub
      saw code-server ready), GET /user/NAME/ following the redirect until a 200 with HTML.

Overhead = B (start POST -> first HTML) - A, and B total (login POST -> first HTML) - A, per
repetition (each B ran right after its A5 and A100) and as a difference of medians. The
login's Argon2id verify is stated separately, beside libsodium's raw verify of the same stored
hash timed in the same repetition. Between runs every server is stopped (the hub's through
DELETE .../server) and its whole process group waited for.

Nothing is pinned: code-server's start needs both cores. Every process this script starts is
tracked by PID (code-server by its process group) and stopped at the end, also on Ctrl-C or
SIGTERM; the temporary directory is removed. Only 127.0.0.1 and Unix sockets are used.
Standard library only, plus a few helpers shared with bench/hub.py.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from hub import (Sodium, clean_env, cpu_busy, cpu_model, first_line, loadavg, log, mem_total_kib,
                 summarize)

ROOT = Path(__file__).resolve().parents[1]
CODE_SERVER = ROOT / ".deps" / "code-server" / "bin" / "code-server"
# What src/spawn/local.c gives code-server: this PATH, and 100 ms between /healthz probes,
# each with a 2 s timeout.
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CODEHUB_POLL_S = 0.100
TIGHT_POLL_S = 0.005
# Before each repetition: wait for a window of QUIET_WINDOW_S with under QUIET_CPUS busy.
QUIET_CPUS = 0.5
QUIET_WINDOW_S = 0.25
PROBE_TIMEOUT_S = 2.0
CONFIG = "local:\n  init_venv: false\n  init_ssh_key: false\ncull:\n  timeout: 0\n"
USER_HUB = "benchspawn"    # B: started through the hub
USER_DIRECT = "benchdirect"  # A: its home, initialised by the hub, is used directly
PASSWORD = "bench-spawn-password"
SIDES = ("A5", "A100", "B")


class Failure(RuntimeError):
    pass


# --- processes -----------------------------------------------------------------------------------

def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def wait_group_gone(pgid, timeout):
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


class Procs:
    """The hub (by PID) and every code-server process group (by PGID) this script started
    or had the hub start; all stopped at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.hub = None
        self.groups = set()

    def stop_group(self, pgid, leader=None, timeout=10.0):
        """SIGTERM to the group, wait until no process of it is left (SIGKILL after
        `timeout`); returns the milliseconds it took."""
        t0 = time.perf_counter()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if leader is not None:
            try:
                leader.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        if not wait_group_gone(pgid, timeout):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if leader is not None:
                leader.wait()
            wait_group_gone(pgid, 5)
        self.groups.discard(pgid)
        return (time.perf_counter() - t0) * 1000

    def stop_all(self):
        for pgid in list(self.groups):
            if group_alive(pgid):
                self.stop_group(pgid, timeout=3)
        self.groups.clear()
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        # Last resort, for a server whose group was never learnt (the run was interrupted
        # between the spawn and reading server.json): processes whose working directory is
        # in this run's temporary directory are ours, killed by PID.
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
            except OSError:
                continue
            if cwd == str(self.tmp) or cwd.startswith(str(self.tmp) + "/"):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


# --- HTTP ----------------------------------------------------------------------------------------

def run_scratch(prefix, work, keep=False, after_stop=None):
    """Runs work(procs, tmp): tmp a new directory /tmp/PREFIX... (short on purpose:
    code-server's Unix sockets live below it, and a socket path may not exceed 107 bytes),
    procs a Procs for it; the first SIGTERM raises KeyboardInterrupt, later ones are
    ignored so that they cannot cut the clean-up short (a timeout wrapper passes its own
    on). At the end every process is stopped, then after_stop(procs, tmp) runs when given,
    then the directory is removed unless `keep`. Returns (what work returned, 0); (None, 130) when interrupted;
    (None, 1) after a Failure, logged with the tail of the hub's log."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    procs = Procs(tmp)

    def on_signal(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        return work(procs, tmp), 0
    except KeyboardInterrupt:
        log("interrupted")
        return None, 130
    except Failure as e:
        log(f"failed: {e}")
        log_path = tmp / "codehub.log"
        if log_path.exists():
            sys.stderr.write(log_path.read_text(errors="replace")[-3000:])
        return None, 1
    finally:
        procs.stop_all()
        if after_stop is not None:
            after_stop(procs, tmp)
        if keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = str(path)

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Jar:
    """The cookies a browser would keep for one origin (names and values only)."""

    def __init__(self):
        self.cookies = {}

    def take(self, resp):
        for value in resp.headers.get_all("Set-Cookie") or []:
            pair, _, attrs = value.partition(";")
            name, _, val = pair.strip().partition("=")
            if not val or re.search(r"(?i)max-age=0\b", attrs):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = val

    def header(self):
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())


def exchange(conn, method, path, headers=None, body=None, jar=None):
    """One request; returns (status, response, body bytes)."""
    headers = dict(headers or {})
    if jar is not None and jar.cookies:
        headers["Cookie"] = jar.header()
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if jar is not None:
        jar.take(resp)
    return resp.status, resp, data


PAGE_HEADERS = {"Accept": "text/html,application/xhtml+xml", "User-Agent": "codehub-bench"}


def fetch_html(conn, path, jar=None, max_hops=3):
    """GET `path`, following redirects, on one keep-alive connection. Returns a dict with the
    final status, whether it is HTML, the hops and the final path."""
    hops = []
    for _ in range(max_hops + 1):
        status, resp, data = exchange(conn, "GET", path, PAGE_HEADERS, jar=jar)
        if status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            hops.append({"path": path, "status": status})
            path = urllib.parse.urljoin(path, resp.getheader("Location"))
            continue
        ctype = resp.getheader("Content-Type", "")
        html = (status == 200 and ctype.startswith("text/html")
                and b"<html" in data[:4096].lower())
        return {"status": status, "html": html, "bytes": len(data), "path": path,
                "hops": hops}
    return {"status": 0, "html": False, "bytes": 0, "path": path, "hops": hops}


def probe_healthz(sock_path):
    """codehub's probe: one GET /healthz on a new connection; the status, or None when
    nothing answers."""
    conn = UnixHTTPConnection(sock_path, PROBE_TIMEOUT_S)
    try:
        status, _, _ = exchange(conn, "GET", "/healthz", {
            "Host": "localhost", "User-Agent": "codehub-spawner", "Connection": "close"})
        return status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# --- A: code-server started directly -------------------------------------------------------------

class Direct:
    """code-server started as src/spawn/local.c starts it (spawn_code_server, build_env)."""

    def __init__(self, procs, home, sock, user):
        self.procs = procs
        self.home = home
        self.sock = sock
        self.user = user

    def argv(self):
        h = self.home
        return [str(CODE_SERVER), "--auth", "none", "--socket", str(self.sock),
                "--socket-mode", "600", "--user-data-dir", f"{h}/.local/share/code-server",
                "--extensions-dir", f"{h}/.local/share/code-server/extensions",
                "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                f"{h}/projects"]

    def env(self):
        return {"HOME": str(self.home), "USER": self.user, "LOGNAME": self.user,
                "SHELL": "/bin/bash", "PATH": SAFE_PATH, "LANG": "C.UTF-8"}

    def run(self, mode):
        """One start, measured; mode "A5" (GET / every 5 ms) or "A100" (a fixed 100 ms poll, codehub's former one).
        Stops the server again before returning."""
        # As codehub does: a socket left behind would make code-server fail to listen.
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass
        logf = open(self.home / "code-server.log", "ab")
        busy0, load0 = cpu_busy(), loadavg()
        t0 = time.perf_counter()
        proc = subprocess.Popen(self.argv(), env=self.env(), cwd=self.home,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                start_new_session=True)
        self.procs.groups.add(proc.pid)
        logf.close()
        res = {"attempts": 0}
        interval = TIGHT_POLL_S if mode == "A5" else CODEHUB_POLL_S
        tick = 0
        try:
            while True:
                if proc.poll() is not None:
                    raise Failure(f"code-server exited with {proc.returncode}; see "
                                  f"{self.home}/code-server.log")
                if time.perf_counter() - t0 > 60:
                    raise Failure("code-server served no page within 60 s")
                res["attempts"] += 1
                if mode == "A5":
                    page = self._try_page(res, t0)
                    if page is not None and "first_answer_ms" not in res:
                        res["first_answer_ms"] = (time.perf_counter() - t0) * 1000
                    if page is not None and page["html"]:
                        t_html = time.perf_counter()
                        res["page"] = page
                        break
                else:
                    status = probe_healthz(self.sock)
                    if status is not None and 200 <= status < 400:
                        t_ready = time.perf_counter()
                        conn = UnixHTTPConnection(self.sock, 30)
                        page = fetch_html(conn, "/")
                        conn.close()
                        t_html = time.perf_counter()
                        if not page["html"]:
                            raise Failure(f"/healthz answered but GET / gave {page}")
                        res["page"] = page
                        res["spawn_to_ready_ms"] = (t_ready - t0) * 1000
                        res["ready_to_html_ms"] = (t_html - t_ready) * 1000
                        break
                # A fixed-rate timer like libuv's repeating one: the next tick is the next
                # multiple of the interval after the spawn; a probe still running when a tick
                # is due makes that tick pass, as in codehub.
                now = time.perf_counter()
                tick = max(tick + 1, int((now - t0) / interval) + 1)
                time.sleep(max(0.0, t0 + tick * interval - time.perf_counter()))
        finally:
            busy1 = cpu_busy()
            res["stop_ms"] = self.procs.stop_group(proc.pid, leader=proc)
        res["spawn_to_html_ms"] = (t_html - t0) * 1000
        res["machine_busy_cpus"] = busy_cpus(busy0, busy1)
        res["loadavg_1m"] = load0
        return res

    def _try_page(self, res, t0):
        conn = UnixHTTPConnection(self.sock, 30)
        try:
            conn.connect()
            if "first_connect_ms" not in res:
                res["first_connect_ms"] = (time.perf_counter() - t0) * 1000
            return fetch_html(conn, "/")
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()


# --- B: through codehub --------------------------------------------------------------------------

def stop_server(conn, procs, name, headers, jar, pgid, kind="codehub", stop_timeout_s=30,
                group_timeout_s=10):
    """DELETE NAME's server through the hub API on `conn` (closed afterwards), wait until
    GET /hub/api/users/NAME shows neither a server nor a pending action, then until process
    group `pgid` (if any) is gone. Works on codehub and JupyterHub alike; `headers` carries
    the XSRF token. Returns the milliseconds."""
    t0 = time.perf_counter()
    status, _, body = exchange(conn, "DELETE", f"/hub/api/users/{name}/server", headers,
                               jar=jar)
    if status not in (202, 204):
        raise Failure(f"{kind} DELETE server of {name}: {status} {body[:300]!r}")
    deadline = time.monotonic() + stop_timeout_s
    while True:
        status, _, body = exchange(conn, "GET", f"/hub/api/users/{name}",
                                   {"Accept": "application/json"}, jar=jar)
        model = json.loads(body) if status == 200 else {}
        if status == 200 and not model.get("server") and not model.get("pending"):
            break
        if time.monotonic() > deadline:
            raise Failure(f"{kind}: {name}'s server did not stop: {status} {body[:300]!r}")
        time.sleep(0.02)
    conn.close()
    if pgid is not None:
        if not wait_group_gone(pgid, group_timeout_s):
            raise Failure(f"process group {pgid} still alive after the stop")
        procs.groups.discard(pgid)
    return (time.perf_counter() - t0) * 1000


class HubSide:
    def __init__(self, procs, port, data_dir, log_path, name):
        self.procs = procs
        self.port = port
        self.data_dir = data_dir
        self.log_path = log_path
        self.name = name

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)

    def login(self, conn, jar):
        """GET /hub/login, then the timed POST. Returns the POST's milliseconds."""
        status, _, page = exchange(conn, "GET", "/hub/login", PAGE_HEADERS, jar=jar)
        m = re.search(rb'name="_xsrf" value="([^"]*)"', page)
        if status != 200 or m is None:
            raise Failure(f"GET /hub/login: {status}, no _xsrf field")
        body = urllib.parse.urlencode({"username": self.name, "password": PASSWORD,
                                       "_xsrf": m.group(1).decode()})
        t0 = time.perf_counter()
        status, resp, _ = exchange(conn, "POST", "/hub/login", {
            "Content-Type": "application/x-www-form-urlencoded", **PAGE_HEADERS},
            body=body, jar=jar)
        t1 = time.perf_counter()
        if status != 303 or "codehub-session" not in jar.cookies:
            raise Failure(f"login {self.name}: {status}")
        return t0, t1, resp.getheader("Location")

    def home_xsrf(self, conn, jar):
        status, _, page = exchange(conn, "GET", "/hub/home", PAGE_HEADERS, jar=jar)
        m = re.search(rb'name="codehub-xsrf" content="([^"]*)"', page)
        if status != 200 or m is None:
            raise Failure(f"GET /hub/home: {status}, no codehub-xsrf meta tag")
        return m.group(1).decode()

    def run(self):
        """One B run: login, start, first page; then the server is stopped again."""
        log_offset = self.log_path.stat().st_size
        conn, jar = self.conn(), Jar()
        busy0, load0 = cpu_busy(), loadavg()
        t_login, t_logged_in, location = self.login(conn, jar)
        xsrf = self.home_xsrf(conn, jar)
        t_home, wall_post = time.perf_counter(), time.time()
        status, _, body = exchange(conn, "POST", f"/hub/api/users/{self.name}/server",
                                   {"X-XSRF-Token": xsrf, "Accept": "application/json"},
                                   jar=jar)
        t_ready, wall_201 = time.perf_counter(), time.time()
        pgid = self._record_pgid()
        if status != 201:
            raise Failure(f"POST /hub/api/users/{self.name}/server: {status} {body[:300]!r}")
        page = fetch_html(conn, f"/user/{self.name}/", jar=jar)
        t_html = time.perf_counter()
        busy1 = cpu_busy()
        conn.close()
        if not page["html"]:
            raise Failure(f"GET /user/{self.name}/ gave {page}")
        res = {
            "login_location": location,
            "login_ms": (t_logged_in - t_login) * 1000,
            "home_ms": (t_home - t_logged_in) * 1000,
            "start_to_ready_ms": (t_ready - t_home) * 1000,
            "ready_to_html_ms": (t_html - t_ready) * 1000,
            "start_to_html_ms": (t_html - t_home) * 1000,
            "total_ms": (t_html - t_login) * 1000,
            "page": page,
            "pgid": pgid,
            "machine_busy_cpus": busy_cpus(busy0, busy1),
            "loadavg_1m": load0,
        }
        res["stop_ms"] = self.stop(xsrf, jar, pgid)
        res["hub_log"] = self.log_facts(log_offset, wall_post, wall_201)
        return res

    def _record_pgid(self):
        path = self.data_dir / "run" / self.name / "server.json"
        try:
            pgid = json.loads(path.read_text())["pgid"]
        except (OSError, ValueError, KeyError):
            return None
        self.procs.groups.add(pgid)
        return pgid

    def start_stop_once(self):
        """The home's first start (codehub initialises it), then a stop."""
        conn, jar = self.conn(), Jar()
        self.login(conn, jar)
        xsrf = self.home_xsrf(conn, jar)
        status, _, body = exchange(conn, "POST", f"/hub/api/users/{self.name}/server",
                                   {"X-XSRF-Token": xsrf}, jar=jar)
        pgid = self._record_pgid()
        if status != 201:
            raise Failure(f"first start of {self.name}: {status} {body[:300]!r}")
        page = fetch_html(conn, f"/user/{self.name}/", jar=jar)
        conn.close()
        if not page["html"]:
            raise Failure(f"first page of {self.name}: {page}")
        self.stop(xsrf, jar, pgid)

    def steady_proxy(self, n, warm=20):
        """The proxy's cost per request once the server runs: GET of the workspace page
        (the HTML), straight on code-server's socket and through /user/NAME/, alternating,
        each on its own keep-alive connection. Returns the timings."""
        conn, jar = self.conn(), Jar()
        self.login(conn, jar)
        xsrf = self.home_xsrf(conn, jar)
        status, _, body = exchange(conn, "POST", f"/hub/api/users/{self.name}/server",
                                   {"X-XSRF-Token": xsrf}, jar=jar)
        pgid = self._record_pgid()
        if status != 201:
            raise Failure(f"start of {self.name}: {status} {body[:300]!r}")
        page = fetch_html(conn, f"/user/{self.name}/", jar=jar)
        prefix = f"/user/{self.name}"
        if not page["html"] or not page["path"].startswith(prefix + "/"):
            raise Failure(f"page of {self.name}: {page}")
        sides = {"direct": (UnixHTTPConnection(self.data_dir / "run" / self.name /
                                               "code-server.sock", 30),
                            page["path"][len(prefix):], None),
                 "proxy": (conn, page["path"], jar)}
        times = {k: [] for k in sides}
        sizes = {}
        for i in range(warm + n):
            for label, (c, path, j) in sides.items():
                t0 = time.perf_counter()
                status, _, data = exchange(c, "GET", path, PAGE_HEADERS, jar=j)
                dt = (time.perf_counter() - t0) * 1000
                if status != 200:
                    raise Failure(f"steady GET {path} ({label}): {status}")
                sizes[label] = len(data)
                if i >= warm:
                    times[label].append(dt)
        for c, _, _ in sides.values():
            c.close()
        self.stop(xsrf, jar, pgid)
        diffs = [p - d for p, d in zip(times["proxy"], times["direct"])]
        return {"n": n, "warmup": warm, "bytes": sizes, "path": page["path"],
                "direct": rounded(summarize(times["direct"]), 3),
                "proxy": rounded(summarize(times["proxy"]), 3),
                "paired_difference": rounded(summarize(diffs), 3),
                "direct_ms": [round(t, 3) for t in times["direct"]],
                "proxy_ms": [round(t, 3) for t in times["proxy"]]}

    def stop(self, xsrf, jar, pgid):
        """DELETE the server, wait until the hub says it is stopped and its process group is
        gone. Returns the milliseconds."""
        return stop_server(self.conn(), self.procs, self.name, {"X-XSRF-Token": xsrf}, jar,
                           pgid)

    def log_facts(self, offset, wall_post, wall_201):
        """What the hub's own log says about this run. Its timestamps are the same wall clock
        as time.time() here, cut to whole milliseconds."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        stamps, requests = {}, []
        for line in text.splitlines():
            m = re.match(r"(\S+Z) \w+ (\S+)(.*)$", line)
            if not m:
                continue
            ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            event, rest = m.group(2), m.group(3)
            if event in ("server.start_requested", "spawn.process_started", "spawn.ready",
                         "server.ready") and event not in stamps:
                stamps[event] = ts
            if event == "request":
                r = re.search(r"method=(\S+) path=(\S+) status=(\d+) ms=([\d.]+)", rest)
                if r:
                    requests.append({"method": r.group(1), "path": r.group(2),
                                     "status": int(r.group(3)), "ms": float(r.group(4))})
        out = {"requests": requests}

        def gap(a, b):
            if a in stamps and b in stamps:
                return round((stamps[b] - stamps[a]) * 1000, 1)
            return None

        out["start_requested_to_process_started_ms"] = gap("server.start_requested",
                                                           "spawn.process_started")
        out["process_started_to_ready_ms"] = gap("spawn.process_started", "spawn.ready")
        if "spawn.process_started" in stamps:
            out["post_to_process_started_ms"] = round(
                (stamps["spawn.process_started"] - wall_post) * 1000, 1)
        if "spawn.ready" in stamps:
            out["ready_to_201_ms"] = round((wall_201 - stamps["spawn.ready"]) * 1000, 1)
        for r in requests:
            if r["method"] == "POST" and r["path"] == "/hub/login":
                out["login_request_ms"] = r["ms"]
            elif r["method"] == "POST" and r["path"].endswith("/server"):
                out["start_request_ms"] = r["ms"]
        proxied = [r for r in requests if r["path"].startswith(f"/user/{self.name}/")]
        if len(proxied) >= 2:
            out["proxy_first_ms"] = proxied[0]["ms"]
            out["proxy_html_ms"] = proxied[1]["ms"]
        return out


# --- machine facts, setup ------------------------------------------------------------------------

def machine_facts(binary, sodium):
    model = cpu_model()
    mem_kib = mem_total_kib()
    # The launcher scripts/install-code-server.sh writes execs a node named in it.
    m = re.search(r'exec "([^"]+)"', CODE_SERVER.read_text(errors="replace"))
    node = Path(m.group(1) if m else shutil.which("node") or "node")
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "codehub": first_line([binary, "version"]),
        "codehub_binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest(),
        "codehub_binary_mtime_utc": datetime.datetime.fromtimestamp(
            os.stat(binary).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_server": first_line([str(CODE_SERVER), "--version"]),
        "node": first_line([str(node), "--version"]) if node.exists() else "",
        "libsodium_ctypes": sodium.version,
        "python": platform.python_version(),
    }


def copy_binary(src, dst, wait_s=120):
    """A private copy, so that a colleague's rebuild cannot swap the binary mid-run; waits
    while a rebuild has the file briefly missing."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            shutil.copy2(src, dst)
            os.chmod(dst, 0o755)
            return
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            log(f"{src} is missing (a rebuild?); waiting")
            time.sleep(2)


def cli(binary, config, data_dir, args, stdin=None):
    res = subprocess.run([binary, *args, "--config", str(config), "--data-dir", str(data_dir)],
                         input=stdin, capture_output=True, env=clean_env(), check=False)
    if res.returncode != 0:
        raise Failure(f"codehub {' '.join(args)} failed: {res.stderr.decode()}")
    return res.stdout.decode()


def start_hub(procs, binary, config, data_dir, log_path, cwd):
    env = clean_env({"CODEHUB_LOCAL_CODE_SERVER": str(CODE_SERVER)})
    logf = open(log_path, "ab")
    procs.hub = subprocess.Popen([binary, "serve", "--config", str(config), "--bind",
                                  "127.0.0.1:0", "--data-dir", str(data_dir)],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                                 cwd=cwd)
    logf.close()
    deadline = time.monotonic() + 20
    while True:
        if procs.hub.poll() is not None or time.monotonic() > deadline:
            raise Failure(f"codehub did not start: {log_path.read_text()[-2000:]}")
        m = re.search(r"hub\.listening .*?port=(\d+)", log_path.read_text(errors="replace"))
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            status, _, _ = exchange(conn, "GET", "/hub/health")
            conn.close()
            if status == 200:
                return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failure("codehub's /hub/health did not answer")
        time.sleep(0.05)


def argon2_cost(stored):
    m = re.match(r"\$argon2id\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$", stored)
    if not m:
        return {"hash_prefix": stored[:40]}
    return {"alg": "argon2id", "version": int(m.group(1)), "memlimit_kib": int(m.group(2)),
            "opslimit": int(m.group(3)), "parallelism": int(m.group(4))}


# --- the benchmark -------------------------------------------------------------------------------

def run(procs, tmp, args, reps, settle, quiet_max):
    binary = str(tmp / "codehub")
    copy_binary(args.bin, binary)
    sodium = Sodium()
    cmdline = "bench/spawn.py" + (" --quick" if args.quick else "") + (
        f" --reps {args.reps}" if args.reps else "")
    data_dir = tmp / "data"
    config = tmp / "codehub.yaml"
    config.write_text(CONFIG)
    hub_log = tmp / "codehub.log"
    direct_sock = tmp / "arun" / "code-server.sock"
    for sock in (data_dir / "run" / USER_HUB / "code-server.sock", direct_sock):
        if len(str(sock)) >= 107:
            raise Failure(f"socket path too long: {sock}")
    result = {
        "command": cmdline,
        "machine": machine_facts(binary, sodium),
        "settings": {
            "reps": reps,
            "warmup": "one run of each side first, not counted",
            "order": "A5 A100 B, repeated",
            "settle_s": settle,
            "quiet_gate": {"window_s": QUIET_WINDOW_S, "below_cpus": QUIET_CPUS,
                           "max_wait_s": quiet_max},
            "pinning": "none: code-server's start uses both CPUs; the hub, code-server and "
                       "this script share the machine's 2 CPUs",
            "config": CONFIG,
            "commands": {
                "user_add": "echo $PASSWORD | codehub user add NAME --password-stdin "
                            "--config DIR/codehub.yaml --data-dir DIR/data",
                "hub": "CODEHUB_LOCAL_CODE_SERVER=$PWD/.deps/code-server/bin/code-server "
                       "codehub serve --config DIR/codehub.yaml --bind 127.0.0.1:0 "
                       "--data-dir DIR/data 2>>DIR/codehub.log",
                "code_server": "env -i HOME=H USER=benchdirect LOGNAME=benchdirect "
                               f"SHELL=/bin/bash PATH={SAFE_PATH} LANG=C.UTF-8 "
                               "setsid .deps/code-server/bin/code-server --auth none "
                               "--socket DIR/arun/code-server.sock --socket-mode 600 "
                               "--user-data-dir H/.local/share/code-server --extensions-dir "
                               "H/.local/share/code-server/extensions --disable-telemetry "
                               "--disable-update-check --disable-workspace-trust H/projects",
                "code_server_notes": "H = DIR/data/users/benchdirect, the working directory; "
                                     "stdin /dev/null; stdout and stderr appended to "
                                     "H/code-server.log",
            },
            "poll": {"A5": "GET / (following the redirect) every 5 ms from the spawn",
                     "A100": "GET /healthz every 100 ms from the spawn, one probe at a time, "
                             "a new connection each (src/spawn/local.c), then GET / and its "
                             "redirect on one connection",
                     "B": "the hub's own polling (the same as A100) behind POST "
                          "/hub/api/users/NAME/server; then GET /user/NAME/ and its redirect "
                          "on the browser's keep-alive connection"},
        },
    }
    log(f"setup in {tmp}")
    for name in (USER_HUB, USER_DIRECT):
        cli(binary, config, data_dir, ["user", "add", name, "--password-stdin"],
            stdin=(PASSWORD + "\n").encode())
    db = sqlite3.connect(data_dir / "codehub.sqlite", timeout=10)
    stored = db.execute("SELECT password_hash FROM users WHERE name = ?",
                        (USER_HUB,)).fetchone()[0]
    db.close()
    port = start_hub(procs, binary, config, data_dir, hub_log, tmp)
    hub_b = HubSide(procs, port, data_dir, hub_log, USER_HUB)
    # Both homes are initialised by codehub's first start and stopped again, so that every
    # measured start, A's and B's, is a second or later start on an initialised home.
    for name in (USER_HUB, USER_DIRECT):
        t0 = time.perf_counter()
        HubSide(procs, port, data_dir, hub_log, name).start_stop_once()
        log(f"first start and stop of {name} through the hub: "
            f"{time.perf_counter() - t0:.2f} s")
    (tmp / "arun").mkdir(mode=0o700)
    home_a = data_dir / "users" / USER_DIRECT
    settings = home_a / ".local" / "share" / "code-server" / "User" / "settings.json"
    result["settings"]["home_settings_json"] = settings.read_text()
    direct = Direct(procs, home_a, direct_sock, USER_DIRECT)

    def one(side):
        if side == "B":
            res = hub_b.run()
            t0 = time.perf_counter()
            sodium.verify(stored.encode(), PASSWORD)
            res["raw_verify_ms"] = (time.perf_counter() - t0) * 1000
        else:
            res = direct.run(side)
        time.sleep(settle)
        return res

    runs = {s: [] for s in SIDES}
    warm = {}
    gates = []
    for side in SIDES:
        warm[side] = one(side)
        log(f"warm-up {side}: {first_html(side, warm[side]):.0f} ms")
    for rep in range(reps):
        waited, quiet = wait_quiet(quiet_max)
        gates.append({"waited_s": waited, "busy_cpus": quiet})
        line = []
        for side in SIDES:
            res = one(side)
            runs[side].append(res)
            line.append(f"{side} {first_html(side, res):.0f}")
        b = runs["B"][-1]
        log(f"rep {rep + 1}/{reps}: to first HTML (ms): {', '.join(line)} "
            f"(B: login {b['login_ms']:.0f}, total {b['total_ms']:.0f}; waited {waited} s "
            f"for a quiet machine: {quiet} CPUs busy)")
    result["warmup"] = warm
    result["runs"] = runs
    result["quiet_gate"] = {"per_rep": gates,
                            "waited_s": summarize([g["waited_s"] for g in gates]),
                            "busy_cpus": summarize([g["busy_cpus"] for g in gates]),
                            "reached": sum(g["busy_cpus"] < QUIET_CPUS for g in gates)}
    n_steady = 50 if args.quick else 200
    log(f"steady state: {n_steady} GETs of the page each, direct and through the proxy")
    result["steady_proxy"] = hub_b.steady_proxy(n_steady)
    result["argon2"] = {"cost": argon2_cost(stored), "libsodium": sodium.version,
                        "interactive": {"opslimit": sodium.ops, "memlimit_bytes": sodium.mem}}
    result["summary"] = summarise(runs)
    result["overhead"] = overheads(runs)
    result["hub_log"] = hub_log_summary(runs["B"])
    return result


def busy_cpus(before, after):
    """CPUs busy between two cpu_busy() readings (0 to nproc)."""
    return round(sum((after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1])
                     for c in after), 3)


def wait_quiet(max_wait, threshold=QUIET_CPUS, window=QUIET_WINDOW_S):
    """Waits until the machine was nearly idle for one window (other engineers' builds and
    test suites share it), or `max_wait` seconds. Returns (waited s, busy CPUs of the last
    window)."""
    t0 = time.monotonic()
    while True:
        b0 = cpu_busy()
        time.sleep(window)
        busy = busy_cpus(b0, cpu_busy())
        waited = time.monotonic() - t0
        if busy < threshold or waited >= max_wait:
            return round(waited, 2), busy


def first_html(side, res):
    return res["start_to_html_ms"] if side == "B" else res["spawn_to_html_ms"]


def rounded(sm, digits=1):
    if sm is None:
        return None
    return {k: (round(v, digits) if isinstance(v, float) else v) for k, v in sm.items()}


SUMMARY_KEYS = {
    "A5": ("spawn_to_html_ms", "first_connect_ms", "first_answer_ms", "attempts", "stop_ms",
           "machine_busy_cpus"),
    "A100": ("spawn_to_ready_ms", "ready_to_html_ms", "spawn_to_html_ms", "attempts",
             "stop_ms", "machine_busy_cpus"),
    "B": ("login_ms", "raw_verify_ms", "home_ms", "start_to_ready_ms", "ready_to_html_ms",
          "start_to_html_ms", "total_ms", "stop_ms", "machine_busy_cpus"),
}


def summarise(runs):
    return {side: {k: rounded(summarize([r.get(k) for r in runs[side]]), 3 if "cpus" in k else 1)
                   for k in keys} for side, keys in SUMMARY_KEYS.items()}


OVERHEADS = [
    ("start_vs_A100", "B start POST → first HTML − A100 spawn → first HTML",
     "B", "start_to_html_ms", "A100", "spawn_to_html_ms"),
    ("start_vs_A5", "B start POST → first HTML − A5 spawn → first HTML",
     "B", "start_to_html_ms", "A5", "spawn_to_html_ms"),
    ("total_vs_A100", "B login POST → first HTML − A100 spawn → first HTML",
     "B", "total_ms", "A100", "spawn_to_html_ms"),
    ("total_vs_A5", "B login POST → first HTML − A5 spawn → first HTML",
     "B", "total_ms", "A5", "spawn_to_html_ms"),
    ("ready_vs_A100", "B start POST → 201 ready − A100 spawn → /healthz answered",
     "B", "start_to_ready_ms", "A100", "spawn_to_ready_ms"),
    ("proxy_vs_A100",
     "B 201 → first HTML through the proxy − A100 /healthz answered → first HTML direct",
     "B", "ready_to_html_ms", "A100", "ready_to_html_ms"),
    ("poll_A100_vs_A5", "A100 spawn → first HTML − A5 spawn → first HTML (a fixed 100 ms poll, codehub's former one, "
     "without codehub)", "A100", "spawn_to_html_ms", "A5", "spawn_to_html_ms"),
    ("login_vs_raw", "B login POST → 303 − raw crypto_pwhash_str_verify",
     "B", "login_ms", "B", "raw_verify_ms"),
]


def overheads(runs):
    out = {}
    for key, title, sb, kb, sa, ka in OVERHEADS:
        b = [r[kb] for r in runs[sb]]
        a = [r[ka] for r in runs[sa]]
        out[key] = {
            "title": title,
            # Each B ran right after the A5 and A100 of its repetition: the per-repetition
            # difference cancels slow drifts of the machine's load.
            "paired": rounded(summarize([x - y for x, y in zip(b, a)])),
            "of_medians": round(summarize(b)["median"] - summarize(a)["median"], 1),
        }
    return out


def hub_log_summary(b_runs):
    keys = ("post_to_process_started_ms", "start_requested_to_process_started_ms",
            "process_started_to_ready_ms", "ready_to_201_ms",
            "login_request_ms", "start_request_ms", "proxy_first_ms", "proxy_html_ms")
    return {k: rounded(summarize([r["hub_log"].get(k) for r in b_runs])) for k in keys}


# --- report --------------------------------------------------------------------------------------

def render_markdown(r, source):
    m, s = r["machine"], r["settings"]
    # Computed again from the runs, so that a result file written before a row was added
    # still gets every row.
    sm, ov, hl = r["summary"], overheads(r["runs"]), r["hub_log"]
    cost = r["argon2"]["cost"]

    def fmt(x, digits=1):
        if x is None:
            return "–"
        f = f"{{:,.{digits}f}}"
        return f"{f.format(x['median'])} ({f.format(x['min'])}–{f.format(x['max'])})"

    lines = [f"Run `{r['command']}` on {m['date_utc']} ({source}): {s['reps']} repetitions of "
             f"A5, A100 and B in turn, after one warm-up run of each; {s['settle_s']} s pause "
             "after each run; nothing pinned. Times in ms, median (min–max).", ""]
    if "quiet_gate" in r:
        g = r["quiet_gate"]
        q = s["quiet_gate"]
        lines += [f"Each repetition started once the machine had been nearly idle (under "
                  f"{q['below_cpus']} CPUs busy over {q['window_s']} s, from /proc/stat) or "
                  f"after {q['max_wait_s']} s: idle before {g['reached']} of {s['reps']}, "
                  f"median wait {g['waited_s']['median']:.2f} s, busy CPUs in the last window "
                  f"{fmt(g['busy_cpus'], 2)}.", ""]
    lines += [
        f"codehub `{m['codehub']}` (sha256 `{m['codehub_binary_sha256'][:16]}…`, built "
        f"{m['codehub_binary_mtime_utc']}), code-server {m['code_server'].split(' ')[0]} "
        f"(node {m['node']}), libsodium {m['libsodium_ctypes']}, Python {m['python']}; "
        f"{m['nproc']} × {m['cpu_model']}, Linux {m['kernel']}.", "",
        "#### Commands", "", "```sh",
        s["commands"]["user_add"] + "   # NAME = benchspawn (B), benchdirect (A's home)",
        s["commands"]["hub"], "```", "", "with `DIR/codehub.yaml`:", "", "```yaml",
        s["config"].rstrip(), "```", "",
        "Each user's home is initialised by one start and stop through the hub before "
        "the runs. A starts code-server on benchdirect's home exactly as the hub does "
        "(src/spawn/local.c):", "", "```sh", s["commands"]["code_server"], "```", "",
        "In it: " + s["commands"].get("code_server_notes", "") + ".", "",
        "#### Time to code-server's first HTML", "",
        "| side | step | median (min–max) ms |", "|---|---|---|"]
    rows = [
        ("A5", "spawn → first connection accepted", sm["A5"]["first_connect_ms"]),
        ("A5", "spawn → first HTTP answer of any status", sm["A5"]["first_answer_ms"]),
        ("A5", "**spawn → first HTML** (200 after the redirect)", sm["A5"]["spawn_to_html_ms"]),
        ("A100", "spawn → /healthz answers 2xx", sm["A100"]["spawn_to_ready_ms"]),
        ("A100", "/healthz answered → first HTML (GET /, redirect, GET)",
         sm["A100"]["ready_to_html_ms"]),
        ("A100", "**spawn → first HTML**", sm["A100"]["spawn_to_html_ms"]),
        ("B", "login POST → 303 (Argon2id verify)", sm["B"]["login_ms"]),
        ("B", "GET /hub/home (XSRF token)", sm["B"]["home_ms"]),
        ("B", "start POST → 201 ready", sm["B"]["start_to_ready_ms"]),
        ("B", "201 → first HTML through /user/NAME/ (GET, redirect, GET)",
         sm["B"]["ready_to_html_ms"]),
        ("B", "**start POST → first HTML**", sm["B"]["start_to_html_ms"]),
        ("B", "**login POST → first HTML** (total)", sm["B"]["total_ms"]),
        ("raw", "`crypto_pwhash_str_verify` of the same stored hash, in this script",
         sm["B"]["raw_verify_ms"]),
    ]
    for side, step, x in rows:
        lines.append(f"| {side} | {step} | {fmt(x)} |")
    lines += ["", f"Argon2id cost of the login: {cost.get('alg')}, m = "
              f"{cost.get('memlimit_kib', 0) // 1024} MiB, t = {cost.get('opslimit')}, p = "
              f"{cost.get('parallelism')} (from the stored hash; libsodium's INTERACTIVE "
              "limits).", "", "#### codehub's overhead", "",
              "| difference | per repetition, median (min–max) ms | difference of medians, ms |",
              "|---|---|---|"]
    for key, *_ in OVERHEADS:
        o = ov[key]
        lines.append(f"| {o['title']} | {fmt(o['paired'])} | {o['of_medians']:.1f} |")
    lines += ["", "#### B as the hub logged it", "",
              "Timestamps and request durations from the hub's own log (1 ms steps).", "",
              "| what | median (min–max) ms |", "|---|---|",
              f"| client sends the start POST → `spawn.process_started` | "
              f"{fmt(hl['post_to_process_started_ms'])} |",
              f"| `server.start_requested` → `spawn.process_started` | "
              f"{fmt(hl['start_requested_to_process_started_ms'])} |",
              f"| `spawn.process_started` → `spawn.ready` | "
              f"{fmt(hl['process_started_to_ready_ms'])} |",
              f"| `spawn.ready` → the client has the 201 | {fmt(hl['ready_to_201_ms'])} |",
              f"| POST /hub/login, as logged | {fmt(hl['login_request_ms'])} |",
              f"| POST /hub/api/users/NAME/server, as logged | {fmt(hl['start_request_ms'])} |",
              f"| first proxied GET /user/NAME/ (code-server's redirect), as logged | "
              f"{fmt(hl['proxy_first_ms'])} |",
              f"| second proxied GET /user/NAME/?folder=… (the HTML), as logged | "
              f"{fmt(hl['proxy_html_ms'])} |", "",
              "#### The proxy on a running server", "",
              f"After the runs: benchspawn's server started once more, then "
              f"{r['steady_proxy']['n']} GETs of the workspace page "
              f"({r['steady_proxy']['bytes']['direct']:,} bytes of HTML) straight on its "
              "socket and as many through `/user/NAME/`, alternating, each side on its own "
              f"keep-alive connection, after {r['steady_proxy']['warmup']} of each.", "",
              "| path | ms per request, median (min–max) |", "|---|---|",
              f"| direct, Unix socket | {fmt(r['steady_proxy']['direct'], 3)} |",
              f"| through codehub (TCP to the hub, Unix socket to code-server) | "
              f"{fmt(r['steady_proxy']['proxy'], 3)} |",
              f"| difference, per pair | {fmt(r['steady_proxy']['paired_difference'], 3)} |",
              "",
              "#### Stops and machine load", "",
              "| side | stop → process group gone, ms | machine busy during the start, CPUs | "
              "polls |", "|---|---|---|---|"]
    for side in SIDES:
        x = sm[side]
        polls = fmt(x["attempts"], 0) if "attempts" in x else "–"
        lines.append(f"| {side} | {fmt(x['stop_ms'])} | {fmt(x['machine_busy_cpus'], 2)} | "
                     f"{polls} |")
    lines += ["", "B's stop is DELETE /hub/api/users/NAME/server until GET /hub/api/users/NAME "
              "shows no server and the process group is gone; A's is SIGTERM to the group "
              "until it is gone. \"Machine busy\" is the busy time of both CPUs (from "
              "/proc/stat) during the start, in CPUs: code-server itself plus everything else "
              "that ran.", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions: a smoke run")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", default=None,
                    help="result file (default: bench/results/spawn.json, "
                    "bench/results/tmp/spawn-quick.json with --quick)")
    ap.add_argument("--reps", type=int, help="repetitions of each side (default 30, quick 5)")
    ap.add_argument("--quiet-max", type=float, default=None,
                    help="seconds to wait at most, before each repetition, for a quiet "
                    "machine (default 4, quick 2; 0 never waits)")
    ap.add_argument("--settle", type=float, default=0.5,
                    help="seconds of pause after each run (default 0.5)")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown tables of a result")
    args = ap.parse_args()

    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0

    reps = args.reps or (5 if args.quick else 30)
    quiet_max = args.quiet_max if args.quiet_max is not None else (2.0 if args.quick else 4.0)
    if reps < 1:
        ap.error("--reps must be at least 1")
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "spawn-quick.json"
                                 if args.quick else ROOT / "bench" / "results" / "spawn.json"))
    if not os.access(CODE_SERVER, os.X_OK):
        print(f"spawn.py: {CODE_SERVER} not found: run make deps", file=sys.stderr)
        return 1
    if os.cpu_count() < 2:
        print("spawn.py: needs 2 CPUs", file=sys.stderr)
        return 1

    t_start = time.monotonic()
    result, status = run_scratch(
        "chs-", lambda procs, tmp: run(procs, tmp, args, reps, args.settle, quiet_max))
    if result is None:
        return status
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path} ({result['elapsed_s']} s)")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
