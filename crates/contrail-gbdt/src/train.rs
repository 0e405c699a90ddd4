//! Tree growth on fixed-point histograms.
//!
//! Each iteration computes gradients and hessians, quantises them with power-of-two scales
//! chosen from their sums so that no sum over any subset of rows can overflow, and packs
//! each row's pair into one `u64` (gradient in the high 31 bits, hessian in the low 32):
//! a histogram bin is one `u64` and adding a row is one integer add. Integer sums do not
//! depend on the order of addition, so histograms, splits and trees are bitwise identical
//! whatever the number of threads, and the larger child's histogram is the parent's minus
//! the smaller child's, exactly. Quantisation only steers split finding: leaf values are
//! computed from the exact `f64` gradient sums of each leaf's rows.
//!
//! Memory traffic per histogram pass: the bin matrix is row-major with one byte per
//! column, so a row costs one byte per column plus 8 bytes of packed gradient (gathered
//! by row index, rows of a leaf in ascending order). Features with few bins share a column
//! of joint bins ([`crate::bin::RowMatrix`]): the fare data's 34 usable features are 23
//! columns. With the subtraction trick only the smaller child is scanned. Past the root, a
//! leaf's rows are a sparse subset, so each row is a cache miss that the hardware
//! prefetcher does not predict; the pass prefetches the bins and gradient of the row 16
//! ahead. The bin matrix, the packed gradients and the bin columns are asked for 2 MiB
//! pages ([`crate::bin::advise_huge_pages`]): with 4 KiB pages such a row also misses the
//! TLB; a sparse pass over 5% of 2 M rows took 35 ns a row instead of 48 in a
//! microbenchmark here, and the histogram passes of 30 synthetic trees about 8% less time.
//!
//! Measured on the 2-core development machine (2 M rows, 255 leaves, 2 threads): a tree
//! scans about 3.8 × 2 M rows. A bin update costs about 0.7 ns per thread on the fare data
//! and 1.3 ns on 28 continuous features of 255 bins each (2.2 ns there with 16-byte bins
//! and no prefetch); the same loop over rows in order and in cache costs 0.6–0.75 ns. So
//! on wide continuous features about half of the pass still waits on rows. Keeping each
//! leaf's rows contiguous instead (the partition copying every row's codes, packed
//! gradient and number to the children's positions of a second buffer, so each pass
//! streams) was built and measured here: it grew the same trees, and histogram passes
//! fell from 33% to 20% of the run, but partitions rose from 14% to 30% (a row moves at
//! every split above its leaf, but is histogrammed only in the smaller children it falls
//! in, 3.8 on average), so 60 synthetic trees took 27.0 s against 24.6 s. It is not
//! kept. `cargo bench --bench gbdt` reports the all-rows pass in rows/s and bytes/s.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bin::{BinMapper, Binned, Bins, RowMatrix};
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
    /// Rows sampled to find numeric bin edges (all rows when there are fewer).
    #[serde(default = "default_bin_sample")]
    pub bin_construct_sample_cnt: usize,
    /// Seed of that sample.
    #[serde(default = "default_data_seed")]
    pub data_random_seed: u64,
    /// Bin edges of each numeric feature (with more distinct values than bins) placed by
    /// a one-dimensional regression tree of the label before the quantile edges, so a
    /// step in the label falls on an edge ([`crate::bin::EdgeLabel`]); at most `max_bin /
    /// 8` are used. 0: quantiles only (LightGBM's binning; models from before this
    /// parameter).
    #[serde(default)]
    pub label_edges: usize,
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
    /// On a device (`wgpu`, `cuda`): grow the CPU's trees bit for bit, with gradients,
    /// leaf values and scores computed on the host in `f64` (LightGBM's name). Off, the
    /// device computes them itself in `f32` and the model agrees with the CPU's to
    /// rounding. The CPU is always deterministic.
    #[serde(default)]
    pub deterministic: bool,
}

fn default_bin_sample() -> usize {
    crate::bin::BIN_SAMPLE
}

