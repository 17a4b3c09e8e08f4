//! Latency histograms in microseconds, serializable so worker processes can hand them to the
//! coordinator, which merges them before reading percentiles.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Highest recordable value: 10 minutes in µs. Anything slower is clamped (and a run that slow
/// has failed its goal by orders of magnitude anyway).
const MAX_US: u64 = 600_000_000;

#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds"))
    }

    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.0.record(us).expect("clamped into range");
    }

    pub fn record_us(&mut self, us: u64) {
        self.0
            .record(us.clamp(1, MAX_US))
            .expect("clamped into range");
    }

    pub fn merge(&mut self, other: &Hist) {
        self.0.add(&other.0).expect("same bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0..=1), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> Summary {
        Summary {
            count: self.len(),
            p50_ms: self.ms(0.50),
            p90_ms: self.ms(0.90),
            p99_ms: self.ms(0.99),
            p999_ms: self.ms(0.999),
            max_ms: if self.is_empty() {
                0.0
            } else {
                self.0.max() as f64 / 1000.0
            },
        }
    }

    pub fn to_b64(&self) -> String {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&self.0, &mut buf)
            .expect("serialize to memory");
        B64.encode(buf)
    }

    pub fn from_b64(s: &str) -> anyhow::Result<Self> {
        let bytes = B64.decode(s)?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        let mut out = Self::new();
        out.0
            .add(&h)
            .map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        Ok(out)
    }
}

/// Percentiles of one histogram, as they go into result files and BENCHMARKS.md.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let mut a = Hist::new();
        for i in 1..=1000 {
            a.record_us(i * 10);
        }
        let b = Hist::from_b64(&a.to_b64()).unwrap();
        assert_eq!(b.len(), 1000);
        let mut c = Hist::new();
        c.merge(&a);
        c.merge(&b);
        assert_eq!(c.len(), 2000);
        assert!((c.ms(0.5) - 5.0).abs() < 0.05, "{}", c.ms(0.5));
    }

    #[test]
    fn slowest_per_second_takes_each_bucket_max() {
        let f = Fanout::new(5);
        for (idx, us) in [(0, 1_000), (0, 3_000), (1, 2_000), (3, 250_000), (4, 10)] {
            assert!(f.delivered(idx, us, 0));
        }
        assert!(!f.delivered(5, 1, 0), "outside the run");
        assert_eq!(f.slowest_per(2), vec![3.0, 250.0, 0.0]);
    }
}

/// Per-message delivery bookkeeping for fan-out runs: how many recipients got message `i` and the
/// latest of their latencies (send → last recipient), updated lock-free by every receiver task.
#[derive(Debug)]
pub struct Fanout {
    count: Vec<std::sync::atomic::AtomicU32>,
    max_us: Vec<std::sync::atomic::AtomicU64>,
    /// Every delivery's latency, recorded in batches (see [`Batch`]).
    pub deliveries: std::sync::Mutex<Hist>,
    pub last_delivery_us: std::sync::atomic::AtomicU64,
}

impl Fanout {
    pub fn new(messages: usize) -> Self {
        Self {
            count: (0..messages).map(|_| Default::default()).collect(),
            max_us: (0..messages).map(|_| Default::default()).collect(),
            deliveries: Default::default(),
            last_delivery_us: Default::default(),
        }
    }

    /// Records that message `idx` reached one recipient `lat_us` after its scheduled send time.
    /// Returns false for an index outside the run (a stray frame).
    pub fn delivered(&self, idx: usize, lat_us: u64, now_us: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let (Some(c), Some(m)) = (self.count.get(idx), self.max_us.get(idx)) else {
            return false;
        };
        c.fetch_add(1, Relaxed);
        m.fetch_max(lat_us, Relaxed);
        self.last_delivery_us.fetch_max(now_us, Relaxed);
        true
    }

    pub fn total(&self) -> u64 {
        self.count
            .iter()
            .map(|c| c.load(std::sync::atomic::Ordering::Relaxed) as u64)
            .sum()
    }

    pub fn count(&self, idx: usize) -> u32 {
        self.count[idx].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The slowest last recipient of each run of `per` consecutive messages (one second of the
    /// schedule when `per` is the rate), in ms: shows whether a tail is one stall or spread out.
    pub fn slowest_per(&self, per: usize) -> Vec<f64> {
        self.max_us
            .chunks(per.max(1))
            .map(|c| {
                let us = c
                    .iter()
                    .map(|m| m.load(std::sync::atomic::Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                (us as f64 / 100.0).round() / 10.0
            })
            .collect()
    }

    /// Send → last recipient, one value per message that reached anyone.
    pub fn last_recipient(&self) -> Hist {
        let mut h = Hist::new();
        for (c, m) in self.count.iter().zip(&self.max_us) {
            if c.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                h.record_us(m.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        h
    }
}

/// A receiver task's local buffer of latencies, flushed into a shared histogram every few hundred
/// values so thousands of tasks do not contend on one lock per delivery.
#[derive(Debug, Default)]
pub struct Batch(Vec<u64>);

impl Batch {
    pub fn push(&mut self, lat_us: u64, into: &std::sync::Mutex<Hist>) {
        self.0.push(lat_us);
        if self.0.len() >= 256 {
            self.flush(into);
        }
    }

    pub fn flush(&mut self, into: &std::sync::Mutex<Hist>) {
        if self.0.is_empty() {
            return;
        }
        let mut h = into.lock().expect("histogram lock");
        for v in self.0.drain(..) {
            h.record_us(v);
        }
    }
}
