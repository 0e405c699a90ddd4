//! Tree growth on fixed-point histograms.
//!
//! Each iteration computes gradients and hessians, quantises them to `i64` with a
//! power-of-two scale chosen so no sum can overflow (as XGBoost's GPU quantiser does), and
//! builds histograms by integer addition. Integer sums do not depend on the order of
//! addition, so the histograms, the chosen splits and the trees are bitwise identical
//! whatever the number of threads, and the larger child's histogram is the parent's minus
//! the smaller child's, exactly.
//!
//! Memory traffic per histogram pass: the bin matrix is row-major with one byte per
//! feature, so a row costs `n_features` bytes of bins plus 16 bytes of quantised gradient
//! and hessian (gathered by row index; rows of a leaf stay in ascending order, so the
//! gather streams). With the subtraction trick only the smaller child is scanned, so each
//! level of a tree reads at most half the rows. The histogram itself (16 bytes a bin, about
//! 115 KB for 28 features × 256 bins) stays in L2.
//!
//! Measured (`cargo bench --bench gbdt`, 2-core development machine): 500,000 rows × 28
//! features, 44 bytes a row, in 8.3 ms = 2.5 GiB/s, 63 M rows/s: about 1.1 ns a bin update
//! per thread. The copy bandwidth of that machine has not been measured yet; a rate this far
//! below typical DRAM bandwidth says the pass is bound by the read-modify-write of histogram
//! bins rather than by the bytes it streams, which is where the next speed-up has to come
//! from (packed bins for low-cardinality features, narrower bins, feature-wise passes).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bin::{BinMapper, Binned, Bins};
use crate::objective::{weighted_quantile, Objective};
use crate::tree::Tree;
use crate::GbdtError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrowPolicy {
    /// Split the leaf with the largest gain next (LightGBM), up to `num_leaves`.
    LeafWise,
    /// Split level by level (XGBoost's depthwise), up to `max_depth`.
    DepthWise,
}

/// Training parameters, with LightGBM's names, meanings and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub objective: Objective,
    pub num_iterations: usize,
    pub learning_rate: f64,
    pub num_leaves: usize,
    /// Limit on depth; <= 0 means none (leaf-wise) or 6 (depth-wise).
    pub max_depth: i32,
    pub grow_policy: GrowPolicy,
    pub min_data_in_leaf: usize,
    pub min_sum_hessian_in_leaf: f64,
    pub lambda_l1: f64,
    pub lambda_l2: f64,
    pub min_gain_to_split: f64,
    pub bagging_fraction: f64,
    pub bagging_freq: usize,
    pub feature_fraction: f64,
    pub max_bin: usize,
    pub early_stopping_round: usize,
    pub seed: u64,
    /// 0: all cores.
    pub num_threads: usize,
    pub max_cat_threshold: usize,
    pub cat_smooth: f64,
    pub cat_l2: f64,
    pub min_data_per_group: usize,
    pub max_cat_to_onehot: usize,
    /// Metrics to report; the first drives early stopping. Empty: the objective's default.
    pub metric: Vec<String>,
    /// Per feature: 1 increasing, -1 decreasing, 0 none (LightGBM's "basic" method: a
    /// split on a constrained feature bounds every leaf below it by the split's mid-point).
    /// Empty: no constraints.
    #[serde(default)]
    pub monotone_constraints: Vec<i8>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            objective: Objective::Regression,
            num_iterations: 100,
            learning_rate: 0.1,
            num_leaves: 31,
            max_depth: -1,
            grow_policy: GrowPolicy::LeafWise,
            min_data_in_leaf: 20,
            min_sum_hessian_in_leaf: 1e-3,
            lambda_l1: 0.0,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            bagging_fraction: 1.0,
            bagging_freq: 0,
            feature_fraction: 1.0,
            max_bin: 255,
            early_stopping_round: 0,
            seed: 0,
            num_threads: 0,
            max_cat_threshold: 32,
            cat_smooth: 10.0,
            cat_l2: 10.0,
            min_data_per_group: 100,
            max_cat_to_onehot: 4,
            metric: Vec::new(),
            monotone_constraints: Vec::new(),
        }
    }
}

