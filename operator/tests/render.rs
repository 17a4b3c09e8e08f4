//! Snapshot tests of the pure render functions, plus the checks the snapshots cannot make
//! obvious (what must change together, what must be left out).
//!
//! Snapshots are YAML files under tests/snapshots/, one per rendered object. After an intended
//! change: `UPDATE_SNAPSHOTS=1 cargo test -p gim-operator --test render`, then review the diff.

use gim_operator::crd::GimCluster;
use gim_operator::render::{self, Target};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sample() -> GimCluster {
    let text =
        std::fs::read_to_string(root().join("../charts/gim-operator/examples/gimcluster.yaml"))
            .unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn minimal() -> GimCluster {
    serde_saphyr::from_str(
        r#"
apiVersion: gim.io/v1alpha1
kind: GimCluster
metadata: {name: mini, namespace: apps}
spec:
  images: {conn: "gim-conn:1", logic: "gim-logic:1"}
  mysql: {name: db, key: url}
  redis: {name: cache, key: url}
"#,
    )
    .unwrap()
}

fn check_snapshots(prefix: &str, gc: &GimCluster) {
    let dir = root().join("tests/snapshots");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut stale = Vec::new();
    for (stem, yaml) in render::sample_documents(gc).unwrap() {
        let path = dir.join(format!("{prefix}-{stem}.yaml"));
        if update {
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(old) if old == yaml => {}
            Ok(old) => stale.push(format!(
                "{} differs:\n--- committed\n{old}\n+++ rendered\n{yaml}",
                path.display()
            )),
            Err(_) => stale.push(format!("{} is missing; rendered:\n{yaml}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "snapshots out of date (UPDATE_SNAPSHOTS=1 to rewrite):\n{}",
        stale.join("\n")
    );
}

#[test]
fn sample_cluster_snapshots() {
    check_snapshots("sample", &sample());
}

#[test]
fn minimal_cluster_snapshots() {
    check_snapshots("minimal", &minimal());
}

fn rendered(gc: &GimCluster) -> render::Rendered {
    render::render(&Target::from_cluster(gc, gc.spec.conn.replicas)).unwrap()
}

fn template_hash(d: &k8s_openapi::api::apps::v1::Deployment) -> String {
    d.spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[render::CONFIG_HASH]
        .clone()
}

#[test]
fn config_change_changes_the_pod_template_hash_and_nothing_else_does() {
    let gc = minimal();
    let a = rendered(&gc);
    let mut changed = gc.clone();
    changed.spec.config.tcp_idle_timeout_seconds = Some(120);
    let b = rendered(&changed);
    assert_ne!(a.config_hash, b.config_hash);
    assert_ne!(template_hash(&a.conn), template_hash(&b.conn));
    assert_ne!(template_hash(&a.logic), template_hash(&b.logic));
    assert!(
        b.config_map.data.as_ref().unwrap()["conn.toml"].contains("tcp_idle_timeout_secs = 120")
    );
    // Scaling is not a config change: no rollout.
    let mut scaled = gc.clone();
    scaled.spec.conn.replicas = 7;
    let c = rendered(&scaled);
    assert_eq!(a.config_hash, c.config_hash);
}

#[test]
fn conn_drains_within_its_grace_period_and_rolls_surge_only() {
    let mut gc = minimal();
    gc.spec.conn.drain_window_seconds = 40;
    let r = rendered(&gc);
    let pod = r.conn.spec.template.spec.as_ref().unwrap();
    let grace = pod.termination_grace_period_seconds.unwrap();
    assert!(
        grace > 40 + 5,
        "grace {grace} must cover preStop sleep + drain window"
    );
    let c = &pod.containers[0];
    assert!(c.lifecycle.as_ref().unwrap().pre_stop.is_some());
    let probe = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
    let toml = &r.config_map.data.as_ref().unwrap()["conn.toml"];
    assert!(toml.contains("drain_window_secs = 40"), "{toml}");
    let ru = r
        .conn
        .spec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .clone()
        .unwrap();
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
}

#[test]
fn hpa_owns_logic_replicas_when_autoscaling() {
    let gc = sample();
    let r = rendered(&gc);
    assert!(r.logic_hpa.is_some());
    assert_eq!(r.logic.spec.replicas, None);
    let r = rendered(&minimal());
    assert!(r.logic_hpa.is_none());
    assert_eq!(r.logic.spec.replicas, Some(2));
}

#[test]
fn secrets_never_land_in_the_config_map() {
    let r = rendered(&sample());
    let env = r.logic.spec.template.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let mysql = env.iter().find(|e| e.name == "GIM_MYSQL__URL").unwrap();
    let sel = mysql
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("gim-mysql", "url"));
    for v in r.config_map.data.as_ref().unwrap().values() {
        assert!(v.contains("set-from-secret.invalid"), "{v}");
    }
}

#[test]
fn admin_token_reaches_logic_from_its_secret_only_when_named() {
    let env_of = |gc: &GimCluster| {
        rendered(gc)
            .logic
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
    };
    let mut gc = minimal();
    assert!(
        !env_of(&gc)
            .iter()
            .any(|e| e.name == "GIM_LOGIC__ADMIN_TOKEN")
    );
    gc.spec.logic.admin_token =
        Some(serde_saphyr::from_str("{name: gim-admin, key: token}").unwrap());
    let env = env_of(&gc);
    let sel = env
        .iter()
        .find(|e| e.name == "GIM_LOGIC__ADMIN_TOKEN")
        .and_then(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
        .expect("admin token from a secret");
    assert_eq!(
        (sel.name.as_str(), sel.key.as_str()),
        ("gim-admin", "token")
    );
    let r = rendered(&gc);
    let toml = &r.config_map.data.as_ref().unwrap()["logic.toml"];
    assert!(!toml.contains("admin_token"), "{toml}");
}

#[test]
fn invalid_config_overrides_are_reported_with_the_key() {
    let mut gc = minimal();
    gc.spec.config.max_body_bytes = Some(1_000_000);
    let err = render::render(&Target::from_cluster(&gc, 2)).unwrap_err();
    assert_eq!(err.reason, "InvalidConfig");
    assert!(
        err.message.contains("logic.max_body_bytes"),
        "{}",
        err.message
    );
}

#[test]
fn large_group_window_reaches_conn_and_out_of_range_values_name_the_key() {
    let mut gc = minimal();
    gc.spec.config.large_group_window_ms = Some(250);
    let r = rendered(&gc);
    let toml = &r.config_map.data.as_ref().unwrap()["conn.toml"];
    assert!(toml.contains("large_group_window_ms = 250"), "{toml}");
    for bad in [-1, 5000] {
        gc.spec.config.large_group_window_ms = Some(bad);
        let err = render::render(&Target::from_cluster(&gc, 2)).unwrap_err();
        assert!(
            err.message.contains("conn.large_group_window_ms"),
            "{bad}: {}",
            err.message
        );
    }
}

#[test]
fn migration_job_is_named_after_the_logic_image() {
    let gc = minimal();
    let a = rendered(&gc);
    let mut newer = gc.clone();
    newer.spec.images.logic = "gim-logic:2".into();
    let b = rendered(&newer);
    use kube::ResourceExt;
    assert_ne!(a.migrate_job.name_any(), b.migrate_job.name_any());
    let mut cfg = gc.clone();
    cfg.spec.config.max_mentions = Some(3);
    assert_eq!(
        a.migrate_job.name_any(),
        rendered(&cfg).migrate_job.name_any()
    );
    let args = a
        .migrate_job
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone();
    assert_eq!(args.unwrap()[0], "migrate");
}

#[test]
fn network_policies_admit_internal_ports_only_from_the_other_tier() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let gc = minimal();
    let r = rendered(&gc);
    assert_eq!(r.network_policies.len(), 2);
    let policy = |tier: &str| -> &NetworkPolicy {
        r.network_policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(&format!("mini-{tier}")))
            .unwrap()
    };
    // (allowed source component or None for any, ports) per rule.
    let rules = |p: &NetworkPolicy| -> Vec<(Option<String>, Vec<i32>)> {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_string()][..])
        );
        assert!(spec.egress.is_none(), "egress stays open");
        spec.ingress
            .as_ref()
            .unwrap()
            .iter()
            .map(|rule| {
                let from = rule.from.as_ref().map(|peers| {
                    assert_eq!(peers.len(), 1);
                    assert!(peers[0].namespace_selector.is_none(), "own namespace only");
                    let sel = peers[0].pod_selector.as_ref().unwrap();
                    let l = sel.match_labels.as_ref().unwrap();
                    assert_eq!(l["app.kubernetes.io/instance"], "mini");
                    l["app.kubernetes.io/component"].clone()
                });
                let ports = rule
                    .ports
                    .as_ref()
                    .unwrap()
                    .iter()
                    .map(|p| match p.port {
                        Some(IntOrString::Int(n)) => n,
                        ref other => panic!("numeric port expected: {other:?}"),
                    })
                    .collect();
                (from, ports)
            })
            .collect()
    };
    let (c, l) = (&gc.spec.conn.ports, &gc.spec.logic.ports);
    assert_eq!(
        rules(policy("conn")),
        vec![
            (Some("logic".to_string()), vec![c.grpc]),
            (None, vec![c.tcp, c.ws]),
            (None, vec![c.admin]),
        ]
    );
    assert_eq!(
        rules(policy("logic")),
        vec![
            (Some("conn".to_string()), vec![l.int]),
            (None, vec![l.client, l.server]),
            (None, vec![l.admin]),
        ]
    );
    // Each policy selects exactly its tier's pods (the migrate Job's pods are not selected).
    for tier in ["conn", "logic"] {
        let sel = policy(tier)
            .spec
            .as_ref()
            .unwrap()
            .pod_selector
            .clone()
            .unwrap();
        assert_eq!(
            sel.match_labels.unwrap(),
            r.conn
                .spec
                .selector
                .match_labels
                .clone()
                .map(|mut m| {
                    m.insert("app.kubernetes.io/component".into(), tier.into());
                    m
                })
                .unwrap()
        );
    }

    // adminFrom narrows only the admin rule.
    let mut narrowed = gc.clone();
    narrowed.spec.network_policy.admin_from = vec![
        serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        }))
        .unwrap(),
    ];
    let r2 = rendered(&narrowed);
    for p in &r2.network_policies {
        let ingress = p.spec.as_ref().unwrap().ingress.clone().unwrap();
        assert!(ingress[1].from.is_none(), "client ports stay open");
        let admin = ingress[2].from.as_ref().unwrap();
        assert!(admin[0].namespace_selector.is_some());
    }

    let mut off = gc.clone();
    off.spec.network_policy.enabled = false;
    assert!(rendered(&off).network_policies.is_empty());
}
