//! Compiles Triton's model configuration schema (`proto/model_config.proto`)
//! into a file descriptor set with a vendored `protoc`, for `src/pbtxt.rs` to
//! parse `config.pbtxt` against at run time. No Rust code is generated.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/model_config.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("model_config.descriptors.bin");
    let status = Command::new(protoc)
        .arg("--proto_path=proto")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg("proto/model_config.proto")
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed on proto/model_config.proto: {status}").into());
    }
    Ok(())
}
