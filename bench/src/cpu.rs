//! CPU time of the processes under test over a measured window, from `/proc/<pid>/stat`
//! (utime + stime, every thread): the cost per unit of work (message, delivery, sign-in), the
//! figure that survives a noisy shared machine better than a rate does.
//!
//! `--cpu logic:123,conn:456,conn:457,mariadb:89` names the processes; several pids may share a
//! label (six conn nodes) and are summed. The generator's own CPU (this process, every thread) is
//! reported beside them, not in the total.

use serde_json::{Map, Value, json};

/// Parses `label:pid,label:pid`.
pub fn parse(s: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (label, pid) = part
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--cpu entry {part:?} is not label:pid"))?;
        let pid: u32 = pid
            .parse()
            .map_err(|e| anyhow::anyhow!("--cpu entry {part:?}: {e}"))?;
        anyhow::ensure!(!label.is_empty(), "--cpu entry {part:?} has no label");
        out.push((label.to_string(), pid));
    }
    Ok(out)
}

/// utime + stime of `pid` in clock ticks; `None` once the process is gone.
fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of /proc's times: USER_HZ, fixed at 100 by Linux's user ABI whatever
/// the kernel's own tick rate.
const HZ: f64 = 100.0;

/// A window over which the listed processes' CPU time is measured.
pub struct Probe {
    procs: Vec<(String, u32, u64)>,
    own: u64,
    started: std::time::Instant,
}

impl Probe {
    pub fn start(procs: &[(String, u32)]) -> Self {
        Self {
            procs: procs
                .iter()
                .map(|(l, p)| (l.clone(), *p, ticks(*p).unwrap_or(0)))
                .collect(),
            own: ticks(std::process::id()).unwrap_or(0),
            started: std::time::Instant::now(),
        }
    }

    /// CPU seconds per label since `start`, their total, and the total per `units` units of
    /// `unit` (µs per unit and seconds per 10 000 units).
    pub fn finish(&self, units: u64, unit: &str) -> Value {
        let mut by: Map<String, Value> = Map::new();
        let mut total = 0.0;
        for (label, pid, before) in &self.procs {
            let s = ticks(*pid).unwrap_or(*before).saturating_sub(*before) as f64 / HZ;
            total += s;
            let e = by.entry(label.clone()).or_insert(json!(0.0));
            *e = json!(e.as_f64().unwrap_or(0.0) + s);
        }
        let own = ticks(std::process::id())
            .unwrap_or(self.own)
            .saturating_sub(self.own) as f64
            / HZ;
        let per = |x: f64| if units > 0 { x / units as f64 } else { 0.0 };
        json!({
            "wall_secs": self.started.elapsed().as_secs_f64(),
            "secs": by,
            "total_secs": total,
            "generator_secs": own,
            "unit": unit,
            "units": units,
            "us_per_unit": per(total) * 1e6,
            "secs_per_10k": per(total) * 1e4,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_rejects_garbage() {
        let v = parse("logic:1, conn:2,conn:3").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], ("conn".to_string(), 3));
        assert!(parse("logic").is_err());
        assert!(parse("logic:x").is_err());
    }

    #[test]
    fn measures_own_busy_loop_under_its_label() {
        let me = vec![("me".to_string(), std::process::id())];
        let p = Probe::start(&me);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let v = p.finish(1000, "message");
        let s = v["secs"]["me"].as_f64().unwrap();
        assert!(s >= 0.15, "{v}");
        assert!((v["us_per_unit"].as_f64().unwrap() - s * 1000.0).abs() < 1.0);
    }
}
