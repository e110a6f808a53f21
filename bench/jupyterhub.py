#!/usr/bin/env python3
"""Spawn benchmark against JupyterHub: login to code-server's first HTML through each proxy.

    bench/jupyterhub.py           full run (about 6 minutes, 8 on a busy machine): 20
                                  interleaved repetitions with one user, 3 with 20 users at
                                  once; writes
                                  bench/results/jupyterhub.json
    bench/jupyterhub.py --quick   smoke run (under 2 minutes): 2 repetitions with one user,
                                  1 with 5 users; writes bench/results/tmp/jupyterhub-quick.json
    bench/jupyterhub.py --report bench/results/jupyterhub.json   print the Markdown again

The peer is JupyterHub (pinned in bench/jupyterhub_requirements.txt, installed from PyPI into
the private venv .deps/bench/jupyterhub-venv when missing or when that file changed) with its
local-process spawner (SimpleLocalProcessSpawner: no system users, servers run as the hub's
user, as codehub's local spawner does by default) behind configurable-http-proxy 5.3.0 (the
one bench/proxy.py uses, in .deps/bench/chp), started and managed by JupyterHub. Both hubs
run the same code-server (.deps/code-server) with the same options and environment; only
the listener differs: codehub gives code-server a Unix socket, JupyterHub a TCP port of
127.0.0.1, which a small wrapper reads from JUPYTERHUB_SERVICE_URL (JupyterHub 2.0 and later
pass no --port) before it execs code-server.

code-server serves at its root, and JupyterHub routes /user/NAME/ to it without stripping
the prefix. CHP is therefore started with --no-include-prefix: it cuts the matched route
prefix off every request path (the hub's own route is "/", so /hub/... reaches the hub
unchanged). No extra hop is added.

Sides, in this order in every repetition, after a warm-up run of each:

A5 / AN   code-server started directly, exactly as codehub's local spawner starts it
          (bench/spawn.py's Direct); one user: GET / every 5 ms until its first HTML (the
          floor); N users: N started at once, each polled every 50 ms (one thread each;
          a 5 ms poll of 20 servers would itself take CPU from their start).
codehub   bench/spawn.py's B: login POST (Argon2id verify), GET /hub/home for the XSRF token,
          POST /hub/api/users/NAME/server (201 once ready), GET /user/NAME/ following the
          redirect until a 200 with HTML.
jupyterhub the same steps on JupyterHub: login POST (/hub/login with the form's _xsrf),
          GET /hub/home for the XSRF token, POST /hub/api/users/NAME/server (the REST API,
          as B does on codehub: 201 when ready within slow_spawn_timeout, else 202 and then
          the progress EventStream /hub/api/users/NAME/server/progress until its ready
          event, which is what the spawn-pending page listens to), GET /user/NAME/ through
          CHP. JupyterHub's own home page instead links to /hub/spawn, which waits 1 s and
          then redirects to spawn-pending and its EventStream: more round trips, so the API
          is the faster of JupyterHub's two ways.

With N users, every side starts all N at once (threads behind a barrier); the span is from
the first login POST to the last first HTML. Overhead = side - A of the same repetition.
Between runs every server is stopped through its hub's API and its process group waited for.

Every process this script starts is tracked (JupyterHub by PID, CHP by the PID file JupyterHub
writes, every code-server by its process group) and stopped at the end, also on Ctrl-C or
SIGTERM; the temporary directory is removed. Only 127.0.0.1 and Unix sockets are used.
Standard library only, plus bench/spawn.py's and bench/hub.py's helpers.
"""

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import Sodium, cpu_busy, free_port, log, summarize  # noqa: E402
from proxy import CHP_BIN, CHP_DIR, CHP_VERSION  # noqa: E402
from spawn import (CODE_SERVER, CONFIG, PAGE_HEADERS, SAFE_PATH, Direct,  # noqa: E402
                   Failure, HubSide, Jar, Procs, UnixHTTPConnection, busy_cpus, cli,
                   copy_binary, exchange, fetch_html, group_alive, machine_facts, rounded,
                   start_hub, stop_server, wait_group_gone, wait_quiet, QUIET_CPUS)

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".deps" / "bench" / "jupyterhub-venv"
REQUIREMENTS = ROOT / "bench" / "jupyterhub_requirements.txt"
PIP_LOG = ROOT / ".deps" / "bench" / "jupyterhub-pip.log"
PASSWORD = "bench-spawn-password"
USER_ONE = "benchspawn"     # one-user runs, on both hubs
USER_DIRECT = "benchdirect"  # its codehub-initialised home is the template of every other
MULTI_FMT = "bench-u{:02d}"
MULTI_POLL_S = 0.050
START_TIMEOUT_S = 120  # codehub's spawn.start_timeout default; given to JupyterHub too
SIDES_ONE = ("A5", "codehub", "jupyterhub")
SIDES_MULTI = ("AN", "codehub", "jupyterhub")


# --- the private venv ----------------------------------------------------------------------------

def ensure_venv():
    """Creates .deps/bench/jupyterhub-venv, or re-creates it when the requirements changed.
    Returns the path of its jupyterhub executable."""
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    exe = VENV / "bin" / "jupyterhub"
    if exe.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return exe
    log(f"installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.relative_to(ROOT)} "
        f"(log: {PIP_LOG.relative_to(ROOT)})")
    if VENV.exists():
        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(PIP_LOG, "wb") as f:
        for cmd in ([sys.executable, "-m", "venv", str(VENV)],
                    [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check",
                     "-r", str(REQUIREMENTS)]):
            if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode:
                raise Failure(f"{' '.join(cmd)} failed; see {PIP_LOG}")
    stamp.write_text(want + "\n")
    return exe


# --- processes -----------------------------------------------------------------------------------

