//! Where trees are trained: `cpu`, `wgpu` or `cuda[:N]`.
//!
//! The bins are computed on the host once and uploaded (the row-major matrix the
//! histogram pass reads, and each usable feature's column for partitions and for walking
//! trees); the device keeps the leaf of every row. The growth loop is the CPU's
//! ([`crate::train::grow_tree_on`]): it asks the device for histograms of leaves and for
//! partitions by splits, and gets back one histogram per leaf and one count per split.
//! Split finding (numeric, categorical, monotone) runs on the host on those histograms,
//! so a split is chosen by the same code from the same integers. Depth-wise growth asks
//! for a whole level at a time.
//!
//! Two modes (the `deterministic` parameter):
//! - **deterministic**: gradients are computed on the host in `f64`, quantised and
//!   uploaded for every tree; after a tree the leaf of every row comes back for the exact
//!   leaf values and the score update. The trees are the CPU's, bit for bit.
//! - **device gradients** (the default): scores (32.32 fixed point), labels and weights
//!   live on the device; a kernel computes each row's gradient pair in `f32`, the largest
//!   `|gradient|` and hessian come back (two words) to choose the quantisation scales, and
//!   a second kernel quantises in place. Leaf values come from the leaves' quantised sums,
//!   and each tree is walked on the device to add it to the scores. Nothing of a row
//!   crosses the bus; the model equals the CPU's to rounding (checked by
//!   [`crate::conformance::device_gradients`]). Absolute and quantile losses, whose leaves
//!   are renewed from the rows' residuals, and labels beyond `2^30` use the deterministic
//!   path.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::GbdtError;

/// A training device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// The best wgpu adapter (a GPU, else a software one such as lavapipe).
    Wgpu,
    /// CUDA GPU number N.
    Cuda(usize),
}

