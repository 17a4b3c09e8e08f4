//! Client side of the broadcast baselines (`ws-baseline`, `bench/baselines/node`) and of the
//! NATS fan-out peer (P5): idle-connection memory (B1's baseline) and broadcast fan-out (B5's).
//!
//! The baselines' protocol ([`Proto::Raw`]): a binary frame sent by one client reaches every
//! other client. With [`Proto::Nats`] every receiver subscribes to one subject over nats-server's
//! WebSocket listener and the sender publishes to it. Payloads carry `[message index u64 LE]
//! [scheduled send time, unix µs, u64 LE][padding]`, 96 bytes in all, about the size of one gim
//! push.

use crate::hist::{Batch, Fanout};
use crate::nats::{self, Op};
use crate::net::{self, Spread, unix_us};
use crate::report::rss_kib;
use crate::wire::{Transport, Wire};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

const FRAME_LEN: usize = 96;

/// What the fan-out server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    /// A bare broadcast server: every frame goes to every other connection.
    Raw,
    /// nats-server's WebSocket listener, one subject.
    Nats,
}

/// One receiving (or sending) connection; NATS bytes go through a parser.
struct Conn {
    wire: Wire,
    nats: Option<nats::Parser>,
}

impl Conn {
    /// Connects; for NATS also subscribes (`subscribe`) and waits for the `PONG` that follows,
    /// so the subscription is in place before the first publish.
    async fn open(
        proto: Proto,
        src: Option<std::net::IpAddr>,
        dst: std::net::SocketAddr,
        sid: Option<u64>,
    ) -> anyhow::Result<Self> {
        let wire = Wire::connect(Transport::Ws, src, dst, "/").await?;
        let mut c = Conn {
            wire,
            nats: (proto == Proto::Nats).then(nats::Parser::default),
        };
        if proto == Proto::Nats {
            let hello = match sid {
                Some(sid) => nats::subscribe(sid),
                None => nats::connect_only(),
            };
            c.wire.send(hello).await?;
            loop {
                match c.recv().await? {
                    Some(Got::Pong) => break,
                    Some(_) => {}
                    None => anyhow::bail!("nats-server closed the connection during CONNECT"),
                }
            }
        }
        Ok(c)
    }

    /// The next payload (or NATS PONG); server PINGs are answered here. `None` when closed.
    /// Cancel-safe: bytes already read stay in the parser.
    async fn recv(&mut self) -> anyhow::Result<Option<Got>> {
        loop {
            if let Some(p) = &mut self.nats {
                match p.next_op()? {
                    Some(Op::Msg(b)) => return Ok(Some(Got::Payload(b))),
                    Some(Op::Ping) => {
                        self.wire.send(Bytes::from_static(nats::PONG)).await?;
                        continue;
                    }
                    Some(Op::Pong) => return Ok(Some(Got::Pong)),
                    Some(Op::Err(e)) => anyhow::bail!("nats-server: {e}"),
                    Some(Op::Info | Op::Ok) => continue,
                    None => {}
                }
            }
            let Some(b) = self.wire.recv().await? else {
                return Ok(None);
            };
            match &mut self.nats {
                Some(p) => p.feed(&b),
                None => return Ok(Some(Got::Payload(b))),
            }
        }
    }

    async fn send(&mut self, frame: Bytes) -> anyhow::Result<()> {
        match self.nats {
            Some(_) => self.wire.send(nats::publish(&frame)).await,
            None => self.wire.send(frame).await,
        }
    }
}

enum Got {
    Payload(Bytes),
    Pong,
}

