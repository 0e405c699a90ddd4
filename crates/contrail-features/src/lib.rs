//! Feature engineering: the one function from curated events to model features.
//!
//! Training and scoring both call [`FeatureBuilder::compute`], so a model never sees a
//! feature computed two ways. Rolling route statistics depend on the events before each
//! row, so a builder is fed batches in time order and carries that history between them
//! ([`FeatureBuilder`] is the state); a row's own price never enters its own statistics.
//! [`FEATURES`] lists every feature with its type and definition; docs/features.md is
//! the same list for readers (a test keeps them in step).

pub mod drift;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use contrail_events::calendar;
use contrail_events::refdata;
use contrail_events::schema::{CuratedView, SchemaError};
use contrail_events::Cabin;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("input batch does not have the curated schema")]
    Schema(#[from] SchemaError),
    #[error("building the feature batch")]
    Arrow(#[source] ArrowError),
    #[error("row {row}: unknown {field} code {value:?} (not in the reference data)")]
    UnknownCode {
        row: usize,
        field: &'static str,
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Float64; null where the feature does not apply or has no history yet.
    Numeric,
    /// Utf8 category.
    Categorical,
}

pub struct FeatureDef {
    pub name: &'static str,
    pub kind: Kind,
    /// True if the feature is computed from this row's own `price`; such features are
    /// left out of models that predict the price.
    pub uses_price: bool,
    pub definition: &'static str,
}

const fn num(name: &'static str, definition: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        kind: Kind::Numeric,
        uses_price: false,
        definition,
    }
}
const fn cat(name: &'static str, definition: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        kind: Kind::Categorical,
        uses_price: false,
        definition,
    }
}
const fn priced(name: &'static str, definition: &'static str) -> FeatureDef {
    FeatureDef {
        name,
        kind: Kind::Numeric,
        uses_price: true,
        definition,
    }
}

/// Time constants of the rolling statistics.
pub const DAY_SECS: f64 = 86_400.0;
pub const WEEK_SECS: f64 = 7.0 * 86_400.0;

pub static FEATURES: &[FeatureDef] = &[
    num("lead_time_days", "departure date - search date in whole days (0 = departs the day of the search)"),
    num("search_hour", "hour of the search, 0-23 UTC"),
    num("search_dow", "weekday of the search, Monday = 0"),
    num("search_month", "month of the search, 1-12"),
    num("departure_dow", "weekday of departure, Monday = 0"),
    num("departure_month", "month of departure, 1-12"),
    num("departure_day_of_year", "day of the year of departure, 1-366"),
    num("is_round_trip", "1 if a return date is given, else 0"),
    num("stay_length_days", "return date - departure date in days; null for one-way trips"),
    num("saturday_night_stay", "1 if the stay includes a Saturday night, 0 if not; null for one-way trips"),
    num("distance_km", "great-circle distance between origin and destination (haversine, R = 6371.0088 km)"),
    cat("route", "origin-destination, e.g. JFK-LHR (directional)"),
    cat("origin", "origin airport IATA code"),
    cat("destination", "destination airport IATA code"),
    cat("carrier", "carrier IATA code"),
    cat("cabin", "economy, premium_economy, business or first"),
    num("cabin_rank", "cabin as an ordinal: economy 0, premium_economy 1, business 2, first 3"),
    cat("fare_class", "booking class letter"),
    num("stops", "number of stops"),
    num("duration_min", "total itinerary duration in minutes"),
    num("detour_ratio", "duration_min / (distance_km / 820 km/h in minutes + 35): 1 for a direct flight, more with stops"),
    num("is_domestic", "1 if origin and destination are in the same country"),
    num("pos_is_origin_country", "1 if the point of sale is the origin's country"),
    num("seats_remaining", "seats left in the cabin at search time"),
    num("seats_remaining_ratio", "seats_remaining / the cabin's typical capacity (economy 180, premium 28, business 36, first 8)"),
    num("passengers", "number of passengers"),
    cat("channel", "web, mobile, agency or metasearch"),
    cat("point_of_sale", "country of sale, ISO 3166 alpha-2"),
    num("days_to_holiday", "days from departure to the nearest major holiday (New Year, Easter, 4 July, US Thanksgiving, Christmas, first Monday of September)"),
    num("competitor_price", "lowest competitor price for the same search; null if none"),
    num("log_competitor_price", "ln(competitor_price); null if none"),
    num("route_cabin_price_mean_24h", "time-decayed mean price (tau = 24 h) of earlier searches on the same route and cabin; null before the first"),
    num("route_cabin_price_mean_7d", "time-decayed mean price (tau = 7 days) of earlier searches on the same route and cabin"),
    num("route_cabin_price_std_7d", "time-decayed standard deviation (tau = 7 days) of those prices; null before the second"),
    num("route_search_rate_24h", "time-decayed count of earlier searches on the route (all cabins, tau = 24 h): searches per day"),
    priced("price_per_km", "price / distance_km"),
    priced("competitor_price_ratio", "price / competitor_price; null if no competitor price"),
    priced("price_vs_route_mean", "price / route_cabin_price_mean_7d; null before the first earlier search"),
];

