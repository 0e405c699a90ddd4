//! Quantile binning: each feature's values map to at most `max_bin` value bins plus one
//! missing bin (categorical features: the most frequent categories, an "other" bin for
//! the rest and for unseen ones, and a missing bin). The bin matrix is row-major, one byte
//! per value when every feature has at most 256 bins, two otherwise.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Column, Dataset};

/// Rows sampled (evenly spaced, so deterministic) to find bin edges.
pub const BIN_SAMPLE: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BinMapper {
    /// `upper[i]` is the largest value of bin `i`; the last is +inf. Bin `upper.len()` is
    /// the missing bin.
    Numeric { upper: Vec<f64> },
    /// `categories[i]` is bin `i`; bin `categories.len()` is "other" (rare or unseen);
    /// bin `categories.len() + 1` is missing.
    Categorical { categories: Vec<String> },
}

impl BinMapper {
    pub fn n_bins(&self) -> usize {
        match self {
            BinMapper::Numeric { upper } => upper.len() + 1,
            BinMapper::Categorical { categories } => categories.len() + 2,
        }
    }
    pub fn missing_bin(&self) -> usize {
        self.n_bins() - 1
    }
    pub fn is_categorical(&self) -> bool {
        matches!(self, BinMapper::Categorical { .. })
    }

    /// The bin of a numeric value: the first bin whose upper bound is >= v.
    #[inline]
    pub fn bin_value(upper: &[f64], v: f64) -> usize {
        if v.is_nan() {
            return upper.len();
        }
        upper.partition_point(|u| *u < v).min(upper.len() - 1)
    }

    fn numeric(values: &[f64], max_bin: usize) -> BinMapper {
        let n = values.len();
        let step = n.div_ceil(BIN_SAMPLE).max(1);
        let mut s: Vec<f64> = values
            .iter()
            .step_by(step)
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        s.sort_by(f64::total_cmp);
        let mut distinct: Vec<(f64, usize)> = Vec::new();
        for v in s {
            match distinct.last_mut() {
                Some((d, c)) if *d == v => *c += 1,
                _ => distinct.push((v, 1)),
            }
        }
        let mut upper = if distinct.len() <= max_bin {
            cuts(&distinct, max_bin)
        } else {
            // Negative and positive values get bins in proportion to their counts, with a
            // bin of their own for zero between: a threshold at exactly zero (a sign, a
            // difference to a competitor's price) is always available, as in LightGBM.
            let neg = distinct.partition_point(|d| d.0 < 0.0);
            let pos = distinct.partition_point(|d| d.0 <= 0.0);
            let (n_neg, n_pos): (usize, usize) = (
                distinct[..neg].iter().map(|d| d.1).sum(),
                distinct[pos..].iter().map(|d| d.1).sum(),
            );
            if n_neg == 0 || n_pos == 0 || max_bin < 4 {
                cuts(&distinct, max_bin)
            } else {
                let left = ((n_neg as f64 / (n_neg + n_pos) as f64 * (max_bin - 1) as f64)
                    as usize)
                    .clamp(1, max_bin - 2);
                let mut u = cuts(&distinct[..neg], left);
                u.push(-ZERO);
                u.push(ZERO);
                u.extend(cuts(&distinct[pos..], max_bin - 1 - left));
                u
            }
        };
        // Strictly increasing bounds (cuts between values next to ±ZERO could tie them).
        upper.dedup_by(|b, a| *b <= *a);
        upper.push(f64::INFINITY);
        BinMapper::Numeric { upper }
    }

    fn categorical(codes: &[u32], dict: &[String], max_bin: usize) -> BinMapper {
        let mut counts = vec![0usize; dict.len()];
        for &c in codes {
            if let Some(n) = counts.get_mut(c as usize) {
                *n += 1;
            }
        }
        let mut c: Vec<(&str, usize)> = dict
            .iter()
            .map(String::as_str)
            .zip(counts)
            .filter(|x| x.1 > 0)
            .collect();
        c.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        c.truncate(max_bin.saturating_sub(1).max(1));
        BinMapper::Categorical {
            categories: c.into_iter().map(|(s, _)| s.to_string()).collect(),
        }
    }

    /// For a categorical mapper: the bin of each code of `dict` (unknown categories go to
    /// the "other" bin).
    pub fn code_bins(&self, dict: &[String]) -> Vec<u16> {
        let idx = self.category_index();
        let other = match self {
            BinMapper::Categorical { categories } => categories.len(),
            BinMapper::Numeric { .. } => 0,
        };
        dict.iter()
            .map(|s| *idx.get(s.as_str()).unwrap_or(&other) as u16)
            .collect()
    }

    /// Index from category to bin, for a categorical mapper.
    pub fn category_index(&self) -> HashMap<&str, usize> {
        match self {
            BinMapper::Categorical { categories } => categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect(),
            BinMapper::Numeric { .. } => HashMap::new(),
        }
    }
}

/// Values within this of zero share zero's bin (LightGBM's `kZeroThreshold`).
const ZERO: f64 = 1e-35;

/// Upper bounds between the bins of sorted distinct values with their counts, at most
/// `max_bin` bins (the last bin's bound, +inf, not included): one bin per value when they
/// are few, else bins of about equal count, a frequent value alone in its bin.
fn cuts(distinct: &[(f64, usize)], max_bin: usize) -> Vec<f64> {
    let mut upper = Vec::new();
    if distinct.len() <= max_bin {
        for w in distinct.windows(2) {
            upper.push(mid(w[0].0, w[1].0));
        }
        return upper;
    }
    let total: usize = distinct.iter().map(|d| d.1).sum();
    let mut left = total;
    let mut bins_left = max_bin;
    let mut acc = 0usize;
    for i in 0..distinct.len() - 1 {
        if bins_left <= 1 {
            break;
        }
        acc += distinct[i].1;
        let target = left.div_ceil(bins_left);
        // Close the bin once it holds its share, or when the next value alone would
        // overflow it.
        if acc >= target || acc + distinct[i + 1].1 > target.saturating_mul(2) {
            upper.push(mid(distinct[i].0, distinct[i + 1].0));
            left -= acc;
            acc = 0;
            bins_left -= 1;
        }
    }
    upper
}