fn default_data_seed() -> u64 {
    1
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
            bin_construct_sample_cnt: default_bin_sample(),
            data_random_seed: default_data_seed(),
            label_edges: crate::bin::LABEL_EDGES,
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
            deterministic: false,
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
        if self.bin_construct_sample_cnt == 0 {
            return bad("bin_construct_sample_cnt", "must be at least 1");
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

    /// The most leaves a tree can have.
    pub(crate) fn max_leaves(&self) -> usize {
        match self.grow_policy {
            GrowPolicy::LeafWise => self.num_leaves,
            GrowPolicy::DepthWise => self
                .num_leaves
                .max(1 << self.depth_limit().unwrap_or(6).min(16)),
        }
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

/// Bits of a packed histogram entry that hold the hessian sum (the low bits); the
/// gradient sum is the high `64 - H_BITS`, two's complement.
pub const H_BITS: u32 = 32;
const H_MASK: u64 = (1 << H_BITS) - 1;

/// Packs a quantised gradient and a non-negative quantised hessian into one `u64`. Sums
/// of packed values (wrapping) are the packed sums, as long as the hessian sum stays
/// below `2^H_BITS` and the gradient sum inside `±2^(63 - H_BITS)`, which
/// [`quantise_packed`] guarantees for every subset of the rows.
#[inline]
pub fn pack(g: i64, h: i64) -> u64 {
    ((g << H_BITS) as u64).wrapping_add(h as u64)
}

/// The gradient and hessian sums of a packed histogram entry.
#[inline]
pub fn unpack(p: u64) -> HistBin {
    HistBin {
        g: (p as i64) >> H_BITS,
        h: (p & H_MASK) as i64,
    }
}

/// Rows a chunk of [`abs_sum`] and [`gradients_packed`] sums: partial sums over chunks of
/// this size, added in chunk order, are the same bits whatever the thread count.
const SUM_CHUNK: usize = 1 << 16;

/// Sum of `|x|` over fixed-size chunks, added in chunk order (the same bits whatever the
/// thread count), and whether every value is `>= 0` (false for NaN too).
fn abs_sum(v: &[f64]) -> (f64, bool) {
    let parts: Vec<(f64, bool)> = v
        .par_chunks(SUM_CHUNK)
        .map(|c| {
            c.iter()
                .fold((0.0, true), |(s, ok), x| (s + x.abs(), ok && *x >= 0.0))
        })
        .collect();
    parts
        .iter()
        .fold((0.0, true), |(s, ok), p| (s + p.0, ok && p.1))
}

/// `x.round() as i64` (half away from zero, saturating; NaN is 0) without the call to
/// libm's `round` that baseline x86-64 makes for it: `x as i64` truncates, and
/// `x - trunc(x)` is exact, so comparing it with ±0.5 rounds as `round` does, to the bit.
/// (Four million calls a round on two million rows.)
#[inline]
pub(crate) fn round_i64(x: f64) -> i64 {
    let t = x as i64;
    let f = x - t as f64;
    t.saturating_add((f >= 0.5) as i64)
        .saturating_sub((f <= -0.5) as i64)
}

/// A power-of-two scale `s` with `sum(|round(x·s)|) < 2^bits` whatever the rounding.
pub(crate) fn scale_for(total_abs: f64, n: usize, bits: u32) -> Result<f64, GbdtError> {
    let budget = 2f64.powi(bits as i32) - n as f64 - 1.0;
    if budget <= 0.0 {
        return Err(GbdtError::Data {
            what: "training data".into(),
            reason: format!("{n} rows are more than packed histograms can count"),
        });
    }
    if total_abs == 0.0 || !total_abs.is_finite() {
        return Ok(1.0);
    }
    Ok(2f64
        .powi((budget / total_abs).log2().floor() as i32 - 1)
        .min(2f64.powi(60)))
}

/// Quantises gradients and hessians (hessians must be `>= 0`) and packs them, one `u64`
/// a row; returns the scales `(sg, sh)` (a quantised value is `round(x · s)`).
///
/// The scales are powers of two chosen from the sums of `|g|` and `h`, so the sums over
/// any subset of the rows fit their fields: a gradient is kept to about
/// `2^-31 · sum|g|` and a hessian to `2^-32 · sum h`, which for a row of average size
/// in two million is one part in a thousand or better (a constant hessian is exact). Split
/// gains are computed from these sums; leaf values are recomputed from the exact gradients
/// ([`exact_leaf_values`]).
pub fn quantise_packed(g: &[f64], h: &[f64], out: &mut [u64]) -> Result<(f64, f64), GbdtError> {
    let (g_sum, _) = abs_sum(g);
    let (h_sum, h_ok) = abs_sum(h);
    pack_scaled(g, h, (g_sum, h_sum, h_ok), out)
}

/// The scales for the sums `(sum|g|, sum h, every h >= 0)` of `g` and `h`, and the packed
/// pairs into `out`.
fn pack_scaled(
    g: &[f64],
    h: &[f64],
    (g_sum, h_sum, h_ok): (f64, f64, bool),
    out: &mut [u64],
) -> Result<(f64, f64), GbdtError> {
    let n = g.len();
    if !h_ok {
        let i = h.iter().position(|x| x.is_nan() || *x < 0.0).unwrap_or(0);
        return Err(GbdtError::Data {
            what: "training data".into(),
            reason: format!("row {i} has hessian {} (must be >= 0)", h[i]),
        });
    }
    let sg = scale_for(g_sum, n, 63 - H_BITS)?;
    let sh = scale_for(h_sum, n, H_BITS)?;
    out.par_chunks_mut(SUM_CHUNK)
        .zip(g.par_chunks(SUM_CHUNK).zip(h.par_chunks(SUM_CHUNK)))
        .for_each(|(o, (g, h))| {
            for ((o, g), h) in o.iter_mut().zip(g).zip(h) {
                *o = pack(round_i64(g * sg), round_i64(h * sh));
            }
        });
    Ok((sg, sh))
}

/// Each row's gradient and hessian of `obj` at its score (times its weight) into `g` and
/// `h`, and their packed quantised pairs into `out`, the same bits as
/// [`quantise_packed`]: the sums that set the scales are taken as the gradients are
/// written, so a round reads the rows' values twice instead of four times.
pub fn gradients_packed(
    obj: &Objective,
    (score, target, w): (&[f64], &[f64], Option<&[f64]>),
    (g, h): (&mut [f64], &mut [f64]),
    out: &mut [u64],
) -> Result<(f64, f64), GbdtError> {
    let parts: Vec<(f64, f64, bool)> = g
        .par_chunks_mut(SUM_CHUNK)
        .zip(h.par_chunks_mut(SUM_CHUNK))
        .enumerate()
        .map(|(c, (g, h))| {
            let base = c * SUM_CHUNK;
            let (mut gs, mut hs, mut ok) = (0.0, 0.0, true);
            for (i, (g, h)) in g.iter_mut().zip(h.iter_mut()).enumerate() {
                let r = base + i;
                let (gi, hi) = obj.grad_hess(score[r], target[r]);
                let wi = w.map_or(1.0, |w| w[r]);
                *g = gi * wi;
                *h = hi * wi;
                gs += g.abs();
                hs += h.abs();
                ok = ok && *h >= 0.0;
            }
            (gs, hs, ok)
        })
        .collect();
    let sums = parts.iter().fold((0.0, 0.0, true), |(g, h, ok), p| {
        (g + p.0, h + p.1, ok && p.2)
    });
    pack_scaled(g, h, sums, out)
}

/// [`quantise_packed`] into a new vector.
pub fn quantise(g: &[f64], h: &[f64]) -> Result<(Vec<u64>, f64, f64), GbdtError> {
    let mut out = vec![0; g.len()];
    let (sg, sh) = quantise_packed(g, h, &mut out)?;
    Ok((out, sg, sh))
}

/// Rows below this are histogrammed by one thread.
const PAR_ROWS: usize = 1024;

/// Asks the CPU to bring the cache line at `p` closer; a hint, nothing is read.
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect: it never faults and reads no memory
    // the program can observe, whatever the address (the pointers passed are in bounds).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Rows ahead whose bins and gradient are prefetched: a leaf's rows are a sparse,
/// ascending subset, which the hardware prefetcher does not follow.
const PREFETCH_AHEAD: usize = 16;

/// Prefetches the bins of features `f0..f1` and the gradient of the row
/// `PREFETCH_AHEAD` positions after position `i` of `rows`.
#[inline(always)]
fn prefetch_row<T>(
    bins: &[T],
    nf: usize,
    (f0, f1): (usize, usize),
    rows: &[u32],
    i: usize,
    gh: &[u64],
) {
    if let Some(&r) = rows.get(i + PREFETCH_AHEAD) {
        let r = r as usize;
        prefetch(&bins[r * nf + f0]);
        prefetch(&bins[r * nf + f1 - 1]);
        prefetch(&gh[r]);
    }
}

/// Rows from which [`accumulate_u8`] pays for its scratch histogram.
const DENSE_ROWS: usize = 256;

/// [`accumulate`] for one-byte codes and every column of the matrix: each column gets a
/// 256-bin array in a scratch histogram, so a bin index is a byte and needs no bounds
/// check (a third fewer instructions per update, measured 1.3× faster on rows in cache);
/// the scratch bins are then added to the histogram's.
fn accumulate_u8(bins: &[u8], m: &RowMatrix, rows: &[u32], gh: &[u64], hist: &mut [u64]) {
    let w = m.width();
    let mut scratch = vec![[0u64; 256]; w];
    for (i, &r) in rows.iter().enumerate() {
        prefetch_row(bins, w, (0, w), rows, i, gh);
        let r = r as usize;
        let g = gh[r];
        for (b, h) in bins[r * w..r * w + w].iter().zip(scratch.iter_mut()) {
            let e = &mut h[*b as usize];
            *e = e.wrapping_add(g);
        }
    }
    for (grp, s) in m.groups.iter().zip(&scratch) {
        for (d, x) in hist[grp.offset..grp.offset + grp.n_bins].iter_mut().zip(s) {
            *d = d.wrapping_add(*x);
        }
    }
}

/// Adds the packed gradients of `rows` to the histogram bins of the matrix columns
/// `groups` (ascending).
fn accumulate<T: Copy + Into<usize> + Sync>(
    bins: &[T],
    m: &RowMatrix,
    groups: &[usize],
    rows: &[u32],
    gh: &[u64],
    hist: &mut [u64],
) {
    let w = m.width();
    let (g0, g1) = (groups[0], groups[groups.len() - 1] + 1);
    let offs: Vec<usize> = groups.iter().map(|&g| m.groups[g].offset).collect();
    for (i, &r) in rows.iter().enumerate() {
        prefetch_row(bins, w, (g0, g1), rows, i, gh);
        let r = r as usize;
        let g = gh[r];
        let row = &bins[r * w..r * w + w];
        for (&c, off) in groups.iter().zip(&offs) {
            let e = &mut hist[off + row[c].into()];
            *e = e.wrapping_add(g);
        }
    }
}

/// Histogram buffers kept between leaves and trees, so they are not allocated (and
/// zeroed by the kernel) for every split.
#[derive(Debug, Default)]
pub struct HistPool {
    free: Vec<Vec<u64>>,
    /// The partition's buffer, as long as the largest leaf partitioned so far.
    scratch: Vec<u32>,
}

impl HistPool {
    fn get(&mut self, total: usize) -> Vec<u64> {
        match self.free.pop() {
            Some(mut v) if v.len() == total => {
                v.fill(0);
                v
            }
            _ => vec![0; total],
        }
    }
    fn put(&mut self, v: Vec<u64>) {
        if self.free.len() < 1024 {
            self.free.push(v);
        }
    }
}

/// Builds the packed histogram of `rows` over the features in `feats` (those of them in
/// the row matrix); features bundled with them get their bins too, those of other
/// features stay zero, and the bundles' joint bins follow every feature's own bins.
/// Unpack an entry with [`unpack`].
pub fn build_histogram(data: &Binned, feats: &[usize], rows: &[u32], gh: &[u64]) -> Vec<u64> {
    build_histogram_pooled(data, feats, rows, gh, &mut HistPool::default())
}

/// Threads take contiguous ranges of the rows, each into its own histogram, and the
/// histograms are added: integer sums, so the result does not depend on the thread count.
/// (Splitting the features between threads instead was measured slower: each thread then
/// fetches every row's cache lines, and the pass is bound by fetching rows, not by the
/// histogram's read-modify-writes.)
fn build_histogram_pooled(
    data: &Binned,
    feats: &[usize],
    rows: &[u32],
    gh: &[u64],
    pool: &mut HistPool,
) -> Vec<u64> {
    let m = &data.rows;
    let total = m.hist_len;
    let mut hist = pool.get(total);
    let groups = m.groups_of(feats);
    if groups.is_empty() {
        return hist;
    }
    let every = groups.len() == m.width();
    let run = |rows: &[u32], hist: &mut [u64]| match &m.bins {
        Bins::U8(b) if rows.len() >= DENSE_ROWS && every => accumulate_u8(b, m, rows, gh, hist),
        Bins::U8(b) => accumulate(b, m, &groups, rows, gh, hist),
        Bins::U16(b) => accumulate(b, m, &groups, rows, gh, hist),
    };
    let threads = rayon::current_num_threads().max(1);
    if rows.len() < PAR_ROWS || threads == 1 {
        run(rows, &mut hist);
    } else {
        let per = rows.len().div_ceil(threads);
        let chunks: Vec<&[u32]> = rows.chunks(per).collect();
        let mut others: Vec<Vec<u64>> = chunks[1..].iter().map(|_| pool.get(total)).collect();
        rayon::join(
            || run(chunks[0], &mut hist),
            || {
                others
                    .par_iter_mut()
                    .zip(chunks[1..].par_iter())
                    .for_each(|(h, c)| run(c, h))
            },
        );
        for o in others {
            for (a, b) in hist.iter_mut().zip(&o) {
                *a = a.wrapping_add(*b);
            }
            pool.put(o);
        }
    }
    m.marginalise(&data.offsets, &groups, &mut hist);
    hist
}

/// The sums of each leaf's rows in the exact (unquantised) gradients and hessians, with
/// `leaf_of[r]` the leaf of row `r` (`u32::MAX`: not in the tree's sample). Rows are
/// added in fixed-size chunks combined in chunk order, so the sums are the same bits
/// whatever the thread count.
pub fn exact_leaf_sums(n_leaves: usize, leaf_of: &[u32], g: &[f64], h: &[f64]) -> Vec<(f64, f64)> {
    const CHUNK: usize = 1 << 16;
    let parts: Vec<Vec<(f64, f64)>> = leaf_of
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, leaves)| {
            let mut s = vec![(0.0, 0.0); n_leaves];
            let base = c * CHUNK;
            for (i, &l) in leaves.iter().enumerate() {
                if let Some(e) = s.get_mut(l as usize) {
                    e.0 += g[base + i];
                    e.1 += h[base + i];
                }
            }
            s
        })
        .collect();
    let mut total = vec![(0.0, 0.0); n_leaves];
    for p in parts {
        for (t, x) in total.iter_mut().zip(p) {
            t.0 += x.0;
            t.1 += x.1;
        }
    }
    total
}

/// Sets the leaf values of a grown tree from exact gradient and hessian sums (L1, L2,
/// monotone bounds and the learning rate applied as in growth).
pub fn set_leaf_values(grown: &mut Grown, p: &Params, sums: &[(f64, f64)]) {
    for (i, &(g, h)) in sums.iter().enumerate() {
        let (lo, hi) = grown.leaf_bounds[i];
        let l2 = p.lambda_l2 + grown.leaf_extra_l2[i];
        let v = -soft_threshold(g, p.lambda_l1) / (h + l2) * p.learning_rate;
        grown.tree.leaf_value[i] = v.max(lo).min(hi);
        grown.tree.leaf_hess[i] = h;
    }
}

/// L1 shrinkage of a gradient sum towards zero by `l1`.
#[inline]
fn soft_threshold(g: f64, l1: f64) -> f64 {
    if g > l1 {
        g - l1
    } else if g < -l1 {
        g + l1
    } else {
        0.0
    }
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
    /// L2 added for the children's values (`cat_l2` after a gradient-ordered categorical
    /// split, as LightGBM computes their outputs).
    pub extra_l2: f64,
}

struct Ctx<'a> {
    p: &'a Params,
    sg: f64,
    sh: f64,
}

