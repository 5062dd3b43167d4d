#!/usr/bin/env bash
# Verification benchmark: `walrelay verify` vs pg_comparator vs `SELECT count(*)`.
#
# Starts two throwaway PostgreSQL clusters (source, target), loads pgbench scale $SCALE
# plus the snapshot benchmark's $WIDE_ROWS-row `wide` table (TOASTed text, bytea,
# jsonb; benches/snapshot/wide.sql) into the source, copies it to the target with
# `walrelay snapshot`, then, in the same run and on the same data:
#   - walrelay verify on pgbench_accounts, on wide, and on every table;
#   - pg_comparator (Debian package postgresql-comparator, its pgcmp extension
#     installed in both databases) on pgbench_accounts and on wide;
#   - SELECT count(*) of every table, source and target concurrently (the floor:
#     reading every row without hashing it).
# Every tool must report no difference (it is the same data). Times are wall
# seconds; the report goes to stdout and benches/out/verify-<date>.md.
#
# Quick smoke run:   SCALE=1 WIDE_ROWS=5000 benches/verify/run.sh
# Full run:          benches/verify/run.sh
set -euo pipefail

SCALE=${SCALE:-20}
WIDE_ROWS=${WIDE_ROWS:-500000}
LOAD_JOBS=${LOAD_JOBS:-2}
CHUNK_ROWS=${CHUNK_ROWS:-10000}
WALRELAY_ARGS=${WALRELAY_ARGS:-}        # extra arguments after `verify`
PGC_ARGS=${PGC_ARGS:-}                  # extra pg_comparator arguments
SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-1800}
# KEEP_TMP, BENCH_TMPDIR, INSTALL, PG_BINDIR, WALRELAY_BIN: see benches/lib.sh

BENCH_NAME=verify
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/verify-$STAMP.md

# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

