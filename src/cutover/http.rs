//! `POST /cutover` on `walrelay run`'s HTTP endpoint.

use crate::config::Config;

use super::{run, unfence, CutoverOptions};

/// Parameters of `POST /cutover` (query string), as the command's flags:
/// `fence`, `fence_list_only`, `fence_role` (comma-separated),
/// `max_lag_bytes`, `max_lag_seconds`, `timeout` (e.g. `60s`), `unfence`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CutoverQuery {
    #[serde(default)]
    pub fence: bool,
    #[serde(default)]
    pub fence_list_only: bool,
    pub fence_role: Option<String>,
    pub max_lag_bytes: Option<u64>,
    pub max_lag_seconds: Option<f64>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub unfence: bool,
    /// `touched` (default) or `full`.
    pub final_verify: Option<super::FinalVerify>,
}

struct HttpCutover {
    config: Config,
    /// When set, every request carries it (`Authorization: Bearer …`).
    token: Option<crate::http::HttpToken>,
    /// One cutover at a time.
    running: tokio::sync::Mutex<()>,
}

/// `POST /cutover` for `walrelay run`'s HTTP endpoint (merged through
/// [`crate::http::router`]'s `extra`): the same path as `walrelay cutover`.
/// 200 with the report when safe to switch, 409 with the report when not
/// (or while another cutover runs), 400 for bad parameters, 500 when it
/// could not run; 401 without the `token` when one is set (it must be
/// beyond loopback: [`crate::http::check_exposure`]). The endpoint binds to
/// loopback unless told otherwise: this route can fence the source.
pub fn routes(config: Config, token: Option<crate::http::HttpToken>) -> axum::Router {
    let state = std::sync::Arc::new(HttpCutover {
        config,
        token,
        running: tokio::sync::Mutex::new(()),
    });
    axum::Router::new()
        .route("/cutover", axum::routing::post(cutover_handler))
        .with_state(state)
}

async fn cutover_handler(
    axum::extract::State(state): axum::extract::State<std::sync::Arc<HttpCutover>>,
    headers: axum::http::HeaderMap,
    query: Result<axum::extract::Query<CutoverQuery>, axum::extract::rejection::QueryRejection>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::Json;
    let error = |code: StatusCode, message: String| {
        (code, Json(serde_json::json!({ "error": message }))).into_response()
    };
    if let Some(token) = &state.token {
        let presented = headers
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !token.accepts(presented) {
            tracing::warn!("POST /cutover refused: no or wrong bearer token");
            let mut refused = error(
                StatusCode::UNAUTHORIZED,
                "POST /cutover needs `Authorization: Bearer <token>` with the token given to walrelay run (--http-token)".into(),
            );
            refused.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return refused;
        }
    }
    // Parameters are read after the token: a stranger learns nothing.
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(err) => return error(StatusCode::BAD_REQUEST, err.body_text()),
    };
    let Ok(_one) = state.running.try_lock() else {
        return error(StatusCode::CONFLICT, "a cutover is already running".into());
    };
    if query.unfence {
        return match unfence(&state.config).await {
            Ok(db) => Json(serde_json::json!({ "unfenced": db })).into_response(),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        };
    }
    let defaults = CutoverOptions::default();
    let timeout = match query.timeout.as_deref().map(humantime::parse_duration) {
        None => defaults.timeout,
        Some(Ok(t)) => t,
        Some(Err(err)) => return error(StatusCode::BAD_REQUEST, format!("timeout: {err}")),
    };
    let opts = CutoverOptions {
        max_lag_bytes: query.max_lag_bytes.unwrap_or(defaults.max_lag_bytes),
        max_lag_seconds: query.max_lag_seconds.unwrap_or(defaults.max_lag_seconds),
        timeout,
        fence: query.fence,
        fence_roles: query
            .fence_role
            .iter()
            .flat_map(|r| r.split(','))
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
        fence_list_only: query.fence_list_only,
        final_verify: query.final_verify.unwrap_or(defaults.final_verify),
        ..defaults
    };
    match run(&state.config, &opts).await {
        Ok(report) => {
            let code = if report.safe {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            (code, Json(report)).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}
