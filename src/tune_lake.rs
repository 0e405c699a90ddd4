//! `contrail tune --config <file>`: tunes the fare GBDT on the curated lake, in process.
//!
//! The config's `[train]` section is the model (target, time splits, base parameters, as
//! for `contrail train --config`); its `[tune]` section is the study (trials, sampler,
//! parallel trials, seed, the validation metric, the pruner) and `[tune.space]` the search
//! space, one table per parameter named as the booster's parameters (LightGBM's names).
//!
//! The lake is read once; each trial trains on the training days with the base parameters
//! overridden by the trial's, reports the validation metric after every boosting round to
//! the study, and stops when the pruner says so (a pruned trial). A complete trial's value
//! is the validation metric of the model it produced (with early stopping on, the best
//! round's, since the model is cut there). Trials run `parallel` at a time, the CPU's
//! threads split between them; the journal, its resume and the report are black-box
//! mode's (see [`crate::tune`]). The best trial's model is kept as it finishes (no
//! retraining): `<out>/best.contrail`, with the trial number in its lineage; a study resumed
//! after the best trial's file was lost retrains that trial once (training is
//! deterministic: the same trees).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use contrail_tune::{
    Direction, Kind, Pruner, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult, TrialState,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gbdt::{metric, package, Booster, Control, Dataset, Device, IterationLog, Params};
use crate::models::{self, LakeTrainConfig, ParamArgs};
use crate::tune::{BestTrial, TuneRunError};

/// `[tune]`: the study of `contrail tune --config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSection {
    /// Trials in the whole study (a resumed study counts those already run).
    pub trials: usize,
    /// gp, tpe or random.
    #[serde(default = "default_sampler")]
    pub sampler: SamplerKind,
    /// Trials trained side by side (the CPU's threads split between them).
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    #[serde(default)]
    pub seed: u64,
    /// The validation metric tuned (and the one early stopping watches): rmse, mae, ...
    pub metric: String,
    /// minimize or maximize; by default the metric's own (maximize only auc and r2).
    pub direction: Option<Direction>,
    /// none, median or halving.
    #[serde(default)]
    pub pruner: PrunerKind,
    /// median: complete trials needed before any pruning [default 5].
    pub startup_trials: Option<usize>,
    /// median: boosting rounds before which a trial is never pruned [default 10].
    pub warmup_steps: Option<u64>,
    /// halving: the first rung, in boosting rounds [default 10].
    pub min_resource: Option<u64>,
    /// halving: η, the share 1/η of trials that go on at each rung [default 3].
    pub reduction_factor: Option<u64>,
    /// Folder for the journal, the report and the best model (`--out` overrides).
    pub out: Option<String>,
    /// The search space: one table per parameter (black-box mode's format).
    pub space: toml::Table,
}

impl TuneSection {
    /// The pruner the section asks for; `steps` is the default of `warmup_steps` and
    /// `min_resource` (boosting rounds or epochs).
    pub fn pruner_with(&self, steps: u64) -> Pruner {
        match self.pruner {
            PrunerKind::None => Pruner::None,
            PrunerKind::Median => Pruner::Median {
                n_startup_trials: self.startup_trials.unwrap_or(5),
                n_warmup_steps: self.warmup_steps.unwrap_or(steps),
            },
            PrunerKind::Halving => Pruner::SuccessiveHalving {
                min_resource: self.min_resource.unwrap_or(steps).max(1),
                reduction_factor: self.reduction_factor.unwrap_or(3).max(2),
                min_early_stopping_rate: 0,
            },
        }
    }
}

fn default_sampler() -> SamplerKind {
    SamplerKind::Gp
}

fn default_parallel() -> usize {
    1
}

/// `[tune] pruner`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrunerKind {
    #[default]
    None,
    Median,
    Halving,
}

/// What a parameter of the booster takes.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    /// A whole number (int or categorical of integers).
    Int,
    /// Any number.
    Float,
    /// A name (categorical of strings).
    Name,
}

