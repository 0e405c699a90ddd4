//! Training on the device back ends (cargo features wgpu, cuda): the network a device
//! trains matches the CPU's (the same seed, data and schedule; float sums in another
//! order, so close, not equal). A device that cannot be opened is skipped with the
//! reason, unless `CONTRAIL_REQUIRE_DEVICE` names it (CI sets `wgpu`: Mesa's lavapipe).
#![allow(clippy::unwrap_used)]

use contrail_gbdt::{Column, Dataset};
use contrail_nn::{Architecture, Control, Device, Encoder, Head, Next, NnParams, Split};

fn devices() -> Vec<Device> {
    let mut all: Vec<(Device, contrail_gbdt::Device)> = Vec::new();
    if cfg!(feature = "wgpu") {
        all.push((Device::Wgpu, contrail_gbdt::Device::Wgpu));
    }
    if cfg!(feature = "cuda") {
        all.push((Device::Cuda(0), contrail_gbdt::Device::Cuda(0)));
    }
    let required = std::env::var("CONTRAIL_REQUIRE_DEVICE").unwrap_or_default();
    let mut open = Vec::new();
    for (d, probe) in all {
        match probe.describe() {
            Ok(info) => {
                eprintln!("checking {info}");
                open.push(d);
            }
            Err(e) => {
                let name = probe.to_string();
                assert!(
                    !required
                        .split(',')
                        .any(|r| !r.is_empty() && name.starts_with(r)),
                    "{name} is required (CONTRAIL_REQUIRE_DEVICE) but cannot be opened: {e}"
                );
                eprintln!("skipping {name}: {e}");
            }
        }
    }
    open
}

/// log mu = 0.2 + 0.7·x - 0.4·z + effect[c], Poisson counts (inversion).
fn data(n: usize, seed: u64) -> Dataset {
    let mut s = seed;
    let mut u = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let (mut x, mut z, mut c, mut y) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let (a, b, k) = (u() * 2.0 - 1.0, u() * 2.0 - 1.0, (u() * 4.0) as usize);
        let mu = (0.2 + 0.7 * a - 0.4 * b + [0.3, -0.2, 0.0, 0.5][k]).exp();
        let (mut cnt, mut p, r) = (0.0, (-mu).exp(), u());
        let mut cum = p;
        while r > cum && cnt < 100.0 {
            cnt += 1.0;
            p *= mu / cnt;
            cum += p;
        }
        x.push(a);
        z.push(b);
        c.push(Some(["w", "x", "y", "z"][k]));
        y.push(cnt);
    }
    Dataset {
        names: vec!["x".into(), "z".into(), "c".into()],
        columns: vec![
            Column::Numeric(x),
            Column::Numeric(z),
            Column::categorical(&c),
        ],
        target: y,
        weights: None,
    }
}

#[test]
fn a_device_trains_the_cpus_network() {
    let (train, valid) = (data(6_000, 1), data(2_000, 2));
    let enc = Encoder::fit_with(&train, 4, 16, 8).unwrap();
    let p = NnParams {
        head: Head::Poisson,
        hidden: vec![32, 16],
        dropout: 0.1,
        batch_size: 512,
        max_epochs: 4,
        early_stopping_rounds: 0,
        learning_rate: 5e-3,
        ..NnParams::default()
    };
    let arch = Architecture::for_encoder(&enc, &p);
    let (xt, xv) = (enc.encode(&train).unwrap(), enc.encode(&valid).unwrap());
    let yt: Vec<f32> = train.target.iter().map(|v| *v as f32).collect();
    let yv: Vec<f32> = valid.target.iter().map(|v| *v as f32).collect();
    let fit = |d: &Device| {
        contrail_nn::fit_on(
            d,
            arch.clone(),
            &p,
            &Split { x: &xt, y: &yt },
            Some(&Split { x: &xv, y: &yv }),
            &Control::default(),
            &mut |_| Next::Continue,
        )
        .unwrap()
    };
    let cpu = fit(&Device::Cpu);
    for d in devices() {
        let dev = fit(&d);
        for (a, b) in cpu.history().iter().zip(&dev.history()) {
            let (va, vb) = (a.valid_nll.unwrap(), b.valid_nll.unwrap());
            assert!(
                (va - vb).abs() < 2e-3 * va.abs(),
                "{d:?} epoch {}: valid nll {vb} vs the CPU's {va}",
                a.epoch
            );
        }
        let worst = cpu
            .weights()
            .iter()
            .flatten()
            .flatten()
            .zip(dev.weights().iter().flatten().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 5e-2, "{d:?}: largest weight difference {worst}");
        eprintln!("{d:?}: largest weight difference from the CPU {worst:e}");
    }
}
