//! The resilient client: keeps one session up across disconnects, drains and restarts, and hands
//! the application every message of its lists exactly once, in seq order.
//!
//! How the guarantee is kept (SPEC §4: messages are durable before any push; pushes are best
//! effort; sync fills gaps):
//! - one driver task owns the delivery state (`last_seq` of the user's list, and the last group seq
//!   of every large group it tracks) and is the only one that emits messages;
//! - a push whose seq is at most the last delivered one is a duplicate and dropped; the next seq is
//!   delivered; a larger seq means something in between was missed or is still being stored, so
//!   the driver holds it, syncs from its last seq, and delivers (and acks) only up to a gap that
//!   remains, re-syncing until it fills or [`ClientOptions::gap_wait`] passes ([`crate::order`]);
//! - after every (re)connect the driver syncs before handling pushes, and the pushes that arrived
//!   meanwhile are deduped by seq;
//! - after a successful send the driver syncs too, so the sender's own copy (which the server never
//!   pushes to the sending device) arrives promptly and in order.
//!
//! Seqs may skip numbers (a store that failed after its seq was allocated), so a gap never stalls
//! the list for longer than `gap_wait`.

use crate::order::Ordered;
use crate::session::{Credentials, Notice, Session, SessionOptions};
use crate::{ClientError, Endpoint};
use gim_proto::connect::v1::{
    Conversation, GetConversationsInput, GetConversationsOutput, GetHistoryInput, GetHistoryOutput,
    GroupSyncInput, GroupSyncOutput, MarkReadInput, MessageBody, MessageChangeInput,
    MessageChangeOutput, MessageItem, PackageType, ReceiverType, SendMessageInput,
    SendMessageOutput, SyncInput, SyncOutput, UpdateConversationInput,
};
use prost::Message as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a [`Client`] needs.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Conn nodes to try, in order; after a disconnect or a drain notice the next one is used.
    pub endpoints: Vec<Endpoint>,
    pub credentials: Credentials,
    pub session: SessionOptions,
    /// The last seq the application has already seen (persisted by it); 0 = let the server start
    /// from the highest ack of the user's devices.
    pub start_seq: i64,
    /// Events waiting for the application. When full the driver waits (and the server's pushes
    /// queue up, then are recovered by sync), so nothing is lost.
    pub event_queue: usize,
    /// Upper bound of the reconnect backoff.
    pub max_backoff: Duration,
    /// How long [`Client::send`] keeps retrying (same idempotency key) across reconnects.
    pub send_deadline: Duration,
    /// How long messages above a seq gap wait for the gap to fill before it is skipped: longer
    /// than the server's slowest store (seconds), short enough that a seq never stored does not
    /// stall the list for long.
    pub gap_wait: Duration,
}

impl ClientOptions {
    pub fn new(endpoints: Vec<Endpoint>, credentials: Credentials) -> Self {
        Self {
            endpoints,
            credentials,
            session: SessionOptions::default(),
            start_seq: 0,
            event_queue: 4096,
            max_backoff: Duration::from_secs(5),
            send_deadline: Duration::from_secs(30),
            gap_wait: Duration::from_secs(3),
        }
    }
}

/// What the application sees, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// Signed in on this node (first time or after a reconnect).
    Connected { endpoint: Endpoint },
    /// A message: for user lists and large groups in increasing seq, each exactly once; seq 0
    /// messages (not persisted) are best effort. The one exception: a message whose store took
    /// longer than [`ClientOptions::gap_wait`] comes late, after higher seqs.
    Message(MessageItem),
    /// The connection ended; the client reconnects by itself.
    Disconnected { reason: String },
    /// The same device signed in elsewhere. The client stops.
    Kicked { reason: String },
    /// Sign-in was refused for good (bad token, device of another user...). The client stops.
    Failed(Arc<ClientError>),
}

enum Command {
    /// A send stored a message at this seq in the user's list: fetch the own copy.
    SyncHint(i64),
    Resync,
    TrackLargeGroup(i64, i64),
}

