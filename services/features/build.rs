//! Compiles proto/features.proto (pure Rust: protox, no protoc needed) into the tonic
//! server and client, and writes its encoded descriptors for the reflection service.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/features.proto");
    let fds = protox::compile(["proto/features.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("features_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
