#!/usr/bin/env python3
"""Hub benchmarks: codehub measured side by side with a peer, in one run, on this machine.

    bench/hub.py            full run (about 10 minutes): 5 interleaved repetitions of 10 s
                            per side; writes bench/results/hub.json
    bench/hub.py --quick    smoke run (about 3 minutes): 3 repetitions of 3 s, 100 logins
    bench/hub.py --report bench/results/hub.json    print the Markdown tables of a result

What it measures (see bench/README.md and docs/benchmarks.md):

1. GET /hub/health under wrk (-t2 -c50 --latency) against codehub and against nginx serving
   the same 15-byte JSON body as a static file; request logging off for both, then on for
   both. Runs alternate A B A B after a warm-up of each; the result is medians with
   min-max and the ratio codehub/nginx.
2. RSS (VmRSS, VmHWM from /proc/PID/status) of codehub at a fresh start, with 1,000 users
   and 10,000 sessions in its store, after exercising the API, after the wrk runs and after
   1,000 logins.
3. GET /hub/api/users (admin token) with 1,000 users, default page (200 users) and
   ?limit=1000, beside nginx serving the very same JSON bytes as a static file.
4. Logins/s through POST /hub/login (Argon2id, libsodium INTERACTIVE cost), first-use logins
   (password set) and returning logins (password verified), beside libsodium's raw
   crypto_pwhash_str / crypto_pwhash_str_verify at the same cost with as many threads as
   the hub allows concurrent hashes (one per online CPU).

Every process this script starts is tracked by PID and stopped at the end, also on Ctrl-C.
Only 127.0.0.1 is contacted. Standard library only.
"""

import argparse
import ctypes
import ctypes.util
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = "0"
CLIENT_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEALTH_BODY = b'{"status":"ok"}'
ADMIN = "benchadmin"
ADMIN_PASSWORD = "bench-admin-password"
USER_FMT = "bench-{:04d}"
SESSION_MAX_AGE_MS = 14 * 86400 * 1000

# The headers codehub puts on every answer (hub_security_headers + Cache-Control). nginx sends
# them too, so that both answers carry the same kind of head, as a production front end would.
SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------

