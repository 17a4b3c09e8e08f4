//! The node registry through the one Redis handle, on the shared Redis (db 11: the registry is
//! global per db) and on a Redis Cluster of the test's own.

use gim_common::config::RedisConfig;
use gim_common::keys::{self, NodeInfo};
use gim_common::rds::Redis;
use gim_common::registry;
use std::time::Duration;

fn info(id: &str, connections: u64) -> NodeInfo {
    NodeInfo {
        node_id: id.into(),
        grpc_addr: "127.0.0.1:50100".into(),
        connections,
        accepting: true,
        updated_ms: gim_common::now_ms(),
    }
}

fn one(id: &str) -> Vec<String> {
    vec![id.to_string()]
}

/// Registers two good nodes, one malformed entry and one id without a lease, then reads.
async fn register_read_prune(redis: &Redis) {
    let run = gim_test_support::unique("reg");
    let (a, b, bad, gone) = (
        format!("{run}-a"),
        format!("{run}-b"),
        format!("{run}-bad"),
        format!("{run}-gone"),
    );
    let lease = Duration::from_secs(30);
    assert!(
        !registry::register(redis, &info(&a, 3), lease)
            .await
            .unwrap()
    );
    assert!(
        registry::register(redis, &info(&a, 4), lease)
            .await
            .unwrap(),
        "renewal"
    );
    registry::register(redis, &info(&b, 5), lease)
        .await
        .unwrap();
    let _: () = redis
        .query(
            redis::cmd("SET")
                .arg(keys::node_key(&bad))
                .arg(r#"{"node_id":"x","grpc_addr":"no port"}"#),
        )
        .await
        .unwrap();
    let _: () = redis
        .query(
            redis::cmd("SADD")
                .arg(keys::NODES_SET)
                .arg(&[&bad, &gone][..]),
        )
        .await
        .unwrap();

    let r = registry::read(redis).await.unwrap();
    let ours = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|i| i.starts_with(&run))
            .cloned()
            .collect()
    };
    let live: Vec<String> = r.live.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(ours(&live), [a.clone(), b.clone()]);
    let mine: u64 = r
        .live
        .iter()
        .filter(|n| n.node_id.starts_with(&run))
        .map(|n| n.connections)
        .sum();
    assert_eq!(mine, 9, "the renewal's count");
    assert_eq!(ours(&r.malformed), one(&bad));
    assert_eq!(ours(&r.expired), one(&gone));
    assert_eq!(registry::lease(redis, &bad).await.unwrap(), None);

    registry::prune(redis, std::slice::from_ref(&gone))
        .await
        .unwrap();
    registry::deregister(redis, &a).await.unwrap();
    let r = registry::read(redis).await.unwrap();
    let live: Vec<String> = r.live.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(ours(&live), one(&b));
    assert!(ours(&r.expired).is_empty(), "pruned");

    registry::deregister(redis, &b).await.unwrap();
    registry::deregister(redis, &bad).await.unwrap();
}

#[tokio::test]
async fn registry_on_a_single_server() {
    let redis = Redis::connect_url(&gim_test_support::redis_url(11), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!redis.is_cluster());
    register_read_prune(&redis).await;
}

#[tokio::test]
async fn registry_on_a_redis_cluster() {
    let cluster = gim_test_support::RedisCluster::start(3).await;
    let redis = Redis::connect(&RedisConfig {
        cluster_nodes: cluster.nodes(),
        timeout_ms: 5_000,
        ..RedisConfig::default()
    })
    .await
    .unwrap();
    assert!(redis.is_cluster());
    register_read_prune(&redis).await;
}
