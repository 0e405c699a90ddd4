//! Batch scoring: `contrail score` (docs/scoring.md).
//!
//! One output part per input part, named `<input part stem>-<model hash>.parquet` (the
//! input part's folders kept), with bytes that depend only on the input rows, the model
//! and the kept columns. Each part commits atomically and without overwriting: on local
//! disk a temporary file in the output folder is written, fsynced and hard-linked to its
//! final name (which fails if the name exists), then the folder is fsynced; on an object
//! store the part is one conditional PUT (`If-None-Match: *`). A part that is already
//! there is checked (footer, row count, schema, or the same bytes after a lost race) and
//! skipped, so a re-run after a crash scores only what is missing. At the end `_SUCCESS`
//! lists every part with its row count and SHA-256.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BooleanArray, Float64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::errors::ParquetError;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::gbdt::data::{is_numeric_type, is_string_type, Columns, FeatureKind};
use crate::gbdt::iforest::Forest;
use crate::gbdt::{Booster, Device, GbdtError};
use crate::models::{self, Model, ModelError};
use crate::store::parquet_io::{self, ScanOptions};
use crate::store::{resolve_parquet, Lake, StoreError};

/// The manifest written last, when every part is committed.
pub const SUCCESS: &str = "_SUCCESS";
/// Format tag of the `_SUCCESS` manifest.
pub const MANIFEST_FORMAT: &str = "contrail-score/1";
/// Rows handed to the Parquet writer at a time: output bytes do not depend on
/// `--batch-rows` or on the input's row groups, only on the rows.
const WRITE_CHUNK_ROWS: usize = 16_384;
/// Attempts at a conditional create on an object store when the request itself fails
/// (object_store retries throttling and 5xx itself, but not a reset connection on a
/// non-idempotent PUT).
const COMMIT_ATTEMPTS: u32 = 6;
/// The largest object one S3 PUT creates; a part is committed by a single conditional
/// PUT (object_store does not offer a conditional multipart upload).
const MAX_PUT_BYTES: u64 = 5 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
    #[error("{option}: {reason}")]
    BadOption {
        option: &'static str,
        reason: String,
    },
    #[error("{url}: no Parquet parts to score")]
    NoInput { url: String },
    #[error("{file}: column `{column}` that the model needs is missing (the model's features: {features})")]
    MissingColumn {
        file: String,
        column: String,
        features: String,
    },
    #[error("{file}: column `{column}` is {found}; the model needs {want}")]
    WrongType {
        file: String,
        column: String,
        found: String,
        want: &'static str,
    },
    #[error("{file}: --keep column `{column}` is not in the input")]
    KeepMissing { file: String, column: String },
    #[error("{file}: the input already has a `{column}` column, which the job writes (leave it out with --keep)")]
    ColumnClash { file: String, column: String },
    #[error(
        "{file}: the model's features are computed from curated rows, and these rows do not fit"
    )]
    Features {
        file: String,
        #[source]
        source: crate::features::FeatureError,
    },
    #[error("{url} exists but is not this job's output for {input}: {reason} (delete it to score that part again)")]
    ExistingPart {
        url: String,
        input: String,
        reason: String,
    },
    #[error("{url} was committed by another writer with different bytes (another model, --keep or input?)")]
    Conflict { url: String },
    #[error("the output of {file} is {bytes} bytes, more than one conditional PUT takes (5 GiB): split the input part")]
    PartTooLarge { file: String, bytes: u64 },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the output of {file}")]
    Arrow {
        file: String,
        #[source]
        source: ArrowError,
    },
    #[error("encoding the output of {file}")]
    Parquet {
        file: String,
        #[source]
        source: ParquetError,
    },
    #[error("internal error: {reason}")]
    Internal { reason: String },
    #[error("{file}: its footer declares {declared} rows but {read} were read")]
    RowCount {
        file: String,
        declared: u64,
        read: u64,
    },
}

impl ScoreError {
    /// True for bad input, options or output folders; false for faults of the program.
    pub fn is_user_error(&self) -> bool {
        match self {
            ScoreError::Store(e) => e.is_user_error(),
            ScoreError::Model(e) => e.is_user_error(),
            ScoreError::Gbdt(e) => e.is_user_error(),
            ScoreError::Arrow { .. } | ScoreError::Parquet { .. } | ScoreError::Internal { .. } => {
                false
            }
            ScoreError::RowCount { .. } => true,
            ScoreError::Io { .. } => true,
            ScoreError::BadOption { .. }
            | ScoreError::NoInput { .. }
            | ScoreError::MissingColumn { .. }
            | ScoreError::WrongType { .. }
            | ScoreError::KeepMissing { .. }
            | ScoreError::ColumnClash { .. }
            | ScoreError::Features { .. }
            | ScoreError::PartTooLarge { .. }
            | ScoreError::ExistingPart { .. }
            | ScoreError::Conflict { .. } => true,
        }
    }
}

/// What `contrail score` was asked to do.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// The model package (any URL).
    pub model: String,
    /// A Parquet file, or a folder/prefix of them (every `*.parquet` under it, sorted).
    pub input: String,
    /// The output folder or prefix.
    pub output: String,
    pub device: Device,
    /// Rows read and predicted at a time.
    pub batch_rows: usize,
    /// Input columns copied to the output; `None`: all of them.
    pub keep: Option<Vec<String>>,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
}

/// One part in `_SUCCESS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestPart {
    /// The input part, relative to the input folder.
    pub input: String,
    /// The output part, relative to the output folder.
    pub output: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the output part, lowercase hex.
    pub sha256: String,
}

