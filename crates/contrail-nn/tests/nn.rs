#![allow(clippy::unwrap_used)]
//! contrail-nn: losses against closed forms, gradients, learning a known rate, seeded
//! determinism, checkpoint resume, packages.

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use contrail_gbdt::{Column, Dataset};
use contrail_nn::loss::{self, lgamma_f64, Head};
use std::borrow::Cow;

use contrail_nn::data::EncoderFit;
use contrail_nn::train::{epoch_windows, fit, Block, Control, Next, NnParams, Source, Split};
use contrail_nn::{package, Architecture, Encoded, Encoder, NnManifest, NnModel, NnPackage};

type F32 = NdArray<f32>;
type AD32 = Autodiff<NdArray<f32>>;

fn dev() -> burn::backend::ndarray::NdArrayDevice {
    burn::backend::ndarray::NdArrayDevice::Cpu
}

/// A small deterministic generator for test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        (-2.0 * self.uniform().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
    fn poisson(&mut self, mu: f64) -> f64 {
        // Inversion by sequential search (mu is small here).
        let (mut k, mut p, u) = (0.0, (-mu).exp(), self.uniform());
        let mut c = p;
        while u > c && k < 1000.0 {
            k += 1.0;
            p *= mu / k;
            c += p;
        }
        k
    }
    fn gamma(&mut self, shape: f64) -> f64 {
        // Marsaglia and Tsang (shape >= 1; boosted below 1).
        if shape < 1.0 {
            return self.gamma(shape + 1.0) * self.uniform().powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v > 0.0 && self.uniform().ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

#[test]
fn lgamma_matches_known_values_and_the_tensor_series() {
    let pi = std::f64::consts::PI;
    assert!(lgamma_f64(1.0).abs() < 1e-13);
    assert!(lgamma_f64(2.0).abs() < 1e-13);
    assert!((lgamma_f64(0.5) - 0.5 * pi.ln()).abs() < 1e-13);
    assert!((lgamma_f64(10.0) - 362_880f64.ln()).abs() < 1e-12);
    assert!((lgamma_f64(100.5) - 361.435_540_467_777_6).abs() < 1e-9);
    // The tensor series runs in f32: within a few f32 ulps of the f64 closed form.
    let xs: Vec<f32> = (1..400).map(|i| i as f32 * 0.137).collect();
    let t = Tensor::<F32, 1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &dev());
    let got: Vec<f32> = loss::lgamma(t).into_data().to_vec().unwrap();
    for (x, g) in xs.iter().zip(&got) {
        let want = lgamma_f64(*x as f64);
        assert!(
            (*g as f64 - want).abs() < 2e-5 * want.abs().max(1.0),
            "lgamma({x}): {g} vs {want}"
        );
    }
}

fn scalar_loss_mean(head: Head, eta: &[f64], y: &[f64], alpha: f64) -> f64 {
    // The training loss drops lgamma(y+1), which does not depend on the parameters.
    eta.iter()
        .zip(y)
        .map(|(e, y)| {
            let c = if head == Head::Logistic {
                0.0
            } else {
                lgamma_f64(y + 1.0)
            };
            loss::nll(head, *e, *y, alpha) - c
        })
        .sum::<f64>()
        / eta.len() as f64
}

#[test]
fn tensor_losses_equal_the_closed_forms_and_their_gradients() {
    let mut r = Rng(5);
    let n = 300;
    let eta: Vec<f64> = (0..n).map(|_| r.normal() * 1.5).collect();
    let counts: Vec<f64> = eta.iter().map(|e| r.poisson(e.exp().min(40.0))).collect();
    let binary: Vec<f64> = eta
        .iter()
        .map(|e| (r.uniform() < 1.0 / (1.0 + (-e).exp())) as u8 as f64)
        .collect();
    let log_alpha = -0.7f64;
    for head in [Head::Poisson, Head::NegativeBinomial, Head::Logistic] {
        let y = if head == Head::Logistic {
            &binary
        } else {
            &counts
        };
        // Tensors in f32, closed forms in f64 on the same (f32-representable) inputs.
        let eta32: Vec<f32> = eta.iter().map(|v| *v as f32).collect();
        let y32: Vec<f32> = y.iter().map(|v| *v as f32).collect();
        let eta: Vec<f64> = eta32.iter().map(|v| *v as f64).collect();
        let et = Tensor::<AD32, 1>::from_data(TensorData::new(eta32, [n]), &dev()).require_grad();
        let yt = Tensor::<AD32, 1>::from_data(TensorData::new(y32, [n]), &dev());
        let la = Tensor::<AD32, 1>::from_data(TensorData::new(vec![log_alpha as f32], [1]), &dev())
            .require_grad();
        let alpha = (log_alpha as f32 as f64).exp();
        let l = loss::loss(head, et.clone(), yt, Some(la.clone()));
        let got = l.clone().into_scalar() as f64;
        let want = scalar_loss_mean(head, &eta, y, alpha);
        assert!(
            (got - want).abs() < 2e-6 * want.abs().max(1.0),
            "{head:?}: {got} vs {want}"
        );
        let g = l.backward();
        let ge: Vec<f32> = et.grad(&g).unwrap().into_data().to_vec().unwrap();
        for i in 0..n {
            let (e, yi) = (eta[i], y[i]);
            let mu = e.exp();
            let want = match head {
                Head::Poisson => mu - yi,
                Head::Logistic => 1.0 / (1.0 + (-e).exp()) - yi,
                Head::NegativeBinomial => {
                    let r = 1.0 / alpha;
                    r * (mu - yi) / (r + mu)
                }
            } / n as f64;
            // f32 rounding of mu and of mu - y: relative to the terms, not their difference.
            // The negative binomial's gradient goes through burn's backward of log, which
            // multiplies by the ndarray back end's approximate reciprocal (about 12 bits).
            let rel = if head == Head::NegativeBinomial {
                2e-4
            } else {
                1e-5
            };
            let scale = if head == Head::Logistic {
                5.0
            } else {
                mu + yi + 1.0
            };
            let tol = rel * scale / n as f64;
            assert!(
                (ge[i] as f64 - want).abs() < tol,
                "{head:?} d/deta[{i}]: {} vs {want}",
                ge[i]
            );
        }
        if head == Head::NegativeBinomial {
            // d/dlog_alpha against a central difference of the closed form.
            let ga = la.grad(&g).unwrap().into_scalar() as f64;
            let la64 = log_alpha as f32 as f64;
            let h = 1e-5;
            let fd = (scalar_loss_mean(head, &eta, y, (la64 + h).exp())
                - scalar_loss_mean(head, &eta, y, (la64 - h).exp()))
                / (2.0 * h);
            // A sum of 300 f32 digamma-like differences: agreement to 1e-3.
            assert!(
                (ga - fd).abs() < 1e-3 * fd.abs().max(1e-2),
                "d/dlog_alpha {ga} vs {fd}"
            );
        }
    }
}

/// A dataset with a known Poisson rate: log mu = 0.3 + 0.8·x1 - 0.5·x2 + effect[cat].
fn synthetic(n: usize, seed: u64, nb_alpha: Option<f64>) -> (Dataset, Vec<f64>) {
    let mut r = Rng(seed);
    let effects = [0.4, -0.3, 0.0, 0.7, -0.8];
    let (mut x1, mut x2, mut cat, mut y, mut mu) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let a = r.normal();
        let b = r.uniform() * 2.0 - 1.0;
        let c = (r.next() % 5) as usize;
        let m = (0.3 + 0.8 * a - 0.5 * b + effects[c]).exp();
        let lam = match nb_alpha {
            Some(al) => r.gamma(1.0 / al) * al * m,
            None => m,
        };
        x1.push(if r.uniform() < 0.05 { f64::NAN } else { a });
        if x1.last().is_some_and(|v| v.is_nan()) {
            // A missing x1 leaves its effect in the rate: the indicator cannot recover it,
            // so the truth for such rows is the rate averaged over x1 ~ N(0,1).
            let m_avg = (0.3 + 0.32 - 0.5 * b + effects[c]).exp();
            mu.push(m_avg);
            let lam_avg = match nb_alpha {
                Some(al) => r.gamma(1.0 / al) * al * m_avg,
                None => m_avg,
            };
            y.push(r.poisson(lam_avg));
        } else {
            mu.push(m);
            y.push(r.poisson(lam));
        }
        x2.push(b);
        cat.push(Some(["a", "b", "c", "d", "e"][c]));
    }
    let d = Dataset {
        names: vec!["x1".into(), "x2".into(), "carrier".into()],
        columns: vec![
            Column::Numeric(x1),
            Column::Numeric(x2),
            Column::categorical(&cat),
        ],
        target: y,
        weights: None,
    };
    (d, mu)
}

