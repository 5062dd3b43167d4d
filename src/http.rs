//! The HTTP edge of `walrelay run`: `/metrics` (Prometheus text), `/healthz`
//! and `/status` (JSON of the board), open to whoever reaches them; `POST
//! /cutover` arrives as an extra route (see [`router`]) and can fence the
//! source and end its sessions, so beyond loopback it needs a token
//! ([`HttpToken`], [`check_exposure`]).
//!
//! Binds where told; the CLI default is loopback (docs/ARCHITECTURE.md,
//! Errors, logs and secrets).
//! Nothing served here carries row contents or passwords: the board holds
//! positions, counters and errors already scrubbed by their producers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::metrics;
use crate::status::StatusBoard;

/// How often histogram samples are drained into their buckets when nobody
/// scrapes (the recorder is installed without an exporter task).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the HTTP edge stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("cannot listen on {addr}: {source} (choose another address with --http)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("http server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to serve POST /cutover on {addr} without a token: beyond loopback anyone who reaches it could fence the source database and end its sessions; set --http-token (or WALRELAY_HTTP_TOKEN) and send it as `Authorization: Bearer <token>`, or bind --http to a loopback address (127.0.0.1)")]
    Unprotected { addr: SocketAddr },
}

/// The bearer token `POST /cutover` must carry. Its `Debug` hides it.
#[derive(Clone)]
pub struct HttpToken(String);

impl std::fmt::Debug for HttpToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpToken(***)")
    }
}

impl std::str::FromStr for HttpToken {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.trim().is_empty() {
            return Err(
                "the token is empty: give a long random string (e.g. `openssl rand -hex 32`)"
                    .into(),
            );
        }
        Ok(HttpToken(token.to_string()))
    }
}

impl HttpToken {
    /// Whether an `Authorization` header value is `Bearer <this token>`.
    /// Compared in constant time: the time taken depends on the token's
    /// length only, never on how much of it the request got right.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let presented = authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        let expected = self.0.as_bytes();
        let mut diff = u8::from(presented.len() != expected.len());
        for (i, e) in expected.iter().enumerate() {
            diff |= e ^ presented.get(i).copied().unwrap_or(!e);
        }
        std::hint::black_box(diff) == 0
    }
}

/// Refuses an endpoint beyond loopback without a token (`POST /cutover`
/// would be open to the network); warns when it is beyond loopback with one.
pub(crate) fn check_exposure(addr: SocketAddr, token: Option<&HttpToken>) -> Result<(), HttpError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if token.is_none() {
        return Err(HttpError::Unprotected { addr });
    }
    tracing::warn!(addr = %addr, "http endpoint beyond loopback: GET /metrics, /healthz and /status are open to whoever reaches it; POST /cutover (fences the source) needs the token");
    Ok(())
}

/// What the handlers read.
#[derive(Clone)]
pub(crate) struct AppState {
    pub board: Arc<StatusBoard>,
    pub prometheus: PrometheusHandle,
}

/// The built-in routes merged with `extra`.
///
/// `extra` is where `POST /cutover` goes: a `Router` carrying its own state
/// (config, target session, the stream's applied position), merged here so
/// the read-only routes keep needing only the board and the metrics handle.
/// Pass `Router::new()` when there is nothing to add.
pub(crate) fn router(
    board: Arc<StatusBoard>,
    prometheus: PrometheusHandle,
    extra: Router,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/status", get(status))
        .with_state(AppState { board, prometheus })
        .merge(extra)
}

/// Serves the built-in routes and `extra` (where `POST /cutover` goes) on
/// `addr` until `shutdown` turns true (or its sender is dropped); in-flight
/// requests finish first.
pub(crate) async fn serve_with(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    prometheus: PrometheusHandle,
    extra: Router,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let routes = "/metrics, /healthz, /status, POST /cutover";
    serve_routes(addr, board, prometheus, extra, routes, shutdown).await
}

async fn serve_routes(
    addr: SocketAddr,
    board: Arc<StatusBoard>,
    prometheus: PrometheusHandle,
    extra: Router,
    routes: &str,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let upkeep = tokio::spawn(upkeep(prometheus.clone(), shutdown.clone()));
    let app = router(board, prometheus, extra);
    let result = serve_router(addr, app, routes, shutdown).await;
    upkeep.abort();
    result
}

