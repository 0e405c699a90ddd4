//! Samplers: random, a seeded Latin-hypercube start-up design, Gaussian process with
//! expected improvement, and multivariate TPE; batches of suggestions by constant liar.
//!
//! Every suggestion is a pure function of (seed, first trial number of the batch, the
//! observations), drawn from its own random stream: no sampler state lives between calls,
//! so a resumed study suggests what the uninterrupted one would have, on any thread count.

use crate::gp::{self, Hyper, Inputs, Posterior};
use crate::optim::minimize_box;
use crate::rng::Rng;
use crate::space::SearchSpace;

/// Which sampler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    /// Independent uniform draws in the unit cube.
    Random,
    /// Multivariate tree-structured Parzen estimator (as Optuna 5's default TPE).
    Tpe,
    /// Gaussian process (Matérn 5/2, ARD) with expected improvement.
    Gp,
}

impl std::str::FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(SamplerKind::Random),
            "tpe" => Ok(SamplerKind::Tpe),
            "gp" => Ok(SamplerKind::Gp),
            other => Err(format!(
                "unknown sampler {other:?} (expected gp, tpe or random)"
            )),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SamplerKind::Random => "random",
            SamplerKind::Tpe => "tpe",
            SamplerKind::Gp => "gp",
        })
    }
}

/// What a sampler knows of a trial. Values are to be minimised (a maximising study
/// negates them before they get here).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Complete(f64),
    /// Stopped early; its last intermediate value if it reported one.
    Pruned(Option<f64>),
    Failed,
    /// Asked, not yet told: constant liar.
    Running,
}

/// One trial as the sampler sees it: its canonical point and outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub trial: usize,
    pub x: Vec<f64>,
    pub outcome: Outcome,
}

/// A configured sampler.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub kind: SamplerKind,
    pub seed: u64,
    /// Trials (by number) drawn from the start-up design before the model takes over.
    pub n_startup: usize,
}

const PURPOSE_DESIGN: u64 = 1;
const PURPOSE_RANDOM: u64 = 2;
const PURPOSE_MODEL: u64 = 3;

impl Sampler {
    /// A sampler with its default start-up size for a space of `dims` dimensions: none
    /// for random, 10 for TPE (Optuna's), d + 1 clamped to [4, 10] for the GP.
    pub fn new(kind: SamplerKind, seed: u64, dims: usize) -> Self {
        let n_startup = match kind {
            SamplerKind::Random => 0,
            SamplerKind::Tpe => 10,
            SamplerKind::Gp => (dims + 1).clamp(4, 10),
        };
        Sampler {
            kind,
            seed,
            n_startup,
        }
    }

    /// Canonical points for `trials` (consecutive new trial numbers), given every trial
    /// asked so far. Later members of the batch see the earlier ones as running (constant
    /// liar).
    ///
    /// `warm` is the model state of the previous batch ([`Suggestions::model`], kept in the
    /// journal): the GP starts its hyperparameter fit there.
    pub fn suggest(
        &self,
        space: &SearchSpace,
        history: &[Observation],
        trials: &[usize],
        warm: Option<&[f64]>,
    ) -> Suggestions {
        // Points that are not of this space (a caller's mistake) are ignored, not a panic.
        let mut hist: Vec<Observation> = history
            .iter()
            .filter(|o| o.x.len() == space.dims())
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(trials.len());
        let first = trials.first().copied().unwrap_or(0) as u64;
        let mut model_rng = Rng::stream(self.seed, first, PURPOSE_MODEL);
        let warm = warm.filter(|w| w.len() == space.dims() + 3);
        let mut gp_cache: Option<Hyper> = None;
        for &t in trials {
            let complete = hist
                .iter()
                .filter(|o| matches!(o.outcome, Outcome::Complete(_)))
                .count();
            let x = if self.kind == SamplerKind::Random {
                random_point(space, &mut Rng::stream(self.seed, t as u64, PURPOSE_RANDOM))
            } else if t < self.n_startup {
                design_point(space, self.seed, self.n_startup, t)
            } else if complete < 2 {
                random_point(space, &mut Rng::stream(self.seed, t as u64, PURPOSE_RANDOM))
            } else {
                match self.kind {
                    SamplerKind::Gp => {
                        gp_suggest(space, &hist, &mut model_rng, &mut gp_cache, warm)
                            .unwrap_or_else(|| {
                                random_point(
                                    space,
                                    &mut Rng::stream(self.seed, t as u64, PURPOSE_RANDOM),
                                )
                            })
                    }
                    _ => tpe_suggest(space, &hist, &mut model_rng),
                }
            };
            hist.push(Observation {
                trial: t,
                x: x.clone(),
                outcome: Outcome::Running,
            });
            out.push(x);
        }
        Suggestions {
            points: out,
            model: gp_cache
                .map(|h| h.theta)
                .or_else(|| warm.map(|w| w.to_vec())),
        }
    }
}

