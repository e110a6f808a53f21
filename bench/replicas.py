#!/usr/bin/env python3
"""Replicas benchmark: several codehub replicas sharing one PostgreSQL store, beside one
replica on PostgreSQL and one on SQLite, in one run, on this machine (issue 6, "Measure").

    bench/replicas.py           full run (about 8 minutes): logins, proxied requests at 50
                                and 200 connections, 3 interleaved repetitions each, and 3
                                failovers for each placement and cluster setting;
                                writes bench/results/replicas.json
    bench/replicas.py --quick   smoke run (about 2 minutes): 2 repetitions, 50 connections,
                                3 failovers -> bench/results/tmp/replicas-quick.json
    bench/replicas.py --report bench/results/replicas.json   print the Markdown tables again

A throw-away PostgreSQL server (scripts/pg-test-server.sh, in a directory of its own under
/tmp, destroyed at the end) holds the replicas' store. Three deployments:

- pg1:    replica A alone receives the clients (replica B runs beside it, idle);
- pg2:    replicas A and B, the clients split evenly across both;
- sqlite: one codehub on SQLite, the single-machine default (the reference).

The replicas share the database, the data directory (the local spawner's Unix sockets live
there) and a configuration; each is `codehub serve --bind 127.0.0.1:0` with its own log.

1. Logins/s: form logins (GET /hub/login for the XSRF cookie, POST /hub/login), first-use
   (Argon2id hash + store) and returning (Argon2id verify + session), N client threads,
   users made beforehand through POST /hub/api/users. Every codehub re-pinned to both CPUs
   for this (taskset -a -p -c 0,1): Argon2id needs both cores, and two replicas on 2 cores
   cannot hash faster than one.
2. Proxied requests/s: wrk with keep-alive to GET /user/NAME/file-1k.bin through the
   proxy, the upstream a real nginx started by codehub's own spawner (the launcher of
   bench/proxy.py as `local.code_server`). pg2 runs two wrk at once, one per replica, each
   with half the connections and one thread; their rates are summed. Proxies pinned to
   CPU 0, wrk and the upstream to CPU 1, as in bench/proxy.py. The proxies' CPU and RSS.
3. Failover: B started first (it leads), then A; the user's server started through A (A
   owns it). Kill -9 A at t0 and poll B every 50 ms: (a) B proxies the workspace, (b) B's
   API answers 200 for the user, (c) B adopts the server (`server.adopted` in B's log; the
   row's owner checked with psql). Then a new replica C is started beside B, and B (now
   leader and owner) is killed at t1: (d) C logs `cluster.leader`, (e) C adopts the server.
   Two placements: "other hosts" (each replica in a UTS namespace with a host name of its
   own, so that only the lease tells the survivor that a replica died, as with a lost node;
   the kill comes once the survivor has reached the store for a whole lease) and "same host"
   (the survivor sees the dead replica's PID gone on its own host and does not wait for the
   lease). Default cluster settings (heartbeat 2 s, lease 10 s) and lease 3 s / heartbeat
   1 s; a fresh database and data directory for every repetition; the kill moment is
   shifted by a random part of a heartbeat.

Every process started here is stopped by its PID (the upstreams by their process group,
checked to be ours), and the PostgreSQL directory is destroyed, also on Ctrl-C, SIGTERM or
failure. Only 127.0.0.1 is contacted. Standard library only, plus helpers from
bench/hub.py and bench/proxy.py.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub import (Procs, clean_env, cpu_busy, cpu_model, first_line, free_port,  # noqa: E402
                 loadavg, log, mem_total_kib, nginx_worker_pids, parse_wrk, proc_cpu_s,
                 proc_status, request, run_logins, shell_words, summarize)
from proxy import (PASSWORD, USER, group_alive, login_and_start, wait_upstream,  # noqa: E402
                   write_launcher)

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "pg-test-server.sh"
PROXY_CPU = "0"
CLIENT_CPU = "1"
ADMIN = "benchadmin"
ADMIN_PASSWORD = "bench-admin-password"
SIDES = ("pg1", "pg2", "sqlite")
SIDE_TITLES = {
    "pg1": "1 replica, PostgreSQL",
    "pg2": "2 replicas, PostgreSQL",
    "sqlite": "1 replica, SQLite",
}
# Failover placements. A replica's id is HOST-PID-RANDOM, and a survivor that finds a dead
# replica's id on its own host with no such PID left knows it is gone without waiting for the
# lease (src/spawn/manager.c, replica_gone_here). "other-hosts" gives each replica a host name
# of its own (a UTS namespace), so only the lease can tell: what a lost node looks like.
PLACEMENTS = ("other-hosts", "same-host")
# Failover settings: the defaults (no cluster section), and a short lease.
CLUSTER_SETTINGS = {
    "default": {"heartbeat_s": 2, "lease_s": 10, "yaml": ""},
    "short": {"heartbeat_s": 1, "lease_s": 3,
              "yaml": "cluster:\n  heartbeat: 1s\n  lease: 3s\n"},
}
POLL_S = 0.05
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z (\w+) (\S+)(.*)$")


# --- PostgreSQL ----------------------------------------------------------------------------------

class Postgres:
    """The throw-away server of scripts/pg-test-server.sh (as the postgres user when run as
    root), and psql as the codehub role."""

    def __init__(self, parent):
        self.dir = parent / "pg"
        self.url = None

    def _script(self, cmd):
        res = subprocess.run([str(PG_SCRIPT), cmd, str(self.dir)], capture_output=True,
                             text=True, timeout=180, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"pg-test-server.sh {cmd} failed:\n{res.stderr}")
        return res.stdout.strip()

    def start(self):
        self.url = self._script("start")
        return self

    def destroy(self):
        self._script("destroy")

    @property
    def password_file(self):
        return str(self.dir / "password")

    def db_url(self, db):
        return self.url.rsplit("/", 1)[0] + "/" + db

    def psql(self, sql, db="codehub"):
        """Rows as lists of strings."""
        env = dict(os.environ, PGPASSWORD=Path(self.password_file).read_text().strip(),
                   PGCONNECT_TIMEOUT="10")
        res = subprocess.run(["psql", self.db_url(db), "-X", "-q", "-A", "-t", "-F", "\x1f",
                              "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                             text=True, env=env, timeout=60, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        return [line.split("\x1f") for line in res.stdout.splitlines() if line]

    def new_database(self, name):
        self.psql(f"CREATE DATABASE {name} OWNER codehub")
        return name

    def store_env(self, db):
        return {"CODEHUB_STORE_URL": self.db_url(db),
                "CODEHUB_STORE_PASSWORD_FILE": self.password_file}


# --- codehub -------------------------------------------------------------------------------------

class Replica:
    def __init__(self, name, proc, port, log_path, argv, replica_id):
        self.name, self.proc, self.port, self.log_path = name, proc, port, log_path
        self.argv, self.id = argv, replica_id
        self.started_mono = time.monotonic()


def start_replica(procs, binary, name, rdir, data_dir, config, env, cpus=PROXY_CPU,
                  hostname=None):
    """`codehub serve` pinned to `cpus`, its output in rdir/NAME.log; waits for /hub/health.
    With `hostname`, in a UTS namespace of its own with that host name (root only): a replica
    "on another machine" as far as the replica ids tell. unshare and sh exec, so the PID is
    codehub's."""
    log_path = rdir / f"{name}.log"
    argv = ["taskset", "-c", cpus, str(binary), "serve", "--config", str(config), "--bind",
            "127.0.0.1:0", "--data-dir", str(data_dir)]
    if hostname is not None:
        argv = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *argv]
    with open(log_path, "ab") as logf:
        proc = procs.start(argv, stdout=logf, stderr=logf, env=clean_env(env), cwd=str(rdir))
    deadline = time.monotonic() + 30
    port = None
    while port is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"codehub {name} did not start: {log_path.read_text()[-2000:]}")
        m = re.search(rb"hub\.listening .*?port=(\d+)", log_path.read_bytes()[:65536])
        if m:
            port = int(m.group(1))
        else:
            time.sleep(0.05)
    while True:
        status, _ = get(port, "/hub/health", None, timeout=2)
        if status == 200:
            break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"codehub {name} not healthy: {log_path.read_text()[-2000:]}")
        time.sleep(0.05)
    m = re.search(r" cluster\.replica replica=(\S+)", log_path.read_text(errors="replace"))
    return Replica(name, proc, port, log_path, argv, m.group(1) if m else None)


