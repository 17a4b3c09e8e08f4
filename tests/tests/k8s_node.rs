//! gim on a real Kubernetes node, end to end (issue 17): the operator installed with Helm runs the
//! chart's example GimCluster (images overridden to the local ones) as real pods, and clients reach
//! conn through its Service's NodePort on 127.0.0.1. Phases, each timed:
//! migration Job and Ready pods; GimCluster Ready with live connection counts; 1:1 and group
//! messages between clients on different conn pods; scale-in by one, a config-change rollout and a
//! force-deleted conn pod, each while messages flow and each with the exactly-once check; and
//! garbage collection of everything when the GimCluster is deleted. Then the operator's own pods
//! answer /healthz, /readyz and /metrics, and a small second GimCluster in its own namespace goes
//! through three bad inputs, each reported as `Degraded` with the reason read from pod or Job
//! status, each leaving the running pods alone, each recovering by itself once fixed: an
//! unreachable MySQL (a closed port), a logic image that cannot be pulled, a failing migration.
//!
//! Runs only with `GIM_K8S_E2E=1`, which `scripts/k8s-e2e.sh` sets once the node runs
//! (`scripts/k8s-node.sh`) and the operator is installed; otherwise it prints SKIPPED and passes.
//! Pods see MariaDB and Redis at the node's bridge address (10.244.0.1); this process reaches them
//! on 127.0.0.1, the logic Services by their cluster IPs (kube-proxy) and conn by the NodePort.

use gim_client::{Credentials, Endpoint};
use gim_common::ids::{AppId, UserId};
use gim_e2e::app::{send_retrying, text_req};
use gim_e2e::{TestApp, TestClient, WAIT, assert_exactly_once_in_order};
use gim_proto::connect::v1::ReceiverType;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The example's namespace and name.
const NS: &str = "default";
const CLUSTER: &str = "chat";
/// Where pods reach the machine's MariaDB and Redis (scripts/k8s-node.sh forwards them).
const NODE_IP: &str = "10.244.0.1";
const DB: &str = "gim_k8s";
/// A Redis db of its own: the node registry must hold this cluster's conn pods only.
const REDIS_DB: u8 = 11;
/// Pod starts, rollouts and drains on a busy 2-core machine.
const SLOW: Duration = Duration::from_secs(300);
const USERS: i64 = 6;
const PACE: Duration = Duration::from_millis(100);

fn example_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/gim-operator/examples/gimcluster.yaml")
}

async fn kubectl_in(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new("kubectl");
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("kubectl: {e}"))?;
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).await.expect("write stdin");
    }
    drop(pipe);
    let out = child.wait_with_output().await.expect("kubectl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

async fn kubectl(args: &[&str]) -> String {
    kubectl_in(args, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn get(args: &[&str]) -> Value {
    get_in(NS, args).await
}

async fn get_in(ns: &str, args: &[&str]) -> Value {
    let mut a = vec!["get", "-n", ns, "-o", "json"];
    a.extend_from_slice(args);
    serde_json::from_str(&kubectl(&a).await).expect("kubectl json")
}

/// `kubectl apply -f -` of a JSON object.
async fn apply_json(v: &Value) {
    kubectl_in(&["apply", "-f", "-"], Some(&v.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn merge_patch(ns: &str, what: &str, patch: Value) {
    kubectl(&[
        "patch",
        "-n",
        ns,
        what,
        "--type",
        "merge",
        "-p",
        &patch.to_string(),
    ])
    .await;
}

/// Polls `probe` (a read of cluster state) until it yields a value; panics with `what` after
/// `limit`. Each probe is a read of the API server (or Redis) four times a second: cheap, and
/// simpler than a watch per condition.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition(obj: &Value, kind: &str) -> Option<(String, String, String)> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Conn pods that are Running, not being deleted, by name.
async fn conn_pods() -> BTreeMap<String, Value> {
    let v = get(&[
        "pods",
        "-l",
        &format!("gim.io/cluster={CLUSTER},app.kubernetes.io/component=conn"),
    ])
    .await;
    items(&v)
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["phase"] == "Running")
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p))
        .collect()
}

/// `podIP:port` of the container port named "admin" (health and metrics).
fn admin_addr(p: &Value) -> String {
    port_addr(p, "admin")
}

/// `podIP:port` of the pod's first container's port called `name`.
fn port_addr(p: &Value, name: &str) -> String {
    let ip = p["status"]["podIP"].as_str().expect("pod IP");
    let port = p["spec"]["containers"][0]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|x| x["name"] == name))
        .and_then(|x| x["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no {name} port"));
    format!("{ip}:{port}")
}

/// One sample's value from a Prometheus text page (`series` with its labels, as printed).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn pod_ready(p: &Value) -> bool {
    condition(p, "Ready").is_some_and(|c| c.0 == "True")
}

