//! Search spaces declared in TOML, and their warping to the unit cube.
//!
//! ```toml
//! [learning_rate]
//! type = "float"          # float | int | categorical
//! low = 0.001
//! high = 0.3
//! log = true              # optional: sample uniformly in log(value)
//!
//! [num_leaves]
//! type = "int"
//! low = 8
//! high = 512
//! log = true
//!
//! [boosting]
//! type = "categorical"
//! choices = ["gbdt", "goss"]   # strings, numbers or booleans
//!
//! [top_rate]                   # conditional: only sampled when boosting is "goss"
//! type = "float"
//! low = 0.05
//! high = 0.5
//! condition = { parameter = "boosting", equals = "goss" }
//! # or: condition = { parameter = "boosting", in = ["goss", "dart"] }
//! ```
//!
//! A bare value instead of a table (`dropout = 0.5`, or `bagging_freq = 1` before any
//! table) fixes a parameter: every trial gets that value (a categorical of one choice).
//!
//! A condition names a categorical or int parameter and the value(s) for which the
//! conditional parameter exists. Conditions may chain (a condition on a parameter that is
//! itself conditional); a parameter whose parent is inactive is inactive. An inactive
//! parameter is left out of the trial's parameters.
//!
//! Dimensions are the parameters in name order. A point of the space is one `f64` per
//! dimension: floats and ints in [0, 1] (log scales warped, an int's values each getting
//! an equal share of [0, 1]), categoricals as the index of the choice, and `NaN` for an
//! inactive parameter.

use serde_json::{Map, Value};

use crate::error::SpaceError;

/// What values a parameter takes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Float { low: f64, high: f64, log: bool },
    Int { low: i64, high: i64, log: bool },
    Categorical { choices: Vec<Value> },
}

/// When a parameter exists: its parent takes one of `values`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// Index of the parent parameter.
    pub parent: usize,
    pub values: Vec<Value>,
}

/// One parameter (one dimension).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub kind: Kind,
    pub condition: Option<Condition>,
}

/// A validated search space.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpace {
    params: Vec<Param>,
    /// Parameters in an order where every parent comes before its children.
    order: Vec<usize>,
}

fn toml_to_json(v: &toml::Value) -> Option<Value> {
    match v {
        toml::Value::String(s) => Some(Value::String(s.clone())),
        toml::Value::Integer(i) => Some(Value::from(*i)),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number),
        toml::Value::Boolean(b) => Some(Value::Bool(*b)),
        _ => None,
    }
}

fn num(parameter: &str, key: &str, v: &toml::Value) -> Result<f64, SpaceError> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) => Ok(*f),
        _ => Err(SpaceError::WrongType {
            parameter: parameter.into(),
            key: key.into(),
            expected: "a number",
        }),
    }
}

fn int(parameter: &str, key: &str, v: &toml::Value) -> Result<i64, SpaceError> {
    match v {
        toml::Value::Integer(i) => Ok(*i),
        _ => Err(SpaceError::WrongType {
            parameter: parameter.into(),
            key: key.into(),
            expected: "an integer",
        }),
    }
}

struct RawCondition {
    parent: String,
    values: Vec<Value>,
}

