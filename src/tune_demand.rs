//! `contrail tune --config <file>` for a neural demand model: a config with `[demand]` (the
//! task and base parameters) and `[tune]` (the study; `[tune.space]` its space).
//!
//! The task's rows are built once; each trial trains a network on the training flights
//! with the base parameters overridden by the trial's and early-stops on the validation
//! flights; its value is the validation negative log-likelihood of its best epoch.
//! Tunable parameters: `layers` (hidden layers), `width` (the first hidden layer's width;
//! each next layer has half, at least 8), `embedding_dim`, `max_embedding_dim`,
//! `learning_rate`, `weight_decay`, `dropout`, `batch_size`, `warmup_fraction`, and the
//! head (`head`, categorical: poisson or negative_binomial on counts). Trials run one at a
//! time (a network already uses every core); the study's journal resumes like every
//! study's. The best trial's package is written as it finishes: `<out>/best.contrail`.
//!
//! Each epoch's validation nll is the trial's intermediate value at step `epoch + 1`, so
//! `[tune] pruner = "median" | "halving"` stops a trial whose network is behind (its
//! `warmup_steps` and `min_resource` count epochs, 3 by default): the run ends after that
//! epoch and the trial is recorded as pruned.

use std::path::{Path, PathBuf};

use contrail_tune::{Direction, Pruner, SearchSpace, Study, StudyConfig, TrialResult, TrialState};
use serde_json::{Map, Value};

use crate::demand::{DemandConfig, DemandData};
use crate::nn::{Architecture, Encoder, Next, NnParams};
use crate::tune::{BestTrial, TuneRunError};
use crate::tune_lake::TuneSection;

fn bad(name: &str, reason: String) -> TuneRunError {
    TuneRunError::InvalidParameter {
        name: name.to_string(),
        reason,
    }
}

/// The network's tunable parameters.
pub const KNOWN: &[&str] = &[
    "layers",
    "width",
    "embedding_dim",
    "max_embedding_dim",
    "numeric_bins",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "dropout",
    "warmup_fraction",
    "head",
    "ensemble",
];

/// The network parameters of a trial: the base ones with the trial's on top.
pub fn trial_params(base: &NnParams, trial: &Map<String, Value>) -> Result<NnParams, TuneRunError> {
    let mut p = base.clone();
    let int = |k: &str, v: &Value| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && *x >= 0.0)
            .map(|x| x as usize)
            .ok_or_else(|| bad(k, format!("{v} is not a non-negative integer")))
    };
    let float = |k: &str, v: &Value| {
        v.as_f64()
            .ok_or_else(|| bad(k, format!("{v} is not a number")))
    };
    let (mut layers, mut width) = (None, None);
    for (k, v) in trial {
        match k.as_str() {
            "layers" => layers = Some(int(k, v)?),
            "width" => width = Some(int(k, v)?),
            "embedding_dim" => p.embedding_dim = int(k, v)?,
            "max_embedding_dim" => p.max_embedding_dim = int(k, v)?,
            "numeric_bins" => p.numeric_bins = int(k, v)?,
            "batch_size" => p.batch_size = int(k, v)?,
            "learning_rate" => p.learning_rate = float(k, v)?,
            "weight_decay" => p.weight_decay = float(k, v)?,
            "dropout" => p.dropout = float(k, v)?,
            "warmup_fraction" => p.warmup_fraction = float(k, v)?,
            "ensemble" => p.ensemble = int(k, v)?,
            "head" => {
                p.head =
                    crate::nn::Head::parse(v.as_str().unwrap_or_default()).map_err(|e| bad(k, e))?
            }
            other => {
                return Err(TuneRunError::UnknownParameter {
                    name: other.to_string(),
                    tunable: KNOWN.join(", "),
                })
            }
        }
    }
    if layers.is_some() || width.is_some() {
        let n = layers.unwrap_or(p.hidden.len());
        let mut w = width.unwrap_or(p.hidden.first().copied().unwrap_or(64));
        p.hidden = (0..n)
            .map(|_| {
                let x = w;
                w = (w / 2).max(8);
                x
            })
            .collect();
    }
    p.validate().map_err(|e| bad("params", e.to_string()))?;
    Ok(p)
}

