//! Training tests: differential checks of split gains against a naive reference,
//! invariants, objectives, determinism across thread counts.

use contrail_gbdt::bin::Binned;
use contrail_gbdt::data::{Column, Dataset};
use contrail_gbdt::train::{build_histogram, grow_tree, quantise, unpack, GrowPolicy};
use contrail_gbdt::{metric, train, train_with_predictions, Objective, Params};

mod common;
use common::Lcg;

fn synthetic(n: usize, seed: u64, missing: f64) -> Dataset {
    let mut r = Lcg(seed);
    let cats = ["JFK", "LHR", "CDG", "FRA", "AMS", "DXB", "SIN", "HND"];
    let mut x0 = Vec::new();
    let mut x1 = Vec::new();
    let mut x2 = Vec::new();
    let mut c = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let a = r.next() * 10.0;
        let b = r.next() * 4.0 - 2.0;
        let d = (r.next() * 50.0).floor();
        let k = (r.next() * cats.len() as f64) as usize;
        let cat_effect = [3.0, -1.0, 0.5, 2.0, -2.0, 4.0, 0.0, 1.0][k];
        let yv = (a * 0.8).sin() * 3.0 + b * b + cat_effect + 0.01 * d + r.next() * 0.5;
        x0.push(if r.next() < missing { f64::NAN } else { a });
        x1.push(b);
        x2.push(d);
        c.push(if r.next() < missing {
            None
        } else {
            Some(cats[k].to_string())
        });
        y.push(yv);
    }
    Dataset {
        names: vec!["a".into(), "b".into(), "d".into(), "airport".into()],
        columns: vec![
            Column::Numeric(x0),
            Column::Numeric(x1),
            Column::Numeric(x2),
            Column::categorical(&c),
        ],
        target: y,
        weights: None,
    }
}

fn params(iters: usize) -> Params {
    Params {
        num_iterations: iters,
        num_leaves: 15,
        min_data_in_leaf: 5,
        min_data_per_group: 5,
        ..Default::default()
    }
}

#[test]
fn learns_and_beats_the_constant() {
    let tr = synthetic(5000, 1, 0.1);
    let te = synthetic(2000, 2, 0.1);
    let b = train(&tr, Some(&te), &params(200), &mut |_| {}).expect("train");
    let p = b.predict(&te).expect("predict");
    assert_eq!(
        b.predict(&te.gather(&[])).expect("no rows"),
        Vec::<f64>::new()
    );
    let rmse = metric::evaluate("rmse", &te.target, &p, None, &Objective::Regression);
    let mean = tr.target.iter().sum::<f64>() / tr.target.len() as f64;
    let base = metric::evaluate(
        "rmse",
        &te.target,
        &vec![mean; te.target.len()],
        None,
        &Objective::Regression,
    );
    assert!(rmse < 0.35 * base, "rmse {rmse} vs constant {base}");
    let r2 = metric::evaluate("r2", &te.target, &p, None, &Objective::Regression);
    assert!(r2 > 0.85, "r2 {r2}");
    // Importance: the categorical and the sine feature matter most.
    let (gain, splits) = b.importance();
    assert!(gain.iter().all(|g| *g >= 0.0) && splits.iter().sum::<u64>() > 0);
}

