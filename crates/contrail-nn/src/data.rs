//! From the shared feature table to network inputs: category maps, normalisation
//! statistics, missing-value indicators.
//!
//! Categorical features become ids into an embedding table: id 0 is "unknown or missing"
//! (a category not seen in training, or null), ids 1.. are the training categories in
//! the order they were first seen. Numeric features are standardised with the training
//! mean and standard deviation, clipped to ±[`CLIP`] so that one extreme value cannot
//! saturate the network, and missing values become 0 (the mean) plus a 0/1 indicator
//! input for every feature that had missing values in training.

use std::collections::HashMap;

use contrail_gbdt::data::MISSING;
use contrail_gbdt::{Column, Dataset};
use serde::{Deserialize, Serialize};

use crate::NnError;

/// Standardised values are clipped to ±CLIP.
pub const CLIP: f64 = 8.0;

/// How one feature becomes network inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum FeatureEncoding {
    Numeric {
        name: String,
        mean: f64,
        std: f64,
        /// Whether a missing-value indicator input follows the value.
        missing_indicator: bool,
        /// Whether values go through ln(1 + x) before standardising (non-negative
        /// features with a long right tail: counts, prices); `mean` and `std` are then
        /// those of ln(1 + x).
        #[serde(default)]
        log1p: bool,
        /// Piecewise-linear encoding: with edges e_0 < … < e_T (training quantiles), T more
        /// inputs, input t being 0 below e_(t-1), 1 above e_t and linear between. Empty:
        /// the standardised value only.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        bins: Vec<f64>,
    },
    Categorical {
        name: String,
        /// Training categories; category `categories[i]` has id `i + 1`.
        categories: Vec<String>,
        embedding_dim: usize,
    },
}

impl FeatureEncoding {
    pub fn name(&self) -> &str {
        match self {
            FeatureEncoding::Numeric { name, .. } | FeatureEncoding::Categorical { name, .. } => {
                name
            }
        }
    }
}

/// The encodings of every feature, in the dataset's feature order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoder {
    pub features: Vec<FeatureEncoding>,
}

/// Network inputs for a block of rows: categorical ids and numeric inputs, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    pub n_rows: usize,
    /// `n_rows × n_cat` embedding ids.
    pub cat: Vec<i32>,
    /// `n_rows × n_num` standardised inputs.
    pub num: Vec<f32>,
}

/// The embedding width of a categorical feature with `n` training categories when none
/// is given: grows like n^0.56, from 2 up to `cap`.
pub fn default_embedding_dim(n: usize, cap: usize) -> usize {
    let d = (1.6 * (n.max(1) as f64).powf(0.56)).round() as usize;
    d.clamp(2, cap.max(2))
}

/// A feature's minimum holding at least this share of its values (a point mass: zero
/// bookings to date, the fewest seats, the shortest lead) gets a bin of its own.
pub const POINT_MASS_SHARE: f64 = 0.01;

/// The most bin edges a numeric feature may have (256 bins).
const MAX_EDGES: usize = 257;

/// Up to `bins + 1` distinct quantile edges of the finite values (none when fewer than
/// two distinct edges or `bins` is 0). When the minimum is a point mass
/// ([`POINT_MASS_SHARE`]), the second edge is the next larger value, so that the first
/// input is exactly 0 at the minimum and 1 above it (the network can then set the
/// minimum apart, as a tree's split does, instead of blending it into a quantile bin);
/// that adds at most one edge.
fn quantile_edges(v: &[f64], bins: usize) -> Vec<f64> {
    if bins == 0 {
        return Vec::new();
    }
    let mut x: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if x.len() < 2 {
        return Vec::new();
    }
    x.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (0..=bins)
        .map(|k| x[((x.len() - 1) as f64 * k as f64 / bins as f64).round() as usize])
        .collect();
    edges.dedup();
    let at_min = x.partition_point(|v| *v <= x[0]);
    if at_min < x.len()
        && at_min as f64 >= POINT_MASS_SHARE * x.len() as f64
        && edges[1] > x[at_min]
    {
        // A value above the minimum means edges holds both ends (so edges[1] exists);
        // every edge is a value, so none lies between the minimum and the next value.
        edges.insert(1, x[at_min]);
        if edges.len() > MAX_EDGES {
            edges.remove(2);
        }
    }
    if edges.len() < 2 {
        Vec::new()
    } else {
        edges
    }
}

