//! The configuration's layering, removed keys, durations and closed sets.

use super::*;
use crate::Role;

#[test]
fn precedence_is_defaults_then_file_then_env_then_flags() {
    figment::Jail::expect_with(|jail| {
        let defaults = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
        assert_eq!(defaults.server.http_port, 8000);
        assert_eq!(defaults.server.grpc_port, 8001);

        jail.create_dir("config")?;
        jail.create_file(
            "config/mlserve.toml",
            "[server]\nhttp_port = 9000\ngrpc_port = 9001\nmetrics_port = 9002\n",
        )?;
        let from_file = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
        assert_eq!(
            (from_file.server.http_port, from_file.server.grpc_port),
            (9000, 9001)
        );

        jail.set_env("MLSERVE_SERVER__GRPC_PORT", "7001");
        jail.set_env("MLSERVE_SERVER__METRICS_PORT", "7002");
        jail.set_env("MLSERVE_BIN", "/not/a/config/key");
        let from_env = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
        assert_eq!(
            from_env.server.http_port, 9000,
            "file value kept where env is silent"
        );
        assert_eq!(from_env.server.grpc_port, 7001, "env beats file");

        let flags = Figment::new().merge(("server.metrics_port", 6002));
        let from_flags = Config::load(None, flags).map_err(|e| e.to_string())?;
        assert_eq!(from_flags.server.metrics_port, 6002, "flags beat env");
        assert_eq!(from_flags.server.grpc_port, 7001);
        Ok(())
    });
}

#[test]
fn env_reaches_nested_inference_keys() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("MLSERVE_INFERENCE__MODEL_REPOSITORY", "/srv/models");
        jail.set_env("MLSERVE_INFERENCE__MODEL_CONTROL_MODE", "poll");
        let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
        assert_eq!(
            config.inference.model_repository,
            PathBuf::from("/srv/models")
        );
        assert_eq!(config.inference.model_control_mode, ModelControlMode::Poll);
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors_in_file_and_env() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/mlserve.toml", "[server]\nhttp_prot = 1\n")?;
        let err = Config::load(None, Figment::new()).unwrap_err();
        assert!(err.contains("http_prot"), "{err}");
        jail.create_file("config/mlserve.toml", "")?;
        jail.set_env("MLSERVE_INFERENCE__MODEL_REPO", "x");
        let err = Config::load(None, Figment::new()).unwrap_err();
        assert!(err.contains("model_repo"), "{err}");
        Ok(())
    });
}

#[test]
fn a_named_config_file_must_exist() {
    let err =
        Config::load(Some(Path::new("/nonexistent/mlserve.toml")), Figment::new()).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn durations_are_humantime_strings_in_file_and_env() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file(
            "config/mlserve.toml",
            "[server]\nshutdown_grace = \"1m 30s\"\n[gateway]\ndefault_timeout = \"250ms\"\n",
        )?;
        jail.set_env("MLSERVE_FEATURES__REDIS_COMMAND_TIMEOUT", "5ms");
        let config = Config::load(None, Figment::new()).map_err(|e| e.to_string())?;
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(90));
        assert_eq!(config.gateway.default_timeout, Duration::from_millis(250));
        assert_eq!(
            config.features.redis_command_timeout,
            Duration::from_millis(5)
        );
        let flags = Figment::new().merge(("inference.repository_poll_interval", "2s"));
        let config = Config::load(None, flags).map_err(|e| e.to_string())?;
        assert_eq!(
            config.inference.repository_poll_interval,
            Duration::from_secs(2)
        );
        Ok(())
    });
}

#[test]
fn a_duration_without_a_unit_is_an_error_that_says_which_to_add() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/mlserve.toml", "[server]\nshutdown_grace = 30\n")?;
        let err = Config::load(None, Figment::new()).unwrap_err();
        assert!(err.contains("shutdown_grace"), "{err}");
        assert!(err.contains("\"30s\""), "{err}");
        jail.create_file(
            "config/mlserve.toml",
            "[server]\nshutdown_grace = \"soon\"\n",
        )?;
        let err = Config::load(None, Figment::new()).unwrap_err();
        assert!(err.contains("'soon' is not a duration"), "{err}");
        Ok(())
    });
}

#[test]
fn the_defaults_print_and_read_back_the_same() {
    figment::Jail::expect_with(|_jail| {
        let defaults = Config::default();
        let printed = serde_json::to_string(&defaults).map_err(|e| e.to_string())?;
        assert!(printed.contains("\"shutdown_grace\":\"30s\""), "{printed}");
        let read: Config = serde_json::from_str(&printed).map_err(|e| e.to_string())?;
        assert_eq!(read, defaults);
        Ok(())
    });
}

