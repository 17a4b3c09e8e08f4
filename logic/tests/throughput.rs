//! Rough throughput probe (ignored by default: timing goals belong to the benchmark issue).
//! `cargo test -p gim-logic --release --test throughput -- --ignored --nocapture`

mod common;

use common::*;
use gim_proto::connect::v1::ReceiverType;

#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn persisted_sends_per_second() {
    let mut cfg = test_config();
    cfg.mysql.max_connections = 32;
    let ctx = Ctx::start_with(cfg).await;
    let users: Vec<i64> = (1..=200).collect();
    ctx.import_users(&users).await;
    let mut devices = Vec::new();
    for _ in &users {
        devices.push(ctx.register_device().await);
    }
    let total = 5000usize;
    let conc = 64usize;
    let start = std::time::Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let next = next.clone();
        let devices = devices.clone();
        let ctx = &ctx;
        tasks.push(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let from = (i % 200) as i64 + 1;
                let to = ((i + 1) % 200) as i64 + 1;
                ctx.send_text(
                    from,
                    devices[from as usize - 1],
                    ReceiverType::User,
                    to,
                    "x",
                    0,
                )
                .await
                .unwrap();
            }
        });
    }
    futures::future::join_all(tasks).await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{total} persisted sends in {secs:.2}s = {:.0}/s",
        total as f64 / secs
    );
}