fn params(head: Head, epochs: usize) -> NnParams {
    NnParams {
        head,
        hidden: vec![32, 16],
        batch_size: 256,
        max_epochs: epochs,
        learning_rate: 5e-3,
        dropout: 0.0,
        early_stopping_rounds: 0,
        ..NnParams::default()
    }
}

fn y32(d: &Dataset) -> Vec<f32> {
    d.target.iter().map(|v| *v as f32).collect()
}

#[test]
fn learns_a_known_poisson_rate() {
    let (train, _) = synthetic(20_000, 1, None);
    let (valid, _) = synthetic(4_000, 2, None);
    let (test, mu) = synthetic(10_000, 3, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let p = NnParams {
        early_stopping_rounds: 3,
        ..params(Head::Poisson, 25)
    };
    let (xt, xv) = (enc.encode(&train).unwrap(), enc.encode(&valid).unwrap());
    let (yt, yv) = (y32(&train), y32(&valid));
    let t = fit::<AD32>(
        Architecture::for_encoder(&enc, &p),
        &p,
        &Split { x: &xt, y: &yt },
        Some(&Split { x: &xv, y: &yv }),
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap();
    let model = NnModel::new(NnPackage {
        manifest: manifest(&enc, &t.arch, &p),
        members: vec![t.weights.clone()],
    })
    .unwrap();
    let pred = model.predict(&test).unwrap();
    // Mean absolute log ratio to the true rate, and deviance close to the truth's.
    let mal: f64 = pred
        .iter()
        .zip(&mu)
        .map(|(p, m)| (p / m).ln().abs())
        .sum::<f64>()
        / mu.len() as f64;
    assert!(mal < 0.08, "mean |log(pred/true)| = {mal}");
    let dev_model = loss::mean_poisson_deviance(&test.target, &pred);
    let dev_truth = loss::mean_poisson_deviance(&test.target, &mu);
    assert!(
        dev_model < dev_truth * 1.01,
        "deviance {dev_model} vs truth {dev_truth}"
    );
    // Calibration: mean prediction within 2% of the mean count.
    let (mp, my) = (
        pred.iter().sum::<f64>() / pred.len() as f64,
        test.target.iter().sum::<f64>() / pred.len() as f64,
    );
    assert!(
        (mp / my - 1.0).abs() < 0.02,
        "mean prediction {mp} vs mean count {my}"
    );
}

#[test]
fn negative_binomial_head_learns_the_dispersion() {
    let (train, _) = synthetic(20_000, 11, Some(0.5));
    let (valid, _) = synthetic(4_000, 12, Some(0.5));
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let p = NnParams {
        early_stopping_rounds: 3,
        ..params(Head::NegativeBinomial, 25)
    };
    let (xt, xv) = (enc.encode(&train).unwrap(), enc.encode(&valid).unwrap());
    let (yt, yv) = (y32(&train), y32(&valid));
    let t = fit::<AD32>(
        Architecture::for_encoder(&enc, &p),
        &p,
        &Split { x: &xt, y: &yt },
        Some(&Split { x: &xv, y: &yv }),
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap();
    let model = NnModel::new(NnPackage {
        manifest: manifest(&enc, &t.arch, &p),
        members: vec![t.weights],
    })
    .unwrap();
    let a = model.alpha();
    assert!((a - 0.5).abs() < 0.12, "learned alpha {a}, true 0.5");
}

fn manifest(enc: &Encoder, arch: &Architecture, p: &NnParams) -> NnManifest {
    NnManifest {
        format_version: contrail_gbdt::package::FORMAT_VERSION,
        model_kind: package::MODEL_KIND.into(),
        contrail_version: "test".into(),
        target: "y".into(),
        encoder: enc.clone(),
        architecture: arch.clone(),
        params: p.clone(),
        best_epoch: 0,
        metrics: Default::default(),
        training_data: Default::default(),
        lineage: Default::default(),
    }
}

/// The runs' data: 3,000 training and 1,000 validation rows, encoded, with targets.
fn fixture() -> (Encoder, Encoded, Encoded, Vec<f32>, Vec<f32>) {
    let (train, _) = synthetic(3_000, 21, None);
    let (valid, _) = synthetic(1_000, 22, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let (xt, xv) = (enc.encode(&train).unwrap(), enc.encode(&valid).unwrap());
    (enc, xt, xv, y32(&train), y32(&valid))
}

/// Checkpoints to `ck`, stopping after `stop` epochs as if killed.
fn checkpointed(ck: &std::path::Path, stop: Option<usize>) -> Control {
    Control {
        checkpoint: Some(ck.to_path_buf()),
        stop_after_epochs: stop,
    }
}

fn run(p: &NnParams, ctl: &Control) -> contrail_nn::Trained {
    let (enc, xt, xv, yt, yv) = fixture();
    fit::<AD32>(
        Architecture::for_encoder(&enc, p),
        p,
        &Split { x: &xt, y: &yt },
        Some(&Split { x: &xv, y: &yv }),
        &dev(),
        ctl,
        &mut |_| Next::Continue,
    )
    .unwrap()
}

fn bits(w: &[Vec<f32>]) -> Vec<u32> {
    w.iter().flatten().map(|x| x.to_bits()).collect()
}

#[test]
fn same_seed_same_bits_with_dropout() {
    let p = NnParams {
        dropout: 0.2,
        ..params(Head::Poisson, 3)
    };
    let a = run(&p, &Control::default());
    let b = run(&p, &Control::default());
    assert_eq!(bits(&a.weights), bits(&b.weights));
    let c = run(&NnParams { seed: 43, ..p }, &Control::default());
    assert_ne!(bits(&a.weights), bits(&c.weights));
}

#[test]
fn a_batch_at_once_drops_the_units_its_shards_drop() {
    use contrail_nn::train::{dropout_masks, SHARD_ROWS};
    let arch = Architecture {
        embeddings: vec![(5, 3)],
        n_num: 2,
        hidden: vec![7, 3],
        dropout: 0.3,
        head: Head::Poisson,
    };
    let p = params(Head::Poisson, 1);
    let (step, batch) = (11, 2 * SHARD_ROWS + 41);
    let whole = dropout_masks::<F32>(&arch, &p, step, 0, batch, &dev());
    assert_eq!(whole.len(), 2);
    for (layer, w) in whole.iter().enumerate() {
        let mut shards: Vec<f32> = Vec::new();
        for (j, rows) in [SHARD_ROWS, SHARD_ROWS, 41].into_iter().enumerate() {
            let m = dropout_masks::<F32>(&arch, &p, step, j, rows, &dev());
            shards.extend(m[layer].to_data().to_vec::<f32>().unwrap());
        }
        let w = w.to_data().to_vec::<f32>().unwrap();
        assert_eq!(w.len(), batch * arch.hidden[layer]);
        assert_eq!(w, shards, "layer {layer}");
        assert!(w.contains(&0.0) && w.iter().any(|&x| x > 1.0));
    }
}

#[test]
fn checkpoint_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ckpt");
    let p = NnParams {
        dropout: 0.1,
        ..params(Head::Poisson, 5)
    };
    let whole = run(&p, &Control::default());
    let first = run(&p, &checkpointed(&ck, Some(2)));
    assert_eq!(first.history.len(), 2);
    assert!(ck.exists());
    let resumed = run(&p, &checkpointed(&ck, None));
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!(resumed.history.len(), 5);
    for (a, b) in resumed.history.iter().zip(&whole.history) {
        assert_eq!(
            (
                a.epoch,
                a.train_loss.to_bits(),
                a.valid_nll.map(f64::to_bits)
            ),
            (
                b.epoch,
                b.train_loss.to_bits(),
                b.valid_nll.map(f64::to_bits)
            )
        );
    }
    assert_eq!(resumed.best_epoch, whole.best_epoch);
    assert_eq!(bits(&resumed.weights), bits(&whole.weights));

    // A checkpoint of other parameters is refused, not silently mixed in.
    let other = NnParams {
        learning_rate: 1e-3,
        ..p.clone()
    };
    let (train, _) = synthetic(3_000, 21, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let xt = enc.encode(&train).unwrap();
    let yt = y32(&train);
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &other),
        &other,
        &Split { x: &xt, y: &yt },
        None,
        &dev(),
        &checkpointed(&ck, None),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(matches!(e, contrail_nn::NnError::Checkpoint { .. }), "{e}");
    // A corrupted checkpoint is a typed error.
    let mut bytes = std::fs::read(&ck).unwrap();
    let k = bytes.len() - 10;
    bytes[k] ^= 0x55;
    std::fs::write(&ck, &bytes).unwrap();
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &p),
        &p,
        &Split { x: &xt, y: &yt },
        None,
        &dev(),
        &checkpointed(&ck, None),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
}

#[test]
fn gradient_of_the_whole_network_matches_finite_differences() {
    let (d, _) = synthetic(64, 31, None);
    let enc = Encoder::fit(&d, 3, 16).unwrap();
    let arch = Architecture {
        embeddings: enc.embeddings(),
        n_num: enc.n_num(),
        hidden: vec![8, 4],
        dropout: 0.0,
        head: Head::Poisson,
    };
    let x = enc.encode(&d).unwrap();
    let net: contrail_nn::Net<AD32> = arch.init(3, &dev());
    let w0 = contrail_nn::weights::extract(&net).unwrap();
    let c = Tensor::<AD32, 2, Int>::from_data(
        TensorData::new(x.cat.clone(), [64, enc.n_cat()]),
        &dev(),
    );
    let xn =
        Tensor::<AD32, 2>::from_data(TensorData::new(x.num.clone(), [64, enc.n_num()]), &dev());
    let y = Tensor::<AD32, 1>::from_data(TensorData::new(y32(&d), [64]), &dev());
    let lossf = |net: &contrail_nn::Net<AD32>| {
        loss::loss(
            Head::Poisson,
            net.forward(c.clone(), xn.clone()),
            y.clone(),
            None,
        )
    };
    let g = lossf(&net).backward();
    let gw: Vec<f32> = net.hidden[0]
        .weight
        .grad(&g)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let ge: Vec<f32> = net.embeddings[0]
        .weight
        .grad(&g)
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    // Perturb single weights (stored in f32, so steps of 1e-3 and a loose tolerance).
    let k_hidden = 1 + 0; // tensor index of hidden.0.weight (after one embedding)
    for (tensor, grads, idx) in [(k_hidden, &gw, 5usize), (k_hidden, &gw, 17), (0, &ge, 4)] {
        let h = 3e-3f32;
        let mut wp = w0.clone();
        wp[tensor][idx] += h;
        let mut wm = w0.clone();
        wm[tensor][idx] -= h;
        let lp = lossf(&contrail_nn::weights::build::<AD32>(&arch, &wp, &dev()).unwrap())
            .into_scalar() as f64;
        let lm = lossf(&contrail_nn::weights::build::<AD32>(&arch, &wm, &dev()).unwrap())
            .into_scalar() as f64;
        let fd = (lp - lm) / (2.0 * h as f64);
        let g = grads[idx] as f64;
        assert!(
            (g - fd).abs() < 1e-2 * fd.abs().max(1e-2),
            "tensor {tensor}[{idx}]: {g} vs {fd}"
        );
    }
}

#[test]
fn package_round_trip_and_corruption() {
    let p = params(Head::Poisson, 2);
    let (train, _) = synthetic(2_000, 41, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let t = run(&p, &Control::default());
    let pkg = NnPackage {
        manifest: manifest(&enc, &t.arch, &p),
        members: vec![t.weights.clone()],
    };
    let bytes = package::to_bytes(&pkg).unwrap();
    assert_eq!(
        bytes,
        package::to_bytes(&pkg).unwrap(),
        "deterministic bytes"
    );
    let back = package::from_bytes(&bytes, "m.ctm").unwrap();
    assert_eq!(back, pkg);
    let a = NnModel::new(pkg.clone()).unwrap().predict(&train).unwrap();
    let b = NnModel::from_bytes(&bytes, "m.ctm")
        .unwrap()
        .predict(&train)
        .unwrap();
    assert_eq!(a, b);
    // No rows: no predictions, not an error.
    let none = NnModel::new(pkg.clone())
        .unwrap()
        .predict(&train.gather(&[]));
    assert_eq!(none.unwrap(), Vec::<f64>::new());
    assert_eq!(
        contrail_gbdt::package::model_kind(&bytes, "m.ctm").unwrap(),
        "nn"
    );
    // A diverged validation loss is left out of the manifest; the package still loads.
    let mut diverged = pkg.clone();
    diverged
        .manifest
        .metrics
        .insert("valid-nll".into(), f64::NAN);
    let back = package::from_bytes(&package::to_bytes(&diverged).unwrap(), "m.ctm").unwrap();
    assert_eq!(back, pkg);

    // Every flipped byte, truncation and wrong kind is a typed error naming the file.
    for k in (0..bytes.len()).step_by(97) {
        let mut bad = bytes.clone();
        bad[k] ^= 0x20;
        let e = package::from_bytes(&bad, "bad.ctm").unwrap_err();
        assert!(e.to_string().contains("bad.ctm"), "{e}");
    }
    for cut in [0, 7, 100, bytes.len() - 1] {
        assert!(package::from_bytes(&bytes[..cut], "cut.ctm").is_err());
    }
    // A manifest that asks for a huge layer, re-sealed with a valid checksum: refused
    // before any allocation.
    let mut huge = pkg.clone();
    huge.manifest.architecture.hidden = vec![1 << 20, 1 << 20];
    let e = package::from_bytes(&reseal(&huge, &pkg), "huge.ctm").unwrap_err();
    assert!(e.to_string().contains("architecture"), "{e}");
    // Architecture that does not match the encoder.
    let mut mism = pkg.clone();
    mism.manifest.architecture.n_num += 1;
    let e = package::from_bytes(&reseal(&mism, &pkg), "m.ctm").unwrap_err();
    assert!(e.to_string().contains("encoder"), "{e}");
    // A non-finite weight.
    let mut nan = pkg.clone();
    nan.members[0][1][0] = f32::NAN;
    let e = package::from_bytes(&package::to_bytes(&nan).unwrap(), "nan.ctm").unwrap_err();
    assert!(e.to_string().contains("not finite"), "{e}");
    // Bad encoder statistics.
    let mut bad_enc = pkg.clone();
    if let Some(contrail_nn::data::FeatureEncoding::Numeric { std, .. }) =
        bad_enc.manifest.encoder.features.first_mut()
    {
        *std = 0.0;
    }
    let e = package::from_bytes(&package::to_bytes(&bad_enc).unwrap(), "enc.ctm").unwrap_err();
    assert!(e.to_string().contains("encoder"), "{e}");
    // A declared ensemble the tensors do not hold, or past the cap: refused before any
    // network is read.
    for k in [0, 2, 1_000_000] {
        let mut m = pkg.clone();
        m.manifest.params.ensemble = k;
        let e = package::from_bytes(&reseal(&m, &pkg), "ens.ctm").unwrap_err();
        assert!(e.to_string().contains("ens.ctm"), "{e}");
        assert!(
            e.to_string().contains("ensemble") || e.to_string().contains("network"),
            "{e}"
        );
    }
    // A second network's tensor renamed: the member it belongs to is missing.
    let two = NnPackage {
        manifest: NnManifest {
            params: NnParams {
                ensemble: 2,
                ..pkg.manifest.params.clone()
            },
            ..pkg.manifest.clone()
        },
        members: vec![pkg.members[0].clone(), pkg.members[0].clone()],
    };
    let good = package::to_bytes(&two).unwrap();
    assert_eq!(package::from_bytes(&good, "two.ctm").unwrap(), two);
    let mut wr = contrail_gbdt::package::Writer::default();
    for (k, m) in two.members.iter().enumerate() {
        for ((name, _), v) in two.manifest.architecture.tensor_shapes().iter().zip(m) {
            let name = package::member_tensor(k, name).replace("m1.out.bias", "m2.out.bias");
            wr.f32(name, v.iter().copied());
        }
    }
    let bytes =
        contrail_gbdt::package::encode(wr, &serde_json::to_string(&two.manifest).unwrap()).unwrap();
    let e = package::from_bytes(&bytes, "renamed.ctm").unwrap_err();
    assert!(e.to_string().contains("renamed.ctm"), "{e}");
}

/// Package bytes of `m`'s manifest with `w`'s tensors (bypassing the shape check of
/// `to_bytes`, as a hostile writer would).
fn reseal(m: &NnPackage, w: &NnPackage) -> Vec<u8> {
    let mut wr = contrail_gbdt::package::Writer::default();
    for (k, member) in w.members.iter().enumerate() {
        for ((name, _), v) in w.manifest.architecture.tensor_shapes().iter().zip(member) {
            wr.f32(package::member_tensor(k, name), v.iter().copied());
        }
    }
    contrail_gbdt::package::encode(wr, &serde_json::to_string(&m.manifest).unwrap()).unwrap()
}

#[test]
fn encoder_maps_unknown_and_missing() {
    let (d, _) = synthetic(500, 51, None);
    let enc = Encoder::fit(&d, 0, 16).unwrap();
    assert_eq!(enc.n_cat(), 1);
    assert_eq!(
        enc.n_num(),
        3,
        "x1 has missing values: value + indicator; x2 one input"
    );
    let other = Dataset {
        names: vec!["carrier".into(), "x2".into(), "x1".into()],
        columns: vec![
            Column::categorical(&[Some("zz"), None, Some("c")]),
            Column::Numeric(vec![0.0, 1.0, 2.0]),
            Column::Numeric(vec![f64::NAN, 1e12, 0.0]),
        ],
        target: vec![],
        weights: None,
    };
    let x = enc.encode(&other).unwrap();
    assert_eq!(x.cat[0], 0, "an unseen category is id 0");
    assert_eq!(x.cat[1], 0, "a missing category is id 0");
    assert!(x.cat[2] > 0);
    assert_eq!(&x.num[0..2], &[0.0, 1.0], "missing: 0 and the indicator");
    assert_eq!(x.num[3] as f64, contrail_nn::data::CLIP, "clipped");
    let wrong = Dataset {
        names: vec!["carrier".into(), "x2".into(), "x1".into()],
        columns: vec![
            Column::Numeric(vec![1.0]),
            Column::Numeric(vec![0.0]),
            Column::Numeric(vec![0.0]),
        ],
        target: vec![],
        weights: None,
    };
    assert!(enc
        .encode(&wrong)
        .unwrap_err()
        .to_string()
        .contains("carrier"));
}

#[test]
fn bad_targets_and_parameters_are_typed_errors() {
    let (d, _) = synthetic(200, 61, None);
    let enc = Encoder::fit(&d, 0, 16).unwrap();
    let x = enc.encode(&d).unwrap();
    let mut y = y32(&d);
    y[17] = -1.0;
    let p = params(Head::Poisson, 1);
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &p),
        &p,
        &Split { x: &x, y: &y },
        None,
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(e.to_string().contains("row 17"), "{e}");
    let y = y32(&d);
    let pl = params(Head::Logistic, 1);
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &pl),
        &pl,
        &Split { x: &x, y: &y },
        None,
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(e.to_string().contains("logistic"), "{e}");
    let bad = NnParams {
        learning_rate: -1.0,
        ..p.clone()
    };
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &bad),
        &bad,
        &Split { x: &x, y: &y },
        None,
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(matches!(
        e,
        contrail_nn::NnError::Param {
            name: "learning_rate",
            ..
        }
    ));
}

