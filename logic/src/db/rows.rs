//! Row types read with `FromRow` (columns by name), and each table's column list, written once.

use crate::error::{Error, Result};
use gim_common::{GroupId, MessageId, Seq};
use gim_proto::connect::v1::{MessageBody, MessageItem, MessageStatus};
use gim_proto::logic::v1 as pb;
use prost::Message as _;

/// `user_message`'s columns in insert order (the store path's one list).
pub const USER_MESSAGE_INSERT: &str = "INSERT INTO user_message (app_id, user_id, seq, message_id, \
     request_id, sender_type, sender_id, sender_device_id, receiver_type, receiver_id, to_user_ids, \
     body, send_time, status, peer_type, peer_id) ";

/// A [`MessageRow`] from `user_message`.
pub const USER_MESSAGE_COLS: &str = "seq, message_id, request_id, sender_type, sender_id, \
     sender_device_id, receiver_type, receiver_id, to_user_ids, body, send_time, status, edit_version";
/// A [`MessageRow`] from `group_message` (its receiver is the group).
pub const GROUP_MESSAGE_COLS: &str = "seq, message_id, request_id, sender_type, sender_id, \
     sender_device_id, 3 AS receiver_type, group_id AS receiver_id, to_user_ids, body, send_time, status, edit_version";
/// [`MessageRow::young`]: 1 when the row was written in the last 2 s (by MySQL's clock, so clock
/// skew between logic processes does not matter).
pub const YOUNG: &str = "CAST(created_at >= NOW(3) - INTERVAL 2 SECOND AS SIGNED) AS young";

/// A stored message as sync selects it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    #[sqlx(try_from = "i64")]
    pub seq: Seq,
    #[sqlx(try_from = "i64")]
    pub message_id: MessageId,
    pub request_id: i64,
    pub sender_type: i8,
    pub sender_id: i64,
    pub sender_device_id: i64,
    pub receiver_type: i8,
    pub receiver_id: i64,
    pub to_user_ids: String,
    pub body: Vec<u8>,
    pub send_time: i64,
    pub status: i8,
    pub edit_version: i64,
    /// Written moments ago (see [`YOUNG`]); used by sync's gap wait.
    pub young: i64,
}

impl MessageRow {
    pub fn into_item(self) -> Result<MessageItem> {
        Ok(MessageItem {
            seq: self.seq.get(),
            message_id: self.message_id.get(),
            request_id: self.request_id,
            sender_type: self.sender_type.into(),
            sender_id: self.sender_id,
            sender_device_id: self.sender_device_id,
            receiver_type: self.receiver_type.into(),
            receiver_id: self.receiver_id,
            to_user_ids: crate::validate::parse_mentions(&self.to_user_ids),
            // Recalled and deleted copies have no body.
            message_body: if self.status == MessageStatus::Normal as i8 {
                Some(
                    MessageBody::decode(self.body.as_slice())
                        .map_err(|e| Error::Internal(format!("stored message body: {e}")))?,
                )
            } else {
                None
            },
            send_time: self.send_time,
            status: self.status.into(),
            edit_version: self.edit_version,
        })
    }
}

/// A [`UserRow`] from `user`.
pub const USER_COLS: &str = "user_id, nickname, sex, avatar_url, extra, \
     CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms, \
     CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS SIGNED) AS updated_ms";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: i64,
    pub nickname: String,
    pub sex: i8,
    pub avatar_url: String,
    pub extra: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl From<UserRow> for pb::User {
    fn from(r: UserRow) -> Self {
        pb::User {
            user_id: r.user_id,
            nickname: r.nickname,
            sex: r.sex.into(),
            avatar_url: r.avatar_url,
            extra: r.extra,
            create_time: r.created_ms,
            update_time: r.updated_ms,
        }
    }
}

/// A [`GroupRow`] from `im_group` aliased `g`.
pub const GROUP_COLS: &str = "g.group_id AS id, g.name, g.avatar_url, g.introduction, g.type AS kind, \
     g.owner_id, g.user_num, g.extra, \
     CAST(UNIX_TIMESTAMP(g.created_at) * 1000 AS SIGNED) AS created_ms, \
     CAST(UNIX_TIMESTAMP(g.updated_at) * 1000 AS SIGNED) AS updated_ms";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    #[sqlx(try_from = "i64")]
    pub id: GroupId,
    pub name: String,
    pub avatar_url: String,
    pub introduction: String,
    pub kind: i8,
    pub owner_id: i64,
    pub user_num: i32,
    pub extra: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl GroupRow {
    pub fn is_large(&self) -> bool {
        self.kind == pb::GroupType::Large as i8
    }

    pub fn to_pb(&self) -> pb::Group {
        pb::Group {
            group_id: self.id.0,
            name: self.name.clone(),
            avatar_url: self.avatar_url.clone(),
            introduction: self.introduction.clone(),
            user_num: self.user_num,
            r#type: self.kind.into(),
            extra: self.extra.clone(),
            create_time: self.created_ms,
            update_time: self.updated_ms,
            owner_id: self.owner_id,
        }
    }
}

/// A [`MemberRow`] from `group_member m LEFT JOIN user u`.
pub const MEMBER_COLS: &str = "m.user_id, u.nickname, u.sex, u.avatar_url, u.extra AS user_extra, \
     m.member_type, m.remarks, m.extra";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: i64,
    pub nickname: Option<String>,
    pub sex: Option<i8>,
    pub avatar_url: Option<String>,
    pub user_extra: Option<String>,
    pub member_type: i8,
    pub remarks: String,
    pub extra: String,
}

impl From<MemberRow> for pb::GroupMember {
    fn from(r: MemberRow) -> Self {
        pb::GroupMember {
            user_id: r.user_id,
            nickname: r.nickname.unwrap_or_default(),
            sex: r.sex.unwrap_or_default().into(),
            avatar_url: r.avatar_url.unwrap_or_default(),
            user_extra: r.user_extra.unwrap_or_default(),
            member_type: r.member_type.into(),
            remarks: r.remarks,
            extra: r.extra,
        }
    }
}

/// `send_request`'s columns in insert order.
pub const SEND_REQUEST_INSERT: &str = "INSERT INTO send_request (app_id, sender_type, sender_id, \
     client_request_id, message_id, sender_seq) ";

/// A `send_request` row: the first result of a request key.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct FirstRow {
    pub app_id: i64,
    pub sender_type: i8,
    pub sender_id: i64,
    pub client_request_id: i64,
    #[sqlx(try_from = "i64")]
    pub message_id: MessageId,
    #[sqlx(try_from = "i64")]
    pub sender_seq: Seq,
}

/// The columns of a [`FirstRow`].
pub const FIRST_COLS: &str =
    "app_id, sender_type, sender_id, client_request_id, message_id, sender_seq";

impl FirstRow {
    pub fn resp(&self) -> pb::SendMessageResp {
        pb::SendMessageResp {
            seq: self.sender_seq.get(),
            message_id: self.message_id.get(),
        }
    }
}
