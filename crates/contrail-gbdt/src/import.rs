//! Importing LightGBM text models and XGBoost JSON/UBJSON models as Contrail boosters,
//! and exporting Contrail boosters as XGBoost JSON (for Treelite and Triton's FIL).
//!
//! An imported tree keeps each library's exact decision rule, rewritten into Contrail's
//! one rule, `x <= threshold` on `f64` with a learned direction for NaN:
//!
//! - **LightGBM** compares `f64` values, `x <= threshold`. Before the trees see a row,
//!   values with `|x| <= 1e-35f` become 0 (its dense rows go through a sparse form), so
//!   thresholds inside that band move to its edge. Missing types: *None* reads NaN as 0
//!   (NaN goes where 0 goes); *NaN* sends NaN the default way; *Zero* sends NaN and the
//!   zero band the default way, which, when it differs from where 0 compares, becomes
//!   two extra nodes around the band (the other child's subtree is copied). Categorical
//!   splits list the categories that go left; NaN, negative and unlisted categories go
//!   right.
//! - **XGBoost** casts values to `f32` and compares `x < threshold`. For `f64` inputs that
//!   is `x <= T` with `T` the largest `f64` that rounds (to nearest, ties to even) to an
//!   `f32` below the threshold. Categorical splits list the categories that go *right*;
//!   unlisted, negative and unseen categories go left; NaN goes the default way.
//!
//! Categorical features become Contrail categories named by their integer codes ("0",
//! "1", ...): the input is the integer code (a number column) as each library reads it.
//! Codes that are not whole numbers are unseen categories in Contrail (both libraries
//! truncate them); see docs/scoring.md.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::bin::BinMapper;
use crate::booster::{Booster, Precision};
use crate::data::FeatureKind;
use crate::objective::{sigmoid, Objective};
use crate::train::Params;
use crate::tree::Tree;
use crate::ubjson;

/// LightGBM's `kZeroThreshold`: the `f32` literal `1e-35f` held in a double.
const K_ZERO: f64 = 1e-35f32 as f64;
/// Category codes at or above this are refused (each split keeps a bit per code).
pub const MAX_CATEGORY: u32 = 65_000;
/// Nodes a tree may grow to when LightGBM's zero bands are rewritten.
const MAX_TREE_NODES: usize = 1 << 22;
/// Trees deeper than this are refused (the rewrite recurses).
const MAX_DEPTH: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: {field}: {reason}")]
    Format {
        file: String,
        field: String,
        reason: String,
    },
    #[error("{file}: {what} is not supported")]
    Unsupported { file: String, what: String },
    #[error("{file}: not valid JSON")]
    Json {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{file}: not valid UBJSON")]
    Ubjson {
        file: String,
        #[source]
        source: ubjson::UbjsonError,
    },
}

/// An imported model and what it came from (for the package's lineage).
#[derive(Debug, Clone)]
pub struct Imported {
    pub booster: Booster,
    pub lineage: BTreeMap<String, String>,
}

fn prev_f64(x: f64) -> f64 {
    if x.is_nan() || x == f64::NEG_INFINITY {
        return x;
    }
    if x == 0.0 {
        return -f64::from_bits(1);
    }
    let b = x.to_bits();
    f64::from_bits(if x > 0.0 { b - 1 } else { b + 1 })
}

fn next_f32(x: f32) -> f32 {
    if x.is_nan() || x == f32::INFINITY {
        return x;
    }
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let b = x.to_bits();
    f32::from_bits(if x > 0.0 { b + 1 } else { b - 1 })
}

fn prev_f32(x: f32) -> f32 {
    -next_f32(-x)
}

/// The `f64` threshold `T` such that, for every `f64` x, `(x as f32) < t` exactly when
/// `x <= T` (NaN aside). `None` for t = -inf or NaN (no value is below).
pub fn xgboost_threshold(t: f32) -> Option<f64> {
    if t.is_nan() || t == f32::NEG_INFINITY {
        return None;
    }
    let p = prev_f32(t); // the largest f32 below t
    if p == f32::NEG_INFINITY {
        // Only values that round to -inf: at most -(MAX + half an ulp), the tie included
        // (it rounds to the even neighbour, -inf).
        return Some(-(f32::MAX as f64 + 2f64.powi(103)));
    }
    // Half-way to the next f32 above p (2^128 past MAX), exact in f64.
    let up = if p == f32::MAX {
        2f64.powi(128)
    } else {
        next_f32(p) as f64
    };
    let mid = (p as f64 + up) / 2.0;
    // A tie rounds to the neighbour with an even significand.
    let p_even = p.to_bits() & 1 == 0 || p == 0.0;
    Some(if p_even { mid } else { prev_f64(mid) })
}

/// Where a source split sends rows.
#[derive(Debug, Clone)]
enum Split {
    /// `x <= thr` left; NaN by `default_left`. With `zero_band`, values with
    /// `|x| <= 1e-35f` (and NaN) go the default way whatever `thr` says.
    Numeric {
        thr: f64,
        default_left: bool,
        zero_band: bool,
    },
    /// Listed categories go left if `listed_left`, the other known ones the other way;
    /// unseen (and negative) codes by `other_left`, NaN by `missing_left`.
    Categorical {
        cats: Vec<u32>,
        listed_left: bool,
        other_left: bool,
        missing_left: bool,
    },
}

#[derive(Debug, Clone, Copy)]
enum Child {
    Node(usize),
    Leaf(usize),
}

#[derive(Debug, Clone)]
struct Node {
    feature: usize,
    split: Split,
    left: Child,
    right: Child,
    gain: f64,
    hess: f64,
    count: u64,
    value: f64,
}

#[derive(Debug, Clone, Copy)]
struct Leaf {
    value: f64,
    hess: f64,
    count: u64,
}

#[derive(Debug, Clone)]
struct SrcTree {
    nodes: Vec<Node>,
    leaves: Vec<Leaf>,
    root: Child,
}

struct Source {
    file: String,
    names: Vec<String>,
    /// Categorical per feature (from the file's declarations and its splits).
    categorical: Vec<bool>,
    objective: Objective,
    init_score: f64,
    trees: Vec<SrcTree>,
    lineage: BTreeMap<String, String>,
    /// The source library's arithmetic (see [`Precision`]).
    precision: Precision,
}

