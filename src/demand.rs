//! The demand tasks (docs/demand.md), derived from the curated lake with the shared
//! feature function, and the neural demand model's training job.
//!
//! 1. **counts**: one row per flight (route, carrier, departure date, cabin) and search
//!    day on which the flight was offered; the target is the flight's bookings in the
//!    next `window_days` days, the truth the sum of the simulator's booking
//!    probabilities of the flight's searches in those days.
//! 2. **booking**: one row per shown offer; the target is `booked`, the truth the
//!    simulator's `true_booking_prob`.
//!
//! Rows are split by flight (a hash of the flight's key), so no flight has rows on both
//! sides of a split.

use std::collections::{BTreeMap, HashMap};

use arrow_array::{
    Array, BooleanArray, Date32Array, Float64Array, StringArray, TimestampMillisecondArray,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::etl::etl::curated_files;
use crate::features::FeatureBuilder;
use crate::gbdt::{Column, Dataset};
use crate::models::ModelError;
use crate::store::parquet_io::{self, ScanOptions};
use crate::store::partition::HourRange;
use crate::store::Lake;

/// Which demand task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandTask {
    Counts,
    Booking,
}

fn default_window() -> u32 {
    7
}
fn default_valid() -> f64 {
    0.15
}
fn default_test() -> f64 {
    0.15
}

/// `[demand]` of a config file: a neural demand model on the curated lake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DemandConfig {
    pub task: DemandTask,
    /// Days of bookings counted after each search day (counts task).
    #[serde(default = "default_window")]
    pub window_days: u32,
    /// Shares of flights held out for validation (early stopping) and test.
    #[serde(default = "default_valid")]
    pub valid_fraction: f64,
    #[serde(default = "default_test")]
    pub test_fraction: f64,
    /// Features (from docs/features.md, plus the counts task's own); empty: the task's
    /// default list.
    #[serde(default)]
    pub features: Vec<String>,
    pub out: String,
    /// Also train a GBDT on the same rows (Poisson for counts, binary for booking) and
    /// report it beside the network.
    #[serde(default = "yes")]
    pub compare_gbdt: bool,
    #[serde(default)]
    pub params: contrail_nn::NnParams,
}

fn yes() -> bool {
    true
}

/// Shared features a flight-day row takes from its last search that day.
pub const COUNT_FEATURES: &[&str] = &[
    "lead_time_days",
    "departure_dow",
    "departure_month",
    "departure_day_of_year",
    "distance_km",
    "route",
    "origin",
    "destination",
    "carrier",
    "cabin",
    "stops",
    "duration_min",
    "is_domestic",
    "seats_remaining",
    "seats_remaining_ratio",
    "days_to_holiday",
    "route_cabin_price_mean_7d",
    "route_search_rate_24h",
];

/// The counts task's own features, computed per flight and day.
pub const COUNT_AGGREGATES: &[&str] = &[
    // mean quoted price of the flight's searches that day
    "offered_price",
    // offered_price / route_cabin_price_mean_7d
    "offered_price_vs_route_mean",
    "searches_today",
    // bookings of the flight in the lake up to and including the day
    "bookings_to_date",
];

/// Features of the booking task: the shown offer, its price and its context.
pub const BOOKING_FEATURES: &[&str] = &[
    "lead_time_days",
    "search_hour",
    "search_dow",
    "departure_dow",
    "is_round_trip",
    "stay_length_days",
    "saturday_night_stay",
    "distance_km",
    "route",
    "origin",
    "destination",
    "carrier",
    "cabin",
    "stops",
    "duration_min",
    "seats_remaining_ratio",
    "passengers",
    "channel",
    "point_of_sale",
    "days_to_holiday",
    "log_competitor_price",
    "price_per_km",
    "competitor_price_ratio",
    "price_vs_route_mean",
];

/// A task's rows: the three splits with their truth.
pub struct DemandData {
    pub train: Dataset,
    pub valid: Dataset,
    pub test: Dataset,
    /// The simulator's expected target of each test row.
    pub test_truth: Vec<f64>,
    pub valid_truth: Vec<f64>,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// 0 train, 1 valid, 2 test, from a hash of the flight key.
fn split_of(key: &str, valid: f64, test: f64) -> usize {
    let u = (fnv(key) >> 11) as f64 / (1u64 << 53) as f64;
    if u < test {
        2
    } else if u < test + valid {
        1
    } else {
        0
    }
}

/// The simulator's booking probability of every event, by event id.
async fn truth_probs(lake: &Lake) -> Result<HashMap<String, f64>, ModelError> {
    crate::models::truth_column(lake, "true_booking_prob", |a, i| {
        a.as_any()
            .downcast_ref::<Float64Array>()
            .map(|f| f.value(i))
    })
    .await
}

fn col<'a, T: 'static>(b: &'a arrow_array::RecordBatch, name: &str) -> Result<&'a T, ModelError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            ModelError::Invalid(format!("the curated table has no usable `{name}` column"))
        })
}

