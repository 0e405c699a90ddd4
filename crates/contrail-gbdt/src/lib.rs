//! Histogram gradient-boosted trees on the CPU.
//!
//! - [`data`]: datasets from Arrow batches (numeric and categorical columns by name).
//! - [`bin`]: quantile binning; the row-major bin matrix of the histogram pass (u8, or
//!   u16 past 256 bins), features with few bins bundled into one byte of joint bins.
//! - [`train`]: fixed-point histograms, split finding (numeric with learned missing
//!   direction, categorical by gradient ordering), leaf-wise and depth-wise growth.
//! - [`booster`]: the boosting loop (bagging, feature fraction, early stopping) and the
//!   trained [`booster::Booster`] with prediction and importances.
//! - [`predict`]: the fast CPU predictor (a compiled forest walked on binned rows).
//! - [`objective`], [`metric`]: LightGBM's objectives and metrics.
//! - [`device`]: training on `wgpu` or `cuda[:N]` (cargo features of the same names),
//!   the same trees as the CPU.
//! - [`iforest`]: isolation forests (scikit-learn's semantics) for fare anomalies.
//! - [`import`]: LightGBM text and XGBoost JSON/UBJSON models in, XGBoost JSON out, each
//!   library's decision rules kept exactly ([`ubjson`] reads the binary form).
//! - [`package`]: the model package (safetensors), validated on load, for every model kind.

pub mod bin;
pub mod booster;
pub mod conformance;
pub mod data;
pub mod device;
pub mod iforest;
pub mod import;
pub mod metric;
pub mod objective;
pub mod package;
pub mod predict;
pub mod shap;
pub mod train;
pub mod tree;
pub mod ubjson;

pub use booster::{
    train, train_on, train_on_until, train_with_predictions, Booster, Control, IterationLog,
    Precision,
};
pub use data::{Column, Dataset};
pub use device::Device;
pub use objective::Objective;
pub use train::{GrowPolicy, Params};

#[derive(Debug, thiserror::Error)]
pub enum GbdtError {
    #[error("invalid parameter `{name}`: {reason}")]
    Param { name: &'static str, reason: String },
    #[error("{what}: {reason}")]
    Data { what: String, reason: String },
    #[error("model package {path}: {reason}")]
    Package { path: String, reason: String },
    #[error("importing a model")]
    Import(#[from] import::ImportError),
    #[error("training device")]
    Device(#[from] contrail_kernels::AccelError),
}

impl GbdtError {
    /// Whether the user can fix it (bad data, parameters, files, a device that is not
    /// there), as opposed to a device that failed while running.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            GbdtError::Device(contrail_kernels::AccelError::Device { .. })
        )
    }
}
