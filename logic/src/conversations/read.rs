//! MARK_READ: read positions, recounted unread counts and receipts.

use crate::error::{Error, Result};
use crate::messages::seq::ListId;
use gim_common::{AppId, DeviceId, GroupId, UserId, now_ms};
use gim_proto::connect::v1::{
    Conversation, ConversationCommand, MarkReadInput, ReadNotice, ReceiverType, SenderType,
};
use prost::Message as _;

use super::notice::{Notice, notice_item};
use super::{Conversations, Key};

/// Messages a mark-read looks at to find whom to send receipts (the newest ones read).
const RECEIPT_SCAN: i64 = 1000;

/// `user_message` conditions selecting the copies of a conversation in its owner's list that the
/// owner did not send and that are neither recalled nor deleted (the ones unread counts count);
/// integers only.
fn not_own_in(k: &Key) -> String {
    let user = SenderType::User as i8;
    let business = SenderType::Business as i8;
    match k.kind {
        ReceiverType::User => format!(
            "status = 1 AND receiver_type = 1 AND sender_id = {} AND (sender_type = {business} OR \
             (sender_type = {user} AND sender_id <> {}))",
            k.peer, k.owner.0
        ),
        _ => format!(
            "status = 1 AND receiver_type = 2 AND receiver_id = {} AND (sender_type = {business} OR \
             (sender_type = {user} AND sender_id <> {}))",
            k.peer, k.owner.0
        ),
    }
}

impl Conversations {
    /// MARK_READ: moves the owner's read seq forward to `read_seq`, recounts the unread messages
    /// after it, stores a READ notice in the owner's list (pushed to the owner's other devices)
    /// and, when the app has receipts on, a RECEIPT in the list of each user whose messages were
    /// newly read (1:1, and normal groups of at most `receipt_group_max` members).
    pub async fn mark_read(
        &self,
        app: AppId,
        owner: UserId,
        device: DeviceId,
        req: MarkReadInput,
    ) -> Result<Conversation> {
        let k = self
            .key(app, owner, req.peer_type, req.peer_id, false)
            .await?;
        let x = req.read_seq;
        crate::validate::id("read_seq", x)?;
        let large = k.kind == ReceiverType::LargeGroup;
        // Checked before any seq is taken (and again under the lock).
        let (old_read, last) = match (large, self.row(&k).await?) {
            (true, r) => (
                r.map(|r| r.read_seq).unwrap_or(0),
                self.large_last(app, k.peer).await?,
            ),
            (false, Some(r)) => (r.read_seq, r.last_seq),
            (false, None) => (0, 0),
        };
        check_read(x, old_read, last)?;

        // Whom to tell: the newest message of each other sender in (old_read, x].
        let mut receipts: Vec<(UserId, i64)> = Vec::new();
        let group_ok = match k.kind {
            ReceiverType::User => true,
            ReceiverType::NormalGroup => {
                let g = self.groups.group(app, GroupId(k.peer)).await?;
                i64::from(g.user_num) <= i64::from(self.cfg.receipt_group_max)
            }
            _ => false,
        };
        if group_ok && self.receipts_on(app).await? {
            let user = SenderType::User as i8;
            let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT sender_id, message_id FROM user_message WHERE app_id = ? AND user_id = ? \
                 AND seq > ? AND seq <= ? AND sender_type = {user} AND {} ORDER BY seq DESC LIMIT ?",
                not_own_in(&k)
            )))
            .bind(app.0)
            .bind(owner.0)
            .bind(old_read)
            .bind(x)
            .bind(RECEIPT_SCAN)
            .fetch_all(&self.pool)
            .await?;
            for (sender, mid) in rows {
                if !receipts.iter().any(|(u, _)| u.0 == sender) {
                    receipts.push((UserId(sender), mid));
                }
            }
        }

        // One seq in the owner's list (the READ notice, the new version), one per receipt.
        let mut lists = vec![(ListId::User(app, owner), 1)];
        lists.extend(
            receipts
                .iter()
                .filter(|(u, _)| *u != owner)
                .map(|(u, _)| (ListId::User(app, *u), 1)),
        );
        receipts.retain(|(u, _)| *u != owner);
        let seqs = self.seqs.alloc(&lists).await?;
        let version = seqs[0];
        let now = now_ms();
        let ids = self.notice_ids(lists.len()).await?;

        let (mut tx, row) = self.lock(&k, large).await?;
        let mut row = row.unwrap_or_default();
        let last = if large { last } else { row.last_seq };
        check_read(x, row.read_seq, last)?;
        let unread: i64 = if large || x >= row.last_seq {
            0
        } else {
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM user_message WHERE app_id = ? AND user_id = ? AND seq > ? AND {}",
                not_own_in(&k)
            )))
            .bind(app.0)
            .bind(owner.0)
            .bind(x)
            .fetch_one(&mut *tx)
            .await?
        };
        sqlx::query(
            "UPDATE conversation SET read_seq = ?, unread = ?, version = GREATEST(version, ?) \
             WHERE app_id = ? AND owner_id = ? AND peer_type = ? AND peer_id = ?",
        )
        .bind(x)
        .bind(unread)
        .bind(version.get())
        .bind(app.0)
        .bind(owner.0)
        .bind(k.kind as i8)
        .bind(k.peer)
        .execute(&mut *tx)
        .await?;
        row.read_seq = x;
        row.unread = unread as i32;
        row.version = row.version.max(version.get());

        let read = ReadNotice {
            peer_type: k.kind as i32,
            peer_id: k.peer,
            reader_id: owner.0,
            read_seq: x,
            message_id: 0,
            read_time: now,
        };
        let mut notices = vec![Notice {
            user: owner,
            seq: version,
            item: notice_item(
                ids[0],
                ConversationCommand::Read,
                read.encode_to_vec(),
                owner,
                device,
                &k,
            ),
            exclude: Some(device),
        }];
        for (((sender, mid), seq), id) in receipts.iter().zip(&seqs[1..]).zip(&ids[1..]) {
            // The sender's conversation with the reader (1:1) or the group.
            let (peer_type, peer_id) = match k.kind {
                ReceiverType::User => (ReceiverType::User, owner.0),
                t => (t, k.peer),
            };
            let data = ReadNotice {
                peer_type: peer_type as i32,
                peer_id,
                reader_id: owner.0,
                read_seq: 0,
                message_id: *mid,
                read_time: now,
            };
            let mut item = notice_item(
                *id,
                ConversationCommand::Receipt,
                data.encode_to_vec(),
                owner,
                device,
                &k,
            );
            item.receiver_type = peer_type as i32;
            item.receiver_id = peer_id;
            notices.push(Notice {
                user: *sender,
                seq: *seq,
                item,
                exclude: None,
            });
        }
        Self::insert_notices(&mut tx, app, &notices).await?;
        tx.commit().await?;
        self.push(app, notices).await;
        if large {
            row.peer_type = k.kind as i8;
            row.peer_id = k.peer;
            row.last_seq = last;
            row.unread = (last - x).max(0) as i32;
        }
        Ok(row.to_pb())
    }
}

/// A read seq moves forward only, and never past the conversation's last message.
fn check_read(x: i64, read: i64, last: i64) -> Result<()> {
    if x > last {
        return Err(Error::bad_request(
            "read_seq",
            format!("{x} is beyond the conversation's last seq {last}"),
        ));
    }
    if x <= read {
        return Err(Error::bad_request(
            "read_seq",
            format!("{x} is not after the read seq {read} (read positions only move forward)"),
        ));
    }
    Ok(())
}