class AllProcs(Procs):
    """spawn.py's Procs (codehub, code-server process groups, the sweep of processes working
    in the temporary directory) plus JupyterHub and the CHP it started."""

    def __init__(self, tmp):
        super().__init__(tmp)
        self.jupyterhub = None
        self.chp_pid_file = None
        # Held while a thread starts a code-server, so that none starts after stop_all began.
        self.lock = threading.Lock()
        self.closing = False

    def chp_pid(self):
        """CHP's PID from the file JupyterHub writes, if that process is still CHP."""
        try:
            pid = int(self.chp_pid_file.read_text().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"configurable-http-proxy" in f.read():
                    return pid
        except (AttributeError, OSError, ValueError):
            pass
        return None

    def stop_all(self):
        with self.lock:
            self.closing = True
        # JupyterHub first: on SIGTERM it stops its servers (cleanup_servers) and its proxy.
        if self.jupyterhub is not None and self.jupyterhub.poll() is None:
            self.jupyterhub.send_signal(signal.SIGTERM)
            try:
                self.jupyterhub.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.jupyterhub.kill()
                self.jupyterhub.wait()
        pid = self.chp_pid()
        if pid is not None:
            # JupyterHub starts CHP in a new session: its PID is its process group.
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_group_gone(pid, 5):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        super().stop_all()


def copy_home(src, dst):
    """A copy of a codehub-initialised home (its projects folder and code-server settings),
    without logs and sockets."""
    def ignore(directory, names):
        out = []
        for n in names:
            if n in ("code-server.log", "code-server.pid"):
                out.append(n)
                continue
            try:
                if stat.S_ISSOCK(os.lstat(os.path.join(directory, n)).st_mode):
                    out.append(n)
            except OSError:
                out.append(n)
        return out
    shutil.copytree(src, dst, symlinks=True, ignore=ignore)


# --- JupyterHub ----------------------------------------------------------------------------------

WRAPPER = """#!/bin/sh
# Written by bench/jupyterhub.py: JupyterHub's Spawner.cmd. JupyterHub (2.0 and later) passes
# the port it chose only in JUPYTERHUB_SERVICE_URL (http://127.0.0.1:PORT/user/NAME/). The PID
# is recorded for the benchmark (exec keeps it; it is the process group JupyterHub made), then
# code-server is exec'd with the argv and environment codehub's local spawner gives it
# (src/spawn/local.c), output appended to ~/code-server.log as codehub does, but listening on
# 127.0.0.1:PORT instead of a Unix socket.
echo $$ >"$HOME/code-server.pid"
hostport=${{JUPYTERHUB_SERVICE_URL#http://}}
hostport=${{hostport%%/*}}
exec env -i HOME="$HOME" USER="$USER" LOGNAME="$USER" SHELL=/bin/bash \\
    PATH={path} LANG=C.UTF-8 \\
    {code_server} --auth none --bind-addr "$hostport" \\
    --user-data-dir "$HOME/.local/share/code-server" \\
    --extensions-dir "$HOME/.local/share/code-server/extensions" \\
    --disable-telemetry --disable-update-check --disable-workspace-trust \\
    "$HOME/projects" >>"$HOME/code-server.log" 2>&1
"""

JH_CONFIG = """# Written by bench/jupyterhub.py.
c = get_config()  # noqa: F821

# Public side: configurable-http-proxy, started and managed by JupyterHub (the default
# ConfigurableHTTPProxy), the pinned CHP 5.3.0 under the system's node.
c.JupyterHub.bind_url = "http://127.0.0.1:{port}/"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
# --no-include-prefix: CHP cuts the route's prefix (/user/NAME) off the path, since
# code-server serves at its root; the hub's own route is "/", so /hub/... is unchanged.
c.ConfigurableHTTPProxy.command = [{node!r}, {chp!r}, "--no-include-prefix"]
c.ConfigurableHTTPProxy.pid_file = "{dir}/jupyterhub-proxy.pid"

# State: SQLite database and cookie secret in files, as on a single production machine.
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{dir}/jupyterhub.pid"
c.JupyterHub.log_level = "INFO"

# One shared password; a constant-time string compare (no password hash).
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {password!r}
c.Authenticator.allow_all = True

# Local processes as the hub's user, homes under the temporary directory.
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{dir}/homes/{{username}}"
c.Spawner.cmd = [{wrapper!r}]
# codehub's spawn.start_timeout (120 s) for both phases, so that 20 starts at once on two
# cores fail on neither hub; JupyterHub's defaults are 60 s and 30 s.
c.Spawner.start_timeout = {start_timeout}
c.Spawner.http_timeout = {start_timeout}
# Left at their defaults (stated in the report): concurrent_spawn_limit = 100,
# slow_spawn_timeout = 10 s, Spawner.poll_interval = 30 s, cleanup_servers = True.
"""


class JupyterHubServer:
    """JupyterHub with CHP, configured and started in DIR/jh."""

    def __init__(self, procs, tmp, exe):
        self.procs = procs
        self.dir = tmp / "jh"
        self.exe = exe
        self.port, self.hub_port, self.api_port = free_port(), free_port(), free_port()
        self.log_path = self.dir / "jupyterhub.log"
        self.config_path = self.dir / "jupyterhub_config.py"
        self.wrapper_path = self.dir / "code-server-wrapper.sh"
        self.node = shutil.which("node") or "node"

    def homes(self):
        return self.dir / "homes"

    def write(self):
        self.dir.mkdir()
        self.homes().mkdir()
        self.wrapper_path.write_text(WRAPPER.format(path=SAFE_PATH, code_server=CODE_SERVER))
        self.wrapper_path.chmod(0o755)
        self.config_path.write_text(self.config_text())

    def config_text(self, display=False):
        d = {"dir": self.dir, "port": self.port, "hub_port": self.hub_port,
             "api_port": self.api_port, "node": self.node, "chp": str(CHP_BIN),
             "password": PASSWORD, "wrapper": str(self.wrapper_path),
             "start_timeout": START_TIMEOUT_S}
        if display:
            d.update({"dir": "DIR", "port": "PORT", "hub_port": "HUB_PORT",
                      "api_port": "API_PORT", "chp": str(CHP_BIN.relative_to(ROOT)),
                      "password": "PASSWORD", "wrapper": "DIR/code-server-wrapper.sh"})
        return JH_CONFIG.format(**d)

    def start(self):
        self.procs.chp_pid_file = self.dir / "jupyterhub-proxy.pid"
        logf = open(self.log_path, "ab")
        # Its own session, so that a Ctrl-C reaches only this script, which stops it in order.
        self.procs.jupyterhub = subprocess.Popen(
            [str(self.exe), "-f", str(self.config_path)], cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=logf, stderr=logf, start_new_session=True,
            env={**os.environ, "PATH": f"{self.exe.parent}:{os.environ.get('PATH', SAFE_PATH)}"})
        logf.close()
        deadline = time.monotonic() + 60
        while True:
            if self.procs.jupyterhub.poll() is not None or time.monotonic() > deadline:
                raise Failure("JupyterHub did not start: "
                              + self.log_path.read_text(errors="replace")[-3000:])
            if "JupyterHub is now running" in self.log_path.read_text(errors="replace"):
                break
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        status, _, _ = exchange(conn, "GET", "/hub/health")
        conn.close()
        if status != 200:
            raise Failure(f"JupyterHub's /hub/health through CHP: {status}")

    def version(self):
        r = subprocess.run([str(self.exe), "--version"], capture_output=True, text=True,
                           check=False)
        return r.stdout.strip()


# --- the browser's steps, on either hub ----------------------------------------------------------

class Client:
    """One user's browser on one hub: the steps of bench/spawn.py's B, written once for both
    hubs (the API is JupyterHub-shaped on both); the differences are the session cookie, the
    place of the XSRF token in /hub/home and the header that carries it."""

    def __init__(self, kind, procs, port, name, home=None, data_dir=None):
        self.kind = kind
        self.procs = procs
        self.port = port
        self.name = name
        self.home = home          # JupyterHub: the user's home (the wrapper's PID file)
        self.data_dir = data_dir  # codehub: its data dir (run/NAME/server.json)
        if kind == "codehub":
            self.login_status, self.session_cookie = 303, "codehub-session"
            self.xsrf_re, self.xsrf_header = rb'name="codehub-xsrf" content="([^"]*)"', \
                "X-XSRF-Token"
        else:
            self.login_status, self.session_cookie = 302, "jupyterhub-session-id"
            self.xsrf_re, self.xsrf_header = rb'xsrf_token: "([^"]*)"', "X-XSRFToken"

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)

    def login_form(self, conn, jar):
        """GET /hub/login (not timed); returns the form body to POST."""
        status, _, page = exchange(conn, "GET", "/hub/login", PAGE_HEADERS, jar=jar)
        m = re.search(rb'name="_xsrf" value="([^"]*)"', page)
        if status != 200 or m is None:
            raise Failure(f"{self.kind} GET /hub/login: {status}, no _xsrf field")
        return urllib.parse.urlencode({"username": self.name, "password": PASSWORD,
                                       "_xsrf": m.group(1).decode()})

    def login_post(self, conn, jar, body):
        status, _, _ = exchange(conn, "POST", "/hub/login", {
            "Content-Type": "application/x-www-form-urlencoded", **PAGE_HEADERS},
            body=body, jar=jar)
        if status != self.login_status or self.session_cookie not in jar.cookies:
            raise Failure(f"{self.kind} login {self.name}: {status}")

    def home_xsrf(self, conn, jar):
        status, _, page = exchange(conn, "GET", "/hub/home", PAGE_HEADERS, jar=jar)
        m = re.search(self.xsrf_re, page)
        if status != 200 or m is None:
            raise Failure(f"{self.kind} GET /hub/home: {status}, no XSRF token")
        return m.group(1).decode()

    def start(self, conn, jar, xsrf):
        """POST .../server; on 202, the progress EventStream until its ready event. Returns
        the status of the POST."""
        status, _, body = exchange(conn, "POST", f"/hub/api/users/{self.name}/server",
                                   {self.xsrf_header: xsrf, "Accept": "application/json"},
                                   jar=jar)
        if status == 202:
            self.wait_progress(jar)
        elif status != 201:
            raise Failure(f"{self.kind} POST /hub/api/users/{self.name}/server: {status} "
                          f"{body[:300]!r}")
        return status

    def wait_progress(self, jar):
        conn = self.conn()
        try:
            conn.request("GET", f"/hub/api/users/{self.name}/server/progress",
                         headers={"Accept": "text/event-stream", "Cookie": jar.header()})
            resp = conn.getresponse()
            if resp.status != 200:
                raise Failure(f"{self.kind} progress of {self.name}: {resp.status}")
            while True:
                line = resp.readline()
                if not line:
                    raise Failure(f"{self.kind} progress of {self.name} ended before ready")
                if not line.startswith(b"data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise Failure(f"{self.kind} start of {self.name} failed: {event}")
                if event.get("ready"):
                    return
        finally:
            conn.close()

    def pgid(self):
        """The code-server's process group, which is then tracked for the final cleanup."""
        try:
            if self.kind == "codehub":
                path = self.data_dir / "run" / self.name / "server.json"
                pgid = int(json.loads(path.read_text())["pgid"])
            else:
                pgid = int((self.home / "code-server.pid").read_text().strip())
        except (OSError, ValueError, KeyError):
            return None
        self.procs.groups.add(pgid)
        return pgid

    def stop(self, xsrf, jar, pgid):
        """DELETE the server, wait until the hub shows none and its process group is gone.
        Returns the milliseconds (bench/spawn.py's stop_server, with this hub's XSRF header)."""
        return stop_server(self.conn(), self.procs, self.name, {self.xsrf_header: xsrf}, jar,
                           pgid, kind=self.kind, stop_timeout_s=60, group_timeout_s=30)

    def run(self, barrier=None):
        """The timed flow; with a barrier, every user's login POST waits for all the others'
        login page. Stops the server only when run alone (the N-user runner stops them all
        together). Returns absolute perf_counter stamps and their differences."""
        conn, jar = self.conn(), Jar()
        body = self.login_form(conn, jar)
        if barrier is not None:
            barrier.wait()
        t_login = time.perf_counter()
        self.login_post(conn, jar, body)
        t_logged_in = time.perf_counter()
        xsrf = self.home_xsrf(conn, jar)
        t_home = time.perf_counter()
        start_status = self.start(conn, jar, xsrf)
        t_ready = time.perf_counter()
        pgid = self.pgid()
        page = fetch_html(conn, f"/user/{self.name}/", jar=jar)
        t_html = time.perf_counter()
        conn.close()
        if not page["html"]:
            raise Failure(f"{self.kind} GET /user/{self.name}/ gave {page}")
        res = {
            "t_login": t_login, "t_html": t_html, "start_status": start_status,
            "login_ms": (t_logged_in - t_login) * 1000,
            "home_ms": (t_home - t_logged_in) * 1000,
            "start_to_ready_ms": (t_ready - t_home) * 1000,
            "ready_to_html_ms": (t_html - t_ready) * 1000,
            "start_to_html_ms": (t_html - t_home) * 1000,
            "total_ms": (t_html - t_login) * 1000,
            "page": page, "pgid": pgid,
        }
        res["_stop"] = (xsrf, jar, pgid)
        return res


def jh_log_facts(path, offset, name):
    """The JupyterHub log's own durations of this run's login and start requests."""
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = {}
    m = re.search(r"\d{3} POST /hub/login\b.*? ([\d.]+)ms", text)
    if m:
        out["login_request_ms"] = float(m.group(1))
    m = re.search(rf"(\d{{3}}) POST /hub/api/users/{re.escape(name)}/server .*? ([\d.]+)ms",
                  text)
    if m:
        out["start_request_ms"] = float(m.group(2))
    m = re.search(rf"User {re.escape(name)} took ([\d.]+) seconds to start", text)
    if m:
        out["spawn_logged_ms"] = float(m.group(1)) * 1000
    return out


# --- the runs ------------------------------------------------------------------------------------

def run_threads(fn, args_list):
    """fn(*args) in one thread each; returns the results in order, or raises the first
    failure once all have finished."""
    results = [None] * len(args_list)
    errors = []

    def worker(i, args):
        try:
            results[i] = fn(*args)
        except BaseException as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i, a), daemon=True)
               for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0] if isinstance(errors[0], Failure) else Failure(repr(errors[0]))
    return results


