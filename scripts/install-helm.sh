#!/usr/bin/env bash
# Installs the pinned Helm into .deps/helm/bin/helm, built from its Go module with
# `go install` (these machines reach the Go module proxy, not Helm's release downloads; the
# module's checksums are verified by the Go toolchain). Used by the chart's tests
# (tests/integ/test_deploy_helm.py). Test tooling only; never committed.
#
# Silent and quick when the pinned version is installed; otherwise it builds (a minute or
# a few on 2 cores, depending on the Go build cache) and prints one line with the time.
set -euo pipefail

VERSION=v3.22.0
root=$(cd "$(dirname "$0")/.." && pwd)
bindir=$root/.deps/helm/bin
stamp=$root/.deps/helm/.installed

if [ -x "$bindir/helm" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSION" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: the Go toolchain (go >= 1.26) is required" >&2
    exit 1
fi
mkdir -p "$bindir"
start=$(date +%s)
# A scratch GOBIN so that a failed build never leaves a half-written helm in place.
tmp=$(mktemp -d "$root/.deps/helm/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# GOTOOLCHAIN=local: fail plainly on an old Go instead of fetching another toolchain.
# The version ldflag makes `helm version` report the exact release, as a release build does.
if ! (cd "$tmp" && GOTOOLCHAIN=local GOBIN="$tmp" go install -trimpath \
        -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$VERSION" \
        "helm.sh/helm/v3/cmd/helm@$VERSION") >"$root/.deps/helm/build.log" 2>&1; then
    cat "$root/.deps/helm/build.log" >&2
    echo "install-helm: go install helm.sh/helm/v3/cmd/helm@$VERSION failed" >&2
    exit 1
fi
mv -f "$tmp/helm" "$bindir/helm"
echo "$VERSION" >"$stamp"
echo "install-helm: built helm $VERSION in $(( $(date +%s) - start )) s"