impl Source {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ImportError {
        ImportError::Format {
            file: self.file.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks that `nodes`/`leaves` form one tree from `root`: every node and leaf reached
/// exactly once, and not too deep.
fn check_tree(t: &SrcTree, file: &str, field: &str) -> Result<(), ImportError> {
    let bad = |reason: String| ImportError::Format {
        file: file.into(),
        field: field.into(),
        reason,
    };
    let mut seen_n = vec![false; t.nodes.len()];
    let mut seen_l = vec![false; t.leaves.len()];
    let mut stack = vec![(t.root, 0usize)];
    while let Some((c, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(bad(format!("deeper than {MAX_DEPTH}")));
        }
        match c {
            Child::Leaf(l) => {
                if l >= seen_l.len() || std::mem::replace(&mut seen_l[l], true) {
                    return Err(bad(format!("leaf {l} is out of range or reached twice")));
                }
            }
            Child::Node(n) => {
                if n >= seen_n.len() || std::mem::replace(&mut seen_n[n], true) {
                    return Err(bad(format!("node {n} is out of range or reached twice")));
                }
                stack.push((t.nodes[n].left, depth + 1));
                stack.push((t.nodes[n].right, depth + 1));
            }
        }
    }
    if seen_n.iter().chain(&seen_l).any(|s| !s) {
        return Err(bad(
            "some nodes or leaves are not reachable from the root".into()
        ));
    }
    Ok(())
}

/// Builds Contrail trees and bins from the source trees.
fn build(src: Source) -> Result<Imported, ImportError> {
    let nf = src.names.len();
    // Category codes per categorical feature: bins 0..k are codes, k "other", k+1 missing.
    let mut n_codes = vec![0u32; nf];
    for t in &src.trees {
        for n in &t.nodes {
            if let Split::Categorical { cats, .. } = &n.split {
                if !src.categorical[n.feature] {
                    return Err(src.err(
                        format!("feature {}", src.names[n.feature]),
                        "used in both numeric and categorical splits",
                    ));
                }
                for &c in cats {
                    n_codes[n.feature] = n_codes[n.feature].max(c + 1);
                }
            } else if src.categorical[n.feature] {
                return Err(src.err(
                    format!("feature {}", src.names[n.feature]),
                    "declared categorical but used in a numeric split",
                ));
            }
        }
    }
    let mut trees = Vec::with_capacity(src.trees.len());
    for (ti, t) in src.trees.iter().enumerate() {
        let mut e = Emit {
            src: t,
            out: Tree::default(),
            n_codes: &n_codes,
        };
        e.child(t.root, 0)
            .map_err(|r| src.err(format!("tree {ti}"), r))?;
        trees.push(e.out);
    }
    // Numeric bins: every threshold a feature is split at, then +inf.
    let mut thresholds: Vec<Vec<f64>> = vec![Vec::new(); nf];
    for t in &trees {
        for k in 0..t.n_nodes() {
            if t.cat_index[k] < 0 && t.threshold[k].is_finite() {
                thresholds[t.feature[k] as usize].push(t.threshold[k]);
            }
        }
    }
    let mut mappers = Vec::with_capacity(nf);
    for f in 0..nf {
        if src.categorical[f] {
            mappers.push(BinMapper::Categorical {
                categories: (0..n_codes[f]).map(|c| c.to_string()).collect(),
            });
        } else {
            let mut u = std::mem::take(&mut thresholds[f]);
            u.sort_by(f64::total_cmp);
            u.dedup_by(|a, b| a.to_bits() == b.to_bits());
            if u.len() >= 65_535 {
                return Err(src.err(
                    format!("feature {}", src.names[f]),
                    format!("{} distinct thresholds (at most 65,534)", u.len()),
                ));
            }
            u.push(f64::INFINITY);
            mappers.push(BinMapper::Numeric { upper: u });
        }
    }
    for t in &mut trees {
        for k in 0..t.n_nodes() {
            if t.cat_index[k] >= 0 {
                continue;
            }
            let BinMapper::Numeric { upper } = &mappers[t.feature[k] as usize] else {
                unreachable!("numeric splits are on numeric features (checked above)");
            };
            let thr = t.threshold[k];
            t.threshold_bin[k] = upper
                .binary_search_by(|u| u.total_cmp(&thr))
                .unwrap_or(upper.len() - 1) as u32;
        }
    }
    let feature_kinds = src
        .categorical
        .iter()
        .map(|&c| {
            if c {
                FeatureKind::Categorical
            } else {
                FeatureKind::Numeric
            }
        })
        .collect();
    let params = Params {
        objective: src.objective,
        num_iterations: trees.len().max(1),
        label_edges: 0,
        ..Params::default()
    };
    Ok(Imported {
        booster: Booster {
            feature_names: src.names,
            feature_kinds,
            mappers,
            objective: src.objective,
            init_score: src.init_score,
            trees,
            params,
            best_iteration: 0,
            precision: src.precision,
        },
        lineage: src.lineage,
    })
}

/// Writes one source tree as a Contrail tree, rewriting LightGBM's zero bands.
struct Emit<'a> {
    src: &'a SrcTree,
    out: Tree,
    n_codes: &'a [u32],
}

impl Emit<'_> {
    fn leaf(&mut self, l: usize) -> i32 {
        let s = self.src.leaves[l];
        self.out.leaf_value.push(s.value);
        self.out.leaf_hess.push(s.hess);
        self.out.leaf_count.push(s.count);
        !((self.out.leaf_value.len() - 1) as i32)
    }

    /// A numeric node (children filled in later); returns its index.
    fn numeric(&mut self, n: &Node, thr: f64, default_left: bool) -> Result<usize, String> {
        if self.out.left.len() >= MAX_TREE_NODES {
            return Err(format!("more than {MAX_TREE_NODES} nodes after rewriting"));
        }
        let t = &mut self.out;
        t.left.push(0);
        t.right.push(0);
        t.feature.push(n.feature as u32);
        t.threshold_bin.push(0);
        t.threshold.push(thr);
        t.default_left.push(default_left);
        t.cat_index.push(-1);
        t.gain.push(n.gain);
        t.node_hess.push(n.hess);
        t.node_count.push(n.count);
        t.node_value.push(n.value);
        Ok(t.left.len() - 1)
    }

    fn set(&mut self, k: usize, left: i32, right: i32) {
        self.out.left[k] = left;
        self.out.right[k] = right;
    }

    /// `x <= thr ? l : r` over values already known to be on one side of the band.
    fn compare(&mut self, n: &Node, thr: f64, depth: usize) -> Result<i32, String> {
        let k = self.numeric(n, thr, false)?;
        let l = self.child(n.left, depth + 1)?;
        let r = self.child(n.right, depth + 1)?;
        self.set(k, l, r);
        Ok(k as i32)
    }

