//! Writing message rows and reading send results, one message at a time or batched across
//! concurrent sends (see [`crate::batch`]).
//!
//! A batch is all-or-nothing: one transaction claims every request key and inserts every row.
//! When it fails for any reason (a retry racing its first send and hitting the unique key,
//! a lost connection, ...), each message is stored again on its own, so every caller gets exactly
//! the result and the error it would have got without batching.

use super::Messages;
use super::idem::{ReqKey, claim};
use crate::db::rows::{SEND_REQUEST_INSERT, USER_MESSAGE_INSERT};
use crate::db::{self, INSERT_CHUNK};
use crate::error::Result;
use gim_common::{AppId, GroupId, Seq, UserId};
use gim_proto::connect::v1::MessageItem;
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, MySqlPool, QueryBuilder};

/// Messages with more copies than this are stored on their own (already one large INSERT).
pub const BATCH_ROWS_MAX: usize = 500;
/// Message-store batches in flight at once: fewer than the other batchers, so each transaction
/// carries more messages (measured in bench/NOTES.md, "Two message-store batches in flight").
pub const STORE_CONCURRENCY: usize = 2;

/// One message's copies for one list kind (`user_message`).
#[derive(Debug)]
pub struct StoreJob {
    pub app: AppId,
    /// The message; its body and mentions travel encoded in `body` and `mentions`.
    pub item: MessageItem,
    pub mentions: String,
    pub body: Vec<u8>,
    /// (owner, seq) per copy.
    pub rows: Vec<(UserId, Seq)>,
    /// With a key, the message is stored only if the key is not claimed yet.
    pub req_key: Option<ReqKey>,
    pub sender_seq: Seq,
    /// Each copy's receiver is its owner (a business push to users), not `item.receiver_id`.
    pub receiver_is_owner: bool,
    /// The message type and preview its conversations show (see [`super::conv::preview`]).
    pub msg_type: i8,
    pub preview: String,
}

impl StoreJob {
    pub(super) fn receiver(&self, owner: UserId) -> i64 {
        if self.receiver_is_owner {
            owner.0
        } else {
            self.item.receiver_id
        }
    }
}

/// `Some(first result)` when the request key was already claimed: nothing was stored.
pub type StoreResult = Result<Option<pb::SendMessageResp>>;

fn insert_rows<'a>(
    rows: impl IntoIterator<Item = (&'a StoreJob, &'a (UserId, Seq))>,
) -> QueryBuilder<MySql> {
    let mut qb = QueryBuilder::<MySql>::new(USER_MESSAGE_INSERT);
    qb.push_values(rows, |mut b, (j, (u, seq))| {
        let item = &j.item;
        b.push_bind(j.app.0)
            .push_bind(u.0)
            .push_bind(seq.get())
            .push_bind(item.message_id)
            .push_bind(item.request_id)
            .push_bind(item.sender_type as i8)
            .push_bind(item.sender_id)
            .push_bind(item.sender_device_id)
            .push_bind(item.receiver_type as i8)
            .push_bind(j.receiver(*u))
            .push_bind(j.mentions.clone())
            .push_bind(j.body.clone())
            .push_bind(item.send_time)
            .push_bind(item.status as i8);
        let (pt, pid) = peer_of(j, *u);
        b.push_bind(pt).push_bind(pid);
    });
    qb
}

/// Stores one message on its own. With a request key, inside a transaction that first claims
/// the key: a retry finds it taken and gets the first result back, storing nothing.
pub async fn store_one(pool: &MySqlPool, j: &StoreJob) -> StoreResult {
    // A deadlock rolled the whole transaction back (claim included): running it again is safe.
    db::retry_deadlock("store", || store_one_tx(pool, j)).await
}

