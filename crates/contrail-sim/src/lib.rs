//! The market simulator: flight-shopping events with known truth.
//!
//! [`simulate`] writes `raw/flight_searches/<partition>/sim-<seed>.jsonl.gz` (gzip JSON
//! lines, one file per hour), `truth/flight_searches/<partition>/sim-<seed>.parquet`
//! (the true expected fare and booking probability of every event) and
//! `meta/simulations/sim-<seed>.json` (the configuration and exact counts of what was
//! injected). Every hour is generated from its own random stream, so hours run in
//! parallel and a seed gives the same bytes whatever the thread count.
//! docs/simulator.md describes the market model.

pub mod market;
pub mod rng;

use std::io::Write;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use contrail_events::calendar;
use contrail_events::Event;
use contrail_store::partition::Partition;
use contrail_store::{parquet_io, Lake, StoreError};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use market::Market;
use rng::Rng;

pub const RAW_TABLE: &str = "raw/flight_searches";
pub const TRUTH_TABLE: &str = "truth/flight_searches";

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulation setting `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gzip compression failed for partition {partition}")]
    Compress { partition: String },
    #[error("writing events to standard output")]
    Stdout(#[source] std::io::Error),
    #[error("simulation worker failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl SimError {
    pub fn is_user_error(&self) -> bool {
        match self {
            SimError::Config { .. } => true,
            SimError::Store(e) => e.is_user_error(),
            SimError::Compress { .. } | SimError::Stdout(_) | SimError::Worker(_) => false,
        }
    }
}

/// The kinds of bad record the simulator can inject, with their rates (each a share of
/// all events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BadRates {
    pub malformed_json: f64,
    pub missing_field: f64,
    pub wrong_type: f64,
    pub unknown_field: f64,
    pub negative_fare: f64,
    pub unknown_airport: f64,
    pub return_before_departure: f64,
    pub duplicate_event_id: f64,
}

impl BadRates {
    pub const KINDS: usize = 8;
    /// `total` spread evenly over every kind.
    pub fn uniform(total: f64) -> BadRates {
        let r = total / Self::KINDS as f64;
        BadRates {
            malformed_json: r,
            missing_field: r,
            wrong_type: r,
            unknown_field: r,
            negative_fare: r,
            unknown_airport: r,
            return_before_departure: r,
            duplicate_event_id: r,
        }
    }
    fn as_array(&self) -> [f64; Self::KINDS] {
        [
            self.malformed_json,
            self.missing_field,
            self.wrong_type,
            self.unknown_field,
            self.negative_fare,
            self.unknown_airport,
            self.return_before_departure,
            self.duplicate_event_id,
        ]
    }
    pub fn total(&self) -> f64 {
        self.as_array().iter().sum()
    }
}

/// Names of the injected kinds, in [`BadRates`] order. All but the last are also the
/// ETL's reason codes; duplicates are counted, not quarantined.
pub const BAD_KINDS: [&str; BadRates::KINDS] = [
    "malformed_json",
    "missing_field",
    "wrong_type",
    "unknown_field",
    "negative_fare",
    "unknown_airport",
    "return_before_departure",
    "duplicate_event_id",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub seed: u64,
    pub days: u32,
    pub routes: u32,
    /// First simulated day, `YYYY-MM-DD`.
    pub start_date: String,
    /// Mean searches per route per day (scaled by each route's weight and the calendar).
    pub searches_per_route_day: f64,
    /// Share of events whose quoted fare is an error fare.
    pub anomaly_rate: f64,
    pub bad: BadRates,
    /// Deflate level 1 (fastest) to 12.
    pub gzip_level: i32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            days: 7,
            routes: 40,
            start_date: "2026-03-01".into(),
            searches_per_route_day: 400.0,
            anomaly_rate: 0.002,
            bad: BadRates::default(),
            gzip_level: 1,
        }
    }
}

impl SimConfig {
    pub fn validate(&self) -> Result<i32, SimError> {
        let cfg = |field, reason: &str| SimError::Config {
            field,
            reason: reason.to_string(),
        };
        let start = calendar::parse_date(&self.start_date)
            .ok_or_else(|| cfg("start_date", "not a YYYY-MM-DD date"))?;
        if self.days == 0 || self.days > 3660 {
            return Err(cfg("days", "must be 1..=3660"));
        }
        if self.routes == 0 {
            return Err(cfg("routes", "must be at least 1"));
        }
        if !(self.searches_per_route_day.is_finite()
            && self.searches_per_route_day > 0.0
            && self.searches_per_route_day <= 1e6)
        {
            return Err(cfg("searches_per_route_day", "must be in (0, 1e6]"));
        }
        if !(0.0..=0.5).contains(&self.anomaly_rate) {
            return Err(cfg("anomaly_rate", "must be in [0, 0.5]"));
        }
        if self.bad.as_array().iter().any(|r| !(0.0..=1.0).contains(r)) || self.bad.total() > 0.5 {
            return Err(cfg(
                "bad",
                "each rate must be in [0, 1] and their sum at most 0.5",
            ));
        }
        if !(1..=12).contains(&self.gzip_level) {
            return Err(cfg("gzip_level", "must be 1..=12"));
        }
        Ok(start)
    }
}

/// Exact counts of what a simulation wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCounts {
    /// Events generated (each has one truth row).
    pub events: u64,
    /// Lines written to raw (events plus injected duplicate lines).
    pub lines: u64,
    /// Valid, unique events: what a correct ETL curates.
    pub valid: u64,
    pub anomalies: u64,
    pub booked: u64,
    /// Injected bad records by kind ([`BAD_KINDS`] order).
    pub injected: [u64; BadRates::KINDS],
    pub raw_bytes: u64,
    pub partitions: u64,
}

impl SimCounts {
    fn add(&mut self, o: &SimCounts) {
        self.events += o.events;
        self.lines += o.lines;
        self.valid += o.valid;
        self.anomalies += o.anomalies;
        self.booked += o.booked;
        for (a, b) in self.injected.iter_mut().zip(o.injected) {
            *a += b;
        }
        self.raw_bytes += o.raw_bytes;
        self.partitions += o.partitions;
    }
    /// Injected count for one kind name.
    pub fn injected_of(&self, kind: &str) -> u64 {
        BAD_KINDS
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.injected[i])
    }
}

/// The manifest written to `meta/simulations/sim-<seed>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimManifest {
    pub config: SimConfig,
    pub counts: SimCounts,
    pub first_partition: String,
    pub last_partition: String,
}

