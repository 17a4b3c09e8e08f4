//! What conn nodes call for a long connection: sign-in (auth, route swap, supersede), offline,
//! route restore after a Redis loss, and (in [`sync`]) sync, large-group sync and acks.

mod sync;

use crate::base::Base;
use crate::batch::Batcher;
use crate::db::{self, lit};
use crate::error::{Error, Result};
use crate::groups::Groups;
use crate::policy::Policies;
use crate::push::{Nodes, Spawner};
use crate::rds::{Redis, Scripts, slot};
use gim_common::config::LogicSection;
use gim_common::{AppId, DeviceId, UserId, keys};
use gim_proto::conn::v1::CloseConnReq;
use gim_proto::logic::v1 as pb;
use sqlx::MySqlPool;
use std::sync::Arc;
pub use sync::{SYNC_LIMIT_MAX, SYNC_PAGE_BYTES};

pub struct Sessions {
    cfg: LogicSection,
    pool: MySqlPool,
    redis: Redis,
    scripts: Arc<Scripts>,
    policies: Arc<Policies>,
    groups: Arc<Groups>,
    nodes: Arc<Nodes>,
    spawner: Spawner,
    /// Large groups of users signing in, one query for many users.
    large_of: Batcher<(AppId, UserId), Result<Vec<i64>>>,
    /// Sync pages of concurrent syncs (a reconnect storm), one query for many users.
    sync_pages: Batcher<sync::PageKey, Result<Vec<db::rows::MessageRow>>>,
    /// Device acks of concurrent clients, one statement (one commit) for many devices.
    acks: Batcher<sync::AckRow, Result<()>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions")
    }
}

impl Sessions {
    pub fn new(b: &Base, policies: Arc<Policies>, groups: Arc<Groups>) -> Self {
        let d = b.clone();
        let (pool, m, t, c) = (&d.pool, &d.metrics, d.deadline, db::BATCH_CONCURRENCY);
        Self {
            large_of: db::batcher("large_of", pool, m, t, c, large_groups_of),
            sync_pages: db::batcher("sync_pages", pool, m, t, c, sync::sync_pages),
            acks: db::batcher("acks", pool, m, t, c, sync::store_acks),
            cfg: d.cfg,
            pool: d.pool,
            redis: d.redis,
            scripts: d.scripts,
            policies,
            groups,
            nodes: d.nodes,
            spawner: d.spawner,
        }
    }

    pub async fn sign_in(&self, req: pb::SignInReq) -> Result<pb::SignInResp> {
        let (app, user, device) = (
            AppId(req.app_id),
            UserId(req.user_id),
            DeviceId(req.device_id),
        );
        if req.node_id.is_empty() {
            return Err(Error::bad_request("node_id", "must not be empty"));
        }
        if req.conn_id < 0 {
            return Err(Error::bad_request("conn_id", "must not be negative"));
        }
        self.policies
            .auth_device(app, user, device, &req.token)
            .await?;
        let key = keys::route_key(app, user);
        let value = keys::route_value(&req.node_id, req.conn_id);
        let mut inv = self.scripts.route_swap.prepare_invoke();
        inv.key(&key).arg(device.0).arg(&value);
        let old: Option<String> = self.redis.script(inv).await?;
        if let Some(old) = old
            && old != value
            && let Some((node, conn)) = keys::parse_route_value(&old)
        {
            // Supersede: the same device signed in again; its older connection is closed, on
            // whichever node it lives (if that node is still alive).
            let node = node.to_string();
            let nodes = self.nodes.clone();
            let close = CloseConnReq {
                app_id: app.0,
                device_id: device.0,
                conn_id: conn,
                reason: "signed in elsewhere".into(),
            };
            self.spawner
                .spawn(async move {
                    let _ = nodes.close_conn(&node, close).await;
                })
                .await;
        }
        // Batched with concurrent sign-ins: a sign-in storm costs MySQL one query per batch.
        let large = match self.large_of.try_call((app, user), "sign-in batcher").await {
            Ok(large) => large,
            Err(e) => {
                // conn closes a connection whose sign-in failed: the route written above must
                // not outlive it (pushes would go to a connection that never existed).
                let mut inv = self.scripts.route_del.prepare_invoke();
                inv.key(&key).arg(device.0).arg(&value);
                if let Err(d) = self.redis.script::<i64>(inv).await {
                    tracing::warn!(error = %d, %device, "failed sign-in: route not removed");
                }
                return Err(e);
            }
        };
        tracing::debug!(%app, %user, %device, node = %req.node_id, conn = req.conn_id, "signed in");
        Ok(pb::SignInResp {
            large_group_ids: large,
        })
    }

