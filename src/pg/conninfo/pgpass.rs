//! libpq's password file (`passfile`, `PGPASSFILE`, else `~/.pgpass`),
//! read the way libpq reads it, so walrelay finds the same password its
//! `pg_dump` children would: lines `hostname:port:database:username:password`,
//! `*` matching anything in the first four fields, `\:` and `\\` escapes,
//! `#` comments, the first matching line wins. A file that others may read
//! is ignored with a warning, as libpq does. The password is never logged.

use std::path::Path;

/// The password for these connection parameters from the file at `path`,
/// if the file exists, is private and has a matching line.
pub(super) fn lookup(
    path: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        tracing::warn!(path = %path.display(), "password file is not a plain file: ignored");
        return None;
    }
    if group_or_world_access(&meta) {
        tracing::warn!(
            path = %path.display(),
            "password file has group or world access; permissions should be u=rw (0600) or less: ignored"
        );
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err, "password file cannot be read: ignored");
            return None;
        }
    };
    find(&String::from_utf8_lossy(&bytes), host, port, dbname, user)
}

#[cfg(unix)]
fn group_or_world_access(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 != 0
}

#[cfg(not(unix))]
fn group_or_world_access(_meta: &std::fs::Metadata) -> bool {
    false
}

/// The password of the first line of `text` matching the parameters.
pub(super) fn find(text: &str, host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = [host, port.as_str(), dbname, user]
                .into_iter()
                .try_fold(line, |rest, want| field_matches(rest, want))?;
            Some(unescape_password(rest))
        })
}

/// Whether the line's next field is `*` or equals `want` (after
/// unescaping); returns the rest of the line after the field's `:`.
fn field_matches<'a>(line: &'a str, want: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let mut chars = line.char_indices();
    let mut want = want.chars();
    loop {
        let (i, c) = chars.next()?;
        let (i, c, escaped) = if c == '\\' {
            let (j, next) = chars.next()?;
            (j, next, true)
        } else {
            (i, c, false)
        };
        if c == ':' && !escaped {
            return want.next().is_none().then(|| &line[i + 1..]);
        }
        if want.next() != Some(c) {
            return None;
        }
    }
}

/// The password field: up to an unescaped `:` or the end, `\x` read as `x`.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => out.push(chars.next().unwrap_or('\\')),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment:5432:d:u:no\n\
                    other:5432:d:u:wrong\n\
                    db\\:1:*:d:u:co\\:lon\\\\pw:trailing\n\
                    *:*:*:u:fallback\n";
        assert_eq!(
            find(text, "db:1", 6543, "d", "u").as_deref(),
            Some("co:lon\\pw")
        );
        assert_eq!(find(text, "h", 1, "x", "u").as_deref(), Some("fallback"));
        assert_eq!(find(text, "h", 1, "x", "v"), None);
        assert_eq!(
            find(text, "other", 5432, "d", "u").as_deref(),
            Some("wrong")
        );
    }

    #[test]
    fn partial_or_short_fields_do_not_match() {
        assert_eq!(find("hos:5432:d:u:pw\n", "host", 5432, "d", "u"), None);
        assert_eq!(find("hostx:5432:d:u:pw\n", "host", 5432, "d", "u"), None);
        assert_eq!(find("host:5432:d:u\n", "host", 5432, "d", "u"), None);
        assert_eq!(
            find("host:5432:d:u:\r\n", "host", 5432, "d", "u").as_deref(),
            Some("")
        );
    }
}