/// `_SUCCESS`: what the output holds. No URLs or times, so equal jobs write equal bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// `gbdt` or `isolation_forest`.
    pub model_kind: String,
    /// SHA-256 of the model package's bytes.
    pub model_sha256: String,
    /// Output columns, in order.
    pub columns: Vec<String>,
    pub parts: Vec<ManifestPart>,
    pub total_rows: u64,
}

/// The JSON summary `contrail score` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub output: String,
    pub model_sha256: String,
    pub parts: usize,
    /// Parts this run scored and committed.
    pub parts_scored: usize,
    /// Parts already present from an earlier run (checked and kept).
    pub parts_skipped: usize,
    /// Parts this run scored but another writer committed first, with the same bytes.
    pub parts_committed_by_another: usize,
    /// Rows in the output.
    pub rows: u64,
    /// Rows this run scored.
    pub rows_scored: u64,
    pub seconds: f64,
    /// Rows scored per second of the whole run (read, predict, encode, commit).
    pub rows_per_second: f64,
    /// Rows per second of the predictor alone.
    pub predict_rows_per_second: f64,
}

/// The model, ready to score a batch.
enum Scorer {
    Gbdt {
        booster: Box<Booster>,
        cols: Columns,
        device: Device,
    },
    Forest {
        forest: Box<Forest>,
        cols: Columns,
    },
    Nn {
        model: Box<crate::nn::NnModel>,
        cols: Columns,
        names: Vec<String>,
    },
}

impl Scorer {
    fn kind(&self) -> &'static str {
        match self {
            Scorer::Gbdt { .. } => "gbdt",
            Scorer::Forest { .. } => crate::gbdt::iforest::MODEL_KIND,
            Scorer::Nn { .. } => crate::nn::package::MODEL_KIND,
        }
    }

    fn features(&self) -> &[String] {
        match self {
            Scorer::Gbdt { booster, .. } => &booster.feature_names,
            Scorer::Forest { forest, .. } => &forest.feature_names,
            Scorer::Nn { names, .. } => names,
        }
    }

    /// The columns the job adds.
    fn output_fields(&self) -> Vec<Field> {
        match self {
            Scorer::Gbdt { .. } | Scorer::Nn { .. } => {
                vec![Field::new("prediction", DataType::Float64, false)]
            }
            Scorer::Forest { .. } => vec![
                Field::new("anomaly_score", DataType::Float64, false),
                Field::new("is_anomaly", DataType::Boolean, false),
            ],
        }
    }

    /// What feature `i` needs of its input column: (accepts, description).
    fn accepts(&self, i: usize, dt: &DataType) -> (bool, &'static str) {
        match self {
            Scorer::Gbdt { booster, .. }
                if booster.feature_kinds.get(i) == Some(&FeatureKind::Categorical) =>
            {
                (
                    is_string_type(dt) || is_numeric_type(dt),
                    "a string (categorical) or numeric column",
                )
            }
            Scorer::Nn { cols, names, .. }
                if names.get(i).is_some_and(|n| cols.categorical.contains(n)) =>
            {
                (
                    is_string_type(dt) || is_numeric_type(dt),
                    "a string (categorical) or numeric column",
                )
            }
            _ => (is_numeric_type(dt), "a numeric or boolean column"),
        }
    }

    /// Predictions for one batch of feature columns, as output columns; and the seconds
    /// spent in the predictor.
    fn score(
        &self,
        features: &RecordBatch,
        file: &str,
    ) -> Result<(Vec<ArrayRef>, f64), ScoreError> {
        match self {
            Scorer::Gbdt {
                booster,
                cols,
                device,
            } => {
                let d = crate::gbdt::data::features_only(features, cols, file)?;
                let x = booster.prepare(&d)?;
                let t = Instant::now();
                let raw = match device {
                    Device::Cpu => booster.predict_raw(&x, None),
                    dev => crate::gbdt::device::predict_raw(dev, booster, &x, None)?,
                };
                let p: Vec<f64> = raw.into_iter().map(|s| booster.response(s)).collect();
                let secs = t.elapsed().as_secs_f64();
                Ok((vec![Arc::new(Float64Array::from(p))], secs))
            }
            Scorer::Nn { model, cols, .. } => {
                let d = crate::gbdt::data::features_only(features, cols, file)?;
                let t = Instant::now();
                let p = model.predict(&d).map_err(ModelError::from)?;
                let secs = t.elapsed().as_secs_f64();
                Ok((vec![Arc::new(Float64Array::from(p))], secs))
            }
            Scorer::Forest { forest, cols } => {
                let d = crate::gbdt::data::features_only(features, cols, file)?;
                let t = Instant::now();
                let s = forest.score(&d)?;
                let secs = t.elapsed().as_secs_f64();
                let flags: Vec<bool> = s.iter().map(|x| forest.is_anomaly(*x)).collect();
                Ok((
                    vec![
                        Arc::new(Float64Array::from(s)),
                        Arc::new(BooleanArray::from(flags)),
                    ],
                    secs,
                ))
            }
        }
    }
}

