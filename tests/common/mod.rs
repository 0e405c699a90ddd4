//! Helpers shared by the end-to-end tests of the `contrail` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary in `dir` with `args` and extra environment `env` (never the caller's
/// `CONTRAIL_LAKE`).
pub fn contrail(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_contrail"));
    c.current_dir(dir).args(args).env_remove("CONTRAIL_LAKE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run contrail")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Writes `columns` as one Parquet file `name` in `dir`.
pub fn write_parquet(dir: &Path, name: &str, columns: Vec<(&str, arrow_array::ArrayRef)>) {
    let batch = arrow_array::RecordBatch::try_from_iter(columns).expect("batch");
    let bytes =
        contrail::store::parquet_io::encode(batch.schema(), &[batch], name).expect("encode");
    std::fs::write(dir.join(name), &bytes).expect("write");
}

/// The record batches of the Parquet file `name` in `dir`.
pub fn read_parquet(dir: &Path, name: &str) -> Vec<arrow_array::RecordBatch> {
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(
        std::fs::read(dir.join(name)).expect(name),
    ))
    .expect("parquet")
    .build()
    .expect("reader")
    .collect::<Result<_, _>>()
    .expect("batches")
}

/// The Arrow schema of a Parquet file (also of one with no rows, which has no batches).
pub fn parquet_schema(dir: &Path, name: &str) -> arrow_schema::SchemaRef {
    let f = std::fs::File::open(dir.join(name)).expect(name);
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("parquet")
        .schema()
        .clone()
}
