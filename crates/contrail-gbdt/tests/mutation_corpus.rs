//! 10,000 mutated packages, each rejected with a typed error: never a panic, never an
//! allocation beyond a small multiple of the file (the loader is measured with a counting
//! allocator), and every flip of a payload byte caught by the checksum.
//!
//! One test in its own binary, so the allocator's peak is this test's alone.
#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use contrail_gbdt::data::{Column, Dataset};
use contrail_gbdt::package::{self, from_bytes, to_bytes};
use contrail_gbdt::{train, Booster, GbdtError, GrowPolicy, Objective, Params};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn data(n: usize, seed: u64, binary: bool) -> Dataset {
    let mut r = Rng(seed);
    let cats = ["LHR", "JFK", "CDG", "FRA", "SIN", "DXB"];
    let (mut a, mut b, mut c, mut y) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let x = r.unit() * 10.0;
        let z = if r.unit() < 0.1 { f64::NAN } else { r.unit() };
        let k = r.below(cats.len());
        a.push(x);
        b.push(z);
        c.push(Some(cats[k].to_string()));
        let t = x.sqrt() + k as f64 * 0.7 + if z.is_nan() { 1.0 } else { z } + r.unit();
        y.push(if binary { (t > 3.5) as u8 as f64 } else { t });
    }
    Dataset {
        names: vec!["x".into(), "z".into(), "origin".into()],
        columns: vec![
            Column::Numeric(a),
            Column::Numeric(b),
            Column::categorical(&c),
        ],
        target: y,
        weights: None,
    }
}

fn save(b: &Booster) -> Vec<u8> {
    let m = package::manifest(
        b,
        BTreeMap::from([("train-rmse".to_string(), 0.5)]),
        Default::default(),
        BTreeMap::new(),
    );
    to_bytes(b, &m).expect("save")
}

/// Several valid models: leaf-wise and depth-wise, regression and binary, with
/// categorical splits.
fn bases() -> Vec<Booster> {
    let mut out = Vec::new();
    for (i, (leaves, policy, binary)) in [
        (8, GrowPolicy::LeafWise, false),
        (15, GrowPolicy::LeafWise, true),
        (31, GrowPolicy::DepthWise, false),
        (4, GrowPolicy::LeafWise, false),
    ]
    .into_iter()
    .enumerate()
    {
        let d = data(2000, 11 + i as u64, binary);
        let p = Params {
            num_iterations: 12,
            num_leaves: leaves,
            grow_policy: policy,
            max_depth: if policy == GrowPolicy::DepthWise {
                5
            } else {
                -1
            },
            objective: if binary {
                Objective::Binary
            } else {
                Objective::Regression
            },
            min_data_in_leaf: 10,
            min_data_per_group: 10,
            ..Default::default()
        };
        out.push(train(&d, None, &p, &mut |_| {}).expect("train"));
    }
    out
}

/// A structural edit that passes the checksum (the package is re-saved) and must be
/// caught by validation. Returns what it did.
fn structural(b: &mut Booster, r: &mut Rng) -> String {
    let nf = b.feature_names.len();
    // Category sets are numbered across the whole model in the file.
    let all_sets: usize = b.trees.iter().map(|t| t.cat_bitsets.len()).sum();
    let ti = r.below(b.trees.len());
    let t = &mut b.trees[ti];
    let nodes = t.left.len();
    if nodes == 0 {
        b.init_score = f64::NAN;
        return "NaN init score".into();
    }
    let n = r.below(nodes);
    let leaves = t.leaf_value.len() as i32;
    match r.below(12) {
        0 => {
            t.left[n] = nodes as i32 + r.below(1 << 20) as i32;
            "child index past the nodes".into()
        }
        1 => {
            t.right[n] = !(leaves + r.below(1000) as i32);
            "leaf index past the leaves".into()
        }
        2 => {
            t.left[n] = n as i32;
            "self loop".into()
        }
        3 => {
            // Point a node at one of its ancestors (the root is an ancestor of all).
            t.right[n] = 0;
            "cycle".into()
        }
        4 => {
            t.feature[n] = (nf + r.below(1 << 16)) as u32;
            "feature id >= n_features".into()
        }
        5 => {
            t.threshold[n] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY][r.below(3)];
            t.cat_index[n] = -1;
            "non-finite threshold".into()
        }
        6 => {
            let l = r.below(t.leaf_value.len());
            t.leaf_value[l] = f64::NAN;
            "NaN leaf value".into()
        }
        7 => {
            t.leaf_value.pop();
            "fewer leaf values than leaves".into()
        }
        8 => {
            t.cat_index[n] = (all_sets + r.below(100)) as i32;
            "category set index past the sets".into()
        }
        9 => {
            t.left[n] = i32::MIN + r.below(10) as i32;
            "child index near i32::MIN".into()
        }
        10 => {
            t.feature.pop();
            "node arrays of different lengths".into()
        }
        _ => {
            if nodes < 2 {
                t.left[n] = n as i32;
                return "self loop".into();
            }
            // Two parents for one node.
            let other = (n + 1) % nodes;
            t.left[n] = t.left[other];
            t.right[n] = t.left[other];
            "shared child".into()
        }
    }
}

