//! The boosting loop and the trained model.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bin::{BinMapper, Binned};
use crate::data::{Column, Dataset, FeatureKind};
use crate::device::{Device, DeviceTrainer};
use crate::metric;
use crate::objective::Objective;
use crate::train::{
    exact_leaf_sums, gradients_packed, grow_tree_pooled, renew_leaves, set_leaf_values, HistPool,
    Params,
};
use crate::tree::Tree;
use crate::GbdtError;

/// The arithmetic a model's predictions are computed in.
///
/// Contrail and LightGBM sum a row's leaf values in `f64`. XGBoost sums them in `f32`: it
/// starts from the base margin, adds each tree's leaf value in tree order, rounding to
/// `f32` after every addition, and takes the sigmoid (`1 / (1 + expf(-x))`) or
/// exponential (`expf`) in `f32` too. A model imported from XGBoost predicts the same way,
/// so its predictions are XGBoost's bits, not a few `f32` roundings away from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F64,
    F32,
}

impl Precision {
    pub fn is_f64(&self) -> bool {
        *self == Precision::F64
    }

    /// `o += v` in this arithmetic.
    #[inline(always)]
    pub(crate) fn add(self, o: &mut f64, v: f64) {
        match self {
            Precision::F64 => add_in::<false>(o, v),
            Precision::F32 => add_in::<true>(o, v),
        }
    }
}

/// `o += v`, in `f32` when `F32` (both are `f32` values then, held in `f64`): the one
/// definition of a prediction's addition, for the compiled forest's loops (which take the
/// arithmetic as a constant) and the reference walk.
#[inline(always)]
pub(crate) fn add_in<const F32: bool>(o: &mut f64, v: f64) {
    if F32 {
        *o = (*o as f32 + v as f32) as f64;
    } else {
        *o += v;
    }
}

/// A trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booster {
    pub feature_names: Vec<String>,
    pub feature_kinds: Vec<FeatureKind>,
    pub mappers: Vec<BinMapper>,
    pub objective: Objective,
    pub init_score: f64,
    pub trees: Vec<Tree>,
    pub params: Params,
    /// 1-based iteration with the best validation score (0 without validation).
    pub best_iteration: usize,
    /// The arithmetic of prediction ([`Precision`]): `F64` for models trained here.
    #[serde(default)]
    pub precision: Precision,
}

/// One line of the training log.
#[derive(Debug, Clone, Serialize)]
pub struct IterationLog {
    pub iteration: usize,
    /// (dataset, metric, value): dataset is "train" or "valid".
    pub values: Vec<(String, String, f64)>,
}

impl IterationLog {
    /// The familiar `[12]\ttrain-rmse:0.41\tvalid-rmse:0.47` form.
    pub fn line(&self) -> String {
        let mut s = format!("[{}]", self.iteration);
        for (d, m, v) in &self.values {
            s.push_str(&format!("\t{d}-{m}:{v:.6}"));
        }
        s
    }
}

