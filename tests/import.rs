//! The importers against the libraries themselves: each fixture in tests/fixtures/import
//! (written by scripts/make_import_fixtures.py with LightGBM 4.6 and XGBoost 3.2) holds a
//! model and rows with the library's own predictions, edge values included (NaN, exact
//! zeros and values inside LightGBM's zero band, infinities, negative and unseen category
//! codes, values between thresholds). Contrail's predictions of the imported model must
//! equal them to within 1e-6 relative; the export round trip must keep every prediction.

use std::path::PathBuf;

use contrail::gbdt::data::{from_batches, numeric_values, Columns};
use contrail::gbdt::import;
use contrail::gbdt::package;
use contrail::gbdt::{Booster, Precision};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name)
}

struct Scored {
    /// Contrail's raw (link-scale) scores and predictions.
    raw: Vec<f64>,
    pred: Vec<f64>,
    /// The library's.
    want_raw: Vec<f64>,
    want: Vec<f64>,
    /// Rows whose category code is one the model has seen (or missing).
    known_category: Vec<bool>,
}

/// The model's scores for the fixture rows, and the library's.
fn predict(b: &Booster, rows: &str) -> Scored {
    let f = std::fs::File::open(fixture(rows)).expect("test data");
    let batches: Vec<_> = ParquetRecordBatchReaderBuilder::try_new(f)
        .expect("test data")
        .build()
        .expect("test data")
        .collect::<Result<_, _>>()
        .expect("test data");
    let cols = Columns {
        target: "expected".into(),
        features: Some(b.feature_names.clone()),
        categorical: b
            .feature_names
            .iter()
            .zip(&b.mappers)
            .filter(|(_, m)| m.is_categorical())
            .map(|(n, _)| n.clone())
            .collect(),
        weight: None,
    };
    let d = from_batches(&batches, &cols, rows).expect("test data");
    let margin = Columns {
        target: "expected_margin".into(),
        ..cols.clone()
    };
    let want_raw = from_batches(&batches, &margin, rows)
        .expect("test data")
        .target;
    let mut known_category = Vec::new();
    for batch in &batches {
        let c =
            numeric_values(batch.column_by_name("cabin").expect("test data")).expect("test data");
        known_category.extend(c.iter().map(|v| v.is_nan() || (*v >= 0.0 && *v < 6.0)));
    }
    let x = b.prepare(&d).expect("test data");
    let fast = b.predict_raw(&x, None);
    let reference = b.predict_raw_reference(&x, None);
    for (a, r) in fast.iter().zip(&reference) {
        assert_eq!(a.to_bits(), r.to_bits(), "compiled predictor differs");
    }
    let pred = fast.iter().map(|s| b.response(*s)).collect();
    Scored {
        raw: fast,
        pred,
        want_raw,
        want: d.target,
        known_category,
    }
}

/// The largest relative difference (to |want|, at least `floor`) and its row.
fn worst(got: &[f64], want: &[f64], floor: f64) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    let mut w = (0.0f64, 0usize);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let rel = (a - b).abs() / b.abs().max(floor);
        if rel > w.0 || rel.is_nan() {
            w = (rel, i);
        }
    }
    w
}

/// Raw scores within `tol_raw` and predictions within `tol` (relative).
fn check(name: &str, b: &Booster, rows: &str, tol_raw: f64, tol: f64) {
    let s = predict(b, rows);
    assert!(s.pred.len() > 2000);
    let (r, i) = worst(&s.raw, &s.want_raw, 1.0);
    let (p, j) = worst(&s.pred, &s.want, 1e-3);
    eprintln!(
        "{name}: {} rows, worst relative difference {r:.2e} in raw scores, {p:.2e} in predictions",
        s.pred.len()
    );
    assert!(
        r <= tol_raw,
        "{name}: row {i}: raw score {} vs the library's {} (relative {r:.2e})",
        s.raw[i],
        s.want_raw[i]
    );
    assert!(
        p <= tol,
        "{name}: row {j}: prediction {} vs the library's {} (relative {p:.2e})",
        s.pred[j],
        s.want[j]
    );
}

