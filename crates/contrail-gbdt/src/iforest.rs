//! Isolation forest: scikit-learn's parameters and semantics, deterministic and parallel.
//!
//! Each tree isolates a sample of `max_samples` training rows (drawn without replacement,
//! or with it when `bootstrap`) on `max_features` of the features: a node splits on a
//! feature drawn at random among those not constant on its rows, at a threshold drawn
//! uniformly between their minimum and maximum (rows `<=` it go left), until the node holds
//! one row or reaches depth `ceil(log2(max_samples))`. The path length of a row in a tree
//! is its depth plus `c(n)` for the `n` sample rows of its leaf, where
//! `c(n) = 2 H(n-1) - 2 (n-1) / n` (`c(1) = 0`, `c(2) = 1`) is the average path length of an
//! unsuccessful search in a binary search tree of `n` keys. The anomaly score of a row is
//! `s(x, ψ) = 2^(-E[h(x)] / c(ψ))` with `ψ` the sample size: in (0, 1], higher is more
//! anomalous, and equal to minus scikit-learn's `score_samples`.
//!
//! `contamination`: `auto` flags rows with `s > 0.5` (scikit-learn's `offset_ = -0.5`); a
//! fraction `c` flags rows whose score is above the `(1 - c)` quantile (linear
//! interpolation) of the training rows' scores.
//!
//! Missing values, which scikit-learn rejects: a node's threshold is drawn between the
//! non-missing values; rows missing the feature follow the child that received more of
//! the node's rows with a value (recorded per node, so scoring routes them the same way).
//!
//! Determinism: each tree draws from its own generator seeded from `(seed, tree index)`,
//! and a row's path lengths are added in tree order, so models and scores are the same
//! bits for any thread count.

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Column, Dataset};
use crate::package::{self, DataFingerprint, Writer, FORMAT_VERSION};
use crate::GbdtError;

pub const MODEL_KIND: &str = "isolation_forest";

/// Rows per tree: scikit-learn's `max_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxSamples {
    /// `min(256, n_rows)`.
    Auto,
    /// That many rows (all of them when there are fewer).
    Count(usize),
    /// That share of the rows, in (0, 1].
    Fraction(f64),
}

/// Features per tree: scikit-learn's `max_features`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxFeatures {
    Count(usize),
    /// That share of the features, in (0, 1] (at least one).
    Fraction(f64),
}

/// Share of anomalies expected in the training data: scikit-learn's `contamination`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Contamination {
    /// Flag rows with a score above 0.5.
    Auto,
    /// In (0, 0.5]: flag that share of the training rows.
    Fraction(f64),
}

impl MaxSamples {
    /// `auto`, an integer (a count) or a number with a point (a fraction).
    pub fn parse(s: &str) -> Result<MaxSamples, GbdtError> {
        match parse_count_or_fraction(s, "max_samples", true)? {
            None => Ok(MaxSamples::Auto),
            Some(Ok(n)) => Ok(MaxSamples::Count(n)),
            Some(Err(f)) => Ok(MaxSamples::Fraction(f)),
        }
    }
}

impl MaxFeatures {
    /// An integer (a count) or a number with a point (a fraction).
    pub fn parse(s: &str) -> Result<MaxFeatures, GbdtError> {
        match parse_count_or_fraction(s, "max_features", false)? {
            Some(Ok(n)) => Ok(MaxFeatures::Count(n)),
            Some(Err(f)) => Ok(MaxFeatures::Fraction(f)),
            None => Err(GbdtError::Param {
                name: "max_features",
                reason: "`auto` is not accepted".into(),
            }),
        }
    }
}

impl Contamination {
    /// `auto` or a fraction.
    pub fn parse(s: &str) -> Result<Contamination, GbdtError> {
        if s == "auto" {
            return Ok(Contamination::Auto);
        }
        s.parse::<f64>()
            .map(Contamination::Fraction)
            .map_err(|_| GbdtError::Param {
                name: "contamination",
                reason: format!("{s:?} is neither `auto` nor a number"),
            })
    }
}

