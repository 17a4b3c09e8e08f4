//! Admin HTTP on `logic.admin_listen`: liveness, readiness (MySQL and Redis answer), Prometheus
//! metrics, and the admin API (`POST /apps`) behind a bearer token.
//!
//! The admin API lets an operator create an app from anywhere that reaches the admin port,
//! without MySQL credentials: the caller makes the key pair and sends only the public key, so
//! the private key never crosses the network. Without a configured token the API refuses every
//! call; it is never open.

use crate::apps;
use crate::error::Error;
use crate::state::State;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gim_common::config::{ConfigError, LogicSection};
use gim_common::token::PublicKey;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// The admin API's bearer token. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct AdminToken(Arc<[u8]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// `logic.admin_token`, or the content of `logic.admin_token_file`; `None` when neither is
    /// set (the admin API is then off).
    pub fn from_config(l: &LogicSection) -> Result<Option<Self>, ConfigError> {
        let (key, value) = if !l.admin_token.is_empty() {
            ("logic.admin_token", l.admin_token.expose().to_string())
        } else if !l.admin_token_file.is_empty() {
            let text = std::fs::read_to_string(&l.admin_token_file).map_err(|e| {
                ConfigError::new(
                    "logic.admin_token_file",
                    format!("{}: {e}", l.admin_token_file),
                )
            })?;
            ("logic.admin_token_file", text.trim().to_string())
        } else {
            return Ok(None);
        };
        // Checked here too: a config built in code skips `Validate`.
        gim_common::internal::check_secret(&value).map_err(|r| ConfigError::new(key, r))?;
        Ok(Some(Self(value.into_bytes().into())))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // Constant time over the token's bytes; only the length can show, and it is not secret.
        self.0.ct_eq(presented).into()
    }
}

#[derive(Clone)]
struct Admin {
    state: Arc<State>,
    token: Option<AdminToken>,
}

pub fn router(state: Arc<State>, token: Option<AdminToken>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/apps", post(create_app))
        .with_state(Admin { state, token })
}

/// Both stores answer within the probe timeout.
pub async fn probe(state: &State) -> Result<(), String> {
    let mysql = async {
        match tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("mysql: {e}")),
            Err(_) => Err("mysql: timed out".to_string()),
        }
    };
    let redis = async {
        match tokio::time::timeout(PROBE_TIMEOUT, state.redis.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err("redis: timed out".to_string()),
        }
    };
    let (a, b) = tokio::join!(mysql, redis);
    a.and(b)
}

async fn readyz(AxState(admin): AxState<Admin>) -> impl IntoResponse {
    let state = &admin.state;
    match probe(state).await {
        Ok(()) => {
            state.metrics.ready.set(1);
            (StatusCode::OK, "ready".to_string())
        }
        Err(e) => {
            state.metrics.ready.set(0);
            (StatusCode::SERVICE_UNAVAILABLE, e)
        }
    }
}

async fn metrics(AxState(admin): AxState<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.state.metrics.encode(),
    )
}

/// A JSON answer: `{"error": …}` for failures.
fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Response {
    json(status, serde_json::json!({ "error": why.to_string() }))
}

/// Body of `POST /apps`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApp {
    name: String,
    /// The app's Ed25519 public key, base64url (32 bytes).
    public_key: String,
}

/// `POST /apps` with `Authorization: Bearer <logic.admin_token>` and
/// `{"name": …, "public_key": …}`: 201 `{"app_id": …}`.
async fn create_app(AxState(admin): AxState<Admin>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = &admin.token else {
        return refuse(
            StatusCode::FORBIDDEN,
            "the admin API is off on this logic process: set logic.admin_token or \
             logic.admin_token_file to enable it",
        );
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if !presented.is_some_and(|t| token.matches(t.as_bytes())) {
        tracing::warn!("admin API: call refused (missing or wrong bearer token)");
        let mut r = refuse(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (send Authorization: Bearer <logic.admin_token>)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        return r;
    }
    let req: NewApp = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(r#"body: {e} (expected {{"name": "...", "public_key": "<base64url>"}})"#),
            );
        }
    };
    let key = match PublicKey::from_b64(&req.public_key) {
        Ok(k) => k,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("public_key: {e}")),
    };
    match apps::register_app(&admin.state.pool, &req.name, &key).await {
        Ok(Some(app)) => {
            tracing::info!(app_id = app.0, name = %req.name, "app created through the admin API");
            json(StatusCode::CREATED, serde_json::json!({ "app_id": app.0 }))
        }
        Ok(None) => refuse(StatusCode::CONFLICT, "name: an app with this name exists"),
        Err(Error::Gim(e)) => refuse(StatusCode::BAD_REQUEST, e.message),
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e.chain(), "admin API: store unavailable");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable, retry later",
            )
        }
        Err(e) => {
            tracing::error!(error = %e.chain(), "admin API: app creation failed");
            refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}
