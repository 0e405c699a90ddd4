//! One storage conformance suite, run against local disk, memory:// and a real
//! S3-compatible server (s3s-fs) on 127.0.0.1.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use contrail_store::parquet_io::{self, ScanOptions};
use contrail_store::partition::{list_partitions, HourRange, Partition};
use contrail_store::testkit::{S3Server, TempDir};
use contrail_store::{Lake, Scheme, StoreError};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

fn batch(start: i64, n: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let names: Vec<String> = ids.iter().map(|i| format!("row-{i}")).collect();
    let vals: Vec<Option<f64>> = ids
        .iter()
        .map(|i| (i % 7 != 0).then_some(*i as f64 * 0.5))
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(StringArray::from(names)),
        Arc::new(Float64Array::from(vals)),
    ];
    RecordBatch::try_new(schema, cols).expect("valid batch")
}

async fn put_get_list(lake: &Lake) {
    lake.put("a/one.txt", Bytes::from_static(b"hello"))
        .await
        .expect("put");
    lake.put("a/b/two.txt", Bytes::from_static(b"world!"))
        .await
        .expect("put");
    lake.put("c/three.txt", Bytes::from_static(b"3"))
        .await
        .expect("put");
    assert_eq!(
        lake.get("a/one.txt").await.expect("get"),
        Bytes::from_static(b"hello")
    );
    // Overwrite replaces whole.
    lake.put("a/one.txt", Bytes::from_static(b"HELLO, again"))
        .await
        .expect("put");
    assert_eq!(
        lake.get("a/one.txt").await.expect("get"),
        Bytes::from_static(b"HELLO, again")
    );
    let names: Vec<String> = lake
        .list("a")
        .await
        .expect("list")
        .iter()
        .map(|m| lake.relative(&m.location).to_string())
        .collect();
    assert_eq!(
        names,
        vec!["a/b/two.txt".to_string(), "a/one.txt".to_string()]
    );
    assert_eq!(
        lake.list_dirs("").await.expect("dirs"),
        vec!["a".to_string(), "c".to_string()]
    );
    assert_eq!(lake.head("a/b/two.txt").await.expect("head").size, 6);
    assert!(lake.list("nothing-here").await.expect("list").is_empty());
    // Missing objects are typed errors naming the URL.
    match lake.get("a/missing.txt").await {
        Err(StoreError::NotFound { url, .. }) => assert!(url.ends_with("a/missing.txt"), "{url}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(lake
        .get_opt("a/missing.txt")
        .await
        .expect("get_opt")
        .is_none());
    lake.delete("c/three.txt").await.expect("delete");
    lake.delete("c/three.txt")
        .await
        .expect("delete is idempotent");
    assert!(lake.list("c").await.expect("list").is_empty());
}

async fn ranged_reads(lake: &Lake) {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    lake.put("r/blob", Bytes::from(data.clone()))
        .await
        .expect("put");
    for (a, b) in [(0u64, 1u64), (10, 20), (99_990, 100_000), (4096, 65_536)] {
        let got = lake.get_range("r/blob", a..b).await.expect("range");
        assert_eq!(&got[..], &data[a as usize..b as usize]);
    }
}

async fn multipart_writes(lake: &Lake) {
    // 12 MiB through a 5 MiB buffer: a real multipart upload on S3, staged on disk.
    let part: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 256) as u8).collect();
    let mut w = lake.writer("mp/big.bin", 5 << 20);
    for _ in 0..12 {
        w.write_all(&part).await.expect("write");
    }
    // Nothing visible before the upload completes.
    assert!(lake.get_opt("mp/big.bin").await.expect("get_opt").is_none());
    w.shutdown().await.expect("complete");
    let got = lake.get("mp/big.bin").await.expect("get");
    assert_eq!(got.len(), 12 << 20);
    assert!(got.chunks(1 << 20).all(|c| c == &part[..]));
    // A small write goes as one PUT.
    let mut w = lake.writer("mp/small.bin", 5 << 20);
    w.write_all(b"tiny").await.expect("write");
    w.shutdown().await.expect("complete");
    assert_eq!(
        lake.get("mp/small.bin").await.expect("get"),
        Bytes::from_static(b"tiny")
    );
    // No staging leftovers are listed.
    let names: Vec<String> = lake
        .list("mp")
        .await
        .expect("list")
        .iter()
        .map(|m| lake.relative(&m.location).to_string())
        .collect();
    assert_eq!(
        names,
        vec!["mp/big.bin".to_string(), "mp/small.bin".to_string()]
    );
}