/// Waits until the GimCluster has caught up with its spec and is Ready with `conn` ready conn pods.
async fn cluster_settled(conn: i64, logic: i64) -> Value {
    until(
        &format!("GimCluster Ready with {conn} conn and {logic} logic pods"),
        SLOW,
        || async {
            let g = get(&["gimcluster", CLUSTER]).await;
            let observed = g["status"]["observedGeneration"] == g["metadata"]["generation"];
            let ready = condition(&g, "Ready").is_some_and(|c| c.0 == "True");
            let conn_ok = g["status"]["conn"]["readyReplicas"].as_i64() == Some(conn)
                && g["status"]["conn"]["replicas"].as_i64() == Some(conn);
            let logic_ok = g["status"]["logic"]["readyReplicas"].as_i64() == Some(logic);
            let pods = conn_pods().await;
            let pods_ok = pods.len() as i64 == conn && pods.values().all(pod_ready);
            (observed && ready && conn_ok && logic_ok && pods_ok).then_some(g)
        },
    )
    .await
}

struct Phases {
    t0: Instant,
    current: Option<(String, Instant)>,
    done: Vec<(String, Duration)>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            t0: Instant::now(),
            current: None,
            done: Vec::new(),
        }
    }
    fn start(&mut self, name: &str) {
        self.end();
        eprintln!("k8s_node: phase '{name}' ...");
        self.current = Some((name.to_string(), Instant::now()));
    }
    fn end(&mut self) {
        if let Some((name, t)) = self.current.take() {
            let d = t.elapsed();
            eprintln!("k8s_node: phase '{name}' took {:.1}s", d.as_secs_f64());
            self.done.push((name, d));
        }
    }
    fn report(&mut self) {
        self.end();
        eprintln!("k8s_node: phase times");
        for (name, d) in &self.done {
            eprintln!("  {:>7.1}s  {name}", d.as_secs_f64());
        }
        eprintln!("  {:>7.1}s  total", self.t0.elapsed().as_secs_f64());
    }
}

/// The conn pod (node name) holding this device's connection, from the route logic keeps.
async fn pod_of(
    mut redis: redis::aio::MultiplexedConnection,
    creds: &Credentials,
) -> Option<String> {
    let key = gim_common::keys::route_key(AppId(creds.app_id), UserId(creds.user_id));
    let routes: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("HGETALL route");
    let v = routes.get(&creds.device_id.to_string())?;
    let (node, _) = gim_common::keys::parse_route_value(v)?;
    // Node ids are `POD_NAME-<8 hex>` (a fresh suffix per process start).
    Some(
        node.rsplit_once('-')
            .map(|p| p.0)
            .unwrap_or(node)
            .to_string(),
    )
}

/// Connects one client per user through the conn Service, re-rolling a user's connection until
/// it lands on conn pod `(u - 1) mod pods` (kube-proxy picks pods at random): every pod holds
/// clients, so a scale-in or a pod kill always hits some, and users 1 and 2 are on different pods.
async fn spread_clients(
    app: &TestApp,
    redis: &redis::aio::MultiplexedConnection,
    endpoint: &Endpoint,
    pods: &[String],
) -> (Vec<TestClient>, HashMap<i64, String>) {
    let mut clients = Vec::new();
    let mut placed = HashMap::new();
    for u in 1..=USERS {
        // A fixed pod per user, not "first pod with room": filling pods in user order put users
        // 1 and 2 on one pod whenever kube-proxy sent both there first.
        let want = &pods[(u as usize - 1) % pods.len()];
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(
                tries < 60,
                "user {u}: not placed on conn pod {want} after 60 connections"
            );
            let c = app.client(u, vec![endpoint.clone()]).await;
            let pod = until("the route of a new connection", WAIT, || {
                pod_of(redis.clone(), &c.creds)
            })
            .await;
            assert!(pods.contains(&pod), "user {u} landed on unknown pod {pod}");
            if &pod == want {
                placed.insert(u, pod);
                clients.push(c);
                break;
            }
            let TestClient { client, .. } = c;
            if let Ok(client) = Arc::try_unwrap(client) {
                client.close().await;
            }
        }
    }
    (clients, placed)
}

fn text(from: i64, phase: &str, i: usize) -> String {
    format!("{phase}: u{from} #{i}")
}

fn next(u: i64) -> i64 {
    u % USERS + 1
}

