//! End-to-end tests of `contrail tune` in black-box mode: a small sh/awk objective,
//! failing trials, determinism, and SIGKILL mid-trial followed by a resume; and in lake
//! mode (`--config`): the fare model tuned on a small simulated lake, pruning, the best
//! model package, resume, and config errors.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SPACE: &str = r#"
[x]
type = "float"
low = 0.0
high = 1.0
[y]
type = "float"
low = 0.0
high = 1.0
[mode]
type = "categorical"
choices = ["ok", "fail", "text", "ok2"]
"#;

/// The objective: (x - 0.3)² + (y - 0.7)² for modes ok/ok2; `fail` exits 3 with a
/// message; `text` prints words. Trial `$HANG_AT` (once) records its pid and sleeps.
/// Every run that is not killed appends its trial number to done.log.
const OBJECTIVE: &str = r#"
read p
mode=$(printf '%s' "$p" | awk -F'[:,}]' '{gsub(/"/, "", $2); print $2}')
if [ "$CONTRAIL_TRIAL" = "$HANG_AT" ] && [ ! -f "$LOGDIR/hung" ]; then
  echo $$ > "$LOGDIR/hung"
  exec sleep 30
fi
echo "$CONTRAIL_TRIAL" >> "$LOGDIR/done.log"
case "$mode" in
  fail) echo "bad things" >&2; exit 3 ;;
  text) echo "not a number" ;;
  *) printf '%s' "$p" | awk -F'[:,}]' '{ print "some log line"; printf "%.17g\n", ($4 - 0.3)^2 + ($6 - 0.7)^2 }' ;;
esac
"#;

fn setup(dir: &Path) {
    std::fs::write(dir.join("space.toml"), SPACE).expect("space");
    std::fs::write(dir.join("objective.sh"), OBJECTIVE).expect("objective");
}

fn tune_cmd(dir: &Path, out: &str, extra: &[&str], hang_at: Option<usize>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_contrail"));
    c.current_dir(dir)
        .args([
            "tune",
            "--space",
            "space.toml",
            "--command",
            "sh objective.sh",
            "--out",
            out,
        ])
        .args(extra)
        .env("LOGDIR", dir)
        .env("HANG_AT", hang_at.map_or("none".into(), |h| h.to_string()));
    c
}

fn tune(dir: &Path, out: &str, extra: &[&str]) -> Output {
    tune_cmd(dir, out, extra, None)
        .output()
        .expect("run contrail")
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("journal")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a journal line"))
        .collect()
}

/// Every asked trial's parameters, by trial number.
fn asked(recs: &[Value]) -> Vec<Value> {
    recs.iter()
        .filter(|r| r["record"] == "ask")
        .flat_map(|r| r["trials"].as_array().cloned().unwrap_or_default())
        .map(|t| t["params"].clone())
        .collect()
}

fn best_line(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON line on stdout: {stdout}"
    );
    serde_json::from_str(stdout.trim()).expect("JSON")
}

