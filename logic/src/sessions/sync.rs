//! Reading a device's lists: sync of the user's list (batched across concurrent syncs) and of a
//! large group's, with the wait for an in-flight send's gap; and device acks (batched).

use super::Sessions;
use crate::db::rows::{GROUP_MESSAGE_COLS, MessageRow, USER_MESSAGE_COLS, YOUNG};
use crate::error::{Error, Result};
use gim_common::{AppId, GroupId, UserId};
use gim_proto::connect::v1::MessageItem;
use gim_proto::logic::v1 as pb;
use prost::Message as _;
use sqlx::MySqlPool;
use std::time::Duration;

/// A sync page is cut before its encoded messages pass this, so that the reply plus its envelope
/// fits one 65 535-byte frame.
pub const SYNC_PAGE_BYTES: usize = 60_000;
/// Largest page a caller may ask for.
pub const SYNC_LIMIT_MAX: i32 = 1000;
/// How long a sync waits for an in-flight send to fill a gap before answering anyway.
const GAP_WAIT: Duration = Duration::from_secs(1);

type Row = MessageRow;

/// A gap in the seqs just before a row written moments ago is most likely a concurrent send
/// whose seq was allocated first but whose insert has not committed yet. Answering now would let
/// the client ack past it and never see it, so the sync waits for it briefly. Gaps before older
/// rows are permanent (a Redis re-seed or a failed insert) and are returned as they are.
fn young_gap(from: i64, rows: &[Row]) -> bool {
    let mut prev = from;
    for r in rows {
        if r.seq.get() != prev + 1 && r.young == 1 {
            return true;
        }
        prev = r.seq.get();
    }
    false
}

/// One user's sync page: rows with `seq > from`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct PageKey {
    pub app: i64,
    pub user: i64,
    pub from: i64,
    pub limit: i64,
}

/// The sync pages of many users. A batch is one text query: a `UNION ALL` of each user's page
/// (each an index range scan on the primary key), every part tagged with its position; the values
/// are integers written as literals, so no value can change the statement, and one round trip
/// replaces a prepare + execute per user. One prepared query per page when the batch fails.
pub async fn sync_pages(pool: MySqlPool, keys: Vec<PageKey>) -> Vec<Result<Vec<Row>>> {
    use sqlx::{FromRow as _, Row as _};
    use std::fmt::Write as _;
    if keys.len() > 1 {
        let mut sql = String::with_capacity(keys.len() * 380);
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                sql.push_str(" UNION ALL ");
            }
            let _ = write!(
                sql,
                "(SELECT {USER_MESSAGE_COLS}, {YOUNG}, {i} AS part FROM user_message WHERE app_id = {} AND user_id = {} \
                 AND seq > {} ORDER BY seq LIMIT {})",
                k.app, k.user, k.from, k.limit
            );
        }
        let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| Ok((r.try_get::<i64, _>("part")?, Row::from_row(r)?)))
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()
            });
        match rows {
            Ok(rows) => {
                let mut pages: Vec<Vec<Row>> = keys.iter().map(|_| Vec::new()).collect();
                for (i, row) in rows {
                    if let Some(p) = usize::try_from(i).ok().and_then(|i| pages.get_mut(i)) {
                        p.push(row);
                    }
                }
                // UNION ALL keeps no order across its parts; each page is put back in seq order.
                return pages
                    .into_iter()
                    .map(|mut p| {
                        p.sort_unstable_by_key(|r| r.seq);
                        Ok(p)
                    })
                    .collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, n = keys.len(), "batched sync failed; one query per page")
            }
        }
    }
    let sql = format!(
        "SELECT {USER_MESSAGE_COLS}, {YOUNG} FROM user_message \
         WHERE app_id = ? AND user_id = ? AND seq > ? ORDER BY seq LIMIT ?"
    );
    let each = keys.iter().map(|k| {
        let (pool, sql) = (&pool, sql.as_str());
        async move {
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(k.app)
                .bind(k.user)
                .bind(k.from)
                .bind(k.limit)
                .fetch_all(pool)
                .await?;
            Ok(rows)
        }
    });
    futures::future::join_all(each).await
}