#[test]
fn learning_rate_schedule() {
    let p = NnParams {
        learning_rate: 1.0,
        warmup_fraction: 0.1,
        min_lr_ratio: 0.0,
        ..NnParams::default()
    };
    assert!((p.lr_at(0, 100) - 0.1).abs() < 1e-12);
    assert!((p.lr_at(9, 100) - 1.0).abs() < 1e-12);
    assert!((p.lr_at(10, 100) - 1.0).abs() < 1e-12);
    assert!((p.lr_at(55, 100) - 0.5).abs() < 1e-12);
    assert!(p.lr_at(99, 100) < 1e-3);
    let c = NnParams {
        lr_schedule: "constant".into(),
        ..p
    };
    assert_eq!(c.lr_at(80, 100), 1.0);
}

#[test]
fn piecewise_linear_encoding_of_numeric_features() {
    let x: Vec<f64> = (0..=100).map(|i| i as f64).collect();
    let d = Dataset {
        names: vec!["x".into()],
        columns: vec![Column::Numeric(x)],
        target: vec![0.0; 101],
        weights: None,
    };
    let enc = Encoder::fit_with(&d, 0, 16, 4).unwrap();
    assert_eq!(
        enc.n_num(),
        1 + 4,
        "the value and four bins (edges 0, 25, 50, 75, 100)"
    );
    let probe = Dataset {
        names: vec!["x".into()],
        columns: vec![Column::Numeric(vec![-5.0, 37.5, 100.0, f64::NAN])],
        target: vec![],
        weights: None,
    };
    let e = enc.encode(&probe).unwrap();
    assert_eq!(&e.num[1..5], &[0.0, 0.0, 0.0, 0.0], "below the first edge");
    assert_eq!(
        &e.num[6..10],
        &[1.0, 0.5, 0.0, 0.0],
        "37.5: first bin full, second half"
    );
    assert_eq!(&e.num[11..15], &[1.0, 1.0, 1.0, 1.0]);
    assert_eq!(&e.num[16..20], &[0.0; 4], "missing: no bin");
    // Edges travel in the package and are validated on load.
    enc.validate().unwrap();
    let mut bad = enc.clone();
    if let contrail_nn::data::FeatureEncoding::Numeric { bins, .. } = &mut bad.features[0] {
        bins[2] = bins[1];
    }
    assert!(bad.validate().unwrap_err().contains("increasing"));
}

