//! Civil-calendar arithmetic on the proleptic Gregorian calendar, UTC only.
//!
//! Dates are `i32` days since 1970-01-01 and instants are `i64` seconds since the epoch.
//! No time-zone database: every timestamp in the lake is UTC, written with a `Z`.

/// Days since 1970-01-01 of a civil date. Valid for years -9999..=9999.
pub fn days_from_civil(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = (y - era * 400) as u32; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe as i32 - 719_468
}

/// The civil date (year, month 1..=12, day 1..=31) of a day number.
pub fn civil_from_days(z: i32) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u32;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i32 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// ISO weekday of a day number: Monday = 0 .. Sunday = 6.
pub fn weekday(days: i32) -> u32 {
    // 1970-01-01 was a Thursday (3).
    (days + 3).rem_euclid(7) as u32
}

/// Day of the year, 1..=366.
pub fn day_of_year(days: i32) -> u32 {
    let (y, _, _) = civil_from_days(days);
    (days - days_from_civil(y, 1, 1) + 1) as u32
}

pub fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// Parses `YYYY-MM-DD` into a day number; `None` if malformed or not a real date.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&b[0..4])? as i32;
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Parses an RFC 3339 UTC instant `YYYY-MM-DDTHH:MM:SS[.fff]Z` (or `+00:00`) into
/// seconds since the epoch. Fractions are truncated; other offsets are applied.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || (b[10] != b'T' && b[10] != b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let day = parse_date(s.get(0..10)?)?;
    let h = digits(&b[11..13])?;
    let mi = digits(&b[14..16])?;
    let sec = digits(&b[17..19])?;
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &rest[1 + n..];
    }
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', m1, m2] if hh.len() == 2 => {
            let oh = digits(hh)? as i64;
            let om = digits(&[*m1, *m2])? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    Some(day as i64 * 86_400 + (h * 3600 + mi * 60 + sec.min(59)) as i64 - offset)
}

fn push2(out: &mut Vec<u8>, v: u32) {
    out.push(b'0' + (v / 10 % 10) as u8);
    out.push(b'0' + (v % 10) as u8);
}

/// Appends `YYYY-MM-DD`.
pub fn write_date(out: &mut Vec<u8>, days: i32) {
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    push2(out, y / 100);
    push2(out, y % 100);
    out.push(b'-');
    push2(out, m);
    out.push(b'-');
    push2(out, d);
}

/// Appends `YYYY-MM-DDTHH:MM:SSZ`.
pub fn write_timestamp(out: &mut Vec<u8>, ts: i64) {
    let days = ts.div_euclid(86_400) as i32;
    let sod = ts.rem_euclid(86_400) as u32;
    write_date(out, days);
    out.push(b'T');
    push2(out, sod / 3600);
    out.push(b':');
    push2(out, sod / 60 % 60);
    out.push(b':');
    push2(out, sod % 60);
    out.push(b'Z');
}

pub fn format_date(days: i32) -> String {
    let mut v = Vec::with_capacity(10);
    write_date(&mut v, days);
    String::from_utf8_lossy(&v).into_owned()
}

pub fn format_timestamp(ts: i64) -> String {
    let mut v = Vec::with_capacity(20);
    write_timestamp(&mut v, ts);
    String::from_utf8_lossy(&v).into_owned()
}

/// Easter Sunday (Gregorian) of a year, by the anonymous Gregorian computus.
pub fn easter(y: i32) -> i32 {
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    days_from_civil(y, month as u32, day as u32)
}

/// The major travel holidays of a year (day numbers): New Year, Easter Sunday, US
/// Independence Day, US Thanksgiving (fourth Thursday of November), Christmas Day,
/// and the end of the northern summer holidays (first Monday of September).
pub fn holidays(y: i32) -> [i32; 6] {
    let nov1 = days_from_civil(y, 11, 1);
    let first_thu = nov1 + ((3 + 7 - weekday(nov1) as i32) % 7);
    let sep1 = days_from_civil(y, 9, 1);
    let first_mon = sep1 + ((7 - weekday(sep1) as i32) % 7);
    [
        days_from_civil(y, 1, 1),
        easter(y),
        days_from_civil(y, 7, 4),
        first_thu + 21,
        days_from_civil(y, 12, 25),
        first_mon,
    ]
}

/// Days from `day` to the nearest major holiday (0 on the holiday itself).
pub fn days_to_nearest_holiday(day: i32) -> u32 {
    let (y, _, _) = civil_from_days(day);
    let mut best = u32::MAX;
    for yy in [y - 1, y, y + 1] {
        for h in holidays(yy) {
            best = best.min((h - day).unsigned_abs());
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_day_of_four_centuries() {
        for z in -146_097..146_097 * 2 {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(weekday(0), 3);
        assert_eq!(parse_date("2026-11-27").map(weekday), Some(4)); // a Friday
        assert_eq!(parse_date("2026-02-29"), None);
        assert_eq!(parse_date("2024-02-29").map(day_of_year), Some(60));
        assert_eq!(format_date(easter(2026)), "2026-04-05");
        assert_eq!(format_date(holidays(2026)[3]), "2026-11-26");
    }

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2026-03-01T08:15:23Z").unwrap_or_default();
        assert_eq!(format_timestamp(t), "2026-03-01T08:15:23Z");
        assert_eq!(parse_timestamp("2026-03-01T09:15:23.250+01:00"), Some(t));
        assert_eq!(parse_timestamp("2026-03-01T08:15:23"), None);
        assert_eq!(parse_timestamp("2026-13-01T08:15:23Z"), None);
        assert_eq!(parse_timestamp("2026-03-01T24:15:23Z"), None);
    }
}
