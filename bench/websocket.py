#!/usr/bin/env python3
"""Proxy benchmark (WebSocket): codehub's /user/NAME/ tunnel beside nginx and
configurable-http-proxy, all in front of ONE shared echo upstream, in one run, on this machine.

    bench/websocket.py           full run: echo round trips (32 B) at 1 and 50 connections,
                                 5 interleaved repetitions of 5 s; 1,000 and 10,000 idle
                                 WebSockets held open through each side, 5 interleaved
                                 repetitions -> bench/results/websocket.json
    bench/websocket.py --quick   smoke run: round trips at 50 connections, 3 repetitions of
                                 3 s; 1,000 idle WebSockets, 2 repetitions
                                 -> bench/results/tmp/websocket-quick.json
    bench/websocket.py --report bench/results/websocket.json   print the Markdown tables

The upstream and the client are `wsbench` (bench/wsbench, Go standard library only, built
into .deps/bench/wsbench when missing or older than its sources). codehub reaches a user's
server only through its spawner, so the hub is configured with `local.code_server` = a
launcher script (written here) that execs `wsbench echo` on the `--socket PATH` the local
spawner passes (where codehub's `GET /healthz` gets a 200) and on a TCP port of 127.0.0.1.
One user logs in through the form and starts that server through the API. The sides, all
against that same echo upstream:

- direct:   the client to the upstream's TCP listener (no proxy);
- nginx:    nginx as a reverse proxy (Upgrade/Connection map) to the upstream's Unix socket;
- chp:      configurable-http-proxy (npm, in .deps/bench/chp) to the upstream's TCP listener
            (CHP cannot target a Unix socket);
- codehub:  codehub, with the session cookie and the hub's Origin, to the upstream's Unix
            socket.

Round trips: `wsbench rtt` keeps one 32-byte message in flight per connection and counts
echoes. Idle: `wsbench hold` opens N WebSockets (one echo each, so that every tunnel has
carried data), then holds them; the proxy's RSS (VmRSS of all its processes) is read before,
with them open and after they closed; per connection = (with - before) / N.

Every proxy is pinned to CPU 0, the client and the upstream to CPU 1. Runs alternate direct
nginx chp codehub ... after a warm-up of each. Every process this script starts is stopped
by its PID (the upstream through DELETE .../server, then checked gone). Only 127.0.0.1 is
contacted. Standard library only.
"""

import argparse
import hashlib
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import (Procs, clean_env, cpu_busy, free_port, loadavg, log,  # noqa: E402
                 proc_cpu_s, proc_status, request, shell_words, summarize)
from proxy import (CHP_BIN, CHP_DIR, CHP_VERSION, CLIENT_CPU, PASSWORD, PROXY_CPU,  # noqa: E402
                   USER, group_alive, login_and_start, machine_facts, run_as_directive,
                   start_chp, start_codehub, start_nginx_proxy, stop_user_server, wait_port)

ROOT = Path(__file__).resolve().parents[1]
WSBENCH_SRC = ROOT / "bench" / "wsbench"
WSBENCH = ROOT / ".deps" / "bench" / "wsbench"
SIDES = ("direct", "nginx", "chp", "codehub")
# 10,000 tunnels are 20,000 sockets in a proxy, plus listeners, files and the client's
# 10,000: the 20,000 hard limit of this machine is not enough for nginx or codehub.
NOFILE = 65536
# codehub's http.max_connections counts tunnels too; the default (10,000) would refuse the
# last tunnels of the 10,000 run (and the hub's own API calls next to them).
HUB_MAX_CONNECTIONS = 30000
MSG_SIZE = 32
FD_RESERVE = 200
SETTLE_S = 2.0


# --- wsbench -----------------------------------------------------------------------------------

