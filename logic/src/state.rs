//! One logic process's state: the stores and the domains, wired together once at start.

use crate::apps::Apps;
use crate::base::Base;
use crate::groups::Groups;
use crate::messages::Messages;
use crate::metrics::Metrics;
use crate::push::{Nodes, Spawner};
use crate::rds::{Redis, Scripts};
use crate::sessions::Sessions;
use crate::users::Users;
use gim_common::config::LogicSection;
use gim_common::internal::AddSecret;
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct State {
    pub pool: MySqlPool,
    pub redis: Redis,
    pub metrics: Arc<Metrics>,
    pub nodes: Arc<Nodes>,
    pub apps: Arc<Apps>,
    pub users: Arc<Users>,
    pub groups: Arc<Groups>,
    pub messages: Messages,
    pub sessions: Sessions,
}

impl State {
    /// `deadline` bounds each batch of MySQL statements and each id-segment refill; `internal`
    /// is the cluster secret sent with every call to conn nodes.
    pub fn new(
        cfg: LogicSection,
        pool: MySqlPool,
        redis: Redis,
        metrics: Arc<Metrics>,
        deadline: Duration,
        internal: AddSecret,
    ) -> Self {
        let nodes = Arc::new(Nodes::new(redis.clone(), metrics.clone(), internal));
        let base = Base {
            cfg,
            pool,
            redis,
            scripts: Arc::new(Scripts::default()),
            metrics,
            nodes,
            spawner: Spawner::default(),
            deadline,
        };
        let apps = Arc::new(Apps::new(&base));
        let users = Arc::new(Users::new(base.pool.clone()));
        let groups = Arc::new(Groups::new(&base, users.clone()));
        let messages = Messages::new(&base, users.clone(), groups.clone());
        let sessions = Sessions::new(&base, apps.clone(), groups.clone());
        Self {
            pool: base.pool,
            redis: base.redis,
            metrics: base.metrics,
            nodes: base.nodes,
            apps,
            users,
            groups,
            messages,
            sessions,
        }
    }
}
