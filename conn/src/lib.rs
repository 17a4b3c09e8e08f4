//! gim-conn: the tier that holds client long connections (TCP frames and WebSocket `/ws`), relays
//! client requests to logic (`LogicInt`), receives pushes from logic (`ConnInt`) and fans them out
//! to local connections, and registers itself in Redis so logic can find it. It never touches
//! MySQL; logic stores every message before pushing, so conn may drop pushes and clients sync.
//!
//! Modules: [`session`] (the transport-agnostic state machine), [`admission`] (connection slots), [`tcp`] and [`ws`] (transports),
//! [`hub`] (local connections and the large-group index), [`grpc`] (`ConnInt`), [`coalesce`]
//! (busy large groups' pushes held briefly to go out together), [`health`] (not ready and
//! RECONNECT while Redis or logic is lost), [`registry`]
//! (Redis node lease), [`node`] (start, accept, drain), [`admin`], [`metrics`], [`wire`], [`logic`].

pub mod admin;
pub mod admission;
pub mod coalesce;
pub mod error;
pub mod grpc;
pub mod health;
pub mod hub;
pub mod logic;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod session;
pub mod tcp;
pub mod wire;
pub mod ws;

pub use error::{Error, Result};
pub use node::{ConnHandle, start, start_with_logic};
