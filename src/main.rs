//! The `contrail` command: parse, load config, call a library function, report.
//! Data goes to stdout; logs and per-stage lines to stderr. Exit codes: 0 success,
//! 2 user error (bad input, configuration or data), 1 internal error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use contrail::config::{JobConfig, QUICKSTART};
use contrail::etl::etl::{self as etl_job, EtlOptions};
use contrail::etl::ingest::{self, IngestOptions};
use contrail::gbdt::Params;
use contrail::models::{self, LakeTrainConfig};
use contrail::sim::{self, SimConfig, Sink};
use contrail::store::partition::{HourRange, Partition};
use contrail::store::Lake;
use tracing::info;

/// Data to stdout. A reader that went away (`contrail summary | head`) ends the command
/// quietly, with exit code 0, where `println!` would panic; another write error is an
/// error of the command.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*).and_then(|_| o.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::new(e).context("writing to standard output"));
        }
    }};
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = write!(o, $($t)*).and_then(|_| o.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(anyhow::Error::new(e).context("writing to standard output"));
        }
    }};
}

#[derive(Parser)]
#[command(
    name = "contrail",
    version,
    about = "Train and serve airline pricing models: lake, simulator, ETL"
)]
struct Cli {
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More detail on stderr (-vv for debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct LakeArg {
    /// The lake: a path, file://path, s3://bucket/prefix or memory://name.
    #[arg(long, env = "CONTRAIL_LAKE", default_value = "./lake")]
    lake: String,
}

#[derive(Args)]
struct SimArgs {
    /// A TOML job config whose [simulate] section sets the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    days: Option<u32>,
    #[arg(long)]
    routes: Option<u32>,
    #[arg(long)]
    seed: Option<u64>,
    /// First simulated day, YYYY-MM-DD.
    #[arg(long)]
    start_date: Option<String>,
    /// Mean searches per route per day.
    #[arg(long)]
    searches_per_route_day: Option<f64>,
    /// Total share of bad records, spread over every kind.
    #[arg(long)]
    bad_rate: Option<f64>,
    /// Share of error fares.
    #[arg(long)]
    anomaly_rate: Option<f64>,
}

#[derive(Args, Default)]
struct TrainArgs {
    /// Parquet file or folder (any URL) to train on.
    #[arg(long)]
    data: Option<String>,
    /// Column to predict.
    #[arg(long)]
    target: Option<String>,
    /// Validation Parquet (early stopping and valid-* metrics).
    #[arg(long)]
    valid: Option<String>,
    /// Columns to treat as categorical (string columns always are).
    #[arg(long, value_delimiter = ',')]
    categorical: Vec<String>,
    /// Feature columns (default: every column but the target and weight).
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Sample-weight column.
    #[arg(long)]
    weight: Option<String>,
    /// A TOML job config with a [train] section: trains on the curated lake.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where to write the model package.
    #[arg(long)]
    out: Option<String>,
    /// A JSON-lines file of per-iteration metrics.
    #[arg(long)]
    metrics_file: Option<PathBuf>,
    #[command(flatten)]
    params: models::ParamArgs,
    /// Model to train: gbdt (gradient-boosted trees, the default) or isolation-forest
    /// (anomaly scores; no target).
    #[arg(long)]
    model: Option<String>,
    /// Where to grow the trees: cpu, wgpu (a GPU through Vulkan/Metal/DX12, or Mesa's
    /// lavapipe) or cuda[:N]; the same trees on every device. wgpu and cuda need a build
    /// with the features of the same names.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[command(flatten)]
    forest: ForestArgs,
    /// Neural models: a checkpoint file written after every epoch; a run that finds one
    /// resumes from it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Neural models (--model nn): a TOML file of network parameters (the keys of
    /// `[demand.params]`, docs/demand.md).
    #[arg(long)]
    nn_params: Option<PathBuf>,
}

/// Isolation forest parameters (scikit-learn's names and meanings; `--seed` and
/// `--num-threads` are shared with the trees).
#[derive(Args, Default, PartialEq)]
struct ForestArgs {
    /// Isolation forest: number of trees [default: 100].
    #[arg(long)]
    n_estimators: Option<usize>,
    /// Isolation forest: rows per tree: auto (min(256, rows)), a count, or a fraction with
    /// a point [default: auto].
    #[arg(long)]
    max_samples: Option<String>,
    /// Isolation forest: features per tree: a count, or a fraction with a point
    /// [default: 1.0].
    #[arg(long)]
    max_features: Option<String>,
    /// Isolation forest: share of anomalies expected in the training data, or auto (flag
    /// scores above 0.5) [default: auto].
    #[arg(long)]
    contamination: Option<String>,
    /// Isolation forest: draw each tree's rows with replacement.
    #[arg(long)]
    bootstrap: bool,
}

/// Trains an isolation forest on a Parquet file.
async fn train_forest(args: &TrainArgs) -> Result<()> {
    use contrail::gbdt::iforest::{Contamination, ForestParams, MaxFeatures, MaxSamples};
    let (Some(data), Some(out)) = (&args.data, &args.out) else {
        return Err(
            UsageError("train --model isolation-forest needs --data and --out".into()).into(),
        );
    };
    if args.device != "cpu" {
        return Err(UsageError(
            "an isolation forest trains on the CPU (its trees are a few levels deep and train in well under a second): leave out --device".into(),
        )
        .into());
    }
    if args.config.is_some()
        || args.target.is_some()
        || args.valid.is_some()
        || args.weight.is_some()
        || !args.categorical.is_empty()
        || args.metrics_file.is_some()
    {
        return Err(UsageError(
            "--config, --target, --valid, --weight, --categorical and --metrics-file do not apply to an isolation forest".into(),
        )
        .into());
    }
    let shared = models::ParamArgs {
        seed: args.params.seed,
        num_threads: args.params.num_threads,
        ..Default::default()
    };
    if args.params != shared {
        return Err(UsageError(
            "tree-boosting parameters do not apply to an isolation forest (it takes --n-estimators, --max-samples, --max-features, --contamination, --bootstrap, --seed and --num-threads)".into(),
        )
        .into());
    }
    let f = &args.forest;
    let mut p = ForestParams::default();
    if let Some(n) = f.n_estimators {
        p.n_estimators = n;
    }
    if let Some(x) = &f.max_samples {
        p.max_samples = MaxSamples::parse(x)?;
    }
    if let Some(x) = &f.max_features {
        p.max_features = MaxFeatures::parse(x)?;
    }
    if let Some(x) = &f.contamination {
        p.contamination = Contamination::parse(x)?;
    }
    p.bootstrap = f.bootstrap;
    p.seed = args.params.seed.unwrap_or(0);
    p.num_threads = args.params.num_threads.unwrap_or(0);
    p.validate()?;
    let (d, skipped) = models::forest_dataset(data, &args.features).await?;
    if !skipped.is_empty() {
        info!("string columns left out: {}", skipped.join(", "));
    }
    info!(
        "training an isolation forest on {data}: {} rows, {} features",
        d.n_rows(),
        d.n_features()
    );
    let lineage = std::collections::BTreeMap::from([("data".to_string(), data.clone())]);
    let t = std::time::Instant::now();
    let (forest, m) = models::train_forest_and_save(&d, &p, out, lineage).await?;
    info!(
        "trained {} isolation trees on {} rows each in {:.3}s; wrote {out}",
        forest.trees.len(),
        m.max_samples,
        t.elapsed().as_secs_f64()
    );
    out!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "model_kind": m.model_kind,
            "trees": m.n_trees,
            "max_samples": m.max_samples,
            "threshold": m.threshold,
            "features": m.features,
        }))?
    );
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Simulate flight-shopping events into raw/ (with truth/ and a manifest).
    Simulate {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        sim: SimArgs,
        /// Write JSON lines to stdout instead of raw/ (truth and manifest still go to the lake).
        #[arg(long)]
        stdout: bool,
    },
    /// Land JSON-lines events from stdin in raw/ hourly partitions.
    Ingest {
        #[command(flatten)]
        lake: LakeArg,
        /// Flush at least every N seconds.
        #[arg(long, default_value_t = 5.0)]
        flush_secs: f64,
        /// Flush when this many MiB are buffered.
        #[arg(long, default_value_t = 64)]
        max_buffer_mib: usize,
    },
    /// Turn raw/ into curated/ Parquet and quarantine/, with exact accounting.
    Etl {
        #[command(flatten)]
        lake: LakeArg,
        /// First hour to process, YYYY-MM-DDTHH.
        #[arg(long)]
        from: Option<String>,
        /// Last hour to process, YYYY-MM-DDTHH.
        #[arg(long)]
        to: Option<String>,
        /// Exactly these hours (YYYY-MM-DDTHH); a missing one is an error.
        #[arg(long = "partition")]
        partitions: Vec<String>,
        /// Redo partitions whose inputs are unchanged.
        #[arg(long)]
        force: bool,
    },
    /// Print a summary of the lake (tables, quarantine reasons, feature statistics).
    Summary {
        #[command(flatten)]
        lake: LakeArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train gradient-boosted trees on a Parquet file, or on the lake with --config; or an
    /// isolation forest (--model isolation-forest).
    Train(Box<TrainArgs>),
    /// Predict with a model package; writes the input columns plus `prediction` (an
    /// isolation forest: `anomaly_score` and `is_anomaly`).
    Predict {
        #[arg(long)]
        model: String,
        #[arg(long)]
        data: String,
        #[arg(long)]
        out: String,
        /// Also write SHAP contributions: `shap_<feature>` columns and `shap_bias`, which
        /// sum to the raw (link-scale) prediction.
        #[arg(long)]
        contrib: bool,
        /// Where to walk the trees: cpu, wgpu or cuda[:N] (a build with those features);
        /// the device adds leaf values in f32 (within a few parts in 10^7 of the CPU).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Batch scoring: each Parquet part of --input into one output part under --output,
    /// committed atomically; a re-run scores only what is missing (docs/scoring.md).
    ///
    /// Output parts are named `<part>-<model hash>.parquet` and never overwritten;
    /// `_SUCCESS` (rows and SHA-256 of every part) comes last, a JSON summary on stdout.
    /// Features are the input's columns of the same names (or, for a model trained on the
    /// lake, computed from curated rows); the input is checked against the model before
    /// anything is written. A category the model never saw goes to the feature's "other"
    /// bin, with the categories too rare in training to get their own.
    Score {
        /// The model package (gradient-boosted trees or an isolation forest).
        #[arg(long)]
        model: String,
        /// A Parquet file, or a folder/prefix: every *.parquet under it, sorted.
        #[arg(long)]
        input: String,
        /// The output folder or prefix (a path, file://, s3://).
        #[arg(long)]
        output: String,
        /// Where to walk the trees: cpu, wgpu or cuda[:N] (a build with those features).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Rows read and predicted at a time (the output bytes do not depend on it).
        #[arg(long, default_value_t = 65_536)]
        batch_rows: usize,
        /// Input columns to copy to the output [default: all]; `--keep ''` for none.
        #[arg(long, value_delimiter = ',')]
        keep: Option<Vec<String>>,
    },
    /// Write the train/valid/test feature tables of a lake model (a config's [train]
    /// section) as Parquet, for training other libraries on the same rows.
    ExportFeatures {
        #[command(flatten)]
        lake: LakeArg,
        #[arg(long)]
        config: PathBuf,
        /// Override the config's target column (e.g. `booked`).
        #[arg(long)]
        target: Option<String>,
        /// Folder (URL) to write train.parquet, valid.parquet and test.parquet into.
        #[arg(long)]
        out: String,
        /// Add each row's `event_id` (to join the simulator's truth).
        #[arg(long)]
        event_ids: bool,
    },
    /// Print a model's manifest and feature importances.
    Inspect { model: String },
    /// Turn a LightGBM text model or an XGBoost JSON/UBJSON model into a Contrail package
    /// whose predictions equal the library's (LightGBM: the same f64 sums; XGBoost: to
    /// its f32 rounding). Input columns are matched by the model's feature names;
    /// categorical features take their integer codes.
    Import {
        /// The source format.
        #[arg(long, value_enum)]
        from: contrail::interop::ImportFormat,
        /// The model file (a path or URL).
        file: String,
        /// Where to write the package.
        #[arg(long)]
        out: String,
    },
    /// Write a gradient-boosted model as XGBoost JSON, for XGBoost, Treelite or Triton's
    /// FIL. Categorical features take the category's position in the model's list (see
    /// `contrail inspect`); an unseen category goes left.
    Export {
        /// The target format.
        #[arg(long, value_parser = ["xgboost-json"])]
        to: String,
        /// The model package.
        model: String,
        /// Where to write the exported model.
        #[arg(long)]
        out: String,
    },
    /// How far each numeric feature's distribution on the lake's latest days has moved
    /// from a reference window: population stability index and Jensen–Shannon distance
    /// per day and feature. Exits with 3 when a PSI is above --max-psi.
    Drift {
        #[command(flatten)]
        lake: LakeArg,
        /// The latest days, each compared with the reference.
        #[arg(long, default_value_t = 1)]
        current_days: u32,
        /// Days before the current ones to compare with [default: every earlier day].
        #[arg(long, conflicts_with = "reference")]
        reference_days: Option<u32>,
        /// The reference window as FIRST..LAST days (YYYY-MM-DD..YYYY-MM-DD), ending
        /// before the current days.
        #[arg(long)]
        reference: Option<String>,
        /// Numeric features to check [default: all but those that follow the calendar:
        /// search_dow, search_month, departure_month, departure_day_of_year,
        /// days_to_holiday].
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
        /// Quantile buckets of the reference (plus one for missing values).
        #[arg(long, default_value_t = 10)]
        buckets: usize,
        /// Alarm threshold on the population stability index.
        #[arg(long, default_value_t = 0.25)]
        max_psi: f64,
        /// Check the curated table's numeric columns (price, competitor_price, stops, ...)
        /// from the statistics the ETL keeps beside each partition, without reading the
        /// data [default --features: every numeric column].
        #[arg(long)]
        from_etl_stats: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Hyperparameter search. Black-box mode (--space, --command, --trials): runs
    /// --command once per trial with the trial's parameters as one JSON object on stdin;
    /// the last line of its stdout is the objective. Lake mode (--config): tunes the
    /// [train] model of a config on the curated lake in process, as its [tune] section
    /// says, and writes best_params.json and best.contrail. Either way the best trial is
    /// printed as one JSON line; the journal (resumed by running again with the same
    /// --out) and report.html are in --out.
    Tune {
        /// Lake mode: a TOML config with [train] and [tune] sections (see
        /// configs/tune_fare_price.toml); not with --space, --command, --trials,
        /// --sampler, --parallel, --seed or --direction, which the config sets.
        #[arg(
            long,
            conflicts_with_all = ["space", "command", "trials", "sampler", "parallel", "seed", "direction"]
        )]
        config: Option<PathBuf>,
        /// Black-box mode: the search space (TOML: one table per parameter; see
        /// contrail-tune's docs).
        #[arg(long, required_unless_present = "config", requires_all = ["command", "trials"])]
        space: Option<PathBuf>,
        /// Black-box mode: the objective command, run with `sh -c`.
        #[arg(long, required_unless_present = "config")]
        command: Option<String>,
        /// Black-box mode: trials in the whole study (a resumed study counts those
        /// already run).
        #[arg(long, required_unless_present = "config")]
        trials: Option<usize>,
        /// gp (Gaussian process, expected improvement), tpe or random [default: gp].
        #[arg(long)]
        sampler: Option<contrail::tuning::SamplerKind>,
        /// Trials run side by side (suggested together by constant liar) [default: 1].
        #[arg(long)]
        parallel: Option<usize>,
        /// The sampler's seed: the same seed gives the same suggestions [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// minimize or maximize [default: minimize].
        #[arg(long)]
        direction: Option<contrail::tuning::Direction>,
        /// Folder for journal.jsonl and report.html (lake mode: also best_params.json
        /// and best.contrail; default its [tune] out).
        #[arg(long, required_unless_present = "config")]
        out: Option<PathBuf>,
    },
    /// Simulate a small market into ./lake, run the ETL, summarise the lake and train the
    /// fare model.
    Quickstart {
        #[command(flatten)]
        lake: LakeArg,
        #[command(flatten)]
        sim: SimArgs,
    },
}

