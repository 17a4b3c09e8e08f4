//! Result files and process measurements.

use std::path::Path;

/// Resident set size of process `pid` in KiB (`VmRSS` in /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))
}

/// Writes one run's result as pretty JSON (the script collects these into BENCHMARKS.md) and
/// prints it on stdout.
pub fn emit(value: &serde_json::Value, out: Option<&Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if let Some(p) = out {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(p, &text)?;
    }
    println!("{text}");
    Ok(())
}

/// Writes BENCHMARKS.md from the result files in `dir` (see `scripts/bench.sh`).
pub fn write_markdown(dir: &Path, out: &Path) -> anyhow::Result<()> {
    crate::report_md::write(dir, out)
}

/// Rewrites only the "Peers" section of the existing `out` from the results in `dir`
/// (`scripts/bench-peers.sh`).
pub fn write_peers(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let section = crate::report_md::peers(dir)?;
    anyhow::ensure!(!section.is_empty(), "no peer results in {}", dir.display());
    let doc = std::fs::read_to_string(out).unwrap_or_default();
    std::fs::write(out, crate::report_md::splice_peers(&doc, &section))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_rss() {
        assert!(super::rss_kib(std::process::id()).unwrap() > 0);
    }
}
