//! Training data: feature columns (numeric or categorical), a target and optional
//! sample weights, taken from Arrow batches by column name.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;

use crate::GbdtError;

/// One feature column.
#[derive(Debug, Clone)]
pub enum Column {
    /// Values as f64; NaN is missing.
    Numeric(Vec<f64>),
    /// Categories as codes into `dict`; [`MISSING`] is missing.
    Categorical { codes: Vec<u32>, dict: Vec<String> },
}

/// The code of a missing category.
pub const MISSING: u32 = u32::MAX;

/// Builds a categorical column, interning each category once.
#[derive(Debug, Default)]
pub struct CatBuilder {
    codes: Vec<u32>,
    dict: Vec<String>,
    index: HashMap<String, u32>,
}

impl CatBuilder {
    #[inline]
    pub fn push(&mut self, v: Option<&str>) {
        let code = match v {
            None => MISSING,
            Some(s) => match self.index.get(s) {
                Some(c) => *c,
                None => {
                    let c = self.dict.len() as u32;
                    self.dict.push(s.to_string());
                    self.index.insert(s.to_string(), c);
                    c
                }
            },
        };
        self.codes.push(code);
    }
    /// Appends a string or dictionary array; false if the array is neither.
    pub fn extend_arrow(&mut self, a: &ArrayRef) -> bool {
        match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>().iter().for_each(|v| self.push(v)),
            DataType::LargeUtf8 => a.as_string::<i64>().iter().for_each(|v| self.push(v)),
            DataType::Utf8View => a.as_string_view().iter().for_each(|v| self.push(v)),
            DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8 => {
                let d = arrow_array::cast::as_dictionary_array::<Int32Type>(a);
                let values = d.values().as_string::<i32>();
                let local: Vec<u32> = (0..values.len())
                    .map(|i| {
                        self.push(Some(values.value(i)));
                        self.codes.pop().unwrap_or(MISSING)
                    })
                    .collect();
                for k in d.keys().iter() {
                    self.codes.push(
                        k.and_then(|k| local.get(k as usize).copied())
                            .unwrap_or(MISSING),
                    );
                }
            }
            _ => return false,
        }
        true
    }
    pub fn finish(self) -> Column {
        Column::Categorical {
            codes: self.codes,
            dict: self.dict,
        }
    }
}

/// True for the Arrow types read as categories.
pub fn is_string_type(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(k, v) => **k == DataType::Int32 && **v == DataType::Utf8,
        _ => false,
    }
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Categorical { codes, .. } => codes.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A categorical column from optional strings.
    pub fn categorical<S: AsRef<str>>(values: &[Option<S>]) -> Column {
        let mut b = CatBuilder::default();
        for v in values {
            b.push(v.as_ref().map(|s| s.as_ref()));
        }
        b.finish()
    }
    /// The category of a row of a categorical column.
    pub fn category(&self, row: usize) -> Option<&str> {
        match self {
            Column::Categorical { codes, dict } => {
                dict.get(*codes.get(row)? as usize).map(String::as_str)
            }
            Column::Numeric(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    Numeric,
    Categorical,
}

/// Feature columns plus target and weights, all of one length.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub names: Vec<String>,
    pub columns: Vec<Column>,
    pub target: Vec<f64>,
    pub weights: Option<Vec<f64>>,
}

impl Dataset {
    /// Rows: the length of the columns (of the target when there are no columns; a
    /// dataset for prediction or anomaly scores has no target).
    pub fn n_rows(&self) -> usize {
        self.columns.first().map_or(self.target.len(), Column::len)
    }
    pub fn n_features(&self) -> usize {
        self.columns.len()
    }
    /// The rows `rows` of this dataset, in that order (features, and target and weights
    /// where it has them).
    pub fn gather(&self, rows: &[usize]) -> Dataset {
        let pick = |v: &[f64]| rows.iter().map(|&r| v[r]).collect::<Vec<f64>>();
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Numeric(v) => Column::Numeric(pick(v)),
                Column::Categorical { codes, dict } => Column::Categorical {
                    codes: rows
                        .iter()
                        .map(|&r| codes.get(r).copied().unwrap_or(MISSING))
                        .collect(),
                    dict: dict.clone(),
                },
            })
            .collect();
        Dataset {
            names: self.names.clone(),
            columns,
            target: if self.target.is_empty() {
                Vec::new()
            } else {
                pick(&self.target)
            },
            weights: self.weights.as_deref().map(pick),
        }
    }
    pub fn kinds(&self) -> Vec<FeatureKind> {
        self.columns
            .iter()
            .map(|c| match c {
                Column::Numeric(_) => FeatureKind::Numeric,
                Column::Categorical { .. } => FeatureKind::Categorical,
            })
            .collect()
    }
}

