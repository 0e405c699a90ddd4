//! Histogram construction and tree growth on the CPU.
//!
//! `cargo bench --bench gbdt`. `cpu/histogram_*` reports rows/s and bytes/s (a row costs
//! its bin bytes plus 8 bytes of packed quantised gradient and hessian); `cpu/grow_tree_*` grows
//! one 255-leaf tree (histograms with the subtraction trick, split finding, partitions);
//! `cpu/split_finding_*` finds the best split of one leaf (bins/s).

use contrail::gbdt::bin::Binned;
use contrail::gbdt::data::{Column, Dataset};
use contrail::gbdt::train::{build_histogram, find_best_split, grow_tree, quantise};
use contrail::gbdt::Params;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn data(n: usize, nf: usize) -> (Dataset, Vec<f64>) {
    let mut s = 7u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let cols: Vec<Column> = (0..nf)
        .map(|_| Column::Numeric((0..n).map(|_| next()).collect()))
        .collect();
    let g: Vec<f64> = (0..n).map(|_| next() - 0.5).collect();
    let d = Dataset {
        names: (0..nf).map(|i| format!("x{i}")).collect(),
        columns: cols,
        target: vec![0.0; n],
        weights: None,
    };
    (d, g)
}

fn bench(c: &mut Criterion) {
    let (n, nf) = (500_000, 28);
    let (d, g) = data(n, nf);
    let binned = Binned::fit(&d, 255);
    let (gh, sg, sh) = quantise(&g, &vec![1.0; n]).expect("quantise");
    let rows: Vec<u32> = (0..n as u32).collect();
    let feats: Vec<usize> = (0..nf).collect();
    let mut grp = c.benchmark_group("cpu");
    grp.sample_size(10);
    grp.throughput(Throughput::Bytes((n * (nf + 8)) as u64));
    grp.bench_function("histogram_500k_x28_bytes", |b| {
        b.iter(|| build_histogram(&binned, &feats, &rows, &gh))
    });
    grp.throughput(Throughput::Elements(n as u64));
    grp.bench_function("histogram_500k_x28_rows", |b| {
        b.iter(|| build_histogram(&binned, &feats, &rows, &gh))
    });
    let p = Params {
        num_leaves: 255,
        ..Default::default()
    };
    // Split finding on a full histogram: every bin of every feature is a candidate
    // threshold, scanned in both missing-value directions where there are missing values.
    let hist = build_histogram(&binned, &feats, &rows, &gh);
    grp.throughput(Throughput::Elements(binned.total_bins() as u64));
    grp.bench_function("split_finding_28_features_bins", |b| {
        b.iter(|| find_best_split(&binned, &p, &feats, &hist, n, sg, sh))
    });
    grp.throughput(Throughput::Elements(n as u64));
    grp.bench_function("grow_tree_255_leaves_500k_x28", |b| {
        b.iter(|| {
            let mut r = rows.clone();
            grow_tree(&binned, &p, &feats, &mut r, &gh, sg, sh)
        })
    });
    grp.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
