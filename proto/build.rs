//! Compiles the .proto files with protox (pure Rust): no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=meridian");
    let fds = protox::compile(
        [
            "meridian/v1/kv.proto",
            "meridian/v1/lock.proto",
            "meridian/v1/placement.proto",
            "meridian/v1/tokens.proto",
            "meridian/v1/maintenance.proto",
            "meridian/v1/peer.proto",
        ],
        ["."],
    )?;
    // What gRPC server reflection shows (grpcurl): the client-facing services only; the
    // node-to-node protocol (peer.proto) is no client's business.
    let client_fds = protox::compile(
        [
            "meridian/v1/kv.proto",
            "meridian/v1/lock.proto",
            "meridian/v1/placement.proto",
            "meridian/v1/tokens.proto",
            "meridian/v1/maintenance.proto",
        ],
        ["."],
    )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("meridian_client_descriptor.bin"),
        prost::Message::encode_to_vec(&client_fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
