//! Where the windows' numbers come from: the metrics text of the other
//! roles, read in-process when they share this process, scraped from their
//! metrics endpoints when they do not (`host:port`, or `dns:///name:port` for
//! every address a name resolves to). Two families are read: the gateways'
//! `mlserve_gateway_request_duration_seconds` (requests by model, version
//! and status class, with their latencies) and the inference processes'
//! `mlserve_inference_registry_followed_version` (which version each
//! followed alias serves).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlserve_common::metrics::LATENCY_BUCKETS;
use nom_openmetrics::parser::{openmetrics, prometheus};
use nom_openmetrics::Family;

use crate::window::{Reading, SourceReading, Totals};

/// The gateways' request histogram.
pub const REQUESTS_FAMILY: &str = "mlserve_gateway_request_duration_seconds";
/// The inference processes' followed-version gauge.
pub const FOLLOWED_FAMILY: &str = "mlserve_inference_registry_followed_version";

/// The metrics text of this process's own roles.
pub type LocalText = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Where readings come from.
#[derive(Clone)]
pub enum Sources {
    /// This process's roles, in-process.
    Local(LocalText),
    /// Metrics endpoints over HTTP.
    Targets {
        /// `host:port` or `dns:///name:port`.
        targets: Vec<String>,
        /// The HTTP client (its timeout bounds one scrape).
        client: reqwest::Client,
        /// The internal token, sent when the metrics ports ask for it.
        token: Option<String>,
    },
}

impl Sources {
    /// Scrapes `targets` with `timeout` per request.
    pub fn targets(targets: Vec<String>, timeout: Duration, token: Option<String>) -> Sources {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Sources::Targets {
            targets,
            client,
            token,
        }
    }

    /// One reading of every source; a source that cannot be read is left
    /// out (and logged), so its counts are not in this reading's windows.
    pub async fn read(&self) -> Reading {
        let mut sources = HashMap::new();
        let mut failed = 0;
        match self {
            Sources::Local(text) => {
                if let Some(text) = text() {
                    match parse(&text) {
                        Ok(reading) => {
                            sources.insert("local".to_string(), reading);
                        }
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot read this process's metrics")
                        }
                    }
                }
            }
            Sources::Targets {
                targets,
                client,
                token,
            } => {
                let addresses = resolve(targets).await;
                let reads = addresses.into_iter().map(|address| {
                    let (client, token) = (client.clone(), token.clone());
                    async move {
                        let result = scrape(&client, &address, token.as_deref()).await;
                        (address, result)
                    }
                });
                for (address, result) in futures_util::future::join_all(reads).await {
                    match result {
                        Ok(reading) => {
                            sources.insert(address, reading);
                        }
                        Err(err) => {
                            failed += 1;
                            tracing::warn!(target = %address, error = %err, "cannot scrape metrics")
                        }
                    }
                }
            }
        }
        Reading {
            at: Instant::now(),
            sources,
            failed,
        }
    }
}

/// Every `host:port` the targets stand for: `dns:///name:port` expands to each
/// address the name resolves to now (pods come and go).
async fn resolve(targets: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for target in targets {
        match target.strip_prefix("dns:///") {
            Some(name) => match tokio::net::lookup_host(name).await {
                Ok(addresses) => {
                    let mut found: Vec<String> = addresses.map(|a| a.to_string()).collect();
                    found.sort();
                    found.dedup();
                    out.extend(found);
                }
                Err(err) => tracing::warn!(%target, error = %err, "cannot resolve scrape target"),
            },
            None => out.push(target.clone()),
        }
    }
    out
}

