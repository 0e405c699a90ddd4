//! The heads' losses, as tensors (for training) and as scalars (for metrics and the
//! tests that check the tensors against the closed forms).
//!
//! Every head predicts a raw score `eta`: the log of the mean for the count heads, the
//! logit for the booking head.
//!
//! - Poisson: `-log P(y) = mu - y·eta + lgamma(y+1)`, `mu = exp(eta)`.
//! - Negative binomial (NB2, variance `mu + alpha·mu²`, `r = 1/alpha`):
//!   `-log P(y) = lgamma(r) + lgamma(y+1) - lgamma(y+r) - r·ln(r/(r+mu)) - y·ln(mu/(r+mu))`.
//!   `alpha = exp(log_alpha)` is learned with the network.
//! - Logistic: `-log P(y) = softplus(eta) - y·eta`.
//!
//! The training losses drop the terms that do not depend on the parameters
//! (`lgamma(y+1)`); the reported ones keep them, so they are true negative
//! log-likelihoods.

use burn::prelude::*;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

/// Raw scores are clamped to this range before `exp`: a mean of e^±30 is far outside
/// any demand, and the clamp keeps one bad step from overflowing f32.
pub const ETA_MIN: f64 = -30.0;
pub const ETA_MAX: f64 = 30.0;

/// The output distribution of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// Counts, Poisson with a log link.
    Poisson,
    /// Counts, negative binomial (NB2) with a log link and a learned dispersion.
    NegativeBinomial,
    /// A 0/1 outcome, logistic.
    Logistic,
}

