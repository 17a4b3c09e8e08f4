//! Why a GimCluster's pods or migration Job are stuck, read from their status: the pure half of
//! the `Degraded` condition. The controller lists the objects, calls these functions and reports
//! the result; tests feed them hand-written Pods and Jobs.
//!
//! The reasons are stable strings (alerts and the end-to-end test match on them); the messages
//! quote the kubelet's or the container's own words (waiting message, termination message).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// A container image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName,
/// ErrImageNeverPull).
pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";
/// A container keeps exiting and the kubelet backs off restarting it.
pub const CRASH_LOOPING: &str = "CrashLooping";
/// The kubelet cannot create or start a container (CreateContainerConfigError,
/// CreateContainerError, RunContainerError).
pub const CONTAINER_CREATE_FAILED: &str = "ContainerCreateFailed";
/// The scheduler finds no node for a pod.
pub const UNSCHEDULABLE: &str = "Unschedulable";
/// A container has run longer than the grace period without passing its readiness probe.
pub const PODS_NOT_READY: &str = "PodsNotReady";
/// A migration attempt failed (the Job retries) or the Job gave up.
pub const MIGRATION_FAILED: &str = "MigrationFailed";

/// Longest message quoted from a container (its last log line, or the kubelet's words).
const QUOTE_MAX: usize = 400;

/// One thing a platform team must fix, in condition form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// The state of the migration Job for the current logic image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Migration {
    /// Running or waiting; `Some` when one of its pods is stuck or an attempt failed.
    Pending(Option<Problem>),
    Succeeded,
    /// The Job gave up (backoffLimit reached). `at` is when.
    Failed {
        problem: Problem,
        at: Option<Timestamp>,
    },
}

/// Reads the Job and its pods (any order; pods of other Jobs are ignored).
pub fn migration(job: &Job, pods: &[Pod]) -> Migration {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let st = job.status.clone().unwrap_or_default();
    let cond = |t: &str| {
        st.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t && c.status == "True")
    };
    if cond("Complete").is_some() || st.succeeded.unwrap_or(0) > 0 {
        return Migration::Succeeded;
    }
    // By owner uid, not the job-name label: a Job deleted for a retry and created again under
    // the same name must not inherit the old attempts' pods while the collector removes them.
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let mut own: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .collect();
    // Newest first: the latest attempt says most about the present.
    own.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    let last_failure = own.iter().find_map(|p| failed_attempt(p));
    if let Some(c) = cond("Failed") {
        let why = match (&c.reason, &c.message) {
            (Some(r), Some(m)) => format!("{r}: {m}"),
            (Some(r), None) => r.clone(),
            (None, Some(m)) => m.clone(),
            (None, None) => "failed".into(),
        };
        let mut message = format!("migration Job {name} failed ({why})");
        if let Some(f) = last_failure {
            message.push_str(&format!("; last attempt: {f}"));
        }
        return Migration::Failed {
            problem: Problem {
                reason: MIGRATION_FAILED,
                message,
            },
            at: c.last_transition_time.as_ref().map(|t| t.0),
        };
    }
    // A pod that cannot even start says more than an earlier attempt's exit.
    if let Some(p) = own.iter().find_map(|p| stuck(p, "migrate")) {
        return Migration::Pending(Some(p));
    }
    let failed = st.failed.unwrap_or(0);
    Migration::Pending(last_failure.map(|f| Problem {
        reason: MIGRATION_FAILED,
        message: format!(
            "migration Job {name}: {} failed, the Job retries; last attempt: {f}",
            attempts(failed.max(1))
        ),
    }))
}

fn attempts(n: i32) -> String {
    if n == 1 {
        "1 attempt".into()
    } else {
        format!("{n} attempts")
    }
}

/// The first problem among one tier's pods: stuck pods first (they need a fix), then pods that
/// run but have not become ready within `grace`. Pods being deleted are skipped.
pub fn workload(component: &str, pods: &[Pod], now: Timestamp, grace: Duration) -> Option<Problem> {
    let mut live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| label(p, "app.kubernetes.io/component") == Some(component))
        .collect();
    live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    live.iter().find_map(|p| stuck(p, component)).or_else(|| {
        live.iter()
            .find_map(|p| not_ready(p, component, now, grace))
    })
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