/// The package round trip keeps the model as it is.
fn through_package(b: &Booster) -> Booster {
    let m = package::manifest(
        b,
        Default::default(),
        Default::default(),
        Default::default(),
    );
    let bytes = package::to_bytes(b, &m).expect("test data");
    let (back, _) = package::from_bytes(&bytes, "imported.contrail").expect("test data");
    assert_eq!(&back, b);
    back
}

#[test]
fn lightgbm_models_predict_as_lightgbm_does() {
    for name in [
        "lgb_regression",
        "lgb_zero_as_missing",
        "lgb_no_missing",
        "lgb_binary",
        "lgb_poisson",
    ] {
        let text = std::fs::read_to_string(fixture(&format!("{name}.txt"))).expect("test data");
        let imp = import::from_lightgbm_text(&text, name).expect("test data");
        let b = through_package(&imp.booster);
        // LightGBM sums in f64 in tree order, as Contrail does: the same bits, in effect.
        check(name, &b, &format!("{name}.parquet"), 1e-12, 1e-12);
    }
}

#[test]
fn xgboost_models_predict_as_xgboost_does() {
    for (name, file) in [
        ("xgb_regression", "xgb_regression.json"),
        ("xgb_regression", "xgb_regression.ubj"),
        ("xgb_binary", "xgb_binary.json"),
        ("xgb_poisson", "xgb_poisson.json"),
    ] {
        let bytes = std::fs::read(fixture(file)).expect("test data");
        let imp = import::from_xgboost(&bytes, file).expect("test data");
        let b = through_package(&imp.booster);
        // An imported XGBoost model sums in f32 as XGBoost does (precision "f32"): its
        // margins and predictions are XGBoost's within 1e-6 relative (in fact the same
        // bits: see `xgboost_arithmetic_gives_xgboost_bits`).
        assert_eq!(b.precision, Precision::F32);
        check(file, &b, &format!("{name}.parquet"), 1e-6, 1e-6);
    }
    // JSON and UBJSON give the same model.
    let j = import::from_xgboost(
        &std::fs::read(fixture("xgb_regression.json")).expect("test data"),
        "j",
    )
    .expect("test data");
    let u = import::from_xgboost(
        &std::fs::read(fixture("xgb_regression.ubj")).expect("test data"),
        "u",
    )
    .expect("test data");
    assert_eq!(j.booster, u.booster);
}

/// XGBoost's own arithmetic: leaf values summed in f32 from the f32 base margin, the
/// sigmoid and exponential in f32. Every margin and every prediction of the fixtures is
/// XGBoost's to the bit (not merely within 1e-6).
#[test]
fn xgboost_arithmetic_gives_xgboost_bits() {
    for (name, file) in [
        ("xgb_regression", "xgb_regression.ubj"),
        ("xgb_binary", "xgb_binary.json"),
        ("xgb_poisson", "xgb_poisson.json"),
    ] {
        let bytes = std::fs::read(fixture(file)).expect("test data");
        let b = through_package(
            &import::from_xgboost(&bytes, file)
                .expect("test data")
                .booster,
        );
        let s = predict(&b, &format!("{name}.parquet"));
        let differ = |got: &[f64], want: &[f64]| {
            got.iter()
                .zip(want)
                .filter(|(a, w)| a.to_bits() != w.to_bits())
                .count()
        };
        assert_eq!(differ(&s.raw, &s.want_raw), 0, "{file}: margins");
        assert_eq!(differ(&s.pred, &s.want), 0, "{file}: predictions");
        // Summed in f64 instead, they are not all the same bits.
        let mut f64_model = b.clone();
        f64_model.precision = Precision::F64;
        let s64 = predict(&f64_model, &format!("{name}.parquet"));
        assert!(differ(&s64.raw, &s64.want_raw) > 0, "{file}");
    }
}