class Procs:
    """Every process started here, stopped by PID (never by name) at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kw)
        self.procs.append(proc)
        return proc

    def stop(self, proc, sig=signal.SIGTERM, timeout=15):
        if proc.poll() is None:
            try:
                os.kill(proc.pid, sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(reversed(self.procs)):
            self.stop(proc)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, timeout=20, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s")


def proc_status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile (KiB) and Threads from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key + "_kib"] = int(value.split()[0])
            elif key == "Threads":
                out["threads"] = int(value)
    return out


def proc_cpu_s(pids):
    """User + system CPU seconds so far of the given processes (all their threads)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def cpu_busy():
    """Per-CPU (busy, total) jiffies from /proc/stat, to see what else ran during a run."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if re.match(r"cpu\d", line):
                parts = line.split()
                vals = [int(v) for v in parts[1:]]
                idle = vals[3] + vals[4]
                out[parts[0]] = (sum(vals) - idle, sum(vals))
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# --- wrk ---------------------------------------------------------------------------------------

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
SIZE = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def parse_wrk(text):
    def num(pattern, cast=float, default=None):
        m = re.search(pattern, text, re.M)
        return cast(m.group(1)) if m else default

    res = {
        "rps": num(r"^Requests/sec:\s+([\d.]+)"),
        "requests": num(r"^\s*(\d+) requests in", int),
        "non_2xx_3xx": num(r"Non-2xx or 3xx responses: (\d+)", int, 0),
        "socket_errors": 0,
    }
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        res["socket_errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"requests in [\d.]+\w+, ([\d.]+)(\w+) read", text)
    if m and res["requests"]:
        res["bytes_per_response"] = round(float(m.group(1)) * SIZE[m.group(2)] / res["requests"])
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        if m:
            res[f"p{pct}_ms"] = round(float(m.group(1)) * UNITS[m.group(2)], 3)
    if res["rps"] is None:
        raise RuntimeError("could not parse wrk output:\n" + text)
    return res


def wrk_command(url, duration, headers=()):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t2", "-c50", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def shell_words(cmd):
    """The command as one would type it; "$TOKEN" stays expandable."""
    def quote(w):
        if re.fullmatch(r"[\w@%+=:,./-]+", w):
            return w
        return f'"{w}"' if "$" in w else f"'{w}'"
    return " ".join(quote(w) for w in cmd)


def run_wrk(procs, url, duration, server_pids, headers=()):
    """One wrk run; adds the CPU the server and wrk used, and the machine's per-CPU load."""
    cmd = wrk_command(url, duration, headers)
    busy0, cpu0 = cpu_busy(), proc_cpu_s(server_pids)
    load0 = loadavg()
    t0 = time.monotonic()
    proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    procs.procs.remove(proc)
    wall = time.monotonic() - t0
    cpu1, busy1 = proc_cpu_s(server_pids), cpu_busy()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")
    res = parse_wrk(out)
    res["server_cpu_util"] = round((cpu1 - cpu0) / wall, 3)
    res["client_cpu_util"] = round((rusage.ru_utime + rusage.ru_stime) / wall, 3)
    res["server_requests_per_cpu_s"] = (round(res["requests"] / (cpu1 - cpu0))
                                        if cpu1 > cpu0 else None)
    res["cpu_busy"] = {c: round((busy1[c][0] - busy0[c][0]) / max(1, busy1[c][1] - busy0[c][1]), 3)
                       for c in busy1}
    # CPU time of the whole machine (both CPUs) that neither the server nor wrk used: other
    # processes (colleagues' builds and tests on a shared machine), plus loopback softirq work
    # the kernel does not charge to either. Large values mark a disturbed run.
    res["other_cpu"] = round(sum(res["cpu_busy"].values()) - res["server_cpu_util"]
                             - res["client_cpu_util"], 3)
    res["loadavg_1m"] = [load0, loadavg()]
    return res


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def ab_pair(procs, name, a, b, reps, duration, warmup, truncate=()):
    """Runs A B A B ... after a warm-up of each. a and b: dict(label, url, pids, headers)."""
    log(f"{name}: warm-up {warmup}s each")
    for side in (a, b):
        run_wrk(procs, side["url"], warmup, side["pids"], side.get("headers", ()))
    for path in truncate:
        os.truncate(path, 0)
    runs = {a["label"]: [], b["label"]: []}
    log_bytes = {a["label"]: [], b["label"]: []}
    for rep in range(reps):
        for side in (a, b):
            res = run_wrk(procs, side["url"], duration, side["pids"], side.get("headers", ()))
            if side.get("log"):
                size = os.path.getsize(side["log"])
                log_bytes[side["label"]].append(size / res["requests"])
                os.truncate(side["log"], 0)
            runs[side["label"]].append(res)
            log(f"{name}: rep {rep + 1}/{reps} {side['label']:8s} {res['rps']:>10.0f} req/s"
                f"  p99 {res.get('p99_ms')} ms  server cpu {res['server_cpu_util']:.2f}"
                f"  wrk cpu {res['client_cpu_util']:.2f}")
    out = {"commands": {s["label"]: shell_words(wrk_command(s["display_url"], duration,
                                                           s.get("display_headers", ())))
                        for s in (a, b)},
           "runs": runs, "summary": {}}
    for label, rs in runs.items():
        out["summary"][label] = {k: summarize([r.get(k) for r in rs]) for k in
                                 ("rps", "p50_ms", "p99_ms", "server_cpu_util",
                                  "client_cpu_util", "server_requests_per_cpu_s",
                                  "bytes_per_response", "other_cpu")}
        out["summary"][label]["errors"] = sum(r["non_2xx_3xx"] + r["socket_errors"] for r in rs)
        if log_bytes[label]:
            out["summary"][label]["log_bytes_per_request"] = round(
                statistics.median(log_bytes[label]), 1)
    sa, sb = out["summary"][a["label"]], out["summary"][b["label"]]
    # Ratio of medians, and the median of the per-repetition ratios (each pair ran back to back,
    # so this one cancels slow drifts in the machine's load).
    out["ratio_rps"] = round(sa["rps"]["median"] / sb["rps"]["median"], 3)
    pair_ratios = [x["rps"] / y["rps"] for x, y in zip(runs[a["label"]], runs[b["label"]])]
    out["ratio_rps_paired"] = summarize([round(r, 3) for r in pair_ratios])
    if sa["server_requests_per_cpu_s"] and sb["server_requests_per_cpu_s"]:
        out["ratio_requests_per_cpu_s"] = round(sa["server_requests_per_cpu_s"]["median"]
                                                / sb["server_requests_per_cpu_s"]["median"], 3)
    log(f"{name}: ratio {a['label']}/{b['label']} = {out['ratio_rps']}")
    return out


# --- codehub and nginx ---------------------------------------------------------------------------

def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEHUB_")}
    env.update(extra or {})
    return env


def codehub_cli(binary, data_dir, args, stdin=None, cwd=None):
    res = subprocess.run([binary, *args, "--data-dir", str(data_dir)], input=stdin,
                         capture_output=True, env=clean_env(), cwd=cwd, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"codehub {' '.join(args)} failed: {res.stderr.decode()}")
    return res.stdout.decode()


CODE_SERVER = ROOT / ".deps" / "code-server" / "bin" / "code-server"


