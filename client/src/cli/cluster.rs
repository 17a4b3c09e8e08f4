//! `gim cluster status`: reads the conn node registry with the reader logic uses
//! (`gim_common::registry`; ids whose lease expired are not live).

use anyhow::{Context, Result};
use gim_common::rds::Redis;
use gim_common::registry;
use std::time::Duration;

pub async fn status(redis_url: &str, json: bool) -> Result<()> {
    let redis = Redis::connect_url(redis_url, Duration::from_secs(5))
        .await
        .with_context(|| format!("bad Redis URL {redis_url:?}"))?;
    let r = registry::read(&redis)
        .await
        .with_context(|| format!("cannot read the node registry at {redis_url}"))?;
    let nodes = &r.live;
    let stale = r.expired.len();
    let malformed = r.malformed.len();
    let total = r.connections();
    if json {
        let v = serde_json::json!({
            "nodes": nodes, "connections": total, "stale_ids": stale, "malformed_ids": malformed
        });
        println!("{v}");
        return Ok(());
    }
    let now = gim_common::now_ms();
    println!(
        "{:<32} {:<22} {:>11} {:<10} {:>9}",
        "NODE", "GRPC", "CONNECTIONS", "STATE", "RENEWED"
    );
    for n in nodes {
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
    if malformed > 0 {
        eprintln!("{malformed} registered id(s) with a malformed entry (ignored)");
    }
    Ok(())
}
