//! The kernels against plain loops, on every device this build has and this machine can
//! open (skipped, saying why, where none can be).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use contrail_kernels::Accel;

/// Prints the back ends' errors (a kernel that fails to compile is logged there).
struct Stderr;
impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("{}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

fn accels() -> Vec<Accel> {
    let _ = log::set_logger(&Stderr).map(|()| log::set_max_level(log::LevelFilter::Warn));
    let mut v = Vec::new();
    #[cfg(feature = "wgpu")]
    match Accel::wgpu() {
        Ok(a) => v.push(a),
        Err(e) => eprintln!("skipping wgpu: {e}"),
    }
    #[cfg(feature = "cuda")]
    match Accel::cuda(0) {
        Ok(a) => v.push(a),
        Err(e) => eprintln!("skipping cuda: {e}"),
    }
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn partition_moves_right_rows_and_counts_left_rows() {
    for a in accels() {
        let mut r = Rng(5);
        let n: usize = std::env::var("PN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(50_001);
        let n_feats = 3usize;
        let col_words = n.div_ceil(4);
        let bins: Vec<Vec<u8>> = (0..n_feats)
            .map(|_| (0..n).map(|_| (r.next() % 200) as u8).collect())
            .collect();
        let mut cols = vec![0u32; n_feats * col_words];
        for (f, b) in bins.iter().enumerate() {
            for (i, &x) in b.iter().enumerate() {
                cols[f * col_words + i / 4] |= (x as u32) << (8 * (i % 4));
            }
        }
        let leaf0: Vec<u32> = (0..n)
            .map(|_| match r.next() % 4 {
                3 => u32::MAX,
                l => l as u32,
            })
            .collect();
        // Splits of leaves 0 and 2 (leaf 1 stays): feature 2 and 0, random side tables.
        let max_leaves = 8usize;
        let mut split_of_leaf = vec![u32::MAX; max_leaves];
        split_of_leaf[0] = 0;
        split_of_leaf[2] = 1;
        let split_col = vec![2u32, 0];
        let new_leaf = vec![3u32, 4];
        let side: Vec<u32> = (0..16).map(|_| r.next() as u32).collect();
        let mut want_leaf = leaf0.clone();
        let mut want_counts = vec![0u32; 2];
        for i in 0..n {
            let l = leaf0[i] as usize;
            if l >= max_leaves || split_of_leaf[l] == u32::MAX {
                continue;
            }
            let k = split_of_leaf[l] as usize;
            let b = bins[split_col[k] as usize][i] as usize;
            if side[8 * k + b / 32] >> (b % 32) & 1 == 1 {
                want_counts[k] += 1;
            } else {
                want_leaf[i] = new_leaf[k];
            }
        }
        let mut table = Vec::new();
        for k in 0..2 {
            table.push(split_col[k]);
            table.push(new_leaf[k]);
            table.extend_from_slice(&side[8 * k..8 * k + 8]);
        }
        let leaf_of = a.upload("leaf", &leaf0).unwrap();
        let counts = a
            .split_rows(
                &a.upload("cols", &cols).unwrap(),
                col_words as u32,
                &leaf_of,
                &a.upload("sol", &split_of_leaf).unwrap(),
                &a.upload("table", &table).unwrap(),
                n as u32,
                2,
            )
            .unwrap();
        let got = a.read(&leaf_of).unwrap();
        if n < 50 {
            for i in 0..n {
                let k = split_of_leaf
                    .get(leaf0[i] as usize)
                    .copied()
                    .unwrap_or(u32::MAX);
                let b = if k == u32::MAX {
                    0
                } else {
                    bins[split_col[k as usize] as usize][i]
                };
                eprintln!(
                    "row {i}: leaf {} split {k} bin {b} want {} got {}",
                    leaf0[i], want_leaf[i], got[i]
                );
            }
        }
        let wrong = (0..n).filter(|&i| got[i] != want_leaf[i]).count();
        assert_eq!(wrong, 0, "{}: rows in the wrong leaf", a.info);
        assert_eq!(counts, want_counts, "{}", a.info);
    }
}

/// Histograms of several leaves against a plain loop: few leaves fit shared memory in one
/// group, many in several groups (the privatised kernel), and histograms too long for
/// shared memory use device-memory atomics; rows out of the sample and of leaves not asked
/// for are left out; gradients are negative and positive.
#[test]
fn histograms_match_a_plain_loop_in_shared_and_device_memory() {
    for mut a in accels() {
        check_histograms(&mut a, &[7, 255, 31, 2, 128, 64], &[3, 200]);
        // 20 columns of 250 bins: 5,000 bins a leaf (40,000 bytes: one leaf a cube on
        // CUDA's 48 KiB, device memory on lavapipe's 32 KiB).
        check_histograms(&mut a, &[250; 20], &[5]);
        // 30 columns: 7,500 bins a leaf, past any cube's shared memory.
        check_histograms(&mut a, &[250; 30], &[5]);
    }
}

fn check_histograms(a: &mut Accel, bins_per_col: &[u32], leaf_counts: &[usize]) {
    {
        let mut r = Rng(11);
        let n = 40_000usize;
        let width = bins_per_col.len();
        let words = width.div_ceil(4);
        let col_offset: Vec<u32> = bins_per_col
            .iter()
            .scan(0u32, |acc, &b| {
                let o = *acc;
                *acc += b;
                Some(o)
            })
            .collect();
        let hist_len: u32 = bins_per_col.iter().sum();
        let mut matrix = vec![0u32; n * words];
        for i in 0..n {
            for (c, &nb) in bins_per_col.iter().enumerate() {
                let b = (r.next() % nb as u64) as u32;
                matrix[i * words + c / 4] |= b << (8 * (c % 4));
            }
        }
        let gh: Vec<u32> = (0..n)
            .flat_map(|_| {
                let h = (r.next() % 1000) as u32;
                let g = ((r.next() % 2001) as i64 - 1000) as i32 as u32;
                [h, g]
            })
            .collect();
        for &n_leaves in leaf_counts {
            let leaf_of: Vec<u32> = (0..n)
                .map(|_| match r.next() % (n_leaves as u64 + 1) {
                    x if x == n_leaves as u64 => u32::MAX,
                    x => x as u32,
                })
                .collect();
            // Every other leaf gets a slot.
            let mut slot_of_leaf = vec![u32::MAX; n_leaves];
            let mut slots = 0u32;
            for (l, s) in slot_of_leaf.iter_mut().enumerate() {
                if l % 2 == 0 {
                    *s = slots;
                    slots += 1;
                }
            }
            let mut want = vec![0u32; 2 * (slots * hist_len) as usize];
            for i in 0..n {
                let l = leaf_of[i] as usize;
                if l >= n_leaves || slot_of_leaf[l] == u32::MAX {
                    continue;
                }
                for c in 0..width {
                    let b = (matrix[i * words + c / 4] >> (8 * (c % 4))) & 0xFF;
                    let e = 2 * (slot_of_leaf[l] * hist_len + col_offset[c] + b) as usize;
                    want[e] = want[e].wrapping_add(gh[2 * i + 1]);
                    want[e + 1] = want[e + 1].wrapping_add(gh[2 * i]);
                }
            }
            let mut slot_rows = vec![0u32; slots as usize];
            for &l in &leaf_of {
                if let Some(&s) = slot_of_leaf.get(l as usize).filter(|s| **s != u32::MAX) {
                    slot_rows[s as usize] += 1;
                }
            }
            // Packed as the CPU's histograms are: (gradient sum << 32) + hessian sum.
            let want: Vec<u64> = want
                .chunks(2)
                .map(|p| (((p[0] as i32 as i64) << 32) as u64).wrapping_add(p[1] as u64))
                .collect();
            let bufs = [
                a.upload("matrix", &matrix).unwrap(),
                a.upload("gh", &gh).unwrap(),
                a.upload("leaf", &leaf_of).unwrap(),
                a.upload("slots", &slot_of_leaf).unwrap(),
                a.upload("offsets", &col_offset).unwrap(),
            ];
            let [matrix_b, gh_b, leaf_b, slots_b, offsets_b] = &bufs;
            let run = |a: &Accel, slot_rows: &[u32]| {
                a.histograms(
                    matrix_b,
                    width as u32,
                    gh_b,
                    leaf_b,
                    slots_b,
                    offsets_b,
                    n as u32,
                    hist_len,
                    slots,
                    slot_rows,
                )
            };
            // Leaves together in shared memory, one leaf a cube from lists of rows, and
            // device-memory atomics (whichever apply at this size).
            for grouped in [true, false] {
                a.grouped_histograms = grouped;
                let got = run(a, &slot_rows).unwrap();
                assert_eq!(
                    got, want,
                    "{}: {n_leaves} leaves, {hist_len} bins, grouped {grouped}",
                    a.info
                );
            }
            // A host count that disagrees with the device's rows is an error.
            let limit = a.info.max_shared_bytes.min(48 * 1024);
            let one_fits = hist_len as usize * 8 <= limit;
            if one_fits && hist_len as usize * slots as usize * 8 > limit {
                a.grouped_histograms = true;
                let mut wrong = slot_rows.clone();
                wrong[0] = wrong[0].saturating_sub(1);
                let e = run(a, &wrong);
                assert!(e.is_err(), "{}: a wrong count went unnoticed", a.info);
            }
        }
    }
}

/// Gradients of every objective against the same formulas in `f64` on the host (to `f32`
/// rounding), their maxima exact, the fixed-point pairs exactly `floor(x · s + 1/2)` of
/// the device's own `f32` values, and compensated score updates.
#[test]
fn gradients_quantisation_and_score_updates_match_the_host() {
    use contrail_kernels::kernels::*;
    for a in accels() {
        let n = 30_011usize;
        let mut r = Rng(11);
        let mut unit = move || (r.next() >> 11) as f64 / (1u64 << 53) as f64;
        // Scores in 32.32 fixed point: integer parts and fractions.
        let score: Vec<f64> = (0..n).map(|_| unit() * 6.0 - 3.0).collect();
        let int: Vec<u32> = score.iter().map(|s| s.floor() as i32 as u32).collect();
        let frac: Vec<u32> = score
            .iter()
            .map(|s| ((s - s.floor()) * 4294967296.0) as u32)
            .collect();
        let pos: Vec<f32> = (0..n).map(|_| (unit() * 5.0 + 0.1) as f32).collect();
        let bin: Vec<f32> = (0..n).map(|_| (unit() < 0.3) as u32 as f32).collect();
        let w: Vec<f32> = (0..n).map(|_| (unit() * 2.0) as f32).collect();
        let (bh, bl, bw) = (
            a.upload("int", &int).unwrap(),
            a.upload("frac", &frac).unwrap(),
            a.upload_f32("w", &w).unwrap(),
        );
        let gh = a.filled("gh", 2 * n, 0).unwrap();
        for (obj, p, labels) in [
            (OBJ_SQUARED, 0.0f32, &pos),
            (OBJ_HUBER, 0.8, &pos),
            (OBJ_BINARY, 0.0, &bin),
            (OBJ_POISSON, 0.7, &pos),
            (OBJ_GAMMA, 0.0, &pos),
            (OBJ_TWEEDIE, 1.5, &pos),
        ] {
            let host = |i: usize| -> (f64, f64) {
                let f = int[i] as i32 as f64 + frac[i] as f64 / 4294967296.0;
                let y = labels[i] as f64;
                let p = p as f64;
                let (g, h) = match obj {
                    OBJ_SQUARED => (f - y, 1.0),
                    OBJ_HUBER => ((f - y).clamp(-p, p), 1.0),
                    OBJ_BINARY => {
                        let s = 1.0 / (1.0 + (-f).exp());
                        (s - y, (s * (1.0 - s)).max(1e-16))
                    }
                    OBJ_POISSON => (f.exp() - y, (f + p).exp()),
                    OBJ_GAMMA => (1.0 - y * (-f).exp(), (y * (-f).exp()).max(1e-16)),
                    _ => {
                        let (ea, eb) = (((1.0 - p) * f).exp(), ((2.0 - p) * f).exp());
                        (
                            eb - y * ea,
                            ((2.0 - p) * eb - y * (1.0 - p) * ea).max(1e-16),
                        )
                    }
                };
                (g * w[i] as f64, h * w[i] as f64)
            };
            let bl_label = a.upload_f32("labels", labels).unwrap();
            let (mg, mh) = a
                .gradients(obj, p, &bh, &bl, &bl_label, Some(&bw), &gh, n)
                .unwrap();
            let raw = a.read(&gh).unwrap();
            let (mut want_g, mut want_h) = (0f32, 0f32);
            for i in 0..n {
                let (g, h) = (f32::from_bits(raw[2 * i + 1]), f32::from_bits(raw[2 * i]));
                let (eg, eh) = host(i);
                let scale = eg.abs().max(eh.abs()).max(1.0);
                assert!(
                    (g as f64 - eg).abs() <= 1e-5 * scale && (h as f64 - eh).abs() <= 1e-5 * scale,
                    "{}: objective {obj} row {i}: device ({g}, {h}), host ({eg}, {eh})",
                    a.info
                );
                want_g = want_g.max(g.abs());
                want_h = want_h.max(h);
            }
            assert_eq!(
                (mg, mh),
                (want_g, want_h),
                "{}: objective {obj} maxima",
                a.info
            );
            let (sg, sh) = (2f32.powi(20), 2f32.powi(24));
            a.quantise_pairs(&gh, n, sg, sh);
            let q = a.read(&gh).unwrap();
            for i in 0..n {
                let (g, h) = (f32::from_bits(raw[2 * i + 1]), f32::from_bits(raw[2 * i]));
                assert_eq!(q[2 * i], (h * sh + 0.5).floor() as u32, "row {i} hessian");
                assert_eq!(
                    q[2 * i + 1] as i32,
                    (g * sg + 0.5).floor() as i32,
                    "row {i} gradient"
                );
            }
        }
        // A NaN gradient shows in the maxima.
        let nan = a.upload_f32("labels", &[0.0, f32::NAN, 1.0]).unwrap();
        let zero = a.upload("zero", &[0; 3]).unwrap();
        let (mg, _) = a
            .gradients(OBJ_SQUARED, 0.0, &zero, &zero, &nan, None, &gh, 3)
            .unwrap();
        assert!(mg.is_nan(), "{}: NaN gradient maximum {mg}", a.info);
        // Fixed-point updates: many small steps of both signs on large scores keep their
        // sums to 2^-32 a step.
        let m = 1000usize;
        let start: Vec<f64> = (0..m).map(|i| i as f64 * 1.37 - 700.0).collect();
        let (bi, bf) = (
            a.upload(
                "int",
                &start
                    .iter()
                    .map(|s| s.floor() as i32 as u32)
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
            a.upload(
                "frac",
                &start
                    .iter()
                    .map(|s| ((s - s.floor()) * 4294967296.0) as u32)
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        );
        let steps: Vec<Vec<f32>> = (0..300)
            .map(|k| {
                (0..m)
                    .map(|i| match (k + i) % 4 {
                        0 => 1e-4,
                        1 => -3.3e-5,
                        2 => -1.25,
                        _ => 0.9 * (i as f32 - 500.0),
                    })
                    .collect()
            })
            .collect();
        for s in &steps {
            let d = a.upload_f32("delta", s).unwrap();
            a.add_scores(&d, &bf, &bi, m);
        }
        let (ri, rf) = (a.read(&bi).unwrap(), a.read(&bf).unwrap());
        for i in 0..m {
            let want: f64 = start[i] + steps.iter().map(|s| s[i] as f64).sum::<f64>();
            let got = ri[i] as i32 as f64 + rf[i] as f64 / 4294967296.0;
            assert!(
                (got - want).abs() < 1e-6,
                "{}: row {i}: fixed-point score {got}, exact {want}",
                a.info
            );
        }
    }
}
