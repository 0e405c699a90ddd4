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
//! level of a tree reads at most half the rows. The histogram itself (24 bytes a bin, about
//! 170 KB for 28 features × 256 bins) stays in L2.

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

/// One histogram bin: quantised gradient and hessian sums and the row count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistBin {
    pub g: i64,
    pub h: i64,
    pub n: i64,
}

impl HistBin {
    #[inline]
    fn add(&mut self, o: &HistBin) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
    #[inline]
    fn sub(&self, o: &HistBin) -> HistBin {
        HistBin {
            g: self.g - o.g,
            h: self.h - o.h,
            n: self.n - o.n,
        }
    }
}

/// Quantises values to i64 with a power-of-two scale such that the sum of up to `n`
/// of them stays below 2^62 in magnitude.
pub fn quantise(v: &[f64]) -> (Vec<i64>, f64) {
    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 1.0);
    }
    let n_bits = (v.len().max(1) as f64).log2().ceil() + 1.0;
    let exp = (62.0 - n_bits - max.log2()).floor();
    let scale = 2f64.powi(exp as i32);
    (
        v.par_iter().map(|x| (x * scale).round() as i64).collect(),
        scale,
    )
}

const CHUNK: usize = 8192;

fn accumulate<T: Copy + Into<usize> + Sync>(
    bins: &[T],
    nf: usize,
    offsets: &[usize],
    feats: &[usize],
    rows: &[u32],
    g: &[i64],
    h: &[i64],
    hist: &mut [HistBin],
) {
    let all = feats.len() == nf;
    for &r in rows {
        let r = r as usize;
        let (gr, hr) = (g[r], h[r]);
        let row = &bins[r * nf..r * nf + nf];
        if all {
            for (f, b) in row.iter().enumerate() {
                let e = &mut hist[offsets[f] + (*b).into()];
                e.g += gr;
                e.h += hr;
                e.n += 1;
            }
        } else {
            for &f in feats {
                let e = &mut hist[offsets[f] + row[f].into()];
                e.g += gr;
                e.h += hr;
                e.n += 1;
            }
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
    let total = data.total_bins();
    let run = |rows: &[u32], hist: &mut [HistBin]| match &data.bins {
        Bins::U8(b) => accumulate(b, data.n_features, &data.offsets, feats, rows, g, h, hist),
        Bins::U16(b) => accumulate(b, data.n_features, &data.offsets, feats, rows, g, h, hist),
    };
    if rows.len() <= 2 * CHUNK {
        let mut hist = vec![HistBin::default(); total];
        run(rows, &mut hist);
        return hist;
    }
    rows.par_chunks(CHUNK)
        .fold(
            || vec![HistBin::default(); total],
            |mut hist, c| {
                run(c, &mut hist);
                hist
            },
        )
        .reduce(
            || vec![HistBin::default(); total],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(&b) {
                    x.add(y);
                }
                a
            },
        )
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
    pub left: HistBin,
    pub right: HistBin,
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
    fn score(&self, s: &HistBin, extra_l2: f64) -> f64 {
        let g = self.thr_l1(s.g as f64 / self.sg);
        g * g / (s.h as f64 / self.sh + self.p.lambda_l2 + extra_l2)
    }
    #[inline]
    fn ok(&self, s: &HistBin) -> bool {
        s.n >= self.p.min_data_in_leaf.max(1) as i64
            && s.h as f64 / self.sh >= self.p.min_sum_hessian_in_leaf
    }
    fn leaf_value(&self, s: &HistBin) -> f64 {
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

fn numeric_split(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &HistBin,
    parent: f64,
) -> Option<Split> {
    let nb = h.len();
    let miss = h[nb - 1];
    let mut best: Option<Split> = None;
    let dirs: &[bool] = if miss.n > 0 { &[false, true] } else { &[false] };
    for &default_left in dirs {
        let mut acc = if default_left {
            miss
        } else {
            HistBin::default()
        };
        for t in 0..nb - 1 {
            acc.add(&h[t]);
            let right = total.sub(&acc);
            if right.n < ctx.p.min_data_in_leaf.max(1) as i64 {
                break;
            }
            if !ctx.ok(&acc) || !ctx.ok(&right) {
                continue;
            }
            let gain = ctx.score(&acc, 0.0) + ctx.score(&right, 0.0) - parent;
            if gain > ctx.p.min_gain_to_split && best.as_ref().is_none_or(|b| gain > b.gain) {
                best = Some(Split {
                    feature: f,
                    gain,
                    threshold_bin: t as u32,
                    default_left,
                    cat_bins: None,
                    left: acc,
                    right,
                });
            }
        }
    }
    if let Some(b) = &mut best {
        if miss.n == 0 {
            // No missing values here: send future missing values to the heavier side.
            b.default_left = b.left.h >= b.right.h;
        }
    }
    best
}

fn categorical_split(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &HistBin,
    parent: f64,
) -> Option<Split> {
    let p = ctx.p;
    let used: Vec<usize> = (0..h.len()).filter(|&b| h[b].n > 0).collect();
    let mut best: Option<Split> = None;
    let consider = |left_bins: &[usize], extra_l2: f64, best: &mut Option<Split>| {
        let mut left = HistBin::default();
        for &b in left_bins {
            left.add(&h[b]);
        }
        let right = total.sub(&left);
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
        .filter(|&&b| h[b].n >= p.min_data_per_group as i64)
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
    total: &HistBin,
) -> Option<Split> {
    let parent = ctx.score(total, 0.0);
    feats
        .par_iter()
        .map(|&f| {
            let h = &hist[data.offsets[f]..data.offsets[f + 1]];
            match &data.mappers[f] {
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
    sum: HistBin,
    hist: Vec<HistBin>,
    split: Option<Split>,
    /// (node, is_left) of the pointer to this leaf; None for the root.
    parent: Option<(usize, bool)>,
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
    let side = |r: &u32| goes_left(s, data.bin(*r as usize, f), missing);
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
    let ctx = Ctx { p, sg, sh };
    let depth_limit = p.depth_limit();
    let max_leaves = match p.grow_policy {
        GrowPolicy::LeafWise => p.num_leaves,
        GrowPolicy::DepthWise => p.num_leaves.max(1 << depth_limit.unwrap_or(6).min(16)),
    };
    let root_hist = build_histogram(data, feats, rows, g, h);
    let mut sum = HistBin::default();
    if let Some(&f) = feats.first() {
        for b in &root_hist[data.offsets[f]..data.offsets[f + 1]] {
            sum.add(b);
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
            best_split(&ctx, data, feats, &root_hist, &sum)
        } else {
            None
        },
        hist: root_hist,
        parent: None,
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
        debug_assert_eq!(n_left as i64, split.left.n);
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
        let parent_hist = std::mem::take(&mut leaves[li].hist);
        let left_small = n_left <= len - n_left;
        let small = build_histogram(
            data,
            feats,
            &rows[if left_small {
                l_rows.clone()
            } else {
                r_rows.clone()
            }],
            g,
            h,
        );
        let large: Vec<HistBin> = parent_hist
            .iter()
            .zip(&small)
            .map(|(a, b)| a.sub(b))
            .collect();
        let (lh, rh) = if left_small {
            (small, large)
        } else {
            (large, small)
        };
        let child_depth = depth + 1;
        let (ls, rs) = if splittable(child_depth) {
            rayon::join(
                || best_split(&ctx, data, feats, &lh, &split.left),
                || best_split(&ctx, data, feats, &rh, &split.right),
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
        };
        leaves.push(Leaf {
            begin: begin + n_left,
            len: len - n_left,
            depth: child_depth,
            sum: split.right,
            hist: rh,
            split: rs,
            parent: Some((node, false)),
        });
    }
    let mut leaf_rows = Vec::with_capacity(leaves.len());
    for l in &leaves {
        tree.leaf_value
            .push(ctx.leaf_value(&l.sum) * p.learning_rate);
        tree.leaf_hess.push(l.sum.h as f64 / sh);
        tree.leaf_count.push(l.sum.n as u64);
        leaf_rows.push((l.begin, l.len));
    }
    Grown { tree, leaf_rows }
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
    grown.tree.leaf_value = values;
}
