//! The device conformance suite: one body, run by `cargo test` on every device a build
//! has and a machine can open, and by the GPU check (`examples/gpu_check.rs`) on a lent
//! GPU. Histograms, whole trees, leaf values and predictions must equal the CPU's bit for
//! bit: every back end adds the same fixed-point integers. Each check returns what
//! differed, so a report can list every failure rather than stop at the first.

use crate::bin::Binned;
use crate::data::{Column, Dataset};
use crate::device::{histogram, Device};
use crate::train::{build_histogram, quantise, GrowPolicy};
use crate::tree::Tree;
use crate::{train_on, Objective, Params};

/// A deterministic generator for the suite's data (and the crate's tests): uniform in
/// [0, 1).
pub struct Lcg(pub u64);

impl Lcg {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows with missing values, a categorical with a missing category, a small-integer
/// feature (bundled with others in the row matrix), a constant column and weights; the
/// target depends on all of them.
pub fn data(n: usize, seed: u64) -> Dataset {
    let mut r = Lcg(seed);
    let cats = [
        "JFK", "LHR", "CDG", "FRA", "AMS", "DXB", "SIN", "HND", "ORD", "SYD",
    ];
    let (mut a, mut b, mut d, mut k, mut c, mut y, mut w) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let av = r.next() * 10.0;
        let bv = r.next() * 4.0 - 2.0;
        let dv = (r.next() * 7.0).floor();
        let ki = (r.next() * cats.len() as f64) as usize;
        let eff = [3.0, -1.0, 0.5, 2.0, -2.0, 4.0, 0.0, 1.0, -0.5, 2.5][ki];
        y.push((av * 0.8).sin() * 3.0 + bv * bv + eff + 0.3 * dv + r.next() * 0.5 + 10.0);
        a.push(if r.next() < 0.1 { f64::NAN } else { av });
        b.push(bv);
        d.push(dv);
        k.push(if r.next() < 0.05 {
            None
        } else {
            Some(cats[ki].to_string())
        });
        c.push(1.0);
        w.push(0.5 + r.next());
    }
    Dataset {
        names: ["a", "b", "dow", "airport", "constant"]
            .map(String::from)
            .to_vec(),
        columns: vec![
            Column::Numeric(a),
            Column::Numeric(b),
            Column::Numeric(d),
            Column::categorical(&k),
            Column::Numeric(c),
        ],
        target: y,
        weights: Some(w),
    }
}

/// One check's outcome: its name and what differed (`None`: equal).
pub type Outcome = (String, Option<String>);

