#!/usr/bin/env bash
# Snapshot benchmark: walrelay snapshot vs pgcopydb clone vs pg_dump -Fd -j2 + pg_restore -j2,
# and the machine's ceiling: the bare parallel binary COPY pipe of the same tables plus the
# schema before and the index build after (what any tool must at least spend).
#
# Starts two throwaway PostgreSQL clusters (source, target), loads pgbench scale $SCALE
# plus a $WIDE_ROWS-row table with TOASTed text, bytea and jsonb into the source, then
# copies the source into a fresh empty target database with each tool, timed with
# /usr/bin/time -v (wall time, peak RSS). Checks every copy (row counts, content
# hashes, index and constraint counts) and writes a report to stdout and to
# benches/out/snapshot-<date>.md. It reports speed; it does not assert it.
#
# Quick smoke run:   SCALE=1 WIDE_ROWS=5000 benches/snapshot/run.sh
# Full run:          benches/snapshot/run.sh
# See benches/README.md for every knob.
set -euo pipefail

# ---------------------------------------------------------------- settings
SCALE=${SCALE:-20}                      # pgbench scale factor (100k accounts each)
WIDE_ROWS=${WIDE_ROWS:-500000}          # rows in the `wide` table
JOBS=${JOBS:-2}                         # parallelism given to every tool
TOOLS=${TOOLS:-"pgdump pgcopydb ceiling walrelay"}   # which tools, in this order
VERIFY=${VERIFY:-hash}                  # hash: counts + content hashes; count: counts only
LOAD_JOBS=${LOAD_JOBS:-2}               # parallel sessions loading `wide`
PGBENCH_INIT_FLAGS=${PGBENCH_INIT_FLAGS:-}   # e.g. --foreign-keys
KEEP_TARGETS=${KEEP_TARGETS:-0}         # 1: keep each target database (default: drop after its check)
PGCOPYDB_SPLIT=${PGCOPYDB_SPLIT:-100MB} # pgcopydb --split-tables-larger-than
WALRELAY_ARGS=${WALRELAY_ARGS:-}        # extra arguments after `snapshot`
SHARED_BUFFERS=${SHARED_BUFFERS:-1GB}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-3600}      # seconds before a tool run is killed (exit 124)
# KEEP_TMP, BENCH_TMPDIR, INSTALL, PG_BINDIR, WALRELAY_BIN: see benches/lib.sh

BENCH_NAME=snapshot
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO_ROOT/benches/out}
STAMP=$(date -u +%Y%m%d-%H%M%S)
REPORT=$OUT_DIR/snapshot-$STAMP.md

# shellcheck source=benches/lib.sh
source "$REPO_ROOT/benches/lib.sh"

# ---------------------------------------------------------------- prerequisites
# Every tool (pgcopydb and walrelay call pg_dump/pg_restore themselves) uses the PostgreSQL
# binaries bench_prereqs puts first on PATH.
PREREQS=(/usr/bin/time:time)
[[ " $TOOLS " != *" pgcopydb "* ]] || PREREQS+=(pgcopydb)
bench_prereqs "${PREREQS[@]}"
if [[ " $TOOLS " == *" walrelay "* ]]; then
    bench_build_walrelay
fi

# ---------------------------------------------------------------- clusters
bench_workdir   # walrelay runs from a private copy of the binary

COMMON_SETTINGS="
shared_buffers = '$SHARED_BUFFERS'
max_wal_size = '4GB'
min_wal_size = '1GB'
checkpoint_timeout = '30min'
fsync = on
synchronous_commit = on
full_page_writes = on
maintenance_work_mem = '512MB'
work_mem = '16MB'
max_connections = 100
wal_compression = off
autovacuum = on
logging_collector = off
log_min_messages = warning
"
SOURCE_SETTINGS="
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
"
TARGET_SETTINGS="
wal_level = replica
"

pick_port; SRC_PORT=$PORT
pick_port; TGT_PORT=$PORT
log "starting clusters in $WORK (source 127.0.0.1:$SRC_PORT, target 127.0.0.1:$TGT_PORT)"
start_cluster source "$SRC_PORT" "$COMMON_SETTINGS$SOURCE_SETTINGS"
start_cluster target "$TGT_PORT" "$COMMON_SETTINGS$TARGET_SETTINGS"

# TCP + SCRAM password for every client; TLS off on both ends for every tool.
SRC_DB=bench
SRC_URL=$(url "$SRC_PORT" "$SRC_DB")
src() { q "$SRC_URL" "$1"; }
tgt() { q "$(url "$TGT_PORT" "$1")" "$2"; }

