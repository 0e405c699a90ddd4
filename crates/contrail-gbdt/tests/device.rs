//! Conformance of the device back ends ([`contrail_gbdt::conformance`]): run on every
//! device this build has and this machine can open (wgpu: a GPU, or Mesa's lavapipe on a
//! machine without one; cuda: an NVIDIA GPU).
//!
//! A device that cannot be opened is skipped with the reason printed, unless
//! `CONTRAIL_REQUIRE_DEVICE` names it (CI sets `wgpu`: lavapipe is installed there).

use contrail_gbdt::conformance::{self, Outcome};
use contrail_gbdt::Device;

/// The devices to check: those compiled in that open here.
fn devices() -> Vec<Device> {
    let mut all = Vec::new();
    if cfg!(feature = "wgpu") {
        all.push(Device::Wgpu);
    }
    if cfg!(feature = "cuda") {
        all.push(Device::Cuda(0));
    }
    let required = std::env::var("CONTRAIL_REQUIRE_DEVICE").unwrap_or_default();
    let mut open = Vec::new();
    for d in all {
        match d.describe() {
            Ok(info) => {
                eprintln!("checking {info}");
                open.push(d);
            }
            Err(e) => {
                let chain =
                    std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(": ");
                let name = d.to_string();
                assert!(
                    !required
                        .split(',')
                        .any(|r| !r.is_empty() && name.starts_with(r)),
                    "{name} is required (CONTRAIL_REQUIRE_DEVICE) but cannot be opened: {chain}"
                );
                eprintln!("skipping {name}: {chain}");
            }
        }
    }
    if open.is_empty() {
        eprintln!("no device to check in this build (cargo features wgpu, cuda)");
    }
    open
}

fn require(d: &Device, outcomes: Vec<Outcome>) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|(name, diff)| diff.as_ref().map(|x| format!("{name}: {x}")))
        .collect();
    assert!(failed.is_empty(), "{d}: {}", failed.join("; "));
}

#[test]
fn histograms_equal_the_cpu() {
    for d in devices() {
        require(&d, conformance::histograms(&d));
    }
}

#[test]
fn leaf_wise_trees_equal_the_cpu() {
    for d in devices() {
        require(&d, conformance::leaf_wise(&d));
    }
}

#[test]
fn depth_wise_trees_and_other_objectives_equal_the_cpu() {
    for d in devices() {
        require(&d, conformance::depth_wise_and_objectives(&d));
    }
}

#[test]
fn device_gradients_and_scores_agree_with_the_cpu() {
    for d in devices() {
        require(&d, conformance::device_gradients(&d));
    }
}

/// Device gradients with a validation set: metrics each iteration (the device's scores
/// read back), early stopping on the host's validation scores, the model cut at its best
/// iteration, and the returned training predictions those of the model that was kept.
#[test]
fn device_gradients_with_validation_and_early_stopping() {
    use contrail_gbdt::{train_on, Params};
    for d in devices() {
        let train = conformance::data(8_000, 21);
        let valid = conformance::data(2_000, 22);
        let p = Params {
            num_iterations: 200,
            learning_rate: 0.5,
            num_leaves: 63,
            min_data_in_leaf: 5,
            early_stopping_round: 5,
            metric: vec!["rmse".into(), "mae".into()],
            ..Default::default()
        };
        let mut lines = 0;
        let (b, pred) = train_on(&d, &train, Some(&valid), &p, &mut |log| {
            assert_eq!(log.values.len(), 4, "{d}: train and valid, two metrics");
            lines += 1;
        })
        .expect("train");
        assert!(
            b.best_iteration >= 1 && b.best_iteration < lines,
            "{d}: stopped early"
        );
        assert_eq!(
            b.trees.len(),
            b.best_iteration,
            "{d}: cut at the best iteration"
        );
        let want = b.predict(&train).expect("predict");
        for (a, w) in pred.iter().zip(&want) {
            assert!((a - w).abs() <= 1e-6 * w.abs().max(1.0), "{d}: {a} vs {w}");
        }
        let (cpu, _) = train_on(
            &contrail_gbdt::Device::Cpu,
            &train,
            Some(&valid),
            &p,
            &mut |_| {},
        )
        .expect("train on the CPU");
        let diff = (cpu.best_iteration as i64 - b.best_iteration as i64).abs();
        assert!(
            diff <= 2,
            "{d}: best iteration {} vs the CPU's {}",
            b.best_iteration,
            cpu.best_iteration
        );
    }
}

#[test]
fn device_names_parse_and_absent_devices_are_errors() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("wgpu".parse::<Device>().unwrap(), Device::Wgpu);
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
    assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
    for bad in ["gpu", "cuda:", "cuda:x", "CPU", ""] {
        assert!(bad.parse::<Device>().is_err(), "{bad}");
    }
    // A back end this build lacks, or a GPU number no machine has, is an error.
    let e = Device::Cuda(999).describe().expect_err("no 1000th GPU");
    let chain = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        chain.contains("cuda") && (chain.contains("--features cuda") || chain.contains("999")),
        "{chain}"
    );
    if !cfg!(feature = "wgpu") {
        let e = Device::Wgpu.describe().expect_err("no wgpu in this build");
        let chain = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(chain.contains("--features wgpu"), "{chain}");
    }
}

#[test]
fn data_the_device_cannot_take_is_an_error_before_training() {
    // More than 256 bins in a column needs 16-bit bins, which the device path does not take.
    let ds = contrail_gbdt::conformance::data(5_000, 3);
    let p = contrail_gbdt::Params {
        num_iterations: 2,
        max_bin: 1000,
        ..Default::default()
    };
    for d in devices() {
        let e = contrail_gbdt::train_on(&d, &ds, None, &p, &mut |_| {})
            .err()
            .unwrap_or_else(|| panic!("{d}: 1000 bins trained"));
        let chain = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(chain.contains("256 bins"), "{d}: {chain}");
    }
}