#[test]
fn a_point_mass_at_the_minimum_gets_a_bin_of_its_own() {
    // 30% zeros, then 1..=700: quantile edges alone would start 0, 0, 0, 0, 0, 94, ...
    // and blend 0 with 1..94 in one bin.
    let x: Vec<f64> = (0..1000).map(|i| (i as f64 - 299.0).max(0.0)).collect();
    let d = Dataset {
        names: vec!["bookings_to_date".into()],
        columns: vec![Column::Numeric(x.clone())],
        target: vec![0.0; 1000],
        weights: None,
    };
    let enc = Encoder::fit_with(&d, 0, 16, 16).unwrap();
    let contrail_nn::data::FeatureEncoding::Numeric { bins, .. } = &enc.features[0] else {
        panic!("numeric");
    };
    assert_eq!(&bins[..2], &[0.0, 1.0], "{bins:?}");
    assert!(bins.windows(2).all(|w| w[1] > w[0]), "{bins:?}");
    let probe = Dataset {
        names: vec!["bookings_to_date".into()],
        columns: vec![Column::Numeric(vec![0.0, 1.0, 0.5])],
        target: vec![],
        weights: None,
    };
    let n = enc.n_num();
    let e = enc.encode(&probe).unwrap();
    assert_eq!(e.num[1], 0.0, "at the minimum: the first bin is empty");
    assert_eq!(e.num[n + 1], 1.0, "the next value fills it");
    assert_eq!(e.num[2 * n + 1], 0.5);
    enc.validate().unwrap();

    // A minimum under 1% of the values keeps plain quantile edges; the extra edge never
    // takes a feature past 256 bins.
    let spread: Vec<f64> = (0..1000).map(|i| i as f64).collect();
    let mut heavy = vec![0.0; 100];
    heavy.extend((1..=5000).map(|i| i as f64));
    for (values, bins_asked, first_two) in [(spread, 4, [0.0, 250.0]), (heavy, 256, [0.0, 1.0])] {
        let d = Dataset {
            names: vec!["x".into()],
            columns: vec![Column::Numeric(values)],
            target: vec![],
            weights: None,
        };
        let enc = Encoder::fit_with(&d, 0, 16, bins_asked).unwrap();
        let contrail_nn::data::FeatureEncoding::Numeric { bins, .. } = &enc.features[0] else {
            panic!("numeric");
        };
        assert_eq!(&bins[..2], &first_two);
        assert!(bins.len() <= bins_asked + 1, "{} edges", bins.len());
        enc.validate().unwrap();
    }
}