impl Params {
    pub fn validate(&self) -> Result<(), GbdtError> {
        let bad = |name: &'static str, reason: &str| {
            Err(GbdtError::Param {
                name,
                reason: reason.into(),
            })
        };
        if self.num_iterations == 0 {
            return bad("num_iterations", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad("learning_rate", "must be positive");
        }
        if self.num_leaves < 2 || self.num_leaves > 131_072 {
            return bad("num_leaves", "must be in 2..=131072");
        }
        if self.max_bin < 2 || self.max_bin > 65_000 {
            return bad("max_bin", "must be in 2..=65000");
        }
        if !(self.bagging_fraction > 0.0 && self.bagging_fraction <= 1.0) {
            return bad("bagging_fraction", "must be in (0, 1]");
        }
        if !(self.feature_fraction > 0.0 && self.feature_fraction <= 1.0) {
            return bad("feature_fraction", "must be in (0, 1]");
        }
        for (name, v) in [
            ("lambda_l1", self.lambda_l1),
            ("lambda_l2", self.lambda_l2),
            ("min_gain_to_split", self.min_gain_to_split),
            ("min_sum_hessian_in_leaf", self.min_sum_hessian_in_leaf),
            ("cat_smooth", self.cat_smooth),
            ("cat_l2", self.cat_l2),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(GbdtError::Param {
                    name,
                    reason: format!("{v} must be finite and >= 0"),
                });
            }
        }
        for m in &self.metric {
            crate::metric::check(m)?;
        }
        if let Some(c) = self
            .monotone_constraints
            .iter()
            .find(|c| !(-1..=1).contains(*c))
        {
            return Err(GbdtError::Param {
                name: "monotone_constraints",
                reason: format!("{c} is not -1, 0 or 1"),
            });
        }
        Ok(())
    }

    fn depth_limit(&self) -> Option<usize> {
        match (self.grow_policy, self.max_depth) {
            (_, d) if d > 0 => Some(d as usize),
            (GrowPolicy::DepthWise, _) => Some(6),
            _ => None,
        }
    }
}

/// One histogram bin: quantised gradient and hessian sums (16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistBin {
    pub g: i64,
    pub h: i64,
}

/// Sums of a leaf or a split side, with its (exact or estimated) row count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub g: i64,
    pub h: i64,
    pub n: i64,
}

impl HistBin {
    #[inline]
    fn add(&mut self, o: &HistBin) {
        self.g += o.g;
        self.h += o.h;
    }
    #[inline]
    fn sub(&self, o: &HistBin) -> HistBin {
        HistBin {
            g: self.g - o.g,
            h: self.h - o.h,
        }
    }
}

/// The sums of a histogram range with the row count estimated from its hessian, as
/// LightGBM does (`n ≈ h · n_leaf / h_leaf`): exact whenever the hessian is constant.
#[inline]
fn sums(b: &HistBin, cnt_factor: f64) -> Sums {
    Sums {
        g: b.g,
        h: b.h,
        n: (b.h as f64 * cnt_factor).round() as i64,
    }
}

/// Quantises values to i64 with a power-of-two scale such that the sum of up to `n`
/// of them stays below 2^62 in magnitude.
pub fn quantise(v: &[f64]) -> (Vec<i64>, f64) {
    let mut out = vec![0; v.len()];
    let scale = quantise_into(v, &mut out);
    (out, scale)
}

/// [`quantise`] into a buffer of the same length; returns the scale.
pub fn quantise_into(v: &[f64], out: &mut [i64]) -> f64 {
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        out.iter_mut().for_each(|x| *x = 0);
        return 1.0;
    }
    let n_bits = (v.len().max(1) as f64).log2().ceil() + 1.0;
    let exp = (62.0 - n_bits - max.log2()).floor();
    let scale = 2f64.powi(exp as i32);
    out.par_iter_mut()
        .zip(v.par_iter())
        .for_each(|(o, x)| *o = (x * scale).round() as i64);
    scale
}

const CHUNK: usize = 2048;

