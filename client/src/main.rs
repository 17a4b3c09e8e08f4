//! `gim`: a command-line client for gim. Mints tokens, sends, listens, syncs, manages users and
//! groups, shows the cluster, and serves the web chat demo. Results go to stdout, progress and
//! errors to stderr; failures exit non-zero with one readable line (with the gim code when the
//! server sent one).

mod cli;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