/// Whether the folder or prefix `inner` is `outer` or lies under it (paths compared
/// after resolving `.`/`..` and symlinks where they exist).
fn nested(inner: &str, outer: &str) -> bool {
    let norm = |u: &str| -> String {
        let u = u.trim_end_matches('/');
        if u.contains("://") && !u.starts_with("file://") {
            return u.to_string();
        }
        let p = u.strip_prefix("file://").unwrap_or(u);
        let p = if p.is_empty() { "." } else { p };
        // Resolve the longest existing ancestor, keep the rest as written.
        let path = FsPath::new(p);
        let mut base = path;
        let mut rest = Vec::new();
        loop {
            if let Ok(c) = std::fs::canonicalize(base) {
                let mut c = c;
                for r in rest.iter().rev() {
                    c.push(r);
                }
                return c.display().to_string();
            }
            match (base.parent(), base.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    base = if parent.as_os_str().is_empty() {
                        FsPath::new(".")
                    } else {
                        parent
                    };
                }
                _ => return p.to_string(),
            }
        }
    };
    if outer.ends_with(".parquet") {
        return false;
    }
    let (i, o) = (norm(inner), norm(outer));
    i == o || i.starts_with(&format!("{o}/"))
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The output part's name for an input part: the same folders, the file's stem, and the
/// first 16 hex digits of the model's SHA-256.
pub fn output_name(input_rel: &str, model_sha256: &str) -> String {
    let (dir, file) = match input_rel.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, input_rel),
    };
    let stem = file.strip_suffix(".parquet").unwrap_or(file);
    let hash = &model_sha256[..model_sha256.len().min(16)];
    match dir {
        Some(d) => format!("{d}/{stem}-{hash}.parquet"),
        None => format!("{stem}-{hash}.parquet"),
    }
}

/// Where the output goes: a local folder (committed by temp file, fsync, link) or an
/// object store (committed by conditional PUT).
enum Sink {
    Local { root: PathBuf, url: String },
    Store { lake: Lake },
}