/// Every removed key, set in the file, fails with its replacement's name.
#[test]
fn each_removed_key_names_its_replacement() {
    let cases = [
        (
            "[gateway]\nfeatures_endpoint = \"http://f:8001\"\n",
            "gateway.features_endpoint",
            "features.endpoint",
        ),
        (
            "[gateway]\nmax_body_bytes = 10\n",
            "gateway.max_body_bytes",
            "server.http_max_body_bytes",
        ),
        (
            "[server]\nshutdown_grace_secs = 1.0\n",
            "server.shutdown_grace_secs",
            "server.shutdown_grace",
        ),
        (
            "[inference]\nrepository_poll_secs = 1.0\n",
            "inference.repository_poll_secs",
            "inference.repository_poll_interval",
        ),
        (
            "[inference]\nregistry_poll_secs = 0\n",
            "inference.registry_poll_secs",
            "inference.registry_poll_interval",
        ),
        (
            "[registry]\ngc_grace_secs = 0\n",
            "registry.gc_grace_secs",
            "registry.gc_grace",
        ),
        (
            "[registry]\ngc_interval_secs = 0\n",
            "registry.gc_interval_secs",
            "registry.gc_interval",
        ),
        (
            "[features]\nredis_command_timeout_ms = 5\n",
            "features.redis_command_timeout_ms",
            "features.redis_command_timeout",
        ),
        (
            "[features]\nredis_connect_timeout_ms = 5\n",
            "features.redis_connect_timeout_ms",
            "features.redis_connect_timeout",
        ),
        (
            "[features]\nredis_reconnect_delay_ms = 5\n",
            "features.redis_reconnect_delay_ms",
            "features.redis_reconnect_delay",
        ),
        (
            "[features]\nmean_refresh_secs = 5\n",
            "features.mean_refresh_secs",
            "features.mean_refresh",
        ),
        (
            "[gateway]\ndns_refresh_secs = 5.0\n",
            "gateway.dns_refresh_secs",
            "gateway.dns_refresh_interval",
        ),
        (
            "[gateway]\nconnect_timeout_secs = 5.0\n",
            "gateway.connect_timeout_secs",
            "gateway.connect_timeout",
        ),
        (
            "[gateway]\nhealth_check_secs = 5.0\n",
            "gateway.health_check_secs",
            "gateway.health_check_interval",
        ),
        (
            "[gateway]\neject_secs = 5.0\n",
            "gateway.eject_secs",
            "gateway.eject_for",
        ),
        (
            "[gateway]\ndefault_timeout_ms = 5\n",
            "gateway.default_timeout_ms",
            "gateway.default_timeout",
        ),
        (
            "[gateway]\nretry_after_secs = 5\n",
            "gateway.retry_after_secs",
            "gateway.retry_after",
        ),
        (
            "[gateway.jwt]\nleeway_secs = 5\n",
            "gateway.jwt.leeway_secs",
            "gateway.jwt.leeway",
        ),
        (
            "[events]\nblock_ms = 5\n",
            "events.block_ms",
            "events.block",
        ),
        (
            "[events]\nclaim_idle_secs = 5.0\n",
            "events.claim_idle_secs",
            "events.claim_idle",
        ),
        (
            "[events]\nretry_secs = 5.0\n",
            "events.retry_secs",
            "events.retry_delay",
        ),
        (
            "[gateway.pipelines.m]\ntransform = \"image\"\npostprocess = \"embedding\"\n",
            "gateway.pipelines.m.transform",
            "features.pipelines.m",
        ),
        (
            "[gateway.pipelines.m]\ninput = \"x\"\npostprocess = \"embedding\"\n",
            "gateway.pipelines.m.input",
            "features.pipelines.m",
        ),
    ];
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        for (toml, removed, instead) in cases {
            jail.create_file("config/mlserve.toml", toml)?;
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(
                err.contains(&format!("{removed} was removed")),
                "{toml}: {err}"
            );
            assert!(err.contains(instead), "{toml}: {err}");
        }
        Ok(())
    });
}

#[test]
fn a_removed_key_is_an_error_from_the_environment_and_flags_too() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("MLSERVE_GATEWAY__MAX_BODY_BYTES", "10");
        let err = Config::load(None, Figment::new()).unwrap_err();
        assert!(err.contains("server.http_max_body_bytes"), "{err}");
        jail.clear_env();
        let flags = Figment::new().merge(("server.shutdown_grace_secs", 3.0));
        let err = Config::load(None, flags).unwrap_err();
        assert!(err.contains("set server.shutdown_grace instead"), "{err}");
        Ok(())
    });
}