/// One device's ack.
#[derive(Debug, Clone, Copy)]
pub struct AckRow {
    pub app: i64,
    pub user: i64,
    pub device: i64,
    pub ack: i64,
}

/// The text of one ack statement for `rows` (in key order): for each row, the highest seq of the
/// user's list is read into a session variable with a plain `SELECT ... INTO` (a consistent,
/// non-locking read: an `INSERT ... SELECT` would take shared next-key locks on `user_message`
/// under REPEATABLE READ and could deadlock with a send's multi-user insert), then one multi-row
/// upsert stores each ack capped at it. An ack above the list (a buggy or hostile client) would
/// otherwise hide every later message from the seq-0 sync of all the user's devices for good.
/// Messages are pushed only after their rows commit, so a genuine ack is never above the list.
/// One round trip (a multi-statement text query); the values are integers written as literals.
fn ack_sql(rows: &[&AckRow]) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(200 + rows.len() * 200);
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(
            sql,
            "SELECT COALESCE(MAX(seq), 0) INTO @gim_ack_max{i} FROM user_message \
             WHERE app_id = {} AND user_id = {};",
            r.app, r.user
        );
    }
    sql.push_str("INSERT INTO device_ack (app_id, user_id, device_id, ack) VALUES ");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        let _ = write!(
            sql,
            "({},{},{},LEAST({},@gim_ack_max{i}))",
            r.app, r.user, r.device, r.ack
        );
    }
    sql.push_str(" ON DUPLICATE KEY UPDATE ack = GREATEST(ack, VALUES(ack))");
    sql
}

/// Stores many devices' acks in one statement batch ([`ack_sql`]): one round trip, one commit (log
/// flush). An ack only moves forward (`GREATEST`), so two acks of one device in a batch leave the
/// higher in either order. Rows go in key order, so concurrent batches lock rows in the same order
/// and cannot deadlock each other. One statement per ack when the batch fails (the upsert
/// committed nothing: autocommit makes it all or nothing), so each caller gets its own outcome.
pub async fn store_acks(pool: MySqlPool, rows: Vec<AckRow>) -> Vec<Result<()>> {
    if rows.len() > 1 {
        let mut sorted: Vec<&AckRow> = rows.iter().collect();
        sorted.sort_unstable_by_key(|r| (r.app, r.user, r.device));
        match sqlx::raw_sql(sqlx::AssertSqlSafe(ack_sql(&sorted)))
            .execute(&pool)
            .await
        {
            Ok(_) => return rows.iter().map(|_| Ok(())).collect(),
            Err(e) => {
                tracing::warn!(error = %e, n = rows.len(), "batched ack failed; one statement per ack")
            }
        }
    }
    let each = rows.iter().map(|r| {
        let pool = &pool;
        async move {
            sqlx::raw_sql(sqlx::AssertSqlSafe(ack_sql(&[r])))
                .execute(pool)
                .await?;
            Ok(())
        }
    });
    futures::future::join_all(each).await
}