/// Rewrites the JSON header (keeping it valid JSON) with an inconsistent declaration.
fn header_edit(bytes: &[u8], r: &mut Rng) -> (Vec<u8>, String) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let mut v: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("json");
    let names: Vec<String> = v
        .as_object()
        .expect("object")
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    let name = names[r.below(names.len())].clone();
    let huge = [1u64 << 31, 1u64 << 40, u64::MAX / 8][r.below(3)];
    let what = match r.below(5) {
        0 => {
            v[&name]["shape"] = serde_json::json!([huge]);
            format!("`{name}` shape of {huge}")
        }
        1 => {
            v[&name]["data_offsets"] = serde_json::json!([0, huge]);
            format!("`{name}` data past the end")
        }
        2 => {
            v[&name]["data_offsets"] = serde_json::json!([16, 8]);
            format!("`{name}` reversed offsets")
        }
        3 => {
            v[&name]["dtype"] = serde_json::json!("F16");
            format!("`{name}` wrong dtype")
        }
        _ => {
            v.as_object_mut().expect("object").remove(&name);
            format!("`{name}` missing")
        }
    };
    let mut h = serde_json::to_vec(&v).expect("json");
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&bytes[8 + n..]);
    (out, what)
}

#[test]
fn ten_thousand_mutated_packages_are_rejected_safely() {
    let bases = bases();
    let valid: Vec<Vec<u8>> = bases.iter().map(save).collect();
    for (b, bytes) in bases.iter().zip(&valid) {
        assert_eq!(&from_bytes(bytes, "ok").expect("valid").0, b);
    }
    let mut r = Rng(2026);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut worst_ratio = 0.0f64;
    let mut checksum_caught = 0;
    let mut payload_flips = 0;
    for i in 0..10_000 {
        let k = r.below(valid.len());
        let orig = &valid[k];
        let (bytes, kind, what) = match r.below(5) {
            0 => {
                let mut b = orig.clone();
                for _ in 0..1 + r.below(8) {
                    let at = r.below(b.len());
                    b[at] ^= 1 << r.below(8);
                }
                (b, "bit flips", String::new())
            }
            1 => {
                // One byte of the payload (tensor data) flipped: the checksum's job.
                let n = u64::from_le_bytes(orig[..8].try_into().expect("8")) as usize;
                let mut b = orig.clone();
                let at = 8 + n + r.below(orig.len() - 8 - n);
                b[at] ^= 1 + r.below(255) as u8;
                (b, "payload byte", String::new())
            }
            2 => {
                let cut = r.below(orig.len());
                (orig[..cut].to_vec(), "truncation", format!("at {cut}"))
            }
            3 => {
                let mut b = bases[k].clone();
                let what = structural(&mut b, &mut r);
                (save(&b), "structure", what)
            }
            _ => {
                let (b, what) = header_edit(orig, &mut r);
                (b, "header", what)
            }
        };
        *kinds.entry(kind).or_default() += 1;
        let before = CURRENT.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| from_bytes(&bytes, "mutant.ctm"));
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        worst_ratio = worst_ratio.max(used as f64 / bytes.len().max(1) as f64);
        assert!(
            used <= 16 * bytes.len() + (1 << 20),
            "mutant {i} ({kind} {what}): loading {} bytes allocated {used}",
            bytes.len()
        );
        match result {
            Err(_) => panic!("mutant {i} ({kind} {what}) panicked"),
            Ok(Err(GbdtError::Package { reason, .. })) => {
                if kind == "payload byte" {
                    payload_flips += 1;
                    checksum_caught += reason.contains("checksum") as usize;
                }
            }
            Ok(Err(e)) => panic!("mutant {i} ({kind} {what}): not a package error: {e:?}"),
            Ok(Ok((b, _))) => {
                // Only a flip inside the header's whitespace padding may leave the same
                // model; anything accepted must be exactly the original.
                assert!(
                    kind == "bit flips" && b == bases[k],
                    "mutant {i} ({kind} {what}) was accepted"
                );
            }
        }
    }
    assert_eq!(
        checksum_caught, payload_flips,
        "payload flips past the checksum"
    );
    assert!(kinds.values().all(|n| *n > 1500), "{kinds:?}");
    eprintln!("{kinds:?}; peak loader allocation {worst_ratio:.1}x the file size");
}