impl Ctx<'_> {
    #[inline]
    fn thr_l1(&self, g: f64) -> f64 {
        soft_threshold(g, self.p.lambda_l1)
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
    fn leaf_value(&self, s: &Sums, extra_l2: f64) -> f64 {
        -self.thr_l1(s.g as f64 / self.sg) / (s.h as f64 / self.sh + self.p.lambda_l2 + extra_l2)
    }
}

fn better(a: &Option<Split>, b: &Option<Split>) -> bool {
    match (a, b) {
        (Some(_), None) => true,
        (Some(x), Some(y)) => x.gain > y.gain || (x.gain == y.gain && x.feature < y.feature),
        _ => false,
    }
}

/// The smallest integer hessian sum a child may have: both leaf constraints are one
/// bound, an estimated count `round(h · cf) >= min_data_in_leaf` and a hessian sum
/// `>= min_sum_hessian_in_leaf`; `cf` estimates rows from the hessian.
fn min_child_hessian(ctx: &Ctx, total: &Sums) -> (f64, f64) {
    let p = ctx.p;
    let cf = total.n as f64 / (total.h as f64).max(1.0);
    let min_h =
        ((p.min_data_in_leaf.max(1) as f64 - 0.5) / cf).max(p.min_sum_hessian_in_leaf * ctx.sh);
    (min_h, cf)
}

/// The split of a numeric feature at threshold bin `t`, missing values going left if
/// `default_left`.
fn numeric_at(
    f: usize,
    h: &[HistBin],
    total: &Sums,
    cf: f64,
    (t, default_left, gain): (usize, bool, f64),
) -> Split {
    let miss = h[h.len() - 1];
    let mut acc = if default_left {
        miss
    } else {
        HistBin::default()
    };
    for b in &h[..=t] {
        acc.add(b);
    }
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
    Split {
        feature: f,
        gain,
        threshold_bin: t as u32,
        default_left,
        cat_bins: None,
        left,
        right,
        extra_l2: 0.0,
    }
}

