//! Gaussian-process regression with a Matérn 5/2 kernel and per-dimension length scales
//! (automatic relevance determination), and expected improvement.
//!
//! Inputs are points of the unit cube ([`crate::space`]): numeric dimensions contribute
//! `(a - b)²` to the squared distance, categorical ones `[a ≠ b]` (a Hamming distance, the
//! one-hot embedding scaled by 1/√2, so the kernel stays positive definite); each divided
//! by the dimension's squared length scale. Outputs are standardised by the caller.
//!
//! Hyperparameters (log length scales, log signal variance, log noise variance) are fitted
//! by maximising the log marginal likelihood plus weak priors ([`log_prior`]: a MAP fit,
//! which keeps the fit sane with a handful of points), with analytic gradients and
//! multi-start L-BFGS in log space.

use crate::linalg::{cholesky, inverse_from_cholesky, solve_lower, solve_upper_t};
use crate::optim::minimize_box;

const SQRT5: f64 = 2.236_067_977_499_79;
/// Added to the diagonal on top of the fitted noise, relative to the signal variance.
pub const JITTER: f64 = 1e-6;

/// Training inputs: `n` points of `d` dimensions, row-major; `cat[k]` marks categorical
/// dimensions (values are choice indices).
#[derive(Clone, Debug)]
pub struct Inputs {
    pub n: usize,
    pub d: usize,
    pub x: Vec<f64>,
    pub cat: Vec<bool>,
}

impl Inputs {
    pub fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }
}

fn delta(a: f64, b: f64, cat: bool) -> f64 {
    if cat {
        if a == b {
            0.0
        } else {
            1.0
        }
    } else {
        (a - b) * (a - b)
    }
}

/// Kernel hyperparameters in log space: `d` log length scales, then log signal variance,
/// then log noise variance.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyper {
    pub theta: Vec<f64>,
}

impl Hyper {
    pub fn new(length_scales: &[f64], signal_var: f64, noise_var: f64) -> Self {
        let mut theta: Vec<f64> = length_scales.iter().map(|l| l.ln()).collect();
        theta.push(signal_var.ln());
        theta.push(noise_var.ln());
        Hyper { theta }
    }
    fn d(&self) -> usize {
        self.theta.len() - 2
    }
    pub fn signal_var(&self) -> f64 {
        self.theta[self.d()].exp()
    }
    pub fn noise_var(&self) -> f64 {
        self.theta[self.d() + 1].exp()
    }
    /// 1 / l² per dimension.
    fn inv_sq(&self) -> Vec<f64> {
        self.theta[..self.d()]
            .iter()
            .map(|t| (-2.0 * t).exp())
            .collect()
    }
}

/// Matérn 5/2 of r (unit variance) and the factor `(5/3)(1 + √5 r) e^{-√5 r}` that its
/// derivatives share.
fn matern(r2: f64) -> (f64, f64) {
    let r = r2.max(0.0).sqrt();
    let e = (-SQRT5 * r).exp();
    (
        (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * e,
        5.0 / 3.0 * (1.0 + SQRT5 * r) * e,
    )
}

/// Bounds of the hyperparameters (log space): length scales in [5e-3, 1e3], signal
/// variance in [1e-2, 1e2], noise variance in [1e-6, 1].
fn bounds(d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![(5e-3f64).ln(); d];
    let mut hi = vec![(1e3f64).ln(); d];
    lo.push((1e-2f64).ln());
    hi.push((1e2f64).ln());
    lo.push((1e-6f64).ln());
    hi.push(0.0);
    (lo, hi)
}

/// Log prior of the hyperparameters and its gradient in `theta` (Optuna's GP sampler's
/// choices): `-(0.1 l² + 0.1 / l²)` per length scale (weak, centred on l = 1 in the unit
/// cube), Gamma(2, 1) on the signal variance (outputs are standardised), Gamma(1.1, 30) on
/// the noise variance (small unless the data say otherwise).
pub fn log_prior(theta: &[f64]) -> (f64, Vec<f64>) {
    let d = theta.len() - 2;
    let mut lp = 0.0;
    let mut g = vec![0.0; theta.len()];
    for j in 0..d {
        let (a, b) = ((2.0 * theta[j]).exp(), (-2.0 * theta[j]).exp());
        lp -= 0.1 * a + 0.1 * b;
        g[j] = -(0.2 * a - 0.2 * b);
    }
    let s = theta[d].exp();
    lp += theta[d] - s;
    g[d] = 1.0 - s;
    let nv = theta[d + 1].exp();
    lp += 0.1 * theta[d + 1] - 30.0 * nv;
    g[d + 1] = 0.1 - 30.0 * nv;
    (lp, g)
}

/// Pairwise per-dimension distances of the training inputs (i < j), `d` per pair.
pub struct Pairs {
    delta: Vec<f64>,
}

impl Pairs {
    pub fn new(inp: &Inputs) -> Self {
        let (n, d) = (inp.n, inp.d);
        let mut delta = Vec::with_capacity(n * (n.saturating_sub(1)) / 2 * d);
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (inp.row(i), inp.row(j));
                for k in 0..d {
                    delta.push(super::gp::delta(a[k], b[k], inp.cat[k]));
                }
            }
        }
        Pairs { delta }
    }
}

