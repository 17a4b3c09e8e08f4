//! gim's contracts on the wire, shared by conn, logic, the client SDK and the benchmarks.
//!
//! The long-connection messages (`connect`) are wire-compatible with the original gim; the gRPC
//! services are versioned packages (`logic::v1`, `conn::v1`). [`frame`] is the TCP framing codec
//! (2-byte big-endian length + payload).
//!
//! Modules: `connect`, `logic`, `conn`, [`frame`], [`DESCRIPTOR_SET`] for server reflection.

pub mod frame;

/// Long-connection protocol (TCP frames and WebSocket binary frames).
pub mod connect {
    pub mod v1 {
        tonic::include_proto!("gim.connect.v1");
    }
}

/// Services implemented by gim-logic.
pub mod logic {
    pub mod v1 {
        tonic::include_proto!("gim.logic.v1");
    }
}

/// Services implemented by gim-conn.
pub mod conn {
    pub mod v1 {
        tonic::include_proto!("gim.conn.v1");
    }
}

/// Encoded `FileDescriptorSet` of every gim proto, for gRPC server reflection.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gim_descriptor.bin"));

#[cfg(test)]
mod golden;