#[test]
fn deterministic_across_thread_counts_and_runs() {
    let tr = synthetic(20_000, 3, 0.05);
    let mut p = params(30);
    p.bagging_fraction = 0.7;
    p.bagging_freq = 1;
    p.feature_fraction = 0.75;
    p.num_threads = 1;
    let a = train(&tr, None, &p, &mut |_| {}).expect("1 thread");
    p.num_threads = 2;
    let b = train(&tr, None, &p, &mut |_| {}).expect("2 threads");
    let c = train(&tr, None, &p, &mut |_| {}).expect("again");
    p.num_threads = 1;
    assert_eq!(a.trees, b.trees);
    assert_eq!(b.trees, c.trees);
    let bits = |m: &contrail_gbdt::Booster| {
        m.trees
            .iter()
            .flat_map(|t| t.leaf_value.iter().map(|v| v.to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&a), bits(&b));
}

/// The naive reference: best numeric split gain of one feature by brute force over raw
/// thresholds, missing values tried on both sides.
fn naive_best_gain(x: &[f64], g: &[f64], h: &[f64], l2: f64, min_data: usize) -> f64 {
    let score = |gs: f64, hs: f64| gs * gs / (hs + l2);
    let (gt, ht): (f64, f64) = (g.iter().sum(), h.iter().sum());
    let parent = score(gt, ht);
    let mut vals: Vec<f64> = x.iter().copied().filter(|v| !v.is_nan()).collect();
    vals.sort_by(f64::total_cmp);
    vals.dedup();
    let mut best = f64::MIN;
    for &t in &vals {
        for miss_left in [false, true] {
            let (mut gl, mut hl, mut nl) = (0.0, 0.0, 0usize);
            for i in 0..x.len() {
                let left = if x[i].is_nan() { miss_left } else { x[i] <= t };
                if left {
                    gl += g[i];
                    hl += h[i];
                    nl += 1;
                }
            }
            let nr = x.len() - nl;
            if nl < min_data || nr < min_data {
                continue;
            }
            best = best.max(score(gl, hl) + score(gt - gl, ht - hl) - parent);
        }
    }
    best
}

/// A one-feature dataset binned, with its gradients and hessians quantised and packed,
/// and the values split finding sees (dequantised): what the naive references use.
#[allow(clippy::type_complexity)]
fn one_feature(
    col: Column,
    g: &[f64],
    h: &[f64],
) -> (Binned, Vec<u64>, f64, f64, Vec<f64>, Vec<f64>) {
    let data = Dataset {
        names: vec!["x".into()],
        columns: vec![col],
        target: vec![0.0; g.len()],
        weights: None,
    };
    let binned = Binned::fit(&data, 255);
    let (gh, sg, sh) = quantise(g, h).expect("quantise");
    let gd: Vec<f64> = gh.iter().map(|p| unpack(*p).g as f64 / sg).collect();
    let hd: Vec<f64> = gh.iter().map(|p| unpack(*p).h as f64 / sh).collect();
    (binned, gh, sg, sh, gd, hd)
}

#[test]
fn split_gains_match_a_naive_reference() {
    for seed in 0..20u64 {
        let mut r = Lcg(seed + 100);
        let n = 300;
        let x: Vec<f64> = (0..n)
            .map(|_| {
                if r.next() < 0.1 {
                    f64::NAN
                } else {
                    (r.next() * 40.0).floor()
                }
            })
            .collect();
        let g: Vec<f64> = (0..n).map(|_| r.next() * 2.0 - 1.0).collect();
        let h: Vec<f64> = (0..n).map(|_| 0.5 + r.next()).collect();
        let (binned, gh, sg, sh, gd, hd) = one_feature(Column::Numeric(x.clone()), &g, &h);
        // Split finding sees the quantised values: the reference uses the same ones, and
        // they are within half a quantum of the exact ones.
        for i in 0..n {
            assert!((gd[i] - g[i]).abs() <= 0.5 / sg && (hd[i] - h[i]).abs() <= 0.5 / sh);
        }
        let p = Params {
            num_leaves: 2,
            min_data_in_leaf: 3,
            lambda_l2: 1.0,
            min_sum_hessian_in_leaf: 0.0,
            learning_rate: 1.0,
            ..Default::default()
        };
        let mut rows: Vec<u32> = (0..n as u32).collect();
        let grown = grow_tree(&binned, &p, &[0], &mut rows, &gh, sg, sh);
        let want = naive_best_gain(&x, &gd, &hd, 1.0, 3);
        let got = grown.tree.gain[0];
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "seed {seed}: {got} vs {want}"
        );
        // The histogram sums equal the direct sums.
        let hist = build_histogram(&binned, &[0], &rows, &gh);
        assert_eq!(
            hist.iter().map(|b| unpack(*b).g).sum::<i64>(),
            gh.iter().map(|b| unpack(*b).g).sum::<i64>()
        );
        assert_eq!(
            hist.iter().map(|b| unpack(*b).h).sum::<i64>(),
            gh.iter().map(|b| unpack(*b).h).sum::<i64>()
        );
    }
}