/// The rows of an encoded split served in blocks of the given sizes (as a file's row
/// groups are), read (copied) on each request.
struct Blocks<'a> {
    x: &'a Encoded,
    y: &'a [f32],
    sizes: Vec<usize>,
    /// A block that reads one row short of what it declares.
    short: Option<usize>,
}

impl Source for Blocks<'_> {
    fn block_rows(&self) -> Vec<usize> {
        self.sizes.clone()
    }
    fn block(&self, i: usize) -> Result<Block<'_>, contrail_nn::NnError> {
        let start: usize = self.sizes[..i].iter().sum();
        let end = start + self.sizes[i] - (self.short == Some(i)) as usize;
        Ok(Block {
            x: Cow::Owned(self.x.slice(start, end)),
            y: Cow::Owned(self.y[start..end].to_vec()),
        })
    }
}

fn cut(n: usize, size: usize) -> Vec<usize> {
    (0..n.div_ceil(size))
        .map(|i| size.min(n - i * size))
        .collect()
}

/// Trains on 3,000 synthetic rows served in blocks of `block` rows.
fn run_blocks(p: &NnParams, block: usize, ctl: &Control) -> contrail_nn::Trained {
    let (enc, xt, xv, yt, yv) = fixture();
    let t = Blocks {
        x: &xt,
        y: &yt,
        sizes: cut(3_000, block),
        short: None,
    };
    let v = Blocks {
        x: &xv,
        y: &yv,
        sizes: cut(1_000, 300),
        short: None,
    };
    fit::<AD32>(
        Architecture::for_encoder(&enc, p),
        p,
        &t,
        Some(&v),
        &dev(),
        ctl,
        &mut |_| Next::Continue,
    )
    .unwrap()
}

