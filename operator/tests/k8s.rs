//! Integration tests against a real kube-apiserver (v1.20, built by `scripts/k8s-apiserver.sh`).
//!
//! One operator runs in-process for the whole test binary, authenticated as the user
//! `gim-operator`, which is bound only to the chart's ClusterRole and leader Role: every test is
//! therefore also an RBAC-sufficiency test. Each test works in its own namespace.
//!
//! The server has no scheduler or kubelet: pods never run. Tests stand in for the missing
//! controllers by writing Job and Deployment *status* as the admin user.
//!
//! v1.20 lacks policy/v1 and autoscaling/v2: the operator discovers that and writes
//! policy/v1beta1 PDBs and autoscaling/v2beta2 HPAs, which these tests check; the v1/v2 objects
//! are validated offline by `scripts/k8s-lint.sh` (kubernetes-validate).
//!
//! Skipped (with a message) only when the server binary is not built.

use gim_operator::crd::GimCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(60);
/// Redis db reserved for these tests' node-registry entries (never flushed; keys are removed).
const REDIS_DB: u32 = 13;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k8s_cache() -> PathBuf {
    std::env::var_os("GIM_K8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/gim-k8s"))
}

/// Starts (or reuses) the local control plane; None = not built, the test is skipped.
fn run_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        if !k8s_cache().join("bin/kube-apiserver").exists() {
            eprintln!(
                "SKIPPED: kube-apiserver is not built; run `scripts/k8s-apiserver.sh build` \
                 (CI does) to run the Kubernetes integration tests"
            );
            return None;
        }
        let out = Command::new(repo_root().join("scripts/k8s-apiserver.sh"))
            .arg("start")
            .output()
            .expect("run scripts/k8s-apiserver.sh start");
        assert!(
            out.status.success(),
            "k8s-apiserver.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Some(PathBuf::from(dir))
    })
    .clone()
}

async fn client_from(path: PathBuf) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(&path).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

/// Chart RBAC documents, with the template lines dropped (their rules are plain YAML).
fn chart_rbac_doc(kind: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("charts/gim-operator/templates/rbac.yaml"))
        .unwrap();
    let doc = text
        .split("\n---")
        .find(|d| d.contains(&format!("\nkind: {kind}\n")))
        .unwrap_or_else(|| panic!("no {kind} in rbac.yaml"));
    doc.lines()
        .filter(|l| !l.contains("{{") && !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// CRD, chart RBAC for the operator user, and one operator for the whole binary.
async fn setup() -> Option<Client> {
    let dir = run_dir()?;
    let admin = client_from(dir.join("admin.kubeconfig")).await;
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let pp = PatchParams::apply("gim-operator-tests").force();
        let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
        crds.patch("gimclusters.gim.io", &pp, &Patch::Apply(GimCluster::crd()))
            .await
            .expect("install CRD");
        wait_for(|| async {
            let c = crds.get("gimclusters.gim.io").await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;

        let mut role: ClusterRole = serde_saphyr::from_str(&chart_rbac_doc("ClusterRole")).unwrap();
        role.metadata.name = Some("gim-operator-test".into());
        Api::<ClusterRole>::all(admin.clone())
            .patch("gim-operator-test", &pp, &Patch::Apply(&role))
            .await
            .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "gim-operator-test"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "gim-operator-test"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "gim-operator"}]
        }))
        .unwrap();
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch("gim-operator-test", &pp, &Patch::Apply(&binding))
            .await
            .unwrap();
        let ns = "gim-operator-system";
        ensure_namespace(&admin, ns).await;
        let mut lrole: Role = serde_saphyr::from_str(&chart_rbac_doc("Role")).unwrap();
        lrole.metadata.name = Some("gim-operator-leader".into());
        lrole.metadata.namespace = Some(ns.into());
        Api::<Role>::namespaced(admin.clone(), ns)
            .patch("gim-operator-leader", &pp, &Patch::Apply(&lrole))
            .await
            .unwrap();
        let rb: RoleBinding = serde_json::from_value(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "gim-operator-leader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "gim-operator-leader"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "gim-operator"}]
        }))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), ns)
            .patch("gim-operator-leader", &pp, &Patch::Apply(&rb))
            .await
            .unwrap();

        // The operator lives on its own runtime: each test's runtime ends with the test.
        let op_cfg = dir.join("operator.kubeconfig");
        std::thread::spawn(move || {
            // RUST_LOG=gim_operator=debug shows the operator's log when a test fails.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .try_init();
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let client = client_from(op_cfg).await;
                let opts = gim_operator::Options {
                    watch_namespace: None,
                    leader: Some(gim_operator::LeaderOptions {
                        namespace: "gim-operator-system".into(),
                        lease_name: format!("gim-operator-test-{}", std::process::id()),
                        identity: format!("test-{}", std::process::id()),
                        lease: Duration::from_secs(15),
                    }),
                    settings: gim_operator::controller::Settings {
                        resync: Duration::from_secs(2),
                        backoff_base: Duration::from_millis(200),
                        backoff_max: Duration::from_secs(5),
                        migration_poll: Duration::from_millis(500),
                        registry_timeout: Duration::from_secs(2),
                        migration_retry: Duration::from_secs(1),
                        ..Default::default()
                    },
                    health: health(),
                };
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                ADMIN_ADDR.set(listener.local_addr().unwrap()).unwrap();
                tokio::spawn(gim_operator::admin::serve(
                    listener,
                    health(),
                    std::future::pending(),
                ));
                if let Err(e) = gim_operator::run(client, opts, std::future::pending()).await {
                    eprintln!("operator stopped: {e:#}");
                }
            });
        });
    })
    .await;
    Some(admin)
}

