//! Errors of the tuning library: each variant names what was wrong and keeps its source.

use std::path::PathBuf;

/// A search space that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("search space is not valid TOML")]
    Toml(#[source] toml::de::Error),
    #[error("search space declares no parameters")]
    Empty,
    #[error("parameter {parameter:?}: expected a table of settings or one fixed value (a string, number or boolean)")]
    NotATable { parameter: String },
    #[error("parameter {parameter:?}: missing key {key:?}")]
    MissingKey {
        parameter: String,
        key: &'static str,
    },
    #[error("parameter {parameter:?}: unknown key {key:?} (expected type, low, high, log, choices, condition)")]
    UnknownKey { parameter: String, key: String },
    #[error("parameter {parameter:?}: key {key:?} must be {expected}")]
    WrongType {
        parameter: String,
        key: String,
        expected: &'static str,
    },
    #[error(
        "parameter {parameter:?}: unknown type {found:?} (expected float, int or categorical)"
    )]
    UnknownType { parameter: String, found: String },
    #[error("parameter {parameter:?}: key {key:?} does not apply to a {kind} parameter")]
    NotApplicable {
        parameter: String,
        key: &'static str,
        kind: &'static str,
    },
    #[error("parameter {parameter:?}: low ({low}) must be below high ({high})")]
    EmptyRange {
        parameter: String,
        low: f64,
        high: f64,
    },
    #[error("parameter {parameter:?}: bounds (and their difference) must be finite")]
    NonFinite { parameter: String },
    #[error("parameter {parameter:?}: a log scale needs low > 0 (got {low})")]
    LogNonPositive { parameter: String, low: f64 },
    #[error("parameter {parameter:?}: choices must not be empty")]
    EmptyChoices { parameter: String },
    #[error("parameter {parameter:?}: choice {choice} appears twice")]
    DuplicateChoice { parameter: String, choice: String },
    #[error("parameter {parameter:?}: condition refers to unknown parameter {parent:?}")]
    UnknownConditionParent { parameter: String, parent: String },
    #[error("parameter {parameter:?}: condition on {parent:?} must be on a categorical or int parameter")]
    ConditionParentKind { parameter: String, parent: String },
    #[error(
        "parameter {parameter:?}: condition value {value} is not a possible value of {parent:?}"
    )]
    ConditionValue {
        parameter: String,
        parent: String,
        value: String,
    },
    #[error("parameter {parameter:?}: conditions form a cycle ({cycle})")]
    ConditionCycle { parameter: String, cycle: String },
    #[error("parameter {parameter:?}: condition needs exactly one of `equals` or `in`")]
    ConditionShape { parameter: String },
}

/// An error of a study: its journal, its configuration or a call out of order.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error("journal {path}: {op}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}, line {line}: not a valid record")]
    CorruptJournal {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("journal {path}, line {line}: {what}")]
    InconsistentJournal {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("journal {path} belongs to a different study: {field} was {journal}, now {now}")]
    StudyMismatch {
        path: PathBuf,
        field: &'static str,
        journal: String,
        now: String,
    },
    #[error("trial {trial} is not running")]
    NotRunning { trial: usize },
    #[error("trial {trial}: value {value} is not finite")]
    NonFiniteValue { trial: usize, value: f64 },
    #[error("trial {trial}: parameters do not fit the search space: {what}")]
    BadParams { trial: usize, what: String },
    #[error("invalid setting {setting}: {what}")]
    InvalidSetting { setting: &'static str, what: String },
}

impl TuneError {
    /// True when the user can fix it (bad space, settings or a journal of another study);
    /// false for I/O failures.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, TuneError::Io { .. })
    }
}
