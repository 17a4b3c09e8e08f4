//! gim-logic: the stateless multi-tenant messaging core. It owns users, devices, groups, messages,
//! sequences, sync and routing on MySQL (durable store) and Redis (seq counters, routes, the conn
//! node registry), serves conn nodes (`LogicInt`), client apps (`LogicClientExt`) and tenants'
//! business servers (`LogicServerExt`) on three gRPC listeners, and pushes to conn nodes through
//! their `ConnInt` service found in the Redis registry. Any number of logic processes can run
//! behind a load balancer. [`start`] runs it in-process (tests, e2e, bench); `main` wraps it.
//!
//! Modules, each with what it uses (no module uses one listed after it, so there is no loop):
//! - [`error`], [`validate`], [`cache`], [`metrics`], [`batch`]: leaf pieces (batch uses error).
//! - [`db`]: row types, column lists, literal batches, the `IN` list, deadlines; uses batch.
//! - [`rds`]: Redis (single server or cluster), Lua scripts, logic's key names.
//! - [`push`]: conn node registry, channels, route lookup, delivery, background spawner; uses rds.
//! - [`ids`]: message and group ids from `id_segment`; uses db.
//! - [`base`]: config, stores, metrics, nodes and spawner every domain is built on; uses push.
//! - [`apps`]: apps, keys, token auth, device registration and binding; uses base, db.
//! - [`users`]: users and their cache; uses db.
//! - [`limits`]: per-app rate limits and quotas, their cache and refusals (1011); uses base,
//!   rds, groups' invalidation channel.
//! - [`policy`]: app and user suspension, blocks, their caches; uses apps, users, push, groups'
//!   invalidation channel.
//! - [`groups`]: groups, membership, their caches and invalidation; uses users, ids, push, rds.
//! - [`messages`]: send, the one store path, idempotency, seqs, business pushes, recall / edit /
//!   delete-for-me of stored messages; uses users, groups, policy, ids, push, rds.
//! - [`conversations`]: the conversation list, read positions and receipts, pin / mute /
//!   delete, one conversation's history; uses groups, messages (seqs, the preview), ids, push.
//! - [`sessions`]: sign-in, offline, routes, sync, acks; uses policy, groups, push, rds.
//! - [`state`]: builds and holds the domains; [`api`]: the gRPC services over state;
//!   [`admin`]: the admin HTTP listener (probes, metrics, app creation) over state and apps.
//! - [`ops`]: operations commands on MySQL alone (export one app, purge by retention).

pub mod admin;
pub mod api;
pub mod apps;
pub mod base;
pub mod batch;
pub mod cache;
pub mod conversations;
pub mod db;
pub mod error;
pub mod groups;
pub mod ids;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod push;
pub mod rds;
pub mod sessions;
pub mod state;
pub mod users;
pub mod validate;

pub use crate::apps::{create_app, register_app};
pub use crate::error::Error;
pub use crate::messages::Sender;
pub use crate::state::State;

