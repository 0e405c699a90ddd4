//! Median and successive-halving pruning on intermediate values.

use contrail_tune::{Direction, Pruner, SamplerKind, SearchSpace, Study, StudyConfig, TrialResult};

fn study(direction: Direction) -> Study {
    let space = SearchSpace::from_toml_str("[x]\ntype = \"float\"\nlow = 0.0\nhigh = 1.0\n")
        .expect("space");
    Study::in_memory(
        space,
        StudyConfig {
            sampler: SamplerKind::Random,
            seed: 1,
            direction,
            n_startup: None,
        },
    )
}

/// Runs a trial whose intermediate values are `curve` (step 1, 2, ...) under `pruner`;
/// returns the step it was pruned at, if it was.
fn run(s: &mut Study, curve: &[f64], pruner: &Pruner) -> Option<u64> {
    let t = s.ask(1).expect("ask")[0];
    for (i, v) in curve.iter().enumerate() {
        let step = i as u64 + 1;
        s.report(t, step, *v).expect("report");
        if s.should_prune(t, pruner) {
            s.tell(t, TrialResult::Pruned).expect("tell");
            return Some(step);
        }
    }
    s.tell(t, TrialResult::Complete(*curve.last().unwrap_or(&0.0)))
        .expect("tell");
    None
}

#[test]
fn median_pruner_stops_trials_worse_than_the_median() {
    let p = Pruner::Median {
        n_startup_trials: 3,
        n_warmup_steps: 2,
    };
    let mut s = study(Direction::Minimize);
    // Start-up trials are never pruned, however bad.
    assert_eq!(run(&mut s, &[5.0, 4.0, 3.0, 2.0], &p), None);
    assert_eq!(run(&mut s, &[6.0, 5.0, 4.0, 3.0], &p), None);
    assert_eq!(run(&mut s, &[9.0, 9.0, 9.0, 9.0], &p), None);
    // Medians at steps 1..4: 6, 5, 4, 3. Better than the median: runs to the end.
    assert_eq!(run(&mut s, &[5.5, 4.5, 3.5, 2.5], &p), None);
    // Worse than the median from the start, but not pruned before the warm-up (step 2).
    assert_eq!(run(&mut s, &[8.0, 8.0, 8.0, 8.0], &p), Some(2));
    // Good early, bad later: its best so far counts. Medians of the complete trials at
    // steps 2 and 3: 4.75 and 3.75 (trial 4 was pruned, so it does not count): pruned at 3.
    assert_eq!(run(&mut s, &[4.0, 4.0, 4.0, 4.0], &p), Some(3));
    // Maximising: the same curves negated give the same decisions.
    let mut s = study(Direction::Maximize);
    for c in [
        [5.0, 4.0, 3.0, 2.0],
        [6.0, 5.0, 4.0, 3.0],
        [9.0, 9.0, 9.0, 9.0],
    ] {
        let neg: Vec<f64> = c.iter().map(|v| -v).collect();
        assert_eq!(run(&mut s, &neg, &p), None);
    }
    assert_eq!(run(&mut s, &[-8.0, -8.0, -8.0, -8.0], &p), Some(2));
}

#[test]
fn successive_halving_keeps_the_top_fraction_at_each_rung() {
    // Rungs at steps 1, 3, 9 (min resource 1, η = 3).
    let p = Pruner::SuccessiveHalving {
        min_resource: 1,
        reduction_factor: 3,
        min_early_stopping_rate: 0,
    };
    let mut s = study(Direction::Minimize);
    let curve = |start: f64| -> Vec<f64> { (0..10).map(|i| start - 0.01 * i as f64).collect() };
    // The first trial is promoted at every rung (alone, it is its own top third).
    assert_eq!(run(&mut s, &curve(1.0), &p), None);
    // Worse at rung 1 than the best third of {1.0, 2.0} (index 2/3 - 1 -> 0, i.e. the best).
    assert_eq!(run(&mut s, &curve(2.0), &p), Some(1));
    // Better: promoted everywhere.
    assert_eq!(run(&mut s, &curve(0.5), &p), None);
    // Among 4 values at rung 1 {1.0, 2.0, 0.5, 0.7}: top 4/3 = 1 -> must beat 0.5: pruned.
    assert_eq!(run(&mut s, &curve(0.7), &p), Some(1));
    // The best so far: promoted everywhere.
    assert_eq!(run(&mut s, &curve(0.4), &p), None);
    // Six values at rung 1: the best two go on, and 0.45 is second; but at rung 3 (step 3)
    // four values {0.98, 0.48, 0.38, 0.43}: only the best goes on.
    assert_eq!(run(&mut s, &curve(0.45), &p), Some(3));
    // A trial promoted at rung 1 but worse at rung 3 (step 3) is pruned there.
    let mut c = curve(0.3);
    c[2] = 5.0;
    assert_eq!(run(&mut s, &c, &p), Some(3));
}