#[test]
fn closed_sets_refuse_a_bad_value_and_list_the_good_ones() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        let cases = [
            ("[log]\nformat = \"xml\"\n", "xml", "json"),
            (
                "[gateway.pipelines.m]\npostprocess = \"argmax\"\n",
                "argmax",
                "softmax_topk",
            ),
            (
                "[inference]\nmodel_control_mode = \"auto\"\n",
                "auto",
                "explicit",
            ),
        ];
        for (toml, bad, listed) in cases {
            jail.create_file("config/mlserve.toml", toml)?;
            let err = Config::load(None, Figment::new()).unwrap_err();
            assert!(
                err.contains(&format!("unknown variant: found `{bad}`")) || err.contains(bad),
                "{err}"
            );
            assert!(err.contains(listed), "{err}");
        }
        Ok(())
    });
}

#[test]
fn unset_is_absent() {
    let config = Config::default();
    assert_eq!(config.registry.endpoint, None);
    assert_eq!(config.registry.database_url, None);
    assert_eq!(config.registry.artifact_dir, None);
    assert_eq!(config.inference.artifact_cache_dir, None);
    assert_eq!(config.events.consumer, None);
    assert_eq!(config.server.worker_threads, None);
    assert_eq!(config.server.http_io_threads, None);
}

fn documented_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mlserve.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The leaf keys of `value` as (section, key), skipping maps keyed by user
/// names (pipelines, canary splits).
fn leaves(section: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, child) in object {
        match child {
            serde_json::Value::Object(_) if ["pipelines", "canary"].contains(&key.as_str()) => {}
            serde_json::Value::Object(_) => {
                let inner = if section.is_empty() {
                    key.clone()
                } else {
                    format!("{section}.{key}")
                };
                leaves(&inner, child, out);
            }
            _ => out.push((section.to_string(), key.clone())),
        }
    }
}

/// Every key the binary reads is in config/mlserve.toml, set or shown
/// commented out, inside its own section.
#[test]
fn every_key_is_documented_in_its_section() {
    let text = documented_file();
    let mut keys = Vec::new();
    leaves(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut keys,
    );
    assert!(keys.len() > 60, "{keys:?}");
    for (section, key) in keys {
        let header = format!("[{section}]\n");
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("section [{section}] is not documented"));
        let body = &text[start + header.len()..];
        let body = &body[..body.find("\n[").unwrap_or(body.len())];
        let documented = body.lines().any(|line| {
            let line = line.trim_start_matches('#').trim_start();
            line.starts_with(&format!("{key} ="))
        });
        assert!(
            documented,
            "{section}.{key} is not documented in config/mlserve.toml"
        );
    }
}

/// The values config/mlserve.toml sets are the built-in defaults, and the
/// file is accepted as it is.
#[test]
fn the_documented_values_are_the_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.create_dir("config")?;
        jail.create_file("config/mlserve.toml", &documented_file())?;
        let read = Config::load(None, Figment::new())?;
        assert_eq!(read, Config::default());
        Ok(())
    });
}

/// A cluster deployment refuses every pod-local store of the roles it runs,
/// naming each key; local deployments and shared stores pass.
#[test]
fn a_cluster_refuses_pod_local_stores() {
    let mut config = Config::default();
    assert_eq!(config.check_deployment(&Role::ALL), Ok(()));
    config.server.deployment = Deployment::Cluster;
    let err = config
        .check_deployment(&[Role::Gateway, Role::Features])
        .unwrap_err();
    for key in [
        "events.backend",
        "gateway.database_url",
        "gateway.rate_limit.backend",
        "features.database_url",
        "features.online_store",
    ] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    assert!(
        !err.contains("registry."),
        "roles not run are not checked: {err}"
    );
    assert_eq!(err.matches("events.backend").count(), 1, "{err}");

    config.features.database_url = Some("sqlite:///var/lib/mlserve/features.db".into());
    let err = config.check_deployment(&[Role::Features]).unwrap_err();
    assert!(
        err.contains("features.database_url must be a postgres:// URL"),
        "{err}"
    );

    let pg = Some("postgres://mlserve@postgres:5432/mlserve".to_string());
    config.events.backend = EventsBackend::Redis;
    config.gateway.database_url = pg.clone();
    config.gateway.rate_limit.backend = RateLimitBackend::Redis;
    config.features.database_url = pg.clone();
    config.features.online_store = OnlineStoreKind::Redis;
    config.registry.database_url = pg.clone();
    config.registry.artifact_backend = ArtifactBackend::S3;
    config.training.database_url = pg;
    assert_eq!(config.check_deployment(&Role::ALL), Ok(()));
    config.registry.artifact_backend = ArtifactBackend::Local;
    let err = config.check_deployment(&[Role::Training]).unwrap_err();
    assert!(
        err.contains("registry.artifact_backend must be \"s3\""),
        "{err}"
    );
}
