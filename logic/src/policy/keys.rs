//! The app's keys (several, named by `kid`, retired rather than deleted) and its token rules
//! (maximum lifetime, required `iat`/`jti`), which [`crate::apps::Apps`] applies to every token.

use super::Policies;
use crate::db;
use crate::error::{Error, Result};
use gim_common::token;
use gim_common::{AppId, GimCode};

/// One key of an app, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub public_key: Vec<u8>,
    pub created_ms: i64,
    pub retired: bool,
}

impl Policies {
    /// Adds a public key the app's tokens may name by `kid`.
    pub async fn add_key(&self, app: AppId, kid: &str, public_key: &[u8]) -> Result<()> {
        if !token::valid_kid(kid) {
            return Err(Error::bad_request(
                "kid",
                format!("1 to {} characters of A-Z a-z 0-9 . _ -", token::KID_MAX),
            ));
        }
        let key = token::PublicKey::from_bytes(public_key)
            .map_err(|e| Error::bad_request("public_key", e))?;
        self.apps.app(app).await?;
        let r = sqlx::query("INSERT INTO app_key (app_id, kid, public_key) VALUES (?, ?, ?)")
            .bind(app.0)
            .bind(kid)
            .bind(key.to_bytes().as_slice())
            .execute(&self.pool)
            .await;
        match r {
            Ok(_) => {}
            Err(e) if db::is_duplicate(&e) => {
                return Err(Error::bad_request(
                    "kid",
                    "the app has (or had) a key with this id",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.changed_app(app);
        tracing::info!(%app, kid, "app key added");
        Ok(())
    }

    /// The app's keys: the original (kid "") first, then the added ones in kid order.
    pub async fn keys(&self, app: AppId) -> Result<Vec<KeyInfo>> {
        type Row = (String, Vec<u8>, i64, i8);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT '', public_key, CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED), key_retired \
             FROM app WHERE app_id = ? \
             UNION ALL SELECT kid, public_key, CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED), \
             CAST(retired_at IS NOT NULL AS SIGNED) FROM app_key WHERE app_id = ? ORDER BY 1",
        )
        .bind(app.0)
        .bind(app.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kid, public_key, created_ms, retired)| KeyInfo {
                kid,
                public_key,
                created_ms,
                retired: retired != 0,
            })
            .collect())
    }

    /// Retires a key: tokens naming it are refused from now on (on every logic process at
    /// once). 1006 for an unknown or retired kid, or the app's last active key.
    pub async fn retire_key(&self, app: AppId, kid: &str) -> Result<()> {
        let active = self.keys(app).await?;
        if active.is_empty() {
            return Err(Error::code(GimCode::Unauthorized, "unknown app"));
        }
        let active: Vec<&KeyInfo> = active.iter().filter(|k| !k.retired).collect();
        if !active.iter().any(|k| k.kid == kid) {
            return Err(Error::bad_request("kid", "no active key with this id"));
        }
        if active.len() == 1 {
            return Err(Error::bad_request(
                "kid",
                "the app's last active key: add another first",
            ));
        }
        if kid.is_empty() {
            sqlx::query("UPDATE app SET key_retired = 1 WHERE app_id = ?")
                .bind(app.0)
                .execute(&self.pool)
                .await?;
        } else {
            sqlx::query(
                "UPDATE app_key SET retired_at = CURRENT_TIMESTAMP(3) \
                 WHERE app_id = ? AND kid = ? AND retired_at IS NULL",
            )
            .bind(app.0)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        }
        self.changed_app(app);
        tracing::info!(%app, kid, "app key retired");
        Ok(())
    }

    /// The app's token rules: a maximum lifetime (0: none) and whether tokens must carry iat
    /// and jti.
    pub async fn set_token_policy(
        &self,
        app: AppId,
        max_token_ttl_secs: i64,
        require_token_ids: bool,
    ) -> Result<()> {
        const TEN_YEARS: i64 = 10 * 366 * 86_400;
        if !(0..=TEN_YEARS).contains(&max_token_ttl_secs) {
            return Err(Error::bad_request(
                "max_token_ttl_secs",
                format!("must be 0 (no limit) to {TEN_YEARS}"),
            ));
        }
        self.apps.app(app).await?;
        sqlx::query(
            "UPDATE app SET max_token_ttl_secs = ?, require_token_ids = ? WHERE app_id = ?",
        )
        .bind(max_token_ttl_secs)
        .bind(require_token_ids as i8)
        .bind(app.0)
        .execute(&self.pool)
        .await?;
        self.changed_app(app);
        tracing::info!(%app, max_token_ttl_secs, require_token_ids, "token policy changed");
        Ok(())
    }
}