/// Log marginal likelihood of standardised `y` (without priors) and its gradient in
/// `theta`; `None` when the kernel matrix is not positive definite.
pub fn log_marginal_likelihood(
    inp: &Inputs,
    pairs: &Pairs,
    y: &[f64],
    theta: &[f64],
) -> Option<(f64, Vec<f64>)> {
    let (n, d) = (inp.n, inp.d);
    let h = Hyper {
        theta: theta.to_vec(),
    };
    let w = h.inv_sq();
    let amp = h.signal_var();
    let noise = h.noise_var();
    let mut k = vec![0.0; n * n];
    let mut gfac = vec![0.0; n * (n.saturating_sub(1)) / 2];
    let mut p = 0;
    for i in 0..n {
        k[i * n + i] = amp * (1.0 + JITTER) + noise;
        for j in i + 1..n {
            let dl = &pairs.delta[p * d..(p + 1) * d];
            let r2: f64 = dl.iter().zip(&w).map(|(a, b)| a * b).sum();
            let (m, g) = matern(r2);
            k[i * n + j] = amp * m;
            k[j * n + i] = amp * m;
            gfac[p] = amp * g;
            p += 1;
        }
    }
    let kk = k.clone();
    let mut l = k;
    if !cholesky(&mut l, n) {
        return None;
    }
    let mut alpha = y.to_vec();
    solve_lower(&l, n, &mut alpha);
    let quad: f64 = alpha.iter().map(|a| a * a).sum();
    solve_upper_t(&l, n, &mut alpha);
    let logdet: f64 = (0..n).map(|i| l[i * n + i].ln()).sum();
    let lml = -0.5 * quad - logdet - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
    let inv = inverse_from_cholesky(&l, n);
    let mut grad = vec![0.0; d + 2];
    let mut g_amp = 0.0;
    let mut g_noise = 0.0;
    let mut p = 0;
    for i in 0..n {
        let wii = alpha[i] * alpha[i] - inv[i * n + i];
        g_amp += 0.5 * wii * amp * (1.0 + JITTER);
        g_noise += 0.5 * wii * noise;
        for j in i + 1..n {
            let wij = alpha[i] * alpha[j] - inv[i * n + j];
            // both (i, j) and (j, i): the 0.5 cancels
            g_amp += wij * kk[i * n + j];
            let c = wij * gfac[p];
            let dl = &pairs.delta[p * d..(p + 1) * d];
            for kd in 0..d {
                grad[kd] += c * dl[kd] * w[kd];
            }
            p += 1;
        }
    }
    grad[d] = g_amp;
    grad[d + 1] = g_noise;
    Some((lml, grad))
}

/// Fits the hyperparameters: L-BFGS on the negative log posterior from each start,
/// keeping the best.
pub fn fit(inp: &Inputs, y: &[f64], starts: &[Vec<f64>], max_iter: usize) -> Hyper {
    fit_with(inp, y, starts, max_iter, false)
}

/// Fits the hyperparameters: scores every start, then L-BFGS from the best one only.
pub fn fit_best_start(inp: &Inputs, y: &[f64], starts: &[Vec<f64>], max_iter: usize) -> Hyper {
    fit_with(inp, y, starts, max_iter, true)
}

