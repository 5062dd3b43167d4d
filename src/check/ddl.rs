//! Whether the stream can capture schema changes on the source (walrelay's
//! event trigger, see `crate::ddl`), and so what `--ddl` does by default.

use tokio_postgres::Client;

use super::Report;
use crate::ddl::trigger;

pub(super) async fn check(
    client: &Client,
    report: &mut Report,
) -> Result<(), tokio_postgres::Error> {
    if trigger::present(client).await? {
        report.ok(
            "ddl_capture",
            "source",
            "walrelay's event trigger is installed: schema changes are followed on the target (--ddl follow by default; --ddl stop stops on each, naming it)",
        );
    } else if trigger::may_install(client).await? {
        report.ok(
            "ddl_capture",
            "source",
            "the stream installs walrelay's event trigger when it starts: schema changes are then followed on the target (--ddl follow by default; --ddl stop stops on each, naming it)",
        );
    } else {
        report.warning(
            "ddl_capture",
            "source",
            "the role may not create event triggers (a superuser may; on Supabase, supautils allows the postgres role; on Amazon RDS, rds_superuser): schema changes on the source are not captured. Only what Relation messages show is followed: a column the target lacks stops the stream (or is added with --auto-add-columns); tables created on the source are still found by a catalog check",
            "run the stream once with a role that may create event triggers (it installs walrelay's trigger, which then serves any role), or accept that schema changes stop the stream",
        );
    }
    Ok(())
}