    fn child(&mut self, c: Child, depth: usize) -> Result<i32, String> {
        if depth > MAX_DEPTH {
            return Err(format!("deeper than {MAX_DEPTH}"));
        }
        let i = match c {
            Child::Leaf(l) => return Ok(self.leaf(l)),
            Child::Node(i) => i,
        };
        let n = &self.src.nodes[i];
        match &n.split {
            Split::Categorical {
                cats,
                listed_left,
                other_left,
                missing_left,
            } => {
                let k = self.n_codes[n.feature] as usize;
                let n_bins = k + 2;
                let mut bits = vec![0u32; n_bins.div_ceil(32)];
                let mut set = |b: usize| bits[b / 32] |= 1 << (b % 32);
                let mut listed = vec![false; k];
                for &c in cats {
                    listed[c as usize] = true;
                }
                for (b, &l) in listed.iter().enumerate() {
                    if l == *listed_left {
                        set(b);
                    }
                }
                if *other_left {
                    set(k);
                }
                if *missing_left {
                    set(k + 1);
                }
                let kk = self.numeric(n, f64::NAN, false)?;
                self.out.threshold[kk] = 0.0;
                self.out.cat_index[kk] = self.out.cat_bitsets.len() as i32;
                self.out.cat_bitsets.push(bits);
                let l = self.child(n.left, depth + 1)?;
                let r = self.child(n.right, depth + 1)?;
                self.set(kk, l, r);
                Ok(kk as i32)
            }
            &Split::Numeric {
                thr,
                default_left,
                zero_band,
            } => {
                let zero_left = 0.0 <= thr;
                if !zero_band || default_left == zero_left {
                    let k = self.numeric(n, thr, default_left)?;
                    let l = self.child(n.left, depth + 1)?;
                    let r = self.child(n.right, depth + 1)?;
                    self.set(k, l, r);
                    return Ok(k as i32);
                }
                // The band [-K_ZERO, K_ZERO] (and NaN) goes the default way, against where
                // the threshold sends 0: below the band, the band, above the band.
                let below = prev_f64(-K_ZERO);
                let a = self.numeric(n, below, false)?;
                let a_left = if thr >= below {
                    self.child(n.left, depth + 1)?
                } else {
                    self.compare(n, thr, depth + 1)?
                };
                let b = self.numeric(n, K_ZERO, true)?;
                let dflt = if default_left { n.left } else { n.right };
                let b_left = self.child(dflt, depth + 1)?;
                let b_right = if thr <= K_ZERO {
                    self.child(n.right, depth + 1)?
                } else {
                    self.compare(n, thr, depth + 1)?
                };
                self.set(b, b_left, b_right);
                self.set(a, a_left, b as i32);
                Ok(a as i32)
            }
        }
    }
}

// ----------------------------------------------------------------------------- LightGBM

/// Imports a LightGBM text model (`Booster.save_model`). `file` names it in errors.
pub fn from_lightgbm_text(text: &str, file: &str) -> Result<Imported, ImportError> {
    let fmt = |field: &str, reason: String| ImportError::Format {
        file: file.into(),
        field: field.into(),
        reason,
    };
    let unsupported = |what: String| ImportError::Unsupported {
        file: file.into(),
        what,
    };
    let mut lines = text.lines().enumerate().peekable();
    let mut header: BTreeMap<&str, &str> = BTreeMap::new();
    let mut flags: Vec<&str> = Vec::new();
    match lines.next() {
        Some((_, "tree")) => {}
        _ => {
            return Err(fmt(
                "line 1",
                "not a LightGBM text model (no `tree` line)".into(),
            ))
        }
    }
    while let Some(&(_, line)) = lines.peek() {
        if line.starts_with("Tree=") || line.starts_with("end of trees") {
            break;
        }
        lines.next();
        match line.split_once('=') {
            Some((k, v)) => {
                header.insert(k, v);
            }
            None if !line.trim().is_empty() => flags.push(line.trim()),
            None => {}
        }
    }
    let get = |k: &str| {
        header
            .get(k)
            .copied()
            .ok_or_else(|| fmt(k, "missing from the header".into()))
    };
    let int = |k: &str| -> Result<i64, ImportError> {
        get(k)?
            .trim()
            .parse::<i64>()
            .map_err(|e| fmt(k, e.to_string()))
    };
    if int("num_class")? != 1 || int("num_tree_per_iteration")? != 1 {
        return Err(unsupported(
            "a multiclass model (num_class or num_tree_per_iteration above 1)".into(),
        ));
    }
    let nf = int("max_feature_idx")? + 1;
    if !(1..=1 << 20).contains(&nf) {
        return Err(fmt("max_feature_idx", format!("{} features", nf)));
    }
    let nf = nf as usize;
    let names: Vec<String> = get("feature_names")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if names.len() != nf {
        return Err(fmt(
            "feature_names",
            format!("{} names for {nf} features", names.len()),
        ));
    }
    // `[min:max]` numeric, `a:b:c` categorical, `none` unused.
    let mut categorical = vec![false; nf];
    if let Some(infos) = header.get("feature_infos") {
        let infos: Vec<&str> = infos.split_whitespace().collect();
        if infos.len() == nf {
            for (f, i) in infos.iter().enumerate() {
                categorical[f] = !i.starts_with('[') && *i != "none";
            }
        }
    }
    // Objective and its output transform.
    let obj_line = get("objective")?;
    let mut words = obj_line.split_whitespace();
    let obj_name = words.next().unwrap_or("");
    let obj_params: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once(':')).collect();
    let param = |k: &str| -> Result<Option<f64>, ImportError> {
        obj_params
            .get(k)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|e| fmt("objective", format!("{k}: {e}")))
            })
            .transpose()
    };
    let mut scale = 1.0;
    let objective = match obj_name {
        "regression"
        | "regression_l2"
        | "l2"
        | "mse"
        | "mean_squared_error"
        | "rmse"
        | "root_mean_squared_error"
        | "fair"
        | "mape"
        | "mean_absolute_percentage_error" => Objective::Regression,
        "regression_l1" | "l1" | "mae" | "mean_absolute_error" => Objective::RegressionL1,
        "huber" => Objective::Huber {
            alpha: param("alpha")?.unwrap_or(0.9),
        },
        "quantile" => Objective::Quantile {
            alpha: param("alpha")?.unwrap_or(0.9),
        },
        "binary" | "cross_entropy" | "xentropy" => {
            // P = 1 / (1 + exp(-sigmoid · raw)): raw scores scaled by `sigmoid`.
            scale = param("sigmoid")?.unwrap_or(1.0);
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(fmt("objective", format!("sigmoid {scale}")));
            }
            Objective::Binary
        }
        "poisson" => Objective::Poisson,
        "gamma" => Objective::Gamma,
        "tweedie" => Objective::Tweedie {
            rho: param("tweedie_variance_power")?.unwrap_or(1.5),
        },
        other => return Err(unsupported(format!("objective {other:?}"))),
    };
    let average = flags.contains(&"average_output");

    // Trees.
    let mut trees = Vec::new();
    while let Some((ln, line)) = lines.next() {
        if line.starts_with("end of trees") {
            break;
        }
        let Some(id) = line.strip_prefix("Tree=") else {
            continue;
        };
        let field = format!("Tree={id} (line {})", ln + 1);
        let mut kv: BTreeMap<&str, &str> = BTreeMap::new();
        while let Some(&(_, l)) = lines.peek() {
            if l.starts_with("Tree=") || l.starts_with("end of trees") {
                break;
            }
            lines.next();
            if let Some((k, v)) = l.split_once('=') {
                kv.insert(k, v);
            }
        }
        let tree = lightgbm_tree(&kv, nf, &mut categorical, scale).map_err(|r| fmt(&field, r))?;
        check_tree(&tree, file, &field)?;
        trees.push(tree);
    }
    if trees.is_empty() {
        return Err(fmt("trees", "the model has no trees".into()));
    }
    if average {
        let k = 1.0 / trees.len() as f64;
        for t in &mut trees {
            for l in &mut t.leaves {
                l.value *= k;
            }
        }
    }
    let mut lineage = BTreeMap::new();
    lineage.insert("imported_from".into(), "lightgbm-text".into());
    lineage.insert("source_file".into(), file.into());
    lineage.insert("source_objective".into(), obj_line.trim().into());
    if let Some(v) = header.get("version") {
        lineage.insert("source_version".into(), v.to_string());
    }
    build(Source {
        file: file.into(),
        names,
        categorical,
        objective,
        init_score: 0.0,
        trees,
        lineage,
        precision: Precision::F64,
    })
}