/// Handle to a running client. Dropping it stops the client.
pub struct Client {
    cmd: mpsc::Sender<Command>,
    session: watch::Receiver<Option<Arc<Session>>>,
    last_seq: Arc<AtomicI64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    send_deadline: Duration,
    next_request_id: AtomicI64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("last_seq", &self.last_seq())
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    /// Starts connecting in the background; events arrive on the returned queue.
    pub fn start(opts: ClientOptions) -> (Client, mpsc::Receiver<Event>) {
        assert!(!opts.endpoints.is_empty(), "at least one endpoint");
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(opts.event_queue.max(1));
        let (sess_tx, sess_rx) = watch::channel(None);
        let last_seq = Arc::new(AtomicI64::new(opts.start_seq));
        let stop = CancellationToken::new();
        let send_deadline = opts.send_deadline;
        let driver = Driver {
            events: ev_tx,
            cmds: cmd_rx,
            session_tx: sess_tx,
            list: Ordered::new(opts.start_seq, opts.gap_wait),
            last_seq: last_seq.clone(),
            groups: HashMap::new(),
            acked: 0,
            stop: stop.clone(),
            opts,
        };
        let task = tokio::spawn(driver.run());
        // Idempotency keys: time-based start so a restarted process does not reuse its keys.
        let seed = gim_common::now_ms() * 1000;
        (
            Client {
                cmd: cmd_tx,
                session: sess_rx,
                last_seq,
                stop,
                task: Some(task),
                send_deadline,
                next_request_id: AtomicI64::new(seed),
            },
            ev_rx,
        )
    }