fn accumulate<T: Copy + Into<usize> + Sync>(
    bins: &[T],
    nf: usize,
    offsets: &[usize],
    feats: &[usize],
    rows: &[u32],
    gh: &[[i64; 2]],
    hist: &mut [HistBin],
) {
    let offsets = &offsets[..nf];
    if feats.len() == nf {
        for &r in rows {
            let r = r as usize;
            let [gr, hr] = gh[r];
            let row = &bins[r * nf..r * nf + nf];
            for (b, off) in row.iter().zip(offsets) {
                let e = &mut hist[off + (*b).into()];
                e.g += gr;
                e.h += hr;
            }
        }
    } else {
        for &r in rows {
            let r = r as usize;
            let [gr, hr] = gh[r];
            let row = &bins[r * nf..r * nf + nf];
            for &f in feats {
                let e = &mut hist[offsets[f] + row[f].into()];
                e.g += gr;
                e.h += hr;
            }
        }
    }
}

/// Histogram buffers kept between leaves and trees, so they are not allocated (and
/// zeroed by the kernel) for every split.
#[derive(Debug, Default)]
pub struct HistPool {
    free: Vec<Vec<HistBin>>,
}

impl HistPool {
    fn get(&mut self, total: usize) -> Vec<HistBin> {
        match self.free.pop() {
            Some(mut v) if v.len() == total => {
                v.fill(HistBin::default());
                v
            }
            _ => vec![HistBin::default(); total],
        }
    }
    fn put(&mut self, v: Vec<HistBin>) {
        if self.free.len() < 1024 {
            self.free.push(v);
        }
    }
}

/// Builds the histogram of `rows` over the features in `feats`.
pub fn build_histogram(
    data: &Binned,
    feats: &[usize],
    rows: &[u32],
    g: &[i64],
    h: &[i64],
) -> Vec<HistBin> {
    let gh: Vec<[i64; 2]> = g.iter().zip(h).map(|(g, h)| [*g, *h]).collect();
    build_histogram_gh(data, feats, rows, &gh)
}

/// [`build_histogram`] with gradients and hessians interleaved (one cache line per row).
pub fn build_histogram_gh(
    data: &Binned,
    feats: &[usize],
    rows: &[u32],
    gh: &[[i64; 2]],
) -> Vec<HistBin> {
    build_histogram_pooled(data, feats, rows, gh, &mut HistPool::default())
}

fn build_histogram_pooled(
    data: &Binned,
    feats: &[usize],
    rows: &[u32],
    gh: &[[i64; 2]],
    pool: &mut HistPool,
) -> Vec<HistBin> {
    let total = data.total_bins();
    let run = |rows: &[u32], hist: &mut [HistBin]| match &data.bins {
        Bins::U8(b) => accumulate(b, data.n_features, &data.offsets, feats, rows, gh, hist),
        Bins::U16(b) => accumulate(b, data.n_features, &data.offsets, feats, rows, gh, hist),
    };
    let parts = rayon::current_num_threads().max(1);
    if rows.len() <= 2 * CHUNK || parts == 1 {
        let mut hist = pool.get(total);
        run(rows, &mut hist);
        return hist;
    }
    // One histogram per thread over contiguous row ranges, then summed: integer sums, so
    // the result does not depend on how the rows were split.
    let per = rows.len().div_ceil(parts);
    let chunks: Vec<&[u32]> = rows.chunks(per).collect();
    let mut hists: Vec<Vec<HistBin>> = chunks.iter().map(|_| pool.get(total)).collect();
    hists
        .par_iter_mut()
        .zip(chunks.par_iter())
        .for_each(|(h, c)| run(c, h));
    let mut first = hists.swap_remove(0);
    for h in hists {
        for (x, y) in first.iter_mut().zip(&h) {
            x.add(y);
        }
        pool.put(h);
    }
    first
}

/// A candidate split of one leaf.
#[derive(Debug, Clone)]
pub struct Split {
    pub feature: usize,
    pub gain: f64,
    pub threshold_bin: u32,
    pub default_left: bool,
    /// Bins going left, for categorical splits.
    pub cat_bins: Option<Vec<u32>>,
    pub left: Sums,
    pub right: Sums,
}