fn lightgbm_tree(
    kv: &BTreeMap<&str, &str>,
    nf: usize,
    categorical: &mut [bool],
    scale: f64,
) -> Result<SrcTree, String> {
    fn list<T: std::str::FromStr>(
        kv: &BTreeMap<&str, &str>,
        k: &str,
        want: usize,
        required: bool,
    ) -> Result<Option<Vec<T>>, String>
    where
        T::Err: std::fmt::Display,
    {
        let Some(v) = kv.get(k) else {
            return if required && want > 0 {
                Err(format!("`{k}` is missing"))
            } else {
                Ok(None)
            };
        };
        let out: Vec<T> = v
            .split_whitespace()
            .map(|s| s.parse::<T>().map_err(|e| format!("`{k}`: {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if out.len() != want {
            return Err(format!("`{k}` has {} values, expected {want}", out.len()));
        }
        Ok(Some(out))
    }
    if kv.get("is_linear").is_some_and(|v| v.trim() == "1") {
        return Err("linear trees (linear_tree=true) are not supported".into());
    }
    let num_leaves: usize = kv
        .get("num_leaves")
        .ok_or("`num_leaves` is missing")?
        .trim()
        .parse()
        .map_err(|e| format!("`num_leaves`: {e}"))?;
    if !(1..=1 << 22).contains(&num_leaves) {
        return Err(format!("num_leaves {num_leaves}"));
    }
    let ni = num_leaves - 1;
    let leaf_value: Vec<f64> = list(kv, "leaf_value", num_leaves, true)?.unwrap_or_default();
    let leaf_weight: Option<Vec<f64>> = list(kv, "leaf_weight", num_leaves, false)?;
    let leaf_count: Option<Vec<u64>> = list(kv, "leaf_count", num_leaves, false)?;
    let leaves: Vec<Leaf> = (0..num_leaves)
        .map(|j| {
            let v = leaf_value.get(j).copied().unwrap_or(0.0) * scale;
            if v.is_finite() {
                Ok(Leaf {
                    value: v,
                    hess: leaf_weight.as_ref().map_or(0.0, |w| w[j]),
                    count: leaf_count.as_ref().map_or(0, |c| c[j]),
                })
            } else {
                Err(format!("leaf {j}: value {v} is not finite"))
            }
        })
        .collect::<Result<_, _>>()?;
    if ni == 0 {
        return Ok(SrcTree {
            nodes: vec![],
            leaves,
            root: Child::Leaf(0),
        });
    }
    let feat: Vec<usize> = list(kv, "split_feature", ni, true)?.unwrap_or_default();
    let thr: Vec<f64> = list(kv, "threshold", ni, true)?.unwrap_or_default();
    let dt: Vec<u8> = list(kv, "decision_type", ni, true)?.unwrap_or_default();
    let lc: Vec<i64> = list(kv, "left_child", ni, true)?.unwrap_or_default();
    let rc: Vec<i64> = list(kv, "right_child", ni, true)?.unwrap_or_default();
    let gain: Option<Vec<f64>> = list(kv, "split_gain", ni, false)?;
    let ival: Option<Vec<f64>> = list(kv, "internal_value", ni, false)?;
    let iw: Option<Vec<f64>> = list(kv, "internal_weight", ni, false)?;
    let ic: Option<Vec<u64>> = list(kv, "internal_count", ni, false)?;
    let num_cat: usize = kv
        .get("num_cat")
        .map(|v| v.trim().parse().map_err(|e| format!("`num_cat`: {e}")))
        .transpose()?
        .unwrap_or(0);
    if num_cat > ni {
        return Err(format!("num_cat {num_cat} exceeds the {ni} splits"));
    }
    let (bounds, words): (Vec<usize>, Vec<u32>) = if num_cat > 0 {
        let b: Vec<usize> = list(kv, "cat_boundaries", num_cat + 1, true)?.unwrap_or_default();
        let n_words = *b.last().unwrap_or(&0);
        let w: Vec<u32> = list(kv, "cat_threshold", n_words, true)?.unwrap_or_default();
        if b.windows(2).any(|p| p[1] < p[0]) || b[0] != 0 {
            return Err("`cat_boundaries` must start at 0 and not decrease".into());
        }
        (b, w)
    } else {
        (vec![0], vec![])
    };
    let child = |c: i64| -> Result<Child, String> {
        if c < 0 {
            let l = !c as u64;
            if l as usize >= num_leaves {
                return Err(format!("leaf child {l} is out of range"));
            }
            Ok(Child::Leaf(l as usize))
        } else if (c as u64 as usize) < ni {
            Ok(Child::Node(c as usize))
        } else {
            Err(format!("child {c} is out of range"))
        }
    };
    let mut nodes = Vec::with_capacity(ni);
    for i in 0..ni {
        let f = feat[i];
        if f >= nf {
            return Err(format!("node {i}: feature {f} is not in 0..{nf}"));
        }
        let d = dt[i];
        let default_left = d & 2 != 0;
        let split = if d & 1 != 0 {
            categorical[f] = true;
            let ci = thr[i];
            if !(ci >= 0.0 && ci < num_cat as f64 && ci.fract() == 0.0) {
                return Err(format!("node {i}: category set {ci} is out of range"));
            }
            let ci = ci as usize;
            let mut cats = Vec::new();
            for (w, &bits) in words[bounds[ci]..bounds[ci + 1]].iter().enumerate() {
                for b in 0..32 {
                    if bits >> b & 1 == 1 {
                        let c = (w * 32 + b) as u64;
                        if c >= MAX_CATEGORY as u64 {
                            return Err(format!(
                                "node {i}: category {c} (codes must be below {MAX_CATEGORY})"
                            ));
                        }
                        cats.push(c as u32);
                    }
                }
            }
            Split::Categorical {
                cats,
                listed_left: true,
                other_left: false,
                missing_left: false,
            }
        } else {
            let t = thr[i];
            if t.is_nan() {
                return Err(format!("node {i}: threshold is NaN"));
            }
            // Values in the zero band reach the tree as 0: a threshold inside the band
            // moves to the band's edge on the side 0 falls.
            let t = if (-K_ZERO..=K_ZERO).contains(&t) {
                if 0.0 <= t {
                    K_ZERO
                } else {
                    prev_f64(-K_ZERO)
                }
            } else {
                t
            };
            match (d >> 2) & 3 {
                // None: NaN reads as 0.
                0 => Split::Numeric {
                    thr: t,
                    default_left: 0.0 <= t,
                    zero_band: false,
                },
                1 => Split::Numeric {
                    thr: t,
                    default_left,
                    zero_band: true,
                },
                2 => Split::Numeric {
                    thr: t,
                    default_left,
                    zero_band: false,
                },
                m => return Err(format!("node {i}: unknown missing type {m}")),
            }
        };
        let stat = |v: &Option<Vec<f64>>| v.as_ref().map_or(0.0, |v| v[i]);
        let (g, h, v) = (stat(&gain), stat(&iw), stat(&ival) * scale);
        if !(g.is_finite() && h.is_finite() && v.is_finite()) {
            return Err(format!("node {i}: statistics are not finite"));
        }
        nodes.push(Node {
            feature: f,
            split,
            left: child(lc[i])?,
            right: child(rc[i])?,
            gain: g,
            hess: h,
            count: ic.as_ref().map_or(0, |c| c[i]),
            value: v,
        });
    }
    Ok(SrcTree {
        nodes,
        leaves,
        root: Child::Node(0),
    })
}

// ------------------------------------------------------------------------------ XGBoost

/// Imports an XGBoost model saved as JSON or UBJSON (`Booster.save_model`), telling the
/// two apart by their first bytes.
pub fn from_xgboost(bytes: &[u8], file: &str) -> Result<Imported, ImportError> {
    let v: Value = if ubjson::looks_like_ubjson(bytes) {
        ubjson::parse(bytes).map_err(|source| ImportError::Ubjson {
            file: file.into(),
            source,
        })?
    } else {
        serde_json::from_slice(bytes).map_err(|source| ImportError::Json {
            file: file.into(),
            source,
        })?
    };
    from_xgboost_value(&v, file)
}

/// A number as XGBoost writes them: a JSON number, a string ("5E-1", "[5E-1]"), or
/// `null` (NaN, from UBJSON).
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim().trim_start_matches('[').trim_end_matches(']');
            if s.contains(',') {
                return None;
            }
            s.trim().parse().ok()
        }
        Value::Bool(b) => Some(*b as u8 as f64),
        Value::Null => Some(f64::NAN),
        _ => None,
    }
}

