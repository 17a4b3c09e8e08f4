//! Tenants and authentication: apps and their public keys, device and server tokens, device
//! registration and the binding of a device to the first user that signs in with it.

use crate::base::Base;
use crate::batch::Batcher;
use crate::cache::TtlCache;
use crate::db::{self, lit};
use crate::error::{Error, Result};
use crate::validate::{self, NAME_MAX};
use gim_common::token::{self, AppKey};
use gim_common::{AppId, DeviceId, GimCode, UserId};
use gim_proto::logic::v1 as pb;
use sqlx::MySqlPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Creates an app (tenant): stores the public key, returns the id and the private key, which
/// gim never stores (the tenant's business server mints tokens with it).
pub async fn create_app(pool: &MySqlPool, name: &str) -> Result<(AppId, AppKey)> {
    let key = AppKey::generate();
    let public = token::PublicKey::from_bytes(&key.public_key())
        .map_err(|e| Error::Internal(format!("generated key: {e}")))?;
    match register_app(pool, name, &public).await? {
        Some(app) => Ok((app, key)),
        None => Err(Error::bad_request("name", "an app with this name exists")),
    }
}

/// Stores an app whose key pair the caller made (the admin API's callers keep the private key on
/// their side). `None` when the name is taken.
pub async fn register_app(
    pool: &MySqlPool,
    name: &str,
    key: &token::PublicKey,
) -> Result<Option<AppId>> {
    validate::text("name", name, NAME_MAX, true)?;
    let r = sqlx::query("INSERT INTO app (name, public_key) VALUES (?, ?)")
        .bind(name)
        .bind(key.to_bytes().as_slice())
        .execute(pool)
        .await;
    match r {
        Ok(r) => Ok(Some(AppId(r.last_insert_id() as i64))),
        Err(e) if db::is_duplicate(&e) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A token verified for (server?, app, user, device, token).
type VerifiedKey = (bool, AppId, UserId, DeviceId, String);

/// How far in the future a token's `iat` may be (clock skew between minter and gim).
pub const IAT_SKEW_SECS: i64 = 60;

/// An app's row and keys as auth and the policy checks read them (cached).
#[derive(Debug)]
pub struct AppInfo {
    /// Active keys by kid, decoded; "" is the original key (tokens without a `kid`).
    pub keys: HashMap<String, token::PublicKey>,
    /// Clients cannot sign in, call or send; see [`crate::policy`].
    pub suspended: bool,
    /// 0: no limit; otherwise the longest token lifetime accepted.
    pub max_token_ttl_secs: i64,
    /// Tokens without `iat` and `jti` are refused.
    pub require_token_ids: bool,
}

impl AppInfo {
    /// The app's token rules, on a token whose signature verified: 1002 when one is broken.
    fn check_claims(&self, c: &token::Claims, now: i64) -> Result<()> {
        let refuse = |why: String| Err(Error::code(GimCode::Unauthorized, why));
        if let Some(iat) = c.iat
            && iat > now + IAT_SKEW_SECS
        {
            return refuse("token is issued in the future (iat)".into());
        }
        if self.require_token_ids && (c.iat.is_none() || c.jti.is_none()) {
            return refuse("token has no iat or jti, which this app requires".into());
        }
        if self.max_token_ttl_secs > 0 {
            // Without iat the lifetime left is all that can be judged.
            let lifetime = c.exp.saturating_sub(c.iat.unwrap_or(now));
            if lifetime > self.max_token_ttl_secs {
                return refuse(format!(
                    "token lifetime {lifetime} s exceeds this app's maximum of {} s",
                    self.max_token_ttl_secs
                ));
            }
        }
        Ok(())
    }

    /// The key the token's header names: 1002 for an unknown or retired kid.
    fn key_for(&self, tok: &str) -> Result<&token::PublicKey> {
        let kid = token::peek_kid(tok)
            .map_err(|e| Error::code(GimCode::Unauthorized, e.to_string()))?
            .unwrap_or_default();
        self.keys.get(&kid).ok_or_else(|| {
            Error::code(
                GimCode::Unauthorized,
                if kid.is_empty() {
                    "token has no kid and the app's original key is retired".to_string()
                } else {
                    format!("unknown or retired key id {kid:?}")
                },
            )
        })
    }
}

pub struct Apps {
    pool: MySqlPool,
    /// Each app's row (or `None`: no such app).
    apps: TtlCache<AppId, Option<Arc<AppInfo>>>,
    /// Tokens already verified for exactly (app, user, device) -> their claims: an Ed25519
    /// verify per call is the largest CPU cost of a send; the key includes the identity the
    /// caller claims. The app's and the user's rules are still checked on every call.
    verified: TtlCache<VerifiedKey, Arc<token::Claims>>,
    devices: TtlCache<DeviceId, (AppId, UserId)>,
    /// (app, user) of devices, one query for many devices.
    device_rows: Batcher<DeviceId, Result<Option<(i64, i64)>>>,
    /// First bindings of devices to users, one statement for many devices.
    device_binds: Batcher<(DeviceId, UserId), Result<bool>>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Apps")
    }
}

impl Apps {
    pub fn new(b: &Base) -> Self {
        let (pool, metrics, deadline) = (b.pool.clone(), &b.metrics, b.deadline);
        let conc = db::BATCH_CONCURRENCY;
        Self {
            device_rows: db::batcher("device_rows", &pool, metrics, deadline, conc, device_rows),
            device_binds: db::batcher("device_binds", &pool, metrics, deadline, conc, bind_devices),
            pool,
            // Dropped on every logic process when the app changes (policy invalidation); the TTL
            // bounds staleness when that message is lost.
            apps: TtlCache::new(Duration::from_secs(60), 10_000),
            // As long as the app-key cache: a replaced key stops old tokens within a minute.
            verified: TtlCache::new(Duration::from_secs(60), 200_000),
            // A binding never changes once made.
            devices: TtlCache::new(Duration::from_secs(3600), 500_000),
        }
    }

    /// The app's row and active keys (cached); 1002 for an unknown app.
    pub async fn app(&self, app: AppId) -> Result<Arc<AppInfo>> {
        let info = match self.apps.get(&app) {
            Some(k) => k,
            None => {
                let info = self.load_app(app).await?;
                self.apps.insert(app, info.clone());
                info
            }
        };
        info.ok_or_else(|| Error::code(GimCode::Unauthorized, "unknown app"))
    }

    async fn load_app(&self, app: AppId) -> Result<Option<Arc<AppInfo>>> {
        type Row = (Vec<u8>, i8, i8, i64, i8);
        let row: Option<Row> = sqlx::query_as(
            "SELECT public_key, suspended, key_retired, max_token_ttl_secs, require_token_ids \
             FROM app WHERE app_id = ?",
        )
        .bind(app.0)
        .fetch_optional(&self.pool)
        .await?;
        let Some((original, suspended, retired, max_ttl, require_ids)) = row else {
            return Ok(None);
        };
        let added: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT kid, public_key FROM app_key WHERE app_id = ? AND retired_at IS NULL",
        )
        .bind(app.0)
        .fetch_all(&self.pool)
        .await?;
        let mut keys = HashMap::new();
        // A stored key that does not decode is not cached: every sign-in says why.
        let decode = |kid: &str, bytes: &[u8]| {
            token::PublicKey::from_bytes(bytes).map_err(|e| {
                Error::code(GimCode::Unauthorized, format!("app {app} key {kid:?}: {e}"))
            })
        };
        if retired == 0 {
            keys.insert(String::new(), decode("", &original)?);
        }
        for (kid, bytes) in added {
            let k = decode(&kid, &bytes)?;
            keys.insert(kid, k);
        }
        Ok(Some(Arc::new(AppInfo {
            keys,
            suspended: suspended != 0,
            max_token_ttl_secs: max_ttl,
            require_token_ids: require_ids != 0,
        })))
    }

    /// The app changed (here or in another process).
    pub fn drop_app(&self, app: AppId) {
        self.apps.remove(&app);
        self.verified.retain(|k| k.1 != app);
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all(&self) {
        self.apps.retain(|_| false);
    }

    /// A client's device token for exactly (app, user, device), checked against the app's keys
    /// and token rules, and the device bound to the user. User and device ids must be positive
    /// (1006), as in every other API. The claims, for the user's rules ([`crate::policy`]).
    pub async fn auth_device(
        &self,
        app: AppId,
        user: UserId,
        device: DeviceId,
        tok: &str,
    ) -> Result<Arc<token::Claims>> {
        // Ids are positive everywhere else; a token minted for user 0 or a negative id (a
        // business server's bug) must not bind a device to a user no other API can name.
        validate::id("user_id", user.0)?;
        validate::id("device_id", device.0)?;
        let now = token::now_secs();
        let info = self.app(app).await?;
        let ck = (false, app, user, device, tok.to_string());
        let claims = match self.verified.get(&ck) {
            Some(c) if c.exp > now => c,
            _ => {
                let key = info.key_for(tok)?;
                let claims = token::verify_device_with(key, tok, app.0, user.0, device.0, now)
                    .map_err(|e| Error::code(GimCode::Unauthorized, e.to_string()))?;
                let claims = Arc::new(claims);
                self.verified.insert(ck, claims.clone());
                claims
            }
        };
        info.check_claims(&claims, now)?;
        self.bind_device(app, user, device).await?;
        Ok(claims)
    }

    /// A business server's app-level token, checked against the app's keys and token rules.
    pub async fn auth_server(&self, app: AppId, tok: &str) -> Result<Arc<token::Claims>> {
        let now = token::now_secs();
        let info = self.app(app).await?;
        let ck = (true, app, UserId(0), DeviceId(0), tok.to_string());
        let claims = match self.verified.get(&ck) {
            Some(c) if c.exp > now => c,
            _ => {
                let key = info.key_for(tok)?;
                let claims = token::verify_server_with(key, tok, app.0, now)
                    .map_err(|e| Error::code(GimCode::Unauthorized, e.to_string()))?;
                // Cached as a server token (the `true`): a device token never passes as one.
                let claims = Arc::new(claims);
                self.verified.insert(ck, claims.clone());
                claims
            }
        };
        info.check_claims(&claims, now)?;
        Ok(claims)
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
        match self.app(AppId(req.app_id)).await {
            Ok(info) if info.suspended => return Err(GimCode::AppSuspended.into()),
            Ok(_) => {}
            Err(_) => return Err(Error::bad_request("app_id", "unknown app")),
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
}

/// `(app_id, user_id)` of each device (user 0: not bound yet): one text query for the batch
/// ([`lit`]), or one per device when that fails (so each caller gets its own error).
async fn device_rows(pool: MySqlPool, ids: Vec<DeviceId>) -> Vec<Result<Option<(i64, i64)>>> {
    if ids.len() > 1 {
        let mut sql =
            String::from("SELECT device_id, app_id, user_id FROM device WHERE device_id IN (");
        lit::ints(&mut sql, ids.iter().map(|d| d.0));
        sql.push(')');
        if let Ok(rows) = lit::rows::<3>(&pool, sql).await {
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
/// else stays theirs): one text statement for the batch ([`lit`]), or one per device when that
/// fails. True when the bind is known to have won: the statement changed every row it named.
/// Otherwise the caller re-reads to find out who won; a first sign-in then pays no re-read in the
/// usual case.
async fn bind_devices(pool: MySqlPool, binds: Vec<(DeviceId, UserId)>) -> Vec<Result<bool>> {
    if binds.len() > 1 {
        use std::fmt::Write as _;
        let mut sql = String::from("UPDATE device SET user_id = CASE device_id");
        for (d, u) in &binds {
            let _ = write!(sql, " WHEN {} THEN {}", d.0, u.0);
        }
        sql.push_str(" ELSE user_id END WHERE user_id = 0 AND device_id IN (");
        lit::ints(&mut sql, binds.iter().map(|(d, _)| d.0));
        sql.push(')');
        if let Ok(n) = lit::execute(&pool, sql).await {
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
