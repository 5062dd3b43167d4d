#!/usr/bin/env bash
# Spool benchmark: the snapshot while pgbench writes at full speed during the copy, then
# the catch-up, in three modes on fresh clusters:
#   live     `walrelay run`, no cap: the slot holds the WAL, the stream reads it live after
#            the copy;
#   spool    `walrelay snapshot --spool-dir` under `max_slot_wal_keep_size = $CAP`, then
#            `walrelay stream` without --spool-dir: the spool is applied alone (its log line
#            gives records, transactions, bytes and seconds: the apply-from-spool rate), then
#            the stream goes live;
#   through  `walrelay run --spool-dir` under the cap: the stream goes on through the spool
#            (capture and apply side by side) after the copy.
#
# Per mode: copy seconds (snapshot start to phase done), pgbench transactions written
# during the copy, the source WAL written meanwhile, the largest spool size on disk, the
# catch-up after the copy (seconds to apply everything written during it: from the spool,
# or from the slot live) as MB/s of WAL and tx/s, the slot's wal_status at the end and
# walrelay's peak RSS. The target must equal the source (pgbench fingerprint), else exit 1.
#
# Quick run:   SCALE=5 benches/spool/run.sh
# Full run:    benches/spool/run.sh
set -euo pipefail

SCALE=${SCALE:-20}
CLIENTS=${CLIENTS:-4}
CAP=${CAP:-256MB}
JOBS=${JOBS:-2}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
MODES=${MODES:-"live spool through"}
# KEEP_TMP, BENCH_TMPDIR, INSTALL, PG_BINDIR, WALRELAY_BIN: see benches/lib.sh

BENCH_NAME=spool
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/spool-$STAMP.md

# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

bench_prereqs
bench_build_walrelay
bench_workdir

proc_kb() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
lsn_bytes() { q "$1" "SELECT pg_wal_lsn_diff('$2', '0/0')::bigint"; }

