//! Training: mini-batch AdamW with a warm-up and cosine learning-rate schedule, dropout,
//! weight decay, early stopping on a validation split, and checkpoints that resume to
//! the same bits as an uninterrupted run.
//!
//! Determinism: the weights are initialised from the backend's generator seeded with
//! `seed`; every epoch reseeds it (dropout masks) and shuffles the rows with its own
//! generator, both from `(seed, epoch)` alone. An epoch therefore depends only on the
//! state at its start, which is what a checkpoint holds (weights, optimiser moments,
//! the best weights so far and the history), so a resumed run continues exactly where
//! the interrupted one stopped.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Encoded;
use crate::loss::{self, Head};
use crate::model::{Architecture, Net};
use crate::weights::{self, Weights};
use crate::NnError;
/// What an epoch callback wants next: the boosting loop's answer, for epochs.
pub use contrail_gbdt::Control as Next;

/// Training parameters (`[train.params]` of a neural model's config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NnParams {
    pub head: Head,
    /// Hidden layer widths of the MLP body.
    pub hidden: Vec<usize>,
    /// Embedding width of every categorical feature; 0 picks one per feature from its
    /// number of categories (at most `max_embedding_dim`).
    pub embedding_dim: usize,
    pub max_embedding_dim: usize,
    /// Piecewise-linear encoding of every numeric feature in this many quantile bins
    /// beside its standardised value (0: the value only).
    pub numeric_bins: usize,
    pub dropout: f64,
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// `cosine` (warm-up, then cosine decay to `min_lr_ratio` of the rate) or `constant`
    /// (warm-up, then flat).
    pub lr_schedule: String,
    /// Fraction of all steps spent warming up linearly from 0.
    pub warmup_fraction: f64,
    pub min_lr_ratio: f64,
    /// Stop after this many epochs without a better validation loss (0: never).
    pub early_stopping_rounds: usize,
    pub seed: u64,
    /// Rows shuffled together: training data larger than this is read in windows of
    /// whole blocks (Parquet row groups) of at least this many rows, in a seeded order of
    /// blocks, each window's rows shuffled (0: the whole data at once). Data that fits
    /// is shuffled as a whole, the same rows in the same order as from memory.
    pub shuffle_window: usize,
    /// Networks trained one after another from their own seeds (the first from `seed`,
    /// the rest from seeds derived from it, [`member_seed`]), each with its own early
    /// stopping; the package predicts their mean response (1: one network).
    pub ensemble: usize,
}

impl Default for NnParams {
    fn default() -> Self {
        NnParams {
            head: Head::Poisson,
            hidden: vec![256, 128, 64],
            embedding_dim: 0,
            max_embedding_dim: 16,
            numeric_bins: 0,
            dropout: 0.1,
            learning_rate: 2e-3,
            weight_decay: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
            batch_size: 1024,
            max_epochs: 30,
            lr_schedule: "cosine".into(),
            warmup_fraction: 0.02,
            min_lr_ratio: 0.01,
            early_stopping_rounds: 5,
            seed: 42,
            shuffle_window: 1 << 20,
            ensemble: 1,
        }
    }
}

