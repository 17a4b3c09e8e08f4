//! The rules a tenant sets on its app and users, applied to every sign-in, client call and send:
//! app and user suspension, blocks between users, forced logouts and revoked tokens, and the
//! app's keys and token rules (which [`Apps`] applies).
//!
//! Reads are off the hot path: the app's rules ride on the app row [`Apps`] caches with its key,
//! and a user's rules (suspension, the users it blocked) are one cache entry per (app, user),
//! loaded for many users in one query ([`Batcher`]) — a sign-in loads them, so a user's sends
//! find them cached. A change drops the entry in this process at once and in every other logic
//! process through the invalidation channel ([`inval`]); the TTL bounds staleness only when a
//! message is lost (and the listener drops everything after a reconnect).
//!
//! Here: the user rules' cache, the checks sign-in, calls and sends make, closing connections.
//! [`actions`]: blocks, suspension, forced logout and revocation; [`keys`]: the app's keys and
//! token rules.

mod actions;
mod keys;

pub use keys::KeyInfo;

use crate::apps::{AppInfo, Apps};
use crate::base::Base;
use crate::batch::Batcher;
use crate::cache::TtlCache;
use crate::db::{self, lit};
use crate::error::{Error, Result};
use crate::groups::inval::{self, Changed};
use crate::push::{Nodes, Spawner};
use crate::rds::Redis;
use crate::users::Users;
use gim_common::token;
use gim_common::{AppId, DeviceId, GimCode, UserId};
use gim_proto::conn::v1::CloseConnsReq;
use sqlx::MySqlPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The most users one user may block.
pub const BLOCKS_MAX: i64 = 10_000;

/// How long a user's rules are served from the cache when no invalidation arrives.
const USER_TTL: Duration = Duration::from_secs(60);

/// The most unexpired revoked token ids one user may have (ForceLogout covers the rest).
pub const REVOKED_MAX: i64 = 10_000;

/// One user's rules (user 0: the app's server tokens).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UserPolicy {
    pub suspended: bool,
    /// Users whose 1:1 sends to this user are refused (1020).
    pub blocked: HashSet<i64>,
    /// Tokens of the user issued at or before this second are refused (and tokens without iat,
    /// when set); 0 = none.
    pub tokens_after: i64,
    /// The same per device.
    pub device_tokens_after: HashMap<i64, i64>,
    /// [`jti_hash`] of the user's revoked tokens.
    pub revoked: HashSet<i64>,
}

impl UserPolicy {
    /// 1002 when a forced logout or a revocation covers the token.
    fn check_token(&self, device: DeviceId, c: &token::Claims) -> Result<()> {
        let after = self.tokens_after.max(
            self.device_tokens_after
                .get(&device.0)
                .copied()
                .unwrap_or(0),
        );
        // A token without iat cannot show it was issued after the logout.
        if after > 0 && c.iat.is_none_or(|iat| iat <= after) {
            return Err(Error::code(
                GimCode::Unauthorized,
                "token was issued before a forced logout",
            ));
        }
        if let Some(jti) = &c.jti
            && self.revoked.contains(&jti_hash(jti))
        {
            return Err(Error::code(GimCode::Unauthorized, "token was revoked"));
        }
        Ok(())
    }
}

/// FNV-1a (64 bit) of a token id: the cache and its query hold integers only. Two ids of one
/// user colliding would revoke both; at 2^-64 per pair that is not a concern.
pub fn jti_hash(jti: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in jti.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

pub struct Policies {
    pool: MySqlPool,
    redis: Redis,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    apps: Arc<Apps>,
    users: Arc<Users>,
    cache: TtlCache<(AppId, UserId), Arc<UserPolicy>>,
    loads: Batcher<(AppId, UserId), Result<Arc<UserPolicy>>>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Policies")
    }
}

impl Policies {
    pub fn new(b: &Base, apps: Arc<Apps>, users: Arc<Users>) -> Self {
        let c = db::BATCH_CONCURRENCY;
        Self {
            loads: db::batcher("user_policy", &b.pool, &b.metrics, b.deadline, c, load),
            pool: b.pool.clone(),
            redis: b.redis.clone(),
            nodes: b.nodes.clone(),
            spawner: b.spawner.clone(),
            apps,
            users,
            cache: TtlCache::new(USER_TTL, 500_000),
        }
    }

    /// A user's rules (cached).
    pub async fn user(&self, app: AppId, user: UserId) -> Result<Arc<UserPolicy>> {
        if let Some(p) = self.cache.get(&(app, user)) {
            return Ok(p);
        }
        let p = self.loads.try_call((app, user), "policy batcher").await?;
        self.cache.insert((app, user), p.clone());
        Ok(p)
    }

    /// A client's device token for (app, user, device), then the app's and the user's rules:
    /// 1002 (token, forced logout, revoked), 1021 (app suspended), 1022 (user suspended). Every
    /// client call and sign-in.
    pub async fn auth_device(
        &self,
        app: AppId,
        user: UserId,
        device: DeviceId,
        tok: &str,
    ) -> Result<()> {
        let claims = self.apps.auth_device(app, user, device, tok).await?;
        let p = self.require_user_active(app, user).await?;
        p.check_token(device, &claims)
    }

    /// A business server's token, then the revocations of server tokens (user 0).
    pub async fn auth_server(&self, app: AppId, tok: &str) -> Result<()> {
        let claims = self.apps.auth_server(app, tok).await?;
        self.user(app, UserId(0))
            .await?
            .check_token(DeviceId(0), &claims)
    }

