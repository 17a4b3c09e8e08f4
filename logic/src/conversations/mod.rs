//! Conversations: the per-owner list with unread counts (written by the message store in the same
//! transaction as each copy, see [`crate::messages::conv`]), read positions and receipts
//! (MARK_READ), and pin / mute / delete.
//!
//! Every change of an owner's conversation takes a seq of the owner's list as its version: a
//! message copy its own seq, a mark-read or update the seq of the system notice (sender SYSTEM,
//! a `Command` below 1000) it stores in the owner's list and pushes to the owner's other devices.
//! So versions of one owner never repeat, and an offline device learns every change at sync.
//!
//! Files: `list` the list and large groups' computed rows, `read` MARK_READ and receipts,
//! `update` pin / mute / delete, `history` one conversation's messages newest first, `notice`
//! the system notices they store and push; this file holds the rows, keys and row locks they
//! share.

mod history;
mod list;
mod notice;
mod read;
mod update;

pub use history::{HISTORY_DEFAULT, HISTORY_MAX};
pub use list::{LARGE_GROUPS_MAX, PAGE_DEFAULT, PAGE_MAX};

use crate::base::Base;
use crate::cache::TtlCache;
use crate::error::{Error, Result};
use crate::groups::Groups;
use crate::ids::Segment;
use crate::messages::seq::SeqAllocator;
use crate::push::{Nodes, Spawner};
use gim_common::config::LogicSection;
use gim_common::{AppId, GimCode, GroupId, MessageId, UserId};
use gim_proto::connect::v1::{Conversation, ReceiverType};
use sqlx::{MySql, MySqlPool, Transaction};
use std::sync::Arc;
use std::time::Duration;

const COLS: &str = "peer_type, peer_id, last_seq, last_message_id, last_sender_type, \
     last_sender_id, last_send_time, last_type, preview, unread, read_seq, pinned, muted, deleted, \
     version";

#[derive(Debug, Clone, Default, sqlx::FromRow)]
struct Row {
    peer_type: i8,
    peer_id: i64,
    last_seq: i64,
    last_message_id: i64,
    last_sender_type: i8,
    last_sender_id: i64,
    last_send_time: i64,
    last_type: i8,
    preview: String,
    unread: i32,
    read_seq: i64,
    pinned: i8,
    muted: i8,
    deleted: i8,
    version: i64,
}

impl Row {
    fn to_pb(&self) -> Conversation {
        Conversation {
            peer_type: self.peer_type.into(),
            peer_id: self.peer_id,
            last_seq: self.last_seq,
            last_message_id: self.last_message_id,
            last_sender_type: self.last_sender_type.into(),
            last_sender_id: self.last_sender_id,
            last_send_time: self.last_send_time,
            last_message_type: self.last_type.into(),
            preview: self.preview.clone(),
            unread: self.unread.into(),
            read_seq: self.read_seq,
            pinned: self.pinned != 0,
            muted: self.muted != 0,
            deleted: self.deleted != 0,
            version: self.version,
        }
    }
}

/// A conversation's key from the owner's view, validated.
#[derive(Debug, Clone, Copy)]
struct Key {
    app: AppId,
    owner: UserId,
    kind: ReceiverType,
    peer: i64,
}

pub struct Conversations {
    cfg: LogicSection,
    pool: MySqlPool,
    groups: Arc<Groups>,
    seqs: SeqAllocator,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    ids: Segment,
    /// Each app's read-receipt switch (`app.read_receipts`).
    receipts: TtlCache<AppId, bool>,
}

impl std::fmt::Debug for Conversations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conversations")
    }
}

impl Conversations {
    pub fn new(b: &Base, groups: Arc<Groups>, seqs: SeqAllocator) -> Self {
        Self {
            cfg: b.cfg.clone(),
            pool: b.pool.clone(),
            groups,
            seqs,
            nodes: b.nodes.clone(),
            spawner: b.spawner.clone(),
            ids: Segment::new("message", b.deadline),
            receipts: TtlCache::new(Duration::from_secs(60), 10_000),
        }
    }