async fn scrape(
    client: &reqwest::Client,
    address: &str,
    token: Option<&str>,
) -> Result<SourceReading, String> {
    let url = if address.starts_with("http://") || address.starts_with("https://") {
        address.to_string()
    } else {
        format!("http://{address}/metrics")
    };
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.header(mlserve_proto::internal_auth::INTERNAL_TOKEN_HEADER, token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    parse(&text)
}

/// Cumulative bucket counts per series: (model, version, status class) ->
/// [(upper bound, count)].
type Buckets = HashMap<(String, String, String), Vec<(f64, u64)>>;

/// Reads the two families this role needs out of a metrics text
/// (OpenMetrics, or the Prometheus text format).
pub fn parse(text: &str) -> Result<SourceReading, String> {
    let families = match openmetrics(text) {
        Ok((_, families)) => families,
        Err(om) => match prometheus(text) {
            Ok((_, families)) => families,
            Err(_) => return Err(format!("unreadable metrics text: {om}")),
        },
    };
    let mut reading = SourceReading::default();
    let mut series = Buckets::new();
    for family in &families {
        read_family(family, &mut reading, &mut series);
    }
    for ((model, version, class), mut cumulative) in series {
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut buckets = vec![0u64; LATENCY_BUCKETS as usize + 1];
        let mut previous = 0u64;
        for (i, (_, count)) in cumulative.iter().enumerate() {
            let slot = i.min(buckets.len() - 1);
            buckets[slot] += count.saturating_sub(previous);
            previous = previous.max(*count);
        }
        let requests = previous;
        let totals = reading.requests.entry((model, version)).or_default();
        totals.add(&Totals {
            requests,
            client_errors: if class == "4xx" { requests } else { 0 },
            server_errors: if class == "5xx" { requests } else { 0 },
            buckets,
        });
    }
    Ok(reading)
}

fn read_family(family: &Family, reading: &mut SourceReading, series: &mut Buckets) {
    for sample in &family.samples {
        let label = |name: &str| {
            sample
                .labels()
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.value.as_str())
        };
        let name = sample.name();
        if name == FOLLOWED_FAMILY {
            if let (Some(model), Some(follows)) = (label("model"), label("follows")) {
                let version = sample.number();
                if version.is_finite() && version >= 0.0 {
                    reading
                        .followed
                        .insert((model.to_string(), follows.to_string()), version as u64);
                }
            }
            continue;
        }
        if name.strip_suffix("_bucket") != Some(REQUESTS_FAMILY) {
            continue;
        }
        let (Some(model), Some(version), Some(class), Some(le)) = (
            label("model"),
            label("version"),
            label("status_class"),
            label("le"),
        ) else {
            continue;
        };
        // Requests a version cannot be told for (refused before routing)
        // belong to no version's window.
        if model.is_empty() || version.is_empty() {
            continue;
        }
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let count = sample.number();
        if !count.is_finite() || count < 0.0 {
            continue;
        }
        series
            .entry((model.to_string(), version.to_string(), class.to_string()))
            .or_default()
            .push((le, count as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlserve_common::metrics::{
        encode_collector, gauge_family, histogram_family, latency_histogram, Collector,
        DescriptorEncoder, Histogram, Label,
    };

    #[derive(Debug)]
    struct Gateway(Vec<(&'static str, &'static str, &'static str, Histogram)>);

    impl Collector for Gateway {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            histogram_family(
                &mut encoder,
                REQUESTS_FAMILY,
                "Requests.",
                self.0.iter().map(|(model, version, class, h)| {
                    (
                        [
                            ("route", Label("/v2/models/{model}/infer")),
                            ("model", Label(model)),
                            ("version", Label(version)),
                            ("status_class", Label(class)),
                        ],
                        h,
                    )
                }),
            )?;
            gauge_family(
                &mut encoder,
                FOLLOWED_FAMILY,
                "Followed.",
                [([("model", Label("m")), ("follows", Label("canary"))], 2)],
            )
        }
    }

    #[test]
    fn reads_the_gateway_histograms_and_followed_versions_as_encoded() {
        let ok = latency_histogram();
        for _ in 0..9 {
            ok.observe(300e-6);
        }
        let failed = latency_histogram();
        failed.observe(40e-6);
        let unknown = latency_histogram();
        unknown.observe(1.0);
        let text = encode_collector(Gateway(vec![
            ("m", "2", "2xx", ok),
            ("m", "2", "5xx", failed),
            ("m", "", "4xx", unknown),
        ]));
        let reading = parse(&text).unwrap();
        let totals = &reading.requests[&("m".to_string(), "2".to_string())];
        assert_eq!(totals.requests, 10);
        assert_eq!(totals.server_errors, 1);
        assert_eq!(totals.client_errors, 0);
        assert_eq!(totals.buckets[1], 1, "40 us is in the 25..50 us bucket");
        assert_eq!(totals.buckets[4], 9, "300 us is in the 200..400 us bucket");
        assert_eq!(reading.requests.len(), 1, "no version: not counted");
        assert_eq!(
            reading.followed[&("m".to_string(), "canary".to_string())],
            2
        );
    }

    /// A gateway that has served nothing yet: its request histogram family
    /// has no series, and it is the last family before `# EOF`.
    #[derive(Debug)]
    struct Idle;

    impl Collector for Idle {
        fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
            histogram_family::<[(&str, Label); 0]>(&mut encoder, REQUESTS_FAMILY, "Requests.", [])
        }
    }

    #[test]
    fn a_process_that_served_nothing_yet_reads_as_empty() {
        let reading = parse(&encode_collector(Idle)).unwrap();
        assert!(reading.requests.is_empty() && reading.followed.is_empty());
    }

    #[test]
    fn unreadable_text_is_an_error() {
        assert!(parse("this is { not metrics\n").is_err());
    }
}
