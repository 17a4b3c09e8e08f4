//! Per-app rate limits and quotas: the rows apps set (`app_limits`), the server's defaults
//! (config `logic.send_per_sec`, ...) for what they did not, and the refusal (1011, counted per app).
//!
//! Enforcement sits where the state is: a user's send rate is a GCRA in Redis, checked inside
//! the seq allocation script of the sender's own list ([`crate::rds::GATE_LUA`]), so a send pays
//! no extra round trip for it. The app's row is cached like the app row in
//! [`crate::apps::Apps`]: a change drops it here at once and on every other logic process
//! through the invalidation channel (the app's message), and the TTL bounds staleness when that
//! message is lost.

use crate::base::Base;
use crate::cache::TtlCache;
use crate::error::{Error, Result};
use crate::groups::inval::{self, Changed};
use crate::metrics::{LimitLabels, Metrics};
use crate::rds::{Redis, send_rate_key};
use gim_common::{AppId, GimError, UserId};
use gim_proto::logic::v1 as pb;
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;

/// A rate limit checked in a seq allocation script ([`crate::rds::GATE_LUA`]).
#[derive(Debug, Clone)]
pub struct Rate {
    /// The GCRA key, in the slot of the list it rides with.
    pub key: String,
    /// Emission interval (1 s / rate) and burst tolerance (burst × interval), in µs.
    pub interval_us: i64,
    pub tolerance_us: i64,
}

/// An app's row as set: 0 = the server's default, -1 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsRow {
    pub send_per_sec: i64,
    pub send_burst: i64,
}

impl LimitsRow {
    pub fn to_pb(self) -> pb::AppLimits {
        pb::AppLimits {
            send_per_sec: self.send_per_sec,
            send_burst: self.send_burst,
        }
    }
}

/// The server's defaults (config), for what an app left at 0; 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaults {
    pub send_per_sec: u32,
    pub send_burst: u32,
}

/// The limits in force for one app: the row with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLimits {
    pub row: LimitsRow,
    /// Sends per second and burst of one user; `None`: not limited.
    pub send: Option<(u32, u32)>,
}

impl AppLimits {
    fn resolve(row: LimitsRow, d: &Defaults) -> Self {
        // 0 takes the default (whose 0 is no limit), -1 is no limit.
        let pick = |v: i64, def: u32| match v {
            0 => (def > 0).then_some(def),
            v if v < 0 => None,
            v => Some(v.min(u32::MAX as i64) as u32),
        };
        let send = pick(row.send_per_sec, d.send_per_sec)
            .map(|r| (r, pick(row.send_burst, d.send_burst).unwrap_or(1).max(1)));
        Self { row, send }
    }

    /// The API's view of the limits in force: -1 = no limit.
    pub fn effective(&self) -> pb::AppLimits {
        let (rate, burst) = self
            .send
            .map_or((-1, -1), |(r, b)| (i64::from(r), i64::from(b)));
        pb::AppLimits {
            send_per_sec: rate,
            send_burst: burst,
        }
    }
}

pub struct Limits {
    pool: MySqlPool,
    redis: Redis,
    metrics: Arc<Metrics>,
    defaults: Defaults,
    cache: TtlCache<AppId, Arc<AppLimits>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

impl Limits {
    pub fn new(b: &Base) -> Self {
        Self {
            pool: b.pool.clone(),
            redis: b.redis.clone(),
            metrics: b.metrics.clone(),
            defaults: Defaults {
                send_per_sec: b.cfg.send_per_sec,
                send_burst: b.cfg.send_burst,
            },
            cache: TtlCache::new(Duration::from_secs(60), 10_000),
        }
    }

    /// The app's limits in force (cached).
    pub async fn app(&self, app: AppId) -> Result<Arc<AppLimits>> {
        if let Some(l) = self.cache.get(&app) {
            return Ok(l);
        }
        let row: Option<(i32, i32)> =
            sqlx::query_as("SELECT send_per_sec, send_burst FROM app_limits WHERE app_id = ?")
                .bind(app.0)
                .fetch_optional(&self.pool)
                .await?;
        let row = row.map_or_else(LimitsRow::default, |(r, b)| LimitsRow {
            send_per_sec: r.into(),
            send_burst: b.into(),
        });
        let l = Arc::new(AppLimits::resolve(row, &self.defaults));
        self.cache.insert(app, l.clone());
        Ok(l)
    }

