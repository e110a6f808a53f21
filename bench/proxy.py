#!/usr/bin/env python3
"""Proxy benchmark (HTTP): codehub's /user/NAME/ proxy beside nginx and configurable-http-proxy,
all in front of ONE shared upstream, in one run, on this machine.

    bench/proxy.py           full run: 1 KiB at 10, 50, 200 and 1,000 connections and 1 MiB at
                             50, 5 interleaved repetitions of 5 s -> bench/results/proxy.json
    bench/proxy.py --quick   smoke run: 1 KiB at 50 connections, 3 repetitions
                             -> bench/results/tmp/proxy-quick.json
    bench/proxy.py --report bench/results/proxy.json   print the Markdown tables of a result

The upstream is nginx (Debian's nginx-light) serving static files. codehub reaches a user's
server only through its spawner, so the hub is configured with `local.code_server` = a small
launcher script (written here) that parses the `--socket PATH` the local spawner passes and
execs nginx in the foreground, listening on that Unix socket (where codehub's `GET /healthz`
gets a 200) and on a TCP port of 127.0.0.1. One user logs in through the form and starts
their server through the API; wrk then sends GET /user/NAME/file-1k.bin with the real
session cookie. The sides, all against that same upstream nginx:

- direct:   wrk to the upstream's TCP listener (no proxy);
- nginx:    nginx as a reverse proxy to the upstream's Unix socket (keepalive 64);
- chp:      configurable-http-proxy (npm, in .deps/bench/chp) to the upstream's TCP listener
            (CHP cannot target a Unix socket);
- codehub:  codehub, authenticating the session cookie, to the upstream's Unix socket.

Every proxy is pinned to CPU 0, wrk and the upstream nginx to CPU 1. Runs alternate
direct nginx chp codehub ... after a warm-up of each. Every process this script starts is
stopped by its PID (the upstream through DELETE .../server, then checked gone). Only
127.0.0.1 is contacted. Standard library only.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import pwd
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import (Procs, clean_env, cookie_value, cpu_busy, cpu_model, first_line, free_port,  # noqa: E402
                 loadavg, log, mem_total_kib,
                 nginx_worker_pids, parse_wrk, proc_cpu_s, proc_status, request, shell_words,
                 summarize, wait_http)

ROOT = Path(__file__).resolve().parents[1]
PROXY_CPU = "0"
CLIENT_CPU = "1"
USER = "benchproxy"
PASSWORD = "bench-proxy-password"
CHP_DIR = ROOT / ".deps" / "bench" / "chp"
CHP_BIN = CHP_DIR / "node_modules" / "configurable-http-proxy" / "bin" / "configurable-http-proxy"
CHP_VERSION = "5.3.0"
SIDES = ("direct", "nginx", "chp", "codehub")


# --- upstream and peers ------------------------------------------------------------------------

def run_as_directive():
    # As root, nginx would switch its workers to "nobody"; keep them the current user.
    if os.geteuid() == 0:
        return f"user {pwd.getpwuid(os.getuid()).pw_name};\n"
    return ""


def write_launcher(tmp, up_port):
    """The `local.code_server` given to codehub: execs the upstream nginx on --socket PATH."""
    updir = tmp / "up"
    updir.mkdir()
    script = f"""#!/bin/sh
# Written by bench/proxy.py: stands in for code-server. codehub's local spawner passes
# --socket PATH (and other code-server options, ignored here) and polls GET /healthz there.
sock=
while [ $# -gt 0 ]; do
    case "$1" in
        --socket) sock="$2"; shift 2 ;;
        *) shift ;;
    esac
