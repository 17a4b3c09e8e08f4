//! Scenarios against ejabberd (the IM peer), driven like gim's own: the same open-loop schedule
//! ([`net::paced`]), the same run-tagged bodies, latency from the scheduled time, and a check
//! that reads every recipient's stored history afterwards (MAM, XEP-0313, instead of gim's sync).
//!
//! P3: `pairs` pairs of users send each other 1:1 chat messages (ejabberd archives each in MAM,
//! on MariaDB), both sides online.

use crate::gim;
use crate::hist::{Batch, Fanout};
use crate::net::{Spread, paced, unix_us};
use crate::scenario::{OneToOne, compare};
use crate::xmpp::{self, El};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands per connection; the scheduler waits when a connection falls behind (latency, never a
/// dropped send), as in gim's scenarios.
const CMD_QUEUE: usize = 1024;
/// IQ replies and MAM results from the reader to the writer's check; the reader waits when full
/// (back-pressure onto the socket), which only happens while a check is reading them.
const CTL_QUEUE: usize = 1024;
const LEAD: Duration = Duration::from_millis(200);
const DRAIN: Duration = Duration::from_secs(10);
/// One MAM page; each reply is awaited at most this long.
const MAM_PAGE: usize = 250;
const MAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the ejabberd users are: `u<index>@<domain>`, one password for all (the suite inserts
/// them into ejabberd's `users` table).
#[derive(Debug, Clone)]
pub struct Accounts {
    pub domain: String,
    pub password: String,
}

impl Accounts {
    pub fn bare(&self, user: usize) -> String {
        format!("u{user}@{}", self.domain)
    }
}

#[derive(Default)]
struct Counters {
    disconnects: AtomicU64,
    dup_pushes: AtomicU64,
    send_errors: AtomicU64,
    closing: AtomicBool,
    first_error: OnceLock<String>,
}

impl Counters {
    fn error(&self, e: impl std::fmt::Display) {
        let _ = self.first_error.set(e.to_string());
    }
}

struct Run {
    tag: u32,
    fanout: Fanout,
    c: Counters,
    /// Bare JID of every connection, by connection index.
    jids: Vec<String>,
}

enum Cmd {
    Send {
        to: usize,
        idx: u64,
        sched_us: u64,
    },
    /// Read this connection's archive since `since` (XEP-0082) and return the indexes of this
    /// run's messages it received from others.
    Finish {
        since: String,
        reply: oneshot::Sender<anyhow::Result<Vec<u64>>>,
    },
}

/// Reads stanzas: chat messages of this run are deliveries; IQs and MAM results go to the writer.
async fn reader(mut rx: xmpp::XmlIn, run: Arc<Run>, ctl: mpsc::Sender<El>) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut batch = Batch::default();
    let r = loop {
        let el = match rx.next().await {
            Ok(Some(el)) => el,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        // MAM results and IQ replies are the writer's check; it has gone when the send fails.
        if el.name == "iq" || (el.name == "message" && el.child("result").is_some()) {
            if ctl.send(el).await.is_err() {
                break Ok(());
            }
            continue;
        }
        // Presence (our own, echoed) and anything else is not counted.
        if el.name != "message" {
            continue;
        }
        let Some((idx, sched)) = el
            .child("body")
            .and_then(|b| gim::parse_text(run.tag, &b.text))
        else {
            continue;
        };
        if !seen.insert(idx) {
            run.c.dup_pushes.fetch_add(1, Relaxed);
            continue;
        }
        let now = unix_us();
        let lat = now.saturating_sub(sched);
        if run.fanout.delivered(idx as usize, lat, now) {
            batch.push(lat, &run.fanout.deliveries);
        }
    };
    batch.flush(&run.fanout.deliveries);
    if !run.c.closing.load(Relaxed) {
        run.c.disconnects.fetch_add(1, Relaxed);
        if let Err(e) = &r {
            run.c.error(format!("read: {e}"));
        }
    }
    r
}

async fn writer(
    mut tx: OwnedWriteHalf,
    me: String,
    run: Arc<Run>,
    mut cmds: mpsc::Receiver<Cmd>,
    mut ctl: mpsc::Receiver<El>,
) {
    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Send { to, idx, sched_us } => {
                let body = format!("{}:{idx}:{sched_us}", run.tag);
                if let Err(e) = tx
                    .write_all(xmpp::chat(&run.jids[to], idx, &body).as_bytes())
                    .await
                {
                    run.c.send_errors.fetch_add(1, Relaxed);
                    run.c.error(format!("send: {e}"));
                    break;
                }
            }
            Cmd::Finish { since, reply } => {
                let r = archive(&mut tx, &mut ctl, &since, &me, run.tag).await;
                let _ = reply.send(r);
            }
        }
    }
    let _ = tx.write_all(b"</stream:stream>").await;
    let _ = tx.shutdown().await;
}