#[test]
fn a_constant_target_gives_a_constant_model() {
    let mut d = synthetic(1000, 5, 0.0);
    d.target = vec![42.5; 1000];
    let b = train(&d, None, &params(10), &mut |_| {}).expect("train");
    assert!(b.trees.iter().all(|t| t.n_nodes() == 0));
    assert!(b
        .predict(&d)
        .expect("predict")
        .iter()
        .all(|p| (*p - 42.5).abs() < 1e-12));
}

#[test]
fn objectives_train_and_transform() {
    let base = synthetic(4000, 9, 0.05);
    let cases: Vec<(Objective, Box<dyn Fn(f64) -> f64>, &str)> = vec![
        (
            Objective::Binary,
            Box::new(|y: f64| if y > 6.0 { 1.0 } else { 0.0 }),
            "auc",
        ),
        (
            Objective::Poisson,
            Box::new(|y: f64| (y.max(0.0) / 2.0).floor()),
            "poisson",
        ),
        (
            Objective::Tweedie { rho: 1.5 },
            Box::new(|y: f64| (y - 4.0).max(0.0)),
            "tweedie",
        ),
        (Objective::Gamma, Box::new(|y: f64| y.abs() + 0.5), "gamma"),
        (Objective::RegressionL1, Box::new(|y| y), "mae"),
        (
            Objective::Quantile { alpha: 0.8 },
            Box::new(|y| y),
            "quantile",
        ),
        (Objective::Huber { alpha: 1.0 }, Box::new(|y| y), "huber"),
    ];
    for (obj, f, m) in cases {
        let mut d = base.clone();
        d.target = d.target.iter().map(|y| f(*y)).collect();
        let p = Params {
            objective: obj,
            metric: vec![m.to_string()],
            ..params(60)
        };
        let mut first = None;
        let mut last = 0.0;
        let b = train(&d, None, &p, &mut |l| {
            let v = l.values[0].2;
            first.get_or_insert(v);
            last = v;
        })
        .expect("train");
        let first = first.expect("logged");
        if m == "auc" {
            assert!(
                last > 0.9 && last >= first,
                "{}: auc {first} -> {last}",
                obj.name()
            );
        } else {
            assert!(last < first, "{}: {m} {first} -> {last}", obj.name());
        }
        let pred = b.predict(&d).expect("predict");
        match obj {
            Objective::Binary => assert!(pred.iter().all(|p| (0.0..=1.0).contains(p))),
            Objective::Poisson | Objective::Tweedie { .. } | Objective::Gamma => {
                assert!(pred.iter().all(|p| *p > 0.0))
            }
            Objective::Quantile { alpha } => {
                let below = d.target.iter().zip(&pred).filter(|(y, p)| *y <= *p).count() as f64
                    / d.target.len() as f64;
                assert!((below - alpha).abs() < 0.06, "coverage {below}");
            }
            _ => {}
        }
    }
}

#[test]
fn early_stopping_keeps_the_best_iteration() {
    let tr = synthetic(600, 11, 0.0);
    let va = synthetic(600, 12, 0.0);
    let p = Params {
        num_iterations: 500,
        learning_rate: 0.5,
        num_leaves: 31,
        min_data_in_leaf: 2,
        early_stopping_round: 10,
        ..Default::default()
    };
    let mut curve = Vec::new();
    let (b, fitted) =
        train_with_predictions(&tr, Some(&va), &p, &mut |l| curve.push(l.values[1].2))
            .expect("train");
    assert!(curve.len() < 500, "never stopped");
    // The training predictions handed back are the truncated model's, to the bit.
    let again = b.predict(&tr).expect("predict");
    assert_eq!(fitted.len(), again.len());
    for (r, (a, e)) in fitted.iter().zip(&again).enumerate() {
        assert_eq!(a.to_bits(), e.to_bits(), "row {r}: {a} vs {e}");
    }
    let best = curve
        .iter()
        .copied()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|x| x.0 + 1)
        .expect("curve");
    assert_eq!(b.best_iteration, best);
    assert_eq!(b.trees.len(), best);
    assert_eq!(curve.len(), best + 10);
}