/// Scans the thresholds of one numeric feature (both directions for missing values where
/// there are any) and keeps the best candidate by `gain(left_g, left_h, right_g, right_h)`
/// (`None` rejects a candidate); the first of equal gains, missing values right before
/// left. Both leaf constraints are one bound on the integer hessian
/// ([`min_child_hessian`]).
fn scan_numeric(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &Sums,
    gain: impl Fn(i64, i64, i64, i64) -> Option<f64>,
) -> Option<Split> {
    let nb = h.len();
    let miss = h[nb - 1];
    let (min_h, cf) = min_child_hessian(ctx, total);
    let mut best_gain = ctx.p.min_gain_to_split;
    let mut best = None;
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
                    best = Some((t, default_left, g));
                }
            }
        }
    }
    Some(numeric_at(f, h, total, cf, best?))
}

/// Thresholds [`numeric_split`] scans out of arrays on the stack (more take the heap).
const STACK_BINS: usize = 256;

/// [`scan_numeric`] without monotone constraints, the same split to the bit, computed
/// without branches so that it vectorises, in three passes over a feature's thresholds
/// for each missing-value direction: the prefix sums into arrays as `f64` (integers below
/// 2^53, so every sum and difference is exact and equal to the integer one; with missing
/// values left, the first direction's plus the missing bin's); every gain
/// into an array (a threshold that leaves a side under the bound gets −∞), which
/// vectorises; then the first largest is kept. The soft threshold of L1 is
/// `max(|g| − l1, 0)`, whose square is that of the signed one.
///
/// Split finding is about a seventh of a 255-leaf tree on 28 continuous features with
/// missing values (two scans of 255 thresholds for each of 509 leaves). The passes are
/// whole arrays, not blocks of a few thresholds: a vector load of prefix sums just stored
/// one at a time waits for the stores to drain (store forwarding fails), and that wait
/// was most of the scan's time.
#[inline(always)]
fn numeric_split(ctx: &Ctx, f: usize, h: &[HistBin], total: &Sums, parent: f64) -> Option<Split> {
    let m = h.len() - 1;
    let miss = h[m];
    let (min_h, cf) = min_child_hessian(ctx, total);
    let (inv_g, inv_h, l1, l2) = (1.0 / ctx.sg, 1.0 / ctx.sh, ctx.p.lambda_l1, ctx.p.lambda_l2);
    let score = |g: f64, h: f64| {
        let a = (g * inv_g).abs() - l1;
        let a = if a > 0.0 { a } else { 0.0 };
        a * a / (h * inv_h + l2)
    };
    let (tg, th) = (total.g as f64, total.h as f64);
    let mut stack = [[0f64; STACK_BINS]; 3];
    let mut heap = Vec::new();
    let [lg, lh, gains]: [&mut [f64]; 3] = if m <= STACK_BINS {
        let [a, b, c] = &mut stack;
        [&mut a[..m], &mut b[..m], &mut c[..m]]
    } else {
        heap.resize(3 * m, 0.0);
        let (a, rest) = heap.split_at_mut(m);
        let (b, c) = rest.split_at_mut(m);
        [a, b, c]
    };
    let mut best_gain = ctx.p.min_gain_to_split;
    let mut best = None;
    let dirs: &[bool] = if miss.h > 0 { &[false, true] } else { &[false] };
    for &default_left in dirs {
        if default_left {
            // The same prefix sums with the missing bin's added: exact in `f64`, so the
            // same values as converting the integer sums, four lanes at a time.
            let (mg, mh) = (miss.g as f64, miss.h as f64);
            for (g, hh) in lg.iter_mut().zip(lh.iter_mut()) {
                *g += mg;
                *hh += mh;
            }
        } else {
            let (mut ag, mut ah) = (0i64, 0i64);
            for ((g, hh), b) in lg.iter_mut().zip(lh.iter_mut()).zip(&h[..m]) {
                ag += b.g;
                ah += b.h;
                *g = ag as f64;
                *hh = ah as f64;
            }
        }
        for ((out, &lg), &lh) in gains.iter_mut().zip(&*lg).zip(&*lh) {
            let (rg, rh) = (tg - lg, th - lh);
            let gain = score(lg, lh) + score(rg, rh) - parent;
            *out = if lh >= min_h && rh >= min_h {
                gain
            } else {
                f64::NEG_INFINITY
            };
        }
        for (t, &g) in gains.iter().enumerate() {
            if g > best_gain {
                best_gain = g;
                best = Some((t, default_left, g));
            }
        }
    }
    Some(numeric_at(f, h, total, cf, best?))
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

/// An unsigned key in `f64::total_cmp`'s order.
#[inline]
fn order_key(x: f64) -> u64 {
    let b = x.to_bits() as i64;
    ((b ^ (((b >> 63) as u64) >> 1) as i64) as u64) ^ (1 << 63)
}

fn categorical_split(
    ctx: &Ctx,
    f: usize,
    h: &[HistBin],
    total: &Sums,
    parent: f64,
    n_categories: usize,
) -> Option<Split> {
    let p = ctx.p;
    let cf = total.n as f64 / (total.h as f64).max(1.0);
    let tot = HistBin {
        g: total.g,
        h: total.h,
    };
    let used: Vec<usize> = (0..h.len()).filter(|&b| h[b].h > 0).collect();
    let mut best: Option<Split> = None;
    // `lb`: the sums of `left_bins`, kept by the caller as bins join.
    let consider = |left_bins: &[usize], lb: HistBin, extra_l2: f64, best: &mut Option<Split>| {
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
                extra_l2,
            });
        }
    };
    // One category against the rest when the feature has few: LightGBM counts its bins,
    // the categories and one it always keeps for missing values, so a feature of four
    // categories (cabin) is ordered by gradient, which can split two against two.
    if n_categories + 1 <= p.max_cat_to_onehot {
        for &b in &used {
            consider(&[b], h[b], 0.0, &mut best);
        }
        return best;
    }
    // Gradient ordering (LightGBM): categories with at least `cat_smooth` rows, sorted by
    // G / (H + cat_smooth); prefixes of up to `max_num_cat` categories from both ends,
    // evaluated once at least `min_data_per_group` rows joined since the last evaluated
    // prefix and while the rest keeps `min_data_per_group` rows; gains and the children's
    // values with `cat_l2` added to L2.
    let cnt = |b: usize| (h[b].h as f64 * cf).round() as i64;
    // Sorted by ratio (`f64::total_cmp`), ties by bin: the ratio's bits mapped to an
    // unsigned key of the same order, so the sort compares integers (a deep tree sorts
    // the categories of thousands of leaves; float comparisons were most of its split
    // search).
    let mut cand: Vec<(u64, usize)> = used
        .iter()
        .filter(|&&b| cnt(b) as f64 >= p.cat_smooth)
        .map(|&b| {
            (
                order_key((h[b].g as f64 / ctx.sg) / (h[b].h as f64 / ctx.sh + p.cat_smooth)),
                b,
            )
        })
        .collect();
    cand.sort_unstable();
    let n_used = cand.len();
    let max_num_cat = p.max_cat_threshold.min(n_used.div_ceil(2));
    let min_group = p.min_data_per_group as i64;
    let min_h = p.min_sum_hessian_in_leaf;
    for reverse in [false, true] {
        let mut left: Vec<usize> = Vec::new();
        let (mut lb, mut left_n, mut group_n) = (HistBin::default(), 0i64, 0i64);
        for i in 0..max_num_cat {
            let b = if reverse {
                cand[n_used - 1 - i].1
            } else {
                cand[i].1
            };
            left.push(b);
            lb.add(&h[b]);
            left_n += cnt(b);
            group_n += cnt(b);
            if left_n < p.min_data_in_leaf as i64 || (lb.h as f64 / ctx.sh) < min_h {
                continue;
            }
            let right_n = total.n - left_n;
            if right_n < p.min_data_in_leaf as i64 || right_n < min_group {
                break;
            }
            if ((tot.h - lb.h) as f64 / ctx.sh) < min_h {
                break;
            }
            if group_n < min_group {
                continue;
            }
            group_n = 0;
            consider(&left, lb, p.cat_l2, &mut best);
        }
    }
    best
}

