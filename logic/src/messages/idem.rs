//! Idempotency on (sender, client request id): the `send_request` claim that makes a retry get
//! its first result, the batched look-up of first results, and the key of a request id.

use super::store::StoreResult;
use super::{Messages, Sender, Target};
use crate::db::rows::{FIRST_COLS, FirstRow, SEND_REQUEST_INSERT};
use crate::error::{Error, Result};
use gim_common::AppId;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;
use prost::Message as _;
use sqlx::{MySql, MySqlPool};

/// (sender type, sender id, idempotency key) of a `send_request` row.
pub type ReqKey = (i8, i64, i64);

impl Messages {
    /// The first result of a request key, if it was used before (batched with concurrent sends).
    pub(super) async fn first_result(&self, app: AppId, key: ReqKey) -> StoreResult {
        self.firsts.try_call((app, key), "store batcher").await
    }

    /// `first` if the request repeats the first one with its id (same receiver type, receiver
    /// and body), else [`reused_request_id`]. Answering a different request with the first
    /// result would tell the client its new message was stored when nothing was. Costs one
    /// point lookup of the first's stored copy, and only on a retry: `send_request` keeps no
    /// copy of the request, the message rows do.
    pub(super) async fn same_as_first(
        &self,
        app: AppId,
        sender: Sender,
        rt: ReceiverType,
        req: &pb::SendMessageReq,
        target: &Target,
        first: pb::SendMessageResp,
    ) -> Result<pb::SendMessageResp> {
        let body = req
            .message_body
            .as_ref()
            .map(|b| b.encode_to_vec())
            .unwrap_or_default();
        // (receiver type, receiver id, body) of the first's copy, if found where this request's
        // copy would be.
        let found: Option<(i8, i64, Vec<u8>)> = match (target, sender) {
            (Target::Group(gid), _) => sqlx::query_scalar::<_, Vec<u8>>(
                "SELECT body FROM group_message WHERE app_id = ? AND group_id = ? AND seq = ? \
                 AND message_id = ?",
            )
            .bind(app.0)
            .bind(gid.0)
            .bind(first.seq)
            .bind(first.message_id)
            .fetch_optional(&self.pool)
            .await?
            .map(|b| (ReceiverType::LargeGroup as i8, gid.0, b)),
            // The sender's own copy: a primary-key lookup.
            (Target::Users(_), Sender::User { user, .. }) => {
                sqlx::query_as(
                    "SELECT receiver_type, receiver_id, body FROM user_message \
                 WHERE app_id = ? AND user_id = ? AND seq = ? AND message_id = ?",
                )
                .bind(app.0)
                .bind(user.0)
                .bind(first.seq)
                .bind(first.message_id)
                .fetch_optional(&self.pool)
                .await?
            }
            // A business send records no seq: the copy of one receiver, searched from its
            // newest message back (a retry follows its first send closely).
            (Target::Users(users), Sender::Business { .. }) => match users.first() {
                Some(u) => {
                    sqlx::query_as(
                        "SELECT receiver_type, receiver_id, body FROM user_message \
                     WHERE app_id = ? AND user_id = ? AND message_id = ? ORDER BY seq DESC LIMIT 1",
                    )
                    .bind(app.0)
                    .bind(u.0)
                    .bind(first.message_id)
                    .fetch_optional(&self.pool)
                    .await?
                }
                None => return Ok(first),
            },
        };
        match found {
            Some((t, r, b)) if t == rt as i8 && r == req.receiver_id && b == body => Ok(first),
            _ => Err(reused_request_id()),
        }
    }
}

/// A client request id reused for a different message.
pub fn reused_request_id() -> Error {
    Error::bad_request(
        "client_request_id",
        "already used by this sender for a different message (another receiver, type or \
         body); a retry must repeat its request, a new message needs a new id",
    )
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
    let r = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{SEND_REQUEST_INSERT}VALUES (?, ?, ?, ?, ?, ?)"
    )))
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
            Ok(Some(first.resp()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A request key's `send_request` row.
fn first_query(
    app: AppId,
    (t, s, r): ReqKey,
) -> sqlx::query::QueryAs<'static, MySql, FirstRow, sqlx::mysql::MySqlArguments> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FIRST_COLS} FROM send_request \
         WHERE app_id = ? AND sender_type = ? AND sender_id = ? AND client_request_id = ?"
    )))
    .bind(app.0)
    .bind(t)
    .bind(s)
    .bind(r)
}

/// The first result of a request key, if it was used before.
pub async fn first_result(pool: &MySqlPool, app: AppId, (t, s, r): ReqKey) -> StoreResult {
    let first = first_query(app, (t, s, r)).fetch_optional(pool).await?;
    Ok(first.map(|f| f.resp()))
}

/// [`first_result`] for many keys in one text query (point lookups on the primary key, values
/// inlined as integers: one round trip, where a prepared statement of a varying shape costs two);
/// falls back to one query per key when it fails.
pub async fn first_results(pool: MySqlPool, keys: Vec<(AppId, ReqKey)>) -> Vec<StoreResult> {
    use sqlx::FromRow as _;
    use std::fmt::Write as _;
    if keys.len() > 1 {
        let mut sql = String::with_capacity(160 + keys.len() * 110);
        let _ = write!(sql, "SELECT {FIRST_COLS} FROM send_request WHERE ");
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
            let map: std::collections::HashMap<(i64, i8, i64, i64), FirstRow> = found
                .into_iter()
                .map(|f| {
                    (
                        (f.app_id, f.sender_type, f.sender_id, f.client_request_id),
                        f,
                    )
                })
                .collect();
            return keys
                .iter()
                .map(|(app, (t, s, r))| Ok(map.get(&(app.0, *t, *s, *r)).map(FirstRow::resp)))
                .collect();
        }
    }
    let each = keys.iter().map(|(app, k)| first_result(&pool, *app, *k));
    futures::future::join_all(each).await
}

/// The `send_request` key of a client request id. A retry always comes from the device that
/// sent first, and two devices of one user may well pick the same ids (counters seeded from the
/// clock), so a user's key is scoped to the device: the id is mixed with the device id (the
/// schema keys on the sender only). Business senders (device 0) keep the id as given.
pub fn idempotency_key(device: i64, request_id: i64) -> i64 {
    if device == 0 || request_id == 0 {
        return request_id;
    }
    // splitmix64 finaliser over (device, id): distinct pairs collide with probability ~2^-63.
    let mut z = (request_id as u64) ^ (device as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Never 0 (0 means "no key").
    ((z >> 1) as i64).max(1)
}

pub fn sender_parts(s: Sender) -> (gim_proto::connect::v1::SenderType, i64, i64) {
    use gim_proto::connect::v1::SenderType;
    match s {
        Sender::User { user, device } => (SenderType::User, user.0, device.0),
        Sender::Business { id } => (SenderType::Business, id, 0),
    }
}