fn check_fractions(cfg: &DemandConfig) -> Result<(), ModelError> {
    let ok = |x: f64| (0.0..1.0).contains(&x) && x > 0.0;
    if !ok(cfg.valid_fraction)
        || !ok(cfg.test_fraction)
        || cfg.valid_fraction + cfg.test_fraction >= 1.0
    {
        return Err(ModelError::Invalid(format!(
            "valid_fraction {} and test_fraction {} must be in (0, 1) and sum below 1",
            cfg.valid_fraction, cfg.test_fraction
        )));
    }
    Ok(())
}

/// Per flight and day: what happened.
#[derive(Default, Clone)]
struct Day {
    searches: u32,
    price_sum: f64,
    bookings: u32,
    prob_sum: f64,
    /// Global event index of the day's last search.
    last: usize,
}

/// One flight's departure day and its search days.
struct Flight {
    departure: i64,
    days: BTreeMap<i64, Day>,
}

/// Builds the counts task from the lake.
pub async fn counts_task(lake: &Lake, cfg: &DemandConfig) -> Result<DemandData, ModelError> {
    check_fractions(cfg)?;
    if cfg.window_days == 0 {
        return Err(ModelError::Invalid("window_days must be at least 1".into()));
    }
    let names: Vec<String> = if cfg.features.is_empty() {
        COUNT_FEATURES.iter().map(|s| s.to_string()).collect()
    } else {
        cfg.features
            .iter()
            .filter(|f| !COUNT_AGGREGATES.contains(&f.as_str()))
            .cloned()
            .collect()
    };
    let aggregates: Vec<&str> = if cfg.features.is_empty() {
        COUNT_AGGREGATES.to_vec()
    } else {
        COUNT_AGGREGATES
            .iter()
            .copied()
            .filter(|a| cfg.features.iter().any(|f| f == a))
            .collect()
    };
    for n in &names {
        if !crate::features::FEATURES.iter().any(|f| f.name == n) {
            return Err(ModelError::Invalid(format!(
                "unknown feature `{n}` (see docs/features.md and docs/demand.md)"
            )));
        }
    }
    let probs = truth_probs(lake).await?;
    let files = curated_files(lake, HourRange::all()).await?;
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: the curated table is empty (run `contrail etl` first)",
            lake.url()
        )));
    }
    let mut fb = FeatureBuilder::new();
    let mut all = Dataset::default();
    let mut flights: HashMap<String, Flight> = HashMap::new();
    let mut missing_truth = 0usize;
    let mut at = 0usize;
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    while let Some(b) = s.next().await {
        let b = b?;
        let f = fb.compute(&b)?;
        let ts = col::<TimestampMillisecondArray>(&b, "search_ts")?;
        let origin = col::<StringArray>(&b, "origin")?;
        let dest = col::<StringArray>(&b, "destination")?;
        let carrier = col::<StringArray>(&b, "carrier")?;
        let cabin = col::<StringArray>(&b, "cabin")?;
        let dep = col::<Date32Array>(&b, "departure_date")?;
        let price = col::<Float64Array>(&b, "price")?;
        let booked = col::<BooleanArray>(&b, "booked")?;
        let ids = col::<StringArray>(&b, "event_id")?;
        for i in 0..b.num_rows() {
            let key = format!(
                "{}-{}|{}|{}|{}",
                origin.value(i),
                dest.value(i),
                carrier.value(i),
                dep.value(i),
                cabin.value(i)
            );
            let day = ts.value(i).div_euclid(86_400_000);
            let p = match probs.get(ids.value(i)) {
                Some(p) => *p,
                None => {
                    missing_truth += 1;
                    0.0
                }
            };
            let d = flights
                .entry(key)
                .or_insert_with(|| Flight {
                    departure: dep.value(i) as i64,
                    days: BTreeMap::new(),
                })
                .days
                .entry(day)
                .or_default();
            d.searches += 1;
            d.price_sum += price.value(i);
            d.bookings += booked.value(i) as u32;
            d.prob_sum += p;
            d.last = at + i;
        }
        at += b.num_rows();
        crate::models::append(&mut all, &f, &names, &[])?;
    }
    if missing_truth > 0 {
        tracing::warn!("{missing_truth} curated events have no truth row (counted with probability 0 in the truth)");
    }
    let last_day = flights
        .values()
        .filter_map(|f| f.days.keys().next_back().copied())
        .max()
        .unwrap_or(0);
    let w = cfg.window_days as i64;
    // Rows in a fixed order: flights by key, days ascending.
    let mut keys: Vec<&String> = flights.keys().collect();
    keys.sort();
    let mut rows: [Vec<usize>; 3] = Default::default();
    let mut extra: [Vec<[f64; 4]>; 3] = Default::default();
    let mut target: [Vec<f64>; 3] = Default::default();
    let mut truth: [Vec<f64>; 3] = Default::default();
    let price_mean_col = names.iter().position(|n| n == "route_cabin_price_mean_7d");
    for key in keys {
        let Flight { departure, days } = &flights[key];
        let split = split_of(key, cfg.valid_fraction, cfg.test_fraction);
        let mut to_date = 0u32;
        for (&day, d) in days {
            to_date += d.bookings;
            // A window past the lake's end is censored; one that opens after departure
            // (a search on the departure day) holds no day the flight can sell on, so
            // its count is zero by construction: neither is a forecast.
            if day + w > last_day || day >= *departure {
                continue;
            }
            let (mut y, mut t) = (0.0, 0.0);
            for (_, f) in days.range(day + 1..=day + w) {
                y += f.bookings as f64;
                t += f.prob_sum;
            }
            let offered = d.price_sum / d.searches as f64;
            let route_mean = match (
                price_mean_col,
                all.columns.get(price_mean_col.unwrap_or(usize::MAX)),
            ) {
                (Some(_), Some(Column::Numeric(v))) => v[d.last],
                _ => f64::NAN,
            };
            rows[split].push(d.last);
            extra[split].push([
                offered,
                offered / route_mean,
                d.searches as f64,
                to_date as f64,
            ]);
            target[split].push(y);
            truth[split].push(t);
        }
    }
    if rows.iter().any(Vec::is_empty) {
        return Err(ModelError::Invalid(format!(
            "the lake has too few days for a {w}-day booking window (rows: train {}, valid {}, test {}); simulate at least {} days",
            rows[0].len(),
            rows[1].len(),
            rows[2].len(),
            w + 2
        )));
    }
    let mut out: Vec<Dataset> = Vec::new();
    for k in 0..3 {
        let mut d = all.gather(&rows[k]);
        for (j, a) in COUNT_AGGREGATES.iter().enumerate() {
            if aggregates.contains(a) {
                d.names.push(a.to_string());
                d.columns.push(Column::Numeric(
                    extra[k]
                        .iter()
                        .map(|e| if e[j].is_finite() { e[j] } else { f64::NAN })
                        .collect(),
                ));
            }
        }
        d.target = std::mem::take(&mut target[k]);
        out.push(d);
    }
    let test = out.pop().unwrap_or_default();
    let valid = out.pop().unwrap_or_default();
    let train = out.pop().unwrap_or_default();
    Ok(DemandData {
        train,
        valid,
        test,
        test_truth: std::mem::take(&mut truth[2]),
        valid_truth: std::mem::take(&mut truth[1]),
    })
}

