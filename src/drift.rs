//! `contrail drift`: how far each numeric feature's distribution on the curated lake's
//! latest days has moved from a reference window (population stability index and
//! Jensen–Shannon distance over the reference's quantile buckets,
//! [`crate::features::drift`]).
//!
//! One pass over the curated table in time order computes the features with the shared
//! feature function (their rolling statistics need every earlier event). Reference rows
//! are kept as a sample of at most [`REFERENCE_SAMPLE`] rows (every k-th row, k doubling
//! as the window grows), which fixes each feature's buckets when the first current day
//! begins; each current day's rows are then counted into those buckets.

use std::collections::BTreeMap;

use arrow_array::{Array, Float64Array};
use arrow_schema::DataType;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::etl::etl::curated_files;
use crate::etl::stats::{ColumnStats, PartitionStats, STATS_FILE};
use crate::etl::CURATED_TABLE;
use crate::features::drift::{js_distance, psi, Buckets, Moments};
use crate::features::{feature_schema, FeatureBuilder};
use crate::models::ModelError;
use crate::store::parquet_io::{self, ScanOptions};
use crate::store::partition::{list_partitions, HourRange, Partition};
use crate::store::Lake;

/// Reference rows kept to place the buckets.
pub const REFERENCE_SAMPLE: usize = 200_000;

/// Features that follow the calendar: one day's values differ from any earlier window's
/// by construction (a day has one day of the week), so they are checked only when named.
pub const CALENDAR_FEATURES: [&str; 5] = [
    "search_dow",
    "search_month",
    "departure_month",
    "departure_day_of_year",
    "days_to_holiday",
];

#[derive(Debug, Clone)]
pub struct DriftOptions {
    /// The latest days, each compared with the reference.
    pub current_days: u32,
    /// Days before the current ones that form the reference (None: every earlier day).
    pub reference_days: Option<u32>,
    /// Or an explicit reference window: first and last day (days since 1970-01-01),
    /// which must end before the current days.
    pub reference: Option<(i64, i64)>,
    /// Numeric features to check (empty: all but [`CALENDAR_FEATURES`]).
    pub features: Vec<String>,
    pub buckets: usize,
    /// A feature whose PSI on a current day is above this raises the alarm.
    pub max_psi: f64,
}

