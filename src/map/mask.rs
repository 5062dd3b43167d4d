//! Masks applied in walrelay's process (the stream): the same values the
//! copy's SQL gives (`encode(sha256(convert_to(v::text, 'UTF8')), 'hex')`).

use bytes::Bytes;
use sha2::{Digest, Sha256};
use walrelay_proto::{Cell, OldTuple, TupleData};

use super::Mask;

/// Lowercase hex SHA-256 of `text` (a value's text form, UTF-8).
pub(crate) fn hash_hex(text: &[u8]) -> String {
    let digest = Sha256::digest(text);
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Applies per-column `masks` (wire order) to a row image in place: a
/// hashed value becomes its hash's text, a nulled one NULL; an unchanged
/// TOASTed value stays unchanged (the target holds its masked form).
pub(crate) fn mask_tuple(masks: &[Option<Mask>], tuple: &mut TupleData) {
    for (cell, mask) in tuple.cells.iter_mut().zip(masks) {
        match (mask, &*cell) {
            (Some(Mask::Null), Cell::Text(_) | Cell::Binary(_)) => *cell = Cell::Null,
            (Some(Mask::Hash), Cell::Text(text)) => {
                *cell = Cell::Text(Bytes::from(hash_hex(text)));
            }
            // walrelay streams text; a binary cell is refused when planned.
            _ => {}
        }
    }
}

/// [`mask_tuple`] on an old row image.
pub(crate) fn mask_old(masks: &[Option<Mask>], old: &mut OldTuple) {
    match old {
        OldTuple::Key(t) | OldTuple::Full(t) => mask_tuple(masks, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &str) -> Cell {
        Cell::Text(Bytes::copy_from_slice(v.as_bytes()))
    }

    #[test]
    fn masks_hash_null_and_leave_the_rest() {
        let mut row = TupleData {
            cells: vec![
                text("1"),
                text("abc"),
                text("secret"),
                Cell::UnchangedToast,
                Cell::Null,
            ],
        };
        let masks = [
            None,
            Some(Mask::Hash),
            Some(Mask::Null),
            Some(Mask::Hash),
            Some(Mask::Hash),
        ];
        mask_tuple(&masks, &mut row);
        assert_eq!(row.cells[0], text("1"));
        assert_eq!(
            row.cells[1],
            text("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        );
        assert_eq!(row.cells[2], Cell::Null);
        assert_eq!(row.cells[3], Cell::UnchangedToast);
        assert_eq!(row.cells[4], Cell::Null);
    }
}
