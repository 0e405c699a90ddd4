//! The curated table: the Arrow schema of validated events, the builder from
//! [`Event`]s, and a checked view over a batch read back from Parquet.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int32Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::event::Event;

/// A column missing from a batch, or of another type than the curated schema says.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("column `{column}` is missing")]
    MissingColumn { column: &'static str },
    #[error("column `{column}` has type {found}, expected {expected}")]
    WrongType {
        column: &'static str,
        found: DataType,
        expected: DataType,
    },
    #[error("building the curated batch")]
    Arrow(#[source] ArrowError),
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The curated `flight_searches` schema. Column order is fixed; readers match by name.
pub fn curated_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("search_ts", ts_type(), false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("destination", DataType::Utf8, false),
        Field::new("departure_date", DataType::Date32, false),
        Field::new("return_date", DataType::Date32, true),
        Field::new("carrier", DataType::Utf8, false),
        Field::new("cabin", DataType::Utf8, false),
        Field::new("fare_class", DataType::Utf8, false),
        Field::new("stops", DataType::Int32, false),
        Field::new("duration_min", DataType::Int32, false),
        Field::new("price", DataType::Float64, false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("competitor_price", DataType::Float64, true),
        Field::new("seats_remaining", DataType::Int32, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("point_of_sale", DataType::Utf8, false),
        Field::new("passengers", DataType::Int32, false),
        Field::new("booked", DataType::Boolean, false),
    ]))
}

/// Builds one curated batch from validated events, in the order given.
pub fn events_to_batch(events: &[Event]) -> Result<RecordBatch, SchemaError> {
    let n = events.len();
    let mut id = StringBuilder::with_capacity(n, n * 17);
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut origin = StringBuilder::with_capacity(n, n * 3);
    let mut dest = StringBuilder::with_capacity(n, n * 3);
    let mut dep = Date32Builder::with_capacity(n);
    let mut ret = Date32Builder::with_capacity(n);
    let mut carrier = StringBuilder::with_capacity(n, n * 2);
    let mut cabin = StringBuilder::with_capacity(n, n * 8);
    let mut fare_class = StringBuilder::with_capacity(n, n);
    let mut stops = Int32Builder::with_capacity(n);
    let mut duration = Int32Builder::with_capacity(n);
    let mut price = Float64Builder::with_capacity(n);
    let mut currency = StringBuilder::with_capacity(n, n * 3);
    let mut comp = Float64Builder::with_capacity(n);
    let mut seats = Int32Builder::with_capacity(n);
    let mut channel = StringBuilder::with_capacity(n, n * 4);
    let mut pos = StringBuilder::with_capacity(n, n * 2);
    let mut pax = Int32Builder::with_capacity(n);
    let mut booked = BooleanBuilder::with_capacity(n);
    for e in events {
        id.append_value(&e.event_id);
        ts.append_value(e.search_ts * 1000);
        origin.append_value(e.origin);
        dest.append_value(e.destination);
        dep.append_value(e.departure_date);
        ret.append_option(e.return_date);
        carrier.append_value(e.carrier);
        cabin.append_value(e.cabin.as_str());
        let fc = [e.fare_class];
        fare_class.append_value(std::str::from_utf8(&fc).unwrap_or("?"));
        stops.append_value(e.stops as i32);
        duration.append_value(e.duration_min as i32);
        price.append_value(e.price);
        currency.append_value(e.currency);
        comp.append_option(e.competitor_price);
        seats.append_value(e.seats_remaining as i32);
        channel.append_value(e.channel.as_str());
        pos.append_value(e.point_of_sale);
        pax.append_value(e.passengers as i32);
        booked.append_value(e.booked);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(ts.finish()),
        Arc::new(origin.finish()),
        Arc::new(dest.finish()),
        Arc::new(dep.finish()),
        Arc::new(ret.finish()),
        Arc::new(carrier.finish()),
        Arc::new(cabin.finish()),
        Arc::new(fare_class.finish()),
        Arc::new(stops.finish()),
        Arc::new(duration.finish()),
        Arc::new(price.finish()),
        Arc::new(currency.finish()),
        Arc::new(comp.finish()),
        Arc::new(seats.finish()),
        Arc::new(channel.finish()),
        Arc::new(pos.finish()),
        Arc::new(pax.finish()),
        Arc::new(booked.finish()),
    ];
    RecordBatch::try_new(curated_schema(), cols).map_err(SchemaError::Arrow)
}

fn col<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &'static str,
    expected: DataType,
) -> Result<&'a T, SchemaError> {
    let c = batch
        .column_by_name(name)
        .ok_or(SchemaError::MissingColumn { column: name })?;
    c.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| SchemaError::WrongType {
            column: name,
            found: c.data_type().clone(),
            expected,
        })
}

/// Typed access to the columns of a curated batch, checked once.
pub struct CuratedView<'a> {
    pub event_id: &'a StringArray,
    pub search_ts_ms: &'a TimestampMillisecondArray,
    pub origin: &'a StringArray,
    pub destination: &'a StringArray,
    pub departure_date: &'a Date32Array,
    pub return_date: &'a Date32Array,
    pub carrier: &'a StringArray,
    pub cabin: &'a StringArray,
    pub fare_class: &'a StringArray,
    pub stops: &'a Int32Array,
    pub duration_min: &'a Int32Array,
    pub price: &'a Float64Array,
    pub competitor_price: &'a Float64Array,
    pub seats_remaining: &'a Int32Array,
    pub channel: &'a StringArray,
    pub point_of_sale: &'a StringArray,
    pub passengers: &'a Int32Array,
    pub booked: &'a BooleanArray,
}

impl<'a> CuratedView<'a> {
    pub fn new(b: &'a RecordBatch) -> Result<Self, SchemaError> {
        Ok(CuratedView {
            event_id: col(b, "event_id", DataType::Utf8)?,
            search_ts_ms: col(b, "search_ts", ts_type())?,
            origin: col(b, "origin", DataType::Utf8)?,
            destination: col(b, "destination", DataType::Utf8)?,
            departure_date: col(b, "departure_date", DataType::Date32)?,
            return_date: col(b, "return_date", DataType::Date32)?,
            carrier: col(b, "carrier", DataType::Utf8)?,
            cabin: col(b, "cabin", DataType::Utf8)?,
            fare_class: col(b, "fare_class", DataType::Utf8)?,
            stops: col(b, "stops", DataType::Int32)?,
            duration_min: col(b, "duration_min", DataType::Int32)?,
            price: col(b, "price", DataType::Float64)?,
            competitor_price: col(b, "competitor_price", DataType::Float64)?,
            seats_remaining: col(b, "seats_remaining", DataType::Int32)?,
            channel: col(b, "channel", DataType::Utf8)?,
            point_of_sale: col(b, "point_of_sale", DataType::Utf8)?,
            passengers: col(b, "passengers", DataType::Int32)?,
            booked: col(b, "booked", DataType::Boolean)?,
        })
    }
    pub fn len(&self) -> usize {
        self.event_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
