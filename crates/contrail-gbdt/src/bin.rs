//! Quantile binning: each feature's values map to at most `max_bin` value bins plus one
//! missing bin (categorical features: the most frequent categories, an "other" bin for
//! the rest and for unseen ones, and a missing bin). The bin matrix is row-major, one byte
//! per value when every feature has at most 256 bins, two otherwise.

use std::collections::HashMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Column, Dataset};

/// Rows sampled to find bin edges, by default (LightGBM's `bin_construct_sample_cnt`,
/// whose default is 200,000): every row of a training set up to ten million.
///
/// Why not LightGBM's sample: on heavy-tailed features (prices) the few bins at the top
/// of the range fall where a 200,000-row draw puts them, and the draw alone moved the
/// fare model's test RMSE by about 1% (492.9-500.4 over five seeds, the first/business
/// fares carrying most of the squared error). Edges from every row take that variance
/// away and cost about half a second and one column's copy per thread on 2M rows;
/// above ten million rows a seeded sample of that size keeps the cost bounded.
pub const BIN_SAMPLE: usize = 10_000_000;

/// About `cnt` of `n` rows, ascending, drawn with `seed` (each row kept when its hash
/// falls under the sample's share, so the draw does not depend on the thread count);
/// `None` when `n <= cnt`: every row.
pub fn sample_rows(n: usize, cnt: usize, seed: u64) -> Option<Vec<u32>> {
    if n <= cnt {
        return None;
    }
    let cut = (cnt as f64 / n as f64 * u64::MAX as f64) as u64;
    Some(
        (0..n as u32)
            .into_par_iter()
            .filter(|&r| mix(seed ^ (r as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) < cut)
            .collect(),
    )
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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

    /// Bin edges from the values of the sampled rows (`None`: all); with a `label`, up to
    /// `label.edges` of them placed where the label changes most (see [`EdgeLabel`]).
    fn numeric(
        values: &[f64],
        sample: Option<&[u32]>,
        max_bin: usize,
        label: Option<&EdgeLabel>,
    ) -> BinMapper {
        let mut s: Vec<f64> = match sample {
            Some(rows) => rows.iter().map(|&r| values[r as usize]).collect(),
            None => values.to_vec(),
        };
        s.retain(|v| !v.is_nan());
        // Unstable and parallel: under `total_cmp` (NaNs removed) equal values have the
        // same bits, so the order is the stable sort's, whatever the thread count.
        s.par_sort_unstable_by(f64::total_cmp);
        let distinct = distinct_counts(s);
        let forced = match label {
            Some(l) if distinct.len() > max_bin && max_bin >= 8 => {
                label_edges(values, sample, &distinct, l, max_bin)
            }
            _ => Vec::new(),
        };
        let neg = distinct.partition_point(|d| d.0 < 0.0);
        let pos = distinct.partition_point(|d| d.0 <= 0.0);
        let mut upper = if distinct.len() <= max_bin {
            cuts(&distinct, max_bin)
        } else if !forced.is_empty() {
            let mut f = forced;
            if neg > 0 && pos < distinct.len() {
                f.extend([-ZERO, ZERO]);
            }
            f.sort_unstable_by(f64::total_cmp);
            f.dedup();
            cuts_forced(&distinct, &f, max_bin)
        } else {
            // Negative and positive values get bins in proportion to their counts, with a
            // bin of their own for zero between: a threshold at exactly zero (a sign, a
            // difference to a competitor's price) is always available, as in LightGBM.
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

/// Sorted values as (distinct value, count) pairs.
fn distinct_counts(sorted: Vec<f64>) -> Vec<(f64, usize)> {
    let mut distinct: Vec<(f64, usize)> = Vec::new();
    for v in sorted {
        match distinct.last_mut() {
            Some((d, c)) if *d == v => *c += 1,
            _ => distinct.push((v, 1)),
        }
    }
    distinct
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

/// What places a numeric feature's supervised bin edges: the training label (weighted),
/// and how many edges to place.
///
/// Quantile edges fall wherever the rows' counts put them, so a step in the label inside
/// a continuous feature (a fare rule at 0.5, a price tier) lands inside a bin, and the
/// rows between the step and the nearest edge stay on the wrong side of every split on
/// that feature: with 255 bins on 2 million rows a bin holds about 0.4% of the rows. So
/// before the quantile edges are drawn, a one-dimensional regression tree of the label
/// on the feature, grown best-first on a histogram 16 times finer than the bins, picks
/// `edges` thresholds, each refined to the best point between two distinct values; they
/// become bin edges, and the greedy quantile cut places the rest around them. A feature
/// with no such step only has its edges moved within a bin's width.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLabel<'a> {
    pub y: &'a [f64],
    pub w: Option<&'a [f64]>,
    pub edges: usize,
}

/// Supervised bin edges by default: thresholds of a best-first regression tree of the
/// label on each numeric feature with more distinct values than bins ([`EdgeLabel`]).
pub const LABEL_EDGES: usize = 8;

/// The thresholds (`l.edges`, at most `max_bin / 8`) of a best-first one-dimensional
/// regression tree of the label on the (sampled, non-missing) values, sorted. The tree is
/// grown on a histogram of `16 * max_bin` quantile bins (at most 65,534); each threshold
/// it picks is then moved to the best point between the distinct values of the two fine
/// bins beside it, so a step in the label gets an edge exactly between the values on
/// either side.
fn label_edges(
    values: &[f64],
    sample: Option<&[u32]>,
    distinct: &[(f64, usize)],
    l: &EdgeLabel,
    max_bin: usize,
) -> Vec<f64> {
    if l.edges == 0 || l.y.len() != values.len() || l.w.is_some_and(|w| w.len() != values.len()) {
        return Vec::new();
    }
    let fine = cuts(distinct, fine_bins(max_bin));
    let nb = fine.len() + 1;
    // Each row's fine bin (the side-by-side search of the binning; missing: `nb`), once.
    let mut upper = fine.clone();
    upper.push(f64::INFINITY);
    let picked: Vec<f64>;
    let vals: &[f64] = match sample {
        Some(rows) => {
            picked = rows.iter().map(|&r| values[r as usize]).collect();
            &picked
        }
        None => values,
    };
    let row = |i: usize| sample.map_or(i, |rows| rows[i] as usize);
    let mut fb = vec![0u16; vals.len()];
    bin_values(&upper, vals, &mut fb);
    let weight = |r: usize| l.w.map_or(1.0, |w| w[r]);
    let (mut sw, mut sy) = (vec![0f64; nb + 1], vec![0f64; nb + 1]);
    for (i, &b) in fb.iter().enumerate() {
        let b = b as usize;
        if b < nb {
            let r = row(i);
            sw[b + 1] += weight(r);
            sy[b + 1] += weight(r) * l.y[r];
        }
    }
    // Prefix sums: fine bins [a, b) hold sw[b] - sw[a].
    for i in 1..=nb {
        sw[i] += sw[i - 1];
        sy[i] += sy[i - 1];
    }
    let gain = |wl: f64, yl: f64, w: f64, y: f64| {
        let wr = w - wl;
        let yr = y - yl;
        let g = yl * yl / wl + yr * yr / wr - y * y / w;
        (wl > 0.0 && wr > 0.0 && g.is_finite()).then_some(g)
    };
    // The best split of fine bins [a, b): (gain, t) with left [a, t), right [t, b).
    let best = |a: usize, b: usize| -> Option<(f64, usize)> {
        let (w, y) = (sw[b] - sw[a], sy[b] - sy[a]);
        let mut top: Option<(f64, usize)> = None;
        for t in a + 1..b {
            if let Some(g) = gain(sw[t] - sw[a], sy[t] - sy[a], w, y) {
                if top.is_none_or(|(bg, _)| g > bg) {
                    top = Some((g, t));
                }
            }
        }
        top
    };
    // Grown best-first; each pick is (a, t, b): segment [a, b) split before fine bin t.
    let mut segs: Vec<(usize, usize, Option<(f64, usize)>)> = vec![(0, nb, best(0, nb))];
    let mut picks: Vec<(usize, usize, usize)> = Vec::new();
    while picks.len() < l.edges.min(max_bin / 8) {
        let mut top: Option<(usize, f64, usize)> = None;
        for (i, s) in segs.iter().enumerate() {
            if let Some((g, t)) = s.2 {
                if g > 0.0 && top.is_none_or(|(_, bg, _)| g > bg) {
                    top = Some((i, g, t));
                }
            }
        }
        let Some((i, _, t)) = top else { break };
        let (a, b, _) = segs[i];
        picks.push((a, t, b));
        segs[i] = (a, t, best(a, t));
        segs.push((t, b, best(t, b)));
    }
    // Refinement: the rows of fine bins t - 1 and t of each pick, by value.
    let mut near: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); picks.len()];
    // The picks whose window holds each fine bin (missing: none).
    let mut owner: Vec<Vec<usize>> = vec![Vec::new(); nb + 1];
    for (k, &(_, t, _)) in picks.iter().enumerate() {
        owner[t - 1].push(k);
        owner[t].push(k);
    }
    for (i, &b) in fb.iter().enumerate() {
        for &k in &owner[b as usize] {
            let r = row(i);
            near[k].push((vals[i], weight(r), weight(r) * l.y[r]));
        }
    }
    let mut out = Vec::with_capacity(picks.len());
    for (&(a, t, b), rows) in picks.iter().zip(&mut near) {
        rows.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
        let (w, y) = (sw[b] - sw[a], sy[b] - sy[a]);
        // Left of the window: fine bins [a, t - 1).
        let (mut wl, mut yl) = (sw[t - 1] - sw[a], sy[t - 1] - sy[a]);
        let mut top = (gain(sw[t] - sw[a], sy[t] - sy[a], w, y), fine[t - 1]);
        if t >= 2 {
            if let Some(g) = gain(wl, yl, w, y) {
                if top.0.is_none_or(|bg| g > bg) {
                    top = (Some(g), fine[t - 2]);
                }
            }
        }
        for i in 0..rows.len().saturating_sub(1) {
            wl += rows[i].1;
            yl += rows[i].2;
            if rows[i].0 == rows[i + 1].0 {
                continue;
            }
            if let Some(g) = gain(wl, yl, w, y) {
                if top.0.is_none_or(|bg| g > bg) {
                    top = (Some(g), mid(rows[i].0, rows[i + 1].0));
                }
            }
        }
        out.push(top.1);
    }
    out.sort_unstable_by(f64::total_cmp);
    out.dedup();
    out
}

/// Fine bins of [`label_edges`]' histogram: 16 a bin, at most 65,534 (their numbers and
/// the missing one's fit the u16 codes of the side-by-side search).
fn fine_bins(max_bin: usize) -> usize {
    max_bin.saturating_mul(16).min(u16::MAX as usize - 1)
}

/// Upper bounds of at most `max_bin` bins with every value of `forced` among them (sorted,
/// each between two distinct values or ±ZERO): [`cuts`]'s greedy quantiles, with a bin
/// also closed at each forced edge and as many bins kept back for the forced edges still
/// ahead.
fn cuts_forced(distinct: &[(f64, usize)], forced: &[f64], max_bin: usize) -> Vec<f64> {
    let mut upper = Vec::with_capacity(max_bin);
    let mut left: usize = distinct.iter().map(|d| d.1).sum();
    let mut bins_left = max_bin;
    let mut acc = 0usize;
    let mut fi = 0;
    // Forced edges below every value.
    while fi < forced.len() && distinct.first().is_some_and(|d| forced[fi] < d.0) {
        upper.push(forced[fi]);
        fi += 1;
        bins_left -= 1;
    }
    for i in 0..distinct.len().saturating_sub(1) {
        acc += distinct[i].1;
        let next = distinct[i + 1].0;
        if fi < forced.len() && forced[fi] < next {
            while fi < forced.len() && forced[fi] < next {
                upper.push(forced[fi]);
                fi += 1;
                bins_left = bins_left.saturating_sub(1);
            }
            left -= acc;
            acc = 0;
            continue;
        }
        // Bins still free to place: one for each forced edge ahead is kept back.
        let free = bins_left.saturating_sub(forced.len() - fi);
        if free <= 1 {
            continue;
        }
        let target = left.div_ceil(free);
        if acc >= target || acc + distinct[i + 1].1 > target.saturating_mul(2) {
            upper.push(mid(distinct[i].0, next));
            left -= acc;
            acc = 0;
            bins_left -= 1;
        }
    }
    upper.extend(&forced[fi..]);
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

/// The bin codes of a [`RowMatrix`], row-major.
#[derive(Debug, Clone)]
pub enum Bins {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

/// One feature of a [`Group`]: its bin is `(code / stride) % n_bins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub feature: usize,
    pub stride: usize,
    pub n_bins: usize,
}

/// One column of the row matrix: a feature, or a bundle of features with few bins whose
/// joint bin (`Σ bin × stride`) fits one byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// First bin of the column's histogram: the feature's own bins for a single feature,
    /// the joint bins (after every feature's bins) for a bundle.
    pub offset: usize,
    pub n_bins: usize,
    pub members: Vec<Member>,
}

impl Group {
    pub fn is_bundle(&self) -> bool {
        self.members.len() > 1
    }
}

/// The row-major bin matrix the histogram pass reads: the features it was built for,
/// one code per column, a row at a time.
///
/// Features with few bins share a column (**bundles**): two binary flags, a day of the
/// week and a cabin are one byte whose value is their joint bin, so a row costs one
/// histogram update for all of them instead of one each. A bundle's histogram has one
/// bin per joint value; each member's own histogram is its marginal, added up from the
/// joint bins after the pass (a few hundred additions per leaf, against one update per
/// row saved). Histograms stay exact integer sums, so trees are the same bits with or
/// without bundles. (LightGBM bundles only features that are never non-zero together; a
/// joint bin needs no exclusivity.)
#[derive(Debug, Clone)]
pub struct RowMatrix {
    pub n_rows: usize,
    pub bins: Bins,
    pub groups: Vec<Group>,
    /// The column of each feature (`None`: not in the matrix).
    pub group_of: Vec<Option<usize>>,
    /// Histogram length: every feature's bins, then the bundles' joint bins.
    pub hist_len: usize,
}

impl RowMatrix {
    pub fn width(&self) -> usize {
        self.groups.len()
    }

    /// The columns holding any of `feats`, ascending.
    pub fn groups_of(&self, feats: &[usize]) -> Vec<usize> {
        let mut g: Vec<usize> = feats
            .iter()
            .filter_map(|&f| self.group_of.get(f).copied().flatten())
            .collect();
        g.sort_unstable();
        g.dedup();
        g
    }

    /// Adds the joint bins of each bundle in `groups` to its members' own bins of `hist`
    /// (zero there before).
    pub fn marginalise(&self, offsets: &[usize], groups: &[usize], hist: &mut [u64]) {
        for &gi in groups {
            let g = &self.groups[gi];
            if !g.is_bundle() {
                continue;
            }
            for j in 0..g.n_bins {
                let v = hist[g.offset + j];
                if v == 0 {
                    continue;
                }
                for m in &g.members {
                    let e = &mut hist[offsets[m.feature] + (j / m.stride) % m.n_bins];
                    *e = e.wrapping_add(v);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Binned {
    pub n_rows: usize,
    pub n_features: usize,
    pub mappers: Vec<BinMapper>,
    /// Offset of each feature's first bin in a histogram; the last entry is the total.
    pub offsets: Vec<usize>,
    /// Feature-major: partitioning a leaf reads one feature of many rows.
    pub columns: Vec<Vec<u16>>,
    /// Row-major, for the histogram pass: built by [`Binned::fit`] for every feature, by
    /// [`Binned::pack`] for chosen ones; empty for data that is only traversed.
    pub rows: RowMatrix,
}

/// Values searched side by side by [`bin_values`].
const LANES: usize = 8;

/// [`BinMapper::bin_value`] of each of `values` into `out`, [`LANES`] values at a time:
/// one value's binary search is a chain of dependent loads and compares (about 23 ns on
/// 255 bounds), so the lanes step together, their searches independent, each step
/// choosing the next base without a branch. Twice as fast on a column of 2 M values; the
/// same bins.
fn bin_values(upper: &[f64], values: &[f64], out: &mut [u16]) {
    let n = upper.len();
    let mut lanes = values.chunks_exact(LANES);
    let mut outs = out.chunks_exact_mut(LANES);
    for (v, o) in (&mut lanes).zip(&mut outs) {
        let mut base = [0usize; LANES];
        let mut size = n;
        while size > 1 {
            let half = size / 2;
            for (b, x) in base.iter_mut().zip(v) {
                let mid = *b + half;
                *b = std::hint::select_unpredictable(upper[mid - 1] < *x, mid, *b);
            }
            size -= half;
        }
        for ((o, b), x) in o.iter_mut().zip(base).zip(v) {
            *o = if x.is_nan() {
                n
            } else {
                (b + usize::from(upper[b] < *x)).min(n - 1)
            } as u16;
        }
    }
    for (o, x) in outs.into_remainder().iter_mut().zip(lanes.remainder()) {
        *o = BinMapper::bin_value(upper, *x) as u16;
    }
}

/// Asks the kernel to back the 2 MiB-aligned part of `v`'s memory with 2 MiB pages
/// (`madvise(MADV_HUGEPAGE)`; Linux, where transparent huge pages are on "madvise", the
/// usual default, or "always"); a hint with no effect on the contents. Call it before the
/// memory is first written, while its pages are not yet mapped. The histogram pass and
/// the partition read rows of the bin matrix, gradients and bin columns in a sparse,
/// ascending order: with 4 KiB pages nearly every row of a 56 MB matrix also misses the
/// TLB.
#[allow(unsafe_code)]
pub(crate) fn advise_huge_pages<T>(v: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(v);
        let (a, b) = (start.next_multiple_of(HUGE), end & !(HUGE - 1));
        if b > a {
            // SAFETY: [a, b) is page-aligned and inside the allocation `v` borrows;
            // MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
            unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Bins a column with an existing mapper.
pub fn bin_column(m: &BinMapper, col: &Column) -> Vec<u16> {
    match (m, col) {
        (BinMapper::Numeric { upper }, Column::Numeric(v)) => {
            let mut out = vec![0u16; v.len()];
            advise_huge_pages(&mut out);
            out.par_chunks_mut(1 << 14)
                .zip(v.par_chunks(1 << 14))
                .for_each(|(o, v)| bin_values(upper, v, o));
            out
        }
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
    /// Finds bin edges on `data` (a sample of the default size and seed) and bins it,
    /// with a row matrix of every feature.
    pub fn fit(data: &Dataset, max_bin: usize) -> Binned {
        let mut b = Binned::fit_columns(data, max_bin, BIN_SAMPLE, 1, LABEL_EDGES);
        let all: Vec<usize> = (0..b.n_features).collect();
        b.pack(&all, true);
        b
    }

    /// Finds bin edges on about `sample_cnt` rows of `data` drawn with `seed` (category
    /// counts on all rows), up to `label_edges` of each numeric feature's placed by the
    /// target ([`EdgeLabel`]), and bins it, feature-major only (see [`Binned::pack`]).
    pub fn fit_columns(
        data: &Dataset,
        max_bin: usize,
        sample_cnt: usize,
        seed: u64,
        label_edges: usize,
    ) -> Binned {
        let sample = sample_rows(data.n_rows(), sample_cnt, seed);
        let label = (label_edges > 0 && data.target.len() == data.n_rows()).then(|| EdgeLabel {
            y: &data.target,
            w: data.weights.as_deref(),
            edges: label_edges,
        });
        let mappers: Vec<BinMapper> = data
            .columns
            .par_iter()
            .map(|c| match c {
                Column::Numeric(v) => {
                    BinMapper::numeric(v, sample.as_deref(), max_bin, label.as_ref())
                }
                Column::Categorical { codes, dict } => BinMapper::categorical(codes, dict, max_bin),
            })
            .collect();
        Binned::with_mappers(data, mappers)
    }

    /// Bins `data` with given mappers (a validation set binned like its training set),
    /// feature-major only: no row matrix (see [`Binned::pack`]).
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
        let columns: Vec<Vec<u16>> = mappers
            .par_iter()
            .zip(data.columns.par_iter())
            .map(|(m, c)| bin_column(m, c))
            .collect();
        Binned {
            n_rows,
            n_features,
            mappers,
            offsets,
            columns,
            rows: RowMatrix {
                n_rows,
                bins: Bins::U8(Vec::new()),
                groups: Vec::new(),
                group_of: vec![None; n_features],
                hist_len: total,
            },
        }
    }

    /// Builds the row matrix over `feats` (bundling features with few bins when
    /// `bundle`), replacing any earlier one.
    pub fn pack(&mut self, feats: &[usize], bundle: bool) {
        let n_bins = |f: usize| self.offsets[f + 1] - self.offsets[f];
        let wide = feats.iter().any(|&f| n_bins(f) > 256);
        let mut feats: Vec<usize> = feats.to_vec();
        feats.sort_unstable();
        feats.dedup();
        // Bundles, first fit by decreasing bin count: a feature joins the first bundle
        // whose joint bin count times its own stays within a byte.
        let mut bundles: Vec<(usize, Vec<usize>)> = Vec::new();
        if bundle && !wide {
            let mut small: Vec<usize> = feats
                .iter()
                .copied()
                .filter(|&f| n_bins(f) <= 128)
                .collect();
            small.sort_by_key(|&f| (std::cmp::Reverse(n_bins(f)), f));
            for f in small {
                match bundles.iter_mut().find(|(p, _)| p * n_bins(f) <= 256) {
                    Some((p, m)) => {
                        *p *= n_bins(f);
                        m.push(f);
                    }
                    None => bundles.push((n_bins(f), vec![f])),
                }
            }
            // A bundle of one feature is a single.
            bundles.retain(|(_, m)| m.len() > 1);
        }
        let mut bundled = vec![false; self.n_features];
        for (_, m) in &bundles {
            for &f in m {
                bundled[f] = true;
            }
        }
        // Columns: single features in feature order, then bundles, whose joint bins come
        // after every feature's own bins in a histogram.
        let mut groups: Vec<Group> = feats
            .iter()
            .filter(|&&f| !bundled[f])
            .map(|&f| Group {
                offset: self.offsets[f],
                n_bins: n_bins(f),
                members: vec![Member {
                    feature: f,
                    stride: 1,
                    n_bins: n_bins(f),
                }],
            })
            .collect();
        let mut hist_len = self.total_bins();
        for (p, m) in &bundles {
            let mut stride = 1;
            let members = m
                .iter()
                .map(|&f| {
                    let mb = Member {
                        feature: f,
                        stride,
                        n_bins: n_bins(f),
                    };
                    stride *= n_bins(f);
                    mb
                })
                .collect();
            groups.push(Group {
                offset: hist_len,
                n_bins: *p,
                members,
            });
            hist_len += p;
        }
        let mut group_of = vec![None; self.n_features];
        for (gi, g) in groups.iter().enumerate() {
            for m in &g.members {
                group_of[m.feature] = Some(gi);
            }
        }
        let width = groups.len();
        let cols = &self.columns;
        let code = |g: &Group, r: usize| -> usize {
            g.members
                .iter()
                .map(|m| cols[m.feature][r] as usize * m.stride)
                .sum()
        };
        let n = self.n_rows;
        // The old matrix goes before the new one is built.
        self.rows.bins = Bins::U8(Vec::new());
        let bins = if wide {
            let mut b = vec![0u16; n * width];
            advise_huge_pages(&mut b);
            b.par_chunks_mut(width.max(1))
                .enumerate()
                .for_each(|(r, row)| {
                    for (v, g) in row.iter_mut().zip(&groups) {
                        *v = code(g, r) as u16;
                    }
                });
            Bins::U16(b)
        } else {
            let mut b = vec![0u8; n * width];
            advise_huge_pages(&mut b);
            b.par_chunks_mut(width.max(1))
                .enumerate()
                .for_each(|(r, row)| {
                    for (v, g) in row.iter_mut().zip(&groups) {
                        *v = code(g, r) as u8;
                    }
                });
            Bins::U8(b)
        };
        self.rows = RowMatrix {
            n_rows: n,
            bins,
            groups,
            group_of,
            hist_len,
        };
    }

    #[inline]
    pub fn bin(&self, row: usize, f: usize) -> usize {
        self.columns[f][row] as usize
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
        let m = BinMapper::numeric(&[3.0, 1.0, 2.0, 2.0, f64::NAN], None, 255, None);
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

    /// Values of every kind: wide and narrow ranges, repeats, signed zeros, infinities,
    /// subnormals.
    fn awkward_values(n: usize, seed: u64) -> Vec<f64> {
        let mut z = seed;
        (0..n)
            .map(|i| {
                z = mix(z.wrapping_add(i as u64));
                match z % 9 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::INFINITY * if z & 16 == 0 { 1.0 } else { -1.0 },
                    3 => f64::from_bits(z >> 20) * if z & 32 == 0 { 1.0 } else { -1.0 },
                    4 => ((z >> 40) % 7) as f64 - 3.0,
                    5 => f64::from_bits(z & !(1 << 62)),
                    _ => (z >> 11) as f64 / (1u64 << 53) as f64 * 2e6 - 1e6,
                }
            })
            .filter(|v: &f64| !v.is_nan())
            .collect()
    }

    #[test]
    fn side_by_side_searches_find_each_values_bin() {
        for len in [
            1usize, 2, 3, 4, 5, 7, 8, 9, 16, 17, 100, 255, 256, 257, 1000,
        ] {
            let mut upper = awkward_values(len * 3, len as u64);
            upper.sort_unstable_by(f64::total_cmp);
            upper.dedup_by(|b, a| *b <= *a);
            upper.truncate(len - 1);
            upper.push(f64::INFINITY);
            upper.dedup_by(|b, a| *b <= *a);
            let mut values = awkward_values(2001, 99 + len as u64);
            values.extend(&upper);
            values.extend([f64::NAN, 1.0, f64::NAN]);
            let want: Vec<u16> = values
                .iter()
                .map(|v| BinMapper::bin_value(&upper, *v) as u16)
                .collect();
            let mut got = vec![0u16; values.len()];
            bin_values(&upper, &values, &mut got);
            assert_eq!(got, want, "{len} bounds");
        }
    }

    fn distinct_of(v: &[f64]) -> Vec<(f64, usize)> {
        let mut s = v.to_vec();
        s.sort_unstable_by(f64::total_cmp);
        distinct_counts(s)
    }

    /// Does any bin of `upper` hold values on both sides of `step`?
    fn straddles(upper: &[f64], values: &[f64], step: f64) -> bool {
        let b = BinMapper::bin_value(upper, step);
        let (mut below, mut above) = (false, false);
        for v in values {
            if BinMapper::bin_value(upper, *v) == b {
                below |= *v <= step;
                above |= *v > step;
            }
        }
        below && above
    }

    #[test]
    fn label_edges_put_an_edge_on_each_step_of_the_label() {
        let n = 200_000;
        let mut z = 7u64;
        let x: Vec<f64> = (0..n)
            .map(|i| {
                z = mix(z ^ i as u64);
                if z % 50 == 0 {
                    f64::NAN
                } else {
                    (z >> 11) as f64 / (1u64 << 53) as f64
                }
            })
            .collect();
        let (s1, s2) = (0.231_7, 0.718_3);
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let noise = (mix(i as u64) >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                (v > s1) as u8 as f64 * 4.0 - (v > s2) as u8 as f64 * 2.0 + noise
            })
            .collect();
        let label = EdgeLabel {
            y: &y,
            w: None,
            edges: 8,
        };
        let upper = |m: BinMapper| match m {
            BinMapper::Numeric { upper } => upper,
            BinMapper::Categorical { .. } => panic!(),
        };
        let plain = upper(BinMapper::numeric(&x, None, 255, None));
        let supervised = upper(BinMapper::numeric(&x, None, 255, Some(&label)));
        assert_eq!(plain.len(), 255);
        assert_eq!(supervised.len(), 255);
        assert!(supervised.windows(2).all(|w| w[0] < w[1]));
        for step in [s1, s2] {
            assert!(
                straddles(&plain, &x, step),
                "quantile bins happen to split at {step}"
            );
            assert!(
                !straddles(&supervised, &x, step),
                "a bin holds both sides of {step}"
            );
        }
        // The other bins stay about equal in rows.
        let mut counts = vec![0usize; 256];
        for v in &x {
            counts[BinMapper::bin_value(&supervised, *v)] += 1;
        }
        let mean = (n - counts[255]) as f64 / 255.0;
        assert!(
            counts[..255].iter().all(|&c| (c as f64) < 2.0 * mean),
            "{counts:?}"
        );
        // Weights: a zero weight hides the rows past the second step from the label.
        let w: Vec<f64> = x.iter().map(|&v| if v > 0.6 { 0.0 } else { 1.0 }).collect();
        let weighted = EdgeLabel {
            y: &y,
            w: Some(&w),
            edges: 1,
        };
        let one = upper(BinMapper::numeric(&x, None, 255, Some(&weighted)));
        assert!(!straddles(&one, &x, s1));
        assert!(straddles(&one, &x, s2));
        // Few distinct values keep one bin each; a sample and the same seed give the
        // same edges.
        let few: Vec<f64> = x.iter().map(|v| (v * 10.0).floor()).collect();
        assert_eq!(
            BinMapper::numeric(&few, None, 255, Some(&label)),
            BinMapper::numeric(&few, None, 255, None)
        );
        let rows = sample_rows(n, 50_000, 3).unwrap();
        assert_eq!(
            BinMapper::numeric(&x, Some(&rows), 255, Some(&label)),
            BinMapper::numeric(&x, Some(&rows), 255, Some(&label))
        );
    }

    #[test]
    fn label_edges_keep_signed_bins_and_the_bin_budget() {
        // Values of both signs and exact zeros: zero keeps a bin of its own.
        let x: Vec<f64> = (0..50_000)
            .map(|i| match i % 7 {
                0 => 0.0,
                _ => ((i * 7919) % 50_000) as f64 / 100.0 - 200.0,
            })
            .collect();
        let y: Vec<f64> = x.iter().map(|&v| (v > 123.4) as u8 as f64).collect();
        for max_bin in [8usize, 16, 63, 255, 1023] {
            let label = EdgeLabel {
                y: &y,
                w: None,
                edges: 8,
            };
            let BinMapper::Numeric { upper } = BinMapper::numeric(&x, None, max_bin, Some(&label))
            else {
                panic!()
            };
            assert!(upper.len() <= max_bin, "{max_bin}: {}", upper.len());
            assert!(upper.windows(2).all(|w| w[0] < w[1]));
            let zero = BinMapper::bin_value(&upper, 0.0);
            assert_ne!(zero, BinMapper::bin_value(&upper, -0.005));
            assert_ne!(zero, BinMapper::bin_value(&upper, 0.005));
            assert!(!straddles(&upper, &x, 123.4), "{max_bin}");
        }
        // More bins than a byte and more fine bins than a u16 would number.
        let wide: Vec<f64> = (0..150_000u64)
            .map(|i| ((i * 7919) % 150_000) as f64)
            .collect();
        let y: Vec<f64> = wide.iter().map(|&v| (v > 123_456.0) as u8 as f64).collect();
        let label = EdgeLabel {
            y: &y,
            w: None,
            edges: 8,
        };
        let BinMapper::Numeric { upper } = BinMapper::numeric(&wide, None, 5000, Some(&label))
        else {
            panic!()
        };
        assert!(upper.len() <= 5000 && upper.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(fine_bins(255), 4080);
        assert_eq!(fine_bins(5000), 65_534);
        assert!(cuts(&distinct_of(&wide), fine_bins(65_000)).len() < u16::MAX as usize);
        assert!(!straddles(&upper, &wide, 123_456.5));
        // Whole numbers a little more varied than the bins (days before departure): the
        // forced edges take no bins from the rest, every bin is used.
        let days: Vec<f64> = (0..40_000).map(|i| ((i * 7919) % 400) as f64).collect();
        let y: Vec<f64> = days
            .iter()
            .map(|&d| (d > 20.0) as u8 as f64 * 3.0)
            .collect();
        let label = EdgeLabel {
            y: &y,
            w: None,
            edges: 8,
        };
        for (m, supervised) in [
            (BinMapper::numeric(&days, None, 255, Some(&label)), true),
            (BinMapper::numeric(&days, None, 255, None), false),
        ] {
            let BinMapper::Numeric { upper } = m else {
                panic!()
            };
            assert_eq!(upper.len(), 255);
            assert_eq!(straddles(&upper, &days, 20.5), !supervised);
        }
    }

    #[test]
    fn quantile_bins_are_balanced() {
        let v: Vec<f64> = (0..100_000)
            .map(|i| ((i * 7919) % 100_000) as f64)
            .collect();
        let m = BinMapper::numeric(&v, None, 16, None);
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
