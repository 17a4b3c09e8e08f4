//! `gim cluster status`: reads the conn node registry the way logic does (SMEMBERS, then the lease
//! keys; ids whose lease expired are not live).

use anyhow::{Context, Result};
use gim_common::keys::{NODES_SET, NodeInfo, node_key};

pub async fn status(redis_url: &str, json: bool) -> Result<()> {
    let client =
        redis::Client::open(redis_url).with_context(|| format!("bad Redis URL {redis_url:?}"))?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot reach Redis at {redis_url}"))?;
    let mut ids: Vec<String> = redis::cmd("SMEMBERS")
        .arg(NODES_SET)
        .query_async(&mut con)
        .await
        .context("reading the node set")?;
    ids.sort();
    let mut nodes = Vec::new();
    let mut stale = 0;
    if !ids.is_empty() {
        let keys: Vec<String> = ids.iter().map(|i| node_key(i)).collect();
        let vals: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .context("reading node leases")?;
        for v in vals {
            match v.and_then(|s| serde_json::from_str::<NodeInfo>(&s).ok()) {
                Some(n) => nodes.push(n),
                None => stale += 1,
            }
        }
    }
    let total: u64 = nodes.iter().map(|n| n.connections).sum();
    if json {
        let v = serde_json::json!({ "nodes": nodes, "connections": total, "stale_ids": stale });
        println!("{v}");
        return Ok(());
    }
    let now = gim_common::now_ms();
    println!(
        "{:<32} {:<22} {:>11} {:<10} {:>9}",
        "NODE", "GRPC", "CONNECTIONS", "STATE", "RENEWED"
    );
    for n in &nodes {
        println!(
            "{:<32} {:<22} {:>11} {:<10} {:>8}s",
            n.node_id,
            n.grpc_addr,
            n.connections,
            if n.accepting { "accepting" } else { "draining" },
            (now - n.updated_ms).max(0) / 1000
        );
    }
    println!("{} live node(s), {} connection(s)", nodes.len(), total);
    if stale > 0 {
        eprintln!("{stale} registered id(s) with an expired lease (ignored)");
    }
    Ok(())
}
