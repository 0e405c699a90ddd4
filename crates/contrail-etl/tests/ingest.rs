//! Ingest: every line lands in its hour partition, flushes by size and by time, and the
//! ETL of ingested events equals the ETL of the same events written by the simulator.

use std::io::Read;
use std::time::{Duration, Instant};

use contrail_etl::etl::{self, EtlOptions};
use contrail_etl::ingest::{ingest, IngestOptions};
use contrail_etl::{CURATED_TABLE, RAW_TABLE};
use contrail_sim::market::Market;
use contrail_sim::{generate_hour, BadRates, SimConfig, Sink};
use contrail_store::partition::{list_partitions, HourRange, Partition};
use contrail_store::Lake;

fn sim_lines(cfg: &SimConfig) -> Vec<u8> {
    let market = Market::new(cfg.seed, cfg.routes as usize);
    let start = contrail_events::calendar::parse_date(&cfg.start_date).expect("date") as i64 * 24;
    let mut out = Vec::new();
    for h in 0..cfg.days as i64 * 24 {
        out.extend(
            generate_hour(cfg, &market, Partition { hour: start + h })
                .expect("hour")
                .lines,
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_events_curate_like_simulated_ones() {
    let cfg = SimConfig {
        days: 1,
        routes: 15,
        seed: 3,
        bad: BadRates::uniform(0.02),
        ..Default::default()
    };
    let direct = Lake::open("memory://ingest-direct").expect("open");
    let m = contrail_sim::simulate(&direct, &cfg, Sink::Lake)
        .await
        .expect("sim");
    let via = Lake::open("memory://ingest-via").expect("open");
    let lines = sim_lines(&cfg);
    // Small buffers force many flushes (several files per partition).
    let opts = IngestOptions {
        max_buffer_bytes: 200_000,
        ..Default::default()
    };
    let r = ingest(&via, std::io::Cursor::new(lines), &opts)
        .await
        .expect("ingest");
    assert_eq!(r.events, m.counts.lines);
    assert!(r.flushes > 5, "{r:?}");
    assert!(r.files > 24, "{r:?}");
    let e1 = etl::run(&direct, &EtlOptions::default())
        .await
        .expect("etl direct");
    let e2 = etl::run(&via, &EtlOptions::default())
        .await
        .expect("etl via");
    assert_eq!(e1.run.rows_read, e2.run.rows_read);
    assert_eq!(e1.run.curated, e2.run.curated);
    assert_eq!(e1.run.duplicates, e2.run.duplicates);
    assert_eq!(e1.run.quarantined, e2.run.quarantined);
    assert_eq!(e1.run.by_reason, e2.run.by_reason);
    // Curated partitions are byte-identical: sorted by time and id, whatever the files.
    let parts = list_partitions(&direct, CURATED_TABLE, HourRange::all())
        .await
        .expect("parts");
    for p in parts {
        let rel = format!("{CURATED_TABLE}/{}/part-00000.parquet", p.dir());
        assert_eq!(
            direct.get(&rel).await.expect("direct"),
            via.get(&rel).await.expect("via"),
            "{rel}"
        );
    }
}

/// A reader that yields its first part, then stalls, then the rest.
struct Stalling {
    parts: Vec<Vec<u8>>,
    pause: Duration,
    at: usize,
    off: usize,
}

impl Read for Stalling {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at < self.parts.len() && self.off == self.parts[self.at].len() {
            self.at += 1;
            self.off = 0;
            if self.at < self.parts.len() {
                std::thread::sleep(self.pause);
            }
        }
        let Some(p) = self.parts.get(self.at) else {
            return Ok(0);
        };
        let n = buf.len().min(p.len() - self.off);
        buf[..n].copy_from_slice(&p[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_by_time_while_input_stalls() {
    let cfg = SimConfig {
        days: 1,
        routes: 3,
        ..Default::default()
    };
    let lines = sim_lines(&cfg);
    let half = memchr_split(&lines);
    let lake = Lake::open("memory://ingest-stall").expect("open");
    let reader = Stalling {
        parts: vec![lines[..half].to_vec(), lines[half..].to_vec()],
        pause: Duration::from_millis(800),
        at: 0,
        off: 0,
    };
    let opts = IngestOptions {
        flush_interval: Duration::from_millis(150),
        ..Default::default()
    };
    let t = Instant::now();
    let lake2 = lake.clone();
    // Watch the lake while ingest runs: the first half must be committed before the end.
    let watcher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lake2.list(RAW_TABLE).await.expect("list").len()
    });
    let r = ingest(&lake, reader, &opts).await.expect("ingest");
    assert!(t.elapsed() >= Duration::from_millis(800));
    assert!(
        watcher.await.expect("watch") > 0,
        "nothing committed while input stalled"
    );
    assert!(r.flushes >= 2, "{r:?}");
    let total = lines.iter().filter(|&&c| c == b'\n').count() as u64;
    assert_eq!(r.events, total);
}

fn memchr_split(b: &[u8]) -> usize {
    let mid = b.len() / 2;
    mid + b[mid..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(0, |i| i + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_lines_are_landed_not_dropped() {
    let lake = Lake::open("memory://ingest-odd").expect("open");
    let mut input = Vec::new();
    input.extend_from_slice(b"no event time here\n\n");
    input.extend_from_slice(
        format!(
            "{{\"search_ts\":\"2026-01-01T05:00:00Z\",\"x\":\"{}\"}}\n",
            "y".repeat(3000)
        )
        .as_bytes(),
    );
    input.extend_from_slice(b"{\"search_ts\":\"2026-01-01T05:30:00Z\"}"); // no final newline
    let opts = IngestOptions {
        max_line_bytes: 1000,
        ..Default::default()
    };
    let r = ingest(&lake, std::io::Cursor::new(input), &opts)
        .await
        .expect("ingest");
    assert_eq!(r.events, 3);
    assert_eq!(r.blank_lines, 1);
    assert_eq!(r.truncated_lines, 1);
    assert_eq!(r.without_event_time, 1);
    let e = etl::run(&lake, &EtlOptions::default()).await.expect("etl");
    assert_eq!(e.run.rows_read, 3);
    assert_eq!(e.run.quarantined, 3);
    assert!(e.run.balanced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_longer_than_a_read_block_is_cut() {
    let lake = Lake::open("memory://ingest-long").expect("open");
    let mut input = b"{\"search_ts\":\"2026-01-01T05:00:00Z\",\"pad\":\"".to_vec();
    input.extend(std::iter::repeat_n(b'z', 9 << 20));
    input.extend_from_slice(b"\"}\n{\"search_ts\":\"2026-01-01T06:00:00Z\"}\n");
    let opts = IngestOptions {
        max_line_bytes: 1 << 20,
        ..Default::default()
    };
    let r = ingest(&lake, std::io::Cursor::new(input), &opts)
        .await
        .expect("ingest");
    assert_eq!(r.events, 2);
    assert_eq!(r.truncated_lines, 1);
    let parts = list_partitions(&lake, RAW_TABLE, HourRange::all())
        .await
        .expect("parts");
    assert_eq!(parts.len(), 2);
}
