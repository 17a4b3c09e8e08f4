//! Where a client connects: `tcp://host:port` (or bare `host:port`) for the framed TCP protocol,
//! `ws://host:port/path` for WebSocket.

use crate::ClientError;
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port` of a conn node's TCP listener.
    Tcp(String),
    /// Full `ws://` URL of a conn node's WebSocket endpoint (path included, usually `/ws`).
    Ws(String),
}

impl Endpoint {
    /// `host:port` to open the TCP connection to.
    pub fn authority(&self) -> &str {
        match self {
            Endpoint::Tcp(a) => a,
            Endpoint::Ws(url) => {
                let rest = url.trim_start_matches("ws://");
                rest.split('/').next().unwrap_or(rest)
            }
        }
    }
}

impl FromStr for Endpoint {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        let s = s.trim();
        let bad = || ClientError::Endpoint(s.to_string());
        let ep = if let Some(rest) = s.strip_prefix("tcp://") {
            Endpoint::Tcp(rest.trim_end_matches('/').to_string())
        } else if let Some(rest) = s.strip_prefix("ws://") {
            if rest.contains('/') {
                Endpoint::Ws(s.to_string())
            } else {
                Endpoint::Ws(format!("{s}/ws"))
            }
        } else if s.contains("://") {
            return Err(bad());
        } else {
            Endpoint::Tcp(s.to_string())
        };
        let auth = ep.authority();
        match auth.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(ep),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Ws(u) => f.write_str(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_transports() {
        let e: Endpoint = "tcp://127.0.0.1:8080".parse().unwrap();
        assert_eq!(e, Endpoint::Tcp("127.0.0.1:8080".into()));
        let e: Endpoint = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(e.to_string(), "tcp://127.0.0.1:8080");
        let e: Endpoint = "ws://127.0.0.1:8081".parse().unwrap();
        assert_eq!(e, Endpoint::Ws("ws://127.0.0.1:8081/ws".into()));
        assert_eq!(e.authority(), "127.0.0.1:8081");
        let e: Endpoint = "ws://localhost:8081/ws?x=1".parse().unwrap();
        assert_eq!(e.authority(), "localhost:8081");
    }

    #[test]
    fn rejects_garbage() {
        for s in ["http://a:1", "tcp://nohost", "ws://a:port/ws", ":80", ""] {
            assert!(s.parse::<Endpoint>().is_err(), "{s}");
        }
    }
}
