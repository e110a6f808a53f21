#!/usr/bin/env bash
# Runs every libFuzzer driver built in BUILD_DIR for SECONDS each. A crash stops the run
# (exit 1) and leaves its reproducer in fuzz/corpus-run/artifacts/.
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
seconds=${2:?usage: fuzz.sh BUILD_DIR SECONDS}
cd "$(dirname "$0")/.."

dict_for() {
    case "$1" in
    fuzz_http_request | fuzz_http_response) echo fuzz/http.dict ;;
    fuzz_cookie) echo fuzz/cookie.dict ;;
    fuzz_url | fuzz_form) echo fuzz/url.dict ;;
    esac
}

mkdir -p fuzz/corpus-run/artifacts
for src in fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    work=fuzz/corpus-run/$name
    mkdir -p "$work"
    args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=fuzz/corpus-run/artifacts/"$name"-)
    dict=$(dict_for "$name")
    [ -n "$dict" ] && args+=(-dict="$dict")
    echo "fuzz: $name for ${seconds}s"
    "$build/$name" "${args[@]}" "$work" "fuzz/corpus/$name" 2>"$work.log" ||
        { tail -n 40 "$work.log"; echo "fuzz: $name found a crash (see $work.log)"; exit 1; }
    grep -E 'stat::number_of_executed_units|cov:' "$work.log" | tail -n 2 | sed 's/^/  /'
done
echo "fuzz: every driver ran ${seconds}s without a finding"