impl NnParams {
    pub fn validate(&self) -> Result<(), NnError> {
        let bad = |name: &'static str, reason: String| Err(NnError::Param { name, reason });
        if self.hidden.is_empty() || self.hidden.iter().any(|h| *h == 0 || *h > 65_536) {
            return bad(
                "hidden",
                format!("{:?}: one or more widths in 1..=65536", self.hidden),
            );
        }
        if self.max_embedding_dim == 0 || self.embedding_dim > 4096 || self.max_embedding_dim > 4096
        {
            return bad("embedding_dim", "widths must be in 1..=4096".into());
        }
        if self.numeric_bins > 256 {
            return bad(
                "numeric_bins",
                format!("{} is more than 256", self.numeric_bins),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(
                "learning_rate",
                format!("{} must be > 0", self.learning_rate),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                "weight_decay",
                format!("{} must be >= 0", self.weight_decay),
            );
        }
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(name, format!("{v} is not in [0, 1)"));
            }
        }
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return bad("epsilon", format!("{} must be > 0", self.epsilon));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 22 {
            return bad(
                "batch_size",
                format!("{} is not in 1..=4194304", self.batch_size),
            );
        }
        if self.ensemble == 0 || self.ensemble > MAX_MEMBERS {
            return bad(
                "ensemble",
                format!("{} is not in 1..={MAX_MEMBERS}", self.ensemble),
            );
        }
        if self.max_epochs == 0 {
            return bad("max_epochs", "must be at least 1".into());
        }
        if !matches!(self.lr_schedule.as_str(), "cosine" | "constant") {
            return bad(
                "lr_schedule",
                format!("{:?}: use cosine or constant", self.lr_schedule),
            );
        }
        if !(0.0..=1.0).contains(&self.warmup_fraction) {
            return bad(
                "warmup_fraction",
                format!("{} is not in [0, 1]", self.warmup_fraction),
            );
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return bad(
                "min_lr_ratio",
                format!("{} is not in [0, 1]", self.min_lr_ratio),
            );
        }
        Ok(())
    }

    /// The learning rate of global step `step` out of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = (self.warmup_fraction * total as f64).round() as usize;
        if step < warm {
            return self.learning_rate * (step + 1) as f64 / warm as f64;
        }
        match self.lr_schedule.as_str() {
            "constant" => self.learning_rate,
            _ => {
                let span = (total - warm).max(1) as f64;
                let t = ((step - warm) as f64 / span).min(1.0);
                let floor = self.learning_rate * self.min_lr_ratio;
                floor
                    + (self.learning_rate - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// The most networks an ensemble (and so a package) holds.
pub const MAX_MEMBERS: usize = 32;

/// The seed of an ensemble's member `k`: `seed` itself for the first, so an ensemble of
/// one is the network `seed` gives alone.
pub fn member_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        seed
    } else {
        mix(seed, 0xE45E_0000 + k as u64)
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// The ensemble member the epoch trained (0 for a single network).
    #[serde(default)]
    pub member: usize,
    pub epoch: usize,
    /// Mean training loss (without the constant terms).
    pub train_loss: f64,
    /// Mean validation negative log-likelihood (all terms), when there is a validation split.
    pub valid_nll: Option<f64>,
    pub learning_rate: f64,
    pub samples_per_sec: f64,
}

impl EpochLog {
    /// The epoch as per-iteration lines name it: `3`, or `m1:3` for ensemble member 1.
    pub fn tag(&self) -> String {
        if self.member == 0 {
            self.epoch.to_string()
        } else {
            format!("m{}:{}", self.member, self.epoch)
        }
    }
}

/// The training data of one split, in memory: inputs and targets.
pub struct Split<'a> {
    pub x: &'a Encoded,
    pub y: &'a [f32],
}

/// Rows for training or validation in blocks (a file's row groups) that are read when
/// needed, so the whole data need not be in memory at once. A [`Split`] is one block.
pub trait Source: Sync {
    /// Rows of each block, in the data's order.
    fn block_rows(&self) -> Vec<usize>;
    /// Block `i`'s inputs and targets.
    fn block(&self, i: usize) -> Result<Block<'_>, NnError>;
}

/// One block of a [`Source`]: borrowed from memory or read for the occasion.
pub struct Block<'a> {
    pub x: Cow<'a, Encoded>,
    pub y: Cow<'a, [f32]>,
}

impl Source for Split<'_> {
    fn block_rows(&self) -> Vec<usize> {
        vec![self.x.n_rows]
    }
    fn block(&self, i: usize) -> Result<Block<'_>, NnError> {
        if i != 0 {
            return Err(NnError::Data(format!("block {i} of an in-memory split")));
        }
        Ok(Block {
            x: Cow::Borrowed(self.x),
            y: Cow::Borrowed(self.y),
        })
    }
}

/// Block `i` of `src`, checked against its declared rows and the inputs' widths.
fn read_block<'a>(
    src: &'a dyn Source,
    rows: &[usize],
    i: usize,
    widths: (usize, usize),
    what: &str,
) -> Result<Block<'a>, NnError> {
    let b = src.block(i)?;
    let n = b.x.n_rows;
    if n != rows[i]
        || b.y.len() != n
        || b.x.cat.len() != n * widths.0
        || b.x.num.len() != n * widths.1
    {
        return Err(NnError::Data(format!(
            "{what} block {i}: {} rows declared, {n} inputs ({} ids, {} values) and {} targets \
             read (expected {} ids and {} values a row)",
            rows[i],
            b.x.cat.len(),
            b.x.num.len(),
            b.y.len(),
            widths.0,
            widths.1
        )));
    }
    Ok(b)
}

