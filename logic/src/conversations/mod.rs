//! Conversations: the per-owner list with unread counts (written by the message store in the same
//! transaction as each copy, see [`crate::messages::conv`]), read positions and receipts
//! (MARK_READ), and pin / mute / delete.
//!
//! Every change of an owner's conversation takes a seq of the owner's list as its version: a
//! message copy its own seq, a mark-read or update the seq of the system notice (sender SYSTEM,
//! a `Command` below 1000) it stores in the owner's list and pushes to the owner's other devices.
//! So versions of one owner never repeat, and an offline device learns every change at sync.

use crate::base::Base;
use crate::cache::TtlCache;
use crate::db::rows::YOUNG;
use crate::error::{Error, Result};
use crate::groups::Groups;
use crate::ids::Segment;
use crate::messages::conv::preview;
use crate::messages::seq::{ListId, SeqAllocator};
use crate::push::{Nodes, PushJob, Spawner, TRACE_ID};
use gim_common::config::LogicSection;
use gim_common::{AppId, DeviceId, GimCode, GroupId, MessageId, Seq, UserId, now_ms};
use gim_proto::connect::v1::{
    Command, Conversation, ConversationCommand, GetConversationsInput, GetConversationsOutput,
    MarkReadInput, MessageBody, MessageContent, MessageItem, MessageStatus, MessageType,
    ReadNotice, ReceiverType, SenderType, UpdateConversationInput, message_content,
};
use prost::Message as _;
use sqlx::{MySql, MySqlPool, Transaction};
use std::sync::Arc;
use std::time::Duration;

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
/// Messages a mark-read looks at to find whom to send receipts (the newest ones read).
const RECEIPT_SCAN: i64 = 1000;

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

/// A system notice stored in one user's list by a mark-read or an update.
struct Notice {
    user: UserId,
    seq: Seq,
    item: MessageItem,
    /// The device that caused it gets no push (it has the reply).
    exclude: Option<DeviceId>,
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

fn command_body(code: ConversationCommand, data: Vec<u8>) -> MessageBody {
    MessageBody {
        message_type: MessageType::Command as i32,
        message_content: Some(MessageContent {
            content: Some(message_content::Content::Command(Command {
                code: code as i32,
                data: data.into(),
            })),
        }),
    }
}

/// `user_message` conditions selecting the copies of a conversation in its owner's list that the
/// owner did not send (the ones unread counts count); integers only.
fn not_own_in(k: &Key) -> String {
    let user = SenderType::User as i8;
    let business = SenderType::Business as i8;
    match k.kind {
        ReceiverType::User => format!(
            "receiver_type = 1 AND sender_id = {} AND (sender_type = {business} OR \
             (sender_type = {user} AND sender_id <> {}))",
            k.peer, k.owner.0
        ),
        _ => format!(
            "receiver_type = 2 AND receiver_id = {} AND (sender_type = {business} OR \
             (sender_type = {user} AND sender_id <> {}))",
            k.peer, k.owner.0
        ),
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

/// A notice item (its seq is set per copy).
fn notice_item(
    message_id: i64,
    code: ConversationCommand,
    data: Vec<u8>,
    from: UserId,
    device: DeviceId,
    k: &Key,
) -> MessageItem {
    {
        MessageItem {
            sender_type: SenderType::System as i32,
            sender_id: from.0,
            sender_device_id: device.0,
            receiver_type: k.kind as i32,
            receiver_id: k.peer,
            message_body: Some(command_body(code, data)),
            send_time: now_ms(),
            status: MessageStatus::Normal as i32,
            message_id,
            ..Default::default()
        }
    }
}

impl Conversations {
    /// Stores notices in their users' lists inside `tx` (one statement).
    async fn insert_notices(
        tx: &mut Transaction<'static, MySql>,
        app: AppId,
        notices: &[Notice],
    ) -> Result<()> {
        if notices.is_empty() {
            return Ok(());
        }
        let mut qb = sqlx::QueryBuilder::<MySql>::new(crate::db::rows::USER_MESSAGE_INSERT);
        qb.push_values(notices, |mut b, n| {
            let i = &n.item;
            b.push_bind(app.0)
                .push_bind(n.user.0)
                .push_bind(n.seq.get())
                .push_bind(i.message_id)
                .push_bind(0i64)
                .push_bind(i.sender_type as i8)
                .push_bind(i.sender_id)
                .push_bind(i.sender_device_id)
                .push_bind(i.receiver_type as i8)
                .push_bind(i.receiver_id)
                .push_bind("")
                .push_bind(
                    i.message_body
                        .as_ref()
                        .map(|b| b.encode_to_vec())
                        .unwrap_or_default(),
                )
                .push_bind(i.send_time)
                .push_bind(i.status as i8);
        });
        qb.build().persistent(false).execute(&mut **tx).await?;
        Ok(())
    }

    /// Pushes stored notices in the background (after their commit).
    async fn push(&self, app: AppId, notices: Vec<Notice>) {
        if notices.is_empty() {
            return;
        }
        let trace = TRACE_ID.try_with(|t| t.clone()).ok();
        let jobs: Vec<PushJob> = notices
            .into_iter()
            .map(|n| PushJob {
                app,
                item: MessageItem {
                    seq: n.seq.get(),
                    ..n.item
                },
                copies: vec![(n.user, n.seq)],
                exclude: n.exclude,
                trace: trace.clone(),
            })
            .collect();
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                nodes.deliver_jobs(jobs).await;
            })
            .await;
    }

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

fn no_such() -> Error {
    Error::bad_request("peer_id", "no such conversation (it has no message yet)")
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
