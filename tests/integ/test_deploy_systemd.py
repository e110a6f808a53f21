"""deploy/systemd/codehub.service is a valid unit whose command line the binary accepts."""

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import BIN, free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "codehub.service"


def exec_start():
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line[len("ExecStart="):])
    raise AssertionError("no ExecStart= in the unit")


def test_unit_verifies_with_systemd(tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd, installed by make deps)"
    # The unit names the installed path; verify it against the binary under test.
    text = UNIT.read_text().replace("/usr/local/bin/codehub", str(Path(BIN).resolve()))
    unit = tmp_path / "codehub.service"
    unit.write_text(text)
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    # Warnings about this unit (not about the host's other units) count as failures too.
    complaints = [ln for ln in (res.stdout + res.stderr).splitlines() if "codehub.service" in ln]
    assert complaints == [], complaints


def test_unit_command_line_starts_codehub(tmp_path):
    argv = exec_start()
    assert argv[0] == "/usr/local/bin/codehub" and argv[1] == "serve"
    config = tmp_path / "codehub.yaml"
    config.write_text(f"server:\n  bind: 127.0.0.1:{free_port()}\n")
    # Short: code-server sockets live below the data dir (107-byte limit).
    short = Path(tempfile.mkdtemp(prefix="chd-", dir="/tmp"))
    data = short / "data"
    args = []
    for a in argv[2:]:
        args.append({"/etc/codehub/codehub.yaml": str(config),
                     "/var/lib/codehub": str(data)}.get(a, a))
    # check-config reads the same file the service would, and the flags parse.
    res = subprocess.run([BIN, "check-config", str(config)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    proc = subprocess.Popen([BIN, "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        for line in proc.stdout:
            if "hub.listening" in line:
                break
        assert "hub.listening" in line, line
        assert f"data_dir={data}" in line
    finally:
        proc.terminate()
        rest = proc.stdout.read()
        code = proc.wait(timeout=30)
        shutil.rmtree(short, ignore_errors=True)
    assert code == 0, line + rest
