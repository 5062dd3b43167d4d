//! What the schema restore leaves alone on the target: objects that exist
//! there already and are not walrelay's to change (a managed service's
//! schemas and extensions), and what only a superuser may create.
//!
//! A dump made with the managed schemas excluded still carries the
//! `CREATE SCHEMA` of every application schema (`public` included, as an
//! owner change) and every extension (`CREATE EXTENSION IF NOT EXISTS` and
//! its `COMMENT`, which only the extension's owner may write). Entries are
//! matched in `pg_restore --list` by catalog and name, never by what a
//! server said: a schema or extension the target has keeps its owner,
//! comment and grants; event triggers (database-wide hooks, superuser only)
//! are left out for a role that is not superuser.

use std::collections::HashSet;

use tokio_postgres::Client;

use crate::pg::catalog::quote_ident;

/// The target's schemas and extensions, and whether its role is superuser.
#[derive(Debug, Default)]
pub(super) struct Present {
    pub schemas: HashSet<String>,
    pub extensions: HashSet<String>,
    pub superuser: bool,
}

/// Reads what the target has.
pub(super) async fn present(target: &Client) -> Result<Present, tokio_postgres::Error> {
    let names = |sql: &'static str| async move {
        Ok::<_, tokio_postgres::Error>(
            target
                .query(sql, &[])
                .await?
                .iter()
                .map(|row| row.get::<_, String>(0))
                .collect::<HashSet<_>>(),
        )
    };
    let superuser: bool = target
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    Ok(Present {
        schemas: names("SELECT nspname::text FROM pg_namespace").await?,
        extensions: names("SELECT extname::text FROM pg_extension").await?,
        superuser,
    })
}

/// `list` (`pg_restore --list`: `id; catalog oid DESC schema tag owner`)
/// with the entries `present` says to leave alone commented out, and what
/// they were (for the log).
pub(super) fn leave_alone(list: &str, present: &Present) -> (String, Vec<String>) {
    let mut out = String::with_capacity(list.len());
    let mut left = Vec::new();
    for line in list.lines() {
        if let Some(what) = left_alone(line, present) {
            out.push(';');
            left.push(what);
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, left)
}

/// What the entry creates or changes, when it is to be left alone.
fn left_alone(line: &str, present: &Present) -> Option<String> {
    let (_, rest) = line.split_once("; ")?;
    let mut fields = rest.splitn(3, ' ');
    let (catalog, _oid, rest) = (fields.next()?, fields.next()?, fields.next()?);
    let catalog: u32 = catalog.parse().ok()?;
    const SCHEMA: u32 = 2615;
    const EXTENSION: u32 = 3079;
    const EVENT_TRIGGER: u32 = 3466;
    match catalog {
        SCHEMA => named(rest.strip_prefix("SCHEMA - ")?, &present.schemas, false)
            .map(|n| format!("schema {n}")),
        EXTENSION => named(
            rest.strip_prefix("EXTENSION - ")?,
            &present.extensions,
            false,
        )
        .map(|n| format!("extension {n}")),
        EVENT_TRIGGER => {
            let name = rest.strip_prefix("EVENT TRIGGER - ")?.split(' ').next()?;
            // walrelay's own (`ddl::trigger`) calls functions in the
            // source's `walrelay` schema, which the dump leaves out.
            let own = [
                crate::ddl::trigger::END_TRIGGER,
                crate::ddl::trigger::DROP_TRIGGER,
            ];
            (!present.superuser || own.contains(&name)).then(|| format!("event trigger {name}"))
        }
        // Comments and grants on them: catalog 0, the object in the tag.
        0 => {
            let tag = ["COMMENT - ", "ACL - "]
                .iter()
                .find_map(|d| rest.strip_prefix(d))?;
            if let Some(name) = tag.strip_prefix("SCHEMA ") {
                named(name, &present.schemas, true)
                    .map(|n| format!("comment or grant on schema {n}"))
            } else if let Some(name) = tag.strip_prefix("EXTENSION ") {
                named(name, &present.extensions, true).map(|n| format!("comment on extension {n}"))
            } else if !present.superuser {
                let name = tag.strip_prefix("EVENT TRIGGER ")?;
                Some(format!(
                    "comment on event trigger {}",
                    name.split(' ').next()?
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The name of `names` that `field` ("name owner", the name as is or,
/// when `quoted`, as an identifier) starts with.
fn named<'a>(field: &str, names: &'a HashSet<String>, quoted: bool) -> Option<&'a str> {
    names
        .iter()
        .find(|name| {
            let forms = [name.to_string(), quote_ident(name)];
            let forms = if quoted { &forms[..] } else { &forms[..1] };
            forms.iter().any(|form| {
                field
                    .strip_prefix(form.as_str())
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            })
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    // `pg_restore --list` of a Supabase-shaped source (PostgreSQL 15).
    const LIST: &str = ";\n; Selected TOC Entries:\n;\n\
9; 2615 16517 SCHEMA - My Schema postgres\n\
3455; 0 0 COMMENT - SCHEMA \"My Schema\" postgres\n\
6; 2615 16387 SCHEMA - auth svc\n\
3456; 0 0 COMMENT - SCHEMA auth svc\n\
3457; 0 0 ACL - SCHEMA auth svc\n\
8; 2615 2200 SCHEMA - public app\n\
10; 2615 2201 SCHEMA - public2 app\n\
2; 3079 16398 EXTENSION - citext \n\
3459; 0 0 COMMENT - EXTENSION citext \n\
3; 3079 16399 EXTENSION - pgcrypto \n\
220; 1259 16504 TABLE public profiles app\n\
3299; 3466 16516 EVENT TRIGGER - watch_ddl postgres\n\
3461; 0 0 COMMENT - EVENT TRIGGER watch_ddl postgres\n";

    fn present(schemas: &[&str], extensions: &[&str], superuser: bool) -> Present {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Present {
            schemas: set(schemas),
            extensions: set(extensions),
            superuser,
        }
    }

    fn kept(out: &str, id: &str) -> bool {
        out.lines().any(|l| l.starts_with(&format!("{id}; ")))
    }

    #[test]
    fn existing_schemas_and_extensions_are_left_alone_with_their_comments() {
        let (out, left) = leave_alone(
            LIST,
            &present(&["auth", "public", "My Schema"], &["citext"], false),
        );
        for id in [
            "9", "3455", "6", "3456", "3457", "8", "2", "3459", "3299", "3461",
        ] {
            assert!(!kept(&out, id), "entry {id} should be left out:\n{out}");
        }
        for id in ["10", "3", "220"] {
            assert!(kept(&out, id), "entry {id} should be kept:\n{out}");
        }
        assert_eq!(left.len(), 10, "{left:?}");
        assert!(left.contains(&"schema auth".to_string()));
        assert!(left.contains(&"event trigger watch_ddl".to_string()));
    }

    #[test]
    fn walrelays_own_event_triggers_are_never_restored() {
        let list = "3300; 3466 16600 EVENT TRIGGER - walrelay_ddl_end postgres\n";
        let (out, left) = leave_alone(list, &present(&[], &[], true));
        assert_eq!(left, ["event trigger walrelay_ddl_end"]);
        assert!(out.starts_with(';'));
    }

    #[test]
    fn a_superuser_keeps_event_triggers_and_nothing_else_is_touched() {
        let (out, left) = leave_alone(LIST, &present(&[], &[], true));
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(out, LIST);
    }
}
