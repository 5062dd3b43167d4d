//! A schema dump written by a newer `pg_dump`, restored into an older
//! server.
//!
//! `pg_restore` connected to a server sends the archive's SQL as its own
//! version writes it: a 17+ `pg_restore` starts with `SET
//! transaction_timeout = 0`, which 14–16 reject, and an 18 source's virtual
//! generated columns are syntax no 17 or older parses. When the programs
//! are of a newer major than the target, the section is written as a script
//! instead (`pg_restore --file`), translated here for the target's version,
//! and run on one connection in one transaction. What was changed is logged
//! and returned for the snapshot's report; what cannot be translated is left
//! to the target's error, named with the dump entry it came from.
//!
//! Translations, each only where the target lacks the feature:
//! - `SET transaction_timeout = 0;` in the script's preamble (17+): left out.
//! - `\restrict` / `\unrestrict` (psql meta-commands recent pg_dump minor
//!   releases write around a script to stop a hostile server's dump from
//!   running psql commands): left out; walrelay runs the script as SQL and
//!   never interprets backslash commands.
//! - A virtual generated column (18's default): created `STORED`, with the
//!   same values; generated columns are neither copied nor streamed.
//! - `NULLS NOT DISTINCT` on a unique constraint or index (15+): left out,
//!   so a 14 target accepts several NULLs there; the rows copied satisfy it.

use std::path::Path;

use tokio::process::Command;

use crate::pg::conninfo::ConnInfo;
use crate::pg::{connect, error};

/// Why a translated section could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum CompatError {
    #[error("cannot read the script pg_restore wrote: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    #[error("the target (PostgreSQL {target_major}) could not run the schema dump's entry {entry} written by pg_dump {tools_major} ({message}); walrelay translates what it knows of a newer dump (docs/ARCHITECTURE.md) but not this: create the schema on the target by hand (that object as PostgreSQL {target_major} allows it) and use `snapshot --schema skip`, or, if it is a table, leave it out with --exclude-table")]
    Statement {
        target_major: u32,
        tools_major: u32,
        entry: String,
        message: String,
    },
}

/// Whether a section must go through a translated script: the restoring
/// programs are of a newer major version than the target.
pub(super) fn needs_script(tools_major: u32, target_major: u32) -> bool {
    tools_major > target_major
}

/// Runs `restore` (a `pg_restore` command with every option but its output
/// and the archive, and without `--single-transaction`) writing a script,
/// translates the script for `target_major` and runs it on the target in
/// one transaction. Returns what was changed.
pub(super) async fn restore_script(
    mut restore: Command,
    target: &ConnInfo,
    target_major: u32,
    tools_major: u32,
    dump: &Path,
) -> Result<Vec<String>, super::SchemaError> {
    let script_path = dump.with_extension("sql");
    restore.arg("--file").arg(&script_path).arg(dump);
    super::schema::run_tool("pg_restore", restore, target).await?;
    let script = std::fs::read_to_string(&script_path).map_err(CompatError::Read)?;
    let (script, changes) = translate(&script, target_major);
    for change in &changes {
        tracing::warn!(
            target_major,
            pg_dump_major = tools_major,
            change = %change,
            "schema copy: translated for the older target"
        );
    }
    let client = connect::connect(target, "walrelay-snapshot")
        .await
        .map_err(CompatError::from)?;
    run_entries(&client, &script, Finish::Commit)
        .await
        .map_err(|(entry, err)| statement_error(&err, entry, target_major, tools_major))?;
    Ok(changes)
}

/// `check`'s trial: the whole of `dump` (all sections, without owners and
/// grants, as `snapshot` restores by default) translated for
/// `target_major` and run on the target inside a transaction that is then
/// rolled back. Returns what the translation changed.
pub(crate) async fn trial(
    tools: &crate::pg::bin::ClientTools,
    target: &ConnInfo,
    target_major: u32,
    dump: &Path,
) -> Result<Vec<String>, super::SchemaError> {
    let script_path = dump.with_extension("sql");
    let mut restore = Command::new(tools.pg_restore());
    restore
        .args(["--no-owner", "--no-acl", "--file"])
        .arg(&script_path)
        .arg(dump);
    super::schema::run_tool("pg_restore", restore, target).await?;
    let script = std::fs::read_to_string(&script_path).map_err(CompatError::Read)?;
    let (script, changes) = translate(&script, target_major);
    let client = connect::connect(target, "walrelay-check")
        .await
        .map_err(CompatError::from)?;
    run_entries(&client, &script, Finish::Rollback)
        .await
        .map_err(|(entry, err)| statement_error(&err, entry, target_major, tools.major))?;
    Ok(changes)
}

