//! Runs a sampler on a test function and prints, per seed, one JSON line with the best
//! value so far after every trial and the time of each suggestion:
//!
//!     cargo run --release -p contrail-tune --example bench_functions -- \
//!         --function branin --sampler gp --seeds 1,2,3 --trials 100
//!
//! Used by scripts/compare_tuning.py; the study is the library's own (journal-free).

use std::time::Instant;

use contrail_tune::bench::TestFunction;
use contrail_tune::{Direction, SamplerKind, Study, StudyConfig, TrialResult};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut function = TestFunction::Branin;
    let mut sampler = SamplerKind::Gp;
    let mut seeds = vec![1u64];
    let mut trials = 100usize;
    let mut batch = 1usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).ok_or("missing value")?;
        match args[i].as_str() {
            "--function" => function = v.parse()?,
            "--sampler" => sampler = v.parse()?,
            "--seeds" => seeds = v.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?,
            "--trials" => trials = v.parse()?,
            "--batch" => batch = v.parse()?,
            o => return Err(format!("unknown argument {o}").into()),
        }
        i += 2;
    }
    for seed in seeds {
        let config = StudyConfig {
            sampler,
            seed,
            direction: Direction::Minimize,
            n_startup: None,
        };
        let mut study = Study::in_memory(function.space(), config);
        let mut best = f64::INFINITY;
        let mut best_so_far = Vec::with_capacity(trials);
        let mut ask_ms = Vec::new();
        while study.trials().len() < trials {
            let n = batch.min(trials - study.trials().len());
            let t0 = Instant::now();
            let asked = study.ask(n)?;
            ask_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            for t in asked {
                let v = function
                    .eval_params(&study.trials()[t].params)
                    .ok_or("a parameter is missing")?;
                best = best.min(v);
                best_so_far.push(best);
                study.tell(t, TrialResult::Complete(v))?;
            }
        }
        println!(
            "{}",
            serde_json::json!({
                "function": format!("{function:?}"),
                "sampler": sampler.to_string(),
                "seed": seed,
                "optimum": function.optimum(),
                "best_so_far": best_so_far,
                "ask_ms": ask_ms,
            })
        );
    }
    Ok(())
}
