//! Drift statistics: a reference window fixes each feature's buckets (quantiles of its
//! values, and one bucket for missing values); another window's distribution over the
//! same buckets is compared by the population stability index and the Jensen–Shannon
//! distance.
//!
//! - `PSI = Σ (c_i − r_i) · ln(c_i / r_i)` over buckets, with shares `r_i` (reference) and
//!   `c_i` (current); an empty bucket's share counts as [`PSI_FLOOR`] so a value seen on
//!   one side only gives a large, finite index. Common reading: below 0.1 stable, 0.1 to
//!   0.25 a moderate shift, above 0.25 a major one.
//! - Jensen–Shannon distance: the square root of `½ KL(R‖M) + ½ KL(C‖M)` with
//!   `M = (R + C) / 2` and base-2 logarithms; 0 for equal distributions, 1 for disjoint
//!   ones, symmetric, and defined with empty buckets.

/// The share an empty bucket counts as in [`psi`].
pub const PSI_FLOOR: f64 = 1e-4;

/// Value buckets of a feature: bucket `i` holds values `<= edges[i]` (and above the
/// previous edge), the last value bucket values above every edge; one more bucket holds
/// missing values (NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub edges: Vec<f64>,
}

impl Buckets {
    /// Edges at the `1/n, 2/n, …` quantiles of the non-missing `values` (distinct edges
    /// only: a feature with few values gets fewer buckets).
    pub fn from_reference(values: &[f64], n: usize) -> Buckets {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        v.sort_by(f64::total_cmp);
        let mut edges: Vec<f64> = Vec::new();
        if !v.is_empty() {
            for k in 1..n.max(1) {
                let e = v[(k * v.len() / n).min(v.len() - 1)];
                if edges.last().is_none_or(|l| e > *l) && e < v[v.len() - 1] {
                    edges.push(e);
                }
            }
        }
        Buckets { edges }
    }

    /// Value buckets plus the missing bucket.
    pub fn len(&self) -> usize {
        self.edges.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn bucket(&self, v: f64) -> usize {
        if v.is_nan() {
            self.edges.len() + 1
        } else {
            self.edges.partition_point(|e| *e < v)
        }
    }

    /// Adds `v` to `counts` (of length [`Buckets::len`]).
    pub fn add(&self, counts: &mut [u64], v: f64) {
        counts[self.bucket(v)] += 1;
    }
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|c| if n == 0 { 0.0 } else { *c as f64 / n as f64 })
        .collect()
}