/// The blocks an epoch reads together (windows), in order. Data of at most `window`
/// rows (or `window` 0, or one block) is one window of every block in order, so it is
/// shuffled as a whole; larger data is cut, in a seeded order of its blocks, into
/// windows of whole blocks holding at least `window` rows (the last may hold fewer).
pub fn epoch_windows(
    block_rows: &[usize],
    window: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let n: usize = block_rows.iter().sum();
    if window == 0 || n <= window || block_rows.len() <= 1 {
        return vec![(0..block_rows.len()).collect()];
    }
    let mut out = Vec::new();
    let (mut cur, mut rows) = (Vec::new(), 0);
    for b in epoch_order(block_rows.len(), mix(seed, 0xB10C), epoch) {
        cur.push(b);
        rows += block_rows[b];
        if rows >= window {
            out.push(std::mem::take(&mut cur));
            rows = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The order of the `rows` rows of window `w` of `windows` in `epoch`: for one window,
/// [`epoch_order`] itself (the order of data held in memory).
fn window_order(rows: usize, windows: usize, w: usize, seed: u64, epoch: usize) -> Vec<usize> {
    if windows == 1 {
        epoch_order(rows, seed, epoch)
    } else {
        epoch_order(rows, mix(seed, 0x57EA_0000 + w as u64), epoch)
    }
}

/// The blocks of one window, each read and checked.
fn read_window<'a>(
    src: &'a dyn Source,
    rows: &[usize],
    blocks: &[usize],
    widths: (usize, usize),
) -> Result<Vec<Block<'a>>, NnError> {
    blocks
        .iter()
        .map(|&i| read_block(src, rows, i, widths, "training"))
        .collect()
}

/// Raw scores and targets of every row of `src`, block by block in order.
fn source_scores<B: Backend>(
    net: &Net<B>,
    src: &dyn Source,
    widths: (usize, usize),
    what: &str,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>), NnError> {
    let rows = src.block_rows();
    let n: usize = rows.iter().sum();
    let (mut eta, mut y) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..rows.len() {
        let b = read_block(src, &rows, i, widths, what)?;
        eta.extend(raw_scores(net, &b.x, 8192, device)?);
        y.extend_from_slice(&b.y);
    }
    Ok((eta, y))
}

/// Where checkpoints go, and (for tests of resuming) an epoch to stop after as if the
/// process had been killed.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// A checkpoint file written after every epoch; when it exists at the start, the run
    /// resumes from it.
    pub checkpoint: Option<PathBuf>,
    pub stop_after_epochs: Option<usize>,
}