/// A batch of suggestions.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestions {
    /// Canonical points, one per trial asked.
    pub points: Vec<Vec<f64>>,
    /// The GP's fitted hyperparameters (log space) and the number of observations they
    /// were fitted on, to warm-start the next batch's fit.
    pub model: Option<Vec<f64>>,
}

/// A uniform canonical point.
pub fn random_point(space: &SearchSpace, rng: &mut Rng) -> Vec<f64> {
    let mut x: Vec<f64> = (0..space.dims())
        .map(|i| match space.choices(i) {
            Some(k) => rng.below(k) as f64,
            None => rng.uniform(),
        })
        .collect();
    space.canonicalize(&mut x);
    x
}

/// Row `t` of the seeded Latin-hypercube design of `n` rows: each dimension's range cut
/// into `n` strata, one point per stratum (a categorical's choices spread evenly).
pub fn design_point(space: &SearchSpace, seed: u64, n: usize, t: usize) -> Vec<f64> {
    let mut rng = Rng::stream(seed, 0, PURPOSE_DESIGN);
    let mut x = Vec::with_capacity(space.dims());
    for i in 0..space.dims() {
        let perm = rng.permutation(n);
        let jitter: Vec<f64> = (0..n).map(|_| rng.uniform()).collect();
        let u = (perm[t] as f64 + jitter[t]) / n as f64;
        x.push(match space.choices(i) {
            Some(k) => ((perm[t] * k) / n).min(k - 1) as f64,
            None => u,
        });
    }
    space.canonicalize(&mut x);
    x
}

// ---------------------------------------------------------------------------------------
// Gaussian process with expected improvement

/// The GP's input for a point: inactive numeric dimensions at 0.5, inactive categorical
/// ones as an extra choice (so "absent" is its own category).
fn gp_features(space: &SearchSpace, x: &[f64], out: &mut Vec<f64>) {
    for (i, &v) in x.iter().enumerate() {
        out.push(match (v.is_nan(), space.choices(i)) {
            (false, _) => v,
            (true, Some(k)) => k as f64,
            (true, None) => 0.5,
        });
    }
}

