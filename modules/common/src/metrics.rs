//! Metrics: one `prometheus-client` [`Registry`] per process, owned by the
//! node; every role registers its metrics in it, and the metrics port
//! encodes it in the OpenMetrics text format (which Prometheus scrapes as
//! it is). The crate writes the exposition; label values go through
//! [`Label`], which escapes them (prometheus-client 0.24 writes a `&str`
//! value as it is, so a `"` in a model name would break the scrape).
//!
//! Latency histograms share one bucket layout, [`latency_buckets`], so one
//! query works on any of them and the quantiles of a 50 µs tabular request
//! and of a 10 s request under burst are both resolved.
//!
//! Numbers a role already keeps (request counts, queue depth) are encoded
//! at scrape time by a [`Collector`]; the helpers here write one family.

use std::fmt;

use std::fmt::Write as _;

use prometheus_client::encoding::{
    EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelValueEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::MetricType;

pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// The metrics endpoint's content type (OpenMetrics text 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The smallest latency bucket's upper bound: 25 µs.
pub const LATENCY_FIRST_BUCKET_SECONDS: f64 = 25e-6;
/// Each latency bucket is twice as wide as the one before.
pub const LATENCY_BUCKET_FACTOR: f64 = 2.0;
/// Latency buckets: 25 µs, 50 µs, ... 26.2 s (then +Inf).
pub const LATENCY_BUCKETS: u16 = 21;

/// The upper bounds (seconds) of every latency histogram's buckets: powers
/// of two from 25 µs to 26.2 s. A quantile read from them is within a
/// factor of two of the truth, from a cached tabular row to a long batch.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(
        LATENCY_FIRST_BUCKET_SECONDS,
        LATENCY_BUCKET_FACTOR,
        LATENCY_BUCKETS,
    )
}

/// An empty latency histogram (seconds) with [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// Encodes `registry` as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        tracing::warn!("cannot encode the metrics");
    }
    out
}

/// A label value, escaped as the text format requires (`\\`, `\"`, `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label<'a>(pub &'a str);

impl EncodeLabelValue for Label<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Encodes one collector alone (what a test reads).
pub fn encode_collector(collector: impl Collector) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    encode(&registry)
}

/// The name a counter family is declared with: OpenMetrics adds `_total`
/// to each sample, so a name given with it loses it here.
fn counter_name(name: &str) -> &str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Writes one counter family: `name` (its samples end in `_total`) with a
/// sample per label set.
pub fn counter_family<L: EncodeLabelSet, V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut family =
        encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one counter without labels.
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let family = encoder.encode_descriptor(counter_name(name), help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(family)
}

/// Writes one gauge family with a sample per label set (integer or float).
pub fn gauge_family<L: EncodeLabelSet, V: EncodeGaugeValue + fmt::Debug>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one histogram family with a histogram per label set; a family with
/// no label set yet is left out (an OpenMetrics histogram descriptor without
/// samples right before `# EOF` fails the monitoring role's parser).
pub fn histogram_family<'h, L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, &'h Histogram)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, histogram) in samples {
        histogram.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one histogram without labels.
pub fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> fmt::Result {
    histogram.encode(encoder.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

/// Writes one histogram family from buckets a role keeps itself:
/// `(upper bound, count in that bucket alone)` pairs, the last one +Inf,
/// then the sum of the observations.
pub fn bucket_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, Vec<(f64, u64)>, f64)>,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, buckets, sum) in samples {
        let count = buckets.iter().map(|(_, n)| n).sum();
        family
            .encode_family(&labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum, count, &buckets, None,
            )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Histogram);

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            counter_family(
                &mut encoder,
                "t_requests_total",
                "Requests.",
                [([("model", Label("a\"b\\c\nd"))], 3u64)],
            )?;
            counter(&mut encoder, "t_plain_total", "Plain.", 2)?;
            gauge_family(&mut encoder, "t_depth", "Depth.", [([("model", "m")], 4)])?;
            histogram_family(
                &mut encoder,
                "t_seconds",
                "Latency.",
                [([("model", "m")], &self.0)],
            )?;
            bucket_family(
                &mut encoder,
                "t_rows",
                "Rows.",
                [(
                    [("model", "m")],
                    vec![(1.0, 2), (2.0, 1), (f64::MAX, 0)],
                    4.0,
                )],
            )
        }
    }

    #[test]
    fn one_registry_encodes_every_kind_with_escaped_labels() {
        let histogram = latency_histogram();
        histogram.observe(40e-6);
        histogram.observe(3.0);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(histogram)));
        let text = encode(&registry);
        assert!(
            text.contains("t_requests_total{model=\"a\\\"b\\\\c\\nd\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE t_requests counter"), "{text}");
        assert!(text.contains("t_plain_total 2"), "{text}");
        assert!(text.contains("t_depth{model=\"m\"} 4"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{le=\"0.00005\",model=\"m\"} 1"),
            "{text}"
        );
        assert!(text.contains("t_seconds_count{model=\"m\"} 2"), "{text}");
        assert!(text.contains("t_rows_count{model=\"m\"} 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn latency_buckets_span_25_microseconds_to_26_seconds() {
        let buckets: Vec<f64> = latency_buckets().collect();
        assert_eq!(buckets.len(), LATENCY_BUCKETS as usize);
        assert!((buckets[0] - 25e-6).abs() < 1e-12);
        assert!(buckets[1] / buckets[0] == 2.0);
        let last = *buckets.last().unwrap();
        assert!(last > 20.0 && last < 30.0, "{last}");
    }
}