#[test]
fn depth_wise_growth_respects_max_depth() {
    let tr = synthetic(3000, 13, 0.0);
    let p = Params {
        grow_policy: GrowPolicy::DepthWise,
        max_depth: 3,
        num_leaves: 1000,
        ..params(5)
    };
    let b = train(&tr, None, &p, &mut |_| {}).expect("train");
    for t in &b.trees {
        assert!(t.n_leaves() <= 8);
        fn depth(t: &contrail_gbdt::tree::Tree, n: i32) -> usize {
            if n < 0 {
                0
            } else {
                1 + depth(t, t.left[n as usize]).max(depth(t, t.right[n as usize]))
            }
        }
        assert!(depth(t, 0) <= 3);
    }
    let leafwise = train(
        &tr,
        None,
        &Params {
            max_depth: 3,
            ..params(5)
        },
        &mut |_| {},
    )
    .expect("train");
    assert!(leafwise.trees.iter().all(|t| t.n_leaves() <= 8));
}

#[test]
fn bad_labels_and_params_are_typed_errors() {
    let d = synthetic(100, 1, 0.0);
    let e = train(
        &d,
        None,
        &Params {
            objective: Objective::Binary,
            ..params(2)
        },
        &mut |_| {},
    )
    .expect_err("labels");
    assert!(e.to_string().contains("row 0"), "{e}");
    let e = train(
        &d,
        None,
        &Params {
            num_leaves: 1,
            ..params(2)
        },
        &mut |_| {},
    )
    .expect_err("leaves");
    assert!(e.to_string().contains("num_leaves"), "{e}");
}

/// The path-dependent value function v(S): features in S follow the row, the others
/// average both children by training cover.
fn cond_exp(
    t: &contrail_gbdt::tree::Tree,
    c: i32,
    x: &[f64],
    b: &contrail_gbdt::Booster,
    s: u32,
) -> f64 {
    if c < 0 {
        return t.leaf_value[!c as usize];
    }
    let n = c as usize;
    let cov = |c: i32| {
        if c < 0 {
            t.leaf_count[!c as usize] as f64
        } else {
            t.node_count[c as usize] as f64
        }
    };
    let f = t.feature[n] as usize;
    if s >> f & 1 == 1 {
        // Follow the row (leaf_of_raw on a one-node walk).
        let v = x[f];
        let left = if t.cat_index[n] >= 0 {
            let bin = if v.is_nan() {
                b.mappers[f].missing_bin()
            } else {
                v as usize
            };
            t.cat_bitsets[t.cat_index[n] as usize]
                .get(bin / 32)
                .is_some_and(|w| w >> (bin % 32) & 1 == 1)
        } else if v.is_nan() {
            t.default_left[n]
        } else {
            v <= t.threshold[n]
        };
        cond_exp(t, if left { t.left[n] } else { t.right[n] }, x, b, s)
    } else {
        let (l, r) = (t.left[n], t.right[n]);
        (cov(l) * cond_exp(t, l, x, b, s) + cov(r) * cond_exp(t, r, x, b, s))
            / t.node_count[n] as f64
    }
}

