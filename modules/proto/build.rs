//! Generates the gRPC code of every contract with a vendored `protoc` (a
//! build needs nothing installed beyond the Rust toolchain), then each
//! service's trait, client and adapters from the same descriptors
//! (`codegen/services.rs`).

#[path = "codegen/services.rs"]
mod services;

use std::path::PathBuf;

use services::Spec;

/// The services mlserve defines, each once.
const SERVICES: [Spec; 5] = [
    Spec {
        proto: "inference.GRPCInferenceService",
        messages: "crate::pb",
        trait_name: "InferenceService",
        prefix: "Inference",
        // What only some implementations serve (the inference role serves
        // system shared memory); the default body answers UNIMPLEMENTED.
        optional: &[
            "SystemSharedMemoryStatus",
            "SystemSharedMemoryRegister",
            "SystemSharedMemoryUnregister",
            "CudaSharedMemoryStatus",
            "CudaSharedMemoryRegister",
            "CudaSharedMemoryUnregister",
            "TraceSetting",
            "LogSettings",
        ],
        out_file: "inference.service.rs",
    },
    Spec {
        proto: "registry.RegistryService",
        messages: "crate::registry::pb",
        trait_name: "RegistryService",
        prefix: "Registry",
        optional: &[],
        out_file: "registry.service.rs",
    },
    Spec {
        proto: "features.FeatureService",
        messages: "crate::features::fpb",
        trait_name: "FeatureService",
        prefix: "Features",
        optional: &[],
        out_file: "features.service.rs",
    },
    Spec {
        proto: "training.TrainingService",
        messages: "crate::training::tpb",
        trait_name: "TrainingService",
        prefix: "Training",
        optional: &[],
        out_file: "training.service.rs",
    },
    Spec {
        proto: "monitoring.MonitoringService",
        messages: "crate::monitoring::mpb",
        trait_name: "MonitoringService",
        prefix: "Monitoring",
        optional: &[],
        out_file: "monitoring.service.rs",
    },
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=codegen");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let core = out.join("core.descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&core)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .bytes(".registry.UploadPart")
        .bytes(".registry.DownloadPart")
        .compile_protos(
            &["proto/grpc_service.proto", "proto/registry.proto"],
            &["proto"],
        )?;
    // The feature store. Only the catalog's definitions (entities, feature
    // views and their fields) derive serde: their definition files (TOML) and
    // stored specs use this shape. REST bodies are mlserve-features' own types.
    let features = out.join("features.descriptors.bin");
    let definition = "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]";
    tonic_prost_build::configure()
        .file_descriptor_set_path(&features)
        .type_attribute(".features.Entity", definition)
        .type_attribute(".features.Field", definition)
        .type_attribute(".features.FeatureView", definition)
        .type_attribute(".features.ViewFreshness", "#[derive(serde::Serialize)]")
        .type_attribute(
            ".features.LookupStatsResponse",
            "#[derive(serde::Serialize)]",
        )
        .type_attribute(".features.LatencyBucket", "#[derive(serde::Serialize)]")
        .compile_protos(&["proto/features.proto"], &["proto"])?;

    services::generate(&std::fs::read(&core)?, &SERVICES[..2], &out);
    services::generate(&std::fs::read(&features)?, &SERVICES[2..3], &out);
    // Training: every message is also a REST body (serialized as is).
    let training = out.join("training.descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&training)
        .type_attribute(".training", "#[derive(serde::Serialize)]")
        .compile_protos(&["proto/training.proto"], &["proto"])?;
    services::generate(&std::fs::read(&training)?, &SERVICES[3..4], &out);
    // Monitoring: the same, its messages are REST bodies as they are.
    let monitoring = out.join("monitoring.descriptors.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&monitoring)
        .type_attribute(
            ".monitoring",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_protos(&["proto/monitoring.proto"], &["proto"])?;
    services::generate(&std::fs::read(&monitoring)?, &SERVICES[4..], &out);
    Ok(())
}