/// A user error detected by the command itself (bad flag values).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Drift above the threshold: not a failure of the command, a finding (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("drift alarm: {0}")]
struct DriftAlarm(String);

fn parse_hour(s: &str) -> Result<Partition> {
    let bad = || UsageError(format!("invalid hour {s:?}: expected YYYY-MM-DDTHH"));
    let (d, h) = s.split_once('T').ok_or_else(bad)?;
    let day = contrail::events::calendar::parse_date(d).ok_or_else(bad)?;
    let h: i64 = h.parse().map_err(|_| bad())?;
    if !(0..24).contains(&h) {
        return Err(bad().into());
    }
    Ok(Partition {
        hour: day as i64 * 24 + h,
    })
}

fn sim_config(base: Option<&JobConfig>, args: &SimArgs) -> Result<SimConfig> {
    let mut cfg = SimConfig::default();
    if let Some(s) = base.and_then(|b| b.simulate.as_ref()) {
        s.apply(&mut cfg);
    }
    if let Some(p) = &args.config {
        let file = JobConfig::load(p)?;
        if let Some(s) = &file.simulate {
            s.apply(&mut cfg);
        }
    }
    let cli = contrail::config::SimSection {
        seed: args.seed,
        days: args.days,
        routes: args.routes,
        start_date: args.start_date.clone(),
        searches_per_route_day: args.searches_per_route_day,
        anomaly_rate: args.anomaly_rate,
        bad_rate: args.bad_rate,
        bad: None,
        gzip_level: None,
    };
    cli.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

async fn simulate(lake: &Lake, cfg: &SimConfig, sink: Sink) -> Result<sim::SimManifest> {
    let t = std::time::Instant::now();
    let m = sim::simulate(lake, cfg, sink).await?;
    let secs = t.elapsed().as_secs_f64();
    info!(
        "simulated {} events ({} lines, {} partitions, {:.1} MB gzip) in {:.2}s: {:.0} events/s",
        m.counts.events,
        m.counts.lines,
        m.counts.partitions,
        m.counts.raw_bytes as f64 / 1e6,
        secs,
        m.counts.events as f64 / secs.max(1e-9)
    );
    Ok(m)
}

/// Per-iteration lines on stderr (unless quiet) and, optionally, a JSON-lines file.
/// Where per-iteration metrics go: a line each on stderr (unless quiet), a JSON line each
/// in the metrics file, and, when stderr is a terminal, a progress bar under the lines.
fn iteration_sink(
    quiet: bool,
    file: Option<&PathBuf>,
    total: usize,
) -> Result<impl FnMut(&contrail::gbdt::IterationLog) + Send> {
    let mut f = match file {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| models::ModelError::Write {
                path: p.display().to_string(),
                source,
            },
        )?)),
        None => None,
    };
    let mut bar = (!quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(|| Progress::new(total));
    Ok(move |l: &contrail::gbdt::IterationLog| {
        if !quiet {
            match bar.as_mut() {
                Some(b) => b.update(l.iteration, &l.line()),
                None => eprintln!("{}", l.line()),
            }
        }
        if let Some(f) = f.as_mut() {
            use std::io::Write;
            let _ = serde_json::to_writer(&mut *f, l);
            let _ = f.write_all(b"\n");
            let _ = f.flush();
        }
    })
}

