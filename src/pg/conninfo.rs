//! libpq connection strings (URIs and keyword/value), parsed once.
//!
//! The password lives in a [`Secret`] whose `Debug` and `Display` print
//! `***`, so no log line, error or report can carry it. Without a password
//! in the string or `PGPASSWORD`, the password file is read as libpq reads
//! it ([`pgpass`]), so walrelay and its `pg_dump` children agree.

mod pgpass;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A password that never prints.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// The password itself, for the authentication handshake only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// A connection string that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("empty connection string: an empty value never means localhost; give a URI (postgresql://user@host:5432/dbname) or host=… port=… user=… dbname=…")]
    Empty,
    #[error("multiple hosts ({0}) are not supported: walrelay connects to exactly one server; give the primary's host and port only")]
    MultiHost(String),
    #[error("not a valid URI ({0}); expected postgresql://user:password@host:port/dbname?sslmode=require")]
    Uri(String),
    #[error("malformed keyword/value string near {0:?}; expected host=… port=… user=… dbname=…")]
    KeyValue(String),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("invalid sslmode {0:?}: use disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("unsupported parameter {0:?} (walrelay understands host, hostaddr, port, user, password, passfile, dbname, sslmode, sslrootcert, application_name, options, connect_timeout)")]
    Unsupported(String),
}

/// One end's connection parameters.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// CA bundle (PEM) for verify-ca / verify-full; `system` means the built-in web roots.
    pub sslrootcert: Option<PathBuf>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    pub connect_timeout: Option<u64>,
}

const KNOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "passfile",
    "dbname",
    "sslmode",
    "sslrootcert",
    "application_name",
    "options",
    "connect_timeout",
];

impl ConnInfo {
    /// Parses a libpq URI (`postgres://`, `postgresql://`) or keyword/value string.
    /// Unset fields fall back to `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`,
    /// `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, then libpq's defaults; an
    /// unset password to the password file (`passfile`, `PGPASSFILE`, else
    /// `~/.pgpass`). An empty string is refused: it would silently mean
    /// `localhost`.
    pub fn parse(s: &str) -> Result<Self, ConnInfoError> {
        Self::from_params(parse_params(s)?, |name| std::env::var(name).ok())
    }

    fn from_params(
        mut p: BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnInfoError> {
        if let Some(key) = p.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(ConnInfoError::Unsupported(key.clone()));
        }
        let mut take =
            |key: &str, var: &str| p.remove(key).filter(|v| !v.is_empty()).or_else(|| env(var));
        let hostaddr = take("hostaddr", "PGHOSTADDR");
        let host = take("host", "PGHOST")
            .or(hostaddr)
            .unwrap_or_else(|| "localhost".into());
        let port = match take("port", "PGPORT") {
            Some(port) if port.contains(',') => return Err(ConnInfoError::MultiHost(port)),
            Some(port) => port.parse().map_err(|_| ConnInfoError::Port(port))?,
            None => 5432,
        };
        let user = take("user", "PGUSER")
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        if host.contains(',') {
            return Err(ConnInfoError::MultiHost(host));
        }
        let password = take("password", "PGPASSWORD").filter(|v| !v.is_empty());
        let passfile = take("passfile", "PGPASSFILE");
        let dbname = take("dbname", "PGDATABASE").unwrap_or_else(|| user.clone());
        let password = password
            .or_else(|| {
                let path = passfile
                    .map(PathBuf::from)
                    .or_else(|| env("HOME").map(|home| Path::new(&home).join(".pgpass")))?;
                pgpass::lookup(&path, &host, port, &dbname, &user)
            })
            .map(Secret);
        let sslmode = match take("sslmode", "PGSSLMODE").as_deref() {
            None | Some("prefer") | Some("allow") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => return Err(ConnInfoError::SslMode(other.into())),
        };
        let sslrootcert = take("sslrootcert", "PGSSLROOTCERT").map(PathBuf::from);
        let application_name = take("application_name", "PGAPPNAME");
        let options = take("options", "PGOPTIONS");
        let connect_timeout =
            take("connect_timeout", "PGCONNECT_TIMEOUT").and_then(|v| v.parse().ok());
        Ok(ConnInfo {
            host,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            application_name,
            options,
            connect_timeout,
        })
    }

