//! Where mlserve runs (`server.deployment`): on one machine with the embedded
//! stores, or as replicated pods that must share every piece of state.

use serde::{Deserialize, Serialize};

use super::{ArtifactBackend, Config, EventsBackend, OnlineStoreKind, RateLimitBackend};
use crate::Role;

/// How the process is deployed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// One machine: the embedded defaults (SQLite, a local artifact
    /// directory, the in-memory online store, in-process events) are fine.
    #[default]
    Local,
    /// Replicated pods (Kubernetes): every piece of shared state must live in
    /// a shared store (PostgreSQL, Redis, S3), so a role refuses to start on a
    /// store only its own pod would see.
    Cluster,
}

impl Config {
    /// No door without a lock: with user authentication on (or in a
    /// cluster), the node's own listeners, which serve every role's API
    /// without user credentials, may face the network only behind the
    /// internal token.
    pub fn check_no_open_door(&self) -> Result<(), String> {
        let locked_gateway = self.gateway.auth == crate::config::AuthMode::On;
        let cluster = self.server.deployment == Deployment::Cluster;
        if (locked_gateway || cluster) && self.server.node_ports_open() {
            return Err(format!(
                "server.node_host = \"{}\" would serve every role's API to the network without credentials{}: set server.internal_token (MLSERVE_SERVER__INTERNAL_TOKEN), or bind the node to loopback",
                self.server.node_bind_host(),
                if locked_gateway { " while gateway.auth is on" } else { " in a cluster" }
            ));
        }
        Ok(())
    }

    /// Checks that the stores the given roles use are shared ones when
    /// `server.deployment = "cluster"`; the error names every offending key.
    pub fn check_deployment(&self, roles: &[Role]) -> Result<(), String> {
        if self.server.deployment == Deployment::Local {
            return Ok(());
        }
        let mut problems = Vec::new();
        let mut need = |ok: bool, key: &str, wanted: &str| {
            if !ok && !problems.iter().any(|p: &String| p.starts_with(key)) {
                problems.push(format!("{key} must be {wanted}"));
            }
        };
        let postgres = |url: &Option<String>| {
            url.as_deref()
                .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
        };
        const PG: &str = "a postgres:// URL (SQLite is one pod's file)";
        const S3: &str = "\"s3\" (a local directory is one pod's disk)";
        for role in roles {
            need(
                self.events.backend == EventsBackend::Redis,
                "events.backend",
                "\"redis\" (in-process events never reach the other pods)",
            );
            match role {
                Role::Gateway => {
                    need(
                        postgres(&self.gateway.database_url),
                        "gateway.database_url",
                        PG,
                    );
                    need(
                        self.gateway.rate_limit.backend == RateLimitBackend::Redis,
                        "gateway.rate_limit.backend",
                        "\"redis\" (local buckets would multiply the limit by the replicas)",
                    );
                }
                Role::Features => {
                    need(
                        postgres(&self.features.database_url),
                        "features.database_url",
                        PG,
                    );
                    need(
                        self.features.online_store == OnlineStoreKind::Redis,
                        "features.online_store",
                        "\"redis\" (the in-memory store is one pod's memory)",
                    );
                }
                Role::Registry => {
                    need(
                        postgres(&self.registry.database_url),
                        "registry.database_url",
                        PG,
                    );
                    need(
                        self.registry.artifact_backend == ArtifactBackend::S3,
                        "registry.artifact_backend",
                        S3,
                    );
                }
                Role::Training => {
                    need(
                        postgres(&self.training.database_url),
                        "training.database_url",
                        PG,
                    );
                    need(
                        self.registry.artifact_backend == ArtifactBackend::S3,
                        "registry.artifact_backend",
                        S3,
                    );
                }
                Role::Monitoring => {
                    // The rollouts' database is the gateways' (the split).
                    let url = self
                        .monitoring
                        .database_url
                        .clone()
                        .or_else(|| self.gateway.database_url.clone());
                    need(
                        postgres(&url),
                        "monitoring.database_url (or gateway.database_url)",
                        PG,
                    );
                }
                Role::Inference => {}
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(format!(
            "server.deployment = \"cluster\" needs shared stores: {}",
            problems.join("; ")
        ))
    }
}