def direct_many(procs, directs):
    """N code-servers started at once, directly, as codehub starts them; each polled with
    GET / every MULTI_POLL_S until its first HTML. Then all stopped. Returns the run."""
    barrier = threading.Barrier(len(directs))

    def one(d):
        try:
            os.unlink(d.sock)
        except FileNotFoundError:
            pass
        logf = open(d.home / "code-server.log", "ab")
        barrier.wait()
        with procs.lock:
            if procs.closing:
                logf.close()
                raise Failure("interrupted")
            t0 = time.perf_counter()
            proc = subprocess.Popen(d.argv(), env=d.env(), cwd=d.home,
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    start_new_session=True)
            procs.groups.add(proc.pid)
        logf.close()
        tick = 0
        while True:
            if proc.poll() is not None:
                raise Failure(f"code-server exited with {proc.returncode}; see {d.home}")
            if time.perf_counter() - t0 > START_TIMEOUT_S:
                raise Failure("code-server served no page in time")
            conn = UnixHTTPConnection(d.sock, 60)
            try:
                page = fetch_html(conn, "/")
            except (OSError, http.client.HTTPException):
                page = None
            finally:
                conn.close()
            if page is not None and page["html"]:
                return {"t0": t0, "t_html": time.perf_counter(), "proc": proc}
            tick = max(tick + 1, int((time.perf_counter() - t0) / MULTI_POLL_S) + 1)
            time.sleep(max(0.0, t0 + tick * MULTI_POLL_S - time.perf_counter()))

    busy0 = cpu_busy()
    rs = run_threads(one, [(d,) for d in directs])
    busy1 = cpu_busy()
    t_first = min(r["t0"] for r in rs)
    stops = run_threads(lambda r: procs.stop_group(r["proc"].pid, leader=r["proc"]),
                        [(r,) for r in rs])
    per = [(r["t_html"] - r["t0"]) * 1000 for r in rs]
    return {"span_ms": (max(r["t_html"] for r in rs) - t_first) * 1000,
            "per_user_spawn_to_html_ms": [round(x, 1) for x in per],
            "per_user": rounded(summarize(per)),
            "stop_all_ms": round(max(stops), 1),
            "machine_busy_cpus": busy_cpus(busy0, busy1)}