/// The in-process operator's health, and where its admin listener is.
fn health() -> std::sync::Arc<gim_operator::admin::Health> {
    static H: OnceLock<std::sync::Arc<gim_operator::admin::Health>> = OnceLock::new();
    H.get_or_init(Default::default).clone()
}
static ADMIN_ADDR: OnceLock<std::net::SocketAddr> = OnceLock::new();

/// One GET on the operator's admin listener: (status code, body).
async fn admin_get(path: &str) -> (u16, String) {
    let addr = wait_for(|| async { ADMIN_ADDR.get().copied() }).await;
    gim_test_support::http_get(addr, path).await
}

/// The value of one sample line (`name{labels} value`) in a metrics page; 0 if absent.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn ensure_namespace(admin: &Client, ns: &str) {
    let api: Api<Namespace> = Api::all(admin.clone());
    let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace {ns}: {e}"),
    }
}

/// A fresh namespace per test run, so reruns against a long-lived server never collide.
async fn test_namespace(admin: &Client, prefix: &str) -> String {
    let ns = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff);
    ensure_namespace(admin, &ns).await;
    ns
}

async fn wait_for<T, F, Fut>(f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    gim_test_support::eventually_within(DEADLINE, "the condition", f).await
}

async fn create_secrets(admin: &Client, ns: &str, redis_url: &str) {
    let api: Api<Secret> = Api::namespaced(admin.clone(), ns);
    for (name, url) in [
        ("gim-mysql", "mysql://gim:gim@127.0.0.1:3306/gim_test"),
        ("gim-redis", redis_url),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name}, "stringData": {"url": url}
        }))
        .unwrap();
        api.create(&PostParams::default(), &s).await.unwrap();
    }
}

fn redis_url() -> String {
    gim_test_support::redis_url(REDIS_DB)
}