/// The best split of one feature of a leaf; `parent` is the leaf's own score.
fn feature_split(
    ctx: &Ctx,
    data: &Binned,
    f: usize,
    leaf: &Searched,
    parent: f64,
) -> Option<Split> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        #[allow(unsafe_code)]
        return unsafe { feature_split_avx2(ctx, data, f, leaf, parent) };
    }
    feature_split_body(ctx, data, f, leaf, parent)
}

/// [`feature_split`] compiled for AVX2, which scans thresholds about a quarter faster
/// (four lanes of `f64` a vector instead of two). Rust never fuses a multiply and an add,
/// so every gain is the same bits as the baseline build's, and so is the tree.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn feature_split_avx2(
    ctx: &Ctx,
    data: &Binned,
    f: usize,
    leaf: &Searched,
    parent: f64,
) -> Option<Split> {
    feature_split_body(ctx, data, f, leaf, parent)
}

#[inline(always)]
fn feature_split_body(
    ctx: &Ctx,
    data: &Binned,
    f: usize,
    leaf: &Searched,
    parent: f64,
) -> Option<Split> {
    let (hist, total, bounds) = (leaf.hist, &leaf.sum, leaf.bounds);
    let packed = &hist[data.offsets[f]..data.offsets[f + 1]];
    // One-byte bins unpack onto the stack: a level of a deep tree searches thousands of
    // (leaf, feature) pairs, and an allocation each was a measurable share of it.
    let mut stack = [HistBin::default(); 256];
    let mut heap = Vec::new();
    let h: &mut [HistBin] = if packed.len() <= stack.len() {
        &mut stack[..packed.len()]
    } else {
        heap.resize(packed.len(), HistBin::default());
        &mut heap
    };
    for (d, p) in h.iter_mut().zip(packed) {
        *d = unpack(*p);
    }
    let h = &*h;
    let c = ctx.p.monotone_constraints.get(f).copied().unwrap_or(0);
    match &data.mappers[f] {
        BinMapper::Numeric { .. } if c != 0 || !bounds.is_none() => {
            numeric_split_constrained(ctx, f, h, total, c, bounds)
        }
        BinMapper::Numeric { .. } => numeric_split(ctx, f, h, total, parent),
        BinMapper::Categorical { categories } => {
            categorical_split(ctx, f, h, total, parent, categories.len())
        }
    }
}

/// A leaf whose best split is searched: its packed histogram, sums and output bounds.
struct Searched<'h> {
    hist: &'h [u64],
    sum: Sums,
    bounds: Bounds,
}

/// The best split of each leaf. One task a (leaf, feature) pair, in one flat parallel
/// loop: a level of a deep tree has up to thousands of small leaves, which nested
/// per-leaf and per-feature loops served with many tiny tasks. Each leaf's best is
/// the largest gain, ties to the lower feature, whatever order the tasks ran in.
fn best_splits(
    ctx: &Ctx,
    data: &Binned,
    feats: &[usize],
    leaves: &[Searched],
) -> Vec<Option<Split>> {
    let nf = feats.len();
    if nf == 0 {
        return leaves.iter().map(|_| None).collect();
    }
    let scores: Vec<f64> = leaves.iter().map(|l| ctx.score(&l.sum, 0.0)).collect();
    let per: Vec<Option<Split>> = (0..leaves.len() * nf)
        .into_par_iter()
        .with_min_len(4)
        .map(|k| {
            let (l, f) = (&leaves[k / nf], feats[k % nf]);
            feature_split(ctx, data, f, l, scores[k / nf])
        })
        .collect();
    let mut per = per.into_iter();
    leaves
        .iter()
        .map(|_| {
            per.by_ref()
                .take(nf)
                .fold(None, |a, b| if better(&b, &a) { b } else { a })
        })
        .collect()
}

fn best_split(
    ctx: &Ctx,
    data: &Binned,
    feats: &[usize],
    hist: &[u64],
    total: &Sums,
    bounds: Bounds,
) -> Option<Split> {
    let leaf = Searched {
        hist,
        sum: *total,
        bounds,
    };
    best_splits(ctx, data, feats, &[leaf]).pop().flatten()
}

/// The gradient and hessian sums of a leaf: the bins of any one feature add up to them.
fn hist_total(data: &Binned, feats: &[usize], hist: &[u64]) -> Option<HistBin> {
    let &f = feats.first()?;
    Some(unpack(
        hist[data.offsets[f]..data.offsets[f + 1]]
            .iter()
            .fold(0u64, |a, b| a.wrapping_add(*b)),
    ))
}

/// The best split of a leaf whose histogram is `hist` (packed) over `feats`, with `n`
/// rows (what [`grow_tree`] does for every leaf; public for benchmarks and tests).
pub fn find_best_split(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    hist: &[u64],
    n: usize,
    sg: f64,
    sh: f64,
) -> Option<Split> {
    let b = hist_total(data, feats, hist)?;
    let total = Sums {
        g: b.g,
        h: b.h,
        n: n as i64,
    };
    best_split(&Ctx { p, sg, sh }, data, feats, hist, &total, Bounds::NONE)
}

struct Leaf {
    len: usize,
    depth: usize,
    sum: Sums,
    hist: Vec<u64>,
    split: Option<Split>,
    /// (node, is_left) of the pointer to this leaf; None for the root.
    parent: Option<(usize, bool)>,
    bounds: Bounds,
    /// L2 added to the leaf's value (set by the split that made it).
    extra_l2: f64,
}

pub(crate) fn goes_left(s: &Split, bin: usize, missing: usize) -> bool {
    match &s.cat_bins {
        Some(bits) => bits.get(bin / 32).is_some_and(|w| w >> (bin % 32) & 1 == 1),
        None if bin == missing => s.default_left,
        None => bin as u32 <= s.threshold_bin,
    }
}

/// Rows a partition task takes: leaves with more rows are partitioned in parallel.
const PART_CHUNK: usize = 8192;

