#!/usr/bin/env bash
# Network benchmark (issue 13): walrelay over a long link, against the native tools.
#
# Source and target listen on their own loopback addresses (127.0.1.1, 127.0.2.1). The link
# between the source side and the target side is emulated by `walrelay-netproxy`
# (benches/netproxy): a TCP proxy in front of each server that holds every chunk RTT/2 in
# each direction and caps each direction's bandwidth. This kernel has no `netem`, so the
# delay cannot come from `tc`; the proxy is validated in every run (20 × `select 1` through
# it must take ≈ 20 × RTT longer than direct; at RTT 0 a pg_dump through it must be as fast
# as direct). A connection from the near side to the far server crosses exactly one proxy.
#
# PLACEMENT=source (default): walrelay and pg_dump|pg_restore run next to the source (the
# target is across the link), as a sidecar far from the target; PLACEMENT=target: next to
# the target. The native subscription's apply worker always runs on the target: only its
# walsender stream crosses the link.
#
# For each link in LINKS (RTT ms : Mbit/s), in one run:
#   snapshot   walrelay snapshot --jobs JOBS vs pg_dump -Fc | pg_restore, into fresh databases
#   verify     walrelay verify over the link, and the same verify with both ends direct
#   catch-up   a pgbench backlog of TXNS transactions: walrelay stream --exit-when-caught-up
#              vs a native subscription (copy_data = false) on a slot made at the same point
#   steady     pgbench -R STEADY_RATE for STEADY_SECS with walrelay and the subscription both
#              streaming: lag bytes (source WAL − applied) and seconds (target clock − newest
#              pgbench_history.mtime applied), p50/p99/max
# Every target is compared with the source (counts, sums, content hashes). Speed is
# reported, never asserted; exit 1 only when something failed or a copy differs.
#
# Smoke run:  SCALE=1 TXNS=4000 STEADY_SECS=5 LINKS=25:200 benches/network/run.sh
set -euo pipefail

# ---------------------------------------------------------------- settings
LINKS=${LINKS:-"25:200 5:1000"}         # RTT_ms:Mbit/s, each a full round of the work below
PLACEMENT=${PLACEMENT:-source}          # where walrelay and pg_dump|pg_restore run: source | target
SCALE=${SCALE:-5}                       # pgbench scale (100k pgbench_accounts rows each)
TXNS=${TXNS:-20000}                     # catch-up backlog, split over CLIENTS
CLIENTS=${CLIENTS:-4}
PGBENCH_THREADS=${PGBENCH_THREADS:-2}
STEADY_SECS=${STEADY_SECS:-20}          # 0 skips the steady state
STEADY_RATE=${STEADY_RATE:-500}         # pgbench -R during the steady state
JOBS=${JOBS:-2}                         # walrelay snapshot --jobs
WALRELAY_STREAM_ARGS=${WALRELAY_STREAM_ARGS:-}
SHARED_BUFFERS=${SHARED_BUFFERS:-512MB}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-900}
PROXY_BIN=${PROXY_BIN:-}                # walrelay-netproxy; built unless given
VERIFY=${VERIFY:-hash}
# KEEP_TMP, BENCH_TMPDIR, INSTALL, POLL, PG_BINDIR, WALRELAY_BIN: see benches/lib.sh

BENCH_NAME=network
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/network-$STAMP.md
PER_CLIENT=$((TXNS / CLIENTS))
TXNS=$((PER_CLIENT * CLIENTS))
[[ $PLACEMENT == source || $PLACEMENT == target ]] || { echo "PLACEMENT must be source or target" >&2; exit 2; }
# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

SRC_HOST=127.0.1.1
TGT_HOST=127.0.2.1
SRC_LINK_HOST=127.0.1.2   # the source seen from across the link
TGT_LINK_HOST=127.0.2.2   # the target seen from across the link

# ---------------------------------------------------------------- prerequisites
bench_prereqs /usr/bin/time:time python3
bench_build_walrelay
if [[ -z $PROXY_BIN ]]; then
    log "cargo build --release -p walrelay-netproxy (set PROXY_BIN to skip)"
    (cd "$REPO_ROOT" && cargo build --release --quiet -p walrelay-netproxy) || die "building walrelay-netproxy failed"
    PROXY_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/walrelay-netproxy
fi
[[ -x $PROXY_BIN ]] || die "proxy binary $PROXY_BIN not found"
bench_workdir
cp "$PROXY_BIN" "$WORK/netproxy"
PROXY_BIN=$WORK/netproxy

