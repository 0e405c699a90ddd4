//! Reading user data: the Arrow types a warehouse writes (decimals, 64-bit dates, half
//! floats) read as their values; targets and weights too large for the arithmetic are a
//! typed error naming the row; a metric that is not finite never makes a package that
//! cannot load.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::types::{ArrowPrimitiveType, Decimal256Type, Float16Type};
use arrow_array::{
    ArrayRef, Date64Array, Decimal128Array, Decimal256Array, Decimal32Array, Decimal64Array,
    Float16Array, Float64Array, RecordBatch,
};
use contrail_gbdt::data::{
    from_batches, is_numeric_type, numeric_values, Column, Columns, Dataset,
};
use contrail_gbdt::package::{self, from_bytes, to_bytes};
use contrail_gbdt::{train, GbdtError, Params};

fn values(a: ArrayRef) -> Vec<f64> {
    numeric_values(&a).expect("a numeric type")
}

fn same(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits(),
            "{got:?} != {want:?}"
        );
    }
}

#[test]
fn decimals_dates_and_half_floats_read_as_their_values() {
    // DECIMAL(10, 2) prices: unscaled 125 is 1.25, the f64 nearest the decimal.
    let d = Decimal128Array::from(vec![Some(125i128), Some(-5), None, Some(1999)])
        .with_precision_and_scale(10, 2)
        .expect("decimal");
    same(&values(Arc::new(d)), &[1.25, -0.05, f64::NAN, 19.99]);
    // A negative scale multiplies: 3 at scale -2 is 300.
    let d = Decimal128Array::from(vec![3i128, -7])
        .with_precision_and_scale(5, -2)
        .expect("decimal");
    same(&values(Arc::new(d)), &[300.0, -700.0]);
    let d = Decimal32Array::from(vec![Some(15i32), None])
        .with_precision_and_scale(5, 1)
        .expect("decimal");
    same(&values(Arc::new(d)), &[1.5, f64::NAN]);
    let d = Decimal64Array::from(vec![123_456_789i64])
        .with_precision_and_scale(18, 3)
        .expect("decimal");
    same(&values(Arc::new(d)), &[123_456.789]);
    type Wide = <Decimal256Type as ArrowPrimitiveType>::Native;
    let d = Decimal256Array::from(vec![Some(Wide::from_i128(-12_345)), None])
        .with_precision_and_scale(60, 4)
        .expect("decimal");
    same(&values(Arc::new(d)), &[-1.2345, f64::NAN]);
    // Dates in milliseconds are days, as Date32's are.
    let d = Date64Array::from(vec![Some(3 * 86_400_000i64), Some(-86_400_000), None]);
    same(&values(Arc::new(d)), &[3.0, -1.0, f64::NAN]);
    type Half = <Float16Type as ArrowPrimitiveType>::Native;
    let h = Float16Array::from(vec![Some(Half::from_f64(1.5)), None]);
    same(&values(Arc::new(h)), &[1.5, f64::NAN]);
}

#[test]
fn a_decimal_target_and_feature_train_like_their_f64_values() {
    let n = 400;
    let cents: Vec<i128> = (0..n).map(|i| (i * 37 % 1000) as i128 * 10 + 5).collect();
    let x: Vec<f64> = (0..n).map(|i| (i % 17) as f64).collect();
    let dec = |v: &[i128]| -> ArrayRef {
        Arc::new(
            Decimal128Array::from(v.to_vec())
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
        )
    };
    let f64s = |v: &[i128]| -> ArrayRef {
        Arc::new(Float64Array::from(
            v.iter().map(|c| *c as f64 / 100.0).collect::<Vec<_>>(),
        ))
    };
    let batch = |price: ArrayRef, fare: ArrayRef| {
        RecordBatch::try_from_iter([
            ("x", Arc::new(Float64Array::from(x.clone())) as ArrayRef),
            ("competitor", price),
            ("fare", fare),
        ])
        .expect("batch")
    };
    let cols = Columns {
        target: "fare".into(),
        ..Default::default()
    };
    let a = from_batches(&[batch(dec(&cents), dec(&cents))], &cols, "decimals").expect("read");
    let b = from_batches(&[batch(f64s(&cents), f64s(&cents))], &cols, "floats").expect("read");
    assert_eq!(a.target, b.target);
    let p = Params {
        num_iterations: 5,
        num_leaves: 4,
        min_data_in_leaf: 5,
        min_data_per_group: 5,
        ..Default::default()
    };
    let ma = train(&a, None, &p, &mut |_| {}).expect("train");
    let mb = train(&b, None, &p, &mut |_| {}).expect("train");
    assert_eq!(
        ma.predict(&a).expect("predict"),
        mb.predict(&b).expect("predict")
    );
}

fn one_column(target: Vec<f64>, weights: Option<Vec<f64>>) -> Dataset {
    Dataset {
        names: vec!["x".into()],
        columns: vec![Column::Numeric(
            (0..target.len()).map(|i| i as f64).collect(),
        )],
        target,
        weights,
    }
}

