//! Raw to curated.
//!
//! Each raw hour partition is processed as a unit: its files are read in name order, each
//! line validated by [`contrail_events::parse_line`], exact duplicates (same event id,
//! same content) dropped and counted, conflicting duplicates and invalid rows quarantined
//! with their raw text, source file, line number and reason. The outputs of a partition
//! are `curated/.../part-00000.parquet` (sorted by search time, then event id),
//! `quarantine/.../part-00000.parquet` and, written last as the commit point,
//! `curated/.../_etl.json`, which records the exact raw inputs (name, size, version) and
//! the partition's accounting. A partition whose inputs are unchanged is skipped; one
//! with new or changed raw files is redone whole, so late data is never lost and a
//! re-run writes the same bytes.
//!
//! Duplicates are found within a partition: partitions are keyed by event time, so a
//! redelivered event always lands in the partition of its first delivery.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use contrail_events::schema::{curated_schema, events_to_batch};
use contrail_events::{parse_line, Event, RejectReason};
use contrail_store::partition::{list_partitions, HourRange, Partition};
use contrail_store::{parquet_io, Lake};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{EtlError, CURATED_TABLE, QUARANTINE_TABLE, RAW_TABLE};

pub const PART_FILE: &str = "part-00000.parquet";
pub const STATE_FILE: &str = "_etl.json";
pub const SUMMARY_FILE: &str = "meta/etl/summary.json";

#[derive(Debug, Clone)]
pub struct EtlOptions {
    pub range: HourRange,
    /// When set, these exact partitions must exist (a missing one is an error).
    pub partitions: Option<Vec<Partition>>,
    /// Lines longer than this are quarantined as `line_too_long`.
    pub max_line_bytes: usize,
    /// A raw file that inflates past this many bytes is cut there and quarantined as
    /// `corrupt_file` (a gzip bomb cannot exhaust memory).
    pub max_file_bytes: u64,
    /// Partitions processed per parallel chunk.
    pub chunk: usize,
    /// Redo every partition even if its inputs are unchanged.
    pub force: bool,
}

impl Default for EtlOptions {
    fn default() -> Self {
        EtlOptions {
            range: HourRange::all(),
            partitions: None,
            max_line_bytes: 1 << 20,
            max_file_bytes: 4 << 30,
            chunk: (rayon::current_num_threads() * 4).max(4),
            force: false,
        }
    }
}

/// Exact accounting for one partition or a whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub files: u64,
    pub bytes: u64,
    pub rows_read: u64,
    pub curated: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    /// Empty lines, which are not rows.
    pub blank_lines: u64,
    pub by_reason: BTreeMap<String, u64>,
}

impl Accounting {
    pub fn add(&mut self, o: &Accounting) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.rows_read += o.rows_read;
        self.curated += o.curated;
        self.quarantined += o.quarantined;
        self.duplicates += o.duplicates;
        self.blank_lines += o.blank_lines;
        for (k, v) in &o.by_reason {
            *self.by_reason.entry(k.clone()).or_default() += v;
        }
    }
    /// rows read = curated + quarantined + duplicates, and the reasons add up.
    pub fn balanced(&self) -> bool {
        self.rows_read == self.curated + self.quarantined + self.duplicates
            && self.by_reason.values().sum::<u64>() == self.quarantined
    }
}

/// One raw input file as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub name: String,
    pub size: u64,
    pub version: String,
}

/// The commit record of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub format: u32,
    pub inputs: Vec<InputFile>,
    pub accounting: Accounting,
}

/// What one ETL run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EtlReport {
    pub lake: String,
    pub partitions_seen: u64,
    pub partitions_processed: u64,
    pub partitions_unchanged: u64,
    /// Accounting of the partitions processed in this run.
    pub run: Accounting,
    /// Accounting of every curated partition in the range, this run's and earlier ones.
    pub lake_total: Accounting,
    pub seconds: f64,
    pub rows_per_second: f64,
}

pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("source_file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("raw_text", DataType::Utf8, false),
    ]))
}

struct Quarantined {
    file: Arc<str>,
    line: u64,
    reason: RejectReason,
    detail: String,
    raw: String,
}

/// The result of processing one partition, ready to write.
pub struct PartitionOutput {
    pub partition: Partition,
    pub curated: Option<Bytes>,
    /// The curated rows' statistics ([`crate::stats`]), as JSON.
    pub stats: Option<Bytes>,
    pub quarantine: Option<Bytes>,
    pub state: PartitionState,
}

