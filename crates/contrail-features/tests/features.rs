use contrail_events::calendar::{parse_date, parse_timestamp};
use contrail_events::schema::events_to_batch;
use contrail_events::{Cabin, Channel, Event};
use contrail_features::{feature_schema, price_free_features, FeatureBuilder, Kind, FEATURES};

use arrow_array::{Array, Float64Array, RecordBatch, StringArray};

fn ev(id: &str, ts: &str, price: f64, ret: Option<&str>) -> Event {
    Event {
        event_id: id.into(),
        search_ts: parse_timestamp(ts).expect("ts"),
        origin: "JFK",
        destination: "LHR",
        departure_date: parse_date("2026-04-10").expect("date"), // a Friday
        return_date: ret.map(|r| parse_date(r).expect("date")),
        carrier: "BA",
        cabin: Cabin::Economy,
        fare_class: b'K',
        stops: 0,
        duration_min: 420,
        price,
        currency: "USD",
        competitor_price: Some(400.0),
        seats_remaining: 90,
        channel: Channel::Web,
        point_of_sale: "US",
        passengers: 1,
        booked: false,
    }
}

fn num(b: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let c = b
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
        .expect(name);
    c.iter().collect()
}

#[test]
fn values_follow_their_definitions() {
    let events = vec![
        ev("a", "2026-04-01T10:30:00Z", 500.0, Some("2026-04-13")), // Fri -> Mon: Saturday night
        ev("b", "2026-04-01T11:30:00Z", 700.0, Some("2026-04-11")), // Fri -> Sat: no Saturday night
        ev("c", "2026-04-02T10:30:00Z", 600.0, None),
    ];
    let batch = events_to_batch(&events).expect("batch");
    let mut fb = FeatureBuilder::new();
    let f = fb.compute(&batch).expect("features");
    assert_eq!(f.schema(), feature_schema());
    assert_eq!(f.num_rows(), 3);
    assert_eq!(
        num(&f, "lead_time_days"),
        vec![Some(9.0), Some(9.0), Some(8.0)]
    );
    assert_eq!(
        num(&f, "search_hour"),
        vec![Some(10.0), Some(11.0), Some(10.0)]
    );
    assert_eq!(num(&f, "departure_dow"), vec![Some(4.0); 3]);
    assert_eq!(
        num(&f, "stay_length_days"),
        vec![Some(3.0), Some(1.0), None]
    );
    assert_eq!(
        num(&f, "saturday_night_stay"),
        vec![Some(1.0), Some(0.0), None]
    );
    assert_eq!(
        num(&f, "is_round_trip"),
        vec![Some(1.0), Some(1.0), Some(0.0)]
    );
    let d = num(&f, "distance_km")[0].expect("distance");
    assert!((d - 5540.0).abs() < 30.0, "{d}");
    assert_eq!(num(&f, "pos_is_origin_country"), vec![Some(1.0); 3]);
    assert_eq!(num(&f, "is_domestic"), vec![Some(0.0); 3]);
    assert_eq!(num(&f, "seats_remaining_ratio"), vec![Some(0.5); 3]);
    assert_eq!(
        num(&f, "competitor_price_ratio"),
        vec![Some(1.25), Some(1.75), Some(1.5)]
    );
    // Rolling statistics see only earlier rows.
    let m7 = num(&f, "route_cabin_price_mean_7d");
    assert_eq!(m7[0], None);
    assert_eq!(m7[1], Some(500.0));
    let w = (-23.0f64 * 3600.0 / (7.0 * 86_400.0)).exp(); // weights of a and b at c's time
    let wb = (-22.0f64 * 3600.0 / (7.0 * 86_400.0)).exp();
    let expect = (500.0 * w + 700.0 * wb) / (w + wb);
    assert!((m7[2].expect("mean") - expect).abs() < 1e-9);
    assert_eq!(num(&f, "route_cabin_price_std_7d")[1], None);
    assert_eq!(num(&f, "route_search_rate_24h")[0], Some(0.0));
    assert_eq!(num(&f, "price_vs_route_mean")[1], Some(700.0 / 500.0));
    let route = f
        .column_by_name("route")
        .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        .expect("route");
    assert_eq!(route.value(0), "JFK-LHR");

    // The same rows fed in two batches give the same features (history carries over).
    let mut fb2 = FeatureBuilder::new();
    let f1 = fb2.compute(&batch.slice(0, 2)).expect("first");
    let f2 = fb2.compute(&batch.slice(2, 1)).expect("second");
    assert_eq!(f1, f.slice(0, 2));
    assert_eq!(f2, f.slice(2, 1));
}

#[test]
fn the_table_and_the_docs_agree() {
    assert!(FEATURES.len() >= 25);
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/features.md"
    ))
    .expect("docs/features.md");
    for f in FEATURES {
        assert!(
            docs.contains(&format!("`{}`", f.name)),
            "docs/features.md lacks {}",
            f.name
        );
    }
    let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), FEATURES.len(), "duplicate feature names");
    let free = price_free_features();
    assert!(!free.contains(&"price_per_km") && free.contains(&"competitor_price"));
    assert_eq!(
        FEATURES
            .iter()
            .filter(|f| f.kind == Kind::Categorical)
            .count(),
        8
    );
}
