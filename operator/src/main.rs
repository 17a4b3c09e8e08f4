//! The operator binary: `gim-operator [--namespace NS] [--no-leader-election] [--admin-listen ADDR]`.

use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "gim-operator", about = "Reconciles GimCluster resources")]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "GIM_OPERATOR_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Run without leader election (only safe with one replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Namespace of the leader Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "gim-operator-leader")]
    lease_name: String,
    /// Lease duration in seconds; a new leader takes over at most this long after the old one
    /// stops renewing.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// This replica's identity in the Lease (default: pod name or host name + random suffix).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Periodic re-reconcile in seconds.
    #[arg(long, default_value_t = 30)]
    resync_seconds: u64,
    /// Admin HTTP listener: /metrics, /healthz, /readyz.
    #[arg(
        long,
        env = "GIM_OPERATOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:9300"
    )]
    admin_listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Before any TLS use: kube's client builds a rustls config, and only ring is compiled in.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .json()
        .init();
    let health = Arc::new(gim_operator::admin::Health::default());
    // Bound before anything else so probes answer (not ready) while the API server is slow.
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", args.admin_listen))?;
    tracing::info!(addr = %args.admin_listen, "admin listening");
    tokio::spawn(gim_operator::admin::serve(
        listener,
        health.clone(),
        std::future::pending(),
    ));
    let client = kube::Client::try_default().await?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "gim-operator".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    });
    let opts = gim_operator::Options {
        watch_namespace: args.namespace.clone(),
        leader: (!args.no_leader_election).then(|| gim_operator::LeaderOptions {
            namespace: args.lease_namespace.clone(),
            lease_name: args.lease_name.clone(),
            identity,
            lease: Duration::from_secs(args.lease_seconds.max(3)),
        }),
        settings: gim_operator::controller::Settings {
            resync: Duration::from_secs(args.resync_seconds.max(1)),
            ..Default::default()
        },
        health,
    };
    // SIGTERM (pod deletion) or SIGINT: stop reconciling and hand the lease over.
    gim_operator::run(client, opts, gim_common::shutdown::signal()).await
}