/// Builds the booking task from the lake: every shown offer, split by flight.
pub async fn booking_task(lake: &Lake, cfg: &DemandConfig) -> Result<DemandData, ModelError> {
    check_fractions(cfg)?;
    let names: Vec<String> = if cfg.features.is_empty() {
        BOOKING_FEATURES.iter().map(|s| s.to_string()).collect()
    } else {
        cfg.features.clone()
    };
    for n in &names {
        if !crate::features::FEATURES.iter().any(|f| f.name == n) {
            return Err(ModelError::Invalid(format!(
                "unknown feature `{n}` (see docs/features.md)"
            )));
        }
    }
    let probs = truth_probs(lake).await?;
    let files = curated_files(lake, HourRange::all()).await?;
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: the curated table is empty (run `contrail etl` first)",
            lake.url()
        )));
    }
    let mut fb = FeatureBuilder::new();
    let mut all = Dataset::default();
    let mut split = Vec::new();
    let mut truth = Vec::new();
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    while let Some(b) = s.next().await {
        let b = b?;
        let f = fb.compute(&b)?;
        let origin = col::<StringArray>(&b, "origin")?;
        let dest = col::<StringArray>(&b, "destination")?;
        let carrier = col::<StringArray>(&b, "carrier")?;
        let cabin = col::<StringArray>(&b, "cabin")?;
        let dep = col::<Date32Array>(&b, "departure_date")?;
        let booked = col::<BooleanArray>(&b, "booked")?;
        let ids = col::<StringArray>(&b, "event_id")?;
        let mut y = Vec::with_capacity(b.num_rows());
        for i in 0..b.num_rows() {
            let key = format!(
                "{}-{}|{}|{}|{}",
                origin.value(i),
                dest.value(i),
                carrier.value(i),
                dep.value(i),
                cabin.value(i)
            );
            split.push(split_of(&key, cfg.valid_fraction, cfg.test_fraction));
            truth.push(probs.get(ids.value(i)).copied().unwrap_or(f64::NAN));
            y.push(booked.value(i) as u8 as f64);
        }
        crate::models::append(&mut all, &f, &names, &y)?;
    }
    let mut rows: [Vec<usize>; 3] = Default::default();
    for (i, s) in split.iter().enumerate() {
        rows[*s].push(i);
    }
    if rows.iter().any(Vec::is_empty) {
        return Err(ModelError::Invalid(
            "too few flights in the lake for three splits".into(),
        ));
    }
    let part = |k: usize| all.gather(&rows[k]);
    Ok(DemandData {
        train: part(0),
        valid: part(1),
        test: part(2),
        test_truth: rows[2].iter().map(|&r| truth[r]).collect(),
        valid_truth: rows[1].iter().map(|&r| truth[r]).collect(),
    })
}