async fn connect_all(
    proto: Proto,
    spread: &Spread,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Conn>> {
    let conns: Vec<anyhow::Result<Conn>> = futures::stream::iter(0..n)
        .map(|i| {
            let (src, dst) = spread.pick(i);
            async move { Conn::open(proto, src, dst, Some(i as u64 + 1)).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    conns.into_iter().collect()
}

/// Opens `conns` idle WebSocket connections (NATS: each subscribed) and reports the server's RSS
/// growth per connection.
pub async fn idle(
    proto: Proto,
    spread: Spread,
    server_pid: u32,
    conns: usize,
) -> anyhow::Result<Value> {
    let before = rss_kib(server_pid)?;
    let started = Instant::now();
    let wires = connect_all(proto, &spread, conns, 256).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the server finish whatever it does per accepted connection before sampling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server_pid)?;
    drop(wires);
    let per_conn = (after.saturating_sub(before)) as f64 / conns.max(1) as f64;
    Ok(json!({
        "conns": conns,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": per_conn,
        "connect_secs": connect_secs,
    }))
}

/// `conns` receivers and one sender that sends `rate` frames per second for `secs` seconds on a
/// fixed schedule; every receiver records each frame's latency from its scheduled send time.
pub async fn fanout(
    proto: Proto,
    spread: Spread,
    conns: usize,
    rate: f64,
    secs: f64,
    cpu: &[(String, u32)],
) -> anyhow::Result<Value> {
    let messages = (rate * secs).round().max(1.0) as usize;
    let track = Arc::new(Fanout::new(messages));
    let (stop_tx, stop_rx) = watch::channel(false);
    let wires = connect_all(proto, &spread, conns, 256).await?;
    let mut tasks = Vec::with_capacity(conns);
    for mut w in wires {
        let track = track.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut batch = Batch::default();
            let mut strays = 0u64;
            loop {
                tokio::select! {
                    f = w.recv() => match f {
                        Ok(Some(Got::Payload(b))) if b.len() >= 16 => {
                            let now = unix_us();
                            let idx = u64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as usize;
                            let sched = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                            let lat = now.saturating_sub(sched);
                            if track.delivered(idx, lat, now) {
                                batch.push(lat, &track.deliveries);
                            } else {
                                strays += 1;
                            }
                        }
                        Ok(Some(_)) => strays += 1,
                        Ok(None) | Err(_) => break,
                    },
                    _ = stop.changed() => break,
                }
            }
            batch.flush(&track.deliveries);
            strays
        }));
    }
    let (src, dst) = spread.pick(conns);
    let mut sender = Conn::open(proto, src, dst, None).await?;
    // The server subscribes a connection right after its handshake; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let probe = crate::cpu::Probe::start(cpu);
    // The same paced schedule as gim's scenarios (`net::paced`): the sender task gets each frame
    // at its due time. The queue holds the whole run, so a slow socket delays frames (counted as
    // latency from their scheduled time) and never blocks the schedule.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(messages.max(1));
    let send_task = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            sender.send(f).await?;
        }
        anyhow::Ok(sender)
    });
    let (start_us, _) = net::paced(
        messages as u64,
        rate,
        Duration::from_millis(200),
        move |i, sched| {
            let _ = tx.try_send(frame(i, sched));
        },
    )
    .await;
    let sender = send_task.await??;
    let expected = (messages * conns) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while track.total() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = probe.finish(track.total(), "delivery");
    let _ = stop_tx.send(true);
    let mut strays = 0;
    for t in tasks {
        strays += t.await.unwrap_or_default();
    }
    sender.wire.close().await;

    let delivered = track.total();
    let last = track
        .last_delivery_us
        .load(std::sync::atomic::Ordering::Relaxed);
    let span = (last.saturating_sub(start_us)) as f64 / 1e6;
    let deliveries = track.deliveries.lock().expect("lock").summary();
    Ok(json!({
        "conns": conns,
        "offered_msgs_per_s": rate,
        "secs": secs,
        "messages": messages,
        "expected_deliveries": expected,
        "delivered": delivered,
        "stray_frames": strays,
        "deliveries_per_s": if span > 0.0 { delivered as f64 / span } else { 0.0 },
        "delivery": deliveries,
        "last_recipient": track.last_recipient().summary(),
        "cpu": cpu,
        // Not a correctness check (a bare broadcast server has no such promise): whether every
        // receiver got every frame, e.g. false when nats-server cut a slow consumer.
        "complete": delivered == expected,
    }))
}

fn frame(idx: u64, sched_us: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(FRAME_LEN);
    b.put_u64_le(idx);
    b.put_u64_le(sched_us);
    b.resize(FRAME_LEN, 0);
    b.freeze()
}

/// The baselines listen on one address; connections still spread over `sources` source addresses.
pub fn spread_to(target: std::net::SocketAddr, sources: u8) -> Spread {
    Spread {
        sources: net::sources(10, sources),
        targets: vec![target],
    }
}
