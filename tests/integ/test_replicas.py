"""Several codehub replicas on one PostgreSQL database (issue 6): any replica logs in,
serves the API and proxies any user's traffic; one spawn per user whoever is asked; a
replica killed mid-spawn is taken over; PostgreSQL away for 20 s is survived.

Replicas on one machine share the data directory (the local spawner's sockets live there),
as they would share a volume. Everything is real: two codehub processes, code-server, a
PostgreSQL server from Debian's packages, and for the last test the kube-apiserver."""

import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import new_pg_server, pg_server
from kube_util import kube  # noqa: F401  (the session fixture)
from test_workspace import ws_handshake
from workspace_util import FAST, code_server_groups, start_server, vscode_page, wait_state

pytestmark = pytest.mark.postgres_only

# Short leases so that take-overs happen within seconds.
CLUSTER = "cluster:\n  heartbeat: 1s\n  lease: 3s\n  resync: 5s\n"


def shared_data_dir():
    return Path(tempfile.mkdtemp(prefix="chd-", dir="/tmp")) / "data"


@pytest.fixture
def replicas(make_hub):
    """replicas(n, config, pg) → n started hubs on one fresh database and one data dir."""
    def make(n=2, config=FAST + CLUSTER, pg=None, env=None):
        server = pg or pg_server()
        db = server.new_database()
        data = shared_data_dir()
        return [make_hub(config=config, env=env, name=f"replica{i}", data_dir=data,
                         database=db, pg=server) for i in range(n)]
    return make


def session_on(hub, cookie):
    """A requests session on `hub` carrying a session cookie obtained elsewhere."""
    s = hub.session()
    s.cookies.set("codehub-session", cookie)
    return s


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def replica_id(hub):
    """The replica id a hub logged at start (cluster.replica replica=ID)."""
    for line in hub.log().splitlines():
        if " cluster.replica " in line:
            return line.split("replica=", 1)[1].split()[0]
    raise AssertionError("no cluster.replica line:\n" + hub.log()[-2000:])


def server_row(hub, name):
    rows = hub.sql("SELECT s.state, s.owner, s.spawner_state, s.url FROM servers s JOIN users u "
                   f"ON u.id = s.user_id WHERE u.name = '{name}'")
    return rows[0] if rows else None


def test_log_in_and_spawn_on_a_use_and_stop_through_b(replicas):
    a, b = replicas()
    s, _ = a.login("ann", "password123")
    start_server(a, s, "ann")
    cookie = s.cookies.get("codehub-session")
    sb = session_on(b, cookie)
    # B knows the session (the store) and the route (the store, via its notification).
    r = vscode_page(b, sb, "ann")
    assert r.status_code == 200, r.text[:300]
    assert "code-server" in r.text.lower() or "vscode" in r.text.lower()
    sock, status, _ = ws_handshake(b, "/user/ann/", cookie=cookie, origin=b.url)
    sock.close()
    assert status == 101
    # The API of B sees the server A started.
    wait_state(b, sb, "ann", "running", 10)
    # Stop through B: A (the owner) stops it.
    r = b.api(sb, "DELETE", "/users/ann/server")
    assert r.status_code in (202, 204), r.text
    wait_state(b, sb, "ann", "stopped", 60)
    wait_state(a, s, "ann", "stopped", 60)
    wait_for(lambda: not code_server_groups(a.data_dir, "ann"), 30, "code-server to exit")
    assert " server.stop_requested " in a.log()
    # And B may start it again: it then owns it.
    start_server(b, sb, "ann")
    assert server_row(b, "ann")[1] == replica_id(b)
    assert vscode_page(a, s, "ann").status_code == 200


