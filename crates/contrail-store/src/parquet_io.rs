//! Parquet over the lake: an [`AsyncFileReader`] on object_store (bounded footer reads,
//! ranged gets), streaming scans with bounded read-ahead and projection, and writes with
//! fixed settings (equal batches give equal bytes).

use std::ops::Range;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::metadata::{FooterTail, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::{Lake, StoreError};

/// The largest footer (file metadata) accepted. A file that declares more is rejected
/// before anything that size is allocated or fetched.
pub const MAX_METADATA_BYTES: usize = 64 << 20;

/// How much of a file's tail the first read fetches: the footer and, usually, all of the
/// metadata in one request.
const TAIL_PREFETCH: u64 = 64 << 10;

/// Reads one Parquet object through object_store with ranged gets.
pub struct LakeFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl LakeFileReader {
    /// Opens `rel` (one HEAD request for its size).
    pub async fn open(lake: &Lake, rel: &str) -> Result<LakeFileReader, StoreError> {
        let meta = lake.head(rel).await?;
        Ok(LakeFileReader {
            store: lake.store().clone(),
            path: meta.location,
            size: meta.size,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    async fn metadata(&self) -> Result<ParquetMetaData, ParquetError> {
        let bad = |m: String| ParquetError::General(m);
        if self.size < 12 {
            return Err(bad(format!(
                "{} bytes is too small for a Parquet file",
                self.size
            )));
        }
        let start = self.size.saturating_sub(TAIL_PREFETCH);
        let tail = self
            .store
            .get_range(&self.path, start..self.size)
            .await
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        if tail.len() as u64 != self.size - start {
            return Err(bad("short read of the footer".into()));
        }
        let mut foot = [0u8; 8];
        foot.copy_from_slice(&tail[tail.len() - 8..]);
        let footer = FooterTail::try_new(&foot)?;
        if footer.is_encrypted_footer() {
            return Err(bad("encrypted footers are not supported".into()));
        }
        let len = footer.metadata_length();
        if len as u64 > self.size - 12 || len > MAX_METADATA_BYTES {
            return Err(bad(format!(
                "footer declares {len} bytes of metadata in a {}-byte file (limit {MAX_METADATA_BYTES})",
                self.size
            )));
        }
        let meta_start = self.size - 8 - len as u64;
        let buf = if meta_start >= start {
            let off = (meta_start - start) as usize;
            tail.slice(off..off + len)
        } else {
            self.store
                .get_range(&self.path, meta_start..self.size - 8)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?
        };
        let md = ParquetMetaDataReader::decode_metadata(&buf)?;
        // Every column chunk must lie inside the file: a hostile footer cannot make a
        // reader fetch or allocate past the end.
        for rg in md.row_groups() {
            for c in rg.columns() {
                let (off, n) = c.byte_range();
                if off.checked_add(n).is_none_or(|end| end > self.size) {
                    return Err(bad(format!(
                        "column chunk {off}+{n} lies outside the {}-byte file",
                        self.size
                    )));
                }
            }
        }
        Ok(md)
    }
}

impl AsyncFileReader for LakeFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            if range.end > self.size || range.start > range.end {
                return Err(ParquetError::General(format!(
                    "range {range:?} outside the {}-byte file",
                    self.size
                )));
            }
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            if let Some(r) = ranges.iter().find(|r| r.end > self.size || r.start > r.end) {
                return Err(ParquetError::General(format!(
                    "range {r:?} outside the {}-byte file",
                    self.size
                )));
            }
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move { Ok(Arc::new(self.metadata().await?)) }.boxed()
    }
}

/// How a scan reads: which columns, how many rows per batch, and how many batches may be
/// decoded ahead of the consumer.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Column names to read, in this order of preference; `None` reads all.
    pub columns: Option<Vec<String>>,
    pub batch_size: usize,
    /// Batches decoded ahead of the consumer (at least 1).
    pub read_ahead: usize,
    /// Files read concurrently (at least 1).
    pub files_in_flight: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            columns: None,
            batch_size: 65_536,
            read_ahead: 4,
            files_in_flight: 8,
        }
    }
}

