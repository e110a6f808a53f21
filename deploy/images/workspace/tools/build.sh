#!/bin/sh
# Builds docker (the CLI only), kubectl, k9s and skaffold for the workspace image into
# OUTDIR, each from its own module directory beside this script (docker/, kubectl/, k9s/,
# skaffold/). Each tool has its own module because their dependency graphs need different
# versions of shared modules (k8s.io: kubectl 0.36, k9s 0.34, skaffold 0.33; docker: the
# CLI 28.5, skaffold 27.5), which one module cannot hold.
#
# Every module of every build is pinned by its h1: hash in the directory's go.sum, and
# -mod=readonly makes the build fail rather than resolve anything that is not pinned there.
# The version each tool reports is read from go.mod, so moving a pin is a change to go.mod
# and go.sum only. Builds are static (CGO_ENABLED=0) and reproducible: -trimpath, no VCS
# stamping, and the build date a tool reports is its module's publication time.
#
# Usage: build.sh OUTDIR [TOOL...]   (default: all four). Needs Go on PATH and either the
# module proxy or a module cache holding every pinned module.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || {
    echo "usage: build.sh OUTDIR [docker|kubectl|k9s|skaffold]..." >&2
    exit 2
}
out=$1
shift
[ $# -ge 1 ] || set -- docker kubectl k9s skaffold
mkdir -p "$out"
out=$(cd "$out" && pwd)

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -trimpath -buildvcs=false"

# mod_info DIR MODULE FORMAT: a field of MODULE as selected in DIR's go.mod.
mod_info() {
    (cd "$here/$1" && go list -m -f "$3" "$2")
}

build_docker() {
    v=$(mod_info docker github.com/docker/cli '{{.Version}}')
    date=$(mod_info docker github.com/docker/cli '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')
    v=${v#v}
    v=${v%+incompatible}
    pkg=github.com/docker/cli/cli/version
    # osusergo as in docker/cli's scripts/build/.variables for static builds.
    (cd "$here/docker" && go build -tags osusergo \
        -ldflags "-s -w -X $pkg.Version=$v -X $pkg.BuildTime=$date" \
        -o "$out/docker" github.com/docker/cli/cmd/docker)
}

build_kubectl() {
    v=$(mod_info kubectl k8s.io/kubernetes '{{.Version}}')
    date=$(mod_info kubectl k8s.io/kubernetes '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')
    minor=${v#v*.}
    minor=${minor%%.*}
    major=${v#v}
    major=${major%%.*}
    # The same -X pairs as Kubernetes' hack/lib/version.sh sets, for both packages that
    # `kubectl version` reads.
    ldflags="-s -w"
    for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
        ldflags="$ldflags -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major"
        ldflags="$ldflags -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
        ldflags="$ldflags -X $pkg.buildDate=$date"
    done
    (cd "$here/kubectl" && go build -ldflags "$ldflags" -o "$out/kubectl" \
        k8s.io/kubernetes/cmd/kubectl)
}

build_k9s() {
    v=$(mod_info k9s github.com/derailed/k9s '{{.Version}}')
    date=$(mod_info k9s github.com/derailed/k9s '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')
    # k9s prints its version without the leading v (its Makefile passes the bare tag).
    pkg=github.com/derailed/k9s/cmd
    (cd "$here/k9s" && go build \
        -ldflags "-s -w -X $pkg.version=${v#v} -X $pkg.date=$date" \
        -o "$out/k9s" github.com/derailed/k9s)
}

build_skaffold() {
    m=github.com/GoogleContainerTools/skaffold/v2
    v=$(mod_info skaffold "$m" '{{.Version}}')
    date=$(mod_info skaffold "$m" '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}')
    pkg=$m/pkg/skaffold/version
    # The build tags of skaffold's own Linux release build, less static_build (which only
    # matters with cgo).
    (cd "$here/skaffold" && go build -tags "timetzdata osusergo netgo release" \
        -ldflags "-s -w -X $pkg.version=$v -X $pkg.buildDate=$date" \
        -o "$out/skaffold" "$m/cmd/skaffold")
}

for tool in "$@"; do
    case $tool in
    docker | kubectl | k9s | skaffold) ;;
    *)
        echo "build.sh: unknown tool '$tool'" >&2
        exit 2
        ;;
    esac
    start=$(date +%s)
    "build_$tool"
    echo "build.sh: $tool built in $(($(date +%s) - start)) s" >&2
done
