//! Neural model packages: the model package container of contrail-gbdt (safetensors
//! layout, CRC-32 over manifest and tensors) with model kind `nn`. Every parameter tensor
//! is an F32 tensor named as in [`Architecture::tensor_shapes`] (stored flat; the shape
//! follows from the architecture in the manifest). An ensemble (`params.ensemble`
//! networks) stores its first network under those names and network `k` under
//! `m{k}.` followed by them ([`member_tensor`]). The manifest holds the feature
//! schema with the category maps and normalisation statistics ([`Encoder`]), the
//! architecture, the training parameters, metrics, a fingerprint of the training data
//! and lineage.
//!
//! Reading validates everything before a tensor is built: the container (size cap,
//! checksum, byte ranges), the manifest (encoder statistics finite, the architecture
//! within size limits and matching the encoder), each tensor's length against its shape,
//! and every weight finite.

use std::collections::BTreeMap;

use contrail_gbdt::package::{self as container, DataFingerprint, Writer, FORMAT_VERSION};
use contrail_gbdt::GbdtError;
use serde::{Deserialize, Serialize};

use crate::data::Encoder;
use crate::model::Architecture;
use crate::train::{NnParams, MAX_MEMBERS};
use crate::weights::Weights;
use crate::NnError;

pub const MODEL_KIND: &str = "nn";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnManifest {
    pub format_version: u32,
    pub model_kind: String,
    pub contrail_version: String,
    /// The column the model predicts (for scoring output names and lineage).
    pub target: String,
    pub encoder: Encoder,
    pub architecture: Architecture,
    pub params: NnParams,
    pub best_epoch: usize,
    /// Final metrics, e.g. `valid-poisson_deviance`.
    pub metrics: BTreeMap<String, f64>,
    pub training_data: DataFingerprint,
    pub lineage: BTreeMap<String, String>,
}

/// A packaged model: manifest and the weights of each network (one per ensemble member,
/// `manifest.params.ensemble` of them).
#[derive(Debug, Clone, PartialEq)]
pub struct NnPackage {
    pub manifest: NnManifest,
    pub members: Vec<Weights>,
}

/// The stored name of tensor `name` of ensemble member `k`.
pub fn member_tensor(k: usize, name: &str) -> String {
    if k == 0 {
        name.to_string()
    } else {
        format!("m{k}.{name}")
    }
}

/// Serialises a package (deterministic: equal packages give equal bytes).
pub fn to_bytes(p: &NnPackage) -> Result<Vec<u8>, NnError> {
    let shapes = p.manifest.architecture.tensor_shapes();
    if p.members.len() != p.manifest.params.ensemble {
        return Err(NnError::Data(format!(
            "{} networks for an ensemble of {}",
            p.members.len(),
            p.manifest.params.ensemble
        )));
    }
    let mut w = Writer::default();
    for (k, member) in p.members.iter().enumerate() {
        crate::weights::check(&shapes, member)?;
        for ((name, _), v) in shapes.iter().zip(member) {
            w.f32(member_tensor(k, name), v.iter().copied());
        }
    }
    // A metric that is not finite (a diverged validation loss) is left out: JSON has no
    // such number, and the package must load.
    let mut manifest = p.manifest.clone();
    manifest.metrics.retain(|_, v| v.is_finite());
    let text =
        serde_json::to_string(&manifest).map_err(|e| NnError::Data(format!("manifest: {e}")))?;
    Ok(container::encode(w, &text)?)
}

/// Parses and validates package bytes; `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &str) -> Result<NnPackage, NnError> {
    let err = |reason: String| {
        NnError::Gbdt(GbdtError::Package {
            path: path.to_string(),
            reason,
        })
    };
    let (text, r) = container::decode(bytes, path)?;
    container::check_kind(&text, path, Some(MODEL_KIND))?;
    let m: NnManifest = serde_json::from_str(&text).map_err(|e| err(format!("manifest: {e}")))?;
    if m.format_version != FORMAT_VERSION {
        return Err(err(format!("format version {}", m.format_version)));
    }
    m.encoder
        .validate()
        .map_err(|e| err(format!("encoder: {e}")))?;
    m.architecture
        .validate()
        .map_err(|e| err(format!("architecture: {e}")))?;
    if m.architecture.embeddings != m.encoder.embeddings()
        || m.architecture.n_num != m.encoder.n_num()
    {
        return Err(err(
            "the architecture's inputs do not match the feature encoder".into(),
        ));
    }
    let k = m.params.ensemble;
    if k == 0 || k > MAX_MEMBERS {
        return Err(err(format!(
            "params.ensemble {k} is not in 1..={MAX_MEMBERS}"
        )));
    }
    let shapes = m.architecture.tensor_shapes();
    let names = r.names();
    if names.len() != shapes.len() * k {
        return Err(err(format!(
            "{} tensors; {k} network(s) of the architecture have {}",
            names.len(),
            shapes.len() * k
        )));
    }
    let mut members = Vec::with_capacity(k);
    for member in 0..k {
        members.push(read_member(&r, &shapes, member, &err)?);
    }
    Ok(NnPackage {
        manifest: m,
        members,
    })
}

fn read_member(
    r: &container::Reader<'_>,
    shapes: &[(String, Vec<usize>)],
    member: usize,
    err: &dyn Fn(String) -> NnError,
) -> Result<Weights, NnError> {
    let mut weights = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let name = &member_tensor(member, name);
        let v = r.f32(name)?;
        let want: usize = shape.iter().product();
        if v.len() != want {
            return Err(err(format!(
                "tensor `{name}` has {} values; shape {shape:?} needs {want}",
                v.len()
            )));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(err(format!(
                "tensor `{name}` has a value that is not finite"
            )));
        }
        weights.push(v);
    }
    Ok(weights)
}