    async fn key(
        &self,
        app: AppId,
        owner: UserId,
        peer_type: i32,
        peer: i64,
        member: bool,
    ) -> Result<Key> {
        let kind = ReceiverType::try_from(peer_type)
            .ok()
            .filter(|t| *t != ReceiverType::Unknown)
            .ok_or_else(|| Error::bad_request("peer_type", format!("unknown value {peer_type}")))?;
        // Peer user 0 is the app itself (a business server's messages without a sender id).
        if kind == ReceiverType::User && peer < 0 {
            return Err(Error::bad_request("peer_id", "must not be negative"));
        }
        if kind != ReceiverType::User {
            crate::validate::id("peer_id", peer)?;
        }
        if kind != ReceiverType::User {
            let g = self.groups.group(app, GroupId(peer)).await?;
            if g.is_large() != (kind == ReceiverType::LargeGroup) {
                return Err(Error::bad_request(
                    "peer_type",
                    "does not match the group's type",
                ));
            }
            if (member || g.is_large()) && !self.groups.is_member(app, &g, owner).await? {
                return Err(GimCode::NotInGroup.into());
            }
        }
        Ok(Key {
            app,
            owner,
            kind,
            peer,
        })
    }

    async fn receipts_on(&self, app: AppId) -> Result<bool> {
        if let Some(on) = self.receipts.get(&app) {
            return Ok(on);
        }
        let on: Option<i8> = sqlx::query_scalar("SELECT read_receipts FROM app WHERE app_id = ?")
            .bind(app.0)
            .fetch_optional(&self.pool)
            .await?;
        let on = on.unwrap_or(1) != 0;
        self.receipts.insert(app, on);
        Ok(on)
    }

    /// A large group's last committed message: (seq, row for the list), or seq 0.
    async fn large_last(&self, app: AppId, gid: i64) -> Result<i64> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(seq), 0) AS SIGNED) FROM group_message \
             WHERE app_id = ? AND group_id = ?",
        )
        .bind(app.0)
        .bind(gid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seq.unwrap_or(0))
    }

    async fn row(&self, k: &Key) -> Result<Option<Row>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM conversation WHERE app_id = ? AND owner_id = ? AND peer_type = ? \
             AND peer_id = ?"
        )))
        .bind(k.app.0)
        .bind(k.owner.0)
        .bind(k.kind as i8)
        .bind(k.peer)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Begins a READ COMMITTED transaction and locks the conversation's row, creating it (empty)
    /// when `create`. Under READ COMMITTED each later plain read sees everything committed before
    /// it started, so counts taken after the lock include every store that held it before.
    async fn lock(
        &self,
        k: &Key,
        create: bool,
    ) -> Result<(Transaction<'static, MySql>, Option<Row>)> {
        let mut tx = self
            .pool
            .begin_with("SET TRANSACTION ISOLATION LEVEL READ COMMITTED; BEGIN")
            .await?;
        if create {
            // An exclusive lock whether the row is new or not (INSERT IGNORE would take a
            // shared one, and two of those upgrading would deadlock).
            sqlx::query(
                "INSERT INTO conversation (app_id, owner_id, peer_type, peer_id) VALUES (?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE version = version",
            )
            .bind(k.app.0)
            .bind(k.owner.0)
            .bind(k.kind as i8)
            .bind(k.peer)
            .execute(&mut *tx)
            .await?;
        }
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM conversation WHERE app_id = ? AND owner_id = ? AND peer_type = ? \
             AND peer_id = ? FOR UPDATE"
        )))
        .bind(k.app.0)
        .bind(k.owner.0)
        .bind(k.kind as i8)
        .bind(k.peer)
        .fetch_optional(&mut *tx)
        .await?;
        Ok((tx, row))
    }

    /// Message ids for `n` notices, taken before any row is locked.
    async fn notice_ids(&self, n: usize) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(self.ids.next::<MessageId>(&self.pool).await?.get());
        }
        Ok(ids)
    }
}

fn no_such() -> Error {
    Error::bad_request("peer_id", "no such conversation (it has no message yet)")
}
