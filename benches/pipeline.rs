//! Throughput of the foundation stages: simulate, ingest, ETL, and Parquet reads from
//! local disk and from an S3-compatible server (s3s-fs, when installed).
//!
//! `cargo bench --bench pipeline`. Each group reports elements (events or rows) per second.

use std::time::Duration;

use contrail::etl::etl::{self, EtlOptions};
use contrail::etl::ingest::{ingest, IngestOptions};
use contrail::sim::market::Market;
use contrail::sim::{generate_hour, BadRates, SimConfig, Sink};
use contrail::store::parquet_io::{self, ScanOptions};
use contrail::store::partition::{HourRange, Partition};
use contrail::store::testkit::{S3Server, TempDir};
use contrail::store::Lake;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;

fn cfg() -> SimConfig {
    SimConfig {
        days: 1,
        routes: 100,
        searches_per_route_day: 1500.0,
        bad: BadRates::uniform(0.01),
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn lines(cfg: &SimConfig) -> Vec<u8> {
    let market = Market::new(cfg.seed, cfg.routes as usize);
    let start = contrail::events::calendar::parse_date(&cfg.start_date).expect("date") as i64 * 24;
    (0..24)
        .flat_map(|h| {
            generate_hour(cfg, &market, Partition { hour: start + h })
                .expect("hour")
                .lines
        })
        .collect()
}

async fn scan_rows(lake: &Lake) -> usize {
    let files = etl::curated_files(lake, HourRange::all())
        .await
        .expect("files");
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.expect("batch").num_rows();
    }
    n
}

fn pipeline(c: &mut Criterion) {
    let rt = runtime();
    let cfg = cfg();
    let data = lines(&cfg);
    let events = data.iter().filter(|&&b| b == b'\n').count() as u64;
    let dir = TempDir::new("bench").expect("tmp");

    let mut g = c.benchmark_group("cpu");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(events));
    g.bench_function("simulate_to_local_disk", |b| {
        let lake = Lake::open(&dir.0.join("sim").display().to_string()).expect("lake");
        b.iter(|| {
            rt.block_on(contrail::sim::simulate(&lake, &cfg, Sink::Lake))
                .expect("simulate")
        })
    });
    g.bench_function("ingest_to_local_disk", |b| {
        let lake = Lake::open(&dir.0.join("ingest").display().to_string()).expect("lake");
        b.iter(|| {
            rt.block_on(ingest(
                &lake,
                std::io::Cursor::new(data.clone()),
                &IngestOptions::default(),
            ))
            .expect("ingest")
        })
    });
    let lake = Lake::open(&dir.0.join("etl").display().to_string()).expect("lake");
    rt.block_on(contrail::sim::simulate(&lake, &cfg, Sink::Lake))
        .expect("simulate");
    rt.block_on(etl::run(&lake, &EtlOptions::default()))
        .expect("etl");
    g.bench_function("etl_on_local_disk", |b| {
        let opts = EtlOptions {
            force: true,
            ..Default::default()
        };
        b.iter(|| rt.block_on(etl::run(&lake, &opts)).expect("etl"))
    });
    let rows = rt.block_on(scan_rows(&lake)) as u64;
    g.throughput(Throughput::Elements(rows));
    g.bench_function("parquet_scan_local_disk", |b| {
        b.iter(|| rt.block_on(scan_rows(&lake)))
    });
    if let Some(server) = S3Server::start("bench") {
        let s3 = server.lake("s3://bench/lake").expect("s3 lake");
        rt.block_on(contrail::sim::simulate(&s3, &cfg, Sink::Lake))
            .expect("simulate");
        rt.block_on(etl::run(&s3, &EtlOptions::default()))
            .expect("etl");
        g.bench_function("parquet_scan_s3_server", |b| {
            b.iter(|| rt.block_on(scan_rows(&s3)))
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
