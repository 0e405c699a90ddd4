//! Evaluation metrics, on the response scale. Lower is better for all but `auc` and `r2`.

use rayon::prelude::*;

use crate::objective::Objective;
use crate::GbdtError;

pub const METRICS: [&str; 11] = [
    "rmse", "mae", "r2", "mape", "quantile", "logloss", "auc", "poisson", "tweedie", "gamma",
    "huber",
];

pub fn higher_is_better(name: &str) -> bool {
    matches!(name, "auc" | "r2")
}

pub fn check(name: &str) -> Result<(), GbdtError> {
    // `none`: no metric at all (no per-iteration pass over the rows; LightGBM's "None").
    if METRICS.contains(&name) || name == "none" {
        Ok(())
    } else {
        Err(GbdtError::Param {
            name: "metric",
            reason: format!("unknown metric {name:?}; known: {}", METRICS.join(", ")),
        })
    }
}

/// Rows summed per task: partial sums of fixed-size chunks are added in chunk order, so
/// a metric has the same bits whatever the thread count.
const CHUNK: usize = 1 << 15;

fn wsum(w: Option<&[f64]>, n: usize) -> f64 {
    w.map_or(n as f64, |w| {
        let parts: Vec<f64> = w.par_chunks(CHUNK).map(|c| c.iter().sum()).collect();
        parts.iter().sum()
    })
}

fn weighted(y: &[f64], p: &[f64], w: Option<&[f64]>, f: impl Fn(f64, f64) -> f64 + Sync) -> f64 {
    let parts: Vec<f64> = y
        .par_chunks(CHUNK)
        .zip(p.par_chunks(CHUNK))
        .enumerate()
        .map(|(k, (y, p))| match w {
            Some(w) => y
                .iter()
                .zip(p)
                .zip(&w[k * CHUNK..])
                .map(|((y, p), w)| w * f(*y, *p))
                .sum::<f64>(),
            None => y.iter().zip(p).map(|(y, p)| f(*y, *p)).sum::<f64>(),
        })
        .collect();
    parts.iter().sum::<f64>() / wsum(w, y.len()).max(1e-300)
}

/// Evaluates `name` on labels `y` and response-scale predictions `p`.
pub fn evaluate(name: &str, y: &[f64], p: &[f64], w: Option<&[f64]>, obj: &Objective) -> f64 {
    match name {
        "rmse" => weighted(y, p, w, |y, p| (y - p).powi(2)).sqrt(),
        "mae" => weighted(y, p, w, |y, p| (y - p).abs()),
        "mape" => weighted(y, p, w, |y, p| ((y - p) / y.abs().max(1.0)).abs()),
        "huber" => {
            let a = if let Objective::Huber { alpha } = obj {
                *alpha
            } else {
                1.0
            };
            weighted(y, p, w, |y, p| {
                let d = (y - p).abs();
                if d <= a {
                    0.5 * d * d
                } else {
                    a * (d - 0.5 * a)
                }
            })
        }
        "quantile" => {
            let a = if let Objective::Quantile { alpha } = obj {
                *alpha
            } else {
                0.5
            };
            weighted(y, p, w, |y, p| {
                let d = y - p;
                if d >= 0.0 {
                    a * d
                } else {
                    (a - 1.0) * d
                }
            })
        }
        "r2" => {
            let mean = weighted(y, y, w, |y, _| y);
            let ss_res = weighted(y, p, w, |y, p| (y - p).powi(2));
            let ss_tot = weighted(y, y, w, |y, _| (y - mean).powi(2));
            if ss_tot > 0.0 {
                1.0 - ss_res / ss_tot
            } else {
                0.0
            }
        }
        "logloss" => weighted(y, p, w, |y, p| {
            let p = p.clamp(1e-15, 1.0 - 1e-15);
            // One logarithm for 0/1 labels (the usual case), both for soft labels.
            if y == 1.0 {
                -p.ln()
            } else if y == 0.0 {
                -(1.0 - p).ln()
            } else {
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            }
        }),
        "auc" => auc(y, p, w),
        "poisson" => weighted(y, p, w, |y, p| {
            let p = p.max(1e-15);
            2.0 * (if y > 0.0 { y * (y / p).ln() } else { 0.0 } - (y - p))
        }),
        "tweedie" => {
            let rho = if let Objective::Tweedie { rho } = obj {
                *rho
            } else {
                1.5
            };
            weighted(y, p, w, |y, p| {
                let p = p.max(1e-15);
                let a = y.powf(2.0 - rho) / ((1.0 - rho) * (2.0 - rho));
                let b = y * p.powf(1.0 - rho) / (1.0 - rho);
                let c = p.powf(2.0 - rho) / (2.0 - rho);
                2.0 * (a.max(0.0) - b + c)
            })
        }
        "gamma" => weighted(y, p, w, |y, p| {
            let p = p.max(1e-15);
            let y = y.max(1e-15);
            2.0 * ((y - p) / p - (y / p).ln())
        }),
        _ => f64::NAN,
    }
}

/// Area under the ROC curve with tied scores counted half (weighted).
pub fn auc(y: &[f64], p: &[f64], w: Option<&[f64]>) -> f64 {
    let mut idx: Vec<usize> = (0..y.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let (mut pos, mut neg, mut area) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        let (mut tp, mut tn) = (0.0, 0.0);
        while j < idx.len() && p[idx[j]] == p[idx[i]] {
            let wt = w.map_or(1.0, |w| w[idx[j]]);
            if y[idx[j]] > 0.5 {
                tp += wt;
            } else {
                tn += wt;
            }
            j += 1;
        }
        area += tn * pos + 0.5 * tn * tp;
        pos += tp;
        neg += tn;
        i = j;
    }
    if pos == 0.0 || neg == 0.0 {
        0.5
    } else {
        // `area` counts (negative, positive) pairs with the positive scored higher... in
        // ascending order a negative seen after positives ranks below them: invert.
        1.0 - area / (pos * neg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_known_values() {
        assert_eq!(auc(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.2, 0.3, 0.4], None), 1.0);
        assert_eq!(auc(&[1.0, 1.0, 0.0, 0.0], &[0.1, 0.2, 0.3, 0.4], None), 0.0);
        assert_eq!(auc(&[0.0, 1.0], &[0.5, 0.5], None), 0.5);
        assert!((auc(&[0.0, 1.0, 0.0, 1.0], &[0.1, 0.2, 0.3, 0.4], None) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn regression_metrics() {
        let o = Objective::Regression;
        assert_eq!(evaluate("rmse", &[1.0, 3.0], &[2.0, 2.0], None, &o), 1.0);
        assert_eq!(evaluate("mae", &[1.0, 3.0], &[2.0, 2.0], None, &o), 1.0);
        assert_eq!(evaluate("r2", &[1.0, 3.0], &[1.0, 3.0], None, &o), 1.0);
    }
}