/// How [`run_entries`] ends its transaction when every entry ran.
#[derive(Clone, Copy)]
enum Finish {
    Commit,
    Rollback,
}

/// Runs `script` entry by entry (split by [`split_entries`]) in one
/// transaction: all or nothing, and a failure names its entry. The script
/// must hold no transaction control of its own.
async fn run_entries(
    client: &tokio_postgres::Client,
    script: &str,
    finish: Finish,
) -> Result<(), (String, tokio_postgres::Error)> {
    client
        .batch_execute("BEGIN")
        .await
        .map_err(|e| ("(BEGIN)".to_string(), e))?;
    for (entry, sql) in split_entries(script) {
        if let Err(err) = client.batch_execute(sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err((entry, err));
        }
    }
    let end = match finish {
        Finish::Commit => "COMMIT",
        Finish::Rollback => "ROLLBACK",
    };
    client
        .batch_execute(end)
        .await
        .map_err(|e| (format!("({end})"), e))
}

fn statement_error(
    err: &tokio_postgres::Error,
    entry: String,
    target_major: u32,
    tools_major: u32,
) -> CompatError {
    CompatError::Statement {
        target_major,
        tools_major,
        entry,
        message: error::with_sqlstate(err),
    }
}

/// `script` cut before each entry header (`-- Name: …`, a comment line in
/// SQL code, never one inside a literal or body), each piece with the name
/// of its entry (`(the preamble)` for the settings before the first).
fn split_entries(script: &str) -> Vec<(String, &str)> {
    let mut pieces = Vec::new();
    let mut lexer = Lexer::default();
    let (mut start, mut at) = (0, 0);
    let mut name = "(the preamble)".to_string();
    for line in script.split_inclusive('\n') {
        if lexer.outside_literals() {
            if let Some(header) = line.strip_prefix("-- Name: ") {
                if !script[start..at].trim().is_empty() {
                    pieces.push((name, &script[start..at]));
                }
                name = entry_name(header.trim_end());
                start = at;
            }
        }
        lexer.scan(line);
        at += line.len();
    }
    if !script[start..].trim().is_empty() {
        pieces.push((name, &script[start..]));
    }
    pieces
}

/// A dump entry's header (`Name: t c; Type: CONSTRAINT; Schema: public;
/// Owner: o`, after `Name: `) as `CONSTRAINT public.t c`.
fn entry_name(header: &str) -> String {
    let mut parts = header.split("; ");
    let name = parts.next().unwrap_or(header).trim();
    let field = |key: &str| {
        header
            .split("; ")
            .find_map(|p| p.strip_prefix(key))
            .unwrap_or("-")
            .trim()
    };
    match (field("Type: "), field("Schema: ")) {
        (kind, "-") => format!("{kind} {name}"),
        (kind, schema) => format!("{kind} {schema}.{name}"),
    }
}

/// `script` translated for a server of major version `target_major`, and
/// what was changed (schema-qualified names, no values).
pub(super) fn translate(script: &str, target_major: u32) -> (String, Vec<String>) {
    let mut out = String::with_capacity(script.len());
    let mut changes = Vec::new();
    let mut lexer = Lexer::default();
    let mut table = String::new();
    let mut in_preamble = true;
    let mut entry = String::new();
    for line in script.split_inclusive('\n') {
        let code = lexer.outside_literals();
        lexer.scan(line);
        let text = line.trim_end_matches(['\n', '\r']);
        if !code {
            out.push_str(line);
            continue;
        }
        if let Some(name) = text.strip_prefix("-- Name: ") {
            in_preamble = false;
            entry = entry_name(name);
        }
        if is_meta_command(text) {
            continue;
        }
        if in_preamble && target_major < 17 && text == "SET transaction_timeout = 0;" {
            changes.push(format!(
                "SET transaction_timeout left out (PostgreSQL {target_major} has no such setting)"
            ));
            continue;
        }
        if let Some(name) = text
            .strip_prefix("CREATE TABLE ")
            .or_else(|| text.strip_prefix("CREATE UNLOGGED TABLE "))
        {
            table = name
                .trim_end_matches(" (")
                .trim_end_matches('(')
                .trim()
                .to_string();
        }
        let mut line = line.to_string();
        if target_major < 18 {
            if let Some(stored) = store_virtual_column(&line) {
                changes.push(format!(
                    "{table}.{}: virtual generated column created STORED (PostgreSQL {target_major} has no virtual generated columns; the values are the same)",
                    first_word(text)
                ));
                line = stored;
            }
        }
        if target_major < 15 && line.contains(" NULLS NOT DISTINCT") {
            line = line.replacen(" NULLS NOT DISTINCT", "", 1);
            changes.push(format!(
                "{entry}: NULLS NOT DISTINCT left out (PostgreSQL {target_major} lacks it: the target's unique constraint or index accepts several NULLs)"
            ));
        }
        out.push_str(&line);
    }
    (out, changes)
}