#[test]
fn blocks_within_one_window_train_the_bits_of_rows_in_memory() {
    let p = NnParams {
        dropout: 0.1,
        ..params(Head::Poisson, 3)
    };
    let a = run(&p, &Control::default());
    let b = run_blocks(&p, 700, &Control::default());
    assert_eq!(bits(&a.weights), bits(&b.weights));
    for (x, y) in a.history.iter().zip(&b.history) {
        assert_eq!(x.train_loss.to_bits(), y.train_loss.to_bits());
        assert_eq!(x.valid_nll.map(f64::to_bits), y.valid_nll.map(f64::to_bits));
    }
}

#[test]
fn epoch_windows_hold_every_block_once() {
    let rows = vec![500, 500, 200, 500, 500, 800, 1];
    for epoch in 0..4 {
        let w = epoch_windows(&rows, 900, 7, epoch);
        let mut all: Vec<usize> = w.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..rows.len()).collect::<Vec<_>>());
        for win in &w[..w.len() - 1] {
            assert!(win.iter().map(|&b| rows[b]).sum::<usize>() >= 900);
        }
        assert_eq!(w, epoch_windows(&rows, 900, 7, epoch));
    }
    assert_ne!(
        epoch_windows(&rows, 900, 7, 0),
        epoch_windows(&rows, 900, 7, 1)
    );
    // Data within the window, or a window of 0: every block, in order.
    assert_eq!(
        epoch_windows(&rows, 5_000, 7, 3),
        vec![(0..7).collect::<Vec<_>>()]
    );
    assert_eq!(
        epoch_windows(&rows, 0, 7, 3),
        vec![(0..7).collect::<Vec<_>>()]
    );
}

#[test]
fn windows_stream_every_row_once_an_epoch_and_train_deterministically() {
    // With a learning rate too small to move the weights, an epoch's training loss is the
    // initial network's mean loss over the rows it visited: the windowed run (windows of
    // 800+ rows from blocks of 500, batches of 256 that cross windows) must visit each
    // row once, as the in-memory run does.
    let frozen = NnParams {
        learning_rate: 1e-30,
        ..params(Head::Poisson, 2)
    };
    let a = run(&frozen, &Control::default());
    let b = run_blocks(
        &NnParams {
            shuffle_window: 800,
            ..frozen.clone()
        },
        500,
        &Control::default(),
    );
    for (x, y) in a.history.iter().zip(&b.history) {
        let rel = (x.train_loss / y.train_loss - 1.0).abs();
        assert!(rel < 1e-5, "{} vs {}", x.train_loss, y.train_loss);
    }
    // Windowed training: the same bits on every run, other bits than the whole shuffle,
    // and it learns as well.
    let p = NnParams {
        dropout: 0.1,
        shuffle_window: 800,
        ..params(Head::Poisson, 6)
    };
    let c = run_blocks(&p, 500, &Control::default());
    let d = run_blocks(&p, 500, &Control::default());
    assert_eq!(bits(&c.weights), bits(&d.weights));
    let whole = run(&p, &Control::default());
    assert_ne!(bits(&c.weights), bits(&whole.weights));
    let (lc, lw) = (
        c.history.last().unwrap().valid_nll.unwrap(),
        whole.history.last().unwrap().valid_nll.unwrap(),
    );
    assert!((lc / lw - 1.0).abs() < 0.02, "windowed {lc} vs whole {lw}");

    // Interrupted after two epochs and resumed: the bits of the uninterrupted run.
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("run.ckpt");
    let stop = checkpointed(&ck, Some(2));
    assert_eq!(run_blocks(&p, 500, &stop).history.len(), 2);
    let resume = checkpointed(&ck, None);
    let r = run_blocks(&p, 500, &resume);
    assert_eq!(r.resumed_from, Some(2));
    assert_eq!(bits(&r.weights), bits(&c.weights));
}