def start_codehub(procs, binary, data_dir, log_path, log_requests, cwd):
    # The hub checks at start that it could spawn code-server; the private copy of the binary
    # does not sit in the source tree, so point it at the one `make deps` installed. No
    # workspace is started by these benchmarks.
    env = clean_env({"CODEHUB_LOG_REQUESTS": "true" if log_requests else "false",
                     "CODEHUB_LOCAL_CODE_SERVER": str(CODE_SERVER)})
    logf = open(log_path, "ab")
    proc = procs.start(["taskset", "-c", SERVER_CPU, binary, "serve", "--bind", "127.0.0.1:0",
                        "--data-dir", str(data_dir)], stdout=logf, stderr=logf, env=env, cwd=cwd)
    logf.close()
    deadline = time.monotonic() + 20
    port = None
    while port is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"codehub did not start: {Path(log_path).read_text()[-2000:]}")
        with open(log_path, "rb") as f:
            m = re.search(rb"hub\.listening .*?port=(\d+)", f.read(65536))
        if m:
            port = int(m.group(1))
        else:
            time.sleep(0.05)
    wait_http(port, "/hub/health", proc=proc)
    return proc, port


def write_nginx(tmp, port_nolog, port_log, access_log):
    headers = "\n".join(f"    add_header {k} \"{v}\" always;" for k, v in SECURITY_HEADERS)
    conf = f"""# Written by bench/hub.py. One worker: the hub gets one core too.
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    server_tokens off;
    default_type application/json;
{headers}
    server {{
        listen 127.0.0.1:{port_nolog};
        root {tmp}/www;
        access_log off;
    }}
    server {{
        listen 127.0.0.1:{port_log};
        root {tmp}/www;
        access_log {access_log} combined;
    }}
}}
"""
    path = Path(tmp) / "nginx.conf"
    path.write_text(conf)
    return path


def nginx_worker_pids(master_pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master_pid)], capture_output=True,
                         text=True, check=False).stdout
    return [int(p) for p in out.split()]


def nginx_memory(master_pid):
    res = {"master": proc_status(master_pid)}
    res["workers"] = [proc_status(p) for p in nginx_worker_pids(master_pid)]
    res["total_VmRSS_kib"] = res["master"]["VmRSS_kib"] + sum(
        w["VmRSS_kib"] for w in res["workers"])
    return res


# --- HTTP helpers ------------------------------------------------------------------------------

def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, resp.getheaders(), data


def cookie_value(headers, name):
    for key, value in headers:
        if key.lower() == "set-cookie" and value.startswith(name + "="):
            return value.split(";", 1)[0].split("=", 1)[1]
    return None


class LoginClient:
    """One browser-like client: fetches the login form once (for its XSRF cookie), then
    posts logins on one keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", "/hub/login")
        resp = self.conn.getresponse()
        resp.read()
        self.xsrf = cookie_value(resp.getheaders(), "codehub-xsrf")
        if resp.status != 200 or not self.xsrf:
            raise RuntimeError(f"GET /hub/login: {resp.status}, no XSRF cookie")

    def login(self, name, password):
        body = urllib.parse.urlencode({"username": name, "password": password,
                                       "_xsrf": self.xsrf})
        self.conn.request("POST", "/hub/login", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"codehub-xsrf={self.xsrf}"})
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 303 or not cookie_value(resp.getheaders(), "codehub-session"):
            raise RuntimeError(f"login {name}: {resp.status}")
        if resp.getheader("Connection", "").lower() == "close":
            self.conn.close()


def run_logins(port, names, password_of, clients):
    """Logs every name in, `clients` at a time; returns logins per second."""
    queue = list(names)
    lock = threading.Lock()
    errors = []

    def worker():
        try:
            client = LoginClient(port)
            while True:
                with lock:
                    if not queue:
                        return
                    name = queue.pop()
                client.login(name, password_of(name))
        except Exception as e:  # reported after the join
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} login client(s) failed, first: {errors[0]}")
    return len(names) / elapsed


class Sodium:
    """libsodium's Argon2id at the INTERACTIVE cost, called directly (the raw ceiling)."""

    def __init__(self):
        path = ctypes.util.find_library("sodium") or "libsodium.so.23"
        self.lib = ctypes.CDLL(path)
        if self.lib.sodium_init() < 0:
            raise RuntimeError("sodium_init failed")
        self.lib.crypto_pwhash_opslimit_interactive.restype = ctypes.c_size_t
        self.lib.crypto_pwhash_memlimit_interactive.restype = ctypes.c_size_t
        self.lib.crypto_pwhash_str_alg.argtypes = [
            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulonglong, ctypes.c_ulonglong,
            ctypes.c_size_t, ctypes.c_int]
        self.lib.crypto_pwhash_str_verify.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                                      ctypes.c_ulonglong]
        self.lib.sodium_version_string.restype = ctypes.c_char_p
        self.ops = self.lib.crypto_pwhash_opslimit_interactive()
        self.mem = self.lib.crypto_pwhash_memlimit_interactive()
        self.alg = self.lib.crypto_pwhash_alg_argon2id13()
        self.version = self.lib.sodium_version_string().decode()

    def hash(self, password):
        out = ctypes.create_string_buffer(self.lib.crypto_pwhash_strbytes())
        pw = password.encode()
        if self.lib.crypto_pwhash_str_alg(out, pw, len(pw), self.ops, self.mem, self.alg) != 0:
            raise RuntimeError("crypto_pwhash_str_alg failed")
        return out.value

    def verify(self, stored, password):
        pw = password.encode()
        if self.lib.crypto_pwhash_str_verify(stored, pw, len(pw)) != 0:
            raise RuntimeError("crypto_pwhash_str_verify failed")

    def rate(self, count, threads, verify_against=None):
        """count hashes (or verifies) on `threads` threads (ctypes drops the GIL); per second."""
        queue = list(range(count))
        lock = threading.Lock()

        def worker():
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                if verify_against is None:
                    self.hash(f"raw-password-{i:05d}")
                else:
                    self.verify(verify_against, "raw-password-fixed")

        ts = [threading.Thread(target=worker) for _ in range(threads)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return count / (time.monotonic() - t0)


# --- machine facts, shared by every benchmark script --------------------------------------------

def first_line(cmd):
    """The first line a command prints (stdout, else stderr); "" when it prints nothing or
    cannot run."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (r.stdout + r.stderr).strip()
    return text.splitlines()[0] if text else ""


def cpu_model():
    """The CPU's model name from /proc/cpuinfo ("" when absent)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def mem_total_kib():
    """MemTotal from /proc/meminfo, KiB."""
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1])