/// A psql meta-command line of a pg_restore script (`\restrict KEY`,
/// `\unrestrict KEY`, `\connect`): psql's, not SQL.
fn is_meta_command(text: &str) -> bool {
    text.starts_with('\\')
}

/// A column definition line `name type GENERATED ALWAYS AS (expr)[,]` with
/// nothing after the expression (a virtual column: a stored one says
/// `STORED`), with ` STORED` added after it.
fn store_virtual_column(line: &str) -> Option<String> {
    const MARK: &str = " GENERATED ALWAYS AS (";
    let start = line.find(MARK)? + MARK.len() - 1;
    let end = start + matching_paren(&line[start..])?;
    let rest = &line[end + 1..];
    let tail = rest.trim_end_matches(['\n', '\r']);
    let tail = tail.strip_suffix(',').unwrap_or(tail);
    if tail.trim().is_empty() || tail.trim_start().starts_with("VIRTUAL") {
        let after = rest.trim_start().strip_prefix("VIRTUAL").unwrap_or(rest);
        return Some(format!("{} STORED{after}", &line[..=end]));
    }
    None
}

/// The byte offset of the `)` closing the `(` that starts `text`, outside
/// quoted literals and identifiers.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// A column's name as a definition line starts with it (quoted or not).
fn first_word(text: &str) -> &str {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix('"') {
        let end = rest.find('"').map_or(text.len(), |i| i + 2);
        return &text[..end];
    }
    text.split_whitespace().next().unwrap_or("")
}

/// Where a script line starts: in SQL code, or inside a quoted literal,
/// identifier or dollar-quoted body (whose lines are never translated).
#[derive(Debug, Default)]
struct Lexer {
    state: Lexed,
}

#[derive(Debug, Default, Clone, PartialEq)]
enum Lexed {
    #[default]
    Code,
    Single {
        escapes: bool,
    },
    Double,
    Dollar(String),
    BlockComment(usize),
}

impl Lexer {
    fn outside_literals(&self) -> bool {
        self.state == Lexed::Code
    }

    fn scan(&mut self, line: &str) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            match &mut self.state {
                Lexed::Code => match c {
                    b'-' if bytes.get(i + 1) == Some(&b'-') => return,
                    b'/' if bytes.get(i + 1) == Some(&b'*') => {
                        self.state = Lexed::BlockComment(1);
                        i += 1;
                    }
                    b'\'' => {
                        let escapes = i > 0 && matches!(bytes[i - 1], b'E' | b'e');
                        self.state = Lexed::Single { escapes };
                    }
                    b'"' => self.state = Lexed::Double,
                    b'$' => {
                        if let Some(tag) = dollar_tag(&line[i..]) {
                            i += tag.len() - 1;
                            self.state = Lexed::Dollar(tag);
                        }
                    }
                    _ => {}
                },
                Lexed::Single { escapes } => match c {
                    b'\\' if *escapes => i += 1,
                    b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 1,
                    b'\'' => self.state = Lexed::Code,
                    _ => {}
                },
                Lexed::Double => {
                    if c == b'"' {
                        self.state = Lexed::Code;
                    }
                }
                Lexed::Dollar(tag) => {
                    if line[i..].starts_with(tag.as_str()) {
                        i += tag.len() - 1;
                        self.state = Lexed::Code;
                    }
                }
                Lexed::BlockComment(depth) => {
                    if c == b'*' && bytes.get(i + 1) == Some(&b'/') {
                        *depth -= 1;
                        i += 1;
                        if *depth == 0 {
                            self.state = Lexed::Code;
                        }
                    } else if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
                        *depth += 1;
                        i += 1;
                    }
                }
            }
            i += 1;
        }
    }
}

