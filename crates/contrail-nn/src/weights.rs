//! A network's parameters as host vectors, in [`Architecture::tensor_shapes`] order:
//! the form packages store and every back end loads.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::prelude::*;

use crate::model::{Architecture, Net};
use crate::NnError;

/// Parameter values, one vector per tensor of [`Architecture::tensor_shapes`].
pub type Weights = Vec<Vec<f32>>;

fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, NnError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| NnError::Backend(format!("reading weights: {e:?}")))
}

/// The parameters of `net`.
pub fn extract<B: Backend>(net: &Net<B>) -> Result<Weights, NnError> {
    let mut out = Vec::new();
    for e in &net.embeddings {
        out.push(host(e.weight.val())?);
    }
    for l in &net.hidden {
        out.push(host(l.weight.val())?);
        out.push(match &l.bias {
            Some(b) => host(b.val())?,
            None => vec![0.0; l.weight.dims()[1]],
        });
    }
    out.push(host(net.out.weight.val())?);
    out.push(match &net.out.bias {
        Some(b) => host(b.val())?,
        None => vec![0.0],
    });
    out.push(host(net.log_alpha.val())?);
    Ok(out)
}

/// Checks that `w` has one tensor per entry of `shapes` ([`Architecture::tensor_shapes`]),
/// each of its shape's length.
pub fn check(shapes: &[(String, Vec<usize>)], w: &Weights) -> Result<(), NnError> {
    if w.len() != shapes.len() {
        return Err(NnError::Data(format!(
            "{} weight tensors for an architecture of {}",
            w.len(),
            shapes.len()
        )));
    }
    for ((name, shape), v) in shapes.iter().zip(w) {
        if shape.iter().product::<usize>() != v.len() {
            return Err(NnError::Data(format!(
                "tensor `{name}` has {} values, its shape {shape:?} needs {}",
                v.len(),
                shape.iter().product::<usize>()
            )));
        }
    }
    Ok(())
}

/// A network of `arch` with parameters `w` on `device` (shapes checked).
pub fn build<B: Backend>(
    arch: &Architecture,
    w: &Weights,
    device: &B::Device,
) -> Result<Net<B>, NnError> {
    let shapes = arch.tensor_shapes();
    check(&shapes, w)?;
    let t2 = |v: &Vec<f32>, s: &[usize]| -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v.clone(), [s[0], s[1]]), device)
    };
    let t1 = |v: &Vec<f32>| -> Tensor<B, 1> {
        Tensor::from_data(TensorData::new(v.clone(), [v.len()]), device)
    };
    let mut k = 0;
    let mut embeddings = Vec::with_capacity(arch.embeddings.len());
    for _ in &arch.embeddings {
        embeddings.push(Embedding {
            weight: Param::from_tensor(t2(&w[k], &shapes[k].1)),
        });
        k += 1;
    }
    let mut hidden = Vec::with_capacity(arch.hidden.len());
    for _ in &arch.hidden {
        hidden.push(Linear {
            weight: Param::from_tensor(t2(&w[k], &shapes[k].1)),
            bias: Some(Param::from_tensor(t1(&w[k + 1]))),
        });
        k += 2;
    }
    let net = Net {
        embeddings,
        hidden,
        out: Linear {
            weight: Param::from_tensor(t2(&w[k], &shapes[k].1)),
            bias: Some(Param::from_tensor(t1(&w[k + 1]))),
        },
        log_alpha: Param::from_tensor(t1(&w[k + 2])),
        act: burn::nn::Relu::new(),
    };
    Ok(net)
}
