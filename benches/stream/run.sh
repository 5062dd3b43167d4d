#!/usr/bin/env bash
# Stream/apply benchmark (issue 4): walrelay's change apply vs the native apply worker.
#
# (a) Catch-up: with nothing streaming, `pgbench -c 4` writes $TXNS transactions into the
#     source; then `walrelay stream --exit-when-caught-up` applies that backlog into target
#     database `wr`, and a native subscription (`copy_data = false`, on a slot created at the
#     same point) applies the same backlog into target database `native`. Transactions/s,
#     WAL MB/s, peak RSS, ratio walrelay/native (target ≥ 1.0).
# (b) Steady state: `walrelay run --http` streams while pgbench runs flat out for
#     $STEADY_SECS seconds; /status is sampled every second: lag p50/p99/max in bytes and
#     seconds, peak RSS (target ≤ 150 MB), then SIGTERM must exit 0.
# Both targets are checked against the source (row counts, balance sums, content hashes).
# It reports speed; it does not assert it. Exit 1 only when something failed or a copy
# came out wrong.
#
# Smoke run:  SCALE=1 TXNS=20000 STEADY_SECS=15 benches/stream/run.sh
# Full run:   benches/stream/run.sh
# See benches/README.md (section "stream") for every knob.
set -euo pipefail

# ---------------------------------------------------------------- settings
SCALE=${SCALE:-10}                      # pgbench scale (100k pgbench_accounts rows each)
TXNS=${TXNS:-200000}                    # backlog transactions for (a), split over CLIENTS
CLIENTS=${CLIENTS:-4}                   # pgbench -c
PGBENCH_THREADS=${PGBENCH_THREADS:-2}   # pgbench -j
STEADY_SECS=${STEADY_SECS:-60}          # (b) duration; 0 skips (b)
SNAPSHOT_JOBS=${SNAPSHOT_JOBS:-2}       # walrelay snapshot --jobs
ORDER=${ORDER:-"walrelay native"}       # catch-up order
WALRELAY_STREAM_ARGS=${WALRELAY_STREAM_ARGS:-}   # extra arguments after `stream` / `run`
VERIFY=${VERIFY:-hash}                  # hash: counts + sums + content hashes; sum: counts + sums
MAP=${MAP:-0}                           # 1: walrelay runs with a --map renaming every table's filler
                                        #    column and null-masking pgbench_history's (always NULL there)
SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-1800}      # seconds before a catch-up / drain is given up
# KEEP_TMP, BENCH_TMPDIR, INSTALL, POLL, PG_BINDIR, WALRELAY_BIN: see benches/lib.sh

BENCH_NAME=stream
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/stream-$STAMP.md
PER_CLIENT=$((TXNS / CLIENTS))
TXNS=$((PER_CLIENT * CLIENTS))          # what pgbench -t actually runs
((TXNS > 0)) || { echo "TXNS must be ≥ CLIENTS" >&2; exit 2; }
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

# ---------------------------------------------------------------- prerequisites
bench_prereqs /usr/bin/time:time curl python3
bench_build_walrelay
bench_workdir   # runs a private copy of the binary: target/release is shared with other builds

# ---------------------------------------------------------------- clusters
start_replication_pair

SRC_DB=bench
SRC_URL=$(url "$SRC_PORT" "$SRC_DB")
WR_URL=$(url "$TGT_PORT" wr)
NATIVE_URL=$(url "$TGT_PORT" native)
SRC_CONNINFO="host=127.0.0.1 port=$SRC_PORT dbname=$SRC_DB user=postgres password=$PGPASS sslmode=disable"
src() { q "$SRC_URL" "$1"; }
tgt() { q "$(url "$TGT_PORT" "$1")" "$2"; }
checkpoint_all() { src "CHECKPOINT"; tgt postgres "CHECKPOINT"; }

q "$(url "$SRC_PORT" postgres)" "CREATE DATABASE $SRC_DB"
tgt postgres "CREATE DATABASE wr"
tgt postgres "CREATE DATABASE native"

# ---------------------------------------------------------------- load
log "pgbench -i -s $SCALE on the source"
"$PG_BINDIR/pgbench" -i -s "$SCALE" -q "$SRC_URL" >"$WORK/pgbench-init.log" 2>&1 \
    || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
# pgbench_history has no primary key: walrelay's snapshot refuses to publish it without a
# replica identity (UPDATE/DELETE would fail on the source), so it gets REPLICA IDENTITY FULL.
src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
src "VACUUM ANALYZE"
src "CHECKPOINT"

