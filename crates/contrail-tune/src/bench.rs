//! Standard test functions for samplers (minimised; known optima), used by the tests,
//! the `bench_functions` example and `scripts/compare_tuning.py`.

use crate::space::{Kind, SearchSpace};

/// A test function on a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestFunction {
    /// Branin–Hoo, 2-D on [-5, 10] × [0, 15]; minimum 0.397887.
    Branin,
    /// Hartmann 6-D on [0, 1]⁶; minimum -3.32237.
    Hartmann6,
    /// Levy, 10-D on [-10, 10]¹⁰; minimum 0 at (1, ..., 1).
    Levy10,
}

impl std::str::FromStr for TestFunction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "branin" => Ok(TestFunction::Branin),
            "hartmann6" => Ok(TestFunction::Hartmann6),
            "levy10" => Ok(TestFunction::Levy10),
            o => Err(format!(
                "unknown function {o:?} (branin, hartmann6, levy10)"
            )),
        }
    }
}

impl TestFunction {
    /// Bounds per dimension (parameters `x0`, `x1`, ...).
    pub fn bounds(self) -> Vec<(f64, f64)> {
        match self {
            TestFunction::Branin => vec![(-5.0, 10.0), (0.0, 15.0)],
            TestFunction::Hartmann6 => vec![(0.0, 1.0); 6],
            TestFunction::Levy10 => vec![(-10.0, 10.0); 10],
        }
    }

    /// The known minimum.
    pub fn optimum(self) -> f64 {
        match self {
            TestFunction::Branin => 0.397_887_357_729_738,
            TestFunction::Hartmann6 => -3.322_368_011_391_339,
            TestFunction::Levy10 => 0.0,
        }
    }

    /// The search space: floats `x0..x{d-1}` (names zero-padded so that name order is
    /// dimension order).
    pub fn space(self) -> SearchSpace {
        let params = self
            .bounds()
            .into_iter()
            .enumerate()
            .map(|(i, (low, high))| {
                (
                    format!("x{i:02}"),
                    Kind::Float {
                        low,
                        high,
                        log: false,
                    },
                )
            })
            .collect();
        match SearchSpace::new(params) {
            Ok(s) => s,
            Err(e) => unreachable!("the test functions' spaces are valid: {e}"),
        }
    }

    /// The value at `x` (in the function's own coordinates).
    pub fn eval(self, x: &[f64]) -> f64 {
        use std::f64::consts::PI;
        match self {
            TestFunction::Branin => {
                let (a, b, c) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI);
                let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * PI));
                a * (x[1] - b * x[0] * x[0] + c * x[0] - r).powi(2) + s * (1.0 - t) * x[0].cos() + s
            }
            TestFunction::Hartmann6 => {
                const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
                const A: [[f64; 6]; 4] = [
                    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
                    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
                    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
                    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
                ];
                const P: [[f64; 6]; 4] = [
                    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
                    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
                    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
                    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
                ];
                -(0..4)
                    .map(|i| {
                        let e: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
                        ALPHA[i] * (-e).exp()
                    })
                    .sum::<f64>()
            }
            TestFunction::Levy10 => {
                let w: Vec<f64> = x.iter().map(|v| 1.0 + (v - 1.0) / 4.0).collect();
                let d = w.len();
                let mut f = (PI * w[0]).sin().powi(2);
                for wi in &w[..d - 1] {
                    f += (wi - 1.0).powi(2) * (1.0 + 10.0 * (PI * wi + 1.0).sin().powi(2));
                }
                f + (w[d - 1] - 1.0).powi(2) * (1.0 + (2.0 * PI * w[d - 1]).sin().powi(2))
            }
        }
    }

    /// The value at a trial's parameters (`x00`, `x01`, ...); `None` if one is missing.
    pub fn eval_params(self, params: &serde_json::Map<String, serde_json::Value>) -> Option<f64> {
        let x = (0..self.bounds().len())
            .map(|i| params.get(&format!("x{i:02}")).and_then(|v| v.as_f64()))
            .collect::<Option<Vec<f64>>>()?;
        Some(self.eval(&x))
    }
}

#[cfg(test)]
mod tests {
    use super::TestFunction;

    #[test]
    fn optima_are_where_the_literature_puts_them() {
        let b = TestFunction::Branin;
        for x in [
            [-std::f64::consts::PI, 12.275],
            [std::f64::consts::PI, 2.275],
            [9.42478, 2.475],
        ] {
            assert!((b.eval(&x) - b.optimum()).abs() < 1e-5);
        }
        let h = TestFunction::Hartmann6;
        let xs = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((h.eval(&xs) - h.optimum()).abs() < 1e-4);
        assert!(TestFunction::Levy10.eval(&[1.0; 10]).abs() < 1e-12);
    }
}
