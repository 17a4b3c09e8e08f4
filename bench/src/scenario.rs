//! In-process scenarios against a running gim cluster: B3 (1:1 messages), B4 (normal groups),
//! B5 (one large group) and B6a (sync latency). Each run: connect and sign in every client, drive
//! sends (or syncs) on an open-loop schedule, wait for the pushes, then check correctness by sync.
//!
//! One task per connection owns its socket; a scheduler hands it commands at their due time, and
//! the task records pushes and replies. Latency is always measured from the *scheduled* time.

use crate::fixture::Fixture;
use crate::gim::{self, Identity, Other};
use crate::hist::{Batch, Fanout, Hist};
use crate::net::{Spread, paced, unix_us};
use crate::wire::{Transport, Wire};
use futures::StreamExt;
use gim_proto::connect::v1::{
    self as pb, GroupSyncInput, GroupSyncOutput, PackageType, ReceiverType, SendMessageInput,
    SendMessageOutput, SyncInput, SyncOutput,
};
use prost::Message as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Commands a connection task accepts. The queue is bounded; the scheduler's `send` waits when a
/// task falls behind, which shows up as latency (measured from the scheduled time), never as a
/// dropped send.
const CMD_QUEUE: usize = 1024;
/// Time between the last connection and the first scheduled event.
const LEAD: Duration = Duration::from_millis(200);
/// How long after the last scheduled send a run waits for outstanding pushes.
const DRAIN: Duration = Duration::from_secs(10);
/// Every send's reply is awaited before the check (an unanswered send may still be stored):
/// an overloaded server answers late, and checking before it did would report its in-flight
/// messages as lost.
const ACK_DRAIN: Duration = Duration::from_secs(120);

#[derive(Debug, Default)]
struct Counters {
    send_errors: AtomicU64,
    send_acked: AtomicU64,
    dup_pushes: AtomicU64,
    stray_pushes: AtomicU64,
    disconnects: AtomicU64,
    sync_bad: AtomicU64,
    /// Lowest seq a large-group send returned (the group sync of the check starts below it).
    first_group_seq: AtomicI64,
    first_error: OnceLock<String>,
}

impl Counters {
    fn error(&self, e: impl std::fmt::Display) {
        let _ = self.first_error.set(e.to_string());
    }
}

/// State shared by one run's tasks.
struct Run {
    tag: u32,
    fanout: Fanout,
    acks: Mutex<Hist>,
    syncs: Mutex<Hist>,
    c: Counters,
}

enum Cmd {
    Send {
        idx: u64,
        sched_us: u64,
        receiver_type: ReceiverType,
        receiver_id: i64,
    },
    Sync {
        seq: i64,
        expect: usize,
        sched_us: u64,
    },
    Finish {
        group: Option<(i64, i64)>,
        reply: oneshot::Sender<anyhow::Result<Vec<u64>>>,
    },
}

/// A bitset over message indexes: a second push of the same message is a duplicate.
#[derive(Default)]
struct Seen(Vec<u64>);