# ---------------------------------------------------------------- prerequisites
bench_prereqs pg_comparator:postgresql-comparator
PGC_VERSION=$(dpkg-query -W -f='${Version}' postgresql-comparator 2>/dev/null || echo "?")
# pg_comparator's server-side functions come as the `pgcmp` extension of one major version.
PG_MAJOR=$("$PG_BINDIR/pg_config" --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
[[ -f /usr/share/postgresql/$PG_MAJOR/extension/pgcmp.control ]] \
    || die "no pgcmp extension for PostgreSQL $PG_MAJOR (postgresql-comparator ships it for its distribution's major version only)"

bench_build_walrelay

# ---------------------------------------------------------------- clusters (as benches/snapshot/run.sh)
bench_workdir

COMMON_SETTINGS="
shared_buffers = '$SHARED_BUFFERS'
max_wal_size = '4GB'
checkpoint_timeout = '30min'
work_mem = '16MB'
maintenance_work_mem = '512MB'
logging_collector = off
log_min_messages = warning
"
pick_port; SRC_PORT=$PORT
pick_port; TGT_PORT=$PORT
log "starting clusters in $WORK (source 127.0.0.1:$SRC_PORT, target 127.0.0.1:$TGT_PORT)"
start_cluster source "$SRC_PORT" "${COMMON_SETTINGS}wal_level = logical"
start_cluster target "$TGT_PORT" "${COMMON_SETTINGS}wal_level = replica"

DB=bench
SRC_URL=$(url "$SRC_PORT" "$DB")
TGT_URL=$(url "$TGT_PORT" "$DB")
src() { q "$SRC_URL" "$1"; }
tgt() { q "$TGT_URL" "$1"; }
q "$(url "$SRC_PORT" postgres)" "CREATE DATABASE $DB"
q "$(url "$TGT_PORT" postgres)" "CREATE DATABASE $DB"

# ---------------------------------------------------------------- load and copy
log "loading pgbench -i -s $SCALE and wide ($WIDE_ROWS rows)"
"$PG_BINDIR/pgbench" -i -s "$SCALE" -q "$SRC_URL" >"$WORK/pgbench.log" 2>&1 \
    || { cat "$WORK/pgbench.log" >&2; die "pgbench -i failed"; }
src "CREATE TABLE wide (id bigint NOT NULL, title text, body text, payload bytea, doc jsonb, created timestamptz NOT NULL)"
pids=()
per=$(((WIDE_ROWS + LOAD_JOBS - 1) / LOAD_JOBS))
for ((k = 0; k < LOAD_JOBS; k++)); do
    lo=$((k * per + 1)); hi=$(((k + 1) * per)); ((hi > WIDE_ROWS)) && hi=$WIDE_ROWS
    ((lo > hi)) && continue
    "$PG_BINDIR/psql" "$SRC_URL" -X -q -v lo="$lo" -v hi="$hi" -f "$REPO_ROOT/benches/snapshot/wide.sql" >"$WORK/wide-$k.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/wide-*.log >&2; die "loading wide failed"; }; done
src "ALTER TABLE wide ADD PRIMARY KEY (id)"
src "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
src "VACUUM (FREEZE, ANALYZE)"
log "walrelay snapshot"
"$WALRELAY_BIN" --source "$SRC_URL" --target "$TGT_URL" snapshot >"$WORK/snapshot.log" 2>&1 \
    || { redact <"$WORK/snapshot.log" >&2; die "walrelay snapshot failed"; }
tgt "VACUUM (FREEZE, ANALYZE)"
for side in "$SRC_URL" "$TGT_URL"; do q "$side" "CREATE EXTENSION pgcmp"; q "$side" "CHECKPOINT"; done
ACCOUNTS=$(src "SELECT count(*) FROM pgbench_accounts")
WIDE=$(src "SELECT count(*) FROM wide")
ALL_ROWS=$(src "SELECT sum(n) FROM (SELECT count(*) n FROM pgbench_accounts UNION ALL SELECT count(*) FROM pgbench_branches
                UNION ALL SELECT count(*) FROM pgbench_tellers UNION ALL SELECT count(*) FROM pgbench_history UNION ALL SELECT count(*) FROM wide) s")
WIDE_SIZE=$(src "SELECT pg_size_pretty(pg_total_relation_size('wide'))")
ACC_SIZE=$(src "SELECT pg_size_pretty(pg_total_relation_size('pgbench_accounts'))")

# ---------------------------------------------------------------- runs
declare -A WALL RC
timed() { # name cmd... (shell functions allowed: timed by the shell's clock)
    local name=$1; shift
    local t0 t1
    log "running $name"
    t0=$(now)
    if "$@" >"$WORK/$name.log" 2>&1; then RC[$name]=0; else RC[$name]=$?; fi
    t1=$(now)
    WALL[$name]=$(secs "$t0" "$t1")
    log "$name: exit ${RC[$name]}, ${WALL[$name]}s"
    if [[ ${RC[$name]} -ne 0 ]]; then tail -n 20 "$WORK/$name.log" | redact >&2; fi
}
wr() { timeout "$TOOL_TIMEOUT" "$WALRELAY_BIN" --source "$SRC_URL" --target "$TGT_URL" "$@"; }
pgc() { # table: key and value columns from the catalog
    # shellcheck disable=SC2086
    timeout "$TOOL_TIMEOUT" pg_comparator --env-pass=PGC_PASS $PGC_ARGS \
        "pgsql://postgres@127.0.0.1:$SRC_PORT/$DB/public.$1?$2" "pgsql://postgres@127.0.0.1:$TGT_PORT/$DB/public.$1?$2"
}
count_all() { # both sides at once, like the verifiers
    local t sql=""
    for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history wide; do sql+="SELECT count(*) FROM $t; "; done
    q "$SRC_URL" "$sql" >/dev/null & local a=$!
    q "$TGT_URL" "$sql" >/dev/null & local b=$!
    wait $a && wait $b
}
export PGC_PASS=$PGPASS
# Warm both caches the same way for every tool.
count_all
ACC_COLS="aid:bid,abalance,filler"
WIDE_COLS="id:title,body,payload,doc,created"
# shellcheck disable=SC2086   # WALRELAY_ARGS: split into words on purpose
timed walrelay_accounts wr --table public.pgbench_accounts verify --chunk-rows "$CHUNK_ROWS" $WALRELAY_ARGS
timed pgc_accounts pgc pgbench_accounts "$ACC_COLS"
# shellcheck disable=SC2086
timed walrelay_wide wr --table public.wide verify --chunk-rows "$CHUNK_ROWS" $WALRELAY_ARGS
timed pgc_wide pgc wide "$WIDE_COLS"
# shellcheck disable=SC2086
timed walrelay_all wr verify --chunk-rows "$CHUNK_ROWS" $WALRELAY_ARGS
timed count_all count_all
for n in pgc_accounts pgc_wide; do
    # pg_comparator prints one line per differing key; none is expected here.
    if [[ ${RC[$n]} -eq 0 ]] && grep -qE '^(UPDATE|INSERT|DELETE)' "$WORK/$n.log"; then RC[$n]="differences"; fi
done

# ---------------------------------------------------------------- report
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }'; }
mkdir -p "$OUT_DIR"
{
    echo "# verify benchmark $STAMP"
    echo
    echo "- $PG_VERSION, pg_comparator $PGC_VERSION (checksum ck, aggregate sum: its defaults), $(nproc) cores, load average $(loadavg)"
    echo "- pgbench scale $SCALE: pgbench_accounts $ACCOUNTS rows ($ACC_SIZE); wide $WIDE rows ($WIDE_SIZE); all tables $ALL_ROWS rows"
    echo "- walrelay verify --chunk-rows $CHUNK_ROWS $WALRELAY_ARGS"
    echo
    echo "| run | exit | seconds | rows/s |"
    echo "| --- | --- | --- | --- |"
    echo "| walrelay verify pgbench_accounts | ${RC[walrelay_accounts]} | ${WALL[walrelay_accounts]} | $(rate "$ACCOUNTS" "${WALL[walrelay_accounts]}") |"
    echo "| pg_comparator pgbench_accounts | ${RC[pgc_accounts]} | ${WALL[pgc_accounts]} | $(rate "$ACCOUNTS" "${WALL[pgc_accounts]}") |"
    echo "| walrelay verify wide | ${RC[walrelay_wide]} | ${WALL[walrelay_wide]} | $(rate "$WIDE" "${WALL[walrelay_wide]}") |"
    echo "| pg_comparator wide | ${RC[pgc_wide]} | ${WALL[pgc_wide]} | $(rate "$WIDE" "${WALL[pgc_wide]}") |"
    echo "| walrelay verify, all tables | ${RC[walrelay_all]} | ${WALL[walrelay_all]} | $(rate "$ALL_ROWS" "${WALL[walrelay_all]}") |"
    echo "| count(*) of every table, both sides | ${RC[count_all]} | ${WALL[count_all]} | $(rate "$ALL_ROWS" "${WALL[count_all]}") |"
    echo
    echo "- pg_comparator / walrelay: pgbench_accounts $(ratio "${WALL[pgc_accounts]}" "${WALL[walrelay_accounts]}")x, wide $(ratio "${WALL[pgc_wide]}" "${WALL[walrelay_wide]}")x (above 1: walrelay faster)"
    echo "- walrelay (all tables) / count(*): $(ratio "${WALL[walrelay_all]}" "${WALL[count_all]}")x"
    echo
    echo "walrelay verify's own report (all tables; \`max chunk\`: the longest source+target comparison of one chunk):"
    echo
    echo '```'
    grep -vE '^[0-9-]+T[0-9:.]+Z' "$WORK/walrelay_all.log" | redact
    echo '```'
} | tee "$REPORT"
log "report: $REPORT"
for n in "${!RC[@]}"; do [[ ${RC[$n]} == 0 ]] || die "$n did not come out clean (exit ${RC[$n]})"; done
