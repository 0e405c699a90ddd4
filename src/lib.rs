//! Contrail: train and serve the models an airline or travel seller prices tickets with.
//!
//! This crate is the `contrail` command and a facade over the stage crates:
//!
//! | module | crate | stage |
//! |---|---|---|
//! | [`store`] | contrail-store | the lake by URL, Parquet I/O, partitions |
//! | [`events`] | contrail-events | event schema, validation, reference data |
//! | [`sim`] | contrail-sim | market simulator with known truth |
//! | [`etl`] | contrail-etl | ingest and raw-to-curated ETL with quarantine |
//! | [`features`] | contrail-features | the shared feature function |
//! | [`gbdt`] | contrail-gbdt | histogram gradient-boosted trees |
//! | [`nn`] | contrail-nn | neural demand models on burn ([`demand`] builds their tasks from the lake) |
//! | [`tuning`] | contrail-tune | hyperparameter search: samplers, pruners, the study journal ([`tune`] is `contrail tune`, [`tune_lake`] its lake mode) |

pub use contrail_etl as etl;
pub use contrail_events as events;
pub use contrail_features as features;
pub use contrail_gbdt as gbdt;
pub use contrail_nn as nn;
pub use contrail_sim as sim;
pub use contrail_store as store;
/// Hyperparameter search (the library); the `contrail tune` glue is [`crate::tune`].
pub use contrail_tune as tuning;

pub mod config;
pub mod demand;
pub mod drift;
pub mod interop;
pub mod models;
pub mod nn_file;
pub mod score;
pub mod summary;
pub mod tune;
pub mod tune_demand;
pub mod tune_lake;