impl FromStr for Device {
    type Err = GbdtError;
    fn from_str(s: &str) -> Result<Self, GbdtError> {
        let bad = || GbdtError::Param {
            name: "device",
            reason: format!("`{s}`: expected cpu, wgpu, cuda or cuda:N"),
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "wgpu" => Ok(Device::Wgpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(Device::Cuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Wgpu => write!(f, "wgpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Device {
    /// Opens the device and describes it (name, memory), or says why it cannot be used:
    /// a back end left out of this build, or no such device on this machine.
    pub fn describe(&self) -> Result<String, GbdtError> {
        match self {
            Device::Cpu => Ok(format!("cpu: {} threads", rayon::current_num_threads())),
            _ => open_info(self),
        }
    }
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub(crate) use none::DeviceTrainer;
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
pub use none::{histogram, histogram_pass, predict_raw};

/// Nanoseconds and counts of [`Profile`]'s phases.
static PROFILE: [AtomicU64; 13] = [const { AtomicU64::new(0) }; 13];

/// Adds the time since `since` to phase `i` of [`PROFILE`].
pub(crate) fn add(i: usize, since: Instant) {
    PROFILE[i].fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
}

/// Phases of [`PROFILE`] the boosting loop times on the host when a device grows the trees.
pub(crate) const HOST_GRADIENTS: usize = 6;
pub(crate) const HOST_LEAVES: usize = 7;
/// The prediction kernel's launch to the sums on the host ([`predict_raw`]).
pub(crate) const PREDICT: usize = 8;
/// Gradients on the device: the kernel, the maxima read back, the quantisation.
pub(crate) const DEVICE_GRADIENTS: usize = 9;
/// Scores on the device: the tree walked for every row, added to its score.
pub(crate) const DEVICE_SCORES: usize = 10;
/// Host: histograms as they came back made into the features' (bundles marginalised).
pub(crate) const HOST_UNPACK: usize = 11;
/// Host: the growth loop's split search and histogram subtraction (CPU training too).
pub(crate) const HOST_SPLITS: usize = 12;

/// Where device training spent its time so far.
pub fn profile() -> Profile {
    let s = |i: usize| PROFILE[i].load(Relaxed) as f64 * 1e-9;
    Profile {
        upload: s(0),
        histograms: s(1),
        histogram_passes: PROFILE[4].load(Relaxed),
        partitions: s(2),
        partition_passes: PROFILE[5].load(Relaxed),
        readback: s(3),
        host_gradients: s(HOST_GRADIENTS),
        host_leaves: s(HOST_LEAVES),
        predict: s(PREDICT),
        device_gradients: s(DEVICE_GRADIENTS),
        device_scores: s(DEVICE_SCORES),
        host_unpack: s(HOST_UNPACK),
        host_splits: s(HOST_SPLITS),
    }
}

/// Where device training spent its time (seconds, summed over every tree since the
/// process started): uploads of gradients, histogram passes (launch to histograms on the
/// host), partition passes (launch to counts on the host), the leaf of every row read back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Profile {
    pub upload: f64,
    pub histograms: f64,
    pub histogram_passes: u64,
    pub partitions: f64,
    pub partition_passes: u64,
    pub readback: f64,
    /// Host: gradients, hessians and their quantisation.
    pub host_gradients: f64,
    /// Host: exact leaf sums and values, the score update.
    pub host_leaves: f64,
    /// Prediction: the kernel and the read-back of its sums.
    pub predict: f64,
    /// Device: gradients, their maxima read back, quantisation (not `deterministic`).
    pub device_gradients: f64,
    /// Device: each tree added to the scores (not `deterministic`).
    pub device_scores: f64,
    /// Host: histograms unpacked (bundles marginalised) after they came back.
    pub host_unpack: f64,
    /// Host: split search and histogram subtraction in the growth loop.
    pub host_splits: f64,
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn open_info(d: &Device) -> Result<String, GbdtError> {
    Err(not_compiled(d))
}

#[allow(dead_code)]
fn not_compiled(d: &Device) -> GbdtError {
    GbdtError::Device(contrail_kernels::AccelError::NotCompiled {
        backend: match d {
            Device::Cuda(_) => "cuda",
            _ => "wgpu",
        },
    })
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
mod none {
    use super::*;
    use crate::bin::Binned;
    use crate::train::{Grown, Params};

    /// The packed histogram of `rows` on `device`: no device in this build.
    pub fn histogram(
        device: &Device,
        _: &Binned,
        _: &[usize],
        _: &[u32],
        _: &[u64],
    ) -> Result<Vec<u64>, GbdtError> {
        Err(not_compiled(device))
    }

    /// Raw predictions on `device`: no device in this build.
    pub fn predict_raw(
        device: &Device,
        _: &crate::Booster,
        _: &[f64],
        _: Option<usize>,
    ) -> Result<Vec<f64>, GbdtError> {
        Err(not_compiled(device))
    }

    /// Times a histogram pass over every row on `device`: no device in this build.
    pub fn histogram_pass(device: &Device, _: &Binned, _: usize) -> Result<(f64, u64), GbdtError> {
        Err(not_compiled(device))
    }

    /// No device back end in this build: opening one says so.
    pub(crate) enum DeviceTrainer {}

    impl DeviceTrainer {
        pub(crate) fn new(d: &Device, _: &Binned, _: usize) -> Result<Self, GbdtError> {
            Err(not_compiled(d))
        }
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn grow(
            &mut self,
            _: &Binned,
            _: &Params,
            _: &[usize],
            _: Option<&[u32]>,
            _: Option<&[u64]>,
            _: f64,
            _: f64,
            _: Option<&mut [u32]>,
        ) -> Result<Grown, GbdtError> {
            match *self {}
        }
        pub(crate) fn start_scores(
            &mut self,
            _: &crate::objective::Objective,
            _: &[f64],
            _: Option<&[f64]>,
            _: f64,
        ) -> Result<bool, GbdtError> {
            match *self {}
        }
        pub(crate) fn gradients(&mut self) -> Result<(f64, f64), GbdtError> {
            match *self {}
        }
        pub(crate) fn add_tree(
            &mut self,
            _: &Binned,
            _: &crate::tree::Tree,
        ) -> Result<(), GbdtError> {
            match *self {}
        }
        pub(crate) fn scores(&self) -> Result<Vec<f64>, GbdtError> {
            match *self {}
        }
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(crate) use gpu::DeviceTrainer;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use gpu::{histogram, histogram_pass, predict_raw};

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn open_info(d: &Device) -> Result<String, GbdtError> {
    Ok(open(d)?.info.to_string())
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn open(d: &Device) -> Result<contrail_kernels::Accel, GbdtError> {
    use contrail_kernels::Accel;
    match d {
        Device::Cpu => unreachable!("the CPU is not opened as a device"),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => Ok(Accel::wgpu()?),
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Ok(Accel::cuda(*n)?),
        #[allow(unreachable_patterns)]
        _ => Err(not_compiled(d)),
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use super::*;
    use super::{add, PROFILE};
    use crate::bin::{Binned, Bins};
    use crate::objective::Objective;
    use crate::train::{goes_left, grow_tree_on, Grown, LeafStore, Params, Split};
    use crate::tree::Tree;
    use contrail_kernels::kernels::SPLIT_WORDS;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Instant;

    /// Times `reps` histogram passes over every row of `data` on `device` (after one
    /// untimed pass): the median seconds a pass, launch to histogram on the host, and the
    /// bytes a pass reads (each row's bins, gradient pair and leaf).
    pub fn histogram_pass(
        device: &Device,
        data: &Binned,
        reps: usize,
    ) -> Result<(f64, u64), GbdtError> {
        let mut t = DeviceTrainer::new(device, data, 1)?;
        let gh: Vec<u64> = (0..data.n_rows as u64)
            .map(|i| crate::train::pack((i % 7) as i64 - 3, (i % 5) as i64))
            .collect();
        t.begin(None, Some(&gh))?;
        let feats: Vec<usize> = (0..data.n_features)
            .filter(|&f| data.rows.group_of[f].is_some())
            .collect();
        let mut store = DeviceLeaves::new(&t, data, &feats, data.n_rows);
        store.histograms(&[0])?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) {
            let s = Instant::now();
            store.histograms(&[0])?;
            times.push(s.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let words = data.rows.width().div_ceil(4).max(1) as u64;
        let bytes = data.n_rows as u64 * (4 * words + 8 + 4);
        Ok((times[times.len() / 2], bytes))
    }
    use contrail_kernels::{Accel, AccelError, Buf};
    use rayon::prelude::*;

    /// Training state on a device for one dataset: the uploaded bins, and per tree the
    /// gradients and the leaf of every row.
    pub(crate) struct DeviceTrainer {
        accel: Accel,
        n_rows: usize,
        matrix: Buf,
        width: u32,
        columns: Buf,
        col_words: u32,
        /// The uploaded column of each feature (`u32::MAX`: not uploaded).
        col_of_feature: Vec<u32>,
        col_offset: Buf,
        hist_len: usize,
        leaf_of: Buf,
        /// The packed gradient pairs of the current tree (two words a row).
        gh: Buf,
        max_leaves: usize,
        /// Scores, labels and weights, when the device computes the gradients.
        scores: Option<Scores>,
    }

    /// What the device needs to compute gradients itself: each row's score in 32.32 fixed
    /// point (integer part, fraction), label and weight, the objective's kernel code and
    /// parameter, and a buffer for a tree's outputs.
    struct Scores {
        int: Buf,
        frac: Buf,
        label: Buf,
        weight: Option<Buf>,
        delta: Buf,
        objective: u32,
        a: f32,
    }

    /// The objective as [`contrail_kernels::kernels::gradients`] computes it (code and
    /// parameter); `None` for those whose leaf values are renewed from the rows' residuals
    /// on the host (absolute and quantile losses).
    fn kernel_objective(obj: &Objective) -> Option<(u32, f32)> {
        use contrail_kernels::kernels::*;
        Some(match *obj {
            Objective::Regression => (OBJ_SQUARED, 0.0),
            Objective::Huber { alpha } => (OBJ_HUBER, alpha as f32),
            Objective::Binary => (OBJ_BINARY, 0.0),
            Objective::Poisson => (OBJ_POISSON, crate::objective::POISSON_MAX_DELTA as f32),
            Objective::Gamma => (OBJ_GAMMA, 0.0),
            Objective::Tweedie { rho } => (OBJ_TWEEDIE, rho as f32),
            Objective::RegressionL1 | Objective::Quantile { .. } => return None,
        })
    }

    /// Scores beyond this (in absolute value) are not kept on the device (32.32 fixed
    /// point holds up to 2^31; the margin is for the trees' steps).
    const SCORE_LIMIT: f64 = (1u64 << 30) as f64;

    /// The forest table [`contrail_kernels::kernels::predict_binned`] walks, for `trees`
    /// whose feature `f` is column `column(f)` of the bins and has its missing values in
    /// bin `missing(f)`: the table, the leaf values in tree order, and where the nodes
    /// start.
    fn forest_table(
        trees: &[&Tree],
        column: impl Fn(usize) -> u32,
        missing: impl Fn(usize) -> u32,
    ) -> (Vec<u32>, Vec<f32>, usize) {
        use contrail_kernels::kernels::{LEAF_BIT, NODE_WORDS, TREE_WORDS};
        let n_nodes: usize = trees.iter().map(|t| t.n_nodes()).sum();
        let node_base = TREE_WORDS * trees.len();
        let cat_base = node_base + NODE_WORDS * n_nodes;
        let mut table = vec![0u32; cat_base];
        let mut cats: Vec<u32> = Vec::new();
        let mut leaf_value: Vec<f32> = Vec::new();
        let (mut first, mut leaf0) = (0usize, 0usize);
        for (ti, t) in trees.iter().enumerate() {
            table[TREE_WORDS * ti] = first as u32;
            table[TREE_WORDS * ti + 1] = leaf0 as u32;
            table[TREE_WORDS * ti + 2] = t.n_nodes() as u32;
            let child = |c: i32| {
                if c < 0 {
                    LEAF_BIT | !c as u32
                } else {
                    c as u32
                }
            };
            for k in 0..t.n_nodes() {
                let f = t.feature[k] as usize;
                let w = node_base + NODE_WORDS * (first + k);
                table[w] = column(f) | (t.default_left[k] as u32) << 31;
                table[w + 1] = t.threshold_bin[k];
                table[w + 2] = child(t.left[k]);
                table[w + 3] = child(t.right[k]);
                table[w + 4] = match t.cat_index[k] {
                    ci if ci >= 0 => {
                        let at = cat_base + cats.len();
                        let bits = &t.cat_bitsets[ci as usize];
                        cats.extend((0..8).map(|i| bits.get(i).copied().unwrap_or(0)));
                        at as u32
                    }
                    _ => u32::MAX,
                };
                table[w + 5] = missing(f);
            }
            leaf_value.extend(t.leaf_value.iter().map(|v| *v as f32));
            first += t.n_nodes();
            leaf0 += t.n_leaves();
        }
        table.extend(cats);
        (table, leaf_value, node_base)
    }

    /// Bytes a piece of the gradients' upload ([`Accel::write_u64`]): 1 MiB, or
    /// `CONTRAIL_UPLOAD_CHUNK_MIB`. On an H200 (docs/gpu-performance.md, v3), 80 MB took
    /// 99 ms as one vector and 30 / 45 / 61 ms in pieces of 1 / 8 / 32 MiB.
    fn upload_chunk() -> usize {
        std::env::var("CONTRAIL_UPLOAD_CHUNK_MIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1)
            << 20
    }

    impl DeviceTrainer {
        /// Opens `device` and uploads the bins of `data`'s row matrix (the usable
        /// features). Data the device cannot hold is an error here, before training.
        pub(crate) fn new(
            device: &Device,
            data: &Binned,
            max_leaves: usize,
        ) -> Result<Self, GbdtError> {
            let accel = open(device)?;
            let backend = accel.info.backend;
            let m = &data.rows;
            let n = data.n_rows;
            let bytes = match &m.bins {
                Bins::U8(b) => b,
                Bins::U16(_) => {
                    return Err(AccelError::Unsupported {
                        backend,
                        reason: "more than 256 bins in a column (max_bin above 255) needs \
                                 16-bit bins, which the device path does not take yet"
                            .into(),
                    }
                    .into())
                }
            };
            let width = m.width();
            let words = width.div_ceil(4).max(1);
            let feats: Vec<usize> = (0..data.n_features)
                .filter(|&f| m.group_of[f].is_some())
                .collect();
            if let Some(&f) = feats
                .iter()
                .find(|&&f| data.offsets[f + 1] - data.offsets[f] > 256)
            {
                return Err(AccelError::Unsupported {
                    backend,
                    reason: format!("feature {f} has more than 256 bins"),
                }
                .into());
            }
            let col_words = n.div_ceil(4);
            // Everything the device holds, checked before anything is uploaded: the bins
            // (matrix and columns), gradient pairs (2 words a row), the leaf of each row,
            // with device gradients the scores (2), labels, weights and a tree's outputs,
            // and the rows listed by leaf for a histogram pass.
            let need = (n * words + feats.len() * col_words + (2 + 1 + 5 + 1) * n) as u64 * 4;
            if let Some(mem) = accel.info.memory_bytes {
                if need > mem {
                    return Err(AccelError::TooLarge {
                        backend,
                        what: format!("{n} rows × {} columns", feats.len()),
                        need,
                        limit: mem,
                    }
                    .into());
                }
            }
            accel.check_size("the bin matrix", n * words)?;
            accel.check_size("the feature columns", feats.len() * col_words)?;
            accel.check_size("the gradients", 2 * n)?;
            let mut packed = vec![0u32; n * words];
            if width > 0 {
                packed
                    .par_chunks_mut(words)
                    .zip(bytes.par_chunks(width))
                    .for_each(|(w, row)| {
                        for (c, &b) in row.iter().enumerate() {
                            w[c / 4] |= (b as u32) << ((c % 4) * 8);
                        }
                    });
            }
            let matrix = accel.upload_pieces("the bin matrix", &packed, upload_chunk())?;
            drop(packed);
            let mut cols = vec![0u32; feats.len().max(1) * col_words.max(1)];
            let mut col_of_feature = vec![u32::MAX; data.n_features];
            for (k, &f) in feats.iter().enumerate() {
                col_of_feature[f] = k as u32;
                let src = &data.columns[f];
                cols[k * col_words..(k + 1) * col_words]
                    .par_iter_mut()
                    .enumerate()
                    .for_each(|(i, w)| {
                        for j in 0..4 {
                            if let Some(&b) = src.get(4 * i + j) {
                                *w |= (b as u32) << (8 * j);
                            }
                        }
                    });
            }
            let columns = accel.upload_pieces("the feature columns", &cols, upload_chunk())?;
            drop(cols);
            let offsets: Vec<u32> = m.groups.iter().map(|g| g.offset as u32).collect();
            let col_offset = accel.upload("column offsets", &offsets)?;
            let leaf_of = accel.filled("leaf of each row", n, 0)?;
            let gh = accel.filled("the gradients", 2 * n, 0)?;
            Ok(DeviceTrainer {
                gh,
                accel,
                n_rows: n,
                matrix,
                width: width as u32,
                columns,
                col_words: col_words as u32,
                col_of_feature,
                col_offset,
                hist_len: m.hist_len,
                leaf_of,
                max_leaves,
                scores: None,
            })
        }

        /// Keeps every row's score (from `init`), label and weight on the device, so that
        /// [`DeviceTrainer::gradients`] computes the gradients there and
        /// [`DeviceTrainer::add_tree`] the scores. False (nothing kept) for objectives whose
        /// leaves are renewed on the host, and for labels beyond what the device's scores
        /// hold; the boosting loop then computes gradients on the host.
        pub(crate) fn start_scores(
            &mut self,
            obj: &Objective,
            labels: &[f64],
            weights: Option<&[f64]>,
            init: f64,
        ) -> Result<bool, GbdtError> {
            let Some((objective, a)) = kernel_objective(obj) else {
                return Ok(false);
            };
            let n = self.n_rows;
            let big = labels.par_iter().any(|y| !(y.abs() < SCORE_LIMIT));
            if big || !(init.abs() < SCORE_LIMIT) || labels.len() != n {
                return Ok(false);
            }
            let whole = init.floor();
            let frac = ((init - whole) * 4294967296.0).floor().min(4294967295.0) as u32;
            let acc = &self.accel;
            // `f32` bits, uploaded in pieces as the bins are.
            let to_f32 = |v: &[f64]| {
                v.par_iter()
                    .map(|x| (*x as f32).to_bits())
                    .collect::<Vec<u32>>()
            };
            self.scores = Some(Scores {
                int: acc.filled("scores", n, whole as i32 as u32)?,
                frac: acc.filled("scores", n, frac)?,
                label: acc.upload_pieces("labels", &to_f32(labels), upload_chunk())?,
                weight: match weights {
                    Some(w) => Some(acc.upload_pieces("weights", &to_f32(w), upload_chunk())?),
                    None => None,
                },
                delta: acc.filled("a tree's outputs", n, 0)?,
                objective,
                a,
            });
            Ok(true)
        }

        /// Computes every row's gradient pair on the device from its score and quantises
        /// it in place (the scales from the largest `|gradient|` and hessian, so that no
        /// sum over the rows overflows its field, as [`crate::train::quantise_packed`]
        /// does from their sums); returns the scales.
        pub(crate) fn gradients(&mut self) -> Result<(f64, f64), GbdtError> {
            let start = Instant::now();
            let sc = self.scores.as_ref().ok_or_else(|| {
                GbdtError::Device(AccelError::Device {
                    backend: self.accel.info.backend,
                    reason: "gradients asked for before the scores were kept".into(),
                })
            })?;
            let n = self.n_rows;
            let (mg, mh) = self.accel.gradients(
                sc.objective,
                sc.a,
                &sc.int,
                &sc.frac,
                &sc.label,
                sc.weight.as_ref(),
                &self.gh,
                n,
            )?;
            if !mg.is_finite() || !mh.is_finite() || mh < 0.0 {
                return Err(GbdtError::Data {
                    what: "training data".into(),
                    reason: format!(
                        "the device's gradients are not finite or a hessian is negative \
                         (largest |gradient| {mg}, hessian {mh}): negative weights, or scores \
                         that diverged (a smaller learning_rate, or `deterministic`, which \
                         computes gradients in f64 on the host, may help)"
                    ),
                });
            }
            let sg = crate::train::scale_for(n as f64 * mg as f64, n, 63 - crate::train::H_BITS)?;
            let sh = crate::train::scale_for(n as f64 * mh as f64, n, crate::train::H_BITS)?;
            self.accel.quantise_pairs(&self.gh, n, sg as f32, sh as f32);
            add(DEVICE_GRADIENTS, start);
            Ok((sg, sh))
        }

        /// Adds `tree`'s output to every row's score on the device (each row walks the
        /// tree on its bins, so rows out of the tree's sample are scored too).
        pub(crate) fn add_tree(&mut self, data: &Binned, tree: &Tree) -> Result<(), GbdtError> {
            let start = Instant::now();
            let Some(sc) = self.scores.as_ref() else {
                return Ok(());
            };
            if tree
                .feature
                .iter()
                .any(|&f| self.col_of_feature[f as usize] == u32::MAX)
            {
                return Err(GbdtError::Device(AccelError::Device {
                    backend: self.accel.info.backend,
                    reason: "a tree splits on a feature the device does not hold".into(),
                }));
            }
            let (table, leaf_value, node_base) = forest_table(
                &[tree],
                |f| self.col_of_feature[f],
                |f| data.mappers[f].missing_bin() as u32,
            );
            let a = &self.accel;
            let table = a.upload("the tree", &table)?;
            a.predict_into(
                &self.columns,
                self.col_words,
                &table,
                &leaf_value,
                self.n_rows,
                1,
                node_base as u32,
                &sc.delta,
            )?;
            a.add_scores(&sc.delta, &sc.frac, &sc.int, self.n_rows);
            add(DEVICE_SCORES, start);
            Ok(())
        }

        /// The rows' scores on the device.
        pub(crate) fn scores(&self) -> Result<Vec<f64>, GbdtError> {
            let Some(sc) = self.scores.as_ref() else {
                return Ok(Vec::new());
            };
            let s = Instant::now();
            let int = self.accel.read(&sc.int)?;
            let frac = self.accel.read(&sc.frac)?;
            add(3, s);
            Ok(int
                .par_iter()
                .zip(frac.par_iter())
                .take(self.n_rows)
                .map(|(i, f)| *i as i32 as f64 + *f as f64 / 4294967296.0)
                .collect())
        }

        /// Grows one tree on the rows of `bag` (all rows: `None`) and writes the leaf of
        /// every row in the sample to `leaf_of` (others: `u32::MAX`).
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn grow(
            &mut self,
            data: &Binned,
            p: &Params,
            feats: &[usize],
            bag: Option<&[u32]>,
            gh: Option<&[u64]>,
            sg: f64,
            sh: f64,
            leaf_of: Option<&mut [u32]>,
        ) -> Result<Grown, GbdtError> {
            let n = self.n_rows;
            let s = Instant::now();
            let n_sample = self.begin(bag, gh)?;
            add(0, s);
            let mut store = DeviceLeaves::new(self, data, feats, n_sample);
            let grown = grow_tree_on(data, p, feats, n_sample, sg, sh, &mut store)?;
            if let Some(leaf_of) = leaf_of {
                let s = Instant::now();
                self.accel.read_into(&self.leaf_of, &mut leaf_of[..n])?;
                add(3, s);
            }
            Ok(grown)
        }

        /// Uploads a tree's packed gradients (`None`: the device computed them) and puts
        /// the rows of `bag` (all: `None`) in leaf 0 and the others in no leaf; returns the
        /// rows in the sample.
        fn begin(&mut self, bag: Option<&[u32]>, gh: Option<&[u64]>) -> Result<usize, GbdtError> {
            let n = self.n_rows;
            // A packed u64 is (gradient << 32) + hessian: its low word is the hessian.
            if let Some(gh) = gh {
                self.accel.write_u64(&self.gh, gh, upload_chunk())?;
            }
            let n_sample = match bag {
                None => {
                    self.accel.fill(&self.leaf_of, 0);
                    n
                }
                Some(rows) => {
                    let mut init = vec![u32::MAX; n];
                    for &r in rows {
                        init[r as usize] = 0;
                    }
                    self.leaf_of = self.accel.upload("leaf of each row", &init)?;
                    rows.len()
                }
            };
            Ok(n_sample)
        }
    }

    /// The packed histogram of `rows` over `feats` computed on `device` (what
    /// [`crate::train::build_histogram`] computes on the CPU).
    pub fn histogram(
        device: &Device,
        data: &Binned,
        feats: &[usize],
        rows: &[u32],
        gh: &[u64],
    ) -> Result<Vec<u64>, GbdtError> {
        let mut t = DeviceTrainer::new(device, data, 1)?;
        let n_sample = t.begin(Some(rows), Some(gh))?;
        let mut store = DeviceLeaves::new(&t, data, feats, n_sample);
        Ok(store.histograms(&[0])?.pop().unwrap_or_default())
    }

    /// Raw (link-scale) predictions of the first `n_trees` trees of `b` (all: `None`) for
    /// the rows of `x` (as [`crate::Booster::prepare`] lays them out) on `device`.
    ///
    /// The host bins each value with the model's bin edges (a value goes left of a numeric
    /// split exactly when its bin is at most the split's bin, so the walk on bins reaches
    /// the leaf the walk on values does); the device walks every tree for every row and
    /// adds the leaf values in `f32`; the initial score is added here in `f64`. The result
    /// equals the CPU's to `f32` rounding of the sum (a few parts in 10⁷).
    pub fn predict_raw(
        device: &Device,
        b: &crate::Booster,
        x: &[f64],
        n_trees: Option<usize>,
    ) -> Result<Vec<f64>, GbdtError> {
        let accel = open(device)?;
        let backend = accel.info.backend;
        let nf = b.n_features().max(1);
        let n = x.len() / nf;
        if let Some(f) = b.mappers.iter().position(|m| m.n_bins() > 256) {
            return Err(AccelError::Unsupported {
                backend,
                reason: format!(
                    "feature `{}` has {} bins; the device takes at most 256",
                    b.feature_names[f],
                    b.mappers[f].n_bins()
                ),
            }
            .into());
        }
        if n == 0 {
            // No rows, no launch (a grid of no blocks is not a launch CUDA takes).
            return Ok(Vec::new());
        }
        let trees = &b.trees[..n_trees.unwrap_or(b.trees.len()).min(b.trees.len())];
        // Bins, feature-major, four rows a word.
        let col_words = n.div_ceil(4).max(1);
        let mut bins = vec![0u32; nf * col_words];
        bins.par_chunks_mut(col_words)
            .enumerate()
            .for_each(|(f, col)| {
                let m = &b.mappers[f];
                for (i, w) in col.iter_mut().enumerate() {
                    for j in 0..4 {
                        let r = 4 * i + j;
                        if r >= n {
                            break;
                        }
                        let v = x[r * nf + f];
                        let bin = match m {
                            crate::bin::BinMapper::Numeric { upper } => {
                                crate::bin::BinMapper::bin_value(upper, v)
                            }
                            _ if v.is_nan() => m.missing_bin(),
                            _ => (v as usize).min(m.missing_bin()),
                        };
                        *w |= (bin as u32) << (8 * j);
                    }
                }
            });
        // The forest as one table: tree headers, nodes, categorical bit tables.
        let refs: Vec<&Tree> = trees.iter().collect();
        let (table, leaf_value, node_base) = forest_table(
            &refs,
            |f| f as u32,
            |f| {
                b.mappers
                    .get(f)
                    .map_or(u32::MAX, |m| m.missing_bin() as u32)
            },
        );
        let bins = accel.upload("the bins", &bins)?;
        let table_buf = accel.upload("the trees", &table)?;
        accel.sync()?;
        let start = Instant::now();
        let sums = accel.predict(
            &bins,
            col_words as u32,
            &table_buf,
            &leaf_value,
            n,
            trees.len() as u32,
            node_base as u32,
        )?;
        add(PREDICT, start);
        Ok(sums.into_iter().map(|s| b.init_score + s as f64).collect())
    }

    impl<'a> DeviceLeaves<'a> {
        /// The store of a tree whose `n_sample` rows are all in leaf 0.
        fn new(t: &'a DeviceTrainer, data: &'a Binned, feats: &[usize], n_sample: usize) -> Self {
            let groups = data.rows.groups_of(feats);
            let mut skip = vec![true; data.rows.width()];
            for &g in &groups {
                skip[g] = false;
            }
            let mut rows = vec![0u32; t.max_leaves.max(1)];
            rows[0] = n_sample as u32;
            DeviceLeaves {
                t,
                data,
                groups,
                skip,
                rows,
            }
        }
    }

    struct DeviceLeaves<'a> {
        t: &'a DeviceTrainer,
        data: &'a Binned,
        /// The row-matrix columns of the tree's features.
        groups: Vec<usize>,
        /// Columns whose bins the CPU would not have added (features not in the tree).
        skip: Vec<bool>,
        /// The rows in each leaf (from the partitions' counts).
        rows: Vec<u32>,
    }

    impl LeafStore for DeviceLeaves<'_> {
        type Error = GbdtError;

        fn histograms(&mut self, leaves: &[usize]) -> Result<Vec<Vec<u64>>, GbdtError> {
            let t = self.t;
            let start = Instant::now();
            PROFILE[4].fetch_add(1, Relaxed);
            let mut slot_of_leaf = vec![u32::MAX; t.max_leaves.max(1)];
            for (s, &l) in leaves.iter().enumerate() {
                slot_of_leaf[l] = s as u32;
            }
            let slots = t.accel.upload("leaf slots", &slot_of_leaf)?;
            let raw = t.accel.histograms(
                &t.matrix,
                t.width,
                &t.gh,
                &t.leaf_of,
                &slots,
                &t.col_offset,
                t.n_rows as u32,
                t.hist_len as u32,
                leaves.len() as u32,
                &leaves.iter().map(|&l| self.rows[l]).collect::<Vec<u32>>(),
            )?;
            add(1, start);
            let start = Instant::now();
            let m = &self.data.rows;
            let out = raw
                .par_chunks(t.hist_len)
                .map(|w| {
                    let mut h = w.to_vec();
                    for (c, g) in m.groups.iter().enumerate() {
                        if self.skip[c] {
                            h[g.offset..g.offset + g.n_bins].fill(0);
                        }
                    }
                    m.marginalise(&self.data.offsets, &self.groups, &mut h);
                    h
                })
                .collect();
            add(HOST_UNPACK, start);
            Ok(out)
        }

        fn split(&mut self, splits: &[(usize, &Split, usize)]) -> Result<Vec<usize>, GbdtError> {
            let t = self.t;
            let start = Instant::now();
            PROFILE[5].fetch_add(1, Relaxed);
            let mut out = Vec::with_capacity(splits.len());
            for chunk in splits.chunks(1024) {
                let mut split_of_leaf = vec![u32::MAX; t.max_leaves.max(1)];
                let mut table = vec![0u32; SPLIT_WORDS * chunk.len()];
                for (k, &(leaf, s, nl)) in chunk.iter().enumerate() {
                    let f = s.feature;
                    split_of_leaf[leaf] = k as u32;
                    let row = &mut table[SPLIT_WORDS * k..SPLIT_WORDS * (k + 1)];
                    row[0] = t.col_of_feature[f];
                    row[1] = nl as u32;
                    let missing = self.data.mappers[f].missing_bin();
                    let n_bins = self.data.offsets[f + 1] - self.data.offsets[f];
                    for b in 0..n_bins {
                        if goes_left(s, b, missing) {
                            row[2 + b / 32] |= 1 << (b % 32);
                        }
                    }
                }
                let a = &t.accel;
                let counts = a.split_rows(
                    &t.columns,
                    t.col_words,
                    &t.leaf_of,
                    &a.upload("split of each leaf", &split_of_leaf)?,
                    &a.upload("split table", &table)?,
                    t.n_rows as u32,
                    chunk.len(),
                )?;
                for (&(leaf, _, new_leaf), &c) in chunk.iter().zip(&counts) {
                    let all = self.rows[leaf];
                    if c > all {
                        return Err(GbdtError::Device(AccelError::Device {
                            backend: t.accel.info.backend,
                            reason: format!("a split kept {c} of leaf {leaf}'s {all} rows"),
                        }));
                    }
                    self.rows[new_leaf] = all - c;
                    self.rows[leaf] = c;
                }
                out.extend(counts.iter().map(|&c| c as usize));
            }
            add(2, start);
            Ok(out)
        }
    }
}
