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
    // The feature store: messages double as REST JSON bodies (serde), with
    // JSON-text fields carried as plain JSON values over REST.
    let json = "#[serde(with = \"crate::features::json_text\")]";
    let json_map = "#[serde(with = \"crate::features::json_text::map\")]";
    let json_vec = "#[serde(with = \"crate::features::json_text::vec\")]";
    tonic_prost_build::configure()
        .type_attribute(
            ".features",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .field_attribute(".features.Row.values", json_map)
        .field_attribute(".features.EntityRow.keys", json_map)
        .field_attribute(".features.HistoricalRow.keys", json_map)
        .field_attribute(".features.HistoricalRow.values_json", json_vec)
        .field_attribute(".features.FeatureValue.value_json", json)
        .field_attribute(".features.Pipeline.spec_json", json)
        .field_attribute(".features.TransformRequest.rows_json", json_vec)
        .field_attribute(
            ".features.TransformRequest.images",
            "#[serde(with = \"crate::features::json_text::base64_vec\")]",
        )
        .field_attribute(
            ".features.Tensor.data",
            "#[serde(with = \"crate::features::json_text::base64\")]",
        )
        .compile_protos(&["proto/features.proto"], &["proto"])?;
    Ok(())
}
