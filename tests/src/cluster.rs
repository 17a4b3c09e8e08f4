//! Processes of a test cluster: logic and conn nodes in-process, conn nodes as child processes,
//! (a private redis-server is `gim_test_support::OwnRedis`).

use crate::{WAIT, mysql_url, redis_url};
use gim_client::Endpoint;
use gim_common::config::{ConnConfig, LogicConfig};
use gim_common::shutdown::Shutdown;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::OnceCell;

const ANY: &str = "127.0.0.1:0";

/// The cluster secret of the test clusters: the internal APIs run authenticated, as deployed.
pub const INTERNAL_SECRET: &str = "e2e-internal-secret-0123456789";

/// Logic config for tests: loopback, free ports, a small sync page so pagination is exercised.
pub fn logic_config(redis: &str) -> LogicConfig {
    let mut c = LogicConfig::default();
    c.mysql.url = mysql_url();
    c.mysql.max_connections = 8;
    c.redis.url = redis.to_string();
    let any: SocketAddr = ANY.parse().expect("addr");
    c.logic.int_listen = any;
    c.logic.client_listen = any;
    c.logic.server_listen = any;
    c.logic.admin_listen = any;
    c.logic.sync_page_size = 20;
    c.internal.secret = INTERNAL_SECRET.into();
    c
}

/// Conn config for tests: loopback, free ports, a short lease so a killed node expires quickly.
pub fn conn_config(name: &str, logic_int: SocketAddr, redis: &str) -> ConnConfig {
    let mut c = ConnConfig::default();
    c.redis.url = redis.to_string();
    let any: SocketAddr = ANY.parse().expect("addr");
    c.conn.node_name = name.to_string();
    c.conn.tcp_listen = any;
    c.conn.ws_listen = any;
    c.conn.grpc_listen = any;
    c.conn.admin_listen = any;
    c.conn.logic_url = format!("http://{logic_int}");
    c.conn.lease_secs = 3;
    c.conn.drain_window_secs = 1;
    c.internal.secret = INTERNAL_SECRET.into();
    c
}

static MIGRATED: OnceCell<()> = OnceCell::const_new();

/// Applies the schema to the test database once per test binary.
pub async fn migrate() {
    MIGRATED
        .get_or_init(|| async {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(&mysql_url())
                .await
                .expect("connect to the test MariaDB (run scripts/deps.sh)");
            gim_logic::migrate(&pool).await.expect("migrations");
            pool.close().await;
        })
        .await;
}

/// An in-process logic instance that can be stopped and started again on the same ports.
pub struct Logic {
    cfg: LogicConfig,
    shutdown: Shutdown,
    handle: Option<gim_logic::LogicHandle>,
    pub int_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub server_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl Logic {
    pub async fn start(cfg: LogicConfig) -> Logic {
        let shutdown = Shutdown::new();
        let handle = gim_logic::start(cfg.clone(), shutdown.clone())
            .await
            .expect("start logic");
        Logic {
            int_addr: handle.int_addr,
            client_addr: handle.client_addr,
            server_addr: handle.server_addr,
            admin_addr: handle.admin_addr,
            cfg,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Triggers shutdown and waits until every listener has stopped.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(WAIT, h.wait()).await;
        }
    }

    /// Starts again on the same ports (conn nodes and clients keep their addresses).
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut cfg = self.cfg.clone();
        cfg.logic.int_listen = self.int_addr;
        cfg.logic.client_listen = self.client_addr;
        cfg.logic.server_listen = self.server_addr;
        cfg.logic.admin_listen = self.admin_addr;
        // The port was just released; retry briefly in case the OS has not caught up.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.shutdown = Shutdown::new();
            match gim_logic::start(cfg.clone(), self.shutdown.clone()).await {
                Ok(h) => {
                    self.handle = Some(h);
                    return;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "logic restart: retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("logic restart failed: {e}"),
            }
        }
    }
}

