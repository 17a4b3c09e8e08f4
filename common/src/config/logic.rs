//! Config of `gim-logic`. Owned by the logic crate's needs; lives here so the operator can render it.

use super::{
    ConfigError, InternalConfig, LogConfig, MysqlConfig, RedisConfig, Validate, check_positive,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogicConfig {
    pub log: LogConfig,
    pub mysql: MysqlConfig,
    pub redis: RedisConfig,
    pub internal: InternalConfig,
    pub logic: LogicSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogicSection {
    /// `LogicInt`, for conn nodes (internal network only; calls need `internal.secret`).
    /// Loopback by default: a deployment sets the pod address and the secret explicitly.
    pub int_listen: SocketAddr,
    /// `LogicClientExt`, for client apps.
    pub client_listen: SocketAddr,
    /// `LogicServerExt`, for tenants' business servers.
    pub server_listen: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`. Loopback by default.
    pub admin_listen: SocketAddr,
    /// Messages per sync page when the caller asks for none; the page is also cut so that it
    /// never exceeds one 65 535-byte frame.
    pub sync_page_size: u32,
    /// Largest encoded message body accepted (1006 above it).
    pub max_body_bytes: usize,
    /// Most @-mentions in one message.
    pub max_mentions: usize,
    /// Seqs reserved in MySQL per block (fewer MySQL writes vs. larger gaps after a Redis flush).
    pub seq_block_size: i64,
}

impl Default for LogicSection {
    fn default() -> Self {
        Self {
            int_listen: ([127, 0, 0, 1], 50000).into(),
            client_listen: ([0, 0, 0, 0], 50001).into(),
            server_listen: ([0, 0, 0, 0], 50002).into(),
            admin_listen: ([127, 0, 0, 1], 9100).into(),
            sync_page_size: 100,
            max_body_bytes: 16 * 1024,
            max_mentions: 100,
            seq_block_size: 1000,
        }
    }
}

impl Validate for LogicConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        self.mysql.validate()?;
        self.redis.validate()?;
        let l = &self.logic;
        self.internal
            .validate_for("logic.int_listen", l.int_listen)?;
        check_positive("logic.sync_page_size", l.sync_page_size.into())?;
        check_positive("logic.max_body_bytes", l.max_body_bytes as u64)?;
        if l.max_body_bytes > 60 * 1024 {
            return Err(ConfigError::new(
                "logic.max_body_bytes",
                "must leave room for one message in a 65 535-byte frame (at most 61440)",
            ));
        }
        if l.seq_block_size < 1 {
            return Err(ConfigError::new(
                "logic.seq_block_size",
                "must be at least 1",
            ));
        }
        let addrs = [
            ("logic.int_listen", l.int_listen),
            ("logic.client_listen", l.client_listen),
            ("logic.server_listen", l.server_listen),
            ("logic.admin_listen", l.admin_listen),
        ];
        for (i, (k, a)) in addrs.iter().enumerate() {
            if a.port() != 0 && addrs[..i].iter().any(|(_, b)| b == a) {
                return Err(ConfigError::new(
                    *k,
                    format!("{a} is used by another listener"),
                ));
            }
        }
        Ok(())
    }
}