fn cluster(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({
        "apiVersion": "gim.io/v1alpha1", "kind": "GimCluster",
        "metadata": {"name": name},
        "spec": {
            "images": {"conn": "gim-conn:1", "logic": "gim-logic:1"},
            "mysql": {"name": "gim-mysql", "key": "url"},
            "redis": {"name": "gim-redis", "key": "url"},
            "conn": {"replicas": 2},
            "logic": {"replicas": 2}
        }
    });
    merge(&mut v, extra);
    v
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn gc_api(admin: &Client, ns: &str) -> Api<GimCluster> {
    Api::namespaced(admin.clone(), ns)
}

async fn create_cluster(admin: &Client, ns: &str, v: serde_json::Value) -> GimCluster {
    let gc: GimCluster = serde_json::from_value(v).unwrap();
    gc_api(admin, ns)
        .create(&PostParams::default(), &gc)
        .await
        .unwrap()
}

/// The cluster's migration Job, once the operator has created it.
async fn migration_job(admin: &Client, ns: &str, cluster: &str) -> Job {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    wait_for(|| async {
        jobs.list(&ListParams::default().labels(&format!("gim.io/cluster={cluster}")))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
}

/// Stands in for the job controller: marks the migration Job complete.
async fn complete_migration(admin: &Client, ns: &str, cluster: &str) -> String {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    let name = migration_job(admin, ns, cluster).await.name_any();
    jobs.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "succeeded": 1,
            "conditions": [{"type": "Complete", "status": "True"}]
        }})),
    )
    .await
    .unwrap();
    name
}

/// Stands in for the deployment controller: all replicas up to date and ready.
async fn mark_ready(admin: &Client, ns: &str, name: &str) {
    let api: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    let d = api.get(name).await.unwrap();
    let n = d.spec.replicas.unwrap_or(1);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": d.metadata.generation,
            "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n
        }})),
    )
    .await
    .unwrap();
}

fn condition(gc: &GimCluster, t: &str) -> Option<(String, String, String)> {
    gc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_condition(
    admin: &Client,
    ns: &str,
    name: &str,
    t: &str,
    status: &str,
    reason: &str,
) -> GimCluster {
    let api = gc_api(admin, ns);
    wait_for(|| async {
        let gc = api.get(name).await.ok()?;
        let (s, r, _) = condition(&gc, t)?;
        (s == status && r == reason).then_some(gc)
    })
    .await
}

async fn deployment(admin: &Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(admin.clone(), ns);
    wait_for(|| async { api.get_opt(name).await.ok()? }).await
}

async fn event_reasons(admin: &Client, ns: &str) -> Vec<String> {
    let ar = ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), ns, &ar);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|e| e.data.get("reason")?.as_str().map(String::from))
        .collect()
}