/// A one-line progress bar on stderr (a terminal): iterations done, rate, time left.
/// Lines printed through it scroll above the bar; it is erased when dropped.
struct Progress {
    total: usize,
    start: std::time::Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            total: total.max(1),
            start: std::time::Instant::now(),
        }
    }

    /// The bar for `done` of `total`, `width` cells wide, with rate and time left.
    fn render(done: usize, total: usize, secs: f64, width: usize) -> String {
        let done = done.min(total);
        let full = done * width / total;
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            ((total - done) as f64 / rate).round() as u64
        } else {
            0
        };
        format!(
            "[{}{}] {done}/{total} iterations  {rate:.1} it/s  {}:{:02} left",
            "#".repeat(full),
            "-".repeat(width - full),
            eta / 60,
            eta % 60
        )
    }

    fn update(&mut self, done: usize, line: &str) {
        let bar = Self::render(done, self.total, self.start.elapsed().as_secs_f64(), 30);
        eprint!("\r\x1b[2K{line}\n{bar}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        eprint!("\r\x1b[2K");
    }
}

/// Trains the model a config's [train] section describes, on the curated lake, and
/// reports test metrics, against the observed target and (for the fare) the simulator's
/// true expected fare.
async fn train_on_lake(
    lake: &Lake,
    cfg: &LakeTrainConfig,
    args: &TrainArgs,
    quiet: bool,
) -> Result<()> {
    let mut params = Params::default();
    cfg.params.apply(&mut params)?;
    args.params.apply(&mut params)?;
    let device = open_device(&args.device)?;
    let splits = models::lake_splits(lake, cfg).await?;
    info!(
        "training on {}: {} train, {} valid, {} test rows, {} features",
        lake.url(),
        splits.train.n_rows(),
        splits.valid.n_rows(),
        splits.test.n_rows(),
        splits.train.n_features()
    );
    let out = args.out.clone().unwrap_or_else(|| cfg.out.clone());
    let mut sink = iteration_sink(quiet, args.metrics_file.as_ref(), params.num_iterations)?;
    let lineage = std::collections::BTreeMap::from([
        ("lake".to_string(), lake.url().to_string()),
        ("target".to_string(), cfg.target.clone()),
    ]);
    let t = std::time::Instant::now();
    let (b, _) = models::train_and_save(
        &device,
        &splits.train,
        Some(&splits.valid),
        &params,
        &out,
        lineage,
        &mut sink,
    )
    .await?;
    drop(sink); // erases the progress bar
    let secs = t.elapsed().as_secs_f64();
    let test = models::score_metrics(&b, &splits.test, "test")?;
    out!(
        "\nmodel {out}: {} trees (best iteration {}), trained in {secs:.1}s",
        b.trees.len(),
        b.best_iteration
    );
    for (k, v) in &test {
        out!("{k:<24} {v:>12.4}");
    }
    if cfg.target == "price" {
        let truth = models::truth_fares(lake).await?;
        let pred = b.predict(&splits.test)?;
        let (mut y, mut p, mut obs) = (Vec::new(), Vec::new(), Vec::new());
        for (i, id) in splits.test_ids.iter().enumerate() {
            if let Some(t) = truth.get(id) {
                y.push(*t);
                p.push(pred[i]);
                obs.push(splits.test.target[i]);
            }
        }
        if !y.is_empty() {
            let o = contrail::gbdt::Objective::Regression;
            let e = |m: &str, a: &[f64]| contrail::gbdt::metric::evaluate(m, &y, a, None, &o);
            out!(
                "\nagainst the true expected fare ({} test events):",
                y.len()
            );
            out!("{:<24} {:>12.4} {:>12.4} {:>8.4}", "", "rmse", "mae", "r2");
            for (name, v) in [("model", &p), ("observed price (noise)", &obs)] {
                out!(
                    "{name:<24} {:>12.4} {:>12.4} {:>8.4}",
                    e("rmse", v),
                    e("mae", v),
                    e("r2", v)
                );
            }
        }
    }
    Ok(())
}

/// Features of the quickstart's anomaly model: the quote against its route and cabin's
/// recent prices and against its competitor's price (docs/features.md). Ratios only:
/// with `price_per_km` as well, the long upper tail of ordinary short-haul premium fares
/// drew the random thresholds (recall 0.22 instead of 0.89 on the quickstart's test day).
const ANOMALY_FEATURES: [&str; 2] = ["price_vs_route_mean", "competitor_price_ratio"];

/// Trains an isolation forest on the lake's training days and flags the test day's
/// quotes; prints precision and recall against the simulator's injected error fares.
async fn flag_anomalies(lake: &Lake, fare: &LakeTrainConfig) -> Result<()> {
    use contrail::gbdt::iforest::{Contamination, ForestParams};
    let cfg = LakeTrainConfig {
        features: ANOMALY_FEATURES.iter().map(|f| f.to_string()).collect(),
        out: format!(
            "{}/models/fare_anomaly.ctm",
            lake.url().trim_end_matches('/')
        ),
        params: Default::default(),
        ..fare.clone()
    };
    let splits = models::lake_splits(lake, &cfg).await?;
    let params = ForestParams {
        contamination: Contamination::Fraction(ANOMALY_CONTAMINATION),
        ..Default::default()
    };
    let lineage = std::collections::BTreeMap::from([("lake".to_string(), lake.url().to_string())]);
    let (forest, _) =
        models::train_forest_and_save(&splits.train, &params, &cfg.out, lineage).await?;
    let scores = tokio::task::block_in_place(|| forest.score(&splits.test))?;
    let truth = models::truth_anomalies(lake).await?;
    let (mut y, mut s) = (Vec::new(), Vec::new());
    for (id, score) in splits.test_ids.iter().zip(&scores) {
        if let Some(t) = truth.get(id) {
            y.push(*t as u8 as f64);
            s.push(*score);
        }
    }
    let flagged = |i: usize| forest.is_anomaly(s[i]);
    let tp = (0..y.len()).filter(|&i| flagged(i) && y[i] == 1.0).count();
    let n_flagged = (0..y.len()).filter(|&i| flagged(i)).count();
    let n_true = y.iter().filter(|v| **v == 1.0).count();
    let auc =
        contrail::gbdt::metric::evaluate("auc", &y, &s, None, &contrail::gbdt::Objective::Binary);
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    out!(
        "\nfare anomalies: isolation forest {} on {} ({} training quotes, contamination {ANOMALY_CONTAMINATION})",
        cfg.out,
        ANOMALY_FEATURES.join(", "),
        splits.train.n_rows()
    );
    out!(
        "test day: {} quotes, {n_true} injected error fares, {n_flagged} flagged: precision {:.3}, recall {:.3}, AUROC {:.4}",
        y.len(),
        ratio(tp, n_flagged),
        ratio(tp, n_true),
        auc
    );
    Ok(())
}

/// The share of quotes the quickstart's anomaly model flags.
const ANOMALY_CONTAMINATION: f64 = 0.005;

async fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Simulate {
            lake,
            sim: args,
            stdout,
        } => {
            let cfg = sim_config(None, &args)?;
            let lake = Lake::open(&lake.lake)?;
            let m = simulate(&lake, &cfg, if stdout { Sink::Stdout } else { Sink::Lake }).await?;
            if !stdout {
                out!("{}", serde_json::to_string_pretty(&m)?);
            }
        }
        Command::Ingest {
            lake,
            flush_secs,
            max_buffer_mib,
        } => {
            if !(flush_secs.is_finite() && flush_secs > 0.0) {
                return Err(UsageError("--flush-secs must be positive".into()).into());
            }
            let lake = Lake::open(&lake.lake)?;
            let opts = IngestOptions {
                flush_interval: Duration::from_secs_f64(flush_secs),
                max_buffer_bytes: max_buffer_mib.max(1) << 20,
                ..Default::default()
            };
            let r = ingest::ingest(&lake, std::io::stdin(), &opts).await?;
            info!(
                "ingested {} events into {} partitions in {:.2}s: {:.0} events/s",
                r.events, r.partitions, r.seconds, r.events_per_second
            );
            out!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Etl {
            lake,
            from,
            to,
            partitions,
            force,
        } => {
            let lake = Lake::open(&lake.lake)?;
            let range = HourRange {
                from: from.as_deref().map(parse_hour).transpose()?.map(|p| p.hour),
                to: to.as_deref().map(parse_hour).transpose()?.map(|p| p.hour),
            };
            let parts = if partitions.is_empty() {
                None
            } else {
                Some(
                    partitions
                        .iter()
                        .map(|p| parse_hour(p))
                        .collect::<Result<Vec<_>>>()?,
                )
            };
            let opts = EtlOptions {
                range,
                partitions: parts,
                force,
                ..Default::default()
            };
            let r = etl_job::run(&lake, &opts).await?;
            log_etl(&r);
            out!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Train(args) => {
            match args.model.as_deref() {
                None | Some("gbdt") => {}
                Some("isolation-forest" | "isolation_forest") => return train_forest(&args).await,
                Some("nn") => return train_nn_file(&args, quiet).await,
                Some(other) => {
                    return Err(UsageError(format!(
                        "--model {other:?}: use gbdt, nn or isolation-forest"
                    ))
                    .into())
                }
            }
            if args.forest != ForestArgs::default() {
                return Err(UsageError(
                    "--n-estimators, --max-samples, --max-features, --contamination and --bootstrap need --model isolation-forest".into(),
                )
                .into());
            }
            if let Some(path) = &args.config {
                let cfg = JobConfig::load(path)?;
                if let (Some(demand), None) = (&cfg.demand, &cfg.train) {
                    let url = std::env::var("CONTRAIL_LAKE")
                        .ok()
                        .or(cfg.lake.clone())
                        .unwrap_or_else(|| "./lake".into());
                    let lake = Lake::open(&url)?;
                    let mut demand = demand.clone();
                    if let Some(out) = &args.out {
                        demand.out = out.clone();
                    }
                    return train_demand(&lake, &demand, &args.device, args.checkpoint.clone())
                        .await;
                }
                let train = cfg.train.clone().ok_or_else(|| {
                    UsageError(format!(
                        "{} has no [train] or [demand] section",
                        path.display()
                    ))
                })?;
                let url = std::env::var("CONTRAIL_LAKE")
                    .ok()
                    .or(cfg.lake.clone())
                    .unwrap_or_else(|| "./lake".into());
                let lake = Lake::open(&url)?;
                return train_on_lake(&lake, &train, &args, quiet).await;
            }
            let (Some(data), Some(target), Some(out)) = (&args.data, &args.target, &args.out)
            else {
                return Err(UsageError(
                    "train needs --data, --target and --out (or --config)".into(),
                )
                .into());
            };
            let mut params = Params::default();
            args.params.apply(&mut params)?;
            let device = open_device(&args.device)?;
            let cols = contrail::gbdt::data::Columns {
                target: target.clone(),
                features: (!args.features.is_empty()).then(|| args.features.clone()),
                categorical: args.categorical.clone(),
                weight: args.weight.clone(),
            };
            let train = models::dataset(data, &cols).await?;
            let valid = match &args.valid {
                Some(v) => Some(models::dataset(v, &cols).await?),
                None => None,
            };
            info!(
                "training on {data}: {} rows, {} features",
                train.n_rows(),
                train.n_features()
            );
            let mut sink =
                iteration_sink(quiet, args.metrics_file.as_ref(), params.num_iterations)?;
            let lineage = std::collections::BTreeMap::from([
                ("data".to_string(), data.clone()),
                ("target".to_string(), target.clone()),
            ]);
            let t = std::time::Instant::now();
            let (b, m) = models::train_and_save(
                &device,
                &train,
                valid.as_ref(),
                &params,
                out,
                lineage,
                &mut sink,
            )
            .await?;
            drop(sink); // erases the progress bar
            info!(
                "trained {} trees in {:.2}s; wrote {out}",
                b.trees.len(),
                t.elapsed().as_secs_f64()
            );
            out!("{}", serde_json::to_string_pretty(&m.metrics)?);
        }
        Command::Predict {
            model,
            data,
            out,
            contrib,
            device,
        } => {
            let device = open_device(&device)?;
            let t = std::time::Instant::now();
            match models::load_any(&model).await? {
                models::Model::Gbdt(b, _) => {
                    let n = models::predict_file(&b, &data, &out, contrib, &device).await?;
                    let secs = t.elapsed().as_secs_f64();
                    info!(
                        "predicted {n} rows in {secs:.2}s ({:.0} rows/s); wrote {out}",
                        n as f64 / secs.max(1e-9)
                    );
                }
                models::Model::Nn(m) => {
                    if device != contrail::gbdt::Device::Cpu || contrib {
                        return Err(UsageError(
                            "a neural model predicts on the CPU, without --contrib".into(),
                        )
                        .into());
                    }
                    let n = models::predict_nn_file(&m, &data, &out).await?;
                    let secs = t.elapsed().as_secs_f64();
                    info!(
                        "predicted {n} rows in {secs:.2}s ({:.0} rows/s); wrote {out}",
                        n as f64 / secs.max(1e-9)
                    );
                }
                models::Model::Forest(f, _) => {
                    if device != contrail::gbdt::Device::Cpu {
                        return Err(UsageError(
                            "an isolation forest scores on the CPU: leave out --device".into(),
                        )
                        .into());
                    }
                    if contrib {
                        return Err(
                            UsageError("--contrib is for gradient-boosted trees".into()).into()
                        );
                    }
                    let r = models::score_forest_file(&f, &data, &out).await?;
                    let secs = t.elapsed().as_secs_f64();
                    info!(
                        "scored {} rows in {secs:.2}s ({:.0} rows/s; the forest alone {:.0} rows/s), {} anomalies; wrote {out}",
                        r.rows,
                        r.rows as f64 / secs.max(1e-9),
                        r.rows as f64 / r.forest_secs.max(1e-9),
                        r.anomalies
                    );
                }
            }
        }
        Command::Score {
            model,
            input,
            output,
            device,
            batch_rows,
            keep,
        } => {
            let opts = contrail::score::ScoreOptions {
                model,
                input,
                output,
                device: open_device(&device)?,
                batch_rows,
                keep,
                progress_bar: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let s = contrail::score::score(&opts).await?;
            info!(
                "scored {} rows in {} parts ({} already there) in {:.2}s: {:.0} rows/s, the predictor alone {:.0} rows/s",
                s.rows_scored,
                s.parts_scored,
                s.parts_skipped,
                s.seconds,
                s.rows_per_second,
                s.predict_rows_per_second
            );
            out!("{}", serde_json::to_string_pretty(&s)?);
        }
        Command::ExportFeatures {
            lake,
            config,
            target,
            out,
            event_ids,
        } => {
            let cfg = JobConfig::load(&config)?;
            let mut train = cfg.train.ok_or_else(|| {
                UsageError(format!("{} has no [train] section", config.display()))
            })?;
            if let Some(t) = target {
                train.target = t;
            }
            let lake = Lake::open(&lake.lake)?;
            let n = models::export_splits(&lake, &train, &out, event_ids).await?;
            out!(
                "{}",
                serde_json::json!({"train": n[0], "valid": n[1], "test": n[2], "out": out})
            );
        }
        Command::Import { from, file, out } => {
            let s = contrail::interop::import_model(from, &file, &out).await?;
            info!(
                "imported {} trees ({} features, objective {}) from {file}; wrote {out}",
                s.trees,
                s.features.len(),
                s.objective
            );
            out!("{}", serde_json::to_string(&s)?);
        }
        Command::Export { to, model, out } => {
            let n = contrail::interop::export_model(&model, &out).await?;
            info!("wrote {out} ({to}, {n} bytes)");
            out!(
                "{}",
                serde_json::json!({"out": out, "format": to, "bytes": n})
            );
        }
        Command::Inspect { model } => {
            let (b, m) = match models::load_any(&model).await? {
                models::Model::Gbdt(b, m) => (b, m),
                models::Model::Forest(f, m) => {
                    out!("{}", serde_json::to_string_pretty(&m)?);
                    let nodes: usize = f.trees.iter().map(|t| t.n_nodes()).sum();
                    out!("\n{} trees, {nodes} nodes", f.trees.len());
                    return Ok(());
                }
                models::Model::Nn(m) => {
                    let man = &m.package.manifest;
                    out!("{}", serde_json::to_string_pretty(man)?);
                    let params: usize = m.package.members.iter().flatten().map(Vec::len).sum();
                    out!(
                        "\n{} head, {} inputs ({} embeddings), hidden {:?}: {} network(s), {params} parameters",
                        man.architecture.head.name(),
                        man.architecture.input_width(),
                        man.architecture.embeddings.len(),
                        man.architecture.hidden,
                        m.package.members.len()
                    );
                    return Ok(());
                }
            };
            out!("{}", serde_json::to_string_pretty(&m)?);
            let (gain, splits) = b.importance();
            let total: f64 = gain.iter().sum::<f64>().max(1e-300);
            let mut order: Vec<usize> = (0..gain.len()).collect();
            order.sort_by(|a, b| gain[*b].total_cmp(&gain[*a]).then(a.cmp(b)));
            out!(
                "\n{:<32} {:>14} {:>8} {:>8}",
                "feature",
                "gain",
                "share",
                "splits"
            );
            for f in order {
                out!(
                    "{:<32} {:>14.2} {:>7.2}% {:>8}",
                    b.feature_names[f],
                    gain[f],
                    100.0 * gain[f] / total,
                    splits[f]
                );
            }
        }
        Command::Drift {
            lake,
            current_days,
            reference_days,
            reference,
            features,
            buckets,
            max_psi,
            from_etl_stats,
            json,
        } => {
            let lake = Lake::open(&lake.lake)?;
            let reference = match reference {
                None => None,
                Some(r) => {
                    let bad = || {
                        UsageError(format!(
                            "--reference {r:?}: expected YYYY-MM-DD..YYYY-MM-DD"
                        ))
                    };
                    let (a, b) = r.split_once("..").ok_or_else(bad)?;
                    let day = |s: &str| contrail::events::calendar::parse_date(s).ok_or_else(bad);
                    Some((day(a)? as i64, day(b)? as i64))
                }
            };
            let opts = contrail::drift::DriftOptions {
                current_days,
                reference_days,
                reference,
                features,
                buckets,
                max_psi,
            };
            let r = if from_etl_stats {
                contrail::drift::drift_from_stats(&lake, &opts).await?
            } else {
                contrail::drift::drift(&lake, &opts).await?
            };
            if json {
                out!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                out_raw!("{r}");
            }
            let alarms: Vec<String> = r
                .alarms()
                .iter()
                .map(|a| format!("{} on {} (PSI {:.3})", a.feature, a.day, a.psi))
                .collect();
            if !alarms.is_empty() {
                return Err(DriftAlarm(format!(
                    "{} above PSI {max_psi}: {}",
                    alarms.len(),
                    alarms.join(", ")
                ))
                .into());
            }
        }
        Command::Summary { lake, json } => {
            let lake = Lake::open(&lake.lake)?;
            let s = contrail::summary::summarize(&lake).await?;
            if json {
                out!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                out_raw!("{s}");
            }
        }
        Command::Tune {
            config: Some(path),
            out,
            ..
        } => {
            let cfg = JobConfig::load(&path)?;
            if let (Some(demand), None) = (&cfg.demand, &cfg.train) {
                let tune = cfg.tune.clone().ok_or_else(|| {
                    UsageError(format!("{} has no [tune] section", path.display()))
                })?;
                let out: PathBuf = out
                    .or(tune.out.clone().map(PathBuf::from))
                    .ok_or_else(|| UsageError("tune needs --out or [tune] out".into()))?;
                let url = std::env::var("CONTRAIL_LAKE")
                    .ok()
                    .or(cfg.lake.clone())
                    .unwrap_or_else(|| "./lake".into());
                let lake = Lake::open(&url)?;
                let data = contrail::demand::task_data(&lake, demand).await?;
                info!(
                    "tuning a demand network on {}: {} train, {} valid rows; {} trials in {}",
                    lake.url(),
                    data.train.n_rows(),
                    data.valid.n_rows(),
                    tune.trials,
                    out.display()
                );
                let lineage = std::collections::BTreeMap::from([
                    ("lake".to_string(), lake.url().to_string()),
                    (
                        "task".to_string(),
                        format!("{:?}", demand.task).to_lowercase(),
                    ),
                ]);
                let demand = demand.clone();
                let best = tokio::task::spawn_blocking(move || {
                    contrail::tune_demand::run_demand_study(
                        &demand, &tune, &out, &data, lineage, quiet,
                    )
                })
                .await
                .context("the tuning thread")??;
                out!("{}", serde_json::to_string(&best)?);
                return Ok(());
            }
            let job = contrail::tune_lake::LakeTuneJob::new(&path, cfg.train, cfg.tune, out)?;
            let url = std::env::var("CONTRAIL_LAKE")
                .ok()
                .or(cfg.lake.clone())
                .unwrap_or_else(|| "./lake".into());
            let lake = Lake::open(&url)?;
            let splits = models::lake_splits(&lake, &job.train).await?;
            info!(
                "tuning on {}: {} train, {} valid rows, {} features; {} trials, {} at a time, in {}",
                lake.url(),
                splits.train.n_rows(),
                splits.valid.n_rows(),
                splits.train.n_features(),
                job.tune.trials,
                job.tune.parallel,
                job.out.display()
            );
            let lineage = std::collections::BTreeMap::from([
                ("lake".to_string(), lake.url().to_string()),
                ("target".to_string(), job.train.target.clone()),
            ]);
            let best = tokio::task::spawn_blocking(move || {
                let data = contrail::tune_lake::TuneData {
                    train: &splits.train,
                    valid: &splits.valid,
                    lineage,
                };
                contrail::tune_lake::run_lake_study(&job, &data, quiet)
            })
            .await
            .context("the tuning thread")??;
            out!("{}", serde_json::to_string(&best)?);
        }
        Command::Tune {
            space,
            command,
            trials,
            sampler,
            parallel,
            seed,
            direction,
            out,
            ..
        } => {
            let (Some(space), Some(command), Some(trials), Some(out)) =
                (space, command, trials, out)
            else {
                return Err(UsageError(
                    "tune needs --space, --command, --trials and --out (or --config)".into(),
                )
                .into());
            };
            let opts = contrail::tune::BlackBoxOptions {
                space,
                command,
                trials,
                sampler: sampler.unwrap_or(contrail::tuning::SamplerKind::Gp),
                parallel: parallel.unwrap_or(1),
                seed: seed.unwrap_or(0),
                direction: direction.unwrap_or(contrail::tuning::Direction::Minimize),
                out,
            };
            let best = tokio::task::spawn_blocking(move || contrail::tune::run_black_box(&opts))
                .await
                .context("the tuning thread")??;
            out!("{}", serde_json::to_string(&best)?);
        }
        Command::Quickstart { lake, sim: args } => {
            let base = JobConfig::parse(QUICKSTART, "configs/quickstart.toml (embedded)")?;
            let cfg = sim_config(Some(&base), &args)?;
            let t = std::time::Instant::now();
            let lake = Lake::open(&lake.lake)?;
            info!(
                "quickstart: simulating {} days of {} routes into {}",
                cfg.days,
                cfg.routes,
                lake.url()
            );
            let m = simulate(&lake, &cfg, Sink::Lake).await?;
            let r = etl_job::run(&lake, &EtlOptions::default()).await?;
            log_etl(&r);
            let s = contrail::summary::summarize(&lake).await?;
            out_raw!("{s}");
            let total = &r.lake_total;
            out!(
                "\nsimulated {} events with {} injected bad records; curated {}, quarantined {}, duplicates {} in {:.1}s",
                m.counts.events,
                m.counts.injected.iter().sum::<u64>(),
                total.curated,
                total.quarantined,
                total.duplicates,
                t.elapsed().as_secs_f64()
            );
            let needed = base
                .train
                .as_ref()
                .map_or(0, |t| t.valid_days + t.test_days + 1);
            if base.train.is_some() && cfg.days < needed {
                out!("\nfare model skipped: training needs at least {needed} simulated days (--days {})", cfg.days);
            } else if let Some(train) = &base.train {
                let mut train = train.clone();
                train.out = format!("{}/models/fare_price.ctm", lake.url().trim_end_matches('/'));
                train_on_lake(
                    &lake,
                    &train,
                    &TrainArgs {
                        device: "cpu".into(),
                        ..Default::default()
                    },
                    true,
                )
                .await?;
                flag_anomalies(&lake, &train).await?;
            }
            if let Some(demand) = &base.demand {
                let need = demand.window_days + 2;
                if cfg.days < need {
                    out!("\ndemand model skipped: its {}-day window needs at least {need} simulated days (--days {})", demand.window_days, cfg.days);
                } else {
                    let mut demand = demand.clone();
                    demand.out =
                        format!("{}/models/demand_nn.ctm", lake.url().trim_end_matches('/'));
                    out!("");
                    train_demand(&lake, &demand, "cpu", None).await?;
                }
            }
            out!("\ntotal {:.1}s", t.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// `contrail train --model nn`: a network on any Parquet file.
async fn train_nn_file(args: &TrainArgs, quiet: bool) -> Result<()> {
    let (Some(data), Some(target), Some(out)) = (&args.data, &args.target, &args.out) else {
        return Err(UsageError("train --model nn needs --data, --target and --out".into()).into());
    };
    let mut params: contrail::nn::NnParams = match &args.nn_params {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| {
                contrail::config::ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                }
            })?;
            toml::from_str(&text).map_err(|source| contrail::config::ConfigError::Parse {
                path: p.display().to_string(),
                source,
            })?
        }
        None => contrail::nn::NnParams::default(),
    };
    if let Some(o) = &args.params.objective {
        params.head = contrail::nn::Head::parse(o).map_err(UsageError)?;
    }
    if let Some(s) = args.params.seed {
        params.seed = s;
    }
    let device = contrail::nn::Device::parse(&args.device)?;
    let cols = contrail::gbdt::data::Columns {
        target: target.clone(),
        features: (!args.features.is_empty()).then(|| args.features.clone()),
        categorical: args.categorical.clone(),
        weight: None,
    };
    // Read a row group at a time: the encoder is fitted in two passes over them; data
    // within the shuffle window is then held encoded, larger data is read again each epoch.
    let train = contrail::nn_file::ParquetRows::open(data, &cols).await?;
    let valid = match &args.valid {
        Some(v) => Some(contrail::nn_file::ParquetRows::open(v, &cols).await?),
        None => None,
    };
    let (enc, fingerprint) = train.fit_encoder(&params).await?;
    let arch = contrail::nn::Architecture::for_encoder(&enc, &params);
    let train_src = train.source(&enc, params.shuffle_window).await?;
    let valid_src = match &valid {
        Some(v) => Some(v.source(&enc, params.shuffle_window).await?),
        None => None,
    };
    info!(
        "training a network on {data}: {} rows in {} row groups ({}), {} features, {:?}",
        train.n_rows(),
        train.n_blocks(),
        if train_src.is_streamed() {
            format!("read in windows of {}+ rows", params.shuffle_window)
        } else {
            "held encoded in memory".to_string()
        },
        enc.features.len(),
        device
    );
    let mut file = match &args.metrics_file {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(
            |source| models::ModelError::Write {
                path: p.display().to_string(),
                source,
            },
        )?)),
        None => None,
    };
    let ctl = contrail::nn::Control {
        checkpoint: args.checkpoint.clone(),
        stop_after_epochs: None,
    };
    let t0 = std::time::Instant::now();
    let trained = tokio::task::block_in_place(|| {
        contrail::nn::fit_on(
            &device,
            arch.clone(),
            &params,
            &train_src,
            valid_src.as_ref().map(|v| v as &dyn contrail::nn::Source),
            &ctl,
            &mut |l| {
                if !quiet {
                    eprintln!(
                        "[{}]\ttrain-loss: {:.6}\tvalid-nll: {}\tlr: {:.3e}\t{:.0} samples/s",
                        l.tag(),
                        l.train_loss,
                        l.valid_nll.map_or("-".into(), |v| format!("{v:.6}")),
                        l.learning_rate,
                        l.samples_per_sec
                    );
                }
                if let Some(f) = file.as_mut() {
                    use std::io::Write;
                    let _ = serde_json::to_writer(&mut *f, l);
                    let _ = f.write_all(b"\n");
                    let _ = f.flush();
                }
                contrail::nn::Next::Continue
            },
        )
    })?;
    let secs = t0.elapsed().as_secs_f64();
    let mut metrics = std::collections::BTreeMap::new();
    if let Some(v) = trained.valid_nll {
        metrics.insert("valid-nll".to_string(), v);
    }
    let pkg = contrail::nn::NnPackage {
        manifest: contrail::nn::NnManifest {
            format_version: contrail::gbdt::package::FORMAT_VERSION,
            model_kind: contrail::nn::package::MODEL_KIND.into(),
            contrail_version: env!("CARGO_PKG_VERSION").into(),
            target: target.clone(),
            encoder: enc,
            architecture: arch,
            params,
            best_epoch: trained.best_epoch(),
            metrics: metrics.clone(),
            training_data: fingerprint,
            lineage: std::collections::BTreeMap::from([
                ("data".to_string(), data.clone()),
                ("target".to_string(), target.clone()),
            ]),
        },
        members: trained.weights(),
    };
    models::write_bytes(out, contrail::nn::package::to_bytes(&pkg)?).await?;
    out!(
        "{}",
        serde_json::json!({
            "out": out,
            "epochs": trained.history().len(),
            "best_epoch": trained.best_epoch(),
            "seconds": secs,
            "metrics": metrics,
        })
    );
    Ok(())
}

/// Trains a neural demand model on the lake and prints its test figures (stdout) with
/// one line per epoch (stderr).
async fn train_demand(
    lake: &Lake,
    cfg: &contrail::demand::DemandConfig,
    device: &str,
    checkpoint: Option<PathBuf>,
) -> Result<()> {
    let device = contrail::nn::Device::parse(device)?;
    info!(
        "demand model ({:?} task, {} head) on {} with {:?}",
        cfg.task,
        cfg.params.head.name(),
        lake.url(),
        device
    );
    let r = contrail::demand::train_demand(lake, cfg, &device, checkpoint, &mut |l| {
        info!(
            "epoch {:>3}  train {:.5}  valid-nll {}  lr {:.2e}  {:.0} samples/s",
            l.tag(),
            l.train_loss,
            l.valid_nll.map_or("-".into(), |v| format!("{v:.5}")),
            l.learning_rate,
            l.samples_per_sec
        )
    })
    .await?;
    out!(
        "demand model ({:?}): {} train / {} valid / {} test rows; {}, {:.1}s, {:.0} samples/s",
        r.task,
        r.rows[0],
        r.rows[1],
        r.rows[2],
        if r.networks > 1 {
            format!("{} networks, {} epochs in all", r.networks, r.epochs)
        } else {
            format!("{} epochs (best {})", r.epochs, r.best_epoch)
        },
        r.train_secs,
        r.samples_per_sec
    );
    let what = match r.task {
        contrail::demand::DemandTask::Counts => "Poisson deviance",
        contrail::demand::DemandTask::Booking => "log loss",
    };
    out!("test {what:<16} mean pred / mean actual");
    for q in &r.quality {
        out!("  {:<8} {:>10.5}  {:>8.4}", q.name, q.loss, q.calibration);
    }
    out!("wrote {}", r.out);
    Ok(())
}

fn log_etl(r: &etl_job::EtlReport) {
    info!(
        "etl: {} partitions processed, {} unchanged; rows read {} = curated {} + quarantined {} + duplicates {}; {:.0} rows/s",
        r.partitions_processed,
        r.partitions_unchanged,
        r.run.rows_read,
        r.run.curated,
        r.run.quarantined,
        r.run.duplicates,
        r.rows_per_second
    );
}

/// Parses `--device` and opens the device (before any data is read), logging what it is:
/// a device asked for and absent is an error, never a fall back to the CPU.
fn open_device(name: &str) -> Result<contrail::gbdt::Device> {
    let device: contrail::gbdt::Device = name.parse()?;
    let about = device.describe()?;
    info!("device {about}");
    Ok(device)
}

/// User error (2) or internal error (1), from the first classifiable error in the chain.
fn exit_code(e: &anyhow::Error) -> u8 {
    let code = |user: bool| if user { 2 } else { 1 };
    for cause in e.chain() {
        if cause.is::<DriftAlarm>() {
            return 3;
        }
        if cause.is::<UsageError>() || cause.is::<contrail::config::ConfigError>() {
            return 2;
        }
        if let Some(s) = cause.downcast_ref::<sim::SimError>() {
            return code(s.is_user_error());
        }
        if let Some(s) = cause.downcast_ref::<contrail::store::StoreError>() {
            return code(s.is_user_error());
        }
        if let Some(s) = cause.downcast_ref::<contrail::etl::EtlError>() {
            return code(s.is_user_error());
        }
        if let Some(s) = cause.downcast_ref::<contrail::summary::SummaryError>() {
            return code(s.is_user_error());
        }
        if let Some(s) = cause.downcast_ref::<contrail::score::ScoreError>() {
            return code(s.is_user_error());
        }
        if let Some(s) = cause.downcast_ref::<models::ModelError>() {
            return code(s.is_user_error());
        }
        if let Some(t) = cause.downcast_ref::<contrail::tune::TuneRunError>() {
            return code(t.is_user_error());
        }
        if let Some(g) = cause.downcast_ref::<contrail::gbdt::GbdtError>() {
            return code(g.is_user_error());
        }
        if let Some(g) = cause.downcast_ref::<contrail::nn::NnError>() {
            return code(g.is_user_error());
        }
    }
    1
}

/// A reader that closed our stdout early (`contrail simulate --stdout | head`) is not
/// an error.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet {
        tracing::Level::ERROR
    } else {
        match cli.verbose {
            0 => tracing::Level::INFO,
            1 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        }
    };
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn progress_bar_shows_done_rate_and_time_left() {
        assert_eq!(
            Progress::render(50, 200, 10.0, 20),
            "[#####---------------] 50/200 iterations  5.0 it/s  0:30 left"
        );
        assert_eq!(
            Progress::render(200, 200, 40.0, 10),
            "[##########] 200/200 iterations  5.0 it/s  0:00 left"
        );
        // Before the first iteration, and past the end (early stopping never overruns,
        // but a bar must not panic if it did).
        assert!(Progress::render(0, 10, 0.0, 10).starts_with("[----------] 0/10"));
        assert!(Progress::render(12, 10, 1.0, 10).starts_with("[##########] 10/10"));
    }
}
