//! A Parquet file opened once reads its row groups without fetching its size and footer
//! again: requests counted on a real local store.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use contrail_store::parquet_io::{self, ParquetFile, ScanOptions};
use contrail_store::{Lake, Scheme};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// A local store that counts size lookups (HEAD) and data reads (GET).
#[derive(Debug)]
struct Counting {
    inner: LocalFileSystem,
    heads: AtomicUsize,
    gets: AtomicUsize,
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counting {
    async fn put_opts(&self, p: &Path, v: PutPayload, o: PutOptions) -> Result<PutResult> {
        self.inner.put_opts(p, v, o).await
    }
    async fn put_multipart_opts(
        &self,
        p: &Path,
        o: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(p, o).await
    }
    async fn get_opts(&self, p: &Path, o: GetOptions) -> Result<GetResult> {
        if o.head {
            self.heads.fetch_add(1, Ordering::SeqCst);
        } else {
            self.gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(p, o).await
    }
    async fn get_ranges(&self, p: &Path, r: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get_ranges(p, r).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, o).await
    }
}

/// 400 rows in four row groups of 100.
fn file_bytes() -> (Bytes, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let ids: Vec<i64> = (0..400).collect();
    let vals: Vec<Option<f64>> = ids
        .iter()
        .map(|i| (i % 9 != 0).then_some(*i as f64))
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(Float64Array::from(vals)),
    ];
    let b = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(100))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).expect("writer");
    w.write(&b).expect("write");
    w.close().expect("close");
    let groups = (0..4).map(|g| b.slice(g * 100, 100)).collect();
    (Bytes::from(buf), groups)
}

#[tokio::test]
async fn row_groups_of_an_opened_file_read_only_their_column_chunks() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(Counting {
        inner: LocalFileSystem::new_with_prefix(dir.path()).expect("local"),
        heads: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
    });
    let lake = Lake::from_store(store.clone(), "counting://", Scheme::File);
    let (bytes, groups) = file_bytes();
    lake.put("t.parquet", bytes).await.expect("put");

    let f = ParquetFile::open(&lake, "t.parquet").await.expect("open");
    assert_eq!(f.row_group_rows().expect("rows"), vec![100; 4]);
    // One HEAD for the size, one GET for the tail (footer and metadata).
    assert_eq!(store.heads.load(Ordering::SeqCst), 1);
    assert_eq!(store.gets.load(Ordering::SeqCst), 1);
    let opts = ScanOptions::default();
    for _epoch in 0..3 {
        for (g, want) in groups.iter().enumerate() {
            let got = f.read_row_group(g, &opts).await.expect("read");
            assert_eq!(arrow_concat(&got), *want, "row group {g}");
        }
    }
    // Twelve row group reads (three epochs): no HEAD and no footer again.
    assert_eq!(store.heads.load(Ordering::SeqCst), 1);
    // One ranged read (the group's column chunks together) per row group: a third of
    // what a read that opens the file costs.
    assert_eq!(store.gets.load(Ordering::SeqCst) - 1, 12);
    // The same batches as opening the file for the one read, which costs its size and
    // footer again.
    let before = store.heads.load(Ordering::SeqCst);
    let once = parquet_io::read_row_group(&lake, "t.parquet", 2, &opts)
        .await
        .expect("read");
    assert_eq!(arrow_concat(&once), groups[2]);
    assert_eq!(store.heads.load(Ordering::SeqCst), before + 1);
    // A row group the file does not have: a typed error naming the file.
    let e = f
        .read_row_group(4, &opts)
        .await
        .expect_err("the file has four row groups");
    assert!(
        e.to_string().contains("t.parquet") && e.to_string().contains("4 row groups"),
        "{e}"
    );
}

/// A row group of 100 rows comes back as one batch (the batch size is larger).
fn arrow_concat(b: &[RecordBatch]) -> RecordBatch {
    assert_eq!(b.len(), 1, "one batch per row group");
    b[0].clone()
}
