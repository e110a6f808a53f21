"""The workspace image's entrypoint (deploy/images/workspace/entrypoint), run as the image
runs it — a POSIX sh script with a persistent HOME — against the real code-server of
.deps. It must initialise the home once, never overwrite the user's files, change nothing
in a complete home, and exec code-server, which then answers /healthz.

code-server listens on 0.0.0.0:PORT (the config the entrypoint writes); the tests only
connect to 127.0.0.1."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "images" / "workspace" / "entrypoint"
CODE_SERVER = ROOT / ".deps" / "code-server" / "bin" / "code-server"
# The image's PATH: python3 is the system's, as in the image.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_DEADLINE_S = 60
STOP_DEADLINE_S = 20

# What code-server writes below its user-data-dir at every start (logs, sockets, ids,
# heartbeat, state); of that directory the entrypoint writes only User/settings.json.
CS_DATA = ".local/share/code-server"
CS_SETTINGS = CS_DATA + "/User/settings.json"


def entrypoint_version():
    m = re.search(r"^ENTRYPOINT_VERSION=(\S+)$", ENTRYPOINT.read_text(), re.M)
    assert m, "no ENTRYPOINT_VERSION in the entrypoint"
    return m.group(1)


def free_port():
    # Checked on every address, since code-server binds 0.0.0.0.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def group_members(pgid):
    """PIDs of the live (not zombie) processes in process group `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def killpg_quiet(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


class Run:
    """One run of the entrypoint in its own session; stdout and stderr go to files."""

    def __init__(self, box, env, args):
        self.box = box
        n = len(box.runs)
        self.out_path = box.dir / f"run{n}.out"
        self.err_path = box.dir / f"run{n}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([str(ENTRYPOINT), *args], env=env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=str(box.dir), start_new_session=True)

    def output(self):
        return (self.out_path.read_text(errors="replace")
                + self.err_path.read_text(errors="replace"))

    def entrypoint_lines(self):
        return [x for x in self.err_path.read_text(errors="replace").splitlines()
                if x.startswith("entrypoint:")]

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def wait_healthy(self, port):
        """Polls GET /healthz on 127.0.0.1:port until a 200 with code-server's JSON."""
        deadline = time.monotonic() + READY_DEADLINE_S
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the entrypoint exited with {self.proc.returncode} before "
                            f"code-server answered:\n{self.output()}")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    doc = json.loads(body)
                    assert "status" in doc, body
                    return doc
                last = f"HTTP {resp.status}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            finally:
                conn.close()
            time.sleep(0.2)
        pytest.fail(f"code-server did not answer /healthz within {READY_DEADLINE_S} s "
                    f"(last: {last}):\n{self.output()}")

    def stop(self):
        """SIGTERM to the whole group, SIGKILL when it lingers; waits for every member."""
        pgid = self.proc.pid
        if self.proc.poll() is None:
            killpg_quiet(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                killpg_quiet(pgid, signal.SIGKILL)
                self.proc.wait(timeout=STOP_DEADLINE_S)
        deadline = time.monotonic() + STOP_DEADLINE_S
        while group_members(pgid):
            if time.monotonic() > deadline:
                killpg_quiet(pgid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_DEADLINE_S
            time.sleep(0.05)


class Box:
    """A short directory under /tmp holding HOME, TMPDIR and the runs' output."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ep-", dir="/tmp"))
        self.home = self.dir / "home"
        self.home.mkdir(mode=0o755)
        self.tmp = self.dir / "tmp"
        self.tmp.mkdir()
        self.runs = []

    def env(self, port=None, venv=False, **extra):
        env = {
            "PATH": PATH,
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "CODE_SERVER": str(CODE_SERVER),
            "WORKSPACE_INIT_VENV": "1" if venv else "0",
        }
        if port is not None:
            env["CODE_SERVER_PORT"] = str(port)
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def start(self, env, *args):
        run = Run(self, env, args)
        self.runs.append(run)
        return run

    def fake_code_server(self):
        """A stand-in code-server that records its PID and arguments (one per line)."""
        path = self.dir / "fake-code-server"
        path.write_text('#!/bin/sh\necho "$$" >"$0.pid"\n'
                        'for a in "$@"; do printf "%s\\n" "$a"; done >"$0.args"\n')
        path.chmod(0o755)
        return path

    def cleanup(self):
        for run in self.runs:
            run.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def box():
    b = Box()
    try:
        yield b
    finally:
        b.cleanup()


def snapshot(home):
    """Every path below `home` with its type, mode, size, mtime, and small files' content
    or links' target. Of code-server's user-data-dir only what the entrypoint writes is
    looked at; its directories only by mode, since code-server adds to them."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(home):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, home)
            if rel.startswith(CS_DATA + "/") and rel not in (CS_DATA + "/User", CS_SETTINGS):
                continue
            st = os.lstat(full)
            if rel in (CS_DATA, CS_DATA + "/User"):
                snap[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
                continue
            entry = [st.st_mode, st.st_size, st.st_mtime_ns]
            if stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(full))
            elif stat.S_ISREG(st.st_mode) and st.st_size <= 65536:
                entry.append(Path(full).read_bytes())
            snap[rel] = tuple(entry)
    st = os.lstat(home)
    snap["."] = (st.st_mode, st.st_mtime_ns)
    return snap


def assert_same(before, after):
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, "the home changed: " + ", ".join(
        f"{k}: {before.get(k, 'missing')!r:.120} -> {after.get(k, 'missing')!r:.120}"
        for k in changed[:10])


def config_values(path):
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            values[key.strip()] = value.strip()
    return values


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_entrypoint_script_is_posix_sh():
    assert os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    res = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-s", "sh", str(ENTRYPOINT)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_first_start_initialises_home_then_restart_changes_nothing(box):
    port = free_port()
    env = box.env(port, venv=True)
    first = box.start(env)
    doc = first.wait_healthy(port)
    assert doc["status"] in ("alive", "expired"), doc
    first.stop()

    home = box.home
    created = [
        "~/.config/code-server/config.yaml",
        "~/projects",
        "~/.local/share/code-server/User/settings.json",
        "~/.ssh/id_ed25519",
        "~/.venv",
        "~/.config/fish/config.fish",
        "~/.codehub-initialised",
    ]
    assert first.entrypoint_lines() == [f"entrypoint: created {x}" for x in created], \
        first.output()

    cfg = home / ".config/code-server/config.yaml"
    assert config_values(cfg) == {"bind-addr": f"0.0.0.0:{port}", "auth": "none",
                                  "cert": "false"}
    settings = json.loads((home / CS_SETTINGS).read_text())
    assert settings["telemetry.telemetryLevel"] == "off"
    assert settings["update.mode"] == "none"
    assert settings["extensions.autoCheckUpdates"] is False
    assert (home / "projects").is_dir()

    ssh = home / ".ssh"
    assert mode(ssh) == 0o700
    assert mode(ssh / "id_ed25519") == 0o600
    assert sorted(os.listdir(ssh)) == ["id_ed25519", "id_ed25519.pub"]
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(ssh / "id_ed25519")],
                             capture_output=True, text=True, timeout=30, check=True)
    pub = (ssh / "id_ed25519.pub").read_text().split()
    assert pub[0] == "ssh-ed25519"
    assert derived.stdout.split()[:2] == pub[:2]

    venv_python = home / ".venv/bin/python"
    res = subprocess.run([str(venv_python), "-c", "import sys; print(sys.prefix)"],
                         capture_output=True, text=True, timeout=30, check=True)
    assert res.stdout.strip() == str(home / ".venv")
    assert "~/.venv/bin/activate.fish" in (home / ".config/fish/config.fish").read_text()
    assert (home / ".codehub-initialised").read_text() == entrypoint_version() + "\n"
    # Nothing of the entrypoint's scratch files is left.
    leftovers = [p for p in home.rglob("*.entrypoint-*")] + [
        p for p in home.rglob(".entrypoint-*") if ".venv" not in p.parts]
    assert leftovers == []
    assert not (home / ".codehub-venv-building").exists()

    before = snapshot(home)
    second = box.start(env)
    second.wait_healthy(port)
    second.stop()
    assert second.entrypoint_lines() == [], second.output()
    assert_same(before, snapshot(home))


def test_user_files_are_never_overwritten(box):
    home = box.home
    own_port = free_port()
    cfg = home / ".config/code-server/config.yaml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"# mine\nbind-addr: 127.0.0.1:{own_port}\nauth: none\ncert: false\n")
    settings = home / CS_SETTINGS
    settings.parent.mkdir(parents=True)
    settings.write_text('{"editor.fontSize": 18}\n')
    (home / ".ssh").mkdir(mode=0o755)
    key = home / ".ssh/id_ed25519"
    key.write_text("my own key\n")
    fish = home / ".config/fish/config.fish"
    fish.parent.mkdir(parents=True)
    fish.write_text("set -g fish_greeting\n")
    cfg.chmod(0o600)
    kept = [cfg, settings, key, fish]
    for p in kept:
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = {p: (p.read_bytes(), os.lstat(p).st_mode, os.lstat(p).st_mtime_ns) for p in kept}

    # CODE_SERVER_PORT names another port: only the user's config decides.
    other_port = free_port()
    run = box.start(box.env(other_port, venv=False))
    run.wait_healthy(own_port)
    run.stop()

    after = {p: (p.read_bytes(), os.lstat(p).st_mode, os.lstat(p).st_mtime_ns) for p in kept}
    assert after == before
    assert mode(home / ".ssh") == 0o755
    assert not (home / ".ssh/id_ed25519.pub").exists()
    assert not (home / ".venv").exists()
    assert run.entrypoint_lines() == ["entrypoint: created ~/projects",
                                      "entrypoint: created ~/.codehub-initialised"], \
        run.output()


def test_arguments_are_passed_on_and_code_server_replaces_the_entrypoint(box):
    fake = box.fake_code_server()
    run = box.start(box.env(CODE_SERVER=str(fake)), "--log", "debug", "an arg with spaces")
    assert run.wait_exit() == 0, run.output()
    home = box.home
    assert Path(f"{fake}.args").read_text().splitlines() == [
        "--config", str(home / ".config/code-server/config.yaml"),
        "--disable-telemetry", "--disable-update-check",
        "--log", "debug", "an arg with spaces",
        str(home / "projects"),
    ]
    # exec: code-server has the entrypoint's PID, so tini's signals reach it directly.
    assert int(Path(f"{fake}.pid").read_text()) == run.proc.pid
    assert config_values(home / ".config/code-server/config.yaml")["bind-addr"] == \
        "0.0.0.0:8080"


def test_half_built_venv_is_rebuilt(box):
    home = box.home
    (home / ".venv").mkdir()
    (home / ".venv/junk").write_text("interrupted\n")
    (home / ".codehub-venv-building").write_text("")
    run = box.start(box.env(venv=True, CODE_SERVER=str(box.fake_code_server())))
    assert run.wait_exit(timeout=120) == 0, run.output()
    assert "entrypoint: created ~/.venv" in run.entrypoint_lines()
    assert not (home / ".venv/junk").exists()
    assert (home / ".venv/bin/python").exists()
    assert not (home / ".codehub-venv-building").exists()


@pytest.mark.parametrize("case", ["unset", "empty", "relative", "under-a-file",
                                  "no-code-server"])
def test_bad_environment_fails_clearly(box, case):
    fake = box.fake_code_server()
    env = box.env(CODE_SERVER=str(fake))
    if case == "unset":
        del env["HOME"]
        expect = "HOME is not set"
    elif case == "empty":
        env["HOME"] = ""
        expect = "HOME is not set"
    elif case == "relative":
        env["HOME"] = "home"
        expect = "HOME must be an absolute path"
    elif case == "under-a-file":
        # Root may write anywhere, so not writable means below a regular file.
        (box.dir / "file").write_text("")
        env["HOME"] = str(box.dir / "file/home")
        expect = f"HOME ({box.dir}/file/home) does not exist and cannot be created"
    else:
        env["CODE_SERVER"] = str(box.dir / "missing/code-server")
        expect = "code-server not found"
    run = box.start(env)
    assert run.wait_exit() == 1, run.output()
    lines = run.err_path.read_text().splitlines()
    assert lines and lines[-1].startswith("entrypoint: error: ") and expect in lines[-1], \
        run.output()
    assert not Path(f"{fake}.args").exists()