/// XGBoost's numbers are `f32`: JSON text holds their shortest decimal form, which read
/// as `f64` is not the `f32` itself. Rounding back gives the same model from JSON and
/// UBJSON.
fn num32(v: &Value) -> Option<f64> {
    num(v).map(|x| x as f32 as f64)
}

fn from_xgboost_value(root: &Value, file: &str) -> Result<Imported, ImportError> {
    let fmt = |field: &str, reason: String| ImportError::Format {
        file: file.into(),
        field: field.into(),
        reason,
    };
    let unsupported = |what: String| ImportError::Unsupported {
        file: file.into(),
        what,
    };
    let at = |path: &str| -> Result<&Value, ImportError> {
        root.pointer(path)
            .ok_or_else(|| fmt(path, "missing".into()))
    };
    let number = |path: &str| -> Result<f64, ImportError> {
        let v = at(path)?;
        num(v).ok_or_else(|| fmt(path, format!("not a number: {v}")))
    };
    let lmp = "/learner/learner_model_param";
    let num_class = number(&format!("{lmp}/num_class"))?;
    let num_target = root
        .pointer(&format!("{lmp}/num_target"))
        .and_then(num)
        .unwrap_or(1.0);
    if num_class > 1.0 || num_target > 1.0 {
        return Err(unsupported("a multiclass or multi-target model".into()));
    }
    let nf = number(&format!("{lmp}/num_feature"))?;
    if !(nf >= 1.0 && nf <= (1 << 20) as f64) {
        return Err(fmt(&format!("{lmp}/num_feature"), format!("{nf}")));
    }
    let nf = nf as usize;
    let base_score = number(&format!("{lmp}/base_score"))? as f32 as f64;

    let obj_name = at("/learner/objective/name")?
        .as_str()
        .ok_or_else(|| fmt("/learner/objective/name", "not a string".into()))?;
    let obj_param = |group: &str, key: &str| {
        root.pointer(&format!("/learner/objective/{group}/{key}"))
            .and_then(num)
    };
    let objective = match obj_name {
        "reg:squarederror" | "reg:linear" => Objective::Regression,
        "reg:absoluteerror" => Objective::RegressionL1,
        "reg:pseudohubererror" => Objective::Huber {
            alpha: obj_param("pseudo_huber_param", "huber_slope").unwrap_or(1.0),
        },
        "reg:quantileerror" => Objective::Quantile {
            alpha: obj_param("quantile_loss_param", "quantile_alpha").ok_or_else(|| {
                unsupported("a quantile model with several quantile_alpha values".into())
            })?,
        },
        "binary:logistic" | "reg:logistic" => Objective::Binary,
        "count:poisson" => Objective::Poisson,
        "reg:gamma" => Objective::Gamma,
        "reg:tweedie" => Objective::Tweedie {
            rho: obj_param("tweedie_regression_param", "tweedie_variance_power").unwrap_or(1.5),
        },
        other => return Err(unsupported(format!("objective {other:?}"))),
    };
    // base_score is on the response scale; the trees add to its link-scale margin, which
    // XGBoost computes in f32: `-logf(1 / p - 1)` for the logistic link, `logf(p)` for
    // the log link (checked bit for bit against XGBoost 3.2's margins).
    let b32 = base_score as f32;
    let init_score = match objective {
        Objective::Binary => {
            if !(base_score > 0.0 && base_score < 1.0) {
                return Err(fmt("base_score", format!("{base_score} is not in (0, 1)")));
            }
            -(1.0 / b32 - 1.0).ln() as f64
        }
        Objective::Poisson | Objective::Gamma | Objective::Tweedie { .. } => {
            if base_score.is_nan() || base_score <= 0.0 {
                return Err(fmt("base_score", format!("{base_score} is not positive")));
            }
            b32.ln() as f64
        }
        _ => base_score,
    };
    if !init_score.is_finite() {
        return Err(fmt("base_score", format!("{base_score}")));
    }

    let booster_name = at("/learner/gradient_booster/name")?
        .as_str()
        .unwrap_or_default();
    let (model_path, weights) = match booster_name {
        "gbtree" => ("/learner/gradient_booster/model", None),
        "dart" => (
            "/learner/gradient_booster/gbtree/model",
            Some(at("/learner/gradient_booster/weight_drop")?),
        ),
        other => return Err(unsupported(format!("booster {other:?}"))),
    };
    if let Some(enc) = root.pointer(&format!("{model_path}/cats/enc")) {
        if enc.as_array().is_some_and(|a| !a.is_empty()) {
            return Err(unsupported(
                "a model that stores its category names (train on integer codes instead)".into(),
            ));
        }
    }
    let trees_v = at(&format!("{model_path}/trees"))?
        .as_array()
        .ok_or_else(|| fmt("trees", "not an array".into()))?;
    if let Some(info) = root
        .pointer(&format!("{model_path}/tree_info"))
        .and_then(Value::as_array)
    {
        if info.iter().any(|g| num(g) != Some(0.0)) {
            return Err(unsupported("trees for several outputs".into()));
        }
    }
    let weights: Option<Vec<f64>> = match weights {
        Some(w) => {
            let w: Vec<f64> = w
                .as_array()
                .ok_or_else(|| fmt("weight_drop", "not an array".into()))?
                .iter()
                .map(|x| num32(x).unwrap_or(f64::NAN))
                .collect();
            if w.len() != trees_v.len() || w.iter().any(|x| !x.is_finite()) {
                return Err(fmt("weight_drop", "one finite weight a tree needed".into()));
            }
            Some(w)
        }
        None => None,
    };

    let names: Vec<String> = match root
        .pointer("/learner/feature_names")
        .and_then(Value::as_array)
    {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| fmt("feature_names", "not strings".into()))?,
        _ => (0..nf).map(|i| format!("f{i}")).collect(),
    };
    if names.len() != nf {
        return Err(fmt(
            "feature_names",
            format!("{} names for {nf} features", names.len()),
        ));
    }
    let mut categorical = vec![false; nf];
    if let Some(types) = root
        .pointer("/learner/feature_types")
        .and_then(Value::as_array)
    {
        for (f, t) in types.iter().enumerate().take(nf) {
            categorical[f] = t.as_str() == Some("c");
        }
    }

    // gbtree models sum in f32 as XGBoost does. DART's leaf values are scaled by their
    // tree's weight, a product of two f32 values (exact in f64, not in f32): those models
    // sum in f64, within a few f32 roundings of XGBoost's (which adds each tree's output
    // minus the base margin, times its weight, in f32).
    let precision = if weights.is_none() {
        Precision::F32
    } else {
        Precision::F64
    };
    let mut trees = Vec::with_capacity(trees_v.len());
    for (ti, t) in trees_v.iter().enumerate() {
        let field = format!("tree {ti}");
        let scale = weights.as_ref().map_or(1.0, |w| w[ti]);
        let tree = xgboost_tree(t, nf, &mut categorical, scale).map_err(|r| fmt(&field, r))?;
        check_tree(&tree, file, &field)?;
        trees.push(tree);
    }
    let mut lineage = BTreeMap::new();
    lineage.insert("imported_from".into(), "xgboost".into());
    lineage.insert("source_file".into(), file.into());
    lineage.insert("source_objective".into(), obj_name.into());
    lineage.insert("source_base_score".into(), format!("{base_score}"));
    if let Some(v) = root.get("version").and_then(Value::as_array) {
        let v: Vec<String> = v.iter().map(|x| x.to_string()).collect();
        lineage.insert("source_version".into(), v.join("."));
    }
    build(Source {
        file: file.into(),
        names,
        categorical,
        objective,
        init_score,
        trees,
        lineage,
        precision,
    })
}

