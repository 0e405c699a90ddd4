//! `contrail tune --space ... --command ...`: black-box hyperparameter search.
//!
//! Each trial runs the command with `sh -c`, its parameters as one JSON object on stdin
//! (and its number in `CONTRAIL_TRIAL`); the last non-empty line of its stdout is the
//! objective value. A command that exits non-zero, is killed, or whose last line is not a
//! finite number makes a failed trial, with the reason in the journal; the study goes on.
//!
//! Trials run in batches of `--parallel`: a batch is asked at once (constant liar), its
//! commands run side by side, and the next batch is asked when all have finished, so a
//! seed gives the same study whatever the timing. `<out>/journal.jsonl` is the study's
//! journal (contrail-tune's format); running the same command again with the same `--out`
//! resumes it: trials that were running when it died run again with the same parameters,
//! told trials are never run again. `<out>/report.html` plots the history and a slice per
//! parameter (inline SVG), rewritten after every batch.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use contrail_tune::{
    Direction, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult, TrialState, TuneError,
};
use serde_json::{Map, Value};
use tracing::{info, warn};

/// Errors of a black-box study.
#[derive(Debug, thiserror::Error)]
pub enum TuneRunError {
    #[error("{path}: {op}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("search space {path}")]
    Space {
        path: PathBuf,
        #[source]
        source: contrail_tune::SpaceError,
    },
    #[error(transparent)]
    Tune(#[from] TuneError),
    #[error("{option}: {reason}")]
    BadOption {
        option: &'static str,
        reason: String,
    },
    #[error("no trial completed ({failed} failed; the first failure: {first_reason})")]
    NoCompleteTrial { failed: usize, first_reason: String },
    #[error(
        "[tune.space]: unknown parameter `{name}` (the booster's tunable parameters: {tunable})"
    )]
    UnknownParameter { name: String, tunable: String },
    #[error("[tune.space]: parameter `{name}`: {reason}")]
    InvalidParameter { name: String, reason: String },
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
}

impl TuneRunError {
    /// True for errors the user can fix (the space, the options, a journal of another
    /// study, a command that never succeeds).
    pub fn is_user_error(&self) -> bool {
        match self {
            TuneRunError::Io { .. } => false,
            TuneRunError::Tune(e) => e.is_user_error(),
            TuneRunError::Model(e) => e.is_user_error(),
            _ => true,
        }
    }
}

/// Options of `contrail tune` in black-box mode.
#[derive(Clone, Debug)]
pub struct BlackBoxOptions {
    pub space: PathBuf,
    pub command: String,
    pub trials: usize,
    pub sampler: SamplerKind,
    pub parallel: usize,
    pub seed: u64,
    pub direction: Direction,
    pub out: PathBuf,
}

/// The best trial, printed as one JSON line.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BestTrial {
    pub value: f64,
    pub params: Map<String, Value>,
    pub trial: usize,
}