impl Sink {
    fn for_url(url: &str) -> Result<Sink, ScoreError> {
        if url.contains("://") && !url.starts_with("file://") {
            return Ok(Sink::Store {
                lake: Lake::open(url)?,
            });
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(ScoreError::BadOption {
                option: "--output",
                reason: "empty path".into(),
            });
        }
        Ok(Sink::Local {
            root: PathBuf::from(path),
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn display(&self, rel: &str) -> String {
        match self {
            Sink::Local { url, .. } => format!("{url}/{rel}"),
            Sink::Store { lake } => lake.display(rel),
        }
    }

    /// Creates the output folder (local disk only; nothing is written before validation).
    fn create(&self) -> Result<(), ScoreError> {
        if let Sink::Local { root, .. } = self {
            std::fs::create_dir_all(root).map_err(|source| ScoreError::Io {
                op: "creating the output folder",
                path: root.display().to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The bytes at `rel`, if there are any.
    async fn read(&self, rel: &str) -> Result<Option<Bytes>, ScoreError> {
        match self {
            Sink::Local { root, .. } => match std::fs::read(root.join(rel)) {
                Ok(b) => Ok(Some(Bytes::from(b))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(ScoreError::Io {
                    op: "reading",
                    path: self.display(rel),
                    source,
                }),
            },
            Sink::Store { lake } => Ok(lake.get_opt(rel).await?),
        }
    }

    /// Removes temporary files that killed runs left (their process is gone). Other
    /// temporary files are ignored: a concurrent job may be about to link one.
    fn clean_temp_files(&self) {
        let Sink::Local { root, .. } = self else {
            return;
        };
        if !FsPath::new("/proc/self").exists() {
            return; // no way to tell a live writer from a dead one
        }
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = temp_file_pid(&name) {
                    if !FsPath::new(&format!("/proc/{pid}")).exists() {
                        debug!("removing {} (left by a killed run)", p.display());
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
    }

    /// Commits `bytes` at `rel` unless something is there already; then, the same bytes
    /// are success ([`Committed::ByAnother`]) and other bytes [`ScoreError::Conflict`].
    async fn commit(&self, rel: &str, bytes: Bytes) -> Result<Committed, ScoreError> {
        match self {
            Sink::Local { root, .. } => {
                let root = root.clone();
                let url = self.display(rel);
                tokio::task::block_in_place(|| commit_local(&root, rel, &bytes, &url, false))
            }
            Sink::Store { lake } => {
                if bytes.len() as u64 > MAX_PUT_BYTES {
                    return Err(ScoreError::PartTooLarge {
                        file: lake.display(rel),
                        bytes: bytes.len() as u64,
                    });
                }
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match lake.put_if_absent(rel, bytes.clone()).await {
                        Ok(()) => return Ok(Committed::Written),
                        Err(StoreError::AlreadyExists { .. }) => {
                            // Another writer, or our own PUT whose answer was lost.
                            return match lake.get_opt(rel).await? {
                                Some(b) if b == bytes => Ok(Committed::ByAnother),
                                _ => Err(ScoreError::Conflict {
                                    url: lake.display(rel),
                                }),
                            };
                        }
                        Err(e @ StoreError::Io { .. }) if attempt < COMMIT_ATTEMPTS => {
                            let wait = Duration::from_millis(100 << attempt.min(6));
                            let cause = std::error::Error::source(&e)
                                .map(|c| format!(": {c}"))
                                .unwrap_or_default();
                            warn!(
                                "{e}{cause} (attempt {attempt} of {COMMIT_ATTEMPTS}); retrying in {:.1}s",
                                wait.as_secs_f64()
                            );
                            tokio::time::sleep(wait).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Writes `bytes` at `rel`, replacing what is there (atomically).
    async fn replace(&self, rel: &str, bytes: Bytes) -> Result<(), ScoreError> {
        match self {
            Sink::Local { root, .. } => {
                let root = root.clone();
                let url = self.display(rel);
                tokio::task::block_in_place(|| commit_local(&root, rel, &bytes, &url, true))?;
                Ok(())
            }
            Sink::Store { lake } => Ok(lake.put(rel, bytes).await?),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    Written,
    ByAnother,
}

/// `.<name>.tmp-<pid>-<n>`: the pid of the process that writes it.
fn temp_file_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp-")?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

fn temp_name(final_name: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(".{final_name}.tmp-{}-{n}", std::process::id())
}

/// Local commit: write a temporary file beside the target, fsync it, hard-link it to the
/// final name (fails if the name exists: no overwrite) or with `replace` rename it over,
/// remove the temporary name and fsync the folder.
fn commit_local(
    root: &FsPath,
    rel: &str,
    bytes: &[u8],
    url: &str,
    replace: bool,
) -> Result<Committed, ScoreError> {
    use std::io::Write;
    let io = |op: &'static str, path: &FsPath| {
        let path = path.display().to_string();
        move |source| ScoreError::Io { op, path, source }
    };
    let target = root.join(rel);
    let dir = target.parent().unwrap_or(root).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(temp_name(&file_name));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(bytes).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        drop(f);
        let committed = if replace {
            std::fs::rename(&tmp, &target).map_err(io("renaming to", &target))?;
            Committed::Written
        } else {
            match std::fs::hard_link(&tmp, &target) {
                Ok(()) => Committed::Written,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let there = std::fs::read(&target).map_err(io("reading", &target))?;
                    if there != bytes {
                        return Err(ScoreError::Conflict {
                            url: url.to_string(),
                        });
                    }
                    Committed::ByAnother
                }
                Err(source) => return Err(io("linking to", &target)(source)),
            }
        };
        // Make the new name durable.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing the folder", &dir))?;
        Ok(committed)
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// One input part and what scoring it needs.
struct Part {
    input: String,
    output: String,
    rows: u64,
    /// Columns to read (projection).
    read: Vec<String>,
    keep: Vec<String>,
    out_schema: SchemaRef,
    /// Features computed from curated rows by the shared feature function.
    compute_features: bool,
}

/// Checks the input parts against the model and works out each part's output, before
/// anything is written.
async fn plan(
    lake: &Lake,
    files: &[String],
    scorer: &Scorer,
    keep: Option<&[String]>,
    model_sha: &str,
) -> Result<Vec<Part>, ScoreError> {
    let out_fields = scorer.output_fields();
    let mut parts = Vec::with_capacity(files.len());
    for rel in files {
        let url = lake.display(rel);
        let schema = parquet_io::open_stream(lake, rel, &ScanOptions::default())
            .await?
            .schema()
            .clone();
        let rows = parquet_io::row_count(lake, rel).await?;
        // The model's columns: as they are, or computed by the shared feature function
        // from curated rows when the model was trained on the lake's features.
        let missing: Vec<&String> = scorer
            .features()
            .iter()
            .filter(|f| schema.index_of(f).is_err())
            .collect();
        let compute_features = !missing.is_empty()
            && scorer.features().iter().all(|f| {
                crate::features::FEATURES
                    .iter()
                    .any(|d| d.name == f.as_str())
            })
            && schema.index_of("search_ts").is_ok();
        if compute_features {
            // The feature function checks the curated columns on an empty batch.
            let empty = RecordBatch::new_empty(schema.clone());
            crate::features::FeatureBuilder::new()
                .compute(&empty)
                .map_err(|source| ScoreError::Features {
                    file: url.clone(),
                    source,
                })?;
        } else {
            if let Some(m) = missing.first() {
                return Err(ScoreError::MissingColumn {
                    file: url,
                    column: (*m).clone(),
                    features: scorer.features().join(", "),
                });
            }
            for (i, f) in scorer.features().iter().enumerate() {
                let dt = schema.field_with_name(f).map(|x| x.data_type().clone());
                if let Ok(dt) = dt {
                    let (ok, want) = scorer.accepts(i, &dt);
                    if !ok {
                        return Err(ScoreError::WrongType {
                            file: url,
                            column: f.clone(),
                            found: dt.to_string(),
                            want,
                        });
                    }
                }
            }
        }
        let keep: Vec<String> = match keep {
            Some(k) => {
                for c in k {
                    if schema.index_of(c).is_err() {
                        return Err(ScoreError::KeepMissing {
                            file: url,
                            column: c.clone(),
                        });
                    }
                }
                k.to_vec()
            }
            None => schema.fields().iter().map(|f| f.name().clone()).collect(),
        };
        let mut fields: Vec<Field> = Vec::with_capacity(keep.len() + out_fields.len());
        for c in &keep {
            if out_fields.iter().any(|f| f.name() == c) {
                return Err(ScoreError::ColumnClash {
                    file: url,
                    column: c.clone(),
                });
            }
            let f = schema
                .field_with_name(c)
                .map_err(|_| ScoreError::KeepMissing {
                    file: url.clone(),
                    column: c.clone(),
                })?;
            fields.push(Field::new(c, f.data_type().clone(), f.is_nullable()));
        }
        fields.extend(out_fields.iter().cloned());
        let read: Vec<String> = if compute_features {
            schema.fields().iter().map(|f| f.name().clone()).collect()
        } else {
            let mut r = keep.clone();
            for f in scorer.features() {
                if !r.contains(f) {
                    r.push(f.clone());
                }
            }
            r
        };
        parts.push(Part {
            input: rel.clone(),
            output: output_name(rel, model_sha),
            rows,
            read,
            keep,
            out_schema: Arc::new(Schema::new(fields)),
            compute_features,
        });
    }
    Ok(parts)
}

/// Checks a part already in the output: a readable footer, the expected rows and
/// schema. Returns its manifest entry.
fn check_existing(part: &Part, bytes: &Bytes, url: &str) -> Result<ManifestPart, ScoreError> {
    let bad = |reason: String| ScoreError::ExistingPart {
        url: url.to_string(),
        input: part.input.clone(),
        reason,
    };
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .map_err(|e| bad(format!("not a readable Parquet file ({e})")))?;
    let rows = builder.metadata().file_metadata().num_rows();
    if rows < 0 || rows as u64 != part.rows {
        return Err(bad(format!(
            "{rows} rows where the input part has {}",
            part.rows
        )));
    }
    let have: Vec<(&String, &DataType)> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name(), f.data_type()))
        .collect();
    let want: Vec<(&String, &DataType)> = part
        .out_schema
        .fields()
        .iter()
        .map(|f| (f.name(), f.data_type()))
        .collect();
    if have != want {
        return Err(bad(format!(
            "columns {:?}, this job writes {:?}",
            have.iter().map(|c| c.0).collect::<Vec<_>>(),
            want.iter().map(|c| c.0).collect::<Vec<_>>()
        )));
    }
    Ok(ManifestPart {
        input: part.input.clone(),
        output: part.output.clone(),
        rows: part.rows,
        bytes: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}

/// Parquet output of one part, fed batches of any size: rows reach the writer in chunks
/// of [`WRITE_CHUNK_ROWS`], so the bytes depend on the rows alone.
/// The lake's writer settings, without dictionaries for floating-point columns: scores
/// and passed-through float features are nearly all distinct, so a dictionary costs a
/// hash a value and saves nothing (about a third of the job's time when every input
/// column is kept). The bytes are still a function of the rows alone.
fn output_properties(schema: &SchemaRef) -> parquet::file::properties::WriterProperties {
    let mut b = parquet_io::writer_properties().into_builder();
    for f in schema.fields() {
        if matches!(
            f.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        ) {
            b = b.set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(f.name().as_str()),
                false,
            );
        }
    }
    b.build()
}

struct PartWriter {
    writer: ArrowWriter<Vec<u8>>,
    schema: SchemaRef,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    file: String,
}

impl PartWriter {
    fn new(schema: SchemaRef, file: &str) -> Result<PartWriter, ScoreError> {
        let writer =
            ArrowWriter::try_new(Vec::new(), schema.clone(), Some(output_properties(&schema)))
                .map_err(|source| ScoreError::Parquet {
                    file: file.to_string(),
                    source,
                })?;
        Ok(PartWriter {
            writer,
            schema,
            pending: Vec::new(),
            pending_rows: 0,
            file: file.to_string(),
        })
    }

    fn push(&mut self, b: RecordBatch) -> Result<(), ScoreError> {
        self.pending_rows += b.num_rows();
        self.pending.push(b);
        if self.pending_rows >= WRITE_CHUNK_ROWS {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Writes whole chunks (and with `all`, the remainder).
    fn flush(&mut self, all: bool) -> Result<(), ScoreError> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let file = self.file.clone();
        let b = arrow_select::concat::concat_batches(&self.schema, &self.pending).map_err(
            |source| ScoreError::Arrow {
                file: file.clone(),
                source,
            },
        )?;
        self.pending.clear();
        let n = b.num_rows();
        let whole = if all {
            n
        } else {
            n / WRITE_CHUNK_ROWS * WRITE_CHUNK_ROWS
        };
        let mut off = 0;
        while off < whole {
            let len = WRITE_CHUNK_ROWS.min(whole - off);
            self.writer
                .write(&b.slice(off, len))
                .map_err(|source| ScoreError::Parquet {
                    file: file.clone(),
                    source,
                })?;
            off += len;
        }
        self.pending_rows = n - whole;
        if self.pending_rows > 0 {
            self.pending.push(b.slice(whole, n - whole));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Bytes, ScoreError> {
        self.flush(true)?;
        let file = self.file.clone();
        let buf = self
            .writer
            .into_inner()
            .map_err(|source| ScoreError::Parquet { file, source })?;
        Ok(Bytes::from(buf))
    }
}

/// A [`PartWriter`] on its own thread: Parquet encoding of one batch overlaps reading
/// and predicting the next (the bytes are the same: one writer sees the batches in
/// order). At most two batches wait in the channel.
struct EncodeThread {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    handle: Option<std::thread::JoinHandle<Result<Bytes, ScoreError>>>,
}

impl EncodeThread {
    fn spawn(mut w: PartWriter) -> EncodeThread {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
        let handle = std::thread::spawn(move || {
            for b in rx {
                w.push(b)?;
            }
            w.finish()
        });
        EncodeThread {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Hands a batch over; an encoding error surfaces here or at [`EncodeThread::finish`].
    fn push(&mut self, b: RecordBatch) -> Result<(), ScoreError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(b).is_ok());
        if sent {
            Ok(())
        } else {
            // The thread stopped early: its error says why.
            self.join().map(|_| ())
        }
    }

    fn join(&mut self) -> Result<Bytes, ScoreError> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(ScoreError::Internal {
                    reason: "the Parquet encoding thread panicked".into(),
                })
            }),
            None => Err(ScoreError::Internal {
                reason: "the Parquet encoding thread already finished".into(),
            }),
        }
    }

    fn finish(mut self) -> Result<Bytes, ScoreError> {
        self.join()
    }
}

/// The part's columns that the job reads, in batches of `batch_rows`, two batches ahead.
fn part_batches<'a>(
    lake: &'a Lake,
    part: &Part,
    batch_rows: usize,
) -> impl futures::Stream<Item = Result<RecordBatch, StoreError>> + 'a {
    let opts = ScanOptions {
        columns: Some(part.read.clone()),
        batch_size: batch_rows,
        read_ahead: 2,
        files_in_flight: 1,
    };
    parquet_io::scan(lake, vec![part.input.clone()], opts)
}

/// Reads, scores and encodes one part. Returns the bytes and the predictor's seconds.
async fn score_part(
    lake: &Lake,
    part: &Part,
    scorer: &Scorer,
    batch_rows: usize,
    progress: &mut Option<RowBar>,
    fb: &mut crate::features::FeatureBuilder,
) -> Result<(Bytes, f64), ScoreError> {
    let url = lake.display(&part.input);
    let mut stream = std::pin::pin!(part_batches(lake, part, batch_rows));
    let mut out = EncodeThread::spawn(PartWriter::new(part.out_schema.clone(), &url)?);
    let mut fb = part.compute_features.then_some(fb);
    let (mut rows, mut predict_secs) = (0u64, 0.0);
    while let Some(b) = stream.next().await {
        let b = b?;
        let n = b.num_rows();
        let (cols, secs) = tokio::task::block_in_place(|| -> Result<_, ScoreError> {
            let features = match fb.as_mut() {
                Some(fb) => fb.compute(&b).map_err(|source| ScoreError::Features {
                    file: url.clone(),
                    source,
                })?,
                None => b.clone(),
            };
            let (scores, secs) = scorer.score(&features, &url)?;
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(part.keep.len() + scores.len());
            for k in &part.keep {
                let c = b.column_by_name(k).ok_or_else(|| ScoreError::KeepMissing {
                    file: url.clone(),
                    column: k.clone(),
                })?;
                cols.push(c.clone());
            }
            cols.extend(scores);
            Ok((cols, secs))
        })?;
        predict_secs += secs;
        let batch = RecordBatch::try_new(part.out_schema.clone(), cols).map_err(|source| {
            ScoreError::Arrow {
                file: url.clone(),
                source,
            }
        })?;
        tokio::task::block_in_place(|| out.push(batch))?;
        rows += n as u64;
        if let Some(bar) = progress.as_mut() {
            bar.advance(n as u64);
        }
    }
    if rows != part.rows {
        return Err(ScoreError::RowCount {
            file: url,
            declared: part.rows,
            read: rows,
        });
    }
    let bytes = tokio::task::block_in_place(|| out.finish())?;
    Ok((bytes, predict_secs))
}

/// Feeds an already-scored part's rows through the feature function (no output): the
/// rolling features of the parts after it start from the same state as in an
/// uninterrupted run.
async fn warm_features(
    lake: &Lake,
    part: &Part,
    batch_rows: usize,
    fb: &mut crate::features::FeatureBuilder,
) -> Result<(), ScoreError> {
    let url = lake.display(&part.input);
    let mut stream = std::pin::pin!(part_batches(lake, part, batch_rows));
    while let Some(b) = stream.next().await {
        let b = b?;
        tokio::task::block_in_place(|| fb.compute(&b)).map_err(|source| ScoreError::Features {
            file: url.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Runs a scoring job (docs/scoring.md).
pub async fn score(opts: &ScoreOptions) -> Result<ScoreSummary, ScoreError> {
    let start = Instant::now();
    if opts.batch_rows == 0 {
        return Err(ScoreError::BadOption {
            option: "--batch-rows",
            reason: "must be at least 1".into(),
        });
    }
    if nested(&opts.output, &opts.input) {
        return Err(ScoreError::BadOption {
            option: "--output",
            reason: format!(
                "{} lies inside the input {}: a later run would score its own output",
                opts.output, opts.input
            ),
        });
    }
    // The model: its bytes (hashed for the output names) and its kind.
    let model_bytes = models::read_bytes(&opts.model).await?;
    let model_sha = sha256_hex(&model_bytes);
    let scorer = match models::parse_any(&model_bytes, &opts.model)? {
        Model::Gbdt(booster, _) => {
            let categorical = booster
                .feature_names
                .iter()
                .zip(&booster.feature_kinds)
                .filter(|(_, k)| **k == FeatureKind::Categorical)
                .map(|(n, _)| n.clone())
                .collect();
            let cols = Columns {
                target: String::new(),
                features: Some(booster.feature_names.clone()),
                categorical,
                weight: None,
            };
            Scorer::Gbdt {
                booster,
                cols,
                device: opts.device,
            }
        }
        Model::Forest(forest, _) => {
            if opts.device != Device::Cpu {
                return Err(ScoreError::BadOption {
                    option: "--device",
                    reason: "an isolation forest scores on the CPU: leave out --device".into(),
                });
            }
            let cols = Columns {
                target: String::new(),
                features: Some(forest.feature_names.clone()),
                categorical: Vec::new(),
                weight: None,
            };
            Scorer::Forest { forest, cols }
        }
        Model::Nn(model) => {
            if opts.device != Device::Cpu {
                return Err(ScoreError::BadOption {
                    option: "--device",
                    reason: "a neural model scores on the CPU: leave out --device".into(),
                });
            }
            let cols = models::nn_columns(&model);
            let names = model.package.manifest.encoder.names();
            Scorer::Nn { model, cols, names }
        }
    };
    // The input parts, each checked against the model before anything is written.
    let (in_lake, files) = match resolve_parquet(&opts.input).await {
        Ok(x) => x,
        Err(StoreError::InvalidUrl { url, reason }) if reason.starts_with("no Parquet") => {
            return Err(ScoreError::NoInput { url });
        }
        Err(e) => return Err(e.into()),
    };
    if files.is_empty() {
        return Err(ScoreError::NoInput {
            url: opts.input.clone(),
        });
    }
    let keep: Option<Vec<String>> = opts.keep.as_ref().map(|k| {
        k.iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    });
    let parts = plan(&in_lake, &files, &scorer, keep.as_deref(), &model_sha).await?;
    let columns: Vec<String> = parts
        .first()
        .map(|p| {
            p.out_schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        })
        .unwrap_or_default();
    // The output: parts already there are checked and kept.
    let sink = Sink::for_url(&opts.output)?;
    sink.create()?;
    sink.clean_temp_files();
    let mut entries: BTreeMap<String, ManifestPart> = BTreeMap::new();
    let mut todo: Vec<&Part> = Vec::new();
    for p in &parts {
        match sink.read(&p.output).await? {
            Some(bytes) => {
                let e = check_existing(p, &bytes, &sink.display(&p.output))?;
                debug!("{} is already scored: {}", p.input, p.output);
                entries.insert(p.input.clone(), e);
            }
            None => todo.push(p),
        }
    }
    let skipped = entries.len();
    if skipped > 0 {
        info!(
            "{skipped} of {} parts already scored in {}; scoring the other {}",
            parts.len(),
            opts.output,
            todo.len()
        );
    }
    let todo_rows: u64 = todo.iter().map(|p| p.rows).sum();
    let mut bar = opts
        .progress_bar
        .then(|| RowBar::new(todo_rows, todo.len()));
    let (mut rows_scored, mut predict_secs, mut by_another) = (0u64, 0.0, 0usize);
    // Features computed from curated rows carry rolling state from part to part, in the
    // parts' (time) order, as training computed them: a part scored by an earlier run is
    // read again (not scored) when a later part needs its history.
    let mut fb = crate::features::FeatureBuilder::new();
    let to_score: std::collections::HashSet<&str> = todo.iter().map(|t| t.input.as_str()).collect();
    let last_computed = todo
        .iter()
        .filter(|p| p.compute_features)
        .map(|p| p.input.clone())
        .max();
    for p in &parts {
        if !to_score.contains(p.input.as_str()) {
            if p.compute_features && last_computed.as_ref().is_some_and(|l| p.input < *l) {
                warm_features(&in_lake, p, opts.batch_rows, &mut fb).await?;
            }
            continue;
        }
        let (bytes, secs) =
            score_part(&in_lake, p, &scorer, opts.batch_rows, &mut bar, &mut fb).await?;
        predict_secs += secs;
        let entry = ManifestPart {
            input: p.input.clone(),
            output: p.output.clone(),
            rows: p.rows,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        };
        let how = sink.commit(&p.output, bytes).await?;
        if how == Committed::ByAnother {
            by_another += 1;
        }
        rows_scored += p.rows;
        if let Some(b) = bar.as_mut() {
            b.part_done();
        }
        let line = format!(
            "committed {} ({} rows) from {}{}",
            sink.display(&p.output),
            p.rows,
            p.input,
            if how == Committed::ByAnother {
                ", already committed by another writer with the same bytes"
            } else {
                ""
            }
        );
        match bar.as_mut() {
            Some(b) => b.println(&line),
            None => info!("{line}"),
        }
        entries.insert(p.input.clone(), entry);
    }
    drop(bar);
    // The manifest, last.
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        model_kind: scorer.kind().into(),
        model_sha256: model_sha.clone(),
        columns,
        total_rows: entries.values().map(|e| e.rows).sum(),
        parts: entries.into_values().collect(),
    };
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| ScoreError::Io {
        op: "serialising",
        path: sink.display(SUCCESS),
        source: e.into(),
    })?;
    text.push(b'\n');
    let text = Bytes::from(text);
    match sink.commit(SUCCESS, text.clone()).await {
        Ok(_) => {}
        Err(ScoreError::Conflict { url }) => {
            // An earlier job's manifest over other parts: this one describes the output now.
            warn!("{url} described other parts; replacing it");
            sink.replace(SUCCESS, text).await?;
        }
        Err(e) => return Err(e),
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(ScoreSummary {
        output: opts.output.clone(),
        model_sha256: model_sha,
        parts: parts.len(),
        parts_scored: todo.len(),
        parts_skipped: skipped,
        parts_committed_by_another: by_another,
        rows: manifest.total_rows,
        rows_scored,
        seconds,
        rows_per_second: rows_scored as f64 / seconds.max(1e-9),
        predict_rows_per_second: if predict_secs > 0.0 {
            rows_scored as f64 / predict_secs
        } else {
            0.0
        },
    })
}

/// A one-line progress bar on stderr (for a terminal): rows and parts done, rows/s, time
/// left. Redrawn at most ten times a second; erased when dropped.
pub struct RowBar {
    total_rows: u64,
    total_parts: usize,
    rows: u64,
    parts: usize,
    start: Instant,
    drawn: Option<Instant>,
}

impl RowBar {
    pub fn new(total_rows: u64, total_parts: usize) -> RowBar {
        RowBar {
            total_rows,
            total_parts,
            rows: 0,
            parts: 0,
            start: Instant::now(),
            drawn: None,
        }
    }

    /// The bar, `width` cells wide.
    pub fn render(
        rows: u64,
        total_rows: u64,
        parts: usize,
        total_parts: usize,
        secs: f64,
        width: usize,
    ) -> String {
        let rows = rows.min(total_rows);
        let full = if total_rows == 0 {
            width
        } else {
            (rows as u128 * width as u128 / total_rows as u128) as usize
        };
        let rate = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            ((total_rows - rows) as f64 / rate).round() as u64
        } else {
            0
        };
        format!(
            "[{}{}] {rows}/{total_rows} rows  {parts}/{total_parts} parts  {rate:.0} rows/s  {}:{:02} left",
            "#".repeat(full),
            "-".repeat(width - full),
            eta / 60,
            eta % 60
        )
    }

    fn draw(&mut self, force: bool) {
        let now = Instant::now();
        if !force
            && self
                .drawn
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.drawn = Some(now);
        let bar = Self::render(
            self.rows,
            self.total_rows,
            self.parts,
            self.total_parts,
            self.start.elapsed().as_secs_f64(),
            30,
        );
        eprint!("\r\x1b[2K{bar}");
    }

    pub fn advance(&mut self, rows: u64) {
        self.rows += rows;
        self.draw(false);
    }

    pub fn part_done(&mut self) {
        self.parts += 1;
        self.draw(true);
    }

    /// A line above the bar.
    pub fn println(&mut self, line: &str) {
        eprint!("\r\x1b[2K{line}\n");
        self.draw(true);
    }
}

impl Drop for RowBar {
    fn drop(&mut self) {
        eprint!("\r\x1b[2K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_folders_and_add_the_model_hash() {
        let h = "0123456789abcdef0123";
        assert_eq!(output_name("a.parquet", h), "a-0123456789abcdef.parquet");
        assert_eq!(
            output_name("day=1/part-0.parquet", h),
            "day=1/part-0-0123456789abcdef.parquet"
        );
    }

    #[test]
    fn temp_names_carry_the_writers_pid() {
        let t = temp_name("p-00.parquet");
        assert_eq!(temp_file_pid(&t), Some(std::process::id()));
        assert_eq!(temp_file_pid("p-00.parquet"), None);
        assert_eq!(temp_file_pid(".x.tmp-abc-1"), None);
    }

    #[test]
    fn bar_renders_rows_parts_and_rate() {
        assert_eq!(
            RowBar::render(50, 200, 1, 4, 10.0, 20),
            "[#####---------------] 50/200 rows  1/4 parts  5 rows/s  0:30 left"
        );
        assert!(RowBar::render(0, 0, 0, 0, 0.0, 10).starts_with("[##########] 0/0"));
    }

    #[test]
    fn an_output_inside_the_input_is_refused() {
        assert!(nested("in/out", "in"));
        assert!(nested("./in/", "in"));
        assert!(nested("in", "in"));
        assert!(nested("s3://b/in/out", "s3://b/in/"));
        assert!(!nested("s3://b/input2", "s3://b/in"));
        assert!(!nested("out", "in"));
        assert!(!nested("in/out", "in/a.parquet"));
    }

    #[test]
    fn sha256_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn part(rows: u64) -> Part {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("prediction", DataType::Float64, false),
        ]));
        Part {
            input: "a.parquet".into(),
            output: "a-x.parquet".into(),
            rows,
            read: vec!["id".into()],
            keep: vec!["id".into()],
            out_schema: schema,
            compute_features: false,
        }
    }

    #[test]
    fn output_bytes_do_not_depend_on_batch_sizes() {
        let p = part(50_000);
        let batch = |from: i64, n: usize| {
            RecordBatch::try_new(
                p.out_schema.clone(),
                vec![
                    Arc::new(arrow_array::Int64Array::from_iter_values(
                        from..from + n as i64,
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (0..n).map(|i| (from as f64 + i as f64).sin()),
                    )),
                ],
            )
            .expect("batch")
        };
        let encode = |sizes: &[usize]| {
            let mut w = PartWriter::new(p.out_schema.clone(), "t").expect("writer");
            let mut from = 0;
            for &n in sizes {
                w.push(batch(from, n)).expect("push");
                from += n as i64;
            }
            assert_eq!(from, 50_000);
            w.finish().expect("finish")
        };
        let a = encode(&[50_000]);
        let b = encode(&[1000; 50]);
        let c = encode(&[7, 16_377, 20_000, 13_616]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        // And the result checks as an existing part.
        let e = check_existing(&p, &a, "t").expect("valid");
        assert_eq!(e.rows, 50_000);
        assert!(check_existing(&part(49_999), &a, "t").is_err());
        assert!(check_existing(&p, &a.slice(0..a.len() - 1), "t").is_err());
    }

    #[test]
    fn local_commit_never_overwrites_and_accepts_equal_bytes() {
        let dir = crate::store::testkit::TempDir::new("score-commit").expect("tmp");
        let c = |b: &[u8]| commit_local(&dir.0, "x/p.parquet", b, "p", false);
        assert_eq!(c(b"one").expect("first"), Committed::Written);
        assert_eq!(c(b"one").expect("same"), Committed::ByAnother);
        assert!(matches!(c(b"two"), Err(ScoreError::Conflict { .. })));
        assert_eq!(
            std::fs::read(dir.0.join("x/p.parquet")).expect("read"),
            b"one"
        );
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(dir.0.join("x"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