/// Builds the configured task.
pub async fn task_data(lake: &Lake, cfg: &DemandConfig) -> Result<DemandData, ModelError> {
    match cfg.task {
        DemandTask::Counts => counts_task(lake, cfg).await,
        DemandTask::Booking => booking_task(lake, cfg).await,
    }
}

/// Test-split figures of one model (or of the truth).
#[derive(Debug, Clone, Serialize)]
pub struct Quality {
    pub name: String,
    /// Counts: mean Poisson deviance; booking: mean log loss.
    pub loss: f64,
    /// Mean prediction over mean observed target.
    pub calibration: f64,
}

/// What [`train_demand`] did.
#[derive(Debug, Clone, Serialize)]
pub struct DemandReport {
    pub task: DemandTask,
    pub rows: [usize; 3],
    /// Networks trained (the ensemble's members).
    pub networks: usize,
    /// Epochs of every network together.
    pub epochs: usize,
    /// The first network's best epoch.
    pub best_epoch: usize,
    /// Median training throughput over the epochs.
    pub samples_per_sec: f64,
    pub train_secs: f64,
    /// Network, GBDT (when compared) and truth on the test split.
    pub quality: Vec<Quality>,
    pub out: String,
}

fn quality(task: DemandTask, name: &str, y: &[f64], pred: &[f64]) -> Quality {
    let n = y.len().max(1) as f64;
    let loss = match task {
        DemandTask::Counts => contrail_nn::loss::mean_poisson_deviance(y, pred),
        DemandTask::Booking => {
            y.iter()
                .zip(pred)
                .map(|(y, p)| {
                    let p = p.clamp(1e-15, 1.0 - 1e-15);
                    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
                })
                .sum::<f64>()
                / n
        }
    };
    let my = y.iter().sum::<f64>() / n;
    let mp = pred.iter().sum::<f64>() / n;
    Quality {
        name: name.into(),
        loss,
        calibration: mp / my,
    }
}

