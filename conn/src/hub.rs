//! The node's table of local connections and its large-group index.
//!
//! Every connection owns one [`Conn`]: a bounded outbound queue plus a pending control (kick,
//! drain, overflow) that pushers fill and the connection's task drains. The queue is a plain
//! `VecDeque` behind a mutex rather than a channel: an idle connection then holds no queue memory
//! at all, where a tokio channel keeps a 32-slot block allocated per connection.
//!
//! The large-group index maps (app, group) to local connection ids. It is filled from
//! `SignInResp.large_group_ids`, kept current by `UpdateLargeGroupMembers`, and cleaned when a
//! connection closes, so a large-group push costs logic one call per node and the node one lookup.

use bytes::Bytes;
use futures::task::AtomicWaker;
use gim_common::{AppId, ConnId, DeviceId, GroupId, UserId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::Context;

/// Who a signed-in connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity {
    pub app: AppId,
    pub user: UserId,
    pub device: DeviceId,
}

/// Asks a connection's task to close, with or without a notice to the client first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The same device signed in elsewhere: send KICKED, then close.
    Kick(String),
    /// The node drains, or lost what it needs to serve: send RECONNECT (with `reason`), then
    /// close.
    Drain { after_ms: i64, reason: &'static str },
    /// The outbound queue overflowed: the client does not read. Close at once; a notice could not
    /// be delivered anyway.
    Overflow,
}

/// Outcome of queueing one frame for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full; the connection is being closed.
    Overflow,
    /// The connection is closing or gone.
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    control: Option<Control>,
    identity: Option<Identity>,
    closed: bool,
}

/// One connection as pushers see it.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    cap: usize,
    state: Mutex<State>,
    waker: AtomicWaker,
}

/// Above this, a drained queue gives its memory back (bursts must not pin memory on idle conns).
const QUEUE_KEEP_CAPACITY: usize = 8;

