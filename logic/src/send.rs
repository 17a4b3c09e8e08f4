//! Sends: store first (one multi-row INSERT per list kind, seqs allocated in one batch), then push
//! in the background. Idempotent on (sender, client request id) through `send_request`.

use crate::core::{Sender, State};
use crate::error::{Error, Result};
use crate::metrics::KindLabel;
use crate::seq::ListId;
use crate::validate;
use gim_common::{AppId, GimCode, GroupId, UserId, now_ms};
use gim_proto::conn::v1::BroadcastLargeGroupReq;
use gim_proto::connect::v1::{MessageItem, MessageStatus, ReceiverType};
use gim_proto::logic::v1 as pb;
use prost::Message as _;
use sqlx::{MySql, QueryBuilder};

use crate::store::INSERT_CHUNK;

/// Where the copies of one send go.
enum Target {
    /// Write diffusion: one copy per user list (receiver, sender, or every group member).
    Users(Vec<UserId>),
    /// Read diffusion: one copy in the large group's list.
    Group(GroupId),
}

impl State {
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
        let (target, group_kind_ok) = match rt {
            ReceiverType::User => {
                let receiver = UserId(req.receiver_id);
                self.users_exist(app, "receiver_id", &[receiver.0]).await?;
                let mut users = vec![receiver];
                if let Sender::User { user, .. } = sender
                    && user != receiver
                {
                    users.push(user);
                }
                (Target::Users(users), true)
            }
            ReceiverType::NormalGroup | ReceiverType::LargeGroup => {
                let g = self.group(app, GroupId(req.receiver_id)).await?;
                let ok = g.is_large() == (rt == ReceiverType::LargeGroup);
                if ok && let Sender::User { user, .. } = sender {
                    self.is_member(app, &g, user)
                        .await?
                        .then_some(())
                        .ok_or_else(|| Error::from(GimCode::NotInGroup))?;
                }
                if g.is_large() {
                    (Target::Group(g.id), ok)
                } else {
                    let members = self.member_ids(app, g.id).await?;
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
        let (sender_type, sender_id, sender_device) = sender_parts(sender);
        let idem = idempotency_key(sender_device, req.client_request_id);
        let t = self.metrics.stage("lookup", t);
        let req_key = (sender_type as i8, sender_id, idem);
        // A user's send into user lists (1:1, normal groups) tells a first send from a possible
        // retry with a Redis mark set by the seq allocation itself (see `alloc_marked`); only a
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
            return Ok(first);
        }
        let t = self.metrics.stage("precheck", t);
        let message_id = self.next_message_id().await?;
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
            message_id,
        };
        let exclude = match sender {
            Sender::User { device, .. } => Some(device),
            Sender::Business { .. } => None,
        };

        if !req.is_persist {
            // Not stored, seq 0, online devices only (typing notices).
            self.push(app, &target, item, &[], exclude).await;
            return Ok(pb::SendMessageResp { seq: 0, message_id });
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
                let seqs = match &mark {
                    Some((key, i)) => match self.seqs.alloc_marked(&lists, (key, *i)).await? {
                        Some(seqs) => seqs,
                        None => {
                            // Seen before: a retry of a stored send gets its first result; one
                            // whose first attempt is still running or failed goes on (the claim
                            // in the store settles a race).
                            if let Some(first) = self.first_result(app, req_key).await? {
                                return Ok(first);
                            }
                            self.seqs.alloc(&lists).await?
                        }
                    },
                    None => self.seqs.alloc(&lists).await?,
                };
                let t = self.metrics.stage("seq", t);
                let rows: Vec<(UserId, i64)> =
                    users.iter().copied().zip(seqs.iter().copied()).collect();
                let sender_seq = match sender {
                    Sender::User { user, .. } => rows
                        .iter()
                        .find(|(u, _)| *u == user)
                        .map(|r| r.1)
                        .unwrap_or(0),
                    Sender::Business { .. } => 0,
                };
                let req_key = (req.client_request_id != 0).then_some(req_key);
                let job = crate::store::StoreJob {
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
                };
                if let Some(first) = self.store_user_rows(job).await? {
                    return Ok(first);
                }
                let t = self.metrics.stage("store", t);
                self.metrics
                    .messages_stored
                    .get_or_create(&KindLabel { kind: "user" })
                    .inc_by(rows.len() as u64);
                self.push(app, &target, item, &rows, exclude).await;
                self.metrics.stage("push_queue", t);
                Ok(pb::SendMessageResp {
                    seq: sender_seq,
                    message_id,
                })
            }
            Target::Group(gid) => {
                let seq = self.seqs.alloc(&[(ListId::Group(app, *gid), 1)]).await?[0];
                item.seq = seq;
                let req_key = (req.client_request_id != 0).then_some(req_key);
                if let Some(first) = self
                    .store_group_row(app, *gid, &item, &mentions, &body, req_key)
                    .await?
                {
                    return Ok(first);
                }
                self.metrics
                    .messages_stored
                    .get_or_create(&KindLabel { kind: "group" })
                    .inc();
                self.push(app, &target, item, &[], exclude).await;
                Ok(pb::SendMessageResp { seq, message_id })
            }
        }
    }

    async fn store_group_row(
        &self,
        app: AppId,
        gid: GroupId,
        item: &MessageItem,
        mentions: &str,
        body: &[u8],
        req_key: Option<(i8, i64, i64)>,
    ) -> Result<Option<pb::SendMessageResp>> {
        let q = sqlx::query(
            "INSERT INTO group_message (app_id, group_id, seq, message_id, request_id, sender_type, sender_id, \
             sender_device_id, to_user_ids, body, send_time, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(item.seq)
        .bind(item.message_id)
        .bind(item.request_id)
        .bind(item.sender_type as i8)
        .bind(item.sender_id)
        .bind(item.sender_device_id)
        .bind(mentions)
        .bind(body)
        .bind(item.send_time)
        .bind(item.status as i8);
        let Some(k) = req_key else {
            q.execute(&self.pool).await?;
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        if let Some(first) = crate::store::claim(&mut tx, app, k, item.message_id, item.seq).await?
        {
            return Ok(Some(first));
        }
        q.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(None)
    }

    /// The first result of a request key, if it was used before (batched with concurrent sends).
    async fn first_result(
        &self,
        app: AppId,
        key: crate::store::ReqKey,
    ) -> Result<Option<pb::SendMessageResp>> {
        self.firsts.try_call((app, key), "store batcher").await
    }

    /// Stores one message's user-list copies: small messages through the batcher (shared
    /// transactions with concurrent sends), large ones on their own.
    async fn store_user_rows(
        &self,
        job: crate::store::StoreJob,
    ) -> Result<Option<pb::SendMessageResp>> {
        if job.rows.len() > crate::store::BATCH_ROWS_MAX {
            return crate::store::store_one(&self.pool, &job).await;
        }
        self.stores.try_call(job, "store batcher").await
    }

    /// Background push after the store. `rows` carries each owner's seq; for non-persistent
    /// sends (empty `rows`) every copy has seq 0.
    async fn push(
        &self,
        app: AppId,
        target: &Target,
        item: MessageItem,
        rows: &[(UserId, i64)],
        exclude: Option<gim_common::DeviceId>,
    ) {
        let nodes = self.nodes.clone();
        match target {
            Target::Users(users) => {
                let copies: Vec<(UserId, i64)> = if rows.is_empty() {
                    users.iter().map(|u| (*u, 0)).collect()
                } else {
                    rows.to_vec()
                };
                let job = crate::push::PushJob {
                    app,
                    item,
                    copies,
                    exclude,
                    trace: crate::push::TRACE_ID.try_with(|t| t.clone()).ok(),
                };
                let pushes = self.pushes.clone();
                self.spawn_push(async move {
                    // Batched with concurrent sends' pushes.
                    let _ = pushes.call(job).await;
                })
                .await;
            }
            Target::Group(gid) => {
                let req = BroadcastLargeGroupReq {
                    app_id: app.0,
                    group_id: gid.0,
                    message: Some(item),
                    exclude_device_id: exclude.map(|d| d.0).unwrap_or(0),
                };
                self.spawn_push(async move {
                    if let Err(e) = nodes.broadcast_large_group(req).await {
                        tracing::warn!(error = %e.chain(), "push: registry lookup failed");
                    }
                })
                .await;
            }
        }
    }

    /// LogicServerExt.PushToUsers: one copy per listed user (each its own seq), as BUSINESS.
    pub async fn push_to_users(
        &self,
        app: AppId,
        req: pb::PushToUsersReq,
    ) -> Result<pb::PushToUsersResp> {
        if req.user_ids.is_empty() {
            return Err(Error::bad_request("user_ids", "must not be empty"));
        }
        validate::ids("user_ids", &req.user_ids, crate::validate::IDS_MAX)?;
        validate::body(req.message_body.as_ref(), self.cfg.max_body_bytes, false)?;
        if req.client_request_id < 0 {
            return Err(Error::bad_request(
                "client_request_id",
                "must not be negative",
            ));
        }
        if req.sender_id < 0 {
            return Err(Error::bad_request("sender_id", "must not be negative"));
        }
        self.users_exist(app, "user_ids", &req.user_ids).await?;
        let users: Vec<UserId> = req.user_ids.iter().map(|u| UserId(*u)).collect();
        let business = gim_proto::connect::v1::SenderType::Business as i8;
        if req.is_persist
            && req.client_request_id != 0
            && let Some(first) = self
                .first_result(app, (business, req.sender_id, req.client_request_id))
                .await?
        {
            return self.first_push_result(app, &users, first.message_id).await;
        }
        let message_id = self.next_message_id().await?;
        let base = MessageItem {
            request_id: req.client_request_id,
            sender_type: gim_proto::connect::v1::SenderType::Business as i32,
            sender_id: req.sender_id,
            sender_device_id: 0,
            receiver_type: ReceiverType::User as i32,
            receiver_id: 0,
            to_user_ids: vec![],
            message_body: req.message_body.clone(),
            seq: 0,
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id,
        };
        if !req.is_persist {
            let items: Vec<MessageItem> = users
                .iter()
                .map(|u| MessageItem {
                    receiver_id: u.0,
                    ..base.clone()
                })
                .collect();
            let copies: Vec<(UserId, i64)> = users.iter().map(|u| (*u, 0)).collect();
            self.spawn_deliver_many(app, items, copies).await;
            return Ok(pb::PushToUsersResp {
                seqs: vec![0; users.len()],
                message_id,
            });
        }
        let lists: Vec<(ListId, i64)> = users.iter().map(|u| (ListId::User(app, *u), 1)).collect();
        let seqs = self.seqs.alloc(&lists).await?;
        let body = base
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        let mut tx = self.pool.begin().await?;
        if req.client_request_id != 0 {
            let key = (
                gim_proto::connect::v1::SenderType::Business as i8,
                req.sender_id,
                req.client_request_id,
            );
            if let Some(first) = crate::store::claim(&mut tx, app, key, message_id, 0).await? {
                tx.rollback().await?;
                return self.first_push_result(app, &users, first.message_id).await;
            }
        }
        for (chunk_users, chunk_seqs) in users.chunks(INSERT_CHUNK).zip(seqs.chunks(INSERT_CHUNK)) {
            let mut qb = QueryBuilder::<MySql>::new(
                "INSERT INTO user_message (app_id, user_id, seq, message_id, request_id, sender_type, sender_id, \
                 sender_device_id, receiver_type, receiver_id, to_user_ids, body, send_time, status) ",
            );
            qb.push_values(chunk_users.iter().zip(chunk_seqs), |mut b, (u, seq)| {
                b.push_bind(app.0)
                    .push_bind(u.0)
                    .push_bind(*seq)
                    .push_bind(message_id)
                    .push_bind(base.request_id)
                    .push_bind(base.sender_type as i8)
                    .push_bind(base.sender_id)
                    .push_bind(0i64)
                    .push_bind(ReceiverType::User as i8)
                    .push_bind(u.0)
                    .push_bind("")
                    .push_bind(body.clone())
                    .push_bind(base.send_time)
                    .push_bind(base.status as i8);
            });
            qb.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.metrics
            .messages_stored
            .get_or_create(&KindLabel { kind: "user" })
            .inc_by(users.len() as u64);
        let items: Vec<MessageItem> = users
            .iter()
            .map(|u| MessageItem {
                receiver_id: u.0,
                ..base.clone()
            })
            .collect();
        let copies: Vec<(UserId, i64)> = users.iter().copied().zip(seqs.iter().copied()).collect();
        self.spawn_deliver_many(app, items, copies).await;
        Ok(pb::PushToUsersResp { seqs, message_id })
    }

    /// The result of the first PushToUsers with this request id: its copies' seqs.
    async fn first_push_result(
        &self,
        app: AppId,
        users: &[UserId],
        message_id: i64,
    ) -> Result<pb::PushToUsersResp> {
        let mut qb =
            QueryBuilder::<MySql>::new("SELECT user_id, seq FROM user_message WHERE app_id = ");
        qb.push_bind(app.0).push(" AND user_id IN (");
        let mut sep = qb.separated(", ");
        for u in users {
            sep.push_bind(u.0);
        }
        qb.push(") AND message_id = ").push_bind(message_id);
        let rows: Vec<(i64, i64)> = qb
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let m: std::collections::HashMap<i64, i64> = rows.into_iter().collect();
        Ok(pb::PushToUsersResp {
            seqs: users
                .iter()
                .map(|u| m.get(&u.0).copied().unwrap_or(0))
                .collect(),
            message_id,
        })
    }

    /// Per-user items (each names its receiver), one DeliverBatch per node for all of them.
    async fn spawn_deliver_many(
        &self,
        app: AppId,
        items: Vec<MessageItem>,
        copies: Vec<(UserId, i64)>,
    ) {
        let nodes = self.nodes.clone();
        self.spawn_push(async move {
            if let Err(e) = nodes.deliver_each(app, items, &copies).await {
                tracing::warn!(error = %e.chain(), "push: route lookup failed");
            }
        })
        .await;
    }

    /// LogicServerExt.Broadcast: non-persistent, every online device of the app.
    pub async fn broadcast(&self, app: AppId, req: pb::BroadcastReq) -> Result<i32> {
        validate::body(req.message_body.as_ref(), self.cfg.max_body_bytes, false)?;
        if req.sender_id < 0 {
            return Err(Error::bad_request("sender_id", "must not be negative"));
        }
        let item = MessageItem {
            sender_type: gim_proto::connect::v1::SenderType::Business as i32,
            sender_id: req.sender_id,
            message_body: req.message_body,
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id: self.next_message_id().await?,
            ..Default::default()
        };
        Ok(self.nodes.broadcast_app(app, item).await? as i32)
    }
}

/// The `send_request` key of a client request id. A retry always comes from the device that
/// sent first, and two devices of one user may well pick the same ids (counters seeded from the
/// clock), so a user's key is scoped to the device: the id is mixed with the device id (the
/// schema keys on the sender only). Business senders (device 0) keep the id as given.
fn idempotency_key(device: i64, request_id: i64) -> i64 {
    if device == 0 || request_id == 0 {
        return request_id;
    }
    // splitmix64 finaliser over (device, id): distinct pairs collide with probability ~2^-63.
    let mut z = (request_id as u64) ^ (device as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Never 0 (0 means "no key").
    ((z >> 1) as i64).max(1)
}

fn sender_parts(s: Sender) -> (gim_proto::connect::v1::SenderType, i64, i64) {
    use gim_proto::connect::v1::SenderType;
    match s {
        Sender::User { user, device } => (SenderType::User, user.0, device.0),
        Sender::Business { id } => (SenderType::Business, id, 0),
    }
}