/// The Arrow types [`numeric_values`] reads (a check before any data is read, as the
/// scoring job makes).
pub fn is_numeric_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Float64
            | DataType::Float32
            | DataType::Float16
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Decimal32(..)
            | DataType::Decimal64(..)
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Boolean
    )
}

/// Reads one Arrow column as f64 (NaN for nulls), if it is numeric or boolean. Decimals
/// (prices kept as `DECIMAL(p, s)` by a warehouse) become their value, `unscaled / 10^s`:
/// exact to the nearest f64 for unscaled values below 2^53. Dates are days since the Unix
/// epoch whether stored as days (`Date32`) or milliseconds (`Date64`).
pub fn numeric_values(a: &ArrayRef) -> Option<Vec<f64>> {
    macro_rules! conv {
        ($t:ty, $f:expr) => {{
            let p = a.as_primitive::<$t>();
            Some(each_or_nan(p, |i| $f(p.value(i))))
        }};
    }
    macro_rules! prim {
        ($t:ty) => {
            conv!($t, |v| v as f64)
        };
    }
    // Multiplying by an exact power of ten for s <= 0, dividing by one for s > 0 (one
    // rounding, so 125 with scale 2 is the f64 nearest 1.25).
    let decimal = |scale: i8| {
        let p = 10f64.powi(i32::from(scale.unsigned_abs()));
        move |v: f64| if scale > 0 { v / p } else { v * p }
    };
    match a.data_type() {
        DataType::Float64 => prim!(Float64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::Float16 => conv!(arrow_array::types::Float16Type, f64::from),
        DataType::Date32 => prim!(arrow_array::types::Date32Type),
        DataType::Date64 => conv!(arrow_array::types::Date64Type, |v: i64| v as f64
            / 86_400_000.0),
        DataType::Decimal32(_, s) => {
            let f = decimal(*s);
            conv!(arrow_array::types::Decimal32Type, |v: i32| f(f64::from(v)))
        }
        DataType::Decimal64(_, s) => {
            let f = decimal(*s);
            conv!(arrow_array::types::Decimal64Type, |v: i64| f(v as f64))
        }
        DataType::Decimal128(_, s) => {
            let f = decimal(*s);
            conv!(arrow_array::types::Decimal128Type, |v: i128| f(v as f64))
        }
        DataType::Decimal256(..) => {
            // Rare (precision above 38): read through the decimal's text, correctly rounded.
            let p = a.as_primitive::<arrow_array::types::Decimal256Type>();
            Some(each_or_nan(p, |i| {
                p.value_as_string(i).parse().unwrap_or(f64::NAN)
            }))
        }
        DataType::Boolean => {
            let b = a.as_boolean();
            Some(each_or_nan(b, |i| if b.value(i) { 1.0 } else { 0.0 }))
        }
        _ => None,
    }
}

/// `value(i)` for each row of `a`, NaN where it is null.
fn each_or_nan(a: &dyn Array, value: impl Fn(usize) -> f64) -> Vec<f64> {
    (0..a.len())
        .map(|i| if a.is_null(i) { f64::NAN } else { value(i) })
        .collect()
}

/// Whether `w` cannot be a sample weight: not finite, negative or beyond
/// [`MAX_MAGNITUDE`].
pub fn bad_weight(w: f64) -> bool {
    !(0.0..=MAX_MAGNITUDE).contains(&w)
}

/// The largest magnitude of a target or weight. A split's gain squares a sum of
/// weighted gradients: with targets and weights up to 1e50 and a billion rows that stays
/// near 1e218, far from f64's 1.8e308; a target of 1e200 would overflow the training
/// metrics and make a package that cannot load.
pub const MAX_MAGNITUDE: f64 = 1e50;

/// How to take a dataset from batches.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    pub target: String,
    /// Features to use; `None` means every column but the target and weight.
    pub features: Option<Vec<String>>,
    /// Columns to treat as categorical even if numeric.
    pub categorical: Vec<String>,
    pub weight: Option<String>,
}