/// `None` for `auto` (when allowed), `Ok(count)` for an integer, `Err(fraction)` for a
/// number with a point or an exponent.
fn parse_count_or_fraction(
    s: &str,
    name: &'static str,
    auto: bool,
) -> Result<Option<Result<usize, f64>>, GbdtError> {
    let bad = |reason: String| GbdtError::Param { name, reason };
    if s == "auto" {
        return if auto {
            Ok(None)
        } else {
            Err(bad("`auto` is not accepted".into()))
        };
    }
    if let Ok(n) = s.parse::<usize>() {
        return Ok(Some(Ok(n)));
    }
    s.parse::<f64>()
        .map(|f| Some(Err(f)))
        .map_err(|_| bad(format!("{s:?} is not a count, a fraction or `auto`")))
}

/// Isolation forest parameters, with scikit-learn's names, meanings and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestParams {
    pub n_estimators: usize,
    pub max_samples: MaxSamples,
    pub max_features: MaxFeatures,
    pub contamination: Contamination,
    pub bootstrap: bool,
    pub seed: u64,
    /// 0: all cores (used by the caller's thread pool).
    pub num_threads: usize,
}

impl Default for ForestParams {
    fn default() -> Self {
        ForestParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            max_features: MaxFeatures::Fraction(1.0),
            contamination: Contamination::Auto,
            bootstrap: false,
            seed: 0,
            num_threads: 0,
        }
    }
}

impl ForestParams {
    pub fn validate(&self) -> Result<(), GbdtError> {
        let bad = |name: &'static str, reason: String| Err(GbdtError::Param { name, reason });
        if self.n_estimators == 0 || self.n_estimators > 100_000 {
            return bad(
                "n_estimators",
                format!("{} is not in 1..=100000", self.n_estimators),
            );
        }
        match self.max_samples {
            MaxSamples::Count(0) => return bad("max_samples", "must be at least 1".into()),
            MaxSamples::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return bad("max_samples", format!("fraction {f} is not in (0, 1]"))
            }
            _ => {}
        }
        match self.max_features {
            MaxFeatures::Count(0) => return bad("max_features", "must be at least 1".into()),
            MaxFeatures::Fraction(f) if !(f > 0.0 && f <= 1.0) => {
                return bad("max_features", format!("fraction {f} is not in (0, 1]"))
            }
            _ => {}
        }
        if let Contamination::Fraction(c) = self.contamination {
            if !(c > 0.0 && c <= 0.5) {
                return bad("contamination", format!("{c} is not in (0, 0.5]"));
            }
        }
        Ok(())
    }
}

/// One isolation tree: node tables, children after their parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IsoTree {
    /// Split feature; [`LEAF`] for a leaf.
    pub feature: Vec<u32>,
    pub threshold: Vec<f64>,
    pub left: Vec<u32>,
    pub right: Vec<u32>,
    /// Where rows missing the feature go.
    pub missing_left: Vec<bool>,
    /// Sample rows that reached the node.
    pub count: Vec<u32>,
}

/// The feature of a leaf.
pub const LEAF: u32 = u32::MAX;

impl IsoTree {
    fn push_leaf(&mut self, count: usize) -> usize {
        self.feature.push(LEAF);
        self.threshold.push(0.0);
        self.left.push(0);
        self.right.push(0);
        self.missing_left.push(false);
        self.count.push(count as u32);
        self.feature.len() - 1
    }

    pub fn n_nodes(&self) -> usize {
        self.feature.len()
    }

    /// The leaf row `r` of `cols` (the forest's features, in order) falls in.
    #[inline]
    pub fn leaf_of(&self, cols: &[&[f64]], r: usize) -> usize {
        self.leaf_by(|f| cols[f][r])
    }

    /// The leaf of the row whose feature `f` is `value(f)`.
    #[inline]
    fn leaf_by(&self, value: impl Fn(usize) -> f64) -> usize {
        let mut n = 0usize;
        while self.feature[n] != LEAF {
            let v = value(self.feature[n] as usize);
            let left = if v.is_nan() {
                self.missing_left[n]
            } else {
                v <= self.threshold[n]
            };
            n = if left {
                self.left[n] as usize
            } else {
                self.right[n] as usize
            };
        }
        n
    }

