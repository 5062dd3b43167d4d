//! Reading the captured fixture files `proto/fixtures/*.hex` (feature `test-util`).

use bytes::Bytes;

use crate::decode::{decode, DecodeContext};
use crate::error::DecodeError;
use crate::lsn::Lsn;
use crate::message::Message;

/// One captured payload and the LSN `pg_logical_slot_peek_binary_changes` reported for it.
#[derive(Debug, Clone)]
pub struct Captured {
    /// The `lsn` column: the start of the WAL record that produced the message.
    pub lsn: Lsn,
    /// The `data` column: one pgoutput message.
    pub data: Bytes,
}

/// Parses a fixture file: one `LSN HEX` line per message. Panics on malformed lines,
/// since fixtures are committed test data.
pub fn parse_fixture(text: &str) -> Vec<Captured> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (lsn, hex) = line.split_once(' ').expect("fixture line is `LSN HEX`");
            Captured {
                lsn: lsn.parse().expect("fixture LSN"),
                data: unhex(hex.trim()).into(),
            }
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Decodes a captured sequence in order, tracking stream blocks as a consumer would.
pub fn decode_all(
    captured: &[Captured],
    mut ctx: DecodeContext,
) -> Result<Vec<Message>, DecodeError> {
    captured
        .iter()
        .map(|c| {
            let m = decode(&c.data, ctx)?;
            ctx.observe(&m);
            Ok(m)
        })
        .collect()
}