/// Events are published right after the action they report: wait, do not race.
async fn wait_event(admin: &Client, ns: &str, reason: &str) {
    wait_for(|| async {
        event_reasons(admin, ns)
            .await
            .iter()
            .any(|r| r == reason)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn creates_children_after_migration_and_reports_status() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "create").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(&admin, &ns, cluster("chat", json!({}))).await;

    // The migration gate: the Job appears, Deployments do not until it succeeds.
    let gc = wait_condition(&admin, &ns, "chat", "Progressing", "True", "Migrating").await;
    assert_eq!(condition(&gc, "Ready").unwrap().0, "False");
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    assert!(deps.get_opt("chat-conn").await.unwrap().is_none());
    let cm: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let config = cm.get("chat-config").await.unwrap();
    let conn_toml = &config.data.as_ref().unwrap()["conn.toml"];
    assert!(
        conn_toml.contains("logic_url = \"http://chat-logic."),
        "{conn_toml}"
    );
    assert!(
        !conn_toml.contains("127.0.0.1:6379"),
        "no secrets in the ConfigMap"
    );

    // The internal API secret: made once per cluster, random, owned by the GimCluster.
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns);
    let internal = wait_for(|| async { secrets.get_opt("chat-internal").await.ok()? }).await;
    let value = internal.data.as_ref().unwrap()["secret"].0.clone();
    assert_eq!(value.len(), 64, "32 random bytes in hex");
    assert_eq!(internal.owner_references()[0].kind, "GimCluster");
    assert!(conn_toml.contains("secret_file = \"/etc/gim-internal/secret\""));

    let job = complete_migration(&admin, &ns, "chat").await;
    assert!(job.starts_with("chat-migrate-"));
    let conn = deployment(&admin, &ns, "chat-conn").await;
    let logic = deployment(&admin, &ns, "chat-logic").await;
    let spec = &conn.spec;
    assert_eq!(spec.replicas, Some(2));
    let ru = spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(
        ru.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
    );
    let owner = &conn.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("GimCluster", "chat")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(logic.spec.replicas, Some(2));
    // Written by our field manager through server-side apply.
    assert!(
        conn.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("gim-operator")
                && m.operation.as_deref() == Some("Apply"))
    );

    let svcs: Api<Service> = Api::namespaced(admin.clone(), &ns);
    for s in ["chat-conn", "chat-logic", "chat-logic-ext"] {
        wait_for(|| async { svcs.get_opt(s).await.ok()? }).await;
    }
    // v1.20 has no policy/v1: the operator fell back to v1beta1.
    let pdb_ar = gim_operator::apis::pdb_v1beta1();
    let pdbs: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &pdb_ar);
    wait_for(|| async { pdbs.get_opt("chat-conn").await.ok()? }).await;
    wait_for(|| async { pdbs.get_opt("chat-logic").await.ok()? }).await;
    // The server accepts the rendered policies as they are (kubernetes-validate checks them
    // offline against newer schemas too).
    let nps: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &ns);
    for p in ["chat-conn", "chat-logic"] {
        let np = wait_for(|| async { nps.get_opt(p).await.ok()? }).await;
        assert_eq!(np.owner_references()[0].kind, "GimCluster");
    }

    let gc = wait_condition(&admin, &ns, "chat", "Progressing", "True", "RollingOut").await;
    let st = gc.status.as_ref().unwrap();
    assert_eq!(st.observed_generation, gc.metadata.generation);
    assert_eq!(st.conn.replicas, 2);
    assert_eq!(st.conn.ready_replicas, 0);

    mark_ready(&admin, &ns, "chat-conn").await;
    mark_ready(&admin, &ns, "chat-logic").await;
    let gc = wait_condition(&admin, &ns, "chat", "Ready", "True", "AllReplicasReady").await;
    assert_eq!(
        gc.status.as_ref().unwrap().conn.summary.as_deref(),
        Some("2/2")
    );
    assert_eq!(condition(&gc, "Degraded").unwrap().0, "False");
    wait_event(&admin, &ns, "MigrationStarted").await;
    // Every reconcile since kept the secret the pods hold.
    let kept = secrets.get("chat-internal").await.unwrap();
    assert_eq!(kept.data.as_ref().unwrap()["secret"].0, value);

    // Turning the policies off prunes them (the chart's role may delete them).
    gc_api(&admin, &ns)
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"networkPolicy": {"enabled": false}}})),
        )
        .await
        .unwrap();
    wait_for(|| async {
        let left = nps.list(&ListParams::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn config_change_rolls_pods_and_kubectl_scale_scales_conn() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "update").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(&admin, &ns, cluster("chat", json!({}))).await;
    complete_migration(&admin, &ns, "chat").await;
    let hash = |d: &Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[gim_operator::render::CONFIG_HASH]
            .clone()
    };
    let before = hash(&deployment(&admin, &ns, "chat-conn").await);

    gc_api(&admin, &ns)
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"tcpIdleTimeoutSeconds": 300}}})),
        )
        .await
        .unwrap();
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    wait_for(|| async {
        let d = deps.get("chat-conn").await.ok()?;
        (hash(&d) != before).then_some(())
    })
    .await;
    let cm: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let config = cm.get("chat-config").await.unwrap();
    assert!(config.data.unwrap()["conn.toml"].contains("tcp_idle_timeout_secs = 300"));

    // kubectl scale goes through the CRD's scale subresource to spec.conn.replicas.
    let kubeconfig = run_dir().unwrap().join("admin.kubeconfig");
    let out = Command::new("kubectl")
        .args(["--kubeconfig"])
        .arg(&kubeconfig)
        .args(["-n", &ns, "scale", "gimcluster/chat", "--replicas=5"])
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(|| async {
        let d = deps.get("chat-conn").await.ok()?;
        (d.spec.replicas == Some(5)).then_some(())
    })
    .await;
    let gc = wait_for(|| async {
        let gc = gc_api(&admin, &ns).get("chat").await.ok()?;
        (gc.status.as_ref()?.conn.replicas == 5).then_some(gc)
    })
    .await;
    assert_eq!(gc.spec.conn.replicas, 5);
    // The scale subresource reports the selector too (what an HPA on the GimCluster needs).
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["-n", &ns, "get", "--raw"])
        .arg(format!(
            "/apis/gim.io/v1alpha1/namespaces/{ns}/gimclusters/chat/scale"
        ))
        .output()
        .unwrap();
    let scale: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(scale["spec"]["replicas"], 5);
    assert!(
        scale["status"]["selector"]
            .as_str()
            .unwrap()
            .contains("app.kubernetes.io/component=conn")
    );
}