/// The result of training: the best weights (by validation loss; the last when there
/// is no validation split) and the history.
#[derive(Debug, Clone)]
pub struct Trained {
    pub arch: Architecture,
    pub weights: Weights,
    pub best_epoch: usize,
    pub history: Vec<EpochLog>,
    /// True when the run stopped early (patience) or was asked to stop.
    pub stopped_early: bool,
    /// Epoch the run resumed after, if it resumed from a checkpoint.
    pub resumed_from: Option<usize>,
    /// The run ended (its epochs, patience or its callback); false when it was stopped
    /// by [`Control::stop_after_epochs`] as if killed.
    pub finished: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CheckpointState {
    params: NnParams,
    arch: Architecture,
    train_rows: usize,
    epochs_done: usize,
    best_epoch: usize,
    best_loss: Option<f64>,
    history: Vec<EpochLog>,
    /// The run ended (epochs, patience, or its callback): resuming returns its result
    /// without training.
    #[serde(default)]
    finished: bool,
    #[serde(default)]
    stopped_early: bool,
}

fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The row order of `epoch` (Fisher–Yates with a generator of `(seed, epoch)`).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = mix(seed, epoch as u64 + 1);
    for i in (1..n).rev() {
        s = mix(s, i as u64);
        let j = (s % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Rows of one shard of a mini-batch (a fixed size: the shards, and so the bits, do not
/// depend on the thread count).
pub const SHARD_ROWS: usize = 256;

/// Marks every float parameter as differentiated (a module rebuilt from its inner
/// weights is not).
struct RequireGrad;

impl<B: AutodiffBackend> burn::module::ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

/// Sums shard gradients parameter by parameter, in shard order.
fn sum_grads<B: AutodiffBackend>(
    model: &Net<B>,
    mut parts: Vec<GradientsParams>,
) -> GradientsParams {
    struct Sum<'a> {
        parts: &'a mut [GradientsParams],
        out: GradientsParams,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Sum<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let mut acc: Option<Tensor<B::InnerBackend, D>> = None;
            for p in self.parts.iter_mut() {
                if let Some(g) = p.remove::<B::InnerBackend, D>(param.id) {
                    acc = Some(match acc {
                        Some(a) => a + g,
                        None => g,
                    });
                }
            }
            if let Some(a) = acc {
                self.out.register::<B::InnerBackend, D>(param.id, a);
            }
        }
    }
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut v = Sum {
        parts: &mut parts,
        out: GradientsParams::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Dropout masks of global step `step` for `rows` rows of a mini-batch from shard
/// `first_shard` on: per hidden layer `[rows, width]`, each entry 0 with probability
/// `dropout`, else 1/(1-dropout). Shard `j` (its [`SHARD_ROWS`] rows) is drawn from
/// `(seed, step · 4096 + j)` alone, so the CPU, which runs each shard on its own, and a
/// GPU, which runs the whole batch from shard 0, drop the same units.
pub fn dropout_masks<B: Backend>(
    arch: &Architecture,
    params: &NnParams,
    step: usize,
    first_shard: usize,
    rows: usize,
    device: &B::Device,
) -> Vec<Tensor<B, 2>> {
    if arch.dropout <= 0.0 {
        return Vec::new();
    }
    let mut layers: Vec<Vec<f32>> = vec![Vec::with_capacity(rows); arch.hidden.len()];
    let (mut j, mut done) = (first_shard, 0);
    while done < rows {
        let n = SHARD_ROWS.min(rows - done);
        for (all, v) in layers
            .iter_mut()
            .zip(dropout_values(arch, params, step * 4096 + j, n))
        {
            all.extend(v);
        }
        (j, done) = (j + 1, done + n);
    }
    layers
        .into_iter()
        .zip(&arch.hidden)
        .map(|(v, &h)| Tensor::from_data(TensorData::new(v, [rows, h]), device))
        .collect()
}

/// Each hidden layer's mask values (0, or 1 / (1 - dropout)) for `batch` rows, row-major.
fn dropout_values(
    arch: &Architecture,
    params: &NnParams,
    step: usize,
    batch: usize,
) -> Vec<Vec<f32>> {
    let mut rng = crate::rng::Rng::new(mix(params.seed ^ 0xD80F, step as u64));
    let keep = (1.0 / (1.0 - arch.dropout)) as f32;
    let threshold = (arch.dropout * 65_536.0).round() as u64;
    arch.hidden
        .iter()
        .map(|&h| {
            let n = batch * h;
            let mut v = Vec::with_capacity(n + 3);
            while v.len() < n {
                let r = rng.next_u64();
                for k in 0..4 {
                    let draw = (r >> (16 * k)) & 0xFFFF;
                    v.push(if draw < threshold { 0.0 } else { keep });
                }
            }
            v.truncate(n);
            v
        })
        .collect()
}

/// Tensors of a block of rows on `device`.
pub fn tensors<B: Backend>(x: &Encoded, device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let n_cat = x.cat.len().checked_div(x.n_rows).unwrap_or(0);
    let n_num = x.num.len().checked_div(x.n_rows).unwrap_or(0);
    (
        Tensor::from_data(TensorData::new(x.cat.clone(), [x.n_rows, n_cat]), device),
        Tensor::from_data(TensorData::new(x.num.clone(), [x.n_rows, n_num]), device),
    )
}

/// Raw scores of every row of `x` with a trained network, in blocks of `block` rows.
pub fn raw_scores<B: Backend>(
    net: &Net<B>,
    x: &Encoded,
    block: usize,
    device: &B::Device,
) -> Result<Vec<f32>, NnError> {
    let mut out = Vec::with_capacity(x.n_rows);
    let block = block.max(1);
    let mut start = 0;
    while start < x.n_rows {
        let end = (start + block).min(x.n_rows);
        let (c, n) = tensors::<B>(&x.slice(start, end), device);
        let eta = net.forward(c, n).into_data();
        out.extend(
            eta.convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| NnError::Backend(format!("reading scores: {e:?}")))?,
        );
        start = end;
    }
    Ok(out)
}

/// Mean negative log-likelihood (all terms) of raw scores against targets.
pub fn mean_nll(head: Head, eta: &[f32], y: &[f32], alpha: f64) -> f64 {
    let s: f64 = eta
        .iter()
        .zip(y)
        .map(|(e, y)| loss::nll(head, *e as f64, *y as f64, alpha))
        .sum();
    s / eta.len().max(1) as f64
}

/// Checks targets for `head`; `first` is the number of the first row (for messages).
fn check_targets(head: Head, y: &[f32], what: &str, first: usize) -> Result<(), NnError> {
    if let Some((i, v)) = y
        .iter()
        .enumerate()
        .find(|(_, v)| !head.valid_target(**v as f64))
    {
        return Err(NnError::Data(format!(
            "{what} row {}: target {v} is not valid for the {} head",
            first + i,
            head.name()
        )));
    }
    Ok(())
}

/// What a pass over a run's data finds before any network trains: every block read and
/// checked against its declared rows, every target valid for the head, the training rows
/// and their targets' sum (the starting level). An ensemble's networks share one
/// ([`scan`] once, then [`fit_scanned`] for each), so streamed data is read once for it,
/// not once a network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scanned {
    /// Training rows (at least one: [`scan`] is the only maker).
    rows: usize,
    /// The training targets' sum.
    sum_y: f64,
}

/// One pass over `train` and `valid` ([`Scanned`]): a block that reads other than it
/// declares, a target the head cannot take, or an empty split is a typed error.
pub fn scan(
    arch: &Architecture,
    head: Head,
    train: &dyn Source,
    valid: Option<&dyn Source>,
) -> Result<Scanned, NnError> {
    arch.validate().map_err(NnError::Data)?;
    let widths = (arch.embeddings.len(), arch.n_num);
    let block_rows = train.block_rows();
    let mut sum_y = 0.0f64;
    let mut seen = 0;
    for i in 0..block_rows.len() {
        let b = read_block(train, &block_rows, i, widths, "training")?;
        check_targets(head, &b.y, "training", seen)?;
        sum_y += b.y.iter().map(|v| *v as f64).sum::<f64>();
        seen += b.y.len();
    }
    if seen == 0 {
        return Err(NnError::Data("the training split has no rows".into()));
    }
    if let Some(v) = valid {
        let rows = v.block_rows();
        let mut seen = 0;
        for i in 0..rows.len() {
            let b = read_block(v, &rows, i, widths, "validation")?;
            check_targets(head, &b.y, "validation", seen)?;
            seen += b.y.len();
        }
        if seen == 0 {
            return Err(NnError::Data("the validation split is empty".into()));
        }
    }
    Ok(Scanned { rows: seen, sum_y })
}

/// Trains a network on `train`, early-stopping on `valid`, on the autodiff backend `B`:
/// [`scan`], then [`fit_scanned`]. After each epoch `on_epoch` sees its log and answers
/// whether to go on: [`Next::Stop`] ends the run (a pruned trial) as early stopping does,
/// the best epoch's weights returned and `stopped_early` true.
pub fn fit<B: AutodiffBackend>(
    arch: Architecture,
    params: &NnParams,
    train: &dyn Source,
    valid: Option<&dyn Source>,
    device: &B::Device,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&EpochLog) -> Next,
) -> Result<Trained, NnError> {
    params.validate()?;
    let scanned = scan(&arch, params.head, train, valid)?;
    fit_scanned::<B>(arch, params, train, valid, &scanned, device, ctl, on_epoch)
}

/// Trains one network on data [`scan`] has passed (with the same architecture and head).
/// Blocks are still checked as they are read; training rows other than the scan's are
/// an error (the data changed in between).
#[allow(clippy::too_many_arguments)]
pub fn fit_scanned<B: AutodiffBackend>(
    arch: Architecture,
    params: &NnParams,
    train: &dyn Source,
    valid: Option<&dyn Source>,
    scanned: &Scanned,
    device: &B::Device,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&EpochLog) -> Next,
) -> Result<Trained, NnError> {
    params.validate()?;
    arch.validate().map_err(NnError::Data)?;
    let widths = (arch.embeddings.len(), arch.n_num);
    let block_rows = train.block_rows();
    let n: usize = block_rows.iter().sum();
    if n != scanned.rows {
        return Err(NnError::Data(format!(
            "the training split declares {n} rows; {} were scanned before training",
            scanned.rows
        )));
    }
    let sum_y = scanned.sum_y;
    let rec = BinBytesRecorder::<FullPrecisionSettings>::default();
    let cpu_backend = B::name(device).to_lowercase().contains("ndarray");
    let steps_per_epoch = n.div_ceil(params.batch_size);
    let total_steps = steps_per_epoch * params.max_epochs;

    // The output bias starts at the link of the mean target (the constant model's fit),
    // so the first epochs learn the features rather than the level.
    let mut w0 = arch.initial_weights(params.seed);
    let mean = sum_y / n as f64;
    let base = match params.head {
        Head::Poisson | Head::NegativeBinomial => mean.max(1e-6).ln(),
        Head::Logistic => {
            let p = mean.clamp(1e-6, 1.0 - 1e-6);
            (p / (1.0 - p)).ln()
        }
    };
    let k = w0.len() - 2; // out.bias, before log_alpha
    w0[k] = vec![base as f32];
    let mut model: Net<B> = weights::build(&arch, &w0, device)?;
    let opt_cfg = AdamWConfig::new()
        .with_beta_1(params.beta1 as f32)
        .with_beta_2(params.beta2 as f32)
        .with_epsilon(params.epsilon as f32)
        .with_weight_decay(params.weight_decay as f32);
    let mut optim = opt_cfg.init::<B, Net<B>>();
    let mut state = CheckpointState {
        params: params.clone(),
        arch: arch.clone(),
        train_rows: n,
        epochs_done: 0,
        best_epoch: 0,
        best_loss: None,
        history: Vec::new(),
        finished: false,
        stopped_early: false,
    };
    let mut best: Option<Net<B>> = None;
    let mut resumed_from = None;

    if let Some(path) = ctl.checkpoint.as_deref().filter(|p| p.exists()) {
        let (s, m, b, o) = read_checkpoint(path)?;
        if s.params != state.params || s.arch != state.arch || s.train_rows != n {
            return Err(NnError::Checkpoint {
                path: path.display().to_string(),
                reason: "it was written by a run with other parameters, features or data".into(),
            });
        }
        let ck = |e: burn::record::RecorderError| NnError::Checkpoint {
            path: path.display().to_string(),
            reason: format!("{e:?}"),
        };
        model = arch
            .init::<B>(params.seed, device)
            .load_record(rec.load(m, device).map_err(ck)?);
        best = Some(
            arch.init::<B>(params.seed, device)
                .load_record(rec.load(b, device).map_err(ck)?),
        );
        optim = optim.load_record(rec.load(o, device).map_err(ck)?);
        resumed_from = Some(s.epochs_done);
        state = s;
    }

    while !state.finished && state.epochs_done < params.max_epochs {
        let epoch = state.epochs_done;
        let t0 = std::time::Instant::now();
        let mut loss_sum: Option<Tensor<B::InnerBackend, 1>> = None;
        let mut lr = params.learning_rate;
        let windows = epoch_windows(&block_rows, params.shuffle_window, params.seed, epoch);
        let bs = params.batch_size;
        // Rows read but not yet in a full batch: they open the next window's sequence.
        let mut carry: Option<(Encoded, Vec<f32>)> = None;
        let mut k = 0;
        let (m, o) = std::thread::scope(|scope| -> Result<_, NnError> {
            let (mut model, mut optim) = (model, optim);
            // The next window is read (and decoded) while this one trains.
            let spawn = |w: usize| {
                let blocks = &windows[w];
                let rows = &block_rows;
                scope.spawn(move || read_window(train, rows, blocks, widths))
            };
            let mut next = Some(spawn(0));
            for w in 0..windows.len() {
                let blocks = next
                    .take()
                    .map(|h| h.join())
                    .ok_or_else(|| NnError::Backend("window reader missing".into()))?
                    .map_err(|_| NnError::Backend("the window reader panicked".into()))??;
                if w + 1 < windows.len() {
                    next = Some(spawn(w + 1));
                }
                let last = w + 1 == windows.len();
                // The window's rows: carried rows first, then its blocks' in the listed
                // order (one block, nothing carried: the block itself, not a copy).
                let c = carry.as_ref().map_or(0, |(x, _)| x.n_rows);
                let (xw, yw): (Cow<Encoded>, Cow<[f32]>) = if c == 0 && blocks.len() == 1 {
                    let b = blocks.into_iter().next().expect("one block");
                    (b.x, b.y)
                } else {
                    let (mut x, mut y) = carry.take().unwrap_or_default();
                    for b in &blocks {
                        x.append(&b.x);
                        y.extend_from_slice(&b.y);
                    }
                    (Cow::Owned(x), Cow::Owned(y))
                };
                let mut order: Vec<usize> = (0..c).collect();
                order.extend(
                    window_order(xw.n_rows - c, windows.len(), w, params.seed, epoch)
                        .into_iter()
                        .map(|r| r + c),
                );
                let full = if last {
                    order.len()
                } else {
                    order.len() / bs * bs
                };
                for rows in order[..full].chunks(bs) {
                    let step = epoch * steps_per_epoch + k;
                    k += 1;
                    lr = params.lr_at(step, total_steps);
                    // On the CPU the batch in shards of SHARD_ROWS rows, forward and
                    // backward side by side (rayon); gradients summed in shard order, so
                    // the bits do not depend on the thread count. A GPU takes the batch at
                    // once (parallel inside each kernel; shards one after another cost a
                    // launch of every kernel each), with the CPU's dropout masks.
                    let shards: Vec<(usize, &[usize])> = if cpu_backend {
                        rows.chunks(SHARD_ROWS).enumerate().collect()
                    } else {
                        vec![(0, rows)]
                    };
                    let batch_n = rows.len() as f64;
                    // Each shard differentiates its own copy of the weights (burn's
                    // autodiff graphs must not share leaves across threads); the parameter
                    // ids are the same, so the gradients line up.
                    let inner = model.valid();
                    let shard = |&(j, rs): &(usize, &[usize])| {
                        let model: Net<B> = if shards.len() == 1 {
                            model.clone()
                        } else {
                            Net::<B>::from_inner(inner.clone()).map(&mut RequireGrad)
                        };
                        let xb = xw.gather(rs);
                        let yb: Vec<f32> = rs.iter().map(|&r| yw[r]).collect();
                        let (c, x) = tensors::<B>(&xb, device);
                        let y = Tensor::<B, 1>::from_data(TensorData::new(yb, [rs.len()]), device);
                        let masks = dropout_masks::<B>(&arch, params, step, j, rs.len(), device);
                        let eta = model.forward_masked(c, x, &masks);
                        let l = loss::loss(params.head, eta, y, Some(model.log_alpha()));
                        let weighted = l.clone().inner() * (rs.len() as f64);
                        let g = (l * (rs.len() as f64 / batch_n)).backward();
                        (weighted, GradientsParams::from_grads(g, &model))
                    };
                    let parts: Vec<(Tensor<B::InnerBackend, 1>, GradientsParams)> = if cpu_backend {
                        shards.par_iter().map(shard).collect()
                    } else {
                        shards.iter().map(shard).collect()
                    };
                    let mut grad_parts = Vec::with_capacity(parts.len());
                    for (w, g) in parts {
                        loss_sum = Some(match loss_sum.take() {
                            Some(s) => s + w,
                            None => w,
                        });
                        grad_parts.push(g);
                    }
                    let grads = sum_grads::<B>(&model, grad_parts);
                    model = optim.step(lr, model, grads);
                }
                if full < order.len() {
                    let rest = &order[full..];
                    carry = Some((xw.gather(rest), rest.iter().map(|&r| yw[r]).collect()));
                }
            }
            Ok((model, optim))
        })?;
        (model, optim) = (m, o);
        let train_loss = loss_sum
            .map(|s| s.into_scalar().elem::<f64>() / n as f64)
            .unwrap_or(f64::NAN);
        if !train_loss.is_finite() {
            return Err(NnError::Diverged {
                epoch,
                reason: format!("training loss {train_loss} (lower the learning rate)"),
            });
        }
        let secs = t0.elapsed().as_secs_f64();
        let valid_nll = match &valid {
            Some(v) => {
                let inner = model.valid();
                let (eta, y) = source_scores(&inner, *v, widths, "validation", device)?;
                let alpha = alpha_of(&inner);
                Some(mean_nll(params.head, &eta, &y, alpha))
            }
            None => None,
        };
        let log = EpochLog {
            member: 0,
            epoch,
            train_loss,
            valid_nll,
            learning_rate: lr,
            samples_per_sec: n as f64 / secs.max(1e-9),
        };
        let next = on_epoch(&log);
        state.history.push(log);
        state.epochs_done = epoch + 1;
        let better = match (valid_nll, state.best_loss) {
            (Some(v), Some(b)) => v < b,
            (Some(_), None) => true,
            (None, _) => true,
        };
        if better {
            state.best_loss = valid_nll;
            state.best_epoch = epoch;
            best = Some(model.clone());
        }
        // Whether the run ends here (the checkpoint says so, so resuming it does not
        // train on past the end).
        let patience = params.early_stopping_rounds > 0
            && valid.is_some()
            && epoch - state.best_epoch >= params.early_stopping_rounds;
        let asked = next == Next::Stop;
        state.stopped_early = patience || asked;
        state.finished = state.stopped_early || state.epochs_done == params.max_epochs;
        if let Some(path) = &ctl.checkpoint {
            let ck = |e: burn::record::RecorderError| NnError::Checkpoint {
                path: path.display().to_string(),
                reason: format!("{e:?}"),
            };
            let m = rec.record(model.clone().into_record(), ()).map_err(ck)?;
            let b = match &best {
                Some(b) => rec.record(b.clone().into_record(), ()).map_err(ck)?,
                None => m.clone(),
            };
            let o = rec.record(optim.to_record(), ()).map_err(ck)?;
            write_checkpoint(path, &state, &m, &b, &o)?;
        }
        if ctl.stop_after_epochs == Some(state.epochs_done) && !state.finished {
            // As if the process were killed here: the checkpoint holds the run.
            state.stopped_early = true;
            break;
        }
    }
    state.finished |= state.epochs_done >= params.max_epochs;
    let stopped_early = state.stopped_early;
    let best = best.unwrap_or(model).valid();
    let mut w = weights::extract(&best)?;
    // The level, refitted: the output bias that makes the mean prediction on the
    // training rows equal the mean target (the bias's own likelihood equation, which
    // mini-batch steps leave a little off).
    let (eta, y) = source_scores(&best, train, widths, "training", device)?;
    let shift = level_shift(params.head, &eta, &y);
    let k = w.len() - 2;
    w[k][0] += shift as f32;
    Ok(Trained {
        weights: w,
        arch,
        best_epoch: state.best_epoch,
        history: state.history,
        stopped_early,
        resumed_from,
        finished: state.finished,
    })
}