pub fn feature_schema() -> SchemaRef {
    Arc::new(Schema::new(
        FEATURES
            .iter()
            .map(|f| match f.kind {
                Kind::Numeric => Field::new(f.name, DataType::Float64, true),
                Kind::Categorical => Field::new(f.name, DataType::Utf8, false),
            })
            .collect::<Vec<_>>(),
    ))
}

/// Names of the features a price model may use (those not computed from the price).
pub fn price_free_features() -> Vec<&'static str> {
    FEATURES
        .iter()
        .filter(|f| !f.uses_price)
        .map(|f| f.name)
        .collect()
}

/// Exponentially time-decayed sums.
#[derive(Debug, Clone, Copy, Default)]
struct Decayed {
    last_ts: i64,
    w: f64,
    sum: f64,
    sum2: f64,
}

impl Decayed {
    fn decay_to(&mut self, ts: i64, tau: f64) {
        let dt = (ts - self.last_ts).max(0) as f64;
        if self.w > 0.0 && dt > 0.0 {
            let f = (-dt / tau).exp();
            self.w *= f;
            self.sum *= f;
            self.sum2 *= f;
        }
        self.last_ts = ts.max(self.last_ts);
    }
    fn add(&mut self, x: f64) {
        self.w += 1.0;
        self.sum += x;
        self.sum2 += x * x;
    }
    fn mean(&self) -> Option<f64> {
        (self.w > 1e-9).then(|| self.sum / self.w)
    }
    fn std(&self) -> Option<f64> {
        (self.w > 1.0 + 1e-9).then(|| {
            let m = self.sum / self.w;
            (self.sum2 / self.w - m * m).max(0.0).sqrt()
        })
    }
}

#[derive(Debug, Clone, Default)]
struct RouteCabin {
    day: Decayed,
    week: Decayed,
}

/// The feature function with its history. Feed batches in time order.
#[derive(Debug, Clone, Default)]
pub struct FeatureBuilder {
    by_route_cabin: HashMap<(u16, u16, u8), RouteCabin>,
    by_route: HashMap<(u16, u16), Decayed>,
}

