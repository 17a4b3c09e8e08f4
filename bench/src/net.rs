//! Where connections come from and go to: several target nodes and, optionally, several
//! 127.0.0.x source addresses, chosen round-robin by connection index.
//!
//! By default nothing is bound before connecting: the kernel picks the source port at connect
//! time per destination (about 28 000 connections per conn node) and reuses TIME_WAIT pairs on
//! loopback. A bind to a source address reserves a port across every destination, and after a
//! storm closed 100 000 connections each bind searched the TIME_WAIT-crowded port buckets: the
//! generator spent its CPU in the kernel's `inet_bind2_bucket_match_addr_any` and the next storm
//! signed in ~530/s instead of ~3 900/s. `--sources N` still binds, for more connections per node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpSocket, TcpStream};

/// `count` loopback source addresses starting at 127.0.0.`first`.
/// None for `count` 0 (the kernel picks the source).
pub fn sources(first: u8, count: u8) -> Vec<IpAddr> {
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, first.saturating_add(i))))
        .collect()
}

/// Parses `host:port,host:port`; only loopback targets are accepted (benchmarks stay on this host).
pub fn parse_targets(s: &str) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let a: SocketAddr = part
            .parse()
            .map_err(|e| anyhow::anyhow!("target {part:?}: {e}"))?;
        anyhow::ensure!(a.ip().is_loopback(), "target {a} is not a loopback address");
        out.push(a);
    }
    anyhow::ensure!(!out.is_empty(), "no targets given");
    Ok(out)
}

/// Connection `i`'s source and target.
#[derive(Debug, Clone)]
pub struct Spread {
    pub sources: Vec<IpAddr>,
    pub targets: Vec<SocketAddr>,
}

impl Spread {
    /// (source to bind, if any; target). Any `sources * targets` consecutive connections use every
    /// (source, target) pair once.
    pub fn pick(&self, i: usize) -> (Option<IpAddr>, SocketAddr) {
        if self.sources.is_empty() {
            return (None, self.targets[i % self.targets.len()]);
        }
        (
            Some(self.sources[i % self.sources.len()]),
            self.targets[(i / self.sources.len()) % self.targets.len()],
        )
    }
}

/// Connects to `dst`, from `src` when given (bound first: that address's own port range).
pub async fn connect(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(src) = src {
        sock.bind(SocketAddr::new(src, 0))?;
    }
    let stream = sock.connect(dst).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Wall-clock microseconds: the timestamp carried in message bodies, comparable across the
/// generator's processes on this host.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Open-loop schedule: event `i` of a run at `rate` per second is due `i / rate` after start.
pub fn due(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate.max(0.001))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_every_pair() {
        let s = Spread {
            sources: sources(10, 3),
            targets: parse_targets("127.0.0.1:1,127.0.0.1:2").unwrap(),
        };
        let pairs: std::collections::HashSet<_> = (0..12).map(|i| s.pick(i)).collect();
        assert_eq!(pairs.len(), 6);
        let unbound = Spread {
            sources: sources(10, 0),
            targets: s.targets.clone(),
        };
        assert_eq!(unbound.pick(3), (None, s.targets[1]));
    }

    #[test]
    fn rejects_non_loopback_targets() {
        assert!(parse_targets("10.0.0.1:80").is_err());
    }
}
