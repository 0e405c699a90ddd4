//! Model jobs: train on any Parquet file or on the curated lake, predict, inspect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::etl::etl::curated_files;
use crate::features::{price_free_features, FeatureBuilder};
use crate::gbdt::data::{from_batches, is_string_type, Columns, Dataset};
use crate::gbdt::iforest::{self, Forest, ForestManifest, ForestParams};
use crate::gbdt::package;
use crate::gbdt::{metric, Booster, GbdtError, IterationLog, Params};
use crate::store::parquet_io::{self, ScanOptions};
use crate::store::partition::{HourRange, Partition};
use crate::store::{resolve_parquet, split_url, Lake, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Gbdt(#[from] GbdtError),
    #[error(transparent)]
    Nn(#[from] crate::nn::NnError),
    #[error(transparent)]
    Etl(#[from] crate::etl::EtlError),
    #[error("computing features")]
    Features(#[from] crate::features::FeatureError),
    #[error("{0}")]
    Invalid(String),
    #[error("writing {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ModelError {
    pub fn is_user_error(&self) -> bool {
        match self {
            ModelError::Store(e) => e.is_user_error(),
            ModelError::Etl(e) => e.is_user_error(),
            ModelError::Gbdt(e) => e.is_user_error(),
            ModelError::Nn(e) => e.is_user_error(),
            ModelError::Invalid(_) | ModelError::Features(_) => true,
            ModelError::Write { .. } => true,
        }
    }
}

/// Reads every batch of the Parquet file(s) at `url`.
pub async fn read_parquet(url: &str) -> Result<Vec<RecordBatch>, ModelError> {
    let (lake, files) = resolve_parquet(url).await?;
    scan_all(&lake, files).await
}

/// Every batch of `files` in `lake`, in order.
async fn scan_all(lake: &Lake, files: Vec<String>) -> Result<Vec<RecordBatch>, ModelError> {
    let mut out = Vec::new();
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, ScanOptions::default()));
    while let Some(b) = s.next().await {
        out.push(b?);
    }
    Ok(out)
}

/// Reads Parquet for prediction: its batches, or one empty batch with the first file's
/// schema when it has no rows (the output is then an empty file with the prediction
/// columns, as the scoring job writes an empty part).
async fn read_parquet_for_predict(url: &str) -> Result<Vec<RecordBatch>, ModelError> {
    let (lake, files) = resolve_parquet(url).await?;
    let mut batches = scan_all(&lake, files.clone()).await?;
    if let (true, Some(first)) = (batches.is_empty(), files.first()) {
        let schema = parquet_io::open_stream(&lake, first, &ScanOptions::default())
            .await?
            .schema()
            .clone();
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

pub async fn write_bytes(url: &str, bytes: Vec<u8>) -> Result<(), ModelError> {
    let (base, name) = split_url(url);
    Lake::open(&base)?.put(&name, Bytes::from(bytes)).await?;
    Ok(())
}

pub async fn read_bytes(url: &str) -> Result<Bytes, ModelError> {
    let (base, name) = split_url(url);
    Ok(Lake::open(&base)?.get(&name).await?)
}

pub async fn load_model(url: &str) -> Result<(Booster, package::Manifest), ModelError> {
    let bytes = read_bytes(url).await?;
    Ok(package::from_bytes(&bytes, url)?)
}

/// A loaded model package of any kind.
pub enum Model {
    Gbdt(Box<Booster>, Box<package::Manifest>),
    Forest(Box<Forest>, Box<ForestManifest>),
    Nn(Box<crate::nn::NnModel>),
}

/// Loads a package of any kind (dispatch on its manifest's `model_kind`).
pub async fn load_any(url: &str) -> Result<Model, ModelError> {
    let bytes = read_bytes(url).await?;
    parse_any(&bytes, url)
}

/// Parses package bytes of any kind (`url` for messages).
pub fn parse_any(bytes: &[u8], url: &str) -> Result<Model, ModelError> {
    match package::model_kind(bytes, url)?.as_str() {
        "gbdt" => {
            let (b, m) = package::from_bytes(bytes, url)?;
            Ok(Model::Gbdt(Box::new(b), Box::new(m)))
        }
        iforest::MODEL_KIND => {
            let (f, m) = iforest::from_bytes(bytes, url)?;
            Ok(Model::Forest(Box::new(f), Box::new(m)))
        }
        crate::nn::package::MODEL_KIND => Ok(Model::Nn(Box::new(crate::nn::NnModel::from_bytes(
            bytes, url,
        )?))),
        other => Err(ModelError::Invalid(format!(
            "{url}: model kind {other:?} is not one this build serves"
        ))),
    }
}

/// The feature columns a network reads (categorical ones as strings).
pub fn nn_columns(m: &crate::nn::NnModel) -> Columns {
    let enc = &m.package.manifest.encoder;
    Columns {
        target: String::new(),
        features: Some(enc.names()),
        categorical: enc
            .features
            .iter()
            .filter(|f| matches!(f, crate::nn::data::FeatureEncoding::Categorical { .. }))
            .map(|f| f.name().to_string())
            .collect(),
        weight: None,
    }
}

/// Predicts every row of the Parquet file(s) at `data` with a network and writes them
/// with a `prediction` column to `out`; returns the row count.
pub async fn predict_nn_file(
    m: &crate::nn::NnModel,
    data: &str,
    out: &str,
) -> Result<usize, ModelError> {
    let batches = read_parquet_for_predict(data).await?;
    let Some(first) = batches.first() else {
        return Err(ModelError::Invalid(format!("{data}: no rows")));
    };
    let schema = first.schema();
    if schema.index_of("prediction").is_ok() {
        return Err(ModelError::Invalid(format!(
            "{data} already has a `prediction` column"
        )));
    }
    let cols = nn_columns(m);
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("prediction", DataType::Float64, false));
    let out_schema = Arc::new(Schema::new(fields));
    let mut rows = 0;
    let mut out_batches = Vec::with_capacity(batches.len());
    for b in &batches {
        let d = crate::gbdt::data::features_only(b, &cols, data)?;
        let p = tokio::task::block_in_place(|| m.predict(&d))?;
        rows += p.len();
        let mut c = b.columns().to_vec();
        c.push(Arc::new(Float64Array::from(p)));
        out_batches.push(
            RecordBatch::try_new(out_schema.clone(), c)
                .map_err(|e| ModelError::Invalid(format!("building output: {e}")))?,
        );
    }
    let (base, name) = split_url(out);
    parquet_io::write(&Lake::open(&base)?, &name, out_schema, &out_batches).await?;
    Ok(rows)
}

/// Reads Parquet into a dataset of numeric features for an isolation forest: the columns
/// named, or (none named) every numeric column; returns it with the string columns left
/// out.
pub async fn forest_dataset(
    url: &str,
    features: &[String],
) -> Result<(Dataset, Vec<String>), ModelError> {
    let batches = read_parquet(url).await?;
    let Some(first) = batches.first() else {
        return Err(ModelError::Invalid(format!("{url}: no rows")));
    };
    let mut skipped = Vec::new();
    let names: Vec<String> = if features.is_empty() {
        first
            .schema()
            .fields()
            .iter()
            .filter(|f| {
                let text = is_string_type(f.data_type());
                if text {
                    skipped.push(f.name().clone());
                }
                !text
            })
            .map(|f| f.name().clone())
            .collect()
    } else {
        features.to_vec()
    };
    let cols = Columns {
        target: String::new(),
        features: Some(names),
        categorical: Vec::new(),
        weight: None,
    };
    Ok((from_batches(&batches, &cols, url)?, skipped))
}

/// Trains an isolation forest and writes its package.
pub async fn train_forest_and_save(
    data: &Dataset,
    params: &ForestParams,
    out: &str,
    lineage: BTreeMap<String, String>,
) -> Result<(Forest, ForestManifest), ModelError> {
    let forest = tokio::task::block_in_place(|| iforest::fit(data, params))?;
    let m = iforest::manifest(&forest, package::fingerprint(data), lineage);
    write_bytes(out, iforest::to_bytes(&forest, &m)?).await?;
    Ok((forest, m))
}

/// What scoring a file with an isolation forest did.
pub struct ForestScoring {
    pub rows: usize,
    pub anomalies: usize,
    /// Seconds in the forest itself (not reading or writing Parquet).
    pub forest_secs: f64,
}

/// Scores the rows at `data` with an isolation forest and writes them with
/// `anomaly_score` and `is_anomaly` columns to `out`.
pub async fn score_forest_file(
    forest: &Forest,
    data: &str,
    out: &str,
) -> Result<ForestScoring, ModelError> {
    let batches = read_parquet_for_predict(data).await?;
    let Some(first) = batches.first() else {
        return Err(ModelError::Invalid(format!("{data}: no rows")));
    };
    let schema = first.schema();
    for c in ["anomaly_score", "is_anomaly"] {
        if schema.index_of(c).is_ok() {
            return Err(ModelError::Invalid(format!(
                "{data} already has a `{c}` column"
            )));
        }
    }
    let cols = Columns {
        target: String::new(),
        features: Some(forest.feature_names.clone()),
        categorical: Vec::new(),
        weight: None,
    };
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("anomaly_score", DataType::Float64, false));
    fields.push(Field::new("is_anomaly", DataType::Boolean, false));
    let out_schema = Arc::new(Schema::new(fields));
    let (mut rows, mut flagged, mut forest_secs) = (0, 0, 0.0);
    let mut out_batches = Vec::with_capacity(batches.len());
    for b in &batches {
        let d = crate::gbdt::data::features_only(b, &cols, data)?;
        let t = std::time::Instant::now();
        let s = tokio::task::block_in_place(|| forest.score(&d))?;
        forest_secs += t.elapsed().as_secs_f64();
        let flags: Vec<bool> = s.iter().map(|x| forest.is_anomaly(*x)).collect();
        rows += s.len();
        flagged += flags.iter().filter(|f| **f).count();
        let mut c: Vec<ArrayRef> = b.columns().to_vec();
        c.push(Arc::new(Float64Array::from(s)));
        c.push(Arc::new(BooleanArray::from(flags)));
        out_batches.push(
            RecordBatch::try_new(out_schema.clone(), c)
                .map_err(|e| ModelError::Invalid(format!("building output: {e}")))?,
        );
    }
    let bytes = parquet_io::encode(out_schema, &out_batches, out)?;
    write_bytes(out, bytes.to_vec()).await?;
    Ok(ForestScoring {
        rows,
        anomalies: flagged,
        forest_secs,
    })
}

/// Final metrics of a model on a dataset (response scale).
pub fn score_metrics(
    b: &Booster,
    d: &Dataset,
    prefix: &str,
) -> Result<BTreeMap<String, f64>, ModelError> {
    Ok(metrics_of(b, d, &b.predict(d)?, prefix))
}

/// Final metrics of predictions `p` (response scale) of a model on a dataset.
fn metrics_of(b: &Booster, d: &Dataset, p: &[f64], prefix: &str) -> BTreeMap<String, f64> {
    let names: Vec<&str> = match b.objective {
        crate::gbdt::Objective::Binary => vec!["logloss", "auc"],
        crate::gbdt::Objective::Poisson => vec!["poisson", "rmse", "mae"],
        crate::gbdt::Objective::Tweedie { .. } => vec!["tweedie", "rmse", "mae"],
        crate::gbdt::Objective::Gamma => vec!["gamma", "rmse", "mae"],
        crate::gbdt::Objective::Quantile { .. } => vec!["quantile", "mae"],
        _ => vec!["rmse", "mae", "r2", "mape"],
    };
    names
        .into_iter()
        .map(|m| {
            (
                format!("{prefix}-{m}"),
                metric::evaluate(m, &d.target, p, d.weights.as_deref(), &b.objective),
            )
        })
        .collect()
}

/// Trains and writes a package; returns the booster and its manifest.
#[allow(clippy::too_many_arguments)]
pub async fn train_and_save(
    device: &crate::gbdt::Device,
    train: &Dataset,
    valid: Option<&Dataset>,
    params: &Params,
    out: &str,
    lineage: BTreeMap<String, String>,
    on_iteration: &mut (dyn FnMut(&IterationLog) + Send),
) -> Result<(Booster, package::Manifest), ModelError> {
    // Training is CPU-bound: run it off the async workers.
    let (booster, fitted) = tokio::task::block_in_place(|| {
        crate::gbdt::train_on(device, train, valid, params, on_iteration)
    })?;
    let mut metrics = metrics_of(&booster, train, &fitted, "train");
    if let Some(v) = valid {
        metrics.extend(score_metrics(&booster, v, "valid")?);
    }
    let m = package::manifest(&booster, metrics, package::fingerprint(train), lineage);
    let bytes = package::to_bytes(&booster, &m)?;
    write_bytes(out, bytes).await?;
    Ok((booster, m))
}

/// Reads Parquet and builds a dataset.
pub async fn dataset(url: &str, cols: &Columns) -> Result<Dataset, ModelError> {
    let batches = read_parquet(url).await?;
    Ok(from_batches(&batches, cols, url)?)
}

/// Predicts for the rows at `data` and writes them, with a `prediction` column, to `out`.
pub async fn predict_file(
    model: &Booster,
    data: &str,
    out: &str,
    contrib: bool,
    device: &crate::gbdt::Device,
) -> Result<usize, ModelError> {
    let batches = read_parquet_for_predict(data).await?;
    let Some(first) = batches.first() else {
        return Err(ModelError::Invalid(format!("{data}: no rows")));
    };
    let schema = first.schema();
    if schema.index_of("prediction").is_ok() {
        return Err(ModelError::Invalid(format!(
            "{data} already has a `prediction` column"
        )));
    }
    let cols = Columns {
        target: String::new(),
        features: Some(model.feature_names.clone()),
        categorical: model_categoricals(model),
        weight: None,
    };
    let mut out_batches = Vec::with_capacity(batches.len());
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("prediction", DataType::Float64, false));
    if contrib {
        for name in model
            .feature_names
            .iter()
            .map(|n| format!("shap_{n}"))
            .chain(["shap_bias".to_string()])
        {
            fields.push(Field::new(name, DataType::Float64, false));
        }
    }
    let out_schema = Arc::new(Schema::new(fields));
    let mut rows = 0;
    for b in &batches {
        let d = crate::gbdt::data::features_only(b, &cols, data)?;
        let x = model.prepare(&d)?;
        let raw = match device {
            crate::gbdt::Device::Cpu => model.predict_raw(&x, None),
            dev => crate::gbdt::device::predict_raw(dev, model, &x, None)?,
        };
        let p: Vec<f64> = raw.into_iter().map(|s| model.response(s)).collect();
        rows += p.len();
        let mut c: Vec<ArrayRef> = b.columns().to_vec();
        c.push(Arc::new(Float64Array::from(p)));
        if contrib {
            let phi = model.shap(&x);
            for j in 0..=model.n_features() {
                c.push(Arc::new(Float64Array::from(
                    phi.iter().map(|r| r[j]).collect::<Vec<_>>(),
                )));
            }
        }
        out_batches.push(
            RecordBatch::try_new(out_schema.clone(), c)
                .map_err(|e| ModelError::Invalid(format!("building output: {e}")))?,
        );
    }
    let bytes = parquet_io::encode(out_schema, &out_batches, out)?;
    write_bytes(out, bytes.to_vec()).await?;
    Ok(rows)
}

fn model_categoricals(model: &Booster) -> Vec<String> {
    model
        .feature_names
        .iter()
        .zip(&model.feature_kinds)
        .filter(|(_, k)| **k == crate::gbdt::data::FeatureKind::Categorical)
        .map(|(n, _)| n.clone())
        .collect()
}

/// `configs/*.toml` `[train]`: a model on the curated lake.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LakeTrainConfig {
    /// Column of the curated table to predict: `price` (fare model) or `booked`.
    pub target: String,
    /// Features from docs/features.md; empty means every feature that does not use the
    /// row's own price.
    #[serde(default)]
    pub features: Vec<String>,
    /// Days at the end held out: the last `test_days` for test, the `valid_days` before
    /// them for validation (early stopping).
    pub valid_days: u32,
    pub test_days: u32,
    pub out: String,
    #[serde(default)]
    pub params: ParamArgs,
}