fn parquet_err(url: &str, e: ParquetError) -> StoreError {
    match e {
        ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
            Ok(os) => crate::classify("read", url.to_string(), *os),
            Err(other) => StoreError::Parquet {
                url: url.to_string(),
                source: ParquetError::External(other),
            },
        },
        ParquetError::General(m) => StoreError::BadParquet {
            url: url.to_string(),
            reason: m,
        },
        e => StoreError::Parquet {
            url: url.to_string(),
            source: e,
        },
    }
}

/// Opens one file for streaming, with the projection applied.
pub async fn open_stream(
    lake: &Lake,
    rel: &str,
    opts: &ScanOptions,
) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<LakeFileReader>, StoreError> {
    let f = ParquetFile::open(lake, rel).await?;
    f.builder(opts)?.build().map_err(|e| parquet_err(&f.url, e))
}

/// One Parquet file opened once (a HEAD for its size, then its footer, read and checked
/// as [`LakeFileReader`] does): its row groups are then read one at a time with ranged gets
/// of their column chunks only, not the size and footer again for each.
#[derive(Clone)]
pub struct ParquetFile {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    url: String,
    meta: ArrowReaderMetadata,
}

impl ParquetFile {
    pub async fn open(lake: &Lake, rel: &str) -> Result<ParquetFile, StoreError> {
        let url = lake.display(rel);
        let mut reader = LakeFileReader::open(lake, rel).await?;
        let meta = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
            .await
            .map_err(|e| parquet_err(&url, e))?;
        Ok(ParquetFile {
            store: reader.store,
            path: reader.path,
            size: reader.size,
            url,
            meta,
        })
    }

    /// The file's URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A reader of the file's batches with the projection and batch size of `opts` (the
    /// footer already read).
    fn builder(
        &self,
        opts: &ScanOptions,
    ) -> Result<ParquetRecordBatchStreamBuilder<LakeFileReader>, StoreError> {
        let reader = LakeFileReader {
            store: self.store.clone(),
            path: self.path.clone(),
            size: self.size,
        };
        let b = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, self.meta.clone());
        project(b, opts, &self.url)
    }

    /// Rows in each row group, from the footer.
    pub fn row_group_rows(&self) -> Result<Vec<usize>, StoreError> {
        self.meta
            .metadata()
            .row_groups()
            .iter()
            .map(|g| {
                usize::try_from(g.num_rows()).map_err(|_| StoreError::BadParquet {
                    url: self.url.clone(),
                    reason: format!("a row group declares {} rows", g.num_rows()),
                })
            })
            .collect()
    }

    /// The batches of row group `rg`, with the projection of `opts`.
    pub async fn read_row_group(
        &self,
        rg: usize,
        opts: &ScanOptions,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let groups = self.meta.metadata().num_row_groups();
        if rg >= groups {
            return Err(StoreError::BadParquet {
                url: self.url.clone(),
                reason: format!("has {groups} row groups, not {}", rg + 1),
            });
        }
        let mut s = self
            .builder(opts)?
            .with_row_groups(vec![rg])
            .build()
            .map_err(|e| parquet_err(&self.url, e))?;
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.push(b.map_err(|e| parquet_err(&self.url, e))?);
        }
        Ok(out)
    }
}

/// Rows in each row group of `rel`, from its footer (nothing else is read).
pub async fn row_group_rows(lake: &Lake, rel: &str) -> Result<Vec<usize>, StoreError> {
    ParquetFile::open(lake, rel).await?.row_group_rows()
}

/// The batches of row group `rg` of `rel`, with the projection of `opts` (opens the file:
/// to read several of its row groups, open a [`ParquetFile`] once).
pub async fn read_row_group(
    lake: &Lake,
    rel: &str,
    rg: usize,
    opts: &ScanOptions,
) -> Result<Vec<RecordBatch>, StoreError> {
    ParquetFile::open(lake, rel)
        .await?
        .read_row_group(rg, opts)
        .await
}

