//! Samplers against the space (bounds, types, conditions), seeded reproducibility, batch
//! suggestions, and the GP against random search on Branin.

use contrail_tune::bench::TestFunction;
use contrail_tune::{Direction, Kind, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult};
use serde_json::{Map, Value};

const MIXED: &str = r#"
[lr]
type = "float"
low = 0.001
high = 0.3
log = true
[leaves]
type = "int"
low = 2
high = 300
log = true
[depth]
type = "int"
low = -1
high = 12
[boosting]
type = "categorical"
choices = ["gbdt", "goss", "dart"]
[top_rate]
type = "float"
low = 0.1
high = 0.5
condition = { parameter = "boosting", equals = "goss" }
[drop]
type = "categorical"
choices = [true, false]
condition = { parameter = "boosting", in = ["dart"] }
[drop_k]
type = "int"
low = 1
high = 4
condition = { parameter = "drop", equals = true }
"#;

const SAMPLERS: [SamplerKind; 3] = [SamplerKind::Random, SamplerKind::Tpe, SamplerKind::Gp];

/// A made-up objective that depends on every parameter, conditional ones included.
fn objective(p: &Map<String, Value>) -> f64 {
    let lr = p["lr"].as_f64().unwrap_or(1.0);
    let leaves = p["leaves"].as_i64().unwrap_or(0) as f64;
    let depth = p["depth"].as_i64().unwrap_or(0) as f64;
    let mut v = (lr.ln() - 0.05f64.ln()).powi(2)
        + (leaves.ln() - 4.0).powi(2) * 0.3
        + (depth - 6.0).abs() * 0.1;
    v += match p["boosting"].as_str() {
        Some("goss") => (p["top_rate"].as_f64().unwrap_or(0.0) - 0.2).abs(),
        Some("dart") => 0.5 + p.get("drop_k").and_then(Value::as_i64).unwrap_or(0) as f64 * 0.1,
        _ => 0.3,
    };
    v
}

fn check_params(space: &SearchSpace, p: &Map<String, Value>) {
    let boosting = p["boosting"].as_str().expect("boosting is a string");
    assert!(["gbdt", "goss", "dart"].contains(&boosting));
    assert_eq!(p.contains_key("top_rate"), boosting == "goss", "{p:?}");
    assert_eq!(p.contains_key("drop"), boosting == "dart", "{p:?}");
    let drop_on = p.get("drop").and_then(Value::as_bool) == Some(true);
    assert_eq!(p.contains_key("drop_k"), drop_on, "{p:?}");
    for param in space.params() {
        let Some(v) = p.get(&param.name) else {
            continue;
        };
        match &param.kind {
            Kind::Float { low, high, .. } => {
                let f = v.as_f64().expect("float");
                assert!(v.is_f64() && f >= *low && f <= *high, "{}: {v}", param.name);
            }
            Kind::Int { low, high, .. } => {
                let i = v.as_i64().expect("an integer, not a float");
                assert!(i >= *low && i <= *high, "{}: {v}", param.name);
            }
            Kind::Categorical { choices } => assert!(choices.contains(v), "{}: {v}", param.name),
        }
    }
}

fn run(kind: SamplerKind, seed: u64, trials: usize, batch: usize) -> Vec<Map<String, Value>> {
    let space = SearchSpace::from_toml_str(MIXED).expect("valid");
    let config = StudyConfig {
        sampler: kind,
        seed,
        direction: Direction::Minimize,
        n_startup: None,
    };
    let mut study = Study::in_memory(space.clone(), config);
    while study.trials().len() < trials {
        for t in study.ask(batch).expect("ask") {
            let p = study.trials()[t].params.clone();
            check_params(&space, &p);
            // Every 7th trial fails: samplers must carry on.
            let r = if t % 7 == 3 {
                TrialResult::Failed("boom".into())
            } else {
                TrialResult::Complete(objective(&p))
            };
            study.tell(t, r).expect("tell");
        }
    }
    study.trials().iter().map(|t| t.params.clone()).collect()
}

