//! Baseline (a) of BENCHMARKS.md: a bare WebSocket broadcast server, no auth, no storage: the
//! ceiling this machine gives any server for idle-connection memory (B1) and fan-out (B5).
//!
//! Protocol, shared with the Node.js baseline (`bench/baselines/node/server.js`): every binary
//! frame a client sends is forwarded unchanged to every other connected client.
//!
//! Usage: `ws-baseline [port] [host]`; prints `listening <port>` once bound.

use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames waiting for the slowest connection. A connection that falls further behind skips the
/// frames it missed (the broadcast channel reports the lag) instead of growing memory.
const BROADCAST_CAPACITY: usize = 4096;

type Frame = (u64, bytes::Bytes);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(0);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let listener = TcpListener::bind((host.as_str(), port)).await?;
    println!("listening {}", listener.local_addr()?.port());

    let (tx, _) = broadcast::channel::<Frame>(BROADCAST_CAPACITY);
    let next_id = AtomicU64::new(1);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = gim_common::shutdown::signal() => return Ok(()),
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = serve(stream, id, tx).await;
        });
    }
}

async fn serve(stream: TcpStream, id: u64, tx: broadcast::Sender<Frame>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    // The default 128 KiB read buffer per connection would dominate idle memory; gim's conn uses
    // small buffers too, so the comparison is like for like.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    let mut rx = tx.subscribe();
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(data))) => { let _ = tx.send((id, data)); }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(()),
                Some(Ok(_)) => {}
            },
            frame = rx.recv() => match frame {
                Ok((from, data)) if from != id => ws.send(Message::Binary(data)).await?,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
    }
}