q "$(url "$SRC_PORT" postgres)" "CREATE DATABASE $SRC_DB"

# ---------------------------------------------------------------- load
T0=$(date +%s)
log "loading pgbench -i -s $SCALE"
# shellcheck disable=SC2086
"$PG_BINDIR/pgbench" -i -s "$SCALE" -q $PGBENCH_INIT_FLAGS "$SRC_URL" >"$WORK/pgbench.log" 2>&1 \
    || { cat "$WORK/pgbench.log" >&2; die "pgbench -i failed"; }

log "loading wide: $WIDE_ROWS rows in $LOAD_JOBS sessions"
src "CREATE TABLE wide (
        id bigint NOT NULL,
        title text,
        body text,
        payload bytea,
        doc jsonb,
        created timestamptz NOT NULL
     )"
pids=()
per=$(((WIDE_ROWS + LOAD_JOBS - 1) / LOAD_JOBS))
for ((k = 0; k < LOAD_JOBS; k++)); do
    lo=$((k * per + 1)); hi=$(((k + 1) * per)); ((hi > WIDE_ROWS)) && hi=$WIDE_ROWS
    ((lo > hi)) && continue
    "$PG_BINDIR/psql" "$SRC_URL" -X -q -v lo="$lo" -v hi="$hi" -f "$SCRIPT_DIR/wide.sql" \
        >"$WORK/wide-$k.log" 2>&1 &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || { cat "$WORK"/wide-*.log >&2; die "loading wide failed"; }; done
src "ALTER TABLE wide ADD PRIMARY KEY (id)"
src "CREATE INDEX wide_created_idx ON wide (created)"
# walrelay refuses to publish a table without a replica identity (UPDATE/DELETE on it would
# fail on the source once published): give such tables (pgbench_history) REPLICA IDENTITY FULL,
# as a user would. Harmless for the other tools.
RI_FULL=$(src "SELECT coalesce(string_agg(c.oid::regclass::text, ', ' ORDER BY c.relname), '')
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relreplident = 'd'
                  AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)")
for t in ${RI_FULL//,/ }; do src "ALTER TABLE $t REPLICA IDENTITY FULL"; done
log "vacuum (freeze, analyze) + checkpoint on the source"
src "VACUUM (FREEZE, ANALYZE)"
src "CHECKPOINT"
LOAD_SECS=$(($(date +%s) - T0))

SRC_BYTES=$(src "SELECT pg_database_size('$SRC_DB')")
SRC_MB=$(awk -v b="$SRC_BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
SRC_PRETTY=$(src "SELECT pg_size_pretty(pg_database_size('$SRC_DB'))")
TABLE_SIZES=$(src "SELECT format('| %s | %s | %s | %s | %s |', c.relname, c.reltuples::bigint,
                        pg_size_pretty(pg_table_size(c.oid) - coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)),
                        pg_size_pretty(coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0)),
                        pg_size_pretty(pg_indexes_size(c.oid)))
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = 'public' AND c.relkind = 'r'
                  ORDER BY pg_total_relation_size(c.oid) DESC")
log "source database: $SRC_PRETTY ($SRC_BYTES bytes), loaded in ${LOAD_SECS}s"

# ---------------------------------------------------------------- checks
CHECK_TABLES="pgbench_accounts pgbench_branches pgbench_tellers pgbench_history wide"
# One line per table: name count [hash]. Hash: md5 over the rows' text forms in key order,
# computed server-side with fixed output settings.
fingerprint() { # url
    local url=$1 t sql
    for t in $CHECK_TABLES; do
        if [[ $VERIFY == hash ]]; then
            sql="SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3; SET bytea_output = 'hex';
                 SELECT '$t', count(*), coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '-') FROM $t AS x"
        else
            sql="SELECT '$t', count(*) FROM $t"
        fi
        "$PG_BINDIR/psql" "$url" -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -c "$sql" | tail -n 1
    done
    "$PG_BINDIR/psql" "$url" -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -c "
        SELECT 'indexes', count(*) FROM pg_indexes WHERE schemaname = 'public';
        SELECT 'constraints', count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
         WHERE n.nspname = 'public';"
}
log "fingerprinting the source ($VERIFY)"
SRC_FP=$(fingerprint "$SRC_URL")
SRC_ACCOUNTS=$(awk '$1 == "pgbench_accounts" { print $2 }' <<<"$SRC_FP")
SRC_WIDE=$(awk '$1 == "wide" { print $2 }' <<<"$SRC_FP")
log "source rows: pgbench_accounts=$SRC_ACCOUNTS wide=$SRC_WIDE"

