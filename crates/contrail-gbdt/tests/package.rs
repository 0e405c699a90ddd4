//! Package round trips and a corpus of corrupted packages, each rejected with a typed
//! error (never a panic).

use std::collections::BTreeMap;

use contrail_gbdt::data::{Column, Dataset};
use contrail_gbdt::package::{self, from_bytes, to_bytes};
use contrail_gbdt::{train, Booster, GbdtError, Params, Precision};

fn data(n: usize, seed: u64) -> Dataset {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let cats = ["economy", "business", "first", "premium_economy"];
    let (mut a, mut b, mut c, mut y) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let x = next() * 10.0;
        let z = if next() < 0.1 { f64::NAN } else { next() };
        let k = (next() * 4.0) as usize;
        a.push(x);
        b.push(z);
        c.push(Some(cats[k].to_string()));
        y.push(x.sqrt() + [0.0, 3.0, 6.0, 1.5][k] + if z.is_nan() { 1.0 } else { z });
    }
    Dataset {
        names: vec!["x".into(), "z".into(), "cabin".into()],
        columns: vec![
            Column::Numeric(a),
            Column::Numeric(b),
            Column::categorical(&c),
        ],
        target: y,
        weights: None,
    }
}

fn model() -> (Booster, Vec<u8>, Dataset) {
    let d = data(3000, 1);
    let p = Params {
        num_iterations: 20,
        num_leaves: 8,
        min_data_in_leaf: 10,
        min_data_per_group: 10,
        ..Default::default()
    };
    let b = train(&d, None, &p, &mut |_| {}).expect("train");
    let m = package::manifest(
        &b,
        BTreeMap::from([("train-rmse".to_string(), 0.5)]),
        package::fingerprint(&d),
        BTreeMap::new(),
    );
    let bytes = to_bytes(&b, &m).expect("save");
    (b, bytes, d)
}

/// The fingerprint is the CRC-32 of the target's and then each column's bytes in order
/// (numbers little-endian, a category's name), however it is fed.
#[test]
fn the_fingerprint_is_the_crc_of_the_data_bytes() {
    let d = data(20_000, 3);
    let mut bytes = Vec::new();
    d.target.iter().for_each(|t| bytes.extend(t.to_le_bytes()));
    for c in &d.columns {
        match c {
            Column::Numeric(v) => v.iter().for_each(|x| bytes.extend(x.to_le_bytes())),
            Column::Categorical { codes, dict } => codes
                .iter()
                .for_each(|x| bytes.extend(dict[*x as usize].as_bytes())),
        }
    }
    assert!(bytes.len() > 4 << 16, "several blocks");
    let mut crc = libdeflater::Crc::new();
    crc.update(&bytes);
    let f = package::fingerprint(&d);
    assert_eq!((f.rows, &f.crc32), (20_000, &format!("{:08x}", crc.sum())));

    // Fed block by block (a file's row groups, of uneven sizes): the same fingerprint.
    let rows = |a: usize, b: usize| d.gather(&(a..b).collect::<Vec<_>>());
    let mut fb = package::FingerprintBuilder::default();
    for (a, b) in [(0, 1), (1, 7_000), (7_000, 7_000), (7_000, 20_000)] {
        fb.push(&rows(a, b));
    }
    let g = fb.finish();
    assert_eq!((g.rows, g.crc32), (f.rows, f.crc32));
}