fn version_of(m: &contrail_store::object_store::ObjectMeta) -> String {
    m.e_tag
        .clone()
        .unwrap_or_else(|| m.last_modified.timestamp_millis().to_string())
}

fn is_raw_file(name: &str) -> bool {
    !name.starts_with('_')
        && !name.starts_with('.')
        && (name.ends_with(".jsonl.gz") || name.ends_with(".jsonl"))
}

/// Inflates a raw file. Returns the text and, if the file could not be read to its end,
/// why not.
fn inflate(name: &str, data: &[u8], limit: u64) -> (Vec<u8>, Option<String>) {
    if !name.ends_with(".gz") {
        return (data.to_vec(), None);
    }
    // Size hint from the gzip trailer (the last member's size mod 2^32): trusted only as a
    // first reservation, capped at 64 MiB; the buffer grows with what actually inflates.
    let hint = data
        .len()
        .checked_sub(4)
        .map(|i| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(hint.max(data.len() * 4).min(64 << 20).min(limit as usize));
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(limit + 1);
    match dec.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > limit => {
            out.truncate(limit as usize);
            (out, Some(format!("inflates past the {limit}-byte limit")))
        }
        Ok(_) => (out, None),
        Err(e) => (
            out,
            Some(format!("gzip stream ends early or is corrupt: {e}")),
        ),
    }
}

/// Validates, deduplicates and encodes one partition's raw files (`(name, bytes)` in
/// name order). Pure: the same inputs give the same bytes.
pub fn process_partition(
    lake_url: &str,
    partition: Partition,
    files: &[(InputFile, Bytes)],
    opts: &EtlOptions,
) -> Result<PartitionOutput, EtlError> {
    let mut acc = Accounting::default();
    let mut good: Vec<Event> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut bad: Vec<Quarantined> = Vec::new();
    let dir = partition.dir();
    for (meta, data) in files {
        acc.files += 1;
        acc.bytes += data.len() as u64;
        let file: Arc<str> = Arc::from(format!("{RAW_TABLE}/{dir}/{}", meta.name).as_str());
        let (text, broken) = inflate(&meta.name, data, opts.max_file_bytes);
        // Complete lines only; a tail without its newline is complete only if the file is.
        let mut body: &[u8] = &text;
        let mut tail: &[u8] = &[];
        if broken.is_some() {
            let cut = memchr::memrchr(b'\n', &text).map_or(0, |i| i + 1);
            body = &text[..cut];
            tail = &text[cut..];
        }
        let mut line_no = 0u64;
        for raw in body.split(|&c| c == b'\n') {
            line_no += 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|c| c.is_ascii_whitespace()) {
                acc.blank_lines += 1;
                continue;
            }
            acc.rows_read += 1;
            let reject = |reason, detail: String, raw: String| Quarantined {
                file: file.clone(),
                line: line_no,
                reason,
                detail,
                raw,
            };
            if raw.len() > opts.max_line_bytes {
                let keep =
                    String::from_utf8_lossy(&raw[..opts.max_line_bytes.min(4096)]).into_owned();
                bad.push(reject(
                    RejectReason::LineTooLong,
                    format!(
                        "{} bytes (limit {}); raw_text keeps the first 4096",
                        raw.len(),
                        opts.max_line_bytes
                    ),
                    keep,
                ));
                continue;
            }
            let Ok(s) = std::str::from_utf8(raw) else {
                bad.push(reject(
                    RejectReason::InvalidUtf8,
                    "not UTF-8 (raw_text is a lossy copy)".into(),
                    String::from_utf8_lossy(raw).into_owned(),
                ));
                continue;
            };
            match parse_line(s) {
                Ok(e) => match seen.get(&e.event_id) {
                    Some(&i) if good[i] == e => acc.duplicates += 1,
                    Some(_) => bad.push(reject(
                        RejectReason::ConflictingDuplicate,
                        format!("event_id {} seen before with other content", e.event_id),
                        s.to_string(),
                    )),
                    None => {
                        seen.insert(e.event_id.clone(), good.len());
                        good.push(e);
                    }
                },
                Err(r) => bad.push(reject(r.reason, r.detail, s.to_string())),
            }
        }
        // `split` yields one empty piece after a final newline: not a line.
        if body.last() == Some(&b'\n') || body.is_empty() {
            acc.blank_lines = acc.blank_lines.saturating_sub(1);
        }
        if let Some(why) = broken {
            acc.rows_read += 1;
            bad.push(Quarantined {
                file: file.clone(),
                line: line_no.max(1),
                reason: RejectReason::CorruptFile,
                detail: why,
                raw: String::from_utf8_lossy(tail).into_owned(),
            });
        }
    }
    good.sort_by(|a, b| {
        a.search_ts
            .cmp(&b.search_ts)
            .then_with(|| a.event_id.cmp(&b.event_id))
    });
    acc.curated = good.len() as u64;
    acc.quarantined = bad.len() as u64;
    for q in &bad {
        *acc.by_reason
            .entry(q.reason.as_str().to_string())
            .or_default() += 1;
    }
    let curated = if good.is_empty() {
        None
    } else {
        let batch = events_to_batch(&good).map_err(|source| EtlError::Build {
            what: "curated batch",
            partition: partition.to_string(),
            source,
        })?;
        let url = format!("{lake_url}/{CURATED_TABLE}/{dir}/{PART_FILE}");
        let stats = crate::stats::partition_stats(&batch);
        Some((
            parquet_io::encode(curated_schema(), &[batch], &url)?,
            serde_json::to_vec_pretty(&stats).unwrap_or_default(),
        ))
    };
    let (curated, stats) = match curated {
        Some((c, s)) => (Some(c), Some(Bytes::from(s))),
        None => (None, None),
    };
    let quarantine = if bad.is_empty() {
        None
    } else {
        let n = bad.len();
        let mut file = StringBuilder::with_capacity(n, n * 64);
        let mut line = Int64Builder::with_capacity(n);
        let mut reason = StringBuilder::with_capacity(n, n * 16);
        let mut detail = StringBuilder::with_capacity(n, n * 48);
        let mut raw = StringBuilder::with_capacity(n, n * 400);
        for q in &bad {
            file.append_value(&*q.file);
            line.append_value(q.line as i64);
            reason.append_value(q.reason.as_str());
            detail.append_value(&q.detail);
            raw.append_value(&q.raw);
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(file.finish()),
            Arc::new(line.finish()),
            Arc::new(reason.finish()),
            Arc::new(detail.finish()),
            Arc::new(raw.finish()),
        ];
        let batch =
            RecordBatch::try_new(quarantine_schema(), cols).map_err(|e| EtlError::Build {
                what: "quarantine batch",
                partition: partition.to_string(),
                source: contrail_events::schema::SchemaError::Arrow(e),
            })?;
        let url = format!("{lake_url}/{QUARANTINE_TABLE}/{dir}/{PART_FILE}");
        Some(parquet_io::encode(quarantine_schema(), &[batch], &url)?)
    };
    let state = PartitionState {
        format: 1,
        inputs: files.iter().map(|(m, _)| m.clone()).collect(),
        accounting: acc,
    };
    Ok(PartitionOutput {
        partition,
        curated,
        stats,
        quarantine,
        state,
    })
}

