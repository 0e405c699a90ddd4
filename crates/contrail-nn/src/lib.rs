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

/// The networks of a training run: one per ensemble member, in member order.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub arch: Architecture,
    pub members: Vec<Trained>,
    /// The validation negative log-likelihood of the weights as packaged (the members'
    /// mean response, after each member's level refit), when there is a validation split.
    pub valid_nll: Option<f64>,
    /// The epoch callback asked to stop (a pruned trial): the members after the one it
    /// stopped were not trained.
    pub stopped: bool,
}

impl Ensemble {
    /// The members' weights, as a package holds them.
    pub fn weights(&self) -> Vec<weights::Weights> {
        self.members.iter().map(|m| m.weights.clone()).collect()
    }

    /// Every member's epochs, member after member.
    pub fn history(&self) -> Vec<EpochLog> {
        self.members
            .iter()
            .flat_map(|m| m.history.iter().cloned())
            .collect()
    }

    /// The first member's best epoch.
    pub fn best_epoch(&self) -> usize {
        self.members.first().map_or(0, |m| m.best_epoch)
    }
}

/// The checkpoint file of ensemble member `k`: `path` itself for the first, `path.mK`
/// for the others.
pub fn member_checkpoint(path: &std::path::Path, k: usize) -> std::path::PathBuf {
    if k == 0 {
        return path.to_path_buf();
    }
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".m{k}"));
    name.into()
}

/// Trains the `params.ensemble` networks of a run on `device`, one after another, each
/// from its own seed ([`train::member_seed`]) with its own early stopping and checkpoint
/// ([`member_checkpoint`]; a finished member's checkpoint resumes to its result), then
/// scores the ensemble on `valid`. `on_epoch` sees every member's epochs (`member` set);
/// [`Next::Stop`] ends the run after that member.
pub fn fit_on(
    device: &Device,
    arch: Architecture,
    params: &NnParams,
    train: &dyn Source,
    valid: Option<&dyn Source>,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&EpochLog) -> Next,
) -> Result<Ensemble, NnError> {
    params.validate()?;
    // One pass over the data for every network (targets checked, the starting level).
    let scanned = train::scan(&arch, params.head, train, valid)?;
    let mut members = Vec::with_capacity(params.ensemble);
    let mut stopped = false;
    for k in 0..params.ensemble {
        let mut p = params.clone();
        p.seed = train::member_seed(params.seed, k);
        p.ensemble = 1;
        let c = Control {
            checkpoint: ctl.checkpoint.as_deref().map(|c| member_checkpoint(c, k)),
            stop_after_epochs: ctl.stop_after_epochs,
        };
        let mut t = fit_device(
            device,
            arch.clone(),
            &p,
            train,
            valid,
            &scanned,
            &c,
            &mut |l| {
                let mut l = l.clone();
                l.member = k;
                let next = on_epoch(&l);
                stopped |= next == Next::Stop;
                next
            },
        )?;
        for h in &mut t.history {
            h.member = k;
        }
        let finished = t.finished;
        members.push(t);
        if stopped || !finished {
            break;
        }
    }
    // Scored only when every network ran to its end (not killed, not pruned).
    let complete = members.len() == params.ensemble && members.iter().all(|m| m.finished);
    let valid_nll = match valid {
        Some(v) if complete => {
            let w: Vec<&weights::Weights> = members.iter().map(|m| &m.weights).collect();
            Some(train::ensemble_nll(&arch, &w, v, "validation")?)
        }
        _ => None,
    };
    Ok(Ensemble {
        arch,
        members,
        valid_nll,
        stopped,
    })
}

/// Trains one network on `device`'s back end from a [`train::scan`] of its data (see
/// [`train::fit_scanned`]).
#[allow(clippy::too_many_arguments)]
fn fit_device(
    device: &Device,
    arch: Architecture,
    params: &NnParams,
    train: &dyn Source,
    valid: Option<&dyn Source>,
    scanned: &train::Scanned,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&EpochLog) -> Next,
) -> Result<Trained, NnError> {
    match device {
        Device::Cpu => {
            let d = burn::backend::ndarray::NdArrayDevice::Cpu;
            train::fit_scanned::<Autodiff<Cpu>>(
                arch, params, train, valid, scanned, &d, ctl, on_epoch,
            )
        }
        #[cfg(feature = "wgpu")]
        Device::Wgpu => {
            // A Vulkan/Metal/DX12 adapter must exist (burn would panic without one).
            contrail_gbdt::Device::Wgpu
                .describe()
                .map_err(|e| NnError::Backend(format!("wgpu: {e}")))?;
            let d = burn::backend::wgpu::WgpuDevice::default();
            train::fit_scanned::<Autodiff<burn::backend::Wgpu>>(
                arch, params, train, valid, scanned, &d, ctl, on_epoch,
            )
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(i) => {
            contrail_gbdt::Device::Cuda(*i)
                .describe()
                .map_err(|e| NnError::Backend(format!("cuda:{i}: {e}")))?;
            let d = burn::backend::cuda::CudaDevice::new(*i);
            train::fit_scanned::<Autodiff<burn::backend::Cuda>>(
                arch, params, train, valid, scanned, &d, ctl, on_epoch,
            )
        }
        #[allow(unreachable_patterns)]
        other => Err(NnError::DeviceUnavailable(
            format!("{other:?}").to_lowercase(),
        )),
    }
}

/// A model ready to score on the CPU: its networks (one per ensemble member).
pub struct NnModel {
    pub package: NnPackage,
    nets: Vec<Net<Cpu>>,
}

impl NnModel {
    pub fn new(package: NnPackage) -> Result<NnModel, NnError> {
        let d = burn::backend::ndarray::NdArrayDevice::Cpu;
        if package.members.is_empty() {
            return Err(NnError::Data("a package of no networks".into()));
        }
        let nets = package
            .members
            .iter()
            .map(|w| weights::build::<Cpu>(&package.manifest.architecture, w, &d))
            .collect::<Result<_, _>>()?;
        Ok(NnModel { package, nets })
    }

    pub fn from_bytes(bytes: &[u8], path: &str) -> Result<NnModel, NnError> {
        NnModel::new(package::from_bytes(bytes, path)?)
    }

    pub fn head(&self) -> Head {
        self.package.manifest.architecture.head
    }

    fn member_scores(&self, x: &Encoded) -> Result<Vec<Vec<f32>>, NnError> {
        let d = burn::backend::ndarray::NdArrayDevice::Cpu;
        self.nets
            .iter()
            .map(|n| train::raw_scores(n, x, 16_384, &d))
            .collect()
    }

    /// Raw scores (log mean or logit) of encoded rows: the link of the members' mean
    /// response ([`train::combine`]).
    pub fn raw_encoded(&self, x: &Encoded) -> Result<Vec<f32>, NnError> {
        Ok(train::combine(self.head(), &self.member_scores(x)?))
    }

    /// Predictions (mean count or booking probability) of the rows of `data`: the
    /// members' mean response.
    pub fn predict(&self, data: &Dataset) -> Result<Vec<f64>, NnError> {
        let x = self.package.manifest.encoder.encode(data)?;
        let head = self.head();
        let etas = self.member_scores(&x)?;
        Ok((0..x.n_rows)
            .map(|i| train::mean_response(head, &etas, i))
            .collect())
    }

    /// The negative binomial dispersion (the members' mean).
    pub fn alpha(&self) -> f64 {
        self.nets.iter().map(train::alpha_of).sum::<f64>() / self.nets.len() as f64
    }
}
