#!/bin/sh
# Regenerates the replace block of tests/kube/go.mod from the pinned Kubernetes go.mod.
#
# k8s.io/kubernetes requires its ~30 staging modules at v0.0.0 and points them at ./staging
# with replace directives, which Go ignores for a dependency. Our module therefore carries
# one "replace k8s.io/X => k8s.io/X v0.Y.Z" per staging module. The list is read from the
# pinned go.mod rather than typed, because it changes between releases (1.36 added
# k8s.io/cri-streaming and k8s.io/streaming).
#
# Usage: tests/kube/gen-replace.sh [KUBE_VERSION]   (default: the version in go.mod)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
kube=${1:-$(sed -n "s|^[[:space:]]*\(require[[:space:]]*\)\{0,1\}k8s.io/kubernetes \(v[0-9.]*\).*|\2|p" go.mod | head -n 1)}
[ -n "$kube" ] || { echo "gen-replace: no k8s.io/kubernetes version" >&2; exit 1; }
staging="v0.${kube#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@$kube" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "gen-replace: cannot read go.mod of k8s.io/kubernetes@$kube" >&2; exit 1; }
mods=$(sed -n 's/^[[:space:]]*\(k8s.io\/[A-Za-z0-9._-]*\) => \.\/staging\/.*/\1/p' "$gomod" | sort -u)
[ -n "$mods" ] || { echo "gen-replace: no staging modules found in $gomod" >&2; exit 1; }

tmp=$(mktemp)
# Keep everything up to the generated block, then write a fresh block.
sed '/^\/\/ BEGIN generated replace/,$d' go.mod > "$tmp"
{
    echo "// BEGIN generated replace block (tests/kube/gen-replace.sh from k8s.io/kubernetes@$kube)"
    echo "replace ("
    for m in $mods; do
        printf '\t%s => %s %s\n' "$m" "$m" "$staging"
    done
    echo ")"
    echo
    echo "// END generated replace block"
} >> "$tmp"
cat "$tmp" > go.mod
rm -f "$tmp"
echo "gen-replace: $(echo "$mods" | wc -l) staging modules pinned to $staging" >&2