struct Ctx<'a> {
    p: &'a Params,
    sg: f64,
    sh: f64,
}

impl Ctx<'_> {
    #[inline]
    fn thr_l1(&self, g: f64) -> f64 {
        if g > self.p.lambda_l1 {
            g - self.p.lambda_l1
        } else if g < -self.p.lambda_l1 {
            g + self.p.lambda_l1
        } else {
            0.0
        }
    }
    #[inline]
    fn score(&self, s: &Sums, extra_l2: f64) -> f64 {
        let g = self.thr_l1(s.g as f64 / self.sg);
        g * g / (s.h as f64 / self.sh + self.p.lambda_l2 + extra_l2)
    }
    #[inline]
    fn ok(&self, s: &Sums) -> bool {
        s.n >= self.p.min_data_in_leaf.max(1) as i64
            && s.h as f64 / self.sh >= self.p.min_sum_hessian_in_leaf
    }
    fn leaf_value(&self, s: &Sums) -> f64 {
        -self.thr_l1(s.g as f64 / self.sg) / (s.h as f64 / self.sh + self.p.lambda_l2)
    }
}

fn better(a: &Option<Split>, b: &Option<Split>) -> bool {
    match (a, b) {
        (Some(_), None) => true,
        (Some(x), Some(y)) => x.gain > y.gain || (x.gain == y.gain && x.feature < y.feature),
        _ => false,
    }
}

/// Scans the thresholds of one numeric feature (both directions for missing values where
/// there are any) and keeps the best candidate by `gain(left_g, left_h, right_g, right_h)`
/// (`None` rejects a candidate). Both leaf constraints are one bound on the integer
/// hessian: an estimated count `round(h · cf) >= min_data_in_leaf` and a hessian sum
/// `>= min_sum_hessian_in_leaf`.
fn scan_numeric(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &Sums,
    gain: impl Fn(i64, i64, i64, i64) -> Option<f64>,
) -> Option<Split> {
    let p = ctx.p;
    let nb = h.len();
    let miss = h[nb - 1];
    let cf = total.n as f64 / (total.h as f64).max(1.0);
    let min_h =
        ((p.min_data_in_leaf.max(1) as f64 - 0.5) / cf).max(p.min_sum_hessian_in_leaf * ctx.sh);
    let mut best_gain = p.min_gain_to_split;
    let mut best: Option<(usize, bool, HistBin)> = None;
    let dirs: &[bool] = if miss.h > 0 { &[false, true] } else { &[false] };
    for &default_left in dirs {
        let mut acc = if default_left {
            miss
        } else {
            HistBin::default()
        };
        for (t, b) in h[..nb - 1].iter().enumerate() {
            acc.add(b);
            let rh = total.h - acc.h;
            if (rh as f64) < min_h {
                break;
            }
            if (acc.h as f64) < min_h {
                continue;
            }
            if let Some(g) = gain(acc.g, acc.h, total.g - acc.g, rh) {
                if g > best_gain {
                    best_gain = g;
                    best = Some((t, default_left, acc));
                }
            }
        }
    }
    let (t, default_left, acc) = best?;
    let tot = HistBin {
        g: total.g,
        h: total.h,
    };
    let (left, right) = (sums(&acc, cf), sums(&tot.sub(&acc), cf));
    // Without missing values here, future missing values go to the heavier side.
    let default_left = if miss.h == 0 {
        left.h >= right.h
    } else {
        default_left
    };
    Some(Split {
        feature: f,
        gain: best_gain,
        threshold_bin: t as u32,
        default_left,
        cat_bins: None,
        left,
        right,
    })
}

fn numeric_split(ctx: &Ctx, f: usize, h: &[HistBin], total: &Sums, parent: f64) -> Option<Split> {
    let (inv_g, inv_h, l2) = (1.0 / ctx.sg, 1.0 / ctx.sh, ctx.p.lambda_l2);
    let score = |g: i64, h: i64| {
        let g = ctx.thr_l1(g as f64 * inv_g);
        g * g / (h as f64 * inv_h + l2)
    };
    scan_numeric(ctx, f, h, total, |lg, lh, rg, rh| {
        Some(score(lg, lh) + score(rg, rh) - parent)
    })
}

