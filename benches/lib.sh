# shellcheck shell=bash disable=SC2034   # variables set here are read by the sourcing script
# Shared helpers for the benchmark scripts (sourced, never run): snapshot, stream, verify and
# cutover/run.sh all source this file. The caller runs with `set -euo pipefail` and sets,
# before sourcing:
#   BENCH_NAME     short name: temp directory walrelay-$BENCH_NAME-bench.XXXXXX
#   REPO_ROOT      the repository root
# and may set (defaults below): KEEP_TMP, BENCH_TMPDIR, INSTALL, PG_BINDIR, WALRELAY_BIN.
#
# Functions, in the order a script uses them:
#   bench_prereqs CMD...     installs what is missing (root + apt-get), finds PG_BINDIR
#   bench_build_walrelay     WALRELAY_BIN (built unless given), WALRELAY_COMMIT, a private copy
#   bench_workdir            WORK, as_pg, the cleanup trap (BG_PIDS, STARTED), the password
#   pick_port                sets PORT to a free 127.0.0.1 port not picked before
#   start_cluster NAME PORT SETTINGS
#   url PORT DB, q URL SQL, wait_until URL SQL TIMEOUT, stop_waiters URL
#   pgbench_fingerprint URL  one line per pgbench table: count, balance sum [, content hash]
#   bench_publish_report     $WORK/report.md to $REPORT (in OUT_DIR) and to stdout
#   now, secs, loadavg, redact, note

KEEP_TMP=${KEEP_TMP:-0}                 # 1: leave the clusters' directory behind (clusters are stopped)
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
INSTALL=${INSTALL:-1}                   # 0: never apt-get install
POLL=${POLL:-0.02}                      # seconds between server-side polls (wait_until)

log() { printf '%s [bench] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
FAILED=0
NOTES=()
note() { NOTES+=("$*"); log "NOTE: $*"; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# PostgreSQL's binaries: PG_BINDIR, else `pg_config --bindir`, else the newest
# /usr/lib/postgresql/*/bin, else the directory of `initdb` on PATH. Prints it (empty: none).
find_pg_bindir() {
    local d
    if [[ -n ${PG_BINDIR:-} ]]; then echo "$PG_BINDIR"; return; fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d && -x $d/initdb ]]; then echo "$d"; return; fi
    fi
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        if [[ -x $d/initdb ]]; then echo "$d"; return; fi
    done
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    echo ""
}