def hub_many(procs, clients):
    """N users log in and start at once on one hub; span = first login POST -> last first
    HTML. Then all stopped at once."""
    barrier = threading.Barrier(len(clients))
    busy0 = cpu_busy()
    rs = run_threads(lambda c: c.run(barrier), [(c,) for c in clients])
    busy1 = cpu_busy()
    t_first = min(r["t_login"] for r in rs)
    stops = run_threads(lambda c, r: c.stop(*r["_stop"]), list(zip(clients, rs)))
    out = {"span_ms": (max(r["t_html"] for r in rs) - t_first) * 1000,
           "stop_all_ms": round(max(stops), 1),
           "machine_busy_cpus": busy_cpus(busy0, busy1),
           "start_statuses": {str(s): sum(1 for r in rs if r["start_status"] == s)
                              for s in sorted({r["start_status"] for r in rs})}}
    for key in ("login_ms", "home_ms", "start_to_ready_ms", "ready_to_html_ms",
                "start_to_html_ms", "total_ms"):
        out["per_user_" + key] = [round(r[key], 1) for r in rs]
        out[key] = rounded(summarize([r[key] for r in rs]))
    # Login POST -> first HTML of each user, from the common start (the first login POST).
    out["per_user_from_first_login_ms"] = [round((r["t_html"] - t_first) * 1000, 1)
                                           for r in rs]
    return out


