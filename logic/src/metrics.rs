//! Prometheus metrics served on the admin port's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: &'static str,
    /// "ok", a gim code ("1006"), "unavailable" or "internal".
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// deliver_batch, broadcast_large_group, broadcast_app, close_conn, update_large_group.
    pub call: &'static str,
    /// ok, error, timeout.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub app: i64,
    /// The limit refused: send.
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BatcherLabel {
    pub batcher: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabel {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub rpcs: Family<RpcLabels, Counter>,
    pub rpc_seconds: Family<MethodLabel, Histogram>,
    /// Where a send's time goes (see [`Metrics::stage`]).
    pub send_stage_seconds: Family<StageLabel, Histogram>,
    /// Items per batch of each store batcher: 1 while MySQL keeps up, more as load rises.
    pub batch_items: Family<BatcherLabel, Histogram>,
    pub messages_stored: Family<KindLabel, Counter>,
    pub pushes: Family<PushLabels, Counter>,
    pub seq_reservations: Counter,
    pub seq_reseeds: Counter,
    pub ready: Gauge,
    /// Internal API calls refused for a missing or wrong cluster secret (someone on the network
    /// probing, or a conn node with another cluster's secret).
    pub internal_unauthenticated: Family<ServiceLabel, Counter>,
    /// Requests refused with 1011 by app and limit.
    pub rate_limited: Family<LimitLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gim_logic");
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register("rpcs", "gRPC calls by method and outcome", rpcs.clone());
        let rpc_seconds = Family::<MethodLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0002, 2.0, 16))
        });
        registry.register(
            "rpc_seconds",
            "gRPC handling time by method",
            rpc_seconds.clone(),
        );
        let send_stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        });
        registry.register(
            "send_stage_seconds",
            "time a persisted 1:1 or normal-group send spends per stage: lookup (validation, cached \
             reads), precheck (idempotency), seq, store (queued for and inside a store batch), \
             push_queue (handing the push off); per batch: store_batch (its MySQL work) and \
             push_batch (route lookup and DeliverBatch calls, after the reply)",
            send_stage_seconds.clone(),
        );
        let batch_items = Family::<BatcherLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 8))
        });
        registry.register(
            "batch_items",
            "items per batch by batcher (concurrent calls that shared one MySQL or push round trip)",
            batch_items.clone(),
        );
        let messages_stored = Family::<KindLabel, Counter>::default();
        registry.register(
            "messages_stored",
            "message copies written to MySQL by list kind",
            messages_stored.clone(),
        );
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "calls to conn nodes by call and outcome (failures never block other recipients)",
            pushes.clone(),
        );
        let seq_reservations = Counter::default();
        registry.register(
            "seq_reservations",
            "seq blocks reserved in MySQL",
            seq_reservations.clone(),
        );
        let seq_reseeds = Counter::default();
        registry.register(
            "seq_reseeds",
            "seq counters (re)seeded from MySQL (first use or Redis lost them)",
            seq_reseeds.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when MySQL and Redis answered the last readiness probe",
            ready.clone(),
        );
        let internal_unauthenticated = Family::<ServiceLabel, Counter>::default();
        registry.register(
            "internal_unauthenticated",
            "internal API calls refused with UNAUTHENTICATED (no or a wrong cluster secret) by service",
            internal_unauthenticated.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "requests refused with 1011 (over a rate limit or quota) by app and limit",
            rate_limited.clone(),
        );
        Self {
            rate_limited,
            registry,
            rpcs,
            rpc_seconds,
            send_stage_seconds,
            batch_items,
            messages_stored,
            pushes,
            seq_reservations,
            seq_reseeds,
            ready,
            internal_unauthenticated,
        }
    }
}

impl Metrics {
    pub fn push(&self, call: &'static str, outcome: &'static str) {
        self.pushes
            .get_or_create(&PushLabels { call, outcome })
            .inc();
    }

    /// Records the time since `since` under a send stage, and returns now (the next stage's start).
    pub fn stage(&self, stage: &'static str, since: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        self.send_stage_seconds
            .get_or_create(&StageLabel { stage })
            .observe((now - since).as_secs_f64());
        now
    }

    pub fn internal_unauthenticated(&self, service: &'static str) {
        self.internal_unauthenticated
            .get_or_create(&ServiceLabel { service })
            .inc();
    }

    /// Records the size of a batch a batcher is about to run.
    pub fn batch(&self, batcher: &'static str, items: usize) {
        self.batch_items
            .get_or_create(&BatcherLabel { batcher })
            .observe(items as f64);
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}
