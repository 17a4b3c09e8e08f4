//! Changes to stored messages: recall (every copy loses its body, status RECALL), edit (every copy
//! gets the new body and a higher edit version) and delete-for-me (the caller's copy becomes a
//! DELETED tombstone without a body, kept so its list's seqs stay contiguous). Each changed list
//! gets a new seq carrying a notice (sender SYSTEM, a [`ConversationCommand`]), so offline devices
//! learn the change at sync; online devices get it pushed. The copies, the owners' conversation
//! rows (unread counts, previews, versions) and the notices change in one transaction.
//!
//! Unread counts: a notice never counts (it has sender SYSTEM); a recalled or deleted copy that
//! was unread (not the owner's, above the read seq) stops counting; an edit changes no count.

use super::seq::ListId;
use super::{Messages, Sender};
use crate::db::INSERT_CHUNK;
use crate::db::rows::USER_MESSAGE_INSERT;
use crate::error::{Error, Result};
use crate::push::{PushJob, TRACE_ID};
use crate::validate;
use gim_common::{AppId, DeviceId, GimCode, MessageId, Seq, UserId, now_ms};
use gim_proto::connect::v1::{
    Command, ConversationCommand, MessageBody, MessageChangeInput, MessageChangeNotice,
    MessageChangeOutput, MessageContent, MessageItem, MessageStatus, MessageType, ReceiverType,
    SenderType, message_content,
};
use prost::Message as _;
use sqlx::{MySql, QueryBuilder};

/// A user's recall window when the app sets none, and the longest an app may set (a week).
pub const RECALL_WINDOW_DEFAULT: i64 = 120;
pub const RECALL_WINDOW_MAX: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Recall,
    Edit,
    /// Delete-for-me: the caller's own copy only.
    Delete,
}

impl ChangeKind {
    fn command(self) -> ConversationCommand {
        match self {
            ChangeKind::Recall => ConversationCommand::Recalled,
            ChangeKind::Edit => ConversationCommand::Edited,
            ChangeKind::Delete => ConversationCommand::Deleted,
        }
    }
}

/// One stored copy of the message.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Copy {
    user_id: i64,
    seq: i64,
    sender_type: i8,
    sender_id: i64,
    receiver_type: i8,
    receiver_id: i64,
    peer_type: i8,
    peer_id: i64,
    status: i8,
    edit_version: i64,
    /// Stored within the recall window (by MySQL's clock: a client's send_time is its own).
    in_window: i64,
}

const NORMAL: i8 = MessageStatus::Normal as i8;
const RECALL: i8 = MessageStatus::Recall as i8;
const DELETED: i8 = MessageStatus::Deleted as i8;

impl Messages {
    /// The app's recall window in seconds (cached for a minute).
    pub async fn recall_window(&self, app: AppId) -> Result<i64> {
        if let Some(w) = self.windows.get(&app) {
            return Ok(w);
        }
        let w: Option<i32> =
            sqlx::query_scalar("SELECT recall_window_secs FROM app WHERE app_id = ?")
                .bind(app.0)
                .fetch_optional(&self.pool)
                .await?;
        let w = w.map(i64::from).unwrap_or(RECALL_WINDOW_DEFAULT);
        self.windows.insert(app, w);
        Ok(w)
    }

    /// LogicServerExt.SetRecallWindow (other logic processes see it within their cache's minute).
    pub async fn set_recall_window(&self, app: AppId, secs: i64) -> Result<()> {
        if !(0..=RECALL_WINDOW_MAX).contains(&secs) {
            return Err(Error::bad_request(
                "recall_window_secs",
                format!("must be 0 to {RECALL_WINDOW_MAX}"),
            ));
        }
        sqlx::query("UPDATE app SET recall_window_secs = ? WHERE app_id = ?")
            .bind(secs)
            .bind(app.0)
            .execute(&self.pool)
            .await?;
        self.windows.insert(app, secs);
        Ok(())
    }