/// `builder` with the projection and batch size of `opts`.
fn project(
    builder: ParquetRecordBatchStreamBuilder<LakeFileReader>,
    opts: &ScanOptions,
    url: &str,
) -> Result<ParquetRecordBatchStreamBuilder<LakeFileReader>, StoreError> {
    let mask = match &opts.columns {
        None => ProjectionMask::all(),
        Some(cols) => {
            let schema = builder.schema();
            let mut idx = Vec::with_capacity(cols.len());
            for c in cols {
                let i = schema.index_of(c).map_err(|_| StoreError::BadParquet {
                    url: url.to_string(),
                    reason: format!("has no column `{c}`"),
                })?;
                idx.push(i);
            }
            ProjectionMask::roots(builder.parquet_schema(), idx)
        }
    };
    Ok(builder
        .with_projection(mask)
        .with_batch_size(opts.batch_size.max(1)))
}

/// Streams the batches of `files` (relative paths), in the order given.
///
/// Up to `files_in_flight` files are read at once, each by its own task that decodes at
/// most two batches ahead, and their batches are passed on strictly in file order through
/// a channel of `read_ahead` batches: memory stays bounded however large the files, and
/// the round trips of an object store overlap instead of adding up. The first error ends
/// the stream; nothing after a failed file is reported as read.
pub fn scan(
    lake: &Lake,
    files: Vec<String>,
    opts: ScanOptions,
) -> impl Stream<Item = Result<RecordBatch, StoreError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(opts.read_ahead.max(1));
    let lake = lake.clone();
    let in_flight = opts.files_in_flight.max(1);
    tokio::spawn(async move {
        let opts = Arc::new(opts);
        let per_file = futures::stream::iter(files).map(|rel| {
            let (ftx, frx) = tokio::sync::mpsc::channel::<Result<RecordBatch, StoreError>>(2);
            let (lake, opts) = (lake.clone(), opts.clone());
            let task = tokio::spawn(async move {
                let url = lake.display(&rel);
                let mut s = match open_stream(&lake, &rel, &opts).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ftx.send(Err(e)).await;
                        return;
                    }
                };
                while let Some(b) = s.next().await {
                    let failed = b.is_err();
                    if ftx.send(b.map_err(|e| parquet_err(&url, e))).await.is_err() || failed {
                        return;
                    }
                }
            });
            futures::future::ready((frx, task))
        });
        let mut per_file = std::pin::pin!(per_file.buffered(in_flight));
        while let Some((mut frx, task)) = per_file.next().await {
            while let Some(b) = frx.recv().await {
                let failed = b.is_err();
                if tx.send(b).await.is_err() || failed {
                    task.abort();
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// Reads a whole file into batches.
pub async fn read_all(lake: &Lake, rel: &str) -> Result<Vec<RecordBatch>, StoreError> {
    let url = lake.display(rel);
    let mut s = open_stream(lake, rel, &ScanOptions::default()).await?;
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.push(b.map_err(|e| parquet_err(&url, e))?);
    }
    Ok(out)
}

/// The fixed writer settings: snappy pages, page statistics, 128 Ki rows per row group,
/// a fixed `created_by`; no timestamps, so equal batches give equal bytes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(131_072))
        .set_created_by(format!("contrail {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Encodes batches as one Parquet file in memory.
pub fn encode(schema: SchemaRef, batches: &[RecordBatch], url: &str) -> Result<Bytes, StoreError> {
    let err = |source| StoreError::ParquetWrite {
        url: url.to_string(),
        source,
    };
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(writer_properties())).map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
    }
    w.close().map_err(err)?;
    Ok(Bytes::from(buf))
}

/// Encodes and writes batches to `rel` atomically.
pub async fn write(
    lake: &Lake,
    rel: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<u64, StoreError> {
    let bytes = encode(schema, batches, &lake.display(rel))?;
    let n = bytes.len() as u64;
    lake.put(rel, bytes).await?;
    Ok(n)
}

/// The number of rows a file's footer declares (one footer read, no data pages).
pub async fn row_count(lake: &Lake, rel: &str) -> Result<u64, StoreError> {
    let url = lake.display(rel);
    let reader = LakeFileReader::open(lake, rel).await?;
    let md = reader.metadata().await.map_err(|e| parquet_err(&url, e))?;
    Ok(md.file_metadata().num_rows().max(0) as u64)
}