    /// The GCRA a user's sends go through, or `None` when the app does not limit them.
    pub async fn send_rate(&self, app: AppId, user: UserId) -> Result<Option<Rate>> {
        Ok(self.app(app).await?.send.map(|(per_sec, burst)| {
            let interval_us = (1_000_000 / i64::from(per_sec)).max(1);
            Rate {
                key: send_rate_key(app, user),
                interval_us,
                tolerance_us: interval_us * i64::from(burst),
            }
        }))
    }

    /// The 1011 of a refused request (counted per app and limit); `retry_after_ms` 0 for a
    /// quota.
    pub fn refuse(
        &self,
        app: AppId,
        limit: &'static str,
        why: String,
        retry_after_ms: i64,
    ) -> Error {
        self.metrics
            .rate_limited
            .get_or_create(&LimitLabels { app: app.0, limit })
            .inc();
        Error::Gim(GimError::rate_limited(why, retry_after_ms))
    }

    /// 1011 for a send over the user's rate.
    pub fn refuse_send(&self, app: AppId, retry_after_ms: i64) -> Error {
        let why = format!("send rate limit: retry after {retry_after_ms} ms");
        self.refuse(app, "send", why, retry_after_ms)
    }

    /// Replaces the app's row (1006 for a value out of range); returns the limits now in force.
    /// Every logic process applies them once the invalidation reaches it.
    pub async fn set(&self, app: AppId, l: &pb::AppLimits) -> Result<Arc<AppLimits>> {
        let check = |field: &str, v: i64, min: i64, max: i64| {
            if v != 0 && v != -1 && !(min..=max).contains(&v) {
                return Err(Error::bad_request(
                    field,
                    format!("0 (the default), -1 (no limit) or {min} to {max}"),
                ));
            }
            Ok(())
        };
        check("send_per_sec", l.send_per_sec, 1, 1_000_000)?;
        check("send_burst", l.send_burst, 1, 1_000_000)?;
        if l.send_burst == -1 {
            return Err(Error::bad_request(
                "send_burst",
                "0 (the default) or 1 to 1000000",
            ));
        }
        sqlx::query(
            "INSERT INTO app_limits (app_id, send_per_sec, send_burst) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE send_per_sec = VALUES(send_per_sec), \
             send_burst = VALUES(send_burst)",
        )
        .bind(app.0)
        .bind(l.send_per_sec)
        .bind(l.send_burst)
        .execute(&self.pool)
        .await?;
        self.cache.remove(&app);
        inval::publish_change(&self.redis, Changed::App(app));
        tracing::info!(%app, send_per_sec = l.send_per_sec, send_burst = l.send_burst, "app limits set");
        self.app(app).await
    }

    /// The app changed (here or in another process).
    pub fn drop_app(&self, app: AppId) {
        self.cache.remove(&app);
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all(&self) {
        self.cache.retain(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_the_defaults_where_zero_and_minus_one_lifts_a_limit() {
        let d = Defaults {
            send_per_sec: 20,
            send_burst: 100,
        };
        let r = |send_per_sec, send_burst| {
            AppLimits::resolve(
                LimitsRow {
                    send_per_sec,
                    send_burst,
                },
                &d,
            )
            .send
        };
        assert_eq!(r(0, 0), Some((20, 100)));
        assert_eq!(r(5, 0), Some((5, 100)));
        assert_eq!(r(5, 2), Some((5, 2)));
        assert_eq!(r(-1, 2), None);
        let off = Defaults::default();
        let row = LimitsRow {
            send_per_sec: 3,
            send_burst: 0,
        };
        assert_eq!(AppLimits::resolve(row, &off).send, Some((3, 1)));
        assert_eq!(AppLimits::resolve(LimitsRow::default(), &off).send, None);
    }
}
