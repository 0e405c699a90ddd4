//! JSON lines in, raw hourly partitions out.
//!
//! A reader thread pulls large blocks from the input and cuts them at line ends; the
//! main loop routes each line to the hour partition of its `search_ts` (lines without a
//! readable event time go to the hour they arrived in, so the ETL quarantines them:
//! nothing is dropped) and flushes when the buffers reach `max_buffer_bytes` or
//! `flush_interval` has passed. A flush compresses every partition's buffer in parallel
//! and writes one new file per partition; the events in it count as ingested only when
//! its write has committed.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use bytes::Bytes;
use contrail_events::calendar;
use contrail_store::partition::Partition;
use contrail_store::Lake;
use rayon::prelude::*;
use serde::Serialize;

use crate::{EtlError, RAW_TABLE};

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Flush when this many bytes are buffered across partitions.
    pub max_buffer_bytes: usize,
    /// Flush at least this often while input keeps arriving or waits.
    pub flush_interval: Duration,
    pub gzip_level: i32,
    /// Longer lines are cut to this length (and then quarantined by the ETL).
    pub max_line_bytes: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            max_buffer_bytes: 64 << 20,
            flush_interval: Duration::from_secs(5),
            gzip_level: 1,
            max_line_bytes: 1 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Events in committed files.
    pub events: u64,
    pub bytes_in: u64,
    pub bytes_written: u64,
    pub files: u64,
    pub flushes: u64,
    pub partitions: u64,
    /// Lines whose event time could not be read (landed in their arrival hour).
    pub without_event_time: u64,
    pub truncated_lines: u64,
    pub blank_lines: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

const KEY: &[u8] = b"\"search_ts\":\"";

/// The hour partition of a raw line, from its `search_ts` field, without a full parse.
pub fn event_hour(line: &[u8]) -> Option<i64> {
    let i = memchr::memmem::find(line, KEY)? + KEY.len();
    let end = memchr::memchr(b'"', line.get(i..)?)? + i;
    let ts = calendar::parse_timestamp(std::str::from_utf8(&line[i..end]).ok()?)?;
    Some(ts.div_euclid(3600))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A block of whole lines from the reader thread.
struct Block {
    data: Vec<u8>,
    truncated: u64,
}

/// Reads `input` in 4 MiB blocks, cut after the last newline; sends whole-line blocks.
/// The partial line carried between reads is bounded by `max_line`: past it, the line is
/// cut and the rest of it skipped.
fn reader_thread<R: Read>(
    mut input: R,
    max_line: usize,
    tx: tokio::sync::mpsc::Sender<Result<Block, std::io::Error>>,
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        let mut chunk = &buf[..n];
        if skipping {
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    skipping = false;
                    chunk = &chunk[i + 1..];
                }
                None => continue,
            }
        }
        match memchr::memrchr(b'\n', chunk) {
            Some(i) => {
                let mut out = Vec::with_capacity(carry.len() + i + 1);
                out.extend_from_slice(&carry);
                out.extend_from_slice(&chunk[..=i]);
                carry.clear();
                carry.extend_from_slice(&chunk[i + 1..]);
                if tx
                    .blocking_send(Ok(Block {
                        data: out,
                        truncated: 0,
                    }))
                    .is_err()
                {
                    return;
                }
            }
            None => carry.extend_from_slice(chunk),
        }
        if carry.len() > max_line {
            let mut cut = std::mem::take(&mut carry);
            cut.truncate(max_line);
            cut.push(b'\n');
            skipping = true;
            if tx
                .blocking_send(Ok(Block {
                    data: cut,
                    truncated: 1,
                }))
                .is_err()
            {
                return;
            }
        }
    }
    if !carry.is_empty() {
        carry.push(b'\n');
        let _ = tx.blocking_send(Ok(Block {
            data: carry,
            truncated: 0,
        }));
    }
}

struct Buffers {
    parts: BTreeMap<i64, (Vec<u8>, u64)>,
    bytes: usize,
}