async fn read_state(lake: &Lake, p: Partition) -> Result<Option<PartitionState>, EtlError> {
    let rel = format!("{CURATED_TABLE}/{}/{STATE_FILE}", p.dir());
    match lake.get_opt(&rel).await? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| EtlError::BadState {
                url: lake.display(&rel),
                source,
            }),
    }
}

async fn list_inputs(lake: &Lake, p: Partition) -> Result<Vec<InputFile>, EtlError> {
    let dir = format!("{RAW_TABLE}/{}", p.dir());
    let mut v = Vec::new();
    for m in lake.list(&dir).await? {
        let rel = lake.relative(&m.location);
        let name = rel.rsplit('/').next().unwrap_or(rel);
        // Only files directly in the partition folder.
        if rel.trim_start_matches(&dir).trim_start_matches('/') != name || !is_raw_file(name) {
            continue;
        }
        v.push(InputFile {
            name: name.to_string(),
            size: m.size,
            version: version_of(&m),
        });
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

async fn write_output(lake: &Lake, out: PartitionOutput) -> Result<(), EtlError> {
    let dir = out.partition.dir();
    let cur = format!("{CURATED_TABLE}/{dir}/{PART_FILE}");
    let qua = format!("{QUARANTINE_TABLE}/{dir}/{PART_FILE}");
    let stats = format!("{CURATED_TABLE}/{dir}/{}", crate::stats::STATS_FILE);
    match out.curated {
        Some(b) => lake.put(&cur, b).await?,
        None => lake.delete(&cur).await?,
    }
    match out.stats {
        Some(b) => lake.put(&stats, b).await?,
        None => lake.delete(&stats).await?,
    }
    match out.quarantine {
        Some(b) => lake.put(&qua, b).await?,
        None => lake.delete(&qua).await?,
    }
    let state = serde_json::to_vec_pretty(&out.state).unwrap_or_default();
    lake.put(
        &format!("{CURATED_TABLE}/{dir}/{STATE_FILE}"),
        Bytes::from(state),
    )
    .await?;
    Ok(())
}

struct Job {
    partition: Partition,
    files: Vec<(InputFile, Bytes)>,
}

async fn fetch(lake: &Lake, partition: Partition, inputs: Vec<InputFile>) -> Result<Job, EtlError> {
    let dir = format!("{RAW_TABLE}/{}", partition.dir());
    let datas = futures::future::try_join_all(inputs.iter().map(|f| {
        let rel = format!("{dir}/{}", f.name);
        async move { lake.get(&rel).await }
    }))
    .await?;
    // Record the size actually read (a file replaced between list and get is redone on
    // the next run because its version then differs).
    let files = inputs
        .into_iter()
        .zip(datas)
        .map(|(mut f, d)| {
            f.size = d.len() as u64;
            (f, d)
        })
        .collect();
    Ok(Job { partition, files })
}

/// Runs the ETL over the raw partitions in `opts.range`.
pub async fn run(lake: &Lake, opts: &EtlOptions) -> Result<EtlReport, EtlError> {
    let started = std::time::Instant::now();
    let mut partitions = list_partitions(lake, RAW_TABLE, opts.range).await?;
    if let Some(want) = &opts.partitions {
        for p in want {
            if !partitions.contains(p) {
                return Err(EtlError::PartitionNotFound {
                    partition: p.to_string(),
                    url: lake.display(&format!("{RAW_TABLE}/{}", p.dir())),
                });
            }
        }
        partitions.retain(|p| want.contains(p));
    }
    let mut report = EtlReport {
        lake: lake.url().to_string(),
        partitions_seen: partitions.len() as u64,
        ..Default::default()
    };
    // Decide what to do, partition by partition.
    let mut todo = Vec::new();
    for p in &partitions {
        let inputs = list_inputs(lake, *p).await?;
        let state = read_state(lake, *p).await?;
        match state {
            Some(s) if !opts.force && s.inputs == inputs => {
                report.partitions_unchanged += 1;
                report.lake_total.add(&s.accounting);
            }
            _ => todo.push((*p, inputs)),
        }
    }
    let url = lake.url().to_string();
    let opts_arc = Arc::new(opts.clone());
    let mut chunks = todo
        .chunks(opts.chunk.max(1))
        .map(|c| c.to_vec())
        .collect::<Vec<_>>()
        .into_iter();
    let spawn_chunk = |chunk: Vec<(Partition, Vec<InputFile>)>| {
        let lake = lake.clone();
        let url = url.clone();
        let opts = opts_arc.clone();
        tokio::spawn(async move {
            let jobs = futures::future::try_join_all(
                chunk.into_iter().map(|(p, inputs)| fetch(&lake, p, inputs)),
            )
            .await?;
            tokio::task::spawn_blocking(move || {
                jobs.par_iter()
                    .map(|j| process_partition(&url, j.partition, &j.files, &opts))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(EtlError::Worker)?
        })
    };
    let mut pending = chunks.next().map(spawn_chunk);
    while let Some(job) = pending.take() {
        let outs = job.await.map_err(EtlError::Worker)??;
        pending = chunks.next().map(spawn_chunk);
        for o in &outs {
            report.run.add(&o.state.accounting);
            report.lake_total.add(&o.state.accounting);
        }
        report.partitions_processed += outs.len() as u64;
        futures::future::try_join_all(outs.into_iter().map(|o| write_output(lake, o))).await?;
    }
    if report.partitions_processed > 0 || lake.get_opt(SUMMARY_FILE).await?.is_none() {
        let summary = serde_json::to_vec_pretty(&report.lake_total).unwrap_or_default();
        lake.put(SUMMARY_FILE, Bytes::from(summary)).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.rows_per_second = report.run.rows_read as f64 / report.seconds.max(1e-9);
    Ok(report)
}

/// The curated Parquet files in `range`, in time order.
pub async fn curated_files(lake: &Lake, range: HourRange) -> Result<Vec<String>, EtlError> {
    let mut out = Vec::new();
    for p in list_partitions(lake, CURATED_TABLE, range).await? {
        for m in lake.list(&format!("{CURATED_TABLE}/{}", p.dir())).await? {
            let rel = lake.relative(&m.location).to_string();
            if rel.ends_with(".parquet") && !rel.rsplit('/').next().unwrap_or("").starts_with('_') {
                out.push(rel);
            }
        }
    }
    Ok(out)
}