    async fn is_group_admin(&self, app: AppId, group: i64, user: UserId) -> Result<bool> {
        let t: Option<i8> = sqlx::query_scalar(
            "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(group)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(t == Some(gim_proto::logic::v1::MemberType::Admin as i8))
    }

    /// Recall, edit or delete-for-me of the message `req.message_id` in user lists. Refusals
    /// (1006, 1012, 1013, 1014) are decided before anything is written.
    pub async fn change(
        &self,
        app: AppId,
        actor: Sender,
        kind: ChangeKind,
        req: MessageChangeInput,
    ) -> Result<MessageChangeOutput> {
        validate::id("message_id", req.message_id)?;
        let user_actor = matches!(actor, Sender::User { .. });
        if kind == ChangeKind::Edit {
            validate::body(
                req.message_body.as_ref(),
                self.cfg.max_body_bytes,
                user_actor,
            )?;
        } else if req.message_body.is_some() {
            return Err(Error::bad_request(
                "message_body",
                "only an edit carries a body",
            ));
        }
        match actor {
            Sender::User { user, .. } => {
                self.policies.require_user_active(app, user).await?;
            }
            Sender::Business { .. } => {
                if kind == ChangeKind::Delete {
                    return Err(Error::bad_request(
                        "message_id",
                        "delete-for-me needs a user",
                    ));
                }
                self.policies.require_app_active(app).await?;
            }
        }
        let window = match actor {
            Sender::User { .. } => self.recall_window(app).await?,
            Sender::Business { .. } => 0,
        };
        let copies: Vec<Copy> = sqlx::query_as(
            "SELECT user_id, seq, sender_type, sender_id, receiver_type, receiver_id, peer_type, \
             peer_id, status, edit_version, \
             CAST(created_at >= NOW(3) - INTERVAL ? SECOND AS SIGNED) AS in_window \
             FROM user_message WHERE app_id = ? AND message_id = ? ORDER BY user_id",
        )
        .bind(window)
        .bind(app.0)
        .bind(req.message_id)
        .fetch_all(&self.pool)
        .await?;
        let Some(first) = copies.first().cloned() else {
            return Err(GimCode::MessageNotFound.into());
        };
        if first.sender_type == SenderType::System as i8 {
            return Err(Error::bad_request(
                "message_id",
                "system notices cannot be changed",
            ));
        }
        let recalled = copies.iter().any(|c| c.status == RECALL);
        if kind == ChangeKind::Edit && recalled {
            return Err(Error::bad_request("message_id", "the message was recalled"));
        }
        let mut targets: Vec<Copy> = match actor {
            Sender::User { user, .. } => {
                // A message not in the caller's list is unknown to the caller.
                let own = copies
                    .iter()
                    .find(|c| c.user_id == user.0)
                    .ok_or(GimCode::MessageNotFound)?;
                if kind == ChangeKind::Delete {
                    if own.status == DELETED {
                        vec![]
                    } else {
                        vec![own.clone()]
                    }
                } else {
                    let sender =
                        first.sender_type == SenderType::User as i8 && first.sender_id == user.0;
                    let admin = first.receiver_type == ReceiverType::NormalGroup as i8
                        && self.is_group_admin(app, first.receiver_id, user).await?;
                    if !admin && !sender {
                        return Err(GimCode::NotMessageSender.into());
                    }
                    if !admin && own.in_window == 0 {
                        return Err(GimCode::RecallWindowPassed.into());
                    }
                    copies.into_iter().filter(|c| c.status == NORMAL).collect()
                }
            }
            Sender::Business { .. } => copies.into_iter().filter(|c| c.status == NORMAL).collect(),
        };
        if targets.is_empty() {
            // Recalled or deleted before: nothing to do.
            return Ok(MessageChangeOutput {
                message_id: req.message_id,
                lists: 0,
                edit_version: first.edit_version,
            });
        }

        let lists: Vec<(ListId, i64)> = targets
            .iter()
            .map(|c| (ListId::User(app, UserId(c.user_id)), 1))
            .collect();
        let seqs = self.seqs.alloc(&lists).await?;
        // One notice message: the same id in every list, as the copies of a send.
        let notice_id: MessageId = self.ids.next(&self.pool).await?;

        let mut tx = self
            .pool
            .begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN")
            .await?;
        // Locks the copies (delete-for-me: the caller's): a concurrent change waits here.
        let only = match (kind, actor) {
            (ChangeKind::Delete, Sender::User { user, .. }) => user.0,
            _ => 0,
        };
        let locked: Vec<(i64, i8, i64)> = sqlx::query_as(
            "SELECT user_id, status, edit_version FROM user_message WHERE app_id = ? \
             AND message_id = ? AND (? = 0 OR user_id = ?) ORDER BY user_id FOR UPDATE",
        )
        .bind(app.0)
        .bind(req.message_id)
        .bind(only)
        .bind(only)
        .fetch_all(&mut *tx)
        .await?;
        // What changed since the first read is left alone (its seq stays unused).
        let mut pairs: Vec<(Copy, Seq)> = Vec::with_capacity(targets.len());
        for (mut c, s) in targets.drain(..).zip(seqs) {
            if let Some(&(_, status, ev)) = locked.iter().find(|l| l.0 == c.user_id) {
                let still = match kind {
                    ChangeKind::Delete => status != DELETED,
                    _ => status == NORMAL,
                };
                if still {
                    c.status = status;
                    c.edit_version = ev;
                    pairs.push((c, s));
                }
            }
        }
        let edit_version = pairs.iter().map(|p| p.0.edit_version).max().unwrap_or(0)
            + i64::from(kind == ChangeKind::Edit);
        let body = req
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        let (msg_type, preview) = super::conv::preview(req.message_body.as_ref());
        // The locked copies still to change, in one statement: statuses only ever leave NORMAL
        // and a message's copies commit together, so the condition selects exactly `pairs`.
        let q = match kind {
            ChangeKind::Recall => sqlx::query(
                "UPDATE user_message SET status = 2, body = X'', to_user_ids = '' \
                 WHERE app_id = ? AND message_id = ? AND status = 1",
            ),
            ChangeKind::Edit => sqlx::query(
                "UPDATE user_message SET body = ?, edit_version = ? \
                 WHERE app_id = ? AND message_id = ? AND status = 1",
            )
            .bind(&body)
            .bind(edit_version),
            ChangeKind::Delete => sqlx::query(
                "UPDATE user_message SET status = 3, body = X'', to_user_ids = '' \
                 WHERE app_id = ? AND message_id = ? AND user_id = ? AND status <> 3",
            ),
        };
        let q = q.bind(app.0).bind(req.message_id);
        let q = if kind == ChangeKind::Delete {
            q.bind(only)
        } else {
            q
        };
        q.execute(&mut *tx).await?;
        let convs: Vec<&(Copy, Seq)> = pairs.iter().filter(|p| p.0.peer_type != 0).collect();
        for chunk in convs.chunks(CONV_CHUNK) {
            let sql = conversation_sql(app, kind, req.message_id, (msg_type, &preview), chunk);
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
        let (op_type, op_id, op_device) = match actor {
            Sender::User { user, device } => (SenderType::User, user.0, device),
            Sender::Business { id } => (SenderType::Business, id, DeviceId(0)),
        };
        let now = now_ms();
        let notices: Vec<(UserId, Seq, MessageItem)> = pairs
            .iter()
            .map(|(c, s)| {
                let data = MessageChangeNotice {
                    peer_type: c.peer_type.into(),
                    peer_id: c.peer_id,
                    message_id: req.message_id,
                    seq: c.seq,
                    operator_type: op_type as i32,
                    operator_id: op_id,
                    edit_version: if kind == ChangeKind::Edit {
                        edit_version
                    } else {
                        0
                    },
                    message_body: req.message_body.clone(),
                    change_time: now,
                };
                let item = MessageItem {
                    sender_type: SenderType::System as i32,
                    sender_id: op_id,
                    sender_device_id: op_device.0,
                    receiver_type: c.peer_type.into(),
                    receiver_id: c.peer_id,
                    message_body: Some(MessageBody {
                        message_type: MessageType::Command as i32,
                        message_content: Some(MessageContent {
                            content: Some(message_content::Content::Command(Command {
                                code: kind.command() as i32,
                                data: data.encode_to_vec().into(),
                            })),
                        }),
                    }),
                    seq: s.get(),
                    send_time: now,
                    status: MessageStatus::Normal as i32,
                    message_id: notice_id.get(),
                    ..Default::default()
                };
                (UserId(c.user_id), *s, item)
            })
            .collect();
        for chunk in notices.chunks(INSERT_CHUNK) {
            let mut qb = QueryBuilder::<MySql>::new(USER_MESSAGE_INSERT);
            qb.push_values(chunk, |mut b, (u, s, i)| {
                b.push_bind(app.0)
                    .push_bind(u.0)
                    .push_bind(s.get())
                    .push_bind(i.message_id)
                    .push_bind(0i64)
                    .push_bind(i.sender_type as i8)
                    .push_bind(i.sender_id)
                    .push_bind(i.sender_device_id)
                    .push_bind(i.receiver_type as i8)
                    .push_bind(i.receiver_id)
                    .push_bind("")
                    .push_bind(
                        i.message_body
                            .as_ref()
                            .map(|b| b.encode_to_vec())
                            .unwrap_or_default(),
                    )
                    .push_bind(i.send_time)
                    .push_bind(i.status as i8)
                    // Notices belong to no conversation's history.
                    .push_bind(0i8)
                    .push_bind(0i64);
            });
            qb.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;

        let lists = notices.len() as i32;
        let trace = TRACE_ID.try_with(|t| t.clone()).ok();
        let jobs: Vec<PushJob> = notices
            .into_iter()
            .map(|(u, s, item)| PushJob {
                app,
                item,
                copies: vec![(u, s)],
                // The calling device has the reply.
                exclude: (u.0 == op_id && op_type == SenderType::User).then_some(op_device),
                trace: trace.clone(),
            })
            .collect();
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                nodes.deliver_jobs(jobs).await;
            })
            .await;
        Ok(MessageChangeOutput {
            message_id: req.message_id,
            lists,
            edit_version,
        })
    }
}

/// Owners' conversation rows updated by one statement.
const CONV_CHUNK: usize = 1000;

/// One UPDATE of the changed copies' conversation rows (each owner has one copy of a message, so
/// `owner_id` tells the rows apart): a recalled or deleted copy that counted as unread (another
/// user's, a normal copy, above the read seq) stops counting, the preview follows the last
/// message, the version becomes the notice's seq. The scan takes the rows in key order, as the
/// store's upserts do. Integers and a hex literal only.
fn conversation_sql(
    app: AppId,
    kind: ChangeKind,
    mid: i64,
    (msg_type, preview): (i8, &str),
    rows: &[&(Copy, Seq)],
) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(200 + rows.len() * 160);
    s.push_str("UPDATE conversation SET ");
    match kind {
        ChangeKind::Recall | ChangeKind::Delete => {
            s.push_str("unread = CASE owner_id");
            for (c, _) in rows {
                let own = c.sender_type == SenderType::User as i8 && c.sender_id == c.user_id;
                let counted = u8::from(!own && c.status == NORMAL);
                let _ = write!(
                    s,
                    " WHEN {} THEN IF({counted} AND {} > read_seq AND unread > 0, unread - 1, \
                     unread)",
                    c.user_id, c.seq
                );
            }
            let _ = write!(
                s,
                " ELSE unread END, preview = IF(last_message_id = {mid}, '', preview)"
            );
        }
        ChangeKind::Edit => {
            let _ = write!(
                s,
                "last_type = IF(last_message_id = {mid}, {msg_type}, last_type), \
                 preview = IF(last_message_id = {mid}, "
            );
            super::store::push_hex(&mut s, preview.as_bytes());
            s.push_str(", preview)");
        }
    }
    s.push_str(", version = CASE owner_id");
    for (c, seq) in rows {
        let _ = write!(
            s,
            " WHEN {} THEN GREATEST(version, {})",
            c.user_id,
            seq.get()
        );
    }
    let _ = write!(s, " ELSE version END WHERE app_id = {} AND (", app.0);
    for (i, (c, _)) in rows.iter().enumerate() {
        if i > 0 {
            s.push_str(" OR ");
        }
        let _ = write!(
            s,
            "(owner_id = {} AND peer_type = {} AND peer_id = {})",
            c.user_id, c.peer_type, c.peer_id
        );
    }
    s.push(')');
    s
}
