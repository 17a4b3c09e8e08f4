//! The committed CRD YAML must match what the Rust types generate (CI fails when stale).

use std::path::PathBuf;

#[test]
fn committed_crd_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let generated = gim_operator::crd_yaml();
    for path in [
        "crds/gimcluster.yaml",
        "charts/gim-operator/crds/gimcluster.yaml",
    ] {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} is stale: run `cargo run -p gim-operator --bin crdgen && cp crds/gimcluster.yaml charts/gim-operator/crds/`"
        );
    }
}

#[test]
fn crd_has_scale_status_and_validation() {
    use kube::CustomResourceExt;
    let crd = gim_operator::crd::GimCluster::crd();
    let v = &crd.spec.versions[0];
    let sub = v.subresources.as_ref().unwrap();
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().unwrap();
    assert_eq!(scale.spec_replicas_path, ".spec.conn.replicas");
    assert_eq!(scale.status_replicas_path, ".status.conn.replicas");
    let json = serde_json::to_value(v.schema.as_ref().unwrap()).unwrap();
    let replicas = &json["openAPIV3Schema"]["properties"]["spec"]["properties"]["conn"]["properties"]
        ["replicas"];
    assert_eq!(replicas["minimum"], 0.0, "{replicas}");
    let tcp = &json["openAPIV3Schema"]["properties"]["spec"]["properties"]["conn"]["properties"]["ports"]
        ["properties"]["tcp"];
    assert_eq!(tcp["maximum"], 65535.0, "{tcp}");
    let cols: Vec<_> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert!(
        cols.contains(&"Ready") && cols.contains(&"Connections"),
        "{cols:?}"
    );
}