# Installs the missing commands (as root, with apt-get, unless INSTALL=0), PostgreSQL if no
# server binaries are found; sets PG_BINDIR, PG_VERSION and puts PG_BINDIR first on PATH
# (walrelay's snapshot runs pg_dump from PATH).
bench_prereqs() { # commands needed besides PostgreSQL: "cmd[:package]"...
    local need=() c pkg
    for c in "$@"; do
        pkg=${c#*:}
        c=${c%%:*}
        command -v "$c" >/dev/null 2>&1 || need+=("$pkg")
    done
    [[ -n $(find_pg_bindir) ]] || need+=(postgresql postgresql-client)
    if ((${#need[@]})); then
        if [[ $IS_ROOT -eq 1 && $INSTALL -eq 1 ]] && command -v apt-get >/dev/null; then
            log "installing: ${need[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null \
                || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null; }
        else
            die "missing: ${need[*]} (install them, e.g. apt-get install -y ${need[*]})"
        fi
    fi
    PG_BINDIR=$(find_pg_bindir)
    local b
    for b in initdb pg_ctl postgres psql pgbench pg_dump pg_restore; do
        [[ -x $PG_BINDIR/$b ]] || die "$PG_BINDIR/$b not found (set PG_BINDIR, or apt-get install -y postgresql)"
    done
    export PATH=$PG_BINDIR:$PATH
    PG_VERSION=$("$PG_BINDIR/postgres" --version)
}

# Builds walrelay with `cargo build --release` unless WALRELAY_BIN is given; sets
# WALRELAY_SRC_BIN, WALRELAY_COMMIT (a label for the report) and HEAD_AT_START. The copy
# into $WORK (bench_workdir) is what runs: target/release is shared with other builds.
bench_build_walrelay() {
    HEAD_AT_START=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
    if [[ -z ${WALRELAY_BIN:-} ]]; then
        local dirty=""
        git -C "$REPO_ROOT" status --porcelain -- src proto Cargo.toml Cargo.lock 2>/dev/null | grep -q . && dirty=" + uncommitted changes"
        WALRELAY_COMMIT=${WALRELAY_COMMIT:-$HEAD_AT_START$dirty}
        log "cargo build --release (set WALRELAY_BIN to skip)"
        (cd "$REPO_ROOT" && cargo build --release --quiet --bin walrelay) || die "cargo build --release failed"
        WALRELAY_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/walrelay
    else
        WALRELAY_COMMIT=${WALRELAY_COMMIT:-"not given (WALRELAY_BIN set; repo HEAD at start $HEAD_AT_START)"}
    fi
    [[ -x $WALRELAY_BIN ]] || die "walrelay binary $WALRELAY_BIN not found"
    WALRELAY_SRC_BIN=$WALRELAY_BIN
    WALRELAY_BIN_MTIME=$(date -u -r "$WALRELAY_SRC_BIN" '+%Y-%m-%d %H:%M:%S UTC')
}

as_pg() { if [[ $IS_ROOT -eq 1 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# The work directory, the private walrelay copy, the password and the cleanup trap.
STARTED=()      # data directories of the clusters started (stopped on exit)
BG_PIDS=()      # processes started in the background (TERM, then KILL, on exit)
bench_cleanup() {
    local rc=$?
    set +e
    local p d
    for p in "${BG_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
    done
    sleep 0.5
    for p in "${BG_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    for d in "${STARTED[@]}"; do
        as_pg "$PG_BINDIR/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    if [[ $KEEP_TMP -eq 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
bench_workdir() {
    if [[ $IS_ROOT -eq 1 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the postgres OS user (initdb refuses root)"
    fi
    WORK=$(mktemp -d "$BENCH_TMPDIR/walrelay-$BENCH_NAME-bench.XXXXXX")
    chmod 755 "$WORK"
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    if [[ -n ${WALRELAY_SRC_BIN:-} ]]; then
        cp "$WALRELAY_SRC_BIN" "$WORK/walrelay"
        WALRELAY_BIN=$WORK/walrelay
    fi
    PGPASS=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')   # hex: URL-safe
    printf '%s\n' "$PGPASS" >"$WORK/pwfile"
    chmod 600 "$WORK/pwfile"
    if [[ $IS_ROOT -eq 1 ]]; then chown postgres "$WORK/pwfile"; fi
}
redact() { sed -E "s/${PGPASS:-no-password-yet}/***/g"; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PICKED_PORTS=""
pick_port() { # sets PORT
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if port_free "$p" && [[ " $PICKED_PORTS " != *" $p "* ]]; then
            PICKED_PORTS="$PICKED_PORTS $p"
            PORT=$p
            return 0
        fi
    done
    die "no free port found"
}

# initdb (SCRAM for every connection, user postgres with $PGPASS), the given
# postgresql.conf lines, listen on ${LISTEN_ADDR:-127.0.0.1}:PORT, socket in the cluster's directory.
start_cluster() { # name port settings
    local name=$1 port=$2 settings=$3 dir=$WORK/$1
    mkdir -p "$dir"
    if [[ $IS_ROOT -eq 1 ]]; then chown postgres "$dir"; fi
    as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres --pwfile="$WORK/pwfile" \
        --auth-host=scram-sha-256 --auth-local=scram-sha-256 \
        --encoding=UTF8 --locale=C >"$WORK/$name-initdb.log" 2>&1 \
        || { cat "$WORK/$name-initdb.log" >&2; die "initdb $name failed"; }
    printf '%s\nlisten_addresses = %s\npassword_encryption = %s\nport = %s\nunix_socket_directories = %s\n' \
        "$settings" "'${LISTEN_ADDR:-127.0.0.1}'" "'scram-sha-256'" "$port" "'$dir'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
    # Another loopback address (network/run.sh): clients connect from anywhere in 127/8.
    if [[ ${LISTEN_ADDR:-127.0.0.1} != 127.0.0.1 ]]; then
        printf 'host all all 127.0.0.0/8 scram-sha-256\nhost replication all 127.0.0.0/8 scram-sha-256\n' \
            | as_pg tee -a "$dir/data/pg_hba.conf" >/dev/null
    fi
    as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 120 start >/dev/null \
        || { cat "$dir/server.log" >&2; die "cannot start the $name cluster"; }
    STARTED+=("$dir/data")
}

start_replication_pair() { # sets SRC_PORT TGT_PORT HTTP_PORT; needs SHARED_BUFFERS
    # Source and target alike (the target's wal_level could be replica;
    # logical costs nothing here); synchronous_commit at its default, on.
    local settings="
shared_buffers = '$SHARED_BUFFERS'
max_wal_size = '4GB'
min_wal_size = '1GB'
checkpoint_timeout = '30min'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
max_connections = 100
logging_collector = off
log_min_messages = warning
"
    pick_port; SRC_PORT=$PORT
    pick_port; TGT_PORT=$PORT
    pick_port; HTTP_PORT=$PORT
    log "starting clusters in $WORK (source 127.0.0.1:$SRC_PORT, target 127.0.0.1:$TGT_PORT)"
    start_cluster source "$SRC_PORT" "$settings"
    start_cluster target "$TGT_PORT" "$settings"
}
url() { echo "postgresql://postgres:$PGPASS@127.0.0.1:$1/$2?sslmode=disable"; }
q() { PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" "$1" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"; }

# Waits server-side (no client round trips) until the boolean SQL expression holds, then
# prints the epoch seconds at which it held. Exit 1 on timeout. Each poll is its own
# transaction: one long transaction would pin the database's xmin horizon.
wait_until() { # url sql-expression timeout-seconds
    local url=$1 cond=$2 limit=$3
    PGAPPNAME=bench_wait PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" "$url" -X -q -A -t -v ON_ERROR_STOP=1 \
        -c "DO \$wait\$
            DECLARE deadline timestamptz := clock_timestamp() + interval '$limit seconds';
            BEGIN
              LOOP
                EXIT WHEN coalesce(($cond), false);
                IF clock_timestamp() > deadline THEN RAISE EXCEPTION 'timed out after $limit s'; END IF;
                COMMIT;
                PERFORM pg_sleep($POLL);
                COMMIT;
              END LOOP;
            END \$wait\$" \
        -c "SELECT extract(epoch FROM clock_timestamp())"
}
# Ends the waiting sessions of a watcher whose client was killed (the server would loop on).
stop_waiters() { # url
    q "$1" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'bench_wait'" >/dev/null 2>&1 || true
}

# One line per pgbench table: name, count, sum of its balance column (history: delta) and,
# with VERIFY=hash, an order-independent md5 over every row's text form.
pgbench_fingerprint() { # url
    local url=$1 t col sql
    for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
        case $t in
            pgbench_accounts) col="abalance" ;;
            pgbench_branches) col="bbalance" ;;
            pgbench_tellers) col="tbalance" ;;
            pgbench_history) col="delta" ;;
        esac
        if [[ ${VERIFY:-hash} == hash ]]; then
            sql="SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 3;
                 SELECT '$t', count(*), coalesce(sum($col), 0),
                        coalesce(md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))), '-') FROM $t AS x"
        else
            sql="SELECT '$t', count(*), coalesce(sum($col), 0) FROM $t"
        fi
        "$PG_BINDIR/psql" "$url" -X -q -A -t -F ' ' -v ON_ERROR_STOP=1 -c "$sql" | tail -n 1
    done
}

# The report ($WORK/report.md, written by the script) goes to $REPORT and to stdout.
bench_publish_report() {
    mkdir -p "$OUT_DIR"
    cp "$WORK/report.md" "$REPORT"
    echo
    cat "$REPORT"
    echo
}
