//! gim's Rust client SDK and the `gim` command-line tool.
//!
//! [`Client`] holds a long connection to a conn node (TCP frames or WebSocket binary frames, the
//! protocol in `gim_proto::connect`), signs in, heartbeats, acknowledges, syncs with pagination, and
//! on any disconnect or drain notice reconnects (to the next node of its list) and resyncs, so the
//! application sees every message of its lists exactly once and in seq order. [`Session`] is one
//! such connection without the reconnect logic. [`ClientApi`] and [`ServerApi`] wrap the gRPC
//! services for client apps and business servers; every error is a [`ClientError`] that carries the
//! gim code when the server sent one. [`admin`] calls logic's admin API (app creation). The `gim`
//! binary (src/main.rs) is built on these.
//!
//! Modules: [`client`] (with `order`: seq order across out-of-order commits), [`session`],
//! [`api`], [`admin`], [`endpoint`], [`error`].

pub mod admin;
pub mod api;
pub mod client;
pub mod endpoint;
pub mod error;
mod order;
pub mod session;

pub use api::{ClientApi, ServerApi, body_text, text_body};
pub use client::{Client, ClientOptions, Event};
pub use endpoint::Endpoint;
pub use error::ClientError;
pub use session::{Credentials, Notice, Session, SessionOptions};
