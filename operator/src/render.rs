//! Pure functions from a `GimCluster` to the objects it asks for. No I/O here, so every object is
//! covered by snapshot tests and the reconciler only decides *when* to apply what.

use crate::crd::{GimCluster, GimClusterSpec, LogFormat};
use crate::validate::Invalid;
use gim_common::config::{self, ConnConfig, LogicConfig, Validate};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, Lifecycle, LifecycleHandler, LocalObjectReference, ObjectFieldSelector, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Label every child carries, so the reconciler can find (and prune) what it created.
pub const CLUSTER_LABEL: &str = "gim.io/cluster";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "gim-operator";
/// Pod template annotation: changes with the rendered config, so config edits roll the pods.
pub const CONFIG_HASH: &str = "gim.io/config-hash";
/// Deployment annotation: hash of the pod template it was rendered with, so the controller can
/// tell whether an apply would roll the pods without diffing server-defaulted fields.
pub const TEMPLATE_HASH: &str = "gim.io/template-hash";
/// Job label naming the logic image the migration ran for.
pub const MIGRATE_FOR: &str = "gim.io/migrate-image-hash";
const CONFIG_DIR: &str = "/etc/gim";
/// Extra seconds after the drain window before the kubelet kills a conn pod: the preStop sleep
/// plus the process' own shutdown must fit in the grace period.
const GRACE_MARGIN_SECS: i64 = 15;
/// A container that fails without writing /dev/termination-log gets its log tail as the
/// termination message: the error our binaries print last, which Degraded then quotes.
const LOGS_ON_ERROR: &str = "FallbackToLogsOnError";
/// preStop sleep (conn and logic): gives endpoints controllers and load balancers time to stop
/// sending new connections before the process starts shutting down on SIGTERM.
const PRESTOP_SLEEP_SECS: i64 = 5;

/// Everything one `GimCluster` asks for, in apply order.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub config_hash: String,
    pub migrate_job: Job,
    pub conn: Deployment,
    pub logic: Deployment,
    pub services: Vec<Service>,
    pub pdbs: Vec<PodDisruptionBudget>,
    /// Only when logic autoscaling is on.
    pub logic_hpa: Option<HorizontalPodAutoscaler>,
    /// Ingress policies for conn and logic pods; empty when `spec.networkPolicy.enabled` is false.
    pub network_policies: Vec<NetworkPolicy>,
}

/// The part of the cluster the renderer needs; split out so tests need no API types.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub spec: &'a GimClusterSpec,
    /// Conn pods to run; decided by the controller (spec, or connection autoscaling).
    pub conn_replicas: i32,
}

impl<'a> Target<'a> {
    pub fn from_cluster(gc: &'a GimCluster, conn_replicas: i32) -> Self {
        Target {
            name: gc.metadata.name.as_deref().unwrap_or_default(),
            namespace: gc.metadata.namespace.as_deref().unwrap_or("default"),
            uid: gc.metadata.uid.as_deref().unwrap_or_default(),
            spec: &gc.spec,
            conn_replicas,
        }
    }
}

pub fn conn_name(cluster: &str) -> String {
    format!("{cluster}-conn")
}
pub fn logic_name(cluster: &str) -> String {
    format!("{cluster}-logic")
}
pub fn logic_ext_name(cluster: &str) -> String {
    format!("{cluster}-logic-ext")
}
pub fn config_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// The Secret holding the cluster's internal-API secret (see `gim_common::internal`). The
/// controller creates it once with a random value and never rewrites it.
pub fn internal_secret_name(cluster: &str) -> String {
    format!("{cluster}-internal")
}
/// Key of the internal secret in its Secret, and the file name it is mounted as.
pub const INTERNAL_SECRET_KEY: &str = "secret";
const INTERNAL_SECRET_DIR: &str = "/etc/gim-internal";

/// Labels selecting one tier's pods. Kept minimal and stable: a Deployment selector is immutable.
pub fn selector_labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "gim".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

/// The selector in string form, as the scale subresource wants it.
pub fn selector_string(cluster: &str, component: &str) -> String {
    selector_labels(cluster, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster, component);
    l.insert(MANAGED_BY.into(), MANAGER.into());
    l.insert(CLUSTER_LABEL.into(), cluster.into());
    l
}