#[test]
fn a_block_that_reads_other_rows_than_it_declares_is_a_typed_error() {
    let (train, _) = synthetic(1_000, 21, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let xt = enc.encode(&train).unwrap();
    let yt = y32(&train);
    let p = params(Head::Poisson, 1);
    let t = Blocks {
        x: &xt,
        y: &yt,
        sizes: cut(1_000, 300),
        short: Some(2),
    };
    let e = fit::<AD32>(
        Architecture::for_encoder(&enc, &p),
        &p,
        &t,
        None,
        &dev(),
        &Control::default(),
        &mut |_| Next::Continue,
    )
    .unwrap_err();
    assert!(matches!(e, contrail_nn::NnError::Data(_)), "{e}");
    assert!(e.to_string().contains("training block 2"), "{e}");
}

#[test]
fn an_encoder_fitted_block_by_block_equals_one_fitted_at_once() {
    let (mut d, _) = synthetic(5_000, 31, None);
    // A skewed non-negative feature (log1p) and a category first seen in a late block.
    let mut r = Rng(9);
    d.names.push("price".into());
    d.columns.push(Column::Numeric(
        (0..5_000)
            .map(|_| (r.normal() * 1.5).exp() * 100.0)
            .collect(),
    ));
    let cats: Vec<Option<&str>> = (0..5_000)
        .map(|i| match i {
            4_321 => Some("late"),
            i if i % 7 == 0 => None,
            i => Some(["x", "y"][i % 2]),
        })
        .collect();
    d.names.push("channel".into());
    d.columns.push(Column::categorical(&cats));
    let whole = Encoder::fit_with(&d, 0, 16, 8).unwrap();
    let mut f = EncoderFit::new(5_000, 0, 16, 8);
    let blocks: Vec<Dataset> = (0..5)
        .map(|i| d.gather(&(i * 1_000..(i + 1) * 1_000).collect::<Vec<_>>()))
        .collect();
    for b in &blocks {
        f.observe(b).unwrap();
    }
    f.second_pass();
    for b in &blocks {
        f.observe(b).unwrap();
    }
    let streamed = f.finish().unwrap();
    assert_eq!(streamed, whole);
    assert!(matches!(
        &whole.features[3],
        contrail_nn::data::FeatureEncoding::Numeric { log1p: true, .. }
    ));
    // A fit that did not see every row twice is refused.
    let mut f = EncoderFit::new(5_000, 0, 16, 8);
    f.observe(&blocks[0]).unwrap();
    f.second_pass();
    f.observe(&blocks[0]).unwrap();
    assert!(f.finish().is_err());
    // A feature whose kind changes between blocks is a typed error naming it.
    let mut f = EncoderFit::new(2_000, 0, 16, 8);
    f.observe(&blocks[0]).unwrap();
    let mut odd = blocks[1].clone();
    odd.columns[0] = Column::categorical(&vec![Some("q"); 1_000]);
    let e = f.observe(&odd).unwrap_err();
    assert!(e.to_string().contains("`x1`"), "{e}");
}

fn run_ensemble(p: &NnParams, ctl: &Control) -> contrail_nn::Ensemble {
    run_ensemble_with(p, ctl, &mut |_| Next::Continue)
}

fn run_ensemble_with(
    p: &NnParams,
    ctl: &Control,
    on_epoch: &mut dyn FnMut(&contrail_nn::EpochLog) -> Next,
) -> contrail_nn::Ensemble {
    let (enc, xt, xv, yt, yv) = fixture();
    contrail_nn::fit_on(
        &contrail_nn::Device::Cpu,
        Architecture::for_encoder(&enc, p),
        p,
        &Split { x: &xt, y: &yt },
        Some(&Split { x: &xv, y: &yv }),
        ctl,
        on_epoch,
    )
    .unwrap()
}

#[test]
fn an_ensemble_predicts_its_networks_mean_response() {
    let p = NnParams {
        ensemble: 3,
        dropout: 0.1,
        ..params(Head::Poisson, 3)
    };
    let e = run_ensemble(&p, &Control::default());
    assert_eq!(e.members.len(), 3);
    // The first network is the one its seed gives alone; the others differ.
    let single = run(
        &NnParams {
            ensemble: 1,
            ..p.clone()
        },
        &Control::default(),
    );
    assert_eq!(bits(&e.members[0].weights), bits(&single.weights));
    assert_ne!(bits(&e.members[1].weights), bits(&single.weights));
    assert_ne!(bits(&e.members[1].weights), bits(&e.members[2].weights));
    let again = run_ensemble(&p, &Control::default());
    assert_eq!(e.weights(), again.weights(), "seeded: the same bits");
    // Every member's epochs are in the history, tagged.
    let h = e.history();
    assert_eq!(h.len(), 9);
    assert_eq!(h[4].member, 1);
    assert_eq!(h[4].tag(), "m1:1");

    // The package holds the three networks and predicts their mean count.
    let (train, _) = synthetic(3_000, 21, None);
    let (valid, _) = synthetic(1_000, 22, None);
    let enc = Encoder::fit(&train, 0, 16).unwrap();
    let pkg = NnPackage {
        manifest: manifest(&enc, &e.arch, &p),
        members: e.weights(),
    };
    let bytes = package::to_bytes(&pkg).unwrap();
    assert_eq!(package::from_bytes(&bytes, "e.ctm").unwrap(), pkg);
    let model = NnModel::from_bytes(&bytes, "e.ctm").unwrap();
    let pred = model.predict(&valid).unwrap();
    let one = |w: &Vec<Vec<f32>>| {
        NnModel::new(NnPackage {
            manifest: manifest(
                &enc,
                &e.arch,
                &NnParams {
                    ensemble: 1,
                    ..p.clone()
                },
            ),
            members: vec![w.clone()],
        })
        .unwrap()
        .predict(&valid)
        .unwrap()
    };
    let parts: Vec<Vec<f64>> = e.weights().iter().map(one).collect();
    for (i, m) in pred.iter().enumerate() {
        let want = (parts[0][i] + parts[1][i] + parts[2][i]) / 3.0;
        assert!((m - want).abs() <= 1e-12 * want, "row {i}: {m} vs {want}");
    }
    // Raw scores are the link of that mean; the validation nll is the package's.
    let xv = enc.encode(&valid).unwrap();
    let raw = model.raw_encoded(&xv).unwrap();
    for (r, m) in raw.iter().zip(&pred) {
        assert!(((*r as f64).exp() - m).abs() < 1e-5 * m, "{r} vs {m}");
    }
    let nll = e.valid_nll.unwrap();
    let yv = y32(&valid);
    let want: f64 = pred
        .iter()
        .zip(&yv)
        .map(|(m, y)| loss::nll(Head::Poisson, m.ln(), *y as f64, 1.0))
        .sum::<f64>()
        / yv.len() as f64;
    assert!(
        (nll - want).abs() < 1e-5 * want,
        "valid nll {nll} vs {want}"
    );
    // An ensemble out of range is a parameter error.
    let e = NnParams {
        ensemble: 0,
        ..p.clone()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("ensemble"), "{e}");
}

#[test]
fn an_ensemble_killed_in_its_second_network_resumes_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("ens.ckpt");
    let p = NnParams {
        ensemble: 2,
        dropout: 0.1,
        ..params(Head::Poisson, 4)
    };
    let whole = run_ensemble(&p, &Control::default());
    // The first network runs to its end alone (the same checkpoint file an ensemble's
    // first member uses), then the ensemble is killed two epochs into the second.
    let first = run_ensemble(
        &NnParams {
            ensemble: 1,
            ..p.clone()
        },
        &checkpointed(&ck, None),
    );
    assert!(first.members[0].finished);
    let killed = run_ensemble(&p, &checkpointed(&ck, Some(2)));
    assert_eq!(killed.members.len(), 2);
    let n0 = first.members[0].history.len();
    assert_eq!(
        killed.members[0].resumed_from,
        Some(n0),
        "finished: not trained again"
    );
    assert!(killed.members[0].history.len() == n0 && !killed.members[1].finished);
    assert_eq!(killed.members[1].history.len(), 2);
    assert!(
        killed.valid_nll.is_none(),
        "an unfinished ensemble is not scored"
    );
    assert!(contrail_nn::member_checkpoint(&ck, 1).exists());
    let resumed = run_ensemble(&p, &checkpointed(&ck, None));
    assert_eq!(resumed.members[1].resumed_from, Some(2));
    assert_eq!(resumed.weights(), whole.weights());
    assert_eq!(
        resumed.valid_nll.map(f64::to_bits),
        whole.valid_nll.map(f64::to_bits)
    );
    // A finished run's checkpoint resumes to its result, not to one more epoch.
    let again = run_ensemble(&p, &checkpointed(&ck, None));
    assert_eq!(again.weights(), whole.weights());
    assert!(again
        .members
        .iter()
        .all(|m| m.finished && m.resumed_from == Some(m.history.len())));

    // A run its callback ended after epoch 1 (a pruned trial) is finished as well: found
    // again, its checkpoint gives that result instead of training epochs 2 and 3; the
    // ensemble's later members were not trained.
    let ck = dir.path().join("pruned.ckpt");
    let ctl = checkpointed(&ck, None);
    let pruned = run_ensemble_with(&p, &ctl, &mut |l| {
        if l.epoch == 1 {
            Next::Stop
        } else {
            Next::Continue
        }
    });
    assert!(pruned.stopped && pruned.members.len() == 1 && pruned.valid_nll.is_none());
    let m = &pruned.members[0];
    assert!(m.finished && m.stopped_early && m.history.len() == 2);
    let found = run(
        &NnParams {
            ensemble: 1,
            ..p.clone()
        },
        &ctl,
    );
    assert_eq!(found.resumed_from, Some(2));
    assert_eq!(found.history.len(), 2);
    assert!(found.stopped_early);
    assert_eq!(bits(&found.weights), bits(&m.weights));
}