fn xgboost_tree(
    t: &Value,
    nf: usize,
    categorical: &mut [bool],
    scale: f64,
) -> Result<SrcTree, String> {
    let arr = |k: &str| -> Result<&Vec<Value>, String> {
        t.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("`{k}` is missing or not an array"))
    };
    let nums = |k: &str| -> Result<Vec<f64>, String> {
        arr(k)?
            .iter()
            .map(|v| num32(v).ok_or_else(|| format!("`{k}`: {v} is not a number")))
            .collect()
    };
    if let Some(s) = t.pointer("/tree_param/size_leaf_vector").and_then(num) {
        if s > 1.0 {
            return Err("vector leaves (multi-target trees) are not supported".into());
        }
    }
    let left = nums("left_children")?;
    let n = left.len();
    if n == 0 {
        return Err("no nodes".into());
    }
    // Arrays a model may leave out: zeros (a numeric split, no statistics).
    let optional = |k: &str| -> Result<Vec<f64>, String> {
        if t.get(k).is_some() {
            nums(k)
        } else {
            Ok(vec![0.0; n])
        }
    };
    let right = nums("right_children")?;
    let feat = nums("split_indices")?;
    let cond = nums("split_conditions")?;
    let dl = nums("default_left")?;
    let split_type = optional("split_type")?;
    let hess = optional("sum_hessian")?;
    let gain = optional("loss_changes")?;
    let base = optional("base_weights")?;
    for (k, len) in [
        ("right_children", right.len()),
        ("split_indices", feat.len()),
        ("split_conditions", cond.len()),
        ("default_left", dl.len()),
        ("split_type", split_type.len()),
        ("sum_hessian", hess.len()),
        ("loss_changes", gain.len()),
        ("base_weights", base.len()),
    ] {
        if len != n {
            return Err(format!("`{k}` has {len} entries, `left_children` {n}"));
        }
    }
    // Categories of the categorical splits: node -> its listed codes.
    let mut cat_of: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    if t.get("categories_nodes").is_some() {
        let cats = nums("categories")?;
        let cnodes = nums("categories_nodes")?;
        let segs = nums("categories_segments")?;
        let sizes = nums("categories_sizes")?;
        if segs.len() != cnodes.len() || sizes.len() != cnodes.len() {
            return Err("categorical split tables differ in length".into());
        }
        for ((&nd, &s), &z) in cnodes.iter().zip(&segs).zip(&sizes) {
            let (nd, s, z) = (nd as usize, s as usize, z as usize);
            if nd >= n || s.checked_add(z).is_none_or(|e| e > cats.len()) {
                return Err(format!("categorical split of node {nd} is out of range"));
            }
            let mut list = Vec::with_capacity(z);
            for &c in &cats[s..s + z] {
                if !(c >= 0.0 && c < MAX_CATEGORY as f64 && c.fract() == 0.0) {
                    return Err(format!(
                        "node {nd}: category {c} (codes must be whole numbers below {MAX_CATEGORY})"
                    ));
                }
                list.push(c as u32);
            }
            cat_of.insert(nd, list);
        }
    }
    // Renumber: internal nodes and leaves reachable from node 0, in their own tables.
    let idx = |v: f64, what: &str, i: usize| -> Result<usize, String> {
        if v >= 0.0 && v < n as f64 && v.fract() == 0.0 {
            Ok(v as usize)
        } else {
            Err(format!("node {i}: {what} {v} is out of range"))
        }
    };
    let is_leaf = |i: usize| left[i] == -1.0;
    let mut slot: Vec<Option<Child>> = vec![None; n];
    let mut order = Vec::new();
    let mut n_nodes = 0;
    let mut n_leaves = 0;
    let mut stack = vec![0usize];
    while let Some(i) = stack.pop() {
        if slot[i].is_some() {
            return Err(format!("node {i} is reached twice"));
        }
        if order.len() > n {
            return Err("the children form a cycle".into());
        }
        order.push(i);
        if is_leaf(i) {
            slot[i] = Some(Child::Leaf(n_leaves));
            n_leaves += 1;
        } else {
            slot[i] = Some(Child::Node(n_nodes));
            n_nodes += 1;
            stack.push(idx(right[i], "right child", i)?);
            stack.push(idx(left[i], "left child", i)?);
        }
    }
    let mut nodes = Vec::with_capacity(n_nodes);
    let mut leaves = Vec::with_capacity(n_leaves);
    for &i in &order {
        if is_leaf(i) {
            let v = cond[i] * scale;
            if !v.is_finite() {
                return Err(format!("leaf {i}: value {v} is not finite"));
            }
            leaves.push(Leaf {
                value: v,
                hess: hess[i],
                count: 0,
            });
            continue;
        }
        let f = idx(feat[i], "feature", i)?;
        if f >= nf {
            return Err(format!("node {i}: feature {f} is not in 0..{nf}"));
        }
        let default_left = dl[i] != 0.0;
        let split = if split_type[i] == 1.0 {
            categorical[f] = true;
            let cats = cat_of
                .get(&i)
                .cloned()
                .ok_or_else(|| format!("node {i}: a categorical split without categories"))?;
            Split::Categorical {
                cats,
                listed_left: false,
                other_left: true,
                missing_left: default_left,
            }
        } else {
            let thr = xgboost_threshold(cond[i] as f32)
                .ok_or_else(|| format!("node {i}: threshold {} has no value below", cond[i]))?;
            Split::Numeric {
                thr,
                default_left,
                zero_band: false,
            }
        };
        let (g, h, v) = (gain[i], hess[i], base[i] * scale);
        nodes.push(Node {
            feature: f,
            split,
            left: slot[idx(left[i], "left child", i)?].ok_or("unreachable child")?,
            right: slot[idx(right[i], "right child", i)?].ok_or("unreachable child")?,
            gain: if g.is_finite() { g } else { 0.0 },
            hess: if h.is_finite() { h } else { 0.0 },
            count: 0,
            value: if v.is_finite() { v } else { 0.0 },
        });
    }
    let root = slot[0].ok_or("no root")?;
    Ok(SrcTree {
        nodes,
        leaves,
        root,
    })
}

