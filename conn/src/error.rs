//! The crate's one error type: what can stop `start` or the drained exit.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("conn.{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("conn.logic_url: {0}")]
    LogicUrl(String),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Config(#[from] gim_common::config::ConfigError),
    #[error("grpc reflection: {0}")]
    Reflection(String),
    #[error("{what} server failed: {reason}")]
    Serve { what: &'static str, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