    /// Per node: its depth. Children come after their parent, so one pass finds all.
    fn node_depths(&self) -> Vec<u32> {
        let mut depth = vec![0u32; self.n_nodes()];
        for i in 0..self.n_nodes() {
            if self.feature[i] != LEAF {
                let below = depth[i] + 1;
                for c in [self.left[i], self.right[i]] {
                    if let Some(d) = depth.get_mut(c as usize) {
                        *d = below;
                    }
                }
            }
        }
        depth
    }

    /// Per node: its depth plus `c(count)` (a row's path length when the node is its
    /// leaf).
    pub fn node_path_lengths(&self) -> Vec<f64> {
        self.node_depths()
            .iter()
            .zip(&self.count)
            .map(|(d, c)| *d as f64 + average_path_length(*c as f64))
            .collect()
    }

    /// The path length of row `r` of `cols` (the forest's features, in order).
    pub fn path_length(&self, cols: &[&[f64]], r: usize) -> f64 {
        self.node_path_lengths()[self.leaf_of(cols, r)]
    }
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of
/// `n` keys (0 for one key or none, 1 for two).
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
        2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
    }
}

/// A trained isolation forest.
#[derive(Debug, Clone, PartialEq)]
pub struct Forest {
    pub feature_names: Vec<String>,
    pub params: ForestParams,
    /// Rows each tree was grown on (ψ).
    pub max_samples: usize,
    pub trees: Vec<IsoTree>,
    /// Rows with an anomaly score above this are anomalies.
    pub threshold: f64,
}

/// A small, seedable generator (SplitMix64): each tree has its own stream.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `k` distinct indices of `0..n`, ascending (Floyd's algorithm: `k` draws).
fn sample_without_replacement(n: usize, k: usize, rng: &mut Rng) -> Vec<u32> {
    if k >= n {
        return (0..n as u32).collect();
    }
    let mut chosen: HashSet<u32> = HashSet::with_capacity(k);
    for j in n - k..n {
        let t = rng.below(j + 1) as u32;
        if !chosen.insert(t) {
            chosen.insert(j as u32);
        }
    }
    let mut v: Vec<u32> = chosen.into_iter().collect();
    v.sort_unstable();
    v
}

/// The numeric columns of `data`, or a typed error naming a categorical one.
fn numeric_columns<'a>(data: &'a Dataset, what: &str) -> Result<Vec<&'a [f64]>, GbdtError> {
    data.columns
        .iter()
        .zip(&data.names)
        .map(|(c, name)| numeric(c, name, what))
        .collect()
}

/// The values of a numeric column, or a typed error naming a categorical one.
fn numeric<'a>(c: &'a Column, name: &str, what: &str) -> Result<&'a [f64], GbdtError> {
    match c {
        Column::Numeric(v) => Ok(v.as_slice()),
        Column::Categorical { .. } => Err(GbdtError::Data {
            what: what.into(),
            reason: format!(
                "column `{name}` is categorical: an isolation forest takes numeric features"
            ),
        }),
    }
}

/// Trains an isolation forest on every row of `data` (numeric features), on
/// `p.num_threads` threads.
pub fn fit(data: &Dataset, p: &ForestParams) -> Result<Forest, GbdtError> {
    p.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(p.num_threads)
        .build()
        .map_err(|e| GbdtError::Param {
            name: "num_threads",
            reason: e.to_string(),
        })?;
    pool.install(|| fit_in_pool(data, p))
}

