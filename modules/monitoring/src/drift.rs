//! Drift statistics of one feature: how far a current sample's distribution
//! moved from a reference sample's.
//!
//! - PSI, the population stability index: the reference's quantiles cut the
//!   line into bins; PSI sums `(c - r) ln(c / r)` over the bins' shares.
//!   Under 0.1 is usually read as stable, over 0.2 as a real shift. It
//!   measures size, and on small samples it is noisy.
//! - The two-sample Kolmogorov–Smirnov statistic `D` (the largest gap
//!   between the two empirical distribution functions) and its p-value from
//!   the asymptotic Kolmogorov distribution. It measures evidence: with
//!   large samples it flags shifts too small to matter.
//!
//! A feature counts as drifted when both agree: PSI at or over its
//! threshold (the shift is large) and the KS p-value under alpha (it is not
//! noise).

/// The drift of one feature.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDrift {
    /// Population stability index.
    pub psi: f64,
    /// Kolmogorov–Smirnov statistic, 0..=1.
    pub ks: f64,
    /// The KS test's p-value.
    pub p_value: f64,
    /// Mean of the reference sample.
    pub reference_mean: f64,
    /// Mean of the current sample.
    pub current_mean: f64,
    /// The bins PSI compared, as the histograms a person would look at.
    pub histogram: Histogram,
}

/// Both samples over the same bins: under `edges[0]` (the reference's
/// minimum), then up to and including each further edge in turn, then over
/// the last one (the reference's maximum). `edges.len() + 1` counts each.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    /// The bin boundaries.
    pub edges: Vec<f64>,
    /// Reference values per bin.
    pub reference: Vec<u64>,
    /// Current values per bin.
    pub current: Vec<u64>,
}

/// When a feature counts as drifted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// PSI at or over this...
    pub psi: f64,
    /// ...and a KS p-value under this.
    pub ks_alpha: f64,
}

impl FeatureDrift {
    /// Whether both tests call it drifted.
    pub fn drifted(&self, t: &Thresholds) -> bool {
        self.psi >= t.psi && self.p_value < t.ks_alpha
    }
}

/// Smallest bin share used in PSI, so an empty bin has a finite term.
const MIN_SHARE: f64 = 1e-4;

