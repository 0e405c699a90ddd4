//! The lake, addressed by URL, over `object_store`.
//!
//! - [`Lake::open`] takes a bare path or `file://` (the default `./lake`), `s3://bucket/prefix`
//!   (endpoint, region and credentials from the standard AWS variables, `AWS_ENDPOINT_URL`
//!   and plain-http endpoints included) or `memory://name` (a process-wide in-memory store,
//!   for tests).
//! - Writes through [`Lake::put`] and [`Lake::writer`] are atomic on every store: a reader
//!   never sees a partial object at its final path (local disk stages and renames, S3 makes
//!   an object visible only when its single PUT or multipart upload completes).
//! - [`partition`] names and prunes the `year=/month=/day=/hour=` partitions.
//! - [`parquet_io`] streams Parquet as Arrow batches with bounded read-ahead and column
//!   projection, and writes Parquet with fixed settings so equal input gives equal bytes.

pub mod parquet_io;
pub mod partition;
pub mod testkit;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

pub use object_store;

/// Errors of the storage layer. Each names the URL of the object or lake concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid lake URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create the lake folder {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot configure the object store for {url}")]
    Configure {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url} not found")]
    NotFound {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url} already exists")]
    AlreadyExists {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{op} {url} failed")]
    Io {
        op: &'static str,
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{url} is not a valid Parquet file: {reason}")]
    BadParquet { url: String, reason: String },
    #[error("reading Parquet {url}")]
    Parquet {
        url: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("writing Parquet for {url}")]
    ParquetWrite {
        url: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
}

impl StoreError {
    /// True when the error comes from the user's input or configuration (a bad URL, a
    /// missing object, a corrupt file) rather than from a fault of the program.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, StoreError::ParquetWrite { .. })
    }
}

fn classify(op: &'static str, url: String, source: object_store::Error) -> StoreError {
    match source {
        object_store::Error::NotFound { .. } => StoreError::NotFound { url, source },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            StoreError::AlreadyExists { url, source }
        }
        source => StoreError::Io { op, url, source },
    }
}

/// Which kind of store a lake lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    File,
    S3,
    Memory,
}

/// A lake: one object store and a root prefix inside it.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    scheme: Scheme,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn retry_config() -> RetryConfig {
    let mut r = RetryConfig::default();
    if let Some(n) = env("CONTRAIL_S3_MAX_RETRIES").and_then(|v| v.parse().ok()) {
        r.max_retries = n;
    }
    if let Some(s) = env("CONTRAIL_S3_RETRY_TIMEOUT_SECS").and_then(|v| v.parse().ok()) {
        r.retry_timeout = Duration::from_secs(s);
    }
    r
}

impl Lake {
    /// Opens the lake at `url`: a bare path or `file://` (created if missing),
    /// `s3://bucket[/prefix]`, or `memory://name`.
    pub fn open(url: &str) -> Result<Lake, StoreError> {
        Lake::open_with(url, &[])
    }

