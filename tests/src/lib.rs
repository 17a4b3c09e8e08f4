//! gim's end-to-end harness: starts gim-logic and several gim-conn nodes in-process (port 0, real
//! MariaDB and Redis), or conn nodes as child processes for the `kill -9` fault run, plus a private
//! `redis-server` for the Redis restart run. Every test creates its own app (tenant), so tests share
//! the databases without seeing each other. The scenarios live in `tests/`.
//!
//! Modules: [`cluster`] (logic, conn nodes, child processes, private Redis), [`app`] (a tenant with
//! users, devices and SDK clients), [`check`] (the strict no-loss check).

pub mod app;
pub mod check;
pub mod cluster;

pub use app::{TestApp, TestClient};
pub use check::{assert_exactly_once_in_order, text_of};
pub use cluster::{ChildConn, Cluster, Conn, Logic, PrivateRedis};

use std::time::Duration;

/// How long a test waits for something that should happen (deliveries, reconnects). Generous:
/// the CI machine is shared; a passing run takes a small fraction of it.
pub const WAIT: Duration = Duration::from_secs(30);

/// MariaDB used by the tests (`GIM_TEST_MYSQL_URL` overrides).
pub fn mysql_url() -> String {
    std::env::var("GIM_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://gim:gim@127.0.0.1:3306/gim_test".into())
}

/// The shared Redis (`GIM_TEST_REDIS_URL` overrides). Tests that restart Redis use a
/// [`PrivateRedis`] instead.
pub fn redis_url() -> String {
    std::env::var("GIM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// Logging for tests (`RUST_LOG` to see more) and the TLS provider sqlx needs; idempotent.
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

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
