#!/usr/bin/env bash
# The supported-version matrix: every pair of PostgreSQL 14–18 (source →
# target, 25 pairs) through the whole path on real clusters — check,
# snapshot under a writer, stream, verify, cutover --fence, every table
# compared row by row — as the test `versions::matrix_pair` runs one pair
# (tests/versions.rs). Prints a table: pair, result, seconds, and for a
# failure the step it reached and the first line of its message; for a
# success what the schema copy translated. Writes it to benches/out/matrix.md.
#
# Usage: benches/matrix/run.sh                 # all 25 pairs
#        MAJORS="14 17" benches/matrix/run.sh  # the pairs of these majors
#
# Needs what scripts/test provisions: the server programs of every major in
# $CARGO_TARGET_DIR/pg-versions/ (or /usr/lib/postgresql/N/bin) and
# PostgreSQL 18's pg_dump in $CARGO_TARGET_DIR/pg-client/18/. It runs
# `scripts/test --test versions --no-run` first to fetch them and build.
# Build nothing else in the same target directory while it runs.
set -euo pipefail
cd "$(dirname "$0")/../.."

MAJORS=${MAJORS:-14 15 16 17 18}
OUT_DIR=benches/out
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/matrix.md"
LOGS="$OUT_DIR/matrix-logs"
mkdir -p "$LOGS"

# Provisions (servers of 14 16 17 18 unless WALRELAY_TEST_PG_MAJORS says
# otherwise, 18's pg_dump) and builds; then the test executable runs each
# pair (no cargo in the loop: nothing is rebuilt between pairs).
build_log="$LOGS/build.log"
scripts/test --test versions --no-run 2>&1 | tee "$build_log" >&2
exe="$(grep -o 'Executable tests/versions.rs ([^)]*)' "$build_log" | tail -n1 | sed 's/.*(\(.*\))/\1/')"
[ -x "$exe" ] || { echo "error: no test executable for tests/versions.rs in $build_log" >&2; exit 1; }

# The pair's last step reached, and the first line of the panic message.
failure_of() {
    local log="$1" step message
    step="$(grep -o 'matrix-step: .*' "$log" | tail -n1 | cut -d' ' -f2-)"
    message="$(grep -A3 -m1 "panicked at" "$log" | sed -n 2p | cut -c1-160)"
    printf '%s | %s' "${step:-?}" "${message:-see $log}"
}

elapsed() {
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

{
    echo "| pair | result | seconds | failing step | message / schema translated |"
    echo "|---|---|---|---|---|"
} >"$REPORT"
pass=0
fail=0
for source in $MAJORS; do
    for target in $MAJORS; do
        log="$LOGS/$source-$target.log"
        start=$(date +%s.%N)
        if WALRELAY_MATRIX_PAIR="$source $target" nice "$exe" matrix_pair --ignored --exact \
            --nocapture >"$log" 2>&1; then
            pass=$((pass + 1))
            translated="$(grep -o 'matrix-translated: .*' "$log" | cut -d' ' -f2- | cut -d'(' -f1 |
                sed 's/ *$//' | paste -sd ';' - || true)"
            outcome="ok | $(elapsed "$start") |  | ${translated:-nothing}"
        else
            fail=$((fail + 1))
            outcome="FAIL | $(elapsed "$start") | $(failure_of "$log")"
        fi
        line="| $source → $target | $outcome |"
        echo "$line" >>"$REPORT"
        echo "$line"
    done
done
echo "$pass passed, $fail failed"
echo "report: $REPORT (logs in $LOGS)" >&2
[ "$fail" -eq 0 ]