/// Trains the configured neural demand model on the lake, writes its package, and
/// measures it (and a GBDT on the same rows, and the truth) on the test split.
pub async fn train_demand(
    lake: &Lake,
    cfg: &DemandConfig,
    device: &contrail_nn::Device,
    checkpoint: Option<std::path::PathBuf>,
    on_epoch: &mut (dyn FnMut(&contrail_nn::EpochLog) + Send),
) -> Result<DemandReport, ModelError> {
    let data = task_data(lake, cfg).await?;
    let mut params = cfg.params.clone();
    let head_ok = match cfg.task {
        DemandTask::Counts => params.head != contrail_nn::Head::Logistic,
        DemandTask::Booking => params.head == contrail_nn::Head::Logistic,
    };
    if !head_ok {
        if cfg.params == contrail_nn::NnParams::default()
            || cfg.task == DemandTask::Booking && params.head == contrail_nn::Head::Poisson
        {
            params.head = match cfg.task {
                DemandTask::Counts => contrail_nn::Head::Poisson,
                DemandTask::Booking => contrail_nn::Head::Logistic,
            };
        } else {
            return Err(ModelError::Invalid(format!(
                "head {} does not fit the {:?} task",
                params.head.name(),
                cfg.task
            )));
        }
    }
    let enc = contrail_nn::Encoder::fit_with(
        &data.train,
        params.embedding_dim,
        params.max_embedding_dim,
        params.numeric_bins,
    )?;
    let arch = contrail_nn::Architecture::for_encoder(&enc, &params);
    let (xt, xv) = (enc.encode(&data.train)?, enc.encode(&data.valid)?);
    let yt: Vec<f32> = data.train.target.iter().map(|v| *v as f32).collect();
    let yv: Vec<f32> = data.valid.target.iter().map(|v| *v as f32).collect();
    let t0 = std::time::Instant::now();
    let ctl = contrail_nn::Control {
        checkpoint,
        stop_after_epochs: None,
    };
    let trained = tokio::task::block_in_place(|| {
        contrail_nn::fit_on(
            device,
            arch.clone(),
            &params,
            &contrail_nn::Split { x: &xt, y: &yt },
            Some(&contrail_nn::Split { x: &xv, y: &yv }),
            &ctl,
            &mut |l| {
                on_epoch(l);
                contrail_nn::Next::Continue
            },
        )
    })?;
    let train_secs = t0.elapsed().as_secs_f64();
    let history = trained.history();
    let mut rates: Vec<f64> = history.iter().map(|h| h.samples_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let samples_per_sec = rates.get(rates.len() / 2).copied().unwrap_or(0.0);

    let mut metrics = BTreeMap::new();
    let manifest = contrail_nn::NnManifest {
        format_version: crate::gbdt::package::FORMAT_VERSION,
        model_kind: contrail_nn::package::MODEL_KIND.into(),
        contrail_version: env!("CARGO_PKG_VERSION").into(),
        target: match cfg.task {
            DemandTask::Counts => format!("bookings_next_{}d", cfg.window_days),
            DemandTask::Booking => "booked".into(),
        },
        encoder: enc,
        architecture: arch,
        params: params.clone(),
        best_epoch: trained.best_epoch(),
        metrics: BTreeMap::new(),
        training_data: crate::gbdt::package::fingerprint(&data.train),
        lineage: BTreeMap::from([
            ("lake".to_string(), lake.url().to_string()),
            ("task".to_string(), format!("{:?}", cfg.task).to_lowercase()),
            ("window_days".to_string(), cfg.window_days.to_string()),
        ]),
    };
    let mut pkg = contrail_nn::NnPackage {
        manifest,
        members: trained.weights(),
    };
    let model = contrail_nn::NnModel::new(pkg.clone())?;
    let pred = model.predict(&data.test)?;
    let mut quality_rows = vec![quality(cfg.task, "neural", &data.test.target, &pred)];
    if cfg.compare_gbdt {
        let mut p = crate::gbdt::Params::default();
        p.objective = match cfg.task {
            DemandTask::Counts => crate::gbdt::Objective::Poisson,
            DemandTask::Booking => crate::gbdt::Objective::Binary,
        };
        p.num_iterations = 1000;
        p.learning_rate = 0.05;
        p.num_leaves = 31;
        p.min_data_in_leaf = 20;
        p.early_stopping_round = 50;
        p.seed = params.seed;
        let b = tokio::task::block_in_place(|| {
            crate::gbdt::train(&data.train, Some(&data.valid), &p, &mut |_| {})
        })?;
        let gp = b.predict(&data.test)?;
        quality_rows.push(quality(cfg.task, "gbdt", &data.test.target, &gp));
    }
    if data.test_truth.iter().all(|t| t.is_finite()) {
        quality_rows.push(quality(
            cfg.task,
            "truth",
            &data.test.target,
            &data.test_truth,
        ));
    }
    for q in &quality_rows {
        metrics.insert(format!("test-{}-loss", q.name), q.loss);
        metrics.insert(format!("test-{}-calibration", q.name), q.calibration);
    }
    if let Some(v) = trained.valid_nll {
        metrics.insert("valid-nll".into(), v);
    }
    pkg.manifest.metrics = metrics;
    let bytes = contrail_nn::package::to_bytes(&pkg)?;
    crate::models::write_bytes(&cfg.out, bytes).await?;
    Ok(DemandReport {
        task: cfg.task,
        rows: [data.train.n_rows(), data.valid.n_rows(), data.test.n_rows()],
        networks: trained.members.len(),
        epochs: history.len(),
        best_epoch: trained.best_epoch(),
        samples_per_sec,
        train_secs,
        quality: quality_rows,
        out: cfg.out.clone(),
    })
}