# ---------------------------------------------------------------- runs
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

declare -A WALL RSS STATUS DETAIL LOADAVG
RUN_N=0

timed() { # name logfile cmd... ; sets LAST_RC, LAST_WALL, LAST_RSS
    local name=$1 logf=$2; shift 2
    local tf=$WORK/time-$name.txt
    LOADAVG[$name]=$(cut -d' ' -f1 /proc/loadavg)
    log "running $name: $(printf '%q ' "$@" | redact)"
    if /usr/bin/time -v -o "$tf" timeout "$TOOL_TIMEOUT" "$@" >"$logf" 2>&1; then LAST_RC=0; else LAST_RC=$?; fi
    [[ $LAST_RC -eq 124 ]] && log "$name: killed after ${TOOL_TIMEOUT}s (TOOL_TIMEOUT)"
    read -r LAST_WALL LAST_RSS < <(parse_time "$tf")
    log "$name: exit $LAST_RC, ${LAST_WALL}s wall, peak RSS $((LAST_RSS / 1024)) MB"
    if [[ $LAST_RC -ne 0 ]]; then
        log "last lines of $name's output:"
        tail -n 30 "$logf" | redact >&2
    fi
}

prepare_target() { # db
    tgt postgres "DROP DATABASE IF EXISTS $1"
    tgt postgres "CREATE DATABASE $1"
    tgt postgres "CHECKPOINT"
    src "CHECKPOINT"
}

check_copy() { # tool db
    local tool=$1 db=$2 fp
    log "checking $tool's copy ($VERIFY)"
    if ! fp=$(fingerprint "$(url "$TGT_PORT" "$db")" 2>"$WORK/check-$tool.err"); then
        if [[ ${STATUS[$tool]:-ok} == ok ]]; then STATUS[$tool]="check failed"; else STATUS[$tool]+=", check failed"; fi
        local err
        err=$(head -n 3 "$WORK/check-$tool.err" | tr '\n' ' ')
        DETAIL[$tool]="${DETAIL[$tool]:-}; check failed: $err"
        log "$tool: check query failed: $err"
        FAILED=1
        return
    fi
    local t_acc t_wide t_size
    t_size=$(tgt postgres "SELECT pg_size_pretty(pg_database_size('$db'))" 2>/dev/null || echo "?")
    DETAIL[$tool]="${DETAIL[$tool]:-}; target database $t_size"
    t_acc=$(awk '$1 == "pgbench_accounts" { print $2 }' <<<"$fp")
    t_wide=$(awk '$1 == "wide" { print $2 }' <<<"$fp")
    log "$tool rows: pgbench_accounts=$t_acc (source $SRC_ACCOUNTS), wide=$t_wide (source $SRC_WIDE)"
    if [[ $fp != "$SRC_FP" ]]; then
        if [[ ${STATUS[$tool]:-ok} == ok ]]; then STATUS[$tool]=MISMATCH; else STATUS[$tool]+=", MISMATCH"; fi
        local d
        d=$(diff <(echo "$SRC_FP") <(echo "$fp") | grep '^[<>]' | tr '\n' ' ' || true)
        DETAIL[$tool]="${DETAIL[$tool]:-}; differs from the source (< source, > target): $d"
        log "$tool: copy differs from the source (< source, > target): $d"
        FAILED=1
    fi
}

drop_target() { [[ $KEEP_TARGETS -eq 1 ]] || tgt postgres "DROP DATABASE IF EXISTS $1"; }