/// Training parameters as they are written: LightGBM's names, as `--kebab-case` flags on
/// the command line and as `[train.params]` keys in a config file (one definition for
/// both). Missing ones keep their defaults; the command line overrides the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ParamArgs {
    /// regression, regression_l1, huber, quantile, binary, poisson, tweedie, gamma.
    #[arg(long)]
    pub objective: Option<String>,
    /// Quantile level (quantile) or threshold (huber).
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub tweedie_variance_power: Option<f64>,
    #[arg(long)]
    pub num_iterations: Option<usize>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub num_leaves: Option<usize>,
    #[arg(long, allow_negative_numbers = true)]
    pub max_depth: Option<i32>,
    /// leafwise (LightGBM) or depthwise (XGBoost).
    #[arg(long)]
    pub grow_policy: Option<String>,
    #[arg(long)]
    pub min_data_in_leaf: Option<usize>,
    #[arg(long)]
    pub min_sum_hessian_in_leaf: Option<f64>,
    #[arg(long)]
    pub lambda_l1: Option<f64>,
    #[arg(long)]
    pub lambda_l2: Option<f64>,
    #[arg(long)]
    pub min_gain_to_split: Option<f64>,
    #[arg(long)]
    pub bagging_fraction: Option<f64>,
    #[arg(long)]
    pub bagging_freq: Option<usize>,
    #[arg(long)]
    pub feature_fraction: Option<f64>,
    #[arg(long)]
    pub max_bin: Option<usize>,
    /// Rows sampled to find bin edges (default: every row, up to 10,000,000; LightGBM's
    /// default is 200,000).
    #[arg(long)]
    pub bin_construct_sample_cnt: Option<usize>,
    /// Seed of the rows sampled to find bin edges.
    #[arg(long)]
    pub data_random_seed: Option<u64>,
    /// Bin edges of each continuous feature placed where the target steps, before the
    /// quantile edges (default 8; 0: quantile edges only, as LightGBM).
    #[arg(long)]
    pub label_edges: Option<usize>,
    #[arg(long)]
    pub early_stopping_round: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub num_threads: Option<usize>,
    /// Metrics to report (the first drives early stopping).
    #[arg(long, value_delimiter = ',')]
    pub metric: Option<Vec<String>>,
    /// Per feature, in feature order: 1 increasing, -1 decreasing, 0 free.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub monotone_constraints: Option<Vec<i8>>,
    /// On a GPU: grow the CPU's trees bit for bit (gradients, leaf values and scores in
    /// f64 on the host). Without it the device computes them in f32 (faster).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub deterministic: Option<bool>,
}