fn fit_with(
    inp: &Inputs,
    y: &[f64],
    starts: &[Vec<f64>],
    max_iter: usize,
    best_only: bool,
) -> Hyper {
    let d = inp.d;
    let (lo, hi) = bounds(d);
    let pairs = Pairs::new(inp);
    let objective = |theta: &[f64]| {
        let (lml, mut g) = log_marginal_likelihood(inp, &pairs, y, theta)?;
        let (lp, gp) = log_prior(theta);
        for j in 0..g.len() {
            g[j] += gp[j];
        }
        Some((-(lml + lp), g.into_iter().map(|v| -v).collect::<Vec<_>>()))
    };
    let mut best: Option<(Vec<f64>, f64)> = None;
    let mut starts = starts.to_vec();
    if best_only {
        let mut scored: Vec<(f64, Vec<f64>)> = starts
            .into_iter()
            .map(|s| {
                let s: Vec<f64> = s
                    .iter()
                    .enumerate()
                    .map(|(j, v)| v.clamp(lo[j], hi[j]))
                    .collect();
                (objective(&s).map_or(f64::INFINITY, |o| o.0), s)
            })
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        starts = scored.into_iter().take(1).map(|s| s.1).collect();
    }
    for s in &starts {
        let x0: Vec<f64> = s
            .iter()
            .enumerate()
            .map(|(j, v)| v.clamp(lo[j], hi[j]))
            .collect();
        let (x, fx) = minimize_box(objective, &x0, &lo, &hi, max_iter);
        if fx.is_finite() && best.as_ref().is_none_or(|b| fx < b.1) {
            best = Some((x, fx));
        }
    }
    let theta = best.map(|b| b.0).unwrap_or_else(|| default_start(d));
    Hyper { theta }
}

/// A neutral start: length scales half the cube, unit signal, small noise.
pub fn default_start(d: usize) -> Vec<f64> {
    Hyper::new(&vec![0.5; d], 1.0, 1e-4).theta
}

/// Long length scales (a smooth, nearly linear function), unit signal, small noise.
pub fn default_start_long(d: usize) -> Vec<f64> {
    Hyper::new(&vec![3.0; d], 1.0, 1e-4).theta
}

/// A random start: log length scales uniform in [ln 0.1, ln 10], signal variance 1,
/// noise 1e-3.
pub fn random_start(d: usize, rng: &mut crate::rng::Rng) -> Vec<f64> {
    let mut t: Vec<f64> = (0..d)
        .map(|_| (0.1f64).ln() + rng.uniform() * (100f64).ln())
        .collect();
    t.push(0.0);
    t.push((1e-3f64).ln());
    t
}

/// The posterior of a fitted GP.
pub struct Posterior {
    n: usize,
    d: usize,
    x: Vec<f64>,
    cat: Vec<bool>,
    w: Vec<f64>,
    amp: f64,
    l: Vec<f64>,
    alpha: Vec<f64>,
    /// What the diagonal carries beyond the signal variance: noise and jitter.
    diag: f64,
}

/// Posterior mean and variance (of the latent function) with their gradients in the
/// numeric dimensions (zero for categorical ones).
pub struct Prediction {
    pub mean: f64,
    pub var: f64,
    pub d_mean: Vec<f64>,
    pub d_var: Vec<f64>,
}

