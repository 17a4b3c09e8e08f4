//! Connection storms across several processes (one process may hold ~18 000 sockets): B1 (idle
//! signed-in connections with heartbeats), B2 (connect + sign-in storm) and B6b (reconnect and
//! sync storm).
//!
//! The coordinator ([`coordinate`]) starts `procs` copies of this binary (`gim-bench worker ...`),
//! each taking every `procs`-th connection of one shared open-loop schedule that starts at an
//! agreed wall-clock time. A worker prints `READY <json>` once its connections are up, then (when
//! holding) heartbeats until it reads `STOP` on stdin, and ends with `RESULT <json>`.

use crate::fixture::Fixture;
use crate::gim::{self, Other};
use crate::hist::Hist;
use crate::net::{Spread, due, unix_us};
use crate::report::rss_kib;
use crate::wire::{Transport, Wire};
use gim_proto::connect::v1::PackageType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

/// B6b's expectation: user index -> seq after which `per_user` messages of run `tag` wait.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncExpect {
    pub tag: u32,
    pub per_user: usize,
    pub base: HashMap<usize, i64>,
}

#[derive(Debug, Clone)]
pub struct StormSpec {
    pub fixture: PathBuf,
    pub first_user: usize,
    pub conns: usize,
    /// Offered connects per second over the whole storm (all workers).
    pub rate: f64,
    pub hold_secs: f64,
    pub heartbeat_secs: f64,
    pub spread: Spread,
    pub transport: Transport,
    pub expect: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
    sync_bad: AtomicU64,
    hb_sent: AtomicU64,
    hb_ok: AtomicU64,
    dropped: AtomicU64,
    last_signed_in_us: AtomicU64,
    /// Scheduled time -> this process starting the connect: the generator's own lag, which every
    /// later figure includes (open loop).
    lag: Mutex<Hist>,
    /// Scheduled time -> TCP (and WebSocket) connection established.
    connected: Mutex<Hist>,
    signin: Mutex<Hist>,
    synced: Mutex<Hist>,
    first_error: OnceLock<String>,
}

