"""The soak of the hardening issue, in the suite: bench/soak.py against the binary under test.

With a release build: the full 10 minutes of mixed load (HTTP, WebSockets, held tunnels,
logins and logouts, token API calls, starts and stops into real code-servers), judged as
bench/soak.py judges it: zero errors and the hub's RSS flat within 5 % after the warm-up.
With a sanitizer build (CODEHUB_SANITIZED): 2 minutes of the same load, judged on errors
and on the sanitizers' reports only, since the RSS there is mostly ASan's quarantine and
shadow memory. In both, the hub must exit cleanly when stopped. CODEHUB_SOAK_SECONDS sets
another length (at least 20) for a quicker loop.

The soak's result file is kept next to the test's temporary files; its verdict, the error
samples and the RSS figures are printed on failure. No timing is judged.
"""

import json
import os
import subprocess
import sys

from conftest import BIN, ROOT

SANITIZED = bool(os.environ.get("CODEHUB_SANITIZED"))
SECONDS = int(os.environ.get("CODEHUB_SOAK_SECONDS") or (120 if SANITIZED else 600))


def test_soak_mixed_load_zero_errors_flat_rss(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(ROOT / "bench" / "soak.py"), "--duration", str(SECONDS),
           "--bin", BIN, "--out", str(out)] + (["--errors-only"] if SANITIZED else [])
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True,
                          timeout=SECONDS + 900)
    assert out.exists(), f"no result: exit {proc.returncode}\n{proc.stderr[-4000:]}"
    result = json.loads(out.read_text())
    verdict, rss = result["verdict"], result["rss"]
    summary = (f"exit {proc.returncode}; verdict {verdict}; rss {rss}; "
               f"error samples {json.dumps(result['error_samples'])[:3000]}; "
               f"hub {result['hub'].get('exit_status')} "
               f"{result['hub'].get('sanitizer_reports')}\n{proc.stderr[-3000:]}")
    assert proc.returncode == 0 and verdict["ok"], summary
    assert verdict["errors"] == 0 and not result["error_samples"], summary
    assert result["hub"]["exit_status"] == 0 and not result["hub"]["sanitizer_reports"], summary
    if not SANITIZED:
        assert verdict["rss_judged"] and rss["ok"], summary
    # The load really ran: every kind of operation, at about its rate (a tenth of it is
    # plenty of margin on a busy machine; this is a floor, not a timing).
    ops = {kind: v["ops"] for kind, v in result["ops"].items()}
    load_s = result["load_s"]
    floors = {"http": 32 * load_s / 10, "websocket": 2 * load_s / 10, "api": 4 * load_s / 10,
              "login": load_s / 3 / 10, "logout": load_s / 3 / 10, "spawn": 2, "stop": 2,
              "websocket_idle": 16}
    low = {k: (ops.get(k, 0), round(f)) for k, f in floors.items() if ops.get(k, 0) < f}
    assert not low, f"too few operations ran (ops, floor): {low}; {summary}"
    assert result["extra"].get("websocket_idle_keepalives", 0) > 0, summary
    # Nothing left open by the load: the descriptors after it are those before it plus at
    # most the files of the store's pooled connections (the database and its WAL each, up
    # to 8 connections).
    before, after = result["hub"]["start"]["fds"], result["hub"]["end"]["fds"]
    assert after <= before + 2 * 8, summary