impl Posterior {
    /// Conditions the GP with hyperparameters `h` on (`inp`, `y`); `None` if the kernel
    /// matrix is not positive definite even with extra jitter.
    pub fn new(inp: &Inputs, y: &[f64], h: &Hyper) -> Option<Self> {
        let (n, d) = (inp.n, inp.d);
        let w = h.inv_sq();
        let amp = h.signal_var();
        let noise = h.noise_var();
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let r2: f64 = (0..d)
                    .map(|kd| delta(inp.x[i * d + kd], inp.x[j * d + kd], inp.cat[kd]) * w[kd])
                    .sum();
                let v = amp * matern(r2).0;
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
        }
        let mut extra = 0.0;
        for _ in 0..6 {
            let mut l = k.clone();
            for i in 0..n {
                l[i * n + i] = amp * (1.0 + JITTER) + noise + extra;
            }
            if cholesky(&mut l, n) {
                let mut alpha = y.to_vec();
                solve_lower(&l, n, &mut alpha);
                solve_upper_t(&l, n, &mut alpha);
                return Some(Posterior {
                    n,
                    d,
                    x: inp.x.clone(),
                    cat: inp.cat.clone(),
                    w,
                    amp,
                    l,
                    alpha,
                    diag: amp * JITTER + noise + extra,
                });
            }
            extra = if extra == 0.0 {
                amp * 1e-6
            } else {
                extra * 100.0
            };
        }
        None
    }

    /// The posterior mean of the latent function at each of the first `m` conditioning
    /// points: `y − (σ² + jitter)·α`, since `(K + (σ² + jitter)·I)·α = y` (O(m), no solve).
    /// With little fitted noise these are the observations; on a noisy objective they
    /// are the observations with the noise the model sees taken out.
    pub fn fitted_means(&self, y: &[f64], m: usize) -> Vec<f64> {
        y.iter()
            .zip(&self.alpha)
            .take(m)
            .map(|(v, a)| v - self.diag * a)
            .collect()
    }

    /// Mean and variance at `z`, with gradients when `grad` is set.
    pub fn predict(&self, z: &[f64], grad: bool) -> Prediction {
        let (n, d) = (self.n, self.d);
        let mut kv = vec![0.0; n];
        let mut gf = vec![0.0; if grad { n } else { 0 }];
        for i in 0..n {
            let xi = &self.x[i * d..(i + 1) * d];
            let r2: f64 = (0..d)
                .map(|k| delta(z[k], xi[k], self.cat[k]) * self.w[k])
                .sum();
            let (m, g) = matern(r2);
            kv[i] = self.amp * m;
            if grad {
                gf[i] = self.amp * g;
            }
        }
        let mean: f64 = kv.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let mut v = kv.clone();
        solve_lower(&self.l, n, &mut v);
        let var = (self.amp - v.iter().map(|a| a * a).sum::<f64>()).max(1e-12 * self.amp);
        let mut d_mean = vec![0.0; d];
        let mut d_var = vec![0.0; d];
        if grad {
            let mut beta = v;
            solve_upper_t(&self.l, n, &mut beta); // K⁻¹ k
            for i in 0..n {
                let xi = &self.x[i * d..(i + 1) * d];
                for k in 0..d {
                    if self.cat[k] {
                        continue;
                    }
                    // d k_i / d z_k
                    let dk = -gf[i] * (z[k] - xi[k]) * self.w[k];
                    d_mean[k] += dk * self.alpha[i];
                    d_var[k] -= 2.0 * dk * beta[i];
                }
            }
        }
        Prediction {
            mean,
            var,
            d_mean,
            d_var,
        }
    }
}