fn gp_suggest(
    space: &SearchSpace,
    hist: &[Observation],
    rng: &mut Rng,
    cache: &mut Option<Hyper>,
    warm: Option<&[f64]>,
) -> Option<Vec<f64>> {
    let d = space.dims();
    let cat: Vec<bool> = (0..d).map(|i| space.choices(i).is_some()).collect();
    // Real observations (outputs warped and standardised), then lies for the running
    // trials at their mean, 0.
    let done: Vec<(&Observation, f64)> = hist
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Complete(v) => Some((o, v)),
            _ => None,
        })
        .collect();
    let ys: Vec<f64> = done.iter().map(|(_, v)| *v).collect();
    let y_real = gp::warp_outputs(&ys);
    let mut x_real = Vec::with_capacity(done.len() * d);
    for (o, _) in &done {
        gp_features(space, &o.x, &mut x_real);
    }
    let real = Inputs {
        n: done.len(),
        d,
        x: x_real,
        cat: cat.clone(),
    };
    // Hyperparameters: fitted once per batch on the real observations. Without a warm
    // start, L-BFGS from three starts. With one (the previous fit, journaled as
    // `[θ..., n at fit]`), they change slowly: past 50 observations they are refitted only
    // when the data grew by 5% since, and then the starts are scored and L-BFGS runs from
    // the best only; this keeps a suggestion fast at hundreds of trials.
    let n_real = real.n;
    let hyper = match cache {
        Some(h) => h.clone(),
        None => {
            let h = match warm {
                Some(w)
                    if n_real >= 50 && (n_real as f64) < w[d + 2] + (w[d + 2] / 20.0).max(1.0) =>
                {
                    Hyper { theta: w.to_vec() }
                }
                Some(w) => {
                    let mut starts = vec![w[..d + 2].to_vec()];
                    if n_real < 100 {
                        starts.extend([
                            gp::default_start(d),
                            gp::default_start_long(d),
                            gp::random_start(d, rng),
                        ]);
                    }
                    // Past 100 observations a refit starts next to its answer (the data
                    // grew by 5%) and each likelihood costs O(n³): six L-BFGS steps from
                    // the previous fit alone keep the refit's suggestion under 50 ms at 200
                    // trials (four scored starts and fifteen steps took up to 77 ms);
                    // studies of up to 100 trials are unchanged.
                    let iters = if n_real >= 100 { 6 } else { 15 };
                    let mut h = gp::fit_best_start(&real, &y_real, &starts, iters);
                    h.theta.push(n_real as f64);
                    h
                }
                None => {
                    let starts = vec![
                        gp::default_start(d),
                        gp::default_start_long(d),
                        gp::random_start(d, rng),
                    ];
                    let mut h = gp::fit(&real, &y_real, &starts, 60);
                    h.theta.push(n_real as f64);
                    h
                }
            };
            *cache = Some(h.clone());
            h
        }
    };
    let hyper = Hyper {
        theta: hyper.theta[..d + 2].to_vec(),
    };
    let mut inp = real;
    let mut y = y_real.clone();
    for o in hist.iter().filter(|o| o.outcome == Outcome::Running) {
        gp_features(space, &o.x, &mut inp.x);
        inp.n += 1;
        y.push(0.0);
    }
    let post = Posterior::new(&inp, &y, &hyper)?;
    // The incumbent is the best posterior mean among the observed points, not the best
    // observation: on a noisy objective (a model's validation loss moves by a few parts
    // in a thousand when bagging draws other rows) the best observation is partly luck,
    // and improving on it sends the search back to that one lucky point. With little
    // fitted noise (deterministic functions) the two are the same.
    let best = post
        .fitted_means(&y, y_real.len())
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let x = maximize_ei(space, &post, best, &done, rng);
    // Never suggest a point already asked (ints and categoricals can collide).
    if hist.iter().any(|o| same_point(&o.x, &x)) {
        return None;
    }
    Some(x)
}

fn same_point(a: &[f64], b: &[f64]) -> bool {
    a.iter()
        .zip(b)
        .all(|(p, q)| (p.is_nan() && q.is_nan()) || (p - q).abs() < 1e-12)
}

/// Log EI at a raw point (numeric dimensions continuous, activity from the canonical form)
/// and its gradient in the numeric dimensions that are active.
fn ei_at(
    space: &SearchSpace,
    post: &Posterior,
    best: f64,
    raw: &[f64],
    grad: bool,
) -> (f64, Vec<f64>) {
    let mut canon = raw.to_vec();
    space.canonicalize(&mut canon);
    let mut z = Vec::with_capacity(raw.len());
    let relaxed: Vec<f64> = raw
        .iter()
        .zip(&canon)
        .enumerate()
        .map(|(i, (r, c))| {
            if c.is_nan() || space.choices(i).is_some() {
                *c
            } else {
                r.clamp(0.0, 1.0)
            }
        })
        .collect();
    gp_features(space, &relaxed, &mut z);
    let p = post.predict(&z, grad);
    let (v, mut g) = gp::log_ei(&p, best);
    if grad {
        for i in 0..raw.len() {
            if canon[i].is_nan() || space.choices(i).is_some() {
                g[i] = 0.0;
            }
        }
    }
    (v, g)
}