/// Where raw events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// Gzip JSON-lines files in the lake's raw partitions.
    Lake,
    /// Plain JSON lines on standard output, in time order (for `simulate --stdout | ingest`).
    Stdout,
}

/// One generated hour.
pub struct HourOutput {
    pub partition: Partition,
    /// JSON lines, uncompressed.
    pub lines: Vec<u8>,
    pub truth: RecordBatch,
    pub counts: SimCounts,
}

pub fn truth_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("true_expected_fare", DataType::Float64, false),
        Field::new("true_booking_prob", DataType::Float64, false),
        Field::new("is_anomaly", DataType::Boolean, false),
        Field::new("injected", DataType::Utf8, true),
    ]))
}

fn file_stem(seed: u64) -> String {
    format!("sim-{seed:016x}")
}

/// Writes one event, possibly damaged as `kind` says, as JSON line(s).
fn render(rng: &mut Rng, e: &Event, kind: Option<usize>, out: &mut Vec<u8>) {
    let Some(kind) = kind else {
        e.write_json(out);
        return;
    };
    let mut line = Vec::with_capacity(512);
    match kind {
        // malformed_json: the line cut short (it never reaches its closing brace).
        0 => {
            e.write_json(&mut line);
            let cut = (line.len() as f64 * rng.uniform(0.2, 0.9)) as usize;
            out.extend_from_slice(&line[..cut]);
            out.push(b'\n');
        }
        // duplicate_event_id: the same event delivered twice.
        7 => {
            e.write_json(out);
            e.write_json(out);
        }
        4 => {
            let mut bad = e.clone();
            bad.price = -bad.price;
            bad.write_json(out);
        }
        5 => {
            let mut bad = e.clone();
            let code = ["XXX", "QQQ", "ZZY"][rng.below(3) as usize];
            if rng.bernoulli(0.5) {
                bad.origin = code;
            } else {
                bad.destination = code;
            }
            bad.write_json(out);
        }
        6 => {
            let mut bad = e.clone();
            bad.return_date = Some(bad.departure_date - 1 - rng.below(5) as i32);
            bad.write_json(out);
        }
        _ => {
            e.write_json(&mut line);
            let mut v: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&line).unwrap_or_default();
            match kind {
                1 => {
                    const REQUIRED: [&str; 8] = [
                        "event_id",
                        "search_ts",
                        "origin",
                        "price",
                        "carrier",
                        "cabin",
                        "seats_remaining",
                        "booked",
                    ];
                    v.remove(REQUIRED[rng.below(REQUIRED.len() as u64) as usize]);
                }
                2 => {
                    let (k, val) = match rng.below(4) {
                        0 => ("price", serde_json::json!(format!("{:.2}", e.price))),
                        1 => ("stops", serde_json::json!("nonstop")),
                        2 => ("booked", serde_json::json!("yes")),
                        _ => ("passengers", serde_json::json!(1.5)),
                    };
                    v.insert(k.into(), val);
                }
                _ => {
                    v.insert("promo_code".into(), serde_json::json!("SPRING10"));
                }
            }
            let _ = serde_json::to_writer(&mut *out, &v);
            out.push(b'\n');
        }
    }
}

