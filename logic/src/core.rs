//! The business logic behind the three gRPC services: tenants and auth, users, devices, groups,
//! sends, sync, acks and routes. The service modules only translate requests and identities.

use crate::batch::Batcher;
use crate::cache::TtlCache;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::push::Nodes;
use crate::rds::{Redis, Scripts};
use crate::seq::{Segment, SeqAllocator};
use crate::store::{self, ReqKey, StoreJob, StoreResult};
use crate::validate::{self, EXTRA_MAX, IDS_MAX, INTRO_MAX, NAME_MAX, URL_MAX};
use gim_common::config::LogicSection;
use gim_common::internal::AddSecret;
use gim_common::token::{self, AppKey};
use gim_common::{AppId, DeviceId, GimCode, GroupId, UserId};
use gim_proto::conn::v1::UpdateLargeGroupMembersReq;
use gim_proto::connect::v1::{MessageBody, MessageItem};
use gim_proto::logic::v1 as pb;
use prost::Message as _;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// A sync page is cut before its encoded messages pass this, so that the reply plus its envelope
/// fits one 65 535-byte frame.
pub const SYNC_PAGE_BYTES: usize = 60_000;
/// Largest page a caller may ask for.
pub const SYNC_LIMIT_MAX: i32 = 1000;
/// Rows per multi-row INSERT (MySQL allows 65 535 placeholders per statement).
const INSERT_CHUNK: usize = 2000;
/// Push tasks in flight; when all are taken, senders wait (backpressure instead of growth).
const PUSH_PERMITS: usize = 4096;
const MS_SQL: &str = "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED), CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS SIGNED)";

/// Who sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    User {
        user: UserId,
        device: DeviceId,
    },
    /// A business server; `id` is the identity shown as sender_id (0 = the app itself).
    Business {
        id: i64,
    },
}

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: GroupId,
    pub name: String,
    pub avatar_url: String,
    pub introduction: String,
    pub kind: i8,
    pub owner_id: i64,
    pub user_num: i32,
    pub extra: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl GroupRow {
    pub fn is_large(&self) -> bool {
        self.kind == pb::GroupType::Large as i8
    }

    pub fn to_pb(&self) -> pb::Group {
        pb::Group {
            group_id: self.id.0,
            name: self.name.clone(),
            avatar_url: self.avatar_url.clone(),
            introduction: self.introduction.clone(),
            user_num: self.user_num,
            r#type: self.kind as i32,
            extra: self.extra.clone(),
            create_time: self.created_ms,
            update_time: self.updated_ms,
            owner_id: self.owner_id,
        }
    }
}

type GroupTuple = (i64, String, String, String, i8, i64, i32, String, i64, i64);

fn group_from(t: GroupTuple) -> GroupRow {
    GroupRow {
        id: GroupId(t.0),
        name: t.1,
        avatar_url: t.2,
        introduction: t.3,
        kind: t.4,
        owner_id: t.5,
        user_num: t.6,
        extra: t.7,
        created_ms: t.8,
        updated_ms: t.9,
    }
}

type UserTuple = (i64, String, i8, String, String, i64, i64);

fn user_from(t: UserTuple) -> pb::User {
    pb::User {
        user_id: t.0,
        nickname: t.1,
        sex: t.2 as i32,
        avatar_url: t.3,
        extra: t.4,
        create_time: t.5,
        update_time: t.6,
    }
}

/// A stored message as sync selects it: the message columns, then a 1/0 flag telling whether the
/// row was written moments ago (used by sync's gap wait, ignored by [`item_from`]).
pub(crate) type MsgTuple = (
    i64,
    i64,
    i64,
    i8,
    i64,
    i64,
    i8,
    i64,
    String,
    Vec<u8>,
    i64,
    i8,
    i64,
);

pub(crate) fn item_from(t: MsgTuple) -> Result<MessageItem> {
    Ok(MessageItem {
        seq: t.0,
        message_id: t.1,
        request_id: t.2,
        sender_type: t.3 as i32,
        sender_id: t.4,
        sender_device_id: t.5,
        receiver_type: t.6 as i32,
        receiver_id: t.7,
        to_user_ids: validate::parse_mentions(&t.8),
        message_body: Some(
            MessageBody::decode(t.9.as_slice())
                .map_err(|e| Error::Internal(format!("stored message body: {e}")))?,
        ),
        send_time: t.10,
        status: t.11 as i32,
    })
}