impl Conn {
    pub fn new(id: ConnId, cap: usize) -> Self {
        Self {
            id,
            cap,
            state: Mutex::new(State::default()),
            waker: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters (push_back/pop_front are atomic with respect to it), so poison is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. When the queue already holds `cap` frames the client is not reading:
    /// the frame is refused and the connection is told to close (slow consumer -> close, never grow).
    pub fn push(&self, frame: Bytes) -> Push {
        self.push_many(std::iter::once(frame))
            .expect("one frame is always queued or refused")
    }

    /// Queues several frames under one lock and one wake-up (a held large-group batch). None
    /// when there was nothing to queue; otherwise [`Push::Queued`] only if every frame was.
    pub fn push_many(&self, frames: impl Iterator<Item = Bytes>) -> Option<Push> {
        let mut result = None;
        {
            let mut s = self.lock();
            for frame in frames {
                if s.closed || matches!(s.control, Some(Control::Overflow)) {
                    return Some(Push::Closed);
                }
                if s.queue.len() >= self.cap {
                    s.control = Some(Control::Overflow);
                    s.queue = VecDeque::new();
                    result = Some(Push::Overflow);
                    break;
                }
                s.queue.push_back(frame);
                result = Some(Push::Queued);
            }
        }
        if result.is_some() {
            self.waker.wake();
        }
        result
    }

    /// Sets a control for the task. The first one wins, except that an overflow replaces a pending
    /// notice (a notice cannot reach a client that does not read). False when already closed.
    pub fn control(&self, c: Control) -> bool {
        {
            let mut s = self.lock();
            if s.closed {
                return false;
            }
            match (&s.control, &c) {
                (None, _) | (Some(_), Control::Overflow) => s.control = Some(c),
                _ => {}
            }
        }
        self.waker.wake();
        true
    }

    pub fn identity(&self) -> Option<Identity> {
        self.lock().identity
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(crate) fn set_identity(&self, id: Option<Identity>) {
        self.lock().identity = id;
    }

    pub(crate) fn register_waker(&self, cx: &Context<'_>) {
        self.waker.register(cx.waker());
    }

    pub(crate) fn take_control(&self) -> Option<Control> {
        self.lock().control.take()
    }

    pub(crate) fn pop(&self) -> Option<Bytes> {
        let mut s = self.lock();
        let f = s.queue.pop_front();
        if s.queue.is_empty() && s.queue.capacity() > QUEUE_KEEP_CAPACITY {
            s.queue = VecDeque::new();
        }
        f
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Frames the task itself produces (replies, notices) go through the same queue and bound.
    pub(crate) fn push_own(&self, frame: Bytes) -> Push {
        self.push(frame)
    }

    pub(crate) fn clear_queue(&self) {
        self.lock().queue = VecDeque::new();
    }

    fn mark_closed(&self) -> Option<Identity> {
        let mut s = self.lock();
        s.closed = true;
        s.queue = VecDeque::new();
        s.identity
    }
}

#[derive(Debug, Default)]
struct Index {
    by_user: HashMap<(AppId, UserId), Vec<ConnId>>,
    groups: HashMap<(AppId, GroupId), HashSet<ConnId>>,
    conn_groups: HashMap<ConnId, Vec<GroupId>>,
}

/// All connections of this node.
#[derive(Debug)]
pub struct Hub {
    next_id: AtomicI64,
    queue_cap: usize,
    conns: RwLock<HashMap<ConnId, Arc<Conn>>>,
    index: Mutex<Index>,
    signed_in: AtomicU64,
}

impl Hub {
    pub fn new(queue_cap: usize) -> Self {
        Self {
            next_id: AtomicI64::new(1),
            queue_cap,
            conns: RwLock::default(),
            index: Mutex::default(),
            signed_in: AtomicU64::new(0),
        }
    }

    fn conns_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConnId, Arc<Conn>>> {
        self.conns.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection with a node-unique id.
    pub fn register(&self) -> Arc<Conn> {
        let id = ConnId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let conn = Arc::new(Conn::new(id, self.queue_cap));
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, conn.clone());
        conn
    }

    pub fn get(&self, id: ConnId) -> Option<Arc<Conn>> {
        self.conns_read().get(&id).cloned()
    }

    /// Open connections, signed in or not.
    pub fn len(&self) -> usize {
        self.conns_read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn signed_in_count(&self) -> u64 {
        self.signed_in.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<Arc<Conn>> {
        self.conns_read().values().cloned().collect()
    }

    /// Every connection whose sign-in logic accepted, with its identity (for restoring routes).
    pub fn signed_in_routes(&self) -> Vec<(Identity, Arc<Conn>)> {
        let ids: Vec<ConnId> = self.index().by_user.values().flatten().copied().collect();
        let conns = self.conns_read();
        ids.iter()
            .filter_map(|id| {
                let c = conns.get(id)?;
                Some((c.identity()?, c.clone()))
            })
            .collect()
    }

    /// Indexes a connection whose sign-in logic accepted.
    pub fn signed_in(&self, conn: &Conn, who: Identity, large_groups: &[i64]) {
        conn.set_identity(Some(who));
        self.signed_in.fetch_add(1, Ordering::Relaxed);
        let mut ix = self.index();
        ix.by_user
            .entry((who.app, who.user))
            .or_default()
            .push(conn.id);
        if !large_groups.is_empty() {
            let groups: Vec<GroupId> = large_groups.iter().map(|g| GroupId(*g)).collect();
            for g in &groups {
                ix.groups.entry((who.app, *g)).or_default().insert(conn.id);
            }
            ix.conn_groups.insert(conn.id, groups);
        }
    }

    /// Forgets a connection; returns the identity it signed in (or was signing in) with.
    pub fn remove(&self, conn: &Conn, was_signed_in: bool) -> Option<Identity> {
        let who = conn.mark_closed();
        self.conns
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conn.id);
        let who = who?;
        if !was_signed_in {
            // A sign-in that was still in flight may have written a route: the caller still
            // sends Offline for it, but the index never saw this connection.
            return Some(who);
        }
        self.signed_in.fetch_sub(1, Ordering::Relaxed);
        let mut ix = self.index();
        if let Some(list) = ix.by_user.get_mut(&(who.app, who.user)) {
            list.retain(|c| *c != conn.id);
            if list.is_empty() {
                ix.by_user.remove(&(who.app, who.user));
            }
        }
        if let Some(groups) = ix.conn_groups.remove(&conn.id) {
            for g in groups {
                if let Some(set) = ix.groups.get_mut(&(who.app, g)) {
                    set.remove(&conn.id);
                    if set.is_empty() {
                        ix.groups.remove(&(who.app, g));
                    }
                }
            }
        }
        Some(who)
    }

    /// The connection `id` if it is signed in as (app, device).
    pub fn find(&self, app: AppId, device: DeviceId, id: ConnId) -> Option<Arc<Conn>> {
        let conn = self.get(id)?;
        let who = conn.identity()?;
        (who.app == app && who.device == device).then_some(conn)
    }

    pub fn deliver(&self, app: AppId, device: DeviceId, id: ConnId, frame: Bytes) -> Push {
        match self.find(app, device, id) {
            Some(c) => c.push(frame),
            None => Push::Closed,
        }
    }

    /// How many local connections a large group has.
    pub fn group_len(&self, app: AppId, group: GroupId) -> usize {
        self.index()
            .groups
            .get(&(app, group))
            .map_or(0, |s| s.len())
    }

    /// Local connections of a large group's members.
    pub fn group_conns(&self, app: AppId, group: GroupId) -> Vec<Arc<Conn>> {
        let ids: Vec<ConnId> = match self.index().groups.get(&(app, group)) {
            Some(set) => set.iter().copied().collect(),
            None => return Vec::new(),
        };
        let conns = self.conns_read();
        ids.iter().filter_map(|id| conns.get(id).cloned()).collect()
    }

    /// Signed-in local connections of one app.
    pub fn app_conns(&self, app: AppId) -> Vec<Arc<Conn>> {
        let ix = self.index();
        let ids: Vec<ConnId> = ix
            .by_user
            .iter()
            .filter(|((a, _), _)| *a == app)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        drop(ix);
        let conns = self.conns_read();
        ids.iter().filter_map(|id| conns.get(id).cloned()).collect()
    }

    /// Signed-in local connections of one user of an app.
    pub fn user_conns(&self, app: AppId, user: UserId) -> Vec<Arc<Conn>> {
        let ids: Vec<ConnId> = match self.index().by_user.get(&(app, user)) {
            Some(v) => v.clone(),
            None => return Vec::new(),
        };
        let conns = self.conns_read();
        ids.iter().filter_map(|id| conns.get(id).cloned()).collect()
    }

    /// Applies a large-group membership change to the local index.
    pub fn update_group(
        &self,
        app: AppId,
        group: GroupId,
        joined: &[i64],
        left: &[i64],
        dissolved: bool,
    ) {
        let mut ix = self.index();
        let ix = &mut *ix;
        if dissolved {
            if let Some(set) = ix.groups.remove(&(app, group)) {
                for c in set {
                    if let Some(list) = ix.conn_groups.get_mut(&c) {
                        list.retain(|g| *g != group);
                    }
                }
            }
            return;
        }
        for u in joined {
            let Some(conns) = ix.by_user.get(&(app, UserId(*u))) else {
                continue;
            };
            for c in conns {
                if ix.groups.entry((app, group)).or_default().insert(*c) {
                    ix.conn_groups.entry(*c).or_default().push(group);
                }
            }
        }
        for u in left {
            let Some(conns) = ix.by_user.get(&(app, UserId(*u))) else {
                continue;
            };
            for c in conns {
                if let Some(set) = ix.groups.get_mut(&(app, group)) {
                    set.remove(c);
                    if set.is_empty() {
                        ix.groups.remove(&(app, group));
                    }
                }
                if let Some(list) = ix.conn_groups.get_mut(c) {
                    list.retain(|g| *g != group);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: i64, device: i64) -> Identity {
        Identity {
            app: AppId(1),
            user: UserId(user),
            device: DeviceId(device),
        }
    }

    #[test]
    fn queue_is_bounded_and_overflow_asks_to_close() {
        let c = Conn::new(ConnId(1), 2);
        assert_eq!(c.push(Bytes::from_static(b"a")), Push::Queued);
        assert_eq!(c.push(Bytes::from_static(b"b")), Push::Queued);
        assert_eq!(c.push(Bytes::from_static(b"c")), Push::Overflow);
        assert_eq!(c.take_control(), Some(Control::Overflow));
        assert!(!c.has_queued(), "overflow drops the backlog");
    }

    #[test]
    fn overflow_replaces_a_pending_notice_but_not_the_reverse() {
        let c = Conn::new(ConnId(1), 2);
        c.control(Control::Drain {
            after_ms: 0,
            reason: "t",
        });
        c.control(Control::Overflow);
        c.control(Control::Kick("x".into()));
        assert_eq!(c.take_control(), Some(Control::Overflow));
    }

    #[test]
    fn large_group_index_follows_sign_in_membership_and_close() {
        let hub = Hub::new(8);
        let a = hub.register();
        let b = hub.register();
        hub.signed_in(&a, who(10, 100), &[7]);
        hub.signed_in(&b, who(11, 110), &[]);
        let g = GroupId(7);
        assert_eq!(hub.group_conns(AppId(1), g).len(), 1);
        hub.update_group(AppId(1), g, &[11], &[], false);
        assert_eq!(hub.group_conns(AppId(1), g).len(), 2);
        hub.update_group(AppId(1), g, &[], &[10], false);
        let ids: Vec<_> = hub.group_conns(AppId(1), g).iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![b.id]);
        assert_eq!(hub.remove(&b, true), Some(who(11, 110)));
        assert!(hub.group_conns(AppId(1), g).is_empty());
        assert_eq!(hub.signed_in_count(), 1);
        hub.update_group(AppId(1), g, &[10], &[], false);
        hub.update_group(AppId(1), g, &[], &[], true);
        assert!(hub.group_conns(AppId(1), g).is_empty());
        assert_eq!(hub.app_conns(AppId(1)).len(), 1);
        assert!(hub.app_conns(AppId(2)).is_empty());
    }

    #[test]
    fn delivery_checks_app_and_device_of_the_connection() {
        let hub = Hub::new(8);
        let a = hub.register();
        hub.signed_in(&a, who(10, 100), &[]);
        let f = Bytes::from_static(b"m");
        assert_eq!(
            hub.deliver(AppId(1), DeviceId(100), a.id, f.clone()),
            Push::Queued
        );
        assert_eq!(
            hub.deliver(AppId(1), DeviceId(101), a.id, f.clone()),
            Push::Closed
        );
        assert_eq!(
            hub.deliver(AppId(2), DeviceId(100), a.id, f.clone()),
            Push::Closed
        );
        hub.remove(&a, true);
        assert_eq!(hub.deliver(AppId(1), DeviceId(100), a.id, f), Push::Closed);
    }
}