    /// Like [`Lake::open`], with S3 settings that override the environment, as
    /// `(key, value)` pairs of object_store's `AmazonS3ConfigKey` names (`aws_endpoint`,
    /// `aws_access_key_id`, `aws_secret_access_key`, `aws_region`, `aws_allow_http`, ...).
    pub fn open_with(url: &str, s3_options: &[(&str, &str)]) -> Result<Lake, StoreError> {
        let bad = |reason: &str| StoreError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry_config());
            if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
                b = b.with_region("us-east-1");
            }
            let option = |k: &str| {
                s3_options
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            };
            let endpoint = option("aws_endpoint")
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"))
                .or_else(|| env("AWS_ENDPOINT"));
            for (k, v) in s3_options {
                let key = k.parse().map_err(|source| StoreError::Configure {
                    url: url.to_string(),
                    source,
                })?;
                b = b.with_config(key, *v);
            }
            if let Some(ep) = endpoint {
                // A custom endpoint (MinIO, s3s, LocalStack) is addressed path-style.
                b = b
                    .with_endpoint(&ep)
                    .with_allow_http(ep.starts_with("http://"))
                    .with_virtual_hosted_style_request(false);
            }
            let store = b.build().map_err(|source| StoreError::Configure {
                url: url.to_string(),
                source,
            })?;
            return Ok(Lake {
                store: Arc::new(store),
                root: Path::from(prefix.trim_matches('/')),
                url: url.trim_end_matches('/').to_string(),
                scheme: Scheme::S3,
            });
        }
        if let Some(name) = url.strip_prefix("memory://") {
            let mut stores = memory_stores().lock().unwrap_or_else(|e| e.into_inner());
            let store = stores
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(InMemory::new()))
                .clone();
            return Ok(Lake {
                store,
                root: Path::default(),
                url: url.to_string(),
                scheme: Scheme::Memory,
            });
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(bad(
                "unsupported scheme: use a path, file://, s3:// or memory://",
            ));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_string(),
            source,
        })?;
        let abs = std::fs::canonicalize(path).map_err(|source| StoreError::CreateDir {
            path: path.to_string(),
            source,
        })?;
        let store =
            LocalFileSystem::new_with_prefix(&abs).map_err(|source| StoreError::Configure {
                url: url.to_string(),
                source,
            })?;
        Ok(Lake {
            store: Arc::new(store),
            root: Path::default(),
            url: url.trim_end_matches('/').to_string(),
            scheme: Scheme::File,
        })
    }

    /// A lake on an object store the caller built (a client with its own settings, or a
    /// layer over one that counts, limits or logs requests), rooted at the store's top;
    /// `url` names it in messages.
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str, scheme: Scheme) -> Lake {
        Lake {
            store,
            root: Path::default(),
            url: url.trim_end_matches('/').to_string(),
            scheme,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of `rel` (a `/`-separated path relative to the lake root).
    pub fn path(&self, rel: &str) -> Path {
        let rel = rel.trim_matches('/');
        if self.root.as_ref().is_empty() {
            Path::from(rel)
        } else if rel.is_empty() {
            self.root.clone()
        } else {
            Path::from(format!("{}/{}", self.root, rel))
        }
    }

    /// `rel` relative to the lake root, from a full object path.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a str {
        let p = path.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            p
        } else {
            p.strip_prefix(root)
                .map(|s| s.trim_start_matches('/'))
                .unwrap_or(p)
        }
    }

    /// The URL of `rel`, for messages.
    pub fn display(&self, rel: &str) -> String {
        format!("{}/{}", self.url, rel.trim_matches('/'))
    }

    /// Writes `bytes` to `rel` atomically, replacing what was there.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.store
            .put(&self.path(rel), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| classify("put", self.display(rel), e))
    }

    /// Writes `bytes` to `rel` only if nothing is there yet (a conditional create).
    /// [`StoreError::AlreadyExists`] when another writer got there first.
    pub async fn put_if_absent(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.store
            .put_opts(&self.path(rel), PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| classify("put", self.display(rel), e))
    }

    /// A streaming writer to `rel`: below `capacity` bytes it makes one PUT, above it a
    /// multipart upload; either way the object appears only on `shutdown`.
    pub fn writer(&self, rel: &str, capacity: usize) -> BufWriter {
        BufWriter::with_capacity(self.store.clone(), self.path(rel), capacity)
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes, StoreError> {
        let url = self.display(rel);
        let r = self
            .store
            .get(&self.path(rel))
            .await
            .map_err(|e| classify("get", url.clone(), e))?;
        r.bytes().await.map_err(|e| classify("get", url, e))
    }

    /// Reads `rel` if it exists.
    pub async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        match self.get(rel).await {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        self.store
            .get_range(&self.path(rel), range)
            .await
            .map_err(|e| classify("get_range", self.display(rel), e))
    }

    pub async fn head(&self, rel: &str) -> Result<ObjectMeta, StoreError> {
        self.store
            .head(&self.path(rel))
            .await
            .map_err(|e| classify("head", self.display(rel), e))
    }

    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify("delete", self.display(rel), e)),
        }
    }

    /// Every object under `prefix` (recursively), sorted by path. A missing prefix is an
    /// empty list.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let p = self.path(prefix);
        let mut v: Vec<ObjectMeta> = self
            .store
            .list(Some(&p))
            .try_collect()
            .await
            .map_err(|e| classify("list", self.display(prefix), e))?;
        v.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(v)
    }

    /// The immediate child folders of `prefix` (their relative paths), sorted.
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = self.path(prefix);
        let r = self
            .store
            .list_with_delimiter(Some(&p))
            .await
            .map_err(|e| classify("list", self.display(prefix), e))?;
        let mut v: Vec<String> = r
            .common_prefixes
            .iter()
            .map(|c| self.relative(c).to_string())
            .collect();
        v.sort();
        Ok(v)
    }
}

/// Splits an object URL into the lake holding it and its path in that lake:
/// `s3://bucket/a/b.parquet` → (`s3://bucket/a`, `b.parquet`); a bare path likewise.
pub fn split_url(url: &str) -> (String, String) {
    let trimmed = url.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((base, name)) if !base.ends_with(':') && !base.ends_with("//") => {
            (base.to_string(), name.to_string())
        }
        Some((base, name)) => (format!("{base}/"), name.to_string()),
        None => (".".to_string(), trimmed.to_string()),
    }
}

/// The Parquet files a URL names: the file itself, or every `*.parquet` under a folder or
/// prefix (sorted). The error names the URL when there are none.
pub async fn resolve_parquet(url: &str) -> Result<(Lake, Vec<String>), StoreError> {
    if url.ends_with(".parquet") {
        let (base, name) = split_url(url);
        let lake = Lake::open(&base)?;
        lake.head(&name).await?;
        return Ok((lake, vec![name]));
    }
    let lake = Lake::open(url)?;
    let files: Vec<String> = lake
        .list("")
        .await?
        .iter()
        .map(|m| lake.relative(&m.location).to_string())
        .filter(|r| {
            r.ends_with(".parquet") && !r.rsplit('/').next().unwrap_or("").starts_with(['_', '.'])
        })
        .collect();
    if files.is_empty() {
        return Err(StoreError::InvalidUrl {
            url: url.to_string(),
            reason: "no Parquet files there".into(),
        });
    }
    Ok((lake, files))
}
