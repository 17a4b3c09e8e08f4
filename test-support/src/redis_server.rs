//! Throwaway `redis-server` processes on free ports, never the shared Redis: tests that flush,
//! kill or restart Redis, or need a Redis Cluster, start their own. Killed on drop.

use crate::{eventually_within, free_port};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// How long a server gets to answer after a (re)start: the test machine is shared with builds.
const START: Duration = Duration::from_secs(30);

/// One private `redis-server` (no persistence: a restart loses every key).
#[derive(Debug)]
pub struct OwnRedis {
    pub port: u16,
    child: Child,
    extra: Vec<String>,
    /// Working directory (a cluster node's config file lives here).
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub async fn start() -> OwnRedis {
        Self::start_on(free_port(), &[]).await
    }

    /// On `port`, with `extra` server arguments.
    pub async fn start_on(port: u16, extra: &[&str]) -> OwnRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = spawn(port, &extra, dir.path()).await;
        OwnRedis {
            port,
            child,
            extra,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: every key is lost.
    pub async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Kills Redis, waits `down_for`, and starts it again, empty, on the same port.
    pub async fn restart(&mut self, down_for: Duration) {
        self.kill().await;
        tokio::time::sleep(down_for).await;
        self.child = spawn(self.port, &self.extra, self.dir.path()).await;
    }
}

async fn spawn(port: u16, extra: &[String], dir: &std::path::Path) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-server (installed by scripts/deps.sh)");
    eventually_within(START, &format!("redis-server on port {port}"), || {
        ping(port)
    })
    .await;
    child
}

/// PING over a bare socket: Some once the server answers.
async fn ping(port: u16) -> Option<()> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).await.ok()?;
    (&buf == b"+PONG\r\n").then_some(())
}

/// A Redis Cluster of `n` masters (no replicas), every slot covered before `start` returns.
#[derive(Debug)]
pub struct RedisCluster {
    pub servers: Vec<OwnRedis>,
}

impl RedisCluster {
    pub async fn start(n: usize) -> RedisCluster {
        let mut servers = Vec::new();
        for _ in 0..n {
            let port = free_port();
            let conf = format!("nodes-{port}.conf");
            servers.push(
                OwnRedis::start_on(
                    port,
                    &["--cluster-enabled", "yes", "--cluster-config-file", &conf],
                )
                .await,
            );
        }
        let addrs: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("run redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every node must agree the slots are covered before the first command.
        for a in &addrs {
            let url = format!("redis://{a}");
            eventually_within(START, "cluster_state:ok", || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut c = client.get_multiplexed_async_connection().await.ok()?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    info.contains("cluster_state:ok").then_some(())
                }
            })
            .await;
        }
        RedisCluster { servers }
    }

    /// Seed node URLs, as `redis.cluster_nodes` takes them.
    pub fn nodes(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("redis://127.0.0.1:{}", s.port))
            .collect()
    }
}