# --- the benchmark -------------------------------------------------------------------------------

def machine_facts(binary, sodium):
    model = cpu_model()
    mem_kib = mem_total_kib()
    codehub_version = subprocess.run([binary, "version"], capture_output=True, text=True,
                                     check=False).stdout.strip().splitlines()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "codehub": codehub_version,
        "codehub_binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest(),
        "codehub_binary_mtime_utc": datetime.datetime.fromtimestamp(
            os.stat(binary).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "libsodium_ctypes": sodium.version,
        "python": platform.python_version(),
    }


def populate_sessions(db_path, count, now_ms):
    """Inserts `count` sessions, spread round-robin over the bench users, straight into the
    store's sessions table (schema in docs/store.md): id_hash is the hex BLAKE2b-256 of a
    fresh 43-character token, as the hub stores it. Returns the tokens, which are valid
    session cookies."""
    db = sqlite3.connect(db_path, timeout=10)
    db.execute("PRAGMA busy_timeout = 10000")
    db.execute("PRAGMA foreign_keys = ON")
    user_ids = [r[0] for r in db.execute(
        "SELECT id FROM users WHERE name LIKE 'bench-%' ORDER BY name")]
    tokens, rows = [], []
    for i in range(count):
        token = secrets.token_urlsafe(32)
        tokens.append(token)
        digest = hashlib.blake2b(token.encode(), digest_size=32).hexdigest()
        rows.append((digest, user_ids[i % len(user_ids)], now_ms, now_ms + SESSION_MAX_AGE_MS,
                     now_ms, "127.0.0.1"))
    with db:
        db.executemany("INSERT INTO sessions (id_hash, user_id, created_ms, expires_ms, "
                       "last_seen_ms, client_addr) VALUES (?, ?, ?, ?, ?, ?)", rows)
    total = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    db.close()
    return tokens, total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="3 repetitions of 3 s, 1 s warm-up, 100 logins: a smoke run")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", default=None,
                    help="result file (default: bench/results/hub.json, "
                    "bench/results/tmp/hub-quick.json with --quick)")
    ap.add_argument("--reps", type=int, help="repetitions per side (default 5, quick 3)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 10, quick 3)")
    ap.add_argument("--logins", type=int, help="first-use logins (default 1000, quick 100)")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown tables of a result")
    args = ap.parse_args()

    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0

    reps = args.reps or (3 if args.quick else 5)
    duration = args.duration or (3 if args.quick else 10)
    warmup = 1 if args.quick else 3
    n_users = 1000
    n_sessions = 10000
    n_logins = min(args.logins or (100 if args.quick else 1000), n_users)
    n_returning = max(reps, n_logins // 4)
    login_clients = 4
    # Quick runs are smoke tests, not results: they go to the git-ignored bench/results/tmp/.
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "hub-quick.json"
                                 if args.quick else ROOT / "bench" / "results" / "hub.json"))

    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"hub.py: {tool} not found: run bench/deps.sh", file=sys.stderr)
            return 1
    if not os.access(CODE_SERVER, os.X_OK):
        print(f"hub.py: {CODE_SERVER} not found: run make deps (the hub refuses to start "
              "without a code-server to spawn)", file=sys.stderr)
        return 1
    if not os.access(args.bin, os.X_OK):
        print(f"hub.py: {args.bin} not found: build it first (make build)", file=sys.stderr)
        return 1
    if os.cpu_count() < 2:
        print("hub.py: needs 2 CPUs (server on CPU 0, wrk on CPU 1)", file=sys.stderr)
        return 1

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="codehub-bench-"))
    os.chmod(tmp, 0o755)  # nginx's worker runs as nobody and must reach www/

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = run(procs, tmp, args, reps, duration, warmup, n_users, n_sessions, n_logins,
                     n_returning, login_clients)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path}")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    return 0


