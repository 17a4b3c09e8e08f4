//! What two or more gim crates need and nothing more: id newtypes, the business error codes and
//! their gRPC mapping, layered config loading with the config types of conn and logic, tracing
//! setup, shutdown signals, app tokens, the Redis key names that conn, logic and the operator
//! must agree on, the authentication of the internal APIs between conn and logic, and (feature
//! `redis`) the one Redis handle and node-registry reader they share.
//!
//! Modules: [`ids`], [`error`], [`config`], [`telemetry`], [`shutdown`], [`token`], [`keys`],
//! [`internal`], [`reflection`], `rds` and `registry` (feature `redis`).

pub mod config;
pub mod error;
pub mod ids;
pub mod internal;
pub mod keys;
#[cfg(feature = "redis")]
pub mod rds;
pub mod reflection;
#[cfg(feature = "redis")]
pub mod registry;
pub mod shutdown;
pub mod telemetry;
pub mod token;

pub use error::{GimCode, GimError};
pub use ids::{AppId, ConnId, DeviceId, GroupId, MessageId, Seq, UserId};

/// gRPC metadata key carrying the trace id that joins conn's and logic's log lines for one request.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Milliseconds since the Unix epoch, the unit of every timestamp on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
