//! Users of an app: added by themselves (clients) or imported by business servers, read through
//! a cache that every write here invalidates.

use crate::cache::TtlCache;
use crate::db;
use crate::db::rows::{USER_COLS, UserRow};
use crate::error::{Error, Result};
use crate::validate::{self, IDS_MAX};
use gim_common::{AppId, GimCode, UserId};
use gim_proto::logic::v1 as pb;
use sqlx::{MySql, MySqlPool, QueryBuilder};
use std::time::Duration;

#[derive(Debug)]
pub struct Users {
    pool: MySqlPool,
    cache: TtlCache<(AppId, UserId), pb::User>,
}

impl Users {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            cache: TtlCache::new(Duration::from_secs(30), 200_000),
        }
    }

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
            Err(e) if db::is_duplicate(&e) => Err(GimCode::UserAlreadyExists.into()),
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
        qb.push_bind(app.0).push(" AND user_id");
        db::push_in(&mut qb, ids.iter().copied());
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
            self.cache.remove(&(app, UserId(*id)));
        }
        let updated = existing.len() as i32;
        Ok((ids.len() as i32 - updated, updated))
    }

    pub async fn get_user(&self, app: AppId, user: UserId) -> Result<pb::User> {
        validate::id("user_id", user.0)?;
        if let Some(u) = self.cache.get(&(app, user)) {
            return Ok(u);
        }
        let sql = format!("SELECT {USER_COLS} FROM user WHERE app_id = ? AND user_id = ?");
        let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(user.0)
            .fetch_optional(&self.pool)
            .await?;
        let u = pb::User::from(row.ok_or(GimCode::UserNotFound)?);
        self.cache.insert((app, user), u.clone());
        Ok(u)
    }

    /// 1010 naming the first id that is not a user of the app. One query for all uncached ids.
    pub async fn users_exist(&self, app: AppId, field: &str, ids: &[i64]) -> Result<()> {
        let missing: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| self.cache.get(&(app, UserId(*id))).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut qb =
            QueryBuilder::<MySql>::new(format!("SELECT {USER_COLS} FROM user WHERE app_id = "));
        qb.push_bind(app.0).push(" AND user_id");
        db::push_in(&mut qb, missing.iter().copied());
        let rows: Vec<UserRow> = qb
            .build_query_as()
            .persistent(missing.len() <= 2)
            .fetch_all(&self.pool)
            .await?;
        let found: std::collections::HashSet<i64> = rows.iter().map(|r| r.user_id).collect();
        for r in rows {
            let u = pb::User::from(r);
            self.cache.insert((app, UserId(u.user_id)), u);
        }
        if let Some(id) = missing.iter().find(|id| !found.contains(id)) {
            return Err(Error::code(
                GimCode::UserNotFound,
                format!("{field}: user {id} not found"),
            ));
        }
        Ok(())
    }
}
