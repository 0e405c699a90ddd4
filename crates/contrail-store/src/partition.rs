//! Hourly partitions: `<table>/year=YYYY/month=MM/day=DD/hour=HH/`, and pruning by range.

use std::fmt;

use crate::{Lake, StoreError};

/// One hour of one table, identified by its hour since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub hour: i64,
}

fn civil(days: i64) -> (i64, u32, u32) {
    // Same algorithm as contrail-events' calendar, on i64; kept here so the storage
    // layer has no dependency on the event crate.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe as i64 + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = (y - era * 400) as u32;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe as i64 - 719_468
}

impl Partition {
    pub fn from_ts(ts_secs: i64) -> Partition {
        Partition {
            hour: ts_secs.div_euclid(3600),
        }
    }

    pub fn from_parts(year: i64, month: u32, day: u32, hour: u32) -> Option<Partition> {
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || !(0..=9999).contains(&year)
        {
            return None;
        }
        let days = days_from(year, month, day);
        // Reject 2026-02-31 and the like: the date must round-trip.
        if civil(days) != (year, month, day) {
            return None;
        }
        Some(Partition {
            hour: days * 24 + hour as i64,
        })
    }

    /// (year, month, day, hour).
    pub fn parts(&self) -> (i64, u32, u32, u32) {
        let (y, m, d) = civil(self.hour.div_euclid(24));
        (y, m, d, self.hour.rem_euclid(24) as u32)
    }

    pub fn start_ts(&self) -> i64 {
        self.hour * 3600
    }

    /// `year=YYYY/month=MM/day=DD/hour=HH`.
    pub fn dir(&self) -> String {
        let (y, m, d, h) = self.parts();
        format!("year={y:04}/month={m:02}/day={d:02}/hour={h:02}")
    }

    /// Parses a partition from the key segments of a path (anywhere in the path).
    pub fn parse_path(path: &str) -> Option<Partition> {
        let mut keys = [None; 4];
        for seg in path.split('/') {
            if let Some((k, v)) = seg.split_once('=') {
                let slot = match k {
                    "year" => 0,
                    "month" => 1,
                    "day" => 2,
                    "hour" => 3,
                    _ => continue,
                };
                keys[slot] = Some(v.parse::<i64>().ok()?);
            }
        }
        let [Some(y), Some(m), Some(d), Some(h)] = keys else {
            return None;
        };
        Partition::from_parts(
            y,
            u32::try_from(m).ok()?,
            u32::try_from(d).ok()?,
            u32::try_from(h).ok()?,
        )
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d, h) = self.parts();
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}")
    }
}

/// An inclusive range of hours; `None` bounds are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl HourRange {
    pub fn all() -> HourRange {
        HourRange::default()
    }
    pub fn contains(&self, hour: i64) -> bool {
        self.from.is_none_or(|f| hour >= f) && self.to.is_none_or(|t| hour <= t)
    }
    fn overlaps(&self, lo: i64, hi: i64) -> bool {
        self.from.is_none_or(|f| hi >= f) && self.to.is_none_or(|t| lo <= t)
    }
}

fn key_value(dir: &str, key: &str) -> Option<i64> {
    let last = dir.trim_end_matches('/').rsplit('/').next()?;
    last.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
}

/// The partitions of `table` within `range`, sorted by time. Listing goes level by level
/// (year, month, day, hour) and never descends into a year, month or day outside the
/// range, so a narrow range costs a few listings however large the table. Folders whose
/// names are not partition keys are ignored.
pub async fn list_partitions(
    lake: &Lake,
    table: &str,
    range: HourRange,
) -> Result<Vec<Partition>, StoreError> {
    let mut out = Vec::new();
    for ydir in lake.list_dirs(table).await? {
        let Some(y) = key_value(&ydir, "year") else {
            continue;
        };
        let (lo, hi) = (days_from(y, 1, 1) * 24, days_from(y + 1, 1, 1) * 24 - 1);
        if !range.overlaps(lo, hi) {
            continue;
        }
        for mdir in lake.list_dirs(&ydir).await? {
            let Some(m) = key_value(&mdir, "month")
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| (1..=12).contains(m))
            else {
                continue;
            };
            let next = if m == 12 {
                days_from(y + 1, 1, 1)
            } else {
                days_from(y, m + 1, 1)
            };
            if !range.overlaps(days_from(y, m, 1) * 24, next * 24 - 1) {
                continue;
            }
            for ddir in lake.list_dirs(&mdir).await? {
                let Some(d) = key_value(&ddir, "day").and_then(|d| u32::try_from(d).ok()) else {
                    continue;
                };
                let Some(p0) = Partition::from_parts(y, m, d, 0) else {
                    continue;
                };
                if !range.overlaps(p0.hour, p0.hour + 23) {
                    continue;
                }
                for hdir in lake.list_dirs(&ddir).await? {
                    let Some(p) = Partition::parse_path(&hdir) else {
                        continue;
                    };
                    if range.contains(p.hour) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_round_trip() {
        for hour in (0..24 * 366 * 3).step_by(7) {
            let p = Partition {
                hour: 490_000 + hour,
            };
            assert_eq!(
                Partition::parse_path(&format!("raw/t/{}/x.jsonl.gz", p.dir())),
                Some(p)
            );
        }
        assert_eq!(
            Partition::parse_path("year=2026/month=02/day=30/hour=00"),
            None
        );
        assert_eq!(
            Partition::parse_path("year=2026/month=02/day=3/hour=24"),
            None
        );
        assert_eq!(Partition::parse_path("year=2026/month=02/day=03"), None);
        let p = Partition::from_parts(2026, 3, 1, 8);
        assert_eq!(
            p.map(|p| p.dir()),
            Some("year=2026/month=03/day=01/hour=08".into())
        );
        assert_eq!(p.map(|p| p.to_string()), Some("2026-03-01T08".into()));
    }
}
