#!/usr/bin/env bash
# Cutover benchmark: the write-unavailability window of `walrelay cutover --fence` under
# pgbench load.
#
# A source (pgbench scale $SCALE) is copied by `walrelay snapshot` and streamed into the
# target by `walrelay run`. Then, $RUNS times: pgbench writes flat out on the source; after
# $WARMUP_SECS seconds `walrelay cutover --fence --json` runs while pgbench still writes
# (the fence ends pgbench's sessions: pgbench exits non-zero, which is expected). The window
# is the report's `fence_to_verdict_seconds`: from the fence (source read-only) to the
# verdict "safe to switch". While the source is still fenced the target is compared with it;
# then `walrelay cutover --unfence`. After the last run the target is compared once more and
# `walrelay run` must exit 0 on SIGTERM.
# It reports speed (target: median window ≤ 2 s); it does not assert it. Exit 1 only when
# something failed: a cutover not safe, a copy that differs, walrelay crashed.
#
# Smoke run:  SCALE=1 RUNS=1 WARMUP_SECS=5 benches/cutover/run.sh
# Full run:   benches/cutover/run.sh
# See benches/README.md (section "cutover") for every knob.
set -euo pipefail

# ---------------------------------------------------------------- settings
SCALE=${SCALE:-10}                      # pgbench scale (100k pgbench_accounts rows each)
RUNS=${RUNS:-3}                         # cutovers, each under a fresh pgbench load
CLIENTS=${CLIENTS:-4}                   # pgbench -c
PGBENCH_THREADS=${PGBENCH_THREADS:-2}   # pgbench -j
LOAD_SECS=${LOAD_SECS:-600}             # pgbench -T (the fence ends it long before)
WARMUP_SECS=${WARMUP_SECS:-20}          # pgbench writes this long before the cutover starts
CUTOVER_ARGS=${CUTOVER_ARGS:-}          # extra arguments after `cutover --fence --json` (e.g. --final-verify full)
WALRELAY_RUN_ARGS=${WALRELAY_RUN_ARGS:-}   # extra arguments after `run`
SNAPSHOT_JOBS=${SNAPSHOT_JOBS:-2}       # walrelay snapshot --jobs
TARGET_WINDOW=${TARGET_WINDOW:-2}       # seconds: the target for the median window (reported)
VERIFY=${VERIFY:-hash}                  # hash: counts + sums + content hashes; sum: counts + sums
CHECK_EACH_RUN=${CHECK_EACH_RUN:-1}     # 1: compare target and source after each cutover, while fenced
SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-900}       # seconds before a snapshot, a cutover or a catch-up is given up

BENCH_NAME=cutover
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/cutover-$STAMP.md
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

((RUNS > 0)) || die "RUNS must be ≥ 1"
((WARMUP_SECS < LOAD_SECS)) || die "WARMUP_SECS ($WARMUP_SECS) must be below LOAD_SECS ($LOAD_SECS)"

# ---------------------------------------------------------------- prerequisites
bench_prereqs curl python3
bench_build_walrelay
bench_workdir

# ---------------------------------------------------------------- clusters
start_replication_pair

DB=bench
SRC_URL=$(url "$SRC_PORT" "$DB")
TGT_URL=$(url "$TGT_PORT" "$DB")
SRC_ADMIN_URL=$(url "$SRC_PORT" postgres)   # never fenced: the fence is on database $DB only
src() { q "$SRC_URL" "$1"; }
q "$SRC_ADMIN_URL" "CREATE DATABASE $DB"
q "$(url "$TGT_PORT" postgres)" "CREATE DATABASE $DB"

