//! The `wgpu` back end through the binary: needs a build with the `wgpu` feature and a
//! Vulkan driver (Mesa's lavapipe where there is no GPU). `scripts/test.sh` runs it with
//! every other device test in one build: `cargo test --workspace --features wgpu --test
//! kernels --test device`.
#![cfg(feature = "wgpu")]

use contrail::store::testkit::TempDir;

mod common;
use common::{contrail, read_parquet, text, write_parquet};

/// `train --device wgpu` writes the same model package as the CPU, byte for byte, and
/// `predict --device wgpu` agrees with the CPU's predictions to f32 rounding. Needs a build
/// with the `wgpu` feature and a Vulkan driver.
#[test]
fn device_wgpu_trains_the_cpus_model_and_predicts_its_predictions() {
    let dir = TempDir::new("cli-wgpu").expect("tmp");
    let n = 6000;
    let x: Vec<f64> = (0..n).map(|i| ((i * 37) % 101) as f64 / 10.1).collect();
    let c: Vec<&str> = (0..n)
        .map(|i| ["BA", "AF", "LH", "KL", "UA"][i % 5])
        .collect();
    let y: Vec<f64> = (0..n)
        .map(|i| x[i].sin() * 3.0 + if c[i] == "LH" { 2.0 } else { 0.0 } + (i % 7) as f64 * 0.1)
        .collect();
    write_parquet(
        &dir.0,
        "data.parquet",
        vec![
            (
                "x",
                std::sync::Arc::new(arrow_array::Float64Array::from(x)) as arrow_array::ArrayRef,
            ),
            (
                "carrier",
                std::sync::Arc::new(arrow_array::StringArray::from(c)) as arrow_array::ArrayRef,
            ),
            (
                "fare",
                std::sync::Arc::new(arrow_array::Float64Array::from(y)) as arrow_array::ArrayRef,
            ),
        ],
    );
    let train = |device: &str, out: &str, deterministic: &str| {
        let o = contrail(
            &dir.0,
            &[
                "train",
                "--deterministic",
                deterministic,
                "--data",
                "data.parquet",
                "--target",
                "fare",
                "--num-iterations",
                "30",
                "--grow-policy",
                "depthwise",
                "--max-depth",
                "5",
                "--bagging-fraction",
                "0.8",
                "--bagging-freq",
                "1",
                "--device",
                device,
                "--out",
                out,
            ],
            &[],
        );
        assert!(o.status.success(), "{device}: {}", text(&o.stderr));
        text(&o.stderr)
    };
    // Deterministic: the CPU's trees, bit for bit.
    train("cpu", "cpu.ctm", "true");
    let log = train("wgpu", "wgpu.ctm", "true");
    assert!(log.contains("device wgpu:"), "the device is logged:\n{log}");
    assert_eq!(
        std::fs::read(dir.0.join("cpu.ctm")).expect("cpu model"),
        std::fs::read(dir.0.join("wgpu.ctm")).expect("wgpu model"),
        "the same package, byte for byte"
    );
    // Gradients and scores on the device (the default): the CPU's model to rounding.
    train("wgpu", "wgpu-fast.ctm", "false");
    let predict_with = |model: &str, device: &str, out: &str| -> Vec<f64> {
        let o = contrail(
            &dir.0,
            &[
                "predict",
                "--model",
                model,
                "--data",
                "data.parquet",
                "--out",
                out,
                "--device",
                device,
            ],
            &[],
        );
        assert!(o.status.success(), "{device}: {}", text(&o.stderr));
        read_parquet(&dir.0, out)
            .iter()
            .flat_map(|b| {
                b.column_by_name("prediction")
                    .expect("prediction")
                    .as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .expect("f64")
                    .values()
                    .to_vec()
            })
            .collect()
    };
    let cpu = predict_with("cpu.ctm", "cpu", "cpu.parquet");
    let gpu = predict_with("cpu.ctm", "wgpu", "wgpu.parquet");
    let fast = predict_with("wgpu-fast.ctm", "cpu", "fast.parquet");
    assert_eq!(cpu.len(), n);
    assert_eq!(gpu.len(), n);
    assert_eq!(fast.len(), n);
    for ((a, b), c) in cpu.iter().zip(&gpu).zip(&fast) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
        assert!(
            (a - c).abs() <= 1e-5 * a.abs().max(1.0),
            "{a} vs {c} (device gradients)"
        );
    }
    // The batch scoring job walks the trees on the device too.
    let o = contrail(
        &dir.0,
        &[
            "score",
            "--model",
            "cpu.ctm",
            "--input",
            "data.parquet",
            "--output",
            "scored",
            "--device",
            "wgpu",
            "--keep",
            "",
        ],
        &[],
    );
    assert!(
        o.status.success(),
        "score --device wgpu: {}",
        text(&o.stderr)
    );
    let mut parts: Vec<String> = std::fs::read_dir(dir.0.join("scored"))
        .expect("scored/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 1, "{parts:?}");
    let scored: Vec<f64> = read_parquet(&dir.0.join("scored"), &parts[0])
        .iter()
        .flat_map(|b| {
            b.column_by_name("prediction")
                .expect("prediction")
                .as_any()
                .downcast_ref::<arrow_array::Float64Array>()
                .expect("f64")
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(scored.len(), n);
    for (a, b) in cpu.iter().zip(&scored) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{a} vs {b} (score --device wgpu)"
        );
    }
}
