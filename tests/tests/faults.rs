//! Fault runs with the strict no-loss check: while every user sends to the next one (half over the
//! long connection, half over gRPC), a conn node is killed with SIGKILL, Redis is restarted empty,
//! or logic is restarted. Afterwards every recipient's application must have seen every message of
//! its list (received and own sent copies) exactly once, in strictly increasing seq order.

use gim_client::Endpoint;
use gim_e2e::app::{send_retrying, text_req};
use gim_e2e::cluster::{Logic, logic_config, migrate};
use gim_e2e::{
    ChildConn, Cluster, OwnRedis, TestApp, TestClient, WAIT, assert_exactly_once_in_order,
};
use gim_proto::connect::v1::ReceiverType;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

const USERS: i64 = 6;
const PER_SENDER: usize = 30;
/// Paces each sender so the fault lands in the middle of the traffic, not after it.
const PACE: Duration = Duration::from_millis(25);

fn text(from: i64, i: usize) -> String {
    format!("u{from} #{i}")
}

fn next(u: i64) -> i64 {
    u % USERS + 1
}

/// Counts sends so the fault can be triggered once a share of the traffic is through.
#[derive(Default)]
struct Progress {
    sent: AtomicUsize,
    changed: Notify,
}

impl Progress {
    async fn reached(&self, n: usize) {
        loop {
            let notified = self.changed.notified();
            if self.sent.load(Ordering::Acquire) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// Starts one client per user, user i on endpoint list rotated by i so users spread over nodes
/// and fail over to the next node.
async fn clients(app: &TestApp, endpoints: &[Endpoint]) -> Vec<TestClient> {
    app.users(&(1..=USERS).collect::<Vec<_>>()).await;
    let mut out = Vec::new();
    for u in 1..=USERS {
        let mut list = endpoints.to_vec();
        list.rotate_left(u as usize % endpoints.len());
        out.push(app.client(u, list).await);
    }
    out
}

/// Runs the traffic with `fault` injected at a third of it, then checks every list strictly.
/// With `pushes_resume`, every still-connected client must also get a message sent after the
/// fault by push alone (no resync): the conn nodes restore their routes after Redis lost them.
async fn traffic_with_fault<F, Fut>(
    app: &TestApp,
    mut clients: Vec<TestClient>,
    pushes_resume: bool,
    fault: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let progress = Arc::new(Progress::default());
    let mut senders = Vec::new();
    for c in &clients {
        let client = c.client.clone();
        let mut api = app.api(&c.creds);
        let from = c.user();
        let progress = progress.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..PER_SENDER {
                let t = text(from, i);
                if i % 2 == 0 {
                    // Over the long connection; the SDK retries across reconnects, same key.
                    client
                        .send(gim_proto::connect::v1::SendMessageInput {
                            receiver_type: ReceiverType::User as i32,
                            receiver_id: next(from),
                            message_body: Some(gim_client::text_body(&t)),
                            is_persist: true,
                            ..Default::default()
                        })
                        .await
                        .unwrap_or_else(|e| panic!("socket send {t}: {e}"));
                } else {
                    let req = text_req(ReceiverType::User, next(from), &t, 1_000 + i as i64);
                    send_retrying(&mut api, req).await;
                }
                progress.sent.fetch_add(1, Ordering::AcqRel);
                progress.changed.notify_waiters();
                tokio::time::sleep(PACE).await;
            }
        }));
    }
    let total = USERS as usize * PER_SENDER;
    tokio::time::timeout(WAIT, progress.reached(total / 3))
        .await
        .expect("a third of the traffic went through before the fault");
    fault().await;
    for s in senders {
        tokio::time::timeout(WAIT * 2, s)
            .await
            .expect("senders finish")
            .expect("sender task");
    }
    assert_eq!(progress.sent.load(Ordering::Acquire), total);

    if pushes_resume {
        // The nodes notice the loss at their next lease renewal (a second here) and restore the
        // routes; a message sent before that is only reachable by sync, so send fresh ones until
        // one arrives by push. Bounded by WAIT overall; the extra messages are not in `expected`.
        for c in &mut clients {
            let u = c.user();
            let deadline = tokio::time::Instant::now() + WAIT;
            let mut k = 0;
            loop {
                let marker = format!("push after the fault for {u} #{k}");
                app.server
                    .clone()
                    .send_message(text_req(
                        ReceiverType::User,
                        u,
                        &marker,
                        8_000 + u * 100 + k,
                    ))
                    .await
                    .unwrap();
                let wait = tokio::time::timeout(Duration::from_secs(1), c.wait_text(&marker));
                if wait.await.is_ok() {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "user {u}: no push arrived after the fault"
                );
                k += 1;
            }
        }
    }

    // Pushes are best effort: an application syncs when it comes back to the foreground.
    for c in &clients {
        c.client.resync().await;
    }
    for c in &mut clients {
        let u = c.user();
        let prev = if u == 1 { USERS } else { u - 1 };
        let mut expected: Vec<String> = (0..PER_SENDER).map(|i| text(prev, i)).collect();
        expected.extend((0..PER_SENDER).map(|i| text(u, i)));
        c.wait_all(&expected).await;
        // One more message and sync after everything arrived, so a late duplicate would show up
        // before the check.
        let marker = format!("marker for {u}");
        app.server
            .clone()
            .send_message(text_req(ReceiverType::User, u, &marker, 9_000 + u))
            .await
            .unwrap();
        c.client.resync().await;
        c.wait_text(&marker).await;
        assert_exactly_once_in_order(&format!("user {u}"), &c.messages, &expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_conn_node_mid_traffic_loses_nothing() {
    gim_e2e::init();
    migrate().await;
    let redis = gim_e2e::redis_url();
    let logic = Logic::start(logic_config(&redis)).await;
    let pool = gim_logic::mysql_pool(&logic_config(&redis).mysql).unwrap();
    let bin = env!("CARGO_BIN_EXE_e2e-conn");
    let mut nodes = Vec::new();
    for name in ["e2e-kill-a", "e2e-kill-b", "e2e-kill-c"] {
        nodes.push(ChildConn::spawn(bin, name, logic.int_addr, &redis).await);
    }
    let endpoints: Vec<Endpoint> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| if i % 2 == 0 { n.tcp() } else { n.ws() })
        .collect();
    let app = TestApp::create(
        &pool,
        format!("http://{}", logic.client_addr),
        format!("http://{}", logic.server_addr),
    )
    .await;
    let clients = clients(&app, &endpoints).await;
    let victim = &mut nodes[0];
    traffic_with_fault(&app, clients, false, || async move {
        victim.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis_mid_traffic_loses_nothing() {
    let mut redis = OwnRedis::start().await;
    let cl = Cluster::start_with(&redis.url(), 2).await;
    let app = cl.new_app().await;
    let endpoints = vec![cl.conns[0].tcp(), cl.conns[1].ws()];
    let clients = clients(&app, &endpoints).await;
    traffic_with_fault(&app, clients, true, || async {
        redis.restart(Duration::from_millis(500)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_logic_mid_traffic_loses_nothing() {
    let mut cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    let endpoints = vec![cl.conns[0].ws(), cl.conns[1].tcp()];
    let clients = clients(&app, &endpoints).await;
    let logic = &mut cl.logic;
    traffic_with_fault(&app, clients, false, || async move {
        logic.restart().await;
    })
    .await;
}