    /// The highest seq of the user's list delivered to the application.
    pub fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// The node currently signed in to, if any.
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.session.borrow().as_ref().map(|s| s.endpoint().clone())
    }

    /// Waits until signed in (returns at once if already).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<Arc<Session>, ClientError> {
        let mut rx = self.session.clone();
        let wait = async {
            loop {
                if let Some(s) = rx.borrow_and_update().as_ref()
                    && !s.is_closed()
                {
                    return Ok(s.clone());
                }
                if rx.changed().await.is_err() {
                    return Err(ClientError::Stopped);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// A fresh idempotency key for [`Client::send`].
    pub fn new_request_id(&self) -> i64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends over the long connection. Retries across reconnects with the same idempotency key
    /// (`client_request_id`, filled in when 0) until `send_deadline`, so a send that may or may not
    /// have reached the server is never stored twice. Business errors return at once.
    pub async fn send(
        &self,
        mut input: SendMessageInput,
    ) -> Result<SendMessageOutput, ClientError> {
        if input.client_request_id == 0 {
            input.client_request_id = self.new_request_id();
        }
        let deadline = Instant::now() + self.send_deadline;
        let mut backoff = Duration::from_millis(50);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let res = match self.wait_connected(left).await {
                Ok(session) => session
                    .request(PackageType::SendMessage, &input)
                    .await
                    .and_then(|data| {
                        SendMessageOutput::decode(data)
                            .map_err(|e| ClientError::Protocol(format!("SendMessageOutput: {e}")))
                    }),
                Err(e) => Err(e),
            };
            match res {
                Ok(out) => {
                    let large = input.receiver_type == ReceiverType::LargeGroup as i32;
                    if out.seq > 0 && !large {
                        let _ = self.cmd.try_send(Command::SyncHint(out.seq));
                    }
                    return Ok(out);
                }
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "send failed, retrying with the same request id");
                    tokio::time::sleep(
                        backoff.min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request over the current connection (waiting up to the send deadline for one),
    /// its reply decoded as `T`. Not retried: the caller sees every failure.
    async fn call<T: prost::Message + Default>(
        &self,
        ty: PackageType,
        input: &impl prost::Message,
    ) -> Result<T, ClientError> {
        let session = self.wait_connected(self.send_deadline).await?;
        let data = session.request(ty, input).await?;
        T::decode(data).map_err(|e| ClientError::Protocol(format!("{ty:?} reply: {e}")))
    }

    /// The conversations changed after `since_version` (0: all), every large group, and the
    /// unread total (PACKAGE_TYPE_GET_CONVERSATIONS).
    pub async fn get_conversations(
        &self,
        since_version: i64,
        limit: i32,
    ) -> Result<GetConversationsOutput, ClientError> {
        let input = GetConversationsInput {
            since_version,
            limit,
        };
        self.call(PackageType::GetConversations, &input).await
    }

    /// Pin, mute or delete a conversation (PACKAGE_TYPE_UPDATE_CONVERSATION).
    pub async fn update_conversation(
        &self,
        input: UpdateConversationInput,
    ) -> Result<Conversation, ClientError> {
        self.call(PackageType::UpdateConversation, &input).await
    }

    /// Marks a conversation read up to `read_seq` (PACKAGE_TYPE_MARK_READ).
    pub async fn mark_read(
        &self,
        peer_type: ReceiverType,
        peer_id: i64,
        read_seq: i64,
    ) -> Result<Conversation, ClientError> {
        let input = MarkReadInput {
            peer_type: peer_type as i32,
            peer_id,
            read_seq,
        };
        self.call(PackageType::MarkRead, &input).await
    }

    /// One conversation's messages with seq below `before_seq` (0: the newest), newest first
    /// (PACKAGE_TYPE_GET_HISTORY).
    pub async fn get_history(
        &self,
        peer_type: ReceiverType,
        peer_id: i64,
        before_seq: i64,
        limit: i32,
    ) -> Result<GetHistoryOutput, ClientError> {
        let input = GetHistoryInput {
            peer_type: peer_type as i32,
            peer_id,
            before_seq,
            limit,
        };
        self.call(PackageType::GetHistory, &input).await
    }

    /// Recalls a message from every list (PACKAGE_TYPE_RECALL_MESSAGE).
    pub async fn recall_message(
        &self,
        message_id: i64,
    ) -> Result<MessageChangeOutput, ClientError> {
        let input = MessageChangeInput {
            message_id,
            message_body: None,
        };
        self.call(PackageType::RecallMessage, &input).await
    }

    /// Replaces a message's body in every list (PACKAGE_TYPE_EDIT_MESSAGE).
    pub async fn edit_message(
        &self,
        message_id: i64,
        body: MessageBody,
    ) -> Result<MessageChangeOutput, ClientError> {
        let input = MessageChangeInput {
            message_id,
            message_body: Some(body),
        };
        self.call(PackageType::EditMessage, &input).await
    }

    /// Hides a message in this user's list only (PACKAGE_TYPE_DELETE_MESSAGE).
    pub async fn delete_message(
        &self,
        message_id: i64,
    ) -> Result<MessageChangeOutput, ClientError> {
        let input = MessageChangeInput {
            message_id,
            message_body: None,
        };
        self.call(PackageType::DeleteMessage, &input).await
    }

    /// Asks the driver to sync now (e.g. after the app comes back to the foreground).
    pub async fn resync(&self) {
        let _ = self.cmd.send(Command::Resync).await;
    }

    /// Delivers the large group's messages after `since_seq` (group seq) and keeps them in order
    /// across reconnects. Pushes of untracked large groups start tracking at their seq.
    pub async fn track_large_group(&self, group_id: i64, since_seq: i64) {
        let _ = self
            .cmd
            .send(Command::TrackLargeGroup(group_id, since_seq))
            .await;
    }

    /// Stops the client and closes its connection.
    pub async fn close(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

struct Driver {
    opts: ClientOptions,
    events: mpsc::Sender<Event>,
    cmds: mpsc::Receiver<Command>,
    session_tx: watch::Sender<Option<Arc<Session>>>,
    /// The user's list in seq order; its contiguous end is published in `last_seq`.
    list: Ordered,
    last_seq: Arc<AtomicI64>,
    /// Large group id -> last delivered group seq.
    groups: HashMap<i64, i64>,
    acked: i64,
    stop: CancellationToken,
}

enum Step {
    Stop,
    Notice(Option<Notice>),
    Cmd(Option<Command>),
    Overflow,
    /// Messages are held above a gap: re-sync, or give the gap up when its time has come.
    Gap,
}

/// How often a held gap is re-synced while it waits.
const GAP_RESYNC: Duration = Duration::from_millis(250);

/// Why a connected period ended.
enum End {
    Lost(String),
    Reconnect(Duration),
    Stop,
}

impl Driver {
    async fn run(mut self) {
        let n = self.opts.endpoints.len();
        let mut idx = 0usize;
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            let endpoint = self.opts.endpoints[idx % n].clone();
            let connect = Session::connect(&endpoint, &self.opts.credentials, &self.opts.session);
            let res = tokio::select! {
                _ = self.stop.cancelled() => break,
                r = connect => r,
            };
            let (session, notices) = match res {
                Ok(s) => s,
                Err(e @ ClientError::Gim(_)) => {
                    // The server refused this identity: retrying cannot help.
                    tracing::warn!(%endpoint, error = %e, "sign-in refused");
                    self.emit(Event::Failed(Arc::new(e))).await;
                    break;
                }
                Err(e) => {
                    tracing::debug!(%endpoint, error = %e, "connect failed");
                    idx += 1;
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(self.opts.max_backoff);
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            backoff = Duration::from_millis(100);
            tracing::debug!(%endpoint, "signed in");
            self.session_tx.send_replace(Some(session.clone()));
            self.emit(Event::Connected {
                endpoint: endpoint.clone(),
            })
            .await;
            let end = self.serve(&session, notices).await;
            self.session_tx.send_replace(None);
            session.close();
            match end {
                End::Stop => break,
                End::Lost(reason) => {
                    self.emit(Event::Disconnected { reason }).await;
                    // Another node first: the one we lost may be the one that died.
                    idx += 1;
                }
                End::Reconnect(after) => {
                    self.emit(Event::Disconnected {
                        reason: "node is draining".into(),
                    })
                    .await;
                    idx += 1;
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
        }
        self.session_tx.send_replace(None);
    }

    /// Runs one connected period: catch up, then handle pushes and commands until it ends.
    async fn serve(&mut self, s: &Arc<Session>, mut notices: mpsc::Receiver<Notice>) -> End {
        if let Err(e) = self.catch_up(s).await {
            return End::Lost(format!("sync failed: {e}"));
        }
        loop {
            let gap_check = self
                .list
                .deadline()
                .map(|at| at.min(Instant::now() + GAP_RESYNC));
            let step = tokio::select! {
                _ = self.stop.cancelled() => Step::Stop,
                n = notices.recv() => Step::Notice(n),
                c = self.cmds.recv() => Step::Cmd(c),
                _ = s.overflowed() => Step::Overflow,
                _ = sleep_until_some(gap_check) => Step::Gap,
            };
            let res = match step {
                Step::Stop => return End::Stop,
                Step::Notice(Some(Notice::Message(m))) => self.on_push(s, m).await,
                Step::Notice(Some(Notice::Reconnect(r))) => {
                    // Bounded so a bad value cannot park the client for long.
                    let after = Duration::from_millis(r.after_ms.clamp(0, 10_000) as u64);
                    return End::Reconnect(after);
                }
                Step::Notice(Some(Notice::Kicked(k))) => {
                    self.emit(Event::Kicked { reason: k.reason }).await;
                    return End::Stop;
                }
                Step::Notice(None) => {
                    return End::Lost(s.close_reason().unwrap_or_else(|| "connection lost".into()));
                }
                Step::Cmd(Some(Command::SyncHint(seq))) if seq <= self.last() => Ok(()),
                Step::Cmd(Some(Command::SyncHint(_) | Command::Resync)) => self.catch_up(s).await,
                Step::Cmd(Some(Command::TrackLargeGroup(g, since))) => {
                    self.groups.entry(g).or_insert(since);
                    self.group_sync(s, g).await
                }
                // The handle was dropped.
                Step::Cmd(None) => return End::Stop,
                Step::Overflow => self.sync(s).await,
                Step::Gap => self.recheck_gap(s).await,
            };
            if let Err(e) = res {
                if s.is_closed() || e.is_retryable() {
                    return End::Lost(format!("{e}"));
                }
                tracing::warn!(error = %e, "request failed");
            }
            if let Err(e) = self.ack(s).await {
                return End::Lost(format!("{e}"));
            }
        }
    }

    fn last(&self) -> i64 {
        self.list.last()
    }

    async fn catch_up(&mut self, s: &Arc<Session>) -> Result<(), ClientError> {
        self.sync(s).await?;
        let groups: Vec<i64> = self.groups.keys().copied().collect();
        for g in groups {
            self.group_sync(s, g).await?;
        }
        self.ack(s).await
    }

    async fn on_push(&mut self, s: &Arc<Session>, m: MessageItem) -> Result<(), ClientError> {
        if m.seq == 0 {
            self.emit(Event::Message(m)).await;
            return Ok(());
        }
        if m.receiver_type == ReceiverType::LargeGroup as i32 {
            let g = m.receiver_id;
            let last = *self.groups.entry(g).or_insert(m.seq - 1);
            if m.seq <= last {
                return Ok(());
            }
            if m.seq == last + 1 {
                self.groups.insert(g, m.seq);
                self.emit(Event::Message(m)).await;
                return Ok(());
            }
            return self.group_sync(s, g).await;
        }
        self.offer(m).await;
        if self.list.has_gap() {
            // Missed, or still being stored: a sync brings what is stored.
            self.sync(s).await?;
        }
        Ok(())
    }

    /// Hands one message of the user's list to the order keeper; emits what it releases.
    async fn offer(&mut self, m: MessageItem) {
        let ready = self.list.offer(m, Instant::now());
        self.deliver(ready).await;
    }

    async fn deliver(&mut self, ready: Vec<MessageItem>) {
        self.last_seq.store(self.list.last(), Ordering::Release);
        for m in ready {
            self.emit(Event::Message(m)).await;
        }
    }

    /// A gap still open: sync again; give it up if its wait is over.
    async fn recheck_gap(&mut self, s: &Arc<Session>) -> Result<(), ClientError> {
        self.sync(s).await?;
        let ready = self.list.skip_due(Instant::now());
        if !ready.is_empty() {
            tracing::debug!(last = self.list.last(), "seq gap skipped after gap_wait");
        }
        self.deliver(ready).await;
        Ok(())
    }

    /// Pulls the user's list after the last delivered seq, page by page.
    async fn sync(&mut self, s: &Arc<Session>) -> Result<(), ClientError> {
        // From the contiguous end (a gap's missing seqs may be stored by now); later pages from
        // the highest seq seen, or a gap would fetch the same page forever.
        let mut from = self.last();
        loop {
            let data = s
                .request(PackageType::Sync, &SyncInput { seq: from })
                .await?;
            let out = SyncOutput::decode(data)
                .map_err(|e| ClientError::Protocol(format!("SyncOutput: {e}")))?;
            for m in out.messages {
                self.offer(m).await;
            }
            if from == 0 {
                let ready = self.list.anchor(Instant::now());
                self.deliver(ready).await;
            }
            // has_more without progress would loop forever on a misbehaving server.
            let next = self.list.seen();
            if !out.has_more || next <= from {
                return Ok(());
            }
            from = next;
        }
    }

    async fn group_sync(&mut self, s: &Arc<Session>, group_id: i64) -> Result<(), ClientError> {
        loop {
            let from = self.groups.get(&group_id).copied().unwrap_or(0);
            let input = GroupSyncInput {
                group_id,
                seq: from,
            };
            let data = s.request(PackageType::GroupSync, &input).await?;
            let out = GroupSyncOutput::decode(data)
                .map_err(|e| ClientError::Protocol(format!("GroupSyncOutput: {e}")))?;
            let mut last = from;
            for m in out.messages {
                if m.seq > last {
                    last = m.seq;
                    self.groups.insert(group_id, last);
                    self.emit(Event::Message(m)).await;
                }
            }
            if !out.has_more || last == from {
                return Ok(());
            }
        }
    }

    async fn ack(&mut self, s: &Arc<Session>) -> Result<(), ClientError> {
        let last = self.last();
        if last > self.acked {
            s.ack(last).await?;
            self.acked = last;
        }
        Ok(())
    }

    async fn emit(&self, ev: Event) {
        // A dropped receiver means nobody listens; the client keeps its connection regardless.
        let _ = self.events.send(ev).await;
    }
}

/// Up to a quarter of random slack, so many clients dropped at once do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0) as u64;
    let slack = d.as_millis() as u64 / 4 + 1;
    d + Duration::from_millis(nanos % slack)
}