def one_user(side, ctx):
    """One run of one side with one user; the server is stopped again before returning."""
    if side == "A5":
        res = ctx["direct"].run("A5")
    elif side == "codehub":
        res = ctx["hub_b"].run()
        t0 = time.perf_counter()
        ctx["sodium"].verify(ctx["stored"].encode(), PASSWORD)
        res["raw_verify_ms"] = (time.perf_counter() - t0) * 1000
    else:
        offset = ctx["jh"].log_path.stat().st_size
        client = ctx["jh_one"]
        busy0 = cpu_busy()
        res = client.run()
        busy1 = cpu_busy()
        res["machine_busy_cpus"] = busy_cpus(busy0, busy1)
        res["stop_ms"] = client.stop(*res.pop("_stop"))
        res["jh_log"] = jh_log_facts(ctx["jh"].log_path, offset, USER_ONE)
    time.sleep(ctx["settle"])
    return res


def first_html(side, res):
    """Headline time of a one-user run: spawn -> HTML (A5) or login POST -> HTML (hubs)."""
    return res["spawn_to_html_ms"] if side == "A5" else res["total_ms"]


def many(side, ctx):
    if side == "AN":
        res = direct_many(ctx["procs"], ctx["directs"])
    else:
        res = hub_many(ctx["procs"], ctx["clients"][side])
    time.sleep(ctx["settle"])
    return res


def versions(jh, binary, sodium):
    m = machine_facts(binary, sodium)

    def out(cmd):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr) else ""

    m["jupyterhub"] = jh.version()
    m["configurable_http_proxy"] = out([jh.node, str(CHP_BIN), "--version"])
    m["chp_node"] = out([jh.node, "--version"])
    m["venv_python"] = out([str(VENV / "bin" / "python"), "--version"])
    return m


def run(procs, tmp, args, exe):
    reps_one = args.reps or (2 if args.quick else 20)
    reps_many = args.reps_many or (1 if args.quick else 3)
    n_users = args.users or (5 if args.quick else 20)
    binary = str(tmp / "codehub")
    copy_binary(args.bin, binary)
    sodium = Sodium()
    data_dir = tmp / "data"
    config = tmp / "codehub.yaml"
    config.write_text(CONFIG)
    hub_log = tmp / "codehub.log"
    multi = [MULTI_FMT.format(i + 1) for i in range(n_users)]
    log(f"setup in {tmp}: codehub users {USER_ONE}, {USER_DIRECT}, {multi[0]}..{multi[-1]}")
    for name in [USER_ONE, USER_DIRECT] + multi:
        cli(binary, config, data_dir, ["user", "add", name, "--password-stdin"],
            stdin=(PASSWORD + "\n").encode())
    db = sqlite3.connect(data_dir / "codehub.sqlite", timeout=10)
    stored = db.execute("SELECT password_hash FROM users WHERE name = ?",
                        (USER_ONE,)).fetchone()[0]
    db.close()
    port = start_hub(procs, binary, config, data_dir, hub_log, tmp)
    # Homes initialised by codehub's first start (as bench/spawn.py does), so that every
    # measured start is a later start on an initialised home.
    for name in (USER_ONE, USER_DIRECT):
        HubSide(procs, port, data_dir, hub_log, name).start_stop_once()
    template = data_dir / "users" / USER_DIRECT

    jh = JupyterHubServer(procs, tmp, exe)
    jh.write()
    # JupyterHub's homes and the direct runs' homes: copies of that initialised home.
    for name in [USER_ONE] + multi:
        copy_home(template, jh.homes() / name)
    (tmp / "arun").mkdir(mode=0o700)
    directs = []
    for i in range(n_users):
        home = tmp / "dhomes" / f"d{i + 1:02d}"
        copy_home(template, home)
        directs.append(Direct(procs, home, tmp / "arun" / f"d{i + 1:02d}.sock",
                              f"benchdirect{i + 1:02d}"))
    log("starting JupyterHub")
    jh.start()
    ctx = {
        "procs": procs, "settle": args.settle, "sodium": sodium, "stored": stored, "jh": jh,
        "direct": Direct(procs, template, tmp / "arun" / "code-server.sock", USER_DIRECT),
        "hub_b": HubSide(procs, port, data_dir, hub_log, USER_ONE),
        "jh_one": Client("jupyterhub", procs, jh.port, USER_ONE, home=jh.homes() / USER_ONE),
        "directs": directs,
        "clients": {
            "codehub": [Client("codehub", procs, port, n, data_dir=data_dir) for n in multi],
            "jupyterhub": [Client("jupyterhub", procs, jh.port, n, home=jh.homes() / n)
                           for n in multi],
        },
    }
    result = {
        "command": "bench/jupyterhub.py" + (" --quick" if args.quick else "")
                   + (f" --reps {args.reps}" if args.reps else "")
                   + (f" --reps-many {args.reps_many}" if args.reps_many else "")
                   + (f" --users {args.users}" if args.users else ""),
        "machine": versions(jh, binary, sodium),
        "settings": settings(jh, reps_one, reps_many, n_users, args),
    }

    # One user.
    runs, warm, gates = {s: [] for s in SIDES_ONE}, {}, []
    for side in SIDES_ONE:
        warm[side] = one_user(side, ctx)
        log(f"warm-up, one user, {side}: {first_html(side, warm[side]):.0f} ms")
    for rep in range(reps_one):
        waited, busy = wait_quiet(args.quiet_max)
        gates.append({"waited_s": waited, "busy_cpus": busy})
        line = []
        for side in SIDES_ONE:
            res = one_user(side, ctx)
            runs[side].append(res)
            line.append(f"{side} {first_html(side, res):.0f}")
        log(f"one user, rep {rep + 1}/{reps_one}: to first HTML (ms): {', '.join(line)} "
            f"(codehub login {runs['codehub'][-1]['login_ms']:.0f}, JupyterHub login "
            f"{runs['jupyterhub'][-1]['login_ms']:.0f}; {busy} CPUs busy before)")
    result["one_user"] = {"warmup": warm, "runs": runs, "quiet_gate": gates}

    # N users at once.
    runs, warm, gates = {s: [] for s in SIDES_MULTI}, {}, []
    for side in SIDES_MULTI:
        warm[side] = many(side, ctx)
        log(f"warm-up, {n_users} users, {side}: span {warm[side]['span_ms']:.0f} ms")
    for rep in range(reps_many):
        waited, busy = wait_quiet(args.quiet_max)
        gates.append({"waited_s": waited, "busy_cpus": busy})
        line = []
        for side in SIDES_MULTI:
            res = many(side, ctx)
            runs[side].append(res)
            line.append(f"{side} {res['span_ms']:.0f}")
        log(f"{n_users} users, rep {rep + 1}/{reps_many}: span (ms): {', '.join(line)}")
    result["many_users"] = {"users": n_users, "warmup": warm, "runs": runs, "quiet_gate": gates}
    result["summary"] = summarise(result)
    return result


