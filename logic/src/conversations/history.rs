//! History: one conversation's stored messages before a seq, newest first, so a new device shows
//! the last messages of each conversation without syncing the owner's whole list. User lists are
//! read through `idx_user_message_peer` (owner, conversation, seq), large groups through the
//! group list's primary key.

use super::Conversations;
use crate::db::rows::{GROUP_MESSAGE_COLS, MessageRow, USER_MESSAGE_COLS};
use crate::error::{Error, Result};
use gim_common::{AppId, UserId};
use gim_proto::connect::v1::{GetHistoryInput, GetHistoryOutput, ReceiverType};

/// Messages per page when the caller asks for none, and the most.
pub const HISTORY_DEFAULT: i64 = 20;
pub const HISTORY_MAX: i64 = 100;

impl Conversations {
    /// GET_HISTORY: messages of the conversation with seq below `before_seq` (0: the newest),
    /// newest first. Groups need membership (1004).
    pub async fn history(
        &self,
        app: AppId,
        owner: UserId,
        req: GetHistoryInput,
    ) -> Result<GetHistoryOutput> {
        if req.before_seq < 0 {
            return Err(Error::bad_request("before_seq", "must not be negative"));
        }
        if req.limit < 0 {
            return Err(Error::bad_request("limit", "must not be negative"));
        }
        let k = self
            .key(app, owner, req.peer_type, req.peer_id, true)
            .await?;
        let limit = match i64::from(req.limit) {
            0 => HISTORY_DEFAULT,
            n => n.min(HISTORY_MAX),
        };
        let before = if req.before_seq == 0 {
            i64::MAX
        } else {
            req.before_seq
        };
        let mut rows: Vec<MessageRow> = if k.kind == ReceiverType::LargeGroup {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {GROUP_MESSAGE_COLS}, 0 AS young FROM group_message WHERE app_id = ? \
                 AND group_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
            )))
            .bind(app.0)
            .bind(k.peer)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                // Forced: on small lists MariaDB picks the primary key and filters the owner's
                // whole list, which a long list cannot afford.
                "SELECT {USER_MESSAGE_COLS}, 0 AS young FROM user_message \
                 FORCE INDEX (idx_user_message_peer) WHERE app_id = ? \
                 AND user_id = ? AND peer_type = ? AND peer_id = ? AND seq < ? \
                 ORDER BY seq DESC LIMIT ?"
            )))
            .bind(app.0)
            .bind(owner.0)
            .bind(k.kind as i8)
            .bind(k.peer)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await?
        };
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        Ok(GetHistoryOutput {
            messages: rows
                .into_iter()
                .map(MessageRow::into_item)
                .collect::<Result<_>>()?,
            has_more,
        })
    }
}