impl Default for DriftOptions {
    fn default() -> Self {
        DriftOptions {
            current_days: 1,
            reference_days: None,
            reference: None,
            features: Vec::new(),
            buckets: 10,
            max_psi: 0.25,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureDrift {
    pub day: String,
    pub feature: String,
    pub psi: f64,
    pub js_distance: f64,
    pub rows: u64,
    pub reference_missing: f64,
    pub missing: f64,
    pub reference_mean: f64,
    pub mean: f64,
    pub alarm: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    pub reference_from: String,
    pub reference_to: String,
    pub reference_rows: u64,
    pub max_psi: f64,
    /// Per current day, features by decreasing PSI.
    pub features: Vec<FeatureDrift>,
}

impl DriftReport {
    pub fn alarms(&self) -> Vec<&FeatureDrift> {
        self.features.iter().filter(|f| f.alarm).collect()
    }
}

impl std::fmt::Display for DriftReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reference {} .. {} ({} rows); alarm above PSI {}",
            self.reference_from, self.reference_to, self.reference_rows, self.max_psi
        )?;
        writeln!(
            f,
            "{:<10} {:<28} {:>8} {:>8} {:>9} {:>9} {:>12} {:>12}",
            "day", "feature", "psi", "js", "missing", "ref miss", "mean", "ref mean"
        )?;
        for r in &self.features {
            writeln!(
                f,
                "{:<10} {:<28} {:>8.4} {:>8.4} {:>8.2}% {:>8.2}% {:>12.4} {:>12.4}{}",
                r.day,
                r.feature,
                r.psi,
                r.js_distance,
                100.0 * r.missing,
                100.0 * r.reference_missing,
                r.mean,
                r.reference_mean,
                if r.alarm { "  ALARM" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// A day's rows by decreasing PSI, then by name.
fn by_psi(rows: &mut [FeatureDrift]) {
    rows.sort_by(|a, b| {
        b.psi
            .total_cmp(&a.psi)
            .then_with(|| a.feature.cmp(&b.feature))
    });
}

fn day_label(day: i64) -> String {
    let (y, m, d, _) = Partition { hour: day * 24 }.parts();
    format!("{y:04}-{m:02}-{d:02}")
}

/// Every k-th value, k doubling whenever the sample is full: a deterministic sample of
/// at most `cap` values spread over the whole window.
struct Sample {
    cap: usize,
    step: usize,
    seen: usize,
    values: Vec<Vec<f64>>,
}

impl Sample {
    fn push_row(&mut self, row: impl Iterator<Item = f64>) {
        self.seen += 1;
        if (self.seen - 1) % self.step != 0 {
            return;
        }
        for (v, x) in self.values.iter_mut().zip(row) {
            v.push(x);
        }
        if self.values.first().is_some_and(|v| v.len() >= self.cap) {
            for v in &mut self.values {
                let kept: Vec<f64> = v.iter().step_by(2).copied().collect();
                *v = kept;
            }
            self.step *= 2;
        }
    }
}

/// The days compared: the current ones and the reference window.
struct Windows {
    current_from: i64,
    reference_from: i64,
    reference_to: i64,
}

fn windows(lake: &Lake, days: &[i64], o: &DriftOptions) -> Result<Windows, ModelError> {
    if o.current_days == 0 || o.buckets < 2 || o.reference_days == Some(0) {
        return Err(ModelError::Invalid(
            "drift needs --current-days >= 1, --reference-days >= 1 and --buckets >= 2".into(),
        ));
    }
    let (Some(&first), Some(&last)) = (days.iter().min(), days.iter().max()) else {
        return Err(ModelError::Invalid(format!(
            "{}: the curated table is empty (run `contrail etl` first)",
            lake.url()
        )));
    };
    let current_from = last - o.current_days as i64 + 1;
    let (reference_from, reference_to) = match (o.reference, o.reference_days) {
        (Some((a, b)), _) => (a, b),
        (None, Some(r)) => (current_from - r as i64, current_from - 1),
        (None, None) => (first, current_from - 1),
    };
    if reference_from > reference_to || reference_to >= current_from {
        return Err(ModelError::Invalid(format!(
            "reference window {} .. {} must be non-empty and end before the current days ({} ..)",
            day_label(reference_from),
            day_label(reference_to),
            day_label(current_from)
        )));
    }
    if current_from <= first {
        return Err(ModelError::Invalid(format!(
            "the lake holds {} days: not enough for {} current day(s) after a reference",
            last - first + 1,
            o.current_days
        )));
    }
    Ok(Windows {
        current_from,
        reference_from,
        reference_to,
    })
}

/// Compares the latest days of the curated lake with the reference window.
pub async fn drift(lake: &Lake, o: &DriftOptions) -> Result<DriftReport, ModelError> {
    let schema = feature_schema();
    let numeric: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Float64)
        .map(|f| f.name().clone())
        .collect();
    let names: Vec<String> = if o.features.is_empty() {
        numeric
            .iter()
            .filter(|n| !CALENDAR_FEATURES.contains(&n.as_str()))
            .cloned()
            .collect()
    } else {
        for n in &o.features {
            if !numeric.contains(n) {
                return Err(ModelError::Invalid(format!(
                    "`{n}` is not a numeric feature (see docs/features.md)"
                )));
            }
        }
        o.features.clone()
    };
    let files = curated_files(lake, HourRange::all()).await?;
    let days: Vec<i64> = files
        .iter()
        .filter_map(|f| Partition::parse_path(f))
        .map(|p| p.hour.div_euclid(24))
        .collect();
    let Windows {
        current_from,
        reference_from,
        reference_to,
    } = windows(lake, &days, o)?;
    let mut sample = Sample {
        cap: REFERENCE_SAMPLE,
        step: 1,
        seen: 0,
        values: vec![Vec::new(); names.len()],
    };
    let mut ref_moments = vec![Moments::default(); names.len()];
    let mut buckets: Option<Vec<Buckets>> = None;
    // Per current day: per feature, counts and moments.
    let mut current: BTreeMap<i64, Vec<(Vec<u64>, Moments)>> = BTreeMap::new();
    let mut fb = FeatureBuilder::new();
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    while let Some(b) = s.next().await {
        let b = b?;
        let day = crate::models::batch_hour(&b).div_euclid(24);
        let f = fb.compute(&b)?;
        if day < reference_from || (day > reference_to && day < current_from) {
            continue;
        }
        let cols: Vec<&Float64Array> = names
            .iter()
            .map(|n| {
                f.column_by_name(n)
                    .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                    .ok_or_else(|| ModelError::Invalid(format!("feature `{n}` is not numeric")))
            })
            .collect::<Result<_, _>>()?;
        let value = |c: &Float64Array, i: usize| {
            if c.is_null(i) {
                f64::NAN
            } else {
                c.value(i)
            }
        };
        if day < current_from {
            for i in 0..f.num_rows() {
                for (m, c) in ref_moments.iter_mut().zip(&cols) {
                    m.add(value(c, i));
                }
                sample.push_row(cols.iter().map(|c| value(c, i)));
            }
            continue;
        }
        let bk = buckets.get_or_insert_with(|| {
            sample
                .values
                .iter()
                .map(|v| Buckets::from_reference(v, o.buckets))
                .collect()
        });
        let per = current.entry(day).or_insert_with(|| {
            bk.iter()
                .map(|b| (vec![0u64; b.len()], Moments::default()))
                .collect()
        });
        for i in 0..f.num_rows() {
            for ((b, (counts, m)), c) in bk.iter().zip(per.iter_mut()).zip(&cols) {
                let v = value(c, i);
                b.add(counts, v);
                m.add(v);
            }
        }
    }
    let Some(bk) = buckets else {
        return Err(ModelError::Invalid("no rows in the current window".into()));
    };
    let ref_counts: Vec<Vec<u64>> = bk
        .iter()
        .zip(&sample.values)
        .map(|(b, v)| {
            let mut c = vec![0u64; b.len()];
            for x in v {
                b.add(&mut c, *x);
            }
            c
        })
        .collect();
    let mut features = Vec::new();
    for (day, per) in &current {
        let mut rows: Vec<FeatureDrift> = names
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let (counts, m) = &per[k];
                let p = psi(&ref_counts[k], counts);
                FeatureDrift {
                    day: day_label(*day),
                    feature: name.clone(),
                    psi: p,
                    js_distance: js_distance(&ref_counts[k], counts),
                    rows: m.count,
                    reference_missing: ref_moments[k].missing_share(),
                    missing: m.missing_share(),
                    reference_mean: ref_moments[k].mean(),
                    mean: m.mean(),
                    alarm: p > o.max_psi,
                }
            })
            .collect();
        by_psi(&mut rows);
        features.extend(rows);
    }
    Ok(DriftReport {
        reference_from: day_label(reference_from),
        reference_to: day_label(reference_to),
        reference_rows: ref_moments.first().map_or(0, |m| m.count),
        max_psi: o.max_psi,
        features,
    })
}

/// Shares of a window's rows in each bucket (`edges` ascending: `(-inf, e0]`, ...,
/// `(e_last, inf)`) and the missing bucket last, as counts of 10^12 for [`psi`].
fn window_counts(stats: &[&ColumnStats], edges: &[f64]) -> Vec<u64> {
    let rows: u64 = stats.iter().map(|s| s.rows).sum();
    let mut shares = vec![0.0f64; edges.len() + 2];
    if rows == 0 {
        return vec![0; edges.len() + 2];
    }
    for s in stats {
        let present = (s.rows - s.missing) as f64;
        let mut below = 0.0;
        for (j, e) in edges.iter().enumerate() {
            let c = s.cdf(*e);
            shares[j] += present * (c - below);
            below = c;
        }
        shares[edges.len()] += present * (1.0 - below);
        shares[edges.len() + 1] += s.missing as f64;
    }
    shares
        .iter()
        .map(|x| (x / rows as f64 * 1e12).round().max(0.0) as u64)
        .collect()
}

/// The value below which a share `level` of the window's present values lie (bisection
/// on the row-weighted mixture of the partitions' sketch CDFs).
fn window_quantile(stats: &[&ColumnStats], level: f64) -> f64 {
    let present: f64 = stats.iter().map(|s| (s.rows - s.missing) as f64).sum();
    let cdf = |x: f64| -> f64 {
        stats
            .iter()
            .map(|s| (s.rows - s.missing) as f64 * s.cdf(x))
            .sum::<f64>()
            / present
    };
    let (mut lo, mut hi) = stats
        .iter()
        .filter(|s| s.rows > s.missing)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), s| {
            (a.min(s.min), b.max(s.max))
        });
    if cdf(lo) >= level {
        return lo;
    }
    for _ in 0..100 {
        let mid = lo + (hi - lo) / 2.0;
        if mid <= lo || mid >= hi {
            break;
        }
        if cdf(mid) >= level {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// [`drift`] from the statistics the ETL keeps beside each curated partition
/// ([`crate::etl::stats`]): the curated table's numeric columns (not the derived
/// features), each day's and the reference window's distributions merged from hourly
/// quantile sketches, without reading the data. Buckets are the reference mixture's
/// quantiles; each share is within 1/64 of a partition's exact share.
pub async fn drift_from_stats(lake: &Lake, o: &DriftOptions) -> Result<DriftReport, ModelError> {
    let parts = list_partitions(lake, CURATED_TABLE, HourRange::all()).await?;
    let days: Vec<i64> = parts.iter().map(|p| p.hour.div_euclid(24)).collect();
    let Windows {
        current_from,
        reference_from,
        reference_to,
    } = windows(lake, &days, o)?;
    let wanted: Vec<Partition> = parts
        .into_iter()
        .filter(|p| {
            let d = p.hour.div_euclid(24);
            (reference_from..=reference_to).contains(&d) || d >= current_from
        })
        .collect();
    let loaded: Vec<(Partition, Option<bytes::Bytes>)> =
        futures::stream::iter(wanted.into_iter().map(|p| async move {
            let rel = format!("{CURATED_TABLE}/{}/{STATS_FILE}", p.dir());
            lake.get_opt(&rel).await.map(|b| (p, b))
        }))
        .buffered(16)
        .try_collect()
        .await?;
    let mut stats: Vec<(i64, PartitionStats)> = Vec::with_capacity(loaded.len());
    for (p, bytes) in loaded {
        let rel = format!("{CURATED_TABLE}/{}/{STATS_FILE}", p.dir());
        let Some(bytes) = bytes else {
            // A partition the ETL left without curated rows has no statistics either.
            let data = format!("{CURATED_TABLE}/{}/{}", p.dir(), crate::etl::etl::PART_FILE);
            if lake.get_opt(&data).await?.is_some() {
                return Err(ModelError::Invalid(format!(
                    "{} is missing (the partition was processed before the ETL kept statistics: run `contrail etl --force`)",
                    lake.display(&rel)
                )));
            }
            continue;
        };
        let s: PartitionStats = serde_json::from_slice(&bytes).map_err(|e| {
            ModelError::Invalid(format!(
                "{}: not a statistics file: {e}",
                lake.display(&rel)
            ))
        })?;
        if let Some((name, _)) = s.columns.iter().find(|(_, c)| !c.is_valid()) {
            return Err(ModelError::Invalid(format!(
                "{}: column `{name}`: inconsistent statistics",
                lake.display(&rel)
            )));
        }
        stats.push((p.hour.div_euclid(24), s));
    }
    let reference: Vec<&PartitionStats> = stats
        .iter()
        .filter(|(d, _)| *d <= reference_to)
        .map(|(_, s)| s)
        .collect();
    if reference.is_empty() {
        return Err(ModelError::Invalid(
            "no curated rows in the reference window".into(),
        ));
    }
    let available: Vec<String> = reference[0].columns.keys().cloned().collect();
    let names: Vec<String> = if o.features.is_empty() {
        available.clone()
    } else {
        for n in &o.features {
            if !available.contains(n) {
                return Err(ModelError::Invalid(format!(
                    "`{n}` is not a numeric column of the curated table (the ETL's statistics have: {})",
                    available.join(", ")
                )));
            }
        }
        o.features.clone()
    };
    fn column<'a>(ps: &[&'a PartitionStats], n: &str) -> Result<Vec<&'a ColumnStats>, ModelError> {
        ps.iter()
            .map(|s| {
                s.columns.get(n).ok_or_else(|| {
                    ModelError::Invalid(format!("a partition's statistics lack column `{n}`"))
                })
            })
            .collect()
    }
    let mut current_days: BTreeMap<i64, Vec<&PartitionStats>> = BTreeMap::new();
    for (d, s) in &stats {
        if *d >= current_from {
            current_days.entry(*d).or_default().push(s);
        }
    }
    let mut features = Vec::new();
    let mut per_day: BTreeMap<i64, Vec<FeatureDrift>> = BTreeMap::new();
    for n in &names {
        let rr = column(&reference, n)?;
        let ref_present: u64 = rr.iter().map(|s| s.rows - s.missing).sum();
        let mean = |ss: &[&ColumnStats]| {
            let p: u64 = ss.iter().map(|s| s.rows - s.missing).sum();
            if p == 0 {
                f64::NAN
            } else {
                ss.iter()
                    .filter(|s| s.rows > s.missing)
                    .map(|s| (s.rows - s.missing) as f64 * s.mean)
                    .sum::<f64>()
                    / p as f64
            }
        };
        let missing = |ss: &[&ColumnStats]| {
            let r: u64 = ss.iter().map(|s| s.rows).sum();
            ss.iter().map(|s| s.missing).sum::<u64>() as f64 / r.max(1) as f64
        };
        let mut edges: Vec<f64> = if ref_present == 0 {
            Vec::new()
        } else {
            (1..o.buckets)
                .map(|i| window_quantile(&rr, i as f64 / o.buckets as f64))
                .collect()
        };
        edges.dedup();
        let ref_counts = window_counts(&rr, &edges);
        for (day, ps) in &current_days {
            let cr = column(ps, n)?;
            let counts = window_counts(&cr, &edges);
            let p = psi(&ref_counts, &counts);
            per_day.entry(*day).or_default().push(FeatureDrift {
                day: day_label(*day),
                feature: n.clone(),
                psi: p,
                js_distance: js_distance(&ref_counts, &counts),
                rows: cr.iter().map(|s| s.rows).sum(),
                reference_missing: missing(&rr),
                missing: missing(&cr),
                reference_mean: mean(&rr),
                mean: mean(&cr),
                alarm: p > o.max_psi,
            });
        }
    }
    for (_, mut rows) in per_day {
        by_psi(&mut rows);
        features.extend(rows);
    }
    Ok(DriftReport {
        reference_from: day_label(reference_from),
        reference_to: day_label(reference_to),
        reference_rows: reference.iter().map(|s| s.rows).sum(),
        max_psi: o.max_psi,
        features,
    })
}