/// The booster parameters a space may tune (`[train.params]` keys).
const TUNABLE: [(&str, Want); 18] = [
    ("learning_rate", Want::Float),
    ("num_leaves", Want::Int),
    ("max_depth", Want::Int),
    ("min_data_in_leaf", Want::Int),
    ("min_sum_hessian_in_leaf", Want::Float),
    ("feature_fraction", Want::Float),
    ("bagging_fraction", Want::Float),
    ("bagging_freq", Want::Int),
    ("lambda_l1", Want::Float),
    ("lambda_l2", Want::Float),
    ("min_gain_to_split", Want::Float),
    ("max_bin", Want::Int),
    ("num_iterations", Want::Int),
    ("early_stopping_round", Want::Int),
    ("grow_policy", Want::Name),
    ("objective", Want::Name),
    ("alpha", Want::Float),
    ("tweedie_variance_power", Want::Float),
];

/// A checked lake-tuning job.
#[derive(Clone, Debug)]
pub struct LakeTuneJob {
    pub train: LakeTrainConfig,
    pub tune: TuneSection,
    pub space: SearchSpace,
    pub pruner: Pruner,
    pub direction: Direction,
    pub out: PathBuf,
}

fn tune_option(option: &'static str, reason: impl Into<String>) -> TuneRunError {
    TuneRunError::BadOption {
        option,
        reason: reason.into(),
    }
}

impl LakeTuneJob {
    /// Checks a config's `[train]` and `[tune]` sections (`path` for messages) before
    /// any data is read: every parameter of the space is one the booster has, of the right
    /// type, and its bounds make valid parameters; the metric is known.
    pub fn new(
        path: &Path,
        train: Option<LakeTrainConfig>,
        tune: Option<TuneSection>,
        out: Option<PathBuf>,
    ) -> Result<Self, TuneRunError> {
        let file = path.display().to_string();
        let train = train.ok_or_else(|| tune_option("[train]", format!("{file} has none")))?;
        let tune = tune.ok_or_else(|| tune_option("[tune]", format!("{file} has none")))?;
        if tune.trials == 0 {
            return Err(tune_option("[tune] trials", "must be at least 1"));
        }
        if tune.parallel == 0 {
            return Err(tune_option("[tune] parallel", "must be at least 1"));
        }
        if tune.metric == "none" {
            return Err(tune_option("[tune] metric", "a metric is needed to tune"));
        }
        metric::check(&tune.metric).map_err(|e| tune_option("[tune] metric", format!("{e}")))?;
        let natural = if metric::higher_is_better(&tune.metric) {
            Direction::Maximize
        } else {
            Direction::Minimize
        };
        let direction = tune.direction.unwrap_or(natural);
        if direction != natural {
            return Err(tune_option(
                "[tune] direction",
                format!(
                    "{direction} for {}, which is better {}",
                    tune.metric,
                    if natural == Direction::Minimize {
                        "lower"
                    } else {
                        "higher"
                    }
                ),
            ));
        }
        let pruner = tune.pruner_with(10);
        let space =
            SearchSpace::from_toml_table(&tune.space).map_err(|source| TuneRunError::Space {
                path: PathBuf::from(format!("{file} [tune.space]")),
                source,
            })?;
        if space.params().is_empty() {
            return Err(tune_option("[tune.space]", "no parameter to tune"));
        }
        for p in space.params() {
            let Some(&(_, want)) = TUNABLE.iter().find(|(n, _)| *n == p.name) else {
                return Err(TuneRunError::UnknownParameter {
                    name: p.name.clone(),
                    tunable: TUNABLE.map(|t| t.0).join(", "),
                });
            };
            let ok = match (&p.kind, want) {
                (Kind::Int { .. }, Want::Int | Want::Float) | (Kind::Float { .. }, Want::Float) => {
                    true
                }
                (Kind::Categorical { choices }, w) => choices.iter().all(|c| match w {
                    Want::Int => c.is_i64() || c.is_u64(),
                    Want::Float => c.is_number(),
                    Want::Name => c.is_string(),
                }),
                _ => false,
            };
            if !ok {
                return Err(TuneRunError::InvalidParameter {
                    name: p.name.clone(),
                    reason: match want {
                        Want::Int => "takes whole numbers: type \"int\" (or categorical integers)",
                        Want::Float => "takes numbers: type \"float\" or \"int\"",
                        Want::Name => "takes names: type \"categorical\" with string choices",
                    }
                    .into(),
                });
            }
        }
        let out = out
            .or_else(|| tune.out.as_ref().map(PathBuf::from))
            .ok_or_else(|| tune_option("--out", "give --out or [tune] out"))?;
        let job = LakeTuneJob {
            train,
            tune,
            space,
            pruner,
            direction,
            out,
        };
        job.probe()?;
        Ok(job)
    }

