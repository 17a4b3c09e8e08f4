//! Seq durability across a Redis flush, a Redis Cluster run, store outages (fail fast, readiness,
//! recovery), and migrations on a fresh database.

mod common;

use common::*;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;
use std::time::{Duration, Instant};

#[tokio::test]
async fn seqs_survive_redis_flushes_without_reuse_or_loss() {
    let own = OwnRedis::start().await;
    let mut cfg = test_config();
    cfg.redis.url = own.url();
    cfg.logic.seq_block_size = 5;
    let ctx = Ctx::start_with(cfg).await;
    ctx.import_users(&[1, 2, 3]).await;
    let d1 = ctx.register_device().await;
    let mut s = ctx.server.clone();
    let large = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "l".into(),
                r#type: 2,
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: vec![2],
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    let mut r = redis_conn(&own.url()).await;
    let mut sender_seqs = Vec::new();
    let mut group_seqs = Vec::new();
    for round in 0..4 {
        for i in 0..7 {
            let m = ctx
                .send_text(1, d1, ReceiverType::User, 2, &format!("r{round}m{i}"), 0)
                .await
                .unwrap();
            sender_seqs.push(m.seq);
        }
        let g = ctx
            .send_text(1, d1, ReceiverType::LargeGroup, large, "g", 0)
            .await
            .unwrap();
        group_seqs.push(g.seq);
        let _: () = redis::cmd("FLUSHALL").query_async(&mut r).await.unwrap();
    }
    assert!(
        sender_seqs.windows(2).all(|w| w[0] < w[1]),
        "{sender_seqs:?}"
    );
    assert!(group_seqs.windows(2).all(|w| w[0] < w[1]), "{group_seqs:?}");
    let inbox = ctx.sync(2, 0, 0, 1000).await.messages;
    assert_eq!(inbox.len(), 28, "nothing lost");
    let texts: Vec<String> = inbox.iter().map(text_of).collect();
    let want: Vec<String> = (0..4)
        .flat_map(|r| (0..7).map(move |i| format!("r{r}m{i}")))
        .collect();
    assert_eq!(texts, want, "in send order");
    let seqs: Vec<i64> = inbox.iter().map(|m| m.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    let reseeds = ctx.logic.state.metrics.seq_reseeds.get();
    assert!(
        reseeds >= 4,
        "counters were re-seeded from MySQL ({reseeds})"
    );
}

#[tokio::test]
async fn a_cold_group_seeds_every_member_list_at_once_without_reuse() {
    // A normal group's first message after a Redis flush seeds all its members' counters in one
    // batch; concurrent sends into the same cold lists must still never share a seq.
    let own = OwnRedis::start().await;
    let mut cfg = test_config();
    cfg.redis.url = own.url();
    cfg.logic.seq_block_size = 7;
    let ctx = Ctx::start_with(cfg).await;
    let members: Vec<i64> = (2..=41).collect();
    let mut all = vec![1];
    all.extend(&members);
    ctx.import_users(&all).await;
    let d1 = ctx.register_device().await;
    let mut s = ctx.server.clone();
    let group = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "cold".into(),
                r#type: 1,
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: members.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    let mut r = redis_conn(&own.url()).await;
    let before = ctx.logic.state.metrics.seq_reseeds.get();
    for round in 0..3 {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut r).await.unwrap();
        let texts: Vec<String> = (0..4).map(|i| format!("r{round}m{i}")).collect();
        let sends = texts
            .iter()
            .map(|t| ctx.send_text(1, d1, ReceiverType::NormalGroup, group, t, 0));
        for m in futures::future::join_all(sends).await {
            m.unwrap();
        }
    }
    let reseeds = ctx.logic.state.metrics.seq_reseeds.get() - before;
    assert!(
        reseeds >= 3 * all.len() as u64,
        "every list re-seeded each round ({reseeds})"
    );
    for u in all {
        let inbox = ctx.sync(u, 0, 0, 1000).await.messages;
        assert_eq!(inbox.len(), 12, "user {u}: nothing lost");
        let seqs: Vec<i64> = inbox.iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "user {u}: seqs unique and increasing: {seqs:?}"
        );
        for round in 0..3 {
            let texts: std::collections::BTreeSet<String> = inbox[round * 4..round * 4 + 4]
                .iter()
                .map(text_of)
                .collect();
            let want = (0..4).map(|i| format!("r{round}m{i}")).collect();
            assert_eq!(
                texts, want,
                "user {u}: round {round} stays above the rounds before"
            );
        }
    }
}

