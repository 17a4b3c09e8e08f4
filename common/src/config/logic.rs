//! Config of `gim-logic`. Owned by the logic crate's needs; lives here so the operator can render it.

use super::{
    ConfigError, InternalConfig, LogConfig, MysqlConfig, RedisConfig, SecretString, Validate,
    check_positive,
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
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`, and the admin API (`POST /apps`) that
    /// needs `admin_token`. Loopback by default.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API on `admin_listen` (at least 16 visible ASCII characters),
    /// e.g. from `GIM_LOGIC__ADMIN_TOKEN`. Empty, with no `admin_token_file`: the admin API
    /// refuses every call. Never written out.
    #[serde(skip_serializing_if = "SecretString::is_empty")]
    pub admin_token: SecretString,
    /// A file holding the admin token (surrounding whitespace ignored), read at start. Empty =
    /// none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub admin_token_file: String,
    /// Messages per sync page when the caller asks for none; the page is also cut so that it
    /// never exceeds one 65 535-byte frame.
    pub sync_page_size: u32,
    /// Largest encoded message body accepted (1006 above it).
    pub max_body_bytes: usize,
    /// Most @-mentions in one message.
    pub max_mentions: usize,
    /// Seqs reserved in MySQL per block (fewer MySQL writes vs. larger gaps after a Redis flush).
    pub seq_block_size: i64,
    /// Read receipts (MARK_READ) go to the senders of a normal group's messages only in groups
    /// of at most this many members (1:1 always, large groups never; `app.read_receipts = 0`
    /// turns them off for an app). 0: 1:1 only.
    pub receipt_group_max: u32,
    /// Messages one user may send per second, sustained, in an app that set no limit of its own
    /// (`SetAppLimits`, `gim-logic app limits`); client sends only. Above it a send gets 1011
    /// with the wait before the next one fits. 0: no limit.
    pub send_per_sec: u32,
    /// Sends one user may make at once above `send_per_sec`, in an app that set none (at least
    /// 1 when `send_per_sec` is set).
    pub send_burst: u32,
}

impl Default for LogicSection {
    fn default() -> Self {
        Self {
            int_listen: ([127, 0, 0, 1], 50000).into(),
            client_listen: ([0, 0, 0, 0], 50001).into(),
            server_listen: ([0, 0, 0, 0], 50002).into(),
            admin_listen: ([127, 0, 0, 1], 9100).into(),
            admin_token: SecretString::default(),
            admin_token_file: String::new(),
            sync_page_size: 100,
            max_body_bytes: 16 * 1024,
            max_mentions: 100,
            seq_block_size: 1000,
            receipt_group_max: 100,
            send_per_sec: 20,
            send_burst: 100,
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
        if !l.admin_token.is_empty() && !l.admin_token_file.is_empty() {
            return Err(ConfigError::new(
                "logic.admin_token",
                "set either logic.admin_token or logic.admin_token_file, not both",
            ));
        }
        if !l.admin_token.is_empty() {
            crate::internal::check_secret(l.admin_token.expose())
                .map_err(|r| ConfigError::new("logic.admin_token", r))?;
        }
        check_positive("logic.sync_page_size", l.sync_page_size.into())?;
        check_positive("logic.max_body_bytes", l.max_body_bytes as u64)?;
        if l.max_body_bytes > 60 * 1024 {
            return Err(ConfigError::new(
                "logic.max_body_bytes",
                "must leave room for one message in a 65 535-byte frame (at most 61440)",
            ));
        }
        if l.send_per_sec > 1_000_000 {
            return Err(ConfigError::new(
                "logic.send_per_sec",
                "must be at most 1000000",
            ));
        }
        if l.send_per_sec > 0 && l.send_burst == 0 {
            return Err(ConfigError::new(
                "logic.send_burst",
                "must be at least 1 when logic.send_per_sec is set",
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