#[test]
fn black_box_study_records_failures_and_prints_the_best() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let out = tune(
        dir.path(),
        "study",
        &[
            "--trials",
            "24",
            "--sampler",
            "tpe",
            "--parallel",
            "2",
            "--seed",
            "3",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let best = best_line(&out);
    let recs = records(&dir.path().join("study/journal.jsonl"));
    let params = asked(&recs);
    assert_eq!(params.len(), 24);
    let tells: Vec<&Value> = recs.iter().filter(|r| r["record"] == "tell").collect();
    assert_eq!(tells.len(), 24);
    // The best is the smallest complete value, with its trial's parameters.
    let (bt, bv) = tells
        .iter()
        .filter(|r| r["state"] == "complete")
        .map(|r| {
            (
                r["trial"].as_u64().unwrap_or(0),
                r["value"].as_f64().unwrap_or(f64::NAN),
            )
        })
        .fold((0, f64::INFINITY), |b, c| if c.1 < b.1 { c } else { b });
    assert_eq!(best["trial"].as_u64(), Some(bt));
    assert_eq!(best["value"].as_f64(), Some(bv));
    assert_eq!(best["params"], params[bt as usize]);
    let (x, y) = (
        best["params"]["x"].as_f64().unwrap_or(9.0),
        best["params"]["y"].as_f64().unwrap_or(9.0),
    );
    assert!(((x - 0.3).powi(2) + (y - 0.7).powi(2) - bv).abs() < 1e-9);
    // Failures, with their reasons; the study went on past them.
    let reason = |mode: &str| -> Vec<String> {
        tells
            .iter()
            .filter(|r| params[r["trial"].as_u64().unwrap_or(0) as usize]["mode"] == mode)
            .map(|r| format!("{} {}", r["state"], r["reason"]))
            .collect()
    };
    let fails = reason("fail");
    assert!(!fails.is_empty(), "the sampler never tried mode=fail");
    assert!(
        fails
            .iter()
            .all(|r| r.contains("failed") && r.contains("exit status 3: bad things")),
        "{fails:?}"
    );
    let texts = reason("text");
    assert!(!texts.is_empty(), "the sampler never tried mode=text");
    assert!(
        texts.iter().all(|r| r.contains("not a number")),
        "{texts:?}"
    );
    let report = std::fs::read_to_string(dir.path().join("study/report.html")).expect("report");
    assert!(
        report.contains("<svg")
            && report.contains("Optimisation history")
            && report.contains(">mode<")
    );
}

#[test]
fn same_seed_same_study_and_maximize() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let args = [
        "--trials",
        "14",
        "--sampler",
        "gp",
        "--parallel",
        "3",
        "--seed",
        "7",
    ];
    let a = tune(dir.path(), "a", &args);
    let b = tune(dir.path(), "b", &args);
    assert!(a.status.success() && b.status.success());
    assert_eq!(best_line(&a), best_line(&b));
    let pa = asked(&records(&dir.path().join("a/journal.jsonl")));
    assert_eq!(pa, asked(&records(&dir.path().join("b/journal.jsonl"))));
    let c = tune(
        dir.path(),
        "c",
        &[
            "--trials",
            "14",
            "--sampler",
            "gp",
            "--parallel",
            "3",
            "--seed",
            "8",
        ],
    );
    assert!(c.status.success());
    assert_ne!(pa, asked(&records(&dir.path().join("c/journal.jsonl"))));
    // Maximising the same objective: the best is the largest value.
    let m = tune(
        dir.path(),
        "m",
        &[
            "--trials",
            "8",
            "--sampler",
            "random",
            "--direction",
            "maximize",
        ],
    );
    assert!(m.status.success());
    let best = best_line(&m)["value"].as_f64().unwrap_or(f64::NAN);
    let recs = records(&dir.path().join("m/journal.jsonl"));
    let max = recs
        .iter()
        .filter(|r| r["state"] == "complete")
        .filter_map(|r| r["value"].as_f64())
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best, max);
}

#[test]
fn sigkill_mid_trial_then_resume_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    let args = ["--trials", "12", "--sampler", "gp", "--seed", "5"];
    // Uninterrupted reference (its own log dir so done.log is not shared).
    let refdir = tempfile::tempdir().expect("tempdir");
    setup(refdir.path());
    let reference = tune(refdir.path(), "ref", &args);
    assert!(reference.status.success());
    // Trial 7 hangs; kill -9 the tuner while it runs.
    let mut child = tune_cmd(dir.path(), "study", &args, Some(7))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let hung = dir.path().join("hung");
    let start = Instant::now();
    while !hung.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "trial 7 never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    // Stop the orphaned objective too (it execs sleep under the pid it wrote).
    if let Ok(pid) = std::fs::read_to_string(&hung) {
        let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    }
    let recs = records(&dir.path().join("study/journal.jsonl"));
    assert_eq!(recs.iter().filter(|r| r["record"] == "tell").count(), 7);
    // Resume: trial 7 runs again with the same parameters, then 8..11.
    let out = tune(dir.path(), "study", &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(best_line(&out), best_line(&reference));
    let recs = records(&dir.path().join("study/journal.jsonl"));
    assert_eq!(
        asked(&recs),
        asked(&records(&refdir.path().join("ref/journal.jsonl")))
    );
    for t in 0..12u64 {
        let tells = recs
            .iter()
            .filter(|r| r["record"] == "tell" && r["trial"] == t)
            .count();
        assert_eq!(tells, 1, "trial {t} told {tells} times");
    }
    assert!(recs
        .iter()
        .any(|r| r["record"] == "restart" && r["trial"] == 7));
    // Each trial's command finished exactly once (the killed run of 7 never finished).
    let mut done: Vec<u64> = std::fs::read_to_string(dir.path().join("done.log"))
        .expect("done.log")
        .lines()
        .map(|l| l.trim().parse().expect("a trial number"))
        .collect();
    done.sort_unstable();
    assert_eq!(done, (0..12).collect::<Vec<u64>>());
}

