#!/usr/bin/env bash
# test_fuzz.sh - runs payd's libFuzzer targets (docs/fuzzing.md): for each target, replays
# every input kept under tests/fuzz/regressions/TARGET/ and tests/fuzz/corpus/TARGET/, then
# fuzzes it for FUZZ_SECONDS on a throwaway copy of its corpus (so the repository's corpus
# is never changed by a test run). Any crash, leak, timeout or out-of-memory fails: the
# input that did it is named, with the command that reproduces it.
#
#   scripts/test_fuzz.sh BUILD_DIR TARGET...      (make test-fuzz calls it)
#
# BUILD_DIR holds the targets (BUILD_DIR/fuzz/TARGET) and gets the work directory
# (BUILD_DIR/fuzz-work/TARGET/: corpus copy, artifacts, log). Environment:
#   FUZZ_SECONDS      fuzzing time per target (default 20; 0 replays only)
#   FUZZ_TIMEOUT_S    one input's time limit (default 25: a commit under a loaded CI)
#   FUZZ_RSS_MB       memory limit (default 2048)
#   PAYD_FUZZ_TMPDIR  where the targets make their store (default /dev/shm when writable,
#                     else the work directory: the store's fsyncs are not what is tested)
set -uo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR TARGET..." >&2
    exit 2
fi
build=$1
shift
seconds=${FUZZ_SECONDS:-20}
timeout_s=${FUZZ_TIMEOUT_S:-25}
rss_mb=${FUZZ_RSS_MB:-2048}
root=$(cd "$(dirname "$0")/.." && pwd)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

user_tmp=${PAYD_FUZZ_TMPDIR:-}
failed=()
summary=()

# The last value of "NAME: VALUE" in libFuzzer's status lines of a log.
status_field() {
    grep -E '^#[0-9]+' "$1" | tail -1 | sed -n "s/.* $2: \([^ ]*\).*/\1/p"
}

for t in "$@"; do
    bin=$build/fuzz/$t
    work=$build/fuzz-work/$t
    corpus=$root/tests/fuzz/corpus/$t
    regressions=$root/tests/fuzz/regressions/$t
    dict=$root/tests/fuzz/dict/$t.dict
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
    tmp=$work/tmp
    if [ -n "$user_tmp" ]; then
        tmp=$user_tmp
    elif [ -d /dev/shm ] && [ -w /dev/shm ]; then
        tmp=$(mktemp -d /dev/shm/payd-fuzz-run.XXXXXX)
    fi
    export PAYD_FUZZ_TMPDIR=$tmp
    opts=(-timeout="$timeout_s" -rss_limit_mb="$rss_mb" -artifact_prefix="$work/artifacts/")
    [ -f "$dict" ] && opts+=(-dict="$dict")
    echo "== $t"
    ok=1

    # 1. Every kept input, one run each (files given as arguments are run, never added to).
    mapfile -t kept < <(find "$regressions" -type f ! -name '.*' 2>/dev/null | sort)
    mapfile -t seeds < <(find "$corpus" -type f ! -name '.*' 2>/dev/null | sort)
    inputs=("${kept[@]}" "${seeds[@]}")
    if [ ${#inputs[@]} -gt 0 ]; then
        if "$bin" "${opts[@]}" "${inputs[@]}" >"$work/replay.log" 2>&1; then
            echo "   replayed ${#kept[@]} regressions and ${#seeds[@]} corpus inputs"
        else
            ok=0
            culprit=$(grep -E '^Running: ' "$work/replay.log" | tail -1 | sed 's/^Running: //')
            echo "   FAILED replaying the kept inputs (log: $work/replay.log):"
            tail -n 60 "$work/replay.log" | sed 's/^/   | /'
            echo "   the input:        $culprit"
            echo "   reproduce:        $bin $culprit"
        fi
    fi

    # 2. Fuzzing on a copy of the corpus.
    if [ "$ok" = 1 ] && [ "$seconds" -gt 0 ]; then
        [ -d "$corpus" ] && cp -r "$corpus/." "$work/corpus/"
        start=$(date +%s)
        if "$bin" "${opts[@]}" -max_total_time="$seconds" -print_final_stats=1 \
            "$work/corpus" >"$work/fuzz.log" 2>&1; then
            execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")
            rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/fuzz.log")
            rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$work/fuzz.log")
            fmt='%-17s %8s execs %6s exec/s  cov %5s  ft %6s  corpus %5s  rss %4s MB  %3ss'
            line=$(printf "$fmt" \
                "$t" "${execs:-?}" "${rate:-?}" "$(status_field "$work/fuzz.log" cov)" \
                "$(status_field "$work/fuzz.log" ft)" "$(status_field "$work/fuzz.log" corp)" \
                "${rss:-?}" "$(($(date +%s) - start))")
            echo "   $line"
            summary+=("$line")
        else
            ok=0
            echo "   FAILED while fuzzing (log: $work/fuzz.log):"
            pattern='ERROR|SUMMARY|fuzz check failed|assertion failed|runtime error|ALARM'
            pattern+='|Test unit written|out-of-memory|leak'
            grep -E "$pattern" "$work/fuzz.log" | head -20 | sed 's/^/   | /'
            tail -n 40 "$work/fuzz.log" | sed 's/^/   | /'
        fi
    fi

    if [ "$ok" = 0 ]; then
        failed+=("$t")
        for a in "$work"/artifacts/*; do
            [ -e "$a" ] || continue
            echo "   input written to: $a"
            echo "   reproduce:        $bin $a"
            echo "   keep it:          mkdir -p tests/fuzz/regressions/$t &&" \
                "cp $a tests/fuzz/regressions/$t/"
        done
    fi
    if [ "$tmp" != "$work/tmp" ] && [ "$tmp" != "$user_tmp" ]; then
        rm -rf "$tmp"
    fi
done

echo "== fuzzing summary (${seconds}s a target)"
for line in "${summary[@]}"; do
    echo "   $line"
done
if [ ${#failed[@]} -ne 0 ]; then
    echo "fuzz targets that failed: ${failed[*]}"
    exit 1
fi
echo "all ${#@} fuzz targets passed"
