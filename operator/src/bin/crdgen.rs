//! Writes the CRD YAML: `crdgen [OUT]` (default `crds/gimcluster.yaml`, `-` = stdout).
//! `crdgen --render-sample DIR` also writes the objects the operator renders for the chart's
//! sample GimCluster, one file per object, for `kubernetes-validate` in scripts/k8s-lint.sh.

use gim_operator::crd::GimCluster;
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--render-sample") {
        let dir = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("target/rendered"));
        let sample = args
            .get(2)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("charts/gim-operator/examples/gimcluster.yaml"));
        let text = std::fs::read_to_string(&sample)?;
        let gc: GimCluster = serde_saphyr::from_str(&text)?;
        std::fs::create_dir_all(&dir)?;
        for (name, yaml) in gim_operator::render::sample_documents(&gc)? {
            std::fs::write(dir.join(format!("{name}.yaml")), yaml)?;
        }
        eprintln!("wrote rendered objects to {}", dir.display());
        return Ok(());
    }
    let yaml = crd_yaml();
    match args.first().map(String::as_str) {
        Some("-") => print!("{yaml}"),
        other => {
            let out = PathBuf::from(other.unwrap_or("crds/gimcluster.yaml"));
            std::fs::write(&out, yaml)?;
            eprintln!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn crd_yaml() -> String {
    gim_operator::crd_yaml()
}