fn fit_in_pool(data: &Dataset, p: &ForestParams) -> Result<Forest, GbdtError> {
    let cols = numeric_columns(data, "training data")?;
    let n = data.n_rows();
    let nf = cols.len();
    if n == 0 || nf == 0 {
        return Err(GbdtError::Data {
            what: "training data".into(),
            reason: format!("{n} rows and {nf} features: an isolation forest needs both"),
        });
    }
    let psi = match p.max_samples {
        MaxSamples::Auto => n.min(256),
        MaxSamples::Count(k) => k.min(n),
        MaxSamples::Fraction(f) => ((f * n as f64) as usize).max(1),
    };
    let n_feats = match p.max_features {
        MaxFeatures::Count(k) if k > nf => {
            return Err(GbdtError::Param {
                name: "max_features",
                reason: format!("{k} is more than the {nf} features"),
            })
        }
        MaxFeatures::Count(k) => k,
        MaxFeatures::Fraction(f) => ((f * nf as f64) as usize).max(1),
    };
    if psi < 2 {
        return Err(GbdtError::Param {
            name: "max_samples",
            reason: format!("{psi} row per tree: isolation needs at least 2"),
        });
    }
    let max_depth = (psi as f64).log2().ceil() as usize;
    let trees: Vec<IsoTree> = (0..p.n_estimators)
        .into_par_iter()
        .map(|t| {
            let mut rng = Rng::new(p.seed, t as u64);
            let rows = if p.bootstrap {
                let mut v: Vec<u32> = (0..psi).map(|_| rng.below(n) as u32).collect();
                v.sort_unstable();
                v
            } else {
                sample_without_replacement(n, psi, &mut rng)
            };
            let feats: Vec<u32> = if n_feats < nf {
                sample_without_replacement(nf, n_feats, &mut rng)
            } else {
                (0..nf as u32).collect()
            };
            grow(&cols, &rows, &feats, max_depth, &mut rng)
        })
        .collect();
    let mut forest = Forest {
        feature_names: data.names.clone(),
        params: p.clone(),
        max_samples: psi,
        trees,
        threshold: 0.5,
    };
    if let Contamination::Fraction(c) = p.contamination {
        let mut s = forest.score_columns(&cols);
        s.sort_by(f64::total_cmp);
        forest.threshold = percentile(&s, 1.0 - c);
    }
    Ok(forest)
}