#[tokio::test]
async fn deleting_the_cluster_garbage_collects_children() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "gc").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(&admin, &ns, cluster("chat", json!({}))).await;
    complete_migration(&admin, &ns, "chat").await;
    deployment(&admin, &ns, "chat-conn").await;
    gc_api(&admin, &ns)
        .delete("chat", &DeleteParams::foreground())
        .await
        .unwrap();
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    wait_for(|| async {
        let lp = ListParams::default().labels("gim.io/cluster=chat");
        let n = deps.list(&lp).await.ok()?.items.len()
            + cms.list(&lp).await.ok()?.items.len()
            + svcs.list(&lp).await.ok()?.items.len()
            + jobs.list(&lp).await.ok()?.items.len();
        (n == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_specs_are_rejected_or_degraded_without_touching_workloads() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "bad").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    let api = gc_api(&admin, &ns);

    // Rejected by the schema at admission.
    for bad in [
        json!({"spec": {"conn": {"replicas": -1}}}),
        json!({"spec": {"conn": {"ports": {"tcp": 70000}}}}),
        json!({"spec": {"conn": {"service": {"type": "Internet"}}}}),
    ] {
        let v = cluster("rejected", bad.clone());
        let gc: Result<GimCluster, _> = serde_json::from_value(v.clone());
        let err = match gc {
            Ok(gc) => api.create(&PostParams::default(), &gc).await.unwrap_err(),
            Err(_) => {
                // Our own types refuse it too; send it raw.
                let ar = gim_operator::controller::gimcluster_resource();
                let dapi: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ar);
                let obj: DynamicObject = serde_json::from_value(v).unwrap();
                dapi.create(&PostParams::default(), &obj).await.unwrap_err()
            }
        };
        match err {
            kube::Error::Api(e) => assert_eq!(e.code, 422, "{bad}: {e:?}"),
            e => panic!("{bad}: {e}"),
        }
    }

    // min above max: accepted by the schema (no CEL on v1.20), reported as Degraded.
    create_cluster(
        &admin,
        &ns,
        cluster(
            "minmax",
            json!({"spec": {"conn": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetConnectionsPerPod": 100}}}}),
        ),
    )
    .await;
    // A missing Secret.
    create_cluster(
        &admin,
        &ns,
        cluster(
            "nosecret",
            json!({"spec": {"mysql": {"name": "absent", "key": "url"}}}),
        ),
    )
    .await;
    // A good one next to them still reconciles.
    create_cluster(&admin, &ns, cluster("good", json!({}))).await;

    let gc = wait_condition(&admin, &ns, "minmax", "Degraded", "True", "InvalidSpec").await;
    let msg = condition(&gc, "Degraded").unwrap().2;
    assert!(
        msg.contains("minReplicas (5) is above maxReplicas (2)"),
        "{msg}"
    );
    assert_eq!(condition(&gc, "Ready").unwrap().0, "False");
    let gc = wait_condition(&admin, &ns, "nosecret", "Degraded", "True", "SecretMissing").await;
    assert!(condition(&gc, "Degraded").unwrap().2.contains("absent"));
    complete_migration(&admin, &ns, "good").await;
    deployment(&admin, &ns, "good-conn").await;
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    assert!(
        jobs.list(&ListParams::default().labels("gim.io/cluster=minmax"))
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing is applied for a degraded cluster"
    );
    wait_event(&admin, &ns, "InvalidSpec").await;

    // Breaking a running cluster leaves its workloads alone, and fixing it recovers.
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let before = deps.get("good-conn").await.unwrap();
    api.patch(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"images": {"conn": "gim-conn:2"},
            "logic": {"ports": {"client": 50000}}}})),
    )
    .await
    .unwrap();
    let gc = wait_condition(&admin, &ns, "good", "Degraded", "True", "InvalidSpec").await;
    assert!(
        condition(&gc, "Degraded")
            .unwrap()
            .2
            .contains("both use port 50000")
    );
    let after = deps.get("good-conn").await.unwrap();
    assert_eq!(before.metadata.generation, after.metadata.generation);
    api.patch(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"logic": {"ports": {"client": 50001}}}})),
    )
    .await
    .unwrap();
    wait_condition(&admin, &ns, "good", "Degraded", "False", "Reconciled").await;
    let d = deps.get("good-conn").await.unwrap();
    let image = d.spec.template.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("gim-conn:2"));
}

