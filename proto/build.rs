//! Compiles the .proto files with protox (pure Rust): no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=meridian");
    let fds = protox::compile(
        [
            "meridian/v1/kv.proto",
            "meridian/v1/lock.proto",
            "meridian/v1/placement.proto",
            "meridian/v1/tokens.proto",
            "meridian/v1/peer.proto",
        ],
        ["."],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
