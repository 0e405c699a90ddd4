//! Model package v1: one safetensors file.
//!
//! Layout (the safetensors format): an 8-byte little-endian header length, a JSON header
//! naming each tensor's dtype, shape and byte range, then the tensor bytes. Trees are
//! struct-of-arrays node tables concatenated across trees (`tree_nodes` / `tree_leaves`
//! hold each tree's offsets). The header's `__metadata__` holds the manifest (format
//! version, model kind, features with their bins and category maps, objective,
//! parameters, metrics, training-data fingerprint, Contrail version) and a CRC-32 of the
//! manifest and the tensor bytes, so any flipped byte is caught before parsing.
//!
//! [`load`] validates everything before use: header size cap, dtypes, shapes against
//! declared counts, byte ranges, checksum, child indices (every tree acyclic: children
//! come after their parent and each node has exactly one parent), feature ids, bins,
//! finite values. A corrupt or hostile file is a typed error, never a panic, and no
//! allocation is larger than the file itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bin::BinMapper;
use crate::booster::{Booster, Precision};
use crate::data::FeatureKind;
use crate::objective::Objective;
use crate::train::Params;
use crate::tree::Tree;
use crate::GbdtError;

pub const FORMAT: &str = "contrail-model";
pub const FORMAT_VERSION: u32 = 1;
/// Largest header accepted (the manifest holds bin edges and category maps).
pub const MAX_HEADER: usize = 64 << 20;

/// Everything about the model that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub model_kind: String,
    pub contrail_version: String,
    pub features: Vec<FeatureSpec>,
    pub objective: Objective,
    pub init_score: f64,
    pub params: Params,
    pub best_iteration: usize,
    pub n_trees: usize,
    /// Final metrics, e.g. `valid-rmse`.
    pub metrics: BTreeMap<String, f64>,
    /// Rows and a content hash of the training data.
    pub training_data: DataFingerprint,
    /// Free-form lineage: data URL, config, target column.
    pub lineage: BTreeMap<String, String>,
    /// The arithmetic of prediction (`"f32"` for models imported from XGBoost; absent:
    /// `f64`). With `f32`, the initial score and every leaf value must be `f32` values.
    #[serde(default, skip_serializing_if = "Precision::is_f64")]
    pub precision: Precision,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    pub kind: FeatureKind,
    /// Numeric: upper bounds of the value bins but the last (+inf). Empty for categorical.
    #[serde(default)]
    pub bin_upper: Vec<f64>,
    /// Categorical: categories in bin order. Empty for numeric.
    #[serde(default)]
    pub categories: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFingerprint {
    pub rows: u64,
    pub crc32: String,
}

/// A CRC-32 of a dataset's target and numeric features, for lineage.
///
/// The bytes go to the CRC in 64 KiB blocks: one call per 8-byte value cost a second on
/// two million rows of 28 features (the same checksum: a CRC does not depend on how its
/// input is cut).
pub fn fingerprint(data: &crate::data::Dataset) -> DataFingerprint {
    let mut c = Blocks::default();
    for t in &data.target {
        c.push(&t.to_le_bytes());
    }
    for col in &data.columns {
        match col {
            crate::data::Column::Numeric(v) => v.iter().for_each(|x| c.push(&x.to_le_bytes())),
            crate::data::Column::Categorical { codes, dict } => codes.iter().for_each(|x| {
                c.push(
                    dict.get(*x as usize)
                        .map_or("\u{0}", String::as_str)
                        .as_bytes(),
                )
            }),
        }
    }
    DataFingerprint {
        rows: data.n_rows() as u64,
        crc32: format!("{:08x}", c.sum()),
    }
}

/// [`fingerprint`] of data read in blocks of rows (a file's row groups): push every
/// block in order, then finish. Each column's bytes go to a CRC of their own and the
/// columns' CRCs are joined at the end (the CRC of a concatenation follows from its
/// parts'), so the result equals `fingerprint` of all the rows at once.
#[derive(Default)]
pub struct FingerprintBuilder {
    rows: u64,
    columns: Vec<(crc32fast::Hasher, Vec<u8>)>,
}

