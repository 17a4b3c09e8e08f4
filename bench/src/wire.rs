//! One long connection, TCP (2-byte length frames, [`FrameCodec`]) or WebSocket (one binary
//! message per envelope), seen as a stream of payloads either way.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gim_proto::frame::FrameCodec;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::codec::Framed;

/// Read buffer per connection: the generator holds up to ~18 000 connections per process.
const READ_BUF: usize = 2048;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum Transport {
    Tcp,
    Ws,
}

pub enum Wire {
    Tcp(Framed<TcpStream, FrameCodec>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

impl Wire {
    /// Connects to `dst` (from `src` when given); `ws_path` is the WebSocket request path (`/ws` for gim).
    pub async fn connect(
        transport: Transport,
        src: Option<IpAddr>,
        dst: SocketAddr,
        ws_path: &str,
    ) -> anyhow::Result<Self> {
        let stream = crate::net::connect(src, dst).await?;
        Ok(match transport {
            Transport::Tcp => Wire::Tcp(Framed::with_capacity(
                stream,
                FrameCodec::default(),
                READ_BUF,
            )),
            Transport::Ws => {
                let config = WebSocketConfig::default().read_buffer_size(READ_BUF);
                let url = format!("ws://{dst}{ws_path}");
                let (ws, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await?;
                Wire::Ws(Box::new(ws))
            }
        })
    }

    pub async fn send(&mut self, payload: Bytes) -> anyhow::Result<()> {
        match self {
            Wire::Tcp(f) => f.send(payload).await?,
            Wire::Ws(w) => w.send(Message::Binary(payload)).await?,
        }
        Ok(())
    }

    /// The next payload; `None` when the peer closed. Cancel-safe (used inside `select!`).
    pub async fn recv(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Wire::Tcp(f) => Ok(f.next().await.transpose()?),
            Wire::Ws(w) => loop {
                match w.next().await.transpose()? {
                    None | Some(Message::Close(_)) => return Ok(None),
                    Some(Message::Binary(b)) => return Ok(Some(b)),
                    // Pings are answered by tungstenite itself; text frames are not gim's.
                    Some(_) => {}
                }
            },
        }
    }

    pub async fn close(mut self) {
        match &mut self {
            Wire::Tcp(f) => {
                let _ = SinkExt::<Bytes>::close(f).await;
            }
            Wire::Ws(w) => {
                let _ = SinkExt::close(w.as_mut()).await;
            }
        }
    }
}