use gim_common::config::LogicConfig;
use gim_common::internal::{AddSecret, CheckSecret, Secret};
use gim_common::shutdown::Shutdown;
use gim_proto::logic::v1::logic_client_ext_server::LogicClientExtServer;
use gim_proto::logic::v1::logic_int_server::LogicIntServer;
use gim_proto::logic::v1::logic_server_ext_server::LogicServerExtServer;
use sqlx::MySqlPool;
use sqlx::mysql::MySqlPoolOptions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("mysql.url: {0}")]
    Mysql(#[source] sqlx::Error),
    #[error("redis: {0}")]
    Redis(#[source] Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("grpc reflection: {0}")]
    Reflection(String),
    #[error("{0}")]
    Config(#[from] gim_common::config::ConfigError),
}

/// A running logic instance: the bound addresses (port 0 in the config gives a free port) and its
/// server tasks.
#[derive(Debug)]
pub struct LogicHandle {
    pub int_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<State>,
    tasks: JoinSet<std::io::Result<()>>,
}

impl LogicHandle {
    /// Resolves when every listener has stopped (after the shutdown trigger), with the first error.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let mut first = Ok(());
        while let Some(r) = self.tasks.join_next().await {
            let r = r.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

/// The schema migrations under `sql/migrations`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../sql/migrations");

/// How long a migration waits for another process's migration of the same database.
const MIGRATE_LOCK_SECS: i64 = 300;

/// Applies the migrations (idempotent). Concurrent runs serialize on a lock of gim's own: sqlx's
/// `GET_LOCK(name, -1)` gets NULL at once from MariaDB, and two replicas starting together would
/// both migrate, one failing on a duplicate `_sqlx_migrations` row.
pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    use sqlx::migrate::MigrateError;
    use sqlx::{ConnectOptions, Connection};
    // A connection of its own, outside the pool: the lock lives as long as this session, and
    // the migrations may use any pooled connection meanwhile.
    let mut lock = pool.connect_options().connect().await?;
    let got: Option<i64> =
        sqlx::query_scalar("SELECT GET_LOCK(CONCAT('gim_migrate.', DATABASE()), ?)")
            .bind(MIGRATE_LOCK_SECS)
            .fetch_one(&mut lock)
            .await?;
    if got != Some(1) {
        return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
            "another process held the migration lock for {MIGRATE_LOCK_SECS} s"
        ))));
    }
    let result = MIGRATOR.run(pool).await;
    // Closing the session releases the lock, also when the migration failed.
    let _ = lock.close().await;
    result
}

/// The MySQL pool logic uses. Lazy: logic starts (and reports not-ready) while MySQL is down.
pub fn mysql_pool(cfg: &gim_common::config::MysqlConfig) -> Result<MySqlPool, sqlx::Error> {
    MySqlPoolOptions::new()
        .max_connections(cfg.max_connections)
        .min_connections(0)
        // A call that cannot get a connection fails with UNAVAILABLE instead of hanging.
        .acquire_timeout(Duration::from_millis(cfg.acquire_timeout_ms))
        .test_before_acquire(false)
        .connect_lazy(&cfg.url)
}

const INT_SERVICE: &str = <LogicIntServer<api::IntService> as NamedService>::NAME;
const HEALTH_SERVICE: &str = <tonic_health::pb::health_server::HealthServer<
    tonic_health::server::HealthService,
> as NamedService>::NAME;

/// The service name of a server, for reflection.
fn named<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// A [`State`] without listeners, for the `gim-logic app` commands: they write through the same
/// domain code as the API (MySQL, the invalidation message, closing connections on conn nodes).
pub async fn offline_state(cfg: &LogicConfig) -> Result<Arc<State>, StartError> {
    let secret = Secret::from_config(&cfg.internal, "logic.int_listen", cfg.logic.int_listen)?;
    let pool = mysql_pool(&cfg.mysql).map_err(StartError::Mysql)?;
    let redis = rds::Redis::connect(&cfg.redis)
        .await
        .map_err(|e| StartError::Redis(e.into()))?;
    Ok(Arc::new(State::new(
        cfg.logic.clone(),
        pool,
        redis,
        Arc::new(metrics::Metrics::default()),
        Duration::from_millis(cfg.mysql.statement_timeout_ms),
        AddSecret(secret),
    )))
}