pub struct State {
    pub cfg: LogicSection,
    pub pool: MySqlPool,
    pub redis: Redis,
    pub scripts: Arc<Scripts>,
    pub seqs: SeqAllocator,
    pub nodes: Arc<Nodes>,
    pub metrics: Arc<Metrics>,
    msg_ids: Segment,
    group_ids: Segment,
    push_permits: Arc<Semaphore>,
    /// Each app's public key, decoded (or `None`: no such app).
    apps: TtlCache<AppId, Option<Arc<token::PublicKey>>>,
    users: TtlCache<(AppId, UserId), pb::User>,
    groups: TtlCache<(AppId, GroupId), Arc<GroupRow>>,
    members: TtlCache<(AppId, GroupId), Arc<Vec<i64>>>,
    large_members: TtlCache<(AppId, GroupId, UserId), bool>,
    devices: TtlCache<DeviceId, (AppId, UserId)>,
    /// Tokens already verified for exactly (app, user, device) -> expiry: an Ed25519 verify per
    /// call is the largest CPU cost of a send; the key includes the identity the caller claims.
    verified: TtlCache<(bool, AppId, UserId, DeviceId, String), i64>,
    /// Message rows of concurrent sends, stored in shared transactions.
    pub(crate) stores: Batcher<StoreJob, StoreResult>,
    /// Idempotency pre-checks of concurrent sends, one query for many keys.
    pub(crate) firsts: Batcher<(AppId, ReqKey), StoreResult>,
    /// Large groups of users signing in, one query for many users.
    pub(crate) large_of: Batcher<(AppId, UserId), Result<Vec<i64>>>,
    /// (app, user) of devices, one query for many devices.
    device_rows: Batcher<DeviceId, Result<Option<(i64, i64)>>>,
    /// First bindings of devices to users, one statement for many devices.
    device_binds: Batcher<(DeviceId, UserId), Result<bool>>,
    /// Write-diffusion pushes of concurrent sends, one route lookup and one call per node each.
    pub(crate) pushes: Arc<Batcher<crate::push::PushJob, ()>>,
    /// Sync pages of concurrent syncs (a reconnect storm), one query for many users.
    pub(crate) sync_pages: Batcher<crate::session::PageKey, Result<Vec<MsgTuple>>>,
    /// Device acks of concurrent clients, one statement (one commit) for many devices.
    pub(crate) acks: Batcher<crate::session::AckRow, Result<()>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}