/// Runs (or resumes) the study; returns the best trial.
pub fn run_black_box(opts: &BlackBoxOptions) -> Result<BestTrial, TuneRunError> {
    if opts.parallel == 0 {
        return Err(TuneRunError::BadOption {
            option: "--parallel",
            reason: "must be at least 1".into(),
        });
    }
    if opts.trials == 0 {
        return Err(TuneRunError::BadOption {
            option: "--trials",
            reason: "must be at least 1".into(),
        });
    }
    let text = std::fs::read_to_string(&opts.space).map_err(|source| TuneRunError::Io {
        path: opts.space.clone(),
        op: "reading the search space",
        source,
    })?;
    let space = SearchSpace::from_toml_str(&text).map_err(|source| TuneRunError::Space {
        path: opts.space.clone(),
        source,
    })?;
    std::fs::create_dir_all(&opts.out).map_err(|source| TuneRunError::Io {
        path: opts.out.clone(),
        op: "creating the output folder",
        source,
    })?;
    let journal = opts.out.join("journal.jsonl");
    let config = StudyConfig {
        sampler: opts.sampler,
        seed: opts.seed,
        direction: opts.direction,
        n_startup: None,
    };
    let mut study = Study::open(&journal, space, config)?;
    let told = study
        .trials()
        .iter()
        .filter(|t| t.state != TrialState::Running)
        .count();
    if !study.trials().is_empty() {
        info!(
            "resuming {}: {} trials told, {} to run again",
            journal.display(),
            told,
            study.running().len()
        );
    }
    // Trials that were running when the study died: again, same parameters.
    let again = study.running();
    for chunk in again.chunks(opts.parallel) {
        for &t in chunk {
            study.restart(t)?;
        }
        run_batch(&mut study, chunk, opts)?;
    }
    while study.trials().len() < opts.trials {
        let n = opts.parallel.min(opts.trials - study.trials().len());
        let asked = study.ask(n)?;
        run_batch(&mut study, &asked, opts)?;
    }
    write_report(&study, &opts.out.join("report.html"))?;
    match study.best() {
        Some(t) => Ok(BestTrial {
            value: t.value.unwrap_or(f64::NAN),
            params: t.params.clone(),
            trial: t.number,
        }),
        None => {
            let failed: Vec<_> = study
                .trials()
                .iter()
                .filter(|t| t.state == TrialState::Failed)
                .collect();
            Err(TuneRunError::NoCompleteTrial {
                failed: failed.len(),
                first_reason: failed
                    .first()
                    .and_then(|t| t.reason.clone())
                    .unwrap_or_default(),
            })
        }
    }
}

fn run_batch(
    study: &mut Study,
    trials: &[usize],
    opts: &BlackBoxOptions,
) -> Result<(), TuneRunError> {
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|scope| -> Result<(), TuneRunError> {
        for &t in trials {
            let params = Value::Object(study.trials()[t].params.clone()).to_string();
            let tx = tx.clone();
            let command = opts.command.as_str();
            scope.spawn(move || {
                let r = run_trial(command, t, &params);
                let _ = tx.send((t, r));
            });
        }
        drop(tx);
        // Tell each trial as it ends: a kill loses only the trials still running.
        for (t, r) in rx {
            match &r {
                TrialResult::Complete(v) => info!("trial {t}: {v}"),
                TrialResult::Failed(why) => warn!("trial {t} failed: {why}"),
                TrialResult::Pruned => {}
            }
            study.tell(t, r)?;
        }
        Ok(())
    })?;
    if let Some(b) = study.best() {
        info!(
            "{} of {} trials; best {} (trial {})",
            study.trials().len(),
            opts.trials,
            b.value.unwrap_or(f64::NAN),
            b.number
        );
    }
    write_report(study, &opts.out.join("report.html"))
}

/// The last `n` characters of a text, on one line.
fn tail(s: &str, n: usize) -> String {
    let s = s.trim();
    let chars: Vec<char> = s.chars().collect();
    let start = chars.len().saturating_sub(n);
    chars[start..]
        .iter()
        .collect::<String>()
        .replace('\n', " | ")
}