fn statuses(p: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let st = p.status.as_ref();
    st.and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            st.and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// A pod that needs a fix before it can run: image, container creation, crash loop, scheduling.
fn stuck(p: &Pod, component: &str) -> Option<Problem> {
    if p.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let name = pod_name(p);
    for c in statuses(p) {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let why = w.reason.as_deref().unwrap_or_default();
        let said = w.message.as_deref().map(quote).unwrap_or_default();
        let reason = match why {
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                IMAGE_PULL_FAILED
            }
            "CreateContainerConfigError" | "CreateContainerError" | "RunContainerError" => {
                CONTAINER_CREATE_FAILED
            }
            "CrashLoopBackOff" => {
                let last = c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| exit(t.exit_code, t.reason.as_deref(), t.message.as_deref()))
                    .unwrap_or_else(|| "no exit recorded".into());
                return Some(Problem {
                    reason: CRASH_LOOPING,
                    message: format!(
                        "pod {name} ({component}) container {}: restarted {} times, last {last}",
                        c.name, c.restart_count
                    ),
                });
            }
            _ => continue,
        };
        let mut message = format!("pod {name} ({component}) container {}: {why}", c.name);
        if !said.is_empty() {
            message.push_str(&format!(": {said}"));
        }
        return Some(Problem { reason, message });
    }
    let unscheduled = p
        .status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    (unscheduled.reason.as_deref() == Some("Unschedulable")).then(|| Problem {
        reason: UNSCHEDULABLE,
        message: format!(
            "pod {name} ({component}): {}",
            unscheduled
                .message
                .as_deref()
                .map(quote)
                .unwrap_or_default()
        ),
    })
}

/// A container running for longer than `grace` without passing readiness.
fn not_ready(p: &Pod, component: &str, now: Timestamp, grace: Duration) -> Option<Problem> {
    for c in statuses(p) {
        if c.ready {
            continue;
        }
        let Some(since) = c
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
        else {
            continue;
        };
        let running = Duration::try_from(now.duration_since(since.0)).unwrap_or_default();
        if running < grace {
            continue;
        }
        let hint = match component {
            "logic" => " (logic's /readyz fails while MySQL or Redis does not answer)",
            "conn" => " (conn's /readyz fails while it is not accepting connections)",
            _ => "",
        };
        return Some(Problem {
            reason: PODS_NOT_READY,
            message: format!(
                "pod {} ({component}) container {}: running {}s but not ready{hint}",
                pod_name(p),
                c.name,
                running.as_secs()
            ),
        });
    }
    None
}

/// How a failed attempt ended, if `p` is one.
fn failed_attempt(p: &Pod) -> Option<String> {
    let failed_phase = p.status.as_ref()?.phase.as_deref() == Some("Failed");
    statuses(p)
        .find_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                format!(
                    "pod {} {}",
                    pod_name(p),
                    exit(t.exit_code, t.reason.as_deref(), t.message.as_deref())
                )
            })
        })
        .or_else(|| failed_phase.then(|| format!("pod {} failed", pod_name(p))))
}

fn exit(code: i32, reason: Option<&str>, message: Option<&str>) -> String {
    let mut s = format!("exit code {code}");
    if let Some(r) = reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(m) = message.map(quote).filter(|m| !m.is_empty()) {
        s.push_str(&format!(": {m}"));
    }
    s
}

