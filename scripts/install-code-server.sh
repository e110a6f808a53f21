#!/usr/bin/env bash
# Install a pinned code-server from the npm registry into .deps/code-server.
#
# These machines reach the npm registry but not GitHub, and we run as root, so a plain
# `npm install code-server` fails (see shared/code-server-install.md). Instead we install
# with scripts disabled and do by hand what code-server's postinstall would have done,
# with Debian's ripgrep standing in for the one @vscode/ripgrep would download.
#
# The install is built in a temporary folder beside the target and renamed into place only
# after code-server has started and answered /healthz, so an interrupted run never leaves a
# half-installed .deps/code-server. Quiet, quick no-op when the pinned version is present.
#
# Result: .deps/code-server/bin/code-server (the launcher codehub uses by default) and
# .deps/code-server/node_modules/code-server/out/node/entry.js.
set -euo pipefail

cd "$(dirname "$0")/.."
DEPS="$PWD/.deps"
TARGET="$DEPS/code-server"
STAMP="$TARGET/.installed"
ENTRY_REL="node_modules/code-server/out/node/entry.js"
LOG="$DEPS/code-server-install.log"

# code-server pins by Node.js major version: each code-server line requires one Node major
# (its package.json `engines.node`). Only 4.100.3 on Node 20 has been verified on these
# machines; it is also the fallback.
pick_version() {
    local major=$1
    if ((major >= 24)); then
        echo 4.139.1
    elif ((major >= 22)); then
        echo 4.117.0
    else
        echo 4.100.3
    fi
}

die() {
    echo "install-code-server: $*" >&2
    exit 1
}

NODE=$(command -v node) || die "node not found on PATH (code-server needs Node.js >= 20)"
command -v npm >/dev/null || die "npm not found on PATH"
NODE_VERSION=$("$NODE" --version) # e.g. v20.20.2
NODE_MAJOR=${NODE_VERSION#v}
NODE_MAJOR=${NODE_MAJOR%%.*}
((NODE_MAJOR >= 20)) || die "Node.js $NODE_VERSION is too old: code-server needs Node.js >= 20"
VERSION=${CODE_SERVER_VERSION:-$(pick_version "$NODE_MAJOR")}

# The stamp also names the Node major: native modules are built for one Node ABI, so a new
# Node means a new install.
WANT_STAMP="code-server $VERSION node $NODE_MAJOR"
installed() {
    [[ -f $STAMP && -f $TARGET/$ENTRY_REL && -x $TARGET/bin/code-server ]] &&
        [[ "$(<"$STAMP")" == "$WANT_STAMP" ]]
}

if installed; then
    exit 0
fi

mkdir -p "$DEPS"
# Serialise concurrent runs (two `make test` at once); the second one finds the install done.
exec 9>"$DEPS/.code-server.lock"
flock 9
if installed; then
    exit 0
fi

# Leftovers of runs that were killed before their trap could clean up.
rm -rf "$DEPS"/code-server.tmp.* "$DEPS"/code-server.old.*

WORK=$(mktemp -d "$DEPS/code-server.tmp.XXXXXX")
chmod 0755 "$WORK" # mktemp makes it 0700; code-server may run as other users
PROBE=$(mktemp -d /tmp/codehub-cs-probe.XXXXXX)
SERVER_PID=
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK" "$PROBE"
}
trap cleanup EXIT