# ---------------------------------------------------------------- checks
declare -A CHECK
compare() { # label url ; sets CHECK[label], FAILED on difference
    local label=$1 url=$2 fp d
    if ! fp=$(pgbench_fingerprint "$url" 2>"$WORK/check-$label.err"); then
        CHECK[$label]="check query failed: $(head -n 2 "$WORK/check-$label.err" | tr '\n' ' ' | redact)"
        log "$label: ${CHECK[$label]}"
        FAILED=1
        return
    fi
    if [[ $fp == "$SRC_FP" ]]; then
        CHECK[$label]=match
        log "$label: matches the source"
    else
        d=$(diff <(echo "$SRC_FP") <(echo "$fp") | grep '^[<>]' | tr '\n' ' ' || true)
        CHECK[$label]="MISMATCH (< source, > target): $d"
        log "$label: ${CHECK[$label]}"
        FAILED=1
    fi
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
per_sec() { awk -v n="$1" -v s="$2" -v d="${3:-0}" 'BEGIN { if (s > 0) printf "%.*f", d, n / s; else print "-" }'; }

# parse_time FILE -> "wall_seconds max_rss_kb"
parse_time() {
    awk -F': ' '
        /Elapsed \(wall clock\) time/ {
            n = split($NF, p, ":"); s = 0
            for (i = 1; i <= n; i++) s = s * 60 + p[i]
            wall = s
        }
        /Maximum resident set size/ { rss = $NF }
        END { printf "%.2f %d\n", wall, rss }' "$1"
}
proc_kb() { # pid field -> kB (0 if gone)
    [[ -r /proc/$1/status ]] || { echo 0; return; }
    awk -v f="$2:" '$1 == f { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null
}

# ---------------------------------------------------------------- (a) setup
SLOT=walrelay
PUB=walrelay
NATIVE_SLOT=native_bench
log "walrelay snapshot into target database wr"
WALRELAY_BASE=("$WALRELAY_BIN" --source "$SRC_URL" --target "$WR_URL" --slot "$SLOT" --publication "$PUB")
if [[ $MAP == 1 ]]; then
    # Content-neutral for the fingerprints (row text forms carry no column names, and
    # pgbench leaves pgbench_history.filler NULL), but every change goes through the map.
    for t in accounts branches tellers history; do
        printf '[[table]]\nsource = "public.pgbench_%s"\nrename = { filler = "pad" }\n' "$t"
        [[ $t == history ]] && printf 'mask = { filler = "null" }\n'
    done >"$WORK/map.toml"
    WALRELAY_BASE+=(--map "$WORK/map.toml")
    log "walrelay runs with --map $WORK/map.toml"
fi
T0=$(now)
if ! timeout "$TOOL_TIMEOUT" "${WALRELAY_BASE[@]}" snapshot --jobs "$SNAPSHOT_JOBS" >"$WORK/walrelay-snapshot.log" 2>&1; then
    redact <"$WORK/walrelay-snapshot.log" | tail -n 30 >&2
    die "walrelay snapshot failed: $(printf '%q ' "${WALRELAY_BASE[@]}" | redact) snapshot --jobs $SNAPSHOT_JOBS"
fi
SNAPSHOT_SECS=$(secs "$T0" "$(now)")
log "walrelay snapshot done in ${SNAPSHOT_SECS}s"

# The native slot starts here too, before the backlog; the source is idle from now until pgbench.
src "SELECT pg_create_logical_replication_slot('$NATIVE_SLOT', 'pgoutput')" >/dev/null
PUB_TABLES=$(src "SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '$PUB'")
log "publication $PUB: $PUB_TABLES"

log "copying schema and data into target database native (pg_dump | pg_restore)"
"$PG_BINDIR/pg_dump" -Fc --no-publications --no-subscriptions -f "$WORK/native.dump" "$SRC_URL"
"$PG_BINDIR/pg_restore" --no-owner --no-acl -d "$NATIVE_URL" "$WORK/native.dump" >"$WORK/native-restore.log" 2>&1 \
    || { redact <"$WORK/native-restore.log" >&2; die "pg_restore into native failed"; }
rm -f "$WORK/native.dump"

log "fingerprinting source and both targets before the backlog ($VERIFY)"
SRC_FP=$(pgbench_fingerprint "$SRC_URL")
compare before-wr "$WR_URL"
compare before-native "$NATIVE_URL"
[[ ${CHECK[before-wr]} == match && ${CHECK[before-native]} == match ]] \
    || die "the targets do not start equal to the source"

# ---------------------------------------------------------------- (a) backlog
checkpoint_all
PRE_LSN=$(src "SELECT pg_current_wal_lsn()")
log "backlog: pgbench -c $CLIENTS -j $PGBENCH_THREADS -t $PER_CLIENT -n ($TXNS transactions), nothing streaming"
"$PG_BINDIR/pgbench" -c "$CLIENTS" -j "$PGBENCH_THREADS" -t "$PER_CLIENT" -n "$SRC_URL" >"$WORK/pgbench-backlog.log" 2>&1 \
    || { redact <"$WORK/pgbench-backlog.log" >&2; die "pgbench (backlog) failed"; }
BACKLOG_TPS=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$WORK/pgbench-backlog.log")
BACKLOG_DONE=$(awk -F': ' '/number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$WORK/pgbench-backlog.log")
[[ $BACKLOG_DONE == "$TXNS" ]] || die "pgbench processed $BACKLOG_DONE transactions, expected $TXNS"
POST_LSN=$(src "SELECT pg_current_wal_lsn()")
# End marker: one replicated no-op transaction after the backlog. Commit order is kept by
# both appliers, so "the target applied a commit that ends after MARK_LSN" means the whole
# backlog (and the marker) is applied; measured the same way on both targets.
MARK_LSN=$(src "SELECT pg_current_wal_insert_lsn()")
src "UPDATE pgbench_branches SET filler = filler WHERE bid = 1"
WAL_BYTES=$(src "SELECT pg_wal_lsn_diff('$POST_LSN', '$PRE_LSN')::bigint")
WAL_MB=$(mb "$WAL_BYTES")
log "backlog written: $TXNS transactions at $BACKLOG_TPS tps, WAL $PRE_LSN → $POST_LSN = $WAL_MB MB"
SRC_FP=$(pgbench_fingerprint "$SRC_URL")
checkpoint_all

declare -A A_WALL A_APPLIED A_ACK A_RSS A_PRIV A_STATUS A_DETAIL A_CPU CPU_WATCHERS A_LOAD A_APPLY_CPU
CLK_TCK=$(getconf CLK_TCK)

# Follows one server process (found by a query returning its pid) and keeps its CPU time
# (utime + stime, seconds) in $WORK/cpu-NAME.txt until it exits or cpu_stop NAME.
cpu_watch() { # name url pid-query
    local name=$1 url=$2 sql=$3
    (
        pid=""
        for _ in $(seq 1 300); do
            pid=$(q "$url" "$sql" 2>/dev/null || true)
            [[ -n $pid ]] && break
            sleep 0.1
        done
        [[ -n $pid ]] || exit 0
        while [[ ! -e $WORK/stop-cpu-$name && -r /proc/$pid/stat ]]; do
            v=$(sed -E 's/^.*\) //' "/proc/$pid/stat" 2>/dev/null | awk -v t="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / t }' || true)
            [[ -n $v ]] && echo "$v" >"$WORK/cpu-$name.txt"
            sleep 0.2
        done
    ) &
    CPU_WATCHERS[$name]=$!
    BG_PIDS+=("$!")
}
cpu_stop() { # name -> prints the CPU seconds (or ?)
    touch "$WORK/stop-cpu-$1"
    wait "${CPU_WATCHERS[$1]}" 2>/dev/null || true
    cat "$WORK/cpu-$1.txt" 2>/dev/null || echo "?"
}
SLOT_PID_SQL="SELECT active_pid FROM pg_replication_slots WHERE slot_name = '%s' AND active_pid IS NOT NULL"

catchup_walrelay() {
    local tf=$WORK/time-walrelay-stream.txt logf=$WORK/walrelay-stream.log rc t0 t_applied wall rss
    local cmd=("${WALRELAY_BASE[@]}" stream --exit-when-caught-up)
    # shellcheck disable=SC2206
    cmd+=($WALRELAY_STREAM_ARGS)
    WALRELAY_STREAM_CMD=$(printf '%q ' "${cmd[@]}" | redact)
    log "catch-up: walrelay: $WALRELAY_STREAM_CMD"
    # Target-side watcher: when walrelay.progress passed the marker (applied and committed).
    wait_until "$WR_URL" "SELECT applied_lsn > '$MARK_LSN'::pg_lsn FROM walrelay.progress WHERE slot_name = '$SLOT'" \
        "$TOOL_TIMEOUT" >"$WORK/walrelay-applied.txt" 2>&1 &
    local watcher=$!
    BG_PIDS+=("$watcher")
    cpu_watch wr-backend "$WR_URL" "SELECT pid FROM pg_stat_activity WHERE datname = 'wr' AND application_name = 'walrelay-apply' LIMIT 1"
    # shellcheck disable=SC2059
    cpu_watch wr-walsender "$SRC_URL" "$(printf "$SLOT_PID_SQL" "$SLOT")"
    sleep 0.5   # watcher connected
    A_LOAD[walrelay]="$(loadavg)"
    t0=$(now)
    if /usr/bin/time -v -o "$tf" timeout "$TOOL_TIMEOUT" "${cmd[@]}" >"$logf" 2>&1; then rc=0; else rc=$?; fi
    read -r wall rss < <(parse_time "$tf")
    A_CPU[walrelay]=$(awk -F': ' '/User time|System time/ { s += $NF } END { printf "%.2f", s }' "$tf")
    A_WALL[walrelay]=$wall
    A_RSS[walrelay]=$rss
    if [[ $rc -ne 0 ]]; then
        sleep 1
        kill "$watcher" 2>/dev/null || true
        stop_waiters "$WR_URL"
    fi
    if wait "$watcher" && t_applied=$(tail -n 1 "$WORK/walrelay-applied.txt") && [[ -n $t_applied ]]; then
        A_APPLIED[walrelay]=$(secs "$t0" "$t_applied")
    else
        A_APPLIED[walrelay]=-
    fi
    local acked applied
    acked=$(src "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")
    applied=$(tgt wr "SELECT applied_lsn FROM walrelay.progress WHERE slot_name = '$SLOT'" 2>/dev/null || echo "?")
    local cpu_backend cpu_walsender
    cpu_backend=$(cpu_stop wr-backend)
    cpu_walsender=$(cpu_stop wr-walsender)
    A_LOAD[walrelay]+=" → $(loadavg)"
    A_APPLY_CPU[walrelay]=$(awk -v a="${A_CPU[walrelay]}" -v b="$cpu_backend" 'BEGIN { if (b == "?") print "-"; else printf "%.2f", a + b }')
    A_DETAIL[walrelay]="exit $rc; CPU seconds (user+sys) in ${wall}s wall: walrelay ${A_CPU[walrelay]}, its target backend $cpu_backend, source walsender $cpu_walsender; after exit: walrelay.progress.applied_lsn $applied, slot confirmed_flush_lsn $acked (post-backlog LSN $POST_LSN)"
    if [[ $rc -eq 0 ]]; then
        A_STATUS[walrelay]=ok
    else
        A_STATUS[walrelay]="failed (exit $rc$([[ $rc -eq 124 ]] && echo ", killed after ${TOOL_TIMEOUT}s"))"
        FAILED=1
        log "walrelay stream failed: exit $rc; command: $WALRELAY_STREAM_CMD; last lines:"
        redact <"$logf" | tail -n 30 >&2
    fi
    log "walrelay: exit $rc, process wall ${wall}s, applied the backlog after ${A_APPLIED[walrelay]}s, peak RSS $((rss / 1024)) MB"
}

catchup_native() {
    local t0 t_applied t_ack sampler pid=""
    log "catch-up: native: CREATE SUBSCRIPTION $NATIVE_SLOT … PUBLICATION $PUB WITH (copy_data = false, create_slot = false, slot_name = '$NATIVE_SLOT')"
    # Watchers: applied on the target (replication origin passed the marker) and
    # acknowledged to the source (slot confirmed_flush reached the post-backlog LSN).
    wait_until "$NATIVE_URL" "SELECT s.remote_lsn > '$MARK_LSN'::pg_lsn FROM pg_replication_origin_status s
                                JOIN pg_subscription sub ON s.external_id = 'pg_' || sub.oid
                               WHERE sub.subname = '$NATIVE_SLOT'" \
        "$TOOL_TIMEOUT" >"$WORK/native-applied.txt" 2>&1 &
    local w_applied=$!
    wait_until "$(url "$SRC_PORT" postgres)" "SELECT confirmed_flush_lsn >= '$POST_LSN'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$NATIVE_SLOT'" \
        "$TOOL_TIMEOUT" >"$WORK/native-ack.txt" 2>&1 &
    local w_ack=$!
    BG_PIDS+=("$w_applied" "$w_ack")
    # shellcheck disable=SC2059
    cpu_watch native-walsender "$SRC_URL" "$(printf "$SLOT_PID_SQL" "$NATIVE_SLOT")"
    sleep 0.5
    A_LOAD[native]="$(loadavg)"
    t0=$(now)
    tgt native "CREATE SUBSCRIPTION $NATIVE_SLOT CONNECTION '$SRC_CONNINFO' PUBLICATION $PUB
                WITH (copy_data = false, create_slot = false, slot_name = '$NATIVE_SLOT')"
    # The apply worker's pid, then its private memory sampled until the watchers are done.
    for _ in $(seq 1 200); do
        pid=$(tgt native "SELECT pid FROM pg_stat_subscription WHERE subname = '$NATIVE_SLOT' AND relid IS NULL AND pid IS NOT NULL")
        [[ -n $pid ]] && break
        sleep 0.05
    done
    if [[ -n $pid ]]; then
        (
            max=0
            while kill -0 "$pid" 2>/dev/null; do
                while read -r k v _; do
                    [[ $k == RssAnon: ]] && ((v > max)) && max=$v
                done <"/proc/$pid/status" 2>/dev/null || true
                echo "$max" >"$WORK/native-anon.txt"
                sleep 0.1
            done
        ) &
        sampler=$!
        BG_PIDS+=("$sampler")
    fi
    if wait "$w_applied" && t_applied=$(tail -n 1 "$WORK/native-applied.txt") && [[ -n $t_applied ]]; then
        A_APPLIED[native]=$(secs "$t0" "$t_applied")
        A_STATUS[native]=ok
    else
        A_APPLIED[native]=-
        A_STATUS[native]="failed: $(tail -n 2 "$WORK/native-applied.txt" | tr '\n' ' ')"
        FAILED=1
    fi
    if wait "$w_ack" && t_ack=$(tail -n 1 "$WORK/native-ack.txt") && [[ -n $t_ack ]]; then
        A_ACK[native]=$(secs "$t0" "$t_ack")
    else
        A_ACK[native]=-
    fi
    A_WALL[native]=${A_ACK[native]}
    if [[ -n $pid ]]; then
        A_RSS[native]=$(proc_kb "$pid" VmHWM)
        # utime + stime (fields 14, 15; the command name in field 2 has spaces)
        A_CPU[native]=$(sed -E 's/^.*\) //' "/proc/$pid/stat" 2>/dev/null | awk -v t="$CLK_TCK" '{ printf "%.2f", ($12 + $13) / t }' || echo "?")
        A_PRIV[native]=$(cat "$WORK/native-anon.txt" 2>/dev/null || echo 0)
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
    else
        A_RSS[native]=0
        A_PRIV[native]=0
        note "the native apply worker's pid was not found: no RSS figure"
    fi
    local cpu_walsender
    cpu_walsender=$(cpu_stop native-walsender)
    A_LOAD[native]+=" → $(loadavg)"
    A_APPLY_CPU[native]=${A_CPU[native]:--}
    tgt native "DROP SUBSCRIPTION $NATIVE_SLOT"   # drops the native slot on the source too
    A_DETAIL[native]="CPU seconds (user+sys) until dropped: apply worker (pid ${pid:-?}) ${A_CPU[native]:-?}, source walsender $cpu_walsender; apply worker VmHWM $((A_RSS[native] / 1024)) MB (counts the shared buffers it touched), peak RssAnon $((A_PRIV[native] / 1024)) MB"
    log "native: applied the backlog after ${A_APPLIED[native]}s, slot acknowledged after ${A_ACK[native]}s; ${A_DETAIL[native]}"
}

# Per table on a target after its catch-up: size, and HOT updates of all updates (the hot
# rows of pgbench_branches/tellers bloat when their dead versions cannot be pruned).
declare -A A_TABLES
table_stats() { # url
    q "$1" "SELECT string_agg(format('%s %s (%s/%s HOT)', relname, pg_size_pretty(pg_table_size(relid)), n_tup_hot_upd, n_tup_upd), ', ' ORDER BY relname)
              FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname IN ('pgbench_accounts', 'pgbench_branches', 'pgbench_tellers')" 2>/dev/null || echo "?"
}
for tool in $ORDER; do
    case $tool in
        walrelay) catchup_walrelay ;;
        native) catchup_native ;;
        *) die "unknown ORDER entry $tool (walrelay, native)" ;;
    esac
    checkpoint_all
    sleep 1   # backends report table statistics at most once a second
    if [[ $tool == walrelay ]]; then A_TABLES[$tool]=$(table_stats "$WR_URL"); else A_TABLES[$tool]=$(table_stats "$NATIVE_URL"); fi
