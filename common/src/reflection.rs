//! gRPC server reflection for one listener, in both protocol versions: v1, and v1alpha, which
//! older grpcurl, Postman and evans still speak. Each listener lists only the services it serves
//! (and reflection itself), never the other listeners' APIs.

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

/// The reflection services' own names, listed beside the listener's services.
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Reflection servers (v1, v1alpha) listing `services`, described by the encoded
/// `FileDescriptorSet`s in `descriptors`.
#[allow(clippy::type_complexity)]
pub fn servers(
    services: &[&'static str],
    descriptors: &[&'static [u8]],
) -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    let builder = || {
        let mut b = Builder::configure();
        for d in descriptors {
            b = b.register_encoded_file_descriptor_set(d);
        }
        for s in services.iter().chain(REFLECTION.iter()) {
            b = b.with_service_name(*s);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}