/// Runs one trial's command; never panics, every problem is a failed trial.
pub fn run_trial(command: &str, trial: usize, params_json: &str) -> TrialResult {
    let child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("CONTRAIL_TRIAL", trial.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return TrialResult::Failed(format!("could not start sh: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine (broken pipe ignored).
        let _ = stdin.write_all(params_json.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    // Read stderr on a thread so that neither pipe can fill up and block the command.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait();
    let err = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let status = match status {
        Ok(s) => s,
        Err(e) => return TrialResult::Failed(format!("waiting for the command: {e}")),
    };
    if !status.success() {
        let what = match status.code() {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        };
        let err = tail(&err, 300);
        return TrialResult::Failed(if err.is_empty() {
            what
        } else {
            format!("{what}: {err}")
        });
    }
    let Some(last) = out.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return TrialResult::Failed(
            "the command printed nothing (expected the objective value as the last line)".into(),
        );
    };
    match last.parse::<f64>() {
        Ok(v) if v.is_finite() => TrialResult::Complete(v),
        Ok(v) => TrialResult::Failed(format!("objective value {v} is not finite")),
        Err(_) => TrialResult::Failed(format!(
            "the last line of output is not a number: {:?}",
            tail(last, 200)
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The HTML report: inline SVG, no dependencies.

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Plot {
    w: f64,
    h: f64,
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Plot {
    const M: f64 = 40.0;
    fn px(&self, x: f64) -> f64 {
        Self::M + (x - self.x0) / (self.x1 - self.x0).max(1e-300) * (self.w - 1.5 * Self::M)
    }
    fn py(&self, y: f64) -> f64 {
        self.h - Self::M
            + (y - self.y0) / (self.y1 - self.y0).max(1e-300) * -(self.h - 1.5 * Self::M)
    }
    fn frame(&self, title: &str, xlabel: &str, ylabel: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
<rect x=\"{m}\" y=\"{t}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>\
<text x=\"{cx}\" y=\"14\" text-anchor=\"middle\" font-size=\"13\">{title}</text>\
<text x=\"{cx}\" y=\"{by}\" text-anchor=\"middle\">{xlabel}</text>\
<text x=\"12\" y=\"{cy}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {cy})\">{ylabel}</text>\
<text x=\"{m}\" y=\"{ly}\" text-anchor=\"start\" fill=\"#555\">{x0}</text>\
<text x=\"{r}\" y=\"{ly}\" text-anchor=\"end\" fill=\"#555\">{x1}</text>\
<text x=\"{m2}\" y=\"{yb}\" text-anchor=\"end\" fill=\"#555\">{y0}</text>\
<text x=\"{m2}\" y=\"{yt}\" text-anchor=\"end\" fill=\"#555\">{y1}</text>",
            w = self.w,
            h = self.h,
            m = Self::M,
            t = Self::M / 2.0,
            pw = self.w - 1.5 * Self::M,
            ph = self.h - 1.5 * Self::M,
            cx = self.w / 2.0,
            by = self.h - 6.0,
            cy = self.h / 2.0,
            ly = self.h - Self::M + 13.0,
            r = self.w - Self::M / 2.0,
            m2 = Self::M - 3.0,
            yb = self.h - Self::M,
            yt = Self::M / 2.0 + 8.0,
            title = esc(title),
            xlabel = esc(xlabel),
            ylabel = esc(ylabel),
            x0 = fmt_num(self.x0),
            x1 = fmt_num(self.x1),
            y0 = fmt_num(self.y0),
            y1 = fmt_num(self.y1),
        )
    }
}

fn fmt_num(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.2e}")
    } else {
        format!("{:.3}", v)
    }
}

fn range(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

/// The report: optimisation history (every complete trial, the best so far as a line,
/// failed trials as ticks) and one slice per parameter (value against the parameter).
/// Each parameter's share of the objective's variation: the gain importances of a small
/// boosted-tree model (Contrail's own) fitted from the complete trials' parameters (log
/// parameters on the log scale, choices as categories, inactive ones missing) to their
/// objective values. Deterministic; empty below 8 complete trials.
pub fn parameter_importances(
    study: &Study,
    complete: &[(usize, f64, &Map<String, Value>)],
) -> Vec<(String, f64)> {
    use crate::gbdt::data::{Column, Dataset};
    if complete.len() < 8 {
        return Vec::new();
    }
    let params = study.space().params();
    let mut columns = Vec::with_capacity(params.len());
    for param in params {
        let col = match &param.kind {
            contrail_tune::Kind::Categorical { .. } => {
                let v: Vec<Option<String>> = complete
                    .iter()
                    .map(|(_, _, ps)| ps.get(&param.name).map(|x| x.to_string()))
                    .collect();
                Column::categorical(&v)
            }
            kind => {
                let log = matches!(
                    kind,
                    contrail_tune::Kind::Float { log: true, .. }
                        | contrail_tune::Kind::Int { log: true, .. }
                );
                Column::Numeric(
                    complete
                        .iter()
                        .map(|(_, _, ps)| {
                            ps.get(&param.name)
                                .and_then(Value::as_f64)
                                .map_or(f64::NAN, |x| if log { x.max(1e-300).ln() } else { x })
                        })
                        .collect(),
                )
            }
        };
        columns.push(col);
    }
    // Shares of gain do not change with the objective's scale; values divided by the
    // largest magnitude keep any finite objective (1e300 as well) inside what training
    // accepts.
    let scale = complete.iter().map(|c| c.1.abs()).fold(0.0, f64::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    let data = Dataset {
        names: params.iter().map(|p| p.name.clone()).collect(),
        columns,
        target: complete.iter().map(|c| c.1 / scale).collect(),
        weights: None,
    };
    let p = crate::gbdt::Params {
        num_iterations: 50,
        learning_rate: 0.1,
        num_leaves: 4,
        min_data_in_leaf: 2,
        min_data_per_group: 2,
        max_cat_to_onehot: 8,
        num_threads: 1,
        metric: vec!["none".into()],
        ..Default::default()
    };
    let Ok(b) = crate::gbdt::train(&data, None, &p, &mut |_| {}) else {
        return Vec::new();
    };
    let (gain, _) = b.importance();
    let total: f64 = gain.iter().sum();
    let mut out: Vec<(String, f64)> = params
        .iter()
        .zip(gain)
        .map(|(p, g)| (p.name.clone(), if total > 0.0 { g / total } else { 0.0 }))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

fn importance_section(study: &Study, complete: &[(usize, f64, &Map<String, Value>)]) -> String {
    let imp = parameter_importances(study, complete);
    if imp.is_empty() {
        return "<h2>Parameter importances</h2><p>(after 8 complete trials)</p>".into();
    }
    let row = 22.0;
    let (w, left) = (640.0, 180.0);
    let h = row * imp.len() as f64 + 30.0;
    let mut svg = format!(
        "<h2>Parameter importances</h2><svg width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (name, share)) in imp.iter().enumerate() {
        let y = 10.0 + row * i as f64;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
<rect x=\"{left}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7bd0\"><title>{:.3}</title></rect>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\">{:.1}%</text>",
            left - 6.0,
            y + 13.0,
            esc(name),
            (w - left - 70.0) * share,
            row - 6.0,
            share,
            left + (w - left - 70.0) * share + 4.0,
            y + 13.0,
            100.0 * share
        ));
    }
    svg.push_str("</svg><p>Gain importances of boosted trees fitted from the complete trials' parameters to their objective values.</p>");
    svg
}

pub fn render_report(study: &Study) -> String {
    let complete: Vec<(usize, f64, &Map<String, Value>)> = study
        .trials()
        .iter()
        .filter_map(|t| match (t.state, t.value) {
            (TrialState::Complete, Some(v)) => Some((t.number, v, &t.params)),
            _ => None,
        })
        .collect();
    let failed = study
        .trials()
        .iter()
        .filter(|t| t.state == TrialState::Failed)
        .count();
    let dir = study.config().direction;
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>contrail tune</title>\
<style>body{font-family:sans-serif;margin:20px}svg{margin:6px;background:#fff}</style></head><body>",
    );
    html.push_str(&format!(
        "<h1>contrail tune</h1><p>{} trials: {} complete, {} failed; sampler {}, seed {}, {}.</p>",
        study.trials().len(),
        complete.len(),
        failed,
        study.config().sampler,
        study.config().seed,
        dir
    ));
    if let Some(b) = study.best() {
        html.push_str(&format!(
            "<p>Best: <b>{}</b> at trial {}: <code>{}</code></p>",
            b.value.unwrap_or(f64::NAN),
            b.number,
            esc(&Value::Object(b.params.clone()).to_string())
        ));
    }
    let (y0, y1) = range(complete.iter().map(|c| c.1));
    let n = study.trials().len().max(2) as f64;
    let p = Plot {
        w: 640.0,
        h: 320.0,
        x0: 0.0,
        x1: n - 1.0,
        y0,
        y1,
    };
    let mut svg = p.frame("Optimisation history", "trial", "objective");
    let mut best = None::<f64>;
    let mut path = String::new();
    for (t, v, _) in &complete {
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#4a7bd0\" fill-opacity=\"0.7\"><title>trial {t}: {v}</title></circle>",
            p.px(*t as f64),
            p.py(*v)
        ));
        let b = match (best, dir) {
            (None, _) => *v,
            (Some(b), Direction::Minimize) => b.min(*v),
            (Some(b), Direction::Maximize) => b.max(*v),
        };
        path.push_str(&format!(
            "{}{:.1},{:.1}",
            if best.is_none() { "M" } else { " L" },
            p.px(*t as f64),
            p.py(b)
        ));
        best = Some(b);
    }
    if !path.is_empty() {
        svg.push_str(&format!(
            "<path d=\"{path}\" fill=\"none\" stroke=\"#d04a4a\" stroke-width=\"2\"/>"
        ));
    }
    for t in study
        .trials()
        .iter()
        .filter(|t| t.state == TrialState::Failed)
    {
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{a:.1}\" y2=\"{b:.1}\" stroke=\"#999\"><title>trial {}: {}</title></line>",
            t.number,
            esc(t.reason.as_deref().unwrap_or("")),
            x = p.px(t.number as f64),
            a = p.h - Plot::M,
            b = p.h - Plot::M - 6.0,
        ));
    }
    svg.push_str("</svg>");
    html.push_str(&svg);
    html.push_str(&importance_section(study, &complete));
    html.push_str("<h2>Parameter slices</h2>");
    for param in study.space().params() {
        let pts: Vec<(f64, f64, String)> = complete
            .iter()
            .filter_map(|(_, v, ps)| {
                let pv = ps.get(&param.name)?;
                let x = match &param.kind {
                    contrail_tune::Kind::Categorical { choices } => {
                        choices.iter().position(|c| c == pv)? as f64
                    }
                    _ => pv.as_f64()?,
                };
                Some((x, *v, pv.to_string()))
            })
            .collect();
        let log = matches!(
            param.kind,
            contrail_tune::Kind::Float { log: true, .. }
                | contrail_tune::Kind::Int { log: true, .. }
        );
        let tx = |x: f64| if log { x.max(1e-300).log10() } else { x };
        let (x0, x1) = match &param.kind {
            contrail_tune::Kind::Float { low, high, .. } => (tx(*low), tx(*high)),
            contrail_tune::Kind::Int { low, high, .. } => (tx(*low as f64), tx(*high as f64)),
            contrail_tune::Kind::Categorical { choices } => (-0.5, choices.len() as f64 - 0.5),
        };
        let q = Plot {
            w: 320.0,
            h: 240.0,
            x0,
            x1,
            y0,
            y1,
        };
        let label = if log {
            format!("log10 {}", param.name)
        } else {
            param.name.clone()
        };
        let mut s = q.frame(&param.name, &label, "objective");
        for (x, v, shown) in &pts {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#4a7bd0\" fill-opacity=\"0.6\"><title>{}: {v}</title></circle>",
                q.px(tx(*x)),
                q.py(*v),
                esc(shown)
            ));
        }
        s.push_str("</svg>");
        html.push_str(&s);
    }
    html.push_str("</body></html>\n");
    html
}

pub fn write_report(study: &Study, path: &Path) -> Result<(), TuneRunError> {
    let tmp = path.with_extension("html.tmp");
    let io = |op| {
        let path = path.to_path_buf();
        move |source| TuneRunError::Io { path, op, source }
    };
    std::fs::write(&tmp, render_report(study)).map_err(io("writing the report"))?;
    std::fs::rename(&tmp, path).map_err(io("renaming the report"))?;
    Ok(())
}