#[test]
fn shap_matches_brute_force_and_sums_to_the_prediction() {
    let tr = synthetic(3000, 21, 0.1);
    let b = train(&tr, None, &params(8), &mut |_| {}).expect("train");
    let x = b.prepare(&tr).expect("prepare");
    let nf = b.n_features();
    let raw = b.predict_raw(&x, None);
    let fact = |k: usize| (1..=k).product::<usize>() as f64;
    for r in (0..3000).step_by(97) {
        let row = &x[r * nf..(r + 1) * nf];
        let phi = b.shap_row(row, None);
        let sum: f64 = phi.iter().sum();
        assert!(
            (sum - raw[r]).abs() <= 1e-9 * raw[r].abs().max(1.0),
            "row {r}: {sum} vs {}",
            raw[r]
        );
        // Exact Shapley values of the path-dependent value function, by enumeration.
        for i in 0..nf {
            let mut want = 0.0;
            for s in 0u32..(1 << nf) {
                if s >> i & 1 == 1 {
                    continue;
                }
                let k = s.count_ones() as usize;
                let w = fact(k) * fact(nf - k - 1) / fact(nf);
                let with: f64 = b
                    .trees
                    .iter()
                    .filter(|t| t.n_nodes() > 0)
                    .map(|t| cond_exp(t, 0, row, &b, s | 1 << i))
                    .sum();
                let without: f64 = b
                    .trees
                    .iter()
                    .filter(|t| t.n_nodes() > 0)
                    .map(|t| cond_exp(t, 0, row, &b, s))
                    .sum();
                want += w * (with - without);
            }
            assert!(
                (phi[i] - want).abs() <= 1e-9 * want.abs().max(1.0),
                "row {r} feature {i}: {} vs {want}",
                phi[i]
            );
        }
    }
}

#[test]
fn monotone_constraints_hold_on_random_inputs() {
    let tr = synthetic(4000, 31, 0.05);
    // y rises then falls with `a` (a sine): force it increasing, and `b` (b²) decreasing.
    let p = Params {
        monotone_constraints: vec![1, -1, 0, 0],
        ..params(40)
    };
    let b = train(&tr, None, &p, &mut |_| {}).expect("train");
    let free = train(&tr, None, &params(40), &mut |_| {}).expect("train");
    let nf = b.n_features();
    let x = b.prepare(&tr).expect("prepare");
    let mut r = Lcg(5);
    let mut violations_free = 0;
    for row in x.chunks(nf).take(300) {
        for (f, sign) in [(0usize, 1.0), (1, -1.0)] {
            let mut grid: Vec<f64> = (0..40)
                .map(|_| {
                    if f == 0 {
                        r.next() * 10.0
                    } else {
                        r.next() * 4.0 - 2.0
                    }
                })
                .collect();
            grid.sort_by(f64::total_cmp);
            let rows: Vec<f64> = grid
                .iter()
                .flat_map(|v| {
                    let mut z = row.to_vec();
                    z[f] = *v;
                    z
                })
                .collect();
            let p = b.predict_raw(&rows, None);
            for w in p.windows(2) {
                assert!(
                    sign * (w[1] - w[0]) >= -1e-12,
                    "feature {f} not monotone: {} then {}",
                    w[0],
                    w[1]
                );
            }
            let q = free.predict_raw(&rows, None);
            violations_free += q
                .windows(2)
                .filter(|w| sign * (w[1] - w[0]) < -1e-9)
                .count();
        }
    }
    assert!(
        violations_free > 0,
        "the unconstrained model should not be monotone here"
    );
    let e = train(
        &tr,
        None,
        &Params {
            monotone_constraints: vec![0, 0, 0, 1],
            ..params(2)
        },
        &mut |_| {},
    )
    .expect_err("categorical");
    assert!(e.to_string().contains("airport"), "{e}");
}