done
[ -n "$sock" ] || {{ echo "no --socket given" >&2; exit 2; }}
cat > {updir}/nginx.conf <<EOF
{run_as_directive()}worker_processes 1;
daemon off;
pid {updir}/nginx.pid;
error_log {updir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s;
    open_file_cache_valid 60s;
    server_tokens off;
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path {updir}/client_body;
    proxy_temp_path {updir}/proxy;
    fastcgi_temp_path {updir}/fastcgi;
    uwsgi_temp_path {updir}/uwsgi;
    scgi_temp_path {updir}/scgi;
    server {{
        listen unix:$sock;
        listen 127.0.0.1:{up_port};
        root {tmp}/www;
        location = /healthz {{ return 200; }}
    }}
}}
EOF
exec taskset -c {CLIENT_CPU} nginx -e {updir}/error.log -p {updir} -c {updir}/nginx.conf
"""
    path = tmp / "upstream.sh"
    path.write_text(script)
    path.chmod(0o755)
    return path


def write_nginx_proxy(tmp, port, sock):
    d = tmp / "rp"
    d.mkdir()
    conf = f"""# Written by bench/proxy.py: nginx as the reverse proxy. One worker: the hub has one too.
{run_as_directive()}worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream user {{
        server unix:{sock};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /user/{USER}/ {{
            proxy_pass http://user/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    return d, path


def wait_port(port, timeout=20, proc=None):
    """Waits until something accepts on 127.0.0.1:port (any HTTP status)."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


# --- codehub --------------------------------------------------------------------------------------

def start_codehub(procs, binary, tmp, config, extra_env=None):
    log_path = tmp / "codehub.log"
    logf = open(log_path, "ab")
    argv = ["taskset", "-c", PROXY_CPU, str(binary), "serve", "--config", str(config),
            "--bind", "127.0.0.1:0", "--data-dir", str(tmp / "d")]
    proc = procs.start(argv, stdout=logf, stderr=logf, env=clean_env(extra_env), cwd=str(tmp))
    logf.close()
    deadline = time.monotonic() + 20
    port = None
    while port is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"codehub did not start: {log_path.read_text()[-2000:]}")
        m = re.search(rb"hub\.listening .*?port=(\d+)", log_path.read_bytes()[:65536])
        if m:
            port = int(m.group(1))
        else:
            time.sleep(0.05)
    wait_http(port, "/hub/health", proc=proc)
    return proc, port, argv


def login_and_start(port):
    """Form login, then POST /hub/api/users/USER/server. Returns (session, xsrf cookie, token)."""
    status, headers, _ = request(port, "GET", "/hub/login")
    xsrf_cookie = cookie_value(headers, "codehub-xsrf")
    if status != 200 or not xsrf_cookie:
        raise RuntimeError(f"GET /hub/login: {status}")
    body = urllib.parse.urlencode({"username": USER, "password": PASSWORD, "_xsrf": xsrf_cookie})
    status, headers, _ = request(port, "POST", "/hub/login", body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"codehub-xsrf={xsrf_cookie}"})
    session = cookie_value(headers, "codehub-session")
    if status != 303 or not session:
        raise RuntimeError(f"login: {status}")
    cookies = f"codehub-session={session}; codehub-xsrf={xsrf_cookie}"
    status, _, page = request(port, "GET", "/hub/home", headers={"Cookie": cookies})
    m = re.search(rb'name="codehub-xsrf" content="([^"]*)"', page)
    if status != 200 or not m:
        raise RuntimeError(f"GET /hub/home: {status}, no codehub-xsrf meta tag")
    token = m.group(1).decode()
    status, _, data = request(port, "POST", f"/hub/api/users/{USER}/server", b"", {
        "Cookie": cookies, "X-XSRF-Token": token})
    if status not in (201, 202):
        raise RuntimeError(f"start server: {status} {data[:300]!r}")
    return session, cookies, token


def wait_upstream(port, up_port, cookies, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(port, "GET", f"/user/{USER}/file-1k.bin",
                                  headers={"Cookie": cookies})
        if status == 200:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"the user's server never answered through the hub: {status} "
                           f"{body[:300]!r}")
    wait_port(up_port)


def stop_user_server(port, cookies, token, pgid):
    status, _, _ = request(port, "DELETE", f"/hub/api/users/{USER}/server", b"", {
        "Cookie": cookies, "X-XSRF-Token": token})
    log(f"DELETE server: {status}")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
    if group_alive(pgid):
        log(f"upstream group {pgid} still alive after DELETE; SIGKILL to that group")
        os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.5)
    return not group_alive(pgid)


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


# --- wrk -----------------------------------------------------------------------------------------

def wrk_command(url, conns, duration, headers=()):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", "-t2", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def rss_kib(pids):
    return sum(proc_status(p)["VmRSS_kib"] for p in pids)


def run_wrk(procs, side, conns, duration, path):
    cmd = wrk_command(side["base"] + path, conns, duration, side.get("headers", ()))
    busy0, cpu0 = cpu_busy(), proc_cpu_s(side["pids"])
    up0 = proc_cpu_s(side["up_pids"])
    load0 = loadavg()
    t0 = time.monotonic()
    proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    procs.procs.remove(proc)
    wall = time.monotonic() - t0
    cpu1, up1, busy1 = proc_cpu_s(side["pids"]), proc_cpu_s(side["up_pids"]), cpu_busy()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")
    res = parse_wrk(out)
    res["proxy_cpu_s"] = round(cpu1 - cpu0, 3) if side["pids"] else None
    res["proxy_cpu_util"] = round((cpu1 - cpu0) / wall, 3) if side["pids"] else None
    res["proxy_requests_per_cpu_s"] = (round(res["requests"] / (cpu1 - cpu0))
                                       if side["pids"] and cpu1 > cpu0 else None)
    res["upstream_cpu_util"] = round((up1 - up0) / wall, 3)
    res["client_cpu_util"] = round((rusage.ru_utime + rusage.ru_stime) / wall, 3)
    res["cpu_busy"] = {c: round((busy1[c][0] - busy0[c][0]) / max(1, busy1[c][1] - busy0[c][1]), 3)
                       for c in busy1}
    # Busy CPU time that neither the proxy, the upstream nor wrk used (other processes on a
    # shared machine, plus loopback softirq work not charged to them).
    res["other_cpu"] = round(sum(res["cpu_busy"].values()) - (res["proxy_cpu_util"] or 0)
                             - res["upstream_cpu_util"] - res["client_cpu_util"], 3)
    res["proxy_rss_kib"] = rss_kib(side["pids"]) if side["pids"] else None
    res["loadavg_1m"] = [load0, loadavg()]
    return res


def measure(procs, sides, name, path, conns, reps, duration, warmup):
    log(f"{name}: warm-up {warmup}s each")
    for side in sides:
        run_wrk(procs, side, conns, warmup, path)
    runs = {s["label"]: [] for s in sides}
    for rep in range(reps):
        for side in sides:
            res = run_wrk(procs, side, conns, duration, path)
            runs[side["label"]].append(res)
            log(f"{name}: rep {rep + 1}/{reps} {side['label']:8s} {res['rps']:>10.0f} req/s"
                f"  p99 {res.get('p99_ms')} ms  proxy cpu {res['proxy_cpu_util']}"
                f"  errors {res['non_2xx_3xx'] + res['socket_errors']}")
    out = {"path": path, "connections": conns,
           "commands": {s["label"]: shell_words(wrk_command(
               s["display_base"] + path, conns, duration, s.get("display_headers", ())))
               for s in sides},
           "runs": runs, "summary": {}}
    for label, rs in runs.items():
        sm = {k: summarize([r.get(k) for r in rs]) for k in
              ("rps", "p50_ms", "p99_ms", "proxy_cpu_s", "proxy_cpu_util",
               "proxy_requests_per_cpu_s", "proxy_rss_kib", "upstream_cpu_util",
               "client_cpu_util", "other_cpu", "bytes_per_response")}
        sm["errors"] = sum(r["non_2xx_3xx"] + r["socket_errors"] for r in rs)
        out["summary"][label] = sm
    med = {label: out["summary"][label]["rps"]["median"] for label in runs}
    out["ratios"] = {}
    for peer in ("nginx", "chp", "direct"):
        if peer in med and "codehub" in med:
            paired = [c["rps"] / p["rps"] for c, p in zip(runs["codehub"], runs[peer])]
            out["ratios"][f"codehub/{peer}"] = {
                "rps": round(med["codehub"] / med[peer], 3),
                "rps_paired": summarize([round(r, 3) for r in paired])}
            cpu_c = out["summary"]["codehub"]["proxy_requests_per_cpu_s"]
            cpu_p = out["summary"][peer]["proxy_requests_per_cpu_s"]
            if cpu_c and cpu_p:
                out["ratios"][f"codehub/{peer}"]["requests_per_cpu_s"] = round(
                    cpu_c["median"] / cpu_p["median"], 3)
    log(f"{name}: " + ", ".join(f"{k} {v['rps']}" for k, v in out["ratios"].items()))
    return out


# --- machine -------------------------------------------------------------------------------------

def machine_facts(binary):
    model = cpu_model()
    mem_kib = mem_total_kib()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "node": first_line(["node", "--version"]),
        "configurable_http_proxy": first_line(["node", str(CHP_BIN), "--version"]),
        "codehub": subprocess.run([binary, "version"], capture_output=True, text=True,
                                  check=False).stdout.strip().splitlines(),
        "codehub_binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


# --- main ----------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"))
    ap.add_argument("--out")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", help="comma-separated, e.g. 50,200")
    ap.add_argument("--no-1mib", action="store_true", help="full mode without the 1 MiB runs")
    ap.add_argument("--report")
    ap.add_argument("--codehub-env", action="append", default=[], metavar="CODEHUB_X=V",
                    help="extra environment for codehub (a config setting), e.g. "
                         "CODEHUB_PROXY_UPSTREAM_MAX_CONNS=0; recorded in the result")
    ap.add_argument("--hold", action="store_true",
                    help="set everything up, print each side's URL and PIDs, and wait for "
                         "SIGTERM/SIGINT (for profiling by hand)")
    args = ap.parse_args()
    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs")
    if not CHP_BIN.exists():
        sys.exit(f"missing {CHP_BIN}: cd {CHP_DIR} && npm install --save-exact "
                 f"configurable-http-proxy@{CHP_VERSION}")
    reps = args.reps or (3 if args.quick else 5)
    conns = ([int(c) for c in args.connections.split(",")] if args.connections
             else [50] if args.quick else [10, 50, 200, 1000])
    big = not args.quick and not args.no_1mib
    warmup = 1
    out_path = Path(args.out) if args.out else (
        ROOT / "bench/results/tmp/proxy-quick.json" if args.quick
        else ROOT / "bench/results/proxy.json")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="px", dir="/tmp"))
    state = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        result = run(procs, tmp, args, state, reps, conns, big, warmup)
        result["command"] = " ".join(["bench/proxy.py", *sys.argv[1:]])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {out_path}")
        print(render_markdown(result, str(out_path.relative_to(ROOT))
                              if out_path.is_relative_to(ROOT) else str(out_path)))
    finally:
        if "hub_port" in state and "pgid" in state:
            try:
                gone = stop_user_server(state["hub_port"], state["cookies"], state["token"],
                                        state["pgid"])
                log(f"upstream process group {state['pgid']} gone: {gone}")
            except Exception as e:  # still stop the rest
                log(f"stopping the user's server failed: {e}")
                if group_alive(state["pgid"]):
                    os.killpg(state["pgid"], signal.SIGKILL)
        procs.stop_all()
        if os.environ.get("PROXY_BENCH_KEEP"):
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def start_nginx_proxy(procs, rp_dir, rp_conf, rp_port):
    """Starts nginx as the reverse proxy (pinned to PROXY_CPU) and waits for its port.
    Returns (argv, pids of master and worker)."""
    rp_argv = ["taskset", "-c", PROXY_CPU, "nginx", "-e", str(rp_dir / "error.log"), "-p",
               str(rp_dir), "-c", str(rp_conf)]
    rp = procs.start(rp_argv)
    wait_port(rp_port, proc=rp)
    time.sleep(0.2)
    return rp_argv, [rp.pid] + nginx_worker_pids(rp.pid)


def start_chp(procs, tmp, chp_port, chp_api, up_port):
    """Starts configurable-http-proxy (pinned to PROXY_CPU, --no-include-prefix) with the
    route /user/USER -> the upstream's TCP port. Returns (process, argv, the route command
    as a reader would type it)."""
    chp_token = secrets.token_hex(16)
    chp_argv = ["taskset", "-c", PROXY_CPU, "node", str(CHP_BIN), "--ip", "127.0.0.1",
                "--port", str(chp_port), "--api-ip", "127.0.0.1", "--api-port", str(chp_api),
                "--no-include-prefix", "--log-level", "warn"]
    chp = procs.start(chp_argv, env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": chp_token},
                      stdout=open(tmp / "chp.log", "ab"), stderr=subprocess.STDOUT)
    wait_port(chp_api, proc=chp)
    route = json.dumps({"target": f"http://127.0.0.1:{up_port}"}).encode()
    status, _, _ = request(chp_api, "POST", f"/api/routes/user/{USER}", route,
                           {"Authorization": f"token {chp_token}",
                            "Content-Type": "application/json"})
    if status != 201:
        raise RuntimeError(f"CHP route: {status}")
    route_cmd = (f"curl -X POST -H 'Authorization: token $CONFIGPROXY_AUTH_TOKEN' "
                 f"-d '{{\"target\": \"http://127.0.0.1:UPSTREAM_PORT\"}}' "
                 f"http://127.0.0.1:API_PORT/api/routes/user/{USER}")
    return chp, chp_argv, route_cmd


def run(procs, tmp, args, state, reps, conns, big, warmup):
    binary = tmp / "codehub"
    shutil.copy2(args.bin, binary)
    machine = machine_facts(str(binary))
    www = tmp / "www"
    www.mkdir()
    (www / "file-1k.bin").write_bytes(secrets.token_bytes(1024))
    if big:
        (www / "file-1m.bin").write_bytes(secrets.token_bytes(1024 * 1024))
    up_port, rp_port, chp_port, chp_api = free_port(), free_port(), free_port(), free_port()
    launcher = write_launcher(tmp, up_port)
    config = tmp / "codehub.yaml"
    config.write_text(f"local:\n  init_venv: false\n  init_ssh_key: false\n"
                      f"  code_server: {launcher}\ncull:\n  timeout: 0\nlog:\n  requests: false\n")
    res = subprocess.run([str(binary), "user", "add", USER, "--password-stdin", "--data-dir",
                          str(tmp / "d"), "--config", str(config)],
                         input=PASSWORD.encode() + b"\n", capture_output=True, env=clean_env(),
                         cwd=str(tmp), check=False)
    if res.returncode != 0:
        raise RuntimeError(f"user add: {res.stderr.decode()}")

    extra_env = dict(kv.split("=", 1) for kv in args.codehub_env)
    hub, hub_port, hub_argv = start_codehub(procs, binary, tmp, config, extra_env)
    if extra_env:
        hub_argv = [f"{k}={v}" for k, v in extra_env.items()] + hub_argv
    state["hub_port"] = hub_port
    log(f"codehub pid {hub.pid} on port {hub_port}")
    session, cookies, token = login_and_start(hub_port)
    state.update(cookies=cookies, token=token)
    server = json.loads((tmp / "d" / "run" / USER / "server.json").read_text())
    state["pgid"] = server["pgid"]
    sock = server["socket"]
    wait_upstream(hub_port, up_port, cookies)
    up_master = server["pid"]
    up_pids = [up_master] + nginx_worker_pids(up_master)
    log(f"upstream nginx pgid {server['pgid']} pids {up_pids} socket {sock}")

    rp_dir, rp_conf = write_nginx_proxy(tmp, rp_port, sock)
    rp_argv, rp_pids = start_nginx_proxy(procs, rp_dir, rp_conf, rp_port)
    chp, chp_argv, chp_add_route = start_chp(procs, tmp, chp_port, chp_api, up_port)

    prefix = f"/user/{USER}"
    sides = [
        {"label": "direct", "base": f"http://127.0.0.1:{up_port}", "pids": [],
         "display_base": "http://127.0.0.1:UPSTREAM_PORT"},
        {"label": "nginx", "base": f"http://127.0.0.1:{rp_port}{prefix}", "pids": rp_pids,
         "display_base": f"http://127.0.0.1:NGINX_PORT{prefix}"},
        {"label": "chp", "base": f"http://127.0.0.1:{chp_port}{prefix}", "pids": [chp.pid],
         "display_base": f"http://127.0.0.1:CHP_PORT{prefix}"},
        {"label": "codehub", "base": f"http://127.0.0.1:{hub_port}{prefix}",
         "pids": [hub.pid], "headers": [f"Cookie: codehub-session={session}"],
         "display_base": f"http://127.0.0.1:HUB_PORT{prefix}",
         "display_headers": ["Cookie: codehub-session=$SESSION"]},
    ]
    for side in sides:
        side["up_pids"] = up_pids
        u = urllib.parse.urlsplit(side["base"] + "/file-1k.bin")
        status, _, body = request(u.port, "GET", u.path,
                                  headers=dict(h.split(": ", 1) for h in side.get("headers", ())))
        if status != 200 or body != (www / "file-1k.bin").read_bytes():
            raise RuntimeError(f"{side['label']}: GET file-1k.bin gave {status}, {len(body)} B")
    rss_start = {s["label"]: rss_kib(s["pids"]) for s in sides if s["pids"]}
    if args.hold:
        for side in sides:
            hdrs = " ".join(f"-H '{h}'" for h in side.get("headers", ()))
            log(f"{side['label']}: pids {side['pids']} wrk {hdrs} {side['base']}/file-1k.bin")
        log("holding; send SIGTERM to stop")
        while True:
            time.sleep(3600)

    results = {}
    for c in conns:
        results[f"1k_c{c}"] = measure(procs, sides, f"1 KiB c{c}", "/file-1k.bin", c, reps,
                                      args.duration, warmup)
    if big:
        results["1m_c50"] = measure(procs, sides, "1 MiB c50", "/file-1m.bin", 50, reps,
                                    args.duration, warmup)
    memory = {s["label"]: {"start_VmRSS_kib": rss_start.get(s["label"]),
                           "end": [proc_status(p) for p in s["pids"]]}
              for s in sides if s["pids"]}
    return {
        "machine": machine,
        "settings": {
            "reps": reps, "duration_s": args.duration, "warmup_s": warmup,
            "connections": conns, "one_mib": big, "proxy_cpu": PROXY_CPU,
            "client_cpu": CLIENT_CPU,
            "order": "direct nginx chp codehub, repeated, after a warm-up of each",
            "codehub": shell_words(hub_argv).replace(str(tmp), "DIR"),
            "codehub_yaml": config.read_text().replace(str(tmp), "DIR"),
            "upstream_launcher": launcher.read_text().replace(str(tmp), "DIR")
            .replace(str(up_port), "UPSTREAM_PORT"),
            "nginx": shell_words(rp_argv).replace(str(tmp), "DIR"),
            "nginx_conf": rp_conf.read_text().replace(str(tmp), "DIR")
            .replace(f"127.0.0.1:{rp_port}", "127.0.0.1:NGINX_PORT"),
            "chp": shell_words(chp_argv).replace(str(tmp), "DIR")
            .replace(str(chp_port), "CHP_PORT").replace(str(chp_api), "API_PORT"),
            "chp_route": chp_add_route,
            "notes": [
                "The upstream nginx (1 worker) is pinned to CPU 1 with wrk; every proxy to CPU 0.",
                "CHP cannot target a Unix socket: it goes to the upstream's TCP listener; "
                "nginx and codehub go to its Unix socket.",
                "codehub checks the session cookie on every request (authentication on).",
            ],
        },
        "results": results,
        "memory": memory,
    }


# --- report ------------------------------------------------------------------------------------

def render_markdown(r, source):
    m, s = r["machine"], r["settings"]
    lines = [f"Run `{r['command']}` on {m['date_utc']} ({source}): {s['reps']} repetitions of "
             f"{s['duration_s']} s per side, order {s['order']} ({s['warmup_s']} s). "
             f"{m['cpu_model']}, {m['nproc']} CPUs, {m['kernel']}, {m['nginx']}, {m['wrk']}, "
             f"node {m['node']}, configurable-http-proxy {m['configurable_http_proxy']}.", ""]

    def fmt(sm, digits=0, scale=1.0):
        if sm is None:
            return "–"
        f = f"{{:,.{digits}f}}"
        return (f"{f.format(sm['median'] * scale)} ({f.format(sm['min'] * scale)}–"
                f"{f.format(sm['max'] * scale)})")

    for key, res in r["results"].items():
        size = "1 MiB" if key.startswith("1m") else "1 KiB"
        lines += [f"#### {size}, {res['connections']} connections", "",
                  "| side | req/s median (min–max) | p50 ms | p99 ms | proxy CPU s per run "
                  "| proxy CPU | req per proxy CPU-s | proxy RSS KiB | upstream CPU | wrk CPU "
                  "| other CPU | errors |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, sm in res["summary"].items():
            lines.append(
                f"| {label} | {fmt(sm['rps'])} | {fmt(sm['p50_ms'], 3)} | "
                f"{fmt(sm['p99_ms'], 2)} | {fmt(sm['proxy_cpu_s'], 2)} | "
                f"{fmt(sm['proxy_cpu_util'], 2)} | {fmt(sm['proxy_requests_per_cpu_s'])} | "
                f"{fmt(sm['proxy_rss_kib'])} | {fmt(sm['upstream_cpu_util'], 2)} | "
                f"{fmt(sm['client_cpu_util'], 2)} | {fmt(sm['other_cpu'], 2)} | "
                f"{sm['errors']} |")
        lines.append("")
        for name, ratio in res["ratios"].items():
            lines.append(f"- {name}: **{ratio['rps']}** req/s (medians), per repetition "
                         f"{fmt(ratio['rps_paired'], 3)}, per proxy CPU-second "
                         f"{ratio.get('requests_per_cpu_s', '–')}")
        lines += ["", "Commands:", ""]
        for label, cmd in res["commands"].items():
            lines.append(f"- {label}: `{cmd}`")
        lines.append("")
    lines += ["#### Setup", "", f"- codehub: `{s['codehub']}` with `codehub.yaml`:", "",
              "```yaml", s["codehub_yaml"].rstrip(), "```", "",
              "- upstream (`local.code_server`, started by codehub's spawner):", "",
              "```sh", s["upstream_launcher"].rstrip(), "```", "",
              f"- nginx: `{s['nginx']}` with:", "", "```nginx", s["nginx_conf"].rstrip(), "```",
              "", f"- configurable-http-proxy: `CONFIGPROXY_AUTH_TOKEN=... {s['chp']}`, "
              f"route added with `{s['chp_route']}`", ""]
    lines += [f"- {n}" for n in s["notes"]]
    lines += ["", "Memory (KiB, /proc/PID/status at the end; nginx: master + worker):", "",
              "| proxy | VmRSS at start | VmRSS at end | VmHWM at end |", "|---|---|---|---|"]
    for label, mem in r["memory"].items():
        lines.append(f"| {label} | {mem['start_VmRSS_kib']:,} | "
                     f"{sum(e['VmRSS_kib'] for e in mem['end']):,} | "
                     f"{sum(e['VmHWM_kib'] for e in mem['end']):,} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