/// A worker process: connections `n` of the storm with `n % shards == shard`.
pub async fn worker(
    spec: StormSpec,
    shard: usize,
    shards: usize,
    start_us: u64,
) -> anyhow::Result<()> {
    let fx = Arc::new(Fixture::load(&spec.fixture)?);
    let key = fx.key()?;
    let expect: Option<Arc<SyncExpect>> = match &spec.expect {
        Some(p) => Some(Arc::new(serde_json::from_str(&std::fs::read_to_string(
            p,
        )?)?)),
        None => None,
    };
    anyhow::ensure!(
        spec.first_user + spec.conns <= fx.users.len(),
        "fixture has {} users, storm needs {}",
        fx.users.len(),
        spec.first_user + spec.conns
    );
    let stats = Arc::new(Stats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mine: Vec<usize> = (0..spec.conns).filter(|n| n % shards == shard).collect();
    // Tokens are minted before the clock starts: signing is the business server's cost, not gim's.
    let ids: Vec<_> = mine
        .iter()
        .map(|&n| fx.identity(&key, spec.first_user + n))
        .collect();
    let start_wall = unix_us();
    let start =
        tokio::time::Instant::now() + Duration::from_micros(start_us.saturating_sub(start_wall));
    let mut tasks = Vec::with_capacity(mine.len());
    for (&n, id) in mine.iter().zip(ids) {
        let d = due(n as u64, spec.rate);
        tokio::time::sleep_until(start + d).await;
        let sched_us = start_us + d.as_micros() as u64;
        let (src, dst) = spec.spread.pick(n);
        let stats = stats.clone();
        let stop = stop_rx.clone();
        let expect = expect.clone();
        let user_idx = spec.first_user + n;
        let transport = spec.transport;
        let hold = spec.hold_secs > 0.0;
        let hb = Duration::from_secs_f64(spec.heartbeat_secs.max(0.1));
        tasks.push(tokio::spawn(async move {
            let r = one(
                transport,
                src,
                dst,
                &id,
                sched_us,
                user_idx,
                expect.as_deref(),
                &stats,
            )
            .await;
            match r {
                Ok(wire) => {
                    stats.ok.fetch_add(1, Relaxed);
                    if hold {
                        heartbeat(wire, hb, stop, &stats).await;
                    } else {
                        wire.close().await;
                    }
                }
                Err(e) => {
                    stats.failed.fetch_add(1, Relaxed);
                    let _ = stats.first_error.set(e.to_string());
                }
            }
        }));
    }
    // Ready once every connection has either signed in (and synced) or failed.
    let total = mine.len() as u64;
    while stats.ok.load(Relaxed) + stats.failed.load(Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "READY {}",
        json!({"ok": stats.ok.load(Relaxed), "failed": stats.failed.load(Relaxed)})
    );
    if spec.hold_secs > 0.0 {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if l.trim() == "STOP" {
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let s = &stats;
    println!(
        "RESULT {}",
        json!({
            "ok": s.ok.load(Relaxed),
            "failed": s.failed.load(Relaxed),
            "sync_bad": s.sync_bad.load(Relaxed),
            "hb_sent": s.hb_sent.load(Relaxed),
            "hb_ok": s.hb_ok.load(Relaxed),
            "dropped": s.dropped.load(Relaxed),
            "last_signed_in_us": s.last_signed_in_us.load(Relaxed),
            "lag": s.lag.lock().expect("lock").to_b64(),
            "connected": s.connected.lock().expect("lock").to_b64(),
            "signin": s.signin.lock().expect("lock").to_b64(),
            "synced": s.synced.lock().expect("lock").to_b64(),
            "first_error": s.first_error.get(),
        })
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one(
    transport: Transport,
    src: Option<std::net::IpAddr>,
    dst: std::net::SocketAddr,
    id: &gim::Identity,
    sched_us: u64,
    user_idx: usize,
    expect: Option<&SyncExpect>,
    stats: &Stats,
) -> anyhow::Result<Wire> {
    let record = |h: &Mutex<Hist>| {
        h.lock()
            .expect("lock")
            .record_us(unix_us().saturating_sub(sched_us))
    };
    record(&stats.lag);
    let mut wire = Wire::connect(transport, src, dst, "/ws").await?;
    record(&stats.connected);
    gim::sign_in(&mut wire, id, 1, |_| {}).await?;
    let now = unix_us();
    stats.last_signed_in_us.fetch_max(now, Relaxed);
    stats
        .signin
        .lock()
        .expect("lock")
        .record_us(now.saturating_sub(sched_us));
    if let Some(x) = expect {
        let base = *x
            .base
            .get(&user_idx)
            .ok_or_else(|| anyhow::anyhow!("no sync base for user index {user_idx}"))?;
        let mut rid = 1;
        let items = gim::sync_all(&mut wire, base, &mut rid, |_| {}).await?;
        let got: Vec<u64> = items
            .iter()
            .filter_map(|m| gim::parse_body(x.tag, m).map(|(i, _)| i))
            .collect();
        let want: Vec<u64> = (0..x.per_user as u64).collect();
        if crate::scenario::compare(&want, &got) != (0, 0, 0) {
            stats.sync_bad.fetch_add(1, Relaxed);
        }
        stats
            .synced
            .lock()
            .expect("lock")
            .record_us(unix_us().saturating_sub(sched_us));
    }
    Ok(wire)
}

async fn heartbeat(
    mut wire: Wire,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    stats: &Stats,
) {
    // Spread the first beat over the interval so beats do not arrive in lockstep.
    let offset = every.mul_f64(rand::random::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                stats.hb_sent.fetch_add(1, Relaxed);
                if wire.send(gim::input(PackageType::Heartbeat, 0, ())).await.is_err() {
                    stats.dropped.fetch_add(1, Relaxed);
                    return;
                }
            }
            f = wire.recv() => match f.map(|o| o.map(|b| gim::output(&b))) {
                Ok(Some(Ok(out))) if out.r#type == PackageType::Heartbeat as i32 => {
                    stats.hb_ok.fetch_add(1, Relaxed);
                }
                Ok(Some(Ok(out))) => {
                    if let Err(e) = gim::classify(out).map(|o| matches!(o, Other::Push(_))) {
                        let _ = stats.first_error.set(e.to_string());
                        stats.dropped.fetch_add(1, Relaxed);
                        return;
                    }
                }
                _ => {
                    stats.dropped.fetch_add(1, Relaxed);
                    return;
                }
            },
            _ = stop.changed() => break,
        }
    }
    wire.close().await;
}

/// Runs a storm over `procs` worker processes and returns the merged result. `conn_pids` are
/// sampled for RSS before the storm and once every connection is up (after the hold, when
/// holding), for the memory-per-connection figure.
pub async fn coordinate(
    spec: &StormSpec,
    procs: usize,
    conn_pids: &[u32],
    extra_args: &[String],
) -> anyhow::Result<Value> {
    let rss_before: u64 = conn_pids
        .iter()
        .map(|&p| rss_kib(p))
        .sum::<anyhow::Result<u64>>()?;
    let start_us = unix_us() + 2_000_000;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for shard in 0..procs {
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("worker")
            .arg("--fixture")
            .arg(&spec.fixture)
            .args(["--first-user", &spec.first_user.to_string()])
            .args(["--conns", &spec.conns.to_string()])
            .args(["--rate", &spec.rate.to_string()])
            .args(["--hold-secs", &spec.hold_secs.to_string()])
            .args(["--heartbeat-secs", &spec.heartbeat_secs.to_string()])
            .args([
                "--transport",
                match spec.transport {
                    Transport::Tcp => "tcp",
                    Transport::Ws => "ws",
                },
            ])
            .args(["--shard", &shard.to_string()])
            .args(["--shards", &procs.to_string()])
            .args(["--start-unix-us", &start_us.to_string()])
            .args(extra_args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(e) = &spec.expect {
            cmd.arg("--expect").arg(e);
        }
        children.push(cmd.spawn()?);
    }
    let mut readers = Vec::new();
    let mut stdins = Vec::new();
    for c in &mut children {
        readers.push(BufReader::new(c.stdout.take().expect("piped")).lines());
        stdins.push(c.stdin.take().expect("piped"));
    }
    let mut ready_ok = 0u64;
    for r in &mut readers {
        while let Some(l) = r.next_line().await? {
            if let Some(j) = l.strip_prefix("READY ") {
                let v: Value = serde_json::from_str(j)?;
                ready_ok += v["ok"].as_u64().unwrap_or_default();
                break;
            }
        }
    }
    let ready_secs = (unix_us().saturating_sub(start_us)) as f64 / 1e6;
    let rss_ready: u64 = conn_pids
        .iter()
        .map(|&p| rss_kib(p))
        .sum::<anyhow::Result<u64>>()?;
    if spec.hold_secs > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(spec.hold_secs)).await;
    }
    let rss_held: u64 = conn_pids
        .iter()
        .map(|&p| rss_kib(p))
        .sum::<anyhow::Result<u64>>()?;
    for s in &mut stdins {
        let _ = s.write_all(b"STOP\n").await;
    }
    let (mut lag, mut connected) = (Hist::new(), Hist::new());
    let mut signin = Hist::new();
    let mut synced = Hist::new();
    let mut sums: HashMap<&str, u64> = HashMap::new();
    let mut last_us = 0u64;
    let mut first_error = None;
    for r in &mut readers {
        while let Some(l) = r.next_line().await? {
            if let Some(j) = l.strip_prefix("RESULT ") {
                let v: Value = serde_json::from_str(j)?;
                for k in ["ok", "failed", "sync_bad", "hb_sent", "hb_ok", "dropped"] {
                    *sums.entry(k).or_default() += v[k].as_u64().unwrap_or_default();
                }
                last_us = last_us.max(v["last_signed_in_us"].as_u64().unwrap_or_default());
                for (h, k) in [(&mut lag, "lag"), (&mut connected, "connected")] {
                    h.merge(&Hist::from_b64(v[k].as_str().unwrap_or_default())?);
                }
                signin.merge(&crate::hist::Hist::from_b64(
                    v["signin"].as_str().unwrap_or_default(),
                )?);
                synced.merge(&crate::hist::Hist::from_b64(
                    v["synced"].as_str().unwrap_or_default(),
                )?);
                if first_error.is_none() && !v["first_error"].is_null() {
                    first_error = Some(v["first_error"].clone());
                }
                break;
            }
        }
    }
    for mut c in children {
        let _ = c.wait().await;
    }
    let ok = sums.get("ok").copied().unwrap_or_default();
    let span = last_us.saturating_sub(start_us) as f64 / 1e6;
    let per_conn = |after: u64| {
        if ready_ok == 0 {
            0.0
        } else {
            after.saturating_sub(rss_before) as f64 / ready_ok as f64
        }
    };
    let failed = sums.get("failed").copied().unwrap_or_default();
    let sync_bad = sums.get("sync_bad").copied().unwrap_or_default();
    let dropped = sums.get("dropped").copied().unwrap_or_default();
    let hb_ok = sums.get("hb_ok").copied().unwrap_or_default();
    let hb_sent = sums.get("hb_sent").copied().unwrap_or_default();
    Ok(json!({
        "conns": spec.conns,
        "procs": procs,
        "transport": spec.transport,
        "offered_connects_per_s": spec.rate,
        "signed_in": ok,
        "failed": failed,
        "signins_per_s": if span > 0.0 { ok as f64 / span } else { 0.0 },
        "ready_secs": ready_secs,
        "schedule_to_connect_start": lag.summary(),
        "connect_to_connected": connected.summary(),
        "connect_to_signed_in": signin.summary(),
        "connect_to_synced": synced.summary(),
        "hold_secs": spec.hold_secs,
        "heartbeats_sent": hb_sent,
        "heartbeats_answered": hb_ok,
        "dropped_while_held": dropped,
        "conn_nodes": conn_pids.len(),
        "conn_rss_before_kib": rss_before,
        "conn_rss_ready_kib": rss_ready,
        "conn_rss_held_kib": rss_held,
        "kib_per_conn": per_conn(rss_held.max(rss_ready)),
        "check": {
            "sync_bad": sync_bad,
            // Held connections must all stay up and get their heartbeats answered (a heartbeat
            // sent in the last instant before STOP may still be in flight: allow one per conn).
            "ok": failed == 0 && sync_bad == 0 && dropped == 0
                && hb_sent.saturating_sub(hb_ok) <= ok,
        },
        "first_error": first_error,
    }))
}
