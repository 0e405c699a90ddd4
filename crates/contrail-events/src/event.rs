//! The flight-shopping event: one priced itinerary shown to a shopper.
//!
//! Raw events travel as JSON lines (one object per line, every field named below, no
//! others). [`parse_line`] turns one line into a valid [`Event`] or a [`Reject`] that
//! names the reason and the field, so the ETL can quarantine it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::calendar;
use crate::refdata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cabin {
    Economy,
    PremiumEconomy,
    Business,
    First,
}

impl Cabin {
    pub const ALL: [Cabin; 4] = [
        Cabin::Economy,
        Cabin::PremiumEconomy,
        Cabin::Business,
        Cabin::First,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Cabin::Economy => "economy",
            Cabin::PremiumEconomy => "premium_economy",
            Cabin::Business => "business",
            Cabin::First => "first",
        }
    }
    pub fn parse(s: &str) -> Option<Cabin> {
        Cabin::ALL.into_iter().find(|c| c.as_str() == s)
    }
    /// Typical seats in this cabin on one flight, the denominator of load ratios.
    pub fn typical_capacity(self) -> u32 {
        match self {
            Cabin::Economy => 180,
            Cabin::PremiumEconomy => 28,
            Cabin::Business => 36,
            Cabin::First => 8,
        }
    }
    /// The fare classes sold in this cabin, from the most expensive to the cheapest.
    pub fn fare_classes(self) -> &'static [u8] {
        match self {
            Cabin::Economy => b"YBMHKLQV",
            Cabin::PremiumEconomy => b"WEN",
            Cabin::Business => b"JCDI",
            Cabin::First => b"FA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Web,
    Mobile,
    Agency,
    Metasearch,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Web,
        Channel::Mobile,
        Channel::Agency,
        Channel::Metasearch,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Mobile => "mobile",
            Channel::Agency => "agency",
            Channel::Metasearch => "metasearch",
        }
    }
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A validated event. Codes are checked against the reference data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    /// Seconds since the epoch, UTC.
    pub search_ts: i64,
    pub origin: &'static str,
    pub destination: &'static str,
    /// Days since the epoch.
    pub departure_date: i32,
    pub return_date: Option<i32>,
    pub carrier: &'static str,
    pub cabin: Cabin,
    pub fare_class: u8,
    pub stops: u8,
    pub duration_min: u32,
    pub price: f64,
    pub currency: &'static str,
    pub competitor_price: Option<f64>,
    pub seats_remaining: u32,
    pub channel: Channel,
    pub point_of_sale: &'static str,
    pub passengers: u32,
    pub booked: bool,
}

/// Field names, in the order they are written.
pub const FIELDS: [&str; 19] = [
    "event_id",
    "search_ts",
    "origin",
    "destination",
    "departure_date",
    "return_date",
    "carrier",
    "cabin",
    "fare_class",
    "stops",
    "duration_min",
    "price",
    "currency",
    "competitor_price",
    "seats_remaining",
    "channel",
    "point_of_sale",
    "passengers",
    "booked",
];

/// Why a raw row was rejected. The string forms are the quarantine table's reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Not valid UTF-8 text.
    InvalidUtf8,
    /// Not a JSON object.
    MalformedJson,
    /// A field named twice in one object.
    DuplicateField,
    MissingField,
    WrongType,
    UnknownField,
    /// A price or competitor price that is zero, negative or not finite.
    NegativeFare,
    UnknownAirport,
    UnknownCarrier,
    /// A code (cabin, channel, currency, country, fare class) outside its vocabulary.
    UnknownCode,
    InvalidTimestamp,
    InvalidDate,
    ReturnBeforeDeparture,
    DepartureBeforeSearch,
    SameOriginDestination,
    /// A number outside its plausible range (stops, passengers, seats, duration).
    OutOfRange,
    /// The same event id seen before with different content.
    ConflictingDuplicate,
    /// The raw file could not be read to its end (truncated or corrupt gzip).
    CorruptFile,
    /// A line longer than the ETL accepts.
    LineTooLong,
}