/// `$tag$` or `$$` at the start of `text` (a `$1` parameter is none).
fn dollar_tag(text: &str) -> Option<String> {
    let rest = text.strip_prefix('$')?;
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let valid = tag
        .chars()
        .enumerate()
        .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    valid.then(|| format!("${tag}$"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // As pg_restore 18.1 writes a 17 source's pre-data section.
    const SCRIPT: &str = "--\n-- PostgreSQL database dump\n--\n\n\
\\restrict AbC123\n\n\
SET statement_timeout = 0;\nSET lock_timeout = 0;\n\
SET idle_in_transaction_session_timeout = 0;\nSET transaction_timeout = 0;\n\
SET client_encoding = 'UTF8';\n\n\
--\n-- Name: f(); Type: FUNCTION; Schema: public; Owner: postgres\n--\n\n\
CREATE FUNCTION public.f() RETURNS text\n    LANGUAGE sql\n    AS $_$\n\
SET transaction_timeout = 0;\n\\restrict kept\n select ' GENERATED ALWAYS AS (1)'\n$_$;\n\n\
--\n-- Name: t; Type: TABLE; Schema: public; Owner: postgres\n--\n\n\
CREATE TABLE public.t (\n    id integer NOT NULL,\n    g integer GENERATED ALWAYS AS ((id * 2)) STORED,\n\
    \"w x\" text GENERATED ALWAYS AS ((id || ')'::text)),\n    v integer GENERATED ALWAYS AS ((id * 3))\n);\n\n\
ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_v_key UNIQUE NULLS NOT DISTINCT (v);\n\n\
\\unrestrict AbC123\n";

    #[test]
    fn a_17_dump_for_15_loses_the_setting_and_the_meta_commands_only() {
        let (out, changes) = translate(SCRIPT, 15);
        assert!(!out.contains("\\restrict AbC123") && !out.contains("\\unrestrict"));
        assert!(out.contains("SET lock_timeout = 0;"));
        assert_eq!(
            out.matches("SET transaction_timeout = 0;").count(),
            1,
            "the function body keeps its text: {out}"
        );
        assert!(out.contains("\\restrict kept"), "{out}");
        assert!(out.contains("UNIQUE NULLS NOT DISTINCT (v)"));
        assert!(changes[0].contains("transaction_timeout"), "{changes:?}");
    }

    #[test]
    fn virtual_generated_columns_become_stored_below_18() {
        let (out, changes) = translate(SCRIPT, 17);
        assert!(out.contains("g integer GENERATED ALWAYS AS ((id * 2)) STORED,\n"));
        assert!(out.contains("\"w x\" text GENERATED ALWAYS AS ((id || ')'::text)) STORED,\n"));
        assert!(out.contains("v integer GENERATED ALWAYS AS ((id * 3)) STORED\n);"));
        assert!(out.contains("select ' GENERATED ALWAYS AS (1)'\n"), "{out}");
        assert!(
            out.contains("SET transaction_timeout = 0;\nSET client"),
            "17 has it"
        );
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes[0].starts_with("public.t.\"w x\": virtual"),
            "{changes:?}"
        );
        assert!(changes[1].starts_with("public.t.v: virtual"), "{changes:?}");
        let (same, none) = translate(SCRIPT, 18);
        assert!(none.is_empty() && same.contains("((id * 3))\n);"));
    }

    #[test]
    fn nulls_not_distinct_is_left_out_for_14_and_said() {
        let (out, changes) = translate(SCRIPT, 14);
        assert!(out.contains("ADD CONSTRAINT t_v_key UNIQUE (v);"));
        let said = changes
            .iter()
            .find(|c| c.contains("NULLS NOT DISTINCT"))
            .unwrap();
        assert!(said.starts_with("TABLE public.t: NULLS"), "{said}");
    }

    #[test]
    fn entries_are_cut_at_headers_outside_bodies_and_named() {
        let (script, _) = translate(SCRIPT, 17);
        let pieces = split_entries(&script);
        let names: Vec<&str> = pieces.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["(the preamble)", "FUNCTION public.f()", "TABLE public.t"]
        );
        assert_eq!(pieces.iter().map(|(_, s)| *s).collect::<String>(), script);
        let body = "CREATE FUNCTION f() AS $$\n-- Name: x; Type: TABLE; Schema: s\n$$;\n";
        assert_eq!(
            split_entries(body).len(),
            1,
            "a header inside a body is text"
        );
    }

    #[test]
    fn only_newer_programs_than_the_target_need_a_script() {
        assert!(needs_script(18, 17) && needs_script(17, 14));
        assert!(!needs_script(17, 17) && !needs_script(15, 18));
    }
}
