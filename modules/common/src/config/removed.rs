//! Keys that used to exist. Setting one (in the file, the environment or a
//! flag) fails start-up with an error that names what replaced it, instead
//! of the generic "unknown field" every other unknown key gets.

use figment::Figment;

/// A duration key that was a number of seconds or milliseconds.
const DURATION: &str = "a duration such as \"30s\" or \"500ms\"";

/// `(removed key, what to set instead)`.
const REMOVED: &[(&str, &str)] = &[
    // One key per setting.
    (
        "gateway.features_endpoint",
        "features.endpoint (flag --features-endpoint)",
    ),
    (
        "gateway.max_body_bytes",
        "server.http_max_body_bytes (flag --http-max-body-bytes)",
    ),
    // Durations in one form.
    ("server.shutdown_grace_secs", "server.shutdown_grace"),
    (
        "inference.repository_poll_secs",
        "inference.repository_poll_interval",
    ),
    (
        "inference.registry_poll_secs",
        "inference.registry_poll_interval",
    ),
    ("registry.gc_grace_secs", "registry.gc_grace"),
    ("registry.gc_interval_secs", "registry.gc_interval"),
    (
        "features.redis_command_timeout_ms",
        "features.redis_command_timeout",
    ),
    (
        "features.redis_connect_timeout_ms",
        "features.redis_connect_timeout",
    ),
    (
        "features.redis_reconnect_delay_ms",
        "features.redis_reconnect_delay",
    ),
    ("features.mean_refresh_secs", "features.mean_refresh"),
    ("gateway.dns_refresh_secs", "gateway.dns_refresh_interval"),
    ("gateway.connect_timeout_secs", "gateway.connect_timeout"),
    ("gateway.health_check_secs", "gateway.health_check_interval"),
    ("gateway.eject_secs", "gateway.eject_for"),
    ("gateway.default_timeout_ms", "gateway.default_timeout"),
    ("gateway.retry_after_secs", "gateway.retry_after"),
    ("gateway.jwt.leeway_secs", "gateway.jwt.leeway"),
    ("events.block_ms", "events.block"),
    ("events.claim_idle_secs", "events.claim_idle"),
    ("events.retry_secs", "events.retry_delay"),
];

/// Fails on the first removed key that `figment` sets, naming its replacement.
pub fn check(figment: &Figment) -> Result<(), String> {
    for (key, instead) in REMOVED {
        if figment.find_value(key).is_ok() {
            let form = if key.ends_with("_secs") || key.ends_with("_ms") {
                format!(", {DURATION}")
            } else {
                String::new()
            };
            return Err(format!(
                "configuration key {key} was removed: set {instead} instead{form}"
            ));
        }
    }
    pipelines(figment)
}

/// `gateway.pipelines.<model>.transform` and `.input` were accepted and never
/// read: the request's preprocessing is the features pipeline of the model.
fn pipelines(figment: &Figment) -> Result<(), String> {
    let Ok(pipelines) = figment.find_value("gateway.pipelines") else {
        return Ok(());
    };
    let Some(pipelines) = pipelines.as_dict() else {
        return Ok(());
    };
    for (model, pipeline) in pipelines {
        let Some(pipeline) = pipeline.as_dict() else {
            continue;
        };
        for key in ["transform", "input"] {
            if pipeline.contains_key(key) {
                return Err(format!(
                    "configuration key gateway.pipelines.{model}.{key} was removed (it was never \
                     read): the model's inputs come from its features pipeline, \
                     features.pipelines.{model} (its `output` names the model input), or one \
                     registered with POST /v1/features/pipelines"
                ));
            }
        }
    }
    Ok(())
}
