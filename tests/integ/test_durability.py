"""Nothing committed is lost: SIGTERM and kill -9 keep users, sessions and tokens."""

import signal
import sqlite3
import threading

import pytest
import requests


def _user_names(hub):
    return {line.split()[0] for line in hub.cli("user", "list").stdout.splitlines()[1:] if line}


def test_sigterm_loses_no_committed_data(hub, admin):
    created = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            name = f"w{i}"
            try:
                r = requests.post(hub.url + f"/hub/api/users/{name}",
                                  headers={"Authorization": "Bearer " + admin["token"]},
                                  json={}, timeout=5)
            except requests.RequestException:
                break
            if r.status_code == 201:
                created.append(name)
            elif r.status_code != 503:
                break
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    while len(created) < 20:
        pass
    assert hub.stop(signal.SIGTERM) == 0
    stop.set()
    t.join()
    names = _user_names(hub)
    missing = [n for n in created if n not in names]
    assert missing == []


def test_kill9_keeps_users_sessions_and_tokens(hub, admin):
    s, _ = hub.login("tess", "password123")
    cookie = s.cookies.get("codehub-session")
    tok = hub.token("tess")
    hub.kill9()
    if hub.pg is None:
        db = hub.data_dir / "codehub.sqlite"
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    hub.start()
    r = requests.get(hub.url + "/hub/home", cookies={"codehub-session": cookie},
                     allow_redirects=False)
    assert r.status_code == 200
    r = requests.get(hub.url + "/hub/api/user", headers={"Authorization": "Bearer " + tok})
    assert r.status_code == 200 and r.json()["name"] == "tess"
    hub.login("tess", "password123")


def test_kill9_during_writes_leaves_consistent_store(hub, admin):
    stop = threading.Event()

    def writer(prefix):
        i = 0
        while not stop.is_set():
            try:
                requests.post(hub.url + f"/hub/api/users/{prefix}{i}",
                              headers={"Authorization": "Bearer " + admin["token"]},
                              json={}, timeout=2)
            except requests.RequestException:
                return
            i += 1

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("ka", "kb", "kc")]
    for t in threads:
        t.start()
    import time
    time.sleep(1.0)
    hub.kill9()
    stop.set()
    for t in threads:
        t.join()
    if hub.pg is None:
        db = hub.data_dir / "codehub.sqlite"
        with sqlite3.connect(db) as con:
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    hub.start()
    assert "root" in _user_names(hub)
    assert requests.get(hub.url + "/hub/api/users",
                        headers={"Authorization": "Bearer " + admin["token"]}).status_code == 200


@pytest.mark.sqlite_only
def test_data_files_are_private(hub):
    hub.login("uma", "password123")
    import os
    import stat
    mode = stat.S_IMODE(os.stat(hub.data_dir / "codehub.sqlite").st_mode)
    assert mode & 0o077 == 0, oct(mode)
    assert stat.S_IMODE(os.stat(hub.data_dir).st_mode) & 0o077 == 0
