//! Config of `gim-conn`. Lives here so the operator can render it.

use super::{
    ConfigError, InternalConfig, LogConfig, RedisConfig, Validate, check_positive, check_url,
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConnConfig {
    pub log: LogConfig,
    pub redis: RedisConfig,
    pub internal: InternalConfig,
    pub conn: ConnSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnSection {
    /// Prefix of the node id in the registry; a random suffix is added per process start so a
    /// restarted node never matches its predecessor's stale routes. Empty = the host name.
    pub node_name: String,
    /// TCP long connections (2-byte length-prefixed frames).
    pub tcp_listen: SocketAddr,
    /// WebSocket long connections at `/ws`.
    pub ws_listen: SocketAddr,
    /// `ConnInt` gRPC, called by logic (calls need `internal.secret`). Loopback by default: a
    /// deployment sets the pod address and the secret explicitly.
    pub grpc_listen: SocketAddr,
    /// The `ConnInt` address logic should dial, as registered in Redis (`host:port`). Empty = the
    /// grpc_listen address, with 0.0.0.0 replaced by 127.0.0.1.
    pub advertise_addr: String,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`. Loopback by default.
    pub admin_listen: SocketAddr,
    /// `LogicInt` endpoint, e.g. `http://127.0.0.1:50000`.
    pub logic_url: String,
    /// A connection that has not signed in by then is closed.
    pub sign_in_timeout_ms: u64,
    /// TCP connection idle timeout (no inbound bytes); the original used 11 minutes.
    pub tcp_idle_timeout_secs: u64,
    /// WebSocket idle timeout; the original used 12 minutes.
    pub ws_idle_timeout_secs: u64,
    /// Largest inbound frame/message; at most 65 535.
    pub max_frame_len: usize,
    /// Signed-in connections beyond this are refused (a new connection when the node is full,
    /// or its sign-in when the node filled while it was signing in).
    pub max_connections: usize,
    /// Connections not signed in yet (WebSocket upgrade or sign-in in progress) beyond this are
    /// refused. A separate pool: clients that connect and stall hold none of
    /// `max_connections`, and each holds at most `pre_sign_in_max_frame` bytes of input, for at
    /// most `sign_in_timeout_ms` from accept. 0 = the same as `max_connections`.
    pub max_pending_connections: usize,
    /// Largest inbound frame (TCP) or WebSocket message before sign-in, in bytes: a SIGN_IN
    /// envelope with its token needs well under 2 KiB. Between 64 and `max_frame_len`.
    pub pre_sign_in_max_frame: usize,
    /// Frames queued for one connection; a client that lets it fill is closed.
    pub outbound_queue: usize,
    /// On SIGTERM, clients are told to reconnect and closed over this window.
    pub drain_window_secs: u64,
    /// Registry lease; renewed every third of it.
    pub lease_secs: u64,
    /// Runtime worker threads; 0 = one per CPU this process may use (its cgroup quota
    /// included). Set it when several conn nodes share a few cores: each wakeup then stays on
    /// its node's own thread instead of waking a sibling thread to steal it.
    pub worker_threads: usize,
    /// A large group that sends faster than one message per this window has the messages after
    /// the first held and fanned out together at the window's end: one write per member for
    /// several messages instead of one each. A quieter group's messages go out at once. 0 = off.
    pub large_group_window_ms: u64,
}

impl Default for ConnSection {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            tcp_listen: ([0, 0, 0, 0], 8080).into(),
            ws_listen: ([0, 0, 0, 0], 8081).into(),
            grpc_listen: ([127, 0, 0, 1], 50100).into(),
            advertise_addr: String::new(),
            admin_listen: ([127, 0, 0, 1], 9200).into(),
            logic_url: "http://127.0.0.1:50000".into(),
            sign_in_timeout_ms: 10_000,
            tcp_idle_timeout_secs: 660,
            ws_idle_timeout_secs: 720,
            max_frame_len: 65_535,
            max_connections: 19_000,
            max_pending_connections: 0,
            pre_sign_in_max_frame: 4096,
            outbound_queue: 256,
            drain_window_secs: 10,
            lease_secs: 15,
            worker_threads: 0,
            large_group_window_ms: 100,
        }
    }
}

