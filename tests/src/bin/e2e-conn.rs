//! A gim-conn node for the fault suite: config from `GIM_*` variables, and one `READY {json}` line
//! on stdout with the bound addresses once it listens (the test starts it on port 0).

use gim_common::config::{ConnConfig, load_from_process};
use gim_common::shutdown::Shutdown;
use gim_e2e::cluster::Ready;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg: ConnConfig = match load_from_process(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    gim_common::telemetry::init(&cfg.log);
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signal();
    let handle = match gim_conn::start(cfg, shutdown).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ready = Ready {
        tcp: handle.tcp_addr,
        ws: handle.ws_addr,
        node_id: handle.node_id.clone(),
    };
    println!("READY {}", serde_json::to_string(&ready).expect("json"));
    let _ = handle.wait().await;
    ExitCode::SUCCESS
}
