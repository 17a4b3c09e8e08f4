//! gim's end-to-end harness: starts gim-logic and several gim-conn nodes in-process (port 0, real
//! MariaDB and Redis), or conn nodes as child processes for the `kill -9` fault run, plus a private
//! `redis-server` for the Redis restart run (`gim_test_support::OwnRedis`). Every test creates its
//! own app (tenant), so tests share the databases without seeing each other. The scenarios live
//! in `tests/`.
//!
//! Modules: [`cluster`] (logic, conn nodes, child processes, private Redis), [`app`] (a tenant with
//! users, devices and SDK clients), [`check`] (the strict no-loss check).

pub mod app;
pub mod check;
pub mod cluster;

pub use app::{TestApp, TestClient};
pub use check::{assert_exactly_once_in_order, text_of};
pub use cluster::{ChildConn, Cluster, Conn, Logic};
pub use gim_test_support::{OwnRedis, init, mysql_url, unique};

use std::time::Duration;

/// How long a test waits for something that should happen (deliveries, reconnects). Generous:
/// the CI machine is shared; a passing run takes a small fraction of it.
pub const WAIT: Duration = Duration::from_secs(30);

/// The shared Redis, db 0 (`GIM_TEST_REDIS_URL` overrides the server). Tests that restart Redis
/// use an [`OwnRedis`] instead.
pub fn redis_url() -> String {
    gim_test_support::redis_url(0)
}
