#!/usr/bin/env bash
# run.sh - runs the unit test binaries given as arguments and sums their cases.
#
# Each binary runs one or more cmocka groups. Its output is shown as it runs and parsed for
# cmocka 1.1.5's summary lines ("[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s), listed below:"). A binary that dies before its
# summary (abort, sanitizer report) counts every case it announced and did not
# pass as failed, and at least one; a binary whose cases all passed but that
# exits non-zero (a leak or sanitizer report at exit) adds one failed case.
# The last line printed is always "N passed, N failed"; the exit status is
# non-zero when anything failed.
set -uo pipefail

passed=0
failed=0
bad_bins=()
log=$(mktemp "${TMPDIR:-/tmp}/payd-unit.XXXXXX")
trap 'rm -f "$log"' EXIT

# cmocka prints progress on stdout and the summaries on stderr; line-buffer
# stdout so that the two stay in order in the log (the patterns below do not
# rely on it: a summary is one write and is found anywhere in a line).
linebuf=()
if command -v stdbuf >/dev/null 2>&1; then
    linebuf=(stdbuf -oL)
fi

for bin in "$@"; do
    echo "== $bin"
    "${linebuf[@]}" "$bin" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}

    # Every group ends with "[  PASSED  ] N test(s)." and, when some failed,
    # "[  FAILED  ] N test(s), listed below:"; a binary may run several groups.
    read -r groups summaries p f announced ok skipped < <(awk '
        { line = $0 }
        match(line, /\[==========\] Running [0-9]+ test\(s\)\./) {
            groups++; announced += field(substr(line, RSTART, RLENGTH), 3) }
        match(line, /\[  PASSED  \] [0-9]+ test\(s\)\./) {
            summaries++; p += field(substr(line, RSTART, RLENGTH), 4) }
        match(line, /\[  FAILED  \] [0-9]+ test\(s\), listed below:/) {
            f += field(substr(line, RSTART, RLENGTH), 4) }
        /\[       OK \]/ { ok++ }
        /\[  SKIPPED \]/ { skipped++ }
        function field(s, n,    a) { split(s, a, " "); return a[n] + 0 }
        END { print groups + 0, summaries + 0, p + 0, f + 0, announced + 0, ok + 0, skipped + 0 }
    ' "$log")
    if [ "$summaries" -lt "$groups" ] || [ "$groups" -eq 0 ]; then
        # A group died before its summary (abort, sanitizer report): count what
        # was announced and did not pass as failed, and at least one.
        p=$ok
        f=$((announced - ok - skipped))
        [ "$f" -lt 1 ] && f=1
        echo "== $bin: exited with status $rc before its summary"
    fi
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1 # a non-zero exit with no failed case is still a failure
        echo "== $bin: exited with status $rc"
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$f" -ne 0 ] && bad_bins+=("$bin")
done

if [ ${#bad_bins[@]} -ne 0 ]; then
    echo "failing binaries: ${bad_bins[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