/// The `q` quantile of sorted values with linear interpolation (numpy's default).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, frac) = (pos.floor() as usize, pos - pos.floor());
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Grows one tree on the sample `rows` (row ids, possibly repeated) over `feats`.
fn grow(cols: &[&[f64]], rows: &[u32], feats: &[u32], max_depth: usize, rng: &mut Rng) -> IsoTree {
    let mut tree = IsoTree::default();
    let mut idx: Vec<u32> = rows.to_vec();
    let mut order: Vec<u32> = feats.to_vec();
    // (node, begin, end, depth): the node's rows are idx[begin..end].
    let root = tree.push_leaf(idx.len());
    let mut stack = vec![(root, 0usize, idx.len(), 0usize)];
    while let Some((node, b, e, depth)) = stack.pop() {
        if depth >= max_depth || e - b <= 1 {
            continue;
        }
        // Features in random order until one is not constant on the node's rows.
        let mut chosen = None;
        for i in 0..order.len() {
            let j = i + rng.below(order.len() - i);
            order.swap(i, j);
            let col = cols[order[i] as usize];
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &r in &idx[b..e] {
                let v = col[r as usize];
                if !v.is_nan() {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
            if lo < hi {
                chosen = Some((order[i], lo, hi));
                break;
            }
        }
        let Some((f, lo, hi)) = chosen else {
            continue;
        };
        // Uniform in [lo, hi); `lo` where rounding (or an infinite range) says otherwise.
        let mut t = lo + rng.unit() * (hi - lo);
        if !(t >= lo && t < hi) {
            t = lo;
        }
        // Partition: values <= t, then values > t, then missing values.
        let col = cols[f as usize];
        let seg = &mut idx[b..e];
        let mut left: Vec<u32> = Vec::with_capacity(seg.len());
        let mut right: Vec<u32> = Vec::new();
        let mut missing: Vec<u32> = Vec::new();
        for &r in seg.iter() {
            let v = col[r as usize];
            if v.is_nan() {
                missing.push(r);
            } else if v <= t {
                left.push(r);
            } else {
                right.push(r);
            }
        }
        let missing_left = left.len() >= right.len();
        let n_left = left.len() + if missing_left { missing.len() } else { 0 };
        let mut k = 0;
        let ordered = if missing_left {
            [left, missing, right]
        } else {
            [left, right, missing]
        };
        for part in ordered {
            for r in part {
                seg[k] = r;
                k += 1;
            }
        }
        let l = tree.push_leaf(n_left);
        let r = tree.push_leaf(e - b - n_left);
        tree.feature[node] = f;
        tree.threshold[node] = t;
        tree.left[node] = l as u32;
        tree.right[node] = r as u32;
        tree.missing_left[node] = missing_left;
        // Right first on the stack, so the left subtree is grown first.
        stack.push((r, b + n_left, e, depth + 1));
        stack.push((l, b, b + n_left, depth + 1));
    }
    tree
}

/// Rows scored per task.
const SCORE_BLOCK: usize = 4096;
/// Rows walking down a tree together, one level at a time, so that their walks overlap.
const WALK: usize = 16;
/// Trees up to this depth are scored as complete trees (`2^depth` leaves).
const COMPLETE_DEPTH: usize = 12;

/// A tree laid out for scoring. Up to [`COMPLETE_DEPTH`] levels, a complete tree with
/// implicit children (`2i + 1`, `2i + 2`): a leaf above the last level is extended by
/// splits that send every row left (threshold +inf, missing values left), and each leaf
/// slot holds its path length (depth plus `c(count)`). A step is then a load, two
/// compares and an add with no branch: a walk down a random tree mispredicts no
/// branches, where following child pointers mispredicts about every other level. Deeper
/// trees keep their node tables.
struct Compiled<'a> {
    tree: &'a IsoTree,
    depth: usize,
    /// Complete layout: the inner slots (empty for node tables).
    slots: Vec<Slot>,
    /// Complete layout: per leaf slot; otherwise per node.
    length: Vec<f64>,
}

/// One inner slot of a complete tree (16 bytes: one load per step).
#[derive(Debug, Clone, Copy)]
struct Slot {
    threshold: f64,
    feature: u32,
    /// 1 when missing values go right.
    missing_right: u32,
}

const PAD: Slot = Slot {
    threshold: f64::INFINITY,
    feature: 0,
    missing_right: 0,
};

impl<'a> Compiled<'a> {
    fn new(t: &'a IsoTree) -> Compiled<'a> {
        let lengths = t.node_path_lengths();
        let depth = t.node_depths().into_iter().max().unwrap_or(0) as usize;
        if depth > COMPLETE_DEPTH {
            return Compiled {
                tree: t,
                depth,
                slots: Vec::new(),
                length: lengths,
            };
        }
        let inner = (1usize << depth) - 1;
        let mut c = Compiled {
            tree: t,
            depth,
            slots: vec![PAD; inner],
            length: vec![0.0; inner + 1],
        };
        // (tree node, slot, level); padding slots keep threshold +inf, missing left.
        let mut stack = vec![(0usize, 0usize, 0usize)];
        while let Some((node, slot, level)) = stack.pop() {
            if level == depth {
                c.length[slot - inner] = lengths[node];
                continue;
            }
            let (l, r) = if t.feature[node] == LEAF {
                (node, node)
            } else {
                c.slots[slot] = Slot {
                    threshold: t.threshold[node],
                    feature: t.feature[node],
                    missing_right: !t.missing_left[node] as u32,
                };
                (t.left[node] as usize, t.right[node] as usize)
            };
            stack.push((l, 2 * slot + 1, level + 1));
            stack.push((r, 2 * slot + 2, level + 1));
        }
        c
    }

    /// Adds the path lengths of rows `x[j * nf..]` (row-major) to `acc[j]`.
    #[inline]
    fn add_path_lengths(&self, x: &[f64], nf: usize, acc: &mut [f64]) {
        if self.slots.is_empty() && self.depth > 0 {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += self.length[self.tree.leaf_by(|f| x[j * nf + f])];
            }
            return;
        }
        let m = acc.len().min(WALK);
        let mut slot = [0usize; WALK];
        for _ in 0..self.depth {
            for (j, s) in slot.iter_mut().enumerate().take(m) {
                let n = self.slots[*s];
                let v = x[j * nf + n.feature as usize];
                // Branch-free: right when above the threshold, or missing and the
                // node sends missing values right.
                let right =
                    (v > n.threshold) as usize | (v.is_nan() as u32 & n.missing_right) as usize;
                *s = 2 * *s + 1 + right;
            }
        }
        let inner = (1usize << self.depth) - 1;
        for (a, s) in acc.iter_mut().zip(&slot) {
            *a += self.length[s - inner];
        }
    }
}

impl Forest {
    /// The anomaly score of every row of `cols` (the forest's features, in order).
    pub fn score_columns(&self, cols: &[&[f64]]) -> Vec<f64> {
        let n = cols.first().map_or(0, |c| c.len());
        let norm = self.trees.len() as f64 * average_path_length(self.max_samples as f64);
        let compiled: Vec<Compiled> = self.trees.iter().map(Compiled::new).collect();
        let nf = cols.len();
        let mut out = vec![0.0; n];
        out.par_chunks_mut(SCORE_BLOCK)
            .enumerate()
            .for_each(|(k, chunk)| {
                let base = k * SCORE_BLOCK;
                // The block's rows, row-major: a row's features share cache lines.
                let mut x = vec![0.0f64; chunk.len() * nf];
                for (f, c) in cols.iter().enumerate() {
                    for (i, v) in c[base..base + chunk.len()].iter().enumerate() {
                        x[i * nf + f] = *v;
                    }
                }
                // Trees outer, rows inner: a tree stays in cache for the block.
                for c in &compiled {
                    for (g, acc) in chunk.chunks_mut(WALK).enumerate() {
                        c.add_path_lengths(&x[g * WALK * nf..], nf, acc);
                    }
                }
                for s in chunk.iter_mut() {
                    *s = (-*s / norm).exp2();
                }
            });
        out
    }

    /// The anomaly score of every row of `data`, which must hold the forest's features (by
    /// name, in any order; other columns, of any kind, are ignored).
    pub fn score(&self, data: &Dataset) -> Result<Vec<f64>, GbdtError> {
        let cols: Vec<&[f64]> = self
            .feature_names
            .iter()
            .map(|f| {
                let i = data
                    .names
                    .iter()
                    .position(|n| n == f)
                    .ok_or_else(|| GbdtError::Data {
                        what: "data".into(),
                        reason: format!("feature `{f}` of the model is not in the data"),
                    })?;
                numeric(&data.columns[i], f, "data")
            })
            .collect::<Result<_, _>>()?;
        Ok(self.score_columns(&cols))
    }

    pub fn is_anomaly(&self, score: f64) -> bool {
        score > self.threshold
    }
}

/// Everything about an isolation forest that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestManifest {
    pub format_version: u32,
    pub model_kind: String,
    pub contrail_version: String,
    /// Numeric features, in the order the trees index them.
    pub features: Vec<String>,
    pub params: ForestParams,
    pub max_samples: usize,
    pub n_trees: usize,
    pub threshold: f64,
    pub training_data: DataFingerprint,
    pub lineage: BTreeMap<String, String>,
}