impl RejectReason {
    pub const ALL: [RejectReason; 19] = [
        RejectReason::InvalidUtf8,
        RejectReason::MalformedJson,
        RejectReason::DuplicateField,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::UnknownField,
        RejectReason::NegativeFare,
        RejectReason::UnknownAirport,
        RejectReason::UnknownCarrier,
        RejectReason::UnknownCode,
        RejectReason::InvalidTimestamp,
        RejectReason::InvalidDate,
        RejectReason::ReturnBeforeDeparture,
        RejectReason::DepartureBeforeSearch,
        RejectReason::SameOriginDestination,
        RejectReason::OutOfRange,
        RejectReason::ConflictingDuplicate,
        RejectReason::CorruptFile,
        RejectReason::LineTooLong,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::MalformedJson => "malformed_json",
            RejectReason::DuplicateField => "duplicate_field",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::NegativeFare => "negative_fare",
            RejectReason::UnknownAirport => "unknown_airport",
            RejectReason::UnknownCarrier => "unknown_carrier",
            RejectReason::UnknownCode => "unknown_code",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::InvalidDate => "invalid_date",
            RejectReason::ReturnBeforeDeparture => "return_before_departure",
            RejectReason::DepartureBeforeSearch => "departure_before_search",
            RejectReason::SameOriginDestination => "same_origin_destination",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::ConflictingDuplicate => "conflicting_duplicate",
            RejectReason::CorruptFile => "corrupt_file",
            RejectReason::LineTooLong => "line_too_long",
        }
    }
    pub fn parse(s: &str) -> Option<RejectReason> {
        RejectReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected row: the reason code and a human-readable detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Reject {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

/// One JSON scalar as read, before typing.
#[derive(Debug)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An array or object, which no field takes.
    Nested,
}

impl Scalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) | Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Nested => "an array or object",
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v)
                    .map(Scalar::Int)
                    .unwrap_or(Scalar::Float(v as f64)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Nested)
            }
        }
        d.deserialize_any(V)
    }
}

/// The fields of one object, by position in [`FIELDS`], plus the first problem met
/// while reading keys (unknown or repeated).
struct RawObject<'a> {
    values: [Option<Scalar<'a>>; 19],
    problem: Option<Reject>,
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut obj = RawObject {
                    values: Default::default(),
                    problem: None,
                };
                // Writers almost always emit the fields in FIELDS order: try the next
                // expected name first, then search.
                let mut next = 0usize;
                while let Some(key) = a.next_key::<Cow<'de, str>>()? {
                    let found = if FIELDS.get(next).is_some_and(|f| *f == key) {
                        Some(next)
                    } else {
                        FIELDS.iter().position(|f| *f == key)
                    };
                    next = found.map_or(next, |i| i + 1);
                    match found {
                        Some(i) => {
                            let v = a.next_value::<Scalar<'de>>()?;
                            if obj.values[i].is_some() {
                                obj.problem.get_or_insert_with(|| {
                                    Reject::new(
                                        RejectReason::DuplicateField,
                                        format!("field `{key}` appears twice"),
                                    )
                                });
                            }
                            obj.values[i] = Some(v);
                        }
                        None => {
                            a.next_value::<IgnoredAny>()?;
                            obj.problem.get_or_insert_with(|| {
                                Reject::new(
                                    RejectReason::UnknownField,
                                    format!("unknown field `{key}`"),
                                )
                            });
                        }
                    }
                }
                Ok(obj)
            }
        }
        d.deserialize_map(V)
    }
}

struct Fields<'a> {
    values: [Option<Scalar<'a>>; 19],
}

