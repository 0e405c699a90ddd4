//! Objectives: gradients and hessians of the loss in the raw (link) scale, the initial
//! score estimated from the data, and the transform to the response scale.

use serde::{Deserialize, Serialize};

use crate::data::MAX_MAGNITUDE;
use crate::GbdtError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Objective {
    /// Squared error (LightGBM `regression`, `l2`).
    Regression,
    /// Absolute error (`regression_l1`); leaf values are renewed to residual medians.
    RegressionL1,
    /// Huber loss with threshold `alpha` (LightGBM's name for delta).
    Huber { alpha: f64 },
    /// Pinball loss for quantile `alpha`; leaf values renewed to residual quantiles.
    Quantile { alpha: f64 },
    /// Logistic loss for 0/1 labels; predictions are probabilities.
    Binary,
    /// Poisson (log link); predictions are expected counts.
    Poisson,
    /// Tweedie with variance power `rho` in (1, 2) (log link).
    Tweedie { rho: f64 },
    /// Gamma (log link); labels must be positive.
    Gamma,
}

/// LightGBM's default `poisson_max_delta_step`: stabilises the Poisson hessian.
pub(crate) const POISSON_MAX_DELTA: f64 = 0.7;

impl Objective {
    /// Parses a LightGBM objective name with its parameters.
    pub fn parse(name: &str, alpha: Option<f64>, rho: Option<f64>) -> Result<Objective, GbdtError> {
        let bad = |r: String| GbdtError::Param {
            name: "objective",
            reason: r,
        };
        let o = match name {
            "regression" | "l2" | "mse" | "regression_l2" => Objective::Regression,
            "regression_l1" | "l1" | "mae" => Objective::RegressionL1,
            "huber" => Objective::Huber {
                alpha: alpha.unwrap_or(0.9),
            },
            "quantile" => Objective::Quantile {
                alpha: alpha.unwrap_or(0.9),
            },
            "binary" => Objective::Binary,
            "poisson" => Objective::Poisson,
            "tweedie" => Objective::Tweedie {
                rho: rho.unwrap_or(1.5),
            },
            "gamma" => Objective::Gamma,
            other => return Err(bad(format!("unknown objective {other:?}"))),
        };
        match o {
            Objective::Quantile { alpha } if !(alpha > 0.0 && alpha < 1.0) => {
                Err(bad(format!("quantile alpha {alpha} must be in (0, 1)")))
            }
            Objective::Huber { alpha } if !(alpha > 0.0 && alpha.is_finite()) => {
                Err(bad(format!("huber alpha {alpha} must be positive")))
            }
            Objective::Tweedie { rho } if !(rho > 1.0 && rho < 2.0) => Err(bad(format!(
                "tweedie variance power {rho} must be in (1, 2)"
            ))),
            o => Ok(o),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Objective::Regression => "regression",
            Objective::RegressionL1 => "regression_l1",
            Objective::Huber { .. } => "huber",
            Objective::Quantile { .. } => "quantile",
            Objective::Binary => "binary",
            Objective::Poisson => "poisson",
            Objective::Tweedie { .. } => "tweedie",
            Objective::Gamma => "gamma",
        }
    }

