//! The operator's own admin HTTP listener: `/metrics` (OpenMetrics text), `/healthz` (the process
//! runs) and `/readyz` (this replica can do its job now; see [`Health::readiness`]).
//!
//! One [`Health`] per operator process; the controller and the leader loop report into it, the
//! HTTP handlers only read it.

use crate::controller::Error;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::api::DynamicObject;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A watch error this recent makes a leader unready. kube's watcher retries a failing watch at
/// least every 30 s (its default back-off cap), so a watch that stays broken keeps it unready.
pub const WATCH_ERROR_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Prometheus metrics of one operator process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ReasonLabel, Counter>,
    duration: Histogram,
    managed: Gauge,
    degraded: Gauge,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gim_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of a GimCluster by result (ok, error)",
            reconciles.clone(),
        );
        let errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by reason (Kubernetes API status, transport, encode)",
            errors.clone(),
        );
        // 5 ms .. ~20 s: a reconcile is a handful of API calls; the tail is a slow API server.
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            duration.clone(),
        );
        let managed = Gauge::default();
        registry.register(
            "managed_clusters",
            "GimClusters this replica watches (0 unless it leads)",
            managed.clone(),
        );
        let degraded = Gauge::default();
        registry.register(
            "degraded_clusters",
            "Watched GimClusters whose Degraded condition is True",
            degraded.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease (or runs without election)",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            managed,
            degraded,
            leader,
        }
    }
}

impl Metrics {
    /// Counts one reconcile and its duration; errors also by reason.
    pub fn reconciled(&self, started: Instant, result: Result<(), &Error>) {
        self.duration.observe(started.elapsed().as_secs_f64());
        let label = match result {
            Ok(()) => "ok",
            Err(e) => {
                self.errors
                    .get_or_create(&ReasonLabel {
                        reason: e.metric_reason(),
                    })
                    .inc();
                "error"
            }
        };
        self.reconciles
            .get_or_create(&ResultLabel { result: label })
            .inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Where this replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Discovering API versions (first contact with the API server).
    #[default]
    Starting,
    /// Waiting for the leader lease.
    Candidate,
    /// Holding the lease (or running without election): the controller runs.
    Leading,
    /// Shutting down or lost the lease; the process is about to exit.
    Stopping,
}

#[derive(Debug, Default)]
struct HealthState {
    phase: Phase,
    /// The last lease attempt's error, None when the API server answered.
    lease_error: Option<String>,
    /// Set once the controller runs: the GimClusters it watches.
    store: Option<Store<DynamicObject>>,
    /// GimClusters have been listed once with the controller's credentials.
    synced: bool,
    last_watch_error: Option<(Instant, String)>,
}

/// Liveness, readiness and metrics of one operator process.
#[derive(Debug, Default)]
pub struct Health {
    pub metrics: Metrics,
    state: Mutex<HealthState>,
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().expect("health lock")
    }

    pub fn set_phase(&self, phase: Phase) {
        self.state().phase = phase;
        self.metrics.leader.set(i64::from(phase == Phase::Leading));
    }

    /// The outcome of one lease attempt (won or lost both mean the API server answered).
    pub fn lease_attempt(&self, result: Result<bool, &kube::Error>) {
        self.state().lease_error = result.err().map(|e| e.to_string());
    }

    /// The controller's store of GimClusters (read for the cluster gauges).
    pub fn set_store(&self, store: Store<DynamicObject>) {
        let mut s = self.state();
        s.store = Some(store);
        s.synced = false;
    }

    pub fn set_synced(&self) {
        self.state().synced = true;
    }

    /// A watch (GimClusters or their children) failed; kube retries it with back-off.
    pub fn watch_error(&self, error: &str) {
        self.state().last_watch_error = Some((Instant::now(), error.to_string()));
    }

    /// Ready means this replica does its part now:
    /// - a candidate: the API server answers its lease attempts (it can take over at once);
    /// - the leader: it has listed GimClusters (the CRD is served and its account may read it)
    ///   and no watch has failed in the last [`WATCH_ERROR_WINDOW`] (it sees the changes it
    ///   must act on);
    /// - never while starting (API discovery not done) or stopping.
    ///
    /// Ok carries a short description, Err why not.
    pub fn readiness(&self) -> Result<String, String> {
        let s = self.state();
        match s.phase {
            Phase::Starting => Err("starting: discovering API versions".into()),
            Phase::Stopping => Err("stopping".into()),
            Phase::Candidate => match &s.lease_error {
                None => Ok("standby: waiting for the leader lease".into()),
                Some(e) => Err(format!("standby: lease unreachable: {e}")),
            },
            Phase::Leading => {
                if !s.synced {
                    return Err("leader: GimClusters not listed yet".into());
                }
                if let Some((at, e)) = &s.last_watch_error
                    && at.elapsed() < WATCH_ERROR_WINDOW
                {
                    return Err(format!("leader: watch failing: {e}"));
                }
                let n = s.store.as_ref().map_or(0, |st| st.state().len());
                Ok(format!("leader: watching {n} GimClusters"))
            }
        }
    }

    /// OpenMetrics text; the cluster gauges are read from the watch store at scrape time, so a
    /// deleted cluster leaves them at once.
    pub fn encode_metrics(&self) -> String {
        let objs = self
            .state()
            .store
            .as_ref()
            .map(|st| st.state())
            .unwrap_or_default();
        let degraded = objs.iter().filter(|o| is_degraded(o)).count();
        self.metrics.managed.set(objs.len() as i64);
        self.metrics.degraded.set(degraded as i64);
        self.metrics.encode()
    }
}

fn is_degraded(o: &DynamicObject) -> bool {
    o.data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Degraded" && c["status"] == "True")
        })
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Arc<Health>>) -> impl IntoResponse {
    match h.readiness() {
        Ok(s) => (StatusCode::OK, s),
        Err(s) => (StatusCode::SERVICE_UNAVAILABLE, s),
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.encode_metrics(),
    )
}

/// Serves the admin endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_phase() {
        let h = Health::default();
        assert!(h.readiness().is_err(), "not ready while starting");
        h.set_phase(Phase::Candidate);
        assert!(h.readiness().is_ok(), "a standby is ready");
        h.set_phase(Phase::Leading);
        let e = h.readiness().unwrap_err();
        assert!(e.contains("not listed yet"), "{e}");
        h.set_synced();
        assert!(h.readiness().is_ok());
        h.watch_error("403 Forbidden");
        let e = h.readiness().unwrap_err();
        assert!(e.contains("403 Forbidden"), "{e}");
        h.set_phase(Phase::Stopping);
        assert!(h.readiness().is_err());
        assert!(h.encode_metrics().contains("gim_operator_leader 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_watch_error_no_longer_counts() {
        let h = Health::default();
        h.set_phase(Phase::Leading);
        h.set_synced();
        h.watch_error("connection refused");
        assert!(h.readiness().is_err());
        tokio::time::advance(WATCH_ERROR_WINDOW).await;
        assert!(h.readiness().is_ok());
    }
}
