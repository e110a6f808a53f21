#!/usr/bin/env python3
"""Kubernetes spawner benchmark: many users starting their servers at once, on a real
kube-apiserver (the tests/kube harness), with codehub's own API-request counters.

    bench/kube.py             full run (about 4 minutes): 10, 50, 100 and 200 users at
                              once, 3 batches each; writes bench/results/kube.json
    bench/kube.py --quick     smoke run (under 2 minutes): 10 and 50 users, 2 batches each;
                              writes bench/results/tmp/kube-quick.json
    bench/kube.py --report bench/results/kube.json    print the Markdown tables again

What it measures (issue 5, "Measure"): API requests per spawn; the wall time of N concurrent
spawns and how it grows with N; codehub's RSS and CPU while it watches N running pods; the
time to stop them all.

Setup. `kubetest up --dir /tmp/kb-XXXX --max-pods 256` (a real kube-apiserver, etcd and the
simulated kubelet of tests/kube, which runs each pod as local processes on its own
127.42.x.N), a private copy of build/codehub with `spawn.spawner: kubernetes`,
`kube.kubeconfig` = the harness's hub.kubeconfig (the codehub-hub ServiceAccount, whose Role
is exactly what the spawner needs), the light image `sim/http` (python3 -m http.server on the
pod's address: 200 real code-servers would not fit in 2 cores, and the hub's work per spawn
is the same whatever the image runs), `spawn.concurrent_limit: 0` (the default 20 would
answer 429 to the 21st concurrent start). Users are made offline with `codehub user add`,
and each gets a user-scope API token from `codehub token create`, so no batch waits on N
Argon2id logins.

A batch of N: every user's thread sends POST /hub/api/users/NAME/server at once (threads
behind a barrier, connections opened beforehand); the hub answers 201 when the server is
ready within 10 s, else 202, and then the thread follows GET .../server/progress (the event
stream) until its `ready` event. Wall time = first POST sent -> last ready seen. Then, with
all N running, the hub is left alone for a few seconds (it exports its counters every 5 s):
VmRSS/VmHWM, descriptors, CPU while idle, and the /hub/metrics counters, whose difference
over the batch gives the Kubernetes API requests per spawn. Then all N are stopped at once
(DELETE .../server) and the script waits until the hub shows every server stopped and the
apiserver lists no workspace pod. The first batch of a size uses users that never ran (the
claim is created); later batches of the same users find their claim (kept across stops).

No peer runs beside it: JupyterHub + KubeSpawner could in principle use this same harness
(it needs only the apiserver, and sim/http's 404 satisfies JupyterHub's wait_up), but it
exports no count of its API requests and would double the run; it is left for later.

Nothing is pinned: the apiserver, etcd, the kubelet and 200 Python servers need both cores.
Every process started here is stopped by PID at the end (the harness with `kubetest down`),
also on Ctrl-C or SIGTERM. Only 127.0.0.0/8 is used. Standard library only, plus helpers
from bench/hub.py, bench/spawn.py and tests/integ/kube_util.py.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "integ"))
try:
    import pytest  # noqa: F401  (kube_util defines a pytest fixture)
except ImportError:
    # kube_util only uses pytest for its session fixture; this script never calls it, so a
    # stand-in decorator lets the helpers load under a Python without pytest.
    _shim = types.ModuleType("pytest")
    _shim.fixture = lambda *a, **k: (lambda f: f)
    sys.modules["pytest"] = _shim

import kube_util  # noqa: E402
from hub import (clean_env, cpu_busy, cpu_model, first_line, log, mem_total_kib,  # noqa: E402
                 proc_cpu_s, proc_status)
from spawn import copy_binary  # noqa: E402

SIZES_FULL = (10, 50, 100, 200)
SIZES_QUICK = (10, 50)
REPS_FULL = 3
REPS_QUICK = 2
IMAGE = "sim/http:latest"
MAX_PODS = 256  # the node's allocatable pods (kubetest's default is 110)
# The spawner exports its counters every 5 s (METRICS_EVERY_MS in src/spawn/kube.c): a
# reading taken this long after the last request includes it.
FLUSH_S = 5.6
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 5
ADMIN = "kbadmin"
SELECTOR = "app=codehub-workspace,codehub.io/hub=codehub"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CONFIG = """spawn:
  spawner: kubernetes
  concurrent_limit: 0
  active_server_limit: 0
  start_timeout: {start_timeout}s
  stop_timeout: {stop_timeout}s
cull:
  timeout: 0
kube:
  kubeconfig: {kubeconfig}
  image: {image}
  health_path: /
  storage_capacity: 1Gi