async fn parquet_round_trip(lake: &Lake) {
    let b1 = batch(0, 70_000);
    let b2 = batch(70_000, 30_000);
    let n = parquet_io::write(
        lake,
        "pq/t/part-0.parquet",
        b1.schema(),
        &[b1.clone(), b2.clone()],
    )
    .await
    .expect("write");
    assert!(n > 0);
    parquet_io::write(
        lake,
        "pq/t/part-1.parquet",
        b1.schema(),
        &[batch(100_000, 5)],
    )
    .await
    .expect("write");
    // Deterministic bytes.
    let again = parquet_io::encode(b1.schema(), &[b1.clone(), b2.clone()], "x").expect("encode");
    assert_eq!(lake.get("pq/t/part-0.parquet").await.expect("get"), again);
    assert_eq!(
        parquet_io::row_count(lake, "pq/t/part-0.parquet")
            .await
            .expect("rows"),
        100_000
    );
    // Streaming scan with projection, small batches and bounded read-ahead.
    let opts = ScanOptions {
        columns: Some(vec!["value".into(), "id".into()]),
        batch_size: 8192,
        read_ahead: 2,
        files_in_flight: 2,
    };
    let files = vec![
        "pq/t/part-0.parquet".to_string(),
        "pq/t/part-1.parquet".to_string(),
    ];
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, opts));
    let (mut rows, mut next_id) = (0usize, 0i64);
    while let Some(b) = s.next().await {
        let b = b.expect("batch");
        assert!(b.num_rows() <= 8192);
        assert_eq!(b.num_columns(), 2);
        let ids = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
            .expect("id");
        for v in ids.values() {
            assert_eq!(*v, next_id);
            next_id += 1;
        }
        rows += b.num_rows();
    }
    assert_eq!(rows, 100_005);
    let all = parquet_io::read_all(lake, "pq/t/part-1.parquet")
        .await
        .expect("read");
    assert_eq!(all, vec![batch(100_000, 5)]);
    // A missing column is a typed error naming the file and column.
    let opts = ScanOptions {
        columns: Some(vec!["nope".into()]),
        ..Default::default()
    };
    let mut s = std::pin::pin!(parquet_io::scan(
        lake,
        vec!["pq/t/part-1.parquet".into()],
        opts
    ));
    match s.next().await {
        Some(Err(StoreError::BadParquet { url, reason })) => {
            assert!(
                url.ends_with("pq/t/part-1.parquet") && reason.contains("nope"),
                "{url}: {reason}"
            )
        }
        other => panic!("expected BadParquet, got {other:?}"),
    }
}

async fn partition_pruning(lake: &Lake) {
    let hours: Vec<Partition> = [
        (2026, 2, 28, 23),
        (2026, 3, 1, 0),
        (2026, 3, 1, 5),
        (2026, 3, 2, 0),
        (2027, 1, 1, 0),
    ]
    .iter()
    .map(|&(y, m, d, h)| Partition::from_parts(y, m, d, h).expect("valid"))
    .collect();
    for p in &hours {
        lake.put(&format!("tbl/{}/x.txt", p.dir()), Bytes::from_static(b"x"))
            .await
            .expect("put");
    }
    // Folders that are not partition keys are ignored.
    lake.put("tbl/_meta/info.json", Bytes::from_static(b"{}"))
        .await
        .expect("put");
    lake.put("tbl/year=2026/notes.txt", Bytes::from_static(b"n"))
        .await
        .expect("put");
    let all = list_partitions(lake, "tbl", HourRange::all())
        .await
        .expect("list");
    assert_eq!(all, hours);
    let day = Partition::from_parts(2026, 3, 1, 0).expect("valid").hour;
    let r = HourRange {
        from: Some(day),
        to: Some(day + 23),
    };
    assert_eq!(
        list_partitions(lake, "tbl", r).await.expect("list"),
        hours[1..3].to_vec()
    );
    let r = HourRange {
        from: Some(day + 1),
        to: None,
    };
    assert_eq!(
        list_partitions(lake, "tbl", r).await.expect("list"),
        hours[2..].to_vec()
    );
    assert!(list_partitions(lake, "absent-table", HourRange::all())
        .await
        .expect("list")
        .is_empty());
}

