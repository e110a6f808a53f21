#!/usr/bin/env bash
# Runs every libFuzzer driver built in BUILD_DIR: first its saved reproducers
# (fuzz/regressions/DRIVER/*, each must now pass), then SECONDS of fuzzing from its seed
# corpus with its dictionary. A unit that runs longer than UNIT_TIMEOUT seconds (default 25)
# counts as a finding: a parser that hangs is a denial of service. Every driver runs even
# after another failed; the exit status is 1 when any reproducer still fails or fuzzing
# found something (the reproducer is left in fuzz/corpus-run/artifacts/).
set -euo pipefail
build=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
seconds=${2:?usage: fuzz.sh BUILD_DIR SECONDS}
unit_timeout=${UNIT_TIMEOUT:-25}
cd "$(dirname "$0")/.."

dict_for() {
    case "$1" in
    fuzz_http_request | fuzz_http_response) echo fuzz/http.dict ;;
    fuzz_cookie) echo fuzz/cookie.dict ;;
    fuzz_url | fuzz_form) echo fuzz/url.dict ;;
    fuzz_chunked) echo fuzz/chunked.dict ;;
    fuzz_api_body) echo fuzz/api.dict ;;
    fuzz_config) echo fuzz/config.dict ;;
    fuzz_kubeconfig) echo fuzz/kubeconfig.dict ;;
    fuzz_watch_stream) echo fuzz/watch.dict ;;
    fuzz_websocket) echo fuzz/websocket.dict ;;
    esac
}

failed=()
mkdir -p fuzz/corpus-run/artifacts
for src in fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    work=fuzz/corpus-run/$name
    mkdir -p "$work"

    regressions=(fuzz/regressions/"$name"/*)
    if [ -e "${regressions[0]}" ]; then
        echo "fuzz: $name: ${#regressions[@]} saved reproducer(s)"
        if ! "$build/$name" -timeout="$unit_timeout" "${regressions[@]}" >"$work.regressions.log" 2>&1; then
            tail -n 30 "$work.regressions.log"
            echo "fuzz: $name: a saved reproducer still fails (see $work.regressions.log)"
            failed+=("$name (reproducer)")
            continue
        fi
    fi

    args=(-max_total_time="$seconds" -timeout="$unit_timeout" -print_final_stats=1
        -artifact_prefix=fuzz/corpus-run/artifacts/"$name"-)
    dict=$(dict_for "$name")
    [ -n "$dict" ] && args+=(-dict="$dict")
    echo "fuzz: $name for ${seconds}s"
    if ! "$build/$name" "${args[@]}" "$work" "fuzz/corpus/$name" 2>"$work.log"; then
        tail -n 40 "$work.log"
        echo "fuzz: $name found a crash, a leak or a hang (see $work.log)"
        failed+=("$name")
        continue
    fi
    grep -E 'stat::number_of_executed_units|cov:' "$work.log" | tail -n 2 | sed 's/^/  /'
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]}"
    exit 1
fi
echo "fuzz: every driver ran ${seconds}s without a finding"