#[test]
fn exported_models_import_back_with_the_same_predictions() {
    for (name, file) in [
        ("lgb_regression", "lgb_regression.txt"),
        ("lgb_binary", "lgb_binary.txt"),
        ("lgb_poisson", "lgb_poisson.txt"),
        ("xgb_regression", "xgb_regression.json"),
    ] {
        let bytes = std::fs::read(fixture(file)).expect("test data");
        let b = if file.ends_with(".txt") {
            import::from_lightgbm_text(std::str::from_utf8(&bytes).expect("test data"), file)
        } else {
            import::from_xgboost(&bytes, file)
        }
        .expect("test data")
        .booster;
        let json = import::to_xgboost_json(&b).expect("test data");
        assert!(
            !json.contains("null"),
            "{file}: JSON has no NaN or infinities"
        );
        // XGBoost's predictor takes a node's right child to be its left child + 1.
        let doc: serde_json::Value = serde_json::from_str(&json).expect("test data");
        for t in doc["learner"]["gradient_booster"]["model"]["trees"]
            .as_array()
            .expect("test data")
        {
            let l = t["left_children"].as_array().expect("test data");
            let r = t["right_children"].as_array().expect("test data");
            for (a, c) in l.iter().zip(r) {
                let (a, c) = (
                    a.as_i64().expect("test data"),
                    c.as_i64().expect("test data"),
                );
                assert!(
                    a == -1 && c == -1 || c == a + 1,
                    "{file}: children {a}, {c}"
                );
            }
        }
        let back = import::from_xgboost(json.as_bytes(), "exported.json")
            .expect("test data")
            .booster;
        let s0 = predict(&b, &format!("{name}.parquet"));
        let s1 = predict(&back, &format!("{name}.parquet"));
        // Leaf values and the base score are f32 in XGBoost's format; unseen category
        // codes go left in an exported model (XGBoost's rule), so those rows are apart.
        let mut compared = 0;
        for (i, known) in s0.known_category.iter().enumerate() {
            if !known {
                continue;
            }
            compared += 1;
            let (a, c) = (s0.raw[i], s1.raw[i]);
            assert!(
                (a - c).abs() <= 1e-5 * a.abs().max(1.0),
                "{file}: row {i}: {a} before export, {c} after"
            );
        }
        assert!(compared > 2300, "{file}: {compared} rows compared");
    }
}

#[test]
fn malformed_xgboost_models_are_errors() {
    let good = std::fs::read_to_string(fixture("xgb_binary.json")).expect("test data");
    for (from, to, what) in [
        ("\"num_class\":\"0\"", "\"num_class\":\"3\"", "multiclass"),
        ("\"binary:logistic\"", "\"rank:ndcg\"", "rank:ndcg"),
        (
            "\"left_children\":[1,",
            "\"left_children\":[0,",
            "reached twice",
        ),
        (
            "\"left_children\":[1,",
            "\"left_children\":[99999,",
            "out of range",
        ),
        (
            "\"split_indices\":[1,",
            "\"split_indices\":[77,",
            "feature 77",
        ),
        (
            "\"base_score\":\"[5E-1]\"",
            "\"base_score\":\"[2E0]\"",
            "base_score",
        ),
        ("\"name\":\"gbtree\"", "\"name\":\"gblinear\"", "gblinear"),
    ] {
        assert!(good.contains(from), "fixture lacks {from}");
        let bad = good.replacen(from, to, 1);
        let e = import::from_xgboost(bad.as_bytes(), "bad.json").expect_err("must fail");
        let msg = format!("{e}");
        assert!(
            msg.contains("bad.json") && msg.contains(what),
            "{to}: {msg}"
        );
    }
    // Truncated JSON and UBJSON.
    assert!(import::from_xgboost(&good.as_bytes()[..good.len() / 2], "t.json").is_err());
    let ubj = std::fs::read(fixture("xgb_regression.ubj")).expect("test data");
    for cut in [1, 10, 100, ubj.len() / 3, ubj.len() - 1] {
        assert!(import::from_xgboost(&ubj[..cut], "t.ubj").is_err());
    }
}