fn data_error(r: Result<impl std::fmt::Debug, GbdtError>) -> (String, String) {
    match r {
        Err(GbdtError::Data { what, reason }) => (what, reason),
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn targets_and_weights_beyond_the_magnitude_limit_are_typed_errors_naming_the_row() {
    // From a file: the column and row are named.
    let batch = RecordBatch::try_from_iter([
        (
            "x",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0])) as ArrayRef,
        ),
        (
            "y",
            Arc::new(Float64Array::from(vec![1.0, 1e200, 2.0])) as ArrayRef,
        ),
    ])
    .expect("batch");
    let cols = Columns {
        target: "y".into(),
        ..Default::default()
    };
    let (what, reason) = data_error(from_batches(&[batch], &cols, "big.parquet"));
    assert_eq!(what, "big.parquet");
    assert!(
        reason.contains("column `y`") && reason.contains("row 1") && reason.contains("1e200"),
        "{reason}"
    );

    // Built in memory (every path into training): the booster checks too.
    let p = Params {
        num_iterations: 2,
        min_data_in_leaf: 1,
        ..Default::default()
    };
    let mut y = vec![1.0; 50];
    y[7] = -1e60;
    let (what, reason) = data_error(train(&one_column(y, None), None, &p, &mut |_| {}));
    assert_eq!(what, "target");
    assert!(reason.contains("row 7"), "{reason}");
    let mut w = vec![1.0; 50];
    w[9] = 1e60;
    let (what, reason) = data_error(train(
        &one_column(vec![1.0; 50], Some(w)),
        None,
        &p,
        &mut |_| {},
    ));
    assert_eq!(what, "weights");
    assert!(reason.contains("row 9"), "{reason}");
    // At the limit it trains, and its metrics and predictions are finite.
    let y: Vec<f64> = (0..50)
        .map(|i| if i % 2 == 0 { 1e50 } else { -1e50 })
        .collect();
    let d = one_column(y, Some(vec![1e50; 50]));
    let b = train(&d, None, &p, &mut |_| {}).expect("train at the limit");
    assert!(b
        .predict(&d)
        .expect("predict")
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn a_metric_that_is_not_finite_is_left_out_and_the_package_loads() {
    let d = one_column((0..100).map(|i| (i % 7) as f64).collect(), None);
    let p = Params {
        num_iterations: 3,
        min_data_in_leaf: 5,
        ..Default::default()
    };
    let b = train(&d, None, &p, &mut |_| {}).expect("train");
    let metrics = BTreeMap::from([
        ("valid-r2".to_string(), f64::NAN),
        ("valid-poisson".to_string(), f64::INFINITY),
        ("valid-rmse".to_string(), 0.25),
    ]);
    let m = package::manifest(&b, metrics, package::fingerprint(&d), BTreeMap::new());
    let bytes = to_bytes(&b, &m).expect("save");
    let (_, loaded) = from_bytes(&bytes, "model.ctm").expect("the package loads");
    assert_eq!(
        loaded.metrics,
        BTreeMap::from([("valid-rmse".to_string(), 0.25)])
    );
}

#[test]
fn a_file_of_the_target_alone_is_an_error_naming_its_columns() {
    let batch = RecordBatch::try_from_iter([(
        "fare",
        Arc::new(Float64Array::from(vec![1.0, 2.0])) as ArrayRef,
    )])
    .expect("batch");
    let cols = Columns {
        target: "fare".into(),
        ..Default::default()
    };
    let (what, reason) = data_error(from_batches(&[batch], &cols, "only.parquet"));
    assert_eq!(what, "only.parquet");
    assert!(
        reason.contains("no feature columns") && reason.contains("fare"),
        "{reason}"
    );
}

#[test]
fn the_type_check_before_reading_agrees_with_the_reader() {
    use arrow_schema::{DataType, TimeUnit};
    let types = [
        DataType::Float64,
        DataType::Float32,
        DataType::Float16,
        DataType::Int8,
        DataType::Int64,
        DataType::UInt8,
        DataType::UInt64,
        DataType::Boolean,
        DataType::Date32,
        DataType::Date64,
        DataType::Decimal32(5, 1),
        DataType::Decimal64(12, 2),
        DataType::Decimal128(10, 2),
        DataType::Decimal256(60, 4),
        DataType::Utf8,
        DataType::Binary,
        DataType::Null,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        DataType::Time64(TimeUnit::Nanosecond),
        DataType::Duration(TimeUnit::Second),
        DataType::List(Arc::new(arrow_schema::Field::new(
            "e",
            DataType::Int64,
            true,
        ))),
    ];
    for dt in types {
        let a = arrow_array::new_empty_array(&dt);
        assert_eq!(numeric_values(&a).is_some(), is_numeric_type(&dt), "{dt:?}");
    }
}
