//! Whether a target column's type can take a source column's values: the
//! rule `--schema skip` and `verify` share for tables the operator created.
//!
//! A type change is accepted only when it is a *widening that keeps every
//! value's text form*: the target stores what the source's output function
//! wrote, through its own input function, and writes it back identically.
//! The snapshot's copy (text format for such tables) and the apply send
//! values as text, and `verify` hashes text forms (integers as numbers), so
//! with this rule the copy, the stream and the comparison all stay exact.
//! Changes that can hold every value but write it differently are refused
//! as "different type", with the reason: `real` → `double precision`
//! (`1e+07` is read back as `10000000`), `json` → `jsonb` (documents are
//! normalised), a numeric scale that grows (`1.5` becomes `1.50`).

/// How a target column's type relates to the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TypeChange {
    /// The same type.
    Same,
    /// Holds every source value, each written back identically.
    Wider,
    /// Some source values would be cut, rounded or refused.
    Narrower,
    /// Another type; the reason when a specific one applies.
    Different(Option<&'static str>),
}

impl TypeChange {
    /// The word the refusal uses, with its reason.
    pub(crate) fn describe(&self) -> String {
        match self {
            TypeChange::Same => "same type".into(),
            TypeChange::Wider => "wider".into(),
            TypeChange::Narrower => {
                "narrower: some source values would be cut, rounded or refused".into()
            }
            TypeChange::Different(None) => "different type".into(),
            TypeChange::Different(Some(why)) => format!("different type: {why}"),
        }
    }
}

/// A column type as `format_type` writes it, for the types widening knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ty {
    Text,
    /// `character varying(n)`; `None` unbounded.
    Varchar(Option<u32>),
    /// `character(n)`; `None` for `bpchar` (unbounded, unpadded).
    Char(Option<u32>),
    /// Bytes: 2, 4, 8.
    Int(u8),
    /// `(precision, scale)`; `None` unconstrained.
    Numeric(Option<(i32, i32)>),
    Float(u8),
    /// Kind (`timestamp`, `timestamptz`, `time`, `timetz`), precision.
    Time(&'static str, i32),
    Json,
    Jsonb,
    Array(Box<Ty>),
    Other(String),
}

/// Classifies the change from the source's type to the target's, both as
/// `format_type` writes them.
pub(crate) fn compare(source: &str, target: &str) -> TypeChange {
    if source == target {
        return TypeChange::Same;
    }
    let (s, t) = (parse(source), parse(target));
    if s == t {
        return TypeChange::Same;
    }
    if wider(&s, &t) {
        TypeChange::Wider
    } else if wider(&t, &s) || narrower(&s, &t) {
        TypeChange::Narrower
    } else {
        TypeChange::Different(reason(&s, &t))
    }
}

fn wider(s: &Ty, t: &Ty) -> bool {
    use Ty::*;
    match (s, t) {
        (Varchar(Some(n)), Varchar(Some(m))) => m >= n,
        (Varchar(_) | Text, Varchar(None) | Text) => true,
        // A char(n) value is written padded to n: a string of n characters.
        (Char(Some(n)), Varchar(Some(m))) => m >= n,
        (Char(Some(_)), Varchar(None) | Text) => true,
        (Int(a), Int(b)) => b >= a,
        (Int(_), Numeric(None)) => true,
        (Int(a), Numeric(Some((p, 0)))) => *p >= int_digits(*a),
        (Numeric(Some((p, s1))), Numeric(Some((q, s2)))) => s1 == s2 && q >= p,
        (Numeric(Some(_)), Numeric(None)) => true,
        (Time(k1, p), Time(k2, q)) => k1 == k2 && q >= p,
        (Array(a), Array(b)) => a == b || wider(a, b),
        _ => false,
    }
}

/// Changes within a family that lose values though the reverse is not a
/// widening either (the reverse of a scale change, say).
fn narrower(s: &Ty, t: &Ty) -> bool {
    use Ty::*;
    match (s, t) {
        (Numeric(None), Numeric(Some(_)) | Int(_)) => true,
        (Numeric(Some((p, s1))), Numeric(Some((q, s2)))) => s2 < s1 || q - s2 < p - s1,
        (Numeric(_), Int(_)) | (Float(8), Float(4)) => true,
        (Int(a), Numeric(Some((p, s)))) => p - s < int_digits(*a),
        (Text | Varchar(_) | Char(_), Char(_)) => true,
        (Time(k1, p), Time(k2, q)) => k1 == k2 && q < p,
        (Array(a), Array(b)) => narrower(a, b),
        _ => false,
    }
}

fn reason(s: &Ty, t: &Ty) -> Option<&'static str> {
    use Ty::*;
    Some(match (s, t) {
        (Float(4), Float(8)) => "real values read as double precision are written differently (1e+07 becomes 10000000), so verify could not compare them; use real",
        (Json, Jsonb) => "jsonb rewrites documents (key order, whitespace, duplicate keys), so values would change; use json",
        (Int(_), Numeric(Some(_))) | (Numeric(Some(_)), Numeric(Some(_))) => "a larger scale writes values differently (1.5 becomes 1.50), so verify could not compare them; keep the source's scale or use unconstrained numeric",
        (Time(_, _), Time(_, _)) => "with or without time zone changes what values mean",
        _ => return None,
    })
}