impl Seen {
    fn insert(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

struct Client {
    me: Identity,
    run: Arc<Run>,
    seen: Seen,
    batch: Batch,
}

impl Client {
    fn on_push(&mut self, item: &pb::MessageItem) {
        let Some((idx, sched)) = gim::parse_body(self.run.tag, item) else {
            self.run.c.stray_pushes.fetch_add(1, Relaxed);
            return;
        };
        if item.sender_device_id == self.me.device_id && item.sender_device_id != 0 {
            // The sender's own copy (large groups fan out to every member connection).
            return;
        }
        if !self.seen.insert(idx) {
            self.run.c.dup_pushes.fetch_add(1, Relaxed);
            return;
        }
        let now = unix_us();
        let lat = now.saturating_sub(sched);
        if self.run.fanout.delivered(idx as usize, lat, now) {
            self.batch.push(lat, &self.run.fanout.deliveries);
        }
    }

    fn on_other(&mut self, o: Other, pending: &mut HashMap<i64, Pending>) {
        match o {
            Other::Push(item) => self.on_push(&item),
            Other::Reply(out) => {
                let Some(p) = pending.remove(&out.request_id) else {
                    return;
                };
                let now = unix_us();
                match p {
                    Pending::Send(sched) => {
                        if out.code != 0 {
                            self.run.c.send_errors.fetch_add(1, Relaxed);
                            self.run
                                .c
                                .error(format!("send: code {} {}", out.code, out.message));
                            return;
                        }
                        self.run.c.send_acked.fetch_add(1, Relaxed);
                        if let Ok(r) = SendMessageOutput::decode(out.data.as_ref()) {
                            self.run.c.first_group_seq.fetch_min(r.seq, Relaxed);
                        }
                        self.run
                            .acks
                            .lock()
                            .expect("lock")
                            .record_us(now.saturating_sub(sched));
                    }
                    Pending::Sync(sched, expect) => {
                        self.run
                            .syncs
                            .lock()
                            .expect("lock")
                            .record_us(now.saturating_sub(sched));
                        let ok = out.code == 0
                            && SyncOutput::decode(out.data.as_ref()).is_ok_and(|s| {
                                let mut seen = Seen::default();
                                let mut n = 0;
                                for m in &s.messages {
                                    if let Some((i, _)) = gim::parse_body(self.run.tag, m) {
                                        if !seen.insert(i) {
                                            return false;
                                        }
                                        n += 1;
                                    }
                                }
                                n == expect
                            });
                        if !ok {
                            self.run.c.sync_bad.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
    }
}

enum Pending {
    Send(u64),
    Sync(u64, usize),
}

async fn client_task(mut wire: Wire, mut client: Client, mut rx: mpsc::Receiver<Cmd>) {
    let mut rid: i64 = 100;
    let mut pending: HashMap<i64, Pending> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Send { idx, sched_us, receiver_type, receiver_id }) => {
                    rid += 1;
                    pending.insert(rid, Pending::Send(sched_us));
                    let req = SendMessageInput {
                        receiver_type: receiver_type as i32,
                        receiver_id,
                        message_body: Some(gim::body(client.run.tag, idx, sched_us)),
                        is_persist: true,
                        client_request_id: gim::client_request_id(client.run.tag, idx),
                        ..Default::default()
                    };
                    if let Err(e) = wire.send(gim::input(PackageType::SendMessage, rid, req)).await {
                        client.run.c.error(format!("send: {e}"));
                        client.run.c.disconnects.fetch_add(1, Relaxed);
                        break;
                    }
                }
                Some(Cmd::Sync { seq, expect, sched_us }) => {
                    rid += 1;
                    pending.insert(rid, Pending::Sync(sched_us, expect));
                    if let Err(e) = wire.send(gim::input(PackageType::Sync, rid, SyncInput { seq })).await {
                        client.run.c.error(format!("sync: {e}"));
                        client.run.c.disconnects.fetch_add(1, Relaxed);
                        break;
                    }
                }
                Some(Cmd::Finish { group, reply }) => {
                    let r = finish(&mut wire, &mut client, &mut pending, &mut rid, group).await;
                    client.batch.flush(&client.run.fanout.deliveries);
                    let _ = reply.send(r);
                    wire.close().await;
                    return;
                }
            },
            f = wire.recv() => match f {
                Ok(Some(b)) => match gim::output(&b).and_then(gim::classify) {
                    Ok(o) => client.on_other(o, &mut pending),
                    Err(e) => client.run.c.error(format!("frame: {e}")),
                },
                Ok(None) | Err(_) => {
                    client.run.c.disconnects.fetch_add(1, Relaxed);
                    break;
                }
            },
        }
    }
    client.batch.flush(&client.run.fanout.deliveries);
    // Still answer a Finish so the run does not wait for a dead connection.
    while let Some(cmd) = rx.recv().await {
        if let Cmd::Finish { reply, .. } = cmd {
            let _ = reply.send(Err(anyhow::anyhow!("connection lost during the run")));
        }
    }
}

/// The correctness check's read: this run's messages from others in the user's list (or the
/// large group's list), then an ACK of the list's end so the next run's `sync(0)` starts there.
async fn finish(
    wire: &mut Wire,
    client: &mut Client,
    pending: &mut HashMap<i64, Pending>,
    rid: &mut i64,
    group: Option<(i64, i64)>,
) -> anyhow::Result<Vec<u64>> {
    let tag = client.run.tag;
    let me = client.me.user_id;
    let items = if let Some((gid, from)) = group {
        let mut items = Vec::new();
        let mut seq = from;
        loop {
            *rid += 1;
            let r = *rid;
            let out = gim::request(
                wire,
                gim::input(
                    PackageType::GroupSync,
                    r,
                    GroupSyncInput { group_id: gid, seq },
                ),
                r,
                |o| client.on_other(o, pending),
            )
            .await?;
            gim::check(&out, "group sync")?;
            let page = GroupSyncOutput::decode(out.data.as_ref())?;
            let last = page.messages.last().map(|m| m.seq);
            items.extend(page.messages);
            match last {
                Some(s) if page.has_more && s > seq => seq = s,
                _ => break,
            }
        }
        items
    } else {
        let items = gim::sync_all(wire, 0, rid, |o| client.on_other(o, pending)).await?;
        if let Some(max) = items.iter().map(|m| m.seq).max() {
            wire.send(gim::ack(max)).await?;
        }
        items
    };
    Ok(items
        .iter()
        .filter(|m| m.sender_id != me || group.is_some())
        .filter_map(|m| gim::parse_body(tag, m).map(|(i, _)| i))
        .collect())
}

/// Connects and signs in user indexes `users`, spread over sources and targets.
async fn connect_clients(
    fx: &Fixture,
    users: &[usize],
    spread: &Spread,
    transport: Transport,
    run: &Arc<Run>,
) -> anyhow::Result<Vec<mpsc::Sender<Cmd>>> {
    let key = fx.key()?;
    let results: Vec<anyhow::Result<mpsc::Sender<Cmd>>> =
        futures::stream::iter(users.iter().enumerate())
            .map(|(n, &u)| {
                let id = fx.identity(&key, u);
                let (src, dst) = spread.pick(n);
                let run = run.clone();
                async move {
                    let mut wire = Wire::connect(transport, src, dst, "/ws").await?;
                    let mut client = Client {
                        me: id.clone(),
                        run,
                        seen: Seen::default(),
                        batch: Batch::default(),
                    };
                    gim::sign_in(&mut wire, &id, 1, |o| {
                        if let Other::Push(m) = o {
                            client.on_push(&m)
                        }
                    })
                    .await?;
                    let (tx, rx) = mpsc::channel(CMD_QUEUE);
                    tokio::spawn(client_task(wire, client, rx));
                    Ok(tx)
                }
            })
            .buffered(256)
            .collect()
            .await;
    results.into_iter().collect()
}

fn new_run(messages: usize, tag: u32) -> Arc<Run> {
    let c = Counters::default();
    c.first_group_seq.store(i64::MAX, Relaxed);
    Arc::new(Run {
        tag,
        fanout: Fanout::new(messages),
        acks: Default::default(),
        syncs: Default::default(),
        c,
    })
}

/// One sending scenario: who sends message `i` to whom, and who must receive it.
pub trait Plan: Send + Sync {
    fn name(&self) -> &'static str;
    /// User indexes to connect; connection `n` is `users()[n]`.
    fn users(&self) -> Vec<usize>;
    /// `(sending connection, receiver type, receiver id)` of message `i`.
    fn send(&self, fx: &Fixture, i: u64) -> (usize, ReceiverType, i64);
    /// Connections that must get message `i` (pushed, and in their synced list).
    fn recipients(&self, i: u64) -> Vec<usize>;
    /// Large group: check with a group sync by these connections instead of user lists.
    fn group_check(&self, fx: &Fixture) -> Option<(i64, Vec<usize>)> {
        let _ = fx;
        None
    }
}

/// B3: `pairs` pairs of users message each other.
pub struct OneToOne {
    pub pairs: usize,
}

impl Plan for OneToOne {
    fn name(&self) -> &'static str {
        "b3"
    }
    fn users(&self) -> Vec<usize> {
        (0..self.pairs * 2).collect()
    }
    fn send(&self, fx: &Fixture, i: u64) -> (usize, ReceiverType, i64) {
        let (from, to) = self.ends(i);
        (from, ReceiverType::User, fx.users[to].0)
    }
    fn recipients(&self, i: u64) -> Vec<usize> {
        vec![self.ends(i).1]
    }
}

impl OneToOne {
    /// `(sending connection, receiving connection)` of message `i`: pairs in turn, each pair's
    /// direction alternating.
    pub fn ends(&self, i: u64) -> (usize, usize) {
        let p = (i % self.pairs as u64) as usize;
        let dir = ((i / self.pairs as u64) % 2) as usize;
        (2 * p + dir, 2 * p + 1 - dir)
    }
}

/// B4: the fixture's normal groups; the first half of each group's members is online.
pub struct NormalGroups {
    pub groups: usize,
    pub size: usize,
}

impl NormalGroups {
    fn online(&self) -> usize {
        (self.size / 2).max(2)
    }
    /// Connection index of online member `m` of group `g` (groups are laid out contiguously).
    fn conn(&self, g: usize, m: usize) -> usize {
        g * self.online() + m
    }
}

impl Plan for NormalGroups {
    fn name(&self) -> &'static str {
        "b4"
    }
    fn users(&self) -> Vec<usize> {
        (0..self.groups)
            .flat_map(|g| (0..self.online()).map(move |m| g * self.size + m))
            .collect()
    }
    fn send(&self, fx: &Fixture, i: u64) -> (usize, ReceiverType, i64) {
        let g = (i % self.groups as u64) as usize;
        let m = ((i / self.groups as u64) % self.online() as u64) as usize;
        (
            self.conn(g, m),
            ReceiverType::NormalGroup,
            fx.normal_groups[g].0,
        )
    }
    fn recipients(&self, i: u64) -> Vec<usize> {
        let g = (i % self.groups as u64) as usize;
        let sender = ((i / self.groups as u64) % self.online() as u64) as usize;
        (0..self.online())
            .filter(|&m| m != sender)
            .map(|m| self.conn(g, m))
            .collect()
    }
}

/// B5: the fixture's large group, every member online, the owner (connection 0) sends.
pub struct LargeGroup {
    pub members: usize,
    /// Members whose group sync is checked (a full check of 10 000 lists would dominate the run).
    pub check_sample: usize,
}

impl Plan for LargeGroup {
    fn name(&self) -> &'static str {
        "b5"
    }
    fn users(&self) -> Vec<usize> {
        (0..self.members).collect()
    }
    fn send(&self, fx: &Fixture, _i: u64) -> (usize, ReceiverType, i64) {
        let gid = fx.large_group.map(|g| g.0).unwrap_or_default();
        (0, ReceiverType::LargeGroup, gid)
    }
    fn recipients(&self, _i: u64) -> Vec<usize> {
        (1..self.members).collect()
    }
    fn group_check(&self, fx: &Fixture) -> Option<(i64, Vec<usize>)> {
        let gid = fx.large_group?.0;
        let step = (self.members / self.check_sample.max(1)).max(1);
        Some((gid, (1..self.members).step_by(step).collect()))
    }
}

