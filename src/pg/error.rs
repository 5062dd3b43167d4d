//! What a failure at the database edge means: retry, or stop and tell the
//! operator.
//!
//! Decisions are made from SQLSTATE codes (`tokio_postgres::error::SqlState`)
//! and I/O error kinds, never from the server's message text: a server
//! speaks the language of its `lc_messages`, which walrelay cannot choose.
//! Where a server error carries no code we can read (the replication
//! transport), the catalog is asked instead (see `stream::session`).

use std::error::Error as StdError;

use tokio_postgres::error::SqlState;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Reconnect and retry: the connection was lost, or the server said
    /// "not now" (connection exception 08, insufficient resources 53,
    /// operator intervention 57 such as a shutdown or an administrator's
    /// termination, serialization failure 40001, deadlock 40P01).
    Transient,
    /// Stop and tell the operator: authentication (28), a missing database
    /// or object, a missing privilege, a configuration or data error.
    Definite,
}

/// Classifies a tokio-postgres error.
pub(crate) fn kind(err: &tokio_postgres::Error) -> Kind {
    match err.code() {
        Some(code) => kind_of_code(code),
        // No server answer: the connection broke, timed out or was refused.
        None => Kind::Transient,
    }
}

/// Classifies a SQLSTATE.
pub(crate) fn kind_of_code(code: &SqlState) -> Kind {
    // A dropped database does not come back by retrying.
    if *code == SqlState::DATABASE_DROPPED {
        return Kind::Definite;
    }
    let class = &code.code()[..2];
    if matches!(class, "08" | "53" | "57")
        || *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
    {
        Kind::Transient
    } else {
        Kind::Definite
    }
}

/// For a statement the server refused for want of a privilege (SQLSTATE
/// 42501), what grants it: `"; to grant it: {grant}"`; else nothing. The
/// refusal's own words stay in the error, in the server's language.
pub(crate) fn grant_hint(err: &tokio_postgres::Error, grant: impl FnOnce() -> String) -> String {
    if err.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        format!("; to grant it: {}", grant())
    } else {
        String::new()
    }
}

/// Whether an error is worth a reconnect and retry.
pub(crate) fn is_transient(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || kind(err) == Kind::Transient
}

/// A one-line hint for the operator about a connection that could not be
/// opened, from the SQLSTATE or the I/O error.
pub(crate) fn connect_hint(err: &tokio_postgres::Error) -> &'static str {
    if let Some(code) = err.code() {
        return match code {
            c if *c == SqlState::INVALID_PASSWORD => {
                "check the user and password in the connection string"
            }
            c if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                "check the user name, and allow this client and user in the server's pg_hba.conf"
            }
            c if c.code().starts_with("28") => "check the user and password in the connection string",
            c if *c == SqlState::INVALID_CATALOG_NAME => {
                "check the database name (dbname) in the connection string"
            }
            c if *c == SqlState::TOO_MANY_CONNECTIONS => {
                "the server has no free connection slot: raise max_connections or close idle sessions"
            }
            c if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
                "grant the role the privilege to connect (GRANT CONNECT ON DATABASE …)"
            }
            c if *c == SqlState::CANNOT_CONNECT_NOW => {
                "the server is starting up or shutting down: retry in a moment"
            }
            _ => "check the connection string",
        };
    }
    // No server answer (refused, timed out, unreachable, TLS failed).
    "check that the server runs and that host and port are right (and reachable from here)"
}

/// The server's message without row values, with its SQLSTATE, for
/// reports of statements that failed.
pub(crate) fn with_sqlstate(err: &tokio_postgres::Error) -> String {
    let text = super::connect::safe_error_text(err);
    match err.code() {
        Some(code) if !text.contains("SQLSTATE") => format!("{text} (SQLSTATE {})", code.code()),
        _ => text,
    }
}

/// Renders an error chain on one line, each cause once: a wrapper whose
/// message already holds its cause's text does not print the cause again,
/// and a tokio-postgres error ends the chain with its server message
/// (without row values for data errors, see [`super::connect::safe_error_text`]).
pub(crate) fn chain_text<'a>(
    chain: impl IntoIterator<Item = &'a (dyn StdError + 'static)>,
) -> String {
    let mut text = String::new();
    for err in chain {
        let part = match err.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => super::connect::safe_error_text(pg),
            None => err.to_string(),
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        if err.is::<tokio_postgres::Error>() {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_not_now_classes_retry() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ] {
            assert_eq!(kind_of_code(&code), Kind::Transient, "{}", code.code());
        }
    }

    #[test]
    fn authentication_privilege_and_missing_objects_stop() {
        for code in [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::UNDEFINED_OBJECT,
            SqlState::OBJECT_IN_USE,
            SqlState::DATABASE_DROPPED,
            SqlState::IN_FAILED_SQL_TRANSACTION,
            SqlState::UNIQUE_VIOLATION,
        ] {
            assert_eq!(kind_of_code(&code), Kind::Definite, "{}", code.code());
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("stream stopped: cannot connect: boom")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect: boom")]
    struct Inner(#[source] Leaf);
    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Leaf;

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let err = Outer(Inner(Leaf));
        let chain =
            std::iter::successors(Some(&err as &(dyn StdError + 'static)), |e| (*e).source());
        assert_eq!(chain_text(chain), "stream stopped: cannot connect: boom");
    }
}
