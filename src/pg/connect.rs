//! Opening SQL sessions (tokio-postgres) and replication sessions
//! (pgwire-replication) from one [`ConnInfo`], with libpq's `sslmode`
//! semantics on rustls.
//!
//! tokio-postgres only knows disable/prefer/require; verify-ca and
//! verify-full are done by the rustls verifier we hand it, while
//! tokio-postgres is told `require` so it never falls back to plain text.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::Client;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conninfo::{ConnInfo, SslMode};
use super::error::Kind;

/// Settings every walrelay SQL session runs with, so text values read on one
/// server parse identically on the other (`money` included), no policy
/// filters rows silently, and walrelay's own sessions keep working on a
/// source that `cutover --fence` made read-only for everyone else.
pub const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET row_security = off; SET lc_monetary = 'C'; SET default_transaction_read_only = off";

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {who}: {}", error_text(.source))]
    Sql {
        who: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("TLS setup for {who}: {message}")]
    Tls { who: String, message: String },
    /// The whole startup (TCP, TLS, authentication, session settings) took
    /// longer than `connect_timeout`: a server or proxy that accepts
    /// connections but never answers.
    #[error("cannot connect to {who}: no answer within {seconds} s (connect_timeout)")]
    Timeout { who: String, seconds: u64 },
}

impl ConnectError {
    /// A one-line hint for the operator, from the SQLSTATE or the I/O error.
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectError::Sql { source, .. } => super::error::connect_hint(source),
            ConnectError::Tls { .. } => {
                "check sslmode and sslrootcert (a PEM file with the server's CA)"
            }
            ConnectError::Timeout { .. } => {
                "check that host and port are those of the PostgreSQL server (something there accepts connections but does not answer), or raise connect_timeout"
            }
        }
    }

    /// Whether reconnecting later may succeed.
    pub fn kind(&self) -> Kind {
        match self {
            ConnectError::Sql { source, .. } => super::error::kind(source),
            ConnectError::Tls { .. } => Kind::Definite,
            ConnectError::Timeout { .. } => Kind::Transient,
        }
    }
}

/// The full text of a tokio-postgres error, including the server's message.
pub fn error_text(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(inner) = source {
                text.push_str(": ");
                text.push_str(&inner.to_string());
                source = inner.source();
            }
            text
        }
    }
}

/// Opens a SQL session with [`SESSION_SETTINGS`] applied, within
/// `connect_timeout` (default 10 s) for the whole startup: tokio-postgres
/// bounds only the TCP connect with it.
pub async fn connect(info: &ConnInfo, application: &str) -> Result<Client, ConnectError> {
    let seconds = info.connect_timeout.unwrap_or(10);
    let startup = start_session(info, application, seconds);
    // 0 means wait indefinitely, as in libpq.
    if seconds == 0 {
        return startup.await;
    }
    match tokio::time::timeout(std::time::Duration::from_secs(seconds), startup).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            who: info.display(),
            seconds,
        }),
    }
}

async fn start_session(
    info: &ConnInfo,
    application: &str,
    seconds: u64,
) -> Result<Client, ConnectError> {
    let who = info.display();
    let mut config = tokio_postgres::Config::new();
    config
        .host(&info.host)
        .port(info.port)
        .user(&info.user)
        .dbname(&info.dbname)
        .application_name(info.application_name.as_deref().unwrap_or(application))
        .ssl_mode(match info.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
    if let Some(password) = &info.password {
        config.password(password.expose());
    }
    if let Some(options) = &info.options {
        config.options(options);
    }
    if seconds > 0 {
        config.connect_timeout(std::time::Duration::from_secs(seconds));
    }
    let tls = MakeRustlsConnect::new(rustls_config(info).map_err(|message| ConnectError::Tls {
        who: who.clone(),
        message,
    })?);
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|source| ConnectError::Sql {
            who: who.clone(),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "sql session ended");
        }
    });
    client
        .batch_execute(SESSION_SETTINGS)
        .await
        .map_err(|source| ConnectError::Sql { who, source })?;
    Ok(client)
}

/// The pgwire-replication configuration for a replication session on `slot`.
pub fn replication_config(
    info: &ConnInfo,
    slot: &str,
    publication: &str,
) -> Result<pgwire_replication::ReplicationConfig, ConnectError> {
    use pgwire_replication::TlsConfig;
    let roots = || root_cert_path(info);
    let tls = match info.sslmode {
        SslMode::Disable => TlsConfig::disabled(),
        SslMode::Prefer => TlsConfig {
            mode: pgwire_replication::SslMode::Prefer,
            ..TlsConfig::disabled()
        },
        SslMode::Require => TlsConfig::require(),
        SslMode::VerifyCa => TlsConfig::verify_ca(roots()),
        SslMode::VerifyFull => TlsConfig::verify_full(roots()),
    };
    let password = info
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    Ok(pgwire_replication::ReplicationConfig::new(
        info.host.clone(),
        info.user.clone(),
        password,
        info.dbname.clone(),
        slot,
        publication,
    )
    .with_port(info.port)
    .with_tls(tls)
    .with_application_name("walrelay"))
}

fn root_cert_path(info: &ConnInfo) -> Option<std::path::PathBuf> {
    info.sslrootcert
        .clone()
        .filter(|p| p.as_os_str() != "system")
}

/// Installs ring as rustls' process-wide provider: both ring and aws-lc-rs
/// are compiled in (pgwire-replication enables the latter), and rustls
/// refuses to pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_config(info: &ConnInfo) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match info.sslmode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            Arc::new(AcceptAnyCert(provider()))
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(load_roots(info)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| e.to_string())?;
            if info.sslmode == SslMode::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn load_roots(info: &ConnInfo) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let path = match &info.sslrootcert {
        Some(path) if path.as_os_str() == "system" => {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            return Ok(store);
        }
        Some(path) => path.clone(),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::Path::new(&home).join(".postgresql/root.crt"),
            None => {
                return Err(
                    "sslmode verify-ca/verify-full needs sslrootcert=/path/to/ca.pem".into(),
                )
            }
        },
    };
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
        store
            .add(cert)
            .map_err(|e| format!("unusable CA in {}: {e}", path.display()))?;
    }
    if store.is_empty() {
        return Err(format!("no certificate in sslrootcert {}", path.display()));
    }
    Ok(store)
}

/// `require`: encrypted, but like libpq without a root certificate, the
/// server's certificate is not checked.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Like [`error_text`], but for errors about data (SQLSTATE classes 22 and
/// 23) only the part before the offending value is kept, plus the column or
/// constraint name: error texts reach logs and `walrelay.tables`, and row
/// contents must not.
pub fn safe_error_text(err: &tokio_postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        return error_text(err);
    };
    let code = db.code().code();
    if !(code.starts_with("22") || code.starts_with("23")) {
        return error_text(err);
    }
    let message = db.message();
    let cut = message.find([':', '"', '(']).unwrap_or(message.len());
    let mut text = format!(
        "{}: {} (SQLSTATE {code}",
        db.severity(),
        message[..cut].trim_end()
    );
    if let Some(column) = db.column() {
        text.push_str(&format!(", column {column}"));
    }
    if let Some(constraint) = db.constraint() {
        text.push_str(&format!(", constraint {constraint}"));
    }
    if let Some(table) = db.table() {
        text.push_str(&format!(", table {table}"));
    }
    text.push(')');
    text
}

/// Whether an error is worth a reconnect and retry (see [`Kind`]).
pub fn is_transient(err: &tokio_postgres::Error) -> bool {
    super::error::is_transient(err)
}