/// At most this many values of a numeric feature are kept for its quantile bins: data of
/// more rows contributes every k-th row's value (k = rows / SAMPLE rounded up).
pub const QUANTILE_SAMPLE: usize = 1 << 20;

/// Statistics of one numeric feature gathered over blocks: count, sum and minimum of
/// the finite values and of their ln(1 + x) in the first pass, central moments about
/// those means in the second (the order of [`Encoder::fit_with`]'s sums), and the sample
/// for its quantile bins.
#[derive(Default)]
struct NumericAcc {
    missing: bool,
    n: usize,
    sum: f64,
    min: f64,
    n_ln: usize,
    sum_ln: f64,
    m2: f64,
    m3: f64,
    m2_ln: f64,
    sample: Vec<f64>,
}

impl NumericAcc {
    /// First pass over `v`, whose first row is row `first_row` of the data; every
    /// `stride`-th row's value joins the sample when `bins`.
    fn first(&mut self, v: &[f64], first_row: usize, stride: usize, bins: bool) {
        for (r, &x) in v.iter().enumerate() {
            if !x.is_finite() {
                self.missing = true;
                continue;
            }
            self.n += 1;
            self.sum += x;
            self.min = self.min.min(x);
            let l = x.ln_1p();
            if l.is_finite() {
                self.n_ln += 1;
                self.sum_ln += l;
            }
            if bins && (first_row + r) % stride == 0 {
                self.sample.push(x);
            }
        }
    }

    fn second(&mut self, v: &[f64]) {
        let mean = self.sum / self.n.max(1) as f64;
        let mean_ln = self.sum_ln / self.n_ln.max(1) as f64;
        for &x in v.iter().filter(|x| x.is_finite()) {
            let d = x - mean;
            self.m2 += d * d;
            self.m3 += d * d * d;
            let l = x.ln_1p();
            if l.is_finite() {
                let d = l - mean_ln;
                self.m2_ln += d * d;
            }
        }
    }

    fn finish(self, name: String, bins: usize) -> FeatureEncoding {
        let n = self.n as f64;
        let (mean, std, skew, min) = if self.n == 0 {
            (0.0, 0.0, 0.0, 0.0)
        } else {
            let std = (self.m2 / n).sqrt();
            let skew = if std > 1e-12 {
                self.m3 / n / (std * std * std)
            } else {
                0.0
            };
            (self.sum / n, std, skew, self.min)
        };
        // A long right tail on non-negative values: work on ln(1 + x).
        let log1p = min >= 0.0 && skew > 2.0;
        let (mean, std) = if !log1p {
            (mean, std)
        } else if self.n_ln == 0 {
            (0.0, 0.0)
        } else {
            let n_ln = self.n_ln as f64;
            (self.sum_ln / n_ln, (self.m2_ln / n_ln).sqrt())
        };
        FeatureEncoding::Numeric {
            name,
            mean,
            std: if std > 1e-12 && std.is_finite() {
                std
            } else {
                1.0
            },
            missing_indicator: self.missing,
            log1p,
            bins: quantile_edges(&self.sample, bins),
        }
    }
}

/// Per-feature statistics gathered over blocks.
enum FeatureAcc {
    Numeric(String, NumericAcc),
    Categorical {
        name: String,
        seen: std::collections::HashSet<String>,
        categories: Vec<String>,
    },
}

impl FeatureAcc {
    fn name(&self) -> &str {
        match self {
            FeatureAcc::Numeric(name, _) | FeatureAcc::Categorical { name, .. } => name,
        }
    }
}

/// Fits an [`Encoder`] over blocks of rows (a file read a row group at a time) without
/// holding them: [`EncoderFit::observe`] every block in the data's order, then
/// [`EncoderFit::second_pass`] and every block again, then [`EncoderFit::finish`]. The
/// encoder equals [`Encoder::fit_with`] on all the rows at once (the same sums in the
/// same order), except that quantile bins of data over [`QUANTILE_SAMPLE`] rows come
/// from a systematic sample.
pub struct EncoderFit {
    total_rows: usize,
    stride: usize,
    embedding_dim: usize,
    max_dim: usize,
    numeric_bins: usize,
    second: bool,
    /// Rows observed in this pass.
    row: usize,
    features: Vec<FeatureAcc>,
}