/// Generates one hour: every route's searches, sorted by time, rendered as JSON lines.
pub fn generate_hour(
    cfg: &SimConfig,
    market: &Market,
    partition: Partition,
) -> Result<HourOutput, SimError> {
    let hour = partition.hour;
    let mut rng = Rng::derive(&[cfg.seed, hour as u64, 0x4_0_0_2]);
    let day = hour.div_euclid(24) as i32;
    let h = hour.rem_euclid(24) as usize;
    let dow = calendar::weekday(day) as usize;
    let (_, month, _) = calendar::civil_from_days(day);
    let mean_w =
        market.routes.iter().map(|r| r.weight).sum::<f64>() / market.routes.len().max(1) as f64;
    let scale = cfg.searches_per_route_day
        * market::DIURNAL[h]
        * market::SEARCH_DOW[dow]
        * market::SEARCH_SEASON[month as usize - 1];

    let mut events = Vec::new();
    for route in &market.routes {
        let n = rng.poisson(scale * route.weight / mean_w);
        for _ in 0..n {
            let ts = hour * 3600 + rng.below(3600) as i64;
            events.push(market::search(
                &mut rng,
                market,
                route,
                ts,
                cfg.anomaly_rate,
            ));
        }
    }
    events.sort_by_key(|(e, _)| e.search_ts);

    let rates = cfg.bad.as_array();
    let seed_tag = (rng::mix(cfg.seed) >> 32) as u32;
    let mut counts = SimCounts {
        partitions: 1,
        ..Default::default()
    };
    let mut lines = Vec::with_capacity(events.len() * 430);
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let (mut fares, mut probs, mut anomalies, mut injected) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, (mut e, t)) in events.into_iter().enumerate() {
        e.event_id = format!("{:08x}{:06x}{seed_tag:08x}", hour as u32, i as u32);
        let u = rng.f64();
        let mut acc = 0.0;
        let mut kind = None;
        for (k, r) in rates.iter().enumerate() {
            acc += r;
            if u < acc {
                kind = Some(k);
                break;
            }
        }
        render(&mut rng, &e, kind, &mut lines);
        counts.events += 1;
        counts.lines += if kind == Some(7) { 2 } else { 1 };
        match kind {
            Some(k) => {
                counts.injected[k] += 1;
                if k == 7 {
                    counts.valid += 1;
                }
            }
            None => counts.valid += 1,
        }
        counts.anomalies += t.is_anomaly as u64;
        counts.booked += e.booked as u64;
        fares.push(t.expected_fare);
        probs.push(t.booking_prob);
        anomalies.push(t.is_anomaly);
        injected.push(kind.map(|k| BAD_KINDS[k]));
        ids.push(e.event_id);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(Float64Array::from(fares)),
        Arc::new(Float64Array::from(probs)),
        Arc::new(BooleanArray::from(anomalies)),
        Arc::new(StringArray::from(injected)),
    ];
    let truth = RecordBatch::try_new(truth_schema(), cols).map_err(|e| SimError::Config {
        field: "truth",
        reason: e.to_string(),
    })?;
    Ok(HourOutput {
        partition,
        lines,
        truth,
        counts,
    })
}

/// Gzip-compresses a buffer in one call (libdeflate).
pub fn gzip(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    let lvl = libdeflater::CompressionLvl::new(level).ok()?;
    let mut c = libdeflater::Compressor::new(lvl);
    let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
    let n = c.gzip_compress(data, &mut out).ok()?;
    out.truncate(n);
    Some(out)
}

struct Encoded {
    partition: Partition,
    raw: Option<Bytes>,
    lines: Option<Vec<u8>>,
    truth: Bytes,
    counts: SimCounts,
}

fn encode_hour(
    cfg: &SimConfig,
    market: &Market,
    p: Partition,
    sink: Sink,
    lake_url: &str,
) -> Result<Encoded, SimError> {
    let mut out = generate_hour(cfg, market, p)?;
    let stem = file_stem(cfg.seed);
    let truth_rel = format!("{TRUTH_TABLE}/{}/{stem}.parquet", p.dir());
    let truth = parquet_io::encode(
        truth_schema(),
        &[out.truth],
        &format!("{lake_url}/{truth_rel}"),
    )?;
    let (raw, lines) = match sink {
        Sink::Lake => {
            let gz = gzip(cfg.gzip_level, &out.lines).ok_or_else(|| SimError::Compress {
                partition: p.to_string(),
            })?;
            out.counts.raw_bytes = gz.len() as u64;
            (Some(Bytes::from(gz)), None)
        }
        Sink::Stdout => {
            out.counts.raw_bytes = out.lines.len() as u64;
            (None, Some(out.lines))
        }
    };
    Ok(Encoded {
        partition: p,
        raw,
        lines,
        truth,
        counts: out.counts,
    })
}

