"""Fixtures for black-box tests: the real codehub binary on a free port with a
temporary data directory, driven over real sockets.

Every test that starts a hub runs once per store backend named in CODEHUB_TEST_STORES
(default "sqlite postgres"; its id ends in [sqlite] or [postgres]). On PostgreSQL, one real
server serves the session (scripts/pg-test-server.sh, Debian's postgresql) and every hub
gets a fresh database (CODEHUB_STORE_URL + CODEHUB_STORE_PASSWORD_FILE in its
environment). Tests that inspect the SQLite file itself are marked `sqlite_only`."""

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
STORES = os.environ.get("CODEHUB_TEST_STORES", "sqlite postgres").split()
# The backend of the test running now (set by the store_backend fixture).
STORE = "sqlite"
PG_SCRIPT = ROOT / "scripts" / "pg-test-server.sh"


class PgServer:
    """A real PostgreSQL server in DIR (scripts/pg-test-server.sh): start, stop, kill, and
    fresh databases owned by the `codehub` role."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.url = None

    def _run(self, *args):
        res = subprocess.run([str(PG_SCRIPT), *args], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"pg-test-server.sh {args[0]} failed:\n{res.stderr}")
        return res.stdout.strip()

    def start(self):
        self.url = self._run("start", str(self.dir))
        return self

    def stop(self):
        self._run("stop", str(self.dir))

    def kill(self):
        self._run("kill", str(self.dir))

    def destroy(self):
        self._run("destroy", str(self.dir))
        if self.dir.parent.name.startswith("codehub-pytest-pg-"):
            shutil.rmtree(self.dir.parent, ignore_errors=True)

    @property
    def password_file(self):
        return str(self.dir / "password")

    @property
    def ca_file(self):
        return str(self.dir / "ca.crt")

    def db_url(self, db):
        return self.url.rsplit("/", 1)[0] + "/" + db

    def psql(self, sql, db="codehub"):
        """Runs SQL as the codehub role; returns rows as tuples of strings (NULL → None)."""
        env = dict(os.environ, PGPASSWORD=Path(self.password_file).read_text().strip(),
                   PGCONNECT_TIMEOUT="10")
        res = subprocess.run(["psql", self.db_url(db), "-X", "-q", "-A", "-t", "-F", "\x1f",
                              "-P", "null=\x1e", "-v", "ON_ERROR_STOP=1", "-c", sql],
                             capture_output=True, text=True, env=env, timeout=60)
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr}")
        rows = []
        for line in res.stdout.splitlines():
            if line == "":
                continue
            rows.append(tuple(None if v == "\x1e" else v for v in line.split("\x1f")))
        return rows

    def new_database(self):
        name = "h_" + os.urandom(6).hex()
        self.psql(f"CREATE DATABASE {name} OWNER codehub")
        return name


_pg_server = None


def new_pg_server():
    """A started PostgreSQL server of its own, in /tmp (the server runs as the postgres
    user, which must reach its directory; pytest's own temporary dirs are private).
    The caller destroys it."""
    d = Path(tempfile.mkdtemp(prefix="codehub-pytest-pg-", dir="/tmp"))
    os.chmod(d, 0o755)
    return PgServer(d / "pg").start()


def pg_server():
    """The session's PostgreSQL server, started on first use (torn down at exit)."""
    global _pg_server
    if _pg_server is None:
        _pg_server = new_pg_server()
    return _pg_server


def pytest_sessionfinish(session, exitstatus):
    if _pg_server is not None:
        _pg_server.destroy()


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: inspects the SQLite file itself")
    config.addinivalue_line("markers", "postgres_only: needs a store shared by replicas")


def pytest_generate_tests(metafunc):
    if "make_hub" not in metafunc.fixturenames:
        return
    stores = STORES
    if metafunc.definition.get_closest_marker("sqlite_only"):
        stores = [x for x in STORES if x == "sqlite"]
    if metafunc.definition.get_closest_marker("postgres_only"):
        stores = [x for x in STORES if x == "postgres"]
    if not stores:
        stores = [pytest.param("none", marks=pytest.mark.skip(
            reason="needs a store backend that CODEHUB_TEST_STORES leaves out"))]
    metafunc.parametrize("store_backend", stores, indirect=True)


@pytest.fixture
def store_backend(request):
    """The store the hubs of this test use: "sqlite" or "postgres"."""
    global STORE
    STORE = request.param
    yield request.param
    STORE = "sqlite"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Hub:
    """One codehub process. `cli()` runs offline commands against the same store."""

    def __init__(self, tmp: Path, config: str = "", env=None, port=None, data_dir=None,
                 database=None, pg=None):
        self.tmp = tmp
        # Short on purpose: code-server's Unix sockets live below it, and a socket path
        # may not exceed 107 bytes (pytest's own temporary paths are long). Replicas on one
        # machine share theirs (data_dir given).
        self.data_dir = Path(data_dir) if data_dir is not None else \
            Path(tempfile.mkdtemp(prefix="chd-", dir="/tmp")) / "data"
        self.config_path = tmp / "codehub.yaml"
        self.config_path.write_text(config)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env.pop("CODEHUB_CONFIG", None)
        self.pg = None
        self.database = None
        if STORE == "postgres" or database is not None:
            self.pg = pg or pg_server()
            self.database = database or self.pg.new_database()
            self.env["CODEHUB_STORE_URL"] = self.pg.db_url(self.database)
            self.env["CODEHUB_STORE_PASSWORD_FILE"] = self.pg.password_file
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

    def sql(self, query):
        """Runs a read-only query on this hub's store, whichever backend; returns rows as
        tuples (PostgreSQL gives strings, SQLite its own types: compare with str() when it
        matters)."""
        if self.pg is not None:
            return self.pg.psql(query, db=self.database)
        import sqlite3
        with sqlite3.connect(f"file:{self.data_dir / 'codehub.sqlite'}?mode=ro", uri=True) as con:
            return con.execute(query).fetchall()

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
def make_hub(tmp_path, store_backend):
    hubs = []

    def make(config="", env=None, start=True, name="hub", data_dir=None, database=None,
             pg=None):
        d = tmp_path / f"{name}{len(hubs)}"
        d.mkdir()
        h = Hub(d, config=config, env=env, data_dir=data_dir, database=database, pg=pg)
        hubs.append(h)
        if start:
            h.start()
        return h

    yield make
    for h in hubs:
        code = h.stop()
        stop_workspaces(h.data_dir)
        if h.data_dir.parent.name.startswith("chd-"):
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