    /// Parameters at the corners and the middle of the space (and each choice of each
    /// categorical) must be valid booster parameters: a bound out of range is an error
    /// now, naming the parameter, not a study of failed trials.
    fn probe(&self) -> Result<(), TuneRunError> {
        let d = self.space.dims();
        let mut points: Vec<Map<String, Value>> = [0.0, 0.5, 1.0]
            .iter()
            .map(|u| {
                let mut x = vec![*u; d];
                self.space.canonicalize(&mut x);
                self.space.decode(&x)
            })
            .collect();
        for p in self.space.params() {
            if let Kind::Categorical { choices } = &p.kind {
                for c in choices {
                    points.push(Map::from_iter([(p.name.clone(), c.clone())]));
                }
            }
        }
        for trial in &points {
            self.params(trial)?;
        }
        Ok(())
    }

    /// The base parameters (`[train.params]`) overridden by a trial's, with the tuned
    /// metric first (it drives early stopping) and `threads` threads.
    pub fn params(&self, trial: &Map<String, Value>) -> Result<Params, TuneRunError> {
        let Value::Object(mut merged) = serde_json::to_value(&self.train.params)
            .map_err(|e| tune_option("[train.params]", e.to_string()))?
        else {
            return Err(tune_option("[train.params]", "not a table"));
        };
        for (k, v) in trial {
            merged.insert(k.clone(), v.clone());
        }
        let args: ParamArgs = serde_json::from_value(Value::Object(merged)).map_err(|e| {
            let name = trial
                .keys()
                .find(|k| e.to_string().contains(k.as_str()))
                .cloned()
                .unwrap_or_else(|| "[tune.space]".into());
            TuneRunError::InvalidParameter {
                name,
                reason: e.to_string(),
            }
        })?;
        let mut p = Params::default();
        args.apply(&mut p).map_err(|e| invalid_param(trial, e))?;
        let mut metrics = vec![self.tune.metric.clone()];
        metrics.extend(
            p.metric
                .iter()
                .filter(|m| **m != self.tune.metric && *m != "none")
                .cloned(),
        );
        p.metric = metrics;
        p.validate().map_err(|e| invalid_param(trial, e))?;
        Ok(p)
    }
}

/// A booster parameter error as an error of the tuned parameter it names (or of the
/// base parameters).
fn invalid_param(trial: &Map<String, Value>, e: crate::gbdt::GbdtError) -> TuneRunError {
    let name = match &e {
        crate::gbdt::GbdtError::Param { name, .. } => name.to_string(),
        _ => String::new(),
    };
    let shown = if trial.contains_key(&name) {
        name
    } else {
        format!(
            "{name} ([train.params] with {})",
            Value::Object(trial.clone())
        )
    };
    TuneRunError::InvalidParameter {
        name: shown,
        reason: e.to_string(),
    }
}

/// The lake's splits a study trains and validates on.
pub struct TuneData<'a> {
    pub train: &'a Dataset,
    pub valid: &'a Dataset,
    /// Lineage of the best model (the lake, the target).
    pub lineage: BTreeMap<String, String>,
}

/// How one trial ended, with its model when it completed.
struct Outcome {
    trial: usize,
    result: TrialResult,
    booster: Option<Booster>,
    rounds: usize,
    secs: f64,
}