/// Runs `plan` at `rate` messages/s for `secs` seconds; returns the result document.
pub async fn run_messages(
    fx: &Fixture,
    plan: &dyn Plan,
    spread: &Spread,
    transport: Transport,
    rate: f64,
    secs: f64,
    cpu: &[(String, u32)],
) -> anyhow::Result<Value> {
    let messages = (rate * secs).round().max(1.0) as u64;
    let run = new_run(messages as usize, gim::run_tag());
    let users = plan.users();
    let connect_start = Instant::now();
    let conns = connect_clients(fx, &users, spread, transport, &run).await?;
    let connect_secs = connect_start.elapsed().as_secs_f64();

    let sends: Vec<_> = (0..messages).map(|i| plan.send(fx, i)).collect();
    let (queues, r) = (conns.clone(), run.clone());
    // CPU over the schedule and the wait for its pushes and replies, not connects or the check.
    let probe = crate::cpu::Probe::start(cpu);
    let (start_us, sent) = paced(messages, rate, LEAD, move |i, sched_us| {
        let (from, receiver_type, receiver_id) = sends[i as usize];
        let cmd = Cmd::Send {
            idx: i,
            sched_us,
            receiver_type,
            receiver_id,
        };
        if queues[from].blocking_send(cmd).is_err() {
            r.c.error("a sending connection was lost");
        }
    })
    .await;
    let sent_secs = sent.as_secs_f64();

    let expected: u64 = (0..messages).map(|i| plan.recipients(i).len() as u64).sum();
    let deadline = Instant::now() + DRAIN;
    while run.fanout.total() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Replies to the last sends may trail the pushes.
    let deadline = Instant::now() + ACK_DRAIN;
    while run.c.send_acked.load(Relaxed) + run.c.send_errors.load(Relaxed) < messages
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = probe.finish(messages, "message");

    // Correctness: every recipient's list holds every message sent to it exactly once.
    let group = plan.group_check(fx);
    let mut want: HashMap<usize, Vec<u64>> = HashMap::new();
    if group.is_none() {
        for i in 0..messages {
            for r in plan.recipients(i) {
                want.entry(r).or_default().push(i);
            }
        }
    }
    let first_group_seq = run.c.first_group_seq.load(Relaxed);
    let group_from = if first_group_seq == i64::MAX {
        0
    } else {
        first_group_seq - 1
    };
    let mut checked = 0u64;
    let mut missing = 0u64;
    let mut duplicated = 0u64;
    let mut unexpected = 0u64;
    let mut check_errors = 0u64;
    let mut finishes = Vec::new();
    for (n, tx) in conns.iter().enumerate() {
        let g = match &group {
            Some((gid, sample)) if sample.contains(&n) => Some((*gid, group_from)),
            Some(_) => None,
            None => None,
        };
        let (rtx, rrx) = oneshot::channel();
        if group.is_some() && g.is_none() {
            // Not sampled: just close it.
            drop(rtx);
        } else if tx
            .send(Cmd::Finish {
                group: g,
                reply: rtx,
            })
            .await
            .is_ok()
        {
            finishes.push((n, rrx));
            continue;
        }
    }
    let all_group: Vec<u64> = (0..messages).collect();
    let empty = Vec::new();
    for (n, rrx) in finishes {
        let got = match rrx.await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                run.c.error(format!("check: {e}"));
                check_errors += 1;
                continue;
            }
            Err(_) => {
                check_errors += 1;
                continue;
            }
        };
        checked += 1;
        let expect = if group.is_some() {
            &all_group
        } else {
            want.get(&n).unwrap_or(&empty)
        };
        let (m, d, u) = compare(expect, &got);
        missing += m;
        duplicated += d;
        unexpected += u;
    }
    drop(conns);

    let delivered = run.fanout.total();
    let last = run.fanout.last_delivery_us.load(Relaxed);
    let span = last.saturating_sub(start_us) as f64 / 1e6;
    let c = &run.c;
    let correct = check_errors == 0
        && missing == 0
        && duplicated == 0
        && unexpected == 0
        && checked > 0
        && c.dup_pushes.load(Relaxed) == 0
        && c.send_errors.load(Relaxed) == 0;
    Ok(json!({
        "scenario": plan.name(),
        "transport": transport,
        "conns": users.len(),
        "connect_secs": connect_secs,
        "offered_msgs_per_s": rate,
        "secs": secs,
        "messages": messages,
        "achieved_send_per_s": messages as f64 / sent_secs.max(1e-9),
        "send_acked": c.send_acked.load(Relaxed),
        "send_errors": c.send_errors.load(Relaxed),
        "expected_deliveries": expected,
        "delivered": delivered,
        "deliveries_per_s": if span > 0.0 { delivered as f64 / span } else { 0.0 },
        "push": run.fanout.deliveries.lock().expect("lock").summary(),
        "last_recipient": run.fanout.last_recipient().summary(),
        "slowest_by_second_ms": run.fanout.slowest_per(rate.ceil() as usize),
        "send_ack": run.acks.lock().expect("lock").summary(),
        "dup_pushes": c.dup_pushes.load(Relaxed),
        "stray_pushes": c.stray_pushes.load(Relaxed),
        "disconnects": c.disconnects.load(Relaxed),
        "cpu": cpu,
        "check": {
            "lists_checked": checked,
            "missing": missing,
            "duplicated": duplicated,
            "unexpected": unexpected,
            "errors": check_errors,
            "ok": correct,
        },
        "first_error": c.first_error.get(),
    }))
}