/// Binds and serves `app` with graceful shutdown on the watch.
async fn serve_router(
    addr: SocketAddr,
    app: Router,
    routes: &str,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!(addr = %local, routes, "http endpoint listening");
    if !local.ip().is_loopback() {
        tracing::warn!(addr = %local, "http endpoint listening beyond loopback: POST /cutover can fence the source (it needs the --http-token)");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(|source| HttpError::Serve { addr, source })
}

/// Drains histogram samples periodically so memory stays bounded between scrapes.
async fn upkeep(prometheus: PrometheusHandle, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(UPKEEP_EVERY) => prometheus.run_upkeep(),
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// `GET /metrics`: the board's gauges refreshed, then the exposition text.
async fn metrics_text(State(state): State<AppState>) -> Response {
    metrics::update_from_board(&state.board);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.prometheus.render(),
    )
        .into_response()
}

/// `GET /healthz`: 200 `ok` while healthy, 503 with the stage otherwise
/// (`stopped`, `failed`), so an orchestrator restarts or flags the process.
async fn healthz(State(state): State<AppState>) -> Response {
    let stage = state.board.stage();
    if metrics::is_healthy(stage) {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let name = serde_json::to_value(stage)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{stage:?}").to_lowercase());
        (StatusCode::SERVICE_UNAVAILABLE, format!("{name}\n")).into_response()
    }
}

/// `GET /status`: the board as JSON.
async fn status(State(state): State<AppState>) -> Response {
    Json(state.board.snapshot()).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use metrics_exporter_prometheus::PrometheusRecorder;
    use tower::ServiceExt;

    use super::*;
    use crate::status::Stage;

    fn app(board: &Arc<StatusBoard>) -> (Router, PrometheusRecorder) {
        let recorder = metrics::builder().expect("buckets").build_recorder();
        let router = router(board.clone(), recorder.handle(), Router::new());
        (router, recorder)
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = app.oneshot(request).await.expect("response");
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn status_is_the_board_as_json() {
        let board = Arc::new(StatusBoard::default());
        board.set_stage(Stage::Streaming);
        board.source_lsn.store(0x1_0000_0200, Ordering::Relaxed);
        board.applied_lsn.store(0x1_0000_0000, Ordering::Relaxed);
        let (app, _recorder) = app(&board);
        let (code, body) = get(app, "/status").await;
        assert_eq!(code, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["stage"], "streaming");
        assert_eq!(json["source_lsn"], "1/200");
        assert_eq!(json["applied_lsn"], "1/0");
        assert_eq!(json["lag_bytes"], 512);
        for field in [
            "connected",
            "lag_seconds",
            "slot_retained_wal_bytes",
            "last_error",
        ] {
            assert!(json.get(field).is_some(), "{field} missing from {body}");
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_while_streaming_and_503_once_failed() {
        let board = Arc::new(StatusBoard::default());
        let (app, _recorder) = app(&board);
        assert_eq!(
            get(app.clone(), "/healthz").await,
            (StatusCode::OK, "ok\n".into())
        );
        board.set_stage(Stage::Failed);
        let (code, body) = get(app, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "failed\n");
    }

    // A current-thread runtime polls the handler on this thread, so the
    // thread-local recorder sees what the handler records.
    #[tokio::test(flavor = "current_thread")]
    async fn metrics_render_the_board_gauges() {
        let board = Arc::new(StatusBoard::default());
        board.source_lsn.store(4096, Ordering::Relaxed);
        let (app, recorder) = app(&board);
        let _local = ::metrics::set_default_local_recorder(&recorder);
        let (code, body) = get(app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("walrelay_lag_bytes 4096"), "{body}");
        assert!(body.contains("walrelay_up 1"), "{body}");
    }

    #[tokio::test]
    async fn bind_error_names_the_address_and_the_flag() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = taken.local_addr().expect("addr");
        let (_tx, rx) = watch::channel(false);
        let err = serve_router(addr, Router::new(), "", rx)
            .await
            .expect_err("in use");
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string()) && text.contains("--http"),
            "{text}"
        );
    }

    #[test]
    fn the_token_is_accepted_only_whole_and_as_bearer() {
        let token: HttpToken = "s3cret".parse().expect("token");
        assert!(token.accepts(Some(b"Bearer s3cret")));
        for wrong in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"Bearer S3cret",
            b"s3cret",
            b"Basic s3cret",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !token.accepts(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!token.accepts(None));
        assert!("  ".parse::<HttpToken>().is_err());
        assert_eq!(format!("{token:?}"), "HttpToken(***)");
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let token: HttpToken = "t".parse().expect("token");
        let open: SocketAddr = "0.0.0.0:9187".parse().expect("addr");
        let err = check_exposure(open, None).expect_err("refused").to_string();
        assert!(
            err.contains("--http-token") && err.contains("/cutover"),
            "{err}"
        );
        assert!(check_exposure(open, Some(&token)).is_ok());
        for local in ["127.0.0.1:9187", "[::1]:9187"] {
            assert!(check_exposure(local.parse().expect("addr"), None).is_ok());
        }
    }

    #[tokio::test]
    async fn serve_stops_on_shutdown() {
        let (tx, rx) = watch::channel(false);
        let server = tokio::spawn(serve_router(
            "127.0.0.1:0".parse().expect("addr"),
            Router::new(),
            "",
            rx,
        ));
        tx.send(true).expect("send");
        let done = tokio::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(done, Ok(Ok(Ok(())))), "{done:?}");
    }
}
