//! Prometheus metrics of one conn node (not a global: tests run two nodes in one process).
//!
//! Per-frame counters are resolved once per transport so the hot path is an atomic add, not a
//! label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Tcp = 0,
    Ws = 1,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Ws => "ws",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabel {
    service: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

/// Counters of one transport, resolved up front.
#[derive(Debug, Clone, Default)]
pub struct IoCounters {
    pub connections: Gauge,
    pub frames_in: Counter,
    pub bytes_in: Counter,
    pub frames_out: Counter,
    pub bytes_out: Counter,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    io: [IoCounters; 2],
    pub signed_in: Gauge,
    pub refused: Counter,
    sign_ins: Family<ResultLabel, Counter>,
    closes: Family<ReasonLabel, Counter>,
    push_seconds: Family<MethodLabel, Histogram>,
    internal_unauthenticated: Family<ServiceLabel, Counter>,
}

fn push_histogram() -> Histogram {
    // 50 µs .. ~0.8 s: a local fan-out is fast; the tail shows lock contention or huge groups.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gim_conn");
        let connections = Family::<TransportLabel, Gauge>::default();
        let frames_in = Family::<TransportLabel, Counter>::default();
        let bytes_in = Family::<TransportLabel, Counter>::default();
        let frames_out = Family::<TransportLabel, Counter>::default();
        let bytes_out = Family::<TransportLabel, Counter>::default();
        let io = [TransportKind::Tcp, TransportKind::Ws].map(|k| {
            let l = TransportLabel {
                transport: k.as_str(),
            };
            IoCounters {
                connections: connections.get_or_create(&l).clone(),
                frames_in: frames_in.get_or_create(&l).clone(),
                bytes_in: bytes_in.get_or_create(&l).clone(),
                frames_out: frames_out.get_or_create(&l).clone(),
                bytes_out: bytes_out.get_or_create(&l).clone(),
            }
        });
        registry.register("connections", "Open connections", connections);
        registry.register("frames_in", "Envelopes received", frames_in);
        registry.register("bytes_in", "Envelope bytes received", bytes_in);
        registry.register("frames_out", "Envelopes sent", frames_out);
        registry.register("bytes_out", "Envelope bytes sent", bytes_out);
        let signed_in = Gauge::default();
        registry.register(
            "signed_in_connections",
            "Signed-in connections",
            signed_in.clone(),
        );
        let refused = Counter::default();
        registry.register(
            "refused_connections",
            "Connections refused at the per-node limit",
            refused.clone(),
        );
        let sign_ins = Family::<ResultLabel, Counter>::default();
        registry.register("sign_ins", "Sign-in attempts by result", sign_ins.clone());
        let closes = Family::<ReasonLabel, Counter>::default();
        registry.register("closes", "Closed connections by reason", closes.clone());
        let push_seconds =
            Family::<MethodLabel, Histogram>::new_with_constructor(push_histogram as fn() -> _);
        registry.register(
            "push_duration_seconds",
            "Time to fan a ConnInt push out to local connection queues",
            push_seconds.clone(),
        );
        let internal_unauthenticated = Family::<ServiceLabel, Counter>::default();
        registry.register(
            "internal_unauthenticated",
            "internal API calls refused with UNAUTHENTICATED (no or a wrong cluster secret) by service",
            internal_unauthenticated.clone(),
        );
        Self {
            registry,
            io,
            signed_in,
            refused,
            sign_ins,
            closes,
            push_seconds,
            internal_unauthenticated,
        }
    }

    pub fn io(&self, kind: TransportKind) -> &IoCounters {
        &self.io[kind as usize]
    }

    pub fn sign_in(&self, result: &'static str) {
        self.sign_ins.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn closed(&self, reason: &'static str) {
        self.closes.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn internal_unauthenticated(&self, service: &'static str) {
        self.internal_unauthenticated
            .get_or_create(&ServiceLabel { service })
            .inc();
    }

    pub fn push_observe(&self, method: &'static str, started: tokio::time::Instant) {
        self.push_seconds
            .get_or_create(&MethodLabel { method })
            .observe(started.elapsed().as_secs_f64());
    }

    /// OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
