//! Tracing setup shared by every binary: human or JSON lines, a `RUST_LOG`-style filter.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.filter`.
/// Safe to call more than once (later calls are ignored), which tests rely on.
pub fn init(cfg: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(&cfg.filter));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match cfg.format {
        LogFormat::Human => registry.with(fmt::layer().with_target(true)).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
}

/// A fresh trace id: 16 hex digits, for joining one request's log lines across conn and logic.
pub fn new_trace_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("os random");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn trace_ids_are_16_hex_and_distinct() {
        let a = super::new_trace_id();
        let b = super::new_trace_id();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
