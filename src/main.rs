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
use contrail::sim::{self, SimConfig, Sink};
use contrail::store::partition::{HourRange, Partition};
use contrail::store::Lake;
use tracing::info;

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
    /// Simulate a small market into ./lake, run the ETL and summarise the lake.
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

async fn run(cli: Cli) -> Result<()> {
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
                println!("{}", serde_json::to_string_pretty(&m)?);
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
            println!("{}", serde_json::to_string_pretty(&r)?);
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
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Summary { lake, json } => {
            let lake = Lake::open(&lake.lake)?;
            let s = contrail::summary::summarize(&lake).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{s}");
            }
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
            print!("{s}");
            let total = &r.lake_total;
            println!(
                "\nsimulated {} events with {} injected bad records; curated {}, quarantined {}, duplicates {} in {:.1}s",
                m.counts.events,
                m.counts.injected.iter().sum::<u64>(),
                total.curated,
                total.quarantined,
                total.duplicates,
                t.elapsed().as_secs_f64()
            );
        }
    }
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

/// User error (2) or internal error (1), from the first classifiable error in the chain.
fn exit_code(e: &anyhow::Error) -> u8 {
    let code = |user: bool| if user { 2 } else { 1 };
    for cause in e.chain() {
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