/// Leaf-output bounds of a leaf, from monotone splits above it.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    lo: f64,
    hi: f64,
}

impl Bounds {
    const NONE: Bounds = Bounds {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    };
    fn is_none(&self) -> bool {
        self.lo == f64::NEG_INFINITY && self.hi == f64::INFINITY
    }
    fn clamp(&self, v: f64) -> f64 {
        v.max(self.lo).min(self.hi)
    }
}

/// Split search under a monotone constraint `c` and output bounds: outputs are clamped to
/// the bounds, candidates whose outputs violate the direction are skipped, and gains are
/// computed for the clamped outputs.
fn numeric_split_constrained(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &Sums,
    c: i8,
    b: Bounds,
) -> Option<Split> {
    let (inv_g, inv_h, l2) = (1.0 / ctx.sg, 1.0 / ctx.sh, ctx.p.lambda_l2);
    let out = |g: i64, h: i64| b.clamp(-ctx.thr_l1(g as f64 * inv_g) / (h as f64 * inv_h + l2));
    let given = |g: i64, h: i64, o: f64| {
        -(2.0 * ctx.thr_l1(g as f64 * inv_g) * o + (h as f64 * inv_h + l2) * o * o)
    };
    let parent = given(total.g, total.h, out(total.g, total.h));
    scan_numeric(ctx, f, h, total, |lg, lh, rg, rh| {
        let (ol, or) = (out(lg, lh), out(rg, rh));
        if (c > 0 && ol > or) || (c < 0 && ol < or) {
            return None;
        }
        Some(given(lg, lh, ol) + given(rg, rh, or) - parent)
    })
}

fn categorical_split(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &Sums,
    parent: f64,
) -> Option<Split> {
    let p = ctx.p;
    let cf = total.n as f64 / (total.h as f64).max(1.0);
    let tot = HistBin {
        g: total.g,
        h: total.h,
    };
    let used: Vec<usize> = (0..h.len()).filter(|&b| h[b].h > 0).collect();
    let mut best: Option<Split> = None;
    let consider = |left_bins: &[usize], extra_l2: f64, best: &mut Option<Split>| {
        let mut lb = HistBin::default();
        for &b in left_bins {
            lb.add(&h[b]);
        }
        let (left, right) = (sums(&lb, cf), sums(&tot.sub(&lb), cf));
        if !ctx.ok(&left) || !ctx.ok(&right) {
            return;
        }
        let gain = ctx.score(&left, extra_l2) + ctx.score(&right, extra_l2) - parent;
        if gain > p.min_gain_to_split && best.as_ref().is_none_or(|b| gain > b.gain) {
            let mut bits = vec![0u32; h.len().div_ceil(32)];
            for &b in left_bins {
                bits[b / 32] |= 1 << (b % 32);
            }
            *best = Some(Split {
                feature: f,
                gain,
                threshold_bin: 0,
                default_left: false,
                cat_bins: Some(bits),
                left,
                right,
            });
        }
    };
    if used.len() <= p.max_cat_to_onehot {
        for &b in &used {
            consider(&[b], 0.0, &mut best);
        }
        return best;
    }
    // Gradient ordering (LightGBM): sort the well-populated categories by G / (H + smooth)
    // and try prefixes from both ends; sparse categories stay on the right.
    let mut cand: Vec<(f64, usize)> = used
        .iter()
        .filter(|&&b| sums(&h[b], cf).n >= p.min_data_per_group as i64)
        .map(|&b| {
            (
                (h[b].g as f64 / ctx.sg) / (h[b].h as f64 / ctx.sh + p.cat_smooth),
                b,
            )
        })
        .collect();
    cand.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let max_k = p.max_cat_threshold.min(cand.len().div_ceil(2)).max(1);
    for dir in [false, true] {
        let order: Vec<usize> = if dir {
            cand.iter().rev().map(|c| c.1).collect()
        } else {
            cand.iter().map(|c| c.1).collect()
        };
        for k in 1..=max_k.min(order.len()) {
            consider(&order[..k], p.cat_l2, &mut best);
        }
    }
    best
}

