//! Pushes after a store (write diffusion through the push batcher, large groups by broadcast),
//! and the business server's PushToUsers and Broadcast.

use super::idem::reused_request_id;
use super::seq::ListId;
use super::store::StoreJob;
use super::{Messages, Target};
use crate::db;
use crate::error::{Error, Result};
use crate::metrics::KindLabel;
use crate::push::{PushJob, TRACE_ID};
use crate::validate;
use gim_common::{AppId, DeviceId, MessageId, Seq, UserId, now_ms};
use gim_proto::conn::v1::BroadcastLargeGroupReq;
use gim_proto::connect::v1::{MessageItem, MessageStatus, ReceiverType, SenderType};
use gim_proto::logic::v1 as pb;
use prost::Message as _;
use sqlx::{MySql, QueryBuilder};

impl Messages {
    /// Background push after the store. `rows` carries each owner's seq; for non-persistent
    /// sends (empty `rows`) every copy has seq 0.
    pub(super) async fn push(
        &self,
        app: AppId,
        target: &Target,
        item: MessageItem,
        rows: &[(UserId, Seq)],
        exclude: Option<DeviceId>,
    ) {
        let nodes = self.nodes.clone();
        match target {
            Target::Users(users) => {
                let copies: Vec<(UserId, Seq)> = if rows.is_empty() {
                    users.iter().map(|u| (*u, Seq(0))).collect()
                } else {
                    rows.to_vec()
                };
                let job = PushJob {
                    app,
                    item,
                    copies,
                    exclude,
                    trace: TRACE_ID.try_with(|t| t.clone()).ok(),
                };
                let pushes = self.pushes.clone();
                self.spawner
                    .spawn(async move {
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
                self.spawner
                    .spawn(async move {
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
        self.policies.require_app_active(app).await?;
        validate::ids("user_ids", &req.user_ids, validate::IDS_MAX)?;
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
        self.users
            .users_exist(app, "user_ids", &req.user_ids)
            .await?;
        let users: Vec<UserId> = req.user_ids.iter().map(|u| UserId(*u)).collect();
        let business = SenderType::Business as i8;
        if req.is_persist
            && req.client_request_id != 0
            && let Some(first) = self
                .first_result(app, (business, req.sender_id, req.client_request_id))
                .await?
        {
            return self
                .first_push_result(app, &users, MessageId(first.message_id), &req)
                .await;
        }
        let message_id: MessageId = self.ids.next(&self.pool).await?;
        let base = MessageItem {
            request_id: req.client_request_id,
            sender_type: SenderType::Business as i32,
            sender_id: req.sender_id,
            sender_device_id: 0,
            receiver_type: ReceiverType::User as i32,
            receiver_id: 0,
            to_user_ids: vec![],
            message_body: req.message_body.clone(),
            seq: 0,
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id: message_id.get(),
            edit_version: 0,
        };
        if !req.is_persist {
            let items: Vec<MessageItem> = users
                .iter()
                .map(|u| MessageItem {
                    receiver_id: u.0,
                    ..base.clone()
                })
                .collect();
            let copies: Vec<(UserId, Seq)> = users.iter().map(|u| (*u, Seq(0))).collect();
            self.spawn_deliver_many(app, items, copies).await;
            return Ok(pb::PushToUsersResp {
                seqs: vec![0; users.len()],
                message_id: message_id.get(),
            });
        }
        let lists: Vec<(ListId, i64)> = users.iter().map(|u| (ListId::User(app, *u), 1)).collect();
        let seqs = self.seqs.alloc(&lists).await?;
        let body = base
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        let rows: Vec<(UserId, Seq)> = users.iter().copied().zip(seqs.iter().copied()).collect();
        let (msg_type, preview) = super::conv::preview(base.message_body.as_ref());
        let job = StoreJob {
            app,
            item: MessageItem {
                message_body: None,
                ..base.clone()
            },
            mentions: String::new(),
            body,
            rows: rows.clone(),
            req_key: (req.client_request_id != 0).then_some((
                business,
                req.sender_id,
                req.client_request_id,
            )),
            sender_seq: Seq(0),
            receiver_is_owner: true,
            msg_type,
            preview,
        };
        if let Some(first) = self.store_user_rows(job).await? {
            return self
                .first_push_result(app, &users, MessageId(first.message_id), &req)
                .await;
        }
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
        self.spawn_deliver_many(app, items, rows).await;
        Ok(pb::PushToUsersResp {
            seqs: seqs.iter().map(|s| s.get()).collect(),
            message_id: message_id.get(),
        })
    }

    /// The result of the first PushToUsers with this request id: its copies' seqs. A request
    /// that does not repeat the first (a user the first did not reach, another body) gets
    /// [`reused_request_id`] instead of a result that would claim it was stored.
    async fn first_push_result(
        &self,
        app: AppId,
        users: &[UserId],
        message_id: MessageId,
        req: &pb::PushToUsersReq,
    ) -> Result<pb::PushToUsersResp> {
        let mut qb = QueryBuilder::<MySql>::new(
            "SELECT user_id, seq, receiver_type, body FROM user_message WHERE app_id = ",
        );
        qb.push_bind(app.0).push(" AND user_id");
        db::push_in(&mut qb, users.iter().map(|u| u.0));
        qb.push(" AND message_id = ").push_bind(message_id.get());
        let rows: Vec<(i64, i64, i8, Vec<u8>)> = qb
            .build_query_as()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let body = req
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        let same = rows.len() == users.len()
            && rows
                .iter()
                .all(|(_, _, t, b)| *t == ReceiverType::User as i8 && *b == body);
        if !same {
            return Err(reused_request_id());
        }
        let m: std::collections::HashMap<i64, i64> =
            rows.into_iter().map(|(u, s, _, _)| (u, s)).collect();
        Ok(pb::PushToUsersResp {
            seqs: users
                .iter()
                .map(|u| m.get(&u.0).copied().unwrap_or(0))
                .collect(),
            message_id: message_id.get(),
        })
    }

    /// Per-user items (each names its receiver), one DeliverBatch per node for all of them.
    async fn spawn_deliver_many(
        &self,
        app: AppId,
        items: Vec<MessageItem>,
        copies: Vec<(UserId, Seq)>,
    ) {
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                if let Err(e) = nodes.deliver_each(app, items, &copies).await {
                    tracing::warn!(error = %e.chain(), "push: route lookup failed");
                }
            })
            .await;
    }

    /// LogicServerExt.Broadcast: non-persistent, every online device of the app.
    pub async fn broadcast(&self, app: AppId, req: pb::BroadcastReq) -> Result<i32> {
        self.policies.require_app_active(app).await?;
        validate::body(req.message_body.as_ref(), self.cfg.max_body_bytes, false)?;
        if req.sender_id < 0 {
            return Err(Error::bad_request("sender_id", "must not be negative"));
        }
        let item = MessageItem {
            sender_type: SenderType::Business as i32,
            sender_id: req.sender_id,
            message_body: req.message_body,
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id: self.ids.next::<MessageId>(&self.pool).await?.get(),
            ..Default::default()
        };
        Ok(self.nodes.broadcast_app(app, item).await? as i32)
    }
}