/// Decimal digits of the largest value of an integer of `bytes` bytes.
fn int_digits(bytes: u8) -> i32 {
    match bytes {
        2 => 5,
        4 => 10,
        _ => 19,
    }
}

fn parse(ty: &str) -> Ty {
    if let Some(elem) = ty.strip_suffix("[]") {
        return Ty::Array(Box::new(parse(elem)));
    }
    let (base, args) = match ty.split_once('(') {
        Some((base, rest)) => {
            let (args, tail) = rest.split_once(')').unwrap_or((rest, ""));
            (format!("{base}{tail}"), Some(args))
        }
        None => (ty.to_string(), None),
    };
    // PostgreSQL 15 allows a negative numeric scale, and one above the precision.
    let nums: Vec<i32> = args
        .map(|a| a.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_default();
    let first = nums.first().copied();
    match base.as_str() {
        "text" => Ty::Text,
        "character varying" => Ty::Varchar(first.map(|n| n.max(0) as u32)),
        "character" => Ty::Char(Some(first.unwrap_or(1).max(0) as u32)),
        "bpchar" => Ty::Char(None),
        "smallint" => Ty::Int(2),
        "integer" => Ty::Int(4),
        "bigint" => Ty::Int(8),
        "numeric" => Ty::Numeric(first.map(|p| (p, nums.get(1).copied().unwrap_or(0)))),
        "real" => Ty::Float(4),
        "double precision" => Ty::Float(8),
        "json" => Ty::Json,
        "jsonb" => Ty::Jsonb,
        // Without a precision: 6, the most PostgreSQL stores.
        "timestamp without time zone" => Ty::Time("timestamp", first.unwrap_or(6)),
        "timestamp with time zone" => Ty::Time("timestamptz", first.unwrap_or(6)),
        "time without time zone" => Ty::Time("time", first.unwrap_or(6)),
        "time with time zone" => Ty::Time("timetz", first.unwrap_or(6)),
        _ => Ty::Other(ty.to_string()),
    }
}

/// `character(n)` or `bpchar`: hashed without its padding by verify, while
/// its text form (what a wider text column receives) keeps it.
pub(crate) fn is_blank_padded(ty: &str) -> bool {
    matches!(parse(ty), Ty::Char(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is(source: &str, target: &str, expected: TypeChange) {
        assert_eq!(compare(source, target), expected, "{source} → {target}");
    }

    #[test]
    fn widenings_that_keep_the_text_form_are_accepted() {
        for (s, t) in [
            ("character varying(20)", "text"),
            ("character varying(20)", "character varying(40)"),
            ("character varying(20)", "character varying"),
            ("text", "character varying"),
            ("character(5)", "text"),
            ("character(5)", "character varying(5)"),
            ("smallint", "integer"),
            ("integer", "bigint"),
            ("smallint", "bigint"),
            ("integer", "numeric"),
            ("bigint", "numeric(19,0)"),
            ("numeric(10,2)", "numeric(12,2)"),
            ("numeric(10,2)", "numeric"),
            (
                "timestamp(3) without time zone",
                "timestamp without time zone",
            ),
            ("time(0) with time zone", "time(3) with time zone"),
            ("integer[]", "bigint[]"),
            ("character varying(10)[]", "text[]"),
        ] {
            is(s, t, TypeChange::Wider);
        }
    }

    #[test]
    fn narrowings_are_named_narrower() {
        for (s, t) in [
            ("text", "character varying(5)"),
            ("character varying(20)", "character varying(5)"),
            ("bigint", "integer"),
            ("integer", "smallint"),
            ("numeric", "numeric(10,2)"),
            ("numeric(12,2)", "numeric(10,2)"),
            ("numeric(10,2)", "numeric(10,1)"),
            ("numeric(10,2)", "integer"),
            ("bigint", "numeric(10,0)"),
            ("double precision", "real"),
            (
                "timestamp without time zone",
                "timestamp(0) without time zone",
            ),
            ("text", "character(10)"),
            ("bigint[]", "integer[]"),
        ] {
            is(s, t, TypeChange::Narrower);
        }
    }

    #[test]
    fn changes_that_rewrite_values_are_different_types_with_the_reason() {
        for (s, t) in [
            ("real", "double precision"),
            ("json", "jsonb"),
            ("integer", "numeric(12,2)"),
            ("numeric(10,2)", "numeric(12,3)"),
            ("timestamp without time zone", "timestamp with time zone"),
        ] {
            let change = compare(s, t);
            assert!(
                matches!(change, TypeChange::Different(Some(_))),
                "{s} → {t}: {change:?}"
            );
        }
        is("integer", "text", TypeChange::Different(None));
        is("public.mood", "text", TypeChange::Different(None));
        is("public.mood", "public.mood", TypeChange::Same);
        is("numeric(10,2)", "numeric(10, 2)", TypeChange::Same);
    }

    #[test]
    fn padding_is_recognised() {
        assert!(is_blank_padded("character(5)"));
        assert!(is_blank_padded("bpchar"));
        assert!(!is_blank_padded("character varying(5)"));
    }
}