def codehub_cli(binary, data_dir, config, env, args, stdin=None):
    res = subprocess.run([str(binary), *args, "--config", str(config), "--data-dir",
                          str(data_dir)], input=stdin, capture_output=True,
                         env=clean_env(env), check=False, timeout=120)
    if res.returncode != 0:
        raise RuntimeError(f"codehub {' '.join(args)} failed: {res.stderr.decode()}")
    return res.stdout.decode()


def get(port, path, cookies, timeout=2.0):
    """One GET on a new connection; (status or None, body). Never raises on network errors:
    the failover polls go on while a replica dies."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path, headers={"Cookie": cookies} if cookies else {})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return resp.status, data
    except (OSError, http.client.HTTPException) as e:
        return None, str(e).encode()


def log_events(path):
    """[(epoch seconds, level, event, rest of the line)] of a codehub text log."""
    out = []
    for line in Path(path).read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if m:
            ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            out.append((ts, m.group(2), m.group(3), m.group(4).strip()))
    return out


def first_event(path, event, after=0.0):
    for ts, _, ev, rest in log_events(path):
        if ev == event and ts >= after:
            return ts, rest
    return None


def warnings_of(path, tmp):
    """The warn/error lines of a log (paths made relative), for the result and the report."""
    return [f"{lvl} {ev} {rest}".replace(str(tmp), "DIR")
            for _, lvl, ev, rest in log_events(path) if lvl in ("warn", "error")]


def pin(pid, cpus):
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   capture_output=True)


def server_json(data_dir):
    return json.loads((data_dir / "run" / USER / "server.json").read_text())


class Upstreams:
    """The users' servers (nginx started by codehub's spawner, each in a process group of its
    own), stopped by their group at the end. A group is signalled only while its leader's
    command line still names this run's directory."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.pgids = []

    def add(self, pgid):
        if pgid not in self.pgids:
            self.pgids.append(pgid)

    def ours(self, pgid):
        try:
            return self.tmp.encode() in Path(f"/proc/{pgid}/cmdline").read_bytes()
        except OSError:
            return False

    def stop(self, pgid):
        if self.ours(pgid):
            os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.ours(pgid):
                os.killpg(pgid, signal.SIGKILL)
        if pgid in self.pgids:
            self.pgids.remove(pgid)

    def stop_all(self):
        for pgid in list(self.pgids):
            try:
                self.stop(pgid)
            except ProcessLookupError:
                self.pgids.remove(pgid)


def make_site(d, payload):
    """d/www/file-1k.bin and the launcher (bench/proxy.py's) serving it on up_port."""
    d.mkdir(parents=True)
    os.chmod(d, 0o755)
    (d / "www").mkdir()
    (d / "www" / "file-1k.bin").write_bytes(payload)
    up_port = free_port()
    return write_launcher(d, up_port), up_port


def base_yaml(launcher):
    return (f"local:\n  init_venv: false\n  init_ssh_key: false\n  code_server: {launcher}\n"
            "cull:\n  timeout: 0\nlog:\n  requests: false\n")


# --- wrk -----------------------------------------------------------------------------------------

def wrk_command(url, threads, conns, duration, headers=()):
    cmd = ["taskset", "-c", CLIENT_CPU, "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s",
           "--latency"]
    for h in headers:
        cmd += ["-H", h]
    return cmd + [url]


def targets_of(side, conns):
    """(replica, threads, connections) per wrk process of a side."""
    if side["label"] == "pg2":
        half = conns // 2
        return [(side["replicas"][0], 1, half), (side["replicas"][1], 1, conns - half)]
    return [(side["replicas"][0], 2, conns)]