"""


class Failure(RuntimeError):
    pass


# --- the harness and the hub ---------------------------------------------------------------------

class Procs:
    """The harness and the hub, stopped at the end: the hub by PID, the harness (and every pod
    it runs) with `kubetest down`."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.kdir = None
        self.cluster = None
        self.hub = None

    def stop_all(self):
        if self.hub is not None and self.hub.poll() is None:
            self.hub.send_signal(signal.SIGTERM)
            try:
                self.hub.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.hub.kill()
                self.hub.wait()
        # Also when `up` was cut short (Ctrl-C): whatever it started is in DIR/state.json.
        if self.kdir is not None and (self.kdir / "state.json").exists():
            try:
                subprocess.run([str(kube_util.KUBETEST), "down", "--dir", str(self.kdir)],
                               check=True, capture_output=True, timeout=120)
            except (subprocess.SubprocessError, OSError) as e:
                log(f"kubetest down failed: {e}")
        self.cluster = None


def kubetest_up(procs, kdir):
    log(f"kubetest up --dir {kdir}")
    procs.kdir = kdir
    procs.cluster = kube_util.start_cluster(kdir, "--max-pods", str(MAX_PODS))
    return procs.cluster


def cli(binary, config, data_dir, *args):
    res = subprocess.run([binary, *args, "--config", str(config), "--data-dir", str(data_dir)],
                         capture_output=True, env=clean_env(), check=False, timeout=60)
    if res.returncode != 0:
        raise Failure(f"codehub {' '.join(args)} failed: {res.stderr.decode()}")
    return res.stdout.decode()


def start_hub(procs, binary, config, data_dir, log_path, cwd):
    logf = open(log_path, "ab")
    procs.hub = subprocess.Popen([binary, "serve", "--config", str(config), "--bind",
                                  "127.0.0.1:0", "--data-dir", str(data_dir)],
                                 stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 env=clean_env(), cwd=cwd)
    logf.close()
    deadline = time.monotonic() + 30
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
            if request(port, "GET", "/hub/health")[0] == 200:
                return port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise Failure("codehub's /hub/health did not answer")
        time.sleep(0.05)