# ---------------------------------------------------------------- clusters
SETTINGS="
shared_buffers = '$SHARED_BUFFERS'
max_wal_size = '4GB'
checkpoint_timeout = '30min'
wal_level = logical
max_wal_senders = 20
max_replication_slots = 20
max_connections = 100
logging_collector = off
log_min_messages = warning
"
pick_port; SRC_PORT=$PORT
pick_port; TGT_PORT=$PORT
pick_port; SRC_LINK_PORT=$PORT
pick_port; TGT_LINK_PORT=$PORT
log "starting clusters in $WORK (source $SRC_HOST:$SRC_PORT, target $TGT_HOST:$TGT_PORT)"
LISTEN_ADDR=$SRC_HOST start_cluster source "$SRC_PORT" "$SETTINGS"
LISTEN_ADDR=$TGT_HOST start_cluster target "$TGT_PORT" "$SETTINGS"

url_at() { echo "postgresql://postgres:$PGPASS@$1:$2/$3?sslmode=disable"; }
SRC_URL=$(url_at $SRC_HOST "$SRC_PORT" bench)
src() { q "$SRC_URL" "$1"; }
tgt() { q "$(url_at $TGT_HOST "$TGT_PORT" "$1")" "$2"; }
# What a client on walrelay's side uses for each end.
near_src() { if [[ $PLACEMENT == source ]]; then url_at $SRC_HOST "$SRC_PORT" "$1"; else url_at $SRC_LINK_HOST "$SRC_LINK_PORT" "$1"; fi; }
near_tgt() { if [[ $PLACEMENT == target ]]; then url_at $TGT_HOST "$TGT_PORT" "$1"; else url_at $TGT_LINK_HOST "$TGT_LINK_PORT" "$1"; fi; }

q "$(url_at $SRC_HOST "$SRC_PORT" postgres)" "CREATE DATABASE bench"
log "pgbench -i -s $SCALE on the source"
"$PG_BINDIR/pgbench" -i -s "$SCALE" -q "$SRC_URL" >"$WORK/pgbench-init.log" 2>&1 \
    || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
src "VACUUM ANALYZE"
src "CHECKPOINT"
SRC_MB=$(src "SELECT round(pg_database_size('bench') / 1048576.0)")

