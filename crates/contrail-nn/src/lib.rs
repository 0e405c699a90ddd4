//! Neural demand models on burn: entity embeddings for the categorical features,
//! standardised numeric features, an MLP body and a Poisson, negative binomial or
//! logistic head; AdamW training with a learning-rate schedule, dropout, weight decay,
//! early stopping and resumable checkpoints; packages in the model package format.
//!
//! Training runs on any burn back end ([`Device`]): the CPU (ndarray) always, wgpu and
//! CUDA with the cargo features of the same names. Packages hold host weights and score
//! on the CPU.

#![recursion_limit = "256"]

pub mod data;
pub mod loss;
pub mod model;
pub mod package;
pub mod rng;
pub mod train;
pub mod weights;

use burn::backend::Autodiff;
use contrail_gbdt::{Dataset, GbdtError};

pub use data::{Encoded, Encoder};
pub use loss::Head;
pub use model::{Architecture, Net};
pub use package::{NnManifest, NnPackage};
pub use train::{Block, Control, EpochLog, Next, NnParams, Source, Split, Trained};

/// The CPU back end (ndarray, f32).
pub type Cpu = burn::backend::NdArray<f32>;

#[derive(Debug, thiserror::Error)]
pub enum NnError {
    #[error("parameter `{name}`: {reason}")]
    Param { name: &'static str, reason: String },
    #[error("{0}")]
    Data(String),
    #[error("training diverged at epoch {epoch}: {reason}")]
    Diverged { epoch: usize, reason: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("{path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device back end: {0}")]
    Backend(String),
    /// A block of training or validation rows could not be read (a file, the network).
    #[error("reading {what}")]
    Read {
        what: String,
        user_error: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("device `{0}` is not in this build (enable the cargo feature of that name)")]
    DeviceUnavailable(String),
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
}

impl NnError {
    /// Whether the error is the user's (bad data, parameters, files) rather than ours.
    pub fn is_user_error(&self) -> bool {
        match self {
            NnError::Backend(_) => false,
            NnError::Read { user_error, .. } => *user_error,
            NnError::Gbdt(e) => e.is_user_error(),
            _ => true,
        }
    }
}

/// Where a network trains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Wgpu,
    Cuda(usize),
}

impl Device {
    /// `cpu`, `wgpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Result<Device, NnError> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "wgpu" => Ok(Device::Wgpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(Device::Cuda(i)),
                _ => Err(NnError::Param {
                    name: "device",
                    reason: format!("{s:?}: use cpu, wgpu, cuda or cuda:N"),
                }),
            },
        }
    }
}

/// Trains on `device` (see [`train::fit`]).
pub fn fit_on(
    device: &Device,
    arch: Architecture,
    params: &NnParams,
    train: &dyn Source,
    valid: Option<&dyn Source>,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&EpochLog) -> Next,
) -> Result<Trained, NnError> {
    match device {
        Device::Cpu => {
            let d = burn::backend::ndarray::NdArrayDevice::Cpu;
            train::fit::<Autodiff<Cpu>>(arch, params, train, valid, &d, ctl, on_epoch)
        }
        #[cfg(feature = "wgpu")]
        Device::Wgpu => {
            // A Vulkan/Metal/DX12 adapter must exist (burn would panic without one).
            contrail_gbdt::Device::Wgpu
                .describe()
                .map_err(|e| NnError::Backend(format!("wgpu: {e}")))?;
            let d = burn::backend::wgpu::WgpuDevice::default();
            train::fit::<Autodiff<burn::backend::Wgpu>>(
                arch, params, train, valid, &d, ctl, on_epoch,
            )
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            contrail_gbdt::Device::Cuda(*i)
                .describe()
                .map_err(|e| NnError::Backend(format!("cuda:{i}: {e}")))?;
            let d = burn::backend::cuda::CudaDevice::new(*i);
            train::fit::<Autodiff<burn::backend::Cuda>>(
                arch, params, train, valid, &d, ctl, on_epoch,
            )
        }
        #[allow(unreachable_patterns)]
        other => Err(NnError::DeviceUnavailable(
            format!("{other:?}").to_lowercase(),
        )),
    }
}

/// A model ready to score on the CPU.
pub struct NnModel {
    pub package: NnPackage,
    net: Net<Cpu>,
}

impl NnModel {
    pub fn new(package: NnPackage) -> Result<NnModel, NnError> {
        let d = burn::backend::ndarray::NdArrayDevice::Cpu;
        let net = weights::build::<Cpu>(&package.manifest.architecture, &package.weights, &d)?;
        Ok(NnModel { package, net })
    }

    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<NnModel, NnError> {
        NnModel::new(package::from_bytes(bytes, path)?)
    }

    pub fn head(&self) -> Head {
        self.package.manifest.architecture.head
    }

    /// Raw scores (log mean or logit) of encoded rows.
    pub fn raw_encoded(&self, x: &Encoded) -> Result<Vec<f32>, NnError> {
        let d = burn::backend::ndarray::NdArrayDevice::Cpu;
        train::raw_scores(&self.net, x, 16_384, &d)
    }

    /// Predictions (mean count or booking probability) of the rows of `data`.
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f64>, NnError> {
        let x = self.package.manifest.encoder.encode(data)?;
        let head = self.head();
        Ok(self
            .raw_encoded(&x)?
            .iter()
            .map(|e| head.response(*e as f64))
            .collect())
    }

    /// The negative binomial dispersion.
    pub fn alpha(&self) -> f64 {
        train::alpha_of(&self.net)
    }
}
