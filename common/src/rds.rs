//! One Redis handle over a single server or a Redis Cluster, for conn (its registry lease), logic
//! (routes, seqs, the registry reader) and the tools that read the registry (operator, CLI).
//!
//! Every command is bounded by `redis.timeout_ms`, so a Redis outage fails calls fast instead of
//! hanging them; a missed deadline is an I/O `TimedOut` [`RedisError`] (`is_timeout()` is true),
//! so callers keep one error type. The connection reconnects by itself when Redis returns.

use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use std::time::Duration;

/// A cloneable connection: single server (auto-reconnecting manager) or cluster.
#[derive(Clone)]
pub enum Rds {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Rds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Rds::Single(_) => "Rds::Single",
            Rds::Cluster(_) => "Rds::Cluster",
        })
    }
}

impl ConnectionLike for Rds {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Rds::Single(c) => c.req_packed_command(cmd),
            Rds::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Rds::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Rds::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Rds::Single(c) => c.get_db(),
            Rds::Cluster(c) => c.get_db(),
        }
    }
}

/// Redis plus the per-command deadline. Clones share the connection.
#[derive(Clone, Debug)]
pub struct Redis {
    pub conn: Rds,
    pub timeout: Duration,
}

impl Redis {
    /// Connects lazily to a single server (start-up does not need Redis up; the first command
    /// reports it); a cluster needs its seed nodes reachable to learn the slot map.
    pub async fn connect(cfg: &RedisConfig) -> RedisResult<Self> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let conn = if cfg.cluster_nodes.is_empty() {
            let client = redis::Client::open(cfg.url.as_str())?;
            let mcfg = ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            Rds::Single(ConnectionManager::new_lazy_with_config(client, mcfg)?)
        } else {
            let client = redis::cluster::ClusterClientBuilder::new(cfg.cluster_nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(2)
                .build()?;
            let connect = client.get_async_connection();
            Rds::Cluster(
                tokio::time::timeout(timeout * 3, connect)
                    .await
                    .map_err(|_| timed_out("redis cluster connect"))??,
            )
        };
        Ok(Self { conn, timeout })
    }

    /// A single server at `url` with `timeout` per command (for tools that have only a URL).
    pub async fn connect_url(url: &str, timeout: Duration) -> RedisResult<Self> {
        let cfg = RedisConfig {
            url: url.to_string(),
            cluster_nodes: Vec::new(),
            timeout_ms: timeout.as_millis().max(1) as u64,
        };
        Self::connect(&cfg).await
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Rds::Cluster(_))
    }

    /// Runs one command with the deadline.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        let mut c = self.conn.clone();
        self.bounded(cmd.query_async::<T>(&mut c)).await
    }

    /// Runs a pipeline with the deadline. On a cluster every command must hash to one slot.
    pub async fn pipe<T: redis::FromRedisValue>(&self, p: &Pipeline) -> RedisResult<T> {
        let mut c = self.conn.clone();
        self.bounded(p.query_async::<T>(&mut c)).await
    }

    /// Runs a script with the deadline (EVALSHA, falling back to EVAL once per server).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        let mut c = self.conn.clone();
        self.bounded(inv.invoke_async::<T>(&mut c)).await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    async fn bounded<T>(&self, f: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| timed_out("redis command"))?
    }
}

fn timed_out(what: &'static str) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out")).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_past_its_deadline_fails_as_a_timeout() {
        // A listener that accepts and never answers: the deadline, not the socket, ends the call.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", l.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let r = Redis::connect_url(&url, Duration::from_millis(200))
            .await
            .unwrap();
        let e = r.ping().await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        hold.abort();
    }
}
