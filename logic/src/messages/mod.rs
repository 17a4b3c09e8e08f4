//! Messages: sends (validated, seqs allocated, stored through the one store path, pushed in the
//! background), business pushes and broadcasts ([`deliver`]), the store ([`store`]), request-id
//! idempotency ([`idem`]), seqs ([`seq`]) and changes to stored messages: recall, edit,
//! delete-for-me ([`change`]).

pub mod change;
pub mod conv;
mod deliver;
pub mod idem;
pub mod seq;
pub mod store;

use crate::base::Base;
use crate::batch::Batcher;
use crate::db;
use crate::error::{Error, Result};
use crate::groups::Groups;
use crate::ids::Segment;
use crate::limits::Limits;
use crate::metrics::{KindLabel, Metrics};
use crate::policy::Policies;
use crate::push::{Nodes, PushJob, Spawner};
use crate::users::Users;
use crate::validate;
use gim_common::config::LogicSection;
use gim_common::{AppId, DeviceId, GimCode, GroupId, MessageId, Seq, UserId, now_ms};
use gim_proto::connect::v1::{MessageItem, MessageStatus, ReceiverType};
use gim_proto::logic::v1 as pb;
use idem::{ReqKey, idempotency_key, sender_parts};
use prost::Message as _;
use seq::{Alloc, Gate, ListId, SeqAllocator};
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;
use store::{StoreJob, StoreResult};

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    User {
        user: UserId,
        device: DeviceId,
    },
    /// A business server; `id` is the identity shown as sender_id (0 = the app itself).
    Business {
        id: i64,
    },
}

/// Where the copies of one send go.
enum Target {
    /// Write diffusion: one copy per user list (receiver, sender, or every group member).
    Users(Vec<UserId>),
    /// Read diffusion: one copy in the large group's list.
    Group(GroupId),
}

pub struct Messages {
    cfg: LogicSection,
    pool: MySqlPool,
    metrics: Arc<Metrics>,
    users: Arc<Users>,
    groups: Arc<Groups>,
    policies: Arc<Policies>,
    limits: Arc<Limits>,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    pub seqs: SeqAllocator,
    ids: Segment,
    deadline: Duration,
    /// Message rows of concurrent sends, stored in shared transactions.
    stores: Batcher<StoreJob, StoreResult>,
    /// Idempotency pre-checks of concurrent sends, one query for many keys.
    firsts: Batcher<(AppId, ReqKey), StoreResult>,
    /// Write-diffusion pushes of concurrent sends, one route lookup and one call per node each.
    pushes: Arc<Batcher<PushJob, ()>>,
    /// Each app's recall window in seconds (`app.recall_window_secs`).
    windows: crate::cache::TtlCache<AppId, i64>,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Messages")
    }
}

impl Messages {
    pub fn new(
        b: &Base,
        users: Arc<Users>,
        groups: Arc<Groups>,
        policies: Arc<Policies>,
        limits: Arc<Limits>,
    ) -> Self {
        let d = b.clone();
        let seqs = SeqAllocator::new(
            d.redis,
            d.pool.clone(),
            d.scripts,
            d.cfg.seq_block_size,
            d.metrics.clone(),
            d.deadline,
        );
        let stores = {
            let metrics = d.metrics.clone();
            db::batcher(
                "stores",
                &d.pool,
                &d.metrics,
                d.deadline,
                store::STORE_CONCURRENCY,
                move |pool, jobs| {
                    let metrics = metrics.clone();
                    async move {
                        let t = std::time::Instant::now();
                        let r = store::store_batch(pool, jobs).await;
                        metrics.stage("store_batch", t);
                        r
                    }
                },
            )
        };
        let firsts = db::batcher(
            "firsts",
            &d.pool,
            &d.metrics,
            d.deadline,
            db::BATCH_CONCURRENCY,
            idem::first_results,
        );
        let pushes = {
            let nodes = d.nodes.clone();
            let metrics = d.metrics.clone();
            Arc::new(Batcher::spawn(
                db::BATCH_MAX,
                db::BATCH_CONCURRENCY,
                move |jobs| {
                    let (nodes, metrics) = (nodes.clone(), metrics.clone());
                    metrics.batch("pushes", jobs.len());
                    async move {
                        let t = std::time::Instant::now();
                        let r = nodes.deliver_jobs(jobs).await;
                        metrics.stage("push_batch", t);
                        r
                    }
                },
            ))
        };
        Self {
            ids: Segment::new("message", d.deadline),
            deadline: d.deadline,
            cfg: d.cfg,
            pool: d.pool,
            metrics: d.metrics,
            users,
            groups,
            policies,
            limits,
            nodes: d.nodes,
            spawner: d.spawner,
            seqs,
            stores,
            firsts,
            pushes,
            windows: crate::cache::TtlCache::new(Duration::from_secs(60), 10_000),
        }
    }

