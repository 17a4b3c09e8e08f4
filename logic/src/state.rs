//! One logic process's state: the stores and the domains, wired together once at start.

use crate::apps::Apps;
use crate::base::Base;
use crate::conversations::Conversations;
use crate::groups::Groups;
use crate::groups::inval::Invalidate;
use crate::limits::Limits;
use crate::messages::Messages;
use crate::metrics::Metrics;
use crate::policy::Policies;
use crate::push::{Nodes, Spawner};
use crate::rds::{Redis, Scripts};
use crate::sessions::Sessions;
use crate::users::Users;
use gim_common::config::LogicSection;
use gim_common::internal::AddSecret;
use gim_common::{AppId, GroupId, UserId};
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
    pub policies: Arc<Policies>,
    pub limits: Arc<Limits>,
    pub groups: Arc<Groups>,
    pub messages: Messages,
    pub conversations: Conversations,
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
        let policies = Arc::new(Policies::new(&base, apps.clone(), users.clone()));
        let groups = Arc::new(Groups::new(&base, users.clone()));
        let limits = Arc::new(Limits::new(&base));
        let messages = Messages::new(
            &base,
            users.clone(),
            groups.clone(),
            policies.clone(),
            limits.clone(),
        );
        let conversations = Conversations::new(&base, groups.clone(), messages.seqs.clone());
        let sessions = Sessions::new(&base, policies.clone(), groups.clone());
        Self {
            pool: base.pool,
            redis: base.redis,
            metrics: base.metrics,
            nodes: base.nodes,
            apps,
            users,
            policies,
            limits,
            groups,
            messages,
            conversations,
            sessions,
        }
    }
}

/// The invalidation channel's messages, to the domain whose cache they concern.
impl Invalidate for State {
    fn drop_group(&self, app: AppId, gid: GroupId) {
        self.groups.drop_group_caches(app, gid);
    }

    fn drop_app(&self, app: AppId) {
        self.apps.drop_app(app);
        self.limits.drop_app(app);
    }

    fn drop_user(&self, app: AppId, user: UserId) {
        self.policies.drop_user(app, user);
    }

    fn drop_all(&self) {
        self.groups.drop_all_group_caches();
        self.apps.drop_all();
        self.limits.drop_all();
        self.policies.drop_all();
    }
}
