//! The `GimCluster` custom resource (`gim.io/v1alpha1`).
//!
//! What the schema can check (types, ranges, enums) is checked by the API server at admission, so
//! most bad input never reaches the operator. Relations between fields (min <= max, distinct
//! ports) need CEL, which the oldest servers we support (v1.20) lack, so [`crate::validate`]
//! checks them and reports a `Degraded` condition instead.

// kube's `printcolumn(...)` repeats keys such as `type_` once per column, which this lint
// mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired state of one gim deployment: a conn tier, a logic tier and their plumbing.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gim.io",
    version = "v1alpha1",
    kind = "GimCluster",
    namespaced,
    status = "GimClusterStatus",
    shortname = "gim",
    derive = "PartialEq",
    doc = "A gim instant-messaging deployment: conn and logic tiers, config, exposure and autoscaling",
    scale(
        spec_replicas_path = ".spec.conn.replicas",
        status_replicas_path = ".status.conn.replicas",
        label_selector_path = ".status.conn.selector"
    ),
    printcolumn(
        name = "Conn",
        type_ = "string",
        json_path = ".status.conn.summary",
        description = "ready/desired conn pods"
    ),
    printcolumn(
        name = "Logic",
        type_ = "string",
        json_path = ".status.logic.summary",
        description = "ready/desired logic pods"
    ),
    printcolumn(
        name = "Connections",
        type_ = "integer",
        json_path = ".status.connections",
        description = "live client connections"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GimClusterSpec {
    pub images: Images,
    #[serde(default)]
    pub conn: ConnTier,
    #[serde(default)]
    pub logic: LogicTier,
    /// Secret key holding the MySQL URL (`mysql://user:pass@host:3306/db`), read by logic.
    pub mysql: SecretKeyRef,
    /// Secret key holding the Redis URL, read by conn, logic and the operator.
    pub redis: SecretKeyRef,
    #[serde(default)]
    pub config: ConfigOverrides,
    /// Passed through to both tiers' pods.
    #[serde(default)]
    pub scheduling: Scheduling,
    /// Ingress NetworkPolicies for both tiers: `LogicInt` only from conn pods, `ConnInt` only
    /// from logic pods, client ports open. Enforced only by a network plugin that implements
    /// NetworkPolicies (Calico, Cilium, ...).
    #[serde(default)]
    pub network_policy: NetworkPolicyOptions,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Images {
    /// Image running `gim-conn`.
    #[schemars(length(min = 1))]
    pub conn: String,
    /// Image running `gim-logic` (also runs the `gim-logic migrate` Job).
    #[schemars(length(min = 1))]
    pub logic: String,
    // Not an Option: a nullable enum puts `null` into the schema's enum list, which kubectl's
    // client-side validation rejects.
    #[serde(default)]
    pub pull_policy: PullPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The long-connection tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnTier {
    /// Pods when conn autoscaling is off; `kubectl scale gimcluster/NAME` sets it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[serde(default)]
    pub ports: ConnPorts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the TCP and WebSocket ports are exposed.
    #[serde(default)]
    pub service: ServiceExposure,
    /// On scale-in or rollout, clients are told to reconnect and closed over this window; the pod
    /// gets this plus a margin as its termination grace period.
    #[serde(default = "default_drain")]
    #[schemars(range(min = 1, max = 3600))]
    pub drain_window_seconds: i64,
    /// Scale by live connections read from the node registry in Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<ConnAutoscaling>,
}

impl Default for ConnTier {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            ports: ConnPorts::default(),
            resources: None,
            service: ServiceExposure::default(),
            drain_window_seconds: default_drain(),
            autoscaling: None,
        }
    }
}

fn default_replicas() -> i32 {
    2
}
fn default_drain() -> i64 {
    10
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnPorts {
    #[serde(default = "d_tcp")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp: i32,
    #[serde(default = "d_ws")]
    #[schemars(range(min = 1, max = 65535))]
    pub ws: i32,
    #[serde(default = "d_grpc")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc: i32,
    #[serde(default = "d_conn_admin")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin: i32,
}

fn d_tcp() -> i32 {
    8080
}
fn d_ws() -> i32 {
    8081
}
fn d_grpc() -> i32 {
    50100
}
fn d_conn_admin() -> i32 {
    9200
}

impl Default for ConnPorts {
    fn default() -> Self {
        Self {
            tcp: d_tcp(),
            ws: d_ws(),
            grpc: d_grpc(),
            admin: d_conn_admin(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExposure {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// E.g. cloud load-balancer settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnAutoscaling {
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Live connections per pod to stay under.
    #[schemars(range(min = 1))]
    pub target_connections_per_pod: i64,
    /// Least time between two scaling changes, so a burst does not flap the tier.
    #[serde(default = "d_cooldown")]
    #[schemars(range(min = 0))]
    pub cooldown_seconds: i64,
}

fn d_cooldown() -> i64 {
    300
}

/// The business tier.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogicTier {
    /// Pods when logic autoscaling is off.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[serde(default)]
    pub ports: LogicPorts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the client and business-server gRPC APIs are exposed (`LogicInt` stays internal).
    #[serde(default)]
    pub service: ServiceExposure,
    /// A HorizontalPodAutoscaler on CPU owns the replica count when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<LogicAutoscaling>,
    /// Secret key holding the bearer token of logic's admin API (`POST /apps` on the admin
    /// port; at least 16 visible ASCII characters). Unset: the admin API refuses every call and
    /// apps are created with `gim-logic app create` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<SecretKeyRef>,
}

impl Default for LogicTier {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            ports: LogicPorts::default(),
            resources: None,
            service: ServiceExposure::default(),
            autoscaling: None,
            admin_token: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogicPorts {
    #[serde(default = "d_int")]
    #[schemars(range(min = 1, max = 65535))]
    pub int: i32,
    #[serde(default = "d_client")]
    #[schemars(range(min = 1, max = 65535))]
    pub client: i32,
    #[serde(default = "d_server")]
    #[schemars(range(min = 1, max = 65535))]
    pub server: i32,
    #[serde(default = "d_logic_admin")]
    #[schemars(range(min = 1, max = 65535))]
    pub admin: i32,
}

fn d_int() -> i32 {
    50000
}
fn d_client() -> i32 {
    50001
}
fn d_server() -> i32 {
    50002
}
fn d_logic_admin() -> i32 {
    9100
}

impl Default for LogicPorts {
    fn default() -> Self {
        Self {
            int: d_int(),
            client: d_client(),
            server: d_server(),
            admin: d_logic_admin(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogicAutoscaling {
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    #[serde(default = "d_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

fn d_cpu() -> i32 {
    70
}

/// Config keys platform teams tune; everything else keeps the binaries' defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigOverrides {
    /// `RUST_LOG`-style filter for both tiers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_filter: Option<String>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Heartbeat: a TCP connection with no inbound bytes for this long is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tcp_idle_timeout_seconds: Option<i64>,
    /// Heartbeat for WebSocket connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ws_idle_timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sign_in_timeout_ms: Option<i64>,
    /// Connections one conn pod accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections_per_pod: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64, max = 65535))]
    pub max_frame_len: Option<i64>,
    /// A busy large group's messages are held up to this long on each conn pod and fanned out
    /// together (one write per member for several messages); 0 sends each at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub large_group_window_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_mentions: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sync_page_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub mysql_max_connections: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Pod scheduling settings copied onto both tiers' pod templates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// One NetworkPolicy per tier: `LogicInt` admits only this cluster's conn pods, `ConnInt` only its
/// logic pods, the client ports (conn TCP/WebSocket, logic client/server APIs) admit anyone.
/// Egress is left alone (MySQL, Redis, DNS live wherever the platform put them). They take
/// effect only where the cluster's network plugin enforces NetworkPolicies (Calico, Cilium,
/// Antrea, ...); elsewhere they are stored and do nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicyOptions {
    /// Render the policies; false deletes ones rendered before.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Who may reach the admin ports (metrics, health), e.g. the monitoring namespace. Empty:
    /// any source, as without a policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_from: Vec<NetworkPolicyPeer>,
}

fn d_true() -> bool {
    true
}

impl Default for NetworkPolicyOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            admin_from: Vec::new(),
        }
    }
}

/// Observed state, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GimClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub conn: TierStatus,
    #[serde(default)]
    pub logic: TierStatus,
    /// Signed-in connections summed over live conn nodes in the registry.
    #[serde(default)]
    pub connections: i64,
    /// When the operator last changed the conn replica count by connections (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_conn_scale_time: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TierStatus {
    /// Desired pods.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    // Options, not defaulted Strings: v1.20 rejects a CRD whose schema defaults a string to "".
    /// `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Label selector of the tier's pods (string form, for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Same shape as `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
