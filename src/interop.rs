//! `contrail import` and `contrail export`: LightGBM and XGBoost models in, XGBoost JSON
//! out (see [`crate::gbdt::import`] for the decision rules kept).

use std::collections::BTreeMap;

use crate::gbdt::{import, package, GbdtError};
use crate::models::{load_model, read_bytes, write_bytes, ModelError};

/// The formats `contrail import --from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    /// LightGBM's text model (`Booster.save_model("model.txt")`).
    LightgbmText,
    /// XGBoost's JSON or UBJSON model (`Booster.save_model("model.json" or ".ubj")`).
    XgboostJson,
}

/// What an import did, for the command's JSON line.
#[derive(Debug, serde::Serialize)]
pub struct ImportSummary {
    pub out: String,
    pub trees: usize,
    pub features: Vec<String>,
    pub categorical: Vec<String>,
    pub objective: String,
    pub init_score: f64,
}

/// Reads a LightGBM or XGBoost model and writes it as a Contrail package.
pub async fn import_model(
    from: ImportFormat,
    file: &str,
    out: &str,
) -> Result<ImportSummary, ModelError> {
    let bytes = read_bytes(file).await?;
    let imported = match from {
        ImportFormat::LightgbmText => {
            let text = std::str::from_utf8(&bytes).map_err(|e| {
                ModelError::Invalid(format!("{file}: not a LightGBM text model: {e}"))
            })?;
            import::from_lightgbm_text(text, file)
        }
        ImportFormat::XgboostJson => import::from_xgboost(&bytes, file),
    }
    .map_err(GbdtError::from)?;
    let b = imported.booster;
    let mut lineage: BTreeMap<String, String> = imported.lineage;
    lineage.insert("data".into(), format!("imported from {file}"));
    let m = package::manifest(&b, BTreeMap::new(), Default::default(), lineage);
    write_bytes(out, package::to_bytes(&b, &m)?).await?;
    Ok(ImportSummary {
        out: out.into(),
        trees: b.trees.len(),
        categorical: b
            .feature_names
            .iter()
            .zip(&b.mappers)
            .filter(|(_, m)| m.is_categorical())
            .map(|(n, _)| n.clone())
            .collect(),
        features: b.feature_names,
        objective: b.objective.name().into(),
        init_score: b.init_score,
    })
}

/// Writes a gradient-boosted model package as XGBoost JSON.
pub async fn export_model(model: &str, out: &str) -> Result<usize, ModelError> {
    let (b, _) = load_model(model).await?;
    let json = import::to_xgboost_json(&b).map_err(GbdtError::from)?;
    let n = json.len();
    write_bytes(out, json.into_bytes()).await?;
    Ok(n)
}