# One mode on fresh clusters: live (no cap, no spool), spool or through (cap + --spool-dir).
run_mode() {
    local mode=$1 cap_setting="" spool_args=() command=run
    [[ $mode != live ]] && cap_setting="max_slot_wal_keep_size = '$CAP'" && spool_args=(--spool-dir "$WORK/$mode-spool")
    [[ $mode == spool ]] && command=snapshot
    local settings="
shared_buffers = '$SHARED_BUFFERS'
max_wal_size = '1GB'
checkpoint_timeout = '5min'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
logging_collector = off
log_min_messages = warning
$cap_setting"
    pick_port; local src_port=$PORT
    pick_port; local tgt_port=$PORT
    pick_port; local http_port=$PORT
    start_cluster "$mode-source" "$src_port" "$settings"
    start_cluster "$mode-target" "$tgt_port" "$settings"
    local src_url tgt_url
    src_url=$(url "$src_port" bench); tgt_url=$(url "$tgt_port" bench)
    q "$(url "$src_port" postgres)" "CREATE DATABASE bench"
    q "$(url "$tgt_port" postgres)" "CREATE DATABASE bench"
    "$PG_BINDIR/pgbench" -i -s "$SCALE" -q "$src_url" >"$WORK/$mode-init.log" 2>&1 || die "pgbench -i failed"
    q "$src_url" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL; CHECKPOINT"

    local t0 t_copy t_done wal0 wal1 spool_max=0 bytes
    t0=$(now)
    local run_args=(--http "127.0.0.1:$http_port" --verify-interval 0s)
    [[ $command == snapshot ]] && run_args=()
    "$WALRELAY_BIN" --source "$src_url" --target "$tgt_url" "$command" --jobs "$JOBS" \
        "${run_args[@]}" "${spool_args[@]}" >"$WORK/$mode-walrelay.log" 2>&1 &
    local pid=$!
    BG_PIDS+=("$pid")
    until [[ $(q "$tgt_url" "SELECT coalesce((SELECT phase = 'copy' FROM walrelay.snapshot), false)" 2>/dev/null) == t ]]; do
        kill -0 "$pid" 2>/dev/null || { redact <"$WORK/$mode-walrelay.log" >&2; die "$mode: walrelay exited before the copy"; }
        sleep 0.1
    done
    wal0=$(q "$src_url" "SELECT pg_current_wal_insert_lsn()")
    "$PG_BINDIR/pgbench" -n -c "$CLIENTS" -j "$CLIENTS" -T 3600 "$src_url" >"$WORK/$mode-pgbench.log" 2>&1 &
    local writer=$!
    BG_PIDS+=("$writer")
    until [[ $(q "$tgt_url" "SELECT coalesce((SELECT phase IN ('post_data', 'done') FROM walrelay.snapshot), false)") == t ]]; do
        kill -0 "$pid" 2>/dev/null || { redact <"$WORK/$mode-walrelay.log" >&2; die "$mode: walrelay exited during the copy"; }
        if [[ $mode != live ]]; then
            bytes=$(du -sb "$WORK/$mode-spool" 2>/dev/null | cut -f1); bytes=${bytes:-0}
            ((bytes > spool_max)) && spool_max=$bytes
        fi
        sleep 0.2
    done
    kill -TERM "$writer" 2>/dev/null; wait "$writer" 2>/dev/null || true
    wal1=$(q "$src_url" "SELECT pg_current_wal_insert_lsn()")
    local txns; txns=$(q "$src_url" "SELECT count(*) FROM pgbench_history")
    until [[ $(q "$tgt_url" "SELECT coalesce((SELECT phase = 'done' FROM walrelay.snapshot), false)") == t ]]; do
        kill -0 "$pid" 2>/dev/null || [[ $command == snapshot ]] || { redact <"$WORK/$mode-walrelay.log" >&2; die "$mode: walrelay exited after the copy"; }
        sleep 0.05
    done
    t_copy=$(now)
    if [[ $command == snapshot ]]; then
        wait "$pid" || { redact <"$WORK/$mode-walrelay.log" >&2; die "$mode: the snapshot failed"; }
        # The recorded spool, applied alone, then live.
        "$WALRELAY_BIN" --source "$src_url" --target "$tgt_url" stream >>"$WORK/$mode-walrelay.log" 2>&1 &
        pid=$!
        BG_PIDS+=("$pid")
    fi
    wait_until "$tgt_url" "(SELECT applied_lsn >= '$wal1' FROM walrelay.progress)" 3600 >/dev/null \
        || { redact <"$WORK/$mode-walrelay.log" >&2; die "$mode: the target did not catch up"; }
    t_done=$(now)
    local rss status
    rss=$(proc_kb "$pid" VmHWM)
    status=$(q "$src_url" "SELECT coalesce(wal_status, '-') FROM pg_replication_slots WHERE slot_name = 'walrelay'")
    kill -TERM "$pid"; wait "$pid" || die "$mode: walrelay did not stop cleanly"
    if [[ $(pgbench_fingerprint "$src_url") != $(pgbench_fingerprint "$tgt_url") ]]; then
        die "$mode: the target differs from the source"
    fi
    local wal_mb copy_s catch_s
    wal_mb=$(awk -v a="$(lsn_bytes "$src_url" "$wal0")" -v b="$(lsn_bytes "$src_url" "$wal1")" 'BEGIN { printf "%.0f", (b - a) / 1048576 }')
    copy_s=$(secs "$t0" "$t_copy"); catch_s=$(secs "$t_copy" "$t_done")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$mode" "${cap_setting:-none}" "$copy_s" "$txns" "$wal_mb" \
        "$((spool_max / 1048576))" "$catch_s" \
        "$(awk -v m="$wal_mb" -v s="$catch_s" 'BEGIN { printf "%.1f", m / (s > 0 ? s : 0.01) }')" \
        "$(awk -v t="$txns" -v s="$catch_s" 'BEGIN { printf "%.0f", t / (s > 0 ? s : 0.01) }')" \
        "$status, $((rss / 1024))" >>"$WORK/rows.md"
    grep -h "spool applied" "$WORK/$mode-walrelay.log" | redact >>"$WORK/notes.md" || true
    if [[ $mode == spool ]]; then
        # The apply from the spool alone: its own log line's bytes, transactions, seconds.
        local line; line=$(grep -h "spool applied" "$WORK/$mode-walrelay.log" | tail -1)
        field() { sed -E "s/.*[ ]$1=([0-9.]+).*/\1/" <<<"$line"; }
        [[ -n $line ]] || die "spool: no 'spool applied' line"
        local a_bytes a_txns a_secs
        a_bytes=$(field bytes); a_txns=$(field transactions); a_secs=$(field seconds)
        printf '| apply from the spool alone | %s | %s | %.2f | %s |\n' "$(awk -v b="$a_bytes" 'BEGIN { printf "%.1f", b / 1048576 }')" "$a_txns" "$a_secs" \
            "$(awk -v b="$a_bytes" -v t="$a_txns" -v s="$a_secs" 'BEGIN { s = (s > 0 ? s : 0.01); printf "%.1f spool MB/s, %.0f tx/s", b / 1048576 / s, t / s }')" >>"$WORK/alone.md"
    fi
    if [[ $mode == live ]]; then
        printf '| live streaming (catch-up from the slot) | %s WAL | %s | %s | %s |\n' "$wal_mb" "$txns" "$catch_s" \
            "$(awk -v m="$wal_mb" -v t="$txns" -v s="$catch_s" 'BEGIN { s = (s > 0 ? s : 0.01); printf "%.1f WAL MB/s, %.0f tx/s", m / s, t / s }')" >>"$WORK/alone.md"
    fi
}

for mode in $MODES; do
    log "mode $mode"
    run_mode "$mode"
done

{
    echo "# spool benchmark $STAMP"
    echo
    echo "walrelay $WALRELAY_COMMIT; pgbench scale $SCALE, $CLIENTS clients writing during the copy; --jobs $JOBS; $(nproc) cores; load $(loadavg)"
    echo
    echo "| mode | cap | copy s | txns during copy | WAL MB during copy | spool MB (max) | catch-up s | catch-up WAL MB/s | catch-up tx/s | slot wal_status, peak RSS MB |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    cat "$WORK/rows.md"
    echo
    echo "Catch-up: from phase done until the target applied the WAL position read when the writer stopped (live: read from the slot; spool: the recorded spool applied alone by \`stream\`, then live, including the process start; through: \`run --spool-dir\`, capture and apply through the spool)."
    if [[ -s $WORK/alone.md ]]; then
        echo
        echo "| apply | MB | transactions | seconds | rate |"
        echo "| --- | --- | --- | --- | --- |"
        cat "$WORK/alone.md"
        echo
        echo "Spool MB are the spooled pgoutput records (smaller than the WAL they come from); tx/s compare directly."
    fi
    [[ -s $WORK/notes.md ]] && { echo; sed 's/^/    /' "$WORK/notes.md"; }
} >"$WORK/report.md"
bench_publish_report
