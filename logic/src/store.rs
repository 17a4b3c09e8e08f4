//! Writing message rows and reading send results, one message at a time or batched across
//! concurrent sends (see [`crate::batch`]).
//!
//! A batch is all-or-nothing: one transaction claims every request key and inserts every row.
//! When it fails for any reason (a retry racing its first send and hitting the unique key,
//! a lost connection, ...), each message is stored again on its own, so every caller gets exactly
//! the result and the error it would have got without batching.

use crate::error::Result;
use gim_common::{AppId, UserId};
use gim_proto::connect::v1::MessageItem;
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, MySqlPool, QueryBuilder};

/// Most rows in one INSERT (14 placeholders a row, 65 535 placeholders a statement).
pub const INSERT_CHUNK: usize = 2000;
/// Messages with more copies than this are stored on their own (already one large INSERT).
pub const BATCH_ROWS_MAX: usize = 500;
/// Most messages in one batch.
pub const BATCH_MAX: usize = 64;
/// Batches in flight at once (each holds one pooled connection).
pub const BATCH_CONCURRENCY: usize = 4;

/// (sender type, sender id, idempotency key) of a `send_request` row.
pub type ReqKey = (i8, i64, i64);

/// A `send_request` row as the batched pre-check reads it: app, key, message id, sender seq.
type FirstRow = (i64, i8, i64, i64, i64, i64);

/// One message's copies for one list kind (`user_message`).
#[derive(Debug)]
pub struct StoreJob {
    pub app: AppId,
    /// The message; its body and mentions travel encoded in `body` and `mentions`.
    pub item: MessageItem,
    pub mentions: String,
    pub body: Vec<u8>,
    /// (owner, seq) per copy.
    pub rows: Vec<(UserId, i64)>,
    /// With a key, the message is stored only if the key is not claimed yet.
    pub req_key: Option<ReqKey>,
    pub sender_seq: i64,
}

/// `Some(first result)` when the request key was already claimed: nothing was stored.
pub type StoreResult = Result<Option<pb::SendMessageResp>>;

fn insert_rows<'a>(
    rows: impl IntoIterator<Item = (&'a StoreJob, &'a (UserId, i64))>,
) -> QueryBuilder<MySql> {
    let mut qb = QueryBuilder::<MySql>::new(
        "INSERT INTO user_message (app_id, user_id, seq, message_id, request_id, sender_type, sender_id, \
         sender_device_id, receiver_type, receiver_id, to_user_ids, body, send_time, status) ",
    );
    qb.push_values(rows, |mut b, (j, (u, seq))| {
        let item = &j.item;
        b.push_bind(j.app.0)
            .push_bind(u.0)
            .push_bind(*seq)
            .push_bind(item.message_id)
            .push_bind(item.request_id)
            .push_bind(item.sender_type as i8)
            .push_bind(item.sender_id)
            .push_bind(item.sender_device_id)
            .push_bind(item.receiver_type as i8)
            .push_bind(item.receiver_id)
            .push_bind(j.mentions.clone())
            .push_bind(j.body.clone())
            .push_bind(item.send_time)
            .push_bind(item.status as i8);
    });
    qb
}