impl ParamArgs {
    pub fn apply(&self, p: &mut Params) -> Result<(), GbdtError> {
        if let Some(o) = &self.objective {
            p.objective =
                crate::gbdt::Objective::parse(o, self.alpha, self.tweedie_variance_power)?;
        }
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = self.$f { p.$f = v; } )*};
        }
        set!(
            num_iterations,
            learning_rate,
            num_leaves,
            max_depth,
            min_data_in_leaf,
            min_sum_hessian_in_leaf,
            lambda_l1,
            lambda_l2,
            min_gain_to_split,
            bagging_fraction,
            bagging_freq,
            feature_fraction,
            max_bin,
            bin_construct_sample_cnt,
            data_random_seed,
            label_edges,
            early_stopping_round,
            seed,
            num_threads,
            deterministic
        );
        if let Some(g) = &self.grow_policy {
            p.grow_policy = match g.as_str() {
                "leafwise" | "leaf-wise" | "lossguide" => crate::gbdt::GrowPolicy::LeafWise,
                "depthwise" | "depth-wise" => crate::gbdt::GrowPolicy::DepthWise,
                other => {
                    return Err(GbdtError::Param {
                        name: "grow_policy",
                        reason: format!("{other:?}: use leafwise or depthwise"),
                    })
                }
            };
        }
        if let Some(m) = &self.metric {
            p.metric = m.clone();
        }
        if let Some(m) = &self.monotone_constraints {
            p.monotone_constraints = m.clone();
        }
        Ok(())
    }
}

