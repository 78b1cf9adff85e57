//! Wires the enabled roles into listeners and runs them until shutdown.
//! One file per service under `serve/`.

#[cfg(feature = "inference")]
mod inference;
mod listen;

use std::time::Duration;

use anyhow::Result;
use mlserve_common::{Config, Role, Shutdown};
use tokio::task::JoinSet;

/// Runs `roles` until SIGTERM or SIGINT, then drains within the grace period.
pub async fn run(config: Config, roles: Vec<Role>, ort_cores: usize) -> Result<()> {
    let shutdown = Shutdown::new();
    let mut servers: JoinSet<Result<()>> = JoinSet::new();
    let mut on_shutdown: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    for role in &roles {
        match role {
            #[cfg(feature = "inference")]
            Role::Inference => {
                inference::start(
                    &config,
                    ort_cores,
                    &shutdown,
                    &mut servers,
                    &mut on_shutdown,
                )
                .await?;
            }
            other => anyhow::bail!("role '{other}' is not implemented in this build"),
        }
    }
    wait_for_signal().await;
    tracing::info!("shutdown signal received: readiness off, draining in-flight requests");
    for hook in on_shutdown {
        hook();
    }
    shutdown.trigger();
    let grace = Duration::from_secs_f64(config.server.shutdown_grace_secs.max(0.0));
    let drained = tokio::time::timeout(grace, async {
        while let Some(result) = servers.join_next().await {
            match result {
                Ok(Err(err)) => tracing::error!(error = %err, "server stopped with an error"),
                Err(err) => tracing::error!(error = %err, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("all requests drained, exiting"),
        Err(_) => tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "grace period over, exiting with requests in flight"
        ),
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