def run(procs, tmp, args, reps, duration, warmup, n_users, n_sessions, n_logins, n_returning,
        login_clients):
    # A private copy: a colleague's rebuild of build/codehub cannot swap it mid-run.
    binary = str(tmp / "codehub")
    shutil.copy2(args.bin, binary)
    sodium = Sodium()
    cmdline = "bench/hub.py" + (" --quick" if args.quick else "") + "".join(
        f" --{k} {getattr(args, k)}" for k in ("reps", "duration", "logins")
        if getattr(args, k))
    result = {
        "command": cmdline,
        "machine": machine_facts(binary, sodium),
        "settings": {
            "reps": reps, "duration_s": duration, "warmup_s": warmup,
            "wrk": "wrk -t2 -c50 -d{duration}s --latency, pinned to CPU 1 (taskset -c 1)",
            "servers": "codehub and nginx pinned to CPU 0 (taskset -c 0): the whole process, "
                       "i.e. codehub's event loop and its thread pool, nginx's master and its "
                       "one worker",
            "nginx": "worker_processes 1; keepalive_requests 1000000; sendfile, tcp_nopush, "
                     "tcp_nodelay, open_file_cache; codehub's security headers added; "
                     "access_log off, or combined format to a file (unbuffered)",
            "codehub": "defaults; log.requests false (CODEHUB_LOG_REQUESTS=false), or true "
                       "(the default) with stderr to a file; one write() per line",
            "order": "warm-up A, warm-up B, then A B A B ...",
            "users": n_users, "sessions_inserted": n_sessions,
            "logins_first_use": n_logins, "logins_returning": n_returning,
            "login_clients": login_clients,
        },
        "memory": [],
    }
    www = tmp / "www"
    (www / "hub").mkdir(parents=True)
    (www / "hub" / "health").write_bytes(HEALTH_BODY)
    for p in (www, www / "hub", www / "hub" / "health"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)

    # codehub A: log.requests off (every phase); codehub B: the default, logging on.
    data_a, data_b = tmp / "data-a", tmp / "data-b"
    t0 = time.monotonic()
    codehub_cli(binary, data_a, ["user", "add", ADMIN, "--admin", "--password-stdin"],
                stdin=(ADMIN_PASSWORD + "\n").encode(), cwd=tmp)
    token = codehub_cli(binary, data_a, ["token", "create", ADMIN, "--scope", "admin",
                                         "--note", "bench"], cwd=tmp).strip()
    log(f"admin user and token created in {time.monotonic() - t0:.2f}s (one Argon2id hash)")
    auth = {"Authorization": f"Bearer {token}"}

    hub_a, port_a = start_codehub(procs, binary, data_a, tmp / "codehub-a.log", False, tmp)
    hub_b, port_b = start_codehub(procs, binary, data_b, tmp / "codehub-b.log", True, tmp)
    port_n, port_nl = free_port(), free_port()
    access_log = tmp / "nginx-access.log"
    conf = write_nginx(tmp, port_n, port_nl, access_log)
    ngx = procs.start(["taskset", "-c", SERVER_CPU, "nginx", "-p", str(tmp), "-c", str(conf),
                       "-e", str(tmp / "nginx-error.log")],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port_n, "/hub/health", proc=ngx)
    wait_http(port_nl, "/hub/health", proc=ngx)
    os.truncate(access_log, 0)
    ngx_pids = [ngx.pid] + nginx_worker_pids(ngx.pid)
    result["servers"] = {
        "codehub_logging_off": "CODEHUB_LOG_REQUESTS=false "
                               "CODEHUB_LOCAL_CODE_SERVER=$PWD/.deps/code-server/bin/code-server "
                               "taskset -c 0 codehub serve --bind 127.0.0.1:0 "
                               "--data-dir DIR/data-a 2>>DIR/codehub-a.log",
        "codehub_logging_on": "CODEHUB_LOG_REQUESTS=true "
                              "CODEHUB_LOCAL_CODE_SERVER=$PWD/.deps/code-server/bin/code-server "
                              "taskset -c 0 codehub serve --bind 127.0.0.1:0 "
                              "--data-dir DIR/data-b 2>>DIR/codehub-b.log",
        "nginx": "taskset -c 0 nginx -p DIR -c DIR/nginx.conf -e DIR/nginx-error.log",
        "nginx_conf": conf.read_text().replace(str(tmp), "DIR")
                      .replace(f":{port_nl};", ":PORT_LOG;").replace(f":{port_n};", ":PORT;"),
    }
    time.sleep(1)

    def mem(stage, **extra):
        entry = {"stage": stage, "codehub": proc_status(hub_a.pid)}
        entry.update(extra)
        result["memory"].append(entry)
        log(f"RSS {stage}: VmRSS {entry['codehub']['VmRSS_kib']} KiB, "
            f"VmHWM {entry['codehub']['VmHWM_kib']} KiB")

    mem("fresh start (1 admin user, 1 token)", codehub_logging_on=proc_status(hub_b.pid),
        nginx=nginx_memory(ngx.pid))

    # 1. GET /hub/health.
    def side(label, port, path, pids, headers=(), logfile=None):
        return {"label": label, "url": f"http://127.0.0.1:{port}{path}", "pids": pids,
                "display_url": f"http://127.0.0.1:PORT{path}", "headers": headers,
                "display_headers": ["Authorization: Bearer $TOKEN"] if headers else (),
                "log": logfile}

    result["health_nolog"] = ab_pair(
        procs, "health, logging off",
        side("codehub", port_a, "/hub/health", [hub_a.pid]),
        side("nginx", port_n, "/hub/health", ngx_pids), reps, duration, warmup)
    result["health_log"] = ab_pair(
        procs, "health, logging on",
        side("codehub", port_b, "/hub/health", [hub_b.pid], logfile=tmp / "codehub-b.log"),
        side("nginx", port_nl, "/hub/health", ngx_pids, logfile=access_log),
        reps, duration, warmup, truncate=(tmp / "codehub-b.log", access_log))
    mem("after the /hub/health runs", nginx=nginx_memory(ngx.pid))

    # 2. 1,000 users through the API, 10,000 sessions straight into the store.
    names = [USER_FMT.format(i) for i in range(1, n_users + 1)]
    t0 = time.monotonic()
    status, _, body = request(port_a, "POST", "/hub/api/users",
                              json.dumps({"usernames": names}).encode(),
                              {**auth, "Content-Type": "application/json"})
    create_s = time.monotonic() - t0
    if status != 201 or len(json.loads(body)) != n_users:
        raise RuntimeError(f"POST /hub/api/users: {status} {body[:200]!r}")
    log(f"created {n_users} users in one POST /hub/api/users: {create_s:.3f}s")
    t0 = time.monotonic()
    tokens, total_sessions = populate_sessions(data_a / "codehub.sqlite", n_sessions,
                                               int(time.time() * 1000))
    insert_s = time.monotonic() - t0
    log(f"inserted {n_sessions} sessions with sqlite3: {insert_s:.3f}s")
    result["populate"] = {"users_post_s": round(create_s, 3),
                          "sessions_insert_s": round(insert_s, 3),
                          "sessions_in_store": total_sessions}
    mem("1,000 users + 10,000 sessions in the store, not yet read")

    # Exercise: five full listings, then one whoami per user through a session cookie.
    for _ in range(5):
        status, _, body = request(port_a, "GET", "/hub/api/users?limit=1000", headers=auth)
        if status != 200 or len(json.loads(body)) != 1000:
            raise RuntimeError(f"GET /hub/api/users?limit=1000: {status}")
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port_a, timeout=30)
    for i in range(n_users):
        conn.request("GET", "/hub/api/user", headers={"Cookie": f"codehub-session={tokens[i]}"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200 or json.loads(data)["name"] != names[i % n_users]:
            raise RuntimeError(f"GET /hub/api/user with session {i}: {resp.status} {data[:200]!r}")
    conn.close()
    whoami_s = time.monotonic() - t0
    result["populate"]["whoami_1000_sessions_s"] = round(whoami_s, 3)
    mem("after 5 x GET /hub/api/users?limit=1000 and 1,000 session GET /hub/api/user")

    # 3. GET /hub/api/users beside nginx serving the same bytes.
    token_header = [f"Authorization: Bearer {token}"]
    result["users_api"] = {}
    for key, query, fname in (("default_page", "", "users-200.json"),
                              ("limit_1000", "?limit=1000", "users-1000.json")):
        status, _, body = request(port_a, "GET", "/hub/api/users" + query, headers=auth)
        if status != 200:
            raise RuntimeError(f"GET /hub/api/users{query}: {status}")
        (www / fname).write_bytes(body)
        os.chmod(www / fname, 0o644)
        pair = ab_pair(
            procs, f"GET /hub/api/users{query}",
            side("codehub", port_a, "/hub/api/users" + query, [hub_a.pid], token_header),
            side("nginx", port_n, "/" + fname, ngx_pids), reps, duration, warmup)
        pair["body_bytes"] = len(body)
        pair["users_in_body"] = len(json.loads(body))
        result["users_api"][key] = pair
    mem("after the /hub/api/users runs", nginx=nginx_memory(ngx.pid))

    # 4. Logins. Argon2id is CPU-bound and the hub hashes on as many threads as there are
    #    CPUs, so for this phase the hub may use both CPUs; the Python client mostly waits.
    subprocess.run(["taskset", "-a", "-p", "-c", "0,1", str(hub_a.pid)], check=True,
                   capture_output=True)
    hash_threads = os.cpu_count()
    chunk = max(1, n_logins // reps)
    first, raw_hash = [], []
    done = 0
    log(f"logins: {n_logins} first-use logins in {reps} chunks, each followed by as many raw "
        f"hashes on {hash_threads} threads")
    password_of = lambda name: f"pw-{name}-long-enough"  # noqa: E731
    for rep in range(reps):
        batch = names[done:done + chunk] if rep < reps - 1 else names[done:n_logins]
        done += len(batch)
        first.append(run_logins(port_a, batch, password_of, login_clients))
        raw_hash.append(sodium.rate(len(batch), hash_threads))
        log(f"logins: chunk {rep + 1}/{reps}: hub {first[-1]:.1f}/s, raw {raw_hash[-1]:.1f}/s")
    stored = sodium.hash("raw-password-fixed")
    returning, raw_verify = [], []
    rchunk = max(1, n_returning // reps)
    for rep in range(reps):
        batch = names[rep * rchunk:(rep + 1) * rchunk]
        returning.append(run_logins(port_a, batch, password_of, login_clients))
        raw_verify.append(sodium.rate(len(batch), hash_threads, verify_against=stored))
        log(f"returning: chunk {rep + 1}/{reps}: hub {returning[-1]:.1f}/s, "
            f"raw verify {raw_verify[-1]:.1f}/s")
    result["logins"] = {
        "cost": {"alg": "Argon2id (argon2id13)", "opslimit": sodium.ops,
                 "memlimit_bytes": sodium.mem, "libsodium": sodium.version,
                 "name": "crypto_pwhash_OPSLIMIT_INTERACTIVE / MEMLIMIT_INTERACTIVE"},
        "hub_cpus": "0,1 (taskset -a -p -c 0,1 after the wrk runs)",
        "hash_threads_raw": hash_threads,
        "clients": login_clients,
        "first_use": {"count": n_logins, "per_chunk": first, "summary": summarize(first)},
        "raw_hash": {"per_chunk": raw_hash, "summary": summarize(raw_hash)},
        "returning": {"count": rchunk * reps, "per_chunk": returning,
                      "summary": summarize(returning)},
        "raw_verify": {"per_chunk": raw_verify, "summary": summarize(raw_verify)},
    }
    lg = result["logins"]
    lg["ratio_first_use_vs_raw_hash"] = round(statistics.median(
        [a / b for a, b in zip(first, raw_hash)]), 3)
    lg["ratio_returning_vs_raw_verify"] = round(statistics.median(
        [a / b for a, b in zip(returning, raw_verify)]), 3)
    db = sqlite3.connect(data_a / "codehub.sqlite", timeout=10)
    sessions_now = db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    db.close()
    mem(f"after {n_logins} first-use + {rchunk * reps} returning logins "
        f"({sessions_now} sessions)")
    time.sleep(2)
    mem("2 s later, idle")
    return result


# --- report ------------------------------------------------------------------------------------

def render_markdown(r, source):
    m, s = r["machine"], r["settings"]
    lines = [f"Run `{r['command']}` on {m['date_utc']} ({source}): {s['reps']} repetitions "
             f"of {s['duration_s']} s per side, after a {s['warmup_s']} s warm-up of each.", ""]

    def fmt(sm, digits=0, scale=1.0):
        if sm is None:
            return "–"
        f = f"{{:,.{digits}f}}"
        return (f"{f.format(sm['median'] * scale)} ({f.format(sm['min'] * scale)}–"
                f"{f.format(sm['max'] * scale)})")

    def pair_table(title, pair, extra=""):
        out = [f"#### {title}", ""] + ([extra, ""] if extra else []) + [
               "| server | req/s median (min–max) | p50 ms | p99 ms | server CPU | wrk CPU "
               "| other CPU | req per server CPU-s | bytes/response | errors |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for label, sm in pair["summary"].items():
            out.append(
                f"| {label} | {fmt(sm['rps'])} | {fmt(sm['p50_ms'], 3)} | "
                f"{fmt(sm['p99_ms'], 2)} | {fmt(sm['server_cpu_util'], 2)} | "
                f"{fmt(sm['client_cpu_util'], 2)} | {fmt(sm.get('other_cpu'), 2)} | "
                f"{fmt(sm['server_requests_per_cpu_s'])} | "
                f"{sm['bytes_per_response']['median'] if sm['bytes_per_response'] else '–'}"
                + (f" (+{sm['log_bytes_per_request']} B log)"
                   if "log_bytes_per_request" in sm else "")
                + f" | {sm['errors']} |")
        labels = list(pair["summary"])
        out += ["", f"Ratio {labels[0]}/{labels[1]}: **{pair['ratio_rps']}** req/s (medians); "
                f"per repetition {fmt(pair['ratio_rps_paired'], 3)}; per server CPU-second "
                f"{pair.get('ratio_requests_per_cpu_s', '–')}.", ""]
        for label, cmd in pair["commands"].items():
            out.append(f"- {label}: `{cmd}`")
        out.append("")
        return out

    if "servers" in r:
        sv = r["servers"]
        lines += ["#### Servers", "", "codehub, request logging off (every phase but the "
                  "logging-on /hub/health runs) and on:", "", "```sh",
                  sv["codehub_logging_off"], sv["codehub_logging_on"], "```", "",
                  f"nginx: `{sv['nginx']}` with this `nginx.conf` (port PORT without access "
                  "log, PORT_LOG with it; the files under `DIR/www` hold the bytes served):",
                  "", "```nginx", sv["nginx_conf"].rstrip(), "```", ""]
    lines += pair_table("GET /hub/health, request logging off", r["health_nolog"])
    lines += pair_table("GET /hub/health, request logging on", r["health_log"])
    for key, title in (("default_page", "GET /hub/api/users (default page: 200 users)"),
                       ("limit_1000", "GET /hub/api/users?limit=1000")):
        pair = r["users_api"][key]
        lines += pair_table(title, pair, f"{pair['users_in_body']} users, "
                            f"{pair['body_bytes']:,} bytes of JSON; nginx serves the same "
                            "bytes from a file.")
    lines += ["#### Memory of codehub", "", "KiB, from /proc/PID/status, codehub A "
              "(request logging off) after each stage.", "",
              "| stage | VmRSS | VmHWM | RssAnon | RssFile | threads |",
              "|---|---|---|---|---|---|"]
    for e in r["memory"]:
        c = e["codehub"]
        lines.append(f"| {e['stage']} | {c['VmRSS_kib']:,} | {c['VmHWM_kib']:,} | "
                     f"{c.get('RssAnon_kib', 0):,} | {c.get('RssFile_kib', 0):,} | "
                     f"{c['threads']} |")
    first = r["memory"][0]
    lines += ["", f"Fresh start, for comparison: codehub with request logging on "
              f"{first['codehub_logging_on']['VmRSS_kib']:,} KiB; nginx (master + 1 worker) "
              f"{first['nginx']['total_VmRSS_kib']:,} KiB.", ""]
    p = r["populate"]
    lines += [f"Populating: {s['users']} users in one `POST /hub/api/users` took "
              f"{p['users_post_s']} s; {s['sessions_inserted']:,} sessions inserted with "
              f"Python's sqlite3 in {p['sessions_insert_s']} s; 1,000 session-cookie "
              f"`GET /hub/api/user` one after another on one connection took "
              f"{p['whoami_1000_sessions_s']} s.", ""]
    lg = r["logins"]
    c = lg["cost"]
    lines += ["#### Logins", "", f"Argon2id, opslimit {c['opslimit']}, memlimit "
              f"{c['memlimit_bytes'] // 1048576} MiB (libsodium {c['libsodium']} INTERACTIVE); "
              f"hub on CPUs {lg['hub_cpus']}, {lg['clients']} concurrent clients; raw = "
              f"libsodium called directly on {lg['hash_threads_raw']} threads.", "",
              "| what | count | per second, median (min–max) over chunks |", "|---|---|---|",
              f"| hub: first-use login (hash + store) | {lg['first_use']['count']} | "
              f"{fmt(lg['first_use']['summary'], 1)} |",
              f"| raw crypto_pwhash_str | {lg['first_use']['count']} | "
              f"{fmt(lg['raw_hash']['summary'], 1)} |",
              f"| hub: returning login (verify + session) | {lg['returning']['count']} | "
              f"{fmt(lg['returning']['summary'], 1)} |",
              f"| raw crypto_pwhash_str_verify | {lg['returning']['count']} | "
              f"{fmt(lg['raw_verify']['summary'], 1)} |", "",
              f"Ratio hub/raw: first-use {lg['ratio_first_use_vs_raw_hash']}, returning "
              f"{lg['ratio_returning_vs_raw_verify']} (medians of per-chunk ratios).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