def build_wsbench():
    """Builds .deps/bench/wsbench when missing or older than any of its sources."""
    sources = [p for p in WSBENCH_SRC.iterdir() if p.suffix == ".go" or p.name == "go.mod"]
    newest = max(p.stat().st_mtime for p in sources)
    if WSBENCH.exists() and WSBENCH.stat().st_mtime >= newest:
        return
    WSBENCH.parent.mkdir(parents=True, exist_ok=True)
    # No dependencies: the proxy is off so that a build can never reach the network.
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "",
           "CGO_ENABLED": "0"}
    cmd = ["go", "-C", str(WSBENCH_SRC), "build", "-trimpath", "-o", str(WSBENCH), "."]
    log("building wsbench: " + " ".join(cmd))
    subprocess.run(cmd, env=env, check=True)


def go_version():
    r = subprocess.run(["go", "version"], capture_output=True, text=True, check=False)
    return r.stdout.strip()


# --- upstream and peers ------------------------------------------------------------------------

def write_launcher(tmp, up_port):
    """The `local.code_server` given to codehub: execs wsbench echo on --socket PATH."""
    script = f"""#!/bin/sh
# Written by bench/websocket.py: stands in for code-server. codehub's local spawner passes
# --socket PATH (and other code-server options, ignored here) and polls GET /healthz there.
sock=
while [ $# -gt 0 ]; do
    case "$1" in
        --socket) sock="$2"; shift 2 ;;
        *) shift ;;
    esac
done
[ -n "$sock" ] || {{ echo "no --socket given" >&2; exit 2; }}
exec taskset -c {CLIENT_CPU} {WSBENCH} echo --unix "$sock" --tcp 127.0.0.1:{up_port}
"""
    path = tmp / "upstream.sh"
    path.write_text(script)
    path.chmod(0o755)
    return path