/// Every user sends to the next one (even messages over the long connection, odd over gRPC
/// through the logic Service) until `disturb` has finished and a few more rounds went through;
/// then every recipient must have seen its list exactly once, in seq order, after a resync.
/// gRPC sends use request ids from `ids` up (an idempotency key, so distinct per phase), markers
/// the few below it.
async fn traffic_while<F, Fut>(
    app: &TestApp,
    clients: &mut [TestClient],
    phase: &str,
    ids: i64,
    disturb: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let stop = Arc::new(AtomicBool::new(false));
    let sent_total = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for c in clients.iter() {
        let client = c.client.clone();
        let mut api = app.api(&c.creds);
        let from = c.user();
        let stop = stop.clone();
        let sent_total = sent_total.clone();
        let phase = phase.to_string();
        senders.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                let t = text(from, &phase, i);
                if i % 2 == 0 {
                    // The SDK retries across reconnects with the same request id.
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
                    let req = text_req(ReceiverType::User, next(from), &t, ids + i as i64);
                    send_retrying(&mut api, req).await;
                }
                i += 1;
                sent_total.fetch_add(1, Ordering::AcqRel);
                tokio::time::sleep(PACE).await;
            }
            i
        }));
    }
    // Some traffic before, during and after the disturbance.
    let before = sent_total.load(Ordering::Acquire);
    until("traffic flows before the disturbance", WAIT, || async {
        (sent_total.load(Ordering::Acquire) >= before + 2 * USERS as usize).then_some(())
    })
    .await;
    disturb().await;
    let after = sent_total.load(Ordering::Acquire);
    until("traffic flows after the disturbance", WAIT, || async {
        (sent_total.load(Ordering::Acquire) >= after + 2 * USERS as usize).then_some(())
    })
    .await;
    stop.store(true, Ordering::Release);
    let mut sent = HashMap::new();
    for (c, s) in clients.iter().zip(senders) {
        let n = tokio::time::timeout(WAIT * 2, s)
            .await
            .expect("senders finish")
            .expect("sender task");
        sent.insert(c.user(), n);
    }
    for c in clients.iter() {
        c.client.resync().await;
    }
    for c in clients.iter_mut() {
        let u = c.user();
        let prev = if u == 1 { USERS } else { u - 1 };
        let mut expected: Vec<String> = (0..sent[&prev]).map(|i| text(prev, phase, i)).collect();
        expected.extend((0..sent[&u]).map(|i| text(u, phase, i)));
        c.wait_all(&expected).await;
        // A marker after everything arrived, so a late duplicate would show before the check.
        let marker = format!("{phase}: marker for {u}");
        // Retried like the senders' gRPC sends (same request id): a logic pod of the rollout may
        // still be leaving the Service when the marker goes out.
        let deadline = Instant::now() + WAIT;
        loop {
            let req = text_req(ReceiverType::User, u, &marker, ids - 1 - u);
            match app.server.clone().send_message(req).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    eprintln!("k8s_node: {phase}: marker for {u} retried: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("marker for {u}: {e}"),
            }
        }
        c.client.resync().await;
        c.wait_text(&marker).await;
        let own: Vec<_> = c
            .messages
            .iter()
            .filter(|m| gim_e2e::text_of(m).starts_with(&format!("{phase}: ")))
            .cloned()
            .collect();
        assert_exactly_once_in_order(&format!("{phase}, user {u}"), &own, &expected);
    }
    eprintln!(
        "k8s_node: {phase}: {} messages, each seen exactly once",
        sent.values().sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pods_end_to_end() {
    if std::env::var("GIM_K8S_E2E").is_err() {
        eprintln!(
            "SKIPPED: real-node end-to-end test; run scripts/k8s-e2e.sh (starts the node, sets GIM_K8S_E2E=1)"
        );
        return;
    }
    gim_e2e::init();
    let conn_image = std::env::var("GIM_IMAGE_CONN").expect("GIM_IMAGE_CONN");
    let logic_image = std::env::var("GIM_IMAGE_LOGIC").expect("GIM_IMAGE_LOGIC");
    let mut phases = Phases::new();

    phases.start("secrets and GimCluster applied");
    // The database the pods use, on the machine's MariaDB; its Redis db emptied of old runs.
    let admin_url = gim_e2e::mysql_url();
    let admin = sqlx::MySqlPool::connect(&admin_url).await.expect("mysql");
    // DB is a constant of this file, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE IF NOT EXISTS {DB} CHARACTER SET utf8mb4"
    )))
    .execute(&admin)
    .await
    .expect("create database");
    let host_db = format!("mysql://gim:gim@127.0.0.1:3306/{DB}");
    let redis_host = format!("redis://127.0.0.1:6379/{REDIS_DB}");
    let rc = redis::Client::open(redis_host.as_str()).expect("redis url");
    let mut redis = rc.get_multiplexed_async_connection().await.expect("redis");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut redis).await.unwrap();
    for (name, url) in [
        ("gim-mysql", format!("mysql://gim:gim@{NODE_IP}:3306/{DB}")),
        ("gim-redis", format!("redis://{NODE_IP}:6379/{REDIS_DB}")),
    ] {
        let lit = format!("--from-literal=url={url}");
        let yaml = kubectl(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            NS,
            &lit,
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await;
        kubectl_in(&["apply", "-f", "-"], Some(&yaml))
            .await
            .unwrap();
    }
    // The example as shipped, with only the two images replaced.
    let example = std::fs::read_to_string(example_path()).expect("example");
    let mut replaced = 0;
    let manifest: String = example
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            if t.starts_with("conn: ") && t.contains('/') {
                replaced += 1;
                format!("{indent}conn: {conn_image}")
            } else if t.starts_with("logic: ") && t.contains('/') {
                replaced += 1;
                format!("{indent}logic: {logic_image}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(replaced, 2, "the example names a conn and a logic image");
    kubectl_in(&["apply", "-f", "-"], Some(&manifest))
        .await
        .unwrap();
    let spec_conn = get(&["gimcluster", CLUSTER]).await["spec"]["conn"]["replicas"]
        .as_i64()
        .expect("spec.conn.replicas");
    let spec_logic = get(&["gimcluster", CLUSTER]).await["spec"]["logic"]["replicas"]
        .as_i64()
        .unwrap_or(1);

    phases.start("migration Job succeeded");
    let job = until("the migration Job succeeds", SLOW, || async {
        let v = get(&["jobs", "-l", &format!("gim.io/cluster={CLUSTER}")]).await;
        let jobs = items(&v);
        for j in &jobs {
            if j["status"]["failed"].as_i64().unwrap_or(0) > 0 {
                panic!("migration Job failed: {}", j["status"]);
            }
        }
        jobs.into_iter()
            .find(|j| j["status"]["succeeded"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("migrate"),
        "the Job runs gim-logic migrate: {args}"
    );
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?")
            .bind(DB)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(tables > 0, "the Job created the schema in {DB}");

    phases.start("conn and logic pods Ready, GimCluster Ready");
    cluster_settled(spec_conn, spec_logic).await;
    // The readiness the kubelet saw, asked again directly: every pod's real /readyz.
    let pods = conn_pods().await;
    for p in pods.values() {
        let (code, _) = gim_test_support::http_get(admin_addr(p), "/readyz").await;
        assert_eq!(code, 200, "conn pod {} /readyz", admin_addr(p));
    }
    let logic_pods = items(
        &get(&[
            "pods",
            "-l",
            &format!("gim.io/cluster={CLUSTER},app.kubernetes.io/component=logic"),
        ])
        .await,
    );
    assert_eq!(logic_pods.len() as i64, spec_logic);
    for p in &logic_pods {
        assert!(pod_ready(p), "logic pod Ready");
        let (code, _) = gim_test_support::http_get(admin_addr(p), "/readyz").await;
        assert_eq!(code, 200, "logic pod {} /readyz", admin_addr(p));
    }

    phases.start("operator pods: /healthz, /readyz, /metrics");
    let leader = operator_admin().await;
    let (_, page) = gim_test_support::http_get(leader.as_str(), "/metrics").await;
    let ok = sample(&page, r#"gim_operator_reconciles_total{result="ok"}"#).unwrap_or(0.0);
    assert!(ok > 0.0, "the leader counted its reconciles: {ok}");
    assert_eq!(
        sample(&page, "gim_operator_managed_clusters"),
        Some(1.0),
        "the leader manages the one GimCluster"
    );
    assert_eq!(sample(&page, "gim_operator_degraded_clusters"), Some(0.0));

    phases.start("clients on different conn pods: 1:1 and group");
    let svc = get(&["service", &format!("{CLUSTER}-conn")]).await;
    let node_port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tcp")
        .and_then(|p| p["nodePort"].as_i64())
        .expect("conn Service has a NodePort");
    let endpoint = Endpoint::Tcp(format!("127.0.0.1:{node_port}"));
    let ext = get(&["service", &format!("{CLUSTER}-logic-ext")]).await;
    let ext_ip = ext["spec"]["clusterIP"].as_str().unwrap().to_string();
    let ext_port = |name: &str| {
        ext["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["port"].as_i64())
            .unwrap()
    };
    let pool = sqlx::MySqlPool::connect(&host_db).await.expect("mysql");
    let app = TestApp::create(
        &pool,
        format!("http://{ext_ip}:{}", ext_port("client")),
        format!("http://{ext_ip}:{}", ext_port("server")),
    )
    .await;
    app.users(&(1..=USERS).collect::<Vec<_>>()).await;
    let pod_names: Vec<String> = pods.keys().cloned().collect();
    let (mut clients, placed) = spread_clients(&app, &redis, &endpoint, &pod_names).await;
    assert_ne!(
        placed[&1], placed[&2],
        "users 1 and 2 are on different conn pods"
    );
    let (a, rest) = clients.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut rest[0]);
    a.send_text(ReceiverType::User, 2, "hello 2 from 1")
        .await
        .expect("send 1:1");
    b.wait_text("hello 2 from 1").await;
    b.send_text(ReceiverType::User, 1, "hello 1 from 2")
        .await
        .expect("send 1:1");
    a.wait_text("hello 1 from 2").await;
    let group = app.group(1, &[1, 2], false).await;
    b.send_text(ReceiverType::NormalGroup, group, "hello group from 2")
        .await
        .expect("send group");
    a.wait_text("hello group from 2").await;
    b.wait_text("hello group from 2").await;

    phases.start("GimCluster reports the live connections");
    until(
        &format!("GimCluster status.connections == {USERS}"),
        SLOW,
        || async {
            let g = get(&["gimcluster", CLUSTER]).await;
            (g["status"]["connections"].as_i64() == Some(USERS)).then_some(())
        },
    )
    .await;

    phases.start("scale in by one while messages flow");
    let before: Vec<String> = conn_pods().await.into_keys().collect();
    let grace = 5
        + get(&["gimcluster", CLUSTER]).await["spec"]["conn"]["drainWindowSeconds"]
            .as_i64()
            .unwrap()
        + 15;
    let connects_before: HashMap<i64, usize> =
        clients.iter().map(|c| (c.user(), c.connects)).collect();
    let removed = Arc::new(std::sync::Mutex::new(None::<(String, Duration)>));
    let removed2 = removed.clone();
    let target = (spec_conn - 1).to_string();
    traffic_while(&app, &mut clients, "scale-in", 10_000_000, || async move {
        let t = Instant::now();
        kubectl(&[
            "scale",
            "-n",
            NS,
            &format!("gimcluster/{CLUSTER}"),
            "--replicas",
            &target,
        ])
        .await;
        // The chosen pod disappears once it has drained and exited.
        let gone = until("a conn pod removed", SLOW, || async {
            let v = get(&[
                "pods",
                "-l",
                &format!("gim.io/cluster={CLUSTER},app.kubernetes.io/component=conn"),
            ])
            .await;
            let now: Vec<String> = items(&v)
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect();
            before.iter().find(|p| !now.contains(p)).cloned()
        })
        .await;
        *removed2.lock().unwrap() = Some((gone, t.elapsed()));
    })
    .await;
    let (gone, took) = removed.lock().unwrap().clone().unwrap();
    assert!(
        took < Duration::from_secs(grace as u64),
        "pod {gone} took {took:?}, beyond its grace period of {grace}s"
    );
    for c in clients.iter_mut() {
        if placed[&c.user()] == gone {
            assert!(
                c.connects > connects_before[&c.user()],
                "user {} was on the removed pod and reconnected",
                c.user()
            );
            let now = pod_of(redis.clone(), &c.creds).await.expect("route");
            assert_ne!(now, gone, "user {} moved to another pod", c.user());
        }
    }
    eprintln!("k8s_node: scale-in: {gone} drained and exited in {took:.1?} (grace {grace}s)");
    cluster_settled(spec_conn - 1, spec_logic).await;

    phases.start("config change rolls the pods while messages flow");
    let old_pods: Vec<String> = conn_pods().await.into_keys().collect();
    traffic_while(&app, &mut clients, "rollout", 20_000_000, || async {
        let patch = r#"{"spec":{"config":{"logFilter":"info,gim_conn=debug"}}}"#;
        kubectl(&[
            "patch",
            "-n",
            NS,
            &format!("gimcluster/{CLUSTER}"),
            "--type",
            "merge",
            "-p",
            patch,
        ])
        .await;
        until("every conn pod replaced", SLOW, || async {
            let now = conn_pods().await;
            (now.len() as i64 == spec_conn - 1
                && now.values().all(pod_ready)
                && now.keys().all(|p| !old_pods.contains(p)))
            .then_some(())
        })
        .await;
    })
    .await;
    cluster_settled(spec_conn - 1, spec_logic).await;

    phases.start("force-deleted conn pod loses nothing");
    let victim = conn_pods().await.into_keys().next().unwrap();
    traffic_while(&app, &mut clients, "force-delete", 30_000_000, || async {
        kubectl(&[
            "delete",
            "pod",
            "-n",
            NS,
            &victim,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])
        .await;
        // Traffic goes on until the kubelet has killed it and its replacement is Ready.
        until("the killed pod replaced", SLOW, || async {
            let now = conn_pods().await;
            (now.len() as i64 == spec_conn - 1
                && now.values().all(pod_ready)
                && !now.contains_key(&victim))
            .then_some(())
        })
        .await;
    })
    .await;
    cluster_settled(spec_conn - 1, spec_logic).await;

    phases.start("deleting the GimCluster collects everything");
    for c in clients {
        let TestClient { client, .. } = c;
        if let Ok(client) = Arc::try_unwrap(client) {
            client.close().await;
        }
    }
    let owned = || async {
        let sel = format!("gim.io/cluster={CLUSTER}");
        kubectl(&[
            "get",
            "-n",
            NS,
            "deployments,replicasets,pods,jobs,services,configmaps,secrets,poddisruptionbudgets,horizontalpodautoscalers,networkpolicies",
            "-l",
            &sel,
            "-o",
            "name",
        ])
        .await
    };
    let before = owned().await;
    assert!(
        before.contains("deployment") && before.contains("service"),
        "the operator's objects carry the cluster label: {before}"
    );
    // Present all along, and nothing above broke: the node's bridge CNI enforces no
    // NetworkPolicy, so this shows they are accepted and harmless, not that they block.
    for np in ["conn", "logic"] {
        let name = format!("networkpolicy.networking.k8s.io/{CLUSTER}-{np}");
        assert!(before.contains(&name), "{name} in {before}");
    }
    kubectl(&["delete", "gimcluster", CLUSTER, "-n", NS, "--wait=true"]).await;
    until("every object the operator made is gone", SLOW, || async {
        let left = owned().await;
        let pods = kubectl(&["get", "pods", "-n", NS, "-o", "name"]).await;
        (left.trim().is_empty() && pods.trim().is_empty()).then_some(())
    })
    .await;

    bad_inputs(&mut phases, &admin, &logic_image, &conn_image).await;
    phases.report();
}

fn operator_ns() -> String {
    std::env::var("GIM_K8S_OPERATOR_NAMESPACE").unwrap_or_else(|_| "gim-system".into())
}

/// The operator's pods as the kubelet runs them (the chart's probes passed: they are Ready):
/// every replica answers /healthz and /readyz itself, exactly one leads. Returns the leader's
/// admin address.
async fn operator_admin() -> String {
    let ns = operator_ns();
    let pods = items(&get_in(&ns, &["pods", "-l", "app.kubernetes.io/name=gim-operator"]).await);
    assert!(!pods.is_empty(), "operator pods in {ns}");
    let mut leaders = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        assert!(pod_ready(p), "operator pod {name} Ready");
        let addr = port_addr(p, "metrics");
        let (code, body) = gim_test_support::http_get(addr.as_str(), "/healthz").await;
        assert_eq!(code, 200, "{name} /healthz: {body}");
        let (code, ready) = gim_test_support::http_get(addr.as_str(), "/readyz").await;
        assert_eq!(code, 200, "{name} /readyz: {ready}");
        let (code, page) = gim_test_support::http_get(addr.as_str(), "/metrics").await;
        assert_eq!(code, 200, "{name} /metrics");
        if sample(&page, "gim_operator_leader") == Some(1.0) {
            assert!(ready.starts_with("leader"), "{name} leads: {ready}");
            leaders.push(addr);
        }
    }
    assert_eq!(leaders.len(), 1, "exactly one operator replica leads");
    leaders.pop().unwrap()
}

/// A small GimCluster of its own (namespace `GIM_K8S_E2E_NAMESPACE`, its own database and Redis
/// db), one conn and one logic pod, put through three bad inputs. Faster than breaking the
/// example cluster: nothing to drain, and a failed case cannot spoil the phases above.
const EDGE: &str = "edge";
const EDGE_DB: &str = "gim_k8s_edge";
const EDGE_REDIS_DB: u8 = 12;
/// From first symptom to Degraded, and from the fix to Ready: pod starts and the Job's own
/// retry back-off (10 s, then 20 s) on a busy node.
const EDGE_WAIT: Duration = Duration::from_secs(120);

async fn edge_secret(ns: &str, name: &str, url: &str) {
    apply_json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"url": url}
    }))
    .await;
}

/// (status, reason, message) of the edge cluster's condition `kind` once `pred` holds.
async fn edge_condition(
    ns: &str,
    what: &str,
    kind: &str,
    pred: impl Fn(&(String, String, String)) -> bool,
) -> (String, String, String) {
    until(what, EDGE_WAIT, || async {
        let g = get_in(ns, &["gimcluster", EDGE]).await;
        condition(&g, kind).filter(|c| pred(c))
    })
    .await
}

async fn edge_degraded(ns: &str, reason: &str) -> String {
    let (_, _, msg) = edge_condition(
        ns,
        &format!("GimCluster {EDGE} Degraded with reason {reason}"),
        "Degraded",
        |c| c.0 == "True" && c.1 == reason,
    )
    .await;
    eprintln!("k8s_node: {EDGE}: Degraded {reason}: {msg}");
    msg
}

/// Ready, Degraded False, generation observed, one conn and one logic pod ready.
async fn edge_ready(ns: &str) -> Value {
    until(
        &format!("GimCluster {EDGE} Ready and not Degraded"),
        EDGE_WAIT,
        || async {
            let g = get_in(ns, &["gimcluster", EDGE]).await;
            let ok = g["status"]["observedGeneration"] == g["metadata"]["generation"]
                && condition(&g, "Ready").is_some_and(|c| c.0 == "True")
                && condition(&g, "Degraded").is_some_and(|c| c.0 == "False")
                && g["status"]["conn"]["readyReplicas"].as_i64() == Some(1)
                && g["status"]["logic"]["readyReplicas"].as_i64() == Some(1);
            ok.then_some(g)
        },
    )
    .await
}

/// What "nothing rolled" compares: each Deployment's template hash and image, and the pods.
async fn edge_workloads(ns: &str) -> (Vec<(String, String, String)>, Vec<String>) {
    let deps = items(
        &get_in(
            ns,
            &["deployments", "-l", &format!("gim.io/cluster={EDGE}")],
        )
        .await,
    )
    .iter()
    .map(|d| {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        (
            s(&d["metadata"]["name"]),
            s(&d["metadata"]["annotations"]["gim.io/template-hash"]),
            s(&d["spec"]["template"]["spec"]["containers"][0]["image"]),
        )
    })
    .collect();
    let pods = items(
        &get_in(
            ns,
            &[
                "pods",
                "-l",
                &format!("gim.io/cluster={EDGE},app.kubernetes.io/component in (conn,logic)"),
            ],
        )
        .await,
    )
    .iter()
    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    .map(|p| {
        p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
    .collect();
    (deps, pods)
}

async fn bad_inputs(
    phases: &mut Phases,
    admin: &sqlx::MySqlPool,
    logic_image: &str,
    conn_image: &str,
) {
    let ns = std::env::var("GIM_K8S_E2E_NAMESPACE").unwrap_or_else(|_| "gim-e2e".into());
    let ns = ns.as_str();
    phases.start("bad input 1: MySQL unreachable -> Degraded MigrationFailed");
    for q in [
        format!("DROP DATABASE IF EXISTS {EDGE_DB}"),
        format!("CREATE DATABASE {EDGE_DB} CHARACTER SET utf8mb4"),
    ] {
        // EDGE_DB is a constant of this file, not input.
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(admin)
            .await
            .expect("edge database");
    }
    let rc = redis::Client::open(format!("redis://127.0.0.1:6379/{EDGE_REDIS_DB}")).unwrap();
    let mut redis = rc.get_multiplexed_async_connection().await.expect("redis");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut redis).await.unwrap();
    apply_json(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
    }))
    .await;
    // Nothing listens on 3307 at the node address (only 3306 is forwarded to MariaDB): every
    // connection is refused at once.
    let good_mysql = format!("mysql://gim:gim@{NODE_IP}:3306/{EDGE_DB}");
    edge_secret(
        ns,
        "gim-mysql",
        &format!("mysql://gim:gim@{NODE_IP}:3307/{EDGE_DB}"),
    )
    .await;
    edge_secret(
        ns,
        "gim-redis",
        &format!("redis://{NODE_IP}:6379/{EDGE_REDIS_DB}"),
    )
    .await;
    apply_json(&serde_json::json!({
        "apiVersion": "gim.io/v1alpha1", "kind": "GimCluster",
        "metadata": {"name": EDGE, "namespace": ns},
        "spec": {
            "images": {"conn": conn_image, "logic": logic_image},
            "mysql": {"name": "gim-mysql", "key": "url"},
            "redis": {"name": "gim-redis", "key": "url"},
            "conn": {"replicas": 1, "drainWindowSeconds": 1},
            "logic": {"replicas": 1}
        }
    }))
    .await;
    let msg = edge_degraded(ns, "MigrationFailed").await;
    assert!(
        msg.to_lowercase().contains("refused"),
        "the condition quotes the migration's own error: {msg}"
    );
    let (deps, _) = edge_workloads(ns).await;
    assert!(
        deps.is_empty(),
        "no Deployment before the migration: {deps:?}"
    );
    // The operator's gauges follow the condition.
    let leader = operator_admin().await;
    until("gim_operator_degraded_clusters 1", EDGE_WAIT, || async {
        let (_, page) = gim_test_support::http_get(leader.as_str(), "/metrics").await;
        (sample(&page, "gim_operator_degraded_clusters") == Some(1.0)).then_some(())
    })
    .await;

    phases.start("bad input 1 fixed (Secret): migrated and Ready by itself");
    edge_secret(ns, "gim-mysql", &good_mysql).await;
    edge_ready(ns).await;
    let (healthy_deps, healthy_pods) = edge_workloads(ns).await;
    assert_eq!(healthy_deps.len(), 2, "{healthy_deps:?}");

    phases.start("bad input 2: logic image not pullable -> Degraded ImagePullFailed");
    // A tag no node has and no registry serves; the pull policy is the operator's default.
    let missing = "gim-local/gim-logic:e2e-does-not-exist";
    let spec_images = |logic: &str| serde_json::json!({"spec": {"images": {"logic": logic}}});
    let gc = format!("gimcluster/{EDGE}");
    merge_patch(ns, &gc, spec_images(missing)).await;
    let msg = edge_degraded(ns, "ImagePullFailed").await;
    // The kubelet's reason, from the migration pod (the words after it are the runtime's).
    assert!(
        msg.contains("(migrate)") && msg.contains("Image"),
        "names the pod and the pull error: {msg}"
    );
    let jobs = items(&get_in(ns, &["jobs", "-l", &format!("gim.io/cluster={EDGE}")]).await);
    let pulling = jobs
        .iter()
        .map(|j| &j["spec"]["template"]["spec"]["containers"][0])
        .find(|c| c["image"] == missing)
        .expect("a migration Job for the new image");
    assert_eq!(pulling["imagePullPolicy"], "IfNotPresent");
    // The migration gate holds both tiers: same templates, same pods.
    assert_eq!(
        edge_workloads(ns).await,
        (healthy_deps.clone(), healthy_pods.clone())
    );

    phases.start("bad input 2 fixed (image back): Ready by itself, nothing restarted");
    merge_patch(ns, &gc, spec_images(logic_image)).await;
    edge_ready(ns).await;
    assert_eq!(
        edge_workloads(ns).await,
        (healthy_deps.clone(), healthy_pods.clone())
    );
    until(
        "the Job for the missing image pruned",
        EDGE_WAIT,
        || async {
            let jobs = items(&get_in(ns, &["jobs", "-l", &format!("gim.io/cluster={EDGE}")]).await);
            jobs.iter()
                .all(|j| j["spec"]["template"]["spec"]["containers"][0]["image"] != missing)
                .then_some(())
        },
    )
    .await;

    phases.start("bad input 3: migration fails -> Degraded MigrationFailed");
    // A migration recorded as applied that this binary does not have (as after a downgrade):
    // sqlx refuses to run. The new logic image is the same binary under its second tag (a new
    // image reference means a new migration Job).
    let edge_pool = sqlx::MySqlPool::connect(&format!("mysql://gim:gim@127.0.0.1:3306/{EDGE_DB}"))
        .await
        .expect("edge mysql");
    const FUTURE: i64 = 99_990_101_000_000;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?, 'from a newer gim (e2e)', TRUE, X'00', 0)",
    )
    .bind(FUTURE)
    .execute(&edge_pool)
    .await
    .expect("insert a future migration");
    let second_tag = "gim-local/gim-logic:local";
    assert_ne!(second_tag, logic_image);
    merge_patch(ns, &gc, spec_images(second_tag)).await;
    let msg = edge_degraded(ns, "MigrationFailed").await;
    assert!(
        msg.contains(&FUTURE.to_string()),
        "the sqlx error names the version: {msg}"
    );
    assert_eq!(
        edge_workloads(ns).await,
        (healthy_deps.clone(), healthy_pods.clone())
    );

    phases.start("bad input 3 fixed (database): migrated, logic rolled, Ready by itself");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = ?")
        .bind(FUTURE)
        .execute(&edge_pool)
        .await
        .expect("delete the future migration");
    until("logic runs the second tag", EDGE_WAIT, || async {
        let (deps, _) = edge_workloads(ns).await;
        deps.iter()
            .any(|d| d.0 == format!("{EDGE}-logic") && d.2 == second_tag)
            .then_some(())
    })
    .await;
    // Ready means rolled: the one logic pod left runs the new reference and is ready.
    edge_ready(ns).await;
    let logic_pods = items(
        &get_in(
            ns,
            &[
                "pods",
                "-l",
                &format!("gim.io/cluster={EDGE},app.kubernetes.io/component=logic"),
            ],
        )
        .await,
    );
    let live: Vec<&Value> = logic_pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "one logic pod once rolled");
    assert_eq!(live[0]["spec"]["containers"][0]["image"], second_tag);
    assert!(pod_ready(live[0]), "the new logic pod is ready");
    let (deps, _) = edge_workloads(ns).await;
    let conn_before = healthy_deps.iter().find(|d| d.0 == format!("{EDGE}-conn"));
    assert_eq!(
        deps.iter().find(|d| d.0 == format!("{EDGE}-conn")),
        conn_before,
        "a logic image change leaves conn's template alone"
    );
    edge_pool.close().await;

    // Its collection is the first cluster's phase above; the node is torn down after this test.
    kubectl(&["delete", "namespace", ns, "--wait=false"]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {EDGE_DB}"
    )))
    .execute(admin)
    .await
    .expect("drop edge database");
}