async fn corrupt_parquet(lake: &Lake) {
    let good = parquet_io::encode(batch(0, 50).schema(), &[batch(0, 50)], "x").expect("encode");
    // Truncation at every byte of the footer region (and a few inside the data).
    let n = good.len();
    let cuts: Vec<usize> = (0..n.min(600))
        .map(|i| n - 1 - i)
        .chain([0, 1, 4, 7, 11, 12, n / 2])
        .collect();
    for cut in cuts {
        lake.put("bad/trunc.parquet", good.slice(..cut))
            .await
            .expect("put");
        match parquet_io::read_all(lake, "bad/trunc.parquet").await {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("bad/trunc.parquet"),
                    "error does not name the file: {msg}"
                );
            }
            Ok(b) => panic!("truncated at {cut} of {n} yet read {} batches", b.len()),
        }
    }
    // A footer that declares far more metadata than the file holds.
    let mut hostile = good.to_vec();
    let len_at = hostile.len() - 8;
    hostile[len_at..len_at + 4].copy_from_slice(&(u32::MAX - 7).to_le_bytes());
    lake.put("bad/huge.parquet", Bytes::from(hostile))
        .await
        .expect("put");
    match parquet_io::read_all(lake, "bad/huge.parquet").await {
        Err(StoreError::BadParquet { reason, .. }) => {
            assert!(reason.contains("declares"), "{reason}")
        }
        other => panic!("expected BadParquet, got {other:?}"),
    }
    // Flipped bytes inside the metadata: a typed error or valid batches, never a panic.
    for i in 0..200 {
        let mut b = good.to_vec();
        let at = n - 9 - (i * 7) % (n / 2);
        b[at] ^= 0x5A;
        lake.put("bad/flip.parquet", Bytes::from(b))
            .await
            .expect("put");
        let _ = parquet_io::read_all(lake, "bad/flip.parquet").await;
    }
}

async fn conditional_create(lake: &Lake) {
    lake.put_if_absent("cc/once", Bytes::from_static(b"first"))
        .await
        .expect("create");
    match lake
        .put_if_absent("cc/once", Bytes::from_static(b"second"))
        .await
    {
        Err(StoreError::AlreadyExists { .. }) => {}
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        lake.get("cc/once").await.expect("get"),
        Bytes::from_static(b"first")
    );
}

async fn suite(lake: &Lake) {
    put_get_list(lake).await;
    ranged_reads(lake).await;
    multipart_writes(lake).await;
    parquet_round_trip(lake).await;
    partition_pruning(lake).await;
    corrupt_parquet(lake).await;
    if lake.scheme() != Scheme::S3 {
        // s3s-fs ignores If-None-Match (real S3 honours it): checked on the stores that do.
        conditional_create(lake).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_disk() {
    let dir = TempDir::new("conf-local").expect("tempdir");
    let lake = Lake::open(&dir.0.join("lake").display().to_string()).expect("open");
    assert_eq!(lake.scheme(), Scheme::File);
    suite(&lake).await;
    let url = format!("file://{}", dir.0.join("lake2").display());
    suite(&Lake::open(&url).expect("open file://")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    let lake = Lake::open("memory://conformance").expect("open");
    assert_eq!(lake.scheme(), Scheme::Memory);
    suite(&lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server() {
    let Some(server) = S3Server::start("lake") else {
        return;
    };
    let lake = server.lake("s3://lake/prefix/x").expect("open");
    assert_eq!(lake.scheme(), Scheme::S3);
    suite(&lake).await;
    // The prefix is honoured: the objects are under lake/prefix/x on the server's disk.
    assert!(server.root.join("lake/prefix/x/a/one.txt").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_missing_bucket_and_unreachable_endpoint() {
    std::env::set_var("CONTRAIL_S3_MAX_RETRIES", "1");
    std::env::set_var("CONTRAIL_S3_RETRY_TIMEOUT_SECS", "2");
    // Nothing listens on this port: a typed error naming the URL, after bounded retries.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let opts = [
        ("aws_endpoint", format!("http://127.0.0.1:{port}")),
        ("aws_access_key_id", "k".to_string()),
        ("aws_secret_access_key", "s".to_string()),
    ];
    let pairs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let lake = Lake::open_with("s3://nowhere/p", &pairs).expect("configure");
    let e = lake.get("x.json").await.expect_err("unreachable");
    assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("s3://nowhere/p/x.json"), "{e}");

    let Some(server) = S3Server::start("present") else {
        return;
    };
    let lake = server.lake("s3://absent-bucket").expect("open");
    let e = lake.get("x.json").await.expect_err("missing bucket");
    assert!(e.to_string().contains("s3://absent-bucket/x.json"), "{e}");
    let e = lake.list("").await.expect_err("missing bucket list");
    assert!(e.to_string().contains("s3://absent-bucket"), "{e}");
}

#[test]
fn bad_urls_are_typed_errors() {
    assert!(matches!(
        Lake::open("ftp://x"),
        Err(StoreError::InvalidUrl { .. })
    ));
    assert!(matches!(
        Lake::open("s3://"),
        Err(StoreError::InvalidUrl { .. })
    ));
    assert!(matches!(Lake::open(""), Err(StoreError::InvalidUrl { .. })));
}