/// Histograms of all rows, of a sparse subset, and over a subset of the features.
pub fn histograms(d: &Device) -> Vec<Outcome> {
    let ds = data(30_000, 7);
    let binned = Binned::fit(&ds, 255);
    let mut r = Lcg(9);
    let g: Vec<f64> = (0..ds.target.len()).map(|_| r.next() * 2.0 - 1.0).collect();
    let h: Vec<f64> = (0..ds.target.len()).map(|_| r.next()).collect();
    let (gh, _, _) = match quantise(&g, &h) {
        Ok(x) => x,
        Err(e) => return vec![("histograms".into(), Some(e.to_string()))],
    };
    let all: Vec<u32> = (0..ds.target.len() as u32).collect();
    let some: Vec<u32> = all.iter().copied().filter(|i| i % 7 == 3).collect();
    // 32 continuous features: about 8,000 bins a leaf, more than a cube's shared memory
    // holds, so the device adds straight into device memory.
    let wide = Dataset {
        names: (0..32).map(|f| format!("x{f}")).collect(),
        columns: (0..32)
            .map(|_| Column::Numeric((0..ds.target.len()).map(|_| r.next()).collect()))
            .collect(),
        target: ds.target.clone(),
        weights: None,
    };
    let wide_binned = Binned::fit(&wide, 255);
    let wide_feats: Vec<usize> = (0..32).collect();
    let five = vec![0, 1, 2, 3, 4];
    [
        ("histogram: all rows", &binned, &all, five.clone()),
        ("histogram: a seventh of the rows", &binned, &some, five),
        ("histogram: two features", &binned, &some, vec![1, 3]),
        (
            "histogram: 32 wide features",
            &wide_binned,
            &some,
            wide_feats,
        ),
    ]
    .into_iter()
    .map(|(name, binned, rows, feats)| {
        let want = build_histogram(binned, &feats, rows, &gh);
        let got = histogram(d, binned, &feats, rows, &gh);
        let diff = match got {
            Err(e) => Some(error_chain(&e)),
            Ok(got) if got == want => None,
            Ok(got) => {
                let bins = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                Some(format!("{bins} of {} bins differ", want.len()))
            }
        };
        (name.to_string(), diff)
    })
    .collect()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// What differs between two trees (`None`: nothing).
fn tree_diff(a: &Tree, b: &Tree) -> Option<String> {
    if a == b {
        let bits = |t: &Tree| t.leaf_value.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        return (bits(a) != bits(b)).then(|| "leaf value bits".into());
    }
    let fields = [
        ("structure", a.left != b.left || a.right != b.right),
        ("features", a.feature != b.feature),
        (
            "thresholds",
            a.threshold_bin != b.threshold_bin || a.threshold != b.threshold,
        ),
        ("missing directions", a.default_left != b.default_left),
        (
            "categories",
            a.cat_bitsets != b.cat_bitsets || a.cat_index != b.cat_index,
        ),
        ("gains", a.gain != b.gain),
        (
            "node sums",
            a.node_hess != b.node_hess || a.node_count != b.node_count,
        ),
        ("node values", a.node_value != b.node_value),
        ("leaf values", a.leaf_value != b.leaf_value),
        (
            "leaf sums",
            a.leaf_hess != b.leaf_hess || a.leaf_count != b.leaf_count,
        ),
    ];
    let differ: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
    Some(format!(
        "{} ({} vs {} nodes)",
        differ.join(", "),
        a.left.len(),
        b.left.len()
    ))
}

/// Trains on the CPU and on `d`; the trees, leaf values and training predictions must be
/// the same bits.
fn same_model(d: &Device, ds: &Dataset, p: &Params, name: &str) -> Outcome {
    let run = || -> Result<Option<String>, crate::GbdtError> {
        let (cpu, cpu_pred) = train_on(&Device::Cpu, ds, None, p, &mut |_| {})?;
        let (dev, dev_pred) = train_on(d, ds, None, p, &mut |_| {})?;
        if cpu.trees.len() != dev.trees.len() {
            return Ok(Some(format!(
                "{} trees vs {}",
                cpu.trees.len(),
                dev.trees.len()
            )));
        }
        for (i, (a, b)) in cpu.trees.iter().zip(&dev.trees).enumerate() {
            if let Some(diff) = tree_diff(a, b) {
                return Ok(Some(format!("tree {i}: {diff}")));
            }
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if bits(&cpu_pred) != bits(&dev_pred) {
            return Ok(Some("training predictions".into()));
        }
        let x = cpu.prepare(ds)?;
        let want = cpu.predict_raw(&x, None);
        if bits(&want) != bits(&dev.predict_raw(&x, None)) {
            return Ok(Some("predictions".into()));
        }
        // The device's own prediction kernel: f32 sums, within 1e-5 of the CPU's.
        let got = crate::device::predict_raw(d, &dev, &x, None)?;
        let worst = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0.0f64, f64::max);
        if got.len() != want.len() || !(worst <= 1e-5) {
            return Ok(Some(format!(
                "device predictions: {} rows, largest relative difference {worst:e}",
                got.len()
            )));
        }
        // No rows: no launch, no predictions.
        if !crate::device::predict_raw(d, &dev, &[], None)?.is_empty() {
            return Ok(Some("device predictions of no rows".into()));
        }
        Ok(None)
    };
    let diff = run().unwrap_or_else(|e| Some(error_chain(&e)));
    (name.to_string(), diff)
}

fn params() -> Params {
    Params {
        num_iterations: 12,
        num_leaves: 31,
        min_data_in_leaf: 10,
        min_data_per_group: 10,
        deterministic: true,
        ..Default::default()
    }
}

/// Without `deterministic`, a device computes gradients, leaf values and scores itself in
/// `f32`: the model must make the CPU's predictions to `tol` (relative to the larger of
/// the prediction and 1), training predictions too.
fn close_model(d: &Device, ds: &Dataset, p: &Params, name: &str, tol: f64) -> Outcome {
    let run = || -> Result<Option<String>, crate::GbdtError> {
        let (cpu, cpu_pred) = train_on(&Device::Cpu, ds, None, p, &mut |_| {})?;
        let (dev, dev_pred) = train_on(d, ds, None, p, &mut |_| {})?;
        let worst = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                .fold(
                    0.0f64,
                    |m, x| if x.is_nan() { f64::INFINITY } else { m.max(x) },
                )
        };
        let same_splits = cpu
            .trees
            .iter()
            .zip(&dev.trees)
            .filter(|(a, b)| a.feature == b.feature && a.threshold_bin == b.threshold_bin)
            .count();
        let x = cpu.prepare(ds)?;
        let (want, got) = (cpu.predict_raw(&x, None), dev.predict_raw(&x, None));
        let (wp, wt) = (worst(&want, &got), worst(&cpu_pred, &dev_pred));
        if std::env::var_os("CONTRAIL_CONFORMANCE_VERBOSE").is_some() {
            eprintln!(
                "{name}: {same_splits} of {} trees split alike; predictions within {wp:e}, \
                 training predictions within {wt:e}",
                cpu.trees.len()
            );
        }
        if cpu.trees.len() != dev.trees.len() || want.len() != got.len() {
            return Ok(Some(format!(
                "{} trees vs {}",
                cpu.trees.len(),
                dev.trees.len()
            )));
        }
        if !(wp <= tol && wt <= tol) {
            return Ok(Some(format!(
                "predictions differ by {wp:e}, training predictions by {wt:e} (tolerance \
                 {tol:e}; {same_splits} of {} trees split alike)",
                cpu.trees.len()
            )));
        }
        Ok(None)
    };
    let diff = run().unwrap_or_else(|e| Some(error_chain(&e)));
    (name.to_string(), diff)
}

