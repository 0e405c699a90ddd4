//! Hyperparameter search for any objective: search spaces declared in TOML, samplers
//! (Gaussian process with expected improvement, multivariate TPE, random), batches of
//! suggestions for parallel workers, pruners on intermediate values, and a study journal
//! that survives a kill at any moment.
//!
//! Which API when:
//! - [`SearchSpace::from_toml_str`] (or [`SearchSpace::from_toml_table`] for a section of a
//!   larger file) to declare what is tuned (the format, conditional
//!   parameters included, is in [`space`]);
//! - [`Study::open`] for a study journaled to a file (resumable), [`Study::in_memory`]
//!   otherwise; then [`Study::ask`] a batch, run the trials, [`Study::report`]
//!   intermediate values and ask [`Study::should_prune`], and [`Study::tell`] the result;
//! - [`Sampler`] directly for suggestions without a study.
//!
//! ```
//! use contrail_tune::{Direction, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult};
//! let space = SearchSpace::from_toml_str("[x]\ntype = \"float\"\nlow = -2.0\nhigh = 2.0\n")?;
//! let config = StudyConfig { sampler: SamplerKind::Gp, seed: 1, direction: Direction::Minimize, n_startup: None };
//! let mut study = Study::in_memory(space, config);
//! for _ in 0..12 {
//!     for t in study.ask(1)? {
//!         let x = study.trials()[t].params["x"].as_f64().unwrap_or(0.0);
//!         study.tell(t, TrialResult::Complete((x - 0.5) * (x - 0.5)))?;
//!     }
//! }
//! assert!(study.best().and_then(|t| t.value).unwrap_or(1.0) < 0.05);
//! # Ok::<(), contrail_tune::TuneError>(())
//! ```
//!
//! Determinism: a suggestion depends only on the seed, the trial number and the results
//! of earlier batches, never on timing or threads; a driver that waits for each batch
//! (as `contrail tune` does) gets the same study for the same seed, resumed or not.

pub mod bench;
pub mod error;
pub mod gp;
pub mod linalg;
pub mod optim;
pub mod pruner;
pub mod rng;
pub mod sampler;
pub mod space;
pub mod study;

pub use error::{SpaceError, TuneError};
pub use pruner::Pruner;
pub use sampler::{Observation, Outcome, Sampler, SamplerKind};
pub use space::{Kind, SearchSpace};
pub use study::{Direction, Study, StudyConfig, Trial, TrialResult, TrialState};
