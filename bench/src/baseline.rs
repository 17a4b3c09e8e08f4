//! Client side of the broadcast baselines (`ws-baseline`, `bench/baselines/node`): idle-connection
//! memory (B1's baseline) and broadcast fan-out (B5's baseline).
//!
//! The baselines' protocol: a binary frame sent by one client reaches every other client. Frames
//! here carry `[message index u64 LE][scheduled send time, unix µs, u64 LE][padding]`, 96 bytes in
//! all, about the size of one gim push.

use crate::hist::{Batch, Fanout};
use crate::net::{self, Spread, due, unix_us};
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

async fn connect_all(spread: &Spread, n: usize, concurrency: usize) -> anyhow::Result<Vec<Wire>> {
    let wires: Vec<anyhow::Result<Wire>> = futures::stream::iter(0..n)
        .map(|i| {
            let (src, dst) = spread.pick(i);
            async move { Wire::connect(Transport::Ws, src, dst, "/").await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    wires.into_iter().collect()
}

/// Opens `conns` idle WebSocket connections and reports the server's RSS growth per connection.
pub async fn idle(spread: Spread, server_pid: u32, conns: usize) -> anyhow::Result<Value> {
    let before = rss_kib(server_pid)?;
    let started = Instant::now();
    let wires = connect_all(&spread, conns, 256).await?;
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
pub async fn fanout(spread: Spread, conns: usize, rate: f64, secs: f64) -> anyhow::Result<Value> {
    let messages = (rate * secs).round().max(1.0) as usize;
    let track = Arc::new(Fanout::new(messages));
    let (stop_tx, stop_rx) = watch::channel(false);
    let wires = connect_all(&spread, conns, 256).await?;
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
                        Ok(Some(b)) if b.len() >= 16 => {
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
    let mut sender = Wire::connect(Transport::Ws, src, dst, "/").await?;
    // The server subscribes a connection right after its handshake; give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let start = Instant::now();
    let start_us = unix_us();
    for i in 0..messages {
        let d = due(i as u64, rate);
        tokio::time::sleep_until(start + d).await;
        sender
            .send(frame(i as u64, start_us + d.as_micros() as u64))
            .await?;
    }
    let expected = (messages * conns) as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    while track.total() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut strays = 0;
    for t in tasks {
        strays += t.await.unwrap_or_default();
    }
    sender.close().await;

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