/// The shift of the raw scores that makes the mean prediction equal the mean target:
/// `ln(Σy / Σmu)` for the count heads, Newton's method on `Σσ(eta + b) = Σy` for the
/// logistic head. 0 when it is not finite.
pub fn level_shift(head: Head, eta: &[f32], y: &[f32]) -> f64 {
    let sy: f64 = y.iter().map(|v| *v as f64).sum();
    let b = match head {
        Head::Poisson | Head::NegativeBinomial => {
            let sm: f64 = eta.iter().map(|e| head.response(*e as f64)).sum();
            (sy / sm).ln()
        }
        Head::Logistic => {
            let mut b = 0.0;
            for _ in 0..30 {
                let (mut f, mut d) = (-sy, 0.0);
                for e in eta {
                    let p = 1.0 / (1.0 + (-(*e as f64 + b)).exp());
                    f += p;
                    d += p * (1.0 - p);
                }
                if d <= 0.0 {
                    break;
                }
                let step = (f / d).clamp(-1.0, 1.0);
                b -= step;
                if step.abs() < 1e-12 {
                    break;
                }
            }
            b
        }
    };
    if b.is_finite() {
        b
    } else {
        0.0
    }
}

/// The mean of the members' responses (mean count or probability) at row `i`, from each
/// member's raw scores.
pub fn mean_response(head: Head, etas: &[Vec<f32>], i: usize) -> f64 {
    etas.iter().map(|e| head.response(e[i] as f64)).sum::<f64>() / etas.len() as f64
}