def test_both_replicas_asked_at_once_start_one_code_server(replicas):
    a, b = replicas()
    s, _ = a.login("bea", "password123")
    sb = session_on(b, s.cookies.get("codehub-session"))
    xa, xb = a.page_xsrf(s), b.page_xsrf(sb)
    barrier = threading.Barrier(2)
    results = {}

    def ask(hub, sess, xsrf, key):
        barrier.wait()
        results[key] = hub.api(sess, "POST", "/users/bea/server", headers={"X-XSRF-Token": xsrf})

    threads = [threading.Thread(target=ask, args=(a, s, xa, "a")),
               threading.Thread(target=ask, args=(b, sb, xb, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code in (201, 202) for r in results.values()), \
        {k: (r.status_code, r.text) for k, r in results.items()}
    wait_state(a, s, "bea", "running", 90)
    wait_state(b, sb, "bea", "running", 30)
    assert len(code_server_groups(a.data_dir, "bea")) == 1
    assert server_row(a, "bea")[1] in (replica_id(a), replica_id(b))
    # Exactly one replica started it; the other followed it through the store.
    starts = [h for h in (a, b) if " server.start_elsewhere " in h.log()]
    assert len(starts) <= 1
    for hub, sess in ((a, s), (b, sb)):
        assert vscode_page(hub, sess, "bea").status_code == 200


def slow_code_server(tmp_path, seconds):
    """A launcher that waits before it becomes the real code-server: a start that stays
    in "starting" long enough to kill its replica in the middle of it."""
    real = Path(__file__).resolve().parents[2] / ".deps" / "code-server" / "bin" / "code-server"
    launcher = tmp_path / "slow-code-server"
    launcher.write_text(f"#!/bin/sh\nsleep {seconds}\nexec {real} \"$@\"\n")
    launcher.chmod(0o755)
    return launcher


def test_replica_killed_mid_spawn_is_taken_over(replicas, tmp_path):
    slow = slow_code_server(tmp_path, 4)
    a, b = replicas(config=FAST.replace("local:\n", f"local:\n  code_server: {slow}\n") + CLUSTER)
    s, _ = a.login("cat", "password123")
    sb = session_on(b, s.cookies.get("codehub-session"))
    xsrf = a.page_xsrf(s)

    def ask():
        # The API answers once the start is done or after a while; A dies before that.
        try:
            a.api(s, "POST", "/users/cat/server", headers={"X-XSRF-Token": xsrf})
        except requests.RequestException:
            pass

    asker = threading.Thread(target=ask)
    asker.start()
    # Kill A as soon as the store knows the process (spawner state written), before ready.
    wait_for(lambda: (row := server_row(a, "cat")) and row[0] == "starting" and "pid" in row[2],
             60, "the spawn to be placed")
    a.kill9()
    asker.join()
    # B adopts it after the lease: re-attached (running) or cleaned up (stopped).
    wait_for(lambda: server_row(b, "cat")[0] in ("running", "stopped", "failed")
             and " server.adopted " in b.log(), 60, "B to take the server over")
    row = server_row(b, "cat")
    assert row[1] == replica_id(b), row
    if row[0] != "running":
        start_server(b, sb, "cat")
    wait_state(b, sb, "cat", "running", 90)
    r = vscode_page(b, sb, "cat")
    assert r.status_code == 200, r.text[:300]
    assert len(code_server_groups(b.data_dir, "cat")) == 1


def test_clean_shutdown_hands_servers_over_at_once(replicas):
    a, b = replicas(config=FAST + "cluster:\n  heartbeat: 1s\n  lease: 1h\n")
    s, _ = a.login("dot", "password123")
    sb = session_on(b, s.cookies.get("codehub-session"))
    start_server(a, s, "dot")
    assert server_row(a, "dot")[1] == replica_id(a)
    assert a.stop() == 0
    # A deleted its replica row on the way out: B adopts without waiting for the lease.
    wait_for(lambda: server_row(b, "dot")[1] == replica_id(b), 30, "B to adopt")
    wait_state(b, sb, "dot", "running", 30)
    assert vscode_page(b, sb, "dot").status_code == 200
    # B owns it now: B stops it itself.
    r = b.api(sb, "DELETE", "/users/dot/server")
    assert r.status_code in (202, 204)
    wait_state(b, sb, "dot", "stopped", 60)
    wait_for(lambda: not code_server_groups(b.data_dir, "dot"), 30, "code-server to exit")


def test_postgres_away_for_20s_is_survived(replicas):
    pg = new_pg_server()
    try:
        a, b = replicas(pg=pg)
        s, _ = a.login("eve", "password123")
        start_server(a, s, "eve")
        cookie = s.cookies.get("codehub-session")
        sb = session_on(b, cookie)
        token = a.token("eve")
        for hub, sess in ((a, s), (b, sb)):
            assert vscode_page(hub, sess, "eve").status_code == 200
        owner = server_row(a, "eve")[1]
        groups = code_server_groups(a.data_dir, "eve")
        assert len(groups) == 1

        pg.stop()
        t0 = time.time()
        saw_503 = False
        while time.time() - t0 < 20:
            for hub, sess in ((a, s), (b, sb)):
                # What needs the store: 503 with Retry-After, never a crash or a 500.
                r = sess.get(hub.url + "/hub/api/users/eve", timeout=30)
                assert r.status_code == 503, (r.status_code, r.text[:200])
                assert r.headers.get("Retry-After")
                saw_503 = True
                # Known routes keep working.
                r = sess.get(hub.url + "/user/eve/", headers={"Accept": "text/html"},
                             timeout=30)
                assert r.status_code == 200, (r.status_code, r.text[:200])
            time.sleep(1)
        assert saw_503
        r = requests.post(a.url + "/hub/login", data={"username": "x", "password": "y"},
                          allow_redirects=False, timeout=30)
        assert r.status_code in (403, 503)
        pg.start()

        # Everything resumes without a restart: same processes, sessions, tokens, server.
        for hub, sess in ((a, s), (b, sb)):
            wait_for(lambda: sess.get(hub.url + "/hub/api/users/eve", timeout=30)
                     .status_code == 200, 60, "the API to come back")
            assert hub.proc.poll() is None
        r = requests.get(b.url + "/hub/api/user", headers={"Authorization": "Bearer " + token},
                         timeout=30)
        assert r.status_code == 200 and r.json()["name"] == "eve"
        wait_state(b, sb, "eve", "running", 10)
        # Nobody was presumed dead for the outage: same owner, same single code-server.
        time.sleep(5)
        assert server_row(a, "eve")[1] == owner
        assert code_server_groups(a.data_dir, "eve") == groups
        assert " server.adopted " not in a.log() + b.log()
        a.login("eve", "password123")
        b.login("fay", "password456")
        assert vscode_page(b, sb, "eve").status_code == 200
    finally:
        pg.destroy()


def test_kubernetes_two_replicas_one_pod_per_user(replicas, kube):  # noqa: F811
    from test_kube_spawner import cleanup, hub_config, pod_of
    a, b = replicas(config=hub_config(kube) + CLUSTER)
    s, _ = a.login("krep", "krep-pass1")
    sb = session_on(b, s.cookies.get("codehub-session"))
    try:
        xa, xb = a.page_xsrf(s), b.page_xsrf(sb)
        barrier = threading.Barrier(2)
        codes = []

        def ask(hub, sess, xsrf):
            barrier.wait()
            codes.append(hub.api(sess, "POST", "/users/krep/server",
                                 headers={"X-XSRF-Token": xsrf}).status_code)

        threads = [threading.Thread(target=ask, args=(a, s, xa)),
                   threading.Thread(target=ask, args=(b, sb, xb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(c in (201, 202) for c in codes), codes
        wait_state(a, s, "krep", "running", 120)
        wait_state(b, sb, "krep", "running", 30)
        pods = kube.admin.get(kube.path("pods"),
                              query={"labelSelector": "codehub.io/user=krep"})["items"]
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        assert pod_of(kube, "krep") is not None
        for hub, sess in ((a, s), (b, sb)):
            assert vscode_page(hub, sess, "krep").status_code == 200
        r = b.api(sb, "DELETE", "/users/krep/server")
        assert r.status_code in (202, 204)
        wait_state(a, s, "krep", "stopped", 90)
        kube.wait_gone("pods", "codehub-krep", 60)
    finally:
        cleanup(kube, "krep")