/// Per-trial lines on stderr and, on a terminal, a bar of trials under them.
struct Lines {
    quiet: bool,
    bar: bool,
    total: usize,
}

impl Lines {
    fn line(&self, s: &str) {
        if !self.quiet {
            let mut e = std::io::stderr().lock();
            if self.bar {
                let _ = write!(e, "\r\x1b[2K");
            }
            let _ = writeln!(e, "{s}");
        }
    }
    fn progress(&self, done: usize, best: Option<f64>) {
        if self.quiet || !self.bar {
            return;
        }
        let total = self.total.max(1);
        let done = done.min(total);
        let full = done * 30 / total;
        let best = best.map_or(String::new(), |b| format!("  best {b:.6}"));
        eprint!(
            "\r\x1b[2K[{}{}] {done}/{total} trials{best}",
            "#".repeat(full),
            "-".repeat(30 - full)
        );
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if !self.quiet && self.bar {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Runs (or resumes) the study in `job.out`; writes `best_params.json`, `best.contrail`
/// and `report.html` there and returns the best trial.
pub fn run_lake_study(
    job: &LakeTuneJob,
    data: &TuneData,
    quiet: bool,
) -> Result<BestTrial, TuneRunError> {
    let out = &job.out;
    std::fs::create_dir_all(out).map_err(|source| TuneRunError::Io {
        path: out.clone(),
        op: "creating the output folder",
        source,
    })?;
    let config = StudyConfig {
        sampler: job.tune.sampler,
        seed: job.tune.seed,
        direction: job.direction,
        n_startup: None,
    };
    let journal = out.join("journal.jsonl");
    check_setup(job)?;
    let study = Study::open(&journal, job.space.clone(), config)?;
    let lines = Lines {
        quiet,
        bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        total: job.tune.trials,
    };
    if !study.trials().is_empty() {
        let told = study
            .trials()
            .iter()
            .filter(|t| t.state != TrialState::Running)
            .count();
        lines.line(&format!(
            "resuming {}: {told} trials told, {} to run again",
            journal.display(),
            study.running().len()
        ));
    }
    let study = Mutex::new(study);
    let lock = || study.lock().unwrap_or_else(|p| p.into_inner());
    let again = lock().running();
    for chunk in again.chunks(job.tune.parallel) {
        for &t in chunk {
            lock().restart(t)?;
        }
        run_batch(&study, chunk, job, data, &lines)?;
    }
    loop {
        let asked = {
            let mut s = lock();
            let have = s.trials().len();
            if have >= job.tune.trials {
                break;
            }
            s.ask(job.tune.parallel.min(job.tune.trials - have))?
        };
        run_batch(&study, &asked, job, data, &lines)?;
    }
    drop(lines);
    let study = study.into_inner().unwrap_or_else(|p| p.into_inner());
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
                .unwrap_or_else(|| "every trial was pruned".into()),
        });
    };
    let best = BestTrial {
        value: best.value.unwrap_or(f64::NAN),
        params: best.params.clone(),
        trial: best.number,
    };
    // The best model file normally holds the best trial already (written as it finished);
    // if not (a kill between the two, or ties finishing out of order), train it again.
    let model = out.join("best.contrail");
    let held = std::fs::read(&model)
        .ok()
        .and_then(|b| package::from_bytes(&b, &model.display().to_string()).ok())
        .and_then(|(_, m)| m.lineage.get("tune_trial").cloned());
    if held != Some(best.trial.to_string()) {
        tracing::info!(
            "training trial {} again for {}",
            best.trial,
            model.display()
        );
        let params = job.params(&best.params)?;
        let (b, _) = crate::gbdt::train_on(
            &Device::Cpu,
            data.train,
            Some(data.valid),
            &params,
            &mut |_: &IterationLog| {},
        )
        .map_err(models::ModelError::from)?;
        save_best(&model, &b, best.trial, job, data)?;
    }
    let json = serde_json::to_string_pretty(&Value::Object(best.params.clone()))
        .map_err(|e| tune_option("best_params.json", e.to_string()))?;
    write_atomic(
        &out.join("best_params.json"),
        format!("{json}\n").as_bytes(),
    )?;
    Ok(best)
}

