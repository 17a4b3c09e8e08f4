//! Checks the schema cannot express on a v1.20 server (no CEL): relations between fields.
//! A failure becomes a `Degraded` condition on the cluster's own status; nothing is applied, so
//! running workloads stay as they were.

use crate::crd::GimClusterSpec;

/// Why a spec cannot be reconciled. `reason` is a CamelCase condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Invalid {
    pub reason: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn spec(message: impl Into<String>) -> Self {
        Invalid {
            reason: "InvalidSpec",
            message: message.into(),
        }
    }
    pub fn config(key: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Invalid {
            reason: "InvalidConfig",
            message: format!("rendered config key {key}: {reason}"),
        }
    }
}

/// Every relation between fields, first failure wins. Messages name the field by its YAML path.
pub fn check(spec: &GimClusterSpec) -> Result<(), Invalid> {
    if spec.conn.replicas < 0 {
        return Err(Invalid::spec("spec.conn.replicas must be at least 0"));
    }
    if spec.logic.replicas < 0 {
        return Err(Invalid::spec("spec.logic.replicas must be at least 0"));
    }
    if let Some(a) = &spec.conn.autoscaling {
        if a.min_replicas < 1 {
            return Err(Invalid::spec(
                "spec.conn.autoscaling.minReplicas must be at least 1",
            ));
        }
        if a.min_replicas > a.max_replicas {
            return Err(Invalid::spec(format!(
                "spec.conn.autoscaling.minReplicas ({}) is above maxReplicas ({})",
                a.min_replicas, a.max_replicas
            )));
        }
        if a.target_connections_per_pod < 1 {
            return Err(Invalid::spec(
                "spec.conn.autoscaling.targetConnectionsPerPod must be at least 1",
            ));
        }
    }
    if let Some(a) = &spec.logic.autoscaling {
        if a.min_replicas < 1 {
            return Err(Invalid::spec(
                "spec.logic.autoscaling.minReplicas must be at least 1",
            ));
        }
        if a.min_replicas > a.max_replicas {
            return Err(Invalid::spec(format!(
                "spec.logic.autoscaling.minReplicas ({}) is above maxReplicas ({})",
                a.min_replicas, a.max_replicas
            )));
        }
    }
    let c = &spec.conn.ports;
    distinct(
        "spec.conn.ports",
        &[
            ("tcp", c.tcp),
            ("ws", c.ws),
            ("grpc", c.grpc),
            ("admin", c.admin),
        ],
    )?;
    let l = &spec.logic.ports;
    distinct(
        "spec.logic.ports",
        &[
            ("int", l.int),
            ("client", l.client),
            ("server", l.server),
            ("admin", l.admin),
        ],
    )?;
    if !(1..=3600).contains(&spec.conn.drain_window_seconds) {
        return Err(Invalid::spec(
            "spec.conn.drainWindowSeconds must be between 1 and 3600",
        ));
    }
    Ok(())
}

fn distinct(path: &str, ports: &[(&str, i32)]) -> Result<(), Invalid> {
    for (i, (name, port)) in ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            return Err(Invalid::spec(format!(
                "{path}.{name} ({port}) is not a port number (1-65535)"
            )));
        }
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            return Err(Invalid::spec(format!(
                "{path}.{name} and {path}.{other} both use port {port}"
            )));
        }
    }
    Ok(())
}