/// Builds a dataset from batches of one schema. String columns are categorical; numeric
/// and boolean columns numeric unless listed in `categorical`. A target that is missing
/// or not finite is a typed error naming the row.
pub fn from_batches(
    batches: &[RecordBatch],
    cols: &Columns,
    source: &str,
) -> Result<Dataset, GbdtError> {
    let Some(first) = batches.first() else {
        return Err(GbdtError::Data {
            what: source.into(),
            reason: "no rows".into(),
        });
    };
    let schema = first.schema();
    let names: Vec<String> = match &cols.features {
        Some(f) => f.clone(),
        None => schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| *n != cols.target && Some(n) != cols.weight.as_ref())
            .collect(),
    };
    if names.is_empty() {
        // A model of no features predicts one number: a file of the target alone, or an
        // empty `--features`, is a mistake to name rather than a constant to fit.
        return Err(GbdtError::Data {
            what: source.into(),
            reason: format!(
                "no feature columns (the columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let col_err = |name: &str, reason: &str| GbdtError::Data {
        what: source.into(),
        reason: format!("column `{name}`: {reason}"),
    };
    let mut columns: Vec<Column> = Vec::with_capacity(names.len());
    for name in &names {
        let idx = schema
            .index_of(name)
            .map_err(|_| col_err(name, "not in the data"))?;
        let dt = schema.field(idx).data_type().clone();
        let as_cat = cols.categorical.contains(name);
        let col = if is_string_type(&dt) || as_cat {
            let mut cb = CatBuilder::default();
            for b in batches {
                let a = b.column(idx);
                if !cb.extend_arrow(a) {
                    let v = numeric_values(a).ok_or_else(|| {
                        col_err(name, &format!("type {dt} cannot be categorical"))
                    })?;
                    for x in v {
                        cb.push((!x.is_nan()).then(|| format!("{x}")).as_deref());
                    }
                }
            }
            cb.finish()
        } else {
            let mut v = Vec::new();
            for b in batches {
                v.extend(numeric_values(b.column(idx)).ok_or_else(|| {
                    col_err(name, &format!("type {dt} is neither numeric nor string"))
                })?);
            }
            Column::Numeric(v)
        };
        columns.push(col);
    }
    let read_f64 = |name: &str| -> Result<Vec<f64>, GbdtError> {
        let idx = schema
            .index_of(name)
            .map_err(|_| col_err(name, "not in the data"))?;
        let mut v = Vec::new();
        for b in batches {
            v.extend(
                numeric_values(b.column(idx)).ok_or_else(|| col_err(name, "must be numeric"))?,
            );
        }
        Ok(v)
    };
    let target = if cols.target.is_empty() {
        Vec::new()
    } else {
        read_f64(&cols.target)?
    };
    if let Some(i) = target.iter().position(|t| !t.is_finite()) {
        return Err(col_err(
            &cols.target,
            &format!("row {i} is missing or not finite"),
        ));
    }
    if let Some(i) = target.iter().position(|t| t.abs() > MAX_MAGNITUDE) {
        return Err(col_err(
            &cols.target,
            &format!(
                "row {i}: {:e} is beyond ±{MAX_MAGNITUDE:e}, where sums of squared errors \
                 overflow; rescale the target",
                target[i]
            ),
        ));
    }
    let weights = match &cols.weight {
        Some(w) => {
            let v = read_f64(w)?;
            if let Some(i) = v.iter().position(|x| bad_weight(*x)) {
                return Err(col_err(
                    w,
                    &format!("row {i}: weights must be finite, >= 0 and at most {MAX_MAGNITUDE:e}"),
                ));
            }
            Some(v)
        }
        None => None,
    };
    Ok(Dataset {
        names,
        columns,
        target,
        weights,
    })
}

/// The feature columns of one batch, without a target (for prediction).
pub fn features_only(
    batch: &RecordBatch,
    cols: &Columns,
    source: &str,
) -> Result<Dataset, GbdtError> {
    let c = Columns {
        target: String::new(),
        weight: None,
        ..cols.clone()
    };
    from_batches(std::slice::from_ref(batch), &c, source)
}
