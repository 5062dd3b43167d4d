//! The loop guard: what keeps a change from travelling back to where it
//! came from when both directions stream (docs/ARCHITECTURE.md, The way
//! back).
//!
//! Every target transaction the apply commits begins with a transactional
//! logical message, prefix [`PREFIX`], content the applying slot's name
//! (sent in the batch's first statement, with BEGIN: no round trip of its
//! own). The message is written into the target's WAL inside the
//! transaction, so it is decoded with it and only if it commits. A stream
//! skips a whole transaction whose first payload is such a message written
//! by its *partner* slot (the other direction of the same migration): only
//! that one, so a chain of migrations (A → B by one slot, B → C by another)
//! still carries what the first applied. Logical messages need no
//! privilege and no superuser (replication origins would), and pgoutput
//! sends them when asked (`messages 'true'`, PostgreSQL 14 and later).

/// The prefix of the apply's marker message.
pub(crate) const PREFIX: &str = "walrelay.applied";

/// What the reverse direction's slot and publication names end with.
pub(crate) const REVERSE_SUFFIX: &str = "_reverse";

/// The other direction's slot of `slot`: `<slot>_reverse` for a forward
/// slot, the forward slot for a reverse one.
pub(crate) fn partner(slot: &str) -> String {
    match slot.strip_suffix(REVERSE_SUFFIX) {
        Some(forward) if !forward.is_empty() => forward.to_string(),
        _ => format!("{slot}{REVERSE_SUFFIX}"),
    }
}

/// The statement that marks the open target transaction as applied by
/// `slot`. Slot names are `[a-z0-9_]` (`config`), safe as a literal.
pub(crate) fn mark_sql(slot: &str) -> String {
    debug_assert!(slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    format!("SELECT pg_logical_emit_message(true, '{PREFIX}', '{slot}')")
}

/// Recognises the partner direction's marks in a stream.
#[derive(Debug, Clone)]
pub(crate) struct LoopGuard {
    partner: String,
}

impl LoopGuard {
    /// The guard of the stream of `slot`.
    pub(crate) fn new(slot: &str) -> Self {
        LoopGuard {
            partner: partner(slot),
        }
    }

    /// Whether a logical message marks its transaction as written by the
    /// partner direction's apply (an echo, not to be sent back).
    pub(crate) fn is_echo(&self, transactional: bool, prefix: &str, content: &[u8]) -> bool {
        transactional && prefix == PREFIX && content == self.partner.as_bytes()
    }
}

impl super::Applier {
    /// A transactional logical message inside the open transaction: the
    /// partner direction's mark, as its first payload, makes it an echo.
    pub(crate) fn logical_message(&mut self, prefix: &str, content: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        txn.payloads += 1;
        if !self.guard.is_echo(true, prefix, content) {
            return;
        }
        if txn.payloads == 1 {
            txn.echo = true;
        } else {
            // walrelay writes its mark first: this one is someone else's,
            // and the changes before it are applied already.
            tracing::warn!(xid = txn.xid, commit_lsn = %txn.final_lsn, "a walrelay apply mark that is not the transaction's first payload: applying the transaction as the source's own");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use walrelay_proto::{decode, DecodeContext, Message};

    use super::*;

    /// A pgoutput 'M' message as the walsender sends it.
    fn message_bytes(transactional: bool, prefix: &str, content: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.put_u8(b'M');
        buf.put_u8(u8::from(transactional));
        buf.put_u64(0x16_B374_D848);
        buf.put_slice(prefix.as_bytes());
        buf.put_u8(0);
        buf.put_u32(content.len() as u32);
        buf.put_slice(content);
        buf
    }

    fn echo(guard: &LoopGuard, bytes: BytesMut) -> bool {
        let Message::Message(m) = decode(&bytes.freeze(), DecodeContext::default()).unwrap() else {
            panic!("not a logical message");
        };
        guard.is_echo(m.transactional, &m.prefix, &m.content)
    }

    #[test]
    fn partners_pair_the_forward_and_reverse_slots() {
        assert_eq!(partner("walrelay"), "walrelay_reverse");
        assert_eq!(partner("walrelay_reverse"), "walrelay");
        assert_eq!(partner("_reverse"), "_reverse_reverse");
    }

    #[test]
    fn only_the_partner_directions_transactional_mark_is_an_echo() {
        let forward = LoopGuard::new("mig");
        let reverse = LoopGuard::new("mig_reverse");
        // The reverse apply's mark, read by the forward stream, and back.
        assert!(echo(&forward, message_bytes(true, PREFIX, b"mig_reverse")));
        assert!(echo(&reverse, message_bytes(true, PREFIX, b"mig")));
        // Its own slot's mark cannot reach it; another migration's is data.
        assert!(!echo(&forward, message_bytes(true, PREFIX, b"mig")));
        assert!(!echo(
            &forward,
            message_bytes(true, PREFIX, b"other_reverse")
        ));
        // Not transactional, or another prefix (heartbeats, cutover markers).
        assert!(!echo(
            &forward,
            message_bytes(false, PREFIX, b"mig_reverse")
        ));
        assert!(!echo(
            &forward,
            message_bytes(true, "walrelay", b"mig_reverse")
        ));
        assert!(!echo(
            &forward,
            message_bytes(true, "walrelay.appliedx", b"mig_reverse")
        ));
    }

    #[test]
    fn the_mark_statement_names_the_prefix_and_slot() {
        assert_eq!(
            mark_sql("mig_reverse"),
            "SELECT pg_logical_emit_message(true, 'walrelay.applied', 'mig_reverse')"
        );
    }
}
