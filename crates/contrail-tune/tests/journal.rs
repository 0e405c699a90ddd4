//! The study journal: resume after a kill (a torn last line included) loses and repeats
//! nothing and suggests what the uninterrupted study did; failures keep their reasons;
//! a journal of another study or a corrupt one is refused with a typed error.

use std::io::Write;
use std::path::Path;

use contrail_tune::bench::TestFunction;
use contrail_tune::{
    Direction, SamplerKind, Study, StudyConfig, TrialResult, TrialState, TuneError,
};

const F: TestFunction = TestFunction::Hartmann6;

fn config(kind: SamplerKind) -> StudyConfig {
    StudyConfig {
        sampler: kind,
        seed: 4,
        direction: Direction::Minimize,
        n_startup: None,
    }
}

fn result(study: &Study, t: usize) -> TrialResult {
    if t % 5 == 2 {
        TrialResult::Failed(format!("trial {t} crashed"))
    } else {
        TrialResult::Complete(F.eval_params(&study.trials()[t].params).unwrap_or(f64::NAN))
    }
}

/// Runs batches of 2 until `total` trials are told; `stop_after` tells only that many
/// trials in total and returns (the kill).
fn drive(path: &Path, kind: SamplerKind, total: usize, stop_after: Option<usize>) -> Study {
    let mut study = Study::open(path, F.space(), config(kind)).expect("open");
    let mut told = study
        .trials()
        .iter()
        .filter(|t| t.state != TrialState::Running)
        .count();
    // A resumed study first runs what was running when it died, with the same parameters.
    for t in study.running() {
        study.restart(t).expect("restart");
        let r = result(&study, t);
        study.tell(t, r).expect("tell");
        told += 1;
    }
    while study.trials().len() < total {
        for t in study.ask(2).expect("ask") {
            if stop_after == Some(told) {
                return study;
            }
            let r = result(&study, t);
            study.tell(t, r).expect("tell");
            told += 1;
        }
    }
    study
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

#[test]
fn kill_and_resume_loses_and_repeats_nothing() {
    for kind in [SamplerKind::Gp, SamplerKind::Tpe] {
        let dir = tempfile::tempdir().expect("tempdir");
        let reference = drive(&dir.path().join("ref.jsonl"), kind, 16, None);
        let path = dir.path().join("study.jsonl");
        // Killed with trial 9 running (asked in the batch 8-9, 8 told).
        let killed = drive(&path, kind, 16, Some(9));
        assert_eq!(killed.running(), vec![9]);
        drop(killed);
        // ... in the middle of writing a record: a torn last line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        f.write_all(br#"{"record":"tell","trial":9,"sta"#)
            .expect("write");
        drop(f);
        let resumed = drive(&path, kind, 16, None);
        assert_eq!(resumed.trials().len(), 16);
        for (a, b) in reference.trials().iter().zip(resumed.trials()) {
            assert_eq!(a.params, b.params, "{kind}: trial {}", a.number);
            assert_eq!((a.state, a.value, &a.reason), (b.state, b.value, &b.reason));
        }
        // Every trial asked once and told once in the journal.
        let recs = lines(&path);
        for t in 0..16 {
            let asked = recs
                .iter()
                .filter(|r| r["record"] == "ask")
                .flat_map(|r| r["trials"].as_array().cloned().unwrap_or_default())
                .filter(|a| a["trial"] == t)
                .count();
            let told = recs
                .iter()
                .filter(|r| r["record"] == "tell" && r["trial"] == t)
                .count();
            assert_eq!((asked, told), (1, 1), "{kind}: trial {t}");
        }
        // The failed trials kept their reasons through the resume.
        let reopened = Study::open(&path, F.space(), config(kind)).expect("reopen");
        assert!(reopened.running().is_empty());
        let t2 = &reopened.trials()[2];
        assert_eq!(t2.state, TrialState::Failed);
        assert_eq!(t2.reason.as_deref(), Some("trial 2 crashed"));
    }
}

/// A kill while the batch's ask record was being written: the batch is gone and is asked
/// again, identically.
#[test]
fn torn_ask_record_is_asked_again_identically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = drive(&dir.path().join("ref.jsonl"), SamplerKind::Gp, 14, None);
    let path = dir.path().join("study.jsonl");
    drop(drive(&path, SamplerKind::Gp, 12, None));
    let text = std::fs::read_to_string(&path).expect("read");
    // Replace the last complete line... keep all, then add half of the next batch's ask.
    let next_ask = std::fs::read_to_string(dir.path().join("ref.jsonl"))
        .expect("read")
        .lines()
        .filter(|l| l.contains("\"record\":\"ask\""))
        .nth(6)
        .expect("the 7th batch")
        .to_string();
    std::fs::write(&path, format!("{text}{}", &next_ask[..next_ask.len() / 2])).expect("write");
    let resumed = drive(&path, SamplerKind::Gp, 14, None);
    for (a, b) in reference.trials().iter().zip(resumed.trials()) {
        assert_eq!(a.params, b.params, "trial {}", a.number);
    }
    assert!(
        lines(&path).len() > 1,
        "the torn line was cut, the rest parses"
    );
}

#[test]
fn another_study_or_a_corrupt_journal_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("study.jsonl");
    drop(drive(&path, SamplerKind::Random, 4, None));
    let mut other = config(SamplerKind::Random);
    other.seed = 5;
    let e = Study::open(&path, F.space(), other)
        .err()
        .expect("seed mismatch");
    assert!(
        matches!(e, TuneError::StudyMismatch { field: "seed", .. }),
        "{e}"
    );
    let e = Study::open(&path, F.space(), config(SamplerKind::Tpe))
        .err()
        .expect("sampler");
    assert!(
        matches!(
            e,
            TuneError::StudyMismatch {
                field: "sampler",
                ..
            }
        ),
        "{e}"
    );
    let e = Study::open(
        &path,
        TestFunction::Branin.space(),
        config(SamplerKind::Random),
    )
    .err()
    .expect("space");
    assert!(
        matches!(e, TuneError::StudyMismatch { field: "space", .. }),
        "{e}"
    );
    // A damaged line in the middle is not a torn tail: refuse, with the line number.
    let text = std::fs::read_to_string(&path).expect("read");
    let mut ls: Vec<&str> = text.lines().collect();
    ls[2] = "{not json";
    std::fs::write(&path, ls.join("\n") + "\n").expect("write");
    let e = Study::open(&path, F.space(), config(SamplerKind::Random))
        .err()
        .expect("corrupt");
    assert!(
        matches!(e, TuneError::CorruptJournal { line: 3, .. }),
        "{e}"
    );
    // Telling a trial twice is refused.
    let mut s = Study::in_memory(F.space(), config(SamplerKind::Random));
    let t = s.ask(1).expect("ask")[0];
    s.tell(t, TrialResult::Complete(1.0)).expect("tell");
    assert!(matches!(
        s.tell(t, TrialResult::Complete(1.0)),
        Err(TuneError::NotRunning { trial: 0 })
    ));
    // A non-finite objective value makes the trial failed, with the reason.
    let t = s.ask(1).expect("ask")[0];
    s.tell(t, TrialResult::Complete(f64::NAN)).expect("tell");
    assert_eq!(s.trials()[t].state, TrialState::Failed);
    assert!(s.trials()[t]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("not finite")));
}