/// Runs (or resumes) the study in `out`; returns the best trial.
pub fn run_demand_study(
    demand: &DemandConfig,
    tune: &TuneSection,
    out: &Path,
    data: &DemandData,
    lineage: std::collections::BTreeMap<String, String>,
    quiet: bool,
) -> Result<BestTrial, TuneRunError> {
    if tune.metric != "nll" {
        return Err(bad(
            "metric",
            format!(
                "{:?}: a demand network is tuned on its validation nll",
                tune.metric
            ),
        ));
    }
    if tune.direction == Some(Direction::Maximize) {
        return Err(bad("direction", "the nll is minimised".into()));
    }
    std::fs::create_dir_all(out).map_err(|source| TuneRunError::Io {
        path: out.to_path_buf(),
        op: "creating the output folder",
        source,
    })?;
    let space =
        SearchSpace::from_toml_table(&tune.space).map_err(|source| TuneRunError::Space {
            path: PathBuf::from("[tune.space]"),
            source,
        })?;
    if tune.parallel > 1 {
        tracing::warn!(
            "a demand network study runs one trial at a time (parallel = {} ignored)",
            tune.parallel
        );
    }
    for p in space.params() {
        if !is_known(&p.name) {
            return Err(TuneRunError::UnknownParameter {
                name: p.name.clone(),
                tunable: KNOWN.join(", "),
            });
        }
    }
    let config = StudyConfig {
        sampler: tune.sampler,
        seed: tune.seed,
        direction: Direction::Minimize,
        n_startup: None,
    };
    let mut study = Study::open(&out.join("journal.jsonl"), space, config)?;
    let pruner = tune.pruner_with(3);
    let enc = Encoder::fit(&data.train, 0, 16).map_err(crate::models::ModelError::from)?;
    let yt: Vec<f32> = data.train.target.iter().map(|v| *v as f32).collect();
    let yv: Vec<f32> = data.valid.target.iter().map(|v| *v as f32).collect();
    let say = |s: String| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    for t in study.running() {
        study.restart(t)?;
        run_one(
            &mut study, t, demand, out, data, &enc, &yt, &yv, &lineage, &pruner, &say,
        )?;
    }
    while study.trials().len() < tune.trials {
        let asked = study.ask(1)?;
        for t in asked {
            run_one(
                &mut study, t, demand, out, data, &enc, &yt, &yv, &lineage, &pruner, &say,
            )?;
        }
    }
    crate::tune::write_report(&study, &out.join("report.html"))?;
    let Some(best) = study.best() else {
        let failed: Vec<_> = study
            .trials()
            .iter()
            .filter(|t| t.state == TrialState::Failed)
            .collect();
        return Err(TuneRunError::NoCompleteTrial {
            failed: failed.len(),
            first_reason: failed
                .first()
                .and_then(|t| t.reason.clone())
                .unwrap_or_default(),
        });
    };
    Ok(BestTrial {
        value: best.value.unwrap_or(f64::NAN),
        params: best.params.clone(),
        trial: best.number,
    })
}

fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    study: &mut Study,
    t: usize,
    demand: &DemandConfig,
    out: &Path,
    data: &DemandData,
    base_enc: &Encoder,
    yt: &[f32],
    yv: &[f32],
    lineage: &std::collections::BTreeMap<String, String>,
    pruner: &Pruner,
    say: &dyn Fn(String),
) -> Result<(), TuneRunError> {
    let start = std::time::Instant::now();
    let tp = study.trials()[t].params.clone();
    let params = match trial_params(&demand.params, &tp) {
        Ok(p) => p,
        Err(e) => {
            study.tell(t, TrialResult::Failed(e.to_string()))?;
            return Ok(());
        }
    };
    // Embedding widths are a trial parameter: the encoder's statistics are the base's.
    let enc = match Encoder::fit_with(
        &data.train,
        params.embedding_dim,
        params.max_embedding_dim,
        params.numeric_bins,
    ) {
        Ok(e) => e,
        Err(_) => base_enc.clone(),
    };
    let (xt, xv) = match (enc.encode(&data.train), enc.encode(&data.valid)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            study.tell(t, TrialResult::Failed(e.to_string()))?;
            return Ok(());
        }
    };
    let arch = Architecture::for_encoder(&enc, &params);
    // Each epoch's validation nll goes to the journal; the pruner may end the run. An
    // ensemble reports (and is pruned on) its first network's epochs.
    let mut journal_error = None;
    let mut pruned_at = None;
    let trained = crate::nn::fit_on(
        &crate::nn::Device::Cpu,
        arch.clone(),
        &params,
        &crate::nn::Split { x: &xt, y: yt },
        Some(&crate::nn::Split { x: &xv, y: yv }),
        &crate::nn::Control::default(),
        &mut |log| {
            let Some(v) = log.valid_nll.filter(|v| v.is_finite() && log.member == 0) else {
                return Next::Continue;
            };
            if let Err(e) = study.report(t, log.epoch as u64 + 1, v) {
                journal_error = Some(e);
                return Next::Stop;
            }
            if study.should_prune(t, pruner) {
                pruned_at = Some(log.epoch + 1);
                return Next::Stop;
            }
            Next::Continue
        },
    );
    if let Some(e) = journal_error {
        return Err(e.into());
    }
    let trained = match trained {
        Ok(x) => x,
        Err(e) => {
            study.tell(t, TrialResult::Failed(e.to_string()))?;
            return Ok(());
        }
    };
    if let Some(epochs) = pruned_at {
        study.tell(t, TrialResult::Pruned)?;
        say(format!(
            "trial {t}: pruned at epoch {epochs} ({:.1}s) {}",
            start.elapsed().as_secs_f64(),
            Value::Object(tp)
        ));
        return Ok(());
    }
    let value = trained.valid_nll.unwrap_or(f64::NAN);
    let better = study.best().and_then(|b| b.value).is_none_or(|b| value < b);
    if better && value.is_finite() {
        let mut lin = lineage.clone();
        lin.insert("tune_trial".into(), t.to_string());
        let pkg = crate::nn::NnPackage {
            manifest: crate::nn::NnManifest {
                format_version: crate::gbdt::package::FORMAT_VERSION,
                model_kind: crate::nn::package::MODEL_KIND.into(),
                contrail_version: env!("CARGO_PKG_VERSION").into(),
                target: match demand.task {
                    crate::demand::DemandTask::Counts => {
                        format!("bookings_next_{}d", demand.window_days)
                    }
                    crate::demand::DemandTask::Booking => "booked".into(),
                },
                encoder: enc,
                architecture: arch,
                params: params.clone(),
                best_epoch: trained.best_epoch(),
                metrics: std::collections::BTreeMap::from([("valid-nll".to_string(), value)]),
                training_data: crate::gbdt::package::fingerprint(&data.train),
                lineage: lin,
            },
            members: trained.weights(),
        };
        let bytes = crate::nn::package::to_bytes(&pkg).map_err(crate::models::ModelError::from)?;
        let path = out.join("best.contrail");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|source| TuneRunError::Io {
                path: path.clone(),
                op: "writing",
                source,
            })?;
    }
    let result = if value.is_finite() {
        TrialResult::Complete(value)
    } else {
        TrialResult::Failed("no finite validation loss".into())
    };
    study.tell(t, result)?;
    say(format!(
        "trial {t}: valid-nll {value:.6} ({} epochs, {:.1}s) {}",
        trained.history().len(),
        start.elapsed().as_secs_f64(),
        Value::Object(tp)
    ));
    Ok(())
}
