//! Whether this node can serve clients, and what it does when it cannot.
//!
//! A node whose registry lease lapsed (Redis unreachable) is invisible to logic: no push reaches
//! its clients. A node that cannot reach logic, or whose logic reports its stores down, can sign
//! no one in and store nothing. Either way, once the dependency has been gone for a whole lease,
//! the node goes not-ready (the load balancer sends new clients elsewhere), answers sign-ins with
//! RECONNECT, and tells its connected clients to reconnect elsewhere, spread over the drain
//! window. When the dependency answers again it becomes ready by itself and the spread stops.
//! Waiting a lease first keeps a Redis failover or a logic rollout from emptying the node.

use crate::hub::{Control, Hub};
use crate::logic::LogicApi;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the node depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dep {
    /// The Redis registry lease (logic finds the node, and routes pushes to it, through it).
    Registry,
    /// Logic's `LogicInt`, serving (its own health check says its stores are up).
    Logic,
}

impl Dep {
    /// The reason clients and `/readyz` are given.
    pub fn lost_reason(self) -> &'static str {
        match self {
            Dep::Registry => "node lost its registry lease (Redis unreachable)",
            Dep::Logic => "node cannot reach logic",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The node's serving state: read on every sign-in (an atomic), written by the watchers.
#[derive(Debug)]
pub struct Health {
    draining: AtomicBool,
    serving: AtomicBool,
    grace: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    last_ok: [Instant; 2],
    lost: [bool; 2],
    /// Cancels the spread of RECONNECTs started when the node stopped serving.
    spreading: Option<CancellationToken>,
}

/// What one report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The node stopped serving because of this dependency.
    Lost,
    /// Every dependency is back: the node serves again.
    Recovered,
}

impl Health {
    /// `grace`: how long a dependency may fail before the node stops serving (the lease).
    pub fn new(grace: Duration) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            draining: AtomicBool::new(false),
            serving: AtomicBool::new(true),
            grace,
            inner: Mutex::new(Inner {
                last_ok: [now; 2],
                lost: [false; 2],
                spreading: None,
            }),
        })
    }

    /// Ready for new clients: serving and not draining (`/readyz`).
    pub fn ready(&self) -> bool {
        self.serving() && !self.draining.load(Ordering::Relaxed)
    }

    /// Every dependency is up: sign-ins proceed.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Why the node does not serve, if it does not.
    pub fn unavailable(&self) -> Option<&'static str> {
        let inner = self.inner.lock().expect("health lock");
        [Dep::Registry, Dep::Logic]
            .into_iter()
            .find(|d| inner.lost[d.index()])
            .map(Dep::lost_reason)
    }

    /// Records one check of `dep` at `now`.
    pub fn report(&self, dep: Dep, ok: bool, now: Instant) -> Change {
        let mut inner = self.inner.lock().expect("health lock");
        let i = dep.index();
        let was_serving = !inner.lost.iter().any(|l| *l);
        if ok {
            inner.last_ok[i] = now;
            inner.lost[i] = false;
        } else if now.duration_since(inner.last_ok[i]) >= self.grace {
            inner.lost[i] = true;
        }
        let serving = !inner.lost.iter().any(|l| *l);
        self.serving.store(serving, Ordering::Relaxed);
        match (was_serving, serving) {
            (true, false) => Change::Lost,
            (false, true) => {
                if let Some(t) = inner.spreading.take() {
                    t.cancel();
                }
                Change::Recovered
            }
            _ => Change::None,
        }
    }

    /// Records a check and reacts: on loss, tells every connection of `hub` to reconnect
    /// elsewhere, spread over `window` (stopped if the node recovers first).
    pub fn observe(&self, dep: Dep, ok: bool, hub: &Arc<Hub>, window: Duration) {
        match self.report(dep, ok, Instant::now()) {
            Change::None => {}
            Change::Lost => {
                warn!(
                    reason = dep.lost_reason(),
                    connections = hub.len(),
                    "not serving: not ready, sign-ins answered with RECONNECT, clients told to reconnect elsewhere"
                );
                let stop = CancellationToken::new();
                self.inner.lock().expect("health lock").spreading = Some(stop.clone());
                tokio::spawn(spread_reconnects(
                    hub.clone(),
                    window,
                    dep.lost_reason(),
                    stop,
                ));
            }
            Change::Recovered => info!(dependency = ?dep, "serving again: ready"),
        }
    }
}

/// Tells every connection to reconnect elsewhere, spread evenly over `window`, until `stop`.
pub async fn spread_reconnects(
    hub: Arc<Hub>,
    window: Duration,
    reason: &'static str,
    stop: CancellationToken,
) {
    let conns = hub.snapshot();
    let n = conns.len().max(1) as u32;
    let started = Instant::now();
    for (i, c) in conns.iter().enumerate() {
        let at = started + window * i as u32 / n;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        c.control(Control::Drain {
            after_ms: 0,
            reason,
        });
    }
}

/// Probes logic every `period` (a gRPC health check, bounded by `period`) until `stop`.
pub async fn watch_logic(
    logic: Arc<dyn LogicApi>,
    health: Arc<Health>,
    hub: Arc<Hub>,
    period: Duration,
    window: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = matches!(
            tokio::time::timeout(period, logic.ping()).await,
            Ok(Ok(true))
        );
        health.observe(Dep::Logic, ok, &hub, window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_is_lost_only_after_the_grace_and_recovers_at_once() {
        let h = Health::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(h.serving() && h.ready());
        assert_eq!(
            h.report(Dep::Registry, false, t0 + Duration::from_secs(9)),
            Change::None
        );
        assert!(h.serving(), "inside the grace");
        assert_eq!(
            h.report(Dep::Registry, false, t0 + Duration::from_secs(10)),
            Change::Lost
        );
        assert!(!h.serving() && !h.ready());
        assert_eq!(h.unavailable(), Some(Dep::Registry.lost_reason()));
        // Logic lost too: recovering the registry alone does not serve.
        assert_eq!(
            h.report(Dep::Logic, false, t0 + Duration::from_secs(11)),
            Change::None
        );
        assert_eq!(
            h.report(Dep::Registry, true, t0 + Duration::from_secs(12)),
            Change::None
        );
        assert!(!h.serving());
        assert_eq!(h.unavailable(), Some(Dep::Logic.lost_reason()));
        assert_eq!(
            h.report(Dep::Logic, true, t0 + Duration::from_secs(13)),
            Change::Recovered
        );
        assert!(h.ready());
        h.set_draining();
        assert!(h.serving() && !h.ready(), "draining is not ready");
    }
}
