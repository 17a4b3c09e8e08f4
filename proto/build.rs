//! Generates Rust code for gim's protobuf files with `protox` (a pure-Rust compiler), so building
//! needs no system `protoc`. The descriptor set is kept for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "gim/connect/v1/connect.proto",
    "gim/logic/v1/types.proto",
    "gim/logic/v1/logic_client_ext.proto",
    "gim/logic/v1/logic_server_ext.proto",
    "gim/logic/v1/logic_int.proto",
    "gim/conn/v1/conn_int.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=gim");
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("gim_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Envelope payloads are sliced out of the read buffer without copying.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
