//! A summary of the lake: rows per table, quarantine reasons, ETL accounting and a few
//! feature statistics computed with the shared feature function.

use std::collections::BTreeMap;
use std::fmt;

use arrow_array::{Array, Float64Array, StringArray};
use futures::StreamExt;
use serde::Serialize;

use crate::etl::etl::{curated_files, Accounting, SUMMARY_FILE};
use crate::etl::{CURATED_TABLE, QUARANTINE_TABLE, RAW_TABLE};
use crate::features::{FeatureBuilder, Kind, FEATURES};
use crate::store::parquet_io::{self, ScanOptions};
use crate::store::partition::{list_partitions, HourRange};
use crate::store::{Lake, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Etl(#[from] crate::etl::EtlError),
    #[error("computing features")]
    Features(#[from] crate::features::FeatureError),
    #[error("{url}: invalid ETL summary")]
    BadSummary {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

impl SummaryError {
    pub fn is_user_error(&self) -> bool {
        match self {
            SummaryError::Store(e) => e.is_user_error(),
            SummaryError::Etl(e) => e.is_user_error(),
            SummaryError::Features(_) | SummaryError::BadSummary { .. } => true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStat {
    pub partitions: u64,
    pub files: u64,
    pub bytes: u64,
    /// Rows, where the table's format declares them (Parquet).
    pub rows: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FeatureStat {
    pub name: String,
    pub count: u64,
    pub nulls: u64,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LakeSummary {
    pub lake: String,
    pub tables: BTreeMap<String, TableStat>,
    pub quarantine_reasons: BTreeMap<String, u64>,
    pub etl: Option<Accounting>,
    pub booked_rate: Option<f64>,
    pub features: Vec<FeatureStat>,
    pub top_routes: Vec<(String, u64)>,
}

async fn table_stat(lake: &Lake, table: &str, parquet: bool) -> Result<TableStat, StoreError> {
    let parts = list_partitions(lake, table, HourRange::all()).await?;
    let mut t = TableStat {
        partitions: parts.len() as u64,
        rows: parquet.then_some(0),
        ..Default::default()
    };
    for m in lake.list(table).await? {
        let rel = lake.relative(&m.location).to_string();
        let name = rel.rsplit('/').next().unwrap_or("");
        if name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        t.files += 1;
        t.bytes += m.size;
        if parquet && name.ends_with(".parquet") {
            let n = parquet_io::row_count(lake, &rel).await?;
            t.rows = t.rows.map(|r| r + n);
        }
    }
    Ok(t)
}

/// Features whose statistics the summary shows.
pub const SHOWN: [&str; 8] = [
    "lead_time_days",
    "distance_km",
    "stay_length_days",
    "seats_remaining_ratio",
    "competitor_price",
    "route_cabin_price_mean_7d",
    "route_search_rate_24h",
    "price_per_km",
];

pub async fn summarize(lake: &Lake) -> Result<LakeSummary, SummaryError> {
    let mut s = LakeSummary {
        lake: lake.url().to_string(),
        ..Default::default()
    };
    s.tables
        .insert(RAW_TABLE.into(), table_stat(lake, RAW_TABLE, false).await?);
    for t in [CURATED_TABLE, QUARANTINE_TABLE, crate::sim::TRUTH_TABLE] {
        s.tables.insert(t.into(), table_stat(lake, t, true).await?);
    }
    if let Some(b) = lake.get_opt(SUMMARY_FILE).await? {
        s.etl = Some(
            serde_json::from_slice(&b).map_err(|source| SummaryError::BadSummary {
                url: lake.display(SUMMARY_FILE),
                source,
            })?,
        );
    }
    // Quarantine reasons.
    let qfiles: Vec<String> = lake
        .list(QUARANTINE_TABLE)
        .await?
        .iter()
        .map(|m| lake.relative(&m.location).to_string())
        .filter(|r| r.ends_with(".parquet"))
        .collect();
    let opts = ScanOptions {
        columns: Some(vec!["reason".into()]),
        ..Default::default()
    };
    let mut q = std::pin::pin!(parquet_io::scan(lake, qfiles, opts));
    while let Some(b) = q.next().await {
        let b = b?;
        if let Some(r) = b.column(0).as_any().downcast_ref::<StringArray>() {
            for v in r.iter().flatten() {
                *s.quarantine_reasons.entry(v.to_string()).or_default() += 1;
            }
        }
    }
    // Features over the curated table, in time order.
    let files = curated_files(lake, HourRange::all()).await?;
    let mut fb = FeatureBuilder::new();
    let mut acc: BTreeMap<&str, (u64, u64, f64, f64, f64, f64)> = BTreeMap::new();
    let mut routes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut rows, mut booked) = (0u64, 0u64);
    let mut c = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    while let Some(b) = c.next().await {
        let b = b?;
        if let Some(bk) = b
            .column_by_name("booked")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::BooleanArray>())
        {
            rows += bk.len() as u64;
            booked += bk.true_count() as u64;
        }
        let f = fb.compute(&b)?;
        for def in FEATURES
            .iter()
            .filter(|d| d.kind == Kind::Numeric && SHOWN.contains(&d.name))
        {
            let Some(col) = f
                .column_by_name(def.name)
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            else {
                continue;
            };
            let e =
                acc.entry(def.name)
                    .or_insert((0, 0, 0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            for v in col.iter() {
                match v {
                    Some(x) if x.is_finite() => {
                        e.0 += 1;
                        e.2 += x;
                        e.3 += x * x;
                        e.4 = e.4.min(x);
                        e.5 = e.5.max(x);
                    }
                    _ => e.1 += 1,
                }
            }
        }
        if let Some(r) = f
            .column_by_name("route")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        {
            for v in r.iter().flatten() {
                *routes.entry(v.to_string()).or_default() += 1;
            }
        }
    }
    s.booked_rate = (rows > 0).then(|| booked as f64 / rows as f64);
    for name in SHOWN {
        if let Some(&(n, nulls, sum, sum2, mn, mx)) = acc.get(name) {
            let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
            let var = if n > 0 {
                (sum2 / n as f64 - mean * mean).max(0.0)
            } else {
                f64::NAN
            };
            s.features.push(FeatureStat {
                name: name.into(),
                count: n,
                nulls,
                mean,
                std: var.sqrt(),
                min: mn,
                max: mx,
            });
        }
    }
    let mut r: Vec<(String, u64)> = routes.into_iter().collect();
    r.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    r.truncate(5);
    s.top_routes = r;
    Ok(s)
}

impl fmt::Display for LakeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "lake {}", self.lake)?;
        writeln!(
            f,
            "\n{:<28} {:>10} {:>7} {:>12} {:>12}",
            "table", "partitions", "files", "bytes", "rows"
        )?;
        for (name, t) in &self.tables {
            let rows = t.rows.map_or("-".to_string(), |r| r.to_string());
            writeln!(
                f,
                "{:<28} {:>10} {:>7} {:>12} {:>12}",
                name, t.partitions, t.files, t.bytes, rows
            )?;
        }
        if let Some(a) = &self.etl {
            writeln!(
                f,
                "\netl accounting: rows read {} = curated {} + quarantined {} + duplicates {} ({})",
                a.rows_read,
                a.curated,
                a.quarantined,
                a.duplicates,
                if a.balanced() {
                    "balanced"
                } else {
                    "NOT BALANCED"
                }
            )?;
        }
        if !self.quarantine_reasons.is_empty() {
            writeln!(f, "\n{:<28} {:>10}", "quarantine reason", "rows")?;
            for (r, n) in &self.quarantine_reasons {
                writeln!(f, "{r:<28} {n:>10}")?;
            }
        }
        if let Some(b) = self.booked_rate {
            writeln!(f, "\nbooking rate in curated searches: {:.2}%", b * 100.0)?;
        }
        if !self.features.is_empty() {
            writeln!(
                f,
                "\n{:<28} {:>10} {:>8} {:>11} {:>11} {:>11} {:>11}",
                "feature", "count", "null", "mean", "std", "min", "max"
            )?;
            for s in &self.features {
                writeln!(
                    f,
                    "{:<28} {:>10} {:>8} {:>11.3} {:>11.3} {:>11.3} {:>11.3}",
                    s.name, s.count, s.nulls, s.mean, s.std, s.min, s.max
                )?;
            }
        }
        if !self.top_routes.is_empty() {
            writeln!(
                f,
                "\nbusiest routes: {}",
                self.top_routes
                    .iter()
                    .map(|(r, n)| format!("{r} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        Ok(())
    }
}