/// Starts the three gRPC listeners and the admin HTTP server; they stop when `shutdown` triggers.
pub async fn start(cfg: LogicConfig, shutdown: Shutdown) -> Result<LogicHandle, StartError> {
    // LogicInt is guarded by the cluster secret (see gim_common::internal); without one it must
    // listen on loopback only, which this checks again for configs built in code.
    let secret = Secret::from_config(&cfg.internal, "logic.int_listen", cfg.logic.int_listen)?;
    if secret.is_none() {
        tracing::info!("no internal.secret: LogicInt takes calls without one (loopback only)");
    }
    let admin_token = admin::AdminToken::from_config(&cfg.logic)?;
    let pool = mysql_pool(&cfg.mysql).map_err(StartError::Mysql)?;
    let redis = rds::Redis::connect(&cfg.redis)
        .await
        .map_err(|e| StartError::Redis(e.into()))?;
    let metrics = Arc::new(metrics::Metrics::default());
    let deadline = Duration::from_millis(cfg.mysql.statement_timeout_ms);
    let state = Arc::new(State::new(
        cfg.logic.clone(),
        pool,
        redis,
        metrics,
        deadline,
        AddSecret(secret.clone()),
    ));
    let inval_url = cfg
        .redis
        .cluster_nodes
        .first()
        .cloned()
        .unwrap_or_else(|| cfg.redis.url.clone());
    groups::inval::spawn_listener(Arc::downgrade(&state), inval_url, shutdown.clone());

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let l_int = bind(cfg.logic.int_listen).await?;
    let l_client = bind(cfg.logic.client_listen).await?;
    let l_server = bind(cfg.logic.server_listen).await?;
    let l_admin = bind(cfg.logic.admin_listen).await?;
    let addr = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
    let (int_addr, client_addr, server_addr, admin_addr) = (
        addr(&l_int),
        addr(&l_client),
        addr(&l_server),
        addr(&l_admin),
    );

    let mut tasks = JoinSet::new();
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<LogicIntServer<api::IntService>>()
        .await;
    health
        .set_serving::<LogicClientExtServer<api::ClientService>>()
        .await;
    health
        .set_serving::<LogicServerExtServer<api::ServerService>>()
        .await;
    macro_rules! serve {
        ($listener:expr, $svc:expr) => {{
            let svc = $svc;
            let (v1, v1alpha) = gim_common::reflection::servers(
                &[named(&svc), HEALTH_SERVICE],
                &[
                    gim_proto::DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                ],
            )
            .map_err(|e| StartError::Reflection(e.to_string()))?;
            let router = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(health_svc.clone())
                .add_service(v1)
                .add_service(v1alpha)
                .add_service(svc);
            let sd = shutdown.clone();
            // `tcp_nodelay` above is ignored for `serve_with_incoming`: set it on every accepted
            // socket, or small replies wait for Nagle + delayed ACK (tens of ms each).
            let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new($listener), |s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            });
            tasks.spawn(async move {
                router
                    .serve_with_incoming_shutdown(incoming, sd.wait())
                    .await
                    .map_err(std::io::Error::other)
            });
        }};
    }
    let check = {
        let metrics = state.metrics.clone();
        CheckSecret::new(secret, INT_SERVICE, move |s| {
            metrics.internal_unauthenticated(s)
        })
    };
    serve!(
        l_int,
        LogicIntServer::with_interceptor(api::IntService(state.clone()), check)
    );
    serve!(
        l_client,
        LogicClientExtServer::new(api::ClientService(state.clone()))
    );
    serve!(
        l_server,
        LogicServerExtServer::new(api::ServerService(state.clone()))
    );

    let app = admin::router(state.clone(), admin_token);
    let sd = shutdown.clone();
    tasks.spawn(async move {
        axum::serve(l_admin, app)
            .with_graceful_shutdown(async move { sd.wait().await })
            .await
    });

    // Reflect store reachability in the gRPC health service and the `ready` gauge.
    {
        let state = state.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = None;
            loop {
                tokio::select! {
                    _ = sd.wait() => break,
                    _ = tick.tick() => {}
                }
                let ok = admin::probe(&state).await.is_ok();
                state.metrics.ready.set(ok as i64);
                if last != Some(ok) {
                    let status = if ok {
                        tonic_health::ServingStatus::Serving
                    } else {
                        tonic_health::ServingStatus::NotServing
                    };
                    health.set_service_status("", status).await;
                    last = Some(ok);
                }
            }
        });
    }

    tracing::info!(%int_addr, %client_addr, %server_addr, %admin_addr, "gim-logic listening");
    Ok(LogicHandle {
        int_addr,
        client_addr,
        server_addr,
        admin_addr,
        state,
        tasks,
    })
}
