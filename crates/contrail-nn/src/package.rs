//! Neural model packages: the model package container of contrail-gbdt (safetensors
//! layout, CRC-32 over manifest and tensors) with model kind `nn`. Every parameter tensor
//! is an F32 tensor named as in [`Architecture::tensor_shapes`] (stored flat; the shape
//! follows from the architecture in the manifest). The manifest holds the feature
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
use crate::train::NnParams;
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

/// A packaged model: manifest and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct NnPackage {
    pub manifest: NnManifest,
    pub weights: Weights,
}

/// Serialises a package (deterministic: equal packages give equal bytes).
pub fn to_bytes(p: &NnPackage) -> Result<Vec<u8>, NnError> {
    let shapes = p.manifest.architecture.tensor_shapes();
    if shapes.len() != p.weights.len() {
        return Err(NnError::Data(format!(
            "{} weight tensors for {} in the architecture",
            p.weights.len(),
            shapes.len()
        )));
    }
    let mut w = Writer::default();
    for ((name, _), v) in shapes.iter().zip(&p.weights) {
        w.f32(name.clone(), v.iter().copied());
    }
    let text =
        serde_json::to_string(&p.manifest).map_err(|e| NnError::Data(format!("manifest: {e}")))?;
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
    let shapes = m.architecture.tensor_shapes();
    let names = r.names();
    if names.len() != shapes.len() {
        return Err(err(format!(
            "{} tensors; the architecture has {}",
            names.len(),
            shapes.len()
        )));
    }
    let mut weights = Vec::with_capacity(shapes.len());
    for (name, shape) in &shapes {
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
    Ok(NnPackage {
        manifest: m,
        weights,
    })
}