#[tokio::test]
async fn redis_outage_fails_fast_reports_not_ready_and_recovers() {
    let mut own = OwnRedis::start().await;
    let port = own.port;
    let mut cfg = test_config();
    cfg.redis.url = own.url();
    cfg.redis.timeout_ms = 300;
    let ctx = Ctx::start_with(cfg).await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    ctx.send_text(1, d1, ReceiverType::User, 2, "before", 0)
        .await
        .unwrap();
    assert_eq!(http_get(ctx.logic.admin_addr, "/readyz").await.0, 200);
    own.kill().await;
    let t = Instant::now();
    // The trace id conn passes comes back in the status details of a non-business failure.
    let mut req = ctx.creq(send_req(ReceiverType::User, 2, "during", 0), 1, d1);
    req.metadata_mut()
        .insert(gim_common::TRACE_ID_HEADER, "trace-xyz".parse().unwrap());
    let mut c = ctx.client.clone();
    let status = c.send_message(req).await.unwrap_err();
    let detail =
        <gim_common::error::ErrorDetail as prost::Message>::decode(status.details()).unwrap();
    assert_eq!(detail.trace_id, "trace-xyz");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "failed fast: {:?}",
        t.elapsed()
    );
    assert!(gim_common::GimError::from_status(&status).is_none());
    let (code, body) = http_get(ctx.logic.admin_addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("redis"), "{body}");
    let _own2 = OwnRedis::start_on(port, &[]).await;
    eventually("recovery", || async {
        ctx.send_text(1, d1, ReceiverType::User, 2, "after", 0)
            .await
            .ok()
    })
    .await;
    assert_eq!(http_get(ctx.logic.admin_addr, "/readyz").await.0, 200);
    let texts: Vec<String> = ctx
        .sync(2, 0, 0, 0)
        .await
        .messages
        .iter()
        .map(text_of)
        .collect();
    assert_eq!(texts.first().map(String::as_str), Some("before"));
    assert_eq!(texts.last().map(String::as_str), Some("after"));
}

/// A TCP proxy to MariaDB that the test can cut, standing in for a MySQL outage.
struct CutProxy {
    addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    kill: tokio::sync::watch::Sender<u64>,
}

impl CutProxy {
    async fn start(target: &str) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (kill, _) = tokio::sync::watch::channel(0u64);
        let (up2, kill2, target) = (up.clone(), kill.clone(), target.to_string());
        tokio::spawn(async move {
            loop {
                let (mut inb, _) = listener.accept().await.unwrap();
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: connection reset
                }
                let target = target.clone();
                let mut killed = kill2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inb, &mut out) => {}
                        _ = killed.changed() => {}
                    }
                });
            }
        });
        CutProxy { addr, up, kill }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.kill.send_modify(|v| *v += 1);
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn mysql_outage_fails_fast_reports_not_ready_and_recovers() {
    let proxy = CutProxy::start("127.0.0.1:3306").await;
    let mut cfg = test_config();
    let db = mysql_url().rsplit('/').next().unwrap().to_string();
    cfg.mysql.url = format!("mysql://gim:gim@{}/{db}", proxy.addr);
    cfg.mysql.acquire_timeout_ms = 500;
    let ctx = Ctx::start_with(cfg).await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    ctx.send_text(1, d1, ReceiverType::User, 2, "before", 0)
        .await
        .unwrap();
    proxy.cut();
    let t = Instant::now();
    let status = ctx
        .send_text(1, d1, ReceiverType::User, 2, "during", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), tonic::Code::Unavailable),
        "{status:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let (code, body) = http_get(ctx.logic.admin_addr, "/readyz").await;
    assert_eq!(code, 503);
    assert!(body.contains("mysql"), "{body}");
    proxy.restore();
    eventually("recovery", || async {
        ctx.send_text(1, d1, ReceiverType::User, 2, "after", 0)
            .await
            .ok()
    })
    .await;
    assert_eq!(http_get(ctx.logic.admin_addr, "/readyz").await.0, 200);
}

