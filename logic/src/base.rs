//! What every domain is built on: the config, the stores, metrics, the conn-node registry and
//! the background push spawner, cloned into each domain once at start.

use crate::metrics::Metrics;
use crate::push::{Nodes, Spawner};
use crate::rds::{Redis, Scripts};
use gim_common::config::LogicSection;
use sqlx::MySqlPool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Base {
    pub cfg: LogicSection,
    pub pool: MySqlPool,
    pub redis: Redis,
    pub scripts: Arc<Scripts>,
    pub metrics: Arc<Metrics>,
    pub nodes: Arc<Nodes>,
    pub spawner: Spawner,
    /// Deadline of each batch of MySQL statements and of each id-segment refill.
    pub deadline: Duration,
}