    /// The metric reported and used for early stopping by default.
    pub fn default_metric(&self) -> &'static str {
        match self {
            Objective::Regression => "rmse",
            Objective::RegressionL1 | Objective::Huber { .. } => "mae",
            Objective::Quantile { .. } => "quantile",
            Objective::Binary => "logloss",
            Objective::Poisson => "poisson",
            Objective::Tweedie { .. } => "tweedie",
            Objective::Gamma => "gamma",
        }
    }

    /// Checks the labels of `what` ("target", "validation target"); the error names the
    /// first bad row. Every objective needs finite labels within ±[`MAX_MAGNITUDE`].
    pub fn check_labels(&self, y: &[f64], what: &str) -> Result<(), GbdtError> {
        let bad = |i: usize, why: &str| GbdtError::Data {
            what: what.into(),
            reason: format!("row {i}: {why} for objective {}", self.name()),
        };
        for (i, &v) in y.iter().enumerate() {
            if v.is_nan() || v.abs() > MAX_MAGNITUDE {
                return Err(bad(
                    i,
                    &format!("label {v:e} is not finite or beyond ±{MAX_MAGNITUDE:e}"),
                ));
            }
            match self {
                Objective::Binary if v != 0.0 && v != 1.0 => {
                    return Err(bad(i, &format!("label {v} is not 0 or 1")))
                }
                Objective::Poisson | Objective::Tweedie { .. } if v < 0.0 => {
                    return Err(bad(i, &format!("label {v} is negative")))
                }
                Objective::Gamma if v <= 0.0 => {
                    return Err(bad(i, &format!("label {v} is not positive")))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The constant raw score that minimises the loss (LightGBM's boost_from_average).
    pub fn init_score(&self, y: &[f64], w: Option<&[f64]>) -> f64 {
        let (sw, swy) = match w {
            Some(w) => y
                .iter()
                .zip(w)
                .fold((0.0, 0.0), |(a, b), (y, w)| (a + w, b + w * y)),
            None => (y.len() as f64, y.iter().sum()),
        };
        let mean = if sw > 0.0 { swy / sw } else { 0.0 };
        match self {
            Objective::Regression | Objective::Huber { .. } => mean,
            Objective::RegressionL1 => weighted_quantile(y, w, 0.5),
            Objective::Quantile { alpha } => weighted_quantile(y, w, *alpha),
            Objective::Binary => {
                let p = mean.clamp(1e-15, 1.0 - 1e-15);
                (p / (1.0 - p)).ln()
            }
            Objective::Poisson | Objective::Tweedie { .. } | Objective::Gamma => {
                mean.max(1e-15).ln()
            }
        }
    }

    /// Gradient and hessian of the loss at raw score `f` for label `y`.
    #[inline]
    pub fn grad_hess(&self, f: f64, y: f64) -> (f64, f64) {
        match *self {
            Objective::Regression => (f - y, 1.0),
            Objective::RegressionL1 => ((f - y).signum() * ((f - y) != 0.0) as i32 as f64, 1.0),
            Objective::Huber { alpha } => {
                let d = f - y;
                (
                    if d.abs() <= alpha {
                        d
                    } else {
                        alpha * d.signum()
                    },
                    1.0,
                )
            }
            Objective::Quantile { alpha } => (if f - y >= 0.0 { 1.0 - alpha } else { -alpha }, 1.0),
            Objective::Binary => {
                let p = sigmoid(f);
                (p - y, (p * (1.0 - p)).max(1e-16))
            }
            Objective::Poisson => {
                let e = f.exp();
                (e - y, (f + POISSON_MAX_DELTA).exp())
            }
            Objective::Tweedie { rho } => {
                let a = ((1.0 - rho) * f).exp();
                let b = ((2.0 - rho) * f).exp();
                (
                    -y * a + b,
                    (-y * (1.0 - rho) * a + (2.0 - rho) * b).max(1e-16),
                )
            }
            Objective::Gamma => {
                let e = (-f).exp();
                (1.0 - y * e, (y * e).max(1e-16))
            }
        }
    }

    /// Raw score to the response scale (probability, expected count, ...).
    #[inline]
    pub fn transform(&self, f: f64) -> f64 {
        match self {
            Objective::Binary => sigmoid(f),
            Objective::Poisson | Objective::Tweedie { .. } | Objective::Gamma => f.exp(),
            _ => f,
        }
    }

    /// [`Objective::transform`] in `f32`, as XGBoost computes it: the sigmoid as
    /// `1 / (1 + expf(-x))`, the exponential as `expf(x)` (the C library's, as XGBoost's).
    #[inline]
    pub fn transform_f32(&self, f: f32) -> f32 {
        match self {
            Objective::Binary => 1.0 / (1.0 + (-f).exp()),
            Objective::Poisson | Objective::Tweedie { .. } | Objective::Gamma => f.exp(),
            _ => f,
        }
    }

    /// The quantile leaf values are renewed to, for objectives whose hessian carries no
    /// information (absolute and pinball losses).
    pub fn renew_quantile(&self) -> Option<f64> {
        match self {
            Objective::RegressionL1 => Some(0.5),
            Objective::Quantile { alpha } => Some(*alpha),
            _ => None,
        }
    }
}

#[inline]
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The weighted `q`-quantile (lower interpolation, as LightGBM's percentile).
pub fn weighted_quantile(y: &[f64], w: Option<&[f64]>, q: f64) -> f64 {
    if y.is_empty() {
        return 0.0;
    }
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| y[a].total_cmp(&y[b]).then(a.cmp(&b)));
    let total: f64 = w.map_or(y.len() as f64, |w| w.iter().sum());
    let target = q * total;
    let mut acc = 0.0;
    for &i in &idx {
        acc += w.map_or(1.0, |w| w[i]);
        if acc >= target {
            return y[i];
        }
    }
    y[idx[idx.len() - 1]]
}