/// Creates an app (tenant): stores the public key, returns the id and the private key, which
/// gim never stores (the tenant's business server mints tokens with it).
pub async fn create_app(pool: &MySqlPool, name: &str) -> Result<(AppId, AppKey)> {
    validate::text("name", name, NAME_MAX, true)?;
    let key = AppKey::generate();
    let r = sqlx::query("INSERT INTO app (name, public_key) VALUES (?, ?)")
        .bind(name)
        .bind(key.public_key().as_slice())
        .execute(pool)
        .await;
    match r {
        Ok(r) => Ok((AppId(r.last_insert_id() as i64), key)),
        Err(e) if is_duplicate(&e) => {
            Err(Error::bad_request("name", "an app with this name exists"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `(app_id, user_id)` of each device (user 0: not bound yet): one text query for the batch
/// ([`crate::lit`]), or one per device when that fails (so each caller gets its own error).
async fn device_rows(pool: MySqlPool, ids: Vec<DeviceId>) -> Vec<Result<Option<(i64, i64)>>> {
    if ids.len() > 1 {
        let mut sql =
            String::from("SELECT device_id, app_id, user_id FROM device WHERE device_id IN (");
        crate::lit::ints(&mut sql, ids.iter().map(|d| d.0));
        sql.push(')');
        if let Ok(rows) = crate::lit::rows::<3>(&pool, sql).await {
            let m: std::collections::HashMap<i64, (i64, i64)> =
                rows.into_iter().map(|[d, a, u]| (d, (a, u))).collect();
            return ids.iter().map(|d| Ok(m.get(&d.0).copied())).collect();
        }
    }
    let each = ids.iter().map(|d| {
        let pool = &pool;
        async move {
            Ok(
                sqlx::query_as("SELECT app_id, user_id FROM device WHERE device_id = ?")
                    .bind(d.0)
                    .fetch_optional(pool)
                    .await?,
            )
        }
    });
    futures::future::join_all(each).await
}

/// Binds each unbound device to its user (`user_id = 0` only: a device bound first to someone
/// else stays theirs): one text statement for the batch ([`crate::lit`]), or one per device when
/// that fails. True when
/// the bind is known to have won: the statement changed every row it named (for a batch: as many
/// rows as devices). Otherwise the caller re-reads to find out who won; a first sign-in then pays
/// no re-read in the usual case.
async fn bind_devices(pool: MySqlPool, binds: Vec<(DeviceId, UserId)>) -> Vec<Result<bool>> {
    if binds.len() > 1 {
        use std::fmt::Write as _;
        let mut sql = String::from("UPDATE device SET user_id = CASE device_id");
        for (d, u) in &binds {
            let _ = write!(sql, " WHEN {} THEN {}", d.0, u.0);
        }
        sql.push_str(" ELSE user_id END WHERE user_id = 0 AND device_id IN (");
        crate::lit::ints(&mut sql, binds.iter().map(|(d, _)| d.0));
        sql.push(')');
        if let Ok(n) = crate::lit::execute(&pool, sql).await {
            // Two binds of one device in a batch change one row: both re-read.
            let all = n == binds.len() as u64;
            return binds.iter().map(|_| Ok(all)).collect();
        }
    }
    let each = binds.iter().map(|(d, u)| {
        let pool = &pool;
        async move {
            let r =
                sqlx::query("UPDATE device SET user_id = ? WHERE device_id = ? AND user_id = 0")
                    .bind(u.0)
                    .bind(d.0)
                    .execute(pool)
                    .await?;
            Ok(r.rows_affected() == 1)
        }
    });
    futures::future::join_all(each).await
}

/// A batcher of MySQL work on the shared pool that records its batch sizes under `name`.
pub(crate) fn mysql_batcher<T, R, F, Fut>(
    name: &'static str,
    pool: &MySqlPool,
    metrics: &Arc<Metrics>,
    run: F,
) -> Batcher<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(MySqlPool, Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<R>> + Send + 'static,
{
    let (pool, metrics) = (pool.clone(), metrics.clone());
    Batcher::spawn(store::BATCH_MAX, store::BATCH_CONCURRENCY, move |items| {
        metrics.batch(name, items.len());
        run(pool.clone(), items)
    })
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl State {
    /// `internal`: the cluster secret sent with every call to conn nodes.
    pub fn new(
        cfg: LogicSection,
        pool: MySqlPool,
        redis: Redis,
        metrics: Arc<Metrics>,
        internal: AddSecret,
    ) -> Self {
        let scripts = Arc::new(Scripts::default());
        let seqs = SeqAllocator::new(
            redis.clone(),
            pool.clone(),
            scripts.clone(),
            cfg.seq_block_size,
            metrics.clone(),
        );
        let nodes = Arc::new(Nodes::new(redis.clone(), metrics.clone(), internal));
        let short = Duration::from_secs(5);
        let stores = {
            let pool = pool.clone();
            let metrics = metrics.clone();
            Batcher::spawn(store::BATCH_MAX, store::STORE_CONCURRENCY, move |jobs| {
                let (pool, metrics) = (pool.clone(), metrics.clone());
                metrics.batch("stores", jobs.len());
                async move {
                    let t = std::time::Instant::now();
                    let r = store::store_batch(pool, jobs).await;
                    metrics.stage("store_batch", t);
                    r
                }
            })
        };
        let firsts = mysql_batcher("firsts", &pool, &metrics, store::first_results);
        let large_of = mysql_batcher("large_of", &pool, &metrics, crate::session::large_groups_of);
        let device_rows = mysql_batcher("device_rows", &pool, &metrics, device_rows);
        let device_binds = mysql_batcher("device_binds", &pool, &metrics, bind_devices);
        let sync_pages = mysql_batcher("sync_pages", &pool, &metrics, crate::session::sync_pages);
        let acks = mysql_batcher("acks", &pool, &metrics, crate::session::store_acks);
        let pushes = {
            let nodes = nodes.clone();
            let metrics = metrics.clone();
            Arc::new(Batcher::spawn(
                store::BATCH_MAX,
                store::BATCH_CONCURRENCY,
                move |jobs| {
                    let (nodes, metrics) = (nodes.clone(), metrics.clone());
                    metrics.batch("pushes", jobs.len());
                    async move {
                        let t = std::time::Instant::now();
                        let r = nodes.deliver_jobs(jobs).await;
                        metrics.stage("push_batch", t);
                        r
                    }
                },
            ))
        };
        Self {
            cfg,
            pool,
            redis,
            scripts,
            seqs,
            nodes,
            metrics,
            msg_ids: Segment::new("message"),
            group_ids: Segment::new("group"),
            push_permits: Arc::new(Semaphore::new(PUSH_PERMITS)),
            // App keys change only by operator action; a removed app stops within a minute.
            apps: TtlCache::new(Duration::from_secs(60), 10_000),
            users: TtlCache::new(Duration::from_secs(30), 200_000),
            // Group rows and member lists are invalidated by this process's writes at once and
            // by other processes' writes within `short`.
            groups: TtlCache::new(short, 100_000),
            members: TtlCache::new(short, 20_000),
            large_members: TtlCache::new(short, 200_000),
            // A binding never changes once made.
            devices: TtlCache::new(Duration::from_secs(3600), 500_000),
            // As long as the app-key cache: a replaced key stops old tokens within a minute.
            verified: TtlCache::new(Duration::from_secs(60), 200_000),
            stores,
            firsts,
            large_of,
            device_rows,
            device_binds,
            pushes,
            sync_pages,
            acks,
        }
    }

    // ---------------------------------------------------------------- tenants, auth, devices

    async fn app_key(&self, app: AppId) -> Result<Arc<token::PublicKey>> {
        let key = match self.apps.get(&app) {
            Some(k) => k,
            None => {
                let k: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT public_key FROM app WHERE app_id = ?")
                        .bind(app.0)
                        .fetch_optional(&self.pool)
                        .await?;
                // A stored key that does not decode is not cached: every sign-in says why.
                let k = match k {
                    Some(bytes) => Some(Arc::new(token::PublicKey::from_bytes(&bytes).map_err(
                        |e| Error::code(GimCode::Unauthorized, format!("app {app}: {e}")),
                    )?)),
                    None => None,
                };
                self.apps.insert(app, k.clone());
                k
            }
        };
        key.ok_or_else(|| Error::code(GimCode::Unauthorized, "unknown app"))
    }

    /// A client's device token for exactly (app, user, device), and the device bound to the user.
    pub async fn auth_device(
        &self,
        app: AppId,
        user: UserId,
        device: DeviceId,
        tok: &str,
    ) -> Result<()> {
        let now = token::now_secs();
        let ck = (false, app, user, device, tok.to_string());
        match self.verified.get(&ck) {
            Some(exp) if exp > now => {}
            _ => {
                let key = self.app_key(app).await?;
                let claims = token::verify_device_with(&key, tok, app.0, user.0, device.0, now)
                    .map_err(|e| Error::code(GimCode::Unauthorized, e.to_string()))?;
                self.verified.insert(ck, claims.exp);
            }
        }
        self.bind_device(app, user, device).await
    }

    /// A business server's app-level token.
    pub async fn auth_server(&self, app: AppId, tok: &str) -> Result<()> {
        let now = token::now_secs();
        let ck = (true, app, UserId(0), DeviceId(0), tok.to_string());
        if self.verified.get(&ck).is_some_and(|exp| exp > now) {
            return Ok(());
        }
        let key = self.app_key(app).await?;
        let claims = token::verify_server_with(&key, tok, app.0, now)
            .map_err(|e| Error::code(GimCode::Unauthorized, e.to_string()))?;
        // Cached as a server token (the `true`): a device token never passes as one.
        self.verified.insert(ck, claims.exp);
        Ok(())
    }

    /// A registered device is bound to the first user that signs in with it; any other user (or
    /// another app) gets 1005.
    async fn bind_device(&self, app: AppId, user: UserId, device: DeviceId) -> Result<()> {
        let not_bound = |why: &str| Err(Error::code(GimCode::DeviceNotBound, why));
        if let Some((a, u)) = self.devices.get(&device) {
            return if a == app && u == user {
                Ok(())
            } else {
                not_bound("device is bound to another user")
            };
        }
        for _ in 0..2 {
            // Both statements are batched with concurrent sign-ins (a first-sign-in storm).
            let row = self.device_rows.try_call(device, "device batcher").await?;
            match row {
                None => return not_bound("device is not registered"),
                Some((a, _)) if a != app.0 => return not_bound("device is not registered"),
                Some((_, 0)) => {
                    let won = self
                        .device_binds
                        .try_call((device, user), "device batcher")
                        .await?;
                    if won {
                        self.devices.insert(device, (app, user));
                        return Ok(());
                    }
                    // Re-read: a concurrent first sign-in of another user may have won.
                }
                Some((_, u)) if u == user.0 => {
                    self.devices.insert(device, (app, user));
                    return Ok(());
                }
                Some((_, u)) => {
                    self.devices.insert(device, (app, UserId(u)));
                    return not_bound("device is bound to another user");
                }
            }
        }
        Err(Error::Internal("device binding did not settle".into()))
    }

    pub async fn register_device(&self, req: pb::RegisterDeviceReq) -> Result<i64> {
        validate::id("app_id", req.app_id)?;
        if !(1..=5).contains(&req.r#type) {
            return Err(Error::bad_request(
                "type",
                format!("unknown device type {}", req.r#type),
            ));
        }
        validate::text("brand", &req.brand, NAME_MAX, false)?;
        validate::text("model", &req.model, NAME_MAX, false)?;
        validate::text("system_version", &req.system_version, NAME_MAX, false)?;
        validate::text("sdk_version", &req.sdk_version, NAME_MAX, false)?;
        if self.app_key(AppId(req.app_id)).await.is_err() {
            return Err(Error::bad_request("app_id", "unknown app"));
        }
        let r = sqlx::query(
            "INSERT INTO device (app_id, type, brand, model, system_version, sdk_version) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(req.app_id)
        .bind(req.r#type as i8)
        .bind(&req.brand)
        .bind(&req.model)
        .bind(&req.system_version)
        .bind(&req.sdk_version)
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_id() as i64)
    }

    // ---------------------------------------------------------------- users

    pub async fn add_user(&self, app: AppId, caller: UserId, mut u: pb::User) -> Result<()> {
        if u.user_id == 0 {
            u.user_id = caller.0;
        }
        if u.user_id != caller.0 {
            return Err(Error::bad_request(
                "user.user_id",
                "a client may only add itself",
            ));
        }
        validate::user("user", &u)?;
        let r = sqlx::query(
            "INSERT INTO user (app_id, user_id, nickname, sex, avatar_url, extra) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(app.0)
        .bind(u.user_id)
        .bind(&u.nickname)
        .bind(u.sex as i8)
        .bind(&u.avatar_url)
        .bind(&u.extra)
        .execute(&self.pool)
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_duplicate(&e) => Err(GimCode::UserAlreadyExists.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or updates users in one statement; returns (created, updated).
    pub async fn import_users(&self, app: AppId, users: &[pb::User]) -> Result<(i32, i32)> {
        if users.is_empty() {
            return Err(Error::bad_request("users", "must not be empty"));
        }
        let ids: Vec<i64> = users.iter().map(|u| u.user_id).collect();
        validate::ids("users.user_id", &ids, IDS_MAX)?;
        for (i, u) in users.iter().enumerate() {
            validate::user(&format!("users[{i}]"), u)?;
        }
        // A plain (non-locking) read: locking reads of absent rows take gap locks that deadlock
        // with concurrent inserts of other apps. The counts are exact unless two imports of the
        // same users race, which only shifts one between created and updated.
        let mut qb = QueryBuilder::<MySql>::new("SELECT user_id FROM user WHERE app_id = ");
        qb.push_bind(app.0).push(" AND user_id IN (");
        let mut sep = qb.separated(", ");
        for id in &ids {
            sep.push_bind(*id);
        }
        qb.push(")");
        let existing: Vec<i64> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let mut qb = QueryBuilder::<MySql>::new(
            "INSERT INTO user (app_id, user_id, nickname, sex, avatar_url, extra) ",
        );
        qb.push_values(users, |mut b, u| {
            b.push_bind(app.0)
                .push_bind(u.user_id)
                .push_bind(&u.nickname)
                .push_bind(u.sex as i8)
                .push_bind(&u.avatar_url)
                .push_bind(&u.extra);
        });
        qb.push(
            " ON DUPLICATE KEY UPDATE nickname = VALUES(nickname), sex = VALUES(sex), \
             avatar_url = VALUES(avatar_url), extra = VALUES(extra)",
        );
        qb.build().persistent(false).execute(&self.pool).await?;
        for id in &ids {
            self.users.remove(&(app, UserId(*id)));
        }
        let updated = existing.len() as i32;
        Ok((ids.len() as i32 - updated, updated))
    }

    pub async fn get_user(&self, app: AppId, user: UserId) -> Result<pb::User> {
        validate::id("user_id", user.0)?;
        if let Some(u) = self.users.get(&(app, user)) {
            return Ok(u);
        }
        let sql = format!(
            "SELECT user_id, nickname, sex, avatar_url, extra, {MS_SQL} FROM user WHERE app_id = ? AND user_id = ?"
        );
        let row: Option<UserTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await?;
        let u = user_from(row.ok_or(GimCode::UserNotFound)?);
        self.users.insert((app, user), u.clone());
        Ok(u)
    }

    /// 1010 naming the first id that is not a user of the app. One query for all uncached ids.
    pub async fn users_exist(&self, app: AppId, field: &str, ids: &[i64]) -> Result<()> {
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| self.users.get(&(app, UserId(*id))).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::<MySql>::new(format!(
            "SELECT user_id, nickname, sex, avatar_url, extra, {MS_SQL} FROM user WHERE app_id = "
        ));
        qb.push_bind(app.0).push(" AND user_id IN (");
        let mut sep = qb.separated(", ");
        for id in &missing {
            sep.push_bind(*id);
        }
        qb.push(")");
        let rows: Vec<UserTuple> = qb
            .build_query_as()
            .persistent(missing.len() <= 2)
            .fetch_all(&self.pool)
            .await?;
        let found: std::collections::HashSet<i64> = rows.iter().map(|r| r.0).collect();
        for r in rows {
            let u = user_from(r);
            self.users.insert((app, UserId(u.user_id)), u);
        }
        if let Some(id) = missing.iter().find(|id| !found.contains(id)) {
            return Err(Error::code(
                GimCode::UserNotFound,
                format!("{field}: user {id} not found"),
            ));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- groups

    pub async fn group(&self, app: AppId, gid: GroupId) -> Result<Arc<GroupRow>> {
        validate::id("group_id", gid.0)?;
        if let Some(g) = self.groups.get(&(app, gid)) {
            return Ok(g);
        }
        let sql = format!(
            "SELECT group_id, name, avatar_url, introduction, type, owner_id, user_num, extra, {MS_SQL} \
             FROM im_group WHERE app_id = ? AND group_id = ?"
        );
        let row: Option<GroupTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(gid.0)
            .fetch_optional(&self.pool)
            .await?;
        let g = Arc::new(group_from(row.ok_or(GimCode::GroupNotFound)?));
        self.groups.insert((app, gid), g.clone());
        Ok(g)
    }

    /// Member ids of a group, sorted (cached; used for write diffusion and membership checks).
    pub(crate) async fn member_ids(&self, app: AppId, gid: GroupId) -> Result<Arc<Vec<i64>>> {
        if let Some(m) = self.members.get(&(app, gid)) {
            return Ok(m);
        }
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT user_id FROM group_member WHERE app_id = ? AND group_id = ? ORDER BY user_id",
        )
        .bind(app.0)
        .bind(gid.0)
        .fetch_all(&self.pool)
        .await?;
        let ids = Arc::new(ids);
        self.members.insert((app, gid), ids.clone());
        Ok(ids)
    }

    pub async fn is_member(&self, app: AppId, g: &GroupRow, user: UserId) -> Result<bool> {
        if !g.is_large() {
            return Ok(self
                .member_ids(app, g.id)
                .await?
                .binary_search(&user.0)
                .is_ok());
        }
        // Large groups: a point lookup, not the whole member list.
        if let Some(b) = self.large_members.get(&(app, g.id, user)) {
            return Ok(b);
        }
        let b: Option<i8> = sqlx::query_scalar(
            "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(g.id.0)
        .bind(user.0)
        .fetch_optional(&self.pool)
        .await?;
        self.large_members.insert((app, g.id, user), b.is_some());
        Ok(b.is_some())
    }

    async fn require_member(&self, app: AppId, g: &GroupRow, user: UserId) -> Result<()> {
        if self.is_member(app, g, user).await? {
            Ok(())
        } else {
            Err(GimCode::NotInGroup.into())
        }
    }

    fn invalidate_group(&self, app: AppId, gid: GroupId, users: &[i64]) {
        self.groups.remove(&(app, gid));
        self.members.remove(&(app, gid));
        for u in users {
            self.large_members.remove(&(app, gid, UserId(*u)));
        }
        // Other logic processes drop theirs when the message arrives (best effort: their TTLs
        // bound the staleness if it is lost).
        let redis = self.redis.clone();
        let msg = crate::inval::group_message(app, gid);
        tokio::spawn(async move {
            let _ = redis
                .query::<i64>(redis::cmd("PUBLISH").arg(crate::inval::CHANNEL).arg(msg))
                .await;
        });
    }

    /// A group changed (here or in another process): forget everything cached about it.
    pub fn drop_group_caches(&self, app: AppId, gid: GroupId) {
        self.groups.remove(&(app, gid));
        self.members.remove(&(app, gid));
        self.large_members
            .retain(|(a, g, _)| !(*a == app && *g == gid));
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all_group_caches(&self) {
        self.groups.retain(|_| false);
        self.members.retain(|_| false);
        self.large_members.retain(|_| false);
    }

    fn validate_group(g: &pb::Group) -> Result<()> {
        validate::text("group.name", &g.name, NAME_MAX, true)?;
        validate::text("group.avatar_url", &g.avatar_url, URL_MAX, false)?;
        validate::text("group.introduction", &g.introduction, INTRO_MAX, false)?;
        validate::text("group.extra", &g.extra, EXTRA_MAX, false)?;
        if !(0..=2).contains(&g.r#type) {
            return Err(Error::bad_request(
                "group.type",
                format!("unknown group type {}", g.r#type),
            ));
        }
        if g.group_id < 0 {
            return Err(Error::bad_request("group.group_id", "must not be negative"));
        }
        Ok(())
    }

    /// Creates a group owned (and administered) by `owner` with `members`. `group.group_id` may
    /// name the id (1008 if taken); 0 allocates one. Type 0 means normal, as in the original.
    pub async fn create_group(
        &self,
        app: AppId,
        owner: UserId,
        g: pb::Group,
        members: Vec<i64>,
    ) -> Result<i64> {
        Self::validate_group(&g)?;
        validate::id("owner_id", owner.0)?;
        validate::ids("member_ids", &members, IDS_MAX)?;
        let members: Vec<i64> = members.into_iter().filter(|m| *m != owner.0).collect();
        self.users_exist(app, "owner_id", &[owner.0]).await?;
        self.users_exist(app, "member_ids", &members).await?;
        let kind = if g.r#type == 0 { 1 } else { g.r#type as i8 };
        let explicit = g.group_id > 0;
        for _ in 0..3 {
            let gid = if explicit {
                g.group_id
            } else {
                self.group_ids.next(&self.pool).await?
            };
            let mut tx = self.pool.begin().await?;
            let r = sqlx::query(
                "INSERT INTO im_group (app_id, group_id, name, avatar_url, introduction, type, owner_id, user_num, extra) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(app.0)
            .bind(gid)
            .bind(&g.name)
            .bind(&g.avatar_url)
            .bind(&g.introduction)
            .bind(kind)
            .bind(owner.0)
            .bind(members.len() as i32 + 1)
            .bind(&g.extra)
            .execute(&mut *tx)
            .await;
            match r {
                Ok(_) => {}
                Err(e) if is_duplicate(&e) && explicit => {
                    return Err(GimCode::GroupAlreadyExists.into());
                }
                // An explicit id of another caller took an allocated one: take the next.
                Err(e) if is_duplicate(&e) => continue,
                Err(e) => return Err(e.into()),
            }
            let mut all = vec![(owner.0, 1i8)];
            all.extend(members.iter().map(|m| (*m, 2i8)));
            for chunk in all.chunks(INSERT_CHUNK) {
                let mut qb = QueryBuilder::<MySql>::new(
                    "INSERT INTO group_member (app_id, group_id, user_id, member_type) ",
                );
                qb.push_values(chunk, |mut b, (u, t)| {
                    b.push_bind(app.0)
                        .push_bind(gid)
                        .push_bind(*u)
                        .push_bind(*t);
                });
                qb.build().persistent(false).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            let all_ids: Vec<i64> = all.iter().map(|x| x.0).collect();
            self.invalidate_group(app, GroupId(gid), &all_ids);
            if kind == pb::GroupType::Large as i8 {
                self.spawn_large_update(UpdateLargeGroupMembersReq {
                    app_id: app.0,
                    group_id: gid,
                    joined_user_ids: all_ids,
                    left_user_ids: vec![],
                    dissolved: false,
                })
                .await;
            }
            return Ok(gid);
        }
        Err(Error::Internal("could not allocate a free group id".into()))
    }

    pub async fn update_group(
        &self,
        app: AppId,
        caller: Option<UserId>,
        req: pb::UpdateGroupReq,
    ) -> Result<()> {
        let gid = GroupId(req.group_id);
        validate::text("name", &req.name, NAME_MAX, true)?;
        validate::text("avatar_url", &req.avatar_url, URL_MAX, false)?;
        validate::text("introduction", &req.introduction, INTRO_MAX, false)?;
        validate::text("extra", &req.extra, EXTRA_MAX, false)?;
        let g = self.group(app, gid).await?;
        if let Some(u) = caller {
            self.require_member(app, &g, u).await?;
        }
        sqlx::query(
            "UPDATE im_group SET name = ?, avatar_url = ?, introduction = ?, extra = ? WHERE app_id = ? AND group_id = ?",
        )
        .bind(&req.name)
        .bind(&req.avatar_url)
        .bind(&req.introduction)
        .bind(&req.extra)
        .bind(app.0)
        .bind(gid.0)
        .execute(&self.pool)
        .await?;
        self.invalidate_group(app, gid, &[]);
        Ok(())
    }

    pub async fn user_groups(&self, app: AppId, user: UserId) -> Result<Vec<pb::Group>> {
        let sql = "SELECT g.group_id, g.name, g.avatar_url, g.introduction, g.type, g.owner_id, g.user_num, g.extra, \
                   CAST(UNIX_TIMESTAMP(g.created_at) * 1000 AS SIGNED), CAST(UNIX_TIMESTAMP(g.updated_at) * 1000 AS SIGNED) \
                   FROM group_member m JOIN im_group g ON g.app_id = m.app_id AND g.group_id = m.group_id \
                   WHERE m.app_id = ? AND m.user_id = ? ORDER BY g.group_id";
        let rows: Vec<GroupTuple> = sqlx::query_as(sql)
            .bind(app.0)
            .bind(user.0)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|r| group_from(r).to_pb()).collect())
    }

    pub async fn group_members(&self, app: AppId, gid: GroupId) -> Result<Vec<pb::GroupMember>> {
        self.group(app, gid).await?;
        type Row = (
            i64,
            Option<String>,
            Option<i8>,
            Option<String>,
            Option<String>,
            i8,
            String,
            String,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT m.user_id, u.nickname, u.sex, u.avatar_url, u.extra, m.member_type, m.remarks, m.extra \
             FROM group_member m LEFT JOIN user u ON u.app_id = m.app_id AND u.user_id = m.user_id \
             WHERE m.app_id = ? AND m.group_id = ? ORDER BY m.user_id",
        )
        .bind(app.0)
        .bind(gid.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| pb::GroupMember {
                user_id: r.0,
                nickname: r.1.unwrap_or_default(),
                sex: r.2.unwrap_or_default() as i32,
                avatar_url: r.3.unwrap_or_default(),
                user_extra: r.4.unwrap_or_default(),
                member_type: r.5 as i32,
                remarks: r.6,
                extra: r.7,
            })
            .collect())
    }

    /// Adds members; returns those that already were. Caller (a client) must be a member.
    pub async fn add_members(
        &self,
        app: AppId,
        caller: Option<UserId>,
        gid: GroupId,
        ids: Vec<i64>,
    ) -> Result<Vec<i64>> {
        if ids.is_empty() {
            return Err(Error::bad_request("user_ids", "must not be empty"));
        }
        validate::ids("user_ids", &ids, IDS_MAX)?;
        let g = self.group(app, gid).await?;
        if let Some(u) = caller {
            self.require_member(app, &g, u).await?;
        }
        self.users_exist(app, "user_ids", &ids).await?;
        // Non-locking read (see import_users); INSERT IGNORE keeps a concurrent add harmless and
        // user_num follows the rows actually inserted.
        let mut qb = QueryBuilder::<MySql>::new("SELECT user_id FROM group_member WHERE app_id = ");
        qb.push_bind(app.0)
            .push(" AND group_id = ")
            .push_bind(gid.0)
            .push(" AND user_id IN (");
        let mut sep = qb.separated(", ");
        for id in &ids {
            sep.push_bind(*id);
        }
        qb.push(")");
        let existing: Vec<i64> = qb
            .build_query_scalar()
            .persistent(false)
            .fetch_all(&self.pool)
            .await?;
        let new: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|i| !existing.contains(i))
            .collect();
        if !new.is_empty() {
            let mut tx = self.pool.begin().await?;
            let mut qb = QueryBuilder::<MySql>::new(
                "INSERT IGNORE INTO group_member (app_id, group_id, user_id, member_type) ",
            );
            qb.push_values(&new, |mut b, u| {
                b.push_bind(app.0)
                    .push_bind(gid.0)
                    .push_bind(*u)
                    .push_bind(2i8);
            });
            let inserted = qb
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(
                "UPDATE im_group SET user_num = user_num + ? WHERE app_id = ? AND group_id = ?",
            )
            .bind(inserted as i32)
            .bind(app.0)
            .bind(gid.0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        self.invalidate_group(app, gid, &new);
        if g.is_large() && !new.is_empty() {
            self.spawn_large_update(UpdateLargeGroupMembersReq {
                app_id: app.0,
                group_id: gid.0,
                joined_user_ids: new,
                left_user_ids: vec![],
                dissolved: false,
            })
            .await;
        }
        Ok(existing)
    }

    pub async fn update_member(
        &self,
        app: AppId,
        caller: UserId,
        req: pb::UpdateGroupMemberReq,
    ) -> Result<()> {
        validate::id("user_id", req.user_id)?;
        if !(1..=2).contains(&req.member_type) {
            return Err(Error::bad_request(
                "member_type",
                format!("unknown member type {}", req.member_type),
            ));
        }
        validate::text("remarks", &req.remarks, NAME_MAX, false)?;
        validate::text("extra", &req.extra, EXTRA_MAX, false)?;
        let gid = GroupId(req.group_id);
        let g = self.group(app, gid).await?;
        self.require_member(app, &g, caller).await?;
        let found: Option<i8> = sqlx::query_scalar(
            "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(req.user_id)
        .fetch_optional(&self.pool)
        .await?;
        if found.is_none() {
            return Err(Error::code(GimCode::NotInGroup, "user_id: not a member"));
        }
        sqlx::query(
            "UPDATE group_member SET member_type = ?, remarks = ?, extra = ? WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(req.member_type as i8)
        .bind(&req.remarks)
        .bind(&req.extra)
        .bind(app.0)
        .bind(gid.0)
        .bind(req.user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a member. A client may remove itself, or others when it is an admin.
    pub async fn delete_member(
        &self,
        app: AppId,
        caller: Option<UserId>,
        gid: GroupId,
        user: UserId,
    ) -> Result<()> {
        validate::id("user_id", user.0)?;
        let g = self.group(app, gid).await?;
        if let Some(c) = caller {
            self.require_member(app, &g, c).await?;
            if c != user {
                let t: Option<i8> = sqlx::query_scalar(
                    "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
                )
                .bind(app.0)
                .bind(gid.0)
                .bind(c.0)
                .fetch_optional(&self.pool)
                .await?;
                if t != Some(1) {
                    return Err(Error::code(
                        GimCode::NotInGroup,
                        "only admins may remove other members",
                    ));
                }
            }
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "DELETE FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(Error::code(GimCode::NotInGroup, "user_id: not a member"));
        }
        sqlx::query(
            "UPDATE im_group SET user_num = GREATEST(user_num - 1, 0) WHERE app_id = ? AND group_id = ?",
        )
        .bind(app.0)
        .bind(gid.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.invalidate_group(app, gid, &[user.0]);
        if g.is_large() {
            self.spawn_large_update(UpdateLargeGroupMembersReq {
                app_id: app.0,
                group_id: gid.0,
                joined_user_ids: vec![],
                left_user_ids: vec![user.0],
                dissolved: false,
            })
            .await;
        }
        Ok(())
    }

    pub(crate) async fn next_message_id(&self) -> Result<i64> {
        self.msg_ids.next(&self.pool).await
    }

    async fn spawn_large_update(&self, req: UpdateLargeGroupMembersReq) {
        let nodes = self.nodes.clone();
        self.spawn_push(async move {
            let _ = nodes.update_large_group(req).await;
        })
        .await;
    }

    /// Runs a push in the background, bounded by the push permits.
    pub(crate) async fn spawn_push(
        &self,
        fut: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let permit = self
            .push_permits
            .clone()
            .acquire_owned()
            .await
            .expect("push semaphore is never closed");
        let trace = crate::push::TRACE_ID.try_with(|t| t.clone()).ok();
        tokio::spawn(async move {
            match trace {
                Some(t) => crate::push::TRACE_ID.scope(t, fut).await,
                None => fut.await,
            }
            drop(permit);
        });
    }
}
