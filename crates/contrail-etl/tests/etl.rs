//! ETL accounting, quarantine reasons, idempotence, incremental runs, late data and
//! corrupt inputs, on memory://, local disk and a real S3-compatible server.

use std::collections::BTreeMap;
use std::io::Write;

use arrow_array::{Array, Int64Array, StringArray};
use bytes::Bytes;
use contrail_etl::etl::{self, Accounting, EtlOptions, PartitionState};
use contrail_etl::{EtlError, CURATED_TABLE, QUARANTINE_TABLE, RAW_TABLE};
use contrail_sim::{BadRates, SimConfig, Sink, BAD_KINDS};
use contrail_store::parquet_io;
use contrail_store::partition::{list_partitions, HourRange, Partition};
use contrail_store::testkit::{S3Server, TempDir};
use contrail_store::Lake;

fn day_config(start: &str) -> SimConfig {
    SimConfig {
        seed: 7,
        days: 1,
        routes: 25,
        start_date: start.into(),
        searches_per_route_day: 300.0,
        // 1% of every kind of bad record.
        bad: BadRates {
            malformed_json: 0.01,
            missing_field: 0.01,
            wrong_type: 0.01,
            unknown_field: 0.01,
            negative_fare: 0.01,
            unknown_airport: 0.01,
            return_before_departure: 0.01,
            duplicate_event_id: 0.01,
        },
        ..Default::default()
    }
}

async fn quarantine_rows(lake: &Lake) -> Vec<(String, i64, String, String)> {
    let mut out = Vec::new();
    for m in lake.list(QUARANTINE_TABLE).await.expect("list") {
        let rel = lake.relative(&m.location).to_string();
        for b in parquet_io::read_all(lake, &rel)
            .await
            .expect("read quarantine")
        {
            let s = |n: &str| {
                b.column_by_name(n)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                    .expect("col")
            };
            let line = b
                .column_by_name("line")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .expect("line");
            let (file, reason, raw) = (s("source_file"), s("reason"), s("raw_text"));
            for i in 0..b.num_rows() {
                out.push((
                    file.value(i).to_string(),
                    line.value(i),
                    reason.value(i).to_string(),
                    raw.value(i).to_string(),
                ));
            }
        }
    }
    out
}

