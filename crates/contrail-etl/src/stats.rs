//! Per-partition distribution statistics of the curated columns, written by the ETL
//! beside each curated partition (`_stats.json`) so that drift checks read a few
//! kilobytes per hour instead of the data.
//!
//! For every numeric (and boolean) column: rows, missing values, mean, standard
//! deviation, minimum, maximum and a quantile sketch: the values at [`SKETCH_POINTS`]
//! evenly spaced ranks (the minimum, the maximum and 63 between). Sketches merge: the
//! share of a window's values at or below x is the row-weighted mean of its partitions'
//! [`ColumnStats::cdf`], each within 1/64 of the exact share. Rolling features (the
//! route's recent mean price and the like) need every earlier event, so they are not
//! known when one hour is processed; `contrail drift` computes those in one pass over
//! the table, and `contrail drift --from-etl-stats` checks the curated columns from these
//! files alone.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

/// The statistics file in each curated partition (a leading `_`: not a data file).
pub const STATS_FILE: &str = "_stats.json";
/// Points of each quantile sketch (ranks 0, 1/64, ..., 1).
pub const SKETCH_POINTS: usize = 65;
pub const STATS_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnStats {
    pub rows: u64,
    pub missing: u64,
    /// Of the values present (NaN, `null` in the file, when none are).
    #[serde(with = "nan_as_null")]
    pub mean: f64,
    #[serde(with = "nan_as_null")]
    pub std: f64,
    #[serde(with = "nan_as_null")]
    pub min: f64,
    #[serde(with = "nan_as_null")]
    pub max: f64,
    /// The values at ranks k/(SKETCH_POINTS - 1) of the sorted values present (empty
    /// when none are).
    pub quantiles: Vec<f64>,
}