#[tokio::test]
async fn logic_hpa_is_created_and_pruned_and_replicas_left_to_it() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "hpa").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(
        &admin,
        &ns,
        cluster(
            "chat",
            json!({"spec": {"logic": {"autoscaling": {"minReplicas": 2, "maxReplicas": 6}}}}),
        ),
    )
    .await;
    complete_migration(&admin, &ns, "chat").await;
    let hpa_ar = gim_operator::apis::hpa_v2beta2();
    let hpas: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &hpa_ar);
    let hpa = wait_for(|| async { hpas.get_opt("chat-logic").await.ok()? }).await;
    assert_eq!(hpa.data["spec"]["maxReplicas"], 6);
    assert_eq!(hpa.data["spec"]["metrics"][0]["resource"]["name"], "cpu");

    // The HPA (here: a stand-in writing the scale subresource) owns logic replicas; the operator
    // must not reset them on its next reconciles.
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    deployment(&admin, &ns, "chat-logic").await;
    deps.patch_scale(
        "chat-logic",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    // Force a reconcile with a spec change and wait until it has been observed.
    gc_api(&admin, &ns)
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"config": {"maxMentions": 50}}})),
        )
        .await
        .unwrap();
    let generation = gc_api(&admin, &ns)
        .get("chat")
        .await
        .unwrap()
        .metadata
        .generation;
    wait_for(|| async {
        let gc = gc_api(&admin, &ns).get("chat").await.ok()?;
        let c = gc
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Degraded")?;
        (c.observed_generation == generation).then_some(())
    })
    .await;
    assert_eq!(deps.get("chat-logic").await.unwrap().spec.replicas, Some(5));

    // Turning autoscaling off deletes the HPA.
    gc_api(&admin, &ns)
        .patch(
            "chat",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"logic": {"autoscaling": null}}})),
        )
        .await
        .unwrap();
    wait_for(|| async {
        hpas.get_opt("chat-logic")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_event(&admin, &ns, "Pruned").await;
}

#[tokio::test]
async fn conn_tier_scales_with_registry_connections() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "autoscale").await;
    // This test's nodes live in their own Redis db; the set and keys are removed afterwards.
    let url = redis_url();
    let con = gim_common::rds::Redis::connect_url(&url, Duration::from_secs(10))
        .await
        .unwrap();
    let node_ids: Vec<String> = (0..3).map(|i| format!("{ns}-node-{i}")).collect();
    register_nodes(&con, &node_ids, 120).await;
    create_secrets(&admin, &ns, &url).await;
    create_cluster(
        &admin,
        &ns,
        cluster(
            "chat",
            json!({"spec": {"conn": {"replicas": 1, "autoscaling": {
                "minReplicas": 1, "maxReplicas": 10, "targetConnectionsPerPod": 100, "cooldownSeconds": 0}}}}),
        ),
    )
    .await;
    complete_migration(&admin, &ns, "chat").await;
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    // Other tests may register nodes in the same db at the same time: at least our 360.
    // Sized for the load at first rollout: 360 connections / 100 per pod.
    let replicas = wait_for(|| async {
        let r = deps.get("chat-conn").await.ok()?.spec.replicas?;
        (r >= 4).then_some(r)
    })
    .await;
    assert!(replicas <= 10);
    wait_for(|| async {
        let gc = gc_api(&admin, &ns).get("chat").await.ok()?;
        let st = gc.status?;
        (st.connections >= 360 && st.conn.replicas == replicas).then_some(())
    })
    .await;

    // Load grows: 750 connections -> 8 pods.
    register_nodes(&con, &node_ids, 250).await;
    wait_for(|| async {
        let r = deps.get("chat-conn").await.ok()?.spec.replicas?;
        (r >= 8).then_some(r)
    })
    .await;
    wait_for(|| async {
        let gc = gc_api(&admin, &ns).get("chat").await.ok()?;
        gc.status?.last_conn_scale_time.map(|_| ())
    })
    .await;
    wait_event(&admin, &ns, "ScaledConn").await;

    for id in &node_ids {
        gim_common::registry::deregister(&con, id).await.unwrap();
    }
}