fn meta(t: &Target, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(t.namespace.to_string()),
        labels: Some(labels(t.name, component)),
        owner_references: Some(vec![owner_ref(t)]),
        ..Default::default()
    }
}

/// Children are owned (and garbage-collected) through this reference.
pub fn owner_ref(t: &Target) -> OwnerReference {
    OwnerReference {
        api_version: "gim.io/v1alpha1".into(),
        kind: "GimCluster".into(),
        name: t.name.to_string(),
        uid: t.uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn short_hash(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Name of the migration Job for the current logic image: a new image means a new Job.
pub fn migrate_job_name(cluster: &str, logic_image: &str) -> String {
    format!(
        "{cluster}-migrate-{}",
        &short_hash(logic_image.as_bytes())[..10]
    )
}

fn port_addr(port: i32) -> std::net::SocketAddr {
    ([0, 0, 0, 0], port as u16).into()
}

fn log_config(spec: &GimClusterSpec) -> config::LogConfig {
    let mut log = config::LogConfig::default();
    if let Some(f) = &spec.config.log_filter {
        log.filter = f.clone();
    }
    log.format = match spec.config.log_format {
        LogFormat::Human => config::LogFormat::Human,
        LogFormat::Json => config::LogFormat::Json,
    };
    log
}

/// Placeholders: the real URLs come from Secrets through `GIM_REDIS__URL` / `GIM_MYSQL__URL`, which
/// override the file, so credentials never land in a ConfigMap.
const REDIS_PLACEHOLDER: &str = "redis://set-from-secret.invalid/";
const MYSQL_PLACEHOLDER: &str = "mysql://set-from-secret.invalid/gim";

/// conn's config file. Errors name the offending key (from gim-common's validation).
pub fn conn_config(t: &Target) -> Result<ConnConfig, Invalid> {
    let s = t.spec;
    let o = &s.config;
    let mut c = ConnConfig {
        log: log_config(s),
        ..Default::default()
    };
    c.redis.url = REDIS_PLACEHOLDER.into();
    c.internal.secret_file = internal_secret_path();
    let cs = &mut c.conn;
    cs.tcp_listen = port_addr(s.conn.ports.tcp);
    cs.ws_listen = port_addr(s.conn.ports.ws);
    cs.grpc_listen = port_addr(s.conn.ports.grpc);
    cs.admin_listen = port_addr(s.conn.ports.admin);
    cs.logic_url = format!(
        "http://{}.{}.svc:{}",
        logic_name(t.name),
        t.namespace,
        s.logic.ports.int
    );
    cs.drain_window_secs = s.conn.drain_window_seconds as u64;
    if let Some(v) = o.tcp_idle_timeout_seconds {
        cs.tcp_idle_timeout_secs = v as u64;
    }
    if let Some(v) = o.ws_idle_timeout_seconds {
        cs.ws_idle_timeout_secs = v as u64;
    }
    if let Some(v) = o.sign_in_timeout_ms {
        cs.sign_in_timeout_ms = v as u64;
    }
    if let Some(v) = o.max_connections_per_pod {
        cs.max_connections = v as usize;
    }
    if let Some(v) = o.max_frame_len {
        cs.max_frame_len = v as usize;
    }
    if let Some(v) = o.large_group_window_ms {
        // A negative value would wrap to a huge u64: the config check below then names the key.
        cs.large_group_window_ms = u64::try_from(v).unwrap_or(u64::MAX);
    }
    c.validate().map_err(|e| Invalid::config(e.key, e.reason))?;
    Ok(c)
}

/// logic's config file.
pub fn logic_config(t: &Target) -> Result<LogicConfig, Invalid> {
    let s = t.spec;
    let o = &s.config;
    let mut c = LogicConfig {
        log: log_config(s),
        ..Default::default()
    };
    c.redis.url = REDIS_PLACEHOLDER.into();
    c.mysql.url = MYSQL_PLACEHOLDER.into();
    c.internal.secret_file = internal_secret_path();
    if let Some(v) = o.mysql_max_connections {
        c.mysql.max_connections = v as u32;
    }
    let l = &mut c.logic;
    l.int_listen = port_addr(s.logic.ports.int);
    l.client_listen = port_addr(s.logic.ports.client);
    l.server_listen = port_addr(s.logic.ports.server);
    l.admin_listen = port_addr(s.logic.ports.admin);
    if let Some(v) = o.max_body_bytes {
        l.max_body_bytes = v as usize;
    }
    if let Some(v) = o.max_mentions {
        l.max_mentions = v as usize;
    }
    if let Some(v) = o.sync_page_size {
        l.sync_page_size = v as u32;
    }
    c.validate().map_err(|e| Invalid::config(e.key, e.reason))?;
    Ok(c)
}

fn internal_secret_path() -> String {
    format!("{INTERNAL_SECRET_DIR}/{INTERNAL_SECRET_KEY}")
}

/// The cluster's internal secret with `value` (random, made by the controller), owned by the
/// GimCluster so it is deleted with it.
pub fn internal_secret(t: &Target, value: String) -> Secret {
    Secret {
        metadata: meta(t, internal_secret_name(t.name), "internal"),
        string_data: Some(BTreeMap::from([(INTERNAL_SECRET_KEY.to_string(), value)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

fn to_toml<T: serde::Serialize>(v: &T) -> String {
    toml::to_string(v).expect("config types serialize to TOML")
}

/// Renders every object. Fails only on config the binaries would refuse to start with.
pub fn render(t: &Target) -> Result<Rendered, Invalid> {
    let conn_toml = to_toml(&conn_config(t)?);
    let logic_toml = to_toml(&logic_config(t)?);
    let config_hash = short_hash(format!("{conn_toml}\0{logic_toml}").as_bytes());
    let config_map = ConfigMap {
        metadata: meta(t, config_name(t.name), "config"),
        data: Some(BTreeMap::from([
            ("conn.toml".to_string(), conn_toml),
            ("logic.toml".to_string(), logic_toml),
        ])),
        ..Default::default()
    };
    let logic_hpa = t.spec.logic.autoscaling.as_ref().map(|a| logic_hpa(t, a));
    Ok(Rendered {
        migrate_job: migrate_job(t),
        conn: with_template_hash(conn_deployment(t, &config_hash)),
        logic: with_template_hash(logic_deployment(t, &config_hash)),
        services: services(t),
        pdbs: pdbs(t),
        logic_hpa,
        network_policies: network_policies(t),
        config_map,
        config_hash,
    })
}

fn with_template_hash(mut d: Deployment) -> Deployment {
    let tpl = serde_json::to_vec(&d.spec.template).expect("pod templates serialize to JSON");
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), short_hash(&tpl));
    d
}

fn secret_env(name: &str, r: &crate::crd::SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config_volume(t: &Target) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_name(t.name),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

/// The internal secret as a file in conn and logic pods (`internal.secret_file`).
fn internal_secret_volume(t: &Target) -> (Volume, VolumeMount) {
    (
        Volume {
            name: "internal-secret".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(internal_secret_name(t.name)),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "internal-secret".into(),
            mount_path: INTERNAL_SECRET_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    )
}

fn tcp_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn http_probe(port: &str, path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// Pod spec pieces shared by both tiers and the migration Job.
fn pod_spec(t: &Target, containers: Vec<Container>, volumes: Vec<Volume>) -> PodSpec {
    let s = &t.spec.scheduling;
    let pull = &t.spec.images.pull_secrets;
    PodSpec {
        containers,
        volumes: Some(volumes),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        affinity: s.affinity.clone(),
        topology_spread_constraints: (!s.topology_spread_constraints.is_empty())
            .then(|| s.topology_spread_constraints.clone()),
        priority_class_name: s.priority_class_name.clone(),
        service_account_name: s.service_account_name.clone(),
        image_pull_secrets: (!pull.is_empty()).then(|| {
            pull.iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        ..Default::default()
    }
}

fn template(t: &Target, component: &str, config_hash: &str, spec: PodSpec) -> PodTemplateSpec {
    let s = &t.spec.scheduling;
    let mut labels = s.pod_labels.clone();
    // Ours last: a pass-through label must not break the selector.
    labels.extend(labels_for_pod(t.name, component));
    let mut annotations = s.pod_annotations.clone();
    annotations.insert(CONFIG_HASH.into(), config_hash.into());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(spec),
    }
}

fn labels_for_pod(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster, component);
    l.insert(CLUSTER_LABEL.into(), cluster.into());
    l
}

fn pull_policy(t: &Target) -> Option<String> {
    Some(t.spec.images.pull_policy.as_str().to_string())
}

fn conn_deployment(t: &Target, config_hash: &str) -> Deployment {
    let p = &t.spec.conn.ports;
    let drain = t.spec.conn.drain_window_seconds;
    let (vol, mount) = config_volume(t);
    let (secret_vol, secret_mount) = internal_secret_volume(t);
    let container = Container {
        name: "conn".into(),
        image: Some(t.spec.images.conn.clone()),
        image_pull_policy: pull_policy(t),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/conn.toml")]),
        env: Some(vec![
            secret_env("GIM_REDIS__URL", &t.spec.redis),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
            EnvVar {
                name: "GIM_CONN__NODE_NAME".into(),
                value: Some("$(POD_NAME)".into()),
                ..Default::default()
            },
            // Logic dials each conn pod directly (the node registry holds this address).
            EnvVar {
                name: "GIM_CONN__ADVERTISE_ADDR".into(),
                value: Some(format!("$(POD_IP):{}", p.grpc)),
                ..Default::default()
            },
        ]),
        ports: Some(vec![
            tcp_port("tcp", p.tcp),
            tcp_port("ws", p.ws),
            tcp_port("grpc", p.grpc),
            tcp_port("admin", p.admin),
        ]),
        readiness_probe: Some(http_probe("admin", "/readyz", 5)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("admin", "/healthz", 10)
        }),
        // No new client lands on a draining node.
        lifecycle: Some(prestop_sleep()),
        resources: t.spec.conn.resources.clone(),
        volume_mounts: Some(vec![mount, secret_mount]),
        termination_message_policy: Some(LOGS_ON_ERROR.into()),
        ..Default::default()
    };
    let mut pod = pod_spec(t, vec![container], vec![vol, secret_vol]);
    pod.termination_grace_period_seconds = Some(PRESTOP_SLEEP_SECS + drain + GRACE_MARGIN_SECS);
    Deployment {
        metadata: meta(t, conn_name(t.name), "conn"),
        spec: DeploymentSpec {
            replicas: Some(t.conn_replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(t.name, "conn")),
                ..Default::default()
            },
            // Surge only: a rollout never drops below the current capacity, and each old pod
            // drains its clients onto pods that are already ready.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: template(t, "conn", config_hash, pod),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The preStop sleep: Service endpoints drop the pod before SIGTERM reaches the process.
fn prestop_sleep() -> Lifecycle {
    Lifecycle {
        pre_stop: Some(LifecycleHandler {
            // exec rather than the newer `sleep` action, which servers before 1.29 drop.
            exec: Some(ExecAction {
                command: Some(vec!["sleep".into(), PRESTOP_SLEEP_SECS.to_string()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Secrets reach logic as environment variables, never through the ConfigMap.
fn logic_env(t: &Target) -> Vec<EnvVar> {
    let mut env = vec![
        secret_env("GIM_MYSQL__URL", &t.spec.mysql),
        secret_env("GIM_REDIS__URL", &t.spec.redis),
    ];
    if let Some(r) = &t.spec.logic.admin_token {
        env.push(secret_env("GIM_LOGIC__ADMIN_TOKEN", r));
    }
    env
}

fn logic_deployment(t: &Target, config_hash: &str) -> Deployment {
    let p = &t.spec.logic.ports;
    let (vol, mount) = config_volume(t);
    let (secret_vol, secret_mount) = internal_secret_volume(t);
    let container = Container {
        name: "logic".into(),
        image: Some(t.spec.images.logic.clone()),
        image_pull_policy: pull_policy(t),
        args: Some(vec!["--config".into(), format!("{CONFIG_DIR}/logic.toml")]),
        env: Some(logic_env(t)),
        ports: Some(vec![
            tcp_port("int", p.int),
            tcp_port("client", p.client),
            tcp_port("server", p.server),
            tcp_port("admin", p.admin),
        ]),
        readiness_probe: Some(http_probe("admin", "/readyz", 5)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("admin", "/healthz", 10)
        }),
        // No new call reaches a logic pod that is shutting down (a rollout's calls kept failing
        // on connect while the old pod's endpoint was still listed).
        lifecycle: Some(prestop_sleep()),
        resources: t.spec.logic.resources.clone(),
        volume_mounts: Some(vec![mount, secret_mount]),
        termination_message_policy: Some(LOGS_ON_ERROR.into()),
        ..Default::default()
    };
    let pod = pod_spec(t, vec![container], vec![vol, secret_vol]);
    Deployment {
        metadata: meta(t, logic_name(t.name), "logic"),
        spec: DeploymentSpec {
            // Left out when an HPA owns the count: server-side apply then never resets it.
            replicas: t
                .spec
                .logic
                .autoscaling
                .is_none()
                .then_some(t.spec.logic.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(t.name, "logic")),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: template(t, "logic", config_hash, pod),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn migrate_job(t: &Target) -> Job {
    let (vol, mount) = config_volume(t);
    let container = Container {
        name: "migrate".into(),
        image: Some(t.spec.images.logic.clone()),
        image_pull_policy: pull_policy(t),
        args: Some(vec![
            "migrate".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/logic.toml"),
        ]),
        env: Some(vec![
            secret_env("GIM_MYSQL__URL", &t.spec.mysql),
            secret_env("GIM_REDIS__URL", &t.spec.redis),
        ]),
        resources: t.spec.logic.resources.clone(),
        volume_mounts: Some(vec![mount]),
        termination_message_policy: Some(LOGS_ON_ERROR.into()),
        ..Default::default()
    };
    let mut pod = pod_spec(t, vec![container], vec![vol]);
    pod.restart_policy = Some("Never".into());
    let mut m = meta(t, migrate_job_name(t.name, &t.spec.images.logic), "migrate");
    m.labels.get_or_insert_with(Default::default).insert(
        MIGRATE_FOR.into(),
        short_hash(t.spec.images.logic.as_bytes())[..10].to_string(),
    );
    // A Job's template is immutable, so it carries no config hash; the controller creates the
    // Job once per logic image and never re-applies it.
    let mut tpl = template(t, "migrate", "", pod);
    if let Some(md) = tpl.metadata.as_mut() {
        md.annotations = (!t.spec.scheduling.pod_annotations.is_empty())
            .then(|| t.spec.scheduling.pod_annotations.clone());
    }
    Job {
        metadata: m,
        spec: Some(JobSpec {
            backoff_limit: Some(4),
            template: tpl,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn services(t: &Target) -> Vec<Service> {
    let s = t.spec;
    let svc = |name: String,
               component: &str,
               exposure: Option<&crate::crd::ServiceExposure>,
               ports: Vec<ServicePort>| {
        let mut m = meta(t, name, component);
        if let Some(e) = exposure
            && !e.annotations.is_empty()
        {
            m.annotations = Some(e.annotations.clone());
        }
        Service {
            metadata: m,
            spec: Some(ServiceSpec {
                type_: Some(
                    exposure
                        .map(|e| e.type_.as_str())
                        .unwrap_or("ClusterIP")
                        .into(),
                ),
                selector: Some(selector_labels(t.name, component)),
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    vec![
        svc(
            conn_name(t.name),
            "conn",
            Some(&s.conn.service),
            vec![
                service_port("tcp", s.conn.ports.tcp),
                service_port("ws", s.conn.ports.ws),
            ],
        ),
        svc(
            logic_name(t.name),
            "logic",
            None,
            vec![service_port("int", s.logic.ports.int)],
        ),
        svc(
            logic_ext_name(t.name),
            "logic",
            Some(&s.logic.service),
            vec![
                service_port("client", s.logic.ports.client),
                service_port("server", s.logic.ports.server),
            ],
        ),
    ]
}

fn pdbs(t: &Target) -> Vec<PodDisruptionBudget> {
    ["conn", "logic"]
        .into_iter()
        .map(|c| PodDisruptionBudget {
            metadata: meta(t, format!("{}-{c}", t.name), c),
            spec: Some(PodDisruptionBudgetSpec {
                // One pod at a time: conn pods drain their clients onto the others.
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(t.name, c)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

fn np_ports(ports: &[i32]) -> Option<Vec<NetworkPolicyPort>> {
    Some(
        ports
            .iter()
            .map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(*p)),
                protocol: Some("TCP".into()),
                ..Default::default()
            })
            .collect(),
    )
}

/// Pods of one tier of this cluster, in the policy's own namespace.
fn tier_peer(cluster: &str, component: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(selector_labels(cluster, component)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One ingress policy per tier. Once a pod is selected by any policy, only what some rule admits
/// reaches it: the internal port from the other tier's pods, the client ports from anywhere, the
/// admin port from `adminFrom` (anywhere when empty). Numeric ports, not the container port
/// names: every enforcing plugin supports them. Egress stays unrestricted (no Egress type).
fn network_policies(t: &Target) -> Vec<NetworkPolicy> {
    let np = &t.spec.network_policy;
    if !np.enabled {
        return Vec::new();
    }
    let admin_from = (!np.admin_from.is_empty()).then(|| np.admin_from.clone());
    let (c, l) = (&t.spec.conn.ports, &t.spec.logic.ports);
    let policy = |component: &str, internal: (i32, &str), open: &[i32], admin: i32| NetworkPolicy {
        metadata: meta(t, format!("{}-{component}", t.name), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(t.name, component)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![tier_peer(t.name, internal.1)]),
                    ports: np_ports(&[internal.0]),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: np_ports(open),
                },
                NetworkPolicyIngressRule {
                    from: admin_from.clone(),
                    ports: np_ports(&[admin]),
                },
            ]),
            ..Default::default()
        }),
    };
    vec![
        // ConnInt: logic pushes to each conn pod directly (the registry holds the pod address).
        policy("conn", (c.grpc, "logic"), &[c.tcp, c.ws], c.admin),
        // LogicInt: sign-in, send and the rest of conn's calls.
        policy("logic", (l.int, "conn"), &[l.client, l.server], l.admin),
    ]
}

fn logic_hpa(t: &Target, a: &crate::crd::LogicAutoscaling) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(t, logic_name(t.name), "logic"),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: logic_name(t.name),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(a.target_cpu_utilization),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Every rendered object of `gc` as `(file stem, YAML)`, in apply order, with a fixed owner uid
/// so the output is stable: for snapshot tests and offline schema validation.
pub fn sample_documents(gc: &GimCluster) -> Result<Vec<(String, String)>, Invalid> {
    let mut gc = gc.clone();
    gc.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    if gc.metadata.namespace.is_none() {
        gc.metadata.namespace = Some("default".into());
    }
    let t = Target::from_cluster(&gc, gc.spec.conn.replicas);
    let r = render(&t)?;
    let mut out = Vec::new();
    fn doc<K: serde::Serialize + kube::Resource<DynamicType = ()>>(
        out: &mut Vec<(String, String)>,
        obj: &K,
    ) {
        let kind = K::kind(&()).to_lowercase();
        let name = obj.meta().name.clone().unwrap_or_default();
        let yaml = serde_saphyr::to_string(obj).expect("objects serialize to YAML");
        out.push((format!("{kind}-{name}"), yaml));
    }
    doc(&mut out, &r.config_map);
    doc(&mut out, &r.migrate_job);
    doc(&mut out, &r.conn);
    doc(&mut out, &r.logic);
    for s in &r.services {
        doc(&mut out, s);
    }
    for p in &r.pdbs {
        doc(&mut out, p);
    }
    if let Some(h) = &r.logic_hpa {
        doc(&mut out, h);
    }
    for p in &r.network_policies {
        doc(&mut out, p);
    }
    Ok(out)
}