fn cabin_of(s: &str) -> Option<Cabin> {
    Cabin::parse(s)
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

impl FeatureBuilder {
    pub fn new() -> FeatureBuilder {
        FeatureBuilder::default()
    }

    /// Computes the features of a curated batch (rows in time order) and advances the
    /// rolling history past it.
    pub fn compute(&mut self, batch: &RecordBatch) -> Result<RecordBatch, FeatureError> {
        let v = CuratedView::new(batch)?;
        let n = v.len();
        let mut num: Vec<Float64Builder> = Vec::new();
        let mut cats: Vec<StringBuilder> = Vec::new();
        for f in FEATURES {
            match f.kind {
                Kind::Numeric => num.push(Float64Builder::with_capacity(n)),
                Kind::Categorical => cats.push(StringBuilder::with_capacity(n, n * 4)),
            }
        }
        let mut nvals: Vec<Option<f64>> = Vec::with_capacity(32);
        let mut cvals: Vec<String> = Vec::with_capacity(8);
        for i in 0..n {
            let unknown = |field: &'static str, value: &str| FeatureError::UnknownCode {
                row: i,
                field,
                value: value.to_string(),
            };
            let ts = v.search_ts_ms.value(i).div_euclid(1000);
            let day = ts.div_euclid(86_400) as i32;
            let dep = v.departure_date.value(i);
            let ret = (!v.return_date.is_null(i)).then(|| v.return_date.value(i));
            let (o_code, d_code) = (v.origin.value(i), v.destination.value(i));
            let oi = refdata::airport_index(o_code).ok_or_else(|| unknown("origin", o_code))?;
            let di =
                refdata::airport_index(d_code).ok_or_else(|| unknown("destination", d_code))?;
            let (o, d) = (&refdata::AIRPORTS[oi], &refdata::AIRPORTS[di]);
            let cabin_s = v.cabin.value(i);
            let cabin = cabin_of(cabin_s).ok_or_else(|| unknown("cabin", cabin_s))?;
            let dist = refdata::great_circle_km(o, d);
            let price = v.price.value(i);
            let comp = (!v.competitor_price.is_null(i)).then(|| v.competitor_price.value(i));
            let duration = v.duration_min.value(i) as f64;
            let seats = v.seats_remaining.value(i) as f64;
            let (_, s_month, _) = calendar::civil_from_days(day);
            let (_, d_month, _) = calendar::civil_from_days(dep);
            let stay = ret.map(|r| (r - dep) as f64);
            // A Saturday night is spent away if some Saturday d satisfies dep <= d < ret.
            let sat_night = ret.map(|r| {
                let to_sat = (5 + 7 - calendar::weekday(dep) as i32) % 7;
                b(dep + to_sat < r)
            });

            // Rolling statistics: read before this row is added.
            let rc = self
                .by_route_cabin
                .entry((oi as u16, di as u16, cabin as u8))
                .or_default();
            rc.day.decay_to(ts, DAY_SECS);
            rc.week.decay_to(ts, WEEK_SECS);
            let (mean24, mean7, std7) = (rc.day.mean(), rc.week.mean(), rc.week.std());
            rc.day.add(price);
            rc.week.add(price);
            let rt = self.by_route.entry((oi as u16, di as u16)).or_default();
            rt.decay_to(ts, DAY_SECS);
            let rate = rt.w;
            rt.add(1.0);

            nvals.clear();
            nvals.extend([
                Some((dep - day) as f64),
                Some(ts.rem_euclid(86_400) as f64 / 3600.0).map(f64::floor),
                Some(calendar::weekday(day) as f64),
                Some(s_month as f64),
                Some(calendar::weekday(dep) as f64),
                Some(d_month as f64),
                Some(calendar::day_of_year(dep) as f64),
                Some(b(ret.is_some())),
                stay,
                sat_night,
                Some(dist),
                Some(cabin as u8 as f64),
                Some(v.stops.value(i) as f64),
                Some(duration),
                Some(duration / (dist / 820.0 * 60.0 + 35.0)),
                Some(b(o.country == d.country)),
                Some(b(v.point_of_sale.value(i) == o.country)),
                Some(seats),
                Some(seats / cabin.typical_capacity() as f64),
                Some(v.passengers.value(i) as f64),
                Some(calendar::days_to_nearest_holiday(dep) as f64),
                comp,
                comp.map(f64::ln),
                mean24,
                mean7,
                std7,
                Some(rate),
                Some(price / dist.max(1.0)),
                comp.map(|c| price / c),
                mean7.map(|m| price / m),
            ]);
            cvals.clear();
            cvals.push(format!("{o_code}-{d_code}"));
            cvals.push(o_code.to_string());
            cvals.push(d_code.to_string());
            cvals.push(v.carrier.value(i).to_string());
            cvals.push(cabin_s.to_string());
            cvals.push(v.fare_class.value(i).to_string());
            cvals.push(v.channel.value(i).to_string());
            cvals.push(v.point_of_sale.value(i).to_string());
            for (bld, val) in num.iter_mut().zip(&nvals) {
                bld.append_option(*val);
            }
            for (bld, val) in cats.iter_mut().zip(&cvals) {
                bld.append_value(val);
            }
        }
        let mut num = num.into_iter();
        let mut cats = cats.into_iter();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(FEATURES.len());
        for f in FEATURES {
            let col: Option<ArrayRef> = match f.kind {
                Kind::Numeric => num.next().map(|mut b| Arc::new(b.finish()) as ArrayRef),
                Kind::Categorical => cats.next().map(|mut b| Arc::new(b.finish()) as ArrayRef),
            };
            cols.extend(col);
        }
        RecordBatch::try_new(feature_schema(), cols).map_err(FeatureError::Arrow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_order_matches_the_table() {
        // The numeric values are pushed in FEATURES order; check the counts agree.
        let numeric = FEATURES.iter().filter(|f| f.kind == Kind::Numeric).count();
        let categorical = FEATURES
            .iter()
            .filter(|f| f.kind == Kind::Categorical)
            .count();
        assert_eq!(numeric, 30);
        assert_eq!(categorical, 8);
        assert!(FEATURES.len() >= 25);
    }
}