    /// 1021 when the app is suspended.
    pub async fn require_app_active(&self, app: AppId) -> Result<Arc<AppInfo>> {
        let info = self.apps.app(app).await?;
        if info.suspended {
            return Err(GimCode::AppSuspended.into());
        }
        Ok(info)
    }

    /// 1021 when the app is suspended, 1022 when the user is.
    pub async fn require_user_active(&self, app: AppId, user: UserId) -> Result<Arc<UserPolicy>> {
        self.require_app_active(app).await?;
        let p = self.user(app, user).await?;
        if p.suspended {
            return Err(GimCode::UserSuspended.into());
        }
        Ok(p)
    }

    /// 1020 when `receiver` has blocked `sender`.
    pub async fn require_not_blocked(
        &self,
        app: AppId,
        receiver: UserId,
        sender: UserId,
    ) -> Result<()> {
        if receiver != sender && self.user(app, receiver).await?.blocked.contains(&sender.0) {
            return Err(GimCode::Blocked.into());
        }
        Ok(())
    }

    fn changed_app(&self, app: AppId) {
        self.apps.drop_app(app);
        inval::publish_change(&self.redis, Changed::App(app));
    }

    /// Closes a user's connections (or one device's) on every node, once.
    async fn close_now(
        &self,
        app: AppId,
        user: UserId,
        device: Option<DeviceId>,
        reason: &str,
    ) -> u32 {
        let req = CloseConnsReq {
            app_id: app.0,
            user_id: user.0,
            device_id: device.map_or(0, |d| d.0),
            reason: reason.into(),
        };
        match self.nodes.close_everywhere(req).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e.chain(), %app, %user, "closing connections failed");
                0
            }
        }
    }

    /// Closes the app's (user 0) or one user's connections on every node now, and once more a
    /// second later: a sign-in that passed its checks on another logic process just before the
    /// change reached it may complete after the first sweep. A suspended app or user has no
    /// legitimate connection, so the second sweep closes nothing it should keep.
    async fn close(&self, app: AppId, user: UserId, reason: &str) -> u32 {
        let req = CloseConnsReq {
            app_id: app.0,
            user_id: user.0,
            device_id: 0,
            reason: reason.into(),
        };
        let closed = match self.nodes.close_everywhere(req.clone()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e.chain(), %app, %user, "close on suspension failed");
                0
            }
        };
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = nodes.close_everywhere(req).await;
            })
            .await;
        closed
    }

    fn changed_user(&self, app: AppId, user: UserId) {
        self.cache.remove(&(app, user));
        inval::publish_change(&self.redis, Changed::User(app, user));
    }

    /// A user's rules changed in another process.
    pub fn drop_user(&self, app: AppId, user: UserId) {
        self.cache.remove(&(app, user));
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all(&self) {
        self.cache.retain(|_| false);
    }
}

/// The rules of many users in one text query ([`lit`]), or one query per user when that fails
/// (so each caller gets its own error).
async fn load(pool: MySqlPool, keys: Vec<(AppId, UserId)>) -> Vec<Result<Arc<UserPolicy>>> {
    if keys.len() > 1
        && let Ok(v) = load_many(&pool, &keys).await
    {
        return v.into_iter().map(Ok).collect();
    }
    let each = keys.iter().map(|k| {
        let pool = &pool;
        async move { Ok(load_many(pool, std::slice::from_ref(k)).await?.remove(0)) }
    });
    futures::future::join_all(each).await
}

/// Each row is (app, user, kind, a, b, c): kind 0 a `user_policy` row (device, suspended,
/// tokens_after), kind 1 a blocked user (a), kind 2 a revoked token's hash (a).
async fn load_many(pool: &MySqlPool, keys: &[(AppId, UserId)]) -> Result<Vec<Arc<UserPolicy>>> {
    use std::fmt::Write as _;
    let mut cond = String::new();
    lit::join(&mut cond, keys, " OR ", |s, (a, u)| {
        let _ = write!(s, "(app_id = {} AND user_id = {})", a.0, u.0);
    });
    let now = token::now_secs();
    let sql = format!(
        "SELECT app_id, user_id, 0, device_id, CAST(suspended AS SIGNED), tokens_after \
         FROM user_policy WHERE {cond} \
         UNION ALL SELECT app_id, user_id, 1, blocked_user_id, 0, 0 FROM user_block WHERE {cond} \
         UNION ALL SELECT app_id, user_id, 2, jti_hash, 0, 0 FROM revoked_token \
         WHERE expires_at > {now} AND ({cond})"
    );
    let rows = lit::rows::<6>(pool, sql).await?;
    let mut by: HashMap<(i64, i64), UserPolicy> = Default::default();
    for [a, u, kind, x, y, z] in rows {
        let p = by.entry((a, u)).or_default();
        match kind {
            0 if x == 0 => {
                p.suspended = y != 0;
                p.tokens_after = z;
            }
            0 => {
                if z > 0 {
                    p.device_tokens_after.insert(x, z);
                }
            }
            1 => {
                p.blocked.insert(x);
            }
            _ => {
                p.revoked.insert(x);
            }
        }
    }
    Ok(keys
        .iter()
        .map(|(a, u)| Arc::new(by.remove(&(a.0, u.0)).unwrap_or_default()))
        .collect())
}