/// The device's own gradients and scores (not `deterministic`): squared error with
/// weights, bagging, binary, Poisson, depth-wise.
pub fn device_gradients(d: &Device) -> Vec<Outcome> {
    let ds = data(20_000, 17);
    let binary = above_median(&ds);
    let mut counts = ds.clone();
    for y in counts.target.iter_mut() {
        *y = (*y / 3.0).floor().max(0.0);
    }
    let fast = Params {
        deterministic: false,
        ..params()
    };
    let mut bag = fast.clone();
    bag.bagging_fraction = 0.7;
    bag.bagging_freq = 1;
    let bin = Params {
        objective: Objective::Binary,
        ..fast.clone()
    };
    let pois = Params {
        objective: Objective::Poisson,
        ..fast.clone()
    };
    let depth = Params {
        grow_policy: GrowPolicy::DepthWise,
        max_depth: 6,
        ..fast.clone()
    };
    vec![
        close_model(
            d,
            &ds,
            &fast,
            "device gradients: squared error, weights",
            1e-5,
        ),
        close_model(d, &ds, &bag, "device gradients: bagging", 1e-5),
        close_model(d, &binary, &bin, "device gradients: binary", 1e-5),
        close_model(d, &counts, &pois, "device gradients: Poisson", 1e-5),
        close_model(d, &ds, &depth, "device gradients: depth-wise", 1e-5),
    ]
}

/// Leaf-wise models: plain, with bagging and feature fraction, with monotone constraints.
pub fn leaf_wise(d: &Device) -> Vec<Outcome> {
    let ds = data(20_000, 11);
    let mut bag = params();
    bag.bagging_fraction = 0.7;
    bag.bagging_freq = 1;
    bag.feature_fraction = 0.6;
    let mut mono = params();
    mono.monotone_constraints = vec![0, 1, -1, 0, 0];
    vec![
        same_model(d, &ds, &params(), "trees: leaf-wise"),
        same_model(d, &ds, &bag, "trees: bagging and feature fraction"),
        same_model(d, &ds, &mono, "trees: monotone constraints"),
    ]
}

/// Depth-wise growth (a level a pass on a device), a binary objective, and a quantile
/// objective (whose leaves are renewed from the rows of each leaf).
pub fn depth_wise_and_objectives(d: &Device) -> Vec<Outcome> {
    let ds = data(20_000, 13);
    let binary = above_median(&ds);
    let mut depth = params();
    depth.grow_policy = GrowPolicy::DepthWise;
    depth.max_depth = 6;
    let mut bin = params();
    bin.objective = Objective::Binary;
    let mut quant = params();
    quant.objective = Objective::Quantile { alpha: 0.7 };
    vec![
        same_model(d, &ds, &depth, "trees: depth-wise"),
        same_model(d, &binary, &bin, "trees: binary"),
        same_model(d, &ds, &quant, "trees: quantile (leaves renewed)"),
    ]
}

/// `ds` with a binary target: 1 above the target's median, else 0.
fn above_median(ds: &Dataset) -> Dataset {
    let mut binary = ds.clone();
    let mut t = binary.target.clone();
    t.sort_by(f64::total_cmp);
    let median = t[t.len() / 2];
    for y in binary.target.iter_mut() {
        *y = (*y > median) as u8 as f64;
    }
    binary
}

/// Every check.
pub fn all(d: &Device) -> Vec<Outcome> {
    let mut v = histograms(d);
    v.extend(leaf_wise(d));
    v.extend(depth_wise_and_objectives(d));
    v.extend(device_gradients(d));
    v
}
