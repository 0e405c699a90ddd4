//! Raw events into the lake, and raw into curated.
//!
//! - [`ingest`]: JSON lines from a reader (stdin) into raw hourly partitions by event
//!   time, flushed by size and by time; an event counts as ingested only once the file
//!   holding it is committed.
//! - [`etl`]: raw partitions into curated Parquet plus a quarantine table, with exact
//!   accounting (rows read = curated + quarantined + duplicates), idempotent and
//!   incremental.
//! - [`stats`]: per-partition statistics of the curated columns (moments and quantile
//!   sketches), written beside each curated partition for drift checks.

pub mod etl;
pub mod ingest;
pub mod stats;

use contrail_store::StoreError;

pub const RAW_TABLE: &str = "raw/flight_searches";
pub const CURATED_TABLE: &str = "curated/flight_searches";
pub const QUARANTINE_TABLE: &str = "quarantine/flight_searches";

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raw partition {partition} not found under {url}")]
    PartitionNotFound { partition: String, url: String },
    #[error("invalid ETL state file {url}")]
    BadState {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("building {what} for partition {partition}")]
    Build {
        what: &'static str,
        partition: String,
        #[source]
        source: contrail_events::schema::SchemaError,
    },
    #[error("reading standard input")]
    Input(#[source] std::io::Error),
    #[error("gzip compression failed")]
    Compress,
    #[error("worker task failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl EtlError {
    /// User errors (bad input, missing data, bad configuration) versus program faults.
    pub fn is_user_error(&self) -> bool {
        match self {
            EtlError::Store(e) => e.is_user_error(),
            EtlError::PartitionNotFound { .. } | EtlError::BadState { .. } | EtlError::Input(_) => {
                true
            }
            EtlError::Build { .. } | EtlError::Compress | EtlError::Worker(_) => false,
        }
    }
}