def run_wrk(procs, side, conns, duration, path):
    """One run of a side: one wrk, or two at once (pg2). Rates and requests are summed;
    latencies are the worse of the two wrk processes."""
    targets = targets_of(side, conns)
    pids = [r.proc.pid for r, _, _ in targets]
    busy0, cpu0, up0 = cpu_busy(), proc_cpu_s(pids), proc_cpu_s(side["up_pids"])
    load0 = loadavg()
    t0 = time.monotonic()
    running = []
    for r, threads, c in targets:
        cmd = wrk_command(f"http://127.0.0.1:{r.port}/user/{USER}{path}", threads, c, duration,
                          [f"Cookie: codehub-session={side['session']}"])
        running.append((cmd, procs.start(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
    parts, client_cpu = [], 0.0
    for cmd, proc in running:
        out = proc.stdout.read().decode()
        _, status, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        procs.procs.remove(proc)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}")
        parts.append(parse_wrk(out))
        client_cpu += rusage.ru_utime + rusage.ru_stime
    wall = time.monotonic() - t0
    cpu1, up1, busy1 = proc_cpu_s(pids), proc_cpu_s(side["up_pids"]), cpu_busy()
    res = {"rps": round(sum(p["rps"] for p in parts), 2),
           "requests": sum(p["requests"] for p in parts),
           "errors": sum(p["non_2xx_3xx"] + p["socket_errors"] for p in parts),
           "bytes_per_response": parts[0].get("bytes_per_response")}
    for k in ("p50_ms", "p90_ms", "p99_ms"):
        vals = [p[k] for p in parts if k in p]
        res[k] = max(vals) if vals else None
    if len(parts) > 1:
        res["per_wrk"] = parts
    res["proxy_cpu_s"] = round(cpu1 - cpu0, 3)
    res["proxy_cpu_util"] = round((cpu1 - cpu0) / wall, 3)
    res["proxy_requests_per_cpu_s"] = (round(res["requests"] / (cpu1 - cpu0))
                                       if cpu1 > cpu0 else None)
    res["upstream_cpu_util"] = round((up1 - up0) / wall, 3)
    res["client_cpu_util"] = round(client_cpu / wall, 3)
    res["cpu_busy"] = {c: round((busy1[c][0] - busy0[c][0]) / max(1, busy1[c][1] - busy0[c][1]), 3)
                       for c in busy1}
    # Busy CPU time that neither the proxies, the upstream nor wrk used (other processes on a
    # shared machine, PostgreSQL, loopback softirq work not charged to them).
    res["other_cpu"] = round(sum(res["cpu_busy"].values()) - res["proxy_cpu_util"]
                             - res["upstream_cpu_util"] - res["client_cpu_util"], 3)
    res["proxy_rss_kib"] = sum(proc_status(p)["VmRSS_kib"] for p in pids)
    res["loadavg_1m"] = [load0, loadavg()]
    return res


def measure_proxy(procs, sides, conns, reps, duration, warmup, path="/file-1k.bin"):
    name = f"proxy c{conns}"
    log(f"{name}: warm-up {warmup}s each")
    for side in sides:
        run_wrk(procs, side, conns, warmup, path)
    runs = {s["label"]: [] for s in sides}
    for rep in range(reps):
        for side in sides:
            res = run_wrk(procs, side, conns, duration, path)
            runs[side["label"]].append(res)
            log(f"{name}: rep {rep + 1}/{reps} {side['label']:6s} {res['rps']:>10.0f} req/s"
                f"  p99 {res['p99_ms']} ms  proxy cpu {res['proxy_cpu_util']}"
                f"  errors {res['errors']}")
    out = {"path": path, "connections": conns, "commands": {}, "runs": runs, "summary": {}}
    for side in sides:
        out["commands"][side["label"]] = [
            shell_words(wrk_command(f"http://127.0.0.1:PORT_{r.name.upper()}/user/{USER}{path}",
                                    t, c, duration, ["Cookie: codehub-session=$SESSION"]))
            for r, t, c in targets_of(side, conns)]
    for label, rs in runs.items():
        sm = {k: summarize([r.get(k) for r in rs]) for k in
              ("rps", "p50_ms", "p99_ms", "proxy_cpu_s", "proxy_cpu_util",
               "proxy_requests_per_cpu_s", "proxy_rss_kib", "upstream_cpu_util",
               "client_cpu_util", "other_cpu", "bytes_per_response")}
        sm["errors"] = sum(r["errors"] for r in rs)
        out["summary"][label] = sm
    out["ratios"] = ratios(runs, out["summary"], "rps", "proxy_requests_per_cpu_s")
    log(f"{name}: " + ", ".join(f"{k} {v['median']}" for k, v in out["ratios"].items()))
    return out


def ratios(runs, summary, key, per_cpu_key=None):
    """pg2/pg1, pg1/sqlite and pg2/sqlite: of the medians, and per repetition (the sides of a
    repetition ran back to back)."""
    out = {}
    for a, b in (("pg2", "pg1"), ("pg1", "sqlite"), ("pg2", "sqlite")):
        if a not in runs or b not in runs:
            continue
        ma, mb = summary[a][key]["median"], summary[b][key]["median"]
        paired = [x[key] / y[key] for x, y in zip(runs[a], runs[b]) if y[key]]
        out[f"{a}/{b}"] = {"median": round(ma / mb, 3),
                           "paired": summarize([round(r, 3) for r in paired])}
        if per_cpu_key and summary[a].get(per_cpu_key) and summary[b].get(per_cpu_key):
            out[f"{a}/{b}"]["per_cpu_s"] = round(summary[a][per_cpu_key]["median"]
                                                 / summary[b][per_cpu_key]["median"], 3)
    return out


# --- logins --------------------------------------------------------------------------------------

def password_of(name):
    return f"pw-{name}-long-enough"


def timed_logins(side, names, clients):
    """Logs `names` in through the side's replicas (split evenly, with the clients); returns
    (logins per second over the wall time, the machine's busy CPUs meanwhile)."""
    replicas = side["replicas"] if side["label"] == "pg2" else side["replicas"][:1]
    n = len(replicas)
    shares = [(r, names[i::n], clients // n + (1 if i < clients % n else 0))
              for i, r in enumerate(replicas)]
    errors = []

    def one(r, share, c):
        try:
            run_logins(r.port, share, password_of, c)
        except Exception as e:  # reported after the join
            errors.append(e)

    busy0 = cpu_busy()
    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=s) for s in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    busy1 = cpu_busy()
    if errors:
        raise RuntimeError(f"logins on {side['label']}: {errors[0]}")
    busy = sum((busy1[c][0] - busy0[c][0]) / max(1, busy1[c][1] - busy0[c][1]) for c in busy1)
    return len(names) / wall, round(busy, 3)


def measure_logins(sides, admin_tokens, reps, per_chunk, clients):
    first = {s["label"]: [] for s in sides}
    returning = {s["label"]: [] for s in sides}
    busy = {s["label"]: [] for s in sides}
    created = {s["label"]: [] for s in sides}
    for side in sides:
        label = side["label"]
        names = [f"bench-{label}-{i:04d}" for i in range(1, reps * per_chunk + 1)]
        r = side["replicas"][0]
        status, _, body = request(r.port, "POST", "/hub/api/users",
                                  json.dumps({"usernames": names}).encode(),
                                  {"Authorization": f"Bearer {admin_tokens[side['store']]}",
                                   "Content-Type": "application/json"})
        if status != 201 or len(json.loads(body)) != len(names):
            raise RuntimeError(f"POST /hub/api/users on {label}: {status} {body[:200]!r}")
        created[label] = names
    for rep in range(reps):
        for kind, table in (("first-use", first), ("returning", returning)):
            for side in sides:
                label = side["label"]
                batch = created[label][rep * per_chunk:(rep + 1) * per_chunk]
                rate, b = timed_logins(side, batch, clients)
                table[label].append(round(rate, 2))
                if kind == "first-use":
                    busy[label].append(b)
                log(f"logins: rep {rep + 1}/{reps} {kind:9s} {label:6s} {rate:6.1f}/s "
                    f"(machine busy {b:.2f} CPUs)")
    out = {"per_chunk": per_chunk, "clients": clients, "first_use": {}, "returning": {},
           "machine_busy_cpus": busy}
    for key, table in (("first_use", first), ("returning", returning)):
        summary = {label: {"rate": summarize(v)} for label, v in table.items()}
        runs = {label: [{"rate": x} for x in v] for label, v in table.items()}
        out[key] = {"per_chunk_rates": table, "summary": summary,
                    "ratios": ratios(runs, summary, "rate")}
    return out


# --- failover ------------------------------------------------------------------------------------

def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(POLL_S)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def owner_row(pg, db):
    rows = pg.psql("SELECT s.owner, s.state FROM servers s JOIN users u ON u.id = s.user_id "
                   f"WHERE u.name = '{USER}'", db=db)
    return rows[0] if rows else None


def heartbeat_ages(pg, db, replicas):
    """{replica name: ms since its last heartbeat} from the replicas table, right now."""
    names = {r.id: r.name for r in replicas}
    rows = pg.psql("SELECT id, (extract(epoch FROM clock_timestamp()) * 1000)::bigint "
                   "- heartbeat_ms FROM replicas", db=db)
    return {names.get(i, i): int(age) for i, age in rows}


def settle(r, placement, lease_s, heartbeat_s):
    """A replica judges others' heartbeats only once it has reached the store for a whole
    lease: on other hosts, wait until `r` has run that long (plus a beat), so the kill
    measures the steady state. On the same host the survivor needs no lease of its own (it
    sees the PID gone): one second. Then a random part of a heartbeat more, so that over the
    repetitions the kill falls anywhere between two heartbeats and sweeps. Returns that
    random part."""
    wait = lease_s + heartbeat_s + 0.5 if placement == "other-hosts" else 1.0
    left = r.started_mono + wait - time.monotonic()
    offset = random.uniform(0, heartbeat_s)
    time.sleep(max(0.0, left) + offset)
    return round(offset, 3)


def poll_after_kill(survivor, cookies, payload, t0_wall, t0_mono, events, timeout):
    """Polls `survivor` every POLL_S from the kill: the workspace through its proxy and the
    user through its API, and its log for `events`, until all were seen. Returns the seconds
    from the kill of each, and the polls that failed after a first success."""
    seen = {}
    polls = {"proxy": [0, 0], "api": [0, 0]}  # [polls, failures after the first success]
    api_first = None
    deadline = t0_mono + timeout
    tick = t0_mono
    while True:
        now = time.monotonic()
        status, body = get(survivor.port, f"/user/{USER}/file-1k.bin", cookies, timeout=2)
        ok = status == 200 and body == payload
        polls["proxy"][0] += 1
        if ok and "proxy" not in seen:
            seen["proxy"] = now - t0_mono
        elif not ok and "proxy" in seen:
            polls["proxy"][1] += 1
        now = time.monotonic()
        status, body = get(survivor.port, f"/hub/api/users/{USER}", cookies, timeout=2)
        polls["api"][0] += 1
        if status == 200 and "api" not in seen:
            seen["api"] = now - t0_mono
            api_first = body.decode(errors="replace")[:600]
        elif status != 200 and "api" in seen:
            polls["api"][1] += 1
        for key, event in events.items():
            if key not in seen:
                hit = first_event(survivor.log_path, event, after=t0_wall - 0.001)
                if hit:
                    seen[key] = hit[0] - t0_wall
        if all(k in seen for k in ("proxy", "api", *events)):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"after {timeout} s, only {sorted(seen)} of proxy, api, "
                               f"{', '.join(events)}: {survivor.log_path.read_text()[-1500:]}")
        tick += POLL_S
        time.sleep(max(0.0, tick - time.monotonic()))
    return {k: round(v, 3) for k, v in seen.items()}, polls, api_first


def failover_once(procs, binary, pg, tmp, upstreams, placement, setting, rep, payload):
    cs = CLUSTER_SETTINGS[setting]
    lease, hb = cs["lease_s"], cs["heartbeat_s"]
    d = tmp / f"f{placement[0]}{setting[0]}{rep}"
    tag = f"{placement}/{setting} {rep}"

    def start(name):
        host = f"bench-{name}" if placement == "other-hosts" else None
        return start_replica(procs, binary, name, d, data, config, env, cpus="0,1",
                             hostname=host)

    launcher, up_port = make_site(d, payload)
    config = d / "codehub.yaml"
    config.write_text(base_yaml(launcher) + cs["yaml"])
    db = pg.new_database(f"fail_{placement.replace('-', '_')}_{setting}_{rep}")
    env = pg.store_env(db)
    data = d / "d"
    codehub_cli(binary, data, config, env, ["user", "add", USER, "--password-stdin"],
                stdin=(PASSWORD + "\n").encode())
    # B first: it takes the leadership; A (started second) then owns the user's server.
    b = start("b")
    wait_until(lambda: first_event(b.log_path, "cluster.leader"), 10, "B to lead")
    a = start("a")
    _, cookies, _ = login_and_start(a.port)
    wait_upstream(a.port, up_port, cookies)
    srv = server_json(data)
    upstreams.add(srv["pgid"])
    row = owner_row(pg, db)
    if row[0] != a.id:
        raise RuntimeError(f"the server's owner is {row}, not A ({a.id})")
    status, body = get(b.port, f"/user/{USER}/file-1k.bin", cookies)
    if status != 200 or body != payload:
        raise RuntimeError(f"B does not proxy the workspace before the kill: {status}")
    offset_a = settle(b, placement, lease, hb)
    timeout = 3 * lease + 3 * hb + 20

    # Kill A (the owner; B leads).
    ages_a = heartbeat_ages(pg, db, (a, b))
    t0_wall, t0_mono = time.time(), time.monotonic()
    procs.stop(a.proc, sig=signal.SIGKILL)
    seen, polls, api_body = poll_after_kill(b, cookies, payload, t0_wall, t0_mono,
                                            {"adopted": "server.adopted"}, timeout)
    dead = first_event(b.log_path, "cluster.replica_dead", after=t0_wall)
    seen["replica_dead"] = round(dead[0] - t0_wall, 3) if dead else None
    row = wait_until(lambda: (r := owner_row(pg, db)) and r[0] == b.id and r, 10,
                     "the row's owner to be B")
    seen["owner_row_checked"] = round(time.monotonic() - t0_mono, 3)
    survived = {"after_owner_kill": group_alive(srv["pgid"])}
    first = {"times_s": seen, "polls": polls, "kill_offset_s": offset_a,
             "heartbeat_age_ms_before_kill": ages_a, "row_after": {"owner": "B", "state": row[1]},
             "api_first_200": api_body.replace(str(tmp), "DIR") if api_body else None}
    log(f"failover {tag}: kill owner A -> B proxies {seen['proxy']:.3f} s, API "
        f"{seen['api']:.3f} s, adopted {seen['adopted']:.3f} s (replica_dead "
        f"{seen['replica_dead']}), polls failed {polls['proxy'][1]}+{polls['api'][1]}; "
        f"heartbeat ages before the kill {ages_a} ms")

    # Kill B (now leader and owner), C beside it.
    c = start("c")
    status, body = get(c.port, f"/user/{USER}/file-1k.bin", cookies)
    if status != 200 or body != payload:
        raise RuntimeError(f"C does not proxy the workspace: {status}")
    offset_b = settle(c, placement, lease, hb)
    ages_b = heartbeat_ages(pg, db, (b, c))
    t1_wall, t1_mono = time.time(), time.monotonic()
    procs.stop(b.proc, sig=signal.SIGKILL)
    seen2, polls2, _ = poll_after_kill(c, cookies, payload, t1_wall, t1_mono,
                                       {"leader": "cluster.leader", "adopted": "server.adopted"},
                                       timeout)
    row = wait_until(lambda: (r := owner_row(pg, db)) and r[0] == c.id and r, 10,
                     "the row's owner to be C")
    dead = first_event(c.log_path, "cluster.replica_dead", after=t1_wall)
    seen2["replica_dead"] = round(dead[0] - t1_wall, 3) if dead else None
    second = {"times_s": seen2, "polls": polls2, "kill_offset_s": offset_b,
              "heartbeat_age_ms_before_kill": ages_b, "row_after": {"owner": "C", "state": row[1]}}
    log(f"failover {tag}: kill leader+owner B -> C leads {seen2['leader']:.3f} s, "
        f"adopted {seen2['adopted']:.3f} s, proxies {seen2['proxy']:.3f} s; heartbeat ages "
        f"before the kill {ages_b} ms")
    survived["after_leader_kill"] = group_alive(srv["pgid"])
    if not all(survived.values()):
        log(f"failover {tag}: the user's server (process group {srv['pgid']}) did "
            f"not survive: {survived}")
    warnings = {r.name: warnings_of(r.log_path, tmp) for r in (a, b, c)}
    upstreams.stop(srv["pgid"])
    procs.stop(c.proc)
    return {"owner_killed": first, "leader_killed": second, "log_warnings": warnings,
            "upstream_alive": survived, "replica_ids": {r.name: r.id for r in (a, b, c)}}


# --- machine -------------------------------------------------------------------------------------

def machine_facts(binary, pg):
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_gib": round(mem_total_kib() / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "nginx": first_line(["nginx", "-v"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "postgres": first_line([str(bindirs[-1]), "--version"]) if bindirs else "",
        "postgres_server_version": pg.psql("SHOW server_version")[0][0],
        "psql": first_line(["psql", "--version"]),
        "codehub": subprocess.run([str(binary), "version"], capture_output=True, text=True,
                                  check=False).stdout.strip().splitlines(),
        "codehub_binary_sha256": hashlib.sha256(Path(binary).read_bytes()).hexdigest(),
        "python": platform.python_version(),
        "loadavg_at_start": first_line(["cat", "/proc/loadavg"]),
    }