def request(port, method, path, token=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def metrics(port, token):
    """/hub/metrics as {"name{labels}": value}."""
    status, body = request(port, "GET", "/hub/metrics", token)
    if status != 200:
        raise Failure(f"GET /hub/metrics: {status}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


KUBE_COUNTERS = ("codehub_kube_api_requests_total", "codehub_kube_api_failures_total")
WATCH_COUNTERS = ("lists", "relists", "restarts", "silences", "events", "errors")


def kube_counters(m):
    out = {k.replace("codehub_kube_", "").replace("_total", ""): int(m.get(k, 0))
           for k in KUBE_COUNTERS}
    for watch in ("pods", "events"):
        for c in WATCH_COUNTERS:
            out[f"watch_{watch}_{c}"] = int(m.get(
                f'codehub_kube_watch_{c}_total{{watch="{watch}"}}', 0))
    return out


def counter_delta(a, b):
    return {k: b[k] - a[k] for k in a}


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cpu_snapshot(hub_pid, harness_pids):
    """CPU seconds so far of the hub, of each harness process, of this script (all its
    threads) and the machine's busy time."""
    busy = cpu_busy()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    harness = {}
    for name, pid in harness_pids.items():
        try:
            harness[name] = proc_cpu_s([pid])
        except OSError:
            harness[name] = None
    return {"t": time.monotonic(), "hub": proc_cpu_s([hub_pid]), "harness": harness,
            "client": ru.ru_utime + ru.ru_stime,
            "busy": sum(b for b, _ in busy.values()) / CLK_TCK}


def cpu_delta(a, b):
    wall = b["t"] - a["t"]
    harness = {k: (round(b["harness"][k] - v, 2) if v is not None and b["harness"][k] is not None
                   else None) for k, v in a["harness"].items()}
    hub = b["hub"] - a["hub"]
    client = b["client"] - a["client"]
    busy = b["busy"] - a["busy"]
    # Busy time of the machine that neither the hub, the harness's three processes nor this
    # script used: the pods' Python servers, the kernel's loopback work, and whatever else
    # ran on the machine meanwhile.
    rest = busy - hub - client - sum(v for v in harness.values() if v is not None)
    return {"wall_s": round(wall, 3), "hub_cpu_s": round(hub, 2), "harness_cpu_s": harness,
            "client_cpu_s": round(client, 2), "machine_busy_cpu_s": round(busy, 2),
            "machine_busy_cpus": round(busy / wall, 2) if wall > 0 else None,
            "rest_cpu_s": round(rest, 2)}


# --- one batch -----------------------------------------------------------------------------------

def start_one(port, name, token, barrier, out):
    """One user's start: POST, then the progress stream when the answer is 202."""
    res = {"name": name}
    out[name] = res
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=START_TIMEOUT_S + 30)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": "0"}
    try:
        conn.connect()
        barrier.wait()
        res["t_post"] = time.monotonic()
        conn.request("POST", f"/hub/api/users/{name}/server", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        res["t_answer"] = time.monotonic()
        res["status"] = resp.status
        if resp.status == 201:
            res["t_ready"] = res["t_answer"]
            return
        if resp.status != 202:
            res["error"] = f"POST: {resp.status} {body[:200]!r}"
            return
        del headers["Content-Length"]
        conn.request("GET", f"/hub/api/users/{name}/server/progress", headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            res["error"] = f"progress: {resp.status}"
            return
        while True:
            line = resp.readline()
            if not line:
                res["error"] = "progress stream ended without a final event"
                return
            if not line.startswith(b"data:"):
                continue
            ev = json.loads(line[5:])
            if ev.get("ready"):
                res["t_ready"] = time.monotonic()
                return
            if ev.get("failed"):
                res["error"] = f"failed: {ev.get('message')}"
                return
    except (OSError, http.client.HTTPException, ValueError, threading.BrokenBarrierError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def stop_one(port, name, token, out):
    t = time.monotonic()
    try:
        status, body = request(port, "DELETE", f"/hub/api/users/{name}/server", token,
                               timeout=60)
        out[name] = {"status": status, "t_delete": t, "t_answer": time.monotonic()}
        if status not in (202, 204):
            out[name]["error"] = f"DELETE: {status} {body[:200]!r}"
    except (OSError, http.client.HTTPException) as e:
        out[name] = {"t_delete": t, "error": f"{type(e).__name__}: {e}"}


def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=a, daemon=True) for a in args_list]
    for t in threads:
        t.start()
    return threads


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(-(-p * len(v) // 100)) - 1))
    return v[k]


def dist(values):
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "p90": round(pct(values, 90), 3), "max": round(max(values), 3), "n": len(values)}


def hub_ready_seconds(log_path, offset, names):
    """The hub's own start -> ready of each user (`server.ready user=NAME seconds=S`)."""
    with open(log_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    want = set(names)
    out = []
    for m in re.finditer(r"server\.ready user=(\S+) seconds=([\d.]+)", text):
        if m.group(1) in want:
            out.append(float(m.group(2)))
    return out


def workspace_pods(cluster):
    return cluster.admin.get(cluster.path("pods"), query={"labelSelector": SELECTOR})["items"]


def count_events(cluster):
    """Events in the namespace: what the hub's events watch holds in its cache (every listed
    object is kept until the apiserver deletes it, at its event TTL, 1 h by default)."""
    out = cluster.admin.get(cluster.path("events"), query={"limit": "1"})
    return len(out["items"]) + int(out["metadata"].get("remainingItemCount") or 0)


def users_state(port, admin_token, names):
    """{name: (server, pending)} from one GET /hub/api/users."""
    status, body = request(port, "GET", "/hub/api/users?limit=1000", admin_token)
    if status != 200:
        raise Failure(f"GET /hub/api/users: {status}")
    data = json.loads(body)
    items = data["items"] if isinstance(data, dict) else data
    want = set(names)
    return {u["name"]: (u.get("server"), u.get("pending")) for u in items if u["name"] in want}


def batch(ctx, names, kind, rep):
    port, cluster, admin_token = ctx["port"], ctx["cluster"], ctx["admin_token"]
    hub_pid, harness_pids = ctx["hub_pid"], ctx["harness_pids"]
    n = len(names)
    if workspace_pods(cluster):
        raise Failure("workspace pods left over from an earlier batch")
    m0 = kube_counters(metrics(port, admin_token))
    rss_before = proc_status(hub_pid)["VmRSS_kib"]
    events_before = count_events(cluster)
    log_offset = os.path.getsize(ctx["log_path"])

    # Start: every user at once.
    results = {}
    barrier = threading.Barrier(n + 1)
    threads = run_threads(start_one, [(port, name, ctx["tokens"][name], barrier, results)
                                      for name in names])
    barrier.wait(timeout=60)
    c0 = cpu_snapshot(hub_pid, harness_pids)
    for t in threads:
        t.join()
    c1 = cpu_snapshot(hub_pid, harness_pids)
    errors = {k: v["error"] for k, v in results.items() if "error" in v}
    ready = [v for v in results.values() if "t_ready" in v]
    t_first = min(v["t_post"] for v in results.values() if "t_post" in v)
    t_last = max(v["t_ready"] for v in ready) if ready else None
    per_user = [v["t_ready"] - v["t_post"] for v in ready]
    statuses = {}
    for v in results.values():
        statuses[str(v.get("status"))] = statuses.get(str(v.get("status")), 0) + 1
    pods = workspace_pods(cluster)
    start = {
        "wall_s": round(t_last - t_first, 3) if t_last else None,
        "per_user_s": dist(per_user),
        "post_answer_s": dist([v["t_answer"] - v["t_post"] for v in results.values()
                               if "t_answer" in v]),
        "hub_ready_s": dist(hub_ready_seconds(ctx["log_path"], log_offset, names)),
        "post_status": statuses,
        "ready": len(ready),
        "errors": errors,
        "pods_running": sum(1 for p in pods if p["status"].get("phase") == "Running"),
        "distinct_pod_ips": len({p["status"].get("podIP") for p in pods}),
        "cpu": cpu_delta(c0, c1),
    }

    # All N running: leave the hub alone for a moment (also the counters' flush).
    time.sleep(FLUSH_S)
    c2 = cpu_snapshot(hub_pid, harness_pids)
    m1 = kube_counters(metrics(port, admin_token))
    st = proc_status(hub_pid)
    running = {"VmRSS_kib": st["VmRSS_kib"], "VmHWM_kib": st["VmHWM_kib"],
               "VmRSS_before_kib": rss_before, "events_before": events_before,
               "events": count_events(cluster),
               "RssAnon_kib": st["RssAnon_kib"], "threads": st["threads"],
               "fds": fd_count(hub_pid), "idle_cpu": cpu_delta(c1, c2),
               "hub_cpu_s_total": round(c2["hub"], 2)}
    d = counter_delta(m0, m1)
    start["kube"] = d
    start["api_requests_per_spawn"] = round(d["api_requests"] / n, 3)

    # Stop: every user at once, then until the hub and the apiserver both say they are gone.
    stops = {}
    c3 = cpu_snapshot(hub_pid, harness_pids)
    t_del = time.monotonic()
    for t in run_threads(stop_one, [(port, name, ctx["tokens"][name], stops)
                                    for name in names]):
        t.join()
    t_hub_stopped = t_pods_gone = None
    deadline = time.monotonic() + 120
    while t_hub_stopped is None or t_pods_gone is None:
        if time.monotonic() > deadline:
            raise Failure(f"servers not stopped after 120 s ({kind} {n}, rep {rep})")
        if t_pods_gone is None and not workspace_pods(cluster):
            t_pods_gone = time.monotonic()
        if t_hub_stopped is None:
            state = users_state(port, admin_token, names)
            if all(s == (None, None) for s in state.values()) and len(state) == n:
                t_hub_stopped = time.monotonic()
        time.sleep(0.1)
    c4 = cpu_snapshot(hub_pid, harness_pids)
    time.sleep(FLUSH_S)
    m2 = kube_counters(metrics(port, admin_token))
    dstop = counter_delta(m1, m2)
    stop = {"hub_stopped_s": round(t_hub_stopped - t_del, 3),
            "pods_gone_s": round(t_pods_gone - t_del, 3),
            "delete_answer_s": dist([v["t_answer"] - v["t_delete"] for v in stops.values()
                                     if "t_answer" in v]),
            "delete_status": {s: sum(1 for v in stops.values() if str(v.get("status")) == s)
                              for s in {str(v.get("status")) for v in stops.values()}},
            "errors": {k: v["error"] for k, v in stops.items() if "error" in v},
            "kube": dstop, "api_requests_per_stop": round(dstop["api_requests"] / n, 3),
            "cpu": cpu_delta(c3, c4)}
    res = {"n": n, "kind": kind, "rep": rep, "start": start, "running": running, "stop": stop}
    s = start
    log(f"{n:4d} {kind:5s} rep {rep}: all ready in {s['wall_s']} s (per user median "
        f"{s['per_user_s']['median'] if s['per_user_s'] else '-'} s, max "
        f"{s['per_user_s']['max'] if s['per_user_s'] else '-'} s), "
        f"{s['api_requests_per_spawn']} API requests/spawn, hub CPU {s['cpu']['hub_cpu_s']} s, "
        f"RSS {running['VmRSS_kib'] / 1024:.1f} MiB (HWM {running['VmHWM_kib'] / 1024:.1f}), "
        f"stop -> pods gone {stop['pods_gone_s']} s"
        + (f"; {len(errors)} FAILED: {list(errors.items())[:3]}" if errors else ""))
    return res


# --- the run -------------------------------------------------------------------------------------

def machine_facts(binary, cluster):
    model = cpu_model()
    mem_kib = mem_total_kib()
    # kubetest builds the apiserver from the k8s.io/kubernetes module, without the release's
    # version stamp (/version says v0.0.0-master): the version is the one go.mod pins.
    gomod = (ROOT / "tests" / "kube" / "go.mod").read_text()
    pinned = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", gomod, re.M)
    try:
        go_version = cluster.admin.get("/version").get("goVersion", "")
    except (kube_util.KubeError, OSError):
        go_version = ""
    k8s = f"{pinned.group(1) if pinned else 'unknown'} (k8s.io/kubernetes, {go_version})"
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
        "kube_apiserver": k8s,
        "kubetest_sha256": hashlib.sha256(kube_util.KUBETEST.read_bytes()).hexdigest(),
        # The simulated kubelet gives containers this PATH (tests/kube/launch.go).
        "pod_python": first_line(["env", f"PATH={POD_PATH}", "python3", "--version"]),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def run(procs, tmp, args, sizes, reps):
    kdir = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))
    cluster = kubetest_up(procs, kdir)
    binary = tmp / "codehub"
    copy_binary(args.bin, binary)
    data_dir = tmp / "data"
    config_path = tmp / "codehub.yaml"
    config = CONFIG.format(kubeconfig=cluster.hub_kubeconfig, image=IMAGE,
                           start_timeout=START_TIMEOUT_S, stop_timeout=STOP_TIMEOUT_S)
    config_path.write_text(config)
    log_path = tmp / "codehub.log"

    cli(binary, config_path, data_dir, "user", "add", ADMIN, "--admin")
    admin_token = cli(binary, config_path, data_dir, "token", "create", ADMIN, "--scope",
                      "admin", "--note", "bench/kube.py").strip()
    port = start_hub(procs, binary, config_path, data_dir, log_path, tmp)
    log(f"codehub on 127.0.0.1:{port}, harness {cluster.server} (pods on "
        f"{cluster.pod_subnet})")
    ctx = {"port": port, "cluster": cluster, "admin_token": admin_token, "tokens": {},
           "hub_pid": procs.hub.pid, "harness_pids": dict(cluster.state["pids"]),
           "log_path": log_path}
    facts = machine_facts(binary, cluster)
    # The first lists of both watches are done, and counted, before anything is measured.
    deadline = time.monotonic() + 30
    while True:
        k = kube_counters(metrics(port, admin_token))
        if k["watch_pods_lists"] >= 1 and k["watch_events_lists"] >= 1:
            break
        if time.monotonic() > deadline:
            raise Failure("the hub's watches did not list within 30 s")
        time.sleep(0.5)
    st = proc_status(procs.hub.pid)
    memory = {"fresh": {"VmRSS_kib": st["VmRSS_kib"], "VmHWM_kib": st["VmHWM_kib"],
                        "fds": fd_count(procs.hub.pid)}}

    runs = []
    user_add_s = []
    for n in sizes:
        names = [f"k{n}-{i:03d}" for i in range(n)]
        t0 = time.monotonic()
        for name in names:
            cli(binary, config_path, data_dir, "user", "add", name)
            ctx["tokens"][name] = cli(binary, config_path, data_dir, "token", "create", name,
                                      "--scope", "user").strip()
        user_add_s.append({"n": n, "seconds": round(time.monotonic() - t0, 2)})
        # Let the next reading of the counters be a settled one.
        time.sleep(0.2)
        for rep in range(1, reps + 1):
            runs.append(batch(ctx, names, "first" if rep == 1 else "again", rep))
    st = proc_status(procs.hub.pid)
    memory["end"] = {"VmRSS_kib": st["VmRSS_kib"], "VmHWM_kib": st["VmHWM_kib"],
                     "fds": fd_count(procs.hub.pid)}
    memory["end_kube"] = kube_counters(metrics(port, admin_token))
    facts["loadavg_at_end"] = Path("/proc/loadavg").read_text().split()[:3]

    settings = {
        "sizes": list(sizes), "reps": reps, "image": IMAGE, "max_pods": MAX_PODS,
        "flush_s": FLUSH_S, "config": config,
        "commands": {
            "kubetest": f"{kube_util.KUBETEST.relative_to(ROOT)} up --dir {kdir} --images "
                        f"tests/kube/images.yaml --max-pods {MAX_PODS}",
            "user_add": "codehub user add NAME --config DIR/codehub.yaml --data-dir DIR/data",
            "token": "codehub token create NAME --scope user --config DIR/codehub.yaml "
                     "--data-dir DIR/data",
            "hub": "codehub serve --config DIR/codehub.yaml --bind 127.0.0.1:0 "
                   "--data-dir DIR/data",
            "start": "POST /hub/api/users/NAME/server (Authorization: Bearer NAME's token); "
                     "on 202, GET /hub/api/users/NAME/server/progress until `ready`",
            "stop": "DELETE /hub/api/users/NAME/server; then GET /hub/api/users (admin) until "
                    "no server and no pending, and the apiserver's pod list (admin) until "
                    "empty",
        },
        "user_add_s": user_add_s,
    }
    return {"command": "bench/kube.py" + (" --quick" if args.quick else ""),
            "machine": facts, "settings": settings, "runs": runs, "memory": memory,
            "summary": summarise(runs, memory)}


# --- summary and report --------------------------------------------------------------------------

def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarise(runs, memory):
    out = {}
    for r in runs:
        key = f"{r['n']}_{r['kind']}"
        out.setdefault(key, []).append(r)
    summary = {}
    for key, rs in out.items():
        n = rs[0]["n"]
        s = {
            "n": n, "kind": rs[0]["kind"], "reps": len(rs),
            "wall_s": [r["start"]["wall_s"] for r in rs],
            "wall_s_median": med([r["start"]["wall_s"] for r in rs]),
            "per_user_median_s": med([(r["start"]["per_user_s"] or {}).get("median")
                                      for r in rs]),
            "per_user_p90_s": med([(r["start"]["per_user_s"] or {}).get("p90") for r in rs]),
            "per_user_max_s": med([(r["start"]["per_user_s"] or {}).get("max") for r in rs]),
            "hub_ready_median_s": med([(r["start"]["hub_ready_s"] or {}).get("median")
                                       for r in rs]),
            "api_requests_per_spawn": [r["start"]["api_requests_per_spawn"] for r in rs],
            "api_failures_per_spawn": [round(r["start"]["kube"]["api_failures"] / n, 3)
                                       for r in rs],
            "api_requests_per_stop": [r["stop"]["api_requests_per_stop"] for r in rs],
            "watch_restarts": sum(r["start"]["kube"]["watch_pods_restarts"]
                                  + r["start"]["kube"]["watch_events_restarts"]
                                  + r["stop"]["kube"]["watch_pods_restarts"]
                                  + r["stop"]["kube"]["watch_events_restarts"] for r in rs),
            "watch_relists": sum(r["start"]["kube"]["watch_pods_relists"]
                                 + r["start"]["kube"]["watch_events_relists"]
                                 + r["stop"]["kube"]["watch_pods_relists"]
                                 + r["stop"]["kube"]["watch_events_relists"] for r in rs),
            "api_failures": sum(r["start"]["kube"]["api_failures"]
                                + r["stop"]["kube"]["api_failures"] for r in rs),
            "failed_starts": sum(len(r["start"]["errors"]) for r in rs),
            "hub_cpu_s": med([r["start"]["cpu"]["hub_cpu_s"] for r in rs]),
            "hub_cpu_ms_per_spawn": med([r["start"]["cpu"]["hub_cpu_s"] * 1000 / n for r in rs]),
            "apiserver_cpu_s": med([r["start"]["cpu"]["harness_cpu_s"].get("apiserver")
                                    for r in rs]),
            "etcd_cpu_s": med([r["start"]["cpu"]["harness_cpu_s"].get("etcd") for r in rs]),
            "kubelet_cpu_s": med([r["start"]["cpu"]["harness_cpu_s"].get("kubelet")
                                  for r in rs]),
            "rest_cpu_s": med([r["start"]["cpu"]["rest_cpu_s"] for r in rs]),
            "machine_busy_cpus": med([r["start"]["cpu"]["machine_busy_cpus"] for r in rs]),
            "rss_kib": med([r["running"]["VmRSS_kib"] for r in rs]),
            "hwm_kib": max(r["running"]["VmHWM_kib"] for r in rs),
            "rss_before_kib": med([r["running"].get("VmRSS_before_kib") for r in rs]),
            "events": med([r["running"].get("events") for r in rs]),
            "fds": med([r["running"]["fds"] for r in rs]),
            "idle_hub_cpu_pct": med([100 * r["running"]["idle_cpu"]["hub_cpu_s"]
                                     / r["running"]["idle_cpu"]["wall_s"] for r in rs]),
            "hub_stopped_s": med([r["stop"]["hub_stopped_s"] for r in rs]),
            "pods_gone_s": med([r["stop"]["pods_gone_s"] for r in rs]),
            "stop_hub_cpu_s": med([r["stop"]["cpu"]["hub_cpu_s"] for r in rs]),
        }
        summary[key] = s
    return summary


def growth(summary, kind):
    rows = sorted((s for s in summary.values() if s["kind"] == kind), key=lambda s: s["n"])
    if len(rows) < 2:
        return None
    base = rows[0]
    out = []
    for s in rows:
        def ratio(k):
            return round(s[k] / base[k], 2) if s[k] and base[k] else None
        out.append({"n": s["n"], "users_ratio": round(s["n"] / base["n"], 1),
                    "wall_ratio": ratio("wall_s_median"),
                    "wall_ms_per_spawn": round(1000 * s["wall_s_median"] / s["n"], 1)
                    if s["wall_s_median"] else None,
                    "hub_cpu_ms_per_spawn": s["hub_cpu_ms_per_spawn"],
                    "rss_mib": round(s["rss_kib"] / 1024, 1),
                    "rss_ratio": ratio("rss_kib")})
    return out


def render_markdown(r, source):
    # Computed again from the runs, so that a result written before a column was added
    # still gets every column.
    m, st, sm = r["machine"], r["settings"], summarise(r["runs"], r["memory"])
    fresh = r["memory"]["fresh"]

    def f(x, digits=1):
        return "–" if x is None else f"{x:,.{digits}f}"

    def lst(xs, digits=2):
        return ", ".join(f(x, digits) for x in xs)

    kinds_text = ("the first batch of each size uses users that never ran (their claim is "
                  "created: `first`), the later ones the same users again (the claim exists: "
                  "`again`)")
    lines = [
        f"Run `{r['command']}` on {m['date_utc']} ({source}): {', '.join(map(str, st['sizes']))} "
        f"users starting at once, {st['reps']} batches per size; {kinds_text}. Nothing "
        "pinned; the machine has 2 cores shared with the harness (apiserver, etcd, simulated "
        "kubelet, one Python server per pod) and with whatever else ran (other engineers' "
        f"builds and tests; load average {', '.join(m['loadavg_at_start'])} at the start"
        + (f", {', '.join(m['loadavg_at_end'])} at the end" if "loadavg_at_end" in m else "")
        + "; the \"machine busy\" column shows how much of both cores was in use).", "",
        f"codehub `{m['codehub']}` (sha256 `{m['codehub_binary_sha256'][:16]}…`, built "
        f"{m['codehub_binary_mtime_utc']}); kube-apiserver {m['kube_apiserver']} with etcd and "
        f"the simulated kubelet of tests/kube (`kubetest`, sha256 "
        f"`{m['kubetest_sha256'][:16]}…`); pods run `{st['image']}` ({m['pod_python']} "
        f"`-m http.server`); {m['nproc']} × {m['cpu_model']}, {m['mem_total_gib']} GiB, "
        f"Linux {m['kernel']}.", "",
        "#### Commands", "", "```sh", st["commands"]["kubetest"],
        st["commands"]["user_add"] + "      # per user, offline",
        st["commands"]["token"] + "   # one user-scope token each: no logins",
        st["commands"]["hub"], "```", "", "with `DIR/codehub.yaml` (the kubeconfig is the "
        "harness's `hub.kubeconfig`: the codehub-hub ServiceAccount):", "", "```yaml",
        st["config"].rstrip(), "```", "",
        f"Start: {st['commands']['start']}, each user's thread at once. Stop: "
        f"{st['commands']['stop']}.", "",
        "#### N servers started at once", "",
        "| N | batch | wall: first POST → last ready, s | per user start → ready, median / p90 "
        "/ max s | hub's own start → ready, median s | API requests per spawn (of which not 2xx) "
        "| hub CPU s "
        "(ms per spawn) | apiserver / etcd / kubelet CPU s | machine busy, CPUs | failed |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted(sm, key=lambda k: (sm[k]["n"], sm[k]["kind"] != "first"))
    for k in keys:
        s = sm[k]
        lines.append(
            f"| {s['n']} | {s['kind']} ×{s['reps']} | {f(s['wall_s_median'], 2)} "
            f"({lst(s['wall_s'])}) | {f(s['per_user_median_s'], 2)} / "
            f"{f(s['per_user_p90_s'], 2)} / {f(s['per_user_max_s'], 2)} | "
            f"{f(s['hub_ready_median_s'], 2)} | {lst(s['api_requests_per_spawn'], 2)} "
            f"({lst(s['api_failures_per_spawn'], 2)}) | "
            f"{f(s['hub_cpu_s'], 2)} ({f(s['hub_cpu_ms_per_spawn'], 1)}) | "
            f"{f(s['apiserver_cpu_s'])} / {f(s['etcd_cpu_s'])} / {f(s['kubelet_cpu_s'])} | "
            f"{f(s['machine_busy_cpus'], 2)} | {s['failed_starts']} |")
    lines += [
        "", "Wall and per-user times: medians over the batches (each batch's wall in "
        "brackets); per-user = that user's POST → its `ready` (the 201, or the `ready` event "
        "of the progress stream after a 202). API requests per spawn: the difference of "
        "`codehub_kube_api_requests_total` over the batch ÷ N, each batch listed; it also "
        "counts the two watches' routine re-WATCH every 120 s when one fell inside the "
        "window. Not 2xx: `codehub_kube_api_failures_total`, which counts the expected 409 of "
        "the claim POST when the claim exists (then a GET reads it). CPU during the batch "
        "(first POST → last ready), medians.", "",
        "#### With N servers running, and the stop", "",
        f"Fresh hub (watches listed, no server): VmRSS {f(fresh['VmRSS_kib'] / 1024)} MiB, "
        f"{fresh['fds']} descriptors.", "",
        "| N | batch | VmRSS MiB | VmRSS before the batch, MiB | VmHWM MiB | Events in the "
        "namespace | descriptors | "
        "hub CPU while idle, % of a core | stop → hub shows all stopped, s | stop → no pod "
        "left, s | API requests per stop | watch restarts / relists |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in keys:
        s = sm[k]
        lines.append(
            f"| {s['n']} | {s['kind']} | {f(s['rss_kib'] / 1024)} | "
            f"{f(s['rss_before_kib'] / 1024 if s['rss_before_kib'] else None)} | "
            f"{f(s['hwm_kib'] / 1024)} | {f(s['events'], 0)} | {f(s['fds'], 0)} | "
            f"{f(s['idle_hub_cpu_pct'], 2)} | {f(s['hub_stopped_s'], 2)} | "
            f"{f(s['pods_gone_s'], 2)} | {lst(s['api_requests_per_stop'], 2)} | "
            f"{s['watch_restarts']} / {s['watch_relists']} |")
    lines += ["", f"Measured {st['flush_s']} s after the last server became ready, with the "
              "hub left alone meanwhile (its idle CPU is over that window); medians over the "
              "batches. VmHWM is the peak since the hub started. Events: the namespace's "
              "Events at that moment (the batches before included), each of which the hub's "
              "events watch keeps in its cache until the apiserver deletes it at its event "
              "TTL (1 h by default); the harness, like a cluster, keeps them, so the hub's RSS "
              "carries every earlier batch's Events. Memory freed by a stop (the pods leave "
              "the pod watch's cache) is reused by the next batch, which is why an `again` "
              "batch adds little.", ""]
    for kind in ("again", "first"):
        g = growth(sm, kind)
        if not g:
            continue
        lines += [f"#### Growth, `{kind}` batches (relative to N = {g[0]['n']})", "",
                  "| N | users × | wall × | wall per spawn, ms | hub CPU per spawn, ms | "
                  "VmRSS MiB | VmRSS × |", "|---|---|---|---|---|---|---|"]
        for x in g:
            lines.append(f"| {x['n']} | {x['users_ratio']} | {f(x['wall_ratio'], 2)} | "
                         f"{f(x['wall_ms_per_spawn'])} | {f(x['hub_cpu_ms_per_spawn'])} | "
                         f"{x['rss_mib']} | {f(x['rss_ratio'], 2)} |")
        lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"sizes {','.join(map(str, SIZES_QUICK))}, {REPS_QUICK} batches each")
    ap.add_argument("--sizes", help="comma-separated batch sizes (default "
                    f"{','.join(map(str, SIZES_FULL))}; quick {','.join(map(str, SIZES_QUICK))})")
    ap.add_argument("--reps", type=int, help=f"batches per size (default {REPS_FULL}, quick "
                    f"{REPS_QUICK}); the first uses new users")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", default=None, help="result file (default: bench/results/kube.json, "
                    "bench/results/tmp/kube-quick.json with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown tables of a result")
    args = ap.parse_args()

    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0
    sizes = (tuple(int(x) for x in args.sizes.split(",")) if args.sizes
             else SIZES_QUICK if args.quick else SIZES_FULL)
    reps = args.reps or (REPS_QUICK if args.quick else REPS_FULL)
    if reps < 1 or any(n < 1 or n > MAX_PODS - 6 for n in sizes):
        ap.error(f"--reps must be at least 1 and sizes 1..{MAX_PODS - 6}")
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "kube-quick.json"
                                 if args.quick else ROOT / "bench" / "results" / "kube.json"))

    tmp = Path(tempfile.mkdtemp(prefix="kbh-", dir="/tmp"))
    procs = Procs(tmp)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    t_start = time.monotonic()
    kdir = None
    try:
        result = run(procs, tmp, args, sizes, reps)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, OSError, http.client.HTTPException, kube_util.KubeError) as e:
        log(f"failed: {e}")
        log_path = tmp / "codehub.log"
        if log_path.exists():
            sys.stderr.write(log_path.read_text(errors="replace")[-3000:])
        return 1
    finally:
        # Signals during the cleanup would leave the harness running: finish it first.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        kdir = procs.kdir
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            if kdir is not None:
                shutil.rmtree(kdir, ignore_errors=True)
        else:
            log(f"kept {tmp} and {kdir}")
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path} ({result['elapsed_s']} s)")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
