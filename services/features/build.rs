//! Compiles proto/features.proto (pure Rust: protox, no protoc needed) into the tonic
//! server and client.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/features.proto");
    let fds = protox::compile(["proto/features.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