# --- the run -------------------------------------------------------------------------------------

def run(procs, tmp, args, upstreams, state, cfg):
    binary = tmp / "codehub"
    shutil.copy2(args.bin, binary)
    log("starting PostgreSQL (scripts/pg-test-server.sh)")
    pg = Postgres(tmp)
    state["pg"] = pg
    pg.start()
    result = {"command": " ".join(["bench/replicas.py", *sys.argv[1:]]),
              "machine": machine_facts(binary, pg)}
    payload = os.urandom(1024)

    # The PostgreSQL deployment (A and B) and the SQLite one (S), each with its own upstream.
    pdir, sdir = tmp / "p", tmp / "s"
    p_launcher, p_up = make_site(pdir, payload)
    s_launcher, s_up = make_site(sdir, payload)
    p_config, s_config = pdir / "codehub.yaml", sdir / "codehub.yaml"
    p_config.write_text(base_yaml(p_launcher))
    s_config.write_text(base_yaml(s_launcher))
    pg.new_database("bench")
    p_env = pg.store_env("bench")
    tokens = {}
    for store, d, config, env in (("pg", pdir, p_config, p_env), ("sqlite", sdir, s_config, {})):
        codehub_cli(binary, d / "d", config, env, ["user", "add", USER, "--password-stdin"],
                    stdin=(PASSWORD + "\n").encode())
        codehub_cli(binary, d / "d", config, env, ["user", "add", ADMIN, "--admin",
                                                   "--password-stdin"],
                    stdin=(ADMIN_PASSWORD + "\n").encode())
        tokens[store] = codehub_cli(binary, d / "d", config, env,
                                    ["token", "create", ADMIN, "--scope", "admin", "--note",
                                     "bench"]).strip()
    a = start_replica(procs, binary, "a", pdir, pdir / "d", p_config, p_env)
    b = start_replica(procs, binary, "b", pdir, pdir / "d", p_config, p_env)
    s = start_replica(procs, binary, "s", sdir, sdir / "d", s_config, {})
    log(f"replicas A {a.proc.pid} :{a.port} ({a.id}), B {b.proc.pid} :{b.port} ({b.id}); "
        f"SQLite S {s.proc.pid} :{s.port}")

    sides = []
    for label, reps_, d, up_port, store in (("pg1", [a], pdir, p_up, "pg"),
                                            ("pg2", [a, b], pdir, p_up, "pg"),
                                            ("sqlite", [s], sdir, s_up, "sqlite")):
        sides.append({"label": label, "replicas": reps_, "store": store, "dir": d,
                      "up_port": up_port})
    sessions = {}
    for store, r, d, up_port in (("pg", a, pdir, p_up), ("sqlite", s, sdir, s_up)):
        session, cookies, _ = login_and_start(r.port)
        wait_upstream(r.port, up_port, cookies)
        srv = server_json(d / "d")
        upstreams.add(srv["pgid"])
        up_pids = [srv["pid"]] + nginx_worker_pids(srv["pid"])
        sessions[store] = (session, up_pids)
    for side in sides:
        side["session"], side["up_pids"] = sessions[side["store"]]
        for r in side["replicas"]:
            status, body = get(r.port, f"/user/{USER}/file-1k.bin",
                               f"codehub-session={side['session']}")
            if status != 200 or body != payload:
                raise RuntimeError(f"{side['label']}: GET file-1k.bin through {r.name} gave "
                                   f"{status}, {len(body)} B")
    rss_start = {r.name: proc_status(r.proc.pid) for r in (a, b, s)}

    # 2. Proxied requests (replicas pinned to CPU 0).
    result["proxy"] = {}
    for c in cfg["connections"]:
        result["proxy"][f"1k_c{c}"] = measure_proxy(procs, sides, c, cfg["reps"],
                                                    cfg["duration"], cfg["warmup"])
    rss_after_proxy = {r.name: proc_status(r.proc.pid) for r in (a, b, s)}

    # 1. Logins (both CPUs for every replica: Argon2id runs on the thread pool).
    for r in (a, b, s):
        pin(r.proc.pid, "0,1")
    result["logins"] = measure_logins(sides, tokens, cfg["login_reps"], cfg["logins"],
                                      cfg["clients"])
    rss_after_logins = {r.name: proc_status(r.proc.pid) for r in (a, b, s)}
    result["memory"] = {"start": rss_start, "after_proxy": rss_after_proxy,
                        "after_logins": rss_after_logins}
    result["log_warnings"] = {r.name: warnings_of(r.log_path, tmp) for r in (a, b, s)}
    for r in (a, b, s):
        procs.stop(r.proc)
    for store, d in (("pg", pdir), ("sqlite", sdir)):
        upstreams.stop(server_json(d / "d")["pgid"])

    # 3. Failover.
    result["failover"] = {}
    for placement, setting in cfg["failover"]:
        reps_out = []
        for rep in range(1, cfg["failover_reps"] + 1):
            reps_out.append(failover_once(procs, binary, pg, tmp, upstreams, placement,
                                          setting, rep, payload))
        result["failover"][f"{placement}/{setting}"] = {
            "placement": placement, "setting": setting, **CLUSTER_SETTINGS[setting],
            "reps": reps_out, "summary": failover_summary(reps_out)}

    result["settings"] = {
        "reps": cfg["reps"], "duration_s": cfg["duration"], "warmup_s": cfg["warmup"],
        "connections": cfg["connections"], "login_reps": cfg["login_reps"],
        "logins_per_chunk": cfg["logins"], "login_clients": cfg["clients"],
        "failover_reps": cfg["failover_reps"],
        "failover": [f"{p}/{s_}" for p, s_ in cfg["failover"]],
        "poll_interval_s": POLL_S, "proxy_cpu": PROXY_CPU, "client_cpu": CLIENT_CPU,
        "postgres": f"{PG_SCRIPT.relative_to(ROOT)} start DIR/pg: {pg.url.rsplit(':', 1)[0]}"
                    ":PORT/DB (TLS, SCRAM; fsync off, synchronous_commit off: a test server)",
        "replica": shell_words(a.argv).replace(str(tmp), "DIR"),
        "replica_env": "CODEHUB_STORE_URL=postgres://codehub@127.0.0.1:PORT/bench "
                       "CODEHUB_STORE_PASSWORD_FILE=DIR/pg/password",
        "sqlite": shell_words(s.argv).replace(str(tmp), "DIR"),
        "codehub_yaml": p_config.read_text().replace(str(tmp), "DIR"),
        "upstream_launcher": p_launcher.read_text().replace(str(tmp), "DIR")
        .replace(str(p_up), "UPSTREAM_PORT"),
    }
    return result


