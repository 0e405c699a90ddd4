//! The network: an embedding per categorical feature, concatenated with the numeric
//! inputs, an MLP body (linear, ReLU, dropout) and one output (the raw score), plus the
//! negative binomial's log dispersion.

use burn::module::Param;
use burn::nn::{Embedding, Linear, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::loss::Head;

/// The shape of a network (everything needed to rebuild it before loading weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Per categorical feature: table size (categories + 1) and width.
    pub embeddings: Vec<(usize, usize)>,
    /// Numeric inputs (values and missing indicators).
    pub n_num: usize,
    /// Widths of the hidden layers.
    pub hidden: Vec<usize>,
    pub dropout: f64,
    pub head: Head,
}

/// Sizes past these are refused when a package is read (so a hostile manifest cannot
/// ask for an enormous allocation): 2^24 parameters in one tensor.
pub const MAX_TENSOR: usize = 1 << 24;

impl Architecture {
    /// The network of `params` over the inputs of `enc`.
    pub fn for_encoder(
        enc: &crate::data::Encoder,
        params: &crate::train::NnParams,
    ) -> Architecture {
        Architecture {
            embeddings: enc.embeddings(),
            n_num: enc.n_num(),
            hidden: params.hidden.clone(),
            dropout: params.dropout,
            head: params.head,
        }
    }

    pub fn input_width(&self) -> usize {
        self.embeddings.iter().map(|e| e.1).sum::<usize>() + self.n_num
    }

    /// The name and shape of every parameter tensor, in the package's order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for (i, (n, d)) in self.embeddings.iter().enumerate() {
            out.push((format!("embedding.{i}.weight"), vec![*n, *d]));
        }
        let mut w = self.input_width();
        for (i, h) in self.hidden.iter().enumerate() {
            out.push((format!("hidden.{i}.weight"), vec![w, *h]));
            out.push((format!("hidden.{i}.bias"), vec![*h]));
            w = *h;
        }
        out.push(("out.weight".into(), vec![w, 1]));
        out.push(("out.bias".into(), vec![1]));
        out.push(("log_alpha".into(), vec![1]));
        out
    }

    /// Checks sizes (each tensor at most [`MAX_TENSOR`] values, widths positive).
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if self.hidden.contains(&0) {
            return Err("a hidden layer has width 0".into());
        }
        if self.input_width() == 0 {
            return Err("the network has no inputs".into());
        }
        for (name, shape) in self.tensor_shapes() {
            let n = shape
                .iter()
                .try_fold(1usize, |a, b| a.checked_mul(*b))
                .unwrap_or(usize::MAX);
            if n == 0 || n > MAX_TENSOR {
                return Err(format!("tensor `{name}` would have {n} values"));
            }
        }
        Ok(())
    }

    /// Initial weights from `seed` alone (the same on every back end): embeddings
    /// N(0, 1); linear weights and biases U(-k, k) with k = 1/sqrt(fan-in).
    pub fn initial_weights(&self, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = crate::rng::Rng::new(seed ^ 0x1417_5EED);
        let mut out = Vec::new();
        for (name, shape) in self.tensor_shapes() {
            let n: usize = shape.iter().product();
            let v: Vec<f32> = if name.starts_with("embedding.") {
                (0..n).map(|_| rng.normal() as f32).collect()
            } else if name == "log_alpha" {
                vec![0.0]
            } else {
                let fan_in = if name.ends_with(".bias") {
                    // the weight before it: [fan_in, width]
                    out.last()
                        .map(|w: &Vec<f32>| w.len() / n.max(1))
                        .unwrap_or(1)
                } else {
                    shape[0]
                };
                let k = 1.0 / (fan_in.max(1) as f64).sqrt();
                (0..n)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * k) as f32)
                    .collect()
            };
            out.push(v);
        }
        out
    }

    /// A network with the initial weights of `seed` on `device`.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Net<B> {
        let w = self.initial_weights(seed);
        crate::weights::build(self, &w, device).unwrap_or_else(|_| unreachable_shapes())
    }
}

#[allow(clippy::panic)]
fn unreachable_shapes() -> ! {
    // initial_weights makes exactly the shapes build checks.
    panic!("initial weights do not match their own architecture")
}

#[derive(Module, Debug)]
pub struct Net<B: Backend> {
    pub embeddings: Vec<Embedding<B>>,
    pub hidden: Vec<Linear<B>>,
    pub out: Linear<B>,
    /// Log dispersion of the negative binomial head (unused by the others).
    pub log_alpha: Param<Tensor<B, 1>>,
    pub act: Relu,
}

impl<B: Backend> Net<B> {
    /// Raw scores `[batch]` of `cat` ids `[batch, n_cat]` and numeric inputs
    /// `[batch, n_num]`.
    pub fn forward(&self, cat: Tensor<B, 2, Int>, num: Tensor<B, 2>) -> Tensor<B, 1> {
        self.forward_masked(cat, num, &[])
    }

    /// [`Net::forward`] with dropout: `masks[i]` (`[batch, width_i]`, each 0 or
    /// 1/(1-p)) multiplies the output of hidden layer `i`. No masks: no dropout.
    pub fn forward_masked(
        &self,
        cat: Tensor<B, 2, Int>,
        num: Tensor<B, 2>,
        masks: &[Tensor<B, 2>],
    ) -> Tensor<B, 1> {
        let [batch, n_num] = num.dims();
        let mut parts: Vec<Tensor<B, 2>> = Vec::with_capacity(self.embeddings.len() + 1);
        for (j, emb) in self.embeddings.iter().enumerate() {
            let col = cat.clone().slice([0..batch, j..j + 1]);
            let d = emb.weight.dims()[1];
            parts.push(emb.forward(col).reshape([batch, d]));
        }
        if n_num > 0 {
            parts.push(num);
        }
        let mut x = Tensor::cat(parts, 1);
        for (i, l) in self.hidden.iter().enumerate() {
            x = self.act.forward(l.forward(x));
            if let Some(m) = masks.get(i) {
                x = x * m.clone();
            }
        }
        self.out.forward(x).reshape([batch])
    }

    pub fn log_alpha(&self) -> Tensor<B, 1> {
        self.log_alpha.val()
    }
}