/// LightGBM's categorical split, computed directly from the rows: categories (missing is
/// one more) with one-vs-rest splits when there are at most `max_cat_to_onehot` of them;
/// else the categories with at least `cat_smooth` rows sorted by `G / (H + cat_smooth)`,
/// split after each prefix from both ends (up to `min(max_cat_threshold, ceil(k/2))`
/// categories) with `cat_l2` on both sides, a prefix evaluated only once
/// `min_data_per_group` rows joined since the last one and while the rest keeps
/// `min_data_per_group` rows. Counts are estimated from hessians as the trainer does
/// (`round(n · H_category / H)`).
fn naive_categorical_gain(cat: &[Option<usize>], g: &[f64], h: &[f64], p: &Params) -> f64 {
    let n = cat.len() as f64;
    let (gt, ht): (f64, f64) = (g.iter().sum(), h.iter().sum());
    let score = |gs: f64, hs: f64, l2: f64| gs * gs / (hs + p.lambda_l2 + l2);
    let parent = score(gt, ht, 0.0);
    let mut groups: std::collections::BTreeMap<Option<usize>, (f64, f64)> = Default::default();
    for i in 0..cat.len() {
        let e = groups.entry(cat[i]).or_default();
        e.0 += g[i];
        e.1 += h[i];
    }
    let est = |hs: f64| (hs * n / ht).round() as usize;
    let ok = |hs: f64| est(hs) >= p.min_data_in_leaf && hs >= p.min_sum_hessian_in_leaf;
    let mut best = f64::MIN;
    let all: Vec<(f64, f64)> = groups.values().copied().collect();
    if all.len() <= p.max_cat_to_onehot {
        for &(gl, hl) in &all {
            if ok(hl) && ok(ht - hl) {
                best = best.max(score(gl, hl, 0.0) + score(gt - gl, ht - hl, 0.0) - parent);
            }
        }
        return best;
    }
    let mut cand: Vec<(f64, f64)> = all
        .into_iter()
        .filter(|x| est(x.1) as f64 >= p.cat_smooth)
        .collect();
    cand.sort_by(|a, b| (a.0 / (a.1 + p.cat_smooth)).total_cmp(&(b.0 / (b.1 + p.cat_smooth))));
    let k = cand.len();
    let max_num_cat = p.max_cat_threshold.min(k.div_ceil(2));
    for order in [cand.clone(), cand.iter().rev().copied().collect()] {
        let (mut gl, mut hl, mut nl, mut group) = (0.0, 0.0, 0usize, 0usize);
        for &(gc, hc) in &order[..max_num_cat] {
            gl += gc;
            hl += hc;
            nl += est(hc);
            group += est(hc);
            if nl < p.min_data_in_leaf || hl < p.min_sum_hessian_in_leaf {
                continue;
            }
            let nr = cat.len() - nl;
            if nr < p.min_data_in_leaf
                || nr < p.min_data_per_group
                || ht - hl < p.min_sum_hessian_in_leaf
            {
                break;
            }
            if group < p.min_data_per_group {
                continue;
            }
            group = 0;
            if ok(hl) && ok(ht - hl) {
                best =
                    best.max(score(gl, hl, p.cat_l2) + score(gt - gl, ht - hl, p.cat_l2) - parent);
            }
        }
    }
    best
}

