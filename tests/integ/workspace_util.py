"""Helpers for tests that start real code-server workspaces through the hub."""

import http.server
import json
import os
import re
import threading
import time


# Fast starts: no venv (python3 -m venv takes seconds), culling off unless a test wants it.
FAST = "local:\n  init_venv: false\ncull:\n  timeout: 0\n"


def start_server(hub, s, name, timeout=90):
    """Starts NAME's server through the API and waits until it is ready."""
    r = hub.api(s, "POST", f"/users/{name}/server")
    assert r.status_code in (201, 202), (r.status_code, r.text)
    wait_state(hub, s, name, "running", timeout)


def user_model(hub, s, name):
    r = hub.api(s, "GET", f"/users/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def server_state(model):
    if model.get("pending") == "spawn":
        return "starting"
    if model.get("pending") == "stop":
        return "stopping"
    return "running" if model.get("server") else "stopped"


def wait_state(hub, s, name, state, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = server_state(user_model(hub, s, name))
        if last == state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}'s server is {last}, not {state}:\n{hub.log()[-3000:]}")


def progress_events(hub, s, name, timeout=90):
    """Reads the progress stream to its end; returns the list of events."""
    r = s.get(hub.url + f"/hub/api/users/{name}/server/progress", stream=True, timeout=timeout)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for line in r.iter_lines(decode_unicode=True):
        if line and line.startswith("data: "):
            ev = json.loads(line[6:])
            events.append(ev)
            if ev.get("ready") or ev.get("failed"):
                break
    r.close()
    return events


def spawner_state(hub, name):
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name)
    rows = hub.sql("SELECT s.state, s.spawner_state FROM servers s JOIN users u "
                   f"ON u.id = s.user_id WHERE u.name = '{name}'")
    row = rows[0] if rows else None
    return (row[0], json.loads(row[1] or "{}")) if row else (None, {})


def vscode_page(hub, s, name):
    """GETs NAME's workspace root through the proxy, following code-server's redirect."""
    r = s.get(hub.url + f"/user/{name}/", headers={"Accept": "text/html"}, timeout=30)
    return r


def code_server_groups(data_dir, name):
    """Process groups of NAME's code-servers: processes (not zombies) working in NAME's
    home whose command line names a code-server (the launcher scripts here are all called
    *-code-server), one group per server. Other processes there (a home's venv step cut
    short by a kill) are not servers."""
    groups = set()
    home = str(data_dir / "users" / name)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if b"code-server" not in cmdline:
            continue
        if cwd == home or cwd.startswith(home + "/"):
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                groups.add(int(fields[2]))
    return groups


class HeadEcho:
    """A one-request HTTP server on 127.0.0.1 that keeps the request head it gets and answers
    "ok": a workspace's code-server forwards /proxy/PORT/... to it, so a test sees exactly
    what reached the inside of a workspace. `headers` has lowercase names."""

    def __init__(self):
        echo = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                echo.headers = {k.lower(): v for k, v in self.headers.items()}
                echo.path = self.path
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.headers = None
        self.path = None
        self.srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.handle_request)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(10)
        self.srv.server_close()
