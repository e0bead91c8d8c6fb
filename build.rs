//! Compiles `schema/` with protox (pure Rust, no protoc) and generates the tonic code.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=schema");
    println!("cargo:rerun-if-changed=tests/fixtures/tutorial_user.proto");

    let fds = protox::compile(["user.proto"], ["schema"])?;
    std::fs::write(out_dir.join("user_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Ordered maps encode in a stable order, so the wire bytes are deterministic.
        .btree_map(".")
        // Small per-call buffers: long-lived streams would otherwise hold 16 KiB each.
        .codec_path("crate::codec::CompactCodec")
        .compile_fds(fds)?;

    // The original contract, unchanged, compiled into a client-only module that the
    // compatibility tests use to prove old clients keep working against this server.
    let legacy_dir = out_dir.join("legacy");
    std::fs::create_dir_all(&legacy_dir)?;
    let legacy = protox::compile(["tutorial_user.proto"], ["tests/fixtures"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .out_dir(&legacy_dir)
        .compile_fds(legacy)?;
    Ok(())
}