impl FingerprintBuilder {
    /// Takes in the next block (the same columns in the same order every block).
    pub fn push(&mut self, data: &crate::data::Dataset) {
        if self.columns.is_empty() {
            self.columns = (0..=data.columns.len())
                .map(|_| (crc32fast::Hasher::new(), Vec::with_capacity(Blocks::SIZE)))
                .collect();
        }
        self.rows += data.n_rows() as u64;
        let feed = |(crc, buf): &mut (crc32fast::Hasher, Vec<u8>), bytes: &[u8]| {
            if buf.len() + bytes.len() > Blocks::SIZE {
                crc.update(buf);
                buf.clear();
            }
            buf.extend_from_slice(bytes);
        };
        let (target, features) = self.columns.split_at_mut(1);
        for t in &data.target {
            feed(&mut target[0], &t.to_le_bytes());
        }
        for (col, acc) in data.columns.iter().zip(features) {
            match col {
                crate::data::Column::Numeric(v) => {
                    v.iter().for_each(|x| feed(acc, &x.to_le_bytes()))
                }
                crate::data::Column::Categorical { codes, dict } => codes.iter().for_each(|x| {
                    feed(
                        acc,
                        dict.get(*x as usize)
                            .map_or("\u{0}", String::as_str)
                            .as_bytes(),
                    )
                }),
            }
        }
    }

    pub fn finish(self) -> DataFingerprint {
        let mut all = crc32fast::Hasher::new();
        for (mut crc, buf) in self.columns {
            crc.update(&buf);
            all.combine(&crc);
        }
        DataFingerprint {
            rows: self.rows,
            crc32: format!("{:08x}", all.finalize()),
        }
    }
}

/// A CRC fed in blocks of [`Blocks::SIZE`] bytes.
#[derive(Default)]
struct Blocks {
    crc: libdeflater::Crc,
    buf: Vec<u8>,
}

impl Blocks {
    const SIZE: usize = 1 << 16;
    fn push(&mut self, bytes: &[u8]) {
        if self.buf.len() + bytes.len() > Self::SIZE {
            self.crc.update(&self.buf);
            self.buf.clear();
        }
        if bytes.len() > Self::SIZE {
            self.crc.update(bytes);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
    fn sum(mut self) -> u32 {
        self.crc.update(&self.buf);
        self.crc.sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DType {
    F64,
    F32,
    I64,
    I32,
    U32,
    U8,
}

impl DType {
    fn name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::U8 => "U8",
        }
    }
    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::U8 => 1,
        }
    }
}

/// The tensors of a package being written.
#[derive(Default)]
pub struct Writer {
    tensors: Vec<(String, DType, Vec<u8>)>,
}

