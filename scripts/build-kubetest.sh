#!/usr/bin/env bash
# Builds the Kubernetes test harness (tests/kube: a real kube-apiserver + embedded etcd + a
# simulated kubelet) into .deps/kube/bin/kubetest. Test tooling only; never committed.
#
# Silent and quick when the binary is newer than every source of tests/kube; otherwise it
# builds (a cold build downloads the k8s.io modules through the configured Go module proxy
# and compiles for a few minutes on 2 cores; the Go build cache makes later builds fast)
# and prints one line with the elapsed time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/kube
out=$root/.deps/kube/bin/kubetest

if [ -x "$out" ] && [ -z "$(find "$src" -newer "$out" \
        \( -name '*.go' -o -name go.mod -o -name go.sum \) -print -quit)" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "build-kubetest: the Go toolchain (go >= 1.26) is required" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
start=$(date +%s)
# GOTOOLCHAIN=local: fail plainly on an old Go instead of fetching another toolchain.
if ! (cd "$src" && GOTOOLCHAIN=local go build -trimpath -ldflags='-s -w' -o "$out.tmp" .) \
        >"$root/.deps/kube/build.log" 2>&1; then
    cat "$root/.deps/kube/build.log" >&2
    rm -f "$out.tmp"
    echo "build-kubetest: build failed" >&2
    exit 1
fi
mv -f "$out.tmp" "$out"
echo "build-kubetest: built $out in $(( $(date +%s) - start )) s"