/// The population stability index of `current` against `reference` (bucket counts).
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    shares(reference)
        .iter()
        .zip(shares(current))
        .map(|(r, c)| {
            let (r, c) = (r.max(PSI_FLOOR), c.max(PSI_FLOOR));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// The Jensen–Shannon distance (base 2, in [0, 1]) between two bucket counts.
pub fn js_distance(reference: &[u64], current: &[u64]) -> f64 {
    let (p, q) = (shares(reference), shares(current));
    let kl = |a: f64, m: f64| if a > 0.0 { a * (a / m).log2() } else { 0.0 };
    let d: f64 = p
        .iter()
        .zip(&q)
        .map(|(a, b)| {
            let m = (a + b) / 2.0;
            0.5 * kl(*a, m) + 0.5 * kl(*b, m)
        })
        .sum();
    d.max(0.0).sqrt().min(1.0)
}

/// Count, missing count, mean and standard deviation of a feature's values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub count: u64,
    pub missing: u64,
    sum: f64,
    sum_sq: f64,
}

impl Moments {
    pub fn add(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() {
            self.missing += 1;
        } else {
            self.sum += v;
            self.sum_sq += v * v;
        }
    }
    pub fn mean(&self) -> f64 {
        let n = (self.count - self.missing) as f64;
        if n == 0.0 {
            f64::NAN
        } else {
            self.sum / n
        }
    }
    pub fn std(&self) -> f64 {
        let n = (self.count - self.missing) as f64;
        if n == 0.0 {
            return f64::NAN;
        }
        let m = self.sum / n;
        (self.sum_sq / n - m * m).max(0.0).sqrt()
    }
    pub fn missing_share(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.missing as f64 / self.count as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_and_js_against_closed_forms() {
        // Equal distributions.
        assert_eq!(psi(&[10, 30, 60], &[1, 3, 6]), 0.0);
        assert_eq!(js_distance(&[10, 30, 60], &[1, 3, 6]), 0.0);
        // (1/2, 1/2) -> (1/4, 3/4): 1/4 ln 2 + 1/4 ln 1.5.
        let want = 0.25 * 2f64.ln() + 0.25 * 1.5f64.ln();
        assert!((psi(&[50, 50], &[25, 75]) - want).abs() < 1e-12);
        // PSI is symmetric in its two arguments for two buckets with floors unused.
        assert!((psi(&[25, 75], &[50, 50]) - want).abs() < 1e-12);
        // (1, 0) vs (1/2, 1/2): M = (3/4, 1/4); JS = 1/2 log2(4/3) + 1/4 log2(2/3) + 1/4.
        let js = 0.5 * (4f64 / 3.0).log2() + 0.25 * (2f64 / 3.0).log2() + 0.25;
        assert!((js_distance(&[10, 0], &[5, 5]) - js.sqrt()).abs() < 1e-12);
        assert!((js_distance(&[5, 5], &[10, 0]) - js.sqrt()).abs() < 1e-12);
        // Disjoint: distance 1; PSI large but finite through the floor.
        assert!((js_distance(&[10, 0], &[0, 10]) - 1.0).abs() < 1e-12);
        let p = psi(&[10, 0], &[0, 10]);
        let want = 2.0 * (1.0 - PSI_FLOOR) * (1.0 / PSI_FLOOR).ln();
        assert!((p - want).abs() < 1e-9, "{p} {want}");
    }

    #[test]
    fn reference_buckets_are_quantiles_with_a_missing_bucket() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64).chain([f64::NAN; 10]).collect();
        let b = Buckets::from_reference(&v, 10);
        assert_eq!(b.edges.len(), 9);
        assert_eq!(b.len(), 11);
        let mut c = vec![0u64; b.len()];
        for x in &v {
            b.add(&mut c, *x);
        }
        assert!(c[..10].iter().all(|n| (99..=101).contains(n)), "{c:?}");
        assert_eq!(c[10], 10);
        // Few distinct values: fewer buckets; every value lands where it should.
        let flags: Vec<f64> = (0..100).map(|i| (i % 4 == 0) as u8 as f64).collect();
        let b = Buckets::from_reference(&flags, 10);
        assert_eq!(b.edges, vec![0.0]);
        assert_eq!(
            (b.bucket(0.0), b.bucket(1.0), b.bucket(f64::NAN)),
            (0, 1, 2)
        );
        // A constant feature: one value bucket.
        assert_eq!(Buckets::from_reference(&[3.0; 5], 10).len(), 2);
        // Moments.
        let mut m = Moments::default();
        for x in [1.0, 2.0, 3.0, f64::NAN] {
            m.add(x);
        }
        assert_eq!((m.count, m.missing), (4, 1));
        assert!((m.mean() - 2.0).abs() < 1e-12 && (m.std() - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m.missing_share() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn a_shifted_window_drifts_and_a_resample_does_not() {
        let r: Vec<f64> = (0..20_000).map(|i| ((i * 7919) % 10_000) as f64).collect();
        let b = Buckets::from_reference(&r, 10);
        let count = |xs: &[f64]| {
            let mut c = vec![0u64; b.len()];
            for x in xs {
                b.add(&mut c, *x);
            }
            c
        };
        let rc = count(&r);
        let same: Vec<f64> = (0..5_000)
            .map(|i| ((i * 104_729) % 10_000) as f64)
            .collect();
        let shifted: Vec<f64> = same.iter().map(|x| x + 3_000.0).collect();
        assert!(psi(&rc, &count(&same)) < 0.01);
        assert!(psi(&rc, &count(&shifted)) > 0.25);
        assert!(js_distance(&rc, &count(&shifted)) > js_distance(&rc, &count(&same)));
    }
}
