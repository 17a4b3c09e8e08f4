//! The conversation list: changed rows by version, and every large group with its unread count
//! computed on read.

use crate::db::rows::YOUNG;
use crate::error::{Error, Result};
use crate::messages::conv::preview;
use gim_common::{AppId, UserId};
use gim_proto::connect::v1::{
    Conversation, GetConversationsInput, GetConversationsOutput, MessageBody, ReceiverType,
};
use prost::Message as _;
use std::time::Duration;

use super::{COLS, Conversations, Row};

/// Conversations per GetConversations page when the caller asks for none, and the most.
pub const PAGE_DEFAULT: i64 = 50;
pub const PAGE_MAX: i64 = 100;
/// Most large groups listed in one reply (each reply lists them all; a user in more sees the
/// first ones by group id).
pub const LARGE_GROUPS_MAX: usize = 100;
/// How long a list waits for a change still being stored (as sync does).
const GAP_WAIT: Duration = Duration::from_secs(1);
/// Seqs below a page's last version checked for such a change.
const GAP_SCAN: i64 = 1000;

impl Conversations {
    /// The owner's conversations changed after `since_version` (by version), plus every large
    /// group of the owner with its unread count computed now.
    pub async fn list(
        &self,
        app: AppId,
        owner: UserId,
        req: GetConversationsInput,
    ) -> Result<GetConversationsOutput> {
        if req.since_version < 0 {
            return Err(Error::bad_request("since_version", "must not be negative"));
        }
        if req.limit < 0 {
            return Err(Error::bad_request("limit", "must not be negative"));
        }
        let limit = match i64::from(req.limit) {
            0 => PAGE_DEFAULT,
            n => n.min(PAGE_MAX),
        };
        // A change whose seq was allocated before one already committed may still be on its way
        // (a concurrent store): like sync, wait briefly while the owner's list has a young gap
        // below the page's last version, so the version handed out never skips it.
        let deadline = tokio::time::Instant::now() + GAP_WAIT;
        let mut rows = loop {
            let rows = self.page(app, owner, req.since_version, limit + 1).await?;
            let Some(top) = rows.iter().map(|r| r.version).max() else {
                break rows;
            };
            if tokio::time::Instant::now() >= deadline
                || !self.young_gap(app, owner, req.since_version, top).await?
            {
                break rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let has_more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let version = rows.last().map(|r| r.version).unwrap_or(req.since_version);
        let total: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(unread), 0) AS SIGNED) FROM conversation WHERE app_id = ? \
             AND owner_id = ? AND peer_type <> 3 AND muted = 0 AND deleted = 0",
        )
        .bind(app.0)
        .bind(owner.0)
        .fetch_one(&self.pool)
        .await?;
        let large_groups = self.large_groups(app, owner).await?;
        let large_unread: i64 = large_groups
            .iter()
            .filter(|c| !c.muted && !c.deleted)
            .map(|c| c.unread)
            .sum();
        Ok(GetConversationsOutput {
            conversations: rows.iter().map(Row::to_pb).collect(),
            has_more,
            version,
            large_groups,
            unread_total: total + large_unread,
        })
    }

    async fn page(&self, app: AppId, owner: UserId, since: i64, n: i64) -> Result<Vec<Row>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM conversation WHERE app_id = ? AND owner_id = ? AND peer_type <> 3 \
             AND version > ? ORDER BY version LIMIT ?"
        )))
        .bind(app.0)
        .bind(owner.0)
        .bind(since)
        .bind(n)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Whether the owner's list misses a seq in (`from`, `to`] just below a row written moments
    /// ago (looking at the last [`GAP_SCAN`] seqs only: older gaps are not in flight).
    async fn young_gap(&self, app: AppId, owner: UserId, from: i64, to: i64) -> Result<bool> {
        let from = from.max(to - GAP_SCAN);
        let rows: Vec<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT seq, {YOUNG} FROM user_message WHERE app_id = ? AND user_id = ? AND seq > ? \
             AND seq <= ? ORDER BY seq"
        )))
        .bind(app.0)
        .bind(owner.0)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        let mut prev = from;
        for (seq, young) in rows {
            if seq != prev + 1 && young == 1 {
                return Ok(true);
            }
            prev = seq;
        }
        Ok(false)
    }

    /// Every large group of the owner as a conversation: its stored row (read seq, pin, mute)
    /// merged with the group's last message, unread = last seq - read seq.
    async fn large_groups(&self, app: AppId, owner: UserId) -> Result<Vec<Conversation>> {
        use std::fmt::Write as _;
        let groups: Vec<i64> = sqlx::query_scalar(
            "SELECT m.group_id FROM group_member m JOIN im_group g ON g.app_id = m.app_id \
             AND g.group_id = m.group_id WHERE m.app_id = ? AND m.user_id = ? AND g.type = 2 \
             ORDER BY m.group_id LIMIT ?",
        )
        .bind(app.0)
        .bind(owner.0)
        .bind(LARGE_GROUPS_MAX as i64)
        .fetch_all(&self.pool)
        .await?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM conversation WHERE app_id = {} AND owner_id = {} AND peer_type = 3",
            app.0, owner.0
        )))
        .fetch_all(&self.pool)
        .await?;
        // Each group's last message: one query, a primary-key dive per group.
        let mut sql = String::new();
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            let _ = write!(
                sql,
                "(SELECT group_id, seq, message_id, sender_type, sender_id, send_time, body \
                 FROM group_message WHERE app_id = {} AND group_id = {g} ORDER BY seq DESC LIMIT 1)",
                app.0
            );
        }
        type Last = (i64, i64, i64, i8, i64, i64, Vec<u8>);
        let lasts: Vec<Last> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        Ok(groups
            .iter()
            .map(|&g| {
                let mut r = stored
                    .iter()
                    .find(|r| r.peer_id == g)
                    .cloned()
                    .unwrap_or_default();
                r.peer_type = ReceiverType::LargeGroup as i8;
                r.peer_id = g;
                if let Some((_, seq, mid, st, sid, at, body)) = lasts.iter().find(|l| l.0 == g) {
                    let body = MessageBody::decode(body.as_slice()).ok();
                    let (t, p) = preview(body.as_ref());
                    r.last_seq = *seq;
                    r.last_message_id = *mid;
                    r.last_sender_type = *st;
                    r.last_sender_id = *sid;
                    r.last_send_time = *at;
                    r.last_type = t;
                    r.preview = p;
                }
                r.unread = (r.last_seq - r.read_seq).clamp(0, i64::from(i32::MAX)) as i32;
                r.to_pb()
            })
            .collect())
    }
}