def settings(jh, reps_one, reps_many, n_users, args):
    return {
        "reps_one_user": reps_one, "reps_many_users": reps_many, "users": n_users,
        "order": "A, codehub, JupyterHub in every repetition, after one warm-up run of each",
        "settle_s": args.settle,
        "quiet_gate": {"max_wait_s": args.quiet_max},
        "codehub_config": CONFIG,
        "jupyterhub_config": jh.config_text(display=True),
        "wrapper": WRAPPER.format(path=SAFE_PATH, code_server=".deps/code-server/bin/"
                                  "code-server"),
        "commands": {
            "codehub": "CODEHUB_LOCAL_CODE_SERVER=$PWD/.deps/code-server/bin/code-server "
                       "codehub serve --config DIR/codehub.yaml --bind 127.0.0.1:0 "
                       "--data-dir DIR/data",
            "jupyterhub": ".deps/bench/jupyterhub-venv/bin/jupyterhub -f "
                          "DIR/jh/jupyterhub_config.py   # cwd DIR/jh; it starts CHP",
            "chp_as_started_by_jupyterhub": f"node {CHP_BIN.relative_to(ROOT)} "
                                            "--no-include-prefix --ip 127.0.0.1 --port PORT "
                                            "--api-ip 127.0.0.1 --api-port API_PORT "
                                            "--error-target http://127.0.0.1:HUB_PORT/hub/error "
                                            "--log-level info",
            "venv": f"python3 -m venv .deps/bench/jupyterhub-venv && "
                    f".deps/bench/jupyterhub-venv/bin/pip install -r "
                    f"{REQUIREMENTS.relative_to(ROOT)}",
        },
        "jupyterhub_defaults_kept": {
            "concurrent_spawn_limit": 100, "slow_spawn_timeout_s": 10,
            "Spawner.poll_interval_s": 30,
            "readiness_poll": "exponential_backoff: random sleep in [0, 0.2 s], then the bound "
                              "doubles (0.4, 0.8, ...) up to 5 s; any non-5xx answer of "
                              "GET /user/NAME/ on the server counts as up",
            "LocalProcessSpawner stop": "SIGINT, wait up to interrupt_timeout 30 s (polled "
                                        "every 0.1 s), then SIGTERM, then SIGKILL",
        },
        "codehub_defaults_kept": {"spawn.concurrent_limit": 20, "spawn.start_timeout_s": 120,
                                  "readiness_poll": "GET /healthz on the Unix socket (see "
                                                    "bench/spawn.py)"},
    }


# --- summary and report --------------------------------------------------------------------------

def ratio(a, b):
    return round(a / b, 3) if b else None


def summarise(r):
    one = r["one_user"]["runs"]
    out = {"one_user": {}, "many_users": {}}
    o = out["one_user"]
    keys = {"A5": ("spawn_to_html_ms", "first_connect_ms", "stop_ms", "machine_busy_cpus"),
            "codehub": ("login_ms", "raw_verify_ms", "home_ms", "start_to_ready_ms",
                        "ready_to_html_ms", "start_to_html_ms", "total_ms", "stop_ms",
                        "machine_busy_cpus"),
            "jupyterhub": ("login_ms", "home_ms", "start_to_ready_ms", "ready_to_html_ms",
                           "start_to_html_ms", "total_ms", "stop_ms", "machine_busy_cpus")}
    for side, ks in keys.items():
        o[side] = {k: rounded(summarize([x.get(k) for x in one[side]])) for k in ks}
    o["jupyterhub"]["jh_log"] = {k: rounded(summarize([x["jh_log"].get(k)
                                                       for x in one["jupyterhub"]]))
                                 for k in ("login_request_ms", "start_request_ms",
                                           "spawn_logged_ms")}
    a = [x["spawn_to_html_ms"] for x in one["A5"]]
    for hub in ("codehub", "jupyterhub"):
        for key in ("total_ms", "start_to_html_ms"):
            diffs = [x[key] - y for x, y in zip(one[hub], a)]
            o[hub][f"overhead_{key}"] = rounded(summarize(diffs))
    for key in ("total_ms", "start_to_html_ms"):
        oc = o["codehub"][f"overhead_{key}"]["median"]
        oj = o["jupyterhub"][f"overhead_{key}"]["median"]
        o[f"ratio_overhead_{key}"] = ratio(oc, oj)
        o[f"ratio_{key}"] = ratio(o["codehub"][key]["median"], o["jupyterhub"][key]["median"])
    m = out["many_users"]
    runs = r["many_users"]["runs"]
    m["AN"] = {"span_ms": rounded(summarize([x["span_ms"] for x in runs["AN"]])),
               "per_user_median_ms": rounded(summarize([x["per_user"]["median"]
                                                        for x in runs["AN"]]))}
    an = [x["span_ms"] for x in runs["AN"]]
    for hub in ("codehub", "jupyterhub"):
        rs = runs[hub]
        m[hub] = {"span_ms": rounded(summarize([x["span_ms"] for x in rs])),
                  "overhead_span_ms": rounded(summarize([x["span_ms"] - y
                                                         for x, y in zip(rs, an)]))}
        for key in ("login_ms", "start_to_html_ms", "total_ms"):
            m[hub][f"per_user_median_{key}"] = rounded(summarize([x[key]["median"]
                                                                  for x in rs]))
        m[hub]["slowest_login_ms"] = rounded(summarize([x["login_ms"]["max"] for x in rs]))
        m[hub]["start_statuses"] = [x["start_statuses"] for x in rs]
    m["ratio_overhead_span"] = ratio(m["codehub"]["overhead_span_ms"]["median"],
                                     m["jupyterhub"]["overhead_span_ms"]["median"])
    m["ratio_span"] = ratio(m["codehub"]["span_ms"]["median"],
                            m["jupyterhub"]["span_ms"]["median"])
    return out