impl Head {
    pub fn parse(s: &str) -> Result<Head, String> {
        match s {
            "poisson" => Ok(Head::Poisson),
            "negative_binomial" | "negbin" | "nb" => Ok(Head::NegativeBinomial),
            "logistic" | "binary" => Ok(Head::Logistic),
            other => Err(format!(
                "{other:?}: use poisson, negative_binomial or logistic"
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Head::Poisson => "poisson",
            Head::NegativeBinomial => "negative_binomial",
            Head::Logistic => "logistic",
        }
    }
    /// The prediction (mean or probability) from a raw score.
    pub fn response(self, eta: f64) -> f64 {
        match self {
            Head::Poisson | Head::NegativeBinomial => eta.clamp(ETA_MIN, ETA_MAX).exp(),
            Head::Logistic => 1.0 / (1.0 + (-eta).exp()),
        }
    }
    /// The raw score of a prediction (the inverse of [`Head::response`]): `ln(mu)`, or the
    /// logit of a probability clamped 1e-15 from 0 and 1.
    pub fn link(self, mu: f64) -> f64 {
        match self {
            Head::Poisson | Head::NegativeBinomial => mu.max(ETA_MIN.exp()).ln(),
            Head::Logistic => {
                let p = mu.clamp(1e-15, 1.0 - 1e-15);
                (p / (1.0 - p)).ln()
            }
        }
    }
    /// Whether `y` is a valid target for this head.
    pub fn valid_target(self, y: f64) -> bool {
        match self {
            Head::Poisson | Head::NegativeBinomial => y.is_finite() && y >= 0.0,
            Head::Logistic => y == 0.0 || y == 1.0,
        }
    }
}

/// `ln Γ(x)` for tensors of `x > 0`: shifted by 6 with the recurrence, then Stirling's
/// series to `1/z⁵` (relative error below 1e-9 in f64, at f32 precision in f32).
pub fn lgamma<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // ln Γ(x) = ln Γ(x+6) - ln(x(x+1)…(x+5))
    let mut prod = x.clone();
    for k in 1..6 {
        prod = prod * (x.clone() + k as f64);
    }
    let z = x + 6.0;
    // A true division: `recip` is the CPU's approximate reciprocal on the ndarray back end.
    let zi = z.ones_like() / z.clone();
    let zi2 = zi.clone() * zi.clone();
    let series = zi.clone() * (((zi2.clone() * (1.0 / 1260.0)) - 1.0 / 360.0) * zi2 + 1.0 / 12.0);
    (z.clone() - 0.5) * z.clone().log() - z + 0.5 * (2.0 * std::f64::consts::PI).ln() + series
        - prod.log()
}

/// Mean training loss of a batch: `eta` and `y` are `[batch]`; `log_alpha` is the
/// negative binomial's `[1]` log dispersion (ignored by the other heads).
pub fn loss<B: Backend>(
    head: Head,
    eta: Tensor<B, 1>,
    y: Tensor<B, 1>,
    log_alpha: Option<Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let eta = eta.clamp(ETA_MIN, ETA_MAX);
    match head {
        Head::Poisson => (eta.clone().exp() - y * eta).mean(),
        Head::Logistic => {
            // softplus(eta) - y·eta, with softplus(eta) = -log σ(-eta). Its gradient,
            // σ(eta) - y, is given to autodiff directly: burn's backward of log (and of
            // log σ) multiplies by `recip`, which the ndarray back end computes with the
            // CPU's approximate reciprocal (about 12 bits: gradients off by up to 1e-3
            // relative, more where σ is near 0 or 1). Value: the loss, exactly; gradient:
            // (σ(eta) - y) / n, to f32 precision.
            let value = (log_sigmoid(eta.clone().neg()).neg() - y.clone() * eta.clone()).mean();
            let sigma = eta.ones_like() / (eta.clone().neg().exp() + 1.0);
            let g = (sigma - y).detach();
            let surrogate = (eta * g).mean();
            value.detach() + surrogate.clone() - surrogate.detach()
        }
        Head::NegativeBinomial => {
            let [n] = eta.dims();
            let la = log_alpha
                .unwrap_or_else(|| Tensor::zeros([1], &eta.device()))
                .clamp(-20.0, 10.0)
                .expand([n]);
            // r = 1/alpha; ln(r + mu) = ln(exp(-la) + exp(eta)) computed stably.
            let r = la.clone().neg().exp();
            let log_r = la.neg();
            let m = log_r.clone().max_pair(eta.clone());
            let log_r_mu =
                m.clone() + ((log_r.clone() - m.clone()).exp() + (eta.clone() - m).exp()).log();
            let nll = lgamma(r.clone())
                - lgamma(y.clone() + r.clone())
                - r * (log_r - log_r_mu.clone())
                - y * (eta - log_r_mu);
            nll.mean()
        }
    }
}

/// `ln Γ(x)` for `x > 0` in f64 (Lanczos, g = 7, n = 9: about 15 significant digits).
pub fn lgamma_f64(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx)
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - lgamma_f64(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The negative log-likelihood of one observation, with every term (closed form, f64).
pub fn nll(head: Head, eta: f64, y: f64, alpha: f64) -> f64 {
    let eta = eta.clamp(ETA_MIN, ETA_MAX);
    match head {
        Head::Poisson => eta.exp() - y * eta + lgamma_f64(y + 1.0),
        Head::Logistic => softplus(eta) - y * eta,
        Head::NegativeBinomial => {
            let r = 1.0 / alpha;
            let mu = eta.exp();
            lgamma_f64(r) + lgamma_f64(y + 1.0)
                - lgamma_f64(y + r)
                - r * (r / (r + mu)).ln()
                - y * (mu / (r + mu)).ln()
        }
    }
}

/// `ln(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// Poisson deviance of one observation: `2·(y·ln(y/mu) - (y - mu))` (0·ln 0 = 0).
pub fn poisson_deviance(y: f64, mu: f64) -> f64 {
    let mu = mu.max(1e-300);
    let t = if y > 0.0 { y * (y / mu).ln() } else { 0.0 };
    2.0 * (t - (y - mu))
}

/// Mean Poisson deviance of predictions `mu` against `y`.
pub fn mean_poisson_deviance(y: &[f64], mu: &[f64]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    y.iter()
        .zip(mu)
        .map(|(y, m)| poisson_deviance(*y, *m))
        .sum::<f64>()
        / y.len() as f64
}