fn parse_condition(parameter: &str, v: &toml::Value) -> Result<RawCondition, SpaceError> {
    let wrong = |key: &str, expected: &'static str| SpaceError::WrongType {
        parameter: parameter.into(),
        key: key.into(),
        expected,
    };
    let t = v
        .as_table()
        .ok_or_else(|| wrong("condition", "a table { parameter = ..., equals = ... }"))?;
    let mut parent = None;
    let mut values = None;
    for (k, v) in t {
        match k.as_str() {
            "parameter" => {
                parent = Some(
                    v.as_str()
                        .ok_or_else(|| wrong("condition.parameter", "a string"))?
                        .to_string(),
                )
            }
            "equals" => {
                if values.is_some() {
                    return Err(SpaceError::ConditionShape {
                        parameter: parameter.into(),
                    });
                }
                values = Some(vec![
                    toml_to_json(v).ok_or_else(|| wrong("condition.equals", "a scalar"))?
                ]);
            }
            "in" => {
                if values.is_some() {
                    return Err(SpaceError::ConditionShape {
                        parameter: parameter.into(),
                    });
                }
                let arr = v
                    .as_array()
                    .ok_or_else(|| wrong("condition.in", "an array of scalars"))?;
                let vals = arr
                    .iter()
                    .map(|x| {
                        toml_to_json(x).ok_or_else(|| wrong("condition.in", "an array of scalars"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if vals.is_empty() {
                    return Err(SpaceError::ConditionShape {
                        parameter: parameter.into(),
                    });
                }
                values = Some(vals);
            }
            other => {
                return Err(SpaceError::UnknownKey {
                    parameter: parameter.into(),
                    key: format!("condition.{other}"),
                })
            }
        }
    }
    let parent = parent.ok_or(SpaceError::MissingKey {
        parameter: parameter.into(),
        key: "condition.parameter",
    })?;
    let values = values.ok_or(SpaceError::ConditionShape {
        parameter: parameter.into(),
    })?;
    Ok(RawCondition { parent, values })
}

fn parse_param(name: &str, v: &toml::Value) -> Result<(Kind, Option<RawCondition>), SpaceError> {
    let Some(t) = v.as_table() else {
        // A fixed value: every trial gets it.
        let value = toml_to_json(v).ok_or_else(|| SpaceError::NotATable {
            parameter: name.into(),
        })?;
        return Ok((
            Kind::Categorical {
                choices: vec![value],
            },
            None,
        ));
    };
    for k in t.keys() {
        if !matches!(
            k.as_str(),
            "type" | "low" | "high" | "log" | "choices" | "condition"
        ) {
            return Err(SpaceError::UnknownKey {
                parameter: name.into(),
                key: k.clone(),
            });
        }
    }
    let ty = t.get("type").ok_or(SpaceError::MissingKey {
        parameter: name.into(),
        key: "type",
    })?;
    let ty = ty.as_str().ok_or_else(|| SpaceError::WrongType {
        parameter: name.into(),
        key: "type".into(),
        expected: "a string",
    })?;
    let get = |key: &'static str| {
        t.get(key).ok_or(SpaceError::MissingKey {
            parameter: name.into(),
            key,
        })
    };
    let log = match t.get("log") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => {
            return Err(SpaceError::WrongType {
                parameter: name.into(),
                key: "log".into(),
                expected: "a boolean",
            })
        }
    };
    let not_applicable = |key: &'static str, kind: &'static str| SpaceError::NotApplicable {
        parameter: name.into(),
        key,
        kind,
    };
    let kind = match ty {
        "float" => {
            if t.contains_key("choices") {
                return Err(not_applicable("choices", "float"));
            }
            let low = num(name, "low", get("low")?)?;
            let high = num(name, "high", get("high")?)?;
            if !low.is_finite() || !high.is_finite() || !(high - low).is_finite() {
                return Err(SpaceError::NonFinite {
                    parameter: name.into(),
                });
            }
            if low >= high {
                return Err(SpaceError::EmptyRange {
                    parameter: name.into(),
                    low,
                    high,
                });
            }
            if log && low <= 0.0 {
                return Err(SpaceError::LogNonPositive {
                    parameter: name.into(),
                    low,
                });
            }
            Kind::Float { low, high, log }
        }
        "int" => {
            if t.contains_key("choices") {
                return Err(not_applicable("choices", "int"));
            }
            let low = int(name, "low", get("low")?)?;
            let high = int(name, "high", get("high")?)?;
            if low >= high {
                return Err(SpaceError::EmptyRange {
                    parameter: name.into(),
                    low: low as f64,
                    high: high as f64,
                });
            }
            if log && low <= 0 {
                return Err(SpaceError::LogNonPositive {
                    parameter: name.into(),
                    low: low as f64,
                });
            }
            Kind::Int { low, high, log }
        }
        "categorical" => {
            for key in ["low", "high", "log"] {
                if t.contains_key(key) {
                    return Err(not_applicable(key, "categorical"));
                }
            }
            let arr = get("choices")?
                .as_array()
                .ok_or_else(|| SpaceError::WrongType {
                    parameter: name.into(),
                    key: "choices".into(),
                    expected: "an array of strings, numbers or booleans",
                })?;
            if arr.is_empty() {
                return Err(SpaceError::EmptyChoices {
                    parameter: name.into(),
                });
            }
            let mut choices: Vec<Value> = Vec::with_capacity(arr.len());
            for c in arr {
                let c = toml_to_json(c).ok_or_else(|| SpaceError::WrongType {
                    parameter: name.into(),
                    key: "choices".into(),
                    expected: "an array of strings, numbers or booleans",
                })?;
                if choices.contains(&c) {
                    return Err(SpaceError::DuplicateChoice {
                        parameter: name.into(),
                        choice: c.to_string(),
                    });
                }
                choices.push(c);
            }
            Kind::Categorical { choices }
        }
        other => {
            return Err(SpaceError::UnknownType {
                parameter: name.into(),
                found: other.into(),
            })
        }
    };
    let cond = t
        .get("condition")
        .map(|c| parse_condition(name, c))
        .transpose()?;
    Ok((kind, cond))
}

impl SearchSpace {
    /// Parses and validates a space from TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, SpaceError> {
        let table: toml::Table = toml::from_str(text).map_err(SpaceError::Toml)?;
        Self::from_toml_table(&table)
    }

    /// Parses and validates a space from an already parsed TOML table (one sub-table per
    /// parameter), e.g. the `[tune.space]` section of a larger file.
    pub fn from_toml_table(table: &toml::Table) -> Result<Self, SpaceError> {
        let mut params = Vec::new();
        let mut raw_conds = Vec::new();
        for (name, v) in table {
            let (kind, cond) = parse_param(name, v)?;
            params.push(Param {
                name: name.clone(),
                kind,
                condition: None,
            });
            raw_conds.push(cond);
        }
        Self::build(params, raw_conds)
    }

    /// A space from parameters without conditions (e.g. for benchmark functions).
    pub fn new(params: Vec<(String, Kind)>) -> Result<Self, SpaceError> {
        let n = params.len();
        let mut ps: Vec<Param> = params
            .into_iter()
            .map(|(name, kind)| Param {
                name,
                kind,
                condition: None,
            })
            .collect();
        ps.sort_by(|a, b| a.name.cmp(&b.name));
        for p in &ps {
            validate_kind(&p.name, &p.kind)?;
        }
        Self::build(ps, (0..n).map(|_| None).collect())
    }

    fn build(mut params: Vec<Param>, raw: Vec<Option<RawCondition>>) -> Result<Self, SpaceError> {
        if params.is_empty() {
            return Err(SpaceError::Empty);
        }
        let index = |n: &str, ps: &[Param]| ps.iter().position(|p| p.name == n);
        for (i, rc) in raw.into_iter().enumerate() {
            let Some(rc) = rc else { continue };
            let name = params[i].name.clone();
            let parent =
                index(&rc.parent, &params).ok_or_else(|| SpaceError::UnknownConditionParent {
                    parameter: name.clone(),
                    parent: rc.parent.clone(),
                })?;
            match &params[parent].kind {
                Kind::Categorical { choices } => {
                    for v in &rc.values {
                        if !choices.contains(v) {
                            return Err(SpaceError::ConditionValue {
                                parameter: name,
                                parent: rc.parent,
                                value: v.to_string(),
                            });
                        }
                    }
                }
                Kind::Int { low, high, .. } => {
                    for v in &rc.values {
                        if !v.as_i64().is_some_and(|x| x >= *low && x <= *high) {
                            return Err(SpaceError::ConditionValue {
                                parameter: name,
                                parent: rc.parent,
                                value: v.to_string(),
                            });
                        }
                    }
                }
                Kind::Float { .. } => {
                    return Err(SpaceError::ConditionParentKind {
                        parameter: name,
                        parent: rc.parent,
                    })
                }
            }
            params[i].condition = Some(Condition {
                parent,
                values: rc.values,
            });
        }
        // Topological order with cycle detection (0 unvisited, 1 on the path, 2 done).
        let mut state = vec![0u8; params.len()];
        let mut order = Vec::with_capacity(params.len());
        for start in 0..params.len() {
            if state[start] == 2 {
                continue;
            }
            // Walk up the parent chain; conditions form a forest of chains upward.
            let mut path: Vec<usize> = vec![];
            let mut cur = start;
            loop {
                if state[cur] == 2 {
                    break;
                }
                if state[cur] == 1 {
                    let from = path.iter().position(|&p| p == cur).unwrap_or(0);
                    let mut names: Vec<&str> = path[from..]
                        .iter()
                        .map(|&p| params[p].name.as_str())
                        .collect();
                    names.push(params[cur].name.as_str());
                    return Err(SpaceError::ConditionCycle {
                        parameter: params[start].name.clone(),
                        cycle: names.join(" -> "),
                    });
                }
                state[cur] = 1;
                path.push(cur);
                match &params[cur].condition {
                    Some(c) => cur = c.parent,
                    None => break,
                }
            }
            for &p in path.iter().rev() {
                state[p] = 2;
                order.push(p);
            }
        }
        Ok(SearchSpace { params, order })
    }

    /// The parameters, in dimension order (by name).
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// Number of dimensions.
    pub fn dims(&self) -> usize {
        self.params.len()
    }

    /// Number of choices of dimension `i` if it is categorical.
    pub fn choices(&self, i: usize) -> Option<usize> {
        match &self.params[i].kind {
            Kind::Categorical { choices } => Some(choices.len()),
            _ => None,
        }
    }

    /// True if any parameter has a condition.
    pub fn has_conditions(&self) -> bool {
        self.params.iter().any(|p| p.condition.is_some())
    }

    fn value_of(&self, i: usize, x: f64) -> Value {
        match &self.params[i].kind {
            Kind::Float { low, high, log } => {
                let u = x.clamp(0.0, 1.0);
                let v = if *log {
                    (low.ln() + u * (high.ln() - low.ln())).exp()
                } else {
                    low + u * (high - low)
                };
                let v = v.clamp(*low, *high);
                serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
            }
            Kind::Int { low, high, log } => Value::from(int_of(*low, *high, *log, x)),
            Kind::Categorical { choices } => choices[cat_index(x, choices.len())].clone(),
        }
    }

    /// Makes a point canonical: ints and categoricals at their value's position, floats
    /// clamped to [0, 1], inactive dimensions `NaN` (and active ones given a value, 0.5 or
    /// choice 0, if they were `NaN`).
    pub fn canonicalize(&self, x: &mut [f64]) {
        for &i in &self.order {
            let active = match &self.params[i].condition {
                None => true,
                Some(c) => {
                    let px = x[c.parent];
                    !px.is_nan() && c.values.contains(&self.value_of(c.parent, px))
                }
            };
            if !active {
                x[i] = f64::NAN;
                continue;
            }
            let xi = x[i];
            x[i] = match &self.params[i].kind {
                Kind::Float { .. } => {
                    if xi.is_nan() {
                        0.5
                    } else {
                        xi.clamp(0.0, 1.0)
                    }
                }
                Kind::Int { low, high, log } => {
                    let xi = if xi.is_nan() { 0.5 } else { xi };
                    int_unit(*low, *high, *log, int_of(*low, *high, *log, xi))
                }
                Kind::Categorical { choices } => {
                    let xi = if xi.is_nan() { 0.0 } else { xi };
                    cat_index(xi, choices.len()) as f64
                }
            };
        }
    }

    /// The parameters of a canonical point (inactive ones left out).
    pub fn decode(&self, x: &[f64]) -> Map<String, Value> {
        let mut m = Map::new();
        for (i, p) in self.params.iter().enumerate() {
            if !x[i].is_nan() {
                m.insert(p.name.clone(), self.value_of(i, x[i]));
            }
        }
        m
    }

    /// The canonical point of some parameters; an error names a parameter that is missing,
    /// unknown, of the wrong type or out of range, or present while inactive.
    pub fn encode(&self, params: &Map<String, Value>) -> Result<Vec<f64>, String> {
        for k in params.keys() {
            if !self.params.iter().any(|p| &p.name == k) {
                return Err(format!("unknown parameter {k:?}"));
            }
        }
        let mut x = vec![f64::NAN; self.params.len()];
        for (i, p) in self.params.iter().enumerate() {
            let Some(v) = params.get(&p.name) else {
                continue;
            };
            x[i] = match &p.kind {
                Kind::Float { low, high, log } => {
                    let f = v
                        .as_f64()
                        .filter(|f| *f >= *low && *f <= *high)
                        .ok_or_else(|| {
                            format!("{}: {v} is not a float in [{low}, {high}]", p.name)
                        })?;
                    if *log {
                        ((f.ln() - low.ln()) / (high.ln() - low.ln())).clamp(0.0, 1.0)
                    } else {
                        ((f - low) / (high - low)).clamp(0.0, 1.0)
                    }
                }
                Kind::Int { low, high, log } => {
                    let n = v
                        .as_i64()
                        .filter(|n| *n >= *low && *n <= *high)
                        .ok_or_else(|| {
                            format!("{}: {v} is not an int in [{low}, {high}]", p.name)
                        })?;
                    int_unit(*low, *high, *log, n)
                }
                Kind::Categorical { choices } => choices
                    .iter()
                    .position(|c| c == v)
                    .ok_or_else(|| format!("{}: {v} is not one of the choices", p.name))?
                    as f64,
            };
        }
        let mut y = x.clone();
        self.canonicalize(&mut y);
        for (i, p) in self.params.iter().enumerate() {
            match (x[i].is_nan(), y[i].is_nan()) {
                (true, false) => return Err(format!("missing parameter {:?}", p.name)),
                (false, true) => return Err(format!("{:?} is given but inactive", p.name)),
                _ => {}
            }
        }
        Ok(y)
    }

    /// A canonical form of the space for the journal (so a resumed study can check it is
    /// the same space).
    pub fn fingerprint(&self) -> String {
        let mut s = String::new();
        for p in &self.params {
            s.push_str(&format!("{}={:?}", p.name, p.kind));
            if let Some(c) = &p.condition {
                s.push_str(&format!(
                    " if {} in {:?}",
                    self.params[c.parent].name, c.values
                ));
            }
            s.push(';');
        }
        s
    }
}