impl Writer {
    pub fn f64(&mut self, name: impl Into<String>, v: impl Iterator<Item = f64>) {
        self.tensors.push((
            name.into(),
            DType::F64,
            v.flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    pub fn i64(&mut self, name: impl Into<String>, v: impl Iterator<Item = i64>) {
        self.tensors.push((
            name.into(),
            DType::I64,
            v.flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    pub fn i32(&mut self, name: impl Into<String>, v: impl Iterator<Item = i32>) {
        self.tensors.push((
            name.into(),
            DType::I32,
            v.flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    pub fn u32(&mut self, name: impl Into<String>, v: impl Iterator<Item = u32>) {
        self.tensors.push((
            name.into(),
            DType::U32,
            v.flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
    pub fn u8(&mut self, name: impl Into<String>, v: impl Iterator<Item = u8>) {
        self.tensors.push((name.into(), DType::U8, v.collect()));
    }
    pub fn f32(&mut self, name: impl Into<String>, v: impl Iterator<Item = f32>) {
        self.tensors.push((
            name.into(),
            DType::F32,
            v.flat_map(|x| x.to_le_bytes()).collect(),
        ));
    }
}

fn checksum(manifest: &str, data: &[u8]) -> String {
    let mut c = libdeflater::Crc::new();
    c.update(manifest.as_bytes());
    c.update(data);
    format!("{:08x}", c.sum())
}

/// The manifest of a booster, with metrics and lineage supplied by the caller. A metric
/// that is not finite (an R² of a constant validation target, a deviance that overflowed)
/// is left out: JSON has no such number, and the package must load.
pub fn manifest(
    b: &Booster,
    metrics: BTreeMap<String, f64>,
    training_data: DataFingerprint,
    lineage: BTreeMap<String, String>,
) -> Manifest {
    let features = b
        .feature_names
        .iter()
        .zip(&b.mappers)
        .zip(&b.feature_kinds)
        .map(|((name, m), kind)| match m {
            BinMapper::Numeric { upper } => FeatureSpec {
                name: name.clone(),
                kind: *kind,
                bin_upper: upper[..upper.len().saturating_sub(1)].to_vec(),
                categories: vec![],
            },
            BinMapper::Categorical { categories } => FeatureSpec {
                name: name.clone(),
                kind: *kind,
                bin_upper: vec![],
                categories: categories.clone(),
            },
        })
        .collect();
    Manifest {
        format_version: FORMAT_VERSION,
        model_kind: "gbdt".into(),
        contrail_version: env!("CARGO_PKG_VERSION").into(),
        features,
        objective: b.objective,
        init_score: b.init_score,
        params: b.params.clone(),
        best_iteration: b.best_iteration,
        n_trees: b.trees.len(),
        metrics: metrics.into_iter().filter(|(_, v)| v.is_finite()).collect(),
        training_data,
        lineage,
        precision: b.precision,
    }
}

/// Serialises a model into package bytes (deterministic: equal models give equal bytes).
pub fn to_bytes(b: &Booster, m: &Manifest) -> Result<Vec<u8>, GbdtError> {
    let ts = &b.trees;
    let mut w = Writer::default();
    let mut node_off = vec![0i64];
    let mut leaf_off = vec![0i64];
    let mut cat_off = vec![0i64];
    for t in ts {
        node_off.push(node_off[node_off.len() - 1] + t.n_nodes() as i64);
        leaf_off.push(leaf_off[leaf_off.len() - 1] + t.n_leaves() as i64);
        for bits in &t.cat_bitsets {
            cat_off.push(cat_off[cat_off.len() - 1] + bits.len() as i64);
        }
    }
    // Categorical node indices are made global across trees.
    let mut cat_base = 0i32;
    let mut cat_global = Vec::new();
    for t in ts {
        cat_global.extend(
            t.cat_index
                .iter()
                .map(|c| if *c >= 0 { c + cat_base } else { -1 }),
        );
        cat_base += t.cat_bitsets.len() as i32;
    }
    w.i64("tree_nodes", node_off.into_iter());
    w.i64("tree_leaves", leaf_off.into_iter());
    w.i32("node_left", ts.iter().flat_map(|t| t.left.iter().copied()));
    w.i32(
        "node_right",
        ts.iter().flat_map(|t| t.right.iter().copied()),
    );
    w.i32(
        "node_feature",
        ts.iter().flat_map(|t| t.feature.iter().map(|f| *f as i32)),
    );
    w.i32(
        "node_threshold_bin",
        ts.iter()
            .flat_map(|t| t.threshold_bin.iter().map(|f| *f as i32)),
    );
    w.f64(
        "node_threshold",
        ts.iter().flat_map(|t| t.threshold.iter().copied()),
    );
    w.u8(
        "node_default_left",
        ts.iter()
            .flat_map(|t| t.default_left.iter().map(|d| *d as u8)),
    );
    w.i32("node_cat_index", cat_global.into_iter());
    w.f64("node_gain", ts.iter().flat_map(|t| t.gain.iter().copied()));
    w.f64(
        "node_hess",
        ts.iter().flat_map(|t| t.node_hess.iter().copied()),
    );
    w.i64(
        "node_count",
        ts.iter()
            .flat_map(|t| t.node_count.iter().map(|c| *c as i64)),
    );
    w.f64(
        "node_value",
        ts.iter().flat_map(|t| t.node_value.iter().copied()),
    );
    w.f64(
        "leaf_value",
        ts.iter().flat_map(|t| t.leaf_value.iter().copied()),
    );
    w.f64(
        "leaf_hess",
        ts.iter().flat_map(|t| t.leaf_hess.iter().copied()),
    );
    w.i64(
        "leaf_count",
        ts.iter()
            .flat_map(|t| t.leaf_count.iter().map(|c| *c as i64)),
    );
    w.i64("cat_offsets", cat_off.into_iter());
    w.u32(
        "cat_words",
        ts.iter()
            .flat_map(|t| t.cat_bitsets.iter().flatten().copied()),
    );

    let manifest = serde_json::to_string(m).map_err(|e| GbdtError::Package {
        path: "<memory>".into(),
        reason: format!("manifest: {e}"),
    })?;
    encode(w, &manifest)
}

/// The package bytes of `w`'s tensors with a manifest (deterministic: equal inputs give
/// equal bytes).
pub fn encode(mut w: Writer, manifest: &str) -> Result<Vec<u8>, GbdtError> {
    // safetensors: tensors sorted by name, data in that order.
    w.tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dt, bytes) in &w.tensors {
        let n = bytes.len() / dt.size();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dt.name(), "shape": [n], "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), FORMAT.into());
    meta.insert("checksum".into(), checksum(manifest, &data).into());
    meta.insert("manifest".into(), manifest.into());
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    let mut h =
        serde_json::to_vec(&serde_json::Value::Object(header)).map_err(|e| GbdtError::Package {
            path: "<memory>".into(),
            reason: e.to_string(),
        })?;
    // Pad the header with spaces to 8 bytes, as safetensors writers do.
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Reads the tensors of a decoded package, checking dtype, shape and byte range.
pub struct Reader<'a> {
    path: &'a str,
    header: serde_json::Map<String, serde_json::Value>,
    data: &'a [u8],
}

impl Reader<'_> {
    pub fn err(&self, reason: impl Into<String>) -> GbdtError {
        GbdtError::Package {
            path: self.path.to_string(),
            reason: reason.into(),
        }
    }
    fn raw(&self, name: &str, dt: DType) -> Result<&[u8], GbdtError> {
        let t = self
            .header
            .get(name)
            .ok_or_else(|| self.err(format!("tensor `{name}` is missing")))?;
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| self.err(format!("tensor `{name}` has no dtype")))?;
        if dtype != dt.name() {
            return Err(self.err(format!(
                "tensor `{name}` has dtype {dtype}, expected {}",
                dt.name()
            )));
        }
        let shape: Vec<u64> = t
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .ok_or_else(|| self.err(format!("tensor `{name}` has no shape")))?;
        let offs: Vec<u64> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .ok_or_else(|| self.err(format!("tensor `{name}` has no data_offsets")))?;
        let [b, e] = offs[..] else {
            return Err(self.err(format!(
                "tensor `{name}`: data_offsets must be [begin, end]"
            )));
        };
        let [n] = shape[..] else {
            return Err(self.err(format!("tensor `{name}` must be one-dimensional")));
        };
        if b > e || e > self.data.len() as u64 {
            return Err(self.err(format!(
                "tensor `{name}`: bytes {b}..{e} outside the {}-byte data section",
                self.data.len()
            )));
        }
        if n.checked_mul(dt.size() as u64) != Some(e - b) {
            return Err(self.err(format!(
                "tensor `{name}`: shape [{n}] does not match its {} bytes",
                e - b
            )));
        }
        Ok(&self.data[b as usize..e as usize])
    }
    pub fn f64(&self, name: &str) -> Result<Vec<f64>, GbdtError> {
        Ok(self
            .raw(name, DType::F64)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
    pub fn i64(&self, name: &str) -> Result<Vec<i64>, GbdtError> {
        Ok(self
            .raw(name, DType::I64)?
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }
    pub fn i32(&self, name: &str) -> Result<Vec<i32>, GbdtError> {
        Ok(self
            .raw(name, DType::I32)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect())
    }
    pub fn u32(&self, name: &str) -> Result<Vec<u32>, GbdtError> {
        Ok(self
            .raw(name, DType::U32)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect())
    }
    pub fn u8(&self, name: &str) -> Result<Vec<u8>, GbdtError> {
        Ok(self.raw(name, DType::U8)?.to_vec())
    }
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, GbdtError> {
        Ok(self
            .raw(name, DType::F32)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect())
    }
    /// Names of the tensors in the package.
    pub fn names(&self) -> Vec<String> {
        self.header.keys().cloned().collect()
    }
}

/// Checks `offsets` is a valid offset table (starts at 0, non-decreasing, ends at `total`)
/// and returns it as usize.
pub(crate) fn offsets(
    r: &Reader,
    name: &str,
    v: &[i64],
    total: usize,
) -> Result<Vec<usize>, GbdtError> {
    if v.first() != Some(&0)
        || v.windows(2).any(|w| w[1] < w[0])
        || v.last().map(|x| *x as u64) != Some(total as u64)
    {
        return Err(r.err(format!("`{name}` is not an offset table ending at {total}")));
    }
    Ok(v.iter().map(|x| *x as usize).collect())
}

/// Checks the container of package bytes (header size, format, checksum, tensor ranges
/// tiling the data section) and returns the manifest's text and a tensor reader.
pub fn decode<'a>(bytes: &'a [u8], path: &'a str) -> Result<(String, Reader<'a>), GbdtError> {
    let err = |reason: String| GbdtError::Package {
        path: path.to_string(),
        reason,
    };
    if bytes.len() < 8 {
        return Err(err(format!(
            "{} bytes is too short for a package",
            bytes.len()
        )));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER as u64 || n > bytes.len() as u64 - 8 {
        return Err(err(format!(
            "header declares {n} bytes; the file has {} (limit {MAX_HEADER})",
            bytes.len() - 8
        )));
    }
    let header_bytes = &bytes[8..8 + n as usize];
    let data = &bytes[8 + n as usize..];
    let header: serde_json::Value = serde_json::from_slice(header_bytes)
        .map_err(|e| err(format!("header is not JSON: {e}")))?;
    let serde_json::Value::Object(mut header) = header else {
        return Err(err("header is not a JSON object".into()));
    };
    let meta = header
        .remove("__metadata__")
        .ok_or_else(|| err("no __metadata__".into()))?;
    let get = |k: &str| {
        meta.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| err(format!("metadata `{k}` is missing")))
    };
    if get("format")? != FORMAT {
        return Err(err(format!("not a {FORMAT} package")));
    }
    let manifest_text = get("manifest")?;
    // Fuzz builds skip the checksum so mutated inputs reach the validation behind it.
    if !cfg!(fuzzing) && get("checksum")? != checksum(&manifest_text, data) {
        return Err(err(
            "checksum mismatch: the file is corrupt or was altered".into()
        ));
    }
    // Tensors must tile the data section exactly, in order, without gaps or overlap.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (name, t) in &header {
        let o: Vec<u64> = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_u64()).collect())
            .unwrap_or_default();
        let [b, e] = o[..] else {
            return Err(err(format!("tensor `{name}`: bad data_offsets")));
        };
        ranges.push((b, e));
    }
    ranges.sort();
    let mut at = 0;
    for (b, e) in &ranges {
        if *b != at || e < b {
            return Err(err("tensor byte ranges overlap or leave gaps".into()));
        }
        at = *e;
    }
    if at != data.len() as u64 {
        return Err(err(format!(
            "tensors cover {at} bytes of a {}-byte data section",
            data.len()
        )));
    }
    Ok((manifest_text, Reader { path, header, data }))
}

/// What every manifest starts with.
#[derive(Deserialize)]
struct Kind {
    format_version: u32,
    model_kind: String,
}

/// The model kind of package bytes (`gbdt`, `isolation_forest`), after checking the
/// container and the format version.
pub fn model_kind(bytes: &[u8], path: &str) -> Result<String, GbdtError> {
    let (text, _) = decode(bytes, path)?;
    check_kind(&text, path, None)
}

/// Checks the manifest's format version (and kind, when `want` is given).
pub fn check_kind(text: &str, path: &str, want: Option<&str>) -> Result<String, GbdtError> {
    let err = |reason: String| GbdtError::Package {
        path: path.to_string(),
        reason,
    };
    let k: Kind = serde_json::from_str(text).map_err(|e| err(format!("manifest: {e}")))?;
    if k.format_version != FORMAT_VERSION {
        return Err(err(format!(
            "format version {} is not supported (this build reads {FORMAT_VERSION})",
            k.format_version
        )));
    }
    if let Some(w) = want {
        if k.model_kind != w {
            return Err(err(format!("model kind {:?} is not {w}", k.model_kind)));
        }
    }
    Ok(k.model_kind)
}

/// Parses and validates gbdt package bytes. `path` names the file in errors.
pub fn from_bytes(bytes: &[u8], path: &str) -> Result<(Booster, Manifest), GbdtError> {
    let err = |reason: String| GbdtError::Package {
        path: path.to_string(),
        reason,
    };
    let (manifest_text, r) = decode(bytes, path)?;
    check_kind(&manifest_text, path, Some("gbdt"))?;
    let m: Manifest =
        serde_json::from_str(&manifest_text).map_err(|e| err(format!("manifest: {e}")))?;

    // Features and their bins.
    let nf = m.features.len();
    let mut mappers = Vec::with_capacity(nf);
    for (i, f) in m.features.iter().enumerate() {
        match f.kind {
            FeatureKind::Numeric => {
                if f.bin_upper.iter().any(|u| !u.is_finite())
                    || f.bin_upper.windows(2).any(|w| w[1] <= w[0])
                    || !f.categories.is_empty()
                {
                    return Err(err(format!(
                        "feature {i} ({}): bin bounds must be finite and increasing",
                        f.name
                    )));
                }
                let mut upper = f.bin_upper.clone();
                upper.push(f64::INFINITY);
                mappers.push(BinMapper::Numeric { upper });
            }
            FeatureKind::Categorical => {
                if !f.bin_upper.is_empty() {
                    return Err(err(format!(
                        "feature {i} ({}): a categorical feature has no bin bounds",
                        f.name
                    )));
                }
                mappers.push(BinMapper::Categorical {
                    categories: f.categories.clone(),
                });
            }
        }
        if mappers[i].n_bins() > 65_536 {
            return Err(err(format!("feature {i} has too many bins")));
        }
    }
    if !m.init_score.is_finite() {
        return Err(err("init_score is not finite".into()));
    }
    // An f32 model's numbers are f32 values (its sums are taken in f32).
    let is_f32 = |v: f64| (v as f32) as f64 == v;
    if m.precision == Precision::F32 && !is_f32(m.init_score) {
        return Err(err(format!(
            "init_score {} is not an f32 value, as precision \"f32\" requires",
            m.init_score
        )));
    }

    let left = r.i32("node_left")?;
    let right = r.i32("node_right")?;
    let feature = r.i32("node_feature")?;
    let thr_bin = r.i32("node_threshold_bin")?;
    let thr = r.f64("node_threshold")?;
    let def = r.u8("node_default_left")?;
    let cat_idx = r.i32("node_cat_index")?;
    let gain = r.f64("node_gain")?;
    let nhess = r.f64("node_hess")?;
    let ncount = r.i64("node_count")?;
    let nvalue = r.f64("node_value")?;
    let lval = r.f64("leaf_value")?;
    let lhess = r.f64("leaf_hess")?;
    let lcount = r.i64("leaf_count")?;
    let cat_words = r.u32("cat_words")?;
    let n_nodes = left.len();
    for (name, len) in [
        ("node_right", right.len()),
        ("node_feature", feature.len()),
        ("node_threshold_bin", thr_bin.len()),
        ("node_threshold", thr.len()),
        ("node_default_left", def.len()),
        ("node_cat_index", cat_idx.len()),
        ("node_gain", gain.len()),
        ("node_hess", nhess.len()),
        ("node_count", ncount.len()),
        ("node_value", nvalue.len()),
    ] {
        if len != n_nodes {
            return Err(err(format!(
                "`{name}` has {len} entries, `node_left` {n_nodes}"
            )));
        }
    }
    if lhess.len() != lval.len() || lcount.len() != lval.len() {
        return Err(err("leaf tables differ in length".into()));
    }
    let node_off = offsets(&r, "tree_nodes", &r.i64("tree_nodes")?, n_nodes)?;
    let leaf_off = offsets(&r, "tree_leaves", &r.i64("tree_leaves")?, lval.len())?;
    let cat_off = offsets(&r, "cat_offsets", &r.i64("cat_offsets")?, cat_words.len())?;
    if node_off.len() != leaf_off.len() || node_off.len() != m.n_trees + 1 {
        return Err(err(format!(
            "the manifest says {} trees; the tables say {}",
            m.n_trees,
            node_off.len().saturating_sub(1)
        )));
    }
    let n_cats = cat_off.len() - 1;
    let mut trees = Vec::with_capacity(m.n_trees);
    for t in 0..m.n_trees {
        let (nb, ne) = (node_off[t], node_off[t + 1]);
        let (lb, le) = (leaf_off[t], leaf_off[t + 1]);
        let (k, nl) = (ne - nb, le - lb);
        if nl != k + 1 {
            return Err(err(format!(
                "tree {t}: {k} internal nodes need {} leaves, found {nl}",
                k + 1
            )));
        }
        // Each node but the root, and each leaf, has exactly one parent; internal
        // children come after their parent, so the tree is acyclic.
        let mut node_parents = vec![0u8; k];
        let mut leaf_parents = vec![0u8; nl];
        let mut tree = Tree::default();
        for i in 0..k {
            let g = nb + i;
            for c in [left[g], right[g]] {
                if c < 0 {
                    let l = !c as usize;
                    if l >= nl || leaf_parents[l] > 0 {
                        return Err(err(format!(
                            "tree {t} node {i}: leaf child {l} is out of range or shared"
                        )));
                    }
                    leaf_parents[l] = 1;
                } else {
                    let c = c as usize;
                    if c <= i || c >= k || node_parents[c] > 0 {
                        return Err(err(format!("tree {t} node {i}: child {c} is out of range, earlier than its parent, or shared")));
                    }
                    node_parents[c] = 1;
                }
            }
            let f = feature[g];
            if f < 0 || f as usize >= nf {
                return Err(err(format!(
                    "tree {t} node {i}: feature {f} is not in 0..{nf}"
                )));
            }
            let f = f as usize;
            let ci = cat_idx[g];
            let is_cat = mappers[f].is_categorical();
            if is_cat != (ci >= 0) {
                return Err(err(format!(
                    "tree {t} node {i}: split kind does not match feature {f}'s kind"
                )));
            }
            if is_cat {
                let ci = ci as usize;
                if ci >= n_cats || cat_off[ci + 1] - cat_off[ci] != mappers[f].n_bins().div_ceil(32)
                {
                    return Err(err(format!(
                        "tree {t} node {i}: category set {ci} is out of range or of the wrong size"
                    )));
                }
                tree.cat_bitsets
                    .push(cat_words[cat_off[ci]..cat_off[ci + 1]].to_vec());
                tree.cat_index.push((tree.cat_bitsets.len() - 1) as i32);
            } else {
                let tb = thr_bin[g];
                if tb < 0 || tb as usize + 1 >= mappers[f].n_bins() || thr[g].is_nan() {
                    return Err(err(format!(
                        "tree {t} node {i}: threshold bin {tb} or threshold {} is invalid",
                        thr[g]
                    )));
                }
                if let BinMapper::Numeric { upper } = &mappers[f] {
                    if upper[tb as usize].to_bits() != thr[g].to_bits() {
                        return Err(err(format!(
                            "tree {t} node {i}: threshold {} is not the bound of bin {tb}",
                            thr[g]
                        )));
                    }
                }
                tree.cat_index.push(-1);
            }
            if def[g] > 1
                || !gain[g].is_finite()
                || !nhess[g].is_finite()
                || !nvalue[g].is_finite()
                || ncount[g] < 0
            {
                return Err(err(format!("tree {t} node {i}: invalid statistics")));
            }
            tree.left.push(left[g]);
            tree.right.push(right[g]);
            tree.feature.push(f as u32);
            tree.threshold_bin.push(thr_bin[g].max(0) as u32);
            tree.threshold.push(thr[g]);
            tree.default_left.push(def[g] == 1);
            tree.gain.push(gain[g]);
            tree.node_hess.push(nhess[g]);
            tree.node_count.push(ncount[g] as u64);
            tree.node_value.push(nvalue[g]);
        }
        if node_parents.iter().skip(1).any(|p| *p == 0)
            || (k > 0 && node_parents[0] != 0)
            || leaf_parents.contains(&0) && k > 0
        {
            return Err(err(format!("tree {t}: some node or leaf is unreachable")));
        }
        for j in lb..le {
            if !lval[j].is_finite() || !lhess[j].is_finite() || lcount[j] < 0 {
                return Err(err(format!(
                    "tree {t} leaf {}: value is not finite",
                    j - lb
                )));
            }
            if m.precision == Precision::F32 && !is_f32(lval[j]) {
                return Err(err(format!(
                    "tree {t} leaf {}: value {} is not an f32 value, as precision \"f32\" requires",
                    j - lb,
                    lval[j]
                )));
            }
            tree.leaf_value.push(lval[j]);
            tree.leaf_hess.push(lhess[j]);
            tree.leaf_count.push(lcount[j] as u64);
        }
        trees.push(tree);
    }
    let booster = Booster {
        feature_names: m.features.iter().map(|f| f.name.clone()).collect(),
        feature_kinds: m.features.iter().map(|f| f.kind).collect(),
        mappers,
        objective: m.objective,
        init_score: m.init_score,
        trees,
        params: m.params.clone(),
        best_iteration: m.best_iteration,
        precision: m.precision,
    };
    Ok((booster, m))
}