/// Pages through the archive with MAM; the indexes of run `tag`'s messages sent by others.
async fn archive(
    tx: &mut OwnedWriteHalf,
    ctl: &mut mpsc::Receiver<El>,
    since: &str,
    me: &str,
    tag: u32,
) -> anyhow::Result<Vec<u64>> {
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    for page in 1.. {
        let id = format!("mam{page}");
        tx.write_all(xmpp::mam_query(&id, since, MAM_PAGE, after.as_deref()).as_bytes())
            .await?;
        let fin = loop {
            let el = tokio::time::timeout(MAM_TIMEOUT, ctl.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no MAM reply in {MAM_TIMEOUT:?}"))?
                .ok_or_else(|| anyhow::anyhow!("connection lost during the MAM query"))?;
            if el.name == "message" {
                if let Some((from, body)) = xmpp::mam_item(&el)
                    && from != me
                    && let Some((i, _)) = gim::parse_text(tag, body)
                {
                    got.push(i);
                }
            } else if el.attr("id") == Some(id.as_str()) {
                anyhow::ensure!(
                    el.attr("type") == Some("result"),
                    "MAM query refused: {:?}",
                    el.children.first().map(|c| &c.name)
                );
                break el;
            }
        };
        let fin = fin
            .child("fin")
            .ok_or_else(|| anyhow::anyhow!("MAM reply without <fin/>"))?;
        let last = fin
            .child("set")
            .and_then(|s| s.child("last"))
            .map(|l| l.text.clone());
        if fin.attr("complete") == Some("true") || last.is_none() {
            break;
        }
        after = last;
    }
    Ok(got)
}

/// Signs in user `first_user + n` for each connection `n`; its command queue and reader task.
async fn connect_all(
    acc: &Accounts,
    spread: &Spread,
    users: &[usize],
    run: &Arc<Run>,
) -> anyhow::Result<
    Vec<(
        mpsc::Sender<Cmd>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
> {
    let results: Vec<anyhow::Result<_>> = futures::stream::iter(users.iter().enumerate())
        .map(|(n, &u)| {
            let (src, dst) = spread.pick(n);
            let run = run.clone();
            let acc = acc.clone();
            async move {
                let me = acc.bare(u);
                let user = format!("u{u}");
                let s = xmpp::login(src, dst, &acc.domain, &user, &acc.password, "bench").await?;
                let (ctl_tx, ctl_rx) = mpsc::channel(CTL_QUEUE);
                let (tx, rx) = mpsc::channel(CMD_QUEUE);
                let rd = tokio::spawn(reader(s.rx, run.clone(), ctl_tx));
                tokio::spawn(writer(s.tx, me, run, rx, ctl_rx));
                Ok((tx, rd))
            }
        })
        // ejabberd authenticates each sign-in with an SQL look-up: a moderate fan-in.
        .buffered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

/// P3: `pairs` pairs of ejabberd users (`u<first_user>`…) message each other at `rate`
/// messages/s for `secs` seconds; `cpu` as in gim's scenarios.
pub async fn one_to_one(
    acc: &Accounts,
    spread: &Spread,
    first_user: usize,
    pairs: usize,
    rate: f64,
    secs: f64,
    cpu: &[(String, u32)],
) -> anyhow::Result<Value> {
    let messages = (rate * secs).round().max(1.0) as u64;
    let plan = OneToOne { pairs };
    let users: Vec<usize> = (first_user..first_user + 2 * pairs).collect();
    let run = Arc::new(Run {
        tag: gim::run_tag(),
        fanout: Fanout::new(messages as usize),
        c: Counters::default(),
        jids: users.iter().map(|&u| acc.bare(u)).collect(),
    });
    // MAM's start filter has whole seconds: from the second before the run.
    let since = xmpp::datetime(unix_us() / 1_000_000 - 1);
    let connect_start = Instant::now();
    let conns = connect_all(acc, spread, &users, &run).await?;
    let connect_secs = connect_start.elapsed().as_secs_f64();
    // Initial presence is processed after the bind reply: let the last sessions become available.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let queues: Vec<mpsc::Sender<Cmd>> = conns.iter().map(|c| c.0.clone()).collect();
    let probe = crate::cpu::Probe::start(cpu);
    let r = run.clone();
    let (start_us, sent) = paced(messages, rate, LEAD, move |i, sched_us| {
        let (from, to) = plan.ends(i);
        let cmd = Cmd::Send {
            to,
            idx: i,
            sched_us,
        };
        if queues[from].blocking_send(cmd).is_err() {
            r.c.error("a sending connection was lost");
        }
    })
    .await;
    let deadline = Instant::now() + DRAIN;
    while run.fanout.total() < messages && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = probe.finish(messages, "message");

    // Correctness: each recipient's archive holds every message sent to it exactly once.
    run.c.closing.store(true, Relaxed);
    let plan = OneToOne { pairs };
    let mut want: HashMap<usize, Vec<u64>> = HashMap::new();
    for i in 0..messages {
        want.entry(plan.ends(i).1).or_default().push(i);
    }
    let mut finishes = Vec::new();
    for (n, (tx, _)) in conns.iter().enumerate() {
        if !want.contains_key(&n) {
            continue;
        }
        let (rtx, rrx) = oneshot::channel();
        if tx
            .send(Cmd::Finish {
                since: since.clone(),
                reply: rtx,
            })
            .await
            .is_ok()
        {
            finishes.push((n, rrx));
        }
    }
    let (mut checked, mut missing, mut duplicated, mut unexpected) = (0, 0, 0, 0);
    for (n, rrx) in finishes {
        match rrx.await {
            Ok(Ok(got)) => {
                checked += 1;
                let (m, d, u) = compare(&want[&n], &got);
                missing += m;
                duplicated += d;
                unexpected += u;
            }
            Ok(Err(e)) => run.c.error(format!("check: {e}")),
            Err(_) => {}
        }
    }
    // Failed checks and connections lost before their check.
    let errors = want.len() as u64 - checked;
    // Closing the command queues ends each session; its reader then flushes its latencies.
    let readers: Vec<_> = conns.into_iter().map(|(_, rd)| rd).collect();
    for rd in readers {
        let _ = tokio::time::timeout(Duration::from_secs(10), rd).await;
    }

    let delivered = run.fanout.total();
    let last = run.fanout.last_delivery_us.load(Relaxed);
    let span = last.saturating_sub(start_us) as f64 / 1e6;
    let c = &run.c;
    let ok = errors == 0
        && missing == 0
        && duplicated == 0
        && unexpected == 0
        && checked > 0
        && c.dup_pushes.load(Relaxed) == 0
        && c.send_errors.load(Relaxed) == 0;
    Ok(json!({
        "scenario": "p3-ejabberd",
        "server": "ejabberd",
        "conns": users.len(),
        "connect_secs": connect_secs,
        "offered_msgs_per_s": rate,
        "secs": secs,
        "messages": messages,
        "achieved_send_per_s": messages as f64 / sent.as_secs_f64().max(1e-9),
        "expected_deliveries": messages,
        "delivered": delivered,
        "deliveries_per_s": if span > 0.0 { delivered as f64 / span } else { 0.0 },
        "push": run.fanout.deliveries.lock().expect("lock").summary(),
        "last_recipient": run.fanout.last_recipient().summary(),
        "slowest_by_second_ms": run.fanout.slowest_per(rate.ceil() as usize),
        "dup_pushes": c.dup_pushes.load(Relaxed),
        "disconnects": c.disconnects.load(Relaxed),
        "cpu": cpu,
        "check": {
            "lists_checked": checked,
            "missing": missing,
            "duplicated": duplicated,
            "unexpected": unexpected,
            "errors": errors,
            "ok": ok,
        },
        "first_error": c.first_error.get(),
    }))
}