fn validate_kind(name: &str, kind: &Kind) -> Result<(), SpaceError> {
    match kind {
        Kind::Float { low, high, log } => {
            if !low.is_finite() || !high.is_finite() || !(high - low).is_finite() {
                return Err(SpaceError::NonFinite {
                    parameter: name.into(),
                });
            }
            if low >= high {
                return Err(SpaceError::EmptyRange {
                    parameter: name.into(),
                    low: *low,
                    high: *high,
                });
            }
            if *log && *low <= 0.0 {
                return Err(SpaceError::LogNonPositive {
                    parameter: name.into(),
                    low: *low,
                });
            }
        }
        Kind::Int { low, high, log } => {
            if low >= high {
                return Err(SpaceError::EmptyRange {
                    parameter: name.into(),
                    low: *low as f64,
                    high: *high as f64,
                });
            }
            if *log && *low <= 0 {
                return Err(SpaceError::LogNonPositive {
                    parameter: name.into(),
                    low: *low as f64,
                });
            }
        }
        Kind::Categorical { choices } => {
            if choices.is_empty() {
                return Err(SpaceError::EmptyChoices {
                    parameter: name.into(),
                });
            }
        }
    }
    Ok(())
}

fn cat_index(x: f64, n: usize) -> usize {
    (x.round().max(0.0) as usize).min(n - 1)
}

/// The int at unit position `u`: [0, 1] maps to [low - 0.5, high + 0.5] (log or linear),
/// rounded, so every value gets an equal share.
fn int_of(low: i64, high: i64, log: bool, u: f64) -> i64 {
    let u = u.clamp(0.0, 1.0);
    let (a, b) = (low as f64 - 0.5, high as f64 + 0.5);
    let v = if log {
        (a.ln() + u * (b.ln() - a.ln())).exp()
    } else {
        a + u * (b - a)
    };
    (v.round() as i64).clamp(low, high)
}

/// The unit position of int `n` (its log or linear position in [low - 0.5, high + 0.5]).
fn int_unit(low: i64, high: i64, log: bool, n: i64) -> f64 {
    let (a, b) = (low as f64 - 0.5, high as f64 + 0.5);
    let v = n as f64;
    let u = if log {
        (v.ln() - a.ln()) / (b.ln() - a.ln())
    } else {
        (v - a) / (b - a)
    };
    u.clamp(0.0, 1.0)
}
