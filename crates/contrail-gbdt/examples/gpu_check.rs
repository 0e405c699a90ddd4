//! The GPU check (`scripts/gpu-check.sh` runs it on a lent GPU): the conformance suite on
//! every device this build has and the machine can open, then the training benchmark —
//! airline-like rows × 8 features (month, day of month, day of week, departure time,
//! carrier, origin, destination, distance), binary target, depth-wise trees of depth 10,
//! learning rate 0.1 — on each device and on the CPU, and the histogram pass's bandwidth.
//! Prints a short table last.
//!
//! `cargo run --release --example gpu_check --features wgpu,cuda -- [--rows N]
//! [--trees N] [--cpu-trees N] [--skip-conformance]`

use std::time::Instant;

use contrail_gbdt::bin::Binned;
use contrail_gbdt::data::{Column, Dataset};
use contrail_gbdt::{conformance, device, train_on, Device, GrowPolicy, Objective, Params};
use rayon::prelude::*;

/// Airline-like rows: carriers and airports with skewed traffic, distances fixed per
/// airport pair, departure delay (the target: late by 15 minutes or more) more likely in
/// the evening, in summer and December, on some carriers and at some airports.
fn airline(n: usize, seed: u64) -> Dataset {
    const CARRIERS: usize = 22;
    const AIRPORTS: usize = 300;
    let carriers: Vec<String> = (0..CARRIERS).map(|i| format!("C{i:02}")).collect();
    let airports: Vec<String> = (0..AIRPORTS).map(|i| format!("A{i:03}")).collect();
    let mix = |mut x: u64| {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
        x ^ (x >> 33)
    };
    let u = |i: u64, k: u64| (mix(seed ^ mix(i * 16 + k)) >> 11) as f64 / (1u64 << 53) as f64;
    // Skewed choice: a few hubs carry most flights.
    let skew = |x: f64, n: usize| ((x * x * x) * n as f64) as usize % n;
    let rows: Vec<[f64; 9]> = (0..n as u64)
        .into_par_iter()
        .map(|i| {
            let month = 1.0 + (u(i, 0) * 12.0).floor();
            let dom = 1.0 + (u(i, 1) * 28.0).floor();
            let dow = 1.0 + (u(i, 2) * 7.0).floor();
            let hour = (5.0 + u(i, 3) * 19.0).floor();
            let dep = hour * 100.0 + (u(i, 4) * 60.0).floor();
            let carrier = skew(u(i, 5), CARRIERS);
            let origin = skew(u(i, 6), AIRPORTS);
            let mut dest = skew(u(i, 7), AIRPORTS);
            if dest == origin {
                dest = (dest + 1) % AIRPORTS;
            }
            let pair = mix((origin.min(dest) * AIRPORTS + origin.max(dest)) as u64);
            let distance = 150.0 + (pair % 2700) as f64;
            let logit = -1.6
                + 0.09 * (hour - 12.0)
                + if month == 7.0 || month == 12.0 {
                    0.4
                } else {
                    0.0
                }
                + ((carrier % 5) as f64 - 2.0) * 0.15
                + if origin < 10 { 0.3 } else { 0.0 }
                + 0.0001 * distance
                - if dow == 6.0 { 0.2 } else { 0.0 };
            let p = 1.0 / (1.0 + (-logit).exp());
            let y = (u(i, 8) < p) as u8 as f64;
            [
                month,
                dom,
                dow,
                dep,
                carrier as f64,
                origin as f64,
                dest as f64,
                distance,
                y,
            ]
        })
        .collect();
    let col = |k: usize| rows.iter().map(|r| r[k]).collect::<Vec<f64>>();
    let cat = |k: usize, names: &[String]| {
        let v: Vec<Option<String>> = rows
            .iter()
            .map(|r| Some(names[r[k] as usize].clone()))
            .collect();
        Column::categorical(&v)
    };
    Dataset {
        names: [
            "month",
            "day_of_month",
            "day_of_week",
            "dep_time",
            "carrier",
            "origin",
            "dest",
            "distance",
        ]
        .map(String::from)
        .to_vec(),
        columns: vec![
            Column::Numeric(col(0)),
            Column::Numeric(col(1)),
            Column::Numeric(col(2)),
            Column::Numeric(col(3)),
            cat(4, &carriers),
            cat(5, &airports),
            cat(6, &airports),
            Column::Numeric(col(7)),
        ],
        target: col(8),
        weights: None,
    }
}