impl EncoderFit {
    /// A fit over `total_rows` rows in all.
    pub fn new(
        total_rows: usize,
        embedding_dim: usize,
        max_dim: usize,
        numeric_bins: usize,
    ) -> EncoderFit {
        EncoderFit {
            total_rows,
            stride: total_rows.div_ceil(QUANTILE_SAMPLE).max(1),
            embedding_dim,
            max_dim,
            numeric_bins: numeric_bins.min(256),
            second: false,
            row: 0,
            features: Vec::new(),
        }
    }

    /// Starts the second pass over the same blocks in the same order.
    pub fn second_pass(&mut self) {
        self.second = true;
        self.row = 0;
    }

    /// Takes in one block of rows (features by name, in any order after the first block).
    pub fn observe(&mut self, data: &Dataset) -> Result<(), NnError> {
        if self.features.is_empty() && !self.second {
            for (name, c) in data.names.iter().zip(&data.columns) {
                self.features.push(match c {
                    Column::Numeric(_) => FeatureAcc::Numeric(
                        name.clone(),
                        NumericAcc {
                            min: f64::INFINITY,
                            ..NumericAcc::default()
                        },
                    ),
                    Column::Categorical { .. } => FeatureAcc::Categorical {
                        name: name.clone(),
                        seen: Default::default(),
                        categories: Vec::new(),
                    },
                });
            }
        }
        let first_row = self.row;
        if first_row + data.n_rows() > self.total_rows {
            return Err(NnError::Data(format!(
                "more rows than the {} declared",
                self.total_rows
            )));
        }
        for f in &mut self.features {
            let fname = f.name().to_string();
            let j = data.names.iter().position(|x| *x == fname).ok_or_else(|| {
                NnError::Data(format!("rows {first_row}..: feature `{fname}` is missing"))
            })?;
            match (f, &data.columns[j]) {
                (FeatureAcc::Numeric(_, acc), Column::Numeric(v)) => {
                    if self.second {
                        acc.second(v);
                    } else {
                        acc.first(v, first_row, self.stride, self.numeric_bins > 0);
                    }
                }
                (
                    FeatureAcc::Categorical {
                        seen, categories, ..
                    },
                    Column::Categorical { codes, dict },
                ) => {
                    if !self.second {
                        // Categories in order of first appearance (deterministic).
                        let mut local = vec![false; dict.len()];
                        for &c in codes {
                            if let Some(s) = local.get_mut(c as usize) {
                                if !*s {
                                    *s = true;
                                    let name = &dict[c as usize];
                                    if !seen.contains(name) {
                                        seen.insert(name.clone());
                                        categories.push(name.clone());
                                    }
                                }
                            }
                        }
                    }
                }
                (f, c) => {
                    let (was, is) = match (f, c) {
                        (FeatureAcc::Numeric { .. }, _) => ("numeric", "categorical"),
                        _ => ("categorical", "numeric"),
                    };
                    return Err(NnError::Data(format!(
                        "rows {first_row}..: feature `{fname}` is {is} here but {was} in the first rows"
                    )));
                }
            }
        }
        self.row += data.n_rows();
        Ok(())
    }

    /// The encoder.
    pub fn finish(self) -> Result<Encoder, NnError> {
        if self.total_rows == 0 || self.row != self.total_rows || !self.second {
            return Err(NnError::Data(if self.total_rows == 0 {
                "the training data has no rows".to_string()
            } else {
                format!(
                    "the encoder saw {} of {} rows in its second pass",
                    self.row, self.total_rows
                )
            }));
        }
        let mut features = Vec::with_capacity(self.features.len());
        for f in self.features {
            features.push(match f {
                FeatureAcc::Numeric(name, acc) => acc.finish(name, self.numeric_bins),
                FeatureAcc::Categorical {
                    name, categories, ..
                } => {
                    let d = if self.embedding_dim > 0 {
                        self.embedding_dim
                    } else {
                        default_embedding_dim(categories.len(), self.max_dim)
                    };
                    FeatureEncoding::Categorical {
                        name,
                        categories,
                        embedding_dim: d,
                    }
                }
            });
        }
        Ok(Encoder { features })
    }
}