# ---------------------------------------------------------------- load
log "pgbench -i -s $SCALE on the source"
"$PG_BINDIR/pgbench" -i -s "$SCALE" -q "$SRC_URL" >"$WORK/pgbench-init.log" 2>&1 \
    || { redact <"$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
# pgbench_history has no primary key: walrelay refuses to publish it without a replica
# identity (UPDATE/DELETE would fail on the source), so it gets REPLICA IDENTITY FULL.
src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
src "VACUUM ANALYZE"
src "CHECKPOINT"
SRC_SIZE=$(src "SELECT pg_size_pretty(pg_database_size(current_database()))")

# ---------------------------------------------------------------- checks
declare -A CHECK
compare() { # label ; fingerprints both sides now, sets CHECK[label], FAILED on difference
    local label=$1 sfp tfp d
    if ! sfp=$(pgbench_fingerprint "$SRC_URL" 2>"$WORK/check-$label.err") || ! tfp=$(pgbench_fingerprint "$TGT_URL" 2>>"$WORK/check-$label.err"); then
        CHECK[$label]="check query failed: $(head -n 2 "$WORK/check-$label.err" | tr '\n' ' ' | redact)"
        log "$label: ${CHECK[$label]}"
        FAILED=1
        return
    fi
    SRC_FP=$sfp
    if [[ $sfp == "$tfp" ]]; then
        CHECK[$label]=match
        log "$label: the target matches the source"
    else
        d=$(diff <(echo "$sfp") <(echo "$tfp") | grep '^[<>]' | tr '\n' ' ' || true)
        CHECK[$label]="MISMATCH (< source, > target): $d"
        log "$label: ${CHECK[$label]}"
        FAILED=1
    fi
}
SLOT=walrelay
# The target has committed everything the source wrote so far (nothing writes meanwhile).
caught_up() { # timeout-seconds
    local lsn
    lsn=$(q "$SRC_ADMIN_URL" "SELECT pg_current_wal_insert_lsn()")
    wait_until "$TGT_URL" "SELECT applied_lsn >= '$lsn'::pg_lsn FROM walrelay.progress WHERE slot_name = '$SLOT'" "$1" >/dev/null
}

# ---------------------------------------------------------------- snapshot and stream
WALRELAY_BASE=("$WALRELAY_BIN" --source "$SRC_URL" --target "$TGT_URL")
log "walrelay snapshot --jobs $SNAPSHOT_JOBS"
T0=$(now)
if ! timeout "$TOOL_TIMEOUT" "${WALRELAY_BASE[@]}" snapshot --jobs "$SNAPSHOT_JOBS" >"$WORK/walrelay-snapshot.log" 2>&1; then
    redact <"$WORK/walrelay-snapshot.log" | tail -n 30 >&2
    die "walrelay snapshot failed"
fi
SNAPSHOT_SECS=$(secs "$T0" "$(now)")
log "walrelay snapshot done in ${SNAPSHOT_SECS}s"

# shellcheck disable=SC2206
RUN_CMD=("${WALRELAY_BASE[@]}" run --http "127.0.0.1:$HTTP_PORT" --verify-interval 0s $WALRELAY_RUN_ARGS)
WALRELAY_RUN_CMD=$(printf '%q ' "${RUN_CMD[@]:1}" | redact)
log "walrelay $WALRELAY_RUN_CMD"
"${RUN_CMD[@]}" >"$WORK/walrelay-run.log" 2>&1 &
WR_PID=$!
BG_PIDS+=("$WR_PID")
STATUS_URL=http://127.0.0.1:$HTTP_PORT/status
stage() { curl -s -m 2 "$STATUS_URL" 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["stage"] + ("" if s["connected"] else "/disconnected"))' 2>/dev/null || echo unreachable; }
wr_alive() { kill -0 "$WR_PID" 2>/dev/null; }
STAGE=unreachable
for _ in $(seq 1 $((TOOL_TIMEOUT * 5))); do
    STAGE=$(stage)
    [[ $STAGE == streaming ]] && break
    wr_alive || break
    sleep 0.2
done
wr_alive || { redact <"$WORK/walrelay-run.log" | tail -n 30 >&2; die "walrelay run exited early: walrelay $WALRELAY_RUN_CMD"; }
[[ $STAGE == streaming ]] || die "walrelay run is not streaming after ${TOOL_TIMEOUT}s (/status stage: $STAGE)"
caught_up 120 || die "walrelay run did not catch up within 120 s"
compare before
[[ ${CHECK[before]} == match ]] || die "the target does not start equal to the source"

# ---------------------------------------------------------------- runs
# pgbench's progress lines (-P 1 --progress-timestamp): "progress: EPOCH s, TPS tps, …".
# Prints the mean tps of the whole seconds within [from, to] and how many there were ("- 0"
# when the span holds no whole second of progress).
tps_between() { # log from to
    python3 - "$@" <<'PY'
import re, sys
path, a, b = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
xs = []
for line in open(path, errors="replace"):
    m = re.match(r"progress: ([0-9.]+) s, ([0-9.]+) tps", line)
    if m and a <= float(m.group(1)) - 1 and float(m.group(1)) <= b:
        xs.append(float(m.group(2)))
print("{:.0f} {}".format(sum(xs) / len(xs), len(xs)) if xs else "- 0")
PY
}
# The cutover's JSON report, one tab-separated line, "-" for a missing field.
CUT_FIELDS="safe fence_to_verdict_seconds marker_wait_seconds verify_seconds rows_verified lag_gate_seconds total_seconds final_verify touched_keys touched_whole_tables pre_fence_verify_seconds pre_fence_rows_verified sessions_terminated reasons warnings"
parse_cutover() { # json-file
    python3 - "$1" "$CUT_FIELDS" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("\t".join(["unreadable"] + ["-"] * (len(sys.argv[2].split()) - 1)))
    sys.exit(0)
out = []
for k in sys.argv[2].split():
    v = r.get(k)
    if v is None or v == []:
        out.append("-")
    elif isinstance(v, bool):
        out.append("yes" if v else "no")
    elif isinstance(v, float):
        out.append("{:.3f}".format(v))
    elif isinstance(v, list):
        out.append(" | ".join(str(x) for x in v).replace("\t", " ").replace("\n", " "))
    else:
        out.append(str(v).replace("\t", " ").replace("\n", " "))
print("\t".join(out))
PY
}

# shellcheck disable=SC2206
CUT_EXTRA=($CUTOVER_ARGS)
CUTOVER_CMD="walrelay --source … --target … cutover --fence --json${CUTOVER_ARGS:+ $CUTOVER_ARGS}"
declare -A R   # R[run,field]
WINDOWS=()
for run in $(seq 1 "$RUNS"); do
    log "run $run/$RUNS: pgbench -c $CLIENTS -j $PGBENCH_THREADS -T $LOAD_SECS -n, cutover after ${WARMUP_SECS}s"
    PGB_LOG=$WORK/pgbench-$run.log
    "$PG_BINDIR/pgbench" -c "$CLIENTS" -j "$PGBENCH_THREADS" -T "$LOAD_SECS" -n -P 1 --progress-timestamp "$SRC_URL" >"$PGB_LOG" 2>&1 &
    PGB_PID=$!
    BG_PIDS+=("$PGB_PID")
    T_LOAD=$(now)
    R[$run,load_before]=$(loadavg)
    sleep "$WARMUP_SECS"
    if ! kill -0 "$PGB_PID" 2>/dev/null; then
        redact <"$PGB_LOG" | tail -n 20 >&2
        die "run $run: pgbench ended before the cutover"
    fi
    wr_alive || die "run $run: walrelay run is gone (see $WORK/walrelay-run.log; KEEP_TMP=1 keeps it)"
    T_CUT=$(now)
    if timeout "$TOOL_TIMEOUT" "${WALRELAY_BASE[@]}" cutover --fence --json "${CUT_EXTRA[@]}" \
        >"$WORK/cutover-$run.json" 2>"$WORK/cutover-$run.log"; then rc=0; else rc=$?; fi
    T_VERDICT=$(now)
    R[$run,rc]=$rc
    R[$run,wall]=$(secs "$T_CUT" "$T_VERDICT")
    IFS=$'\t' read -r -a vals < <(parse_cutover "$WORK/cutover-$run.json")
    i=0
    for f in $CUT_FIELDS; do
        R[$run,$f]=${vals[$i]:--}
        i=$((i + 1))
    done
    # pgbench must have been ended by the fence (its clients abort: exit 2, expected).
    PGB_RC=running
    if [[ ${R[$run,fence_to_verdict_seconds]} != - ]]; then   # fenced: pgbench should be ending
        for _ in $(seq 1 100); do
            kill -0 "$PGB_PID" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if kill -0 "$PGB_PID" 2>/dev/null; then
        kill -TERM "$PGB_PID" 2>/dev/null || true
        wait "$PGB_PID" 2>/dev/null || true
        if [[ ${R[$run,safe]} == yes ]]; then
            FAILED=1
            note "run $run: pgbench was still running 10 s after a fenced cutover reported safe (stopped by the script)"
        fi
        PGB_RC="still running (stopped)"
    else
        if wait "$PGB_PID"; then PGB_RC=0; else PGB_RC=$?; fi
    fi
    R[$run,pgbench_rc]=$PGB_RC
    R[$run,load_after]=$(loadavg)
    # Load: the warm-up, and the cutover's own time before the fence (lag gate and, with
    # --final-verify touched, the verification pass before the fence; pgbench still writes).
    T_FENCE=$T_VERDICT
    if [[ ${R[$run,fence_to_verdict_seconds]} != - ]]; then
        T_FENCE=$(awk -v v="$T_VERDICT" -v w="${R[$run,fence_to_verdict_seconds]}" 'BEGIN { printf "%.3f", v - w }')
    fi
    read -r "R[$run,tps_warm]" "R[$run,n_warm]" < <(tps_between "$PGB_LOG" "$T_LOAD" "$T_CUT")
    read -r "R[$run,tps_pre]" "R[$run,n_pre]" < <(tps_between "$PGB_LOG" "$T_CUT" "$T_FENCE")
    R[$run,pgbench_txns]=$(awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$PGB_LOG")
    R[$run,pgbench_aborted]=$(grep -c 'client [0-9]* .*aborted' "$PGB_LOG" || true)
    R[$run,rest]=-
    if [[ ${R[$run,fence_to_verdict_seconds]} != - ]]; then
        WINDOWS+=("${R[$run,fence_to_verdict_seconds]}")
        # What the window holds besides the marker wait and the final verification: the fence
        # itself (ending the sessions), the sequence sync, the tracker's last changes.
        R[$run,rest]=$(awk -v w="${R[$run,fence_to_verdict_seconds]}" -v m="${R[$run,marker_wait_seconds]}" -v f="${R[$run,verify_seconds]}" \
            'BEGIN { printf "%.3f", w - m - f }')
    fi
    log "run $run: cutover exit $rc, safe ${R[$run,safe]}, window ${R[$run,fence_to_verdict_seconds]} s (marker wait ${R[$run,marker_wait_seconds]} s, final verify ${R[$run,final_verify]} ${R[$run,verify_seconds]} s, ${R[$run,rows_verified]} rows), total ${R[$run,total_seconds]} s; pgbench ${R[$run,tps_warm]} tps before, exit $PGB_RC"
    if [[ $rc -ne 0 || ${R[$run,safe]} != yes ]]; then
        FAILED=1
        note "run $run: cutover exit $rc, safe ${R[$run,safe]}: ${R[$run,reasons]}"
        redact <"$WORK/cutover-$run.log" | tail -n 20 >&2
    fi
    # The fence holds: a new session cannot write.
    if [[ ${R[$run,safe]} == yes ]]; then
        if q "$SRC_URL" "UPDATE pgbench_branches SET filler = filler WHERE false" >/dev/null 2>"$WORK/fence-$run.err"; then
            R[$run,fence_holds]=no
            FAILED=1
            note "run $run: after the fenced cutover a new session could still write on the source"
        elif grep -q 'read-only transaction' "$WORK/fence-$run.err"; then
            R[$run,fence_holds]=yes
        else
            R[$run,fence_holds]="? ($(head -n 1 "$WORK/fence-$run.err" | redact))"
        fi
        if [[ $CHECK_EACH_RUN -eq 1 ]]; then
            # The source is fenced and the target applied past the marker: they must be equal now.
            compare "run-$run"
        fi
    fi
    wr_alive || { FAILED=1; note "run $run: walrelay run died during the cutover"; break; }
    if "${WALRELAY_BASE[@]}" cutover --unfence >"$WORK/unfence-$run.log" 2>&1; then
        UNF=$(q "$SRC_URL" "SHOW default_transaction_read_only" 2>/dev/null || echo "?")
        [[ $UNF == off ]] || { FAILED=1; note "run $run: after --unfence a new session has default_transaction_read_only = $UNF"; }
    else
        FAILED=1
        note "run $run: walrelay cutover --unfence failed: $(redact <"$WORK/unfence-$run.log" | tail -n 3 | tr '\n' ' ')"
        break
    fi
done

# ---------------------------------------------------------------- final check and stop
log "after the last run: waiting for walrelay to catch up, then comparing ($VERIFY)"
if wr_alive && caught_up "$TOOL_TIMEOUT"; then
    compare final
else
    FAILED=1
    CHECK[final]="not compared: walrelay run $(wr_alive && echo "did not catch up within ${TOOL_TIMEOUT}s" || echo "is gone")"
    note "${CHECK[final]}"
fi
WR_RSS=$(awk '$1 == "VmHWM:" { print int($2 / 1024) }' "/proc/$WR_PID/status" 2>/dev/null || echo "?")
log "SIGTERM to walrelay run (pid $WR_PID)"
kill -TERM "$WR_PID" 2>/dev/null || true
WR_RC=timeout
for _ in $(seq 1 600); do
    wr_alive || break
    sleep 0.1
done
if wr_alive; then
    FAILED=1
    note "walrelay run did not exit within 60 s of SIGTERM"
    kill -KILL "$WR_PID" 2>/dev/null || true
    wait "$WR_PID" 2>/dev/null || true
else
    if wait "$WR_PID"; then WR_RC=0; else WR_RC=$?; fi
    [[ $WR_RC -eq 0 ]] || { FAILED=1; note "walrelay run exited $WR_RC after SIGTERM (expected 0)"; redact <"$WORK/walrelay-run.log" | tail -n 30 >&2; }
fi
log "walrelay run: exit $WR_RC after SIGTERM"

# ---------------------------------------------------------------- report
BUSY=""
for run in $(seq 1 "$RUNS"); do
    l=${R[$run,load_before]:-}
    [[ -n $l ]] || continue
    if awk -v l="${l%% *}" -v c="$(nproc)" 'BEGIN { exit !(l + 0 > c + 0) }'; then BUSY+=" $run"; fi
done
if [[ -n $BUSY ]]; then
    note "the 1-minute load average exceeded the $(nproc) cores before run(s)$BUSY: something else was running; those figures are only roughly comparable"
fi
STATS=$(python3 - "$TARGET_WINDOW" "${WINDOWS[@]}" <<'PY'
import statistics, sys
t = float(sys.argv[1]); xs = [float(x) for x in sys.argv[2:]]
if not xs:
    print("- - - no figure"); sys.exit(0)
m = statistics.median(xs)
print("{:.2f} {:.2f} {:.2f} {}".format(m, max(xs), min(xs), "met" if m <= t else "NOT met"))
PY
)
read -r W_MEDIAN W_MAX W_MIN W_MET <<<"$STATS"
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
walrelay_version=$("$WALRELAY_BIN" --version 2>/dev/null || echo "?")
v() { echo "${R[$1,$2]:--}"; }
{
    echo "# walrelay cutover benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "pgbench scale $SCALE (source database $SRC_SIZE); $RUNS run(s) of \`pgbench -c $CLIENTS -j $PGBENCH_THREADS -T $LOAD_SECS -n\`"
    echo "on the source while \`walrelay run\` streams into the target; after ${WARMUP_SECS}s of load:"
    echo "\`$CUTOVER_CMD\`."
    echo
    echo "**Write-unavailability window (fence → verdict): median $W_MEDIAN s, max $W_MAX s, min $W_MIN s"
    echo "over ${#WINDOWS[@]} run(s); target median ≤ $TARGET_WINDOW s: $W_MET.**"
    echo
    echo "## Runs"
    echo
    echo "| run | tps before (warm-up) | tps during cutover, before the fence | lag gate s | verify before the fence s | **window s** | marker wait s | final verify | final verify s | rest of the window s | rows / keys verified | sessions ended | safe | exit | fence held | target = source (fenced) |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- |"
    for run in $(seq 1 "$RUNS"); do
        [[ -n ${R[$run,rc]:-} ]] || continue
        fv=$(v "$run" final_verify)
        keys=$(v "$run" rows_verified)
        if [[ $fv == touched ]]; then keys="$keys ($(v "$run" touched_keys) keys, $(v "$run" touched_whole_tables) tables whole)"; fi
        echo "| $run | $(v "$run" tps_warm) | $(v "$run" tps_pre) | $(v "$run" lag_gate_seconds) | $(v "$run" pre_fence_verify_seconds) | **$(v "$run" fence_to_verdict_seconds)** | $(v "$run" marker_wait_seconds) | $fv | $(v "$run" verify_seconds) | $(v "$run" rest) | $keys | $(v "$run" sessions_terminated) | $(v "$run" safe) | $(v "$run" rc) | $(v "$run" fence_holds) | ${CHECK[run-$run]:-not compared} |"
    done
    echo
    echo "- window: the report's \`fence_to_verdict_seconds\`: from the fence (\`ALTER DATABASE … SET"
    echo "  default_transaction_read_only = on\`, writers' sessions ended) to the verdict; it covers the marker"
    echo "  wait, the sequence sync and the final verification; rest = window − marker wait − final verify s (the fence"
    echo "  itself, ending the sessions, the sequence sync, bookkeeping)"
    echo "- rows / keys verified: \`rows_verified\`; with \`touched\`, the changed keys compared and the tables compared whole"
    echo "  (a table without a primary key, such as \`pgbench_history\`, is compared whole: every row)"
    echo "- tps: mean of pgbench's per-second progress (\`-P 1\`) over the warm-up, and over the cutover's time before"
    echo "  the fence (lag gate and, with \`--final-verify touched\`, the verification pass before the fence); whole"
    echo "  seconds only (\`-\` when that phase was shorter than one progress interval)"
    echo "- fence held: a new session's \`UPDATE\` on the source failed with \"read-only transaction\" after the verdict"
    echo "- target = source: counts, balance sums$([[ $VERIFY == hash ]] && echo " and content hashes") of the pgbench tables, compared while the source was still fenced"
    echo
    echo "| run | cutover wall s | total_seconds | pgbench exit | pgbench txns | clients aborted | load avg before → after |"
    echo "| ---: | ---: | ---: | --- | ---: | ---: | --- |"
    for run in $(seq 1 "$RUNS"); do
        [[ -n ${R[$run,rc]:-} ]] || continue
        echo "| $run | $(v "$run" wall) | $(v "$run" total_seconds) | $(v "$run" pgbench_rc) | $(v "$run" pgbench_txns) | $(v "$run" pgbench_aborted) | $(v "$run" load_before) → $(v "$run" load_after) |"
    done
    echo
    for run in $(seq 1 "$RUNS"); do
        [[ -n ${R[$run,rc]:-} ]] || continue
        [[ $(v "$run" reasons) != - ]] && echo "- run $run, not safe because: $(v "$run" reasons | redact)"
        [[ $(v "$run" warnings) != - ]] && echo "- run $run, warnings: $(v "$run" warnings | redact)"
    done
    echo
    echo "## Copies"
    echo
    for k in before $(for r in $(seq 1 "$RUNS"); do echo "run-$r"; done) final; do
        if [[ -n ${CHECK[$k]:-} ]]; then echo "- $k: ${CHECK[$k]}"; fi
    done
    echo "- walrelay run: exit $WR_RC after SIGTERM (expected 0); peak RSS ${WR_RSS} MB"
    echo
    echo "Source at the end:"
    echo
    echo '```'
    echo "${SRC_FP:-}"
    echo '```'
    if ((${#NOTES[@]})); then
        echo
        echo "## Notes"
        echo
        for n in "${NOTES[@]}"; do echo "- $n"; done
    fi
    echo
    echo "## Machine and settings"
    echo
    echo "- CPU: $(nproc) cores ($cpu_model); memory $mem_total; kernel $(uname -r)"
    echo "- $PG_VERSION ($PG_BINDIR): source and target clusters on this machine; clients over TCP 127.0.0.1, SCRAM, sslmode=disable"
    echo "- walrelay: $walrelay_version (built from $WALRELAY_COMMIT), binary copied from $WALRELAY_SRC_BIN (built $WALRELAY_BIN_MTIME)"
    echo "- both clusters: wal_level=logical, max_wal_senders=10, max_replication_slots=10, shared_buffers=$SHARED_BUFFERS,"
    echo "  max_wal_size=4GB, checkpoint_timeout=30min; fsync, synchronous_commit, full_page_writes, autovacuum at their defaults"
    echo "- \`walrelay snapshot --jobs $SNAPSHOT_JOBS\` (${SNAPSHOT_SECS}s), then \`walrelay $WALRELAY_RUN_CMD\`"
    echo "- pgbench_history: \`REPLICA IDENTITY FULL\` on the source (no primary key)"
    echo "- settings: SCALE=$SCALE RUNS=$RUNS CLIENTS=$CLIENTS PGBENCH_THREADS=$PGBENCH_THREADS LOAD_SECS=$LOAD_SECS WARMUP_SECS=$WARMUP_SECS CUTOVER_ARGS='$CUTOVER_ARGS' VERIFY=$VERIFY"
    for run in $(seq "$RUNS" -1 1); do
        if [[ -s $WORK/cutover-$run.json ]]; then
            echo
            echo "## Cutover report of run $run (JSON)"
            echo
            echo '```json'
            redact <"$WORK/cutover-$run.json"
            echo '```'
            break
        fi
    done
} >"$WORK/report.md"

bench_publish_report
log "window (fence → verdict): median $W_MEDIAN s, max $W_MAX s over ${#WINDOWS[@]} run(s); target ≤ $TARGET_WINDOW s: $W_MET"
log "report written to $REPORT"
if [[ $FAILED -ne 0 ]]; then
    log "something failed or a copy differs from the source (see above)"
    exit 1
fi
exit 0