    /// `user@host:port/dbname`: what logs and errors name (never the password).
    pub fn display(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    /// Whether the port is a known connection-pooler port (Supavisor's and
    /// pgbouncer's transaction mode).
    pub fn looks_like_pooler(&self) -> bool {
        self.port == 6543 || self.host.contains("pooler.supabase.com")
    }

    /// A keyword/value string for libpq tools (pg_dump, pg_restore), without
    /// the password: pass [`ConnInfo::password`] through `PGPASSWORD`.
    pub fn libpq_string(&self) -> String {
        let mut out = vec![
            kv("host", &self.host),
            kv("port", &self.port.to_string()),
            kv("user", &self.user),
            kv("dbname", &self.dbname),
            kv("sslmode", self.sslmode_str()),
        ];
        if let Some(cert) = &self.sslrootcert {
            out.push(kv("sslrootcert", &cert.to_string_lossy()));
        }
        if let Some(options) = &self.options {
            out.push(kv("options", options));
        }
        out.join(" ")
    }

    /// libpq's spelling of the ssl mode.
    pub fn sslmode_str(&self) -> &'static str {
        match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The same server, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        ConnInfo {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }
}

fn kv(key: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("{key}='{escaped}'")
}

/// Whether the string itself carries a password (not the environment or a
/// password file): a file holding it must be private.
pub(crate) fn carries_password(s: &str) -> bool {
    parse_params(s).is_ok_and(|p| p.get("password").is_some_and(|v| !v.is_empty()))
}

/// The parameters of a URI or keyword/value string, before defaults.
fn parse_params(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(ConnInfoError::Empty);
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        parse_uri(s)
    } else {
        parse_key_value(s)
    }
}

/// libpq percent-decodes URI parts; `+` stays `+` (no form decoding).
fn percent_decode(v: &str) -> Result<String, ConnInfoError> {
    let bad = |why: &str| ConnInfoError::Uri(format!("{why} in a URI part; encode % as %25"));
    let mut out = Vec::with_capacity(v.len());
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next(), bytes.next()];
        let digits = hex.map(|d| d.and_then(|d| char::from(d).to_digit(16)));
        match digits {
            [Some(hi), Some(lo)] => out.push((hi * 16 + lo) as u8),
            _ => return Err(bad("invalid percent-encoding")),
        }
    }
    String::from_utf8(out).map_err(|_| bad("percent-encoding that is not UTF-8"))
}

/// The host list of a URI's authority (after any `user:password@`), when it
/// names more than one host, which `url` would misparse or reject.
fn multi_host(s: &str) -> Option<String> {
    let rest = s.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hosts.contains(',').then(|| hosts.to_string())
}

fn parse_uri(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    if let Some(hosts) = multi_host(s) {
        return Err(ConnInfoError::MultiHost(hosts));
    }
    let url = url::Url::parse(s).map_err(|err| ConnInfoError::Uri(err.to_string()))?;
    let decode = percent_decode;
    let mut p = BTreeMap::new();
    if let Some(host) = url.host_str() {
        p.insert("host".into(), host.trim_matches(['[', ']']).to_string());
    }
    if let Some(port) = url.port() {
        p.insert("port".into(), port.to_string());
    }
    if !url.username().is_empty() {
        p.insert("user".into(), decode(url.username())?);
    }
    if let Some(password) = url.password() {
        p.insert("password".into(), decode(password)?);
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() {
        p.insert("dbname".into(), decode(db)?);
    }
    for pair in url.query().unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ConnInfoError::Uri(format!("query parameter {pair:?} has no value")))?;
        p.insert(decode(key)?, decode(value)?);
    }
    Ok(p)
}