/// The raw scores of an ensemble's mean response ([`mean_response`], then
/// [`Head::link`]). One member: its own scores, unchanged.
pub fn combine(head: Head, etas: &[Vec<f32>]) -> Vec<f32> {
    match etas {
        [one] => one.clone(),
        _ => {
            let n = etas.first().map_or(0, Vec::len);
            (0..n)
                .map(|i| head.link(mean_response(head, etas, i)) as f32)
                .collect()
        }
    }
}

/// The mean negative log-likelihood on `src` of the networks `members` of `arch` as a
/// package scores them (mean response; the negative binomial's `alpha` the members'
/// mean), on the CPU.
pub fn ensemble_nll(
    arch: &Architecture,
    members: &[&Weights],
    src: &dyn Source,
    what: &str,
) -> Result<f64, NnError> {
    let d = burn::backend::ndarray::NdArrayDevice::Cpu;
    let widths = (arch.embeddings.len(), arch.n_num);
    let (mut etas, mut y, mut alpha) = (Vec::with_capacity(members.len()), Vec::new(), 0.0);
    for w in members {
        let net = weights::build::<crate::Cpu>(arch, w, &d)?;
        let (e, t) = source_scores(&net, src, widths, what, &d)?;
        etas.push(e);
        y = t;
        alpha += alpha_of(&net);
    }
    if etas.is_empty() {
        return Err(NnError::Data("an ensemble of no networks".into()));
    }
    let alpha = alpha / etas.len() as f64;
    Ok(mean_nll(arch.head, &combine(arch.head, &etas), &y, alpha))
}