/// A source that counts the blocks read from it.
struct Counted<'a> {
    inner: &'a dyn Source,
    reads: std::sync::atomic::AtomicUsize,
}

impl Source for Counted<'_> {
    fn block_rows(&self) -> Vec<usize> {
        self.inner.block_rows()
    }
    fn block(&self, i: usize) -> Result<Block<'_>, contrail_nn::NnError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.block(i)
    }
}

/// Streamed data is read once before an ensemble trains, not once a network: an
/// ensemble of three reads the training blocks three networks' epochs read, plus one
/// pass, and trains the networks it trained before (the same first member's bits).
#[test]
fn an_ensemble_scans_its_data_once() {
    let (enc, xt, xv, yt, yv) = fixture();
    let blocks = Blocks {
        x: &xt,
        y: &yt,
        sizes: cut(3_000, 700),
        short: None,
    };
    let n_blocks = blocks.sizes.len();
    let train_reads = |k: usize| {
        let p = NnParams {
            ensemble: k,
            ..params(Head::Poisson, 2)
        };
        let t = Counted {
            inner: &blocks,
            reads: 0.into(),
        };
        let e = contrail_nn::fit_on(
            &contrail_nn::Device::Cpu,
            Architecture::for_encoder(&enc, &p),
            &p,
            &t,
            Some(&Split { x: &xv, y: &yv }),
            &Control::default(),
            &mut |_| Next::Continue,
        )
        .unwrap();
        assert_eq!(e.members.len(), k);
        (t.reads.into_inner(), bits(&e.members[0].weights))
    };
    let (one, w1) = train_reads(1);
    let (three, w3) = train_reads(3);
    // One network: the scan, a pass an epoch and one to set the output level.
    assert_eq!(one, (1 + 2 + 1) * n_blocks);
    // Three: one scan, then each network's own passes.
    assert_eq!(three, n_blocks + 3 * (one - n_blocks));
    assert_eq!(w1, w3);
}