fn best_split(
    ctx: &Ctx,
    data: &Binned,
    feats: &[usize],
    hist: &[HistBin],
    total: &Sums,
    bounds: Bounds,
) -> Option<Split> {
    let parent = ctx.score(total, 0.0);
    feats
        .par_iter()
        .map(|&f| {
            let h = &hist[data.offsets[f]..data.offsets[f + 1]];
            let c = ctx.p.monotone_constraints.get(f).copied().unwrap_or(0);
            match &data.mappers[f] {
                BinMapper::Numeric { .. } if c != 0 || !bounds.is_none() => {
                    numeric_split_constrained(ctx, f, h, total, c, bounds)
                }
                BinMapper::Numeric { .. } => numeric_split(ctx, f, h, total, parent),
                BinMapper::Categorical { .. } => categorical_split(ctx, f, h, total, parent),
            }
        })
        .reduce(|| None, |a, b| if better(&b, &a) { b } else { a })
}

struct Leaf {
    begin: usize,
    len: usize,
    depth: usize,
    sum: Sums,
    hist: Vec<HistBin>,
    split: Option<Split>,
    /// (node, is_left) of the pointer to this leaf; None for the root.
    parent: Option<(usize, bool)>,
    bounds: Bounds,
}

fn goes_left(s: &Split, bin: usize, missing: usize) -> bool {
    match &s.cat_bins {
        Some(bits) => bits.get(bin / 32).is_some_and(|w| w >> (bin % 32) & 1 == 1),
        None if bin == missing => s.default_left,
        None => bin as u32 <= s.threshold_bin,
    }
}

/// Stable in-place partition of `rows` by the split; returns the left count.
fn partition(data: &Binned, s: &Split, rows: &mut [u32]) -> usize {
    let f = s.feature;
    let missing = data.mappers[f].missing_bin();
    let col = &data.columns[f];
    let side = |r: &u32| goes_left(s, col[*r as usize] as usize, missing);
    let parts: Vec<(Vec<u32>, Vec<u32>)> = rows
        .par_chunks(32_768)
        .map(|c| {
            let (mut l, mut r) = (Vec::with_capacity(c.len()), Vec::with_capacity(c.len()));
            for x in c {
                if side(x) {
                    l.push(*x);
                } else {
                    r.push(*x);
                }
            }
            (l, r)
        })
        .collect();
    let mut i = 0;
    for (l, _) in &parts {
        rows[i..i + l.len()].copy_from_slice(l);
        i += l.len();
    }
    let n_left = i;
    for (_, r) in &parts {
        rows[i..i + r.len()].copy_from_slice(r);
        i += r.len();
    }
    n_left
}

/// What one tree's growth produced, with the rows of each leaf.
pub struct Grown {
    pub tree: Tree,
    /// (begin, len) of each leaf's rows in the index array.
    pub leaf_rows: Vec<(usize, usize)>,
    /// (low, high) bounds on each leaf's value from monotone constraints.
    pub leaf_bounds: Vec<(f64, f64)>,
}

/// Grows one tree on `rows` (which it reorders) with quantised gradients.
#[allow(clippy::too_many_arguments)]
pub fn grow_tree(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    rows: &mut [u32],
    g: &[i64],
    h: &[i64],
    sg: f64,
    sh: f64,
) -> Grown {
    grow_tree_pooled(data, p, feats, rows, g, h, sg, sh, &mut HistPool::default())
}

