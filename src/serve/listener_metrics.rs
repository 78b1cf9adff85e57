//! What the listeners' bounds do, as metrics: the body budget in use
//! (`mlserve_http_body_budget_bytes`) and the connections refused by the
//! connection limits (`mlserve_connections_refused_total`), every listener
//! of the process together (the node's, the metrics port's and the
//! gateway's).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mlserve_common::metrics::{counter_family, gauge_family, Collector, DescriptorEncoder};
use mlserve_proto::body_guard::BodyBudget;

/// Why a connection was refused, with its `protocol` and `reason` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An HTTP connection over `server.http_max_connections`, closed as soon
    /// as it was accepted.
    HttpLimit,
    /// A gRPC connection over `server.grpc_max_connections`, closed as soon
    /// as it was accepted.
    GrpcLimit,
    /// A gRPC connection that sent nothing within the header timeout.
    GrpcFirstBytesTimeout,
}

impl Refusal {
    const ALL: [Refusal; 3] = [
        Refusal::HttpLimit,
        Refusal::GrpcLimit,
        Refusal::GrpcFirstBytesTimeout,
    ];

    fn labels(self) -> [(&'static str, &'static str); 2] {
        match self {
            Refusal::HttpLimit => [("protocol", "http"), ("reason", "limit")],
            Refusal::GrpcLimit => [("protocol", "grpc"), ("reason", "limit")],
            Refusal::GrpcFirstBytesTimeout => {
                [("protocol", "grpc"), ("reason", "first_bytes_timeout")]
            }
        }
    }
}

/// Connections refused by the process's listeners, by [`Refusal`].
#[derive(Debug, Default)]
pub struct RefusedConnections {
    counts: [AtomicU64; 3],
}

impl RefusedConnections {
    /// Counts one refused connection.
    pub fn count(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far for `why`.
    pub fn get(&self, why: Refusal) -> u64 {
        self.counts[why as usize].load(Ordering::Relaxed)
    }
}

/// Encodes the body budget and the refused connections at scrape time.
#[derive(Debug)]
pub struct ListenerCollector {
    /// The process's body budget.
    pub budget: Arc<BodyBudget>,
    /// The listeners' refusals.
    pub refused: Arc<RefusedConnections>,
}

impl Collector for ListenerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        gauge_family(
            &mut encoder,
            "mlserve_http_body_budget_bytes",
            "Bytes of the request body budget (server.http_body_budget_bytes): reserved now by bodies in flight and their inflated copies (in_use), and in all (limit).",
            [
                ([("state", "in_use")], self.budget.in_use_bytes() as i64),
                ([("state", "limit")], self.budget.total_bytes() as i64),
            ],
        )?;
        counter_family(
            &mut encoder,
            "mlserve_connections_refused_total",
            "Connections the listeners closed under their limits: over the connection limit (limit), or a gRPC connection that sent nothing in time (first_bytes_timeout).",
            Refusal::ALL.map(|why| (why.labels(), self.refused.get(why))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_and_the_refusals_are_encoded() {
        let budget = BodyBudget::new(100 * 1024, 1024 * 1024);
        let refused = Arc::new(RefusedConnections::default());
        refused.count(Refusal::GrpcLimit);
        refused.count(Refusal::GrpcLimit);
        refused.count(Refusal::GrpcFirstBytesTimeout);
        let text = mlserve_common::metrics::encode_collector(ListenerCollector { budget, refused });
        for line in [
            "mlserve_http_body_budget_bytes{state=\"in_use\"} 0",
            "mlserve_http_body_budget_bytes{state=\"limit\"} 102400",
            "mlserve_connections_refused_total{protocol=\"http\",reason=\"limit\"} 0",
            "mlserve_connections_refused_total{protocol=\"grpc\",reason=\"limit\"} 2",
            "mlserve_connections_refused_total{protocol=\"grpc\",reason=\"first_bytes_timeout\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