# ---------------------------------------------------------------- the link
PROXY_PIDS=()
start_link() { # rtt_ms mbit
    local d
    d=$(awk -v r="$1" 'BEGIN { printf "%.3f", r / 2 }')
    "$PROXY_BIN" --listen "$SRC_LINK_HOST:$SRC_LINK_PORT" --upstream "$SRC_HOST:$SRC_PORT" \
        --delay-ms "$d" --rate-mbit "$2" >>"$WORK/proxy-source.log" 2>&1 &
    PROXY_PIDS+=("$!"); BG_PIDS+=("$!")
    "$PROXY_BIN" --listen "$TGT_LINK_HOST:$TGT_LINK_PORT" --upstream "$TGT_HOST:$TGT_PORT" \
        --delay-ms "$d" --rate-mbit "$2" >>"$WORK/proxy-target.log" 2>&1 &
    PROXY_PIDS+=("$!"); BG_PIDS+=("$!")
    for _ in $(seq 1 100); do
        ! port_free_at $SRC_LINK_HOST "$SRC_LINK_PORT" && ! port_free_at $TGT_LINK_HOST "$TGT_LINK_PORT" && return 0
        sleep 0.05
    done
    die "the link proxies did not start (see $WORK/proxy-*.log)"
}
port_free_at() { ! (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
stop_link() {
    local p
    for p in "${PROXY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    PROXY_PIDS=()
}
# Milliseconds for N `select 1` in one session: a session with N + 1 of them minus one
# with 1 (connecting and authenticating take round trips too).
selects_ms() { # url n
    local f=$WORK/selects.sql t0 t1 t2
    echo 'select 1;' >"$f.1"
    yes 'select 1;' | head -n "$(($2 + 1))" >"$f"
    t0=$(now)
    "$PG_BINDIR/psql" "$1" -X -q -A -t -f "$f.1" >/dev/null
    t1=$(now)
    "$PG_BINDIR/psql" "$1" -X -q -A -t -f "$f" >/dev/null
    t2=$(now)
    awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "%.0f", ((c - b) - (b - a)) * 1000 }'
}

# ---------------------------------------------------------------- checks
declare -A CHECK
SRC_FP=""
compare() { # label url
    local label=$1 url=$2 fp
    if ! fp=$(pgbench_fingerprint "$url" 2>"$WORK/check-$label.err"); then
        CHECK[$label]="check query failed: $(head -n 2 "$WORK/check-$label.err" | tr '\n' ' ' | redact)"
        FAILED=1
    elif [[ $fp == "$SRC_FP" ]]; then
        CHECK[$label]=match
    else
        CHECK[$label]="MISMATCH: $(diff <(echo "$SRC_FP") <(echo "$fp") | grep '^[<>]' | tr '\n' ' ' || true)"
        FAILED=1
    fi
    log "$label: ${CHECK[$label]}"
}
timed() { # label cmd... ; sets T[label] (seconds) and RC[label]
    local label=$1 t0 rc
    shift
    t0=$(now)
    if timeout "$TOOL_TIMEOUT" "$@" >"$WORK/$label.log" 2>&1; then rc=0; else rc=$?; fi
    T[$label]=$(secs "$t0" "$(now)")
    RC[$label]=$rc
    if [[ $rc -ne 0 ]]; then
        FAILED=1
        log "$label failed (exit $rc):"
        redact <"$WORK/$label.log" | tail -n 20 >&2
    fi
    log "$label: ${T[$label]} s (exit $rc)"
}
declare -A T RC R

# D=0 validation, once: a dump through a proxy without delay or cap is as fast as direct.
validate_zero() {
    start_link 0 0
    local direct via
    timed dump-direct bash -c "'$PG_BINDIR/pg_dump' -Fc -Z0 '$SRC_URL' >/dev/null"
    timed dump-proxy0 bash -c "'$PG_BINDIR/pg_dump' -Fc -Z0 '$(url_at $SRC_LINK_HOST "$SRC_LINK_PORT" bench)' >/dev/null"
    direct=$(selects_ms "$SRC_URL" 20)
    via=$(selects_ms "$(url_at $SRC_LINK_HOST "$SRC_LINK_PORT" bench)" 20)
    R[zero]="pg_dump of the source ($SRC_MB MB, uncompressed) direct ${T[dump-direct]} s, through the proxy at RTT 0 ${T[dump-proxy0]} s; 20 × select 1: direct $direct ms, through it $via ms"
    stop_link
}

# ---------------------------------------------------------------- one link
run_link() { # n rtt mbit
    local n=$1 rtt=$2 mbit=$3 wr=wr_$1 nat=native_$1 slot=wr_$1 nslot=native_$1
    log "=== link $n: RTT $rtt ms, $mbit Mbit/s, walrelay next to the $PLACEMENT"
    start_link "$rtt" "$mbit"
    local direct via
    direct=$(selects_ms "$SRC_URL" 20)
    via=$(selects_ms "$(url_at $SRC_LINK_HOST "$SRC_LINK_PORT" bench)" 20)
    R[$n:selects]="20 × select 1 in one session: direct $direct ms, across the link $via ms (+$((via - direct)) ms; expected +$((20 * rtt)) ms: a round trip across the link costs $(awk -v d="$((via - direct))" 'BEGIN { printf "%.1f", d / 20 }') ms)"
    log "${R[$n:selects]}"

    tgt postgres "CREATE DATABASE $wr"
    tgt postgres "CREATE DATABASE $nat"
    local wbase=("$WALRELAY_BIN" --source "$(near_src bench)" --target "$(near_tgt "$wr")" --slot "$slot" --publication "$slot")
    checkpoint_both
    timed "$n-snapshot-walrelay" "${wbase[@]}" snapshot --jobs "$JOBS"
    # The native slot starts where the source is now (idle until the backlog), then the
    # pg_dump | pg_restore copy, which is the subscription's starting data.
    src "SELECT pg_create_logical_replication_slot('$nslot', 'pgoutput')" >/dev/null
    checkpoint_both
    timed "$n-snapshot-dump" bash -o pipefail -c "'$PG_BINDIR/pg_dump' -Fc --no-publications --no-subscriptions '$(near_src bench)' \
        | '$PG_BINDIR/pg_restore' --no-owner --no-acl -d '$(near_tgt "$nat")'"
    SRC_FP=$(pgbench_fingerprint "$SRC_URL")
    compare "$n-snapshot-walrelay" "$(url_at $TGT_HOST "$TGT_PORT" "$wr")"
    compare "$n-snapshot-dump" "$(url_at $TGT_HOST "$TGT_PORT" "$nat")"

    timed "$n-verify-link" "${wbase[@]}" verify
    timed "$n-verify-loopback" "$WALRELAY_BIN" --source "$SRC_URL" --target "$(url_at $TGT_HOST "$TGT_PORT" "$wr")" \
        --slot "$slot" --publication "$slot" verify

    # Catch-up.
    checkpoint_both
    "$PG_BINDIR/pgbench" -c "$CLIENTS" -j "$PGBENCH_THREADS" -t "$PER_CLIENT" -n "$SRC_URL" >"$WORK/$n-pgbench-backlog.log" 2>&1 \
        || { redact <"$WORK/$n-pgbench-backlog.log" >&2; die "pgbench (backlog) failed"; }
    local mark
    mark=$(src "SELECT pg_current_wal_insert_lsn()")
    src "UPDATE pgbench_branches SET filler = filler WHERE bid = 1"
    SRC_FP=$(pgbench_fingerprint "$SRC_URL")
    checkpoint_both
    local t0 t1
    # shellcheck disable=SC2206
    local scmd=("${wbase[@]}" stream --exit-when-caught-up $WALRELAY_STREAM_ARGS)
    t0=$(now)
    if /usr/bin/time -v -o "$WORK/$n-time-stream.txt" timeout "$TOOL_TIMEOUT" "${scmd[@]}" >"$WORK/$n-catchup-walrelay.log" 2>&1; then
        RC[$n-catchup-walrelay]=0
    else
        RC[$n-catchup-walrelay]=$?; FAILED=1
        redact <"$WORK/$n-catchup-walrelay.log" | tail -n 20 >&2
    fi
    t1=$(wait_until "$(url_at $TGT_HOST "$TGT_PORT" "$wr")" \
        "SELECT applied_lsn > '$mark'::pg_lsn FROM walrelay.progress WHERE slot_name = '$slot'" 30 | tail -n 1) || t1=""
    T[$n-catchup-walrelay]=$([[ -n $t1 ]] && secs "$t0" "$t1" || echo "-")
    R[$n-rss-walrelay]=$(awk -F': ' '/Maximum resident set size/ { printf "%d", $NF / 1024 }' "$WORK/$n-time-stream.txt")
    log "$n catch-up walrelay: ${T[$n-catchup-walrelay]} s"

    local conninfo
    conninfo="host=$SRC_LINK_HOST port=$SRC_LINK_PORT dbname=bench user=postgres password=$PGPASS sslmode=disable"
    t0=$(now)
    tgt "$nat" "CREATE SUBSCRIPTION $nslot CONNECTION '$conninfo' PUBLICATION $slot
                WITH (copy_data = false, create_slot = false, slot_name = '$nslot')"
    t1=$(wait_until "$(url_at $TGT_HOST "$TGT_PORT" "$nat")" \
        "SELECT s.remote_lsn > '$mark'::pg_lsn FROM pg_replication_origin_status s
           JOIN pg_subscription sub ON s.external_id = 'pg_' || sub.oid WHERE sub.subname = '$nslot'" "$TOOL_TIMEOUT" | tail -n 1) || { t1=""; FAILED=1; }
    T[$n-catchup-native]=$([[ -n $t1 ]] && secs "$t0" "$t1" || echo "-")
    log "$n catch-up native: ${T[$n-catchup-native]} s"
    compare "$n-catchup-walrelay" "$(url_at $TGT_HOST "$TGT_PORT" "$wr")"
    compare "$n-catchup-native" "$(url_at $TGT_HOST "$TGT_PORT" "$nat")"

    if ((STEADY_SECS > 0)); then steady "$n" "$wr" "$nat" "$slot" "$nslot" "${wbase[@]}"; fi

    tgt "$nat" "DROP SUBSCRIPTION $nslot" >/dev/null 2>&1 || src "SELECT pg_drop_replication_slot('$nslot')" >/dev/null || true
    src "SELECT pg_drop_replication_slot('$slot')" >/dev/null || true
    tgt postgres "DROP DATABASE $wr" >/dev/null || true
    tgt postgres "DROP DATABASE $nat" >/dev/null || true
    stop_link
}
checkpoint_both() { src "CHECKPOINT"; tgt postgres "CHECKPOINT"; }

steady() { # n wr nat slot nslot walrelay-base...
    local n=$1 wr=$2 nat=$3 slot=$4 nslot=$5
    shift 5
    local wurl nurl
    wurl=$(url_at $TGT_HOST "$TGT_PORT" "$wr")
    nurl=$(url_at $TGT_HOST "$TGT_PORT" "$nat")
    # shellcheck disable=SC2206
    local cmd=("$@" stream $WALRELAY_STREAM_ARGS)
    "${cmd[@]}" >"$WORK/$n-steady-walrelay.log" 2>&1 &
    local wpid=$!
    BG_PIDS+=("$wpid")
    local lsn
    # Streaming and warm before the load: a few pgbench transactions written now are
    # applied by both (walrelay's new session learns the tables and prepares its
    # statements on them, round trips that belong to its start, not to its lag).
    wait_until "$(url_at $SRC_HOST "$SRC_PORT" postgres)" "SELECT active FROM pg_replication_slots WHERE slot_name = '$slot'" 60 >/dev/null \
        || die "walrelay stream did not start before the steady state"
    "$PG_BINDIR/pgbench" -c 1 -t 20 -n "$SRC_URL" >/dev/null 2>&1 || die "pgbench (warm-up) failed"
    lsn=$(src "SELECT pg_current_wal_insert_lsn()")
    wait_until "$wurl" "SELECT applied_lsn >= '$lsn'::pg_lsn FROM walrelay.progress WHERE slot_name = '$slot'" 60 >/dev/null \
        || die "walrelay stream did not catch up before the steady state"
    log "$n steady state: pgbench -R $STEADY_RATE -T $STEADY_SECS, walrelay and the subscription streaming"
    "$PG_BINDIR/pgbench" -c "$CLIENTS" -j "$PGBENCH_THREADS" -R "$STEADY_RATE" -T "$STEADY_SECS" -n "$SRC_URL" >"$WORK/$n-pgbench-steady.log" 2>&1 &
    local pgb=$!
    local samples=$WORK/$n-samples.txt
    : >"$samples"
    sleep 1
    while kill -0 "$pgb" 2>/dev/null; do
        # Targets first, then the source: a lag is never under-counted.
        local wa na sl
        wa=$(q "$wurl" "SELECT (SELECT applied_lsn FROM walrelay.progress WHERE slot_name = '$slot') || ' ' ||
                       extract(epoch FROM clock_timestamp() - (SELECT max(mtime) FROM pgbench_history))" 2>/dev/null || echo "")
        na=$(q "$nurl" "SELECT (SELECT s.remote_lsn FROM pg_replication_origin_status s JOIN pg_subscription sub
                                  ON s.external_id = 'pg_' || sub.oid WHERE sub.subname = '$nslot') || ' ' ||
                       extract(epoch FROM clock_timestamp() - (SELECT max(mtime) FROM pgbench_history))" 2>/dev/null || echo "")
        if [[ -n $wa && -n $na ]]; then
            sl=$(src "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${wa%% *}')::bigint || ' ' || pg_wal_lsn_diff(pg_current_wal_lsn(), '${na%% *}')::bigint" 2>/dev/null || echo "")
            [[ -n $sl ]] && echo "$sl ${wa#* } ${na#* }" >>"$samples"
        fi
        sleep 0.25
    done
    wait "$pgb" || die "pgbench (steady state) failed"
    R[$n-steady-tps]=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$WORK/$n-pgbench-steady.log")
    R[$n-rss-steady]=$(awk '$1 == "VmHWM:" { printf "%d", $2 / 1024 }' "/proc/$wpid/status" 2>/dev/null || echo "?")
    lsn=$(src "SELECT pg_current_wal_insert_lsn()")
    wait_until "$wurl" "SELECT applied_lsn >= '$lsn'::pg_lsn FROM walrelay.progress WHERE slot_name = '$slot'" 60 >/dev/null || FAILED=1
    kill -TERM "$wpid"
    if wait "$wpid"; then :; else FAILED=1; note "walrelay stream exited $? after SIGTERM (link $n)"; fi
    R[$n-steady]=$(python3 - "$samples" <<'PY'
import math, sys
cols = [[], [], [], []]
for line in open(sys.argv[1]):
    v = line.split()
    if len(v) == 4:
        for i in range(4):
            cols[i].append(max(0.0, float(v[i])))
def pct(xs, p):
    if not xs: return float("nan")
    xs = sorted(xs); return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]
def b(xs): return " / ".join(f"{pct(xs, p) / 1024:.0f} kB" for p in (50, 99, 100))
def s(xs): return " / ".join(f"{pct(xs, p):.3f} s" for p in (50, 99, 100))
print(f"{len(cols[0])}|{b(cols[0])}|{b(cols[1])}|{s(cols[2])}|{s(cols[3])}")
PY
)
    log "$n steady: ${R[$n-steady]}"
}

# ---------------------------------------------------------------- run
validate_zero
i=0
for link in $LINKS; do
    i=$((i + 1))
    LINK_RTT[$i]=${link%%:*}
    LINK_MBIT[$i]=${link#*:}
    run_link "$i" "${LINK_RTT[$i]}" "${LINK_MBIT[$i]}"
done

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
tps() { awk -v n="$TXNS" -v s="$1" 'BEGIN { if (s + 0 > 0) printf "%.0f", n / s; else print "-" }'; }
{
    echo "# walrelay network benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "pgbench scale $SCALE (source database $SRC_MB MB); backlog $TXNS transactions; walrelay (and"
    echo "pg_dump | pg_restore) next to the **$PLACEMENT**; the link emulated by walrelay-netproxy"
    echo "(one proxy per server, every chunk held RTT/2 each way, bandwidth shared per direction)."
    echo
    echo "Proxy check at RTT 0: ${R[zero]}"
    for n in $(seq 1 "$i"); do
        echo
        echo "## Link $n: RTT ${LINK_RTT[$n]} ms, ${LINK_MBIT[$n]} Mbit/s"
        echo
        echo "${R[$n:selects]}."
        echo
        echo "| work | walrelay | native tool | walrelay ÷ native |"
        echo "| --- | ---: | ---: | ---: |"
        echo "| snapshot, wall s (native: pg_dump -Fc \\| pg_restore) | ${T[$n-snapshot-walrelay]} | ${T[$n-snapshot-dump]} | $(ratio "${T[$n-snapshot-walrelay]}" "${T[$n-snapshot-dump]}") |"
        echo "| catch-up of $TXNS txns, s | ${T[$n-catchup-walrelay]} | ${T[$n-catchup-native]} | |"
        echo "| catch-up, tx/s | $(tps "${T[$n-catchup-walrelay]}") | $(tps "${T[$n-catchup-native]}") | $(ratio "$(tps "${T[$n-catchup-walrelay]}")" "$(tps "${T[$n-catchup-native]}")") |"
        if [[ -n ${R[$n-steady]:-} ]]; then
            IFS='|' read -r ns wb nb ws nsec <<<"${R[$n-steady]}"
            echo "| steady lag bytes p50 / p99 / max (${R[$n-steady-tps]} tps, $ns samples) | $wb | $nb | |"
            echo "| steady lag seconds p50 / p99 / max | $ws | $nsec | |"
        fi
        echo "| verify, wall s (native: the same verify with both ends direct) | ${T[$n-verify-link]} | ${T[$n-verify-loopback]} | $(ratio "${T[$n-verify-link]}" "${T[$n-verify-loopback]}") |"
        echo
        echo "walrelay peak RSS: catch-up ${R[$n-rss-walrelay]:-?} MB, steady ${R[$n-rss-steady]:-?} MB. Checks:"
        for k in "${!CHECK[@]}"; do [[ $k == "$n-"* ]] && echo "- $k: ${CHECK[$k]}"; done
    done
    echo
    echo "## Machine and settings"
    echo
    echo "- $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo); $PG_VERSION; load average at the end: $(loadavg)"
    echo "- walrelay $("$WALRELAY_BIN" --version 2>/dev/null || echo ?) (repo commit $WALRELAY_COMMIT); snapshot --jobs $JOBS; stream args: ${WALRELAY_STREAM_ARGS:-none}"
    echo "- both clusters: shared_buffers=$SHARED_BUFFERS, synchronous_commit=on, fsync=on"
    echo "- lag bytes: source WAL position − the target's applied position (walrelay.progress /"
    echo "  the subscription's replication origin), sampled every 0.25 s, targets read first"
    echo "- lag seconds: target clock − the newest pgbench_history.mtime applied there"
    for note_line in "${NOTES[@]}"; do echo "- NOTE: $note_line"; done
} >"$WORK/report.md"
bench_publish_report
exit "$FAILED"
