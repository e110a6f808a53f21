#!/usr/bin/env bash
# Install what the benchmarks need beyond `make deps` (scripts/deps.sh), on Debian bookworm as
# root: the peer server (nginx-light), the load generator (wrk), taskset (util-linux) and the
# libsodium runtime that bench/hub.py calls through ctypes for the raw Argon2id baseline.
# Only missing packages are installed; prints nothing when everything is there.
set -euo pipefail

cd "$(dirname "$0")/.."
LOG=.deps/bench-apt.log
PACKAGES=(nginx-light wrk util-linux libsodium23 python3)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done
((${#missing[@]})) || exit 0

mkdir -p .deps
: >"$LOG"
echo "bench deps: apt-get install ${missing[*]}"
# nginx's maintainer scripts try to start the system service; policy-rc.d exit 101 stops that
# (the benchmark starts its own nginx on a private port), and is removed again afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() {
    if ((made_policy)); then rm -f "$policy"; fi
}
trap cleanup EXIT
if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends "${missing[@]}"; } >>"$LOG" 2>&1; then
    echo "bench deps: FAILED; last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
fi