async fn curated_bytes(lake: &Lake) -> BTreeMap<String, Bytes> {
    let mut out = BTreeMap::new();
    for t in [CURATED_TABLE, QUARANTINE_TABLE] {
        for m in lake.list(t).await.expect("list") {
            let rel = lake.relative(&m.location).to_string();
            out.insert(rel.clone(), lake.get(&rel).await.expect("get"));
        }
    }
    out
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// The whole accounting story on one lake.
async fn accounting_suite(lake: &Lake) {
    let m = contrail_sim::simulate(lake, &day_config("2026-03-02"), Sink::Lake)
        .await
        .expect("simulate");
    let c = &m.counts;
    assert!(c.events > 5000, "{c:?}");
    let r = etl::run(lake, &EtlOptions::default()).await.expect("etl");
    let a = &r.run;
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.rows_read, c.lines);
    assert_eq!(a.curated, c.valid);
    assert_eq!(a.duplicates, c.injected_of("duplicate_event_id"));
    for kind in &BAD_KINDS[..7] {
        assert_eq!(
            a.by_reason.get(*kind).copied().unwrap_or(0),
            c.injected_of(kind),
            "reason {kind}"
        );
        assert!(c.injected_of(kind) > 0, "no {kind} injected");
    }
    assert_eq!(a.quarantined, (0..7).map(|i| c.injected[i]).sum::<u64>());
    assert_eq!(r.partitions_processed, 24);
    // Each quarantined row keeps its raw text, file and line: check against the raw file.
    let mut raws: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, line, reason, raw) in quarantine_rows(lake).await {
        let lines = match raws.get(&file) {
            Some(l) => l,
            None => {
                let text = gunzip(&lake.get(&file).await.expect("raw file"));
                let l = String::from_utf8(text)
                    .expect("utf8")
                    .lines()
                    .map(String::from)
                    .collect();
                raws.entry(file.clone()).or_insert(l)
            }
        };
        assert_eq!(lines[(line - 1) as usize], raw, "{file}:{line} ({reason})");
    }
    // The curated table holds exactly the valid events, sorted, no duplicate ids.
    let files = etl::curated_files(lake, HourRange::all())
        .await
        .expect("files");
    assert_eq!(files.len(), 24);
    let mut ids = std::collections::HashSet::new();
    let mut rows = 0;
    for f in &files {
        for b in parquet_io::read_all(lake, f).await.expect("read") {
            let v = contrail_events::schema::CuratedView::new(&b).expect("curated schema");
            for i in 0..v.len() {
                assert!(
                    ids.insert(v.event_id.value(i).to_string()),
                    "duplicate id in curated"
                );
                if i > 0 {
                    assert!(v.search_ts_ms.value(i - 1) <= v.search_ts_ms.value(i));
                }
            }
            rows += v.len();
        }
    }
    assert_eq!(rows as u64, c.valid);

    // Idempotent: a second run changes nothing.
    let before = curated_bytes(lake).await;
    let r2 = etl::run(lake, &EtlOptions::default())
        .await
        .expect("etl again");
    assert_eq!((r2.partitions_processed, r2.partitions_unchanged), (0, 24));
    assert_eq!(r2.lake_total, r.lake_total);
    assert_eq!(curated_bytes(lake).await, before);
    // Forced: everything redone, the same bytes.
    let r3 = etl::run(
        lake,
        &EtlOptions {
            force: true,
            ..Default::default()
        },
    )
    .await
    .expect("forced");
    assert_eq!(r3.partitions_processed, 24);
    assert_eq!(curated_bytes(lake).await, before);

    // Incremental: a new day is processed, the finished one is not.
    let m2 = contrail_sim::simulate(lake, &day_config("2026-03-03"), Sink::Lake)
        .await
        .expect("simulate day 2");
    let r4 = etl::run(lake, &EtlOptions::default())
        .await
        .expect("incremental");
    assert_eq!((r4.partitions_processed, r4.partitions_unchanged), (24, 24));
    assert_eq!(r4.run.rows_read, m2.counts.lines);
    assert!(r4.lake_total.balanced());
    assert_eq!(r4.lake_total.rows_read, c.lines + m2.counts.lines);

    // Late data: a new raw file in a finished partition redoes that partition alone.
    let p = Partition::from_parts(2026, 3, 2, 10).expect("hour");
    let dir = format!("{RAW_TABLE}/{}", p.dir());
    let first = etl::curated_files(
        lake,
        HourRange {
            from: Some(p.hour),
            to: Some(p.hour),
        },
    )
    .await
    .expect("files");
    let one = parquet_io::read_all(lake, &first[0]).await.expect("read");
    let v = contrail_events::schema::CuratedView::new(&one[0]).expect("view");
    let id = v.event_id.value(0).to_string();
    let late_line = format!(
        "{{\"event_id\":\"late-1\",\"search_ts\":\"2026-03-02T10:59:00Z\",\"origin\":\"JFK\",\"destination\":\"LHR\",\"departure_date\":\"2026-03-20\",\"return_date\":null,\"carrier\":\"BA\",\"cabin\":\"economy\",\"fare_class\":\"K\",\"stops\":0,\"duration_min\":420,\"price\":512.30,\"currency\":\"USD\",\"competitor_price\":null,\"seats_remaining\":23,\"channel\":\"web\",\"point_of_sale\":\"US\",\"passengers\":1,\"booked\":false}}\n\n{{\"event_id\":\"{id}\",\"search_ts\":\"2026-03-02T10:00:00Z\",\"origin\":\"JFK\",\"destination\":\"LHR\",\"departure_date\":\"2026-03-20\",\"return_date\":null,\"carrier\":\"BA\",\"cabin\":\"economy\",\"fare_class\":\"K\",\"stops\":0,\"duration_min\":420,\"price\":1.00,\"currency\":\"USD\",\"competitor_price\":null,\"seats_remaining\":23,\"channel\":\"web\",\"point_of_sale\":\"US\",\"passengers\":1,\"booked\":false}}\n"
    );
    lake.put(&format!("{dir}/zz-late.jsonl"), Bytes::from(late_line))
        .await
        .expect("put late");
    let r5 = etl::run(lake, &EtlOptions::default()).await.expect("late");
    assert_eq!((r5.partitions_processed, r5.partitions_unchanged), (1, 47));
    assert_eq!(r5.lake_total.rows_read, r4.lake_total.rows_read + 2);
    assert_eq!(r5.lake_total.curated, r4.lake_total.curated + 1);
    assert_eq!(r5.lake_total.blank_lines, r4.lake_total.blank_lines + 1);
    assert_eq!(r5.run.by_reason.get("conflicting_duplicate"), Some(&1));
    assert!(r5.lake_total.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_on_memory() {
    accounting_suite(&Lake::open("memory://etl-accounting").expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_on_local_disk() {
    let dir = TempDir::new("etl-local").expect("tmp");
    accounting_suite(&Lake::open(&dir.0.display().to_string()).expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_on_s3() {
    let Some(server) = S3Server::start("lake") else {
        return;
    };
    accounting_suite(&server.lake("s3://lake/etl").expect("open")).await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("write");
    e.finish().expect("finish")
}

fn good_line(id: &str, hour: u32) -> String {
    format!("{{\"event_id\":\"{id}\",\"search_ts\":\"2026-05-01T{hour:02}:10:00Z\",\"origin\":\"CDG\",\"destination\":\"JFK\",\"departure_date\":\"2026-06-01\",\"return_date\":\"2026-06-09\",\"carrier\":\"AF\",\"cabin\":\"business\",\"fare_class\":\"J\",\"stops\":0,\"duration_min\":505,\"price\":3120.00,\"currency\":\"EUR\",\"competitor_price\":2999.99,\"seats_remaining\":7,\"channel\":\"agency\",\"point_of_sale\":\"FR\",\"passengers\":2,\"booked\":true}}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_inputs_are_quarantined_or_typed_errors() {
    let lake = Lake::open("memory://etl-corrupt").expect("open");
    let p = Partition::from_parts(2026, 5, 1, 3).expect("hour");
    let dir = format!("{RAW_TABLE}/{}", p.dir());
    // A truncated gzip file: its whole lines are processed, the rest is one corrupt_file row.
    let text: String = (0..200).map(|i| good_line(&format!("t{i}"), 3)).collect();
    let gz = gzip(text.as_bytes());
    lake.put(
        &format!("{dir}/a-truncated.jsonl.gz"),
        Bytes::from(gz[..gz.len() * 2 / 3].to_vec()),
    )
    .await
    .expect("put");
    // Invalid UTF-8, an over-long line, an unknown field, blank lines, a CRLF line.
    let mut mixed = Vec::new();
    mixed.extend_from_slice(b"\xff\xfe not text\n");
    mixed.extend_from_slice(good_line("ok-1", 3).trim_end().as_bytes());
    mixed.extend_from_slice(b"\r\n\n   \n");
    mixed.extend_from_slice(format!("{{\"pad\":\"{}\"}}\n", "x".repeat(2 << 20)).as_bytes());
    mixed.extend_from_slice(
        good_line("ok-2", 3)
            .replace("\"booked\"", "\"extra\":1,\"booked\"")
            .as_bytes(),
    );
    mixed.extend_from_slice(good_line("ok-3", 3).trim_end().as_bytes()); // no final newline
    lake.put(&format!("{dir}/b-mixed.jsonl"), Bytes::from(mixed))
        .await
        .expect("put");
    // Not gzip at all, though named so.
    lake.put(
        &format!("{dir}/c-notgzip.jsonl.gz"),
        Bytes::from_static(b"plain text, not gzip\n"),
    )
    .await
    .expect("put");
    // Files that are not raw data are ignored.
    lake.put(&format!("{dir}/_SUCCESS"), Bytes::from_static(b""))
        .await
        .expect("put");

    let r = etl::run(&lake, &EtlOptions::default()).await.expect("etl");
    let a: &Accounting = &r.run;
    assert!(a.balanced(), "{a:?}");
    assert_eq!(a.files, 3);
    assert_eq!(a.blank_lines, 2);
    let reasons = &a.by_reason;
    assert_eq!(reasons.get("corrupt_file"), Some(&2), "{reasons:?}");
    assert_eq!(reasons.get("invalid_utf8"), Some(&1));
    assert_eq!(reasons.get("line_too_long"), Some(&1));
    assert_eq!(reasons.get("unknown_field"), Some(&1));
    assert_eq!(a.curated, a.rows_read - a.quarantined - a.duplicates);
    assert!(a.curated >= 3, "{a:?}");
    let q = quarantine_rows(&lake).await;
    let corrupt: Vec<_> = q.iter().filter(|r| r.2 == "corrupt_file").collect();
    assert!(corrupt
        .iter()
        .any(|r| r.0.ends_with("a-truncated.jsonl.gz")));
    assert!(corrupt.iter().any(|r| r.0.ends_with("c-notgzip.jsonl.gz")));

    // A missing partition asked for by name is a typed error naming it.
    let missing = Partition::from_parts(2026, 5, 1, 4).expect("hour");
    let e = etl::run(
        &lake,
        &EtlOptions {
            partitions: Some(vec![missing]),
            ..Default::default()
        },
    )
    .await
    .expect_err("missing");
    assert!(matches!(e, EtlError::PartitionNotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("2026-05-01T04") && e.to_string().contains("hour=04"),
        "{e}"
    );
    // A corrupt state file is a typed error naming the file.
    lake.put(
        &format!("{CURATED_TABLE}/{}/_etl.json", p.dir()),
        Bytes::from_static(b"{not json"),
    )
    .await
    .expect("put");
    let e = etl::run(&lake, &EtlOptions::default())
        .await
        .expect_err("bad state");
    assert!(
        matches!(e, EtlError::BadState { .. }) && e.to_string().contains("_etl.json"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_cut_at_the_limit() {
    let lake = Lake::open("memory://etl-bomb").expect("open");
    let p = Partition::from_parts(2026, 5, 2, 0).expect("hour");
    let mut big = Vec::new();
    for i in 0..2000 {
        big.extend_from_slice(
            good_line(&format!("b{i}"), 0)
                .replace("2026-05-01", "2026-05-02")
                .as_bytes(),
        );
    }
    lake.put(
        &format!("{RAW_TABLE}/{}/bomb.jsonl.gz", p.dir()),
        Bytes::from(gzip(&big)),
    )
    .await
    .expect("put");
    let opts = EtlOptions {
        max_file_bytes: 100_000,
        ..Default::default()
    };
    let r = etl::run(&lake, &opts).await.expect("etl");
    assert!(r.run.balanced());
    assert_eq!(r.run.by_reason.get("corrupt_file"), Some(&1));
    assert!(r.run.curated > 100 && r.run.curated < 2000, "{:?}", r.run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_records_inputs_and_accounting() {
    let lake = Lake::open("memory://etl-state").expect("open");
    contrail_sim::simulate(
        &lake,
        &SimConfig {
            days: 1,
            routes: 5,
            ..day_config("2026-04-01")
        },
        Sink::Lake,
    )
    .await
    .expect("sim");
    etl::run(&lake, &EtlOptions::default()).await.expect("etl");
    let parts = list_partitions(&lake, CURATED_TABLE, HourRange::all())
        .await
        .expect("parts");
    assert_eq!(parts.len(), 24);
    for p in parts {
        let b = lake
            .get(&format!("{CURATED_TABLE}/{}/_etl.json", p.dir()))
            .await
            .expect("state");
        let s: PartitionState = serde_json::from_slice(&b).expect("parse");
        assert_eq!(s.inputs.len(), 1);
        assert!(s.accounting.balanced());
    }
}

#[test]
fn a_curated_view_rejects_other_schemas() {
    let b = arrow_array::RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(Int64Array::from(vec![1])) as arrow_array::ArrayRef,
    )])
    .expect("batch");
    assert!(contrail_events::schema::CuratedView::new(&b).is_err());
    let _ = b.column(0).len();
}
