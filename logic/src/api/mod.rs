//! The three gRPC services, one module per audience: conn nodes ([`int`], `LogicInt`), client
//! apps ([`client`], `LogicClientExt`) and business servers ([`server`], `LogicServerExt`). Each
//! method reads its identity (metadata for the external APIs, the request for `LogicInt`), runs
//! the domain call inside a span carrying the trace id ([`handle`]), and maps the result through
//! the crate's single error-to-status conversion.

mod client;
mod int;
mod server;

pub use client::ClientService;
pub use int::IntService;
pub use server::ServerService;

use crate::error::{Error, Result};
use crate::metrics::{MethodLabel, RpcLabels};
use crate::state::State;
use gim_common::{AppId, DeviceId, GimCode, TRACE_ID_HEADER, UserId};
use std::future::Future;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};
use tracing::Instrument as _;

fn trace_id(meta: &MetadataMap) -> String {
    meta.get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(gim_common::telemetry::new_trace_id)
}

/// Runs one RPC's work inside its span and trace-id scope, and counts it. The work goes to the
/// heap first, so the layers wrapped around it move a pointer, not the whole future (measured
/// in bench/NOTES.md, "boxed before it is wrapped").
pub(crate) fn handle<'a, T: 'a>(
    state: &'a State,
    method: &'static str,
    meta: &'a MetadataMap,
    fut: impl Future<Output = Result<T>> + 'a,
) -> impl Future<Output = Result<Response<T>, Status>> + 'a {
    handle_boxed(state, method, meta, Box::pin(fut))
}

async fn handle_boxed<T>(
    state: &State,
    method: &'static str,
    meta: &MetadataMap,
    fut: std::pin::Pin<Box<impl Future<Output = Result<T>>>>,
) -> Result<Response<T>, Status> {
    let trace_id = trace_id(meta);
    let span = tracing::info_span!("rpc", method, trace_id = %trace_id);
    let start = std::time::Instant::now();
    let r = crate::push::TRACE_ID
        .scope(trace_id.clone(), fut.instrument(span.clone()))
        .await;
    state
        .metrics
        .rpc_seconds
        .get_or_create(&MethodLabel { method })
        .observe(start.elapsed().as_secs_f64());
    let outcome = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => match e.gim_code() {
            Some(c) => c.as_i32().to_string(),
            None if e.is_unavailable() => "unavailable".into(),
            None => "internal".into(),
        },
    };
    state
        .metrics
        .rpcs
        .get_or_create(&RpcLabels { method, outcome })
        .inc();
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let _g = span.enter();
            Err(e.into_status(method, &trace_id))
        }
    }
}

fn meta_i64(meta: &MetadataMap, key: &str) -> Result<i64> {
    meta.get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::code(GimCode::Unauthorized, format!("metadata {key} is missing")))
}

fn meta_token(meta: &MetadataMap) -> Result<&str> {
    meta.get("token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::code(GimCode::Unauthorized, "metadata token is missing"))
}

/// A client app's identity, verified: (app, user, device).
pub(crate) async fn client_auth(
    state: &State,
    meta: &MetadataMap,
) -> Result<(AppId, UserId, DeviceId)> {
    let app = AppId(meta_i64(meta, "app_id")?);
    let user = UserId(meta_i64(meta, "user_id")?);
    let device = DeviceId(meta_i64(meta, "device_id")?);
    state
        .policies
        .auth_device(app, user, device, meta_token(meta)?)
        .await?;
    Ok((app, user, device))
}

pub(crate) async fn server_auth(state: &State, meta: &MetadataMap) -> Result<AppId> {
    let app = AppId(meta_i64(meta, "app_id")?);
    state.policies.auth_server(app, meta_token(meta)?).await?;
    Ok(app)
}
