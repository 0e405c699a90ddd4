//! A study: trials asked and told, backed by an append-only journal.
//!
//! The journal is JSON lines, one record per line, each written with a single `write`
//! and made durable (`fsync`) before the call returns:
//!
//! ```text
//! {"record":"study","version":1,"space":"...","sampler":"gp","seed":1,"direction":"minimize"}
//! {"record":"ask","trials":[{"trial":0,"params":{"x":0.25}}]}
//! {"record":"report","trial":0,"step":10,"value":0.7}
//! {"record":"restart","trial":0}
//! {"record":"tell","trial":0,"state":"complete","value":0.5}
//! {"record":"tell","trial":1,"state":"failed","reason":"exit status 1"}
//! ```
//!
//! A batch of suggestions is one `ask` record, so a kill either keeps the whole batch or
//! none of it (and suggestions are a pure function of the seed and the results, so the
//! batch is asked again identically). Opening an existing journal replays it: a torn last
//! line (no newline: the process died inside the write) is cut off and ignored; trials
//! asked but never told are *running*, for the driver to run again with the same
//! parameters ([`Study::restart`]). No told trial is lost, and none is run twice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::TuneError;
use crate::pruner::Pruner;
use crate::sampler::{Observation, Outcome, Sampler, SamplerKind};
use crate::space::SearchSpace;

/// Whether smaller or larger objective values are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Minimize,
    Maximize,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "minimize" => Ok(Direction::Minimize),
            "maximize" => Ok(Direction::Maximize),
            o => Err(format!(
                "unknown direction {o:?} (expected minimize or maximize)"
            )),
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        })
    }
}

/// Where a trial stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialState {
    Running,
    Complete,
    Pruned,
    Failed,
}

/// One trial.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    pub number: usize,
    pub params: Map<String, Value>,
    /// The canonical point of the parameters in the unit cube.
    pub x: Vec<f64>,
    pub state: TrialState,
    /// The objective value (complete trials).
    pub value: Option<f64>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Intermediate values by step, in the order reported.
    pub intermediate: Vec<(u64, f64)>,
    /// Number of trials asked before this one's batch: samplers and pruners only compare
    /// it with those, which keeps decisions independent of timing within a batch.
    pub batch_start: usize,
}

/// How a trial ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TrialResult {
    Complete(f64),
    Failed(String),
    Pruned,
}

/// How to run a study.
#[derive(Clone, Debug)]
pub struct StudyConfig {
    pub sampler: SamplerKind,
    pub seed: u64,
    pub direction: Direction,
    /// Start-up design size; `None` for the sampler's default.
    pub n_startup: Option<usize>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "lowercase", deny_unknown_fields)]
