//! Fixtures every gim crate's tests used to copy: where the test MariaDB and Redis are, unique
//! names, free ports, polling with a deadline, a bare HTTP GET for admin endpoints, device
//! registration, and throwaway `redis-server` processes (single or a Redis Cluster) for tests
//! that flush, kill or cluster Redis. A dev-dependency only; never linked into a binary.
//!
//! Modules: [`redis_server`] (private Redis servers and clusters); the rest is here.

pub mod redis_server;

pub use redis_server::{OwnRedis, RedisCluster};

use gim_proto::logic::v1::RegisterDeviceReq;
use gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The test MariaDB (`GIM_TEST_MYSQL_URL` overrides).
pub fn mysql_url() -> String {
    std::env::var("GIM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://gim:gim@127.0.0.1:3306/gim_test".into())
}

/// Database `db` of the shared test Redis (`GIM_TEST_REDIS_URL` overrides the server; its db
/// suffix is replaced). The node registry is global per db, so each crate whose tests register
/// nodes keeps its own db: common 11, logic 7, conn 9, operator 13, the end-to-end suite 0 (the
/// CLI 5, which registers none).
pub fn redis_url(db: u32) -> String {
    let base = std::env::var("GIM_TEST_REDIS_URL").unwrap_or("redis://127.0.0.1:6379/".into());
    with_db(&base, db)
}

fn with_db(url: &str, db: u32) -> String {
    let base = url.trim_end_matches('/');
    let base = match base.rsplit_once('/') {
        Some((head, d)) if d.parse::<u32>().is_ok() && !head.ends_with('/') => head,
        _ => base,
    };
    format!("{base}/{db}")
}

/// Logging for tests (`RUST_LOG` to see more) and ring as the rustls provider (sqlx and tonic
/// build TLS configs; two providers would panic). Idempotent.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// 64 random bits, for names and ids no other run uses.
pub fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("OS randomness");
    u64::from_le_bytes(b)
}

/// A name no other test (in this run or a concurrent one) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand_u64())
}

/// A port free right now on 127.0.0.1 (for servers that cannot be given port 0).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` every 20 ms until it returns Some; panics naming `what` after `within`.
pub async fn eventually_within<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually_within`] 10 s.
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(10), what, f).await
}

/// GET `path` over a fresh connection (HTTP/1.0, no client library): status and body.
pub async fn http_get(
    addr: impl tokio::net::ToSocketAddrs + std::fmt::Debug,
    path: &str,
) -> (u16, String) {
    http(addr, "GET", path, &[], b"").await
}

/// One request over a fresh connection (HTTP/1.0, no client library): status and body.
/// `headers` are `(name, value)`; a non-empty `body` gets its `Content-Length`.
pub async fn http(
    addr: impl tokio::net::ToSocketAddrs + std::fmt::Debug,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect {addr:?}: {e}"),
    };
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: x\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.expect("write request");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read response");
    // 0 when the server closed without an answer (a pod still starting).
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Registers a device of `app_id` through `LogicClientExt` and returns its id.
pub async fn register_device(
    client: &mut LogicClientExtClient<tonic::transport::Channel>,
    app_id: i64,
) -> i64 {
    client
        .register_device(RegisterDeviceReq {
            app_id,
            r#type: 1,
            brand: "b".into(),
            model: "m".into(),
            system_version: "1".into(),
            sdk_version: "1".into(),
        })
        .await
        .expect("register device")
        .into_inner()
        .device_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_db_replaces_the_db_of_the_override() {
        assert_eq!(with_db("redis://h:1/", 9), "redis://h:1/9");
        assert_eq!(with_db("redis://h:1", 9), "redis://h:1/9");
        assert_eq!(with_db("redis://h:1/3", 9), "redis://h:1/9");
        assert_eq!(with_db("redis://:pw@h:1/3/", 7), "redis://:pw@h:1/7");
    }
}
