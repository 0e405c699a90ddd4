//! The CPU predictor (issue 5): rows/s of a 500-tree × 255-leaf model.
//!
//! `cargo bench --bench predict`. 100 trees of up to 255 leaves are trained on 200,000
//! rows of 8 numeric and 2 categorical features (about ten seconds), repeated five times
//! into a 500-tree forest, and 100,000 rows are predicted: `compiled` is
//! [`Booster::predict_raw`] (the forest compiled to one node table, walked on binned rows
//! eight at a time), `reference` the row-at-a-time walk of each tree's node tables on raw
//! values (the same bits). `_1_thread` in a one-thread pool (rows/s per core).

use contrail::gbdt::conformance::Lcg;
use contrail::gbdt::data::{Column, Dataset};
use contrail::gbdt::{train, Booster, Params};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn data(n: usize, seed: u64) -> Dataset {
    let mut lcg = Lcg(seed);
    let mut next = || lcg.next();
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); 8];
    let mut cats: Vec<Vec<u32>> = vec![Vec::with_capacity(n); 2];
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let v: Vec<f64> = (0..8).map(|_| next()).collect();
        let c = [(next() * 40.0) as u32, (next() * 12.0) as u32];
        y.push(
            (v[0] * 6.0).sin() + v[1] * v[2] * 3.0 + (c[0] % 7) as f64 * 0.3 - c[1] as f64 * 0.1
                + next() * 0.2,
        );
        for (col, x) in cols.iter_mut().zip(&v) {
            col.push(if next() < 0.02 { f64::NAN } else { *x });
        }
        for (col, x) in cats.iter_mut().zip(c) {
            col.push(x);
        }
    }
    let mut columns: Vec<Column> = cols.into_iter().map(Column::Numeric).collect();
    for (k, codes) in cats.into_iter().enumerate() {
        let dict = (0..if k == 0 { 40 } else { 12 })
            .map(|i| format!("c{i}"))
            .collect();
        columns.push(Column::Categorical { codes, dict });
    }
    Dataset {
        names: (0..10).map(|i| format!("x{i}")).collect(),
        columns,
        target: y,
        weights: None,
    }
}

fn bench(c: &mut Criterion) {
    let p = Params {
        num_iterations: 100,
        num_leaves: 255,
        min_data_in_leaf: 20,
        learning_rate: 0.1,
        metric: vec!["none".into()],
        ..Default::default()
    };
    let mut b: Booster = train(&data(200_000, 3), None, &p, &mut |_| {}).expect("train");
    b.trees = (0..5).flat_map(|_| b.trees.clone()).collect();
    let test = data(100_000, 11);
    let x = b.prepare(&test).expect("prepare");
    let n = test.target.len() as u64;
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut g = c.benchmark_group("predict_500_trees");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("compiled", |bch| bch.iter(|| b.predict_raw(&x, None)));
    g.bench_function("compiled_1_thread", |bch| {
        bch.iter(|| one.install(|| b.predict_raw(&x, None)))
    });
    g.bench_function("reference_1_thread", |bch| {
        bch.iter(|| one.install(|| b.predict_raw_reference(&x, None)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