/// The last non-empty line of a container's words (with FallbackToLogsOnError, the tail of its
/// log: the error the process printed before exiting), cut to [`QUOTE_MAX`] characters.
fn quote(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() <= QUOTE_MAX {
        return line.to_string();
    }
    let cut: String = line.chars().take(QUOTE_MAX).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "chat-migrate-abc", "uid": "job-uid-1"},
            "status": status
        }))
        .unwrap()
    }

    const NOW: &str = "2026-01-01T10:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn tier_pod(name: &str, component: &str, status: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {"name": name, "labels": {"app.kubernetes.io/component": component}},
            "status": status
        }))
    }

    fn migrate_pod(name: &str, created: &str, status: serde_json::Value) -> Pod {
        pod(json!({
            "metadata": {"name": name, "creationTimestamp": created,
                "labels": {"job-name": "chat-migrate-abc", "app.kubernetes.io/component": "migrate"},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                    "name": "chat-migrate-abc", "uid": "job-uid-1"}]},
            "status": status
        }))
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "conn", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}
        }]})
    }

    #[test]
    fn image_pull_failures_name_the_pod_and_quote_the_kubelet() {
        for why in ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"] {
            let p = tier_pod(
                "chat-conn-1",
                "conn",
                waiting(why, "Back-off pulling image \"gim-conn:nope\""),
            );
            let got = workload("conn", &[p], now(), Duration::from_secs(60)).unwrap();
            assert_eq!(got.reason, IMAGE_PULL_FAILED);
            assert_eq!(
                got.message,
                format!(
                    "pod chat-conn-1 (conn) container conn: {why}: Back-off pulling image \"gim-conn:nope\""
                )
            );
        }
        // Plain start-up (ContainerCreating) is not a problem.
        let p = tier_pod("chat-conn-1", "conn", waiting("ContainerCreating", ""));
        assert_eq!(workload("conn", &[p], now(), Duration::from_secs(60)), None);
    }

    #[test]
    fn other_tiers_and_deleted_pods_are_ignored() {
        let bad = waiting("ImagePullBackOff", "nope");
        let logic = tier_pod("chat-logic-1", "logic", bad.clone());
        let mut going = tier_pod("chat-conn-1", "conn", bad);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        assert_eq!(
            workload("conn", &[logic, going], now(), Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn crash_loop_quotes_the_last_log_line() {
        let p = tier_pod(
            "chat-logic-1",
            "logic",
            json!({"phase": "Running", "containerStatuses": [{
                "name": "logic", "image": "x", "imageID": "", "ready": false, "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                    "message": "{\"level\":\"INFO\"}\nerror: redis: connection refused\n"}}
            }]}),
        );
        let got = workload("logic", &[p], now(), Duration::from_secs(60)).unwrap();
        assert_eq!(got.reason, CRASH_LOOPING);
        assert_eq!(
            got.message,
            "pod chat-logic-1 (logic) container logic: restarted 4 times, last exit code 1 (Error): error: redis: connection refused"
        );
    }

    #[test]
    fn running_but_unready_counts_only_after_the_grace_period() {
        let p = |started: &str| {
            tier_pod(
                "chat-logic-1",
                "logic",
                json!({"phase": "Running", "containerStatuses": [{
                    "name": "logic", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"running": {"startedAt": started}}
                }]}),
            )
        };
        let grace = Duration::from_secs(60);
        assert_eq!(
            workload("logic", &[p("2026-01-01T09:59:30Z")], now(), grace),
            None
        );
        let got = workload("logic", &[p("2026-01-01T09:58:00Z")], now(), grace).unwrap();
        assert_eq!(got.reason, PODS_NOT_READY);
        assert!(
            got.message.contains("running 120s but not ready"),
            "{}",
            got.message
        );
        assert!(got.message.contains("MySQL or Redis"), "{}", got.message);
    }

    #[test]
    fn unschedulable_quotes_the_scheduler() {
        let p = tier_pod(
            "chat-conn-1",
            "conn",
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
        );
        let got = workload("conn", &[p], now(), Duration::from_secs(60)).unwrap();
        assert_eq!(got.reason, UNSCHEDULABLE);
        assert!(
            got.message.ends_with("1 Insufficient cpu."),
            "{}",
            got.message
        );
    }

    fn failed_pod(name: &str, created: &str, log: &str) -> Pod {
        migrate_pod(
            name,
            created,
            json!({"phase": "Failed", "containerStatuses": [{
                "name": "migrate", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": log}}
            }]}),
        )
    }

    #[test]
    fn a_failed_attempt_degrades_before_the_job_gives_up() {
        let pods = [
            failed_pod("m-1", "2026-01-01T09:50:00Z", "error: pool timed out (old)"),
            failed_pod(
                "m-2",
                "2026-01-01T09:55:00Z",
                "error: pool timed out while waiting for an open connection",
            ),
        ];
        let got = migration(&job(json!({"failed": 2, "active": 1})), &pods);
        let Migration::Pending(Some(p)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(p.reason, MIGRATION_FAILED);
        assert_eq!(
            p.message,
            "migration Job chat-migrate-abc: 2 attempts failed, the Job retries; last attempt: pod m-2 exit code 1 (Error): error: pool timed out while waiting for an open connection"
        );
        // Nothing failed yet: plain pending.
        assert_eq!(
            migration(&job(json!({"active": 1})), &[]),
            Migration::Pending(None)
        );
    }

    #[test]
    fn a_failed_job_reports_its_condition_and_when() {
        let j = job(
            json!({"failed": 5, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit",
            "lastTransitionTime": "2026-01-01T09:58:00Z"}]}),
        );
        let pods = [failed_pod(
            "m-5",
            "2026-01-01T09:57:00Z",
            "error: unknown database 'gim'",
        )];
        let Migration::Failed { problem, at } = migration(&j, &pods) else {
            panic!()
        };
        assert_eq!(problem.reason, MIGRATION_FAILED);
        assert_eq!(
            problem.message,
            "migration Job chat-migrate-abc failed (BackoffLimitExceeded: Job has reached the specified backoff limit); last attempt: pod m-5 exit code 1 (Error): error: unknown database 'gim'"
        );
        assert_eq!(at, Some("2026-01-01T09:58:00Z".parse().unwrap()));
    }

    #[test]
    fn a_migration_pod_that_cannot_pull_reports_the_image() {
        let p = migrate_pod(
            "m-1",
            "2026-01-01T09:55:00Z",
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "migrate", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for gim-logic"}}
            }]}),
        );
        let Migration::Pending(Some(p)) = migration(&job(json!({"active": 1})), &[p]) else {
            panic!()
        };
        assert_eq!(p.reason, IMAGE_PULL_FAILED);
        assert_eq!(
            p.message,
            "pod m-1 (migrate) container migrate: ErrImagePull: pull access denied for gim-logic"
        );
    }

    #[test]
    fn success_wins_and_long_quotes_are_cut() {
        let j = job(json!({"succeeded": 1, "failed": 1}));
        assert_eq!(migration(&j, &[]), Migration::Succeeded);
        let q = quote(&"x".repeat(1000));
        assert_eq!(q.chars().count(), QUOTE_MAX + 1);
    }
}
