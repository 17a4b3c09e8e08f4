//! Groups and membership: group rows, member lists and membership checks behind caches, the
//! writes that change them ([`edit`], [`members`]), and the invalidation that keeps every logic
//! process's caches honest ([`inval`]).

mod edit;
pub mod inval;
mod members;

use crate::base::Base;
use crate::cache::TtlCache;
use crate::db::rows::{GROUP_COLS, GroupRow};
use crate::error::Result;
use crate::ids::Segment;
use crate::push::{Nodes, Spawner};
use crate::rds::Redis;
use crate::users::Users;
use crate::validate;
use gim_common::{AppId, GimCode, GroupId, UserId};
use gim_proto::conn::v1::UpdateLargeGroupMembersReq;
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;

pub struct Groups {
    pool: MySqlPool,
    redis: Redis,
    users: Arc<Users>,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    ids: Segment,
    rows: TtlCache<(AppId, GroupId), Arc<GroupRow>>,
    members: TtlCache<(AppId, GroupId), Arc<Vec<i64>>>,
    large_members: TtlCache<(AppId, GroupId, UserId), bool>,
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Groups")
    }
}

impl Groups {
    pub fn new(b: &Base, users: Arc<Users>) -> Self {
        // Group rows and member lists are invalidated by this process's writes at once and by
        // other processes' writes within `short`.
        let short = Duration::from_secs(5);
        Self {
            pool: b.pool.clone(),
            redis: b.redis.clone(),
            users,
            nodes: b.nodes.clone(),
            spawner: b.spawner.clone(),
            ids: Segment::new("group", b.deadline),
            rows: TtlCache::new(short, 100_000),
            members: TtlCache::new(short, 20_000),
            large_members: TtlCache::new(short, 200_000),
        }
    }

    pub async fn group(&self, app: AppId, gid: GroupId) -> Result<Arc<GroupRow>> {
        validate::id("group_id", gid.0)?;
        if let Some(g) = self.rows.get(&(app, gid)) {
            return Ok(g);
        }
        let sql =
            format!("SELECT {GROUP_COLS} FROM im_group g WHERE g.app_id = ? AND g.group_id = ?");
        let row: Option<GroupRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(app.0)
            .bind(gid.0)
            .fetch_optional(&self.pool)
            .await?;
        let g = Arc::new(row.ok_or(GimCode::GroupNotFound)?);
        self.rows.insert((app, gid), g.clone());
        Ok(g)
    }

    /// Member ids of a group, sorted (cached; used for write diffusion and membership checks).
    pub async fn member_ids(&self, app: AppId, gid: GroupId) -> Result<Arc<Vec<i64>>> {
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

    pub async fn require_member(&self, app: AppId, g: &GroupRow, user: UserId) -> Result<()> {
        if self.is_member(app, g, user).await? {
            Ok(())
        } else {
            Err(GimCode::NotInGroup.into())
        }
    }

    fn invalidate_group(&self, app: AppId, gid: GroupId, users: &[i64]) {
        self.rows.remove(&(app, gid));
        self.members.remove(&(app, gid));
        for u in users {
            self.large_members.remove(&(app, gid, UserId(*u)));
        }
        // Other logic processes drop theirs when the message arrives (best effort: their TTLs
        // bound the staleness if it is lost).
        inval::publish(&self.redis, app, gid);
    }

    /// A group changed (here or in another process): forget everything cached about it.
    pub fn drop_group_caches(&self, app: AppId, gid: GroupId) {
        self.rows.remove(&(app, gid));
        self.members.remove(&(app, gid));
        self.large_members
            .retain(|(a, g, _)| !(*a == app && *g == gid));
    }

    /// After the invalidation channel reconnects: messages may have been missed.
    pub fn drop_all_group_caches(&self) {
        self.rows.retain(|_| false);
        self.members.retain(|_| false);
        self.large_members.retain(|_| false);
    }

    async fn spawn_large_update(&self, req: UpdateLargeGroupMembersReq) {
        let nodes = self.nodes.clone();
        self.spawner
            .spawn(async move {
                let _ = nodes.update_large_group(req).await;
            })
            .await;
    }
}

impl inval::Invalidate for Groups {
    fn drop_group(&self, app: AppId, gid: GroupId) {
        self.drop_group_caches(app, gid);
    }

    fn drop_all(&self) {
        self.drop_all_group_caches();
    }
}
