//! Job configuration files (TOML). Each is one serde struct that refuses unknown keys;
//! precedence is defaults < file < environment < command line, applied in `main`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::sim::SimConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
}

/// `configs/quickstart.toml` and `contrail simulate --config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// The lake URL (a path, file://, s3://, memory://).
    pub lake: Option<String>,
    #[serde(default)]
    pub simulate: Option<SimSection>,
    /// A model trained on the curated lake (`contrail train --config`).
    #[serde(default)]
    pub train: Option<crate::models::LakeTrainConfig>,
    /// A hyperparameter search of the [train] model (`contrail tune --config`).
    #[serde(default)]
    pub tune: Option<crate::tune_lake::TuneSection>,
    /// A neural demand model on the curated lake (`contrail train --config`).
    #[serde(default)]
    pub demand: Option<crate::demand::DemandConfig>,
}

/// Simulation settings; every key optional, missing ones keep their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSection {
    pub seed: Option<u64>,
    pub days: Option<u32>,
    pub routes: Option<u32>,
    pub start_date: Option<String>,
    pub searches_per_route_day: Option<f64>,
    pub anomaly_rate: Option<f64>,
    /// Total rate of bad records, spread evenly over every kind.
    pub bad_rate: Option<f64>,
    /// Rates per kind of bad record (`[simulate.bad]`: malformed_json, missing_field,
    /// wrong_type, unknown_field, negative_fare, unknown_airport, return_before_departure,
    /// duplicate_event_id); overrides `bad_rate`.
    pub bad: Option<crate::sim::BadRates>,
    pub gzip_level: Option<i32>,
}

impl SimSection {
    pub fn apply(&self, cfg: &mut SimConfig) {
        if let Some(v) = self.seed {
            cfg.seed = v;
        }
        if let Some(v) = self.days {
            cfg.days = v;
        }
        if let Some(v) = self.routes {
            cfg.routes = v;
        }
        if let Some(v) = &self.start_date {
            cfg.start_date = v.clone();
        }
        if let Some(v) = self.searches_per_route_day {
            cfg.searches_per_route_day = v;
        }
        if let Some(v) = self.anomaly_rate {
            cfg.anomaly_rate = v;
        }
        if let Some(v) = self.bad_rate {
            cfg.bad = crate::sim::BadRates::uniform(v);
        }
        if let Some(b) = self.bad {
            cfg.bad = b;
        }
        if let Some(v) = self.gzip_level {
            cfg.gzip_level = v;
        }
    }
}

impl JobConfig {
    pub fn parse(text: &str, path: &str) -> Result<JobConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_string(),
            source,
        })
    }
    pub fn load(path: &Path) -> Result<JobConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        JobConfig::parse(&text, &p)
    }
}

/// The embedded quickstart configuration (also shipped as configs/quickstart.toml).
pub const QUICKSTART: &str = include_str!("../configs/quickstart.toml");