done

log "checking both targets against the source ($VERIFY)"
compare catchup-wr "$WR_URL"
compare catchup-native "$NATIVE_URL"

# ---------------------------------------------------------------- (b) steady state
B_RAN=0
if ((STEADY_SECS > 0)) && [[ ${A_STATUS[walrelay]:-} == ok ]]; then
    B_RAN=1
    tgt postgres "DROP DATABASE native"   # not needed any more; keep the target's work to wr
    checkpoint_all
    # shellcheck disable=SC2206
    RUN_CMD=("${WALRELAY_BASE[@]}" run --http "127.0.0.1:$HTTP_PORT" --jobs "$SNAPSHOT_JOBS" $WALRELAY_STREAM_ARGS)
    WALRELAY_RUN_CMD=$(printf '%q ' "${RUN_CMD[@]}" | redact)
    log "steady state: $WALRELAY_RUN_CMD"
    "${RUN_CMD[@]}" >"$WORK/walrelay-run.log" 2>&1 &
    WR_PID=$!
    BG_PIDS+=("$WR_PID")
    STATUS_URL=http://127.0.0.1:$HTTP_PORT/status
    for _ in $(seq 1 600); do
        curl -s -m 1 "$STATUS_URL" >/dev/null 2>&1 && break
        kill -0 "$WR_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$WR_PID" 2>/dev/null || { redact <"$WORK/walrelay-run.log" | tail -n 30 >&2; die "walrelay run exited early: $WALRELAY_RUN_CMD"; }
    START_LSN=$(src "SELECT pg_current_wal_lsn()")
    wait_until "$(url "$SRC_PORT" postgres)" "SELECT confirmed_flush_lsn >= '$START_LSN'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'" 120 >/dev/null \
        || die "walrelay run did not catch up within 120 s before the steady-state load"
    sleep 3   # one monitor sample (every 2 s) so /status has a source position
    TX_BEFORE=$(curl -s -m 2 "$STATUS_URL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["transactions_applied"])' || echo "?")
    log "caught up; pgbench -c $CLIENTS -j $PGBENCH_THREADS -T $STEADY_SECS -n while streaming, sampling /status every second"
    "$PG_BINDIR/pgbench" -c "$CLIENTS" -j "$PGBENCH_THREADS" -T "$STEADY_SECS" -n "$SRC_URL" >"$WORK/pgbench-steady.log" 2>&1 &
    PGB_PID=$!
    T_LOAD=$(now)
    B_LOAD="$(loadavg)"
    BG_PIDS+=("$PGB_PID")
    SAMPLES=$WORK/samples.tsv
    : >"$SAMPLES"
    while kill -0 "$PGB_PID" 2>/dev/null; do
        ts=$(now)
        st=$(curl -s -m 2 "$STATUS_URL" | tr -d '\n\t' || true)
        [[ -n $st ]] || st='{}'
        # Independent of walrelay's own figures: its checkpoint on the target (read first), then
        # the source's WAL end and the slot's acknowledged position.
        read -r applied age t_tgt < <(tgt wr "SELECT applied_lsn, coalesce(extract(epoch FROM clock_timestamp() - commit_time)::text, '-'),
                                                 extract(epoch FROM clock_timestamp())
                                          FROM walrelay.progress WHERE slot_name = '$SLOT'" 2>/dev/null | tr '|' ' ' || true) || { applied=""; age=""; t_tgt=""; }
        sl=""
        if [[ -n ${applied:-} ]]; then
            sl=$(src "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$applied')::bigint || ' ' || pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                             || ' ' || round((extract(epoch FROM clock_timestamp()) - $t_tgt) * 1000)
                        FROM pg_replication_slots WHERE slot_name = '$SLOT'" 2>/dev/null || true)
        fi
        printf '%s\t%s\t%s\t%s\n' "$ts" "$st" "${sl:-}" "${age:-}" >>"$SAMPLES"
        sleep "$(awk -v a="$ts" -v b="$(now)" 'BEGIN { d = 1 - (b - a); if (d < 0.05) d = 0.05; printf "%.3f", d }')"
    done
    wait "$PGB_PID" || { redact <"$WORK/pgbench-steady.log" >&2; die "pgbench (steady state) failed"; }
    T_END=$(now)
    B_LOAD+=" → $(loadavg)"
    END_LSN=$(src "SELECT pg_current_wal_lsn()")
    STEADY_TPS=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$WORK/pgbench-steady.log")
    STEADY_TXNS=$(awk -F': ' '/number of transactions actually processed/ { print $2 }' "$WORK/pgbench-steady.log")
    STEADY_WAL_MB=$(mb "$(src "SELECT pg_wal_lsn_diff('$END_LSN', '$START_LSN')::bigint")")
    log "pgbench done: $STEADY_TPS tps; waiting for walrelay to drain"
    if T_DRAINED=$(wait_until "$(url "$SRC_PORT" postgres)" "SELECT confirmed_flush_lsn >= '$END_LSN'::pg_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'" "$TOOL_TIMEOUT" | tail -n 1); then
        DRAIN_SECS=$(secs "$T_END" "$T_DRAINED")
    else
        DRAIN_SECS="did not drain in ${TOOL_TIMEOUT}s"
        FAILED=1
    fi
    B_RSS=$(proc_kb "$WR_PID" VmHWM)
    B_RSS_NOW=$(proc_kb "$WR_PID" VmRSS)
    TX_AFTER=$(curl -s -m 2 "$STATUS_URL" | python3 -c 'import json,sys; print(json.load(sys.stdin)["transactions_applied"])' || echo "?")
    METRICS=$(curl -s -m 2 "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^walrelay_(lag_bytes|lag_seconds|transactions_applied_total|errors_total|up)' || true)
    log "SIGTERM to walrelay run (pid $WR_PID)"
    kill -TERM "$WR_PID"
    B_RC=timeout
    for _ in $(seq 1 600); do
        kill -0 "$WR_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$WR_PID" 2>/dev/null; then
        FAILED=1
        note "walrelay run did not exit within 60 s of SIGTERM: $WALRELAY_RUN_CMD"
        kill -KILL "$WR_PID" 2>/dev/null || true
        wait "$WR_PID" 2>/dev/null || true
    else
        if wait "$WR_PID"; then B_RC=0; else B_RC=$?; fi
        [[ $B_RC -eq 0 ]] || { FAILED=1; note "walrelay run exited $B_RC after SIGTERM (expected 0): $WALRELAY_RUN_CMD"; redact <"$WORK/walrelay-run.log" | tail -n 30 >&2; }
    fi
    log "walrelay run: exit $B_RC after SIGTERM, drained ${DRAIN_SECS}s after pgbench ended, peak RSS $((B_RSS / 1024)) MB"
    SRC_FP=$(pgbench_fingerprint "$SRC_URL")
    compare steady-wr "$WR_URL"
    # p50/p99/max over the samples taken while pgbench ran.
    B_STATS=$(python3 - "$SAMPLES" "$T_LOAD" <<'PY'
import json, math, sys
t_load = float(sys.argv[2])
lb, ls, tb, ts_, sl, gap, bad = [], [], [], [], [], [], 0
for line in open(sys.argv[1]):
    ts, st, src, age = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
    try:
        s = json.loads(st)
        lb.append(float(s["lag_bytes"])); ls.append(float(s["lag_seconds"]))
    except Exception:
        bad += 1
    src = src.split()
    if len(src) == 3:
        tb.append(max(0.0, float(src[0]))); sl.append(max(0.0, float(src[1]))); gap.append(float(src[2]))
        # seconds behind: age of the last applied source commit, 0 when nothing is pending;
        # at most the time since the load began (the last commit before it can be old)
        if age.strip() not in ("", "-"):
            ts_.append(min(float(age), float(ts) - t_load) if float(src[0]) > 0 else 0.0)
def pct(xs, p):
    if not xs: return float("nan")
    xs = sorted(xs); return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]
def row(xs, fmt):
    return " ".join(fmt.format(pct(xs, p)) for p in (50, 99, 100))
print(len(lb), bad)
print(row(lb, "{:.0f}"))
print(row(ls, "{:.2f}"))
print(row(tb, "{:.0f}"))
print(row(ts_, "{:.2f}"))
print(row(sl, "{:.0f}"))
print(len(tb))
print("{:.0f}".format(pct(gap, 50)))
PY
)
    read -r N_SAMPLES BAD_SAMPLES < <(sed -n 1p <<<"$B_STATS")
    read -r LB50 LB99 LBMAX < <(sed -n 2p <<<"$B_STATS")
    read -r LS50 LS99 LSMAX < <(sed -n 3p <<<"$B_STATS")
    read -r TB50 TB99 TBMAX < <(sed -n 4p <<<"$B_STATS")
    read -r TS50 TS99 TSMAX < <(sed -n 5p <<<"$B_STATS")
    read -r SL50 SL99 SLMAX < <(sed -n 6p <<<"$B_STATS")
    N_TSAMPLES=$(sed -n 7p <<<"$B_STATS")
    GAP_MS=$(sed -n 8p <<<"$B_STATS")
elif ((STEADY_SECS > 0)); then
    note "steady state (b) skipped: walrelay's catch-up run failed"
fi

# ---------------------------------------------------------------- report
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
walrelay_version=$("$WALRELAY_BIN" --version 2>/dev/null || echo "?")
okrun() { [[ ${A_STATUS[$1]:-} == ok ]]; }
ratio_of() { # secs-walrelay secs-native -> walrelay tx/s ÷ native tx/s
    awk -v w="$1" -v n="$2" 'BEGIN { if (w + 0 > 0 && n + 0 > 0) printf "%.2f", n / w; else print "-" }'
}
RATIO=-
RATIO_ALT=-
CPU_RATIO=$(awk -v w="${A_APPLY_CPU[walrelay]:--}" -v n="${A_APPLY_CPU[native]:--}" 'BEGIN { if (w + 0 > 0 && n + 0 > 0) printf "%.2f", n / w; else print "-" }')
if okrun walrelay && okrun native; then
    RATIO=$(ratio_of "${A_APPLIED[walrelay]}" "${A_APPLIED[native]}")
    RATIO_ALT=$(ratio_of "${A_WALL[walrelay]}" "${A_ACK[native]}")
fi
a_row() { # tool label secs rss ratio
    local s=$3
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$TXNS" "$s" "$(per_sec "$TXNS" "$s")" \
        "$(per_sec "$WAL_MB" "$s" 1)" "${A_APPLY_CPU[$1]:--}" "$4" "$5" "${A_LOAD[$1]:-}"
}
met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { if (v == "-" || v == "") print "no figure"; else if ((op == "ge" && v + 0 >= t) || (op == "le" && v + 0 <= t)) print "met"; else print "NOT met" }'; }

{
    echo "# walrelay stream/apply benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "pgbench scale $SCALE; backlog $TXNS transactions (\`pgbench -c $CLIENTS -j $PGBENCH_THREADS -t $PER_CLIENT -n\`,"
    echo "$BACKLOG_TPS tps while nothing streamed), **$WAL_MB MB of WAL** ($PRE_LSN → $POST_LSN)."
    echo
    echo "## (a) Catch-up: applying the backlog"
    echo
    echo "Seconds: from the start of the tool until the target has committed the last backlog transaction"
    echo "(a marker commit after the backlog: \`walrelay.progress.applied_lsn\` / the subscription's"
    echo "replication origin \`remote_lsn\` passed it; polled server-side every ${POLL}s). Both slots were"
    echo "created before the backlog; order of the runs: $ORDER."
    echo
    echo "| tool | txns | seconds | tx/s | WAL MB/s | apply CPU s | peak RSS MB | walrelay/native tx/s | load avg before → after |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    if okrun walrelay; then
        a_row walrelay "walrelay stream" "${A_APPLIED[walrelay]}" "$((A_RSS[walrelay] / 1024))" "**$RATIO**"
    else
        echo "| walrelay stream | $TXNS | ${A_STATUS[walrelay]:-not run} | - | - | - | - | - | |"
    fi
    if okrun native; then
        a_row native "native subscription" "${A_APPLIED[native]}" "$((A_RSS[native] / 1024)) ($((A_PRIV[native] / 1024)) private)" "1.00"
    else
        echo "| native subscription | $TXNS | ${A_STATUS[native]:-not run} | - | - | - | - | - | |"
    fi
    echo
    echo "apply CPU s: user+sys CPU seconds spent applying, less sensitive to a busy machine than wall time:"
    echo "walrelay = the walrelay process + its target backend; native = the apply worker (a target backend"
    echo "itself). Decoding on the source (the walsender) is the same work for both and listed below."
    echo "CPU ratio native/walrelay (> 1: walrelay needs less CPU per transaction): $CPU_RATIO."
    echo
    echo "Other end points (same runs):"
    echo
    echo "| tool | end point | seconds | tx/s | WAL MB/s |"
    echo "| --- | --- | ---: | ---: | ---: |"
    if okrun walrelay; then
        echo "| walrelay | process wall time of \`stream --exit-when-caught-up\` (start, connect, apply, clean exit) | ${A_WALL[walrelay]} | $(per_sec "$TXNS" "${A_WALL[walrelay]}") | $(per_sec "$WAL_MB" "${A_WALL[walrelay]}" 1) |"
    fi
    if [[ -n ${A_ACK[native]:-} ]]; then
        echo "| native | slot \`confirmed_flush_lsn\` ≥ post-backlog LSN (acknowledged to the source) | ${A_ACK[native]} | $(per_sec "$TXNS" "${A_ACK[native]}") | $(per_sec "$WAL_MB" "${A_ACK[native]}" 1) |"
    fi
    echo
    echo "walrelay/native on these end points: $RATIO_ALT."
    echo
    for tool in walrelay native; do
        if [[ -n ${A_DETAIL[$tool]:-} ]]; then echo "- $tool: ${A_DETAIL[$tool]}"; fi
    done
    for tool in walrelay native; do
        if [[ -n ${A_TABLES[$tool]:-} ]]; then echo "- $tool's target tables after the catch-up: ${A_TABLES[$tool]}"; fi
    done
    echo
    echo "## (b) Steady state: pgbench flat out while walrelay streams"
    echo
    if [[ $B_RAN -eq 1 ]]; then
        echo "\`pgbench -c $CLIENTS -j $PGBENCH_THREADS -T $STEADY_SECS -n\` on the source while \`walrelay run\` streams into \`wr\`;"
        echo "/status sampled every second ($N_SAMPLES samples, $BAD_SAMPLES unreadable); percentiles are nearest-rank."
        echo
        echo "| lag from | pgbench tps | txns | WAL MB | lag bytes p50 / p99 / max | lag s p50 / p99 / max | drain after load s | peak RSS MB | SIGTERM exit |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        echo "| walrelay /status | $STEADY_TPS | $STEADY_TXNS | $STEADY_WAL_MB | $LB50 / $LB99 / $LBMAX | $LS50 / $LS99 / $LSMAX | $DRAIN_SECS | $((B_RSS / 1024)) | $B_RC |"
        echo "| measured ($N_TSAMPLES samples) | | | | $TB50 / $TB99 / $TBMAX | $TS50 / $TS99 / $TSMAX | | | |"
        echo
        echo "- measured: at the same instants, bytes = source \`pg_current_wal_lsn()\` − \`walrelay.progress.applied_lsn\`"
        echo "  on the target (read just before), seconds = now − \`walrelay.progress.commit_time\` (the last applied source"
        echo "  commit) while bytes > 0, capped at the time since the load began; the source is read a median"
        echo "  ${GAP_MS} ms after the target, so the bytes include the WAL written in that gap"
        echo "- /status: \`source_lsn\` comes from the monitor, which reads the source every 2 s, while \`applied_lsn\` is"
        echo "  live, so its lag reads low (0 whenever the applier has passed the last sampled source position)"
        echo "- slot lag (\`pg_current_wal_lsn() − confirmed_flush_lsn\`, includes the feedback delay): p50 $SL50,"
        echo "  p99 $SL99, max $SLMAX bytes"
        echo "- load average before → after the load: $B_LOAD"
        echo "- transactions applied during the load (from /status): $TX_BEFORE → $TX_AFTER; RSS at the end $((B_RSS_NOW / 1024)) MB"
        echo "- drain: seconds from the end of pgbench until the slot's confirmed_flush reached the source's WAL end then"
        if [[ -n ${METRICS:-} ]]; then
            echo
            echo '```'
            echo "$METRICS"
            echo '```'
        fi
    else
        echo "not run (STEADY_SECS=$STEADY_SECS${A_STATUS[walrelay]:+, walrelay catch-up: ${A_STATUS[walrelay]}})"
    fi
    echo
    echo "## Targets (reported, not asserted)"
    echo
    echo "- walrelay/native catch-up tx/s ≥ 1.0: $RATIO → $(met "$RATIO" 1.0 ge)"
    echo "- walrelay peak RSS ≤ 150 MB, catch-up: $(okrun walrelay && echo "$((A_RSS[walrelay] / 1024)) MB → $(met "$((A_RSS[walrelay] / 1024))" 150 le)" || echo "no figure")"
    if [[ $B_RAN -eq 1 ]]; then
        echo "- walrelay peak RSS ≤ 150 MB, steady state: $((B_RSS / 1024)) MB → $(met "$((B_RSS / 1024))" 150 le)"
    fi
    echo
    echo "## Copies"
    echo
    echo "Compared with the source: count and sum of the balance (history: delta) of pgbench_accounts,"
    echo "pgbench_branches, pgbench_tellers, pgbench_history$([[ $VERIFY == hash ]] && echo ", and an order-independent md5 over every row's text form")."
    echo
    for k in before-wr before-native catchup-wr catchup-native steady-wr; do
        [[ -n ${CHECK[$k]:-} ]] && echo "- $k: ${CHECK[$k]}"
    done
    echo
    echo "Source after the last run:"
    echo
    echo '```'
    echo "$SRC_FP"
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
    echo "- $PG_VERSION: source and target clusters on this machine; clients over TCP 127.0.0.1, SCRAM, sslmode=disable"
    echo "- walrelay: $walrelay_version (built from $WALRELAY_COMMIT), binary copied from $WALRELAY_SRC_BIN (built $WALRELAY_BIN_MTIME)"
    echo "- both clusters: wal_level=logical, max_wal_senders=10, max_replication_slots=10, shared_buffers=$SHARED_BUFFERS,"
    echo "  max_wal_size=4GB, min_wal_size=1GB, checkpoint_timeout=30min; fsync, synchronous_commit, full_page_writes"
    echo "  and autovacuum at their defaults (on); CHECKPOINT on both before the backlog and before each catch-up"
    echo "- pgbench_history has no primary key: \`ALTER TABLE pgbench_history REPLICA IDENTITY FULL\` on the source"
    echo "  before the snapshot (walrelay refuses to publish it otherwise); publication $PUB: $PUB_TABLES"
    echo "- wr: \`walrelay snapshot --jobs $SNAPSHOT_JOBS\` (${SNAPSHOT_SECS}s); native: \`pg_dump -Fc --no-publications --no-subscriptions\` |"
    echo "  \`pg_restore --no-owner --no-acl\` of the source, then slot \`$NATIVE_SLOT\` via \`pg_create_logical_replication_slot(…, 'pgoutput')\`"
    echo "  (created right after walrelay's snapshot, the source idle until the backlog)"
    echo "- walrelay catch-up: \`${WALRELAY_STREAM_CMD:-}\` under \`/usr/bin/time -v\` (peak RSS = ru_maxrss)"
    echo "- native catch-up: \`CREATE SUBSCRIPTION $NATIVE_SLOT CONNECTION '…' PUBLICATION $PUB WITH (copy_data = false,"
    echo "  create_slot = false, slot_name = '$NATIVE_SLOT')\`, PostgreSQL defaults otherwise (binary = false, streaming = off,"
    echo "  the subscription's synchronous_commit = off); peak RSS = the apply worker's VmHWM from /proc, which counts"
    echo "  the shared buffers it touched; \"private\" = its largest RssAnon sampled every 0.1 s"
    if [[ $B_RAN -eq 1 ]]; then
        echo "- steady state: \`$WALRELAY_RUN_CMD\` (its snapshot already done); peak RSS = VmHWM from /proc/<pid>/status"
    fi
    echo
    echo "## walrelay output (catch-up)"
    echo
    echo '```'
    redact <"$WORK/walrelay-stream.log" 2>/dev/null | sed -E 's/\x1b\[[0-9;]*m//g' | tail -n 20 || true
    echo '```'
} >"$WORK/report.md"

bench_publish_report
log "report written to $REPORT"
if [[ $FAILED -ne 0 ]]; then
    log "something failed or a copy differs from the source (see above)"
    exit 1
fi
exit 0