/// JSON has no NaN: written as `null`, read back as NaN.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_nan() {
            s.serialize_none()
        } else {
            s.serialize_f64(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionStats {
    pub format: u32,
    pub rows: u64,
    pub columns: BTreeMap<String, ColumnStats>,
}

/// A column's values as f64 (NaN for nulls), if it is numeric or boolean.
fn values(a: &dyn Array) -> Option<Vec<f64>> {
    let n = a.len();
    let get = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
        (0..n)
            .map(|i| if a.is_null(i) { f64::NAN } else { f(i) })
            .collect()
    };
    Some(match a.data_type() {
        DataType::Float64 => {
            let p = a.as_primitive::<Float64Type>();
            get(&|i| p.value(i))
        }
        DataType::Float32 => {
            let p = a.as_primitive::<Float32Type>();
            get(&|i| p.value(i) as f64)
        }
        DataType::Int32 => {
            let p = a.as_primitive::<Int32Type>();
            get(&|i| p.value(i) as f64)
        }
        DataType::Int64 => {
            let p = a.as_primitive::<Int64Type>();
            get(&|i| p.value(i) as f64)
        }
        DataType::Boolean => {
            let b = a.as_boolean();
            get(&|i| b.value(i) as u8 as f64)
        }
        _ => return None,
    })
}

impl ColumnStats {
    /// The statistics of `v` (NaN: missing).
    pub fn of(v: &[f64]) -> ColumnStats {
        let mut present: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        present.sort_by(f64::total_cmp);
        let n = present.len();
        let (mean, std) = if n == 0 {
            (f64::NAN, f64::NAN)
        } else {
            let m = present.iter().sum::<f64>() / n as f64;
            let var = present.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
            (m, var.sqrt())
        };
        let quantiles = if n == 0 {
            Vec::new()
        } else {
            (0..SKETCH_POINTS)
                .map(|k| {
                    let r = (k as f64 * (n - 1) as f64 / (SKETCH_POINTS - 1) as f64).round();
                    present[r as usize]
                })
                .collect()
        };
        ColumnStats {
            rows: v.len() as u64,
            missing: (v.len() - n) as u64,
            mean,
            std,
            min: present.first().copied().unwrap_or(f64::NAN),
            max: present.last().copied().unwrap_or(f64::NAN),
            quantiles,
        }
    }

    /// The share of the values present that are at most `x`, from the sketch: exact at
    /// the sketch's points, linear between distinct neighbours, a step at ties.
    pub fn cdf(&self, x: f64) -> f64 {
        let q = &self.quantiles;
        let k = q.len();
        if k == 0 || x < q[0] {
            return 0.0;
        }
        if x >= q[k - 1] {
            return 1.0;
        }
        // The last point at or below x (x < q[k - 1], so j + 1 < k).
        let j = q.partition_point(|v| *v <= x) - 1;
        let step = 1.0 / (k - 1) as f64;
        let (a, b) = (q[j], q[j + 1]);
        let within = if b > a { (x - a) / (b - a) } else { 0.0 };
        (j as f64 + within) * step
    }

    /// Whether the numbers are sane (a file from disk may not be): counts consistent,
    /// the sketch sorted, of the right length and within [min, max].
    pub fn is_valid(&self) -> bool {
        let present = self.rows.checked_sub(self.missing);
        match present {
            None => false,
            Some(0) => self.quantiles.is_empty(),
            Some(_) => {
                self.quantiles.len() == SKETCH_POINTS
                    && self.quantiles.iter().all(|v| v.is_finite())
                    && self.quantiles.windows(2).all(|w| w[0] <= w[1])
                    && self.quantiles[0] == self.min
                    && self.quantiles[SKETCH_POINTS - 1] == self.max
                    && self.mean.is_finite()
            }
        }
    }
}

/// The statistics of every numeric and boolean column of a curated batch.
pub fn partition_stats(batch: &RecordBatch) -> PartitionStats {
    let mut columns = BTreeMap::new();
    for (f, a) in batch.schema().fields().iter().zip(batch.columns()) {
        if let Some(v) = values(a.as_ref()) {
            columns.insert(f.name().clone(), ColumnStats::of(&v));
        }
    }
    PartitionStats {
        format: STATS_FORMAT,
        rows: batch.num_rows() as u64,
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_known_values() {
        // 0, 1, ..., 1024 and 5 missing values.
        let mut v: Vec<f64> = (0..=1024).map(|i| i as f64).collect();
        v.extend([f64::NAN; 5]);
        let s = ColumnStats::of(&v);
        assert_eq!((s.rows, s.missing), (1030, 5));
        assert_eq!(s.mean, 512.0);
        // The population standard deviation of 0..=n is sqrt(n(n+2)/12).
        assert!((s.std - (1024.0f64 * 1026.0 / 12.0).sqrt()).abs() < 1e-9);
        assert_eq!((s.min, s.max), (0.0, 1024.0));
        assert_eq!(s.quantiles.len(), SKETCH_POINTS);
        for (k, q) in s.quantiles.iter().enumerate() {
            assert_eq!(*q, 16.0 * k as f64, "point {k}");
        }
        assert!(s.is_valid());
        // The sketch's CDF of a uniform sample is the uniform CDF.
        for x in [0.0, 1.0, 100.5, 512.0, 777.0, 1023.9] {
            assert!(
                (s.cdf(x) - x / 1024.0).abs() < 1e-12,
                "x = {x}: {}",
                s.cdf(x)
            );
        }
        assert_eq!(s.cdf(-1.0), 0.0);
        assert_eq!(s.cdf(1024.0), 1.0);
        assert_eq!(s.cdf(5000.0), 1.0);
    }

    #[test]
    fn ties_are_steps_and_empty_columns_are_empty() {
        // 70% zeros, 30% ones: every point at 0 or 1.
        let v: Vec<f64> = (0..1000).map(|i| (i >= 700) as u8 as f64).collect();
        let s = ColumnStats::of(&v);
        assert!(s.is_valid());
        let at0 = s.cdf(0.0);
        assert!((at0 - 0.7).abs() <= 1.0 / 64.0, "{at0}");
        let mid = s.cdf(0.5);
        assert!(
            mid > at0 && mid - at0 <= 1.0 / 64.0,
            "{mid}: linear over one step"
        );
        assert_eq!(s.cdf(1.0), 1.0);
        let e = ColumnStats::of(&[f64::NAN, f64::NAN]);
        assert_eq!((e.rows, e.missing), (2, 2));
        assert!(e.quantiles.is_empty() && e.mean.is_nan() && e.is_valid());
        let text = serde_json::to_string(&e).expect("json");
        let back: ColumnStats = serde_json::from_str(&text).expect("parse");
        assert!(back.mean.is_nan() && back.min.is_nan() && back.quantiles.is_empty());
        assert_eq!(e.cdf(3.0), 0.0);
        // Inconsistent numbers from a file are caught.
        let mut bad = s.clone();
        bad.quantiles.swap(3, 60);
        assert!(!bad.is_valid());
        let mut bad = s;
        bad.missing = bad.rows + 1;
        assert!(!bad.is_valid());
    }
}