def fmt(x, digits=0):
    if x is None:
        return "–"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(x['median'])} ({f.format(x['min'])}–{f.format(x['max'])})"


def plural(k, word):
    return f"{k} {word}" + ("" if k == 1 else "s")


def goal_sentence(o):
    """The issue's target, "spawn overhead at most a fifth of JupyterHub's", as measured."""
    out = []
    for key, what in (("total_ms", "with the login counted"),
                      ("start_to_html_ms", "from the start POST")):
        rt = o[f"ratio_overhead_{key}"]
        oc = o["codehub"][f"overhead_{key}"]["median"]
        oj = o["jupyterhub"][f"overhead_{key}"]["median"]
        if oj <= 0:
            out.append(f"cannot be judged {what}: JupyterHub's median overhead is {oj:.0f} ms "
                       "too, so this run's noise is larger than both overheads")
        elif oc <= 0:
            out.append(f"met {what}: codehub's median overhead is {oc:.0f} ms, i.e. codehub "
                       "was no slower than code-server started alone in the same repetitions "
                       "(its overhead is below this run's noise)")
        else:
            out.append(f"{'met' if rt <= 0.2 else 'not met'} {what} (ratio {rt})")
    return ("The goal \"spawn overhead at most a fifth of JupyterHub's\" (ratio ≤ 0.2): "
            + "; ".join(out) + ".")


def quiet_sentence(r):
    parts = []
    for key, what in (("one_user", "one-user"), ("many_users", "many-user")):
        g = r[key]["quiet_gate"]
        idle = sum(1 for x in g if x["busy_cpus"] < QUIET_CPUS)
        parts.append(f"{idle} of {len(g)} {what} repetitions")
    return (f"Started on a nearly idle machine (under {QUIET_CPUS} CPUs busy over 0.25 s, "
            f"from /proc/stat): {' and '.join(parts)}; the rest waited the full time while "
            "other work kept the CPUs busy.")