/// Stable in-place partition of `rows` by the split; returns the left count. The side
/// of every bin is looked up in a table and rows are written without branches: each
/// chunk of rows goes to the same chunk of `scratch`, left rows from its front and right
/// rows from its back, and then back to `rows` in order. `scratch` is reused between
/// calls (no allocation, no page faults, per split).
fn partition(data: &Binned, s: &Split, rows: &mut [u32], scratch: &mut Vec<u32>) -> usize {
    let f = s.feature;
    let missing = data.mappers[f].missing_bin();
    let n_bins = data.offsets[f + 1] - data.offsets[f];
    let side: Vec<u8> = (0..n_bins)
        .map(|b| goes_left(s, b, missing) as u8)
        .collect();
    let col = &data.columns[f];
    if scratch.len() < rows.len() {
        scratch.resize(rows.len(), 0);
    }
    let tmp = &mut scratch[..rows.len()];
    let split_chunk = |c: &[u32], t: &mut [u32]| {
        let (mut nl, mut nr) = (0usize, 0usize);
        let last = c.len() - 1;
        for (i, &x) in c.iter().enumerate() {
            if let Some(&a) = c.get(i + PREFETCH_AHEAD) {
                prefetch(&col[a as usize]);
            }
            let left = side[col[x as usize] as usize] as usize;
            t[nl] = x;
            t[last - nr] = x;
            nl += left;
            nr += 1 - left;
        }
        nl
    };
    let counts: Vec<usize> = if rows.len() <= PART_CHUNK {
        vec![split_chunk(rows, tmp)]
    } else {
        rows.par_chunks(PART_CHUNK)
            .zip(tmp.par_chunks_mut(PART_CHUNK))
            .map(|(c, t)| split_chunk(c, t))
            .collect()
    };
    let n_left: usize = counts.iter().sum();
    // Destinations: each chunk's left rows after the previous chunks' left rows, its
    // right rows (stored back to front) after the previous chunks' right rows.
    let (mut lefts, mut rights) = rows.split_at_mut(n_left);
    let mut jobs = Vec::with_capacity(counts.len());
    for (k, t) in tmp.chunks(PART_CHUNK).enumerate() {
        let nl = counts[k];
        let (l, lrest) = std::mem::take(&mut lefts).split_at_mut(nl);
        let (r, rrest) = std::mem::take(&mut rights).split_at_mut(t.len() - nl);
        lefts = lrest;
        rights = rrest;
        jobs.push((t, nl, l, r));
    }
    let place = |(t, nl, l, r): (&[u32], usize, &mut [u32], &mut [u32])| {
        l.copy_from_slice(&t[..nl]);
        for (d, s) in r.iter_mut().zip(t[nl..].iter().rev()) {
            *d = *s;
        }
    };
    if jobs.len() == 1 {
        jobs.into_iter().for_each(place);
    } else {
        jobs.into_par_iter().for_each(place);
    }
    n_left
}

/// What one tree's growth produced, with the rows of each leaf.
pub struct Grown {
    pub tree: Tree,
    /// (begin, len) of each leaf's rows in the index array (growth on the CPU; empty when
    /// a device kept the rows).
    pub leaf_rows: Vec<(usize, usize)>,
    /// (low, high) bounds on each leaf's value from monotone constraints.
    pub leaf_bounds: Vec<(f64, f64)>,
    /// L2 added to each leaf's value (see [`Split::extra_l2`]).
    pub leaf_extra_l2: Vec<f64>,
}

/// Where a growing tree's rows are kept, and the two passes over them: histograms of
/// leaves and partitions of leaves by their splits. The CPU keeps each leaf's rows as a
/// range of an index array ([`CpuLeaves`]); a device keeps the leaf of every row. The
/// growth loop ([`grow_tree_on`]) is shared, so both grow the same trees: histograms are
/// integer sums, whatever adds them up.
///
/// Leaves are numbered as the tree's leaves: the root is leaf 0, and a split's right
/// child is the next new leaf number.
pub trait LeafStore {
    /// What a pass can fail with (nothing, on the CPU).
    type Error;
    /// The packed histograms of `leaves`, each over the columns of the features in
    /// `feats` (other features' bins zero) with bundles marginalised, as
    /// [`build_histogram`] computes them.
    fn histograms(&mut self, leaves: &[usize]) -> Result<Vec<Vec<u64>>, Self::Error>;
    /// Applies splits, `(leaf, split, new_leaf)`: the rows of `leaf` that do not go left
    /// move to `new_leaf`. Returns each leaf's left row count.
    fn split(&mut self, splits: &[(usize, &Split, usize)]) -> Result<Vec<usize>, Self::Error>;
    /// A histogram given back for reuse.
    fn recycle(&mut self, _hist: Vec<u64>) {}
}

/// The CPU's [`LeafStore`]: each leaf's rows are a range of one index array, partitioned
/// in place.
pub struct CpuLeaves<'a> {
    data: &'a Binned,
    feats: &'a [usize],
    rows: &'a mut [u32],
    gh: &'a [u64],
    pool: &'a mut HistPool,
    /// (begin, len) of each leaf's rows.
    ranges: Vec<(usize, usize)>,
}

impl<'a> CpuLeaves<'a> {
    pub fn new(
        data: &'a Binned,
        feats: &'a [usize],
        rows: &'a mut [u32],
        gh: &'a [u64],
        pool: &'a mut HistPool,
    ) -> Self {
        let n = rows.len();
        CpuLeaves {
            data,
            feats,
            rows,
            gh,
            pool,
            ranges: vec![(0, n)],
        }
    }
}

impl LeafStore for CpuLeaves<'_> {
    type Error = std::convert::Infallible;

    fn histograms(&mut self, leaves: &[usize]) -> Result<Vec<Vec<u64>>, Self::Error> {
        Ok(leaves
            .iter()
            .map(|&l| {
                let (b, len) = self.ranges[l];
                build_histogram_pooled(
                    self.data,
                    self.feats,
                    &self.rows[b..b + len],
                    self.gh,
                    self.pool,
                )
            })
            .collect())
    }

    fn split(&mut self, splits: &[(usize, &Split, usize)]) -> Result<Vec<usize>, Self::Error> {
        Ok(splits
            .iter()
            .map(|&(leaf, s, new_leaf)| {
                let (b, len) = self.ranges[leaf];
                let n_left = partition(
                    self.data,
                    s,
                    &mut self.rows[b..b + len],
                    &mut self.pool.scratch,
                );
                self.ranges[leaf] = (b, n_left);
                if self.ranges.len() <= new_leaf {
                    self.ranges.resize(new_leaf + 1, (0, 0));
                }
                self.ranges[new_leaf] = (b + n_left, len - n_left);
                n_left
            })
            .collect())
    }

    fn recycle(&mut self, hist: Vec<u64>) {
        self.pool.put(hist);
    }
}

/// Grows one tree on `rows` (which it reorders) with quantised gradients.
#[allow(clippy::too_many_arguments)]
pub fn grow_tree(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    rows: &mut [u32],
    gh: &[u64],
    sg: f64,
    sh: f64,
) -> Grown {
    grow_tree_pooled(data, p, feats, rows, gh, sg, sh, &mut HistPool::default())
}

/// [`grow_tree`] reusing histogram buffers from `pool` (and returning them to it).
#[allow(clippy::too_many_arguments)]
pub fn grow_tree_pooled(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    rows: &mut [u32],
    gh: &[u64],
    sg: f64,
    sh: f64,
    pool: &mut HistPool,
) -> Grown {
    let n = rows.len();
    let mut store = CpuLeaves::new(data, feats, rows, gh, pool);
    let mut grown = match grow_tree_on(data, p, feats, n, sg, sh, &mut store) {
        Ok(g) => g,
        Err(e) => match e {},
    };
    grown.leaf_rows = store.ranges;
    grown
}

