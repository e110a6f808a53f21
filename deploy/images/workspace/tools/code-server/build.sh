#!/bin/sh
# Installs the pinned code-server into PREFIX for the workspace image: what
# scripts/install-code-server.sh does, but with every package pinned by a lockfile and with
# nothing fetched except packages from the npm registry.
#
#   - code-server and its dependencies: `npm ci` from package-lock.json beside this script
#     (sha512 integrity for every package; code-server's own npm-shrinkwrap.json is part of
#     that graph);
#   - lib/vscode: `npm ci` from vscode-npm-shrinkwrap.json beside this script. The
#     npm-shrinkwrap.json that code-server ships there lacks tslib (a peer dependency), so
#     `npm ci` refuses it and the `npm install` of code-server's postinstall resolves tslib
#     afresh; ours is that file with tslib pinned (regenerate it when moving the pin: see
#     deploy/images/README.md);
#   - lib/vscode/extensions: `npm ci` from the npm-shrinkwrap.json that code-server ships
#     there (integrity for every package, itself covered by the code-server tarball's);
#   - every install script is skipped (--ignore-scripts) and what is needed of them is done
#     here by hand, because several download from the internet: @vscode/ripgrep fetches rg
#     (Debian's /usr/bin/rg is linked in its place; the image installs package ripgrep),
#     kerberos and argon2 first try prebuilt binaries (they are compiled from source
#     instead), node-pty's postinstall runs `npx node-gyp` only to write a
#     compile_commands.json (skipped);
#   - the native modules are compiled with the node-gyp that ships with npm, against the
#     headers of the Node.js that runs code-server (NODEDIR), so the build needs no headers
#     download.
#
# A package with an install script this file does not know stops the build: a new
# code-server version has to be looked at before it is trusted.
#
# Usage: build.sh PREFIX NODE NODEDIR
#   PREFIX   where code-server goes (the image uses /opt/code-server)
#   NODE     the node binary the launcher runs (the image uses /usr/local/bin/node)
#   NODEDIR  the prefix holding include/node/node.h of that node (the image uses /usr/local)
# Needs node, npm, python3, make, g++ and Kerberos headers (Debian: libkrb5-dev).
# Result: PREFIX/bin/code-server, the launcher.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 3 ] || {
    echo "usage: build.sh PREFIX NODE NODEDIR" >&2
    exit 2
}
prefix=$1
node=$2
nodedir=$3
[ -x "$node" ] || {
    echo "build.sh: $node is not an executable" >&2
    exit 1
}
[ -f "$nodedir/include/node/node.h" ] || {
    echo "build.sh: no $nodedir/include/node/node.h" >&2
    exit 1
}

export npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false
export npm_config_loglevel=warn npm_config_nodedir=$nodedir
node_gyp=$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js
[ -f "$node_gyp" ] || {
    echo "build.sh: npm's node-gyp not found at $node_gyp" >&2
    exit 1
}

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
cp "$here/package.json" "$here/package-lock.json" "$prefix/"
cd "$prefix"
app=$prefix/node_modules/code-server
vscode=$app/lib/vscode

echo "build.sh: npm ci (code-server)" >&2
npm ci --omit=dev --ignore-scripts

# The install scripts of lib/vscode's dependencies, each known and handled below.
known_scripts='@parcel/watcher @vscode/ripgrep kerberos node-pty'
echo "build.sh: npm ci (lib/vscode)" >&2
cp "$here/vscode-npm-shrinkwrap.json" "$vscode/npm-shrinkwrap.json"
(cd "$vscode" && npm ci --omit=dev --ignore-scripts)
unknown=$(cd "$vscode/node_modules" && "$node" -e '
    const fs = require("fs");
    const known = new Set(process.argv[1].split(" "));
    const names = [];
    for (const d of fs.readdirSync(".")) {
        if (d.startsWith("@")) {
            for (const s of fs.readdirSync(d)) names.push(d + "/" + s);
        } else if (!d.startsWith(".")) {
            names.push(d);
        }
    }
    for (const n of names) {
        let pkg;
        try { pkg = JSON.parse(fs.readFileSync(n + "/package.json", "utf8")); } catch { continue; }
        const s = pkg.scripts || {};
        if ((s.preinstall || s.install || s.postinstall) && !known.has(n)) console.log(n);
    }' "$known_scripts")
if [ -n "$unknown" ]; then
    echo "build.sh: lib/vscode packages with install scripts not handled here:" $unknown >&2
    exit 1
fi

# @parcel/watcher: its install script compiles only when asked to; the prebuilt binary comes
# from its per-platform package, which the shrinkwrap pins like any other.
# @vscode/ripgrep: its postinstall downloads rg unless bin/ exists.
mkdir -p "$vscode/node_modules/@vscode/ripgrep/bin"
ln -sfn /usr/bin/rg "$vscode/node_modules/@vscode/ripgrep/bin/rg"

# Every native module of lib/vscode (those with a binding.gyp), except @parcel/watcher.
# The Windows-only ones compile to empty modules on Linux, as they do under `npm rebuild`.
gyp_modules=$(cd "$vscode/node_modules" && for f in */binding.gyp @*/*/binding.gyp; do
    [ -f "$f" ] && dirname "$f"
done | grep -v '^@parcel/watcher$' || true)
for m in $gyp_modules; do
    echo "build.sh: compile $m" >&2
    (cd "$vscode/node_modules/$m" && "$node" "$node_gyp" rebuild >/dev/null)
done

# argon2 (code-server's password hashing): its install script runs node-pre-gyp, which
# compiles from source instead of downloading a binary when npm_config_build_from_source
# is set (passed in the environment, which every npm version hands on to the script).
echo "build.sh: compile argon2" >&2
npm_config_build_from_source=true npm rebuild argon2 >/dev/null

# The extensions' own postinstall only trims the TypeScript package; their dependencies
# have no install scripts (checked).
echo "build.sh: npm ci (lib/vscode/extensions)" >&2
(cd "$vscode/extensions" && npm ci --omit=dev --ignore-scripts &&
    "$node" ./postinstall.mjs >/dev/null)
unknown=$(find "$vscode/extensions/node_modules" -name package.json -path '*/node_modules/*' \
    -exec grep -l '"\(preinstall\|install\|postinstall\)"[[:space:]]*:' {} + || true)
if [ -n "$unknown" ]; then
    echo "build.sh: lib/vscode/extensions packages with install scripts:" $unknown >&2
    exit 1
fi

# What the rest of code-server's postinstall does: VS Code looks for some modules under
# node_modules.asar, and the integrated terminal's `code-server` command and browser helper
# are per-platform scripts picked by a symbolic link.
ln -sfn node_modules "$vscode/node_modules.asar"
ln -sfn code-linux.sh "$vscode/bin/remote-cli/code-server"
ln -sfn browser-linux.sh "$vscode/bin/helpers/browser.sh"

# Compiler intermediates are not needed at run time.
find "$prefix/node_modules" -type d -name obj.target -prune -exec rm -rf {} +

version=$("$node" -p 'require(process.argv[1]).version' "$app/package.json")
mkdir -p "$prefix/bin"
cat >"$prefix/bin/code-server" <<EOF
#!/bin/sh
# code-server $version, installed by deploy/images/workspace/tools/code-server/build.sh.
here=\$(dirname "\$(readlink -f "\$0")")
exec "$node" "\$here/../node_modules/code-server/out/node/entry.js" "\$@"
EOF
chmod 0755 "$prefix/bin/code-server"
echo "build.sh: code-server $version installed in $prefix" >&2