enum Record {
    Study {
        version: u32,
        space: String,
        sampler: SamplerKind,
        seed: u64,
        direction: Direction,
    },
    Ask {
        trials: Vec<Asked>,
        /// The sampler's model state (the GP's fitted hyperparameters), to warm-start the
        /// next batch identically after a resume.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<Vec<f64>>,
    },
    Report {
        trial: usize,
        step: u64,
        value: f64,
    },
    Restart {
        trial: usize,
    },
    Tell {
        trial: usize,
        state: TrialState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Asked {
    trial: usize,
    params: Map<String, Value>,
}

struct Journal {
    path: PathBuf,
    file: File,
}

impl Journal {
    fn append(&mut self, r: &Record) -> Result<(), TuneError> {
        let mut line = serde_json::to_string(r).map_err(|e| TuneError::InvalidSetting {
            setting: "record",
            what: e.to_string(),
        })?;
        line.push('\n');
        let io = |op| {
            let path = self.path.clone();
            move |source| TuneError::Io { path, op, source }
        };
        self.file.write_all(line.as_bytes()).map_err(io("append"))?;
        self.file.sync_data().map_err(io("fsync"))?;
        Ok(())
    }
}

/// A study: the space, the sampler and every trial so far.
pub struct Study {
    space: SearchSpace,
    config: StudyConfig,
    sampler: Sampler,
    trials: Vec<Trial>,
    journal: Option<Journal>,
    model: Option<Vec<f64>>,
}

impl Study {
    /// A study kept in memory only.
    pub fn in_memory(space: SearchSpace, config: StudyConfig) -> Self {
        let mut sampler = Sampler::new(config.sampler, config.seed, space.dims());
        if let Some(n) = config.n_startup {
            sampler.n_startup = n;
        }
        Study {
            space,
            config,
            sampler,
            trials: Vec::new(),
            journal: None,
            model: None,
        }
    }

    /// Opens the study journaled at `path`: creates it, or resumes it after checking that
    /// it belongs to this space, sampler, seed and direction.
    pub fn open(path: &Path, space: SearchSpace, config: StudyConfig) -> Result<Self, TuneError> {
        let mut study = Study::in_memory(space, config);
        let io = |op: &'static str| {
            let path = path.to_path_buf();
            move |source| TuneError::Io { path, op, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io("open"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io("read"))?;
        // A torn last line: cut it off so the next record starts on a line of its own.
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if keep < bytes.len() {
            file.set_len(keep as u64)
                .map_err(io("truncate torn line"))?;
            file.sync_data().map_err(io("fsync"))?;
            bytes.truncate(keep);
        }
        file.seek(SeekFrom::End(0)).map_err(io("seek"))?;
        let fresh = bytes.is_empty();
        study.journal = Some(Journal {
            path: path.to_path_buf(),
            file,
        });
        if fresh {
            let header = study.header();
            study.append(&header)?;
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Make the new file's directory entry durable too.
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
            return Ok(study);
        }
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            let rec: Record =
                serde_json::from_str(line).map_err(|source| TuneError::CorruptJournal {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })?;
            study.replay(path, i + 1, rec)?;
        }
        Ok(study)
    }

    fn header(&self) -> Record {
        Record::Study {
            version: 1,
            space: self.space.fingerprint(),
            sampler: self.config.sampler,
            seed: self.config.seed,
            direction: self.config.direction,
        }
    }

    fn replay(&mut self, path: &Path, line: usize, rec: Record) -> Result<(), TuneError> {
        let bad = |what: String| TuneError::InconsistentJournal {
            path: path.to_path_buf(),
            line,
            what,
        };
        let mismatch = |field, journal: String, now: String| TuneError::StudyMismatch {
            path: path.to_path_buf(),
            field,
            journal,
            now,
        };
        if line == 1 && !matches!(rec, Record::Study { .. }) {
            return Err(bad("the first record must be the study header".into()));
        }
        match rec {
            Record::Study {
                version,
                space,
                sampler,
                seed,
                direction,
            } => {
                if line != 1 {
                    return Err(bad("a second study header".into()));
                }
                if version != 1 {
                    return Err(mismatch("version", version.to_string(), "1".into()));
                }
                if space != self.space.fingerprint() {
                    return Err(mismatch("space", space, self.space.fingerprint()));
                }
                if sampler != self.config.sampler {
                    return Err(mismatch(
                        "sampler",
                        sampler.to_string(),
                        self.config.sampler.to_string(),
                    ));
                }
                if seed != self.config.seed {
                    return Err(mismatch(
                        "seed",
                        seed.to_string(),
                        self.config.seed.to_string(),
                    ));
                }
                if direction != self.config.direction {
                    return Err(mismatch(
                        "direction",
                        direction.to_string(),
                        self.config.direction.to_string(),
                    ));
                }
            }
            Record::Ask { trials, model } => {
                if model.is_some() {
                    self.model = model;
                }
                let batch_start = self.trials.len();
                for a in trials {
                    if a.trial != self.trials.len() {
                        return Err(bad(format!(
                            "trial {} asked, expected trial {}",
                            a.trial,
                            self.trials.len()
                        )));
                    }
                    let x = self
                        .space
                        .encode(&a.params)
                        .map_err(|e| bad(format!("trial {}: {e}", a.trial)))?;
                    self.trials.push(Trial {
                        number: a.trial,
                        params: a.params,
                        x,
                        state: TrialState::Running,
                        value: None,
                        reason: None,
                        intermediate: Vec::new(),
                        batch_start,
                    });
                }
            }
            Record::Report { trial, step, value } => {
                let t = self.running_mut(trial).map_err(|e| bad(e.to_string()))?;
                t.intermediate.push((step, value));
            }
            Record::Restart { trial } => {
                let t = self.running_mut(trial).map_err(|e| bad(e.to_string()))?;
                t.intermediate.clear();
            }
            Record::Tell {
                trial,
                state,
                value,
                reason,
            } => {
                let t = self.running_mut(trial).map_err(|e| bad(e.to_string()))?;
                if state == TrialState::Running
                    || (state == TrialState::Complete && value.is_none())
                {
                    return Err(bad(format!("trial {trial}: tell without an outcome")));
                }
                t.state = state;
                t.value = value;
                t.reason = reason;
            }
        }
        Ok(())
    }

    fn append(&mut self, r: &Record) -> Result<(), TuneError> {
        match &mut self.journal {
            Some(j) => j.append(r),
            None => Ok(()),
        }
    }

    fn running_mut(&mut self, trial: usize) -> Result<&mut Trial, TuneError> {
        match self.trials.get_mut(trial) {
            Some(t) if t.state == TrialState::Running => Ok(t),
            _ => Err(TuneError::NotRunning { trial }),
        }
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// The configuration.
    pub fn config(&self) -> &StudyConfig {
        &self.config
    }

    /// Every trial, by number.
    pub fn trials(&self) -> &[Trial] {
        &self.trials
    }

    /// Trials asked and not yet told (after a resume: those the driver must run again).
    pub fn running(&self) -> Vec<usize> {
        self.trials
            .iter()
            .filter(|t| t.state == TrialState::Running)
            .map(|t| t.number)
            .collect()
    }

    fn observations(&self) -> Vec<Observation> {
        let sign = match self.config.direction {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        };
        self.trials
            .iter()
            .map(|t| Observation {
                trial: t.number,
                x: t.x.clone(),
                outcome: match t.state {
                    TrialState::Running => Outcome::Running,
                    TrialState::Complete => Outcome::Complete(sign * t.value.unwrap_or(f64::NAN)),
                    TrialState::Pruned => {
                        Outcome::Pruned(t.intermediate.last().map(|(_, v)| sign * v))
                    }
                    TrialState::Failed => Outcome::Failed,
                },
            })
            .collect()
    }

    /// Asks for `n` new trials (a batch for `n` workers; journaled as one record).
    /// Returns their numbers.
    pub fn ask(&mut self, n: usize) -> Result<Vec<usize>, TuneError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let start = self.trials.len();
        let numbers: Vec<usize> = (start..start + n).collect();
        let sug = self.sampler.suggest(
            &self.space,
            &self.observations(),
            &numbers,
            self.model.as_deref(),
        );
        let points = sug.points;
        let asked: Vec<Asked> = numbers
            .iter()
            .zip(&points)
            .map(|(&t, x)| Asked {
                trial: t,
                params: self.space.decode(x),
            })
            .collect();
        let model = sug.model.filter(|m| Some(m) != self.model.as_ref());
        let params: Vec<Map<String, Value>> = asked.iter().map(|a| a.params.clone()).collect();
        self.append(&Record::Ask {
            trials: asked,
            model: model.clone(),
        })?;
        if model.is_some() {
            self.model = model;
        }
        for ((number, params), x) in numbers.iter().zip(params).zip(points) {
            self.trials.push(Trial {
                number: *number,
                params,
                x,
                state: TrialState::Running,
                value: None,
                reason: None,
                intermediate: Vec::new(),
                batch_start: start,
            });
        }
        Ok(numbers)
    }

    /// Records an intermediate value of a running trial.
    pub fn report(&mut self, trial: usize, step: u64, value: f64) -> Result<(), TuneError> {
        if !value.is_finite() {
            return Err(TuneError::NonFiniteValue { trial, value });
        }
        self.running_mut(trial)?;
        self.append(&Record::Report { trial, step, value })?;
        self.running_mut(trial)?.intermediate.push((step, value));
        Ok(())
    }

    /// Starts a running trial over (after a resume): its intermediate values are dropped.
    pub fn restart(&mut self, trial: usize) -> Result<(), TuneError> {
        self.running_mut(trial)?;
        self.append(&Record::Restart { trial })?;
        self.running_mut(trial)?.intermediate.clear();
        Ok(())
    }

    /// Whether `pruner` stops a running trial at its latest reported step.
    pub fn should_prune(&self, trial: usize, pruner: &Pruner) -> bool {
        match self.trials.get(trial) {
            Some(t) if t.state == TrialState::Running => {
                let sign = match self.config.direction {
                    Direction::Minimize => 1.0,
                    Direction::Maximize => -1.0,
                };
                pruner.should_prune(t, &self.trials[..t.batch_start], sign)
            }
            _ => false,
        }
    }

    /// Records how a running trial ended. A non-finite value makes the trial failed.
    pub fn tell(&mut self, trial: usize, result: TrialResult) -> Result<(), TuneError> {
        self.running_mut(trial)?;
        let (state, value, reason) = match result {
            TrialResult::Complete(v) if v.is_finite() => (TrialState::Complete, Some(v), None),
            TrialResult::Complete(v) => (
                TrialState::Failed,
                None,
                Some(format!("objective value {v} is not finite")),
            ),
            TrialResult::Failed(r) => (TrialState::Failed, None, Some(r)),
            TrialResult::Pruned => (TrialState::Pruned, None, None),
        };
        self.append(&Record::Tell {
            trial,
            state,
            value,
            reason: reason.clone(),
        })?;
        let t = self.running_mut(trial)?;
        t.state = state;
        t.value = value;
        t.reason = reason;
        Ok(())
    }

    /// The best complete trial (the earliest among equals).
    pub fn best(&self) -> Option<&Trial> {
        let better = |a: f64, b: f64| match self.config.direction {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        };
        let mut best: Option<&Trial> = None;
        for t in &self.trials {
            if let (TrialState::Complete, Some(v)) = (t.state, t.value) {
                if best.is_none_or(|b| better(v, b.value.unwrap_or(f64::NAN))) {
                    best = Some(t);
                }
            }
        }
        best
    }
}
