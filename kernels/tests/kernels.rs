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
    for a in accels() {
        check_histograms(&a, &[7, 255, 31, 2, 128, 64], &[3, 200]);
        // 20 columns of 250 bins: 5,000 bins a leaf, past any cube's shared memory.
        check_histograms(&a, &[250; 20], &[5]);
    }
}

fn check_histograms(a: &Accel, bins_per_col: &[u32], leaf_counts: &[usize]) {
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
            let got = a
                .histograms(
                    &a.upload("matrix", &matrix).unwrap(),
                    width as u32,
                    &a.upload("gh", &gh).unwrap(),
                    &a.upload("leaf", &leaf_of).unwrap(),
                    &a.upload("slots", &slot_of_leaf).unwrap(),
                    &a.upload("offsets", &col_offset).unwrap(),
                    n as u32,
                    hist_len,
                    slots,
                )
                .unwrap();
            // Packed as the CPU's histograms are: (gradient sum << 32) + hessian sum.
            let want: Vec<u64> = want
                .chunks(2)
                .map(|p| (((p[0] as i32 as i64) << 32) as u64).wrapping_add(p[1] as u64))
                .collect();
            assert_eq!(got, want, "{}: {n_leaves} leaves, {hist_len} bins", a.info);
        }
    }
}