/// Transfer timings on `d` (median of 5 each, after one untimed): 80 MB of packed
/// gradients uploaded as one vector, and written in pieces of 1, 8 and 32 MiB; 40 MB of
/// leaves read back.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn transfers(d: &Device, rows: usize) -> Vec<String> {
    use contrail_kernels::Accel;
    let accel = match d {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => Accel::cuda(*n),
        #[cfg(feature = "wgpu")]
        Device::Wgpu => Accel::wgpu(),
        _ => return Vec::new(),
    };
    let a = match accel {
        Ok(a) => a,
        Err(e) => return vec![format!("| transfers | {d} | failed: {e} | |")],
    };
    let data: Vec<u64> = (0..rows as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let mb = rows as f64 * 8.0 / 1e6;
    let time = |f: &mut dyn FnMut() -> Result<(), contrail_kernels::AccelError>| {
        let mut t = Vec::new();
        for i in 0..6 {
            let s = Instant::now();
            if let Err(e) = f().and_then(|()| a.sync()) {
                return Err(e.to_string());
            }
            if i > 0 {
                t.push(s.elapsed().as_secs_f64());
            }
        }
        t.sort_by(f64::total_cmp);
        Ok(t[t.len() / 2])
    };
    let mut out = Vec::new();
    let mut line = |what: String, r: Result<f64, String>, mbytes: f64| {
        out.push(match r {
            Ok(s) => format!(
                "| {what} | {d} | {:.1} ms, {:.1} GB/s | |",
                s * 1e3,
                mbytes / 1e3 / s
            ),
            Err(e) => format!("| {what} | {d} | failed: {e} | |"),
        })
    };
    let r = time(&mut || a.upload_u64("bench", data.clone()).map(drop));
    line(
        format!("upload {mb:.0} MB as one vector (with its copy)"),
        r,
        mb,
    );
    let dst = match a.filled("bench", 2 * rows, 0) {
        Ok(b) => b,
        Err(e) => return vec![format!("| transfers | {d} | failed: {e} | |")],
    };
    for mib in [1usize, 8, 32] {
        let r = time(&mut || a.write_u64(&dst, &data, mib << 20));
        line(format!("write {mb:.0} MB in {mib} MiB pieces"), r, mb);
    }
    let mut back = vec![0u32; 2 * rows];
    let r = time(&mut || a.read_into(&dst, &mut back));
    line(format!("read back {mb:.0} MB"), r, mb);
    out
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn transfers(_: &Device, _: usize) -> Vec<String> {
    Vec::new()
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = arg(&args, "--rows", 10_000_000);
    let trees = arg(&args, "--trees", 100);
    let cpu_trees = arg(&args, "--cpu-trees", 10);
    let mut devices = Vec::new();
    for d in [Device::Cuda(0), Device::Wgpu] {
        match d.describe() {
            Ok(info) => {
                println!("device {info}");
                devices.push(d);
            }
            Err(e) => {
                let chain: Vec<String> =
                    std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                        .map(|e| e.to_string())
                        .collect();
                println!("skipping {d}: {}", chain.join(": "));
            }
        }
    }
    println!("cpu: {} threads", rayon::current_num_threads());
    let mut table: Vec<String> = Vec::new();
    let mut failures = 0;
    if !args.iter().any(|a| a == "--skip-conformance") {
        for d in &devices {
            let t = Instant::now();
            let outcomes = conformance::all(d);
            let failed: Vec<&(String, Option<String>)> =
                outcomes.iter().filter(|o| o.1.is_some()).collect();
            for (name, diff) in &outcomes {
                println!(
                    "conformance {d} {name}: {}",
                    diff.as_deref().unwrap_or("equal")
                );
            }
            failures += failed.len();
            table.push(format!(
                "| conformance | {d} | {} of {} checks pass (trees equal the CPU's bit for bit when deterministic; predictions within 1e-5 with device gradients) | {:.1} s |",
                outcomes.len() - failed.len(),
                outcomes.len(),
                t.elapsed().as_secs_f64()
            ));
        }
    }
    let t = Instant::now();
    let ds = airline(rows, 42);
    println!(
        "data: {rows} airline-like rows × 8 features in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let params = |n: usize, deterministic: bool| Params {
        objective: Objective::Binary,
        num_iterations: n,
        learning_rate: 0.1,
        grow_policy: GrowPolicy::DepthWise,
        max_depth: 10,
        num_leaves: 1024,
        metric: vec!["none".into()],
        deterministic,
        ..Default::default()
    };
    let mut run = |d: &Device,
                   n: usize,
                   deterministic: bool|
     -> Option<(contrail_gbdt::Booster, Vec<f64>)> {
        if n == 0 {
            return None;
        }
        let before = device::profile();
        let start = Instant::now();
        let mut first: Option<f64> = None;
        let mut last = 0.0;
        let result = train_on(d, &ds, None, &params(n, deterministic), &mut |log| {
            let now = start.elapsed().as_secs_f64();
            if log.iteration == 1 {
                first = Some(now);
            }
            last = now;
        });
        let total = start.elapsed().as_secs_f64();
        match result {
            Ok((b, pred)) => {
                let logloss = contrail_gbdt::metric::evaluate(
                    "logloss",
                    &ds.target,
                    &pred,
                    None,
                    &Objective::Binary,
                );
                // Setup (binning, upload) ends where the first tree starts; trees are
                // timed from there to the last.
                let per_tree = last / n as f64;
                let first = first.unwrap_or(0.0);
                let setup = (first - per_tree).max(0.0);
                let p = device::profile();
                let phases = if *d == Device::Cpu {
                    format!("; split search {:.3} s", p.host_splits - before.host_splits)
                } else {
                    format!(
                        "; device: gradients {:.3} s, scores {:.3} s, upload {:.3} s, histograms {:.3} s ({} passes), partitions {:.3} s ({} passes), read-back {:.3} s; host: gradients {:.3} s, leaves and scores {:.3} s, histogram unpacking {:.3} s, split search {:.3} s",
                        p.device_gradients - before.device_gradients,
                        p.device_scores - before.device_scores,
                        p.upload - before.upload,
                        p.histograms - before.histograms,
                        p.histogram_passes - before.histogram_passes,
                        p.partitions - before.partitions,
                        p.partition_passes - before.partition_passes,
                        p.readback - before.readback,
                        p.host_gradients - before.host_gradients,
                        p.host_leaves - before.host_leaves,
                        p.host_unpack - before.host_unpack,
                        p.host_splits - before.host_splits
                    )
                };
                let global = std::env::var("CONTRAIL_HIST").is_ok_and(|v| v == "global");
                let per_cube = std::env::var("CONTRAIL_HIST_ROWS").ok();
                let mode = if *d == Device::Cpu {
                    String::new()
                } else if deterministic {
                    " deterministic".into()
                } else if global {
                    " device gradients, global histograms".into()
                } else if let Some(k) = per_cube {
                    format!(" device gradients, {k} rows a cube")
                } else {
                    " device gradients".into()
                };
                println!(
                    "train {d}{mode}: {n} trees, {} leaves in the last, total {total:.2} s, setup {setup:.2} s, trees {:.2} s ({:.4} s a tree), train logloss {logloss:.5}{phases}",
                    b.trees.last().map_or(0, |t| t.leaf_value.len()),
                    last - setup,
                    (last - setup) / n as f64
                );
                table.push(format!(
                    "| train {rows} rows, {n} trees depth 10 | {d}{mode} | {:.3} s a tree, {:.2} s for the trees, setup {setup:.2} s | logloss {logloss:.5} |",
                    (last - setup) / n as f64,
                    last - setup
                ));
                Some((b, pred))
            }
            Err(e) => {
                failures += 1;
                println!("train {d}: failed: {e}");
                table.push(format!("| train | {d} | failed: {e} | |"));
                None
            }
        }
    };
    let mut models = Vec::new();
    let mut agreement = Vec::new();
    let compare = args.iter().any(|a| a == "--compare-histograms");
    for d in devices.clone() {
        // Warm-up: two trees in each mode compile every kernel shape the timed runs use
        // (CUDA compiles at the first launch of each shape, NVRTC).
        let t = Instant::now();
        for (det, global) in [(false, false), (true, false), (false, true)] {
            if global && !compare {
                continue;
            }
            if global {
                std::env::set_var("CONTRAIL_HIST", "global");
            }
            let _ = train_on(&d, &ds, None, &params(2, det), &mut |_| {});
            std::env::remove_var("CONTRAIL_HIST");
        }
        println!("warm-up {d}: {:.2} s", t.elapsed().as_secs_f64());
        let fast = run(&d, trees, false);
        if compare {
            // The same training with every deeper level's histograms in device-memory
            // atomics rather than one leaf a cube (read when the device is opened).
            std::env::set_var("CONTRAIL_HIST", "global");
            println!("histograms: device-memory atomics past the first level");
            run(&d, trees, false);
            std::env::remove_var("CONTRAIL_HIST");
            if d != Device::Wgpu && args.iter().any(|a| a == "--sweep-rows") {
                for rows_a_cube in ["2048", "8192"] {
                    std::env::set_var("CONTRAIL_HIST_ROWS", rows_a_cube);
                    println!("histograms: one leaf a cube, {rows_a_cube} rows a cube");
                    run(&d, trees, false);
                    std::env::remove_var("CONTRAIL_HIST_ROWS");
                }
            }
        }
        if let Some((b, exact)) = run(&d, trees, true) {
            if let Some((f, fp)) = &fast {
                // Device gradients against the CPU's trees (deterministic): same splits?
                let alike = f
                    .trees
                    .iter()
                    .zip(&b.trees)
                    .filter(|(a, b)| a.feature == b.feature && a.threshold_bin == b.threshold_bin)
                    .count();
                let mut diffs: Vec<f64> =
                    exact.iter().zip(fp).map(|(a, b)| (a - b).abs()).collect();
                diffs.sort_by(f64::total_cmp);
                let q = |p: f64| {
                    diffs
                        .get(((diffs.len() as f64 - 1.0) * p) as usize)
                        .copied()
                        .unwrap_or(0.0)
                };
                let first_diff = match (f.trees.first(), b.trees.first()) {
                    (Some(x), Some(y)) => (0..x.feature.len().min(y.feature.len()))
                        .find(|&k| {
                            x.feature[k] != y.feature[k] || x.threshold_bin[k] != y.threshold_bin[k]
                        })
                        .map_or("none".to_string(), |k| {
                            format!("node {k} of {}", y.feature.len())
                        }),
                    _ => "-".into(),
                };
                let ll = |p: &[f64]| {
                    contrail_gbdt::metric::evaluate(
                        "logloss",
                        &ds.target,
                        p,
                        None,
                        &Objective::Binary,
                    )
                };
                let worst = format!(
                    "probabilities differ by {:.1e} (median), {:.1e} (99th percentile), {:.1e} (largest); logloss {:.5} vs {:.5}; first tree's first different split: {first_diff}",
                    q(0.5), q(0.99), q(1.0), ll(fp), ll(&exact)
                );
                agreement.push(format!(
                    "| device gradients vs deterministic | {d} | {alike} of {} trees split alike | {worst} |",
                    b.trees.len()
                ));
            }
            models.push(b);
        }
    }
    run(&Device::Cpu, cpu_trees, true);
    table.extend(agreement);
    // Prediction: the trained model, and five copies of its trees (a 500-tree forest of
    // the same shape), on every device and on the CPU; the device's sums against the CPU's.
    if let Some(model) = models
        .first()
        .filter(|_| !args.iter().any(|a| a == "--skip-predict"))
    {
        let x = match model.prepare(&ds) {
            Ok(x) => x,
            Err(e) => {
                println!("predict: {e}");
                Vec::new()
            }
        };
        let mut big = model.clone();
        big.trees = (0..5).flat_map(|_| model.trees.iter().cloned()).collect();
        // The CPU's reference (and its rate) on the first million rows.
        let nf = model.n_features().max(1);
        let sample = rows.min(1_000_000);
        for m in [model, &big] {
            let k = m.trees.len();
            let t = Instant::now();
            let want = m.predict_raw(&x[..sample * nf], None);
            let cpu = t.elapsed().as_secs_f64();
            table.push(format!(
                "| predict {sample} rows, {k} trees | cpu | {:.0} rows/s ({cpu:.2} s) | |",
                sample as f64 / cpu
            ));
            for d in &devices {
                let mut best: Option<(f64, f64, f64)> = None;
                let mut err = None;
                for _ in 0..3 {
                    let before = device::profile().predict;
                    let t = Instant::now();
                    match device::predict_raw(d, m, &x, None) {
                        Ok(got) => {
                            let all = t.elapsed().as_secs_f64();
                            let kernel = device::profile().predict - before;
                            let worst = want
                                .iter()
                                .zip(&got)
                                .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
                                .fold(0.0f64, f64::max);
                            if best.is_none_or(|b| kernel < b.1) {
                                best = Some((all, kernel, worst));
                            }
                        }
                        Err(e) => err = Some(e.to_string()),
                    }
                }
                table.push(match (best, err) {
                    (Some((all, kernel, worst)), _) => format!(
                        "| predict {rows} rows, {k} trees | {d} | kernel {:.0} rows/s ({:.1} ms, sums read back); whole call {:.0} rows/s | largest relative difference from the CPU {worst:.1e} |",
                        rows as f64 / kernel,
                        kernel * 1e3,
                        rows as f64 / all
                    ),
                    (None, e) => format!("| predict | {d} | failed: {} | |", e.unwrap_or_default()),
                });
            }
        }
    }
    for d in &devices {
        table.extend(transfers(d, rows));
    }
    // The histogram pass alone: bytes read over time.
    let binned = Binned::fit(&ds, 255);
    for d in &devices {
        match device::histogram_pass(d, &binned, 20) {
            Ok((secs, bytes)) => table.push(format!(
                "| histogram pass, all {rows} rows | {d} | {:.3} ms, {:.1} GB/s of {} bytes read | |",
                secs * 1e3,
                bytes as f64 / secs / 1e9,
                bytes
            )),
            Err(e) => table.push(format!("| histogram pass | {d} | failed: {e} | |")),
        }
    }
    println!("\n| check | device | result | |\n|---|---|---|---|");
    for l in &table {
        println!("{l}");
    }
    if failures > 0 {
        println!("{failures} check(s) failed");
        std::process::exit(1);
    }
}