/// Fetches a page, again (every 20 ms, for up to [`GAP_WAIT`]) while it has a young gap.
async fn settled<F, Fut>(from: i64, fetch: F) -> Result<Vec<Row>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Row>>>,
{
    let deadline = tokio::time::Instant::now() + GAP_WAIT;
    loop {
        let rows = fetch().await?;
        if !young_gap(from, &rows) || tokio::time::Instant::now() >= deadline {
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Sessions {
    fn page_limit(&self, limit: i32) -> Result<i64> {
        if limit < 0 {
            return Err(Error::bad_request("limit", "must not be negative"));
        }
        Ok(if limit == 0 {
            self.cfg.sync_page_size as i64
        } else {
            limit.min(SYNC_LIMIT_MAX) as i64
        })
    }

    pub async fn sync(&self, req: pb::SyncReq) -> Result<pb::SyncResp> {
        let (app, user) = (AppId(req.app_id), UserId(req.user_id));
        if req.seq < 0 {
            return Err(Error::bad_request("seq", "must not be negative"));
        }
        let limit = self.page_limit(req.limit)?;
        let from = if req.seq == 0 {
            // seq 0: from the highest ack of any of the user's devices.
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(COALESCE(MAX(ack), 0) AS SIGNED) FROM device_ack WHERE app_id = ? AND user_id = ?",
            )
            .bind(app.0)
            .bind(user.0)
            .fetch_one(&self.pool)
            .await?
        } else {
            req.seq
        };
        // Batched with concurrent syncs: a reconnect storm costs MySQL one query per batch.
        let key = PageKey {
            app: app.0,
            user: user.0,
            from,
            limit: limit + 1,
        };
        let rows = settled(from, || async {
            self.sync_pages.try_call(key, "sync batcher").await
        })
        .await?;
        let (messages, has_more) = page(rows, limit as usize)?;
        Ok(pb::SyncResp { messages, has_more })
    }

    pub async fn group_sync(&self, req: pb::GroupSyncReq) -> Result<pb::GroupSyncResp> {
        let (app, user, gid) = (
            AppId(req.app_id),
            UserId(req.user_id),
            GroupId(req.group_id),
        );
        if req.seq < 0 {
            return Err(Error::bad_request("seq", "must not be negative"));
        }
        let limit = self.page_limit(req.limit)?;
        let g = self.groups.group(app, gid).await?;
        if !g.is_large() {
            return Err(Error::bad_request(
                "group_id",
                "not a large group (normal groups sync through the user's list)",
            ));
        }
        if !self.groups.is_member(app, &g, user).await? {
            return Err(gim_common::GimCode::NotInGroup.into());
        }
        let sql = format!(
            "SELECT {GROUP_MESSAGE_COLS}, {YOUNG} FROM group_message WHERE app_id = ? AND group_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        let rows = settled(req.seq, || async {
            let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
                .bind(app.0)
                .bind(gid.0)
                .bind(req.seq)
                .bind(limit + 1)
                .fetch_all(&self.pool)
                .await?;
            Ok(rows)
        })
        .await?;
        let (messages, has_more) = page(rows, limit as usize)?;
        Ok(pb::GroupSyncResp { messages, has_more })
    }

    /// The device's ack only moves forward, and never past the highest seq of the user's list.
    pub async fn ack(&self, req: pb::MessageAckReq) -> Result<()> {
        if req.device_ack < 0 {
            return Err(Error::bad_request("device_ack", "must not be negative"));
        }
        // Batched with concurrent acks: one statement and one commit (log flush) per batch.
        self.acks
            .try_call(
                AckRow {
                    app: req.app_id,
                    user: req.user_id,
                    device: req.device_id,
                    ack: req.device_ack,
                },
                "ack batcher",
            )
            .await
    }
}

/// Up to `limit` rows (the query fetched one more to know whether more follow), cut before the
/// encoded messages pass [`SYNC_PAGE_BYTES`]; at least one message per page.
fn page(rows: Vec<Row>, limit: usize) -> Result<(Vec<MessageItem>, bool)> {
    let mut has_more = rows.len() > limit;
    let mut out = Vec::with_capacity(rows.len().min(limit));
    let mut bytes = 0usize;
    for r in rows.into_iter().take(limit) {
        let item = r.into_item()?;
        // Field tag + length prefix of a repeated message: at most 1 + 3 bytes here.
        let size = item.encoded_len() + 4;
        if !out.is_empty() && bytes + size > SYNC_PAGE_BYTES {
            has_more = true;
            break;
        }
        bytes += size;
        out.push(item);
    }
    Ok((out, has_more))
}