def write_nginx_proxy(tmp, port, sock, nofile):
    d = tmp / "rp"
    d.mkdir()
    conf = f"""# Written by bench/websocket.py: nginx as the WebSocket reverse proxy. One worker:
# the hub has one too. 10,000 tunnels are 20,000 connections in the worker
# (worker_connections at exactly the descriptor limit refused some of them); the
# descriptor limit is what this machine allows every process here.
{run_as_directive()}worker_processes 1;
worker_rlimit_nofile {nofile};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 32768; }}
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
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      "";
    }}
    upstream user {{
        server unix:{sock};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /user/{USER}/ {{
            proxy_pass http://user/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            # codehub closes a tunnel after proxy.websocket_timeout (1h) of silence.
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""
    path = d / "nginx.conf"
    path.write_text(conf)
    return d, path


def wait_user_server(port, cookies, timeout=30):
    deadline = time.monotonic() + timeout
    status, body = None, b""
    while time.monotonic() < deadline:
        status, _, body = request(port, "GET", f"/user/{USER}/healthz",
                                  headers={"Cookie": cookies})
        if status == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the user's server never answered through the hub: {status} "
                       f"{body[:300]!r}")


# --- measuring -----------------------------------------------------------------------------------

def rss(pids):
    """Summed VmRSS and RssAnon (KiB) of the given processes."""
    st = [proc_status(p) for p in pids]
    return {"VmRSS_kib": sum(s["VmRSS_kib"] for s in st),
            "RssAnon_kib": sum(s["RssAnon_kib"] for s in st)}


def client_args(side, display=False):
    args = ["--url", side["display_url"] if display else side["url"]]
    for h in side.get("display_headers" if display else "headers", ()):
        args += ["--header", h]
    return args


def rtt_command(side, conns, duration, display=False):
    exe = "wsbench" if display else str(WSBENCH)
    return (["taskset", "-c", CLIENT_CPU, exe, "rtt", *client_args(side, display),
             "--conns", str(conns), "--duration", str(duration), "--size", str(MSG_SIZE)])


def hold_command(side, conns, display=False):
    exe = "wsbench" if display else str(WSBENCH)
    return ["taskset", "-c", CLIENT_CPU, exe, "hold", *client_args(side, display),
            "--conns", str(conns), "--echo", str(MSG_SIZE)]


def run_rtt(procs, side, conns, duration):
    cmd = rtt_command(side, conns, duration)
    busy0, cpu0, up0 = cpu_busy(), proc_cpu_s(side["pids"]), proc_cpu_s(side["up_pids"])
    load0 = loadavg()
    t0 = time.monotonic()
    proc = procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    procs.procs.remove(proc)
    wall = time.monotonic() - t0
    cpu1, up1, busy1 = proc_cpu_s(side["pids"]), proc_cpu_s(side["up_pids"]), cpu_busy()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out}{err}")
    res = json.loads(out.strip().splitlines()[-1])
    # CPU shares are over the whole process lifetime (connect, run, close), like wrk's.
    res["proxy_cpu_util"] = round((cpu1 - cpu0) / wall, 3) if side["pids"] else None
    res["proxy_rtt_per_cpu_s"] = (round(res["round_trips"] / (cpu1 - cpu0))
                                  if side["pids"] and cpu1 > cpu0 else None)
    res["upstream_cpu_util"] = round((up1 - up0) / wall, 3)
    res["client_cpu_util"] = round((rusage.ru_utime + rusage.ru_stime) / wall, 3)
    res["cpu_busy"] = {c: round((busy1[c][0] - busy0[c][0]) / max(1, busy1[c][1] - busy0[c][1]), 3)
                       for c in busy1}
    # Busy CPU that neither the proxy, the upstream nor the client used: other processes on a
    # shared machine, plus loopback softirq work not charged to them.
    res["other_cpu"] = round(sum(res["cpu_busy"].values()) - (res["proxy_cpu_util"] or 0)
                             - res["upstream_cpu_util"] - res["client_cpu_util"], 3)
    res["loadavg_1m"] = [load0, loadavg()]
    return res


def measure_rtt(procs, sides, conns, reps, duration, warmup):
    name = f"rtt c{conns}"
    log(f"{name}: warm-up {warmup}s each")
    for side in sides:
        run_rtt(procs, side, conns, warmup)
    runs = {s["label"]: [] for s in sides}
    for rep in range(reps):
        for side in sides:
            res = run_rtt(procs, side, conns, duration)
            runs[side["label"]].append(res)
            log(f"{name}: rep {rep + 1}/{reps} {side['label']:8s} {res['rtt_per_s']:>10.0f} rt/s"
                f"  p99 {res['p99_ms']} ms  proxy cpu {res['proxy_cpu_util']}"
                f"  errors {res['errors']}")
    out = {"connections": conns, "size": MSG_SIZE,
           "commands": {s["label"]: shell_words(rtt_command(s, conns, duration, display=True))
                        for s in sides},
           "runs": runs, "summary": {}}
    for label, rs in runs.items():
        sm = {k: summarize([r.get(k) for r in rs]) for k in
              ("rtt_per_s", "p50_ms", "p99_ms", "proxy_cpu_util", "proxy_rtt_per_cpu_s",
               "upstream_cpu_util", "client_cpu_util", "other_cpu")}
        sm["errors"] = sum(r["errors"] + r["close_errors"] for r in rs)
        out["summary"][label] = sm
    med = {label: out["summary"][label]["rtt_per_s"]["median"] for label in runs}
    out["ratios"] = {}
    for peer in ("nginx", "chp", "direct"):
        if peer in med and "codehub" in med and med[peer]:
            paired = [c["rtt_per_s"] / p["rtt_per_s"]
                      for c, p in zip(runs["codehub"], runs[peer]) if p["rtt_per_s"]]
            ratio = {"rtt_per_s": round(med["codehub"] / med[peer], 3),
                     "rtt_per_s_paired": summarize([round(r, 3) for r in paired])}
            cpu_c = out["summary"]["codehub"]["proxy_rtt_per_cpu_s"]
            cpu_p = out["summary"][peer]["proxy_rtt_per_cpu_s"]
            if cpu_c and cpu_p:
                ratio["rtt_per_cpu_s"] = round(cpu_c["median"] / cpu_p["median"], 3)
            out["ratios"][f"codehub/{peer}"] = ratio
    log(f"{name}: " + ", ".join(f"{k} {v['rtt_per_s']}" for k, v in out["ratios"].items()))
    return out


def read_line(proc, timeout):
    """One line of a child's stdout, or an error after timeout seconds."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no answer from {proc.args[:4]} within {timeout}s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            if not chunk:
                raise RuntimeError(f"{proc.args[:4]} ended early ({proc.wait()}): "
                                   f"{proc.stderr.read().decode()[-1000:]}")
            buf += chunk
    return json.loads(buf)


