//! Box-constrained L-BFGS (projected, with a backtracking line search), used to fit the
//! GP's hyperparameters and to maximise the acquisition function.

/// Minimises `f` (value and gradient; `None` where it cannot be evaluated) over the box
/// `[lo, hi]` from `x0`. Returns the best point and value found.
pub fn minimize_box<F>(
    mut f: F,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    max_iter: usize,
) -> (Vec<f64>, f64)
where
    F: FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
{
    let n = x0.len();
    let clamp = |x: &mut [f64]| {
        for i in 0..n {
            x[i] = x[i].clamp(lo[i], hi[i]);
        }
    };
    let mut x = x0.to_vec();
    clamp(&mut x);
    let Some((mut fx, mut g)) = f(&x) else {
        return (x, f64::INFINITY);
    };
    let m = 8;
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    for _ in 0..max_iter {
        // Free variables: those not pinned at a bound by a gradient pushing outward. The
        // quasi-Newton step works in the free subspace only.
        let free: Vec<bool> = (0..n)
            .map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let gp: Vec<f64> = (0..n).map(|i| if free[i] { g[i] } else { 0.0 }).collect();
        let gnorm = gp.iter().map(|v| v * v).sum::<f64>().sqrt();
        if gnorm < 1e-8 {
            break;
        }
        let dotf = |a: &[f64], b: &[f64]| -> f64 {
            (0..n).filter(|&i| free[i]).map(|i| a[i] * b[i]).sum()
        };
        // Two-loop recursion.
        let mut q = gp.clone();
        let k = s_hist.len();
        let mut alpha = vec![0.0; k];
        let mut rhos = vec![0.0; k];
        for j in (0..k).rev() {
            let sy = dotf(&y_hist[j], &s_hist[j]);
            rhos[j] = if sy > 1e-12 { 1.0 / sy } else { 0.0 };
            alpha[j] = rhos[j] * dotf(&s_hist[j], &q);
            for i in 0..n {
                q[i] -= alpha[j] * y_hist[j][i];
            }
        }
        let gamma = if k > 0 && rhos[k - 1] > 0.0 {
            dotf(&s_hist[k - 1], &y_hist[k - 1]) / dotf(&y_hist[k - 1], &y_hist[k - 1])
        } else {
            1.0 / gnorm.max(1.0)
        };
        for v in q.iter_mut() {
            *v *= gamma;
        }
        for j in 0..k {
            let beta = rhos[j] * dotf(&y_hist[j], &q);
            for i in 0..n {
                q[i] += s_hist[j][i] * (alpha[j] - beta);
            }
        }
        let mut p: Vec<f64> = (0..n).map(|i| if free[i] { -q[i] } else { 0.0 }).collect();
        if dot(&p, &gp) >= 0.0 {
            p = gp.iter().map(|v| -v).collect();
            s_hist.clear();
            y_hist.clear();
        }
        // Backtracking on the projected path.
        let mut t = 1.0;
        let mut accepted = None;
        for _ in 0..30 {
            let mut xn: Vec<f64> = x.iter().zip(&p).map(|(a, b)| a + t * b).collect();
            clamp(&mut xn);
            let step: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
            let dec = dot(&g, &step);
            if let Some((fn_, gn)) = f(&xn) {
                if fn_.is_finite() && fn_ <= fx + 1e-4 * dec.min(0.0) {
                    accepted = Some((xn, fn_, gn, step));
                    break;
                }
            }
            t *= 0.5;
        }
        let Some((xn, fn_, gn, step)) = accepted else {
            break;
        };
        let yv: Vec<f64> = gn.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&step, &yv);
        if sy > 1e-12 {
            if s_hist.len() == m {
                s_hist.remove(0);
                y_hist.remove(0);
            }
            s_hist.push(step);
            y_hist.push(yv);
        }
        let improvement = fx - fn_;
        x = xn;
        fx = fn_;
        g = gn;
        if improvement.abs() <= 1e-10 * (1.0 + fx.abs()) {
            break;
        }
    }
    (x, fx)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::minimize_box;

    #[test]
    fn finds_rosenbrock_minimum_and_respects_bounds() {
        let rosen = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            Some((f, g))
        };
        let (x, f) = minimize_box(rosen, &[-1.2, 1.0], &[-2.0, -2.0], &[2.0, 2.0], 500);
        assert!(f < 1e-8 && (x[0] - 1.0).abs() < 1e-3, "{x:?} {f}");
        // Minimum outside the box: ends on the bound.
        let (x, _) = minimize_box(rosen, &[0.0, 0.0], &[-2.0, -2.0], &[0.5, 2.0], 500);
        assert!(
            (x[0] - 0.5).abs() < 1e-9 && (x[1] - 0.25).abs() < 1e-3,
            "{x:?}"
        );
    }
}
