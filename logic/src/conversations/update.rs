//! Pin, mute and delete a conversation from its owner's list.

use crate::error::{Error, Result};
use crate::messages::seq::ListId;
use gim_common::{AppId, DeviceId, UserId};
use gim_proto::connect::v1::{
    Conversation, ConversationCommand, ReceiverType, UpdateConversationInput,
};
use prost::Message as _;

use super::notice::{Notice, notice_item};
use super::{Conversations, no_such};

impl Conversations {
    /// Pin, mute, delete from the list. The change is stored as an UPDATED notice in the owner's
    /// list (its seq the new version) and pushed to the owner's other devices.
    pub async fn update(
        &self,
        app: AppId,
        owner: UserId,
        device: DeviceId,
        req: UpdateConversationInput,
    ) -> Result<Conversation> {
        if !(req.set_pinned || req.set_muted || req.delete) {
            return Err(Error::bad_request(
                "set_pinned",
                "nothing to change (set set_pinned, set_muted or delete)",
            ));
        }
        let k = self
            .key(app, owner, req.peer_type, req.peer_id, false)
            .await?;
        let large = k.kind == ReceiverType::LargeGroup;
        let large_last = if large {
            self.large_last(app, k.peer).await?
        } else {
            0
        };
        // 1:1 and normal-group conversations exist once they have a message.
        if !large && self.row(&k).await?.is_none() {
            return Err(no_such());
        }
        let version = self.seqs.alloc(&[(ListId::User(app, owner), 1)]).await?[0];
        let id = self.notice_ids(1).await?[0];
        let (mut tx, row) = self.lock(&k, large).await?;
        let mut row = row.ok_or_else(no_such)?;
        if req.set_pinned {
            row.pinned = i8::from(req.pinned);
        }
        if req.set_muted {
            row.muted = i8::from(req.muted);
        }
        if req.delete {
            row.deleted = 1;
            row.read_seq = row
                .read_seq
                .max(if large { large_last } else { row.last_seq });
            row.unread = 0;
        }
        row.version = row.version.max(version.get());
        sqlx::query(
            "UPDATE conversation SET pinned = ?, muted = ?, deleted = ?, read_seq = ?, unread = ?, \
             version = ? WHERE app_id = ? AND owner_id = ? AND peer_type = ? AND peer_id = ?",
        )
        .bind(row.pinned)
        .bind(row.muted)
        .bind(row.deleted)
        .bind(row.read_seq)
        .bind(row.unread)
        .bind(row.version)
        .bind(app.0)
        .bind(owner.0)
        .bind(k.kind as i8)
        .bind(k.peer)
        .execute(&mut *tx)
        .await?;
        if large {
            row.last_seq = large_last;
            row.unread = (large_last - row.read_seq).max(0) as i32;
        }
        let conv = row.to_pb();
        let notices = vec![Notice {
            user: owner,
            seq: version,
            item: notice_item(
                id,
                ConversationCommand::Updated,
                conv.encode_to_vec(),
                owner,
                device,
                &k,
            ),
            exclude: Some(device),
        }];
        Self::insert_notices(&mut tx, app, &notices).await?;
        tx.commit().await?;
        self.push(app, notices).await;
        Ok(conv)
    }
}