/// The manifest of a forest.
pub fn manifest(
    f: &Forest,
    training_data: DataFingerprint,
    lineage: BTreeMap<String, String>,
) -> ForestManifest {
    ForestManifest {
        format_version: FORMAT_VERSION,
        model_kind: MODEL_KIND.into(),
        contrail_version: env!("CARGO_PKG_VERSION").into(),
        features: f.feature_names.clone(),
        params: f.params.clone(),
        max_samples: f.max_samples,
        n_trees: f.trees.len(),
        threshold: f.threshold,
        training_data,
        lineage,
    }
}

/// Serialises a forest (deterministic: equal forests give equal bytes).
pub fn to_bytes(f: &Forest, m: &ForestManifest) -> Result<Vec<u8>, GbdtError> {
    let ts = &f.trees;
    let mut w = Writer::default();
    let mut off = vec![0i64];
    for t in ts {
        off.push(off[off.len() - 1] + t.n_nodes() as i64);
    }
    w.i64("tree_nodes", off.into_iter());
    w.i32(
        "node_feature",
        ts.iter().flat_map(|t| {
            t.feature
                .iter()
                .map(|&x| if x == LEAF { -1 } else { x as i32 })
        }),
    );
    w.f64(
        "node_threshold",
        ts.iter().flat_map(|t| t.threshold.iter().copied()),
    );
    w.u32("node_left", ts.iter().flat_map(|t| t.left.iter().copied()));
    w.u32(
        "node_right",
        ts.iter().flat_map(|t| t.right.iter().copied()),
    );
    w.u8(
        "node_missing_left",
        ts.iter()
            .flat_map(|t| t.missing_left.iter().map(|&b| b as u8)),
    );
    w.u32(
        "node_count",
        ts.iter().flat_map(|t| t.count.iter().copied()),
    );
    let text = serde_json::to_string(m).map_err(|e| GbdtError::Package {
        path: "<memory>".into(),
        reason: format!("manifest: {e}"),
    })?;
    package::encode(w, &text)
}