/// The drift of `current` from `reference`, with PSI over up to `bins`
/// quantile bins of the reference. `None` when either sample is empty.
pub fn compare(reference: &[f64], current: &[f64], bins: usize) -> Option<FeatureDrift> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let mut r = reference.to_vec();
    let mut c = current.to_vec();
    r.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    let (ks, p_value) = kolmogorov_smirnov(&r, &c);
    let edges = edges(&r, bins.max(2));
    let low = r[0];
    let reference_counts = counts(&r, low, &edges);
    let current_counts = counts(&c, low, &edges);
    Some(FeatureDrift {
        psi: psi_of_counts(&reference_counts, &current_counts),
        ks,
        p_value,
        reference_mean: mean(&r),
        current_mean: mean(&c),
        histogram: Histogram {
            edges: std::iter::once(low).chain(edges).collect(),
            reference: reference_counts.iter().map(|&n| n as u64).collect(),
            current: current_counts.iter().map(|&n| n as u64).collect(),
        },
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The upper edges of the bins: the reference's quantiles at 1/bins,
/// 2/bins, ... and its maximum, deduplicated (a feature with few distinct
/// values gets fewer bins).
fn edges(sorted_reference: &[f64], bins: usize) -> Vec<f64> {
    let n = sorted_reference.len();
    let mut edges: Vec<f64> = (1..=bins)
        .map(|i| sorted_reference[(i * n / bins).min(n - 1)])
        .collect();
    edges.dedup();
    edges
}

/// Counts of `sorted` values per bin: below the reference's minimum `low`,
/// then up to and including each edge in turn, then over the last edge (the
/// reference's maximum). A shift out of the reference's range lands in the
/// outer bins, which the reference leaves empty.
fn counts(sorted: &[f64], low: f64, edges: &[f64]) -> Vec<usize> {
    let mut counts = Vec::with_capacity(edges.len() + 2);
    let mut start = sorted.partition_point(|v| *v < low);
    counts.push(start);
    for edge in edges {
        let end = sorted.partition_point(|v| v <= edge);
        counts.push(end - start);
        start = end;
    }
    counts.push(sorted.len() - start);
    counts
}

/// PSI of two samples' counts over the same bins: `(c - r) ln(c / r)`
/// summed over the bins' shares, each share at least [`MIN_SHARE`].
fn psi_of_counts(reference: &[usize], current: &[usize]) -> f64 {
    let shares = |counts: &[usize]| {
        let total = counts.iter().sum::<usize>().max(1) as f64;
        counts
            .iter()
            .map(|&n| (n as f64 / total).max(MIN_SHARE))
            .collect::<Vec<f64>>()
    };
    let (r, c) = (shares(reference), shares(current));
    r.iter().zip(&c).map(|(r, c)| (c - r) * (c / r).ln()).sum()
}

/// Population stability index of two sorted samples (the reference not
/// empty).
pub fn psi(sorted_reference: &[f64], sorted_current: &[f64], bins: usize) -> f64 {
    let edges = edges(sorted_reference, bins);
    let low = sorted_reference[0];
    psi_of_counts(
        &counts(sorted_reference, low, &edges),
        &counts(sorted_current, low, &edges),
    )
}

/// The two-sample KS statistic of two sorted samples and its asymptotic
/// p-value.
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (n, m) = (a.len(), b.len());
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < n && j < m {
        // Step past every copy of the next value in both samples at once,
        // so ties never open a false gap.
        let x = a[i].min(b[j]);
        while i < n && a[i] <= x {
            i += 1;
        }
        while j < m && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    let effective = (n * m) as f64 / (n + m) as f64;
    let root = effective.sqrt();
    let lambda = (root + 0.12 + 0.11 / root) * d;
    (d, kolmogorov_q(lambda))
}

/// `Q(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²)`: the probability that the
/// Kolmogorov statistic of equal distributions exceeds `λ`.
fn kolmogorov_q(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for k in 1..=100 {
        let term = sign * (-2.0 * (k * k) as f64 * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic standard normals (Box–Muller over a seeded generator).
    fn normals(rng: &mut fastrand::Rng, n: usize, shift: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u, v) = (rng.f64().max(1e-12), rng.f64());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() + shift
            })
            .collect()
    }

    const T: Thresholds = Thresholds {
        psi: 0.2,
        ks_alpha: 0.01,
    };

    #[test]
    fn a_shift_of_one_standard_deviation_is_drift() {
        let mut rng = fastrand::Rng::with_seed(7);
        let reference = normals(&mut rng, 1000, 0.0);
        let shifted = normals(&mut rng, 500, 1.0);
        let drift = compare(&reference, &shifted, 10).unwrap();
        assert!(drift.psi > 0.5, "{drift:?}");
        assert!(drift.ks > 0.3 && drift.p_value < 1e-10, "{drift:?}");
        assert!(drift.drifted(&T));
        assert!((drift.current_mean - drift.reference_mean - 1.0).abs() < 0.2);
    }

    #[test]
    fn samples_of_one_distribution_rarely_drift() {
        // 2,000 trials of 1,000 reference and 500 current rows from one
        // distribution: the false-positive rate of the combined rule.
        let mut rng = fastrand::Rng::with_seed(11);
        let trials = 2000;
        let mut psi_alone = 0;
        let mut ks_alone = 0;
        let mut both = 0;
        for _ in 0..trials {
            let reference = normals(&mut rng, 1000, 0.0);
            let current = normals(&mut rng, 500, 0.0);
            let d = compare(&reference, &current, 10).unwrap();
            psi_alone += usize::from(d.psi >= T.psi);
            ks_alone += usize::from(d.p_value < T.ks_alpha);
            both += usize::from(d.drifted(&T));
        }
        // The KS p-value is calibrated: about alpha of the trials fall
        // under it (binomial sd 0.22%).
        let ks_rate = ks_alone as f64 / trials as f64;
        assert!((0.002..0.025).contains(&ks_rate), "KS alone: {ks_rate}");
        assert_eq!(psi_alone, 0, "PSI over 0.2 on equal distributions");
        assert_eq!(both, 0);
    }

    #[test]
    fn the_histogram_holds_the_bins_psi_compared() {
        let d = compare(&[1.0, 2.0, 3.0, 4.0], &[0.0, 2.0, 5.0, 5.0], 2).unwrap();
        assert_eq!(d.histogram.edges, [1.0, 3.0, 4.0]);
        assert_eq!(d.histogram.reference, [0, 3, 1, 0]);
        assert_eq!(d.histogram.current, [1, 1, 0, 2]);
        let r = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(d.psi, psi(&r, &[0.0, 2.0, 5.0, 5.0], 2));
    }

    #[test]
    fn ks_matches_known_values() {
        // Disjoint samples: D = 1.
        let (d, p) = kolmogorov_smirnov(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        assert_eq!(d, 1.0);
        assert!(p < 0.1);
        // Identical samples, ties included: D = 0, p = 1.
        let same = [1.0, 1.0, 2.0, 3.0, 3.0];
        assert_eq!(kolmogorov_smirnov(&same, &same), (0.0, 1.0));
        // Q(1.36) is the 5% point of the Kolmogorov distribution.
        assert!((kolmogorov_q(1.358) - 0.05).abs() < 0.001);
    }

    #[test]
    fn a_constant_feature_drifts_only_when_it_moves() {
        let drift = compare(&[3.0; 100], &[3.0; 50], 10).unwrap();
        assert_eq!(drift.psi, 0.0);
        assert_eq!(drift.ks, 0.0);
        assert!(!drift.drifted(&T));
        let moved = compare(&[3.0; 100], &[4.0; 50], 10).unwrap();
        assert!(moved.drifted(&T), "{moved:?}");
    }

    #[test]
    fn empty_samples_give_nothing() {
        assert!(compare(&[], &[1.0], 10).is_none());
        assert!(compare(&[1.0], &[], 10).is_none());
    }
}