run_pgdump() {
    local db=t_pgdump dir=$WORK/dump
    prepare_target "$db"
    rm -rf "$dir"
    timed pg_dump "$WORK/pg_dump.log" "$PG_BINDIR/pg_dump" -Fd -j "$JOBS" -f "$dir" "$SRC_URL"
    local d_rc=$LAST_RC d_wall=$LAST_WALL d_rss=$LAST_RSS
    local r_rc=1 r_wall=0 r_rss=0
    if [[ $d_rc -eq 0 ]]; then
        timed pg_restore "$WORK/pg_restore.log" "$PG_BINDIR/pg_restore" -j "$JOBS" --no-owner --no-acl \
            -d "$(url "$TGT_PORT" "$db")" "$dir"
        r_rc=$LAST_RC r_wall=$LAST_WALL r_rss=$LAST_RSS
    fi
    WALL[pgdump]=$(awk -v a="$d_wall" -v b="$r_wall" 'BEGIN { printf "%.2f", a + b }')
    RSS[pgdump]=$((d_rss > r_rss ? d_rss : r_rss))
    DUMP_MB=$(du -sm "$dir" 2>/dev/null | cut -f1 || echo "?")
    DETAIL[pgdump]="pg_dump ${d_wall}s / $((d_rss / 1024)) MB, pg_restore ${r_wall}s / $((r_rss / 1024)) MB; dump dir ${DUMP_MB} MB"
    rm -rf "$dir"
    if [[ $d_rc -ne 0 || $r_rc -ne 0 ]]; then
        STATUS[pgdump]="failed (pg_dump exit $d_rc, pg_restore exit $r_rc)"
        FAILED=1
    else
        STATUS[pgdump]=ok
    fi
    check_copy pgdump "$db"
    drop_target "$db"
}

run_pgcopydb() {
    local db=t_pgcopydb dir=$WORK/pgcopydb
    prepare_target "$db"
    rm -rf "$dir"
    timed pgcopydb "$WORK/pgcopydb.log" pgcopydb clone \
        --source "$SRC_URL" --target "$(url "$TGT_PORT" "$db")" --dir "$dir" \
        --table-jobs "$JOBS" --index-jobs "$JOBS" --split-tables-larger-than "$PGCOPYDB_SPLIT" \
        --no-owner --no-acl --skip-extensions
    WALL[pgcopydb]=$LAST_WALL
    RSS[pgcopydb]=$LAST_RSS
    if [[ $LAST_RC -ne 0 ]]; then
        STATUS[pgcopydb]="failed (exit $LAST_RC)"
        FAILED=1
    else
        STATUS[pgcopydb]=ok
    fi
    DETAIL[pgcopydb]="$(grep -cE ' (ERROR|FATAL) ' "$WORK/pgcopydb.log" || true) ERROR lines in its log"
    rm -rf "$dir"
    check_copy pgcopydb "$db"
    drop_target "$db"
}

run_walrelay() {
    local db=t_walrelay
    RUN_N=$((RUN_N + 1))
    local slot=bench_$RUN_N
    prepare_target "$db"
    # shellcheck disable=SC2086
    timed walrelay "$WORK/walrelay.log" "$WALRELAY_BIN" \
        --source "$SRC_URL" --target "$(url "$TGT_PORT" "$db")" --slot "$slot" --publication "$slot" \
        snapshot --jobs "$JOBS" $WALRELAY_ARGS
    WALL[walrelay]=$LAST_WALL
    RSS[walrelay]=$LAST_RSS
    if [[ $LAST_RC -ne 0 ]]; then
        STATUS[walrelay]="failed (exit $LAST_RC)"
        FAILED=1
    else
        STATUS[walrelay]=ok
    fi
    WALRELAY_OUT=$(sed -E -e "s/$PGPASS/***/g" -e 's/\x1b\[[0-9;]*m//g' "$WORK/walrelay.log")
    DETAIL[walrelay]="slot $slot"
    # Leave the source clean for the next run: the slot (and publication) walrelay left for `stream`.
    src "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
          WHERE slot_name = '$slot' AND NOT active" >/dev/null || true
    src "DROP PUBLICATION IF EXISTS $slot" || true
    src "DROP PUBLICATION IF EXISTS walrelay" || true
    check_copy walrelay "$db"
    drop_target "$db"
}