#[test]
fn bad_space_and_options_are_user_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    setup(dir.path());
    std::fs::write(
        dir.path().join("space.toml"),
        "[lr]\ntype = \"float\"\nlow = 0.5\nhigh = 0.1\n",
    )
    .expect("write");
    let out = tune(dir.path(), "s", &["--trials", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"lr\"") && err.contains("low (0.5) must be below high (0.1)"),
        "{err}"
    );
    setup(dir.path());
    let out = tune(dir.path(), "s", &["--trials", "3", "--parallel", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // A resumed study must be the same study.
    assert!(tune(dir.path(), "s", &["--trials", "2", "--seed", "1"])
        .status
        .success());
    let out = tune(dir.path(), "s", &["--trials", "3", "--seed", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed"));
    // A command that never succeeds: no best trial, a user error naming the reason.
    let mut c = Command::new(env!("CARGO_BIN_EXE_contrail"));
    let out = c
        .current_dir(dir.path())
        .args([
            "tune",
            "--space",
            "space.toml",
            "--command",
            "exit 9",
            "--trials",
            "2",
            "--out",
            "never",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exit status 9"));
}

// ---------------------------------------------------------------------------------------
// Lake mode: `contrail tune --config`.

fn contrail(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_contrail"))
        .current_dir(dir)
        .args(args)
        .env_remove("CONTRAIL_LAKE")
        .output()
        .expect("run contrail")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small study of the fare model: 6 trials, 2 at a time, median pruning after 2
/// complete trials and 3 rounds.
const LAKE_TUNE: &str = r#"
lake = "lake"
[train]
target = "price"
valid_days = 1
test_days = 1
out = "lake/models/fare.ctm"
[train.params]
num_iterations = 40
early_stopping_round = 10
[tune]
trials = 6
parallel = 2
seed = 3
metric = "rmse"
pruner = "median"
startup_trials = 2
warmup_steps = 3
[tune.space.learning_rate]
type = "float"
low = 0.02
high = 0.3
log = true
[tune.space.num_leaves]
type = "int"
low = 4
high = 64
[tune.space.min_data_in_leaf]
type = "int"
low = 5
high = 100
[tune.space.lambda_l2]
type = "float"
low = 0.001
high = 10.0
log = true
"#;

/// The manifest `contrail inspect` prints first (a pretty JSON object).
fn inspect_manifest(dir: &Path, model: &str) -> Value {
    let out = contrail(dir, &["inspect", model]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let end = text.find("\n}\n").expect("the manifest") + 2;
    serde_json::from_str(&text[..end]).expect("manifest JSON")
}

/// Simulates a lake of `days` days and `routes` routes in `d`, writes `config` as
/// tune.toml and runs `contrail tune --config tune.toml --out study` on it.
fn tune_on_a_lake(d: &Path, days: &str, routes: &str, config: &str) -> Output {
    for args in [
        &["-q", "simulate", "--days", days, "--routes", routes][..],
        &["-q", "etl"][..],
    ] {
        let out = contrail(d, args);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    std::fs::write(d.join("tune.toml"), config).expect("config");
    let out = contrail(d, &["tune", "--config", "tune.toml", "--out", "study"]);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// A study's journal: its tell records (`n`, one a trial) and each trial's reported
/// steps, checked to be 1, 2, ... (a value every round or epoch).
fn told_and_steps(d: &Path, n: usize) -> (Vec<Value>, Vec<Vec<u64>>) {
    let recs = records(&d.join("study/journal.jsonl"));
    let tells: Vec<Value> = recs
        .iter()
        .filter(|r| r["record"] == "tell")
        .cloned()
        .collect();
    assert_eq!(tells.len(), n);
    let steps = (0..n as u64)
        .map(|t| {
            let steps: Vec<u64> = recs
                .iter()
                .filter(|r| r["record"] == "report" && r["trial"] == t)
                .map(|r| r["step"].as_u64().expect("step"))
                .collect();
            assert!(!steps.is_empty(), "trial {t} reported nothing");
            assert_eq!(steps, (1..=steps.len() as u64).collect::<Vec<_>>());
            steps
        })
        .collect();
    (tells, steps)
}

/// The best line's value is the best value told, and `study/best.contrail` is that
/// trial's model (its `metric` is the value); returns the package's manifest.
fn best_is_told_and_packaged(d: &Path, best: &Value, tells: &[Value], metric: &str) -> Value {
    let value = best["value"].as_f64().expect("value");
    let best_told = tells
        .iter()
        .filter_map(|r| r["value"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(value, best_told);
    let m = inspect_manifest(d, "study/best.contrail");
    let v = m["metrics"][metric].as_f64().expect("the metric");
    assert!(((v - value) / value).abs() < 1e-9, "{v} vs {value}");
    m
}

/// Running the study again resumes: it has its trials, nothing new is asked or run.
fn reruns_without_asking(d: &Path, best: &Value) {
    let journal = d.join("study/journal.jsonl");
    let before = std::fs::read_to_string(&journal).expect("journal");
    let again = contrail(d, &["tune", "--config", "tune.toml", "--out", "study"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(&best_line(&again), best);
    assert_eq!(std::fs::read_to_string(&journal).expect("journal"), before);
}

#[test]
fn lake_mode_tunes_prunes_keeps_the_best_model_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = tune_on_a_lake(d, "3", "10", LAKE_TUNE);
    let best = best_line(&out);
    let p = &best["params"];
    let lr = p["learning_rate"].as_f64().expect("learning_rate");
    assert!((0.02..=0.3).contains(&lr), "{best}");
    let leaves = p["num_leaves"].as_i64().expect("num_leaves an int");
    assert!((4..=64).contains(&leaves), "{best}");
    let mdl = p["min_data_in_leaf"]
        .as_i64()
        .expect("min_data_in_leaf an int");
    assert!((5..=100).contains(&mdl), "{best}");
    let l2 = p["lambda_l2"].as_f64().expect("lambda_l2");
    assert!((0.001..=10.0).contains(&l2), "{best}");
    // Per-trial lines on stderr; no progress bar off a terminal.
    let err = stderr(&out);
    assert!(err.contains("trial 0: valid-rmse "), "{err}");
    assert!(!err.contains("trials  best"), "{err}");

    // The journal: every trial told, every one reported its validation RMSE each round
    // (steps 1, 2, ...), and the pruner stopped at least one (this seed prunes trial 5 at
    // round 3; a pruned trial's reports end before num_iterations).
    let (tells, steps) = told_and_steps(d, 6);
    for (t, steps) in steps.iter().enumerate() {
        let tell = tells.iter().find(|r| r["trial"] == t).expect("told");
        if tell["state"] == "pruned" {
            assert!(steps.len() < 40, "trial {t} pruned after its last round");
        }
    }
    let pruned = tells.iter().filter(|r| r["state"] == "pruned").count();
    assert!(pruned >= 1, "no trial pruned: {tells:?}");
    assert!(err.contains("pruned at round"), "{err}");

    // best.contrail is the best trial's model: its validation RMSE is the study's best.
    let m = best_is_told_and_packaged(d, &best, &tells, "valid-rmse");
    assert_eq!(m["lineage"]["tune_trial"], best["trial"].to_string());
    let params: Value = serde_json::from_str(
        &std::fs::read_to_string(d.join("study/best_params.json")).expect("best_params.json"),
    )
    .expect("JSON");
    assert_eq!(&params, p);
    let report = std::fs::read_to_string(d.join("study/report.html")).expect("report");
    assert!(report.contains("<svg"));

    reruns_without_asking(d, &best);

    // Without its model file, the best trial is trained again: the same model.
    std::fs::remove_file(d.join("study/best.contrail")).expect("rm");
    let again = contrail(d, &["tune", "--config", "tune.toml", "--out", "study"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let m2 = inspect_manifest(d, "study/best.contrail");
    assert_eq!(m2["metrics"], m["metrics"]);

    // A resume with another model or metric is refused, naming what changed.
    let other = LAKE_TUNE.replace("num_iterations = 40", "num_iterations = 50");
    std::fs::write(d.join("other.toml"), other).expect("config");
    let out = contrail(d, &["tune", "--config", "other.toml", "--out", "study"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another train"), "{}", stderr(&out));
}

#[test]
fn lake_mode_config_errors_name_the_culprit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases = [
        (
            LAKE_TUNE.replace("[tune.space.lambda_l2]", "[tune.space.lambda_l3]"),
            "unknown parameter `lambda_l3`",
        ),
        (
            LAKE_TUNE.replace("metric = \"rmse\"", "metric = \"rmsle\""),
            "unknown metric \"rmsle\"",
        ),
        (
            LAKE_TUNE.replace("low = 4\n", "low = 1\n"),
            "parameter `num_leaves`",
        ),
        (
            LAKE_TUNE.replace("type = \"int\"", "type = \"float\""),
            "takes whole numbers",
        ),
        (
            LAKE_TUNE.replace("pruner = \"median\"", "pruner = \"median\"\nbogus = 1"),
            "unknown field `bogus`",
        ),
        (
            LAKE_TUNE.replace(
                "metric = \"rmse\"",
                "metric = \"rmse\"\ndirection = \"maximize\"",
            ),
            "maximize for rmse",
        ),
        (
            LAKE_TUNE[..LAKE_TUNE.find("[tune]").expect("[tune]")].to_string(),
            "[tune]: bad6.toml has none",
        ),
    ];
    for (i, (config, want)) in cases.iter().enumerate() {
        let name = format!("bad{i}.toml");
        std::fs::write(d.join(&name), config).expect("config");
        let out = contrail(d, &["tune", "--config", &name, "--out", "s"]);
        assert_eq!(out.status.code(), Some(2), "{want}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{want}: {}", stderr(&out));
        assert!(
            !d.join("s").exists(),
            "{want}: a bad config started a study"
        );
    }
    // The two modes do not mix.
    std::fs::write(d.join("ok.toml"), LAKE_TUNE).expect("config");
    let out = contrail(d, &["tune", "--config", "ok.toml", "--trials", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot be used with"),
        "{}",
        stderr(&out)
    );
    // The shipped config is a valid job.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tune_fare_price.toml");
    let cfg = contrail::config::JobConfig::load(&shipped).expect("parses");
    contrail::tune_lake::LakeTuneJob::new(&shipped, cfg.train, cfg.tune, None)
        .expect("a valid tuning job");
    // So is the demand network's: its space parses, names tunable parameters only, and
    // its fixed values reach the trials (one network a trial, not the config's five).
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demand_nn.toml");
    let cfg = contrail::config::JobConfig::load(&shipped).expect("parses");
    let (demand, tune) = (cfg.demand.expect("[demand]"), cfg.tune.expect("[tune]"));
    assert_eq!(demand.params.ensemble, 5);
    let space = contrail::tuning::SearchSpace::from_toml_table(&tune.space).expect("a space");
    let mut fixed = serde_json::Map::new();
    for p in space.params() {
        assert!(
            contrail::tune_demand::KNOWN.contains(&p.name.as_str()),
            "{}",
            p.name
        );
        if let contrail::tuning::Kind::Categorical { choices } = &p.kind {
            if choices.len() == 1 {
                fixed.insert(p.name.clone(), choices[0].clone());
            }
        }
    }
    let trial = contrail::tune_demand::trial_params(&demand.params, &fixed).expect("params");
    assert_eq!(trial.ensemble, 1);
    assert_eq!(trial.batch_size, 2048);
}

/// The report's parameter importances find the parameter the objective depends on.
#[test]
fn importances_rank_the_parameter_that_matters_first() {
    use contrail::tuning::{
        Direction, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult, TrialState,
    };
    let space = SearchSpace::from_toml_str(
        r#"
[lr]
type = "float"
low = 0.001
high = 1.0
log = true
[noise]
type = "float"
low = 0.0
high = 1.0
[kind]
type = "categorical"
choices = ["a", "b"]
"#,
    )
    .expect("space");
    let config = StudyConfig {
        sampler: SamplerKind::Random,
        seed: 4,
        direction: Direction::Minimize,
        n_startup: None,
    };
    let mut study = Study::in_memory(space, config);
    for _ in 0..40 {
        for t in study.ask(1).expect("ask") {
            let p = &study.trials()[t].params;
            let lr = p["lr"].as_f64().expect("lr");
            let noise = p["noise"].as_f64().expect("noise");
            // Depends on lr (strongly) and a little on noise; not on kind.
            let v = (lr.ln() - 0.01f64.ln()).powi(2) + 0.05 * noise;
            study.tell(t, TrialResult::Complete(v)).expect("tell");
        }
    }
    let complete: Vec<(usize, f64, &serde_json::Map<String, Value>)> = study
        .trials()
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .map(|t| (t.number, t.value.expect("value"), &t.params))
        .collect();
    let imp = contrail::tune::parameter_importances(&study, &complete);
    assert_eq!(imp.len(), 3, "{imp:?}");
    assert_eq!(imp[0].0, "lr", "{imp:?}");
    assert!(imp[0].1 > 0.8, "{imp:?}");
    let total: f64 = imp.iter().map(|x| x.1).sum();
    assert!((total - 1.0).abs() < 1e-9);
    // Deterministic, and in the report.
    assert_eq!(
        imp,
        contrail::tune::parameter_importances(&study, &complete)
    );
    let html = contrail::tune::render_report(&study);
    assert!(html.contains("Parameter importances") && html.contains(">lr</text>"));
    // Too few trials: none.
    assert!(contrail::tune::parameter_importances(&study, &complete[..5]).is_empty());
    // Any finite objective's scale: an objective 1e200 times larger has the same shares
    // (its values are beyond what training takes as a target unless rescaled).
    let huge: Vec<(usize, f64, &serde_json::Map<String, Value>)> = complete
        .iter()
        .map(|&(n, v, p)| (n, v * 1e200, p))
        .collect();
    let big = contrail::tune::parameter_importances(&study, &huge);
    assert_eq!(big.len(), 3, "{big:?}");
    for (a, b) in imp.iter().zip(&big) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-6, "{imp:?} vs {big:?}");
    }
}

/// A small study of the demand network: median pruning on the validation nll of each
/// epoch after one complete trial and one epoch (this seed prunes trial 2, a learning
/// rate of 8e-5, at epoch 1).
const DEMAND_TUNE: &str = r#"
lake = "lake"
[demand]
task = "counts"
window_days = 3
out = "lake/models/demand.ctm"
[demand.params]
hidden = [16]
max_epochs = 6
batch_size = 512
early_stopping_rounds = 0
[tune]
trials = 6
seed = 5
metric = "nll"
pruner = "median"
startup_trials = 1
warmup_steps = 1
[tune.space.learning_rate]
type = "float"
low = 0.00001
high = 0.03
log = true
[tune.space.width]
type = "int"
low = 8
high = 64
"#;

#[test]
fn a_demand_network_study_prunes_on_epochs_and_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let out = tune_on_a_lake(d, "10", "12", DEMAND_TUNE);
    let best = best_line(&out);
    let err = stderr(&out);
    // Every trial reported its validation nll each epoch; a pruned trial's reports end
    // before max_epochs, a complete one's run to it (no patience).
    let (tells, steps) = told_and_steps(d, 6);
    for (t, steps) in steps.iter().enumerate() {
        let tell = tells.iter().find(|r| r["trial"] == t).expect("told");
        let state = tell["state"].as_str();
        assert!(
            matches!(state, Some("pruned" | "complete")),
            "trial {t}: {state:?}"
        );
        if state == Some("pruned") {
            assert!(steps.len() < 6, "trial {t} pruned after its last epoch");
        } else {
            assert_eq!(steps.len(), 6, "trial {t}");
        }
    }
    let pruned = tells.iter().filter(|r| r["state"] == "pruned").count();
    assert!(pruned >= 1, "no trial pruned: {tells:?}\n{err}");
    assert!(err.contains("pruned at epoch"), "{err}");
    // The best trial is a complete one, and its package is the one written.
    best_is_told_and_packaged(d, &best, &tells, "valid-nll");
    reruns_without_asking(d, &best);
}