impl<'a> Fields<'a> {
    fn take(&mut self, i: usize) -> Result<Scalar<'a>, Reject> {
        match self.values[i].take() {
            Some(v) => Ok(v),
            None => Err(Reject::new(
                RejectReason::MissingField,
                format!("missing field `{}`", FIELDS[i]),
            )),
        }
    }
    fn wrong(i: usize, expected: &str, got: &Scalar<'_>) -> Reject {
        Reject::new(
            RejectReason::WrongType,
            format!(
                "field `{}` must be {expected}, got {}",
                FIELDS[i],
                got.kind()
            ),
        )
    }
    fn string(&mut self, i: usize) -> Result<Cow<'a, str>, Reject> {
        match self.take(i)? {
            Scalar::Str(s) => Ok(s),
            other => Err(Self::wrong(i, "a string", &other)),
        }
    }
    fn opt_string(&mut self, i: usize) -> Result<Option<Cow<'a, str>>, Reject> {
        match self.values[i].take() {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s)),
            Some(other) => Err(Self::wrong(i, "a string or null", &other)),
        }
    }
    fn number(&mut self, i: usize) -> Result<f64, Reject> {
        match self.take(i)? {
            Scalar::Int(v) => Ok(v as f64),
            Scalar::Float(v) => Ok(v),
            other => Err(Self::wrong(i, "a number", &other)),
        }
    }
    fn opt_number(&mut self, i: usize) -> Result<Option<f64>, Reject> {
        match self.values[i].take() {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Int(v)) => Ok(Some(v as f64)),
            Some(Scalar::Float(v)) => Ok(Some(v)),
            Some(other) => Err(Self::wrong(i, "a number or null", &other)),
        }
    }
    fn integer(&mut self, i: usize, lo: i64, hi: i64) -> Result<i64, Reject> {
        match self.take(i)? {
            Scalar::Int(v) if (lo..=hi).contains(&v) => Ok(v),
            Scalar::Int(v) => Err(Reject::new(
                RejectReason::OutOfRange,
                format!("field `{}` = {v} is outside {lo}..={hi}", FIELDS[i]),
            )),
            other => Err(Self::wrong(i, "an integer", &other)),
        }
    }
    fn boolean(&mut self, i: usize) -> Result<bool, Reject> {
        match self.take(i)? {
            Scalar::Bool(v) => Ok(v),
            other => Err(Self::wrong(i, "a boolean", &other)),
        }
    }
}

fn code<T>(field: &str, value: &str, reason: RejectReason, found: Option<T>) -> Result<T, Reject> {
    found.ok_or_else(|| {
        Reject::new(
            reason,
            format!("field `{field}` has unknown code {value:?}"),
        )
    })
}

fn fare(field: &str, v: f64) -> Result<f64, Reject> {
    if v.is_finite() && v > 0.0 && v < 1.0e7 {
        Ok(v)
    } else {
        Err(Reject::new(
            RejectReason::NegativeFare,
            format!("field `{field}` = {v} is not a positive fare"),
        ))
    }
}

fn intern(list: &'static [&'static str], s: &str) -> Option<&'static str> {
    list.iter().copied().find(|c| *c == s)
}

/// The longest event id accepted.
pub const MAX_EVENT_ID_LEN: usize = 64;