def run_hold(procs, side, conns):
    cmd = hold_command(side, conns)
    before = rss(side["pids"]) if side["pids"] else None
    up_before = rss(side["up_pids"])
    # "At rest": just before this side's first idle run. Allocators keep freed memory (glibc
    # malloc, Node's and Go's heaps), so after a first run the RSS just before the next one
    # already holds what the next tunnels will reuse; measured from the rest value, every
    # repetition counts the memory the open connections occupy.
    side.setdefault("rest", before)
    side.setdefault("up_rest", up_before)
    proc = procs.start(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        opened = read_line(proc, 300)
        # Let lazy work finish (Node's GC, nginx's and libuv's deferred frees) before reading.
        time.sleep(SETTLE_S)
        with_open = rss(side["pids"]) if side["pids"] else None
        up_with = rss(side["up_pids"])
        client = proc_status(proc.pid)
        proc.stdin.close()
        closed = read_line(proc, 120)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            procs.stop(proc)
        elif proc in procs.procs:
            procs.procs.remove(proc)
    time.sleep(1.0)
    after = rss(side["pids"]) if side["pids"] else None
    n = max(1, opened["open"])
    res = {"open": opened["open"], "failed": opened["failed"], "open_s": round(opened["open_s"], 3),
           "closed": closed["closed"], "lost": closed["lost"],
           "error_samples": (opened.get("error_samples") or [])
           + ([closed["lost_sample"]] if closed.get("lost_sample") else []),
           "upstream_before_kib": up_before["VmRSS_kib"], "upstream_with_kib": up_with["VmRSS_kib"],
           "upstream_kib_per_conn": round((up_with["VmRSS_kib"] - side["up_rest"]["VmRSS_kib"])
                                          / n, 2),
           "client_VmRSS_kib": client["VmRSS_kib"],
           "client_kib_per_conn": round(client["VmRSS_kib"] / n, 2)}
    if before is not None:
        rest = side["rest"]
        res.update({"proxy_rest_kib": rest["VmRSS_kib"], "proxy_before_kib": before["VmRSS_kib"],
                    "proxy_with_kib": with_open["VmRSS_kib"],
                    "proxy_after_kib": after["VmRSS_kib"],
                    "proxy_kib_per_conn": round((with_open["VmRSS_kib"] - rest["VmRSS_kib"])
                                                / n, 2),
                    "proxy_anon_kib_per_conn": round((with_open["RssAnon_kib"]
                                                      - rest["RssAnon_kib"]) / n, 2),
                    "proxy_kib_per_conn_vs_run_start": round(
                        (with_open["VmRSS_kib"] - before["VmRSS_kib"]) / n, 2)})
    return res


def measure_idle(procs, sides, conns, reps):
    name = f"idle {conns}"
    runs = {s["label"]: [] for s in sides}
    for rep in range(reps):
        for side in sides:
            res = run_hold(procs, side, conns)
            runs[side["label"]].append(res)
            per = res.get("proxy_kib_per_conn")
            log(f"{name}: rep {rep + 1}/{reps} {side['label']:8s} open {res['open']} "
                f"failed {res['failed']} lost {res['lost']} in {res['open_s']} s; proxy "
                f"{res.get('proxy_before_kib')} -> {res.get('proxy_with_kib')} KiB"
                f" ({per} KiB/conn), upstream {res['upstream_kib_per_conn']} KiB/conn")
    out = {"connections": conns,
           "commands": {s["label"]: shell_words(hold_command(s, conns, display=True))
                        for s in sides},
           "runs": runs, "summary": {}}
    for label, rs in runs.items():
        sm = {k: summarize([r.get(k) for r in rs]) for k in
              ("proxy_rest_kib", "proxy_before_kib", "proxy_with_kib", "proxy_after_kib",
               "proxy_kib_per_conn", "proxy_anon_kib_per_conn",
               "proxy_kib_per_conn_vs_run_start", "upstream_kib_per_conn",
               "client_kib_per_conn", "open_s")}
        sm["failed"] = sum(r["failed"] for r in rs)
        sm["lost"] = sum(r["lost"] for r in rs)
        out["summary"][label] = sm
    return out


# --- main ----------------------------------------------------------------------------------------

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE if os.geteuid() == 0 else hard
    want = max(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # children inherit it
    except (ValueError, OSError) as e:
        log(f"could not raise RLIMIT_NOFILE to {want}: {e}; keeping ({soft}, {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"))
    ap.add_argument("--out")
    ap.add_argument("--reps", type=int, help="round-trip repetitions per side")
    ap.add_argument("--idle-reps", type=int, help="idle repetitions per side and size")
    ap.add_argument("--duration", type=int, help="seconds per round-trip run")
    ap.add_argument("--connections", help="round-trip connections, comma-separated, e.g. 1,50; "
                    "0: no round-trip runs")
    ap.add_argument("--idle", help="idle WebSockets per run, comma-separated, e.g. 1000,10000")
    ap.add_argument("--report")
    ap.add_argument("--codehub-env", action="append", default=[], metavar="CODEHUB_X=V",
                    help="extra environment for codehub (a config setting); recorded")
    args = ap.parse_args()
    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs")
    if not CHP_BIN.exists():
        sys.exit(f"missing {CHP_BIN}: cd {CHP_DIR} && npm install --save-exact "
                 f"configurable-http-proxy@{CHP_VERSION}")
    build_wsbench()
    cfg = {
        "reps": args.reps or (3 if args.quick else 5),
        "idle_reps": args.idle_reps or (2 if args.quick else 5),
        "duration": args.duration or (3 if args.quick else 5),
        "conns": ([int(c) for c in args.connections.split(",") if int(c) > 0]
                  if args.connections
                  else [50] if args.quick else [1, 50]),
        "idle": ([int(c) for c in args.idle.split(",") if int(c) > 0] if args.idle
                 else [1000] if args.quick else [1000, 10000]),
        "warmup": 1,
    }
    out_path = Path(args.out) if args.out else (
        ROOT / "bench/results/tmp/websocket-quick.json" if args.quick
        else ROOT / "bench/results/websocket.json")
    cfg["nofile"] = raise_nofile()
    # A proxy holds two descriptors per tunnel. When the limit cannot be raised far enough
    # (no CAP_SYS_RESOURCE in a container), the largest run is cut to what fits with a
    # reserve for listeners, logs, the store and the event loop, and the report says so.
    fits = (cfg["nofile"][0] - FD_RESERVE) // 2 // 100 * 100
    cfg["idle_notes"] = []
    if cfg["idle"] and max(cfg["idle"]) > fits:
        cfg["idle_notes"].append(
            f"RLIMIT_NOFILE could not be raised above {cfg['nofile'][0]} (hard limit, no "
            f"CAP_SYS_RESOURCE): a proxy needs 2 descriptors per tunnel, so "
            f"{max(cfg['idle']):,} tunnels cannot be held by nginx, CHP or codehub here; "
            f"the idle runs use at most {fits:,} ({FD_RESERVE} descriptors kept for the rest).")
        log(cfg["idle_notes"][-1])
        cfg["idle"] = sorted({min(n, fits) for n in cfg["idle"]})

    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))
    state = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    t0 = time.monotonic()
    try:
        result = run(procs, tmp, args, state, cfg)
        result["command"] = " ".join(["bench/websocket.py", *sys.argv[1:]])
        result["wall_s"] = round(time.monotonic() - t0, 1)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {out_path} after {result['wall_s']} s")
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


