#!/usr/bin/env bash
# Runs every libFuzzer driver built in BUILD_DIR: first its saved reproducers
# (fuzz/regressions/DRIVER/*, each must now pass), then fuzzing from its seed corpus with its
# dictionary, in one of two modes:
#
#   fuzz.sh BUILD_DIR SECONDS      a hunt (make fuzz): SECONDS per driver, random seed, the
#                                  corpus kept and grown in fuzz/corpus-run/DRIVER
#   fuzz.sh BUILD_DIR --runs N     a smoke (make test): N inputs per driver (a tenth of that for
#                                  the YAML drivers, which are ten times slower), seed 1, a
#                                  fresh corpus: the same inputs on every machine, so what CI
#                                  finds, `make test` finds here too
#
# A unit that runs longer than UNIT_TIMEOUT seconds (default 25) counts as a finding: a parser
# that hangs is a denial of service. Every driver runs even after another failed; the exit
# status is 1 when any reproducer still fails or fuzzing found something (the reproducer is
# left in fuzz/corpus-run/artifacts/).
#
# LeakSanitizer reads tests/lsan.supp: leaks inside Debian's libraries, each with its upstream
# report. Its entries name the library's own functions, which only a full unwind of the
# allocation's stack shows (the fast unwinder stops in a library built without frame
# pointers), so the drivers that use such a library unwind fully: slower, and exact.
set -euo pipefail
usage="usage: fuzz.sh BUILD_DIR SECONDS | fuzz.sh BUILD_DIR --runs N"
build=${1:?$usage}
mode=${2:?$usage}
runs=
if [ "$mode" = --runs ]; then
    runs=${3:?$usage}
fi
unit_timeout=${UNIT_TIMEOUT:-25}
cd "$(dirname "$0")/.."
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

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
    fuzz_handoff) echo fuzz/handoff.dict ;;
    esac
}

# The drivers whose parser is a library with a suppressed leak (see above), and the slow ones.
uses_yaml() {
    case "$1" in
    fuzz_config | fuzz_kubeconfig) return 0 ;;
    *) return 1 ;;
    esac
}

failed=()
mkdir -p fuzz/corpus-run/artifacts
smoke_dir=
if [ -n "$runs" ]; then
    smoke_dir=$(mktemp -d /tmp/codehub-fuzz-smoke.XXXXXX)
    trap 'rm -rf "$smoke_dir"' EXIT
fi
for src in fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    log=fuzz/corpus-run/$name
    if [ -n "$runs" ]; then
        work=$smoke_dir/$name
    else
        work=fuzz/corpus-run/$name
    fi
    mkdir -p "$work"
    asan=${ASAN_OPTIONS:-}
    if uses_yaml "$name"; then
        asan="fast_unwind_on_malloc=0${asan:+:$asan}"
    fi

    regressions=(fuzz/regressions/"$name"/*)
    if [ -e "${regressions[0]}" ]; then
        echo "fuzz: $name: ${#regressions[@]} saved reproducer(s)"
        if ! ASAN_OPTIONS=$asan "$build/$name" -timeout="$unit_timeout" "${regressions[@]}" \
            >"$log.regressions.log" 2>&1; then
            tail -n 30 "$log.regressions.log"
            echo "fuzz: $name: a saved reproducer still fails (see $log.regressions.log)"
            failed+=("$name (reproducer)")
            continue
        fi
    fi

    args=(-timeout="$unit_timeout" -print_final_stats=1
        -artifact_prefix=fuzz/corpus-run/artifacts/"$name"-)
    if [ -n "$runs" ]; then
        n=$runs
        uses_yaml "$name" && n=$((runs / 10))
        args+=(-seed=1 -runs="$n")
        what="$n inputs (seed 1)"
    else
        args+=(-max_total_time="$mode")
        what="${mode}s"
    fi
    dict=$(dict_for "$name")
    [ -n "$dict" ] && args+=(-dict="$dict")
    echo "fuzz: $name for $what"
    if ! ASAN_OPTIONS=$asan "$build/$name" "${args[@]}" "$work" "fuzz/corpus/$name" 2>"$log.log"; then
        tail -n 40 "$log.log"
        echo "fuzz: $name found a crash, a leak or a hang (see $log.log)"
        failed+=("$name")
        continue
    fi
    grep -E 'stat::number_of_executed_units|cov:' "$log.log" | tail -n 2 | sed 's/^/  /'
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: findings in: ${failed[*]}"
    exit 1
fi
if [ -n "$runs" ]; then
    echo "fuzz: every driver ran its ${runs} (or $((runs / 10))) inputs without a finding"
else
    echo "fuzz: every driver ran ${mode}s without a finding"
fi