/// Parses and validates one JSON line. Checks run in a fixed order, so a row with
/// several problems always gets the same reason: JSON syntax, unknown/duplicate keys,
/// then each field in [`FIELDS`] order (missing, type, range, code), then the
/// cross-field rules (dates in order, origin ≠ destination).
pub fn parse_line(line: &str) -> Result<Event, Reject> {
    let raw: RawObject<'_> = serde_json::from_str(line).map_err(|e| {
        Reject::new(
            RejectReason::MalformedJson,
            format!("not a JSON object: {e}"),
        )
    })?;
    if let Some(p) = raw.problem {
        return Err(p);
    }
    let mut f = Fields { values: raw.values };

    let event_id = f.string(0)?;
    if event_id.is_empty() || event_id.len() > MAX_EVENT_ID_LEN {
        return Err(Reject::new(
            RejectReason::OutOfRange,
            format!("field `event_id` must have 1..={MAX_EVENT_ID_LEN} characters"),
        ));
    }
    let ts = f.string(1)?;
    let search_ts = calendar::parse_timestamp(&ts).ok_or_else(|| {
        Reject::new(
            RejectReason::InvalidTimestamp,
            format!("field `search_ts` = {ts:?} is not an RFC 3339 instant"),
        )
    })?;
    let o = f.string(2)?;
    let origin = code(
        "origin",
        &o,
        RejectReason::UnknownAirport,
        refdata::airport(&o).map(|a| a.code),
    )?;
    let d = f.string(3)?;
    let destination = code(
        "destination",
        &d,
        RejectReason::UnknownAirport,
        refdata::airport(&d).map(|a| a.code),
    )?;
    let dd = f.string(4)?;
    let departure_date = calendar::parse_date(&dd).ok_or_else(|| {
        Reject::new(
            RejectReason::InvalidDate,
            format!("field `departure_date` = {dd:?} is not a YYYY-MM-DD date"),
        )
    })?;
    let return_date = match f.opt_string(5)? {
        None => None,
        Some(rd) => Some(calendar::parse_date(&rd).ok_or_else(|| {
            Reject::new(
                RejectReason::InvalidDate,
                format!("field `return_date` = {rd:?} is not a YYYY-MM-DD date"),
            )
        })?),
    };
    let c = f.string(6)?;
    let carrier = code(
        "carrier",
        &c,
        RejectReason::UnknownCarrier,
        refdata::carrier_index(&c).map(|i| refdata::CARRIERS[i].code),
    )?;
    let cb = f.string(7)?;
    let cabin = code("cabin", &cb, RejectReason::UnknownCode, Cabin::parse(&cb))?;
    let fc = f.string(8)?;
    let fare_class = match fc.as_bytes() {
        [b] if cabin.fare_classes().contains(b) => *b,
        _ => {
            return Err(Reject::new(
                RejectReason::UnknownCode,
                format!(
                    "field `fare_class` = {fc:?} is not a fare class of cabin {}",
                    cabin.as_str()
                ),
            ))
        }
    };
    let stops = f.integer(9, 0, 3)? as u8;
    let duration_min = f.integer(10, 20, 4000)? as u32;
    let price = fare("price", f.number(11)?)?;
    let cur = f.string(12)?;
    let currency = code(
        "currency",
        &cur,
        RejectReason::UnknownCode,
        intern(refdata::CURRENCIES, &cur),
    )?;
    let competitor_price = match f.opt_number(13)? {
        None => None,
        Some(v) => Some(fare("competitor_price", v)?),
    };
    let seats_remaining = f.integer(14, 0, 1000)? as u32;
    let ch = f.string(15)?;
    let channel = code(
        "channel",
        &ch,
        RejectReason::UnknownCode,
        Channel::parse(&ch),
    )?;
    let pos = f.string(16)?;
    let point_of_sale = code(
        "point_of_sale",
        &pos,
        RejectReason::UnknownCode,
        refdata::country(&pos),
    )?;
    let passengers = f.integer(17, 1, 9)? as u32;
    let booked = f.boolean(18)?;

    let search_day = search_ts.div_euclid(86_400) as i32;
    if departure_date < search_day {
        return Err(Reject::new(
            RejectReason::DepartureBeforeSearch,
            format!(
                "departure_date {dd} is before the search on {}",
                calendar::format_date(search_day)
            ),
        ));
    }
    if departure_date - search_day > 400 {
        return Err(Reject::new(
            RejectReason::OutOfRange,
            format!("departure_date {dd} is over 400 days after the search"),
        ));
    }
    if let Some(r) = return_date {
        if r < departure_date {
            return Err(Reject::new(
                RejectReason::ReturnBeforeDeparture,
                format!(
                    "return_date {} is before departure_date {dd}",
                    calendar::format_date(r)
                ),
            ));
        }
    }
    if origin == destination {
        return Err(Reject::new(
            RejectReason::SameOriginDestination,
            format!("origin and destination are both {origin}"),
        ));
    }
    Ok(Event {
        event_id: event_id.into_owned(),
        search_ts,
        origin,
        destination,
        departure_date,
        return_date,
        carrier,
        cabin,
        fare_class,
        stops,
        duration_min,
        price,
        currency,
        competitor_price,
        seats_remaining,
        channel,
        point_of_sale,
        passengers,
        booked,
    })
}

/// Appends a price with two decimals (prices are kept to the cent).
pub fn write_money(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    let cents = (v * 100.0).round() as i64;
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:02}", c / 100, c % 100);
}

fn write_str_field(out: &mut Vec<u8>, name: &str, v: &str) {
    out.extend_from_slice(b"\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    // Event strings are codes and ids of [A-Za-z0-9_-]; anything else is escaped.
    if v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        out.extend_from_slice(v.as_bytes());
    } else {
        let s = serde_json::to_string(v).unwrap_or_default();
        out.extend_from_slice(&s.as_bytes()[1..s.len().saturating_sub(1)]);
    }
    out.push(b'"');
}

