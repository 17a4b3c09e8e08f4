//! What a tenant does to its users: blocks between users, app and user suspension, forced
//! logouts and revoked tokens. Each change is stored, dropped from every logic process's cache
//! ([`Policies::changed_user`]) and, where it shuts someone out, closes their live connections.

use super::{BLOCKS_MAX, Policies, REVOKED_MAX, jti_hash};
use crate::error::{Error, Result};
use crate::validate;
use gim_common::token;
use gim_common::{AppId, DeviceId, UserId};

impl Policies {
    /// `user` blocks `other` (idempotent): 1006 for itself or over [`BLOCKS_MAX`], 1010 when
    /// `other` is not a user of the app.
    pub async fn block(&self, app: AppId, user: UserId, other: UserId) -> Result<()> {
        validate::id("user_id", other.0)?;
        if other == user {
            return Err(Error::bad_request("user_id", "a user cannot block itself"));
        }
        self.users.users_exist(app, "user_id", &[other.0]).await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM user_block WHERE app_id = ? AND user_id = ?")
                .bind(app.0)
                .bind(user.0)
                .fetch_one(&self.pool)
                .await?;
        if n >= BLOCKS_MAX {
            return Err(Error::bad_request(
                "user_id",
                format!("at most {BLOCKS_MAX} blocked users"),
            ));
        }
        sqlx::query(
            "INSERT IGNORE INTO user_block (app_id, user_id, blocked_user_id) VALUES (?, ?, ?)",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(other.0)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        Ok(())
    }

    /// Lifts a block (idempotent).
    pub async fn unblock(&self, app: AppId, user: UserId, other: UserId) -> Result<()> {
        validate::id("user_id", other.0)?;
        sqlx::query(
            "DELETE FROM user_block WHERE app_id = ? AND user_id = ? AND blocked_user_id = ?",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(other.0)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        Ok(())
    }

    /// The users `user` has blocked, in id order.
    pub async fn blocked(&self, app: AppId, user: UserId) -> Result<Vec<i64>> {
        let mut v: Vec<i64> = self
            .user(app, user)
            .await?
            .blocked
            .iter()
            .copied()
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Suspends an app's clients (or lifts it); suspending closes their live connections on
    /// every conn node. Returns the connections closed. 1002 for an unknown app.
    pub async fn set_app_suspended(&self, app: AppId, suspended: bool) -> Result<u32> {
        self.apps.app(app).await?;
        sqlx::query("UPDATE app SET suspended = ? WHERE app_id = ?")
            .bind(suspended as i8)
            .bind(app.0)
            .execute(&self.pool)
            .await?;
        self.changed_app(app);
        tracing::info!(%app, suspended, "app suspension changed");
        if !suspended {
            return Ok(0);
        }
        Ok(self.close(app, UserId(0), "app suspended").await)
    }

    /// Suspends a user (or lifts it); suspending closes its live connections on every conn node.
    /// Returns the connections closed.
    pub async fn set_user_suspended(
        &self,
        app: AppId,
        user: UserId,
        suspended: bool,
    ) -> Result<u32> {
        validate::id("user_id", user.0)?;
        self.apps.app(app).await?;
        sqlx::query(
            "INSERT INTO user_policy (app_id, user_id, device_id, suspended) VALUES (?, ?, 0, ?) \
             ON DUPLICATE KEY UPDATE suspended = VALUES(suspended)",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(suspended as i8)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        tracing::info!(%app, %user, suspended, "user suspension changed");
        if !suspended {
            return Ok(0);
        }
        Ok(self.close(app, user, "user suspended").await)
    }

    /// Refuses every token of the user (or of one device) issued at or before now, and tokens
    /// without iat, and closes those live connections on every conn node. Returns the cut-off
    /// (Unix seconds) and the connections closed.
    pub async fn force_logout(
        &self,
        app: AppId,
        user: UserId,
        device: Option<DeviceId>,
    ) -> Result<(i64, u32)> {
        validate::id("user_id", user.0)?;
        if let Some(d) = device {
            validate::id("device_id", d.0)?;
        }
        self.apps.app(app).await?;
        let now = token::now_secs();
        sqlx::query(
            "INSERT INTO user_policy (app_id, user_id, device_id, tokens_after) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE tokens_after = GREATEST(tokens_after, VALUES(tokens_after))",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(device.map_or(0, |d| d.0))
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        tracing::info!(%app, %user, device = device.map_or(0, |d| d.0), "forced logout");
        let closed = self.close_now(app, user, device, "logged out").await;
        Ok((now, closed))
    }

    /// Revokes one token by its jti (user 0: a server token), kept until `expires_at` (0: for
    /// good); with a device, that device's live connections are closed too.
    pub async fn revoke_token(
        &self,
        app: AppId,
        user: UserId,
        jti: &str,
        expires_at: i64,
        device: Option<DeviceId>,
    ) -> Result<u32> {
        if user.0 < 0 {
            return Err(Error::bad_request("user_id", "must not be negative"));
        }
        validate::text("jti", jti, 128, true)?;
        if expires_at < 0 {
            return Err(Error::bad_request("expires_at", "must not be negative"));
        }
        if let Some(d) = device {
            validate::id("device_id", d.0)?;
        }
        self.apps.app(app).await?;
        let now = token::now_secs();
        // Revocations of tokens that expired since are dropped here: the list stays bounded.
        sqlx::query(
            "DELETE FROM revoked_token WHERE app_id = ? AND user_id = ? AND expires_at <= ?",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM revoked_token WHERE app_id = ? AND user_id = ?",
        )
        .bind(app.0)
        .bind(user.0)
        .fetch_one(&self.pool)
        .await?;
        if n >= REVOKED_MAX {
            return Err(Error::bad_request(
                "jti",
                format!("at most {REVOKED_MAX} revoked tokens per user: use ForceLogout"),
            ));
        }
        let expires_at = if expires_at == 0 {
            i64::MAX
        } else {
            expires_at
        };
        sqlx::query(
            "INSERT INTO revoked_token (app_id, user_id, jti_hash, jti, expires_at) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE expires_at = GREATEST(expires_at, VALUES(expires_at))",
        )
        .bind(app.0)
        .bind(user.0)
        .bind(jti_hash(jti))
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        self.changed_user(app, user);
        tracing::info!(%app, %user, "token revoked");
        Ok(match device {
            Some(d) if user.0 > 0 => self.close_now(app, user, Some(d), "token revoked").await,
            _ => 0,
        })
    }
}