    pub async fn send(
        &self,
        app: AppId,
        sender: Sender,
        req: pb::SendMessageReq,
    ) -> Result<pb::SendMessageResp> {
        let t = std::time::Instant::now();
        let user_sender = matches!(sender, Sender::User { .. });
        let rt = ReceiverType::try_from(req.receiver_type)
            .ok()
            .filter(|t| *t != ReceiverType::Unknown)
            .ok_or_else(|| {
                Error::bad_request(
                    "receiver_type",
                    format!("unknown value {}", req.receiver_type),
                )
            })?;
        validate::id("receiver_id", req.receiver_id)?;
        validate::body(
            req.message_body.as_ref(),
            self.cfg.max_body_bytes,
            user_sender,
        )?;
        let mentions = validate::mentions(&req.to_user_ids, self.cfg.max_mentions)?;
        if req.client_request_id < 0 {
            return Err(Error::bad_request(
                "client_request_id",
                "must not be negative",
            ));
        }
        if req.send_time < 0 {
            return Err(Error::bad_request("send_time", "must not be negative"));
        }
        if let Sender::Business { id } = sender
            && id < 0
        {
            return Err(Error::bad_request("sender_id", "must not be negative"));
        }
        // The app's and the sender's rules (cached; a sign-in loaded the sender's): 1021, 1022.
        match sender {
            Sender::User { user, .. } => {
                self.policies.require_user_active(app, user).await?;
            }
            Sender::Business { .. } => {
                self.policies.require_app_active(app).await?;
            }
        }
        let (target, group_kind_ok) = match rt {
            ReceiverType::User => {
                let receiver = UserId(req.receiver_id);
                self.users
                    .users_exist(app, "receiver_id", &[receiver.0])
                    .await?;
                // A user's 1:1 send to someone who blocked them: 1020. Business sends are not
                // users' and are never blocked.
                if let Sender::User { user, .. } = sender {
                    self.policies
                        .require_not_blocked(app, receiver, user)
                        .await?;
                }
                let mut users = vec![receiver];
                if let Sender::User { user, .. } = sender
                    && user != receiver
                {
                    users.push(user);
                }
                (Target::Users(users), true)
            }
            ReceiverType::NormalGroup | ReceiverType::LargeGroup => {
                let g = self.groups.group(app, GroupId(req.receiver_id)).await?;
                let ok = g.is_large() == (rt == ReceiverType::LargeGroup);
                if ok && let Sender::User { user, .. } = sender {
                    self.groups
                        .is_member(app, &g, user)
                        .await?
                        .then_some(())
                        .ok_or_else(|| Error::from(GimCode::NotInGroup))?;
                }
                if g.is_large() {
                    (Target::Group(g.id), ok)
                } else {
                    let members = self.groups.member_ids(app, g.id).await?;
                    (
                        Target::Users(members.iter().map(|m| UserId(*m)).collect()),
                        ok,
                    )
                }
            }
            ReceiverType::Unknown => unreachable!("filtered above"),
        };
        if !group_kind_ok {
            return Err(Error::bad_request(
                "receiver_type",
                "does not match the group's type",
            ));
        }
        // A user's send rate (1011 over it). A persisted send into user lists checks it in the
        // seq allocation script of the sender's own list (no extra round trip); other sends
        // (a large group's list, not persisted) check it here, before any MySQL read.
        let mut rate = match sender {
            Sender::User { user, .. } => self.limits.send_rate(app, user).await?,
            Sender::Business { .. } => None,
        };
        let rides = req.is_persist && matches!(target, Target::Users(_));
        if !rides
            && let Some(r) = rate.take()
            && let Some(ms) = self.seqs.check_rate(&r).await?
        {
            return Err(self.limits.refuse_send(app, ms));
        }
        let (sender_type, sender_id, sender_device) = sender_parts(sender);
        let idem = idempotency_key(sender_device, req.client_request_id);
        let t = self.metrics.stage("lookup", t);
        let req_key = (sender_type as i8, sender_id, idem);
        // A user's send into user lists (1:1, normal groups) tells a first send from a possible
        // retry with a Redis mark set by the seq allocation itself (see `alloc_gated`); only a
        // request whose mark exists pays the MySQL look-up. Other keyed sends look up first.
        let mark = match (&target, sender) {
            (Target::Users(users), Sender::User { user, device })
                if req.is_persist && req.client_request_id != 0 =>
            {
                users.iter().position(|u| *u == user).map(|i| {
                    (
                        crate::rds::request_mark_key(app, user, device.0, req.client_request_id),
                        i,
                    )
                })
            }
            _ => None,
        };
        if req.is_persist
            && req.client_request_id != 0
            && mark.is_none()
            && let Some(first) = self.first_result(app, req_key).await?
        {
            // A retry: answer from the first send before allocating anything, so retries leave
            // no gaps in the seq lists. Concurrent retries are caught by the claim below.
            return self
                .same_as_first(app, sender, rt, &req, &target, first)
                .await;
        }
        let t = self.metrics.stage("precheck", t);
        let message_id: MessageId = self.ids.next(&self.pool).await?;
        let mut item = MessageItem {
            request_id: req.client_request_id,
            sender_type: sender_type as i32,
            sender_id,
            sender_device_id: sender_device,
            receiver_type: rt as i32,
            receiver_id: req.receiver_id,
            to_user_ids: req.to_user_ids.clone(),
            message_body: req.message_body.clone(),
            seq: 0,
            send_time: if req.send_time > 0 {
                req.send_time
            } else {
                now_ms()
            },
            status: MessageStatus::Normal as i32,
            message_id: message_id.get(),
            edit_version: 0,
        };
        let exclude = match sender {
            Sender::User { device, .. } => Some(device),
            Sender::Business { .. } => None,
        };

        if !req.is_persist {
            // Not stored, seq 0, online devices only (typing notices).
            self.push(app, &target, item, &[], exclude).await;
            return Ok(pb::SendMessageResp {
                seq: 0,
                message_id: message_id.get(),
            });
        }

        let body = item
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        match &target {
            Target::Users(users) => {
                let lists: Vec<(ListId, i64)> =
                    users.iter().map(|u| (ListId::User(app, *u), 1)).collect();
                let with = match (&mark, sender) {
                    (Some((_, i)), _) => Some(*i),
                    (None, Sender::User { user, .. }) => users.iter().position(|u| *u == user),
                    (None, Sender::Business { .. }) => None,
                };
                let gate = with
                    .filter(|_| rate.is_some() || mark.is_some())
                    .map(|with| Gate {
                        rate: rate.take(),
                        mark: mark.as_ref().map(|(k, _)| k.as_str()),
                        with,
                    });
                // Not reached for a user's send (the sender's list is always among them).
                if let Some(r) = rate.take()
                    && let Some(ms) = self.seqs.check_rate(&r).await?
                {
                    return Err(self.limits.refuse_send(app, ms));
                }
                let seqs = match gate {
                    Some(gate) => match self.seqs.alloc_gated(&lists, gate).await? {
                        Alloc::Seqs(seqs) => seqs,
                        Alloc::Limited(ms) => return Err(self.limits.refuse_send(app, ms)),
                        Alloc::Seen => {
                            // Seen before: a retry of a stored send gets its first result; one
                            // whose first attempt is still running or failed goes on (the claim
                            // in the store settles a race).
                            if let Some(first) = self.first_result(app, req_key).await? {
                                return self
                                    .same_as_first(app, sender, rt, &req, &target, first)
                                    .await;
                            }
                            self.seqs.alloc(&lists).await?
                        }
                    },
                    None => self.seqs.alloc(&lists).await?,
                };
                let t = self.metrics.stage("seq", t);
                let rows: Vec<(UserId, Seq)> =
                    users.iter().copied().zip(seqs.iter().copied()).collect();
                let sender_seq = match sender {
                    Sender::User { user, .. } => rows
                        .iter()
                        .find(|(u, _)| *u == user)
                        .map(|r| r.1)
                        .unwrap_or_default(),
                    Sender::Business { .. } => Seq(0),
                };
                let req_key = (req.client_request_id != 0).then_some(req_key);
                let (msg_type, preview) = conv::preview(item.message_body.as_ref());
                let job = store::StoreJob {
                    app,
                    item: MessageItem {
                        message_body: None,
                        to_user_ids: vec![],
                        ..item.clone()
                    },
                    mentions,
                    body,
                    rows: rows.clone(),
                    req_key,
                    sender_seq,
                    receiver_is_owner: false,
                    msg_type,
                    preview,
                };
                if let Some(first) = self.store_user_rows(job).await? {
                    return self
                        .same_as_first(app, sender, rt, &req, &target, first)
                        .await;
                }
                let t = self.metrics.stage("store", t);
                self.metrics
                    .messages_stored
                    .get_or_create(&KindLabel { kind: "user" })
                    .inc_by(rows.len() as u64);
                self.push(app, &target, item, &rows, exclude).await;
                self.metrics.stage("push_queue", t);
                Ok(pb::SendMessageResp {
                    seq: sender_seq.get(),
                    message_id: message_id.get(),
                })
            }
            Target::Group(gid) => {
                let seq = self.seqs.alloc(&[(ListId::Group(app, *gid), 1)]).await?[0];
                item.seq = seq.get();
                let req_key = (req.client_request_id != 0).then_some(req_key);
                let job = store::GroupJob {
                    app,
                    group: *gid,
                    item: &item,
                    mentions: &mentions,
                    body: &body,
                    req_key,
                };
                if let Some(first) =
                    db::deadline(self.deadline, store::store_group(&self.pool, job)).await?
                {
                    return self
                        .same_as_first(app, sender, rt, &req, &target, first)
                        .await;
                }
                self.metrics
                    .messages_stored
                    .get_or_create(&KindLabel { kind: "group" })
                    .inc();
                self.push(app, &target, item, &[], exclude).await;
                Ok(pb::SendMessageResp {
                    seq: seq.get(),
                    message_id: message_id.get(),
                })
            }
        }
    }
}
