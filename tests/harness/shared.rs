//! The source and target clusters shared by all tests of one binary, and
//! [`Pair`]: one test's fresh databases on them.
//!
//! Starting clusters is slow, so each test binary starts the shared pair
//! once and every test gets its own databases, slot and publication names.

use std::process::Command;
use std::sync::OnceLock;

use super::cleanup::unique;
use super::cluster::{sanitize, Cluster, Options};
use super::command::walrelay;
use super::sql::connect;
use super::Client;

/// The clusters shared by all tests of one binary.
pub struct Shared {
    pub source: Cluster,
    pub target: Cluster,
}

/// Starts (once) and returns the shared source and target clusters.
pub fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (source, target) = std::thread::scope(|s| {
            let source = s.spawn(|| Cluster::start(Options::source()));
            let target = s.spawn(|| Cluster::start(Options::target()));
            (source.join(), target.join())
        });
        match (source, target) {
            (Ok(source), Ok(target)) => Shared { source, target },
            (Err(e), _) | (_, Err(e)) => std::panic::resume_unwind(e),
        }
    })
}

/// One test's fresh databases on the shared clusters, with its own slot and
/// publication names.
#[derive(Debug, Clone)]
pub struct Pair {
    pub name: String,
    pub source_db: String,
    pub target_db: String,
    pub source_url: String,
    pub target_url: String,
    pub slot: String,
    pub publication: String,
}

/// Fresh databases `{name}_{n}` on both shared clusters.
pub async fn pair(name: &str) -> Pair {
    let shared = shared();
    let source_db = shared.source.create_database(name).await;
    let target_db = shared.target.create_database(name).await;
    let n = unique();
    Pair {
        name: name.into(),
        source_url: shared.source.url(&source_db),
        target_url: shared.target.url(&target_db),
        slot: format!("slot_{}_{n}", sanitize(name)),
        publication: format!("pub_{}_{n}", sanitize(name)),
        source_db,
        target_db,
    }
}

impl Pair {
    pub fn source_cluster(&self) -> &'static Cluster {
        &shared().source
    }

    pub fn target_cluster(&self) -> &'static Cluster {
        &shared().target
    }

    /// Superuser connection to the source database.
    pub async fn source(&self) -> Client {
        connect(&self.source_url).await
    }

    /// Superuser connection to the target database.
    pub async fn target(&self) -> Client {
        connect(&self.target_url).await
    }

    /// `walrelay --source … --target … --slot … --publication …`; append
    /// the command and its flags.
    pub fn walrelay(&self) -> Command {
        let mut cmd = walrelay();
        cmd.arg("--source")
            .arg(&self.source_url)
            .arg("--target")
            .arg(&self.target_url)
            .arg("--slot")
            .arg(&self.slot)
            .arg("--publication")
            .arg(&self.publication);
        cmd
    }

    /// Whether the pair's slot exists on the source cluster.
    pub async fn slot_exists(&self) -> bool {
        let admin = self.source_cluster().connect("postgres").await;
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .expect("query pg_replication_slots")
            .get(0);
        n > 0
    }

    /// Whether the pair's publication exists in the source database.
    pub async fn publication_exists(&self) -> bool {
        let n: i64 = self
            .source()
            .await
            .query_one(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .expect("query pg_publication")
            .get(0);
        n > 0
    }
}
