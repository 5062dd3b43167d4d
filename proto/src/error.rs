//! Decoding errors: which message, which field, which byte offset, and what was wrong.

/// A payload that is not a well-formed pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput {message} message: {field} at byte {offset}: {kind}")]
pub struct DecodeError {
    /// The message being decoded (`"Update"`, …), or `"unknown"` before the tag is known.
    pub message: &'static str,
    /// The field that could not be read (`"relation id"`, `"old tuple marker"`, …).
    pub field: &'static str,
    /// Offset of that field from the start of the payload (the tag is byte 0).
    pub offset: usize,
    /// What was wrong with it.
    pub kind: DecodeErrorKind,
}

/// The ways a field can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The payload ends inside the field.
    #[error("needs {needed} bytes but only {remaining} remain")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        remaining: usize,
    },
    /// A wire count or length that is negative or larger than the remaining bytes could hold.
    #[error("count {count} is negative or more than the {remaining} remaining bytes can hold")]
    BadCount {
        /// The count as sent.
        count: i64,
        /// Bytes left in the payload after the count.
        remaining: usize,
    },
    /// The first byte is not a pgoutput message tag.
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    /// A byte that must be one of a few letters (tuple marker, column kind, replica identity).
    #[error("unexpected byte {0:#04x}")]
    UnexpectedByte(u8),
    /// A flags field with bits the protocol does not define.
    #[error("undefined flag bits {0:#04x}")]
    UnknownFlags(u8),
    /// A string with no NUL terminator before the end of the payload.
    #[error("string has no NUL terminator")]
    UnterminatedString,
    /// A string that is not UTF-8 (names are decoded as UTF-8; see the crate docs).
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Bytes left over after the last field of the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
}