impl Validate for ConnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.log.validate()?;
        self.redis.validate()?;
        let c = &self.conn;
        self.internal
            .validate_for("conn.grpc_listen", c.grpc_listen)?;
        check_url("conn.logic_url", &c.logic_url, &["http", "https"])?;
        check_positive("conn.sign_in_timeout_ms", c.sign_in_timeout_ms)?;
        check_positive("conn.tcp_idle_timeout_secs", c.tcp_idle_timeout_secs)?;
        check_positive("conn.ws_idle_timeout_secs", c.ws_idle_timeout_secs)?;
        check_positive("conn.max_connections", c.max_connections as u64)?;
        check_positive("conn.outbound_queue", c.outbound_queue as u64)?;
        if !(64..=65_535).contains(&c.max_frame_len) {
            return Err(ConfigError::new(
                "conn.max_frame_len",
                "must be between 64 and 65535",
            ));
        }
        if !(64..=c.max_frame_len).contains(&c.pre_sign_in_max_frame) {
            return Err(ConfigError::new(
                "conn.pre_sign_in_max_frame",
                "must be between 64 and conn.max_frame_len",
            ));
        }
        if c.worker_threads > 1024 {
            return Err(ConfigError::new(
                "conn.worker_threads",
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if c.large_group_window_ms > 1000 {
            return Err(ConfigError::new(
                "conn.large_group_window_ms",
                "must be at most 1000 (0 = off)",
            ));
        }
        if c.lease_secs < 3 {
            return Err(ConfigError::new("conn.lease_secs", "must be at least 3"));
        }
        if !c.advertise_addr.is_empty() && !c.advertise_addr.contains(':') {
            return Err(ConfigError::new(
                "conn.advertise_addr",
                format!("expected host:port, got {:?}", c.advertise_addr),
            ));
        }
        Ok(())
    }
}

impl ConnSection {
    /// The pre-sign-in connection pool's size (`max_pending_connections`, 0 = `max_connections`).
    pub fn pending_limit(&self) -> usize {
        if self.max_pending_connections == 0 {
            self.max_connections
        } else {
            self.max_pending_connections
        }
    }

    /// The address registered for logic to dial.
    pub fn advertised(&self) -> String {
        if !self.advertise_addr.is_empty() {
            return self.advertise_addr.clone();
        }
        let mut a = self.grpc_listen;
        if a.ip().is_unspecified() {
            a.set_ip([127, 0, 0, 1].into());
        }
        a.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_defaults_to_loopback_for_wildcard_listen() {
        let c = ConnSection::default();
        assert_eq!(c.advertised(), "127.0.0.1:50100");
        let c = ConnSection {
            advertise_addr: "conn-0.gim:50100".into(),
            ..Default::default()
        };
        assert_eq!(c.advertised(), "conn-0.gim:50100");
    }

    #[test]
    fn frame_limit_is_checked() {
        let cfg = ConnConfig {
            conn: ConnSection {
                max_frame_len: 70_000,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(cfg.validate().unwrap_err().key, "conn.max_frame_len");
    }

    #[test]
    fn pre_sign_in_frame_limit_is_checked() {
        let with = |n| ConnConfig {
            conn: ConnSection {
                pre_sign_in_max_frame: n,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(with(4096).validate().is_ok());
        assert!(with(65_535).validate().is_ok());
        for bad in [0, 63, 65_536] {
            assert_eq!(
                with(bad).validate().unwrap_err().key,
                "conn.pre_sign_in_max_frame"
            );
        }
    }

    #[test]
    fn worker_threads_are_bounded() {
        let with = |n| ConnConfig {
            conn: ConnSection {
                worker_threads: n,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(with(0).validate().is_ok());
        assert!(with(4).validate().is_ok());
        assert_eq!(
            with(100_000).validate().unwrap_err().key,
            "conn.worker_threads"
        );
    }

    #[test]
    fn large_group_window_is_bounded() {
        let with = |ms| ConnConfig {
            conn: ConnSection {
                large_group_window_ms: ms,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(with(0).validate().is_ok());
        assert!(with(1000).validate().is_ok());
        assert_eq!(
            with(5000).validate().unwrap_err().key,
            "conn.large_group_window_ms"
        );
    }
}
