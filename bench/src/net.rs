//! Where connections come from and go to: several target nodes and, optionally, several
//! 127.0.0.x source addresses, chosen round-robin by connection index.
//!
//! By default nothing is bound before connecting: the kernel picks the source port at connect
//! time per destination. Its search steps through the even ports of the ephemeral range first
//! (14 116 of them by default), checking each against the established connections: once a
//! destination holds about that many connections from one source address, every further connect
//! scans the whole range. B1 (100 000 connections over six conn nodes, ~16 700 each) collapsed
//! there: at ~85 000 connections 83 % of the machine's CPU went to the generator's
//! `__inet_check_established` and sign-ins fell from 1 250/s to ~350/s.
//!
//! `--sources N` spreads connections over N source addresses, each bound with
//! `IP_BIND_ADDRESS_NO_PORT`: the bind picks only the address and the port is still chosen at
//! connect time per (source, destination) pair, so each pair's search stays short. (A plain bind
//! reserves a port across every destination: after a storm closed 100 000 connections each such
//! bind searched the TIME_WAIT-crowded port buckets, `inet_bind2_bucket_match_addr_any`, and the
//! next storm signed in ~530/s instead of ~3 900/s.)

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

/// Connects to `dst`, from `src` when given (the address bound first, the port left to connect).
pub async fn connect(src: Option<IpAddr>, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(src) = src {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::IpBindAddressNoPort, &true)
            .map_err(std::io::Error::from)?;
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

/// Runs an open-loop schedule on a dedicated OS thread: `tick(i, sched_us)` is called when event
/// `i` is due (`lead` from now, then `i / rate` apart), with its scheduled wall-clock time.
/// Returns the schedule's start (µs since the epoch) and how long the schedule took.
///
/// Why not `tokio::time::sleep_until`: tokio's timer runs on 1 ms ticks, rounds every deadline up
/// to the next tick and parks in `epoll_wait`, whose timeout is whole milliseconds, so a send left
/// 0-2 ms after its scheduled time. Latency counts from the scheduled time (open loop), so that
/// lag was charged to the server (B3's median at 500 msg/s on a loaded 2-core machine: 7.1 ms with
/// tokio's timer, 3.7 ms paced here; see bench/NOTES.md). A thread
/// sleeping on the kernel's high-resolution timer wakes within tens of microseconds. `tick` runs
/// on that thread, so it must not block for long (a `try_send`/`blocking_send` into a connection's
/// queue); a late tick delays the ones after it but never shifts their scheduled times.
pub async fn paced<F>(n: u64, rate: f64, lead: Duration, tick: F) -> (u64, Duration)
where
    F: FnMut(u64, u64) + Send + 'static,
{
    let mut tick = tick;
    // Wall clock first: a scheduled time may then read a few µs early, never late.
    let start_us = unix_us() + lead.as_micros() as u64;
    let start = std::time::Instant::now() + lead;
    let took = tokio::task::spawn_blocking(move || {
        for i in 0..n {
            let d = due(i, rate);
            let now = std::time::Instant::now();
            if start + d > now {
                std::thread::sleep(start + d - now);
            }
            tick(i, start_us + d.as_micros() as u64);
        }
        start.elapsed()
    })
    .await
    .unwrap_or_default();
    (start_us, took)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paced_calls_every_tick_in_order_on_schedule() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let lead = Duration::from_millis(5);
        let before = unix_us();
        let (start_us, took) = paced(20, 1000.0, lead, move |i, sched| {
            s.lock().unwrap().push((i, sched, unix_us()));
        })
        .await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 20);
        assert_eq!(seen[0].1, start_us);
        for (k, &(i, sched, at)) in seen.iter().enumerate() {
            assert_eq!(i, k as u64);
            // Scheduled 1 ms apart after the lead, and never called before its time.
            let want = before + 5_000 + 1_000 * i;
            assert!(
                sched.abs_diff(want) < 1_000,
                "tick {i}: sched {sched}, want ~{want}"
            );
            assert!(at >= sched, "tick {i} ran {} us early", sched - at);
        }
        assert!(took >= Duration::from_millis(19));
    }

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