def run(procs, tmp, args, state, cfg):
    binary = tmp / "codehub"
    shutil.copy2(args.bin, binary)
    machine = machine_facts(str(binary))
    machine["go"] = go_version()
    machine["wsbench_sha256"] = hashlib.sha256(WSBENCH.read_bytes()).hexdigest()
    machine["nofile_limit"] = list(cfg["nofile"])
    up_port, rp_port, chp_port, chp_api = free_port(), free_port(), free_port(), free_port()
    launcher = write_launcher(tmp, up_port)
    config = tmp / "codehub.yaml"
    config.write_text(f"local:\n  init_venv: false\n  init_ssh_key: false\n"
                      f"  code_server: {launcher}\ncull:\n  timeout: 0\nlog:\n  requests: false\n"
                      f"http:\n  max_connections: {HUB_MAX_CONNECTIONS}\n")
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
    wait_user_server(hub_port, cookies)
    wait_port(up_port)
    up_pids = [server["pid"]]
    with open(f"/proc/{server['pid']}/limits") as f:
        machine["upstream_nofile"] = [ln.split()[3:5] for ln in f if "open files" in ln][0]
    log(f"upstream wsbench echo pid {server['pid']} socket {sock}")

    rp_dir, rp_conf = write_nginx_proxy(tmp, rp_port, sock, cfg["nofile"][0])
    rp_argv, rp_pids = start_nginx_proxy(procs, rp_dir, rp_conf, rp_port)
    chp, chp_argv, chp_add_route = start_chp(procs, tmp, chp_port, chp_api, up_port)

    path = f"/user/{USER}/ws"
    hub_origin = f"http://127.0.0.1:{hub_port}"
    sides = [
        {"label": "direct", "url": f"ws://127.0.0.1:{up_port}/ws", "pids": [],
         "display_url": "ws://127.0.0.1:UPSTREAM_PORT/ws"},
        {"label": "nginx", "url": f"ws://127.0.0.1:{rp_port}{path}", "pids": rp_pids,
         "display_url": f"ws://127.0.0.1:NGINX_PORT{path}"},
        {"label": "chp", "url": f"ws://127.0.0.1:{chp_port}{path}", "pids": [chp.pid],
         "display_url": f"ws://127.0.0.1:CHP_PORT{path}"},
        {"label": "codehub", "url": f"ws://127.0.0.1:{hub_port}{path}", "pids": [hub.pid],
         "headers": [f"Cookie: codehub-session={session}", f"Origin: {hub_origin}"],
         "display_url": f"ws://127.0.0.1:HUB_PORT{path}",
         "display_headers": ["Cookie: codehub-session=$SESSION",
                             "Origin: http://127.0.0.1:HUB_PORT"]},
    ]
    for side in sides:
        side["up_pids"] = up_pids
        res = run_rtt(procs, side, 1, 0.2)
        if res["errors"] or not res["round_trips"]:
            raise RuntimeError(f"{side['label']}: echo through it failed: {res}")
    rss_start = {s["label"]: rss(s["pids"])["VmRSS_kib"] for s in sides if s["pids"]}

    results = {}
    for c in cfg["conns"]:
        results[f"rtt_c{c}"] = measure_rtt(procs, sides, c, cfg["reps"], cfg["duration"],
                                           cfg["warmup"])
    idle = {}
    for n in cfg["idle"]:
        idle[f"idle_{n}"] = measure_idle(procs, sides, n, cfg["idle_reps"])
    memory = {s["label"]: {"start_VmRSS_kib": rss_start.get(s["label"]),
                           "end": [proc_status(p) for p in s["pids"]]}
              for s in sides if s["pids"]}
    memory["upstream"] = {"end": [proc_status(p) for p in up_pids]}
    return {
        "machine": machine,
        "settings": {
            "reps": cfg["reps"], "idle_reps": cfg["idle_reps"], "duration_s": cfg["duration"],
            "warmup_s": cfg["warmup"], "connections": cfg["conns"], "idle": cfg["idle"],
            "message_bytes": MSG_SIZE, "settle_s": SETTLE_S, "proxy_cpu": PROXY_CPU,
            "client_cpu": CLIENT_CPU,
            "order": "direct nginx chp codehub, repeated, after a warm-up of each (round trips)",
            "codehub": shell_words(hub_argv).replace(str(tmp), "DIR"),
            "codehub_yaml": config.read_text().replace(str(tmp), "DIR"),
            "upstream_launcher": launcher.read_text().replace(str(tmp), "DIR")
            .replace(str(up_port), "UPSTREAM_PORT").replace(str(ROOT) + "/", ""),
            "nginx": shell_words(rp_argv).replace(str(tmp), "DIR"),
            "nginx_conf": rp_conf.read_text().replace(str(tmp), "DIR")
            .replace(f"127.0.0.1:{rp_port}", "127.0.0.1:NGINX_PORT"),
            "chp": shell_words(chp_argv).replace(str(tmp), "DIR")
            .replace(str(chp_port), "CHP_PORT").replace(str(chp_api), "API_PORT"),
            "chp_route": chp_add_route,
            "wsbench_build": f"go -C bench/wsbench build -trimpath -o "
                             f"{WSBENCH.relative_to(ROOT)} . (GOTOOLCHAIN=local GOPROXY=off "
                             f"CGO_ENABLED=0)",
            "notes": [
                "One machine with 2 CPUs shared by client, proxy and upstream: every proxy is "
                "pinned to CPU 0, wsbench rtt/hold and the wsbench echo upstream to CPU 1.",
                "CHP cannot target a Unix socket: it goes to the upstream's TCP listener; "
                "nginx and codehub go to its Unix socket.",
                "codehub checks the session cookie and the WebSocket Origin on every "
                "handshake (authentication on).",
                f"RLIMIT_NOFILE raised to {cfg['nofile'][0]} (soft and hard) before any "
                "process started; all children inherit it (nginx also has "
                "worker_rlimit_nofile).",
                f"codehub http.max_connections = {HUB_MAX_CONNECTIONS} (tunnels count against "
                "it; default 10,000).",
                "CHP runs with its defaults (no proxy timeout); nginx with proxy_read_timeout "
                "and proxy_send_timeout 1h, like codehub's default proxy.websocket_timeout.",
                "Idle: each WebSocket carries one 32-byte echo once open, then nothing; RSS "
                f"is read {SETTLE_S} s after the last one opened. Per connection = (VmRSS "
                "with them open - VmRSS at rest before the side's first idle run) / open "
                "connections, all of the proxy's processes (nginx: master + worker).",
                *cfg["idle_notes"],
            ],
        },
        "results": results,
        "idle": idle,
        "memory": memory,
    }