fn maximize_ei(
    space: &SearchSpace,
    post: &Posterior,
    best: f64,
    done: &[(&Observation, f64)],
    rng: &mut Rng,
) -> Vec<f64> {
    let d = space.dims();
    let n_random = 256 + 32 * d;
    let mut cands: Vec<Vec<f64>> = (0..n_random).map(|_| random_point(space, rng)).collect();
    // Around the best points so far: local perturbations.
    let mut order: Vec<usize> = (0..done.len()).collect();
    order.sort_by(|&a, &b| done[a].1.total_cmp(&done[b].1));
    for &i in order.iter().take(5) {
        for _ in 0..16 {
            let mut x = done[i].0.x.clone();
            for (k, v) in x.iter_mut().enumerate() {
                match space.choices(k) {
                    Some(nc) => {
                        if v.is_nan() || rng.uniform() < 0.15 {
                            *v = rng.below(nc) as f64;
                        }
                    }
                    None => {
                        let base = if v.is_nan() { rng.uniform() } else { *v };
                        *v = (base + 0.05 * rng.normal()).clamp(0.0, 1.0);
                    }
                }
            }
            space.canonicalize(&mut x);
            cands.push(x);
        }
    }
    let mut scored: Vec<(f64, usize)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (ei_at(space, post, best, c, false).0, i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut best_x = cands[scored[0].1].clone();
    let mut best_v = scored[0].0;
    for &(_, ci) in scored.iter().take(3) {
        let mut x = cands[ci].clone();
        // Inactive dimensions get a value so that they can become active in the sweep.
        for (k, v) in x.iter_mut().enumerate() {
            if v.is_nan() {
                *v = if space.choices(k).is_some() { 0.0 } else { 0.5 };
            }
        }
        for _round in 0..2 {
            // Continuous local search on the numeric dimensions.
            let lo: Vec<f64> = (0..d)
                .map(|k| {
                    if space.choices(k).is_some() {
                        x[k]
                    } else {
                        0.0
                    }
                })
                .collect();
            let hi: Vec<f64> = (0..d)
                .map(|k| {
                    if space.choices(k).is_some() {
                        x[k]
                    } else {
                        1.0
                    }
                })
                .collect();
            let (xo, _) = minimize_box(
                |z: &[f64]| {
                    let (v, g) = ei_at(space, post, best, z, true);
                    v.is_finite()
                        .then(|| (-v, g.into_iter().map(|a| -a).collect()))
                },
                &x,
                &lo,
                &hi,
                40,
            );
            x = xo;
            // Coordinate sweep over the categorical dimensions.
            let mut changed = false;
            for k in 0..d {
                let Some(nc) = space.choices(k) else { continue };
                let mut cur = ei_at(space, post, best, &x, false).0;
                for c in 0..nc {
                    let mut y = x.clone();
                    y[k] = c as f64;
                    let v = ei_at(space, post, best, &y, false).0;
                    if v > cur + 1e-12 {
                        cur = v;
                        x = y;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let mut canon = x.clone();
        space.canonicalize(&mut canon);
        let v = ei_at(space, post, best, &canon, false).0;
        if v > best_v {
            best_v = v;
            best_x = canon;
        }
    }
    best_x
}

// ---------------------------------------------------------------------------------------
// Multivariate TPE

/// Good/bad split size: Optuna's default `gamma(n) = min(ceil(0.1 n), 25)`.
fn gamma(n: usize) -> usize {
    (n as f64 * 0.1).ceil().min(25.0) as usize
}

/// Optuna's default weights: flat for the newest 25, a linear ramp for older ones.
fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

/// A Parzen estimator as Optuna 5's multivariate TPE builds it: a mixture of one
/// component per observation plus a prior component, each a product over dimensions of a
/// truncated normal on [0, 1] (numeric; the bandwidth of an observation is its distance to
/// the farther neighbour among the observations, clipped to [1 / min(100, n + 2), 1]) or
/// a smoothed one-hot (categorical: `prior_weight / (n + 1)` on every choice, +1 on the
/// observed one). The prior component is N(0.5, 1) and uniform over choices. An
/// observation's inactive dimension is uniform.
struct Parzen {
    /// Per component: centre per dimension (NaN = uniform).
    mus: Vec<Vec<f64>>,
    /// Per component: bandwidth per numeric dimension.
    sigmas: Vec<Vec<f64>>,
    /// Per component weight (normalised), log.
    log_w: Vec<f64>,
    /// Categorical smoothing: the weight every choice gets besides the observed one's +1.
    cat_base: f64,
    prior_index: usize,
}

const PRIOR_WEIGHT: f64 = 1.0;

impl Parzen {
    fn new(space: &SearchSpace, points: &[&[f64]], w: &[f64]) -> Self {
        let d = space.dims();
        let n = points.len();
        let mut mus: Vec<Vec<f64>> = points.iter().map(|p| p.to_vec()).collect();
        mus.push(vec![0.5; d]);
        let mut sigmas = vec![vec![1.0; d]; n + 1];
        for k in 0..d {
            if space.choices(k).is_some() {
                continue;
            }
            let mut active: Vec<(f64, usize)> = (0..n)
                .filter(|&i| !points[i][k].is_nan())
                .map(|i| (points[i][k], i))
                .collect();
            active.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let m = active.len();
            let mut ends = Vec::with_capacity(m + 2);
            ends.push(0.0);
            ends.extend(active.iter().map(|a| a.0));
            ends.push(1.0);
            let min_s = 1.0 / (100f64).min(1.0 + (m + 1) as f64);
            for (j, &(_, i)) in active.iter().enumerate() {
                // ends[j + 1] is this observation
                let mut sg = (ends[j + 1] - ends[j]).max(ends[j + 2] - ends[j + 1]);
                if m >= 2 && j == 0 {
                    sg = ends[2] - ends[1];
                } else if m >= 2 && j == m - 1 {
                    sg = ends[m] - ends[m - 1];
                }
                sigmas[i][k] = sg.clamp(min_s, 1.0);
            }
        }
        let mut ws = w.to_vec();
        ws.push(PRIOR_WEIGHT);
        let total: f64 = ws.iter().sum();
        let log_w = ws.iter().map(|v| (v / total).ln()).collect();
        Parzen {
            mus,
            sigmas,
            log_w,
            cat_base: PRIOR_WEIGHT / (n + 1) as f64,
            prior_index: n,
        }
    }

    fn n_components(&self) -> usize {
        self.mus.len()
    }

    /// Log density of one dimension of component `c` at `v`.
    fn log_kernel(&self, space: &SearchSpace, c: usize, k: usize, v: f64) -> f64 {
        if v.is_nan() {
            return 0.0;
        }
        let mu = self.mus[c][k];
        match space.choices(k) {
            Some(nc) => {
                if c == self.prior_index || mu.is_nan() {
                    return -(nc as f64).ln();
                }
                let tot = nc as f64 * self.cat_base + 1.0;
                if (v - mu).abs() < 0.5 {
                    ((self.cat_base + 1.0) / tot).ln()
                } else {
                    (self.cat_base / tot).ln()
                }
            }
            None => {
                if mu.is_nan() {
                    return 0.0; // uniform on [0, 1]
                }
                let sg = self.sigmas[c][k];
                let z = (v - mu) / sg;
                let mass = gp::norm_cdf((1.0 - mu) / sg) - gp::norm_cdf(-mu / sg);
                -0.5 * z * z
                    - (2.0 * std::f64::consts::PI).sqrt().ln()
                    - sg.ln()
                    - mass.max(1e-300).ln()
            }
        }
    }

    fn log_density(&self, space: &SearchSpace, x: &[f64]) -> f64 {
        let comps: Vec<f64> = (0..self.n_components())
            .map(|c| {
                self.log_w[c]
                    + (0..x.len())
                        .map(|k| self.log_kernel(space, c, k, x[k]))
                        .sum::<f64>()
            })
            .collect();
        let m = comps.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + comps.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    }

    fn sample(&self, space: &SearchSpace, rng: &mut Rng) -> Vec<f64> {
        // component by weight
        let u = rng.uniform();
        let mut acc = 0.0;
        let mut c = self.n_components() - 1;
        for (i, lw) in self.log_w.iter().enumerate() {
            acc += lw.exp();
            if u < acc {
                c = i;
                break;
            }
        }
        let d = space.dims();
        let mut x = Vec::with_capacity(d);
        for k in 0..d {
            let mu = self.mus[c][k];
            x.push(match space.choices(k) {
                Some(nc) => {
                    if c == self.prior_index || mu.is_nan() {
                        rng.below(nc) as f64
                    } else {
                        let stay = (self.cat_base + 1.0) / (nc as f64 * self.cat_base + 1.0);
                        if rng.uniform() < stay || nc == 1 {
                            mu
                        } else {
                            // one of the others, uniformly
                            let o = rng.below(nc - 1);
                            let o = if (o as f64) >= mu { o + 1 } else { o };
                            o.min(nc - 1) as f64
                        }
                    }
                }
                None => {
                    if mu.is_nan() {
                        rng.uniform()
                    } else {
                        truncated_normal(mu, self.sigmas[c][k], rng)
                    }
                }
            });
        }
        x
    }
}

/// A draw from N(m, s²) truncated to [0, 1] (rejection, then a uniform fallback).
fn truncated_normal(m: f64, s: f64, rng: &mut Rng) -> f64 {
    for _ in 0..64 {
        let v = m + s * rng.normal();
        if (0.0..=1.0).contains(&v) {
            return v;
        }
    }
    rng.uniform()
}

fn tpe_suggest(space: &SearchSpace, hist: &[Observation], rng: &mut Rng) -> Vec<f64> {
    // Rank: complete by value, then pruned by their last value, then running (the liar's
    // worst) and failed trials are left out.
    let mut ranked: Vec<(u8, f64, &Observation)> = hist
        .iter()
        .filter_map(|o| match o.outcome {
            Outcome::Complete(v) => Some((0, v, o)),
            Outcome::Pruned(v) => Some((1, v.unwrap_or(f64::INFINITY), o)),
            Outcome::Running => Some((2, 0.0, o)),
            Outcome::Failed => None,
        })
        .collect();
    ranked.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.trial.cmp(&b.2.trial))
    });
    let n = ranked.len();
    let n_good = gamma(n).max(1).min(n.saturating_sub(1).max(1));
    let (good, bad) = ranked.split_at(n_good);
    // Weights by age: sort each group by trial number.
    let group = |g: &[(u8, f64, &Observation)]| -> Parzen {
        let mut g: Vec<&Observation> = g.iter().map(|t| t.2).collect();
        g.sort_by_key(|o| o.trial);
        let pts: Vec<&[f64]> = g.iter().map(|o| o.x.as_slice()).collect();
        Parzen::new(space, &pts, &weights(pts.len()))
    };
    let l = group(good);
    let gbad = group(bad);
    let mut best: Option<(f64, Vec<f64>)> = None;
    for _ in 0..24 {
        let mut x = l.sample(space, rng);
        space.canonicalize(&mut x);
        let score = l.log_density(space, &x) - gbad.log_density(space, &x);
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, x));
        }
    }
    best.map(|b| b.1)
        .unwrap_or_else(|| random_point(space, rng))
}
