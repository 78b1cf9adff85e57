//! Generates the gRPC code for the Open Inference Protocol with a vendored
//! `protoc`, so a build needs nothing installed beyond the Rust toolchain.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .bytes(".registry.UploadPart")
        .bytes(".registry.DownloadPart")
        .compile_protos(
            &["proto/grpc_service.proto", "proto/registry.proto"],
            &["proto"],
        )?;
    Ok(())
}