/// Registers nodes the way conn does (lease key + set member), each holding `connections`.
async fn register_nodes(con: &gim_common::rds::Redis, node_ids: &[String], connections: u64) {
    for (i, id) in node_ids.iter().enumerate() {
        let info = gim_common::keys::NodeInfo {
            node_id: id.clone(),
            grpc_addr: format!("127.0.0.1:{}", 50100 + i),
            connections,
            accepting: true,
            updated_ms: gim_common::now_ms(),
        };
        gim_common::registry::register(con, &info, Duration::from_secs(60))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn only_one_candidate_holds_the_lease() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "lease").await;
    let lease = Duration::from_secs(3);
    let a = gim_operator::leader::LeaderElector::new(admin.clone(), &ns, "l", "a", lease);
    let b = gim_operator::leader::LeaderElector::new(admin.clone(), &ns, "l", "b", lease);
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(!b.try_acquire_or_renew().await.unwrap());
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    // Once the holder stops renewing, the other takes over after the lease runs out.
    wait_for(|| async { b.try_acquire_or_renew().await.ok()?.then_some(()) }).await;
    assert!(!a.try_acquire_or_renew().await.unwrap());
    // A clean release hands over at once.
    b.release().await;
    assert!(a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn operator_role_is_least_privilege() {
    let Some(_admin) = setup().await else { return };
    let op = client_from(run_dir().unwrap().join("operator.kubeconfig")).await;
    // It may read a named Secret but never list them, nor touch RBAC.
    let secrets: Api<Secret> = Api::all(op.clone());
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("listing secrets must be forbidden: {other:?}"),
    }
    let roles: Api<ClusterRole> = Api::all(op);
    match roles.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403),
        other => panic!("listing cluster roles must be forbidden: {other:?}"),
    }
}

#[tokio::test]
async fn admin_endpoints_report_readiness_and_reconciles() {
    let Some(admin) = setup().await else { return };
    assert_eq!(admin_get("/healthz").await.0, 200);
    // Ready once this replica leads and its GimCluster watch has listed.
    let body = wait_for(|| async {
        // A standby is ready too: wait for this replica to have taken the lease.
        let (code, body) = admin_get("/readyz").await;
        (code == 200 && body.starts_with("leader:")).then_some(body)
    })
    .await;
    assert!(body.starts_with("leader: watching"), "{body}");

    let ok = r#"gim_operator_reconciles_total{result="ok"}"#;
    let before = sample(&admin_get("/metrics").await.1, ok);
    let ns = test_namespace(&admin, "metrics").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(&admin, &ns, cluster("chat", json!({}))).await;
    create_cluster(
        &admin,
        &ns,
        cluster(
            "broken",
            json!({"spec": {"logic": {"ports": {"client": 50000}}}}),
        ),
    )
    .await;
    wait_condition(&admin, &ns, "broken", "Degraded", "True", "InvalidSpec").await;
    wait_condition(&admin, &ns, "chat", "Progressing", "True", "Migrating").await;
    // The store the gauges read from catches up with the status writes above.
    let page = wait_for(|| async {
        let page = admin_get("/metrics").await.1;
        (sample(&page, ok) >= before + 2.0
            && sample(&page, "gim_operator_degraded_clusters") >= 1.0)
            .then_some(page)
    })
    .await;
    assert!(
        sample(&page, "gim_operator_managed_clusters") >= 2.0,
        "{page}"
    );
    assert_eq!(sample(&page, "gim_operator_leader"), 1.0, "{page}");
    assert!(
        sample(&page, "gim_operator_reconcile_duration_seconds_count") >= before + 2.0,
        "{page}"
    );
}