/// `(missing, duplicated, unexpected)` of `got` against `want` (both message indexes).
pub fn compare(want: &[u64], got: &[u64]) -> (u64, u64, u64) {
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for &g in got {
        *counts.entry(g).or_default() += 1;
    }
    let mut missing = 0;
    let mut duplicated = 0;
    for w in want {
        match counts.remove(w) {
            None => missing += 1,
            Some(1) => {}
            Some(_) => duplicated += 1,
        }
    }
    (missing, duplicated, counts.len() as u64)
}

/// B6a: `users` connections, each with `per_user` messages waiting above `base[user]`, sync
/// `rate` times per second for `secs` seconds; every reply must hold exactly those messages.
#[allow(clippy::too_many_arguments)]
pub async fn run_syncs(
    fx: &Fixture,
    tag: u32,
    base: &[(usize, i64)],
    per_user: usize,
    spread: &Spread,
    transport: Transport,
    rate: f64,
    secs: f64,
    cpu: &[(String, u32)],
) -> anyhow::Result<Value> {
    let run = new_run(0, tag);
    let users: Vec<usize> = base.iter().map(|b| b.0).collect();
    let conns = connect_clients(fx, &users, spread, transport, &run).await?;
    let n = (rate * secs).round().max(1.0) as u64;
    let seqs: Vec<i64> = base.iter().map(|b| b.1).collect();
    let queues = conns.clone();
    let probe = crate::cpu::Probe::start(cpu);
    paced(n, rate, LEAD, move |i, sched_us| {
        let k = (i % queues.len() as u64) as usize;
        let cmd = Cmd::Sync {
            seq: seqs[k],
            expect: per_user,
            sched_us,
        };
        let _ = queues[k].blocking_send(cmd);
    })
    .await;
    let deadline = Instant::now() + DRAIN;
    while run.syncs.lock().expect("lock").len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = probe.finish(n, "sync");
    drop(conns);
    let syncs = run.syncs.lock().expect("lock").summary();
    let bad = run.c.sync_bad.load(Relaxed);
    Ok(json!({
        "scenario": "b6-sync",
        "transport": transport,
        "conns": users.len(),
        "messages_per_sync": per_user,
        "offered_syncs_per_s": rate,
        "secs": secs,
        "syncs": n,
        "sync": syncs,
        "cpu": cpu,
        "check": { "replies": syncs.count, "bad_replies": bad, "ok": bad == 0 && syncs.count == n },
        "first_error": run.c.first_error.get(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_each_kind_of_error() {
        assert_eq!(compare(&[1, 2, 3], &[1, 2, 3]), (0, 0, 0));
        assert_eq!(compare(&[1, 2, 3], &[1, 3, 3, 9]), (1, 1, 1));
    }

    #[test]
    fn one_to_one_alternates_direction_within_pairs() {
        let p = OneToOne { pairs: 2 };
        assert_eq!(p.ends(0), (0, 1));
        assert_eq!(p.ends(1), (2, 3));
        assert_eq!(p.ends(2), (1, 0));
        assert_eq!(p.recipients(3), vec![2]);
    }

    #[test]
    fn normal_group_recipients_exclude_the_sender() {
        let p = NormalGroups { groups: 2, size: 6 };
        assert_eq!(p.users(), vec![0, 1, 2, 6, 7, 8]);
        // Message 3: group 1, sender member 1 -> connections 3 and 5 receive it.
        assert_eq!(p.recipients(3), vec![3, 5]);
    }

    #[test]
    fn seen_detects_repeats() {
        let mut s = Seen::default();
        assert!(s.insert(130));
        assert!(!s.insert(130));
        assert!(s.insert(1));
    }
}