/// What the journal's header does not hold and a resumed study must keep: the model
/// (`[train]` but its `out`), the metric and the pruner, in `<out>/study.json`. Written
/// with a new study; a resume with anything else is refused, naming what changed.
fn check_setup(job: &LakeTuneJob) -> Result<(), TuneRunError> {
    let mut train = job.train.clone();
    train.out.clear();
    let setup = serde_json::json!({
        "train": train,
        "metric": job.tune.metric,
        "pruner": format!("{:?}", job.pruner),
    });
    let path = job.out.join("study.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let old: Value = serde_json::from_slice(&bytes)
                .map_err(|e| tune_option("--out", format!("{}: {e}", path.display())))?;
            for key in ["train", "metric", "pruner"] {
                if old.get(key) != setup.get(key) {
                    return Err(tune_option(
                        "--out",
                        format!(
                            "{} holds a study with another {key} ({}; this config: {}); use another --out",
                            job.out.display(),
                            old.get(key).unwrap_or(&Value::Null),
                            setup[key]
                        ),
                    ));
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = serde_json::to_string_pretty(&setup)
                .map_err(|e| tune_option("study.json", e.to_string()))?;
            write_atomic(&path, format!("{text}\n").as_bytes())
        }
        Err(source) => Err(TuneRunError::Io {
            path,
            op: "reading",
            source,
        }),
    }
}

/// Threads for each of `parallel` trials: the base `num_threads` (or every core) split
/// evenly.
fn threads_per_trial(job: &LakeTuneJob) -> usize {
    let total = match job.train.params.num_threads {
        Some(n) if n > 0 => n,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    (total / job.tune.parallel).max(1)
}

fn run_batch(
    study: &Mutex<Study>,
    trials: &[usize],
    job: &LakeTuneJob,
    data: &TuneData,
    lines: &Lines,
) -> Result<(), TuneRunError> {
    let lock = || study.lock().unwrap_or_else(|p| p.into_inner());
    let threads = threads_per_trial(job);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> Result<(), TuneRunError> {
        for &t in trials {
            let params = lock().trials()[t].params.clone();
            let tx = tx.clone();
            scope.spawn(move || {
                let r = run_trial(study, t, &params, threads, job, data);
                let _ = tx.send(r);
            });
        }
        drop(tx);
        for r in rx {
            let o = r?;
            let name = format!("valid-{}", job.tune.metric);
            match &o.result {
                TrialResult::Complete(v) => {
                    let better =
                        lock()
                            .best()
                            .and_then(|b| b.value)
                            .is_none_or(|b| match job.direction {
                                Direction::Minimize => *v < b,
                                Direction::Maximize => *v > b,
                            });
                    // The model first, then the journal: a kill in between reruns the
                    // trial (the same model again), never leaves a told best without one.
                    if let (true, Some(b)) = (better, o.booster.as_ref()) {
                        save_best(&job.out.join("best.contrail"), b, o.trial, job, data)?;
                    }
                    lines.line(&format!(
                        "trial {}: {name} {v} ({} rounds, {:.1}s) {}",
                        o.trial,
                        o.rounds,
                        o.secs,
                        Value::Object(lock().trials()[o.trial].params.clone())
                    ));
                }
                TrialResult::Pruned => {
                    let last = lock().trials()[o.trial].intermediate.last().copied();
                    lines.line(&format!(
                        "trial {}: pruned at round {} ({name} {})",
                        o.trial,
                        o.rounds,
                        last.map_or(f64::NAN, |l| l.1)
                    ));
                }
                TrialResult::Failed(why) => {
                    lines.line(&format!("trial {} failed: {why}", o.trial));
                }
            }
            let mut s = lock();
            s.tell(o.trial, o.result)?;
            let done = s.trials().iter().filter(|t| t.state != TrialState::Running);
            lines.progress(done.count(), s.best().and_then(|b| b.value));
        }
        Ok(())
    })?;
    crate::tune::write_report(&lock(), &job.out.join("report.html"))
}

/// Trains one trial, reporting the validation metric after every round and stopping
/// when the pruner says so. Errors of the journal end the study; errors of training
/// make a failed trial.
fn run_trial(
    study: &Mutex<Study>,
    trial: usize,
    trial_params: &Map<String, Value>,
    threads: usize,
    job: &LakeTuneJob,
    data: &TuneData,
) -> Result<Outcome, TuneRunError> {
    let start = std::time::Instant::now();
    let done = |result, booster, rounds| Outcome {
        trial,
        result,
        booster,
        rounds,
        secs: start.elapsed().as_secs_f64(),
    };
    let mut params = match job.params(trial_params) {
        Ok(p) => p,
        Err(e) => return Ok(done(TrialResult::Failed(e.to_string()), None, 0)),
    };
    params.num_threads = threads;
    let metric_name = job.tune.metric.clone();
    let mut journal_error: Option<TuneRunError> = None;
    let mut pruned = false;
    let mut rounds = 0;
    let trained = crate::gbdt::train_on_until(
        &Device::Cpu,
        data.train,
        Some(data.valid),
        &params,
        &mut |l: &IterationLog| {
            rounds = l.iteration;
            let Some(v) = l
                .values
                .iter()
                .find(|(d, m, _)| d == "valid" && *m == metric_name)
                .map(|x| x.2)
                .filter(|v| v.is_finite())
            else {
                return Control::Continue;
            };
            let mut s = study.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = s.report(trial, l.iteration as u64, v) {
                journal_error = Some(e.into());
                return Control::Stop;
            }
            if s.should_prune(trial, &job.pruner) {
                pruned = true;
                return Control::Stop;
            }
            Control::Continue
        },
    );
    if let Some(e) = journal_error {
        return Err(e);
    }
    let booster = match trained {
        Ok((b, _)) => b,
        Err(e) => return Ok(done(TrialResult::Failed(e.to_string()), None, rounds)),
    };
    if pruned {
        return Ok(done(TrialResult::Pruned, None, rounds));
    }
    let value = match booster.predict(data.valid) {
        Ok(p) => valid_metric(&booster, data.valid, &p, &job.tune.metric),
        Err(e) => return Ok(done(TrialResult::Failed(e.to_string()), None, rounds)),
    };
    Ok(done(TrialResult::Complete(value), Some(booster), rounds))
}

fn valid_metric(b: &Booster, valid: &Dataset, pred: &[f64], name: &str) -> f64 {
    metric::evaluate(
        name,
        &valid.target,
        pred,
        valid.weights.as_deref(),
        &b.objective,
    )
}

/// Writes the best model's package (train and valid metrics, the tuned one included;
/// the trial in its lineage) atomically.
fn save_best(
    path: &Path,
    b: &Booster,
    trial: usize,
    job: &LakeTuneJob,
    data: &TuneData,
) -> Result<(), TuneRunError> {
    let mut metrics = models::score_metrics(b, data.train, "train")?;
    metrics.extend(models::score_metrics(b, data.valid, "valid")?);
    let p = b.predict(data.valid).map_err(models::ModelError::from)?;
    metrics.insert(
        format!("valid-{}", job.tune.metric),
        valid_metric(b, data.valid, &p, &job.tune.metric),
    );
    let mut lineage = data.lineage.clone();
    lineage.insert("tune_trial".into(), trial.to_string());
    lineage.insert("tune_metric".into(), format!("valid-{}", job.tune.metric));
    let m = package::manifest(b, metrics, package::fingerprint(data.train), lineage);
    let bytes = package::to_bytes(b, &m).map_err(models::ModelError::from)?;
    write_atomic(path, &bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TuneRunError> {
    let tmp = path.with_extension("tmp");
    let io = |op| {
        let path = path.to_path_buf();
        move |source| TuneRunError::Io { path, op, source }
    };
    std::fs::write(&tmp, bytes).map_err(io("writing"))?;
    std::fs::rename(&tmp, path).map_err(io("renaming"))?;
    Ok(())
}