/// The negative binomial dispersion `alpha` of a network.
pub fn alpha_of<B: Backend>(net: &Net<B>) -> f64 {
    let v: f64 = net.log_alpha().into_scalar().elem();
    v.clamp(-20.0, 10.0).exp()
}

const CHECKPOINT_KIND: &str = "nn_checkpoint";

fn write_checkpoint(
    path: &Path,
    state: &CheckpointState,
    m: &[u8],
    b: &[u8],
    o: &[u8],
) -> Result<(), NnError> {
    let text = serde_json::to_string(&serde_json::json!({
        "format_version": contrail_gbdt::package::FORMAT_VERSION,
        "model_kind": CHECKPOINT_KIND,
        "state": state,
    }))
    .map_err(|e| NnError::Backend(format!("checkpoint state: {e}")))?;
    let mut w = contrail_gbdt::package::Writer::default();
    w.u8("model", m.iter().copied());
    w.u8("best", b.iter().copied());
    w.u8("optimizer", o.iter().copied());
    let bytes = contrail_gbdt::package::encode(w, &text)?;
    // Written beside and renamed over, so a crash mid-write leaves the previous one.
    let tmp = path.with_extension("tmp");
    let io = |source| NnError::Io {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[allow(clippy::type_complexity)]
fn read_checkpoint(path: &Path) -> Result<(CheckpointState, Vec<u8>, Vec<u8>, Vec<u8>), NnError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NnError::Io {
        path: p.clone(),
        source,
    })?;
    let (text, r) = contrail_gbdt::package::decode(&bytes, &p)?;
    contrail_gbdt::package::check_kind(&text, &p, Some(CHECKPOINT_KIND))?;
    #[derive(Deserialize)]
    struct Doc {
        state: CheckpointState,
    }
    let d: Doc = serde_json::from_str(&text).map_err(|e| NnError::Checkpoint {
        path: p.clone(),
        reason: format!("state: {e}"),
    })?;
    Ok((d.state, r.u8("model")?, r.u8("best")?, r.u8("optimizer")?))
}