/// Parses and validates isolation forest package bytes. `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &str) -> Result<(Forest, ForestManifest), GbdtError> {
    let err = |reason: String| GbdtError::Package {
        path: path.to_string(),
        reason,
    };
    let (text, r) = package::decode(bytes, path)?;
    package::check_kind(&text, path, Some(MODEL_KIND))?;
    let m: ForestManifest =
        serde_json::from_str(&text).map_err(|e| err(format!("manifest: {e}")))?;
    m.params
        .validate()
        .map_err(|e| err(format!("parameters: {e}")))?;
    let nf = m.features.len();
    if nf == 0 || m.max_samples < 2 || !(m.threshold > 0.0 && m.threshold <= 1.0) {
        return Err(err(format!(
            "{nf} features, max_samples {}, threshold {}: invalid",
            m.max_samples, m.threshold
        )));
    }
    let feature = r.i32("node_feature")?;
    let threshold = r.f64("node_threshold")?;
    let left = r.u32("node_left")?;
    let right = r.u32("node_right")?;
    let missing = r.u8("node_missing_left")?;
    let count = r.u32("node_count")?;
    let n_nodes = feature.len();
    for (name, len) in [
        ("node_threshold", threshold.len()),
        ("node_left", left.len()),
        ("node_right", right.len()),
        ("node_missing_left", missing.len()),
        ("node_count", count.len()),
    ] {
        if len != n_nodes {
            return Err(err(format!(
                "`{name}` has {len} entries, `node_feature` {n_nodes}"
            )));
        }
    }
    let off = package::offsets(&r, "tree_nodes", &r.i64("tree_nodes")?, n_nodes)?;
    if off.len() != m.n_trees + 1 || m.n_trees != m.params.n_estimators {
        return Err(err(format!(
            "the manifest says {} trees ({} estimators); the tables say {}",
            m.n_trees,
            m.params.n_estimators,
            off.len().saturating_sub(1)
        )));
    }
    let mut trees = Vec::with_capacity(m.n_trees);
    for t in 0..m.n_trees {
        let (b, e) = (off[t], off[t + 1]);
        let k = e - b;
        if k == 0 {
            return Err(err(format!("tree {t} has no nodes")));
        }
        // Every node but the root has exactly one parent, which comes before it: the tree
        // is acyclic and every node is reachable.
        let mut parents = vec![0u8; k];
        let mut tree = IsoTree::default();
        for i in 0..k {
            let g = b + i;
            let c = count[g];
            if c == 0 || c as usize > m.max_samples || missing[g] > 1 {
                return Err(err(format!("tree {t} node {i}: invalid count or flag")));
            }
            if feature[g] < 0 {
                tree.feature.push(LEAF);
                tree.threshold.push(0.0);
                tree.left.push(0);
                tree.right.push(0);
            } else {
                let f = feature[g] as usize;
                if f >= nf || threshold[g].is_nan() {
                    return Err(err(format!(
                        "tree {t} node {i}: feature {f} or threshold {} is invalid",
                        threshold[g]
                    )));
                }
                for ch in [left[g], right[g]] {
                    let ch = ch as usize;
                    if ch <= i || ch >= k || parents[ch] > 0 {
                        return Err(err(format!("tree {t} node {i}: child {ch} is out of range, earlier than its parent, or shared")));
                    }
                    parents[ch] = 1;
                }
                tree.feature.push(f as u32);
                tree.threshold.push(threshold[g]);
                tree.left.push(left[g]);
                tree.right.push(right[g]);
            }
            tree.missing_left.push(missing[g] == 1);
            tree.count.push(c);
        }
        if parents.iter().skip(1).any(|p| *p == 0) {
            return Err(err(format!("tree {t}: some node is unreachable")));
        }
        trees.push(tree);
    }
    let forest = Forest {
        feature_names: m.features.clone(),
        params: m.params.clone(),
        max_samples: m.max_samples,
        trees,
        threshold: m.threshold,
    };
    Ok((forest, m))
}