impl Encoder {
    /// Fits category maps and normalisation statistics on training data. `embedding_dim`
    /// 0 picks each feature's width with [`default_embedding_dim`] capped at `max_dim`.
    pub fn fit(data: &Dataset, embedding_dim: usize, max_dim: usize) -> Result<Self, NnError> {
        Encoder::fit_with(data, embedding_dim, max_dim, 0)
    }

    /// [`Encoder::fit`] with a piecewise-linear encoding of `numeric_bins` quantile bins
    /// for every numeric feature (0: none).
    pub fn fit_with(
        data: &Dataset,
        embedding_dim: usize,
        max_dim: usize,
        numeric_bins: usize,
    ) -> Result<Self, NnError> {
        let mut f = EncoderFit::new(data.n_rows(), embedding_dim, max_dim, numeric_bins);
        f.observe(data)?;
        f.second_pass();
        f.observe(data)?;
        f.finish()
    }

    /// Checks an encoder read from a file: finite statistics, positive widths, bounded
    /// sizes, no duplicate categories.
    pub fn validate(&self) -> Result<(), String> {
        for (i, f) in self.features.iter().enumerate() {
            match f {
                FeatureEncoding::Numeric {
                    name,
                    mean,
                    std,
                    bins,
                    ..
                } => {
                    if !mean.is_finite() || !std.is_finite() || *std <= 0.0 {
                        return Err(format!(
                            "feature {i} ({name}): mean {mean} and std {std} must be finite, std > 0"
                        ));
                    }
                    if bins.len() == 1
                        || bins.len() > MAX_EDGES
                        || bins.iter().any(|b| !b.is_finite())
                        || bins.windows(2).any(|w| w[1] <= w[0])
                    {
                        return Err(format!(
                            "feature {i} ({name}): bin edges must be 2 to 257 finite increasing values"
                        ));
                    }
                }
                FeatureEncoding::Categorical {
                    name,
                    categories,
                    embedding_dim,
                } => {
                    if *embedding_dim == 0 || *embedding_dim > 4096 {
                        return Err(format!(
                            "feature {i} ({name}): embedding width {embedding_dim} is not in 1..=4096"
                        ));
                    }
                    let mut seen = std::collections::HashSet::new();
                    if let Some(d) = categories.iter().find(|c| !seen.insert(c.as_str())) {
                        return Err(format!(
                            "feature {i} ({name}): category {d:?} appears twice"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn n_cat(&self) -> usize {
        self.features
            .iter()
            .filter(|f| matches!(f, FeatureEncoding::Categorical { .. }))
            .count()
    }

    /// Numeric inputs: one per numeric feature plus one per missing indicator.
    pub fn n_num(&self) -> usize {
        self.features
            .iter()
            .map(|f| match f {
                FeatureEncoding::Numeric {
                    missing_indicator,
                    bins,
                    ..
                } => 1 + *missing_indicator as usize + bins.len().saturating_sub(1),
                FeatureEncoding::Categorical { .. } => 0,
            })
            .sum()
    }

    /// Embedding table sizes (categories + the unknown id) and widths.
    pub fn embeddings(&self) -> Vec<(usize, usize)> {
        self.features
            .iter()
            .filter_map(|f| match f {
                FeatureEncoding::Categorical {
                    categories,
                    embedding_dim,
                    ..
                } => Some((categories.len() + 1, *embedding_dim)),
                FeatureEncoding::Numeric { .. } => None,
            })
            .collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name().to_string()).collect()
    }

    /// Encodes a dataset whose features are these, by name and kind (in any column order;
    /// extra columns are ignored).
    pub fn encode(&self, data: &Dataset) -> Result<Encoded, NnError> {
        let n = data.n_rows();
        let (n_cat, n_num) = (self.n_cat(), self.n_num());
        let mut out = Encoded {
            n_rows: n,
            cat: vec![0; n * n_cat],
            num: vec![0.0; n * n_num],
        };
        let (mut ci, mut ni) = (0, 0);
        for f in &self.features {
            let j = data
                .names
                .iter()
                .position(|x| x == f.name())
                .ok_or_else(|| NnError::Data(format!("feature `{}` is missing", f.name())))?;
            match (f, &data.columns[j]) {
                (
                    FeatureEncoding::Numeric {
                        mean,
                        std,
                        missing_indicator,
                        log1p,
                        bins,
                        ..
                    },
                    Column::Numeric(v),
                ) => {
                    let nb = bins.len().saturating_sub(1);
                    for (r, x) in v.iter().enumerate() {
                        let row = &mut out.num[r * n_num..(r + 1) * n_num];
                        // (negative values, unseen in training, are taken as 0)
                        let x = if *log1p && x.is_finite() {
                            x.max(0.0).ln_1p()
                        } else {
                            *x
                        };
                        let raw = v[r];
                        if x.is_finite() {
                            row[ni] = ((x - mean) / std).clamp(-CLIP, CLIP) as f32;
                        } else if *missing_indicator {
                            row[ni + 1] = 1.0;
                        }
                        if nb > 0 && raw.is_finite() {
                            let at = ni + 1 + *missing_indicator as usize;
                            for t in 0..nb {
                                let (lo, hi) = (bins[t], bins[t + 1]);
                                row[at + t] = ((raw - lo) / (hi - lo)).clamp(0.0, 1.0) as f32;
                            }
                        }
                    }
                    ni += 1 + *missing_indicator as usize + nb;
                }
                (
                    FeatureEncoding::Categorical { categories, .. },
                    Column::Categorical { codes, dict },
                ) => {
                    let index: HashMap<&str, i32> = categories
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.as_str(), i as i32 + 1))
                        .collect();
                    let remap: Vec<i32> = dict
                        .iter()
                        .map(|s| index.get(s.as_str()).copied().unwrap_or(0))
                        .collect();
                    for (r, &c) in codes.iter().enumerate() {
                        out.cat[r * n_cat + ci] = if c == MISSING {
                            0
                        } else {
                            remap.get(c as usize).copied().unwrap_or(0)
                        };
                    }
                    ci += 1;
                }
                _ => {
                    return Err(NnError::Data(format!(
                        "feature `{}` is {} here but was {} in training",
                        f.name(),
                        if matches!(data.columns[j], Column::Numeric(_)) {
                            "numeric"
                        } else {
                            "categorical"
                        },
                        if matches!(f, FeatureEncoding::Numeric { .. }) {
                            "numeric"
                        } else {
                            "categorical"
                        }
                    )))
                }
            }
        }
        Ok(out)
    }
}

impl Encoded {
    /// The rows `rows` of this block, in that order.
    pub fn gather(&self, rows: &[usize]) -> Encoded {
        let n_cat = self.cat.len().checked_div(self.n_rows).unwrap_or(0);
        let n_num = self.num.len().checked_div(self.n_rows).unwrap_or(0);
        let mut out = Encoded {
            n_rows: rows.len(),
            cat: Vec::with_capacity(rows.len() * n_cat),
            num: Vec::with_capacity(rows.len() * n_num),
        };
        for &r in rows {
            out.cat
                .extend_from_slice(&self.cat[r * n_cat..(r + 1) * n_cat]);
            out.num
                .extend_from_slice(&self.num[r * n_num..(r + 1) * n_num]);
        }
        out
    }

    /// Appends the rows of `other` (of the same widths).
    pub fn append(&mut self, other: &Encoded) {
        self.n_rows += other.n_rows;
        self.cat.extend_from_slice(&other.cat);
        self.num.extend_from_slice(&other.num);
    }

    /// Rows `start..end` as a block.
    pub fn slice(&self, start: usize, end: usize) -> Encoded {
        let n_cat = self.cat.len().checked_div(self.n_rows).unwrap_or(0);
        let n_num = self.num.len().checked_div(self.n_rows).unwrap_or(0);
        Encoded {
            n_rows: end - start,
            cat: self.cat[start * n_cat..end * n_cat].to_vec(),
            num: self.num[start * n_num..end * n_num].to_vec(),
        }
    }
}