/// Ingests JSON lines from `input` into `lake` until end of input.
pub async fn ingest<R: Read + Send + 'static>(
    lake: &Lake,
    input: R,
    opts: &IngestOptions,
) -> Result<IngestReport, EtlError> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let max_line = opts.max_line_bytes.max(64);
    let reader = std::thread::spawn(move || reader_thread(input, max_line, tx));
    let run_id = format!(
        "{:x}{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        std::process::id()
    );
    let mut report = IngestReport::default();
    let mut seen_parts = std::collections::BTreeSet::new();
    let mut bufs = Buffers {
        parts: BTreeMap::new(),
        bytes: 0,
    };
    let mut last_flush = Instant::now();
    let mut seq = 0u64;
    loop {
        let wait = opts.flush_interval.saturating_sub(last_flush.elapsed());
        let msg = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(m) => m,
            Err(_) => {
                flush(lake, &mut bufs, opts, &run_id, &mut seq, &mut report).await?;
                last_flush = Instant::now();
                continue;
            }
        };
        let Some(block) = msg else { break };
        let block = block.map_err(EtlError::Input)?;
        report.truncated_lines += block.truncated;
        report.bytes_in += block.data.len() as u64;
        let arrival = now_secs().div_euclid(3600);
        for line in block.data.split_inclusive(|&c| c == b'\n') {
            if line.iter().all(|c| c.is_ascii_whitespace()) {
                report.blank_lines += 1;
                continue;
            }
            let hour = event_hour(line).unwrap_or_else(|| {
                report.without_event_time += 1;
                arrival
            });
            let e = bufs.parts.entry(hour).or_default();
            if line.len() > max_line + 1 {
                e.0.extend_from_slice(&line[..max_line]);
                e.0.push(b'\n');
                report.truncated_lines += 1;
            } else {
                e.0.extend_from_slice(line);
            }
            e.1 += 1;
            bufs.bytes += line.len();
            seen_parts.insert(hour);
            if bufs.bytes >= opts.max_buffer_bytes {
                flush(lake, &mut bufs, opts, &run_id, &mut seq, &mut report).await?;
                last_flush = Instant::now();
            }
        }
        if last_flush.elapsed() >= opts.flush_interval {
            flush(lake, &mut bufs, opts, &run_id, &mut seq, &mut report).await?;
            last_flush = Instant::now();
        }
    }
    flush(lake, &mut bufs, opts, &run_id, &mut seq, &mut report).await?;
    let _ = reader.join();
    report.partitions = seen_parts.len() as u64;
    report.seconds = started.elapsed().as_secs_f64();
    report.events_per_second = report.events as f64 / report.seconds.max(1e-9);
    Ok(report)
}

async fn flush(
    lake: &Lake,
    bufs: &mut Buffers,
    opts: &IngestOptions,
    run_id: &str,
    seq: &mut u64,
    report: &mut IngestReport,
) -> Result<(), EtlError> {
    if bufs.parts.is_empty() {
        return Ok(());
    }
    let parts: Vec<(i64, (Vec<u8>, u64))> = std::mem::take(&mut bufs.parts).into_iter().collect();
    bufs.bytes = 0;
    let level = opts.gzip_level;
    let compressed = tokio::task::spawn_blocking(move || {
        parts
            .into_par_iter()
            .map(|(hour, (data, n))| {
                let lvl =
                    libdeflater::CompressionLvl::new(level).map_err(|_| EtlError::Compress)?;
                let mut c = libdeflater::Compressor::new(lvl);
                let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
                let len = c
                    .gzip_compress(&data, &mut out)
                    .map_err(|_| EtlError::Compress)?;
                out.truncate(len);
                Ok((hour, Bytes::from(out), n))
            })
            .collect::<Result<Vec<_>, EtlError>>()
    })
    .await
    .map_err(EtlError::Worker)??;
    *seq += 1;
    let writes = compressed.into_iter().map(|(hour, data, n)| {
        let rel = format!(
            "{RAW_TABLE}/{}/ingest-{run_id}-{:06}.jsonl.gz",
            Partition { hour }.dir(),
            *seq
        );
        async move {
            let len = data.len() as u64;
            lake.put(&rel, data).await.map(|_| (n, len))
        }
    });
    for r in futures::future::join_all(writes).await {
        // Count what committed even if a sibling write failed, then report the failure.
        let (n, len) = r?;
        report.events += n;
        report.bytes_written += len;
        report.files += 1;
    }
    report.flushes += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_event_hour() {
        assert_eq!(
            event_hour(br#"{"event_id":"a","search_ts":"1970-01-01T02:59:59Z"}"#),
            Some(2)
        );
        assert_eq!(event_hour(br#"{"search_ts":"garbage"}"#), None);
        assert_eq!(event_hour(b"not json"), None);
    }
}