/// Stands in for the kubelet: a pod of `cluster` with the given labels and container status.
async fn fake_pod(
    admin: &Client,
    ns: &str,
    name: &str,
    meta: serde_json::Value,
    status: serde_json::Value,
) {
    let api: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let mut m = json!({"name": name});
    merge(&mut m, meta);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": m,
        "spec": {"containers": [{"name": "c", "image": "gim:x"}]}
    }))
    .unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn pod_and_job_status_degrade_the_cluster_and_recovery_clears_it() {
    let Some(admin) = setup().await else { return };
    let ns = test_namespace(&admin, "podstatus").await;
    create_secrets(&admin, &ns, &redis_url()).await;
    create_cluster(&admin, &ns, cluster("chat", json!({}))).await;

    // A migration attempt that cannot reach MySQL: Degraded quotes its last log line, and no
    // Deployment is created while it fails.
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let job = migration_job(&admin, &ns, "chat").await;
    let job_name = job.name_any();
    fake_pod(
        &admin,
        &ns,
        "chat-migrate-1",
        json!({"labels": {"gim.io/cluster": "chat", "job-name": job_name},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                "uid": job.metadata.uid.clone().unwrap()}]}),
        json!({"phase": "Failed", "containerStatuses": [{
            "name": "c", "image": "gim:x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "reason": "Error",
                "message": "error: pool timed out while waiting for an open connection\n"}}}]}),
    )
    .await;
    let gc = wait_condition(&admin, &ns, "chat", "Degraded", "True", "MigrationFailed").await;
    let msg = condition(&gc, "Degraded").unwrap().2;
    assert!(msg.contains("pool timed out"), "{msg}");
    assert!(msg.contains("the Job retries"), "{msg}");

    // The Job gives up: after the retry interval the operator runs it again by itself.
    let uid = job.metadata.uid.clone();
    jobs.patch_status(
        &job_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"failed": 5, "conditions": [{
            "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}]}})),
    )
    .await
    .unwrap();
    // (The Failed state lasts only the 1 s retry interval here: wait for the retry itself.)
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    assert!(
        deps.get_opt("chat-conn").await.unwrap().is_none(),
        "nothing rolls"
    );
    wait_event(&admin, &ns, "MigrationRetried").await;
    wait_for(|| async {
        let j = jobs.get_opt(&job_name).await.ok()??;
        (j.metadata.uid != uid).then_some(())
    })
    .await;
    // The failed attempt's pod goes with the old Job (garbage collector); the new Job is judged
    // by its own pods only.
    complete_migration(&admin, &ns, "chat").await;
    wait_condition(&admin, &ns, "chat", "Degraded", "False", "Reconciled").await;
    deployment(&admin, &ns, "chat-conn").await;

    // A conn pod whose image cannot be pulled.
    let conn_labels =
        json!({"labels": {"gim.io/cluster": "chat", "app.kubernetes.io/component": "conn"}});
    fake_pod(
        &admin,
        &ns,
        "chat-conn-bad",
        conn_labels,
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "c", "image": "gim:x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"gim-conn:nope\""}}}]}),
    )
    .await;
    let gc = wait_condition(&admin, &ns, "chat", "Degraded", "True", "ImagePullFailed").await;
    let msg = condition(&gc, "Degraded").unwrap().2;
    assert!(
        msg.contains("chat-conn-bad") && msg.contains("gim-conn:nope"),
        "{msg}"
    );
    wait_event(&admin, &ns, "ImagePullFailed").await;
    // Fixed (here: the pod goes away as its ReplicaSet is replaced): the condition clears.
    Api::<Pod>::namespaced(admin.clone(), &ns)
        .delete("chat-conn-bad", &DeleteParams::default())
        .await
        .unwrap();
    wait_condition(&admin, &ns, "chat", "Degraded", "False", "Reconciled").await;
}
