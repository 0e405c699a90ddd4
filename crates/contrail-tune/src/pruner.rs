//! Pruners: stop unpromising trials early from their intermediate values (boosting
//! rounds, epochs).
//!
//! A trial is compared only with trials asked before its batch (see
//! [`crate::study::Trial::batch_start`]), so a decision does not depend on which of a
//! batch's trials happened to report first.

use crate::study::{Trial, TrialState};

/// A pruning rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Pruner {
    /// Never prune.
    None,
    /// Optuna's `MedianPruner`: prune when the trial's best intermediate value so far is
    /// worse than the median of the complete trials' values at the same step.
    Median {
        /// Complete trials needed before anything is pruned.
        n_startup_trials: usize,
        /// Steps before which a trial is never pruned.
        n_warmup_steps: u64,
    },
    /// Asynchronous successive halving (Optuna's `SuccessiveHalvingPruner`): rungs at steps
    /// `min_resource · η^(rate + k)`; at each rung it reached, a trial must be in the best
    /// `1/η` of the values recorded there (its own included) to go on.
    SuccessiveHalving {
        min_resource: u64,
        reduction_factor: u64,
        min_early_stopping_rate: u32,
    },
}

/// The value of a trial at the first step at or after `step`.
fn value_at_rung(t: &Trial, step: u64) -> Option<f64> {
    t.intermediate
        .iter()
        .filter(|(s, _)| *s >= step)
        .min_by_key(|(s, _)| *s)
        .map(|(_, v)| *v)
}

impl Pruner {
    /// `sign` is 1 to minimise, -1 to maximise; `others` are the trials to compare with.
    pub fn should_prune(&self, trial: &Trial, others: &[Trial], sign: f64) -> bool {
        let Some(&(step, _)) = trial.intermediate.last() else {
            return false;
        };
        match self {
            Pruner::None => false,
            Pruner::Median {
                n_startup_trials,
                n_warmup_steps,
            } => {
                let complete: Vec<&Trial> = others
                    .iter()
                    .filter(|t| t.state == TrialState::Complete)
                    .collect();
                if complete.len() < *n_startup_trials || step < *n_warmup_steps {
                    return false;
                }
                let best = trial
                    .intermediate
                    .iter()
                    .map(|(_, v)| sign * v)
                    .fold(f64::INFINITY, f64::min);
                let mut at: Vec<f64> = complete
                    .iter()
                    .filter_map(|t| {
                        t.intermediate
                            .iter()
                            .rev()
                            .find(|(s, _)| *s == step)
                            .map(|(_, v)| sign * v)
                    })
                    .collect();
                if at.is_empty() {
                    return false;
                }
                at.sort_by(f64::total_cmp);
                let m = at.len();
                let median = if m % 2 == 1 {
                    at[m / 2]
                } else {
                    0.5 * (at[m / 2 - 1] + at[m / 2])
                };
                best > median
            }
            Pruner::SuccessiveHalving {
                min_resource,
                reduction_factor,
                min_early_stopping_rate,
            } => {
                let eta = (*reduction_factor).max(2);
                let mut rung_step = min_resource
                    .max(&1)
                    .saturating_mul(eta.saturating_pow(*min_early_stopping_rate));
                while rung_step <= step {
                    let Some(own) = value_at_rung(trial, rung_step) else {
                        break;
                    };
                    let mut competing: Vec<f64> = others
                        .iter()
                        .filter_map(|t| value_at_rung(t, rung_step))
                        .map(|v| sign * v)
                        .collect();
                    competing.push(sign * own);
                    competing.sort_by(f64::total_cmp);
                    let idx = (competing.len() / eta as usize).saturating_sub(1);
                    if sign * own > competing[idx] {
                        return true;
                    }
                    rung_step = rung_step.saturating_mul(eta);
                }
                false
            }
        }
    }
}
