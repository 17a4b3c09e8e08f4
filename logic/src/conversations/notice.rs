//! The system notices (sender SYSTEM, a [`ConversationCommand`]) a mark-read or an update stores
//! in its users' lists, and their pushes.

use crate::error::Result;
use crate::push::{PushJob, TRACE_ID};
use gim_common::{AppId, DeviceId, Seq, UserId, now_ms};
use gim_proto::connect::v1::{
    Command, ConversationCommand, MessageBody, MessageContent, MessageItem, MessageStatus,
    MessageType, SenderType, message_content,
};
use prost::Message as _;
use sqlx::{MySql, Transaction};

use super::{Conversations, Key};

/// A system notice stored in one user's list by a mark-read or an update.
pub(super) struct Notice {
    pub(super) user: UserId,
    pub(super) seq: Seq,
    pub(super) item: MessageItem,
    /// The device that caused it gets no push (it has the reply).
    pub(super) exclude: Option<DeviceId>,
}

fn command_body(code: ConversationCommand, data: Vec<u8>) -> MessageBody {
    MessageBody {
        message_type: MessageType::Command as i32,
        message_content: Some(MessageContent {
            content: Some(message_content::Content::Command(Command {
                code: code as i32,
                data: data.into(),
            })),
        }),
    }
}

/// A notice item (its seq is set per copy).
pub(super) fn notice_item(
    message_id: i64,
    code: ConversationCommand,
    data: Vec<u8>,
    from: UserId,
    device: DeviceId,
    k: &Key,
) -> MessageItem {
    {
        MessageItem {
            sender_type: SenderType::System as i32,
            sender_id: from.0,
            sender_device_id: device.0,
            receiver_type: k.kind as i32,
            receiver_id: k.peer,
            message_body: Some(command_body(code, data)),
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id,
            ..Default::default()
        }
    }
}

impl Conversations {
    /// Stores notices in their users' lists inside `tx` (one statement).
    pub(super) async fn insert_notices(
        tx: &mut Transaction<'static, MySql>,
        app: AppId,
        notices: &[Notice],
    ) -> Result<()> {
        if notices.is_empty() {
            return Ok(());
        }
        let mut qb = sqlx::QueryBuilder::<MySql>::new(crate::db::rows::USER_MESSAGE_INSERT);
        qb.push_values(notices, |mut b, n| {
            let i = &n.item;
            b.push_bind(app.0)
                .push_bind(n.user.0)
                .push_bind(n.seq.get())
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
        qb.build().persistent(false).execute(&mut **tx).await?;
        Ok(())
    }

    /// Pushes stored notices in the background (after their commit).
    pub(super) async fn push(&self, app: AppId, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        let trace = TRACE_ID.try_with(|t| t.clone()).ok();
        let jobs: Vec<PushJob> = notices
            .into_iter()
            .map(|n| PushJob {
                app,
                item: MessageItem {
                    seq: n.seq.get(),
                    ..n.item
                },
                copies: vec![(n.user, n.seq)],
                exclude: n.exclude,
                trace: trace.clone(),
            })
            .collect();
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                nodes.deliver_jobs(jobs).await;
            })
            .await;
    }
}
