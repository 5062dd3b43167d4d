//! Log sequence numbers.

/// A PostgreSQL WAL position, written `X/Y` (high and low 32 bits in hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// `0/0`, PostgreSQL's `InvalidXLogRecPtr`: "no position".
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a real position, not [`Lsn::INVALID`].
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }

    /// Bytes of WAL from `earlier` up to `self`, or 0 if `earlier` is ahead (lag is never negative).
    pub const fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Bytes of WAL from `earlier` up to `self`, or `None` if `earlier` is ahead.
    pub const fn checked_bytes_since(self, earlier: Lsn) -> Option<u64> {
        self.0.checked_sub(earlier.0)
    }

    /// The position `bytes` further on, saturating at the largest LSN.
    pub const fn saturating_add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// An LSN that is not of the form `X/Y` with hexadecimal halves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected X/Y with hexadecimal halves")]
pub struct ParseLsnError(pub String);

impl std::str::FromStr for Lsn {
    type Err = ParseLsnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        // from_str_radix accepts a leading '+', which PostgreSQL's pg_lsn input does not.
        if hi.starts_with('+') || lo.starts_with('+') {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// `pg_lsn` at the SQL boundary: its binary form is the position as 8 bytes,
/// big-endian (PostgreSQL's `pg_lsn_send`/`pg_lsn_recv`), so an LSN never
/// travels as text and a malformed value is an error, never `0/0`.
#[cfg(feature = "postgres-types")]
mod sql {
    use std::error::Error;

    use bytes::{BufMut, BytesMut};
    use postgres_types::{accepts, to_sql_checked, FromSql, IsNull, ToSql, Type};

    use super::Lsn;

    impl<'a> FromSql<'a> for Lsn {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
            let bytes: [u8; 8] = raw
                .try_into()
                .map_err(|_| format!("pg_lsn: expected 8 bytes, got {}", raw.len()))?;
            Ok(Lsn(u64::from_be_bytes(bytes)))
        }

        accepts!(PG_LSN);
    }

    impl ToSql for Lsn {
        fn to_sql(
            &self,
            _: &Type,
            out: &mut BytesMut,
        ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
            out.put_u64(self.0);
            Ok(IsNull::No)
        }

        accepts!(PG_LSN);
        to_sql_checked!();
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pg_lsn_binary_round_trip() {
            let lsn = Lsn(0x16_B374_D848);
            let mut out = BytesMut::new();
            lsn.to_sql(&Type::PG_LSN, &mut out).unwrap();
            assert_eq!(&out[..], &[0, 0, 0, 0x16, 0xB3, 0x74, 0xD8, 0x48]);
            assert_eq!(Lsn::from_sql(&Type::PG_LSN, &out).unwrap(), lsn);
        }

        #[test]
        fn pg_lsn_of_the_wrong_width_is_an_error() {
            assert!(Lsn::from_sql(&Type::PG_LSN, &[0, 1, 2]).is_err());
            assert!(<Lsn as FromSql>::accepts(&Type::PG_LSN));
            assert!(!<Lsn as FromSql>::accepts(&Type::TEXT));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_like_postgres() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!("0/abcdef".parse::<Lsn>().unwrap(), Lsn(0xAB_CDEF));
        assert_eq!(
            Lsn(u64::MAX).to_string().parse::<Lsn>().unwrap(),
            Lsn(u64::MAX)
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "0",
            "/0",
            "0/",
            "g/0",
            "0/0/0",
            "+1/0",
            "0/+1",
            "1 /0",
            "100000000/0",
        ] {
            assert!(s.parse::<Lsn>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn distance_for_lag() {
        let (a, b) = (Lsn(0x1_0000_0010), Lsn(0x0_FFFF_FFF0));
        assert_eq!(a.bytes_since(b), 0x20);
        assert_eq!(b.bytes_since(a), 0);
        assert_eq!(b.checked_bytes_since(a), None);
        assert!(a > b);
        assert!(!Lsn::INVALID.is_valid());
        assert_eq!(Lsn(u64::MAX).saturating_add(1), Lsn(u64::MAX));
    }
}