impl Event {
    /// Appends this event as one JSON line (with the trailing newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        out.push(b'{');
        write_str_field(out, "event_id", &self.event_id);
        out.extend_from_slice(b",\"search_ts\":\"");
        calendar::write_timestamp(out, self.search_ts);
        out.extend_from_slice(b"\",");
        write_str_field(out, "origin", self.origin);
        out.push(b',');
        write_str_field(out, "destination", self.destination);
        out.extend_from_slice(b",\"departure_date\":\"");
        calendar::write_date(out, self.departure_date);
        out.extend_from_slice(b"\",\"return_date\":");
        match self.return_date {
            Some(r) => {
                out.push(b'"');
                calendar::write_date(out, r);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.push(b',');
        write_str_field(out, "carrier", self.carrier);
        out.push(b',');
        write_str_field(out, "cabin", self.cabin.as_str());
        out.extend_from_slice(b",\"fare_class\":\"");
        out.push(self.fare_class);
        let _ = write!(
            out,
            "\",\"stops\":{},\"duration_min\":{},\"price\":",
            self.stops, self.duration_min
        );
        write_money(out, self.price);
        out.push(b',');
        write_str_field(out, "currency", self.currency);
        out.extend_from_slice(b",\"competitor_price\":");
        match self.competitor_price {
            Some(p) => write_money(out, p),
            None => out.extend_from_slice(b"null"),
        }
        let _ = write!(out, ",\"seats_remaining\":{},", self.seats_remaining);
        write_str_field(out, "channel", self.channel.as_str());
        out.push(b',');
        write_str_field(out, "point_of_sale", self.point_of_sale);
        let _ = writeln!(
            out,
            ",\"passengers\":{},\"booked\":{}}}",
            self.passengers, self.booked
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event_id: "e00000000000abcd".into(),
            search_ts: calendar::parse_timestamp("2026-03-01T08:15:23Z").unwrap_or_default(),
            origin: "JFK",
            destination: "LHR",
            departure_date: calendar::parse_date("2026-04-10").unwrap_or_default(),
            return_date: calendar::parse_date("2026-04-17"),
            carrier: "BA",
            cabin: Cabin::Economy,
            fare_class: b'K',
            stops: 0,
            duration_min: 420,
            price: 512.3,
            currency: "USD",
            competitor_price: Some(498.0),
            seats_remaining: 23,
            channel: Channel::Web,
            point_of_sale: "US",
            passengers: 1,
            booked: true,
        }
    }

    fn line(e: &Event) -> String {
        let mut v = Vec::new();
        e.write_json(&mut v);
        String::from_utf8(v).unwrap_or_default()
    }

    #[test]
    fn write_then_parse_round_trips() {
        let e = sample();
        let l = line(&e);
        assert!(l.ends_with('\n'));
        assert_eq!(parse_line(l.trim_end()), Ok(e.clone()));
        let mut one_way = e;
        one_way.return_date = None;
        one_way.competitor_price = None;
        assert_eq!(parse_line(&line(&one_way)), Ok(one_way));
    }

    fn reason_of(edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>)) -> RejectReason {
        let mut v: serde_json::Value = serde_json::from_str(&line(&sample())).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            edit(m);
        }
        match parse_line(&v.to_string()) {
            Ok(_) => panic!("accepted"),
            Err(r) => r.reason,
        }
    }

    #[test]
    fn each_problem_has_its_reason() {
        use serde_json::json;
        assert_eq!(
            parse_line("{\"event_id\":").map_err(|r| r.reason),
            Err(RejectReason::MalformedJson)
        );
        assert_eq!(
            parse_line("[1,2]").map_err(|r| r.reason),
            Err(RejectReason::MalformedJson)
        );
        assert_eq!(
            reason_of(|m| drop(m.remove("price"))),
            RejectReason::MissingField
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("price".into(), json!("abc")))),
            RejectReason::WrongType
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("bogus".into(), json!(1)))),
            RejectReason::UnknownField
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("price".into(), json!(-5.0)))),
            RejectReason::NegativeFare
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("origin".into(), json!("XXX")))),
            RejectReason::UnknownAirport
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("carrier".into(), json!("ZZ")))),
            RejectReason::UnknownCarrier
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("return_date".into(), json!("2026-04-01")))),
            RejectReason::ReturnBeforeDeparture
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("departure_date".into(), json!("2026-02-01")))),
            RejectReason::DepartureBeforeSearch
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("stops".into(), json!(9)))),
            RejectReason::OutOfRange
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("stops".into(), json!(1.5)))),
            RejectReason::WrongType
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("search_ts".into(), json!("yesterday")))),
            RejectReason::InvalidTimestamp
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("destination".into(), json!("JFK")))),
            RejectReason::SameOriginDestination
        );
        assert_eq!(
            reason_of(|m| drop(m.insert("fare_class".into(), json!("F")))),
            RejectReason::UnknownCode
        );
        let dup = line(&sample()).replacen("{", "{\"stops\":1,", 1);
        assert_eq!(
            parse_line(&dup).map_err(|r| r.reason),
            Err(RejectReason::DuplicateField)
        );
    }
}
