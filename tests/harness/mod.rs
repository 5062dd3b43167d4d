//! Real-PostgreSQL test harness, shared by every integration test binary
//! (`mod harness;`).
//!
//! * [`shared()`] starts, once per test binary, a **source** cluster
//!   (`wal_level=logical`) and a **target** cluster (`wal_level=replica`) with
//!   `initdb` + `pg_ctl` on free 127.0.0.1 ports in temporary directories,
//!   through walrelay's own launcher (`walrelay::local_cluster`, which
//!   `walrelay demo` uses too).
//! * [`pair()`] gives each test fresh databases on both (plus its own slot
//!   and publication names).
//! * [`Cluster::start`] starts a dedicated cluster with custom settings, for
//!   tests that must not disturb the shared ones; it is stopped on drop.
//! * Everything is stopped and removed when the test binary exits (an
//!   `atexit` hook: Rust never drops statics), also when tests fail; leftovers
//!   of killed runs (`$TMPDIR/walrelay-test-*` whose owner process is gone) are
//!   reaped when the next run starts.
//! * Servers run as the OS user `postgres` when the tests run as root
//!   (initdb and postgres refuse root), otherwise as the current user.
//! * Authentication is SCRAM over TCP with a password, so every test URL
//!   exercises it.
//! * Waiting is polling with a deadline ([`wait_until`], [`wait_for`]).
#![allow(dead_code)]

mod cleanup;
mod cluster;
mod command;
mod daemons;
mod locale;
mod pg_install;
mod shared;
mod sql;
mod wait;
mod wal_cap;

pub use tokio_postgres::Client;

// Each test binary uses only part of what is re-exported below (as with
// `dead_code` above).
#[allow(unused_imports)]
pub use cleanup::{free_port, unique};
#[allow(unused_imports)]
pub use cluster::{sanitize, version_bindir, Cluster, Options, SUPERUSER};
#[allow(unused_imports)]
pub use command::{
    describe, run, run_with_timeout, spawn, walrelay, Run, Running, COMMAND_TIMEOUT,
};
#[allow(unused_imports)]
pub use daemons::{find_pgbouncer, pgbouncer_bin, Bouncer, Daemon};
#[allow(unused_imports)]
pub use locale::ensure_locale;
#[allow(unused_imports)]
pub use pg_install::{bindir, client_bindir, pg_bin};
#[allow(unused_imports)]
pub use shared::{pair, shared, Pair, Shared};
#[allow(unused_imports)]
pub use sql::{
    assert_same_rows, column, connect, error_text, exec, redact, row_hashes, rows,
    schema_fingerprint, stable_session, try_connect, value,
};
#[allow(unused_imports)]
pub use wait::{wait_for, wait_until};
#[allow(unused_imports)]
pub use wal_cap::{capped_source, slow_copy_tables, wal_status, write_wal, write_wal_rows};
