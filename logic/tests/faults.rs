//! Faults found by reading the code: hung MySQL statements, id-segment races, bad registry
//! entries, sign-ins that fail half-way.

mod common;

use common::*;
use gim_logic::ids::Segment;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn segment_row(pool: &sqlx::MySqlPool, step: i32) -> &'static str {
    let name: &'static str = Box::leak(format!("t{:x}", rand_u64() >> 8).into_boxed_str());
    sqlx::query("INSERT INTO id_segment (name, max_id, step) VALUES (?, 0, ?)")
        .bind(name)
        .bind(step)
        .execute(pool)
        .await
        .unwrap();
    name
}

/// Four processes' segments take ids from one row while an operator keeps changing its `step`:
/// no id is handed out twice.
#[tokio::test]
async fn id_segments_never_overlap_while_step_changes() {
    let pool = migrated_pool().await;
    let name = segment_row(&pool, 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = tokio::spawn({
        let (pool, stop) = (pool.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("UPDATE id_segment SET step = IF(step = 1, 40, 1) WHERE name = ?")
                    .bind(name)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
    });
    let takers = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let seg = Segment::new(name, Duration::from_secs(30));
            let mut ids = Vec::new();
            for _ in 0..300 {
                ids.push(seg.next::<i64>(&pool).await.unwrap());
            }
            ids
        })
    });
    let all: Vec<i64> = futures::future::join_all(takers)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    flipper.await.unwrap();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "an id was handed out twice");
}

/// A refill whose row another connection holds locked fails with UNAVAILABLE at the deadline
/// instead of holding the segment's lock until MySQL's lock wait gives up (50 s by default).
#[tokio::test]
async fn a_hung_id_segment_refill_fails_unavailable_at_its_deadline() {
    let pool = migrated_pool().await;
    let name = segment_row(&pool, 10).await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT max_id FROM id_segment WHERE name = ? FOR UPDATE")
        .bind(name)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    let seg = Segment::new(name, Duration::from_millis(300));
    let r = tokio::time::timeout(Duration::from_secs(10), seg.next::<i64>(&pool))
        .await
        .expect("the refill outlived its deadline");
    let e = r.expect_err("the row is locked");
    assert!(e.is_unavailable(), "{e:?}");
    holder.rollback().await.unwrap();
    assert_eq!(
        seg.next::<i64>(&pool).await.unwrap(),
        1,
        "works once the lock is gone"
    );
}

/// An ack whose row another connection holds locked fails with UNAVAILABLE at the statement
/// deadline instead of holding its batch slot; acks work again once the lock is gone.
#[tokio::test]
async fn a_hung_ack_batch_fails_unavailable_at_its_deadline() {
    let mut cfg = test_config();
    cfg.mysql.statement_timeout_ms = 300;
    let ctx = Ctx::start_with(cfg).await;
    ctx.import_users(&[1]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let ack = |device: i64, seq: i64| gim_proto::logic::v1::MessageAckReq {
        app_id: ctx.app.0,
        user_id: 1,
        device_id: device,
        device_ack: seq,
        ..Default::default()
    };
    let state = &ctx.logic.state;
    state.sessions.ack(ack(d1, 1)).await.unwrap();
    let pool = migrated_pool().await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT ack FROM device_ack WHERE app_id = ? AND device_id = ? FOR UPDATE")
        .bind(ctx.app.0)
        .bind(d1)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    // Four at once: every batch slot of the ack batcher (4) waits on the lock.
    let hung = futures::future::join_all((2..6).map(|s| state.sessions.ack(ack(d1, s))));
    let r = tokio::time::timeout(Duration::from_secs(10), hung)
        .await
        .expect("acks outlived their deadline");
    for e in r {
        let e = e.expect_err("the row is locked");
        assert!(e.is_unavailable(), "{e:?}");
    }
    holder.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), state.sessions.ack(ack(d2, 1)))
        .await
        .expect("the ack batcher stopped")
        .unwrap();
}

/// A registry entry whose address is not a valid `host:port` is logged and skipped: the other
/// nodes stay live and nothing panics building a channel to it.
#[tokio::test]
async fn a_malformed_node_address_in_the_registry_is_skipped() {
    let own = OwnRedis::start().await;
    let mut cfg = test_config();
    cfg.redis.url = own.url();
    let ctx = Ctx::start_with(cfg).await;
    let good = FakeNode::start(&own.url()).await;
    let bad = gim_common::keys::NodeInfo {
        node_id: "bad-node".into(),
        grpc_addr: "not a host port".into(),
        connections: 0,
        accepting: true,
        updated_ms: gim_common::now_ms(),
    };
    gim_common::registry::register(&rds(&own.url()).await, &bad, Duration::from_secs(30))
        .await
        .unwrap();
    let live = ctx.logic.state.nodes.live().await.unwrap();
    assert!(live.contains_key(&good.node_id), "{live:?}");
    assert!(!live.contains_key("bad-node"), "{live:?}");
}

/// A sign-in whose last step (the large-group read) fails after the route was written removes
/// the route again. The read is made to hang with a table lock in a database of its own, so no
/// other test waits on it.
#[tokio::test]
async fn a_sign_in_that_fails_after_writing_its_route_removes_it() {
    let db = format!("gim_signin_{:x}", rand_u64() >> 8);
    let admin = sqlx::MySqlPool::connect(&mysql_url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await
        .unwrap();
    let base = mysql_url();
    let url = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);
    let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
    gim_logic::migrate(&pool).await.unwrap();
    let (app, key) = gim_logic::create_app(&pool, "t").await.unwrap();
    let own = OwnRedis::start().await;
    let mut cfg = test_config();
    cfg.mysql.url = url;
    cfg.mysql.statement_timeout_ms = 300;
    cfg.redis.url = own.url();
    let shutdown = gim_common::shutdown::Shutdown::new();
    let logic = gim_logic::start(cfg, shutdown.clone()).await.unwrap();
    let sessions = &logic.state.sessions;
    let device = logic
        .state
        .apps
        .register_device(gim_proto::logic::v1::RegisterDeviceReq {
            app_id: app.0,
            r#type: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let sign_in = || gim_proto::logic::v1::SignInReq {
        app_id: app.0,
        user_id: 1,
        device_id: device,
        token: key.device_token(app.0, 1, device, gim_common::token::now_secs(), 3600),
        node_id: "n1".into(),
        conn_id: 7,
        client_addr: String::new(),
    };
    // The first sign-in binds the device (its statements are not the ones made to hang).
    sessions.sign_in(sign_in()).await.unwrap();
    let route = gim_common::keys::route_key(app, gim_common::UserId(1));
    let mut r = redis_conn(&own.url()).await;
    let _: () = redis::cmd("DEL")
        .arg(&route)
        .query_async(&mut r)
        .await
        .unwrap();
    let mut lock = pool.acquire().await.unwrap();
    sqlx::raw_sql("LOCK TABLES im_group WRITE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let e = sessions
        .sign_in(sign_in())
        .await
        .expect_err("the large-group read hangs");
    assert!(e.is_unavailable(), "{e:?}");
    let left: Option<String> = redis::cmd("HGET")
        .arg(&route)
        .arg(device)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(left, None, "the failed sign-in left its route");
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut *lock)
        .await
        .unwrap();
    drop(lock);
    shutdown.trigger();
    pool.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`")))
        .execute(&admin)
        .await
        .unwrap();
}