fn parse_key_value(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let mut p = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(p);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || key.is_empty() {
            return Err(ConnInfoError::KeyValue(key));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(ConnInfoError::KeyValue(key)),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        p.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_no_env(s: &str) -> Result<ConnInfo, ConnInfoError> {
        ConnInfo::from_params(parse_params(s)?, |_| None)
    }

    #[test]
    fn uri_with_percent_encoded_password_and_sslmode() {
        let c = parse_no_env("postgresql://app%40x:p%40ss%2Fw@db.example.com:6543/my%20db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(c.user, "app@x");
        assert_eq!(c.password.unwrap().expose(), "p@ss/w");
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.port, 6543);
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert.unwrap(), PathBuf::from("/ca.pem"));
    }

    #[test]
    fn key_value_with_quotes_and_escapes() {
        let c =
            parse_no_env(r"host=127.0.0.1 port = 5433 user=u password='it\'s a secret' dbname=d")
                .unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 5433);
        assert_eq!(c.password.unwrap().expose(), "it's a secret");
        assert_eq!(c.sslmode, SslMode::Prefer);
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let c = parse_no_env("postgres://u:hunter2@h/d").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.display().contains("hunter2"));
        assert!(!c.libpq_string().contains("hunter2"));
    }

    #[test]
    fn bad_inputs_are_named() {
        assert!(matches!(
            parse_no_env("host=h port=x"),
            Err(ConnInfoError::Port(_))
        ));
        assert!(matches!(
            parse_no_env("host=h sslmode=maybe"),
            Err(ConnInfoError::SslMode(_))
        ));
        assert!(matches!(
            parse_no_env("host=h bogus=1"),
            Err(ConnInfoError::Unsupported(_))
        ));
        assert!(matches!(
            parse_no_env("host"),
            Err(ConnInfoError::KeyValue(_))
        ));
    }

    #[test]
    fn libpq_string_round_trips() {
        let c = parse_no_env("postgres://u:pw@h:1/d%27b?sslmode=require").unwrap();
        let again = parse_no_env(&c.libpq_string()).unwrap();
        assert_eq!(again.dbname, "d'b");
        assert_eq!(again.sslmode, SslMode::Require);
        assert_eq!(again.port, 1);
    }

    #[test]
    fn a_raw_plus_in_a_uri_stays_a_plus() {
        let c = parse_no_env("postgres://u+1:a+b%2Bc@h/d+b?application_name=x+y").unwrap();
        assert_eq!(c.user, "u+1");
        assert_eq!(c.password.unwrap().expose(), "a+b+c");
        assert_eq!(c.dbname, "d+b");
        assert_eq!(c.application_name.as_deref(), Some("x+y"));
        assert!(matches!(
            parse_no_env("postgres://u:100%@h/d"),
            Err(ConnInfoError::Uri(_))
        ));
    }

    #[test]
    fn an_empty_connection_string_is_refused() {
        for s in ["", "   ", "\t\n"] {
            assert_eq!(parse_no_env(s).unwrap_err(), ConnInfoError::Empty, "{s:?}");
            assert_eq!(
                ConnInfo::parse(s).unwrap_err(),
                ConnInfoError::Empty,
                "{s:?}"
            );
        }
    }

    #[test]
    fn multiple_hosts_are_refused_not_misparsed() {
        for s in [
            "postgres://h1,h2/db",
            "postgresql://u:pw@h1:5432,h2:5433/db",
            "host=h1,h2 dbname=d",
            "host=h port=5432,5433",
        ] {
            assert!(
                matches!(parse_no_env(s), Err(ConnInfoError::MultiHost(_))),
                "{s}: {:?}",
                parse_no_env(s)
            );
        }
        let c = parse_no_env("postgres://u:p,w@h/db").unwrap();
        assert_eq!(
            c.password.unwrap().expose(),
            "p,w",
            "a comma in the password"
        );
    }

    /// Parses with exactly these environment variables.
    fn parse_with_env(s: &str, vars: &[(&str, &str)]) -> Option<String> {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let c = ConnInfo::from_params(parse_params(s).unwrap(), env).unwrap();
        c.password.map(|p| p.expose().to_string())
    }

    fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.to_string_lossy().into_owned()
    }

    #[test]
    fn password_file_is_read_like_libpq_after_the_string_and_pgpassword() {
        let dir = tempfile::tempdir().unwrap();
        let text = "db.example.com:5433:app:u:from\\:file\n*:*:*:other:wild\n";
        let file = private_file(dir.path(), "pgpass", text, 0o600);
        let home = dir.path().to_string_lossy().into_owned();
        private_file(dir.path(), ".pgpass", "*:*:*:*:from-home\n", 0o600);
        let conn = "host=db.example.com port=5433 dbname=app user=u";
        let uri = "postgres://u@db.example.com:5433/app";
        let file_env = [("PGPASSFILE", file.as_str())];
        assert_eq!(
            parse_with_env(conn, &file_env).as_deref(),
            Some("from:file")
        );
        assert_eq!(parse_with_env(uri, &file_env).as_deref(), Some("from:file"));
        let given = format!("{conn} password=given");
        assert_eq!(parse_with_env(&given, &file_env).as_deref(), Some("given"));
        let with_pgpassword = [("PGPASSFILE", file.as_str()), ("PGPASSWORD", "env")];
        assert_eq!(
            parse_with_env(conn, &with_pgpassword).as_deref(),
            Some("env")
        );
        let by_param = format!("host=h dbname=x user=other passfile='{file}'");
        assert_eq!(parse_with_env(&by_param, &[]).as_deref(), Some("wild"));
        let nothing = "host=h dbname=x user=nobody";
        assert_eq!(parse_with_env(nothing, &file_env), None);
        let home_env = [("HOME", home.as_str())];
        assert_eq!(
            parse_with_env(nothing, &home_env).as_deref(),
            Some("from-home")
        );
        assert_eq!(parse_with_env(nothing, &[]), None);
    }

    #[test]
    fn a_password_file_others_may_read_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604] {
            let file = private_file(dir.path(), "pgpass", "*:*:*:*:secret\n", mode);
            let c = parse_with_env("host=h user=u", &[("PGPASSFILE", file.as_str())]);
            assert_eq!(c, None, "mode {mode:o}");
        }
    }
}