/// The three time splits of the lake, as datasets, plus test event ids.
pub struct LakeSplits {
    pub train: Dataset,
    pub valid: Dataset,
    pub test: Dataset,
    pub test_ids: Vec<String>,
    /// Event ids of the training and validation rows, when asked for.
    pub train_ids: Vec<String>,
    pub valid_ids: Vec<String>,
}

pub(crate) fn append(
    d: &mut Dataset,
    f: &RecordBatch,
    names: &[String],
    target: &[f64],
) -> Result<(), ModelError> {
    let cols = Columns {
        target: String::new(),
        features: Some(names.to_vec()),
        categorical: vec![],
        weight: None,
    };
    let part = crate::gbdt::data::features_only(f, &cols, "features")?;
    if d.names.is_empty() {
        d.names = part.names.clone();
        d.columns = part.columns;
    } else {
        for (a, b) in d.columns.iter_mut().zip(part.columns) {
            match (a, b) {
                (crate::gbdt::Column::Numeric(x), crate::gbdt::Column::Numeric(y)) => x.extend(y),
                (
                    crate::gbdt::Column::Categorical {
                        codes: xc,
                        dict: xd,
                    },
                    crate::gbdt::Column::Categorical {
                        codes: yc,
                        dict: yd,
                    },
                ) => {
                    // Re-intern the new batch's categories into the column's dictionary.
                    let index: HashMap<&str, u32> = xd
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (s.as_str(), i as u32))
                        .collect();
                    let mut added: Vec<String> = Vec::new();
                    let mut remap = Vec::with_capacity(yd.len());
                    for s in yd {
                        let code = match index.get(s.as_str()) {
                            Some(c) => *c,
                            None => {
                                added.push(s);
                                (xd.len() + added.len() - 1) as u32
                            }
                        };
                        remap.push(code);
                    }
                    drop(index);
                    xd.extend(added);
                    xc.extend(yc.iter().map(|c| {
                        remap
                            .get(*c as usize)
                            .copied()
                            .unwrap_or(crate::gbdt::data::MISSING)
                    }));
                }
                _ => {
                    return Err(ModelError::Invalid(
                        "feature kinds changed between batches".into(),
                    ))
                }
            }
        }
    }
    d.target.extend_from_slice(target);
    Ok(())
}