/// [`grow_tree`] reusing histogram buffers from `pool` (and returning them to it).
#[allow(clippy::too_many_arguments)]
pub fn grow_tree_pooled(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    rows: &mut [u32],
    g: &[i64],
    h: &[i64],
    sg: f64,
    sh: f64,
    pool: &mut HistPool,
) -> Grown {
    let ctx = Ctx { p, sg, sh };
    let depth_limit = p.depth_limit();
    let max_leaves = match p.grow_policy {
        GrowPolicy::LeafWise => p.num_leaves,
        GrowPolicy::DepthWise => p.num_leaves.max(1 << depth_limit.unwrap_or(6).min(16)),
    };
    let gh: Vec<[i64; 2]> = g
        .par_iter()
        .zip(h.par_iter())
        .map(|(g, h)| [*g, *h])
        .collect();
    let root_hist = build_histogram_pooled(data, feats, rows, &gh, pool);
    let mut sum = Sums {
        n: rows.len() as i64,
        ..Default::default()
    };
    if let Some(&f) = feats.first() {
        for b in &root_hist[data.offsets[f]..data.offsets[f + 1]] {
            sum.g += b.g;
            sum.h += b.h;
        }
    }
    let mut tree = Tree::default();
    let splittable = |depth: usize| depth_limit.is_none_or(|d| depth < d);
    let mut leaves = vec![Leaf {
        begin: 0,
        len: rows.len(),
        depth: 0,
        sum,
        split: if splittable(0) {
            best_split(&ctx, data, feats, &root_hist, &sum, Bounds::NONE)
        } else {
            None
        },
        hist: root_hist,
        parent: None,
        bounds: Bounds::NONE,
    }];
    while leaves.len() < max_leaves {
        // Next leaf: largest gain (leaf-wise) or shallowest, then largest gain (depth-wise);
        // ties go to the lower leaf index.
        let mut pick: Option<usize> = None;
        for (i, l) in leaves.iter().enumerate() {
            let Some(s) = &l.split else { continue };
            pick = match pick {
                None => Some(i),
                Some(j) => {
                    let (lj, sj) = (
                        &leaves[j],
                        leaves[j].split.as_ref().map_or(f64::MIN, |s| s.gain),
                    );
                    let better = match p.grow_policy {
                        GrowPolicy::LeafWise => s.gain > sj,
                        GrowPolicy::DepthWise => {
                            l.depth < lj.depth || (l.depth == lj.depth && s.gain > sj)
                        }
                    };
                    Some(if better { i } else { j })
                }
            };
        }
        let Some(li) = pick else { break };
        let Some(split) = leaves[li].split.take() else {
            break;
        };
        let (begin, len, depth) = (leaves[li].begin, leaves[li].len, leaves[li].depth);
        let n_left = partition(data, &split, &mut rows[begin..begin + len]);
        // Exact counts now that the rows are partitioned.
        let mut split = split;
        split.left.n = n_left as i64;
        split.right.n = (len - n_left) as i64;
        // The new internal node.
        let node = tree.left.len();
        let new_leaf = leaves.len();
        let f = split.feature;
        let (threshold, cat_index) = match (&split.cat_bins, &data.mappers[f]) {
            (Some(bits), _) => {
                tree.cat_bitsets.push(bits.clone());
                (0.0, (tree.cat_bitsets.len() - 1) as i32)
            }
            (None, BinMapper::Numeric { upper }) => (upper[split.threshold_bin as usize], -1),
            (None, _) => (0.0, -1),
        };
        let parent_sum = leaves[li].sum;
        tree.left.push(!(li as i32));
        tree.right.push(!(new_leaf as i32));
        tree.feature.push(f as u32);
        tree.threshold_bin.push(split.threshold_bin);
        tree.threshold.push(threshold);
        tree.default_left.push(split.default_left);
        tree.cat_index.push(cat_index);
        tree.gain.push(split.gain);
        tree.node_hess.push(parent_sum.h as f64 / sh);
        tree.node_count.push(parent_sum.n as u64);
        tree.node_value
            .push(ctx.leaf_value(&parent_sum) * p.learning_rate);
        if let Some((pn, is_left)) = leaves[li].parent {
            if is_left {
                tree.left[pn] = node as i32;
            } else {
                tree.right[pn] = node as i32;
            }
        }
        // Histograms: scan the smaller child, subtract for the larger.
        let (l_rows, r_rows) = (begin..begin + n_left, begin + n_left..begin + len);
        let mut large = std::mem::take(&mut leaves[li].hist);
        let left_small = n_left <= len - n_left;
        let small = build_histogram_pooled(
            data,
            feats,
            &rows[if left_small {
                l_rows.clone()
            } else {
                r_rows.clone()
            }],
            &gh,
            pool,
        );
        for (a, b) in large.iter_mut().zip(&small) {
            *a = a.sub(b);
        }
        let (lh, rh) = if left_small {
            (small, large)
        } else {
            (large, small)
        };
        let child_depth = depth + 1;
        // Output bounds of the children: a split on a monotone feature bounds both sides
        // by the mid-point of their outputs.
        let pb = leaves[li].bounds;
        let c = p.monotone_constraints.get(f).copied().unwrap_or(0);
        let (lb, rb) = if c != 0 && split.cat_bins.is_none() {
            let mid = (pb.clamp(ctx.leaf_value(&split.left))
                + pb.clamp(ctx.leaf_value(&split.right)))
                / 2.0;
            if c > 0 {
                (
                    Bounds {
                        lo: pb.lo,
                        hi: pb.hi.min(mid),
                    },
                    Bounds {
                        lo: pb.lo.max(mid),
                        hi: pb.hi,
                    },
                )
            } else {
                (
                    Bounds {
                        lo: pb.lo.max(mid),
                        hi: pb.hi,
                    },
                    Bounds {
                        lo: pb.lo,
                        hi: pb.hi.min(mid),
                    },
                )
            }
        } else {
            (pb, pb)
        };
        let (ls, rs) = if splittable(child_depth) {
            rayon::join(
                || best_split(&ctx, data, feats, &lh, &split.left, lb),
                || best_split(&ctx, data, feats, &rh, &split.right, rb),
            )
        } else {
            (None, None)
        };
        leaves[li] = Leaf {
            begin,
            len: n_left,
            depth: child_depth,
            sum: split.left,
            hist: lh,
            split: ls,
            parent: Some((node, true)),
            bounds: lb,
        };
        leaves.push(Leaf {
            begin: begin + n_left,
            len: len - n_left,
            depth: child_depth,
            sum: split.right,
            hist: rh,
            split: rs,
            parent: Some((node, false)),
            bounds: rb,
        });
    }
    let mut leaf_rows = Vec::with_capacity(leaves.len());
    let mut leaf_bounds = Vec::with_capacity(leaves.len());
    for l in leaves {
        tree.leaf_value
            .push(l.bounds.clamp(ctx.leaf_value(&l.sum)) * p.learning_rate);
        leaf_bounds.push((l.bounds.lo * p.learning_rate, l.bounds.hi * p.learning_rate));
        tree.leaf_hess.push(l.sum.h as f64 / sh);
        tree.leaf_count.push(l.sum.n as u64);
        leaf_rows.push((l.begin, l.len));
        if !l.hist.is_empty() {
            pool.put(l.hist);
        }
    }
    Grown {
        tree,
        leaf_rows,
        leaf_bounds,
    }
}

/// Renews leaf values to the weighted `q`-quantile of the residuals of their rows
/// (absolute and pinball losses, as LightGBM does).
pub fn renew_leaves(
    grown: &mut Grown,
    rows: &[u32],
    y: &[f64],
    score: &[f64],
    w: Option<&[f64]>,
    q: f64,
    lr: f64,
) {
    let values: Vec<f64> = grown
        .leaf_rows
        .par_iter()
        .map(|&(b, n)| {
            let idx = &rows[b..b + n];
            let res: Vec<f64> = idx
                .iter()
                .map(|&r| y[r as usize] - score[r as usize])
                .collect();
            let ww: Option<Vec<f64>> = w.map(|w| idx.iter().map(|&r| w[r as usize]).collect());
            weighted_quantile(&res, ww.as_deref(), q) * lr
        })
        .collect();
    let values = values
        .into_iter()
        .zip(&grown.leaf_bounds)
        .map(|(v, (lo, hi))| v.max(*lo).min(*hi))
        .collect();
    grown.tree.leaf_value = values;
}