# The ceiling: pre-data restored, every table piped with binary COPY (JOBS at a time, whole
# tables, no snapshot: the source is idle), post-data (indexes, constraints) restored with
# pg_restore -j JOBS. No bookkeeping, no resume, no consistency with a slot.
run_ceiling() {
    local db=t_ceiling tgt_url
    tgt_url=$(url "$TGT_PORT" "$db")
    prepare_target "$db"
    cat >"$WORK/ceiling.sh" <<'SH'
set -euo pipefail
src=$1 tgt=$2 jobs=$3 dir=$4 bin=$5
"$bin/pg_dump" --section=pre-data -Fc "$src" | "$bin/pg_restore" --no-owner --no-acl -d "$tgt"
"$bin/psql" "$src" -X -A -t -v ON_ERROR_STOP=1 -c \
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      ORDER BY pg_total_relation_size(c.oid) DESC" >"$dir/tables"
export src tgt bin
xargs -P "$jobs" -I{} bash -o pipefail -c \
    '"$bin/psql" "$src" -X -q -v ON_ERROR_STOP=1 -c "COPY {} TO STDOUT (FORMAT binary)" |
     "$bin/psql" "$tgt" -X -q -v ON_ERROR_STOP=1 -c "COPY {} FROM STDIN (FORMAT binary)"' <"$dir/tables"
"$bin/pg_dump" --section=post-data -Fc -f "$dir/post.dump" "$src"
"$bin/pg_restore" -j "$jobs" --no-owner --no-acl -d "$tgt" "$dir/post.dump"
SH
    timed ceiling "$WORK/ceiling.log" bash "$WORK/ceiling.sh" "$SRC_URL" "$tgt_url" "$JOBS" "$WORK" "$PG_BINDIR"
    WALL[ceiling]=$LAST_WALL
    RSS[ceiling]=$LAST_RSS
    if [[ $LAST_RC -ne 0 ]]; then
        STATUS[ceiling]="failed (exit $LAST_RC)"
        FAILED=1
    else
        STATUS[ceiling]=ok
    fi
    DETAIL[ceiling]="pre-data, $JOBS × (psql COPY TO STDOUT (FORMAT binary) | psql COPY FROM STDIN), post-data with pg_restore -j$JOBS"
    check_copy ceiling "$db"
    drop_target "$db"
}

for tool in $TOOLS; do
    case $tool in
        pgdump | pg_dump) run_pgdump ;;
        pgcopydb) run_pgcopydb ;;
        ceiling) run_ceiling ;;
        walrelay) run_walrelay ;;
        *) die "unknown tool $tool (pgdump, pgcopydb, ceiling, walrelay)" ;;
    esac
done

# ---------------------------------------------------------------- report
LEFT_SLOTS=$(src "SELECT string_agg(slot_name, ', ') FROM pg_replication_slots")
mem_total=$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu_model=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
walrelay_version="-"
walrelay_commit=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n ${WALRELAY_BIN:-} ]]; then
    walrelay_version=$("$WALRELAY_BIN" --version 2>/dev/null || echo "?")
fi

okrun() { [[ ${STATUS[$1]:-} == ok ]]; }
ratio() { # tool
    # shellcheck disable=SC2015   # echo never fails
    okrun "$1" && okrun pgcopydb || { echo "-"; return; }
    awk -v a="${WALL[$1]}" -v b="${WALL[pgcopydb]}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "-" }'
}

