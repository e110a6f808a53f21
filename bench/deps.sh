#!/usr/bin/env bash
# Install what the benchmarks need beyond `make deps` (scripts/deps.sh), on Debian bookworm as
# root: the peer server (nginx-light), the load generator (wrk), taskset (util-linux), the
# libsodium runtime that bench/hub.py calls through ctypes for the raw Argon2id baseline, and
# configurable-http-proxy (npm, pinned) in .deps/bench/chp. JupyterHub's private venv is made
# by bench/jupyterhub.py and the Go load tools are built by bench/websocket.py, each when
# missing. Only what is missing is installed; prints nothing when everything is there.
set -euo pipefail

cd "$(dirname "$0")/.."
LOG=.deps/bench-apt.log
PACKAGES=(nginx-light wrk util-linux libsodium23 python3 nodejs npm golang-go)
CHP_VERSION=5.3.0
CHP_DIR=.deps/bench/chp

install_chp() {
    local have=$CHP_DIR/node_modules/configurable-http-proxy/package.json
    if [[ -f $have ]] && grep -q "\"version\": \"$CHP_VERSION\"" "$have"; then
        return
    fi
    echo "bench deps: npm install configurable-http-proxy@$CHP_VERSION"
    mkdir -p "$CHP_DIR"
    if ! (cd "$CHP_DIR" && npm install --no-audit --no-fund --save-exact \
        "configurable-http-proxy@$CHP_VERSION") >>.deps/bench-npm.log 2>&1; then
        echo "bench deps: npm install FAILED; last lines of .deps/bench-npm.log:" >&2
        tail -n 40 .deps/bench-npm.log >&2
        exit 1
    fi
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    # Node and Go may come from outside Debian's packages (this machine has both): a
    # working command is enough.
    case $pkg in
        nodejs) command -v node >/dev/null && continue ;;
        npm) command -v npm >/dev/null && continue ;;
        golang-go) command -v go >/dev/null && continue ;;
    esac
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
    install_chp
    exit 0
fi

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
install_chp