/// Minimal HTTP/1.0 GET (no HTTP client dependency).
#[tokio::test]
async fn redis_cluster_runs_the_redis_backed_paths() {
    let cluster = RedisCluster::start(3).await;
    let nodes = cluster.nodes();
    let mut cfg = test_config();
    cfg.redis.cluster_nodes = nodes.clone();
    cfg.logic.seq_block_size = 3;
    // Generous: this machine is shared with parallel builds; the test is about correctness.
    cfg.redis.timeout_ms = 5000;
    let ctx = Ctx::start_with(cfg).await;
    // A fake conn node registered on the cluster (registry keys share one slot).
    let node = FakeNode::start_cluster(&nodes).await;
    let users: Vec<i64> = (1..=20).collect();
    ctx.import_users(&users).await;
    let mut devices = Vec::new();
    for u in &users {
        let d = ctx.register_device().await;
        ctx.sign_in(*u, d, &node.node_id, *u).await;
        devices.push(d);
    }
    let mut s = ctx.server.clone();
    let gid = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "g".into(),
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: users[1..].to_vec(),
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    // Group sends allocate seqs for 20 lists spread over all slots, in batches per slot.
    for i in 0..5 {
        let r = ctx
            .send_text(
                1,
                devices[0],
                ReceiverType::NormalGroup,
                gid,
                &format!("g{i}"),
                0,
            )
            .await
            .unwrap();
        assert_eq!(r.seq, i + 1);
    }
    for u in &users {
        let p = ctx.sync(*u, 0, 0, 0).await;
        assert_eq!(
            p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
    }
    eventually("deliveries through the cluster routes", || async {
        let n: usize = node.rec.delivers().iter().map(|b| b.targets.len()).sum();
        (n == 5 * 19).then_some(())
    })
    .await;
    // Conditional offline and supersede work with cluster scripts.
    let mut i = ctx.int.clone();
    i.offline(pb::OfflineReq {
        app_id: ctx.app.0,
        user_id: 2,
        device_id: devices[1],
        node_id: node.node_id.clone(),
        conn_id: 2,
        client_addr: String::new(),
    })
    .await
    .unwrap();
    let routes = ctx
        .logic
        .state
        .nodes
        .routes(ctx.app, &[gim_common::UserId(2), gim_common::UserId(3)])
        .await
        .unwrap();
    assert!(routes[0].is_empty());
    assert_eq!(routes[1].len(), 1);
    // A flush of every master: seqs continue above MySQL's reservation.
    for url in &nodes {
        let mut c = redis_conn(url).await;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    }
    let r = ctx
        .send_text(1, devices[0], ReceiverType::User, 2, "after flush", 0)
        .await
        .unwrap();
    assert!(r.seq > 5, "{}", r.seq);
    let last = ctx.sync(2, 0, 5, 0).await.messages;
    assert_eq!(last.len(), 1);
    assert_eq!(text_of(&last[0]), "after flush");
    drop(cluster);
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_database_and_rerun_as_a_no_op() {
    let name = format!("gim_mig_{:x}", rand_u64());
    let admin = sqlx::MySqlPool::connect(&mysql_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{name}`")))
        .execute(&admin)
        .await
        .unwrap();
    let base = mysql_url();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    let db = name.clone();
    let result = async move {
        let name = db;
        let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
        gim_logic::migrate(&pool).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .unwrap();
        for t in [
            "app",
            "user",
            "device",
            "device_ack",
            "im_group",
            "group_member",
            "user_message",
            "group_message",
            "send_request",
            "seq_block",
            "id_segment",
        ] {
            assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
        }
        let count = |pool: sqlx::MySqlPool| async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let before = count(pool.clone()).await;
        gim_logic::migrate(&pool).await.unwrap();
        assert_eq!(count(pool.clone()).await, before, "re-run applied nothing");
        let segs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM id_segment")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(segs, 2);
        pool.close().await;
    };
    // Drop the database even when an assertion fails.
    let r = tokio::spawn(result).await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`")))
        .execute(&admin)
        .await
        .unwrap();
    r.unwrap();
}

#[tokio::test]
async fn every_listener_serves_health_and_reflection_and_admin_endpoints() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let ctx = Ctx::start().await;
    for (addr, svc) in [
        (ctx.logic.int_addr, "gim.logic.v1.LogicInt"),
        (ctx.logic.client_addr, "gim.logic.v1.LogicClientExt"),
        (ctx.logic.server_addr, "gim.logic.v1.LogicServerExt"),
    ] {
        let ch = channel(addr).await;
        let st = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: svc.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(st, ServingStatus::Serving as i32, "{svc}");
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = ServerReflectionClient::new(ch)
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.iter().any(|n| n == svc), "{names:?}");
    }
    assert_eq!(http_get(ctx.logic.admin_addr, "/healthz").await.0, 200);
    assert_eq!(http_get(ctx.logic.admin_addr, "/readyz").await.0, 200);
    let mut c = ctx.client.clone();
    let _ = c
        .get_user(tonic::Request::new(pb::GetUserReq { user_id: 1 }))
        .await;
    let (code, metrics) = http_get(ctx.logic.admin_addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics
            .contains(r#"gim_logic_rpcs_total{method="LogicClientExt.GetUser",outcome="1002"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("gim_logic_ready"), "{metrics}");
}

/// A persisted send is timed per stage on `/metrics`: one observation of each stage it went
/// through, so an operator can see where send latency goes.
#[tokio::test]
async fn a_send_is_timed_per_stage_on_the_metrics_endpoint() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    ctx.send_text(1, d1, ReceiverType::User, 2, "timed", 5)
        .await
        .unwrap();
    let (_, metrics) = http_get(ctx.logic.admin_addr, "/metrics").await;
    for stage in [
        "lookup",
        "precheck",
        "seq",
        "store",
        "store_batch",
        "push_queue",
    ] {
        let line = format!(r#"gim_logic_send_stage_seconds_count{{stage="{stage}"}} 1"#);
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}

/// A batch script that fails half-way (a request key claimed twice in one batch) leaves MariaDB
/// with an open transaction on that connection: it must be rolled back before the connection is
/// reused, and every job must still get its own result. One pooled connection, so the failed
/// script's connection is the one every later statement runs on.
#[tokio::test]
async fn a_failed_batch_script_is_rolled_back_and_each_job_stored_on_its_own() {
    use gim_logic::messages::store::{StoreJob, store_batch};
    use gim_proto::connect::v1::MessageItem;
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&mysql_url())
        .await
        .unwrap();
    gim_logic::migrate(&pool).await.unwrap();
    let (app, _) = gim_logic::create_app(&pool, &format!("t{}", rand_u64()))
        .await
        .unwrap();
    let job = |user: i64, seq: i64, message_id: i64, key: i64| StoreJob {
        app,
        item: MessageItem {
            sender_type: 1,
            sender_id: 7,
            sender_device_id: 70,
            receiver_type: 1,
            receiver_id: user,
            message_id,
            request_id: key,
            send_time: 1,
            status: 1,
            ..Default::default()
        },
        mentions: String::new(),
        body: vec![0, b'\'', b'\\', 0xff],
        rows: vec![(gim_common::UserId(user), gim_common::Seq(seq))],
        req_key: Some((1, 7, key)),
        sender_seq: gim_common::Seq(0),
        receiver_is_owner: false,
        msg_type: 1,
        preview: String::new(),
    };
    // Job 0's claim is the script's first INSERT and succeeds; jobs 1 and 2 are the same row, so
    // the second INSERT fails with the claim still in the open transaction. Were it not rolled
    // back, job 0's own retry on this connection would commit the claim and then find its key
    // taken: a message answered as a duplicate and never stored.
    let mut unkeyed = [job(1, 1, 502, 0), job(1, 1, 503, 0)];
    for j in &mut unkeyed {
        j.req_key = None;
    }
    let [a, b] = unkeyed;
    let results = store_batch(pool.clone(), vec![job(2, 1, 501, 11), a, b]).await;
    assert!(
        matches!(results[0], Ok(None)),
        "keyed job: {:?}",
        results[0]
    );
    assert!(matches!(results[1], Ok(None)), "{:?}", results[1]);
    assert!(results[2].is_err(), "the same row twice: {:?}", results[2]);
    // Two claims of one key in one batch: the second gets the first's result.
    let results = store_batch(pool.clone(), vec![job(3, 1, 504, 12), job(4, 1, 505, 12)]).await;
    assert!(matches!(results[0], Ok(None)), "{:?}", results[0]);
    match &results[1] {
        Ok(Some(first)) => assert_eq!(first.message_id, 504),
        other => panic!("duplicate key: {other:?}"),
    }
    let in_tx: i64 = sqlx::query_scalar("SELECT CAST(@@in_transaction AS SIGNED)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        in_tx, 0,
        "the pooled connection was left inside a transaction"
    );
    let rows: Vec<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT user_id, message_id, body FROM user_message WHERE app_id = ? ORDER BY user_id",
    )
    .bind(app.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let body = vec![0, b'\'', b'\\', 0xff];
    assert_eq!(
        rows,
        vec![
            (1, 502, body.clone()),
            (2, 501, body.clone()),
            (3, 504, body)
        ]
    );
    // A clean batch after the failure commits in one script, visible from another connection.
    let results = store_batch(pool.clone(), vec![job(5, 1, 506, 14), job(6, 1, 507, 15)]).await;
    assert!(results.iter().all(|r| matches!(r, Ok(None))), "{results:?}");
    let other = sqlx::MySqlPool::connect(&mysql_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_message WHERE app_id = ?")
        .bind(app.0)
        .fetch_one(&other)
        .await
        .unwrap();
    assert_eq!(n, 5);
}

/// Parallel migrations of one fresh database (replicas starting together) all succeed, and the
/// schema is applied once. Before gim took its own lock, sqlx's `GET_LOCK(name, -1)` did not wait
/// on MariaDB and the losers failed with a duplicate `_sqlx_migrations` row.
#[tokio::test]
async fn concurrent_migrations_of_a_fresh_database_all_succeed() {
    let base = mysql_url();
    let (server, _) = base.rsplit_once('/').expect("url has a database");
    let db = format!("gim_migrate_{}", rand_u64() % 1_000_000_000);
    let admin = sqlx::MySqlPool::connect(&base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{db}`")))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{server}/{db}");
    let runs = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
            gim_logic::migrate(&pool).await.map_err(|e| e.to_string())
        })
    });
    let results: Vec<_> = futures::future::join_all(runs).await;
    let check = sqlx::MySqlPool::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&check)
        .await
        .unwrap();
    let migrations = gim_logic::MIGRATOR.iter().count() as i64;
    check.close().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`")))
        .execute(&admin)
        .await
        .unwrap();
    for r in results {
        assert_eq!(r.unwrap(), Ok(()));
    }
    assert_eq!(applied, migrations);
}