async fn store_one_tx(pool: &MySqlPool, j: &StoreJob) -> StoreResult {
    if j.req_key.is_none() && script_estimate(j) <= SCRIPT_BYTES_MAX {
        // The copies and their conversations in one transaction, one round trip.
        run_script(pool, script(&[j])).await?;
        return Ok(None);
    }
    let mut tx = pool.begin().await?;
    if let Some(k) = j.req_key
        && let Some(first) = claim(&mut tx, j.app, k, j.item.message_id, j.sender_seq.get()).await?
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
    let mut upserts = String::new();
    if super::conv::push_upserts(&mut upserts, &[j]) > 0 {
        sqlx::raw_sql(sqlx::AssertSqlSafe(upserts))
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
    // 16 values a row: 14 integers (at most 20 characters each, plus a comma) and two hex literals;
    // its conversation row: 12 integers and the preview's hex literal.
    let row = 14 * 21 + 2 * (j.body.len() + j.mentions.len()) + 16;
    let conv = 12 * 21 + 2 * j.preview.len() + 8;
    j.rows.len() * (row + conv) + 160 + 1200
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
    // Plus the conversation upserts (at most one statement per chunk of copies).
    let statements = usize::from(keyed > 0) + 2 * rows.div_ceil(INSERT_CHUNK);
    let mut s = String::with_capacity(jobs.iter().map(|j| script_estimate(j)).sum::<usize>() + 64);
    if statements > 1 {
        s.push_str("BEGIN;");
    }
    if keyed > 0 {
        s.push_str(SEND_REQUEST_INSERT);
        s.push_str("VALUES ");
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
                j.app.0,
                t,
                sender,
                r,
                j.item.message_id,
                j.sender_seq.get()
            );
        }
        s.push(';');
    }
    let mut in_chunk = 0;
    for j in jobs {
        let item = &j.item;
        for (u, seq) in &j.rows {
            if in_chunk == 0 {
                s.push_str(USER_MESSAGE_INSERT);
                s.push_str("VALUES ");
            } else {
                s.push(',');
            }
            let _ = write!(
                s,
                "({},{},{},{},{},{},{},{},{},{},",
                j.app.0,
                u.0,
                seq.get(),
                item.message_id,
                item.request_id,
                item.sender_type as i8,
                item.sender_id,
                item.sender_device_id,
                item.receiver_type as i8,
                j.receiver(*u)
            );
            push_hex(&mut s, j.mentions.as_bytes());
            s.push(',');
            push_hex(&mut s, &j.body);
            let (pt, pid) = peer_of(j, *u);
            let _ = write!(s, ",{},{},{pt},{pid})", item.send_time, item.status as i8);
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
    super::conv::push_upserts(&mut s, jobs);
    if statements > 1 {
        s.push_str("COMMIT;");
    }
    s
}

/// The conversation a copy belongs to in its owner's list (history's index), (0, 0) for none.
fn peer_of(j: &StoreJob, owner: UserId) -> (i8, i64) {
    super::conv::conversation_of(j, owner)
        .map(|(t, p, _)| (t, p))
        .unwrap_or((0, 0))
}

/// Appends `b` as a hex string literal: any bytes, written with the characters 0-9 A-F only.
/// (`X''` is the empty string; `0x` with no digits is not valid SQL.)
pub(super) fn push_hex(s: &mut String, b: &[u8]) {
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

/// The row of a large group's message: one copy, in the group's list.
#[derive(Debug)]
pub struct GroupJob<'a> {
    pub app: AppId,
    pub group: GroupId,
    pub item: &'a MessageItem,
    pub mentions: &'a str,
    pub body: &'a [u8],
    pub req_key: Option<ReqKey>,
}

/// Stores a large group's message; with a request key, inside a transaction that claims it.
pub async fn store_group(pool: &MySqlPool, j: GroupJob<'_>) -> StoreResult {
    let item = j.item;
    let q = sqlx::query(
        "INSERT INTO group_message (app_id, group_id, seq, message_id, request_id, sender_type, sender_id, \
         sender_device_id, to_user_ids, body, send_time, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(j.app.0)
    .bind(j.group.0)
    .bind(item.seq)
    .bind(item.message_id)
    .bind(item.request_id)
    .bind(item.sender_type as i8)
    .bind(item.sender_id)
    .bind(item.sender_device_id)
    .bind(j.mentions)
    .bind(j.body)
    .bind(item.send_time)
    .bind(item.status as i8);
    let Some(k) = j.req_key else {
        q.execute(pool).await?;
        return Ok(None);
    };
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, j.app, k, item.message_id, item.seq).await? {
        return Ok(Some(first));
    }
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(None)
}

impl Messages {
    /// Stores one message's user-list copies, the one path for every send and push: small
    /// messages through the batcher (shared transactions with concurrent sends), large ones on
    /// their own. `Some(first result)` when the request key was used before.
    pub(super) async fn store_user_rows(&self, job: StoreJob) -> StoreResult {
        if job.rows.len() > BATCH_ROWS_MAX {
            return crate::db::deadline(self.deadline, store_one(&self.pool, &job)).await;
        }
        self.stores.try_call(job, "store batcher").await
    }
}
