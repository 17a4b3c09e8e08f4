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
/// Message-store batches in flight at once. Fewer than the other batchers: while two batches
/// are in MariaDB the next one keeps filling, so each transaction carries more messages and the
/// server pays its per-transaction costs (a thread wake-up, parsing BEGIN/COMMIT, the commit's
/// log write) less often. B3 at 5 250 msg/s, three runs each, same session: 4 in flight gave
/// ~1 000 transactions/s, MariaDB 3.66 s and logic 4.66 s of CPU per run (medians), push p99
/// 73 ms; 2 in flight gave MariaDB 3.29 s, logic 4.41 s, p99 51 ms.
pub const STORE_CONCURRENCY: usize = 2;

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

/// Most bytes of SQL text in one batch script (MariaDB's default `max_allowed_packet` is 16 MiB;
/// binary values travel hex-encoded, twice their size).
pub const SCRIPT_BYTES_MAX: usize = 4 << 20;

/// Stores a batch: jobs are grouped into scripts of at most [`SCRIPT_BYTES_MAX`], each one
/// transaction in one round trip (see [`script`]). A group whose script fails, and a job too
/// large for any script, are stored with [`store_one`] per message.
pub async fn store_batch(pool: MySqlPool, jobs: Vec<StoreJob>) -> Vec<StoreResult> {
    let mut results: Vec<Option<StoreResult>> = jobs.iter().map(|_| None).collect();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0usize;
    for (i, j) in jobs.iter().enumerate() {
        let size = script_estimate(j);
        if size > SCRIPT_BYTES_MAX {
            continue; // stored on its own below
        }
        match groups.last_mut() {
            Some(g) if bytes + size <= SCRIPT_BYTES_MAX => g.push(i),
            _ => {
                groups.push(vec![i]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    let scripts = groups.into_iter().map(|g| {
        let pool = &pool;
        let jobs = &jobs;
        async move {
            let batch: Vec<&StoreJob> = g.iter().map(|&i| &jobs[i]).collect();
            match run_script(pool, script(&batch)).await {
                Ok(()) => (g, true),
                Err(e) => {
                    tracing::debug!(error = %e.chain(), n = batch.len(), "batched store failed, storing one by one");
                    (g, false)
                }
            }
        }
    });
    for (g, ok) in futures::future::join_all(scripts).await {
        if ok {
            for i in g {
                results[i] = Some(Ok(None));
            }
        }
    }
    let rest = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    let each = rest.iter().map(|&i| store_one(&pool, &jobs[i]));
    for (i, r) in rest.iter().zip(futures::future::join_all(each).await) {
        results[*i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.expect("every job stored or failed"))
        .collect()
}

/// Upper bound of a job's share of a script's text.
fn script_estimate(j: &StoreJob) -> usize {
    // 14 values a row: 12 integers (at most 20 characters each, plus a comma) and two hex literals.
    let row = 12 * 21 + 2 * (j.body.len() + j.mentions.len()) + 16;
    j.rows.len() * row + 160
}

/// The SQL text that stores `jobs` atomically: claims of their request keys and all their rows,
/// inside `BEGIN; ... COMMIT` when it takes more than one statement. Prepared statements would
/// cost two round trips each (prepare, execute: batch statements vary in shape, so they are not
/// cached) plus two for BEGIN and COMMIT; the script is one. Values are written as integer and
/// hex literals only, never as quoted strings, so no value can change the statement.
fn script(jobs: &[&StoreJob]) -> String {
    use std::fmt::Write as _;
    let rows = jobs.iter().map(|j| j.rows.len()).sum::<usize>();
    let keyed = jobs.iter().filter(|j| j.req_key.is_some()).count();
    let statements = usize::from(keyed > 0) + rows.div_ceil(INSERT_CHUNK);
    let mut s = String::with_capacity(jobs.iter().map(|j| script_estimate(j)).sum::<usize>() + 64);
    if statements > 1 {
        s.push_str("BEGIN;");
    }
    if keyed > 0 {
        s.push_str(
            "INSERT INTO send_request (app_id, sender_type, sender_id, client_request_id, message_id, sender_seq) VALUES ",
        );
        let mut first = true;
        for j in jobs {
            let Some((t, sender, r)) = j.req_key else {
                continue;
            };
            if !first {
                s.push(',');
            }
            first = false;
            // A taken key fails the whole script: the fallback sorts out which one.
            let _ = write!(
                s,
                "({},{},{},{},{},{})",
                j.app.0, t, sender, r, j.item.message_id, j.sender_seq
            );
        }
        s.push(';');
    }
    let mut in_chunk = 0;
    for j in jobs {
        let item = &j.item;
        for (u, seq) in &j.rows {
            if in_chunk == 0 {
                s.push_str(
                    "INSERT INTO user_message (app_id, user_id, seq, message_id, request_id, sender_type, sender_id, \
                     sender_device_id, receiver_type, receiver_id, to_user_ids, body, send_time, status) VALUES ",
                );
            } else {
                s.push(',');
            }
            let _ = write!(
                s,
                "({},{},{},{},{},{},{},{},{},{},",
                j.app.0,
                u.0,
                seq,
                item.message_id,
                item.request_id,
                item.sender_type as i8,
                item.sender_id,
                item.sender_device_id,
                item.receiver_type as i8,
                item.receiver_id
            );
            push_hex(&mut s, j.mentions.as_bytes());
            s.push(',');
            push_hex(&mut s, &j.body);
            let _ = write!(s, ",{},{})", item.send_time, item.status as i8);
            in_chunk += 1;
            if in_chunk == INSERT_CHUNK {
                s.push(';');
                in_chunk = 0;
            }
        }
    }
    if in_chunk > 0 {
        s.push(';');
    }
    if statements > 1 {
        s.push_str("COMMIT;");
    }
    s
}

/// Appends `b` as a hex string literal: any bytes, written with the characters 0-9 A-F only.
/// (`X''` is the empty string; `0x` with no digits is not valid SQL.)
fn push_hex(s: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    s.reserve(b.len() * 2 + 3);
    s.push_str("X'");
    for &c in b {
        s.push(HEX[(c >> 4) as usize] as char);
        s.push(HEX[(c & 15) as usize] as char);
    }
    s.push('\'');
}

/// Runs a [`script`] on one connection. When a statement fails, MariaDB stops there with the
/// transaction still open: it is rolled back on the same connection before the connection goes
/// back to the pool, and a connection whose state is unknown (the rollback failed, or the future
/// was dropped mid-script) is closed instead of pooled.
async fn run_script(pool: &MySqlPool, sql: String) -> Result<()> {
    struct Guard(Option<sqlx::pool::PoolConnection<MySql>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                c.close_on_drop();
            }
        }
    }
    let mut guard = Guard(Some(pool.acquire().await?));
    let conn = guard.0.as_mut().expect("set above");
    let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut **conn)
        .await;
    match r {
        Ok(_) => {
            guard.0.take(); // clean: back to the pool
            Ok(())
        }
        Err(e) => {
            if sqlx::raw_sql("ROLLBACK").execute(&mut **conn).await.is_ok() {
                guard.0.take();
            }
            Err(e.into())
        }
    }
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

/// [`first_result`] for many keys in one text query (point lookups on the primary key, values
/// inlined as integers: one round trip, where a prepared statement of a varying shape costs two);
/// falls back to one query per key when it fails.
pub async fn first_results(pool: MySqlPool, keys: Vec<(AppId, ReqKey)>) -> Vec<StoreResult> {
    use sqlx::FromRow as _;
    use std::fmt::Write as _;
    if keys.len() > 1 {
        let mut sql = String::with_capacity(160 + keys.len() * 110);
        sql.push_str(
            "SELECT app_id, sender_type, sender_id, client_request_id, message_id, sender_seq \
             FROM send_request WHERE ",
        );
        for (i, (app, (t, s, r))) in keys.iter().enumerate() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            let _ = write!(
                sql,
                "(app_id = {} AND sender_type = {t} AND sender_id = {s} AND client_request_id = {r})",
                app.0
            );
        }
        let found = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(FirstRow::from_row)
                    .collect::<Result<Vec<_>, _>>()
            });
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