#[test]
fn categorical_and_weighted_split_gains_match_a_naive_reference() {
    let names: Vec<String> = (0..12).map(|i| format!("C{i}")).collect();
    for seed in 0..30u64 {
        let mut r = Lcg(seed + 500);
        let n = 400;
        // 3 categories + missing (one-vs-rest) or 12 + missing (gradient ordering).
        let k = if seed % 2 == 0 { 3 } else { 12 };
        let cat: Vec<Option<usize>> = (0..n)
            .map(|_| {
                if r.next() < 0.1 {
                    None
                } else {
                    Some((r.next() * k as f64) as usize)
                }
            })
            .collect();
        let w: Vec<f64> = (0..n).map(|_| 0.5 + 1.5 * r.next()).collect();
        // Per-category offsets so that the best split is a real partition.
        let off: Vec<f64> = (0..=k).map(|_| r.next() * 2.0 - 1.0).collect();
        let g: Vec<f64> = (0..n)
            .map(|i| (off[cat[i].unwrap_or(k)] + r.next() - 0.5) * w[i])
            .collect();
        let h: Vec<f64> = (0..n).map(|i| (0.5 + r.next()) * w[i]).collect();
        let values: Vec<Option<&str>> = cat.iter().map(|c| c.map(|c| names[c].as_str())).collect();
        let (binned, gh, sg, sh, gd, hd) = one_feature(Column::categorical(&values), &g, &h);
        let p = Params {
            num_leaves: 2,
            min_data_in_leaf: 5,
            min_data_per_group: [5, 40, 100][seed as usize % 3],
            min_sum_hessian_in_leaf: 0.0,
            lambda_l2: 1.0,
            learning_rate: 1.0,
            ..Default::default()
        };
        let mut rows: Vec<u32> = (0..n as u32).collect();
        let grown = grow_tree(&binned, &p, &[0], &mut rows, &gh, sg, sh);
        let want = naive_categorical_gain(&cat, &gd, &hd, &p);
        let got = grown.tree.gain[0];
        assert!(
            (got - want).abs() <= 1e-9 * want.abs().max(1.0),
            "seed {seed} ({k} categories): {got} vs {want}"
        );
        // Children's values: L2 plus cat_l2 after a gradient-ordered split.
        let l2 = p.lambda_l2 + if k > 3 { p.cat_l2 } else { 0.0 };
        for (leaf, &(b, len)) in grown.leaf_rows.iter().enumerate() {
            let idx = &rows[b..b + len];
            let gs: f64 = idx.iter().map(|&i| gd[i as usize]).sum();
            let hs: f64 = idx.iter().map(|&i| hd[i as usize]).sum();
            let want = -gs / (hs + l2);
            let got = grown.tree.leaf_value[leaf];
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "seed {seed}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn integer_weights_equal_repeated_rows() {
    // Few distinct values, so each value has its own bin in both datasets (equal-frequency
    // cuts would otherwise move with the repetition).
    let mut base = synthetic(600, 9, 0.05);
    for c in base.columns.iter_mut() {
        if let Column::Numeric(v) = c {
            v.iter_mut().for_each(|x| *x = (*x * 10.0).round() / 10.0);
        }
    }
    let mut r = Lcg(77);
    let w: Vec<f64> = (0..600)
        .map(|_| (1 + (r.next() * 3.0) as usize) as f64)
        .collect();
    let mut weighted = base.clone();
    weighted.weights = Some(w.clone());
    // The same rows, each repeated weight times.
    let idx: Vec<usize> = (0..600)
        .flat_map(|i| std::iter::repeat_n(i, w[i] as usize))
        .collect();
    let repeated = base.gather(&idx);
    // Row-count thresholds (which a weight does not multiply) out of the way: every
    // category of a leaf is a candidate in both.
    let p = Params {
        min_data_in_leaf: 1,
        min_data_per_group: 1,
        min_sum_hessian_in_leaf: 0.0,
        cat_smooth: 1.0,
        ..params(5)
    };
    let a = train(&weighted, None, &p, &mut |_| {}).expect("weighted");
    let b = train(&repeated, None, &p, &mut |_| {}).expect("repeated");
    assert!((a.init_score - b.init_score).abs() < 1e-9);
    for (ta, tb) in a.trees.iter().zip(&b.trees) {
        assert_eq!(ta.feature, tb.feature);
        assert_eq!(ta.threshold_bin.len(), tb.threshold_bin.len());
        for (x, y) in ta.leaf_value.iter().zip(&tb.leaf_value) {
            assert!((x - y).abs() < 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
    }
}

#[test]
fn features_that_cannot_split_change_nothing() {
    let base = synthetic(2000, 21, 0.05);
    let mut wide = base.clone();
    // A constant column, and one whose rare value has fewer rows than min_data_in_leaf.
    wide.names.insert(1, "constant".into());
    wide.columns.insert(1, Column::Numeric(vec![7.0; 2000]));
    wide.names.push("rare".into());
    wide.columns.push(Column::Numeric(
        (0..2000).map(|i| if i < 3 { 1.0 } else { 0.0 }).collect(),
    ));
    let p = params(10);
    let a = train(&base, None, &p, &mut |_| {}).expect("base");
    let b = train(&wide, None, &p, &mut |_| {}).expect("wide");
    let (ga, _) = a.importance();
    let (gb, _) = b.importance();
    assert_eq!(gb[1], 0.0);
    assert_eq!(gb[gb.len() - 1], 0.0);
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    assert_eq!(
        bits(a.predict(&base).expect("predict")),
        bits(b.predict(&wide).expect("predict"))
    );
    assert_eq!(ga.len() + 2, gb.len());
}

#[test]
fn bundled_features_grow_the_same_trees() {
    // Features with few bins (flags, days, small categoricals, with missing values) share
    // one-byte columns of joint bins; histograms and trees must be the same bits as with
    // one column per feature, for every feature and for a subset.
    let mut r = Lcg(5);
    let n = 6000;
    let mut cols = Vec::new();
    for k in [2usize, 3, 7, 2, 4, 12] {
        cols.push(Column::Numeric(
            (0..n)
                .map(|_| {
                    if r.next() < 0.05 {
                        f64::NAN
                    } else {
                        (r.next() * k as f64).floor()
                    }
                })
                .collect(),
        ));
    }
    let cats = ["a", "b", "c", "d"];
    let cat: Vec<Option<&str>> = (0..n)
        .map(|_| {
            let u = r.next();
            (u > 0.03).then(|| cats[(u * 4.0) as usize % 4])
        })
        .collect();
    cols.push(Column::categorical(&cat));
    cols.push(Column::Numeric((0..n).map(|_| r.next()).collect()));
    let nf = cols.len();
    let g: Vec<f64> = (0..n)
        .map(|i| {
            let c = |f: usize| match &cols[f] {
                Column::Numeric(v) => v[i].max(0.0),
                _ => 0.0,
            };
            c(0) * 2.0 - c(2) * 0.3 + c(5) * 0.1 + c(7) + r.next() - 0.5
        })
        .collect();
    let data = Dataset {
        names: (0..nf).map(|i| format!("x{i}")).collect(),
        columns: cols,
        target: vec![0.0; n],
        weights: None,
    };
    let bundled = Binned::fit(&data, 255);
    assert!(bundled.rows.groups.iter().any(|g| g.members.len() >= 3));
    assert!(bundled.rows.width() < nf);
    let mut single = bundled.clone();
    let all: Vec<usize> = (0..nf).collect();
    single.pack(&all, false);
    assert_eq!(single.rows.width(), nf);
    let (gh, sg, sh) = quantise(&g, &vec![1.0; n]).expect("quantise");
    let p = Params {
        num_leaves: 31,
        min_data_in_leaf: 5,
        ..Default::default()
    };
    for feats in [all.clone(), vec![1, 4, 6, 7], vec![3]] {
        let rows: Vec<u32> = (0..n as u32).filter(|i| i % 3 != 0).collect();
        let total = bundled.total_bins();
        let hb = build_histogram(&bundled, &feats, &rows, &gh);
        let hs = build_histogram(&single, &feats, &rows, &gh);
        for &f in &feats {
            let o = bundled.offsets[f]..bundled.offsets[f + 1];
            assert_eq!(hb[o.clone()], hs[o], "feature {f} of {feats:?}");
        }
        assert_eq!(hs.len(), total);
        let (mut ra, mut rb) = (rows.clone(), rows.clone());
        let ta = grow_tree(&bundled, &p, &feats, &mut ra, &gh, sg, sh);
        let tb = grow_tree(&single, &p, &feats, &mut rb, &gh, sg, sh);
        assert!(ta.tree.left.len() >= 2, "{feats:?}");
        assert_eq!(ta.tree, tb.tree, "{feats:?}");
        assert_eq!(ra, rb);
    }
}