// ------------------------------------------------------------------------------- export

/// The smallest `f32` t with `x <= thr` exactly when `x < t` for every `f32` x.
///
/// JSON has no infinities: a threshold at or past the largest `f32` (every number goes
/// left) becomes `f32::MAX`, so only `f32::MAX` and +inf cross; one below `-f32::MAX`
/// becomes `-f32::MAX` (only -inf goes left in Contrail; none in XGBoost).
fn f32_threshold(thr: f64) -> f32 {
    if thr >= f32::MAX as f64 {
        return f32::MAX;
    }
    // The largest f32 <= thr, then the next one up.
    let mut lo = thr as f32;
    if lo as f64 > thr {
        lo = prev_f32(lo);
    }
    next_f32(lo).max(-f32::MAX)
}

/// A statistic as a finite `f32` (JSON has no infinities): clamped to the `f32` range.
fn stat32(v: f64) -> f32 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(-(f32::MAX as f64), f32::MAX as f64) as f32
    }
}

/// Writes a booster as an XGBoost JSON model (XGBoost 2 and 3, Treelite, Triton's FIL).
/// Categorical features become XGBoost categorical features whose codes are the
/// category's position in the model's list (`contrail inspect` prints it); rows with an
/// unseen category go left in the exported model. Thresholds and leaf values are
/// rounded to `f32`, as XGBoost stores them.
pub fn to_xgboost_json(b: &Booster) -> Result<String, ImportError> {
    let unsupported = |what: String| ImportError::Unsupported {
        file: "export".into(),
        what,
    };
    let (name, params) = match b.objective {
        Objective::Regression => (
            "reg:squarederror",
            json!({"reg_loss_param": {"scale_pos_weight": "1"}}),
        ),
        Objective::RegressionL1 => ("reg:absoluteerror", json!({})),
        Objective::Huber { alpha } => (
            "reg:pseudohubererror",
            json!({"pseudo_huber_param": {"huber_slope": format!("{alpha}")}}),
        ),
        Objective::Quantile { alpha } => (
            "reg:quantileerror",
            json!({"quantile_loss_param": {"quantile_alpha": format!("[{alpha}]")}}),
        ),
        Objective::Binary => (
            "binary:logistic",
            json!({"reg_loss_param": {"scale_pos_weight": "1"}}),
        ),
        Objective::Poisson => (
            "count:poisson",
            json!({"poisson_regression_param": {"max_delta_step": "0.7"}}),
        ),
        Objective::Gamma => (
            "reg:gamma",
            json!({"reg_loss_param": {"scale_pos_weight": "1"}}),
        ),
        Objective::Tweedie { rho } => (
            "reg:tweedie",
            json!({"tweedie_regression_param": {"tweedie_variance_power": format!("{rho}")}}),
        ),
    };
    let base_score = match b.objective {
        Objective::Binary => sigmoid(b.init_score),
        Objective::Poisson | Objective::Gamma | Objective::Tweedie { .. } => b.init_score.exp(),
        _ => b.init_score,
    };
    if !(base_score.is_finite() && (base_score as f32).is_finite()) {
        return Err(unsupported(format!("base score {base_score} in f32")));
    }
    let mut objective = params;
    objective["name"] = json!(name);
    let nf = b.feature_names.len();
    let mut trees = Vec::with_capacity(b.trees.len());
    for (ti, t) in b.trees.iter().enumerate() {
        let k = t.n_nodes();
        let total = k + t.n_leaves();
        // Breadth-first ids: XGBoost's predictor takes a node's right child to be its
        // left child + 1. `order` holds Contrail child codes (a leaf j as !j).
        let mut order: Vec<i32> = vec![if k > 0 { 0 } else { !0 }];
        let mut at = 0;
        while at < order.len() {
            let c = order[at];
            if c >= 0 {
                order.push(t.left[c as usize]);
                order.push(t.right[c as usize]);
            }
            at += 1;
        }
        if order.len() != total {
            return Err(unsupported(format!("tree {ti}: unreachable nodes")));
        }
        let mut left = vec![-1i64; total];
        let mut right = vec![-1i64; total];
        let mut parents = vec![2_147_483_647i64; total];
        let mut feat = vec![0i64; total];
        let mut cond = vec![0f32; total];
        let mut dl = vec![0u8; total];
        let mut stype = vec![0u8; total];
        let mut gain = vec![0f32; total];
        let mut hess = vec![0f32; total];
        let mut base = vec![0f32; total];
        let (mut cats, mut cnodes, mut csegs, mut csizes) = (vec![], vec![], vec![], vec![]);
        let mut next_child = 1i64;
        for (id, &c) in order.iter().enumerate() {
            if c < 0 {
                let j = !c as usize;
                let v = t.leaf_value[j] as f32;
                if !v.is_finite() {
                    return Err(unsupported(format!(
                        "tree {ti}: leaf value {} beyond the f32 range",
                        t.leaf_value[j]
                    )));
                }
                cond[id] = v;
                base[id] = v;
                hess[id] = stat32(t.leaf_hess[j]);
                continue;
            }
            let i = c as usize;
            left[id] = next_child;
            right[id] = next_child + 1;
            parents[next_child as usize] = id as i64;
            parents[next_child as usize + 1] = id as i64;
            next_child += 2;
            let f = t.feature[i] as usize;
            feat[id] = f as i64;
            gain[id] = stat32(t.gain[i]);
            hess[id] = stat32(t.node_hess[i]);
            base[id] = stat32(t.node_value[i]);
            if t.cat_index[i] >= 0 {
                let bits = &t.cat_bitsets[t.cat_index[i] as usize];
                let BinMapper::Categorical { categories } = &b.mappers[f] else {
                    return Err(unsupported(format!(
                        "tree {ti}: a categorical split on a numeric feature"
                    )));
                };
                let on = |bin: usize| bits.get(bin / 32).is_some_and(|w| w >> (bin % 32) & 1 == 1);
                // XGBoost lists the categories that go right.
                let right_codes: Vec<u32> = (0..categories.len())
                    .filter(|&c| !on(c))
                    .map(|c| c as u32)
                    .collect();
                stype[id] = 1;
                dl[id] = on(categories.len() + 1) as u8;
                cond[id] = f32::NAN;
                cnodes.push(id as i64);
                csegs.push(cats.len() as i64);
                csizes.push(right_codes.len() as i64);
                cats.extend(right_codes);
            } else {
                cond[id] = f32_threshold(t.threshold[i]);
                dl[id] = t.default_left[i] as u8;
            }
        }
        // JSON has no NaN: categorical splits' conditions are unused, written as 0.
        let cond: Vec<f32> = cond
            .iter()
            .map(|c| if c.is_nan() { 0.0 } else { *c })
            .collect();
        trees.push(json!({
            "base_weights": base,
            "categories": cats,
            "categories_nodes": cnodes,
            "categories_segments": csegs,
            "categories_sizes": csizes,
            "default_left": dl,
            "id": ti,
            "left_children": left,
            "loss_changes": gain,
            "parents": parents,
            "right_children": right,
            "split_conditions": cond,
            "split_indices": feat,
            "split_type": stype,
            "sum_hessian": hess,
            "tree_param": {
                "num_deleted": "0",
                "num_feature": nf.to_string(),
                "num_nodes": total.to_string(),
                "size_leaf_vector": "1"
            }
        }));
    }
    let types: Vec<&str> = b
        .mappers
        .iter()
        .map(|m| if m.is_categorical() { "c" } else { "q" })
        .collect();
    let n_trees = trees.len();
    let doc = json!({
        "learner": {
            "attributes": {},
            "feature_names": b.feature_names,
            "feature_types": types,
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {
                        "num_parallel_tree": "1",
                        "num_trees": n_trees.to_string()
                    },
                    "iteration_indptr": (0..=n_trees).collect::<Vec<_>>(),
                    "tree_info": vec![0; n_trees],
                    "trees": trees
                },
                "name": "gbtree"
            },
            "learner_model_param": {
                "base_score": format!("{:E}", base_score as f32),
                "boost_from_average": "1",
                "num_class": "0",
                "num_feature": nf.to_string(),
                "num_target": "1"
            },
            "objective": objective
        },
        "version": [2, 1, 0]
    });
    serde_json::to_string(&doc).map_err(|source| ImportError::Json {
        file: "export".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xgboost_thresholds_match_f32_comparison() {
        let mut r = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        for t in [
            1.0f32,
            -1.0,
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            f32::MAX,
            -f32::MAX,
            257.4169,
            f32::INFINITY,
            3.5,
            0.1,
        ] {
            let big = xgboost_threshold(t).unwrap();
            // Values around T: on each side the f32 comparison agrees.
            let mut probes = vec![
                big,
                prev_f64(big),
                -prev_f64(-big),
                t as f64,
                prev_f64(t as f64),
            ];
            for _ in 0..200 {
                let x = big + (next() as i64 as f64) * 1e-20 * big.abs().max(1e-40);
                probes.push(x);
            }
            for x in probes {
                if x.is_nan() {
                    continue;
                }
                assert_eq!((x as f32) < t, x <= big, "t={t:e} T={big:e} x={x:e}");
            }
        }
        assert!(xgboost_threshold(f32::NEG_INFINITY).is_none());
        // Random f32 thresholds and f64 values near them.
        for _ in 0..20_000 {
            let t = f32::from_bits((next() >> 32) as u32);
            if !t.is_finite() {
                continue;
            }
            let big = xgboost_threshold(t).unwrap();
            for x in [big, prev_f64(big), -prev_f64(-big), t as f64] {
                assert_eq!((x as f32) < t, x <= big, "t={t:e} x={x:e}");
            }
        }
    }

    #[test]
    fn export_thresholds_keep_f32_decisions() {
        assert_eq!(f32_threshold(f64::INFINITY), f32::MAX);
        assert_eq!(f32_threshold(1e300), f32::MAX);
        assert_eq!(f32_threshold(-1e300), -f32::MAX);
        assert_eq!(stat32(1e300), f32::MAX);
        assert_eq!(stat32(f64::NAN), 0.0);
        for thr in [0.5f64, 1.0 / 3.0, -2.75, 1e-30, 123456.789, -0.0] {
            let t = f32_threshold(thr);
            for x in [
                thr as f32,
                prev_f32(thr as f32),
                next_f32(thr as f32),
                t,
                prev_f32(t),
            ] {
                assert_eq!((x as f64) <= thr, x < t, "thr={thr} x={x}");
            }
        }
    }

    #[test]
    fn malformed_lightgbm_models_are_errors() {
        let ok = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=1\nobjective=regression\nfeature_names=a b\nfeature_infos=[0:1] [0:1]\n\nTree=0\nnum_leaves=2\nnum_cat=0\nsplit_feature=1\nthreshold=0.5\ndecision_type=8\nleft_child=-1\nright_child=-2\nleaf_value=1 2\n\nend of trees\n";
        let m = from_lightgbm_text(ok, "m.txt").unwrap().booster;
        assert_eq!(m.trees.len(), 1);
        let x = [f64::NAN, 0.25, f64::NAN, 0.75, 0.0, f64::NAN];
        assert_eq!(m.predict_raw_reference(&x, None), vec![1.0, 2.0, 2.0]);
        for (from, to, what) in [
            ("left_child=-1", "left_child=5", "out of range"),
            ("left_child=-1", "left_child=-2", "twice"),
            ("split_feature=1", "split_feature=7", "feature 7"),
            ("leaf_value=1 2", "leaf_value=1", "expected 2"),
            ("leaf_value=1 2", "leaf_value=1 nan", "not finite"),
            ("threshold=0.5", "threshold=x", "threshold"),
            ("num_class=1", "num_class=3", "multiclass"),
            ("objective=regression", "objective=lambdarank", "lambdarank"),
            ("feature_names=a b", "feature_names=a", "names"),
            ("num_leaves=2", "num_leaves=99999999999", "num_leaves"),
            ("decision_type=8", "decision_type=1", "category set"),
        ] {
            let bad = ok.replace(from, to);
            let e = from_lightgbm_text(&bad, "m.txt").unwrap_err().to_string();
            assert!(e.contains("m.txt") && e.contains(what), "{to}: {e}");
        }
        assert!(from_lightgbm_text("{}", "m.txt").is_err());
        assert!(from_lightgbm_text("tree\n", "m.txt").is_err());
    }
}