def failover_summary(reps_out):
    out = {}
    for phase in ("owner_killed", "leader_killed"):
        keys = sorted({k for r in reps_out for k in r[phase]["times_s"]})
        out[phase] = {k: summarize([r[phase]["times_s"].get(k) for r in reps_out]) for k in keys}
        out[phase]["failed_polls"] = sum(r[phase]["polls"]["proxy"][1]
                                         + r[phase]["polls"]["api"][1] for r in reps_out)
        out[phase]["polls"] = sum(r[phase]["polls"]["proxy"][0] + r[phase]["polls"]["api"][0]
                                  for r in reps_out)
    return out


# --- report --------------------------------------------------------------------------------------

def fmt(sm, digits=0):
    if sm is None:
        return "–"
    f = f"{{:,.{digits}f}}"
    if sm.get("n", 1) == 1:
        return f.format(sm["median"])
    return f"{f.format(sm['median'])} ({f.format(sm['min'])}–{f.format(sm['max'])})"


def fmt_ratio(r):
    if r is None:
        return "–"
    paired = r.get("paired")
    per = f" (per repetition {fmt(paired, 3)})" if paired and paired["n"] > 1 else ""
    return f"**{r['median']}**{per}"


def render_markdown(r, source):
    m, s = r["machine"], r["settings"]
    lines = [f"Run `{r['command']}` on {m['date_utc']} ({source}). {m['cpu_model']}, "
             f"{m['nproc']} CPUs, Linux {m['kernel']}; PostgreSQL {m['postgres_server_version']}"
             f" (`{m['postgres']}`), {m['nginx']}, {m['wrk']}; load average at the start "
             f"{' '.join(m['loadavg_at_start'].split()[:3])}.", ""]
    lg = r["logins"]
    lines += ["#### Logins per second", "",
              f"Form logins (Argon2id), {lg['clients']} client threads in all (split evenly "
              f"for 2 replicas), {lg['per_chunk']} logins per side and repetition, "
              f"{s['login_reps']} repetitions, sides interleaved; every codehub on both CPUs. "
              "`pg1`: all clients on replica A (B runs beside it, idle); `pg2`: half on A, "
              "half on B; `sqlite`: one codehub on SQLite.", "",
              "| side | first-use logins/s, median (min–max) | returning logins/s | "
              "machine busy (CPUs) during first-use |", "|---|---|---|---|"]
    for label in SIDES:
        if label not in lg["first_use"]["summary"]:
            continue
        lines.append(f"| {SIDE_TITLES[label]} | "
                     f"{fmt(lg['first_use']['summary'][label]['rate'], 1)} | "
                     f"{fmt(lg['returning']['summary'][label]['rate'], 1)} | "
                     f"{fmt(summarize(lg['machine_busy_cpus'][label]), 2)} |")
    lines.append("")
    for key, title in (("first_use", "first-use"), ("returning", "returning")):
        rs = lg[key]["ratios"]
        lines.append(f"- {title}: 2 replicas / 1 replica {fmt_ratio(rs.get('pg2/pg1'))}; "
                     f"1 replica PostgreSQL / SQLite {fmt_ratio(rs.get('pg1/sqlite'))}")
    lines.append("")

    for key, res in r["proxy"].items():
        lines += [f"#### Proxied requests, 1 KiB, {res['connections']} connections", "",
                  f"{s['reps']} repetitions of {s['duration_s']} s per side after a "
                  f"{s['warmup_s']} s warm-up of each; codehubs pinned to CPU {s['proxy_cpu']}, "
                  f"wrk and the upstream nginx to CPU {s['client_cpu']}. For 2 replicas two wrk "
                  "run at once (one per replica, one thread and half the connections each): "
                  "req/s summed, latency the worse of the two; CPU and RSS are both replicas'.",
                  "",
                  "| side | req/s median (min–max) | p50 ms | p99 ms | proxy CPU | "
                  "req per proxy CPU-s | proxy RSS KiB | upstream CPU | wrk CPU | other CPU "
                  "| errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for label in SIDES:
            sm = res["summary"].get(label)
            if sm is None:
                continue
            lines.append(
                f"| {SIDE_TITLES[label]} | {fmt(sm['rps'])} | {fmt(sm['p50_ms'], 3)} | "
                f"{fmt(sm['p99_ms'], 2)} | {fmt(sm['proxy_cpu_util'], 2)} | "
                f"{fmt(sm['proxy_requests_per_cpu_s'])} | {fmt(sm['proxy_rss_kib'])} | "
                f"{fmt(sm['upstream_cpu_util'], 2)} | {fmt(sm['client_cpu_util'], 2)} | "
                f"{fmt(sm['other_cpu'], 2)} | {sm['errors']} |")
        lines.append("")
        for name, ratio in res["ratios"].items():
            a_, b_ = name.split("/")
            lines.append(f"- {SIDE_TITLES[a_]} / {SIDE_TITLES[b_]}: {fmt_ratio(ratio)} req/s; "
                         f"per proxy CPU-second {ratio.get('per_cpu_s', '–')}")
        lines += ["", "Commands:", ""]
        for label, cmds in res["commands"].items():
            lines.append(f"- {label}: " + " and, at the same time, ".join(f"`{c}`" for c in cmds))
        lines.append("")

    mem = r["memory"]
    lines += ["#### Memory", "", "VmRSS in KiB (/proc/PID/status) of each codehub: A and B "
              "are the PostgreSQL replicas, S the SQLite one.", "",
              "| codehub | at start | after the proxy runs | after the logins | VmHWM |",
              "|---|---|---|---|---|"]
    for name in mem["start"]:
        lines.append(f"| {name.upper()} | {mem['start'][name]['VmRSS_kib']:,} | "
                     f"{mem['after_proxy'][name]['VmRSS_kib']:,} | "
                     f"{mem['after_logins'][name]['VmRSS_kib']:,} | "
                     f"{mem['after_logins'][name]['VmHWM_kib']:,} |")
    lines.append("")

    if r["failover"]:
        lines += ["#### Failover", "",
                  f"Seconds from the kill -9, median (min–max) of {s['failover_reps']} "
                  "repetition(s) each. HTTP polls every "
                  f"{int(s['poll_interval_s'] * 1000)} ms on new connections (a 200 at the "
                  "first poll reads as that poll's own time); log events from the survivor's "
                  "log timestamps (ms). *Owner killed*: B leads, A owns the user's server, "
                  "kill A. *Leader killed*: C started beside B (by then leader and owner), "
                  "kill B. *other hosts*: each replica has a host name of its own (a UTS "
                  "namespace), so only the lease tells that it died, as with a lost node; "
                  "*same host*: the survivor sees the dead replica's PID gone on its own host. "
                  "On other hosts the kill comes once the survivor has reached the store for "
                  "a lease, plus a random part of a heartbeat.", "",
                  "| replicas on | heartbeat, lease | killed | survivor proxies the workspace "
                  "| survivor's API 200 | survivor logs `cluster.leader` | "
                  "`cluster.replica_dead` | `server.adopted` | failed polls after the first "
                  "200 | user's server survived |", "|---|---|---|---|---|---|---|---|---|---|"]
        for fo in r["failover"].values():
            where = fo["placement"].replace("-", " ")
            name = f"{fo['heartbeat_s']} s, {fo['lease_s']} s"
            alive = sum(all(x["upstream_alive"].values()) for x in fo["reps"])
            for phase, title in (("owner_killed", "owner A"),
                                 ("leader_killed", "leader + owner B")):
                sm = fo["summary"][phase]
                lines.append(f"| {where} | {name} | {title} | {fmt(sm.get('proxy'), 3)} | "
                             f"{fmt(sm.get('api'), 3)} | {fmt(sm.get('leader'), 3)} | "
                             f"{fmt(sm.get('replica_dead'), 3)} | "
                             f"{fmt(sm.get('adopted'), 3)} | "
                             f"{sm['failed_polls']} of {sm['polls']} | "
                             f"{alive} of {len(fo['reps'])} |")
        lines.append("")
    warns = set()
    for fo in r["failover"].values():
        for rep in fo["reps"]:
            for name, ws in rep["log_warnings"].items():
                warns.update(re.sub(r"=\S*[0-9a-f]{8}\S*", "=…", w) for w in ws)
    for name, ws in r.get("log_warnings", {}).items():
        warns.update(ws)
    if warns:
        lines += ["Warnings and errors the replicas logged (ids elided):", ""]
        lines += [f"- `{w}`" for w in sorted(warns)]
        lines.append("")

    lines += ["#### Setup", "",
              f"- PostgreSQL: {s['postgres']}",
              f"- each replica: `{s['replica_env']} {s['replica']}` (same database, data "
              "directory and configuration for all; logs to DIR/p/NAME.log). In the "
              "failover runs: a fresh database and data directory each time, `taskset -c "
              "0,1`, and on other hosts prefixed with `unshare --uts sh -c 'hostname \"$0\" "
              "&& exec \"$@\"' bench-NAME`",
              f"- SQLite: `{s['sqlite']}`",
              "- `codehub.yaml` (the failover runs append `cluster: {heartbeat: 1s, lease: "
              "3s}` for the short setting; the default setting has no `cluster:` section):",
              "", "```yaml", s["codehub_yaml"].rstrip(), "```",
              "", "- the user's server (`local.code_server`, started by codehub's spawner, "
              "from bench/proxy.py):", "", "```sh", s["upstream_launcher"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 repetitions of 3 s at 50 connections, 2 x 20 logins "
                    "per side, one failover each of other-hosts/default, other-hosts/short "
                    "and same-host/short")
    ap.add_argument("--bin", default=str(ROOT / "build" / "codehub"),
                    help="codehub binary (default: build/codehub; copied before the run)")
    ap.add_argument("--out", help="result file (default: bench/results/replicas.json, "
                    "bench/results/tmp/replicas-quick.json with --quick)")
    ap.add_argument("--reps", type=int, help="wrk repetitions per side (default 3, quick 2)")
    ap.add_argument("--duration", type=int, help="seconds per wrk run (default 5, quick 3)")
    ap.add_argument("--connections", help="comma-separated (default 50,200; quick 50)")
    ap.add_argument("--logins", type=int,
                    help="logins per side and repetition (default 80, quick 20)")
    ap.add_argument("--login-reps", type=int, help="login repetitions (default 3, quick 2)")
    ap.add_argument("--clients", type=int, default=4,
                    help="login client threads in all (default 4)")
    ap.add_argument("--failover-reps", type=int,
                    help="failovers per placement and setting (default 3, quick 1)")
    ap.add_argument("--failover", metavar="PLACEMENT/SETTING,...",
                    help="which failovers: placements other-hosts (each replica its own host "
                    "name: the lease decides) and same-host (the survivor sees the PID gone); "
                    "settings default (heartbeat 2 s, lease 10 s) and short (heartbeat 1 s, "
                    "lease 3 s). Default: all four; quick: other-hosts/default, "
                    "other-hosts/short, same-host/short; 'none' for no failover")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    ap.add_argument("--report", metavar="JSON", help="print the Markdown tables of a result")
    args = ap.parse_args()

    if args.report:
        print(render_markdown(json.loads(Path(args.report).read_text()), args.report))
        return 0
    cfg = {
        "reps": args.reps or (2 if args.quick else 3),
        "duration": args.duration or (3 if args.quick else 5),
        "warmup": 1,
        "connections": ([int(c) for c in args.connections.split(",")] if args.connections
                        else [50] if args.quick else [50, 200]),
        "logins": args.logins or (20 if args.quick else 80),
        "login_reps": args.login_reps or (2 if args.quick else 3),
        "clients": args.clients,
        "failover_reps": args.failover_reps or (1 if args.quick else 3),
    }
    if args.failover == "none":
        cfg["failover"] = []
    elif args.failover:
        cfg["failover"] = [tuple(x.strip().split("/", 1)) for x in args.failover.split(",")]
    elif args.quick:
        cfg["failover"] = [("other-hosts", "default"), ("other-hosts", "short"),
                           ("same-host", "short")]
    else:
        cfg["failover"] = [(p, s_) for p in PLACEMENTS for s_ in CLUSTER_SETTINGS]
    bad = [x for x in cfg["failover"]
           if len(x) != 2 or x[0] not in PLACEMENTS or x[1] not in CLUSTER_SETTINGS]
    if bad or cfg["clients"] < 2 or min(cfg["connections"]) < 2:
        ap.error("--failover takes PLACEMENT/SETTING pairs (other-hosts|same-host / "
                 "default|short); --clients and connections at least 2")
    out_path = Path(args.out or (ROOT / "bench" / "results" / "tmp" / "replicas-quick.json"
                                 if args.quick else ROOT / "bench" / "results" / "replicas.json"))
    for tool in ("wrk", "nginx", "taskset", "psql"):
        if shutil.which(tool) is None:
            print(f"replicas.py: {tool} not found (bench/deps.sh, make deps)", file=sys.stderr)
            return 1
    if not os.access(args.bin, os.X_OK):
        print(f"replicas.py: {args.bin} not found: build it first (make build)", file=sys.stderr)
        return 1
    if os.cpu_count() < 2:
        print("replicas.py: needs 2 CPUs", file=sys.stderr)
        return 1
    if any(p == "other-hosts" for p, _ in cfg["failover"]) and subprocess.run(
            ["unshare", "--uts", "true"], capture_output=True, check=False).returncode != 0:
        print("replicas.py: `unshare --uts` failed: the other-hosts failover needs root "
              "(or pass --failover same-host/default,same-host/short)", file=sys.stderr)
        return 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it

    # Short, and reachable by the postgres user (the server's directory is below it):
    # code-server-style socket paths below the data directories must stay under 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="rp", dir="/tmp"))
    os.chmod(tmp, 0o755)
    procs = Procs()
    upstreams = Upstreams(tmp)
    state = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a run started in the background by a script inherits it ignored.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t_start = time.monotonic()
    try:
        result = run(procs, tmp, args, upstreams, state, cfg)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (RuntimeError, OSError, http.client.HTTPException, subprocess.SubprocessError) as e:
        log(f"failed: {e}")
        return 1
    finally:
        # A second Ctrl-C during the cleanup would leave PostgreSQL running: finish it first.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        upstreams.stop_all()
        procs.stop_all()
        if "pg" in state:
            try:
                state["pg"].destroy()
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                log(f"destroying PostgreSQL in {tmp / 'pg'} failed: {e}")
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {out_path} ({result['elapsed_s']} s)")
    print(render_markdown(result, out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT)
                          else out_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