{
    echo "# walrelay snapshot benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Source: pgbench scale $SCALE + \`wide\` with $WIDE_ROWS rows; database size **$SRC_PRETTY** ($SRC_MB MB)."
    echo "Each tool copies the whole source database into a fresh empty target database, $JOBS-way parallel."
    echo
    echo "| tool | status | wall s | peak RSS MB | MB/s of source | ratio vs pgcopydb |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
    for tool in $TOOLS; do
        if [[ $tool == pg_dump ]]; then tool=pgdump; fi
        case $tool in
            pgdump) name="pg_dump -Fd -j$JOBS + pg_restore -j$JOBS" ;;
            pgcopydb) name="pgcopydb clone" ;;
            ceiling) name="ceiling: bare parallel binary COPY + index build" ;;
            *) name="walrelay snapshot --jobs $JOBS" ;;
        esac
        w=${WALL[$tool]:-}
        if [[ -n $w ]]; then
            mbs=$(awk -v s="$SRC_MB" -v w="$w" 'BEGIN { if (w > 0) printf "%.1f", s / w; else print "-" }')
            okrun "$tool" || mbs="-"
            printf '| %s | %s | %s | %d | %s | %s |\n' "$name" "${STATUS[$tool]}" "$w" \
                "$((${RSS[$tool]:-0} / 1024))" "$mbs" "$(ratio "$tool")"
        fi
    done
    echo
    for tool in $TOOLS; do
        if [[ $tool == pg_dump ]]; then tool=pgdump; fi
        if [[ -n ${DETAIL[$tool]:-} ]]; then echo "- $tool: ${DETAIL[$tool]}"; fi
    done
    if okrun walrelay; then
        echo
        echo "Targets (reported, not asserted):"
        r=$(ratio walrelay)
        if [[ $r != "-" ]]; then
            met=$(awk -v a="${WALL[walrelay]}" -v b="${WALL[pgcopydb]}" 'BEGIN { print (a <= 0.9 * b) ? "met" : "NOT met" }')
            echo "- walrelay wall time ≤ 0.9× pgcopydb: $r → $met"
        else
            echo "- walrelay wall time ≤ 0.9× pgcopydb: no successful pgcopydb run to compare with"
        fi
        if okrun ceiling; then
            r=$(awk -v a="${WALL[walrelay]}" -v b="${WALL[ceiling]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
            echo "- walrelay wall time ≤ 1.1× the ceiling: ${r}× → $(awk -v r="$r" 'BEGIN { print (r != "-" && r <= 1.1) ? "met" : "NOT met" }')"
        fi
        rss_mb=$((${RSS[walrelay]:-0} / 1024))
        echo "- walrelay peak RSS ≤ 150 MB: $rss_mb MB → $([[ $rss_mb -le 150 ]] && echo met || echo "NOT met")"
    fi
    echo
    echo "## Source tables"
    echo
    echo "| table | rows (est.) | heap | TOAST | indexes |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    echo "$TABLE_SIZES"
    echo
    echo "Source fingerprint ($VERIFY; every copy must match it exactly):"
    echo
    echo '```'
    echo "$SRC_FP"
    echo '```'
    echo
    echo "## Machine and settings"
    echo
    echo "- CPU: $(nproc) cores ($cpu_model); memory $mem_total; kernel $(uname -r)"
    echo "- $PG_VERSION (both clusters, same machine; clients over TCP 127.0.0.1, SCRAM password auth, sslmode=disable)"
    echo "- pgcopydb: $(pgcopydb --version 2>/dev/null | head -n 1 | sed 's/.*version //' || echo '-')"
    echo "- walrelay: $walrelay_version (repo commit $walrelay_commit), binary ${WALRELAY_SRC_BIN:-${WALRELAY_BIN:--}}"
    echo "- both clusters: shared_buffers=$SHARED_BUFFERS, max_wal_size=4GB, checkpoint_timeout=30min,"
    echo "  fsync=on, synchronous_commit=on, full_page_writes=on (durability left realistic),"
    echo "  maintenance_work_mem=512MB, work_mem=16MB, autovacuum=on, locale C, UTF8"
    echo "- source: wal_level=logical, max_replication_slots=10, max_wal_senders=10; target: wal_level=replica"
    echo "- tables without a primary key set to REPLICA IDENTITY FULL on the source (walrelay refuses"
    echo "  to publish them otherwise): ${RI_FULL:-none}"
    echo "- source loaded in ${LOAD_SECS}s, then VACUUM (FREEZE, ANALYZE) and CHECKPOINT; caches warm"
    echo "  (source fits in RAM); CHECKPOINT on both clusters before each run"
    echo "- commands (target database created empty before each run):"
    echo "  - \`pg_dump -Fd -j$JOBS -f DIR SOURCE\` then \`pg_restore -j$JOBS --no-owner --no-acl -d TARGET DIR\` (timed separately, summed)"
    echo "  - \`pgcopydb clone --source SOURCE --target TARGET --dir DIR --table-jobs $JOBS --index-jobs $JOBS --split-tables-larger-than $PGCOPYDB_SPLIT --no-owner --no-acl --skip-extensions\`"
    echo "  - \`walrelay --source SOURCE --target TARGET --slot bench_N --publication bench_N snapshot --jobs $JOBS $WALRELAY_ARGS\`; slot and publication dropped afterwards"
    la=""
    for k in "${!LOADAVG[@]}"; do la+=" $k=${LOADAVG[$k]}"; done
    echo "- 1-minute load average when each run started (other work on the machine skews the figures):$la"
    echo "- wall time and peak RSS from \`/usr/bin/time -v\`; peak RSS is the largest single process"
    echo "  in the tool's process tree (ru_maxrss), not a sum: pg_dump/pg_restore/pgcopydb fork workers"
    echo "- replication slots left on the source after the runs: ${LEFT_SLOTS:-none}"
    if [[ -n ${WALRELAY_OUT:-} ]]; then
        echo
        echo "## walrelay output"
        echo
        echo '```'
        tail -n 40 <<<"$WALRELAY_OUT"
        echo '```'
    fi
} >"$WORK/report.md"

bench_publish_report
log "report written to $REPORT"
if [[ $FAILED -ne 0 ]]; then
    log "some runs failed or copies differ from the source (see above)"
    exit 1
fi
exit 0
