//! `gim-conn --config conn.toml`: runs one conn node until SIGTERM/SIGINT, then drains and exits.

use clap::Parser;
use gim_common::config::{ConnConfig, load_from_process};
use gim_common::shutdown::Shutdown;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "gim-conn",
    version,
    about = "gim connection node (TCP + WebSocket)"
)]
struct Args {
    /// TOML config file; `GIM_SECTION__KEY` environment variables override it.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    // First thing: two rustls providers in one process panic at first TLS use.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let cfg: ConnConfig = match load_from_process(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gim-conn: {e}");
            return ExitCode::from(2);
        }
    };
    gim_common::telemetry::init(&cfg.log);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.conn.worker_threads > 0 {
        rt.worker_threads(cfg.conn.worker_threads);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gim-conn: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "gim-conn failed");
            eprintln!("gim-conn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: ConnConfig) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let node = gim_conn::start(cfg, shutdown).await?;
    node.wait().await?;
    Ok(())
}
