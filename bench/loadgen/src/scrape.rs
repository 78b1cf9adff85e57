//! The server's queue depth over time, scraped from its Prometheus
//! `/metrics` endpoint: the sum of every sample of one gauge
//! (`mlserve_inference_queue_depth` by default; Triton's is
//! `nv_inference_pending_request_count`). A server without the endpoint or
//! the metric (a Flask baseline) just yields empty samples.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use http::Method;
use tokio::sync::mpsc::UnboundedSender;

use crate::http::{HttpConnection, HttpEndpoint, HttpRequest};

/// The default gauge.
pub const DEFAULT_METRIC: &str = "mlserve_inference_queue_depth";
/// How often the gauge is sampled.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for one scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

/// The sum of all samples of `metric` in a Prometheus text exposition, or
/// `None` when it has none.
pub fn sum_metric(text: &str, metric: &str) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = split_name(line) else {
            continue;
        };
        if name != metric {
            continue;
        }
        let Some(rest) = skip_labels(rest) else {
            continue;
        };
        let Some(value) = rest.split_whitespace().next().and_then(parse_value) else {
            continue;
        };
        *total.get_or_insert(0.0) += value;
    }
    total
}

/// `name` and what follows it (labels, value).
fn split_name(line: &str) -> Option<(&str, &str)> {
    let end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    (end > 0).then(|| (&line[..end], &line[end..]))
}

/// What follows the `{...}` label set, if any; quoted values may hold
/// braces, spaces and escaped quotes.
fn skip_labels(rest: &str) -> Option<&str> {
    let rest = rest.trim_start();
    if !rest.starts_with('{') {
        return Some(rest);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in rest.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(&rest[i + 1..]),
            _ => {}
        }
    }
    None
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// Samples `metric` at `url` every [`INTERVAL`] until the receiver is
/// gone, sending `(time since start, sum)` (`None` when the scrape failed
/// or the metric is absent).
pub async fn run(
    url: String,
    metric: String,
    start: Instant,
    tx: UnboundedSender<(Duration, Option<f64>)>,
) -> Result<()> {
    let endpoint = Arc::new(HttpEndpoint::parse(&url)?);
    let path = if endpoint.prefix.is_empty() {
        "/metrics".to_string()
    } else {
        endpoint.prefix.clone()
    };
    let request = HttpRequest::new(&endpoint, Method::GET, &path, &[], &[]);
    let mut connection = HttpConnection::new(endpoint);
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let at = start.elapsed();
        let sample = match tokio::time::timeout(SCRAPE_TIMEOUT, connection.send(&request)).await {
            Ok(Ok(answer)) if answer.status.is_success() => {
                sum_metric(&String::from_utf8_lossy(&answer.body), &metric)
            }
            Ok(_) => None,
            Err(_) => {
                // A timed-out request leaves the connection mid-response.
                connection = HttpConnection::new(connection.endpoint());
                None
            }
        };
        if tx.send((at, sample)).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP mlserve_inference_queue_depth Requests waiting in the queue.
# TYPE mlserve_inference_queue_depth gauge
mlserve_inference_queue_depth{model="resnet50",version="1"} 12
mlserve_inference_queue_depth{model="tab\"ular}",version="1"} 3.5
mlserve_inference_queue_depth_total{model="x"} 100
mlserve_inference_request_success_total{model="resnet50",version="1"} 42 1700000000000
nv_inference_pending_request_count{model="a",version="1"} 7
nv_inference_pending_request_count{model="b",version="1"} 1e1
plain_gauge 5
"#;

    #[test]
    fn sums_every_sample_of_the_metric() {
        assert_eq!(sum_metric(TEXT, DEFAULT_METRIC), Some(15.5));
        assert_eq!(
            sum_metric(TEXT, "nv_inference_pending_request_count"),
            Some(17.0)
        );
        assert_eq!(sum_metric(TEXT, "plain_gauge"), Some(5.0));
        assert_eq!(
            sum_metric(TEXT, "mlserve_inference_request_success_total"),
            Some(42.0)
        );
    }

    #[test]
    fn absent_or_broken_metrics_are_none() {
        assert_eq!(sum_metric(TEXT, "mlserve_inference_queue"), None);
        assert_eq!(sum_metric("", DEFAULT_METRIC), None);
        assert_eq!(sum_metric("<html>not found</html>", DEFAULT_METRIC), None);
        assert_eq!(
            sum_metric(
                "mlserve_inference_queue_depth{model=\"x\" 3",
                DEFAULT_METRIC
            ),
            None
        );
        assert_eq!(
            sum_metric("mlserve_inference_queue_depth abc", DEFAULT_METRIC),
            None
        );
    }

    #[test]
    fn special_values_parse() {
        assert_eq!(sum_metric("g +Inf\n", "g"), Some(f64::INFINITY));
        assert!(sum_metric("g NaN\n", "g").unwrap().is_nan());
    }
}
