"""Fixtures for black-box tests: the real codehub binary on a free port with a
temporary data directory, driven over real sockets."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CODEHUB_BIN", str(ROOT / "build" / "codehub"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """One codehub process. `cli()` runs offline commands against the same store."""

    def __init__(self, tmp: Path, config: str = "", env=None, port=None):
        self.tmp = tmp
        # Short on purpose: code-server's Unix sockets live below it, and a socket path
        # may not exceed 107 bytes (pytest's own temporary paths are long).
        self.data_dir = Path(tempfile.mkdtemp(prefix="chd-", dir="/tmp")) / "data"
        self.config_path = tmp / "codehub.yaml"
        self.config_path.write_text(config)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.pop("CODEHUB_CONFIG", None)
        self.env.update(env or {})
        self.log_path = tmp / "codehub.log"
        self.proc = None

    def args(self):
        return ["--config", str(self.config_path), "--data-dir", str(self.data_dir)]

    def start(self, wait=True):
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [BIN, "serve", *self.args(), "--bind", f"127.0.0.1:{self.port}"],
            stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env,
            stdin=subprocess.DEVNULL)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"codehub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/hub/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("codehub did not become healthy:\n" + self.log())

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stops the process and returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.log_file.close()

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cli(self, *args, input=None, check=True):
        """Runs `codehub ARGS` against this hub's config and data dir."""
        cmd = [BIN, *args]
        if args and args[0] in ("user", "token"):
            cmd += self.args()
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env,
                             timeout=60)
        if check and res.returncode != 0:
            raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    # --- browser-like helpers -------------------------------------------------------

    def session(self):
        s = requests.Session()
        s.hub = self
        return s

    def login(self, name, password, expect_ok=True, next_url=None):
        """Logs in through the form like a browser; returns (session, response)."""
        s = self.session()
        r = s.get(self.url + "/hub/login", timeout=10)
        xsrf = form_xsrf(r.text)
        data = {"username": name, "password": password, "_xsrf": xsrf}
        if next_url is not None:
            data["next"] = next_url
        r = s.post(self.url + "/hub/login", data=data, allow_redirects=False, timeout=30)
        if expect_ok:
            assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        return s, r

    def page_xsrf(self, s, path="/hub/home"):
        """The CSRF token a logged-in page carries (meta tag)."""
        r = s.get(self.url + path, timeout=10)
        m = re.search(r'name="codehub-xsrf" content="([^"]*)"', r.text)
        assert m, r.text[:500]
        return m.group(1)

    def api(self, s_or_token, method, path, **kw):
        """Calls /hub/api PATH with a token (str) or a logged-in session (adds X-XSRF-Token)."""
        headers = kw.pop("headers", {})
        if isinstance(s_or_token, str):
            headers["Authorization"] = f"Bearer {s_or_token}"
            return requests.request(method, self.url + "/hub/api" + path, headers=headers,
                                    timeout=30, **kw)
        if method not in ("GET", "HEAD"):
            headers.setdefault("X-XSRF-Token", self.page_xsrf(s_or_token))
        return s_or_token.request(method, self.url + "/hub/api" + path, headers=headers,
                                  timeout=30, **kw)

    def token(self, name, *extra):
        """Creates an API token offline and returns it."""
        return self.cli("token", "create", name, *extra).stdout.strip()


def form_xsrf(html):
    m = re.search(r'name="_xsrf" value="([^"]*)"', html)
    assert m, "no _xsrf field in page:\n" + html[:500]
    return m.group(1)


def stop_workspaces(data_dir):
    """Kills code-server processes a test left running (they outlive the hub on purpose),
    found by their working directory below the test's data dir."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(data_dir) + "/"):
            try:
                os.killpg(int(pid), signal.SIGKILL)
            except OSError:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture
def make_hub(tmp_path):
    hubs = []

    def make(config="", env=None, start=True, name="hub"):
        d = tmp_path / f"{name}{len(hubs)}"
        d.mkdir()
        h = Hub(d, config=config, env=env)
        hubs.append(h)
        if start:
            h.start()
        return h

    yield make
    for h in hubs:
        code = h.stop()
        stop_workspaces(h.data_dir)
        shutil.rmtree(h.data_dir.parent, ignore_errors=True)
        if os.environ.get("CODEHUB_SANITIZED") and code not in (None, 0, -9):
            raise AssertionError(f"sanitized codehub exited {code}:\n{h.log()[-4000:]}")


@pytest.fixture
def hub(make_hub):
    return make_hub()


@pytest.fixture
def admin(hub):
    """An admin account 'root' with a logged-in session and an admin token."""
    hub.cli("user", "add", "root", "--admin", "--password-stdin", input="rootpass123\n")
    s, _ = hub.login("root", "rootpass123")
    tok = hub.token("root", "--scope", "admin")
    return {"session": s, "token": tok, "name": "root", "password": "rootpass123"}