# npm's output goes to the log; on failure the tail of it is shown.
: >"$LOG"
step() {
    local what=$1
    shift
    echo "install-code-server: $what"
    if ! "$@" >>"$LOG" 2>&1; then
        echo "install-code-server: FAILED: $what; last lines of $LOG:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

# Runs a command in a folder, in a subshell.
in_dir() {
    local dir=$1
    shift
    (cd "$dir" && "$@")
}

export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export npm_config_loglevel=warn

START=$SECONDS
APP="$WORK/node_modules/code-server"
VSCODE="$APP/lib/vscode"

step "npm install code-server@$VERSION (Node $NODE_VERSION)" \
    in_dir "$WORK" npm install --ignore-scripts "code-server@$VERSION"

step "npm install lib/vscode dependencies" \
    in_dir "$VSCODE" npm install --omit=dev --ignore-scripts

# @vscode/ripgrep's install script downloads rg from GitHub unless its bin/ already exists.
# Copy rather than link, so the install stays whole if Debian's package moves.
[[ -x /usr/bin/rg ]] || die "/usr/bin/rg missing: install Debian's ripgrep package"
install -D -m 0755 /usr/bin/rg "$VSCODE/node_modules/@vscode/ripgrep/bin/rg"

# Builds node-pty, kerberos, spdlog & co. against the local Node headers; node-pty's
# script runs `npx node-gyp`, whose install prompt would block without npm_config_yes.
step "build lib/vscode native modules" in_dir "$VSCODE" env npm_config_yes=true npm rebuild

step "build argon2" in_dir "$WORK" npm rebuild argon2

# Shared dependencies of the built-in extensions (TypeScript for the TS/JS language server).
step "npm install lib/vscode/extensions dependencies" \
    in_dir "$VSCODE/extensions" npm install --omit=dev --ignore-scripts

# What the rest of code-server's postinstall does: VS Code looks for some modules under
# node_modules.asar, and the integrated terminal's `code-server` command and browser helper
# are per-platform scripts picked by a symlink.
ln -sfn node_modules "$VSCODE/node_modules.asar"
ln -sfn code-linux.sh "$VSCODE/bin/remote-cli/code-server"
ln -sfn browser-linux.sh "$VSCODE/bin/helpers/browser.sh"

mkdir -p "$WORK/bin"
cat >"$WORK/bin/code-server" <<EOF
#!/bin/sh
# Launcher written by scripts/install-code-server.sh: code-server $VERSION on $NODE_VERSION.
here=\$(dirname "\$(readlink -f "\$0")")
exec "$NODE" "\$here/../$ENTRY_REL" "\$@"
EOF
chmod 0755 "$WORK/bin/code-server"

# Verify: start it through the launcher on a Unix socket and wait for /healthz. Its config,
# data and logs go to the probe folder, not to $HOME.
verify() {
    local sock="$PROBE/cs.sock" code=000 i why="did not answer /healthz with 200 within 60 s"
    mkdir -p "$PROBE/proj" "$PROBE/xdg-config" "$PROBE/xdg-data"
    XDG_CONFIG_HOME="$PROBE/xdg-config" XDG_DATA_HOME="$PROBE/xdg-data" \
        setsid "$WORK/bin/code-server" --auth none --socket "$sock" \
        --config "$PROBE/config.yaml" --user-data-dir "$PROBE/user-data" \
        --extensions-dir "$PROBE/extensions" --disable-telemetry --disable-update-check \
        "$PROBE/proj" >"$PROBE/server.log" 2>&1 </dev/null &
    SERVER_PID=$!
    for ((i = 0; i < 120; i++)); do
        if [[ -S $sock ]]; then
            code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
                --unix-socket "$sock" http://localhost/healthz) || code=000
            [[ $code == 200 ]] && break
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            why="exited before answering /healthz"
            break
        fi
        sleep 0.5
    done
    kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.25
    done
    kill -KILL -- "-$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
    if [[ $code != 200 ]]; then
        echo "install-code-server: FAILED: code-server $why (last answer: $code);" \
            "last lines of its log:" >&2
        tail -n 40 "$PROBE/server.log" >&2
        exit 1
    fi
}
echo "install-code-server: start code-server and check /healthz"
verify

echo "$WANT_STAMP" >"$WORK/.installed"
if [[ -e $TARGET ]]; then
    OLD=$(mktemp -d "$DEPS/code-server.old.XXXXXX")
    mv "$TARGET" "$OLD/"
    mv "$WORK" "$TARGET"
    rm -rf "$OLD"
else
    mv "$WORK" "$TARGET"
fi
echo "install-code-server: code-server $VERSION installed in .deps/code-server" \
    "($((SECONDS - START)) s)"