#[test]
fn every_sampler_respects_bounds_types_and_conditions() {
    for kind in SAMPLERS {
        let params = run(kind, 3, 40, 1);
        assert_eq!(params.len(), 40);
        // Conditional branches all get explored.
        for b in ["gbdt", "goss", "dart"] {
            assert!(
                params.iter().any(|p| p["boosting"] == b),
                "{kind}: never {b}"
            );
        }
    }
}

#[test]
fn fixed_values_reach_every_trial_of_every_sampler() {
    let space = format!("ensemble = 1\nhead = \"poisson\"\n{MIXED}");
    for kind in SAMPLERS {
        let space = SearchSpace::from_toml_str(&space).expect("valid");
        let config = StudyConfig {
            sampler: kind,
            seed: 4,
            direction: Direction::Minimize,
            n_startup: None,
        };
        let mut study = Study::in_memory(space.clone(), config);
        while study.trials().len() < 30 {
            for t in study.ask(2).expect("ask") {
                let p = study.trials()[t].params.clone();
                check_params(&space, &p);
                assert_eq!(p["ensemble"], 1, "{kind}");
                assert_eq!(p["head"], "poisson", "{kind}");
                study
                    .tell(t, TrialResult::Complete(objective(&p)))
                    .expect("tell");
            }
        }
    }
}

#[test]
fn same_seed_same_suggestions_other_seed_others() {
    for kind in SAMPLERS {
        let a = run(kind, 11, 25, 1);
        let b = run(kind, 11, 25, 1);
        assert_eq!(a, b, "{kind}");
        let c = run(kind, 12, 25, 1);
        assert_ne!(a, c, "{kind}");
        // Batches (constant liar): reproducible and never repeating a point in a batch.
        let a = run(kind, 5, 24, 4);
        assert_eq!(a, run(kind, 5, 24, 4), "{kind} batch");
        for chunk in a.chunks(4) {
            for i in 0..chunk.len() {
                for j in i + 1..chunk.len() {
                    assert_ne!(chunk[i], chunk[j], "{kind}: a batch repeats a point");
                }
            }
        }
    }
}

#[test]
fn suggestions_do_not_depend_on_thread_count() {
    let run_in = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| run(SamplerKind::Gp, 9, 20, 2))
    };
    assert_eq!(run_in(1), run_in(3));
}

fn best_after(kind: SamplerKind, f: TestFunction, seed: u64, trials: usize) -> f64 {
    let config = StudyConfig {
        sampler: kind,
        seed,
        direction: Direction::Minimize,
        n_startup: None,
    };
    let mut study = Study::in_memory(f.space(), config);
    let mut best = f64::INFINITY;
    while study.trials().len() < trials {
        for t in study.ask(1).expect("ask") {
            let v = f.eval_params(&study.trials()[t].params).expect("params");
            best = best.min(v);
            study.tell(t, TrialResult::Complete(v)).expect("tell");
        }
    }
    best - f.optimum()
}

/// GP-EI beats random search on Branin at 50 trials on every one of five seeds, and its
/// median regret is small in absolute terms.
#[test]
fn gp_beats_random_on_branin_at_50_trials() {
    let mut gp = Vec::new();
    for seed in 1..=5 {
        let g = best_after(SamplerKind::Gp, TestFunction::Branin, seed, 50);
        let r = best_after(SamplerKind::Random, TestFunction::Branin, seed, 50);
        assert!(g < r, "seed {seed}: gp regret {g} vs random {r}");
        gp.push(g);
    }
    gp.sort_by(f64::total_cmp);
    assert!(gp[2] < 0.05, "median gp regret {}", gp[2]);
}

/// TPE beats random search on Hartmann6 at 100 trials on median over five seeds.
#[test]
fn tpe_beats_random_on_hartmann6() {
    let med = |kind| {
        let mut v: Vec<f64> = (1..=5)
            .map(|s| best_after(kind, TestFunction::Hartmann6, s, 100))
            .collect();
        v.sort_by(f64::total_cmp);
        v[2]
    };
    let (t, r) = (med(SamplerKind::Tpe), med(SamplerKind::Random));
    assert!(t < r, "tpe {t} vs random {r}");
}
