//! `gim demo serve`: serves the web chat demo (web/dist) and a small JSON API that mints device
//! tokens for the demo app, so a browser can sign in without a business server. Meant for a local
//! cluster only: anyone who can reach it can sign in as any user of the app.

use super::AppArgs;
use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use gim_client::{ClientApi, Credentials};
use gim_common::token::{AppKey, now_secs};
use gim_proto::logic::v1::{DeviceType, GroupType};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Address to serve on
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Built page (index.html, app.js)
    #[arg(long, default_value = "web/dist")]
    dir: PathBuf,
    /// WebSocket endpoints of the conn nodes offered to the page (repeat for several nodes)
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
    /// LogicClientExt address, for device registration and group lists
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
    /// Demo user ids offered in the page's sign-in list
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    users: Vec<i64>,
}

struct Demo {
    app_id: i64,
    key: AppKey,
    endpoints: Vec<String>,
    users: Vec<i64>,
    channel: tonic::transport::Channel,
    dir: PathBuf,
}

pub async fn serve(a: ServeArgs) -> Result<()> {
    let key = a.app.app_key()?;
    for e in &a.endpoints {
        if !e.starts_with("ws://") {
            anyhow::bail!("--endpoint {e:?}: the page needs ws:// endpoints");
        }
    }
    if !a.dir.join("index.html").is_file() {
        anyhow::bail!(
            "{} has no index.html: build the page first (cd web && npm ci && npm run build)",
            a.dir.display()
        );
    }
    if !a.listen.ip().is_loopback() {
        eprintln!(
            "warning: {} is not a loopback address; the demo mints tokens for anyone",
            a.listen
        );
    }
    let demo = Arc::new(Demo {
        app_id: a.app.app_id,
        key,
        endpoints: a.endpoints,
        users: a.users,
        channel: gim_client::api::channel(&a.client_url)?,
        dir: a.dir,
    });
    let app = axum::Router::new()
        .route("/api/config", get(config))
        .route("/api/token", get(token))
        .route("/api/groups", get(groups))
        .fallback(static_file)
        .with_state(demo);
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    eprintln!("demo page on http://{}/", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(gim_common::shutdown::signal())
        .await
        .context("demo server failed")?;
    Ok(())
}

async fn config(State(d): State<Arc<Demo>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "app_id": d.app_id,
        "endpoints": d.endpoints,
        "users": d.users,
    }))
}

#[derive(Deserialize)]
struct TokenQuery {
    user: i64,
    #[serde(default)]
    device: i64,
}

fn api_error(status: StatusCode, e: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// Mints a device token; registers a new web device when `device` is 0.
async fn token(State(d): State<Arc<Demo>>, Query(q): Query<TokenQuery>) -> Response {
    if q.user <= 0 {
        return api_error(StatusCode::BAD_REQUEST, "user must be positive");
    }
    let device = if q.device > 0 {
        q.device
    } else {
        match ClientApi::register_device(d.channel.clone(), d.app_id, DeviceType::Web, "web demo")
            .await
        {
            Ok(id) => id,
            Err(e) => return api_error(StatusCode::BAD_GATEWAY, e),
        }
    };
    let token = d
        .key
        .device_token(d.app_id, q.user, device, now_secs(), 86_400);
    Json(serde_json::json!({
        "app_id": d.app_id,
        "user_id": q.user,
        "device_id": device,
        "token": token,
    }))
    .into_response()
}

async fn groups(State(d): State<Arc<Demo>>, Query(q): Query<TokenQuery>) -> Response {
    let creds = Credentials {
        app_id: d.app_id,
        user_id: q.user,
        device_id: q.device,
        token: d
            .key
            .device_token(d.app_id, q.user, q.device, now_secs(), 300),
    };
    let res = async {
        let mut api = ClientApi::new(d.channel.clone(), &creds)?;
        api.get_user_groups().await
    }
    .await;
    match res {
        Ok(groups) => {
            let list: Vec<_> = groups
                .into_iter()
                .map(|g| {
                    serde_json::json!({
                        "group_id": g.group_id.to_string(),
                        "name": g.name,
                        "large": g.r#type == GroupType::Large as i32,
                        "members": g.user_num,
                    })
                })
                .collect();
            Json(serde_json::json!({ "groups": list })).into_response()
        }
        Err(e) => api_error(StatusCode::BAD_GATEWAY, e),
    }
}

async fn static_file(State(d): State<Arc<Demo>>, uri: axum::http::Uri) -> Response {
    let rel = uri.path().trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    // Only plain relative components: no `..`, no absolute paths out of the page's directory.
    let path = Path::new(rel);
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return api_error(StatusCode::BAD_REQUEST, "bad path");
    }
    let full = d.dir.join(path);
    match tokio::fs::read(&full).await {
        Ok(bytes) => {
            let ct = match full.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("json") => "application/json",
                Some("svg") => "image/svg+xml",
                Some("map") => "application/json",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, ct),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => api_error(StatusCode::NOT_FOUND, "not found"),
    }
}