#[test]
fn save_load_save_is_identical() {
    let (b, bytes, d) = model();
    assert!(
        b.trees.iter().any(|t| !t.cat_bitsets.is_empty()),
        "the model should use the categorical feature"
    );
    let (loaded, m) = from_bytes(&bytes, "m.ctm").expect("load");
    assert_eq!(loaded.trees, b.trees);
    let again = to_bytes(&loaded, &m).expect("save again");
    assert_eq!(again, bytes);
    let p1 = b.predict(&d).expect("predict");
    let p2 = loaded.predict(&d).expect("predict");
    assert_eq!(
        p1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        p2.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    // The file is a valid safetensors layout: 8-byte length, JSON header, data.
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("json header");
    assert!(header["__metadata__"]["manifest"].is_string());
    assert_eq!(header["leaf_value"]["dtype"], "F64");
}

fn rejected(bytes: &[u8], what: &str) {
    match std::panic::catch_unwind(|| from_bytes(bytes, "bad.ctm")) {
        Ok(Err(GbdtError::Package { .. })) => {}
        Ok(Err(e)) => panic!("{what}: wrong error kind {e:?}"),
        Ok(Ok(_)) => panic!("{what}: accepted"),
        Err(_) => panic!("{what}: panicked"),
    }
}

#[test]
fn every_single_byte_flip_is_caught() {
    let (_, bytes, _) = model();
    // Every byte of the file, one flip each (header and data alike).
    let step = (bytes.len() / 10_000).max(1);
    let mut n = 0;
    for i in (0..bytes.len()).step_by(step) {
        for mask in [0x01u8, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            if let Ok(_) = from_bytes(&b, "flip") {
                // A flip inside JSON whitespace padding leaves the same document.
                let n_header = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
                let pad =
                    i >= 8 && i < 8 + n_header && bytes[i] == b' ' && b[i].is_ascii_whitespace();
                assert!(pad, "flip at byte {i} (mask {mask:#x}) was accepted");
            }
            n += 1;
        }
    }
    assert!(n >= 2 * (bytes.len() / step).min(10_000));
}

#[test]
fn truncations_are_rejected() {
    let (_, bytes, _) = model();
    for cut in (0..bytes.len()).step_by(((bytes.len()) / 3000).max(1)) {
        rejected(&bytes[..cut], &format!("truncated at {cut}"));
    }
}

fn resave(b: &Booster) -> Vec<u8> {
    let m = package::manifest(b, BTreeMap::new(), Default::default(), BTreeMap::new());
    to_bytes(b, &m).expect("save")
}

#[test]
fn hostile_structures_are_rejected() {
    let (b, _, _) = model();
    let t0 = b
        .trees
        .iter()
        .position(|t| t.n_nodes() >= 3)
        .expect("a tree with 3 nodes");
    let mutations: Vec<(&str, Box<dyn Fn(&mut Booster)>)> = vec![
        (
            "child out of range",
            Box::new(move |b| b.trees[t0].left[0] = 1000),
        ),
        (
            "leaf out of range",
            Box::new(move |b| b.trees[t0].left[0] = !1000),
        ),
        ("self loop", Box::new(move |b| b.trees[t0].left[1] = 1)),
        (
            "cycle to the root",
            Box::new(move |b| b.trees[t0].right[2] = 0),
        ),
        (
            "shared child",
            Box::new(move |b| {
                let l = b.trees[t0].left[0];
                b.trees[t0].right[0] = l;
            }),
        ),
        (
            "feature id too large",
            Box::new(move |b| b.trees[t0].feature[0] = 99),
        ),
        (
            "NaN threshold",
            Box::new(move |b| {
                let n = b.trees[t0]
                    .cat_index
                    .iter()
                    .position(|c| *c < 0)
                    .unwrap_or(0);
                b.trees[t0].threshold[n] = f64::NAN;
            }),
        ),
        (
            "NaN leaf",
            Box::new(move |b| b.trees[t0].leaf_value[0] = f64::NAN),
        ),
        (
            "missing leaf",
            Box::new(move |b| {
                b.trees[t0].leaf_value.pop();
                b.trees[t0].leaf_hess.pop();
                b.trees[t0].leaf_count.pop();
            }),
        ),
        (
            "infinite init score",
            Box::new(|b| b.init_score = f64::INFINITY),
        ),
        (
            "f32 arithmetic with an f64 leaf value",
            Box::new(|b| {
                b.precision = Precision::F32;
                b.init_score = b.init_score as f32 as f64;
                for t in &mut b.trees {
                    for v in &mut t.leaf_value {
                        *v = *v as f32 as f64;
                    }
                }
                b.trees[0].leaf_value[0] = 0.1;
            }),
        ),
        (
            "f32 arithmetic with an f64 init score",
            Box::new(|b| {
                b.precision = Precision::F32;
                b.init_score = 0.1;
                b.trees.clear();
            }),
        ),
    ];
    for (what, f) in mutations {
        let mut bad = b.clone();
        f(&mut bad);
        rejected(&resave(&bad), what);
    }
}

#[test]
fn declared_sizes_beyond_the_file_are_rejected() {
    let (_, bytes, _) = model();
    // Header length of 2^31 and of u64::MAX.
    for n in [1u64 << 31, u64::MAX, (bytes.len() as u64) * 2] {
        let mut b = bytes.clone();
        b[..8].copy_from_slice(&n.to_le_bytes());
        rejected(&b, "huge header length");
    }
    // A tensor whose shape declares 2^31 entries.
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).expect("utf8");
    let mut v: serde_json::Value = serde_json::from_str(header).expect("json");
    v["leaf_value"]["shape"] = serde_json::json!([1u64 << 31]);
    let mut h = serde_json::to_vec(&v).expect("json");
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&h);
    b.extend_from_slice(&bytes[8 + n..]);
    rejected(&b, "shape of 2^31");
    rejected(b"", "empty file");
    rejected(b"\x08\0\0\0\0\0\0\0{}      ", "empty header");
}