/// Standard normal density.
pub fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, relative error below
/// 1.2e-7 everywhere, accurate in the tails).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error
/// below 1.2e-9), for p in (0, 1).
pub fn norm_ppf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let plow = 0.024_25;
    if p < plow {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - plow {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Output warping for minimisation (Google Vizier's half-rank warping, then
/// standardisation): values at or below the median are kept; those above it are replaced
/// by the normal quantile of their rank, scaled by the spread of the better half. Order is
/// kept, and a heavy tail of bad values no longer dominates the fit of the good region.
pub fn warp_outputs(y: &[f64]) -> Vec<f64> {
    let n = y.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted = y.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    };
    let good: Vec<f64> = sorted.iter().copied().filter(|v| *v <= median).collect();
    let mut spread =
        (good.iter().map(|v| (v - median).powi(2)).sum::<f64>() / good.len().max(1) as f64).sqrt();
    if spread <= 0.0 || !spread.is_finite() {
        spread = (sorted[n - 1] - sorted[0]).max(1.0);
    }
    let warped: Vec<f64> = y
        .iter()
        .map(|&v| {
            if v <= median {
                v
            } else {
                // rank among all values (ties share the lowest rank), as a quantile
                let rank = sorted.partition_point(|s| *s < v);
                let q = (rank as f64 + 0.5) / n as f64;
                median + spread * norm_ppf(q).max(0.0)
            }
        })
        .collect();
    let mean = warped.iter().sum::<f64>() / n as f64;
    let sd = (warped.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    let sd = if sd > 0.0 && sd.is_finite() { sd } else { 1.0 };
    warped.iter().map(|v| (v - mean) / sd).collect()
}

/// Standard normal CDF.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// `ln h(z)` and `h'(z)/h(z)` for `h(z) = z Φ(z) + φ(z)` (so EI = σ h((best - μ)/σ)),
/// stable far into the lower tail.
fn log_h(z: f64) -> (f64, f64) {
    if z > -10.0 {
        let h = z * norm_cdf(z) + norm_pdf(z);
        let h = h.max(1e-300);
        (h.ln(), norm_cdf(z) / h)
    } else {
        // Asymptotic series: h(z) = φ(z)/z² (1 - 3/z² + 15/z⁴ - 105/z⁶ + 945/z⁸ ...),
        // Φ(z) = φ(z)/|z| (1 - 1/z² + 3/z⁴ - 15/z⁶ + 105/z⁸ ...).
        let u = 1.0 / (z * z);
        let s_h = 1.0 + u * (-3.0 + u * (15.0 + u * (-105.0 + u * 945.0)));
        let s_c = 1.0 + u * (-1.0 + u * (3.0 + u * (-15.0 + u * 105.0)));
        let ln_h = -0.5 * z * z - 0.5 * (2.0 * std::f64::consts::PI).ln() + u.ln() + s_h.ln();
        (ln_h, -z * s_c / s_h)
    }
}

/// Log expected improvement below `best` (minimisation) at a prediction, and its gradient.
pub fn log_ei(p: &Prediction, best: f64) -> (f64, Vec<f64>) {
    let sd = p.var.sqrt();
    let z = (best - p.mean) / sd;
    let (lh, ratio) = log_h(z);
    let val = sd.ln() + lh;
    let grad = p
        .d_mean
        .iter()
        .zip(&p.d_var)
        .map(|(dm, dv)| {
            let dsd = dv / (2.0 * sd);
            let dz = -dm / sd - z * dsd / sd;
            dsd / sd + ratio * dz
        })
        .collect();
    (val, grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(rows: &[&[f64]], cat: Vec<bool>) -> Inputs {
        Inputs {
            n: rows.len(),
            d: rows[0].len(),
            x: rows.concat(),
            cat,
        }
    }

    /// The fitted means (the incumbent's candidates) are the posterior means at the
    /// conditioning points: pulled towards each other by the noise, equal to the
    /// observations when there is almost none.
    #[test]
    fn fitted_means_are_the_posterior_means_at_the_data() {
        let inp = inputs(
            &[&[0.0, 0.1], &[0.3, 0.9], &[0.7, 0.4], &[1.0, 1.0]],
            vec![false; 2],
        );
        let y = [0.5, -1.0, 1.5, 0.2];
        for noise in [0.3, 1e-6] {
            let h = Hyper::new(&[0.4, 0.6], 1.2, noise);
            let post = Posterior::new(&inp, &y, &h).expect("pd");
            let fitted = post.fitted_means(&y, 4);
            for (i, f) in fitted.iter().enumerate() {
                let m = post.predict(inp.row(i), false).mean;
                assert!((f - m).abs() < 1e-9, "{noise}: {f} vs {m}");
                if noise < 1e-3 {
                    assert!((f - y[i]).abs() < 1e-4);
                }
            }
            if noise > 0.1 {
                // Noise shrinks the extremes towards the rest.
                assert!(fitted[2] < y[2] && fitted[1] > y[1]);
            }
        }
    }

    /// Posterior mean and variance against a hand computation for two points in 1-D.
    #[test]
    fn posterior_matches_closed_form() {
        // x = 0 and 1, y = 1 and -1, l = 1, σ² = 2, noise 0.1.
        let inp = inputs(&[&[0.0], &[1.0]], vec![false]);
        let h = Hyper::new(&[1.0], 2.0, 0.1);
        let post = Posterior::new(&inp, &[1.0, -1.0], &h).expect("pd");
        let k01 = 2.0 * (1.0 + SQRT5 + 5.0 / 3.0) * (-SQRT5).exp(); // 2 * 0.523994...
        let kd = 2.0 * (1.0 + JITTER) + 0.1;
        // K = [[kd, k01], [k01, kd]], at z = 0.5: r = 0.5
        let r: f64 = 0.5;
        let kz = 2.0 * (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp();
        let det = kd * kd - k01 * k01;
        // K⁻¹ y with y = [1, -1]: (kd + k01)^-1 * [1, -1]
        let a = [(kd + k01) / det, -(kd + k01) / det];
        let mean = kz * a[0] + kz * a[1];
        assert!(mean.abs() < 1e-12);
        // variance: 2 - kᵀ K⁻¹ k with k = [kz, kz]: 2 - 2 kz² / (kd + k01)
        let var = 2.0 - 2.0 * kz * kz / (kd + k01);
        let p = post.predict(&[0.5], false);
        assert!((p.mean - mean).abs() < 1e-12, "{} {}", p.mean, mean);
        assert!((p.var - var).abs() < 1e-12, "{} {}", p.var, var);
        // At z = 0.25 by hand: k = [kz(0.25), kz(0.75)].
        let kf = |r: f64| 2.0 * (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp();
        let (k0, k1) = (kf(0.25), kf(0.75));
        let inv = [[kd / det, -k01 / det], [-k01 / det, kd / det]];
        let alpha = [inv[0][0] - inv[0][1], inv[1][0] - inv[1][1]];
        let m = k0 * alpha[0] + k1 * alpha[1];
        let v =
            2.0 - (k0 * (inv[0][0] * k0 + inv[0][1] * k1) + k1 * (inv[1][0] * k0 + inv[1][1] * k1));
        let p = post.predict(&[0.25], false);
        assert!((p.mean - m).abs() < 1e-12 && (p.var - v).abs() < 1e-12);
        // The closed-form log marginal likelihood of the same model.
        let quad = 1.0 * alpha[0] - alpha[1];
        let lml = -0.5 * quad - 0.5 * det.ln() - (2.0 * std::f64::consts::PI).ln();
        let pairs = Pairs::new(&inp);
        let (got, _) = log_marginal_likelihood(&inp, &pairs, &[1.0, -1.0], &h.theta).expect("pd");
        assert!((got - lml).abs() < 1e-12, "{got} {lml}");
    }

    /// The analytic gradients (marginal likelihood, posterior, log EI) against central
    /// differences.
    #[test]
    fn gradients_match_finite_differences() {
        let inp = inputs(
            &[
                &[0.1, 0.2, 0.0],
                &[0.5, 0.9, 1.0],
                &[0.8, 0.4, 2.0],
                &[0.3, 0.7, 1.0],
                &[0.95, 0.05, 0.0],
            ],
            vec![false, false, true],
        );
        let y = [0.3, -1.2, 0.8, 0.1, 1.5];
        let pairs = Pairs::new(&inp);
        let theta = Hyper::new(&[0.3, 0.7, 1.2], 1.3, 0.01).theta;
        let (_, g) = log_marginal_likelihood(&inp, &pairs, &y, &theta).expect("pd");
        for j in 0..theta.len() {
            let e = 1e-6;
            let mut tp = theta.clone();
            tp[j] += e;
            let mut tm = theta.clone();
            tm[j] -= e;
            let fp = log_marginal_likelihood(&inp, &pairs, &y, &tp)
                .expect("pd")
                .0;
            let fm = log_marginal_likelihood(&inp, &pairs, &y, &tm)
                .expect("pd")
                .0;
            let fd = (fp - fm) / (2.0 * e);
            assert!(
                (fd - g[j]).abs() < 1e-5 * (1.0 + fd.abs()),
                "θ{j}: {fd} vs {}",
                g[j]
            );
        }
        let post = Posterior::new(&inp, &y, &Hyper { theta }).expect("pd");
        let z = [0.42, 0.61, 1.0];
        let p = post.predict(&z, true);
        let (_, gei) = log_ei(&p, -1.0);
        for k in 0..2 {
            let e = 1e-6;
            let mut zp = z;
            zp[k] += e;
            let mut zm = z;
            zm[k] -= e;
            let (pp, pm) = (post.predict(&zp, false), post.predict(&zm, false));
            let fd_mean = (pp.mean - pm.mean) / (2.0 * e);
            let fd_var = (pp.var - pm.var) / (2.0 * e);
            assert!(
                (fd_mean - p.d_mean[k]).abs() < 1e-5,
                "{fd_mean} {}",
                p.d_mean[k]
            );
            assert!(
                (fd_var - p.d_var[k]).abs() < 1e-5,
                "{fd_var} {}",
                p.d_var[k]
            );
            let fd_ei = (log_ei(&pp, -1.0).0 - log_ei(&pm, -1.0).0) / (2.0 * e);
            assert!(
                (fd_ei - gei[k]).abs() < 1e-4 * (1.0 + fd_ei.abs()),
                "{fd_ei} {}",
                gei[k]
            );
        }
    }

    #[test]
    fn log_ei_is_continuous_into_the_tail() {
        let p = |mean: f64| Prediction {
            mean,
            var: 1.0,
            d_mean: vec![],
            d_var: vec![],
        };
        for z in [10.0, 10.0 + 1e-9] {
            let a = log_ei(&p(z - 1e-9), 0.0).0;
            let b = log_ei(&p(z + 1e-9), 0.0).0;
            assert!((a - b).abs() < 1e-4, "{a} {b}");
        }
        assert!(log_ei(&p(40.0), 0.0).0.is_finite());
        // EI at z = 0 is φ(0).
        assert!((log_ei(&p(0.0), 0.0).0 - norm_pdf(0.0).ln()).abs() < 1e-6);
    }
}