/// Stores one message on its own. With a request key, inside a transaction that first claims
/// the key: a retry finds it taken and gets the first result back, storing nothing.
pub async fn store_one(pool: &MySqlPool, j: &StoreJob) -> StoreResult {
    if j.req_key.is_none() && j.rows.len() <= INSERT_CHUNK {
        // One statement is atomic on its own: no transaction round trips.
        insert_rows(j.rows.iter().map(|r| (j, r)))
            .build()
            .persistent(j.rows.len() <= 2)
            .execute(pool)
            .await?;
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    if let Some(k) = j.req_key
        && let Some(first) = claim(&mut tx, j.app, k, j.item.message_id, j.sender_seq).await?
    {
        return Ok(Some(first));
    }
    for chunk in j.rows.chunks(INSERT_CHUNK) {
        insert_rows(chunk.iter().map(|r| (j, r)))
            .build()
            .persistent(chunk.len() <= 2)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(None)
}

/// Stores a batch in one transaction (one statement when no message has a request key); falls
/// back to [`store_one`] per message when that fails.
pub async fn store_batch(pool: MySqlPool, jobs: Vec<StoreJob>) -> Vec<StoreResult> {
    if jobs.len() > 1 {
        match try_batch(&pool, &jobs).await {
            Ok(()) => return jobs.iter().map(|_| Ok(None)).collect(),
            Err(e) => {
                tracing::debug!(error = %e.chain(), n = jobs.len(), "batched store failed, storing one by one")
            }
        }
    }
    let each = jobs.iter().map(|j| store_one(&pool, j));
    futures::future::join_all(each).await
}

async fn try_batch(pool: &MySqlPool, jobs: &[StoreJob]) -> Result<()> {
    let rows: Vec<(&StoreJob, &(UserId, i64))> = jobs
        .iter()
        .flat_map(|j| j.rows.iter().map(move |r| (j, r)))
        .collect();
    let keyed: Vec<&StoreJob> = jobs.iter().filter(|j| j.req_key.is_some()).collect();
    if keyed.is_empty() && rows.len() <= INSERT_CHUNK {
        insert_rows(rows)
            .build()
            .persistent(false)
            .execute(pool)
            .await?;
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    if !keyed.is_empty() {
        let mut qb = QueryBuilder::<MySql>::new(
            "INSERT INTO send_request (app_id, sender_type, sender_id, client_request_id, message_id, sender_seq) ",
        );
        qb.push_values(&keyed, |mut b, j| {
            let (t, s, r) = j.req_key.expect("filtered");
            b.push_bind(j.app.0)
                .push_bind(t)
                .push_bind(s)
                .push_bind(r)
                .push_bind(j.item.message_id)
                .push_bind(j.sender_seq);
        });
        // A taken key fails the whole statement: the fallback sorts out which one.
        qb.build().persistent(false).execute(&mut *tx).await?;
    }
    for chunk in rows.chunks(INSERT_CHUNK) {
        insert_rows(chunk.iter().copied())
            .build()
            .persistent(false)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Inserts the send_request row; if it exists, returns the first result (the caller's
/// transaction then stores nothing).
pub async fn claim(
    tx: &mut sqlx::Transaction<'static, MySql>,
    app: AppId,
    (sender_type, sender_id, req_id): ReqKey,
    message_id: i64,
    sender_seq: i64,
) -> StoreResult {
    let r = sqlx::query(
        "INSERT INTO send_request (app_id, sender_type, sender_id, client_request_id, message_id, sender_seq) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(app.0)
    .bind(sender_type)
    .bind(sender_id)
    .bind(req_id)
    .bind(message_id)
    .bind(sender_seq)
    .execute(&mut **tx)
    .await;
    match r {
        Ok(_) => Ok(None),
        Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            let first = first_query(app, (sender_type, sender_id, req_id))
                .fetch_one(&mut **tx)
                .await?;
            Ok(Some(pb::SendMessageResp {
                seq: first.1,
                message_id: first.0,
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// (message id, sender seq) of a request key's `send_request` row.
fn first_query(
    app: AppId,
    (t, s, r): ReqKey,
) -> sqlx::query::QueryAs<'static, MySql, (i64, i64), sqlx::mysql::MySqlArguments> {
    sqlx::query_as(
        "SELECT message_id, sender_seq FROM send_request \
         WHERE app_id = ? AND sender_type = ? AND sender_id = ? AND client_request_id = ?",
    )
    .bind(app.0)
    .bind(t)
    .bind(s)
    .bind(r)
}

/// The first result of a request key, if it was used before.
pub async fn first_result(pool: &MySqlPool, app: AppId, (t, s, r): ReqKey) -> StoreResult {
    let first = first_query(app, (t, s, r)).fetch_optional(pool).await?;
    Ok(first.map(|(message_id, seq)| pb::SendMessageResp { seq, message_id }))
}

/// [`first_result`] for many keys in one query (point lookups on the primary key); falls back to
/// one query per key when it fails.
pub async fn first_results(pool: MySqlPool, keys: Vec<(AppId, ReqKey)>) -> Vec<StoreResult> {
    if keys.len() > 1 {
        let mut qb = QueryBuilder::<MySql>::new(
            "SELECT app_id, sender_type, sender_id, client_request_id, message_id, sender_seq \
             FROM send_request WHERE ",
        );
        for (i, (app, (t, s, r))) in keys.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("(app_id = ")
                .push_bind(app.0)
                .push(" AND sender_type = ")
                .push_bind(*t)
                .push(" AND sender_id = ")
                .push_bind(*s)
                .push(" AND client_request_id = ")
                .push_bind(*r)
                .push(")");
        }
        let found: std::result::Result<Vec<FirstRow>, _> =
            qb.build_query_as().persistent(false).fetch_all(&pool).await;
        if let Ok(found) = found {
            let map: std::collections::HashMap<(i64, i8, i64, i64), (i64, i64)> = found
                .into_iter()
                .map(|(a, t, s, r, m, q)| ((a, t, s, r), (m, q)))
                .collect();
            return keys
                .iter()
                .map(|(app, (t, s, r))| {
                    Ok(map
                        .get(&(app.0, *t, *s, *r))
                        .map(|&(message_id, seq)| pb::SendMessageResp { seq, message_id }))
                })
                .collect();
        }
    }
    let each = keys.iter().map(|(app, k)| first_result(&pool, *app, *k));
    futures::future::join_all(each).await
}
