//! gim-bench: an open-loop load generator that speaks gim's long-connection protocol (TCP frames
//! and WebSocket) directly, plus the client side of the two broadcast baselines.
//!
//! Open loop: every send has a scheduled time fixed before the run, and latency is measured from
//! that time, so a slow server shows up as latency instead of silently lowering the offered load
//! (no coordinated omission). Connections spread over several 127.0.0.x source addresses and
//! several target nodes; large runs spread over several worker processes.
//!
//! Modules: [`hist`], [`net`], [`wire`], [`cpu`], [`baseline`], [`nats`], [`fixture`], [`gim`], [`scenario`],
//! [`worker`], [`report`], [`xmpp`] and [`peer`] (ejabberd, the IM peer).

pub mod baseline;
pub mod cpu;
pub mod fixture;
pub mod gim;
pub mod hist;
pub mod nats;
pub mod net;
pub mod peer;
pub mod report;
mod report_md;
pub mod scenario;
pub mod wire;
pub mod worker;
pub mod xmpp;