    pub async fn offline(&self, req: pb::OfflineReq) -> Result<()> {
        let key = keys::route_key(AppId(req.app_id), UserId(req.user_id));
        let value = keys::route_value(&req.node_id, req.conn_id);
        let mut inv = self.scripts.route_del.prepare_invoke();
        inv.key(&key).arg(req.device_id).arg(&value);
        let _: i64 = self.redis.script(inv).await?;
        Ok(())
    }

    /// Re-records a node's routes after Redis lost them. HSETNX per device: a route that exists
    /// (a newer sign-in, possibly on another node) is left alone. One pipeline per hash slot on a
    /// cluster. Push reads routes straight from Redis (no route cache), so nothing to invalidate.
    pub async fn restore_routes(&self, req: pb::RestoreRoutesReq) -> Result<u32> {
        if req.node_id.is_empty() {
            return Err(Error::bad_request("node_id", "must not be empty"));
        }
        if req.routes.iter().any(|r| r.conn_id < 0) {
            return Err(Error::bad_request("routes.conn_id", "must not be negative"));
        }
        let mut groups: std::collections::BTreeMap<u16, redis::Pipeline> = Default::default();
        for r in &req.routes {
            let key = keys::route_key(AppId(r.app_id), UserId(r.user_id));
            let s = if self.redis.is_cluster() {
                slot(&key)
            } else {
                0
            };
            groups
                .entry(s)
                .or_insert_with(redis::pipe)
                .cmd("HSETNX")
                .arg(&key)
                .arg(r.device_id)
                .arg(keys::route_value(&req.node_id, r.conn_id));
        }
        let calls = groups
            .values()
            .map(|p| async move { self.redis.pipe::<Vec<i64>>(p).await });
        let results = futures::future::try_join_all(calls).await?;
        let restored = results.iter().flatten().filter(|&&v| v == 1).count() as u32;
        tracing::info!(node = %req.node_id, asked = req.routes.len(), restored, "routes restored");
        Ok(restored)
    }
}

const LARGE_OF_USER: &str = "SELECT m.group_id FROM group_member m \
     JOIN im_group g ON g.app_id = m.app_id AND g.group_id = m.group_id \
     WHERE m.app_id = ? AND m.user_id = ? AND g.type = 2 ORDER BY m.group_id";

/// The large groups of each (app, user), in group id order: one text query for the batch
/// ([`lit`]; the member-by-user index, one range per user), or one per user when that fails.
async fn large_groups_of(pool: MySqlPool, users: Vec<(AppId, UserId)>) -> Vec<Result<Vec<i64>>> {
    use std::fmt::Write as _;
    if users.len() > 1 {
        let mut sql = String::from(
            "SELECT m.app_id, m.user_id, m.group_id FROM group_member m \
             JOIN im_group g ON g.app_id = m.app_id AND g.group_id = m.group_id WHERE g.type = 2 AND (",
        );
        lit::join(&mut sql, &users, " OR ", |sql, (app, user)| {
            let _ = write!(sql, "(m.app_id = {} AND m.user_id = {})", app.0, user.0);
        });
        sql.push_str(") ORDER BY m.group_id");
        if let Ok(rows) = lit::rows::<3>(&pool, sql).await {
            let mut by: std::collections::HashMap<(i64, i64), Vec<i64>> = Default::default();
            for [a, u, g] in rows {
                by.entry((a, u)).or_default().push(g);
            }
            return users
                .iter()
                .map(|(a, u)| Ok(by.get(&(a.0, u.0)).cloned().unwrap_or_default()))
                .collect();
        }
    }
    let each = users.iter().map(|(app, user)| {
        let pool = &pool;
        async move {
            Ok(sqlx::query_scalar(LARGE_OF_USER)
                .bind(app.0)
                .bind(user.0)
                .fetch_all(pool)
                .await?)
        }
    });
    futures::future::join_all(each).await
}