impl Drop for Logic {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// An in-process conn node.
pub struct Conn {
    shutdown: Shutdown,
    handle: Option<gim_conn::ConnHandle>,
    pub tcp_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    /// `ConnInt`, for logic.
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub node_id: String,
}

impl Conn {
    pub async fn start(cfg: ConnConfig) -> Conn {
        let shutdown = Shutdown::new();
        let handle = gim_conn::start(cfg, shutdown.clone())
            .await
            .expect("start conn");
        Conn {
            tcp_addr: handle.tcp_addr,
            ws_addr: handle.ws_addr,
            grpc_addr: handle.grpc_addr,
            admin_addr: handle.admin_addr,
            node_id: handle.node_id.clone(),
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn tcp(&self) -> Endpoint {
        Endpoint::Tcp(self.tcp_addr.to_string())
    }

    pub fn ws(&self) -> Endpoint {
        Endpoint::Ws(format!("ws://{}/ws", self.ws_addr))
    }

    /// Drains (clients are told to reconnect elsewhere) and waits for the exit.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(WAIT, h.wait()).await;
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// A conn node in its own process (the `e2e-conn` binary), so it can be killed with SIGKILL.
pub struct ChildConn {
    child: Child,
    pub tcp_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub node_id: String,
}

/// What `e2e-conn` prints once it listens.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub node_id: String,
}

impl ChildConn {
    pub async fn spawn(bin: &str, name: &str, logic_int: SocketAddr, redis: &str) -> ChildConn {
        let mut cmd = Command::new(bin);
        // The child reads every GIM_* variable as config: pass only ours.
        for (k, _) in std::env::vars() {
            if k.starts_with("GIM_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("GIM_CONN__NODE_NAME", name)
            .env("GIM_CONN__TCP_LISTEN", ANY)
            .env("GIM_CONN__WS_LISTEN", ANY)
            .env("GIM_CONN__GRPC_LISTEN", ANY)
            .env("GIM_CONN__ADMIN_LISTEN", ANY)
            .env("GIM_CONN__LOGIC_URL", format!("http://{logic_int}"))
            .env("GIM_CONN__LEASE_SECS", "3")
            .env("GIM_REDIS__URL", redis)
            .env("GIM_INTERNAL__SECRET", INTERNAL_SECRET)
            .env("GIM_LOG__FILTER", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read child stdout") {
                if let Some(json) = line.strip_prefix("READY ") {
                    return serde_json::from_str::<Ready>(json).expect("READY line");
                }
            }
            panic!("{bin} exited before it was ready");
        })
        .await
        .expect("child conn ready in time");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ChildConn {
            child,
            tcp_addr: ready.tcp,
            ws_addr: ready.ws,
            node_id: ready.node_id,
        }
    }

    pub fn tcp(&self) -> Endpoint {
        Endpoint::Tcp(self.tcp_addr.to_string())
    }

    pub fn ws(&self) -> Endpoint {
        Endpoint::Ws(format!("ws://{}/ws", self.ws_addr))
    }

    /// SIGKILL: no drain, no deregistration, sockets reset.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill child conn");
        let _ = self.child.wait().await;
    }
}

/// Logic plus `n` conn nodes, in-process.
pub struct Cluster {
    pub logic: Logic,
    /// For creating apps, as `gim-logic app create` does.
    pub pool: sqlx::MySqlPool,
    pub conns: Vec<Conn>,
    pub redis_url: String,
}

impl Cluster {
    /// Against the shared Redis.
    pub async fn start(n_conn: usize) -> Cluster {
        Self::start_with(&redis_url(), n_conn).await
    }

    pub async fn start_with(redis: &str, n_conn: usize) -> Cluster {
        crate::init();
        migrate().await;
        let cfg = logic_config(redis);
        let pool = gim_logic::mysql_pool(&cfg.mysql).expect("mysql pool");
        let logic = Logic::start(cfg).await;
        let mut conns = Vec::new();
        for i in 0..n_conn {
            let name = format!("e2e-{}", (b'a' + i as u8) as char);
            conns.push(Conn::start(conn_config(&name, logic.int_addr, redis)).await);
        }
        Cluster {
            logic,
            pool,
            conns,
            redis_url: redis.to_string(),
        }
    }

    pub fn client_url(&self) -> String {
        format!("http://{}", self.logic.client_addr)
    }

    pub fn server_url(&self) -> String {
        format!("http://{}", self.logic.server_addr)
    }

    /// A fresh app (tenant) on this cluster.
    pub async fn new_app(&self) -> crate::TestApp {
        crate::TestApp::create(&self.pool, self.client_url(), self.server_url()).await
    }
}