/// Deterministic per-row hash for bagging.
fn row_hash(seed: u64, round: u64, row: u64) -> u64 {
    let mut z =
        seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ row.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn feature_subset(n: usize, fraction: f64, seed: u64, iter: u64) -> Vec<usize> {
    if fraction >= 1.0 {
        return (0..n).collect();
    }
    let k = ((n as f64 * fraction).round() as usize).clamp(1, n);
    let mut keyed: Vec<(u64, usize)> = (0..n)
        .map(|f| (row_hash(seed ^ 0xFEA7, iter, f as u64), f))
        .collect();
    keyed.sort();
    let mut f: Vec<usize> = keyed[..k].iter().map(|x| x.1).collect();
    f.sort();
    f
}

/// The rows of each leaf, ascending within a leaf, from the leaf of every row
/// (`u32::MAX`: not in the tree): written to `rows`, with each leaf's (begin, len).
fn rows_by_leaf(leaf_of: &[u32], n_leaves: usize, rows: &mut Vec<u32>) -> Vec<(usize, usize)> {
    let mut counts = vec![0usize; n_leaves];
    for &l in leaf_of {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    let mut ranges = Vec::with_capacity(n_leaves);
    let mut next = Vec::with_capacity(n_leaves);
    let mut at = 0;
    for c in counts {
        ranges.push((at, c));
        next.push(at);
        at += c;
    }
    rows.clear();
    rows.resize(at, 0);
    for (r, &l) in leaf_of.iter().enumerate() {
        if let Some(p) = next.get_mut(l as usize) {
            rows[*p] = r as u32;
            *p += 1;
        }
    }
    ranges
}

/// Trains a model. `on_iteration` sees every iteration's metrics (for logs and files).
pub fn train(
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    on_iteration: &mut (dyn FnMut(&IterationLog) + Send),
) -> Result<Booster, GbdtError> {
    Ok(train_with_predictions(train, valid, params, on_iteration)?.0)
}

/// [`train`], also returning the model's predictions (response scale) for the training
/// rows, which training has already computed: no second pass over the trees.
pub fn train_with_predictions(
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    on_iteration: &mut (dyn FnMut(&IterationLog) + Send),
) -> Result<(Booster, Vec<f64>), GbdtError> {
    train_on(&Device::Cpu, train, valid, params, on_iteration)
}

/// [`train_with_predictions`] on a device: `wgpu` and `cuda` grow the same trees as the
/// CPU (see [`crate::device`]).
pub fn train_on(
    device: &Device,
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    on_iteration: &mut (dyn FnMut(&IterationLog) + Send),
) -> Result<(Booster, Vec<f64>), GbdtError> {
    train_on_until(device, train, valid, params, &mut |l: &IterationLog| {
        on_iteration(l);
        Control::Continue
    })
}

/// What the per-iteration callback of [`train_on_until`] wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Stop after this iteration (a pruned trial): the model keeps the trees grown so far.
    Stop,
}

/// [`train_on`] whose callback can stop training after any iteration. A stopped model
/// keeps every tree grown so far, as if `num_iterations` had been that iteration; its
/// `best_iteration` is the best among them (and early stopping, when on, truncates to it
/// as usual).
pub fn train_on_until(
    device: &Device,
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    on_iteration: &mut (dyn FnMut(&IterationLog) -> Control + Send),
) -> Result<(Booster, Vec<f64>), GbdtError> {
    params.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(params.num_threads)
        .build()
        .map_err(|e| GbdtError::Param {
            name: "num_threads",
            reason: e.to_string(),
        })?;
    pool.install(|| train_in_pool(device, train, valid, params, on_iteration))
}

fn train_in_pool(
    device: &Device,
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    on_iteration: &mut (dyn FnMut(&IterationLog) -> Control + Send),
) -> Result<(Booster, Vec<f64>), GbdtError> {
    let n = train.n_rows();
    if n == 0 {
        return Err(GbdtError::Data {
            what: "training data".into(),
            reason: "no rows".into(),
        });
    }
    let obj = params.objective;
    obj.check_labels(&train.target, "target")?;
    if let Some(i) = train
        .weights
        .as_deref()
        .and_then(|w| w.iter().position(|x| crate::data::bad_weight(*x)))
    {
        return Err(GbdtError::Data {
            what: "weights".into(),
            reason: format!(
                "row {i}: weights must be finite, >= 0 and at most {:e}",
                crate::data::MAX_MAGNITUDE
            ),
        });
    }
    let mc = &params.monotone_constraints;
    if !mc.is_empty() {
        if mc.len() != train.n_features() {
            return Err(GbdtError::Param {
                name: "monotone_constraints",
                reason: format!("{} values for {} features", mc.len(), train.n_features()),
            });
        }
        if let Some(f) = train
            .kinds()
            .iter()
            .zip(mc)
            .position(|(k, c)| *k == crate::data::FeatureKind::Categorical && *c != 0)
        {
            return Err(GbdtError::Param {
                name: "monotone_constraints",
                reason: format!(
                    "feature `{}` is categorical and cannot be monotone",
                    train.names[f]
                ),
            });
        }
    }
    let mut binned = Binned::fit_columns(
        train,
        params.max_bin,
        params.bin_construct_sample_cnt,
        params.data_random_seed,
        params.label_edges,
    );
    let vbinned = match valid {
        Some(v) => {
            if v.names != train.names || v.kinds() != train.kinds() {
                return Err(GbdtError::Data {
                    what: "validation data".into(),
                    reason: "its features differ from the training data's".into(),
                });
            }
            obj.check_labels(&v.target, "validation target")?;
            Some(Binned::with_mappers(v, binned.mappers.clone()))
        }
        None => None,
    };
    // Features that can split at all (as LightGBM's feature_pre_filter): two or more
    // non-empty bins, and at least min_data_in_leaf rows outside the fullest bin. The
    // others would cost a histogram update per row and never split.
    let usable: Vec<usize> = binned
        .columns
        .par_iter()
        .map(|col| {
            let mut counts = vec![0usize; col.iter().map(|b| *b as usize + 1).max().unwrap_or(0)];
            for b in col {
                counts[*b as usize] += 1;
            }
            let fullest = counts.iter().copied().max().unwrap_or(0);
            counts.iter().filter(|c| **c > 0).count() >= 2
                && n - fullest >= params.min_data_in_leaf.max(1)
        })
        .collect::<Vec<bool>>()
        .into_iter()
        .enumerate()
        .filter_map(|(f, ok)| ok.then_some(f))
        .collect();
    binned.pack(&usable, true);
    let w = train.weights.as_deref();
    let init = obj.init_score(&train.target, w);
    let mut score = vec![init; n];
    let mut vscore = valid.map(|v| vec![init; v.n_rows()]);
    let metrics: Vec<String> = if params.metric.is_empty() {
        vec![obj.default_metric().to_string()]
    } else {
        params
            .metric
            .iter()
            .filter(|m| *m != "none")
            .cloned()
            .collect()
    };
    let mut booster = Booster {
        feature_names: train.names.clone(),
        feature_kinds: train.kinds(),
        mappers: binned.mappers.clone(),
        objective: obj,
        init_score: init,
        trees: Vec::new(),
        params: params.clone(),
        best_iteration: 0,
        precision: Precision::F64,
    };
    let mut best: Option<(f64, usize)> = None;
    let all_rows: Vec<u32> = (0..n as u32).collect();
    let mut bag: Vec<u32> = all_rows.clone();
    let mut rows: Vec<u32> = Vec::with_capacity(n);
    let mut resp = vec![obj.transform(init); n];
    let mut pool = HistPool::default();
    let bagging = params.bagging_fraction < 1.0 && params.bagging_freq > 0;
    let mut accel = match device {
        Device::Cpu => None,
        d => Some(DeviceTrainer::new(d, &binned, params.max_leaves())?),
    };
    // Unless `deterministic`, a device computes gradients, leaf values and scores itself.
    let on_device = match accel.as_mut() {
        Some(d) if !params.deterministic => d.start_scores(&obj, &train.target, w, init)?,
        _ => false,
    };
    // The host's gradients, their packed pairs and the leaf of every row: none when the
    // device computes them.
    let host_n = if on_device { 0 } else { n };
    let (mut gf, mut hf) = (vec![0.0f64; host_n], vec![0.0f64; host_n]);
    let mut gh = vec![0u64; host_n];
    crate::bin::advise_huge_pages(&mut gh);
    let mut leaf_of = vec![0u32; host_n];
    for it in 0..params.num_iterations {
        let (sg, sh) = match accel.as_mut() {
            Some(d) if on_device => d.gradients()?,
            _ => {
                let phase = std::time::Instant::now();
                // Gradients (weighted), quantised, into reused buffers.
                let scales = gradients_packed(
                    &obj,
                    (&score, &train.target, w),
                    (&mut gf, &mut hf),
                    &mut gh,
                )?;
                if accel.is_some() {
                    crate::device::add(crate::device::HOST_GRADIENTS, phase);
                }
                scales
            }
        };
        if bagging && it % params.bagging_freq == 0 {
            let cut = (params.bagging_fraction * u64::MAX as f64) as u64;
            let round = (it / params.bagging_freq) as u64;
            bag = all_rows
                .par_iter()
                .copied()
                .filter(|&r| row_hash(params.seed, round, r as u64) <= cut)
                .collect();
        }
        // The tree's rows: the CPU partitions them in place; a device keeps the leaf of
        // every row and needs the list only for bagging (a copy of 4 bytes a row is a
        // few milliseconds at 10 M rows, more than a device's histogram pass).
        if accel.is_none() || bagging {
            rows.clear();
            rows.extend_from_slice(if bagging { &bag } else { &all_rows });
        }
        let feats: Vec<usize> = feature_subset(
            usable.len(),
            params.feature_fraction,
            params.seed,
            it as u64,
        )
        .into_iter()
        .map(|i| usable[i])
        .collect();
        // The leaf of every row in the tree's sample (rows out of the bag: u32::MAX);
        // leaf values from their exact gradient sums.
        let mut grown = match accel.as_mut() {
            None => {
                let grown =
                    grow_tree_pooled(&binned, params, &feats, &mut rows, &gh, sg, sh, &mut pool);
                if bagging {
                    leaf_of.fill(u32::MAX);
                }
                for (leaf, &(b, len)) in grown.leaf_rows.iter().enumerate() {
                    for &r in &rows[b..b + len] {
                        leaf_of[r as usize] = leaf as u32;
                    }
                }
                grown
            }
            Some(d) if on_device => {
                // Leaf values from the quantised sums, as growth set them.
                let bag = bagging.then_some(&rows[..]);
                d.grow(&binned, params, &feats, bag, None, sg, sh, None)?
            }
            Some(d) => {
                let bag = bagging.then_some(&rows[..]);
                let mut grown = d.grow(
                    &binned,
                    params,
                    &feats,
                    bag,
                    Some(&gh),
                    sg,
                    sh,
                    Some(&mut leaf_of),
                )?;
                if obj.renew_quantile().is_some() {
                    // The rows of each leaf in ascending order, as the CPU's stable
                    // partitions leave them.
                    grown.leaf_rows =
                        rows_by_leaf(&leaf_of, grown.tree.leaf_value.len(), &mut rows);
                }
                grown
            }
        };
        let phase = std::time::Instant::now();
        match accel.as_mut() {
            Some(d) if on_device => d.add_tree(&binned, &grown.tree)?,
            _ => {
                let sums = exact_leaf_sums(grown.tree.leaf_value.len(), &leaf_of, &gf, &hf);
                set_leaf_values(&mut grown, params, &sums);
                if bagging {
                    // Out-of-bag rows need their leaf too, for the score update: by traversal.
                    let tree = &grown.tree;
                    leaf_of
                        .par_iter_mut()
                        .enumerate()
                        .for_each(|(r, l)| *l = tree.leaf_of_binned(&binned, r) as u32);
                }
                if let Some(q) = obj.renew_quantile() {
                    renew_leaves(
                        &mut grown,
                        &rows,
                        &train.target,
                        &score,
                        w,
                        q,
                        params.learning_rate,
                    );
                }
                // Update training scores.
                let tree = &grown.tree;
                score
                    .par_iter_mut()
                    .zip(leaf_of.par_iter())
                    .for_each(|(s, l)| *s += tree.leaf_value[*l as usize]);
            }
        }
        let tree = &grown.tree;
        if let (Some(vs), Some(vb)) = (vscore.as_mut(), vbinned.as_ref()) {
            vs.par_iter_mut()
                .enumerate()
                .for_each(|(r, s)| *s += tree.leaf_value[tree.leaf_of_binned(vb, r)]);
        }
        if accel.is_some() && !on_device {
            crate::device::add(crate::device::HOST_LEAVES, phase);
        }
        booster.trees.push(grown.tree);
        // Metrics: partial sums over fixed-size chunks, the same whatever the thread count.
        let mut log = IterationLog {
            iteration: it + 1,
            values: Vec::new(),
        };
        if !metrics.is_empty() {
            if let Some(d) = accel.as_ref().filter(|_| on_device) {
                score = d.scores()?;
            }
            resp.par_iter_mut()
                .zip(score.par_iter())
                .for_each(|(r, s)| *r = obj.transform(*s));
        }
        for m in &metrics {
            log.values.push((
                "train".into(),
                m.clone(),
                metric::evaluate(m, &train.target, &resp, w, &obj),
            ));
        }
        if let (Some(v), Some(vs), false) = (valid, vscore.as_ref(), metrics.is_empty()) {
            let vresp: Vec<f64> = vs.par_iter().map(|s| obj.transform(*s)).collect();
            for m in &metrics {
                log.values.push((
                    "valid".into(),
                    m.clone(),
                    metric::evaluate(m, &v.target, &vresp, v.weights.as_deref(), &obj),
                ));
            }
            let first = &metrics[0];
            let val = log
                .values
                .iter()
                .find(|(d, m, _)| d == "valid" && m == first)
                .map_or(f64::NAN, |x| x.2);
            let improved = best.is_none_or(|(b, _)| {
                if metric::higher_is_better(first) {
                    val > b
                } else {
                    val < b
                }
            });
            if improved {
                best = Some((val, it + 1));
            }
        }
        if on_iteration(&log) == Control::Stop {
            break;
        }
        if let Some((_, bi)) = best {
            if params.early_stopping_round > 0 && it + 1 - bi >= params.early_stopping_round {
                break;
            }
        }
    }
    if let Some((_, bi)) = best {
        booster.best_iteration = bi;
        if params.early_stopping_round > 0 && booster.trees.len() > bi {
            booster.trees.truncate(bi);
            // The training scores at the best iteration, from the binned rows already in
            // memory (the same additions in the same order as during training, so the
            // same bits); raw features for the trees would be 8 bytes a value, 560 MB
            // more at the peak on 2M rows of 35 features.
            let trees = &booster.trees;
            let binned = &binned;
            score.par_iter_mut().enumerate().for_each(|(r, s)| {
                *s = init;
                for tree in trees {
                    *s += tree.leaf_value[tree.leaf_of_binned(binned, r)];
                }
            });
            resp.par_iter_mut()
                .zip(score.par_iter())
                .for_each(|(r, s)| *r = obj.transform(*s));
        }
    }
    if metrics.is_empty() {
        if let Some(d) = accel.as_ref().filter(|_| on_device) {
            score = d.scores()?;
        }
        resp.par_iter_mut()
            .zip(score.par_iter())
            .for_each(|(r, s)| *r = obj.transform(*s));
    }
    // `resp` holds the transformed scores of the last iteration.
    Ok((booster, resp))
}

impl Booster {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Row-major raw features from a dataset whose feature names match the model's
    /// (by name, in any order): numbers for numeric features, category bins for
    /// categorical ones (unseen categories go to the "other" bin, missing to NaN).
    pub fn prepare(&self, data: &Dataset) -> Result<Vec<f64>, GbdtError> {
        let n = data.n_rows_or_len();
        let nf = self.n_features();
        let mut x = vec![f64::NAN; n * nf];
        for (f, name) in self.feature_names.iter().enumerate() {
            let Some(ci) = data.names.iter().position(|c| c == name) else {
                return Err(GbdtError::Data {
                    what: "input".into(),
                    reason: format!("column `{name}` the model needs is missing"),
                });
            };
            match (&self.mappers[f], &data.columns[ci]) {
                (BinMapper::Numeric { .. }, Column::Numeric(v)) => {
                    for (r, val) in v.iter().enumerate() {
                        x[r * nf + f] = *val;
                    }
                }
                (m @ BinMapper::Categorical { .. }, Column::Categorical { codes, dict }) => {
                    let table = m.code_bins(dict);
                    for (r, c) in codes.iter().enumerate() {
                        x[r * nf + f] = table.get(*c as usize).map_or(f64::NAN, |b| *b as f64);
                    }
                }
                (m, _) => {
                    let want = if m.is_categorical() {
                        "categorical (strings)"
                    } else {
                        "numeric"
                    };
                    return Err(GbdtError::Data {
                        what: "input".into(),
                        reason: format!("column `{name}` must be {want}"),
                    });
                }
            }
        }
        Ok(x)
    }

    /// Raw scores for row-major prepared features, with the first `n_trees` trees
    /// (all if `None`).
    pub fn predict_raw(&self, x: &[f64], n_trees: Option<usize>) -> Vec<f64> {
        // Compiling visits every node once: worth it past a hundred rows or so (a 500-tree
        // model compiles in about a millisecond; a row walks in tens of microseconds).
        if x.len() / self.n_features().max(1) < 128 {
            return self.predict_raw_reference(x, n_trees);
        }
        let trees = &self.trees[..n_trees.unwrap_or(self.trees.len()).min(self.trees.len())];
        match crate::predict::Forest::compile(trees, &self.mappers, self.init_score, self.precision)
        {
            Some(f) => f.predict_raw(x),
            None => self.predict_raw_reference(x, n_trees),
        }
    }

    /// [`Booster::predict_raw`] by walking each tree's node tables on the raw values, a
    /// row at a time: the reference the compiled forest ([`crate::predict::Forest`]) is
    /// tested against (the same bits), and the fallback for models it cannot lay out.
    pub fn predict_raw_reference(&self, x: &[f64], n_trees: Option<usize>) -> Vec<f64> {
        let nf = self.n_features().max(1);
        let trees = &self.trees[..n_trees.unwrap_or(self.trees.len()).min(self.trees.len())];
        x.par_chunks(nf * 256)
            .flat_map_iter(|block| {
                let rows = block.len() / nf;
                let mut out = vec![self.init_score; rows];
                for t in trees {
                    for (r, o) in out.iter_mut().enumerate() {
                        let v = t.leaf_value
                            [t.leaf_of_raw(&block[r * nf..(r + 1) * nf], &self.mappers)];
                        self.precision.add(o, v);
                    }
                }
                out
            })
            .collect()
    }

    /// Predictions on the response scale (probability for binary, expected count for
    /// Poisson), as LightGBM's `predict`.
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f64>, GbdtError> {
        let x = self.prepare(data)?;
        Ok(self
            .predict_raw(&x, None)
            .into_iter()
            .map(|s| self.response(s))
            .collect())
    }

    /// A raw score on the response scale, in the model's [`Precision`].
    #[inline]
    pub fn response(&self, raw: f64) -> f64 {
        match self.precision {
            Precision::F64 => self.objective.transform(raw),
            Precision::F32 => self.objective.transform_f32(raw as f32) as f64,
        }
    }

    /// [`Booster::predict`] on `device` (the CPU, or a GPU: see
    /// [`crate::device::predict_raw`]).
    pub fn predict_on(&self, device: &Device, data: &Dataset) -> Result<Vec<f64>, GbdtError> {
        if *device == Device::Cpu {
            return self.predict(data);
        }
        let x = self.prepare(data)?;
        Ok(crate::device::predict_raw(device, self, &x, None)?
            .into_iter()
            .map(|s| self.response(s))
            .collect())
    }

    /// Total gain and number of splits per feature.
    pub fn importance(&self) -> (Vec<f64>, Vec<u64>) {
        let mut gain = vec![0.0; self.n_features()];
        let mut splits = vec![0u64; self.n_features()];
        for t in &self.trees {
            for (f, g) in t.feature.iter().zip(&t.gain) {
                gain[*f as usize] += g;
                splits[*f as usize] += 1;
            }
        }
        (gain, splits)
    }
}

impl Dataset {
    fn n_rows_or_len(&self) -> usize {
        if !self.target.is_empty() {
            self.target.len()
        } else {
            self.columns.first().map_or(0, |c| c.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::data;

    #[test]
    fn a_callback_can_stop_training_and_the_trees_so_far_are_kept() {
        let (tr, va) = (data(2000, 3), data(600, 4));
        let params = Params {
            num_iterations: 12,
            num_leaves: 15,
            bagging_fraction: 0.8,
            bagging_freq: 1,
            feature_fraction: 0.8,
            num_threads: 2,
            ..Params::default()
        };
        let mut full_log = Vec::new();
        let (full, _) = train_on(&Device::Cpu, &tr, Some(&va), &params, &mut |l| {
            full_log.push(l.values.clone())
        })
        .expect("train");
        assert_eq!(full.trees.len(), 12);
        let k = 5;
        let mut seen = Vec::new();
        let (stopped, fitted) = train_on_until(&Device::Cpu, &tr, Some(&va), &params, &mut |l| {
            seen.push(l.values.clone());
            if l.iteration == k {
                Control::Stop
            } else {
                Control::Continue
            }
        })
        .expect("train");
        assert_eq!(stopped.trees.len(), k);
        assert_eq!(seen.len(), k);
        // The first k iterations are those of the unstopped run, bit for bit.
        assert_eq!(stopped.trees[..], full.trees[..k]);
        assert_eq!(seen[..], full_log[..k]);
        assert!(stopped.best_iteration >= 1 && stopped.best_iteration <= k);
        let x = full.prepare(&tr).expect("prepare");
        let want: Vec<f64> = full
            .predict_raw(&x, Some(k))
            .into_iter()
            .map(|s| full.objective.transform(s))
            .collect();
        assert_eq!(stopped.predict(&tr).expect("predict"), want);
        assert_eq!(fitted, want);
    }
}