/// Grows one tree of `n_rows` sample rows (all in leaf 0 of `store`) with quantised
/// gradients (scales `sg`, `sh`).
///
/// Leaf-wise growth splits the leaf of largest gain, one at a time. Depth-wise growth
/// splits the shallowest leaves in order of gain (ties to the lower leaf), and since no
/// split of a level changes another leaf of that level, a whole level is one batch: one
/// partition pass and one histogram pass for all of its leaves (a device then waits on
/// two round trips a level instead of two a leaf). The tree is the same as one leaf at a
/// time.
pub fn grow_tree_on<S: LeafStore>(
    data: &Binned,
    p: &Params,
    feats: &[usize],
    n_rows: usize,
    sg: f64,
    sh: f64,
    store: &mut S,
) -> Result<Grown, S::Error> {
    let ctx = Ctx { p, sg, sh };
    let depth_limit = p.depth_limit();
    let max_leaves = p.max_leaves();
    let root_hist = store.histograms(&[0])?.pop().unwrap_or_default();
    let mut sum = Sums {
        n: n_rows as i64,
        ..Default::default()
    };
    if let Some(b) = hist_total(data, feats, &root_hist) {
        sum.g = b.g;
        sum.h = b.h;
    }
    let mut tree = Tree::default();
    let splittable = |depth: usize| depth_limit.is_none_or(|d| depth < d);
    let mut leaves = vec![Leaf {
        len: n_rows,
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
        extra_l2: 0.0,
    }];
    while leaves.len() < max_leaves {
        let batch = next_batch(&leaves, p.grow_policy, max_leaves - leaves.len());
        if batch.is_empty() {
            break;
        }
        let splits: Vec<(usize, Split)> = batch
            .iter()
            .map(|&li| {
                (
                    li,
                    leaves[li].split.take().expect("batch leaves have splits"),
                )
            })
            .collect();
        let first_new = leaves.len();
        let jobs: Vec<(usize, &Split, usize)> = splits
            .iter()
            .enumerate()
            .map(|(k, (li, s))| (*li, s, first_new + k))
            .collect();
        let n_lefts = store.split(&jobs)?;
        // The new internal nodes, in the batch's order.
        let mut small = Vec::with_capacity(splits.len());
        let mut splits: Vec<(usize, Split, usize)> = splits
            .into_iter()
            .zip(&n_lefts)
            .enumerate()
            .map(|(k, ((li, mut split), &n_left))| {
                let len = leaves[li].len;
                // Exact counts now that the rows are partitioned.
                split.left.n = n_left as i64;
                split.right.n = (len - n_left) as i64;
                let node = tree.left.len();
                let new_leaf = first_new + k;
                let f = split.feature;
                let (threshold, cat_index) = match (&split.cat_bins, &data.mappers[f]) {
                    (Some(bits), _) => {
                        tree.cat_bitsets.push(bits.clone());
                        (0.0, (tree.cat_bitsets.len() - 1) as i32)
                    }
                    (None, BinMapper::Numeric { upper }) => {
                        (upper[split.threshold_bin as usize], -1)
                    }
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
                    .push(ctx.leaf_value(&parent_sum, leaves[li].extra_l2) * p.learning_rate);
                if let Some((pn, is_left)) = leaves[li].parent {
                    if is_left {
                        tree.left[pn] = node as i32;
                    } else {
                        tree.right[pn] = node as i32;
                    }
                }
                // The smaller child is scanned, the larger is the parent minus it.
                small.push(if n_left <= len - n_left { li } else { new_leaf });
                (li, split, node)
            })
            .collect();
        let small_hists = store.histograms(&small)?;
        let search = std::time::Instant::now();
        // Children: histograms, bounds, best splits (each leaf on its own, in parallel).
        let taken: Vec<(Vec<u64>, Vec<u64>, Bounds)> = splits
            .iter()
            .zip(small_hists)
            .map(|((li, _, _), sm)| {
                (
                    std::mem::take(&mut leaves[*li].hist),
                    sm,
                    leaves[*li].bounds,
                )
            })
            .collect();
        let parents: Vec<(Vec<u64>, Vec<u64>, Bounds, Bounds)> = splits
            .par_iter()
            .zip(taken.into_par_iter())
            .zip(small.par_iter())
            .map(|(((li, split, _), (mut large, small, bounds)), &s_leaf)| {
                for (a, b) in large.iter_mut().zip(&small) {
                    *a = a.wrapping_sub(*b);
                }
                let (lh, rh) = if s_leaf == *li {
                    (small, large)
                } else {
                    (large, small)
                };
                let (lb, rb) = child_bounds(&ctx, bounds, split);
                (lh, rh, lb, rb)
            })
            .collect();
        let child_depth: Vec<usize> = splits
            .iter()
            .map(|(li, ..)| leaves[*li].depth + 1)
            .collect();
        let child_leaves: Vec<Searched> = splits
            .iter()
            .zip(&parents)
            .zip(&child_depth)
            .filter(|(_, &d)| splittable(d))
            .flat_map(|(((_, split, _), (lh, rh, lb, rb)), _)| {
                [
                    Searched {
                        hist: lh,
                        sum: split.left,
                        bounds: *lb,
                    },
                    Searched {
                        hist: rh,
                        sum: split.right,
                        bounds: *rb,
                    },
                ]
            })
            .collect();
        let mut best = best_splits(&ctx, data, feats, &child_leaves).into_iter();
        drop(child_leaves);
        let found: Vec<(Option<Split>, Option<Split>)> = child_depth
            .iter()
            .map(|&d| {
                if splittable(d) {
                    (best.next().flatten(), best.next().flatten())
                } else {
                    (None, None)
                }
            })
            .collect();
        crate::device::add(crate::device::HOST_SPLITS, search);
        for ((((li, split, node), (lh, rh, lb, rb)), (ls, rs)), d) in
            splits.drain(..).zip(parents).zip(found).zip(child_depth)
        {
            let extra_l2 = split.extra_l2;
            leaves[li] = Leaf {
                len: split.left.n as usize,
                depth: d,
                sum: split.left,
                hist: lh,
                split: ls,
                parent: Some((node, true)),
                bounds: lb,
                extra_l2,
            };
            leaves.push(Leaf {
                len: split.right.n as usize,
                depth: d,
                sum: split.right,
                hist: rh,
                split: rs,
                parent: Some((node, false)),
                bounds: rb,
                extra_l2,
            });
        }
    }
    let mut leaf_bounds = Vec::with_capacity(leaves.len());
    let mut leaf_extra_l2 = Vec::with_capacity(leaves.len());
    for l in leaves {
        tree.leaf_value
            .push(l.bounds.clamp(ctx.leaf_value(&l.sum, l.extra_l2)) * p.learning_rate);
        leaf_extra_l2.push(l.extra_l2);
        leaf_bounds.push((l.bounds.lo * p.learning_rate, l.bounds.hi * p.learning_rate));
        tree.leaf_hess.push(l.sum.h as f64 / sh);
        tree.leaf_count.push(l.sum.n as u64);
        if !l.hist.is_empty() {
            store.recycle(l.hist);
        }
    }
    Ok(Grown {
        tree,
        leaf_rows: Vec::new(),
        leaf_bounds,
        leaf_extra_l2,
    })
}

/// The leaves to split next: the one of largest gain (leaf-wise), or the shallowest
/// leaves with splits by decreasing gain (depth-wise), at most `room`. Ties go to the
/// lower leaf, as picking one leaf at a time would.
fn next_batch(leaves: &[Leaf], policy: GrowPolicy, room: usize) -> Vec<usize> {
    let gain = |i: usize| leaves[i].split.as_ref().map_or(f64::MIN, |s| s.gain);
    let with_split = (0..leaves.len()).filter(|&i| leaves[i].split.is_some());
    match policy {
        GrowPolicy::LeafWise => {
            let mut pick: Option<usize> = None;
            for i in with_split {
                if pick.is_none_or(|j| gain(i) > gain(j)) {
                    pick = Some(i);
                }
            }
            pick.into_iter().collect()
        }
        GrowPolicy::DepthWise => {
            let Some(depth) = with_split.clone().map(|i| leaves[i].depth).min() else {
                return Vec::new();
            };
            let mut level: Vec<usize> = with_split.filter(|&i| leaves[i].depth == depth).collect();
            // Repeatedly taking the first leaf of largest gain is a stable sort by gain.
            level.sort_by(|&a, &b| {
                gain(b)
                    .partial_cmp(&gain(a))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            level.truncate(room);
            level
        }
    }
}

/// Output bounds of a split's children: a split on a monotone feature bounds both sides
/// by the mid-point of their outputs.
fn child_bounds(ctx: &Ctx, pb: Bounds, split: &Split) -> (Bounds, Bounds) {
    let c = ctx
        .p
        .monotone_constraints
        .get(split.feature)
        .copied()
        .unwrap_or(0);
    if c == 0 || split.cat_bins.is_some() {
        return (pb, pb);
    }
    let mid = (pb.clamp(ctx.leaf_value(&split.left, 0.0))
        + pb.clamp(ctx.leaf_value(&split.right, 0.0)))
        / 2.0;
    let lower = Bounds {
        lo: pb.lo,
        hi: pb.hi.min(mid),
    };
    let upper = Bounds {
        lo: pb.lo.max(mid),
        hi: pb.hi,
    };
    if c > 0 {
        (lower, upper)
    } else {
        (upper, lower)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn numeric_split_avx2(
        ctx: &Ctx,
        f: usize,
        h: &[HistBin],
        total: &Sums,
        parent: f64,
    ) -> Option<Split> {
        numeric_split(ctx, f, h, total, parent)
    }

    #[test]
    fn round_i64_is_round_to_the_bit() {
        let mut xs = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            -4503599627370495.5,
            4503599627370497.0,
            9.3e18,
            -9.3e18,
            1e300,
            -1e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
        ];
        let mut s = 99u64;
        for _ in 0..200_000 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            let scale = 2f64.powi((s % 70) as i32 - 5);
            xs.push(u * scale);
            // Halves exactly, and their neighbours.
            let half = ((s >> 20) % 100_000) as f64 + 0.5;
            xs.extend([half, -half, half.next_up(), half.next_down()]);
        }
        for x in xs {
            assert_eq!(round_i64(x), x.round() as i64, "{x:e}");
        }
    }

    #[test]
    fn gradients_packed_equal_gradients_then_quantise() {
        let n = 200_003;
        let score: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 20.0)
            .collect();
        let target: Vec<f64> = (0..n).map(|i| (i % 2) as f64).collect();
        let w: Vec<f64> = (0..n).map(|i| 0.5 + (i % 7) as f64).collect();
        for (obj, w) in [
            (Objective::Regression, None),
            (Objective::Binary, Some(&w[..])),
            (Objective::Poisson, Some(&w[..])),
        ] {
            let (mut g, mut h) = (vec![0.0; n], vec![0.0; n]);
            let mut out = vec![0u64; n];
            let scales =
                gradients_packed(&obj, (&score, &target, w), (&mut g, &mut h), &mut out).unwrap();
            let (g2, h2): (Vec<f64>, Vec<f64>) = (0..n)
                .map(|i| {
                    let (gi, hi) = obj.grad_hess(score[i], target[i]);
                    let wi = w.map_or(1.0, |w| w[i]);
                    (gi * wi, hi * wi)
                })
                .unzip();
            let mut out2 = vec![0u64; n];
            let scales2 = quantise_packed(&g2, &h2, &mut out2).unwrap();
            assert_eq!(scales, scales2, "{obj:?}");
            assert_eq!(g, g2);
            assert_eq!(h, h2);
            assert!(out == out2, "{obj:?}");
        }
        // A negative weight makes a negative hessian: a typed error naming the row.
        let mut w = vec![1.0; n];
        w[70_000] = -1.0;
        let (mut g, mut h) = (vec![0.0; n], vec![0.0; n]);
        let err = gradients_packed(
            &Objective::Regression,
            (&score, &target, Some(&w)),
            (&mut g, &mut h),
            &mut vec![0u64; n],
        )
        .unwrap_err();
        assert!(err.to_string().contains("row 70000"), "{err}");
    }

    /// The branch-free scan gives the split of the plain scan with LightGBM's gain, to
    /// the bit: random histograms with and without missing values, with L1 and L2, with
    /// leaf bounds that cut thresholds at both ends, and gains that tie.
    #[test]
    fn numeric_split_equals_the_plain_scan() {
        let mut s = 12345u64;
        let mut next = |k: u64| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s % k
        };
        let mut checked = 0;
        for case in 0..3000 {
            let nb = [2, 3, 17, 256, 600][case % 5];
            let mut h: Vec<HistBin> = (0..nb)
                .map(|_| HistBin {
                    g: next(2_000_001) as i64 - 1_000_000,
                    h: match next(4) {
                        0 => 0,
                        // Small hessians: prefix sums land on the bound exactly.
                        _ if case % 4 == 1 => next(3) as i64,
                        _ => next(50_000) as i64,
                    },
                })
                .collect();
            if case % 3 == 0 {
                h[nb - 1] = HistBin::default();
            }
            if case % 7 == 0 {
                // Equal bins: equal gains at mirrored thresholds.
                let b = h[0];
                h.iter_mut().for_each(|x| *x = b);
            }
            let tot = h.iter().fold(HistBin::default(), |mut a, b| {
                a.add(b);
                a
            });
            let total = Sums {
                g: tot.g,
                h: tot.h,
                n: tot.h / 3,
            };
            let p = Params {
                lambda_l1: [0.0, 0.5, 3.0][case % 3],
                lambda_l2: [0.0, 1.0, 10.0][case % 3],
                min_data_in_leaf: [1, 20, 2000][(case / 3) % 3],
                min_sum_hessian_in_leaf: [1e-3, 1.0, 50.0][(case / 9) % 3],
                min_gain_to_split: [0.0, 1e-3][case % 2],
                ..Params::default()
            };
            let ctx = Ctx {
                p: &p,
                sg: [1.0, 1024.0, 0.25][case % 3],
                sh: [1.0, 8.0][case % 2],
            };
            let parent = ctx.score(&total, 0.0);
            // The gain as the scan computed it before the branch-free one.
            let (inv_g, inv_h) = (1.0 / ctx.sg, 1.0 / ctx.sh);
            let score = |g: i64, h: i64| {
                let g = ctx.thr_l1(g as f64 * inv_g);
                g * g / (h as f64 * inv_h + p.lambda_l2)
            };
            let plain = scan_numeric(&ctx, 3, &h, &total, |lg, lh, rg, rh| {
                Some(score(lg, lh) + score(rg, rh) - parent)
            });
            let fast = numeric_split(&ctx, 3, &h, &total, parent);
            // The AVX2 build that split search runs where the CPU has it: the same bits.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                #[allow(unsafe_code)]
                let wide = unsafe { numeric_split_avx2(&ctx, 3, &h, &total, parent) };
                assert_eq!(
                    wide.as_ref()
                        .map(|x| (x.gain.to_bits(), x.threshold_bin, x.default_left)),
                    fast.as_ref()
                        .map(|x| (x.gain.to_bits(), x.threshold_bin, x.default_left)),
                    "case {case}"
                );
            }
            let key = |x: &Option<Split>| {
                x.as_ref().map(|x| {
                    (
                        x.gain.to_bits(),
                        x.threshold_bin,
                        x.default_left,
                        x.left,
                        x.right,
                    )
                })
            };
            assert_eq!(key(&plain), key(&fast), "case {case}");
            checked += plain.is_some() as usize;
        }
        assert!(checked > 1000, "only {checked} cases found a split");
    }

    #[test]
    fn order_keys_sort_as_total_cmp() {
        let mut v = vec![
            0.0,
            -0.0,
            1.5,
            -1.5,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            -1e300,
            3.25,
            f64::from_bits(1),
            -f64::from_bits(1),
        ];
        let mut by_key = v.clone();
        v.sort_by(f64::total_cmp);
        by_key.sort_by_key(|&x| order_key(x));
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&v), bits(&by_key));
    }
}