fn mid(a: f64, b: f64) -> f64 {
    let m = a + (b - a) / 2.0;
    if m >= b {
        a
    } else {
        m
    }
}

/// The bin matrix, row-major.
#[derive(Debug, Clone)]
pub enum Bins {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

#[derive(Debug, Clone)]
pub struct Binned {
    pub n_rows: usize,
    pub n_features: usize,
    pub mappers: Vec<BinMapper>,
    /// Offset of each feature's first bin in a histogram; the last entry is the total.
    pub offsets: Vec<usize>,
    /// Row-major: the histogram pass reads a whole row at once.
    pub bins: Bins,
    /// Feature-major copy: partitioning a leaf reads one feature of many rows.
    pub columns: Vec<Vec<u16>>,
}

/// Bins a column with an existing mapper.
pub fn bin_column(m: &BinMapper, col: &Column) -> Vec<u16> {
    match (m, col) {
        (BinMapper::Numeric { upper }, Column::Numeric(v)) => v
            .par_iter()
            .map(|x| BinMapper::bin_value(upper, *x) as u16)
            .collect(),
        (BinMapper::Categorical { categories }, Column::Categorical { codes, dict }) => {
            let table = m.code_bins(dict);
            let missing = (categories.len() + 1) as u16;
            codes
                .par_iter()
                .map(|c| table.get(*c as usize).copied().unwrap_or(missing))
                .collect()
        }
        // Kinds are checked by the caller; a mismatch bins everything as missing.
        (m, c) => vec![m.missing_bin() as u16; c.len()],
    }
}

impl Binned {
    /// Finds bin edges on `data` and bins it.
    pub fn fit(data: &Dataset, max_bin: usize) -> Binned {
        let mappers: Vec<BinMapper> = data
            .columns
            .par_iter()
            .map(|c| match c {
                Column::Numeric(v) => BinMapper::numeric(v, max_bin),
                Column::Categorical { codes, dict } => BinMapper::categorical(codes, dict, max_bin),
            })
            .collect();
        Binned::with_mappers(data, mappers)
    }

    /// Bins `data` with given mappers (a validation set binned like its training set).
    pub fn with_mappers(data: &Dataset, mappers: Vec<BinMapper>) -> Binned {
        let n_rows = data.n_rows();
        let n_features = mappers.len();
        let mut offsets = Vec::with_capacity(n_features + 1);
        let mut total = 0;
        for m in &mappers {
            offsets.push(total);
            total += m.n_bins();
        }
        offsets.push(total);
        let cols: Vec<Vec<u16>> = mappers
            .par_iter()
            .zip(data.columns.par_iter())
            .map(|(m, c)| bin_column(m, c))
            .collect();
        let wide = mappers.iter().any(|m| m.n_bins() > 256);
        let bins = if wide {
            let mut b = vec![0u16; n_rows * n_features];
            b.par_chunks_mut(n_features.max(1))
                .enumerate()
                .for_each(|(r, row)| {
                    for (f, v) in row.iter_mut().enumerate() {
                        *v = cols[f][r];
                    }
                });
            Bins::U16(b)
        } else {
            let mut b = vec![0u8; n_rows * n_features];
            b.par_chunks_mut(n_features.max(1))
                .enumerate()
                .for_each(|(r, row)| {
                    for (f, v) in row.iter_mut().enumerate() {
                        *v = cols[f][r] as u8;
                    }
                });
            Bins::U8(b)
        };
        Binned {
            n_rows,
            n_features,
            mappers,
            offsets,
            bins,
            columns: cols,
        }
    }

    #[inline]
    pub fn bin(&self, row: usize, f: usize) -> usize {
        match &self.bins {
            Bins::U8(b) => b[row * self.n_features + f] as usize,
            Bins::U16(b) => b[row * self.n_features + f] as usize,
        }
    }

    pub fn total_bins(&self) -> usize {
        self.offsets[self.n_features]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_distinct_values_get_one_bin_each() {
        let m = BinMapper::numeric(&[3.0, 1.0, 2.0, 2.0, f64::NAN], 255);
        let BinMapper::Numeric { upper } = &m else {
            panic!()
        };
        assert_eq!(upper.len(), 3);
        assert_eq!(BinMapper::bin_value(upper, 1.0), 0);
        assert_eq!(BinMapper::bin_value(upper, 2.0), 1);
        assert_eq!(BinMapper::bin_value(upper, 3.0), 2);
        assert_eq!(BinMapper::bin_value(upper, 99.0), 2);
        assert_eq!(BinMapper::bin_value(upper, -99.0), 0);
        assert_eq!(BinMapper::bin_value(upper, f64::NAN), 3);
    }

    #[test]
    fn quantile_bins_are_balanced() {
        let v: Vec<f64> = (0..100_000)
            .map(|i| ((i * 7919) % 100_000) as f64)
            .collect();
        let m = BinMapper::numeric(&v, 16);
        let BinMapper::Numeric { upper } = &m else {
            panic!()
        };
        assert_eq!(upper.len(), 16);
        let mut counts = vec![0usize; 17];
        for x in &v {
            counts[BinMapper::bin_value(upper, *x)] += 1;
        }
        for c in &counts[..16] {
            assert!((*c as f64 - 6250.0).abs() < 700.0, "{counts:?}");
        }
    }
}