# --- report ------------------------------------------------------------------------------------

def render_markdown(r, source):
    m, s = r["machine"], r["settings"]
    lines = [f"Run `{r['command']}` on {m['date_utc']} ({source}): {s['reps']} repetitions of "
             f"{s['duration_s']} s per side for round trips, {s['idle_reps']} per side for idle "
             f"connections, order {s['order']} ({s['warmup_s']} s). {m['cpu_model']}, "
             f"{m['nproc']} CPUs, {m['kernel']}, {m['nginx']}, node {m['node']}, "
             f"configurable-http-proxy {m['configurable_http_proxy']}, {m['go']}; "
             f"RLIMIT_NOFILE {m['nofile_limit'][0]}.", ""]

    def fmt(sm, digits=0, scale=1.0):
        if sm is None:
            return "–"
        f = f"{{:,.{digits}f}}"
        return (f"{f.format(sm['median'] * scale)} ({f.format(sm['min'] * scale)}–"
                f"{f.format(sm['max'] * scale)})")

    for res in r["results"].values():
        lines += [f"#### Echo round trips, {res['size']}-byte messages, {res['connections']} "
                  "connection" + ("s" if res["connections"] != 1 else ""), "",
                  "| side | round trips/s median (min–max) | p50 ms | p99 ms | proxy CPU "
                  "| round trips per proxy CPU-s | upstream CPU | client CPU | other CPU "
                  "| errors |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, sm in res["summary"].items():
            lines.append(
                f"| {label} | {fmt(sm['rtt_per_s'])} | {fmt(sm['p50_ms'], 3)} | "
                f"{fmt(sm['p99_ms'], 3)} | {fmt(sm['proxy_cpu_util'], 2)} | "
                f"{fmt(sm['proxy_rtt_per_cpu_s'])} | {fmt(sm['upstream_cpu_util'], 2)} | "
                f"{fmt(sm['client_cpu_util'], 2)} | {fmt(sm['other_cpu'], 2)} | "
                f"{sm['errors']} |")
        lines.append("")
        for name, ratio in res["ratios"].items():
            lines.append(f"- {name}: **{ratio['rtt_per_s']}** round trips/s (medians), per "
                         f"repetition {fmt(ratio['rtt_per_s_paired'], 3)}, per proxy "
                         f"CPU-second {ratio.get('rtt_per_cpu_s', '–')}")
        lines += ["", "Commands:", ""]
        for label, cmd in res["commands"].items():
            lines.append(f"- {label}: `{cmd}`")
        lines.append("")
    for res in r.get("idle", {}).values():
        n = res["connections"]
        lines += [f"#### {n:,} idle WebSockets held open", "",
                  "| side | proxy KiB per connection | of which anonymous | vs. RSS just before "
                  f"the run | proxy RSS at rest (KiB) | with {n:,} open | after close "
                  "| upstream KiB per conn | client KiB per conn | seconds to open "
                  "| failed / lost |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, sm in res["summary"].items():
            bold = "**" if label == "codehub" else ""
            lines.append(
                f"| {label} | {bold}{fmt(sm['proxy_kib_per_conn'], 2)}{bold} | "
                f"{fmt(sm['proxy_anon_kib_per_conn'], 2)} | "
                f"{fmt(sm['proxy_kib_per_conn_vs_run_start'], 2)} | "
                f"{fmt(sm['proxy_rest_kib'])} | {fmt(sm['proxy_with_kib'])} | "
                f"{fmt(sm['proxy_after_kib'])} | "
                f"{fmt(sm['upstream_kib_per_conn'], 2)} | {fmt(sm['client_kib_per_conn'], 2)} | "
                f"{fmt(sm['open_s'], 2)} | {sm['failed']} / {sm['lost']} |")
        lines += ["", "Per connection = (VmRSS with them open − VmRSS at rest, i.e. just before "
                  "the side's first idle run) / open connections; the column after it divides "
                  "by the RSS just before the same run instead, which is lower where an "
                  "allocator kept the memory of an earlier run."]
        lines += ["", "Commands (the driver closes hold's stdin to end a run):", ""]
        for label, cmd in res["commands"].items():
            lines.append(f"- {label}: `{cmd}`")
        lines.append("")
    lines += ["#### Setup", "", f"- codehub: `{s['codehub']}` with `codehub.yaml`:", "",
              "```yaml", s["codehub_yaml"].rstrip(), "```", "",
              "- upstream (`local.code_server`, started by codehub's spawner), "
              f"built with `{s['wsbench_build']}`:", "",
              "```sh", s["upstream_launcher"].rstrip(), "```", "",
              f"- nginx: `{s['nginx']}` with:", "", "```nginx", s["nginx_conf"].rstrip(), "```",
              "", f"- configurable-http-proxy: `CONFIGPROXY_AUTH_TOKEN=... {s['chp']}`, "
              f"route added with `{s['chp_route']}`", ""]
    lines += [f"- {n}" for n in s["notes"]]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
