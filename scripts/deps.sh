#!/usr/bin/env bash
# Install everything codehub needs to build, run and test, on Debian bookworm as root:
#   1. Debian packages (only the missing ones),
#   2. the Python venv for the tests in .deps/venv, from tests/requirements.txt,
#   3. code-server in .deps/code-server (scripts/install-code-server.sh),
#   4. the Kubernetes test harness in .deps/kube (scripts/build-kubetest.sh),
#   5. Helm in .deps/helm (scripts/install-helm.sh).
# Prints nothing and takes a fraction of a second when all of it is already there; otherwise
# one line per step, with the tool's own output in .deps/*.log, shown only on failure.
set -euo pipefail

cd "$(dirname "$0")/.."
DEPS=.deps
VENV=$DEPS/venv
REQUIREMENTS=tests/requirements.txt
REQ_STAMP=$VENV/.requirements.sha256

PACKAGES=(
    # C build and checks
    build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
    # libraries codehub links
    libuv1-dev libhttp-parser-dev libjansson-dev libfyaml-dev libsodium-dev libsqlite3-dev
    sqlite3 libcmocka-dev libssl-dev libcurl4-openssl-dev openssl libpq-dev
    # the PostgreSQL server the tests start (scripts/pg-test-server.sh)
    postgresql
    # tests: Python venv, Debian's browser, process tools, curl for install-code-server.sh
    python3-venv chromium procps psmisc openssh-client curl
    # systemd-analyze checks deploy/systemd/codehub.service
    systemd
    # code-server: Debian's rg replaces the one @vscode/ripgrep would download, plus what
    # its native modules (kerberos, node-pty & co.) build against
    ripgrep git libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev python3 make g++
)

step() {
    local what=$1 log=$2
    shift 2
    echo "deps: $what"
    if ! "$@" >>"$log" 2>&1; then
        echo "deps: FAILED: $what; last lines of $log:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
}

# 1. Debian packages. dpkg-query prints nothing for a package it has never heard of, so a
#    package counts as present only when listed with status "ii".
missing_packages() {
    local -A ok=()
    local name status pkg
    while read -r name status; do
        [[ $status == ii ]] && ok[$name]=1
    done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" 2>/dev/null || true)
    for pkg in "${PACKAGES[@]}"; do
        [[ -n ${ok[$pkg]:-} ]] || echo "$pkg"
    done
}

mapfile -t MISSING < <(missing_packages)
if ((${#MISSING[@]})); then
    mkdir -p "$DEPS"
    : >"$DEPS/apt.log"
    step "apt-get update" "$DEPS/apt.log" apt-get update
    step "apt-get install ${MISSING[*]}" "$DEPS/apt.log" \
        env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${MISSING[@]}"
fi

# 2. Python venv. Made with whatever python3 is on PATH (pyenv's on these machines). No stamp
#    means the venv was never finished, so it is made anew; a stamp with another hash means
#    the requirements changed, and pip brings the venv up to date in place.
want_hash=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
have_hash=
if [[ -f $REQ_STAMP && -x $VENV/bin/python ]]; then
    have_hash=$(<"$REQ_STAMP")
fi
if [[ $have_hash != "$want_hash" ]]; then
    mkdir -p "$DEPS"
    : >"$DEPS/pip.log"
    if [[ -z $have_hash ]]; then
        rm -rf "$VENV"
        step "python3 -m venv $VENV ($(python3 --version 2>&1))" "$DEPS/pip.log" \
            python3 -m venv "$VENV"
    fi
    step "pip install -r $REQUIREMENTS" "$DEPS/pip.log" \
        env PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -r "$REQUIREMENTS"
    echo "$want_hash" >"$REQ_STAMP"
fi

# 3. code-server (quiet and quick when already installed).
scripts/install-code-server.sh

# 4. The Kubernetes test harness (tests/kube, Go): a cold build takes a few minutes, later
#    runs are silent when the binary is newer than its sources.
scripts/build-kubetest.sh

# 5. Helm, for the chart's tests (deploy/helm/codehub): built with `go install` from its
#    pinned module; silent when installed.
scripts/install-helm.sh