/// The hour (since 1970) of a curated batch: partitions are keyed by search time, so a
/// batch's hour is its first row's (0 for an empty batch).
pub fn batch_hour(b: &RecordBatch) -> i64 {
    b.column_by_name("search_ts")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<arrow_array::TimestampMillisecondArray>()
        })
        .filter(|t| !t.is_empty())
        .map_or(0, |t| t.value(0).div_euclid(3_600_000))
}

/// Reads the curated lake in time order, computes features with the shared feature
/// function, and splits by time.
pub async fn lake_splits(lake: &Lake, cfg: &LakeTrainConfig) -> Result<LakeSplits, ModelError> {
    lake_splits_ids(lake, cfg, false).await
}

/// [`lake_splits`], with the event ids of every split when `all_ids` (the test split's
/// always).
pub async fn lake_splits_ids(
    lake: &Lake,
    cfg: &LakeTrainConfig,
    all_ids: bool,
) -> Result<LakeSplits, ModelError> {
    let files = curated_files(lake, HourRange::all()).await?;
    if files.is_empty() {
        return Err(ModelError::Invalid(format!(
            "{}: the curated table is empty (run `contrail etl` first)",
            lake.url()
        )));
    }
    let last_hour = files
        .iter()
        .filter_map(|f| Partition::parse_path(f))
        .map(|p| p.hour)
        .max()
        .unwrap_or(0);
    let last_day = last_hour.div_euclid(24);
    let test_from = (last_day - cfg.test_days as i64 + 1) * 24;
    let valid_from = test_from - cfg.valid_days as i64 * 24;
    let names: Vec<String> = if cfg.features.is_empty() {
        price_free_features()
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        cfg.features.clone()
    };
    for n in &names {
        if !crate::features::FEATURES.iter().any(|f| f.name == n) {
            return Err(ModelError::Invalid(format!(
                "unknown feature `{n}` (see docs/features.md)"
            )));
        }
    }
    let mut fb = FeatureBuilder::new();
    let (mut train, mut valid, mut test) =
        (Dataset::default(), Dataset::default(), Dataset::default());
    let (mut train_ids, mut valid_ids, mut test_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut s = std::pin::pin!(parquet_io::scan(
        lake,
        files.clone(),
        ScanOptions::default()
    ));
    while let Some(b) = s.next().await {
        let b = b?;
        let hour = batch_hour(&b);
        let f = fb.compute(&b)?;
        let target: Vec<f64> = match b.column_by_name(&cfg.target) {
            Some(c) => crate::gbdt::data::numeric_values(c).ok_or_else(|| {
                ModelError::Invalid(format!("target `{}` is not numeric", cfg.target))
            })?,
            None => {
                return Err(ModelError::Invalid(format!(
                    "the curated table has no column `{}`",
                    cfg.target
                )))
            }
        };
        let (dest, ids) = if hour >= test_from {
            (&mut test, Some(&mut test_ids))
        } else if hour >= valid_from {
            (&mut valid, all_ids.then_some(&mut valid_ids))
        } else {
            (&mut train, all_ids.then_some(&mut train_ids))
        };
        if let (Some(out), Some(col)) = (
            ids,
            b.column_by_name("event_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        ) {
            out.extend(col.iter().map(|v| v.unwrap_or("").to_string()));
        }
        append(dest, &f, &names, &target)?;
    }
    if train.n_rows() == 0 || valid.n_rows() == 0 || test.n_rows() == 0 {
        return Err(ModelError::Invalid(format!(
            "not enough days in the lake for {} validation and {} test days (rows: train {}, valid {}, test {})",
            cfg.valid_days,
            cfg.test_days,
            train.n_rows(),
            valid.n_rows(),
            test.n_rows()
        )));
    }
    Ok(LakeSplits {
        train,
        valid,
        test,
        test_ids,
        train_ids,
        valid_ids,
    })
}

/// One column of the simulator's truth table by event id (`extract` reads row `i` of the
/// column; rows it returns `None` for are left out).
pub(crate) async fn truth_column<T>(
    lake: &Lake,
    column: &str,
    extract: impl Fn(&ArrayRef, usize) -> Option<T>,
) -> Result<HashMap<String, T>, ModelError> {
    let files: Vec<String> = lake
        .list(crate::sim::TRUTH_TABLE)
        .await?
        .iter()
        .map(|m| lake.relative(&m.location).to_string())
        .filter(|r| r.ends_with(".parquet"))
        .collect();
    let opts = ScanOptions {
        columns: Some(vec!["event_id".into(), column.into()]),
        ..Default::default()
    };
    let mut out = HashMap::new();
    let mut s = std::pin::pin!(parquet_io::scan(lake, files, opts));
    while let Some(b) = s.next().await {
        let b = b?;
        let Some(ids) = b.column(0).as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        for i in 0..ids.len() {
            if let Some(v) = extract(b.column(1), i) {
                out.insert(ids.value(i).to_string(), v);
            }
        }
    }
    Ok(out)
}

/// The simulator's true expected fare of every event, by event id.
pub async fn truth_fares(lake: &Lake) -> Result<HashMap<String, f64>, ModelError> {
    truth_column(lake, "true_expected_fare", |a, i| {
        a.as_any()
            .downcast_ref::<Float64Array>()
            .map(|f| f.value(i))
    })
    .await
}

/// Whether the simulator made each event an error fare, by event id.
pub async fn truth_anomalies(lake: &Lake) -> Result<HashMap<String, bool>, ModelError> {
    truth_column(lake, "is_anomaly", |a, i| {
        a.as_any()
            .downcast_ref::<BooleanArray>()
            .map(|f| f.value(i))
    })
    .await
}

/// A dataset as one Arrow batch: features (Float64 or Utf8) and the target.
pub fn dataset_to_batch(d: &Dataset, target: &str) -> Result<RecordBatch, ModelError> {
    let mut fields = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (name, c) in d.names.iter().zip(&d.columns) {
        match c {
            crate::gbdt::Column::Numeric(v) => {
                fields.push(Field::new(name, DataType::Float64, true));
                cols.push(Arc::new(Float64Array::from(
                    v.iter()
                        .map(|x| (!x.is_nan()).then_some(*x))
                        .collect::<Vec<_>>(),
                )));
            }
            crate::gbdt::Column::Categorical { .. } => {
                fields.push(Field::new(name, DataType::Utf8, true));
                cols.push(Arc::new(StringArray::from(
                    (0..c.len()).map(|r| c.category(r)).collect::<Vec<_>>(),
                )));
            }
        }
    }
    fields.push(Field::new(target, DataType::Float64, false));
    cols.push(Arc::new(Float64Array::from(d.target.clone())));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| ModelError::Invalid(format!("building batch: {e}")))
}

/// Writes the train/valid/test splits of a lake model as Parquet files under `out`
/// (`train.parquet`, `valid.parquet`, `test.parquet`), so other libraries can train on
/// the very same rows and features; with `event_ids`, an `event_id` column too (to join
/// the simulator's truth).
pub async fn export_splits(
    lake: &Lake,
    cfg: &LakeTrainConfig,
    out: &str,
    event_ids: bool,
) -> Result<[usize; 3], ModelError> {
    let s = lake_splits_ids(lake, cfg, event_ids).await?;
    let dest = Lake::open(out)?;
    let mut n = [0; 3];
    for (i, (name, d, ids)) in [
        ("train", &s.train, &s.train_ids),
        ("valid", &s.valid, &s.valid_ids),
        ("test", &s.test, &s.test_ids),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = dataset_to_batch(d, &cfg.target)?;
        if event_ids {
            let mut fields: Vec<Field> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("event_id", DataType::Utf8, false));
            let mut cols = b.columns().to_vec();
            cols.push(Arc::new(StringArray::from(ids.clone())));
            b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
                .map_err(|e| ModelError::Invalid(format!("building batch: {e}")))?;
        }
        parquet_io::write(&dest, &format!("{name}.parquet"), b.schema(), &[b]).await?;
        n[i] = d.n_rows();
    }
    Ok(n)
}