/// Runs a simulation into `lake`. Hours are generated in parallel (rayon) in chunks while
/// the previous chunk is written, and files are written in time order per chunk.
pub async fn simulate(lake: &Lake, cfg: &SimConfig, sink: Sink) -> Result<SimManifest, SimError> {
    let start = cfg.validate()?;
    let market = Arc::new(Market::new(cfg.seed, cfg.routes as usize));
    let first = Partition::from_ts(start as i64 * 86_400);
    let hours: Vec<Partition> = (0..cfg.days as i64 * 24)
        .map(|i| Partition {
            hour: first.hour + i,
        })
        .collect();
    let last = hours.last().copied().unwrap_or(first);
    let chunk = (rayon::current_num_threads() * 4).max(4);
    let stem = file_stem(cfg.seed);
    let mut total = SimCounts::default();
    let mut stdout = std::io::stdout().lock();
    let mut pending: Option<tokio::task::JoinHandle<Result<Vec<Encoded>, SimError>>> = None;
    let mut chunks = hours.chunks(chunk).map(|c| c.to_vec());
    let spawn = |c: Vec<Partition>| {
        let (cfg, market, url) = (cfg.clone(), market.clone(), lake.url().to_string());
        tokio::task::spawn_blocking(move || {
            c.par_iter()
                .map(|p| encode_hour(&cfg, &market, *p, sink, &url))
                .collect::<Result<Vec<_>, _>>()
        })
    };
    if let Some(c) = chunks.next() {
        pending = Some(spawn(c));
    }
    while let Some(job) = pending.take() {
        let done = job.await.map_err(SimError::Worker)??;
        if let Some(c) = chunks.next() {
            pending = Some(spawn(c));
        }
        let mut writes = Vec::new();
        for e in done {
            total.add(&e.counts);
            if let Some(lines) = &e.lines {
                stdout.write_all(lines).map_err(SimError::Stdout)?;
            }
            let dir = e.partition.dir();
            if let Some(raw) = e.raw {
                writes.push((format!("{RAW_TABLE}/{dir}/{stem}.jsonl.gz"), raw));
            }
            writes.push((format!("{TRUTH_TABLE}/{dir}/{stem}.parquet"), e.truth));
        }
        futures::future::try_join_all(
            writes
                .into_iter()
                .map(|(rel, b)| async move { lake.put(&rel, b).await }),
        )
        .await?;
    }
    stdout.flush().map_err(SimError::Stdout)?;
    let manifest = SimManifest {
        config: cfg.clone(),
        counts: total,
        first_partition: first.to_string(),
        last_partition: last.to_string(),
    };
    let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    lake.put(&format!("meta/simulations/{stem}.json"), Bytes::from(json))
        .await?;
    Ok(manifest)
}

/// Reads a simulation's manifest back.
pub async fn read_manifest(lake: &Lake, seed: u64) -> Result<Option<SimManifest>, StoreError> {
    let rel = format!("meta/simulations/{}.json", file_stem(seed));
    Ok(lake
        .get_opt(&rel)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_deterministic_and_valid() {
        let cfg = SimConfig {
            routes: 10,
            ..Default::default()
        };
        let market = Market::new(cfg.seed, 10);
        let p = Partition::from_parts(2026, 3, 2, 14).unwrap_or(Partition { hour: 0 });
        let a = generate_hour(&cfg, &market, p)
            .map(|o| o.lines)
            .unwrap_or_default();
        let b = generate_hour(&cfg, &market, p)
            .map(|o| o.lines)
            .unwrap_or_default();
        assert!(!a.is_empty());
        assert_eq!(a, b);
        for line in a.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
            let s = std::str::from_utf8(line).unwrap_or("");
            let e = contrail_events::parse_line(s);
            assert!(e.is_ok(), "{s}: {e:?}");
            assert_eq!(e.map(|e| Partition::from_ts(e.search_ts)).ok(), Some(p));
        }
    }

    #[test]
    fn injected_rows_are_counted() {
        let cfg = SimConfig {
            routes: 30,
            bad: BadRates::uniform(0.2),
            ..Default::default()
        };
        let market = Market::new(cfg.seed, 30);
        let out = generate_hour(&cfg, &market, Partition { hour: 491_000 })
            .map(|o| o.counts)
            .unwrap_or_default();
        assert!(out.events > 200, "{out:?}");
        assert!(out.injected.iter().all(|&n| n > 0), "{out:?}");
        let bad: u64 = out.injected.iter().sum::<u64>() - out.injected[7];
        assert_eq!(out.valid + bad, out.events);
        assert_eq!(out.lines, out.events + out.injected[7]);
    }
}