def render_markdown(r, source):
    # Computed again from the runs, so that a result written before a row was added still
    # gets every row.
    mc, s, sm = r["machine"], r["settings"], summarise(r)
    o, m = sm["one_user"], sm["many_users"]
    n = s["users"]
    cs = mc["code_server"].split(" ")[0]
    lines = [
        f"Run `{r['command']}` on {mc['date_utc']} ({source}); {mc['nproc']} × "
        f"{mc['cpu_model']}, Linux {mc['kernel']}, shared with other work (nothing pinned). "
        f"codehub `{mc['codehub']}`; JupyterHub {mc['jupyterhub']} ({mc['venv_python']}) with "
        f"configurable-http-proxy {mc['configurable_http_proxy']} (node "
        f"{mc['chp_node']}); code-server {cs} (its own node {mc['node']}) on both.", "",
        f"One user: {plural(s['reps_one_user'], 'repetition')}; {n} users at once: "
        f"{plural(s['reps_many_users'], 'repetition')}; each repetition runs A (code-server "
        "started directly, the floor), codehub, JupyterHub in turn, after one warm-up run of each, "
        "once the machine was nearly idle (at most "
        f"{s['quiet_gate']['max_wait_s']} s of waiting). " + quiet_sentence(r)
        + " Times in ms, median (min–max).", "",
        "#### One user: login POST → code-server's first HTML", "",
        "| step | codehub | JupyterHub |", "|---|---|---|"]
    c, j = o["codehub"], o["jupyterhub"]
    rows = [("login POST → redirect", "login_ms"), ("GET /hub/home (XSRF token)", "home_ms"),
            ("start POST → ready (201)", "start_to_ready_ms"),
            ("ready → first HTML through the proxy (GET, redirect, GET)", "ready_to_html_ms"),
            ("**start POST → first HTML**", "start_to_html_ms"),
            ("**login POST → first HTML** (total)", "total_ms"),
            ("overhead: total − A5 (per repetition)", "overhead_total_ms"),
            ("overhead: start POST → first HTML − A5 (per repetition)",
             "overhead_start_to_html_ms")]
    for title, key in rows:
        lines.append(f"| {title} | {fmt(c[key])} | {fmt(j[key])} |")
    lines += [
        f"| machine busy during the run, CPUs (of {mc['nproc']}) | "
        f"{fmt(c['machine_busy_cpus'], 2)} | {fmt(j['machine_busy_cpus'], 2)} |",
        f"| A5: code-server alone, spawn → first HTML (GET / every 5 ms) | "
        f"{fmt(o['A5']['spawn_to_html_ms'])} | (same runs) |",
        f"| A5: machine busy during the run, CPUs | {fmt(o['A5']['machine_busy_cpus'], 2)} | |",
        "",
        f"**Ratios codehub / JupyterHub (medians):** overhead, login included "
        f"**{o['ratio_overhead_total_ms']}**; overhead from the start POST (logins aside) "
        f"**{o['ratio_overhead_start_to_html_ms']}**; total time "
        f"{o['ratio_total_ms']}; start → first HTML {o['ratio_start_to_html_ms']}. "
        + goal_sentence(o), "",
        f"codehub's login verifies an Argon2id hash (libsodium {mc['libsodium_ctypes']}, "
        f"INTERACTIVE cost; the raw `crypto_pwhash_str_verify` of the same hash took "
        f"{fmt(c['raw_verify_ms'])} ms in this script); JupyterHub's shared-password "
        "authenticator compares a string. Subtract the login row to compare the rest.", "",
        "JupyterHub's own log, same runs: POST /hub/login "
        f"{fmt(j['jh_log']['login_request_ms'], 1)} ms, POST /hub/api/users/NAME/server "
        f"{fmt(j['jh_log']['start_request_ms'], 1)} ms, \"took … seconds to start\" "
        f"{fmt(j['jh_log']['spawn_logged_ms'])} ms. Stops (DELETE → process group gone): "
        f"codehub {fmt(c['stop_ms'])}, JupyterHub {fmt(j['stop_ms'])} ms.", "",
        f"#### {n} users at once", "",
        f"All {n} log in and start together (one thread each, behind a barrier): span = first "
        f"login POST → last first HTML. A×{n}: {n} code-servers started directly at once, "
        f"each polled with GET / every {int(MULTI_POLL_S * 1000)} ms.", "",
        "| | span | overhead: span − A (per repetition) | per user: login POST → first HTML "
        "(median of the run) | per user: login | slowest login of the run | per user: start "
        "POST → first HTML |",
        "|---|---|---|---|---|---|---|",
        f"| A×{n} (direct) | {fmt(m['AN']['span_ms'])} | – | "
        f"{fmt(m['AN']['per_user_median_ms'])} (spawn → HTML) | – | – | – |"]
    for hub, label in (("codehub", "codehub"), ("jupyterhub", "JupyterHub")):
        x = m[hub]
        lines.append(f"| {label} | {fmt(x['span_ms'])} | {fmt(x['overhead_span_ms'])} | "
                     f"{fmt(x['per_user_median_total_ms'])} | "
                     f"{fmt(x['per_user_median_login_ms'])} | {fmt(x['slowest_login_ms'])} | "
                     f"{fmt(x['per_user_median_start_to_html_ms'])} |")
    lines += [
        "", f"**Ratios codehub / JupyterHub (medians):** span overhead "
        f"**{m['ratio_overhead_span']}**"
        + (" (codehub's median span overhead is not above 0: below this run's noise)"
           if m["codehub"]["overhead_span_ms"]["median"] <= 0 else "")
        + f", span {m['ratio_span']}. Start POST answers: "
        f"codehub {m['codehub']['start_statuses']}, JupyterHub "
        f"{m['jupyterhub']['start_statuses']} (202 = not ready within 10 s; the client then "
        "follows the progress EventStream until ready).", "",
        "#### How it was run", "",
        "```sh", s["commands"]["venv"], s["commands"]["codehub"], s["commands"]["jupyterhub"],
        "# JupyterHub runs CHP as:", s["commands"]["chp_as_started_by_jupyterhub"], "```", "",
        "`DIR/codehub.yaml`:", "", "```yaml", s["codehub_config"].rstrip(), "```", "",
        "`DIR/jh/jupyterhub_config.py`:", "", "```python", s["jupyterhub_config"].rstrip(),
        "```", "", "`DIR/jh/code-server-wrapper.sh` (JupyterHub's `Spawner.cmd`):", "",
        "```sh", s["wrapper"].rstrip(), "```", "",
        "JupyterHub defaults kept: " + "; ".join(
            f"{k} = {v}" for k, v in s["jupyterhub_defaults_kept"].items()) + ".", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 repetitions with one user, 1 with 5 users")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", help="result file (default: bench/results/jupyterhub.json, "
                    "bench/results/tmp/jupyterhub-quick.json with --quick)")
    ap.add_argument("--reps", type=int, help="one-user repetitions (default 20, quick 2)")
    ap.add_argument("--reps-many", type=int, help="N-user repetitions (default 3, quick 1)")
    ap.add_argument("--users", type=int, help="users at once (default 20, quick 5)")
    ap.add_argument("--settle", type=float, default=0.5, help="pause after each run, s")
    ap.add_argument("--quiet-max", type=float, default=None,
                    help="seconds to wait at most for a quiet machine before each repetition "
                    "(default 5, quick 1)")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown of a result")
    args = ap.parse_args()
    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0
    for v in (args.reps, args.reps_many):
        if v is not None and v < 1:
            ap.error("repetitions must be at least 1")
    if args.users is not None and not 2 <= args.users <= 50:
        ap.error("--users must be 2 to 50")
    if args.quiet_max is None:
        args.quiet_max = 1.0 if args.quick else 5.0
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "jupyterhub-quick.json"
                                 if args.quick else ROOT / "bench" / "results" /
                                 "jupyterhub.json"))
    if not os.access(CODE_SERVER, os.X_OK):
        print(f"jupyterhub.py: {CODE_SERVER} not found: run make deps", file=sys.stderr)
        return 1
    if not CHP_BIN.exists():
        print(f"jupyterhub.py: missing {CHP_BIN}: cd {CHP_DIR} && npm install --save-exact "
              f"configurable-http-proxy@{CHP_VERSION}", file=sys.stderr)
        return 1
    try:
        exe = ensure_venv()
    except Failure as e:
        log(str(e))
        return 1

    # Short on purpose: code-server's Unix sockets live below it (at most 107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="chj-", dir="/tmp"))
    procs = AllProcs(tmp)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    t_start = time.monotonic()
    try:
        result = run(procs, tmp, args, exe)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except Failure as e:
        log(f"failed: {e}")
        for path in (tmp / "codehub.log", tmp / "jh" / "jupyterhub.log"):
            if path.exists():
                sys.stderr.write(f"--- {path.name}\n"
                                 + path.read_text(errors="replace")[-3000:])
        return 1
    finally:
        groups = set(procs.groups)
        procs.stop_all()
        left = [g for g in groups if group_alive(g)]
        if left:
            log(f"process groups still alive: {left}")
        shutil.rmtree(tmp, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    log(f"wrote {out_path} ({result['elapsed_s']} s)")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
