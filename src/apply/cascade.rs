//! Deletes a target foreign key already made. Without
//! `session_replication_role = replica` the target's foreign keys act as
//! the source's did: applying a parent's DELETE makes an `ON DELETE
//! CASCADE` remove its children on the target, and the source's own
//! deletes of those children, which its WAL holds right after the parent's
//! in the same transaction, then find no row. Such a delete is the target
//! already agreeing with the source, not drift, but only when a table that
//! cascades into it was deleted from earlier in the same source
//! transaction; any other missing row still stops the stream.

use std::collections::HashSet;

use super::relations::RelationInfo;

/// The tables one source transaction has deleted from so far.
#[derive(Debug, Default)]
pub(super) struct Cascades {
    deleted: HashSet<String>,
}

impl Cascades {
    /// A delete from `rel` is being applied.
    pub(super) fn deleted(&mut self, rel: &RelationInfo) {
        if !self.deleted.contains(&rel.qualified) {
            self.deleted.insert(rel.qualified.clone());
        }
    }

    /// Whether a delete from `rel` that found no row is explained by a
    /// cascade from a table deleted from earlier in this transaction.
    pub(super) fn explains(&self, rel: &RelationInfo) -> bool {
        rel.cascade_from.iter().any(|t| self.deleted.contains(t))
    }
}
