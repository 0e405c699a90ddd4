//! End-to-end tests of the `contrail` binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use contrail::store::testkit::{S3Server, TempDir};

mod common;
use common::{contrail, parquet_schema, read_parquet, text, write_parquet};

/// Every file under `root`, relative path to contents.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("prefix").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[test]
fn quickstart_runs_on_a_fresh_folder() {
    let dir = TempDir::new("cli-qs").expect("tmp");
    let out = contrail(
        &dir.0,
        &["quickstart", "--days", "2", "--routes", "12"],
        &[],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for want in [
        "curated/flight_searches",
        "quarantine reason",
        "balanced",
        "lead_time_days",
        "busiest routes",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(stderr.contains("etl:"), "logs go to stderr:\n{stderr}");
    assert!(!stdout.contains("INFO"), "logs leaked to stdout");
    assert!(dir.0.join("lake/meta/etl/summary.json").is_file());
    // Quiet mode: no logs.
    let out = contrail(&dir.0, &["-q", "summary"], &[]);
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("raw/flight_searches"));
    // Enough days for the models: the fare model and the anomaly flags are reported.
    let dir = TempDir::new("cli-qs4").expect("tmp");
    let out = contrail(
        &dir.0,
        &["quickstart", "--days", "4", "--routes", "12"],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for want in [
        "against the true expected fare",
        "fare anomalies: isolation forest",
        "injected error fares",
        "recall",
        "AUROC",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in:\n{stdout}");
    }
    assert!(dir.0.join("lake/models/fare_anomaly.ctm").is_file());
}

#[test]
fn simulation_is_deterministic_for_a_seed_and_any_thread_count() {
    let dir = TempDir::new("cli-det").expect("tmp");
    let args = |lake: &str| -> Vec<String> {
        [
            "simulate",
            "--lake",
            lake,
            "--days",
            "2",
            "--routes",
            "10",
            "--seed",
            "11",
            "--bad-rate",
            "0.05",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |lake: &str, threads: &str| {
        let a = args(lake);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        let out = contrail(&dir.0, &a, &[("RAYON_NUM_THREADS", threads.to_string())]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        tree(&dir.0.join(lake))
    };
    let one = run("l1", "1");
    let two = run("l2", "2");
    let again = run("l3", "2");
    assert!(
        one.keys().any(|k| k.ends_with(".jsonl.gz")) && one.keys().any(|k| k.starts_with("truth/"))
    );
    assert_eq!(one, two, "1 vs 2 threads");
    assert_eq!(two, again, "same seed twice");
    let other = {
        let out = contrail(
            &dir.0,
            &[
                "simulate", "--lake", "l4", "--days", "2", "--routes", "10", "--seed", "12",
            ],
            &[],
        );
        assert!(out.status.success());
        tree(&dir.0.join("l4"))
    };
    assert_ne!(one, other);
}

#[test]
fn simulate_stdout_pipes_into_ingest() {
    let dir = TempDir::new("cli-pipe").expect("tmp");
    let sim = contrail(
        &dir.0,
        &[
            "simulate",
            "--stdout",
            "--lake",
            "truth-lake",
            "--days",
            "1",
            "--routes",
            "8",
        ],
        &[],
    );
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    let lines = sim.stdout.iter().filter(|&&c| c == b'\n').count();
    assert!(lines > 1000);
    let mut ingest = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .current_dir(&dir.0)
        .args(["ingest", "--lake", "ingested"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ingest");
    ingest
        .stdin
        .take()
        .expect("stdin")
        .write_all(&sim.stdout)
        .expect("pipe");
    let out = ingest.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("json report on stdout");
    assert_eq!(report["events"].as_u64(), Some(lines as u64));
    let etl = contrail(&dir.0, &["etl", "--lake", "ingested"], &[]);
    assert!(etl.status.success(), "{}", text(&etl.stderr));
    let r: serde_json::Value = serde_json::from_slice(&etl.stdout).expect("json");
    assert_eq!(r["run"]["rows_read"].as_u64(), Some(lines as u64));
    assert_eq!(r["run"]["curated"].as_u64(), Some(lines as u64));
}

#[test]
fn bad_input_gives_clear_errors_and_user_exit_codes() {
    let dir = TempDir::new("cli-bad").expect("tmp");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["simulate", "--days", "0"], "days"),
        (vec!["simulate", "--start-date", "2026-02-30"], "start_date"),
        (vec!["etl", "--from", "2026-01-01T25"], "invalid hour"),
        (vec!["etl", "--partition", "2026-01-01T04"], "2026-01-01T04"),
        (vec!["summary", "--lake", "ftp://x"], "unsupported scheme"),
        (vec!["simulate", "--config", "missing.toml"], "missing.toml"),
    ];
    for (args, want) in cases {
        let out = contrail(&dir.0, &args, &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    std::fs::write(dir.0.join("bad.toml"), "[simulate]\ndays = 2\nbogus = 1\n").expect("write");
    let out = contrail(&dir.0, &["simulate", "--config", "bad.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bogus"), "{}", text(&out.stderr));
}

#[test]
fn the_whole_job_runs_against_s3() {
    let Some(server) = S3Server::start("lake") else {
        return;
    };
    let dir = TempDir::new("cli-s3").expect("tmp");
    let out = contrail(
        &dir.0,
        &[
            "quickstart",
            "--lake",
            "s3://lake/qs",
            "--days",
            "1",
            "--routes",
            "6",
        ],
        &server.env(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("balanced"));
    assert!(text(&out.stdout).contains("fare model skipped"));
    assert!(server.root.join("lake/qs/meta/etl/summary.json").is_file());
    // A bucket that does not exist: a clear error naming it, user exit code.
    let out = contrail(
        &dir.0,
        &["summary", "--lake", "s3://no-such-bucket"],
        &server.env(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("s3://no-such-bucket"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn every_shipped_config_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("configs/") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "toml") {
            contrail::config::JobConfig::load(&p)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn train_predict_inspect_on_a_parquet_file() {
    let dir = TempDir::new("cli-gbdt").expect("tmp");
    // A plain Parquet file a user brings: numeric, string and boolean columns.
    let n = 4000;
    let x: Vec<f64> = (0..n).map(|i| (i % 97) as f64 / 9.7).collect();
    let c: Vec<&str> = (0..n).map(|i| ["BA", "AF", "LH", "KL"][i % 4]).collect();
    let flag: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| {
            x[i] * 2.0 + if c[i] == "LH" { 5.0 } else { 0.0 } + if flag[i] { 1.0 } else { 0.0 }
        })
        .collect();
    write_parquet(
        &dir.0,
        "data.parquet",
        vec![
            (
                "x",
                std::sync::Arc::new(arrow_array::Float64Array::from(x)) as arrow_array::ArrayRef,
            ),
            (
                "carrier",
                std::sync::Arc::new(arrow_array::StringArray::from(c)) as arrow_array::ArrayRef,
            ),
            (
                "flag",
                std::sync::Arc::new(arrow_array::BooleanArray::from(flag)) as arrow_array::ArrayRef,
            ),
            (
                "fare",
                std::sync::Arc::new(arrow_array::Float64Array::from(y)) as arrow_array::ArrayRef,
            ),
        ],
    );
    let out = contrail(
        &dir.0,
        &[
            "train",
            "--data",
            "data.parquet",
            "--target",
            "fare",
            "--num-iterations",
            "50",
            "--num-leaves",
            "8",
            "--out",
            "m.ctm",
            "--metrics-file",
            "m.jsonl",
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("[50]\ttrain-rmse:"),
        "per-iteration lines on stderr:\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.0.join("m.jsonl"))
            .expect("metrics")
            .lines()
            .count(),
        50
    );
    // --device: an unknown name, and a back end this build may lack, are user errors
    // before any data is read; never a silent fall back to the CPU.
    let base = [
        "train",
        "--data",
        "data.parquet",
        "--target",
        "fare",
        "--out",
        "g.ctm",
        "--device",
    ];
    let bad = contrail(&dir.0, &[&base[..], &["gpu"]].concat(), &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("cpu, wgpu, cuda or cuda:N"));
    let cuda = contrail(&dir.0, &[&base[..], &["cuda:7"]].concat(), &[]);
    assert_eq!(cuda.status.code(), Some(2), "{}", text(&cuda.stderr));
    let why = text(&cuda.stderr);
    assert!(
        why.contains("--features cuda") || why.contains("cuda device 7"),
        "{why}"
    );
    assert!(!dir.0.join("g.ctm").exists());
    let metrics: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metrics json");
    assert!(
        metrics["train-r2"].as_f64().expect("r2") > 0.99,
        "{metrics}"
    );
    let out = contrail(
        &dir.0,
        &[
            "predict",
            "--model",
            "m.ctm",
            "--data",
            "data.parquet",
            "--out",
            "pred.parquet",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = read_parquet(&dir.0, "pred.parquet");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), n);
    assert!(
        batches[0].column_by_name("prediction").is_some()
            && batches[0].column_by_name("carrier").is_some()
    );
    // A file with no rows predicts to a file with no rows and the prediction column (the
    // scoring job writes an empty part the same way); one without a feature column the
    // model needs is still an error naming it.
    let empty = |name: &str, with_carrier: bool| {
        let mut cols: Vec<(&str, arrow_array::ArrayRef)> = vec![(
            "x",
            std::sync::Arc::new(arrow_array::Float64Array::from(Vec::<f64>::new())),
        )];
        if with_carrier {
            cols.push((
                "carrier",
                std::sync::Arc::new(arrow_array::StringArray::from(Vec::<&str>::new())),
            ));
        }
        cols.push((
            "flag",
            std::sync::Arc::new(arrow_array::BooleanArray::from(Vec::<bool>::new())),
        ));
        write_parquet(&dir.0, name, cols);
    };
    empty("empty.parquet", true);
    empty("empty-no-carrier.parquet", false);
    let predict = |data: &str, out: &str| {
        contrail(
            &dir.0,
            &["predict", "--model", "m.ctm", "--data", data, "--out", out],
            &[],
        )
    };
    let out = predict("empty.parquet", "empty-pred.parquet");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = read_parquet(&dir.0, "empty-pred.parquet");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let schema = parquet_schema(&dir.0, "empty-pred.parquet");
    assert!(schema.index_of("prediction").is_ok() && schema.index_of("carrier").is_ok());
    let out = predict("empty-no-carrier.parquet", "nope-pred.parquet");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("carrier"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.0.join("nope-pred.parquet").exists());
    let out = contrail(&dir.0, &["inspect", "m.ctm"], &[]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("\"format_version\": 1")
            && stdout.contains("carrier"),
        "{stdout}"
    );
    // A corrupt model file is a user error naming the file.
    std::fs::write(dir.0.join("bad.ctm"), b"\x10\0\0\0\0\0\0\0not json at all!").expect("write");
    let out = contrail(&dir.0, &["inspect", "bad.ctm"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("bad.ctm"),
        "{}",
        text(&out.stderr)
    );
    // Input without a column the model needs.
    let out = contrail(
        &dir.0,
        &[
            "train",
            "--data",
            "data.parquet",
            "--target",
            "nope",
            "--out",
            "x.ctm",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("nope"));
}

#[test]
fn isolation_forest_train_predict_inspect() {
    let dir = TempDir::new("cli-iforest").expect("tmp");
    // Fares around a route's usual level, and 20 error fares far below it.
    let n = 3000;
    let mut s = 11u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut price: Vec<f64> = (0..n).map(|_| 300.0 + 100.0 * next()).collect();
    let lead: Vec<f64> = (0..n).map(|_| 60.0 * next()).collect();
    for p in price.iter_mut().step_by(150) {
        *p = 3.0;
    }
    let route: Vec<&str> = (0..n).map(|i| ["LHR-JFK", "CDG-JFK"][i % 2]).collect();
    write_parquet(
        &dir.0,
        "fares.parquet",
        vec![
            (
                "price",
                std::sync::Arc::new(arrow_array::Float64Array::from(price))
                    as arrow_array::ArrayRef,
            ),
            (
                "lead_time_days",
                std::sync::Arc::new(arrow_array::Float64Array::from(lead)) as arrow_array::ArrayRef,
            ),
            (
                "route",
                std::sync::Arc::new(arrow_array::StringArray::from(route)) as arrow_array::ArrayRef,
            ),
        ],
    );
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "--model",
            "isolation-forest",
            "--data",
            "fares.parquet",
            "--out",
            "if.ctm",
        ];
        a.extend_from_slice(extra);
        contrail(&dir.0, &a, &[])
    };
    let out = train(&[
        "--n-estimators",
        "200",
        "--contamination",
        "0.01",
        "--seed",
        "3",
    ]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("route"),
        "string columns left out are named: {err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["trees"], 200);
    assert_eq!(
        summary["features"],
        serde_json::json!(["price", "lead_time_days"])
    );
    let predict = |data: &str, out: &str| {
        let a = ["predict", "--model", "if.ctm", "--data", data, "--out", out];
        let run = contrail(&dir.0, &a, &[]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        read_parquet(&dir.0, out)
    };
    let batches = predict("fares.parquet", "scored.parquet");
    let (mut flagged_errors, mut flagged, mut rows) = (0, 0, 0);
    for b in &batches {
        let price = b
            .column_by_name("price")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::Float64Array>())
            .expect("price");
        let score = b
            .column_by_name("anomaly_score")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::Float64Array>())
            .expect("anomaly_score");
        let flag = b
            .column_by_name("is_anomaly")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::BooleanArray>())
            .expect("is_anomaly");
        assert!(b.column_by_name("route").is_some());
        for i in 0..b.num_rows() {
            let s = score.value(i);
            assert!(s > 0.0 && s <= 1.0);
            flagged += flag.value(i) as usize;
            flagged_errors += (flag.value(i) && price.value(i) < 10.0) as usize;
        }
        rows += b.num_rows();
    }
    assert_eq!(rows, n);
    // 1% contamination flags about 30 rows; the 20 error fares are among them.
    assert!((25..=35).contains(&flagged), "{flagged}");
    assert_eq!(flagged_errors, 20);
    // A file with no rows scores to a file with no rows and both columns.
    let none = || {
        std::sync::Arc::new(arrow_array::Float64Array::from(Vec::<f64>::new()))
            as arrow_array::ArrayRef
    };
    write_parquet(
        &dir.0,
        "none.parquet",
        vec![("price", none()), ("lead_time_days", none())],
    );
    let batches = predict("none.parquet", "none-scored.parquet");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let schema = parquet_schema(&dir.0, "none-scored.parquet");
    assert!(schema.index_of("anomaly_score").is_ok() && schema.index_of("is_anomaly").is_ok());
    let out = contrail(&dir.0, &["inspect", "if.ctm"], &[]);
    assert!(
        out.status.success() && text(&out.stdout).contains("isolation_forest"),
        "{}",
        text(&out.stderr)
    );
    // Tree-boosting flags with a forest, forest flags without one, an unknown model and a
    // categorical feature are user errors.
    for args in [
        vec!["--num-leaves", "8"],
        vec!["--target", "price"],
        vec!["--features", "route"],
        vec!["--max-samples", "1.5"],
    ] {
        let out = train(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for args in [
        vec![
            "train",
            "--data",
            "fares.parquet",
            "--target",
            "price",
            "--out",
            "m.ctm",
            "--n-estimators",
            "5",
        ],
        vec![
            "train",
            "--model",
            "forest",
            "--data",
            "fares.parquet",
            "--out",
            "m.ctm",
        ],
    ] {
        let out = contrail(&dir.0, &args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn drift_alarms_when_the_latest_day_moves() {
    let dir = TempDir::new("cli-drift").expect("tmp");
    let sim = |start: &str, days: &str, seed: &str, anomalies: &str| {
        let out = contrail(
            &dir.0,
            &[
                "-q",
                "simulate",
                "--start-date",
                start,
                "--days",
                days,
                "--routes",
                "12",
                "--searches-per-route-day",
                "150",
                "--seed",
                seed,
                "--anomaly-rate",
                anomalies,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = contrail(&dir.0, &["-q", "etl"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let features = "price_vs_route_mean,competitor_price_ratio,lead_time_days";
    let drift = |extra: &[&str]| {
        let mut a = vec!["drift", "--features", features];
        a.extend_from_slice(extra);
        contrail(&dir.0, &a, &[])
    };
    // Three ordinary days: the last one against the two before does not drift.
    sim("2026-03-01", "3", "1", "0.002");
    let out = drift(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("2026-03-03") && stdout.contains("lead_time_days"),
        "{stdout}"
    );
    assert!(!stdout.contains("ALARM"), "{stdout}");
    // A fourth day where a third of the quotes are error fares: the price ratios move,
    // the shoppers' lead times do not (another seed: other routes, the same behaviour);
    // exit code 3 and the features named.
    sim("2026-03-04", "1", "2", "0.3");
    let out = drift(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("drift alarm") && stderr.contains("price_vs_route_mean"),
        "{stderr}"
    );
    let alarm_lines: Vec<&str> = stdout.lines().filter(|l| l.ends_with("ALARM")).collect();
    assert!(
        alarm_lines
            .iter()
            .any(|l| l.contains("price_vs_route_mean")),
        "{stdout}"
    );
    assert!(
        !alarm_lines.iter().any(|l| l.contains("lead_time_days")),
        "{stdout}"
    );
    // JSON for schedulers; the day before the bad one, against its own past, is quiet.
    let out = drift(&["--json", "--current-days", "2"]);
    assert_eq!(out.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = r["features"].as_array().expect("rows");
    assert_eq!(rows.len(), 6);
    assert!(rows
        .iter()
        .filter(|x| x["day"] == "2026-03-03")
        .all(|x| x["alarm"] == false));
    // An explicit reference window: the first day alone.
    let out = drift(&["--reference", "2026-03-01..2026-03-01", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (r["reference_from"].as_str(), r["reference_to"].as_str()),
        (Some("2026-03-01"), Some("2026-03-01"))
    );
    // Bad options are user errors.
    for bad in [
        ["--reference", "2026-03-02..2026-03-04"],
        ["--reference", "yesterday"],
    ] {
        let out = drift(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
    let out = drift(&["--current-days", "9"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = contrail(&dir.0, &["drift", "--features", "route"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn import_predict_and_export_a_lightgbm_model() {
    let dir = TempDir::new("cli-import").expect("tmp");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
    let model = fixtures.join("lgb_binary.txt").display().to_string();
    let rows = fixtures.join("lgb_binary.parquet").display().to_string();
    let out = contrail(
        &dir.0,
        &[
            "import",
            "--from",
            "lightgbm-text",
            &model,
            "--out",
            "m.contrail",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["trees"], 40);
    assert_eq!(summary["categorical"], serde_json::json!(["cabin"]));
    let out = contrail(
        &dir.0,
        &[
            "predict",
            "--model",
            "m.contrail",
            "--data",
            &rows,
            "--out",
            "p.parquet",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut n = 0;
    for b in read_parquet(&dir.0, "p.parquet") {
        let col = |name: &str| {
            contrail::gbdt::data::numeric_values(b.column_by_name(name).expect(name))
                .expect("test data")
        };
        for (p, e) in col("prediction").iter().zip(col("expected")) {
            assert!(
                (p - e).abs() <= 1e-12 * e.abs().max(1e-3),
                "{p} vs LightGBM's {e}"
            );
            n += 1;
        }
    }
    assert_eq!(n, 2400);
    let out = contrail(
        &dir.0,
        &[
            "export",
            "--to",
            "xgboost-json",
            "m.contrail",
            "--out",
            "m.json",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.0.join("m.json")).expect("m.json"))
            .expect("test data");
    assert_eq!(doc["learner"]["objective"]["name"], "binary:logistic");

    // A truncated model: a user error naming the file, and no package written.
    let text_model = std::fs::read_to_string(fixtures.join("lgb_binary.txt")).expect("test data");
    let cut = text_model.find("Tree=3").expect("test data") + 40;
    std::fs::write(dir.0.join("bad.txt"), &text_model[..cut]).expect("test data");
    let out = contrail(
        &dir.0,
        &[
            "import",
            "--from",
            "lightgbm-text",
            "bad.txt",
            "--out",
            "bad.contrail",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.txt"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.0.join("bad.contrail").exists());
    // An XGBoost file given as LightGBM text, and the reverse.
    let xgb = fixtures.join("xgb_binary.json").display().to_string();
    let out = contrail(
        &dir.0,
        &[
            "import",
            "--from",
            "lightgbm-text",
            &xgb,
            "--out",
            "x.contrail",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = contrail(
        &dir.0,
        &[
            "import",
            "--from",
            "xgboost-json",
            &model,
            "--out",
            "x.contrail",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn drift_from_the_etls_statistics_alarms_without_reading_the_data() {
    let dir = TempDir::new("cli-drift-stats").expect("tmp");
    let sim = |start: &str, days: &str, anomalies: &str| {
        for args in [
            vec![
                "-q",
                "simulate",
                "--start-date",
                start,
                "--days",
                days,
                "--routes",
                "12",
                "--searches-per-route-day",
                "150",
                "--seed",
                "1",
                "--anomaly-rate",
                anomalies,
            ],
            vec!["-q", "etl"],
        ] {
            let out = contrail(&dir.0, &args, &[]);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        }
    };
    let drift = |extra: &[&str]| {
        let mut a = vec!["drift", "--from-etl-stats", "--json"];
        a.extend_from_slice(extra);
        contrail(&dir.0, &a, &[])
    };
    let rows = |out: &Output| -> Vec<serde_json::Value> {
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        r["features"].as_array().expect("features").clone()
    };
    // Three ordinary days: quiet. Every curated partition has its statistics.
    sim("2026-03-01", "3", "0.002");
    let stats: Vec<String> = tree(&dir.0.join("lake/curated"))
        .into_keys()
        .filter(|k| k.ends_with("_stats.json"))
        .collect();
    assert_eq!(stats.len(), 72, "one statistics file an hour");
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let quiet = rows(&out);
    assert!(quiet.iter().any(|r| r["feature"] == "price"));
    assert!(quiet.iter().all(|r| r["alarm"] == false), "{quiet:?}");
    // A fourth day of the same market where 30% of the quotes are error fares: price
    // (and booking, which cheap fares drive) alarm; the flights' durations and stops do
    // not move.
    sim("2026-03-04", "1", "0.3");
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let r = rows(&out);
    let alarm = |f: &str| r.iter().any(|x| x["feature"] == f && x["alarm"] == true);
    assert!(alarm("price"), "{r:?}");
    assert!(!alarm("duration_min") && !alarm("stops"), "{r:?}");
    // The day's mean and rows come from the statistics: equal to the data's.
    let price = r.iter().find(|x| x["feature"] == "price").expect("price");
    let curated = dir.0.join("lake/curated");
    let (mut sum, mut n) = (0.0, 0u64);
    for name in tree(&curated).into_keys() {
        if name.contains("day=04") && name.ends_with(".parquet") {
            for b in read_parquet(&curated, &name) {
                let p =
                    contrail::gbdt::data::numeric_values(b.column_by_name("price").expect("price"))
                        .expect("numeric");
                sum += p.iter().sum::<f64>();
                n += p.len() as u64;
            }
        }
    }
    assert_eq!(price["rows"].as_u64(), Some(n));
    let mean = price["mean"].as_f64().expect("mean");
    assert!(
        (mean - sum / n as f64).abs() <= 1e-9 * mean.abs(),
        "{mean} vs {}",
        sum / n as f64
    );
    // A partition processed without statistics, and a corrupt file: user errors naming
    // the file.
    let victim = dir.0.join("lake/curated").join(&stats[5]);
    std::fs::remove_file(&victim).expect("rm");
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("etl --force"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&victim, "{\"format\": 1, \"rows\": 3}").expect("write");
    let out = drift(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("_stats.json"),
        "{}",
        text(&out.stderr)
    );
    let out = drift(&["--features", "route"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // `contrail etl --force` writes them again.
    let out = contrail(&dir.0, &["-q", "etl", "--force"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(drift(&[]).status.code(), Some(3));
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let dir = TempDir::new("cli-pipe").expect("tmp");
    // The reader closes its end before the command writes (`contrail ... | head -0`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .current_dir(&dir.0)
        .args(["-q", "simulate", "--days", "1", "--routes", "2"])
        .env_remove("CONTRAIL_LAKE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn demand_models_train_on_the_lake_beside_a_gbdt_and_the_truth() {
    let tmp = TempDir::new("contrail-cli-demand").expect("tmp");
    let dir = tmp.0.as_path();
    let lake = dir.join("lake");
    let l = lake.display().to_string();
    let out = contrail(
        dir,
        &[
            "-q",
            "simulate",
            "--days",
            "10",
            "--routes",
            "12",
            "--lake",
            &l,
            "--bad-rate",
            "0.01",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = contrail(dir, &["-q", "etl", "--lake", &l], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No count row opens its window on or after the departure day (no day left to sell
    // on: zero by construction), and the rows left still count bookings.
    let cfg: contrail::demand::DemandConfig =
        toml::from_str("task = \"counts\"\nwindow_days = 3\nout = \"x.ctm\"\n").expect("config");
    let lake_handle = contrail::store::Lake::open(&l).expect("lake");
    let data = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(contrail::demand::counts_task(&lake_handle, &cfg))
        .expect("count task");
    for d in [&data.train, &data.valid, &data.test] {
        let j = d
            .names
            .iter()
            .position(|n| n == "lead_time_days")
            .expect("lead");
        let contrail::gbdt::data::Column::Numeric(lead) = &d.columns[j] else {
            panic!("lead time is numeric");
        };
        assert!(!lead.is_empty());
        assert!(lead.iter().all(|v| *v >= 1.0), "a row at its departure day");
    }
    assert!(data.test.target.iter().sum::<f64>() > 0.0);
    for (task, head) in [("counts", "negative_binomial"), ("booking", "logistic")] {
        let cfg = dir.join(format!("{task}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "lake = {l:?}\n[demand]\ntask = {task:?}\nwindow_days = 3\nout = {:?}\n[demand.params]\nhead = {head:?}\nhidden = [32, 16]\nmax_epochs = 3\nbatch_size = 512\n",
                dir.join(format!("{task}.ctm")).display().to_string()
            ),
        )
        .expect("config");
        let c = cfg.display().to_string();
        let out = contrail(dir, &["train", "--config", &c], &[]);
        let (so, se) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{se}");
        // Epoch lines on stderr, figures on stdout: the network, the GBDT and the truth.
        assert!(se.contains("epoch   2"), "{se}");
        for name in ["neural", "gbdt", "truth"] {
            assert!(so.contains(name), "{so}");
        }
        let bytes = std::fs::read(dir.join(format!("{task}.ctm"))).expect("package");
        let m = contrail::nn::NnModel::from_bytes(&bytes, "pkg").expect("loads");
        assert_eq!(m.head().name(), head);
    }
    // A window longer than the lake: a user error that says what to do.
    let cfg = dir.join("long.toml");
    std::fs::write(
        &cfg,
        format!("lake = {l:?}\n[demand]\ntask = \"counts\"\nwindow_days = 30\nout = \"x.ctm\"\n"),
    )
    .expect("config");
    let out = contrail(dir, &["train", "--config", &cfg.display().to_string()], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("simulate at least"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_network_on_a_parquet_file_resumes_from_its_checkpoint() {
    use arrow_array::{ArrayRef, Float64Array, StringArray};
    use std::sync::Arc;
    let tmp = TempDir::new("contrail-cli-nn").expect("tmp");
    let dir = tmp.0.as_path();
    let n = 3000;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 37) % 101) as f64 / 50.0 - 1.0)
        .collect();
    let c: Vec<&str> = (0..n).map(|i| ["a", "b", "c"][i % 3]).collect();
    let y: Vec<f64> = (0..n)
        .map(|i| ((i * 7919) % 5) as f64 * (1.0 + x[i]).max(0.0))
        .map(f64::round)
        .collect();
    for name in ["train.parquet", "valid.parquet"] {
        write_parquet(
            dir,
            name,
            vec![
                ("x", Arc::new(Float64Array::from(x.clone())) as ArrayRef),
                ("c", Arc::new(StringArray::from(c.clone())) as ArrayRef),
                ("y", Arc::new(Float64Array::from(y.clone())) as ArrayRef),
            ],
        );
    }
    std::fs::write(
        dir.join("nn.toml"),
        "hidden = [16]\nmax_epochs = 4\nbatch_size = 256\nearly_stopping_rounds = 0\n",
    )
    .expect("params");
    let train = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "train",
            "--model",
            "nn",
            "--data",
            "train.parquet",
            "--valid",
            "valid.parquet",
            "--target",
            "y",
            "--out",
            out,
            "--nn-params",
            "nn.toml",
            "--objective",
            "poisson",
        ];
        a.extend_from_slice(extra);
        contrail(dir, &a, &[])
    };
    let out = train("whole.ctm", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("valid-nll"),
        "{}",
        text(&out.stderr)
    );
    // Kill a run after its second epoch (a checkpoint of two epochs is what it leaves),
    // then resume: the same package bytes as the uninterrupted run.
    let ck = dir.join("run.ckpt").display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_contrail"))
        .current_dir(dir)
        .args([
            "train",
            "--model",
            "nn",
            "--data",
            "train.parquet",
            "--valid",
            "valid.parquet",
            "--target",
            "y",
            "--out",
            "resumed.ctm",
            "--nn-params",
            "nn.toml",
            "--objective",
            "poisson",
            "--checkpoint",
            &ck,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::BufRead;
        let err = std::io::BufReader::new(child.stderr.take().expect("stderr"));
        for line in err.lines() {
            if line.expect("line").starts_with("[1]") {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = train("resumed.ctm", &["--checkpoint", &ck]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let a =
        contrail::nn::package::from_bytes(&std::fs::read(dir.join("whole.ctm")).expect("a"), "a")
            .expect("a");
    let b =
        contrail::nn::package::from_bytes(&std::fs::read(dir.join("resumed.ctm")).expect("b"), "b")
            .expect("b");
    assert_eq!(
        a.members, b.members,
        "resumed run ends with the uninterrupted run's weights"
    );
    // A file with no rows predicts to a file with no rows.
    write_parquet(
        dir,
        "none.parquet",
        vec![
            (
                "x",
                Arc::new(Float64Array::from(Vec::<f64>::new())) as ArrayRef,
            ),
            (
                "c",
                Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef,
            ),
        ],
    );
    let out = contrail(
        dir,
        &[
            "predict",
            "--model",
            "whole.ctm",
            "--data",
            "none.parquet",
            "--out",
            "none-pred.parquet",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let batches = read_parquet(dir, "none-pred.parquet");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    // A corrupted package is a typed user error naming the file.
    let mut bytes = std::fs::read(dir.join("whole.ctm")).expect("pkg");
    let k = bytes.len() / 2;
    bytes[k] ^= 1;
    std::fs::write(dir.join("bad.ctm"), &bytes).expect("write");
    let out = contrail(dir, &["inspect", "bad.ctm"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("bad.ctm"),
        "{}",
        text(&out.stderr)
    );
}

/// Writes `batch` as a Parquet file of row groups of `group` rows.
fn write_row_groups(path: &Path, batch: &arrow_array::RecordBatch, group: usize) {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .build();
    let f = std::fs::File::create(path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), Some(props)).expect("w");
    w.write(batch).expect("write");
    w.close().expect("close");
}

#[test]
fn a_network_streams_a_file_larger_than_its_shuffle_window() {
    use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let tmp = TempDir::new("contrail-cli-nn-stream").expect("tmp");
    let dir = tmp.0.as_path();
    let n = 4000;
    let x: Vec<f64> = (0..n)
        .map(|i| ((i * 37) % 101) as f64 / 50.0 - 1.0)
        .collect();
    let c: Vec<&str> = (0..n).map(|i| ["a", "b", "c", "d"][(i * 13) % 4]).collect();
    let y: Vec<Option<f64>> = (0..n)
        .map(|i| Some((((i * 7919) % 5) as f64 * (1.0 + x[i]).max(0.0)).round()))
        .collect();
    let batch = |y: Vec<Option<f64>>| {
        RecordBatch::try_from_iter(vec![
            ("x", Arc::new(Float64Array::from(x.clone())) as ArrayRef),
            ("c", Arc::new(StringArray::from(c.clone())) as ArrayRef),
            ("y", Arc::new(Float64Array::from(y)) as ArrayRef),
        ])
        .expect("batch")
    };
    write_row_groups(&dir.join("train.parquet"), &batch(y.clone()), 500);
    write_row_groups(&dir.join("valid.parquet"), &batch(y.clone()), 700);
    let params = |window: usize| {
        format!(
            "hidden = [16]\nmax_epochs = 3\nbatch_size = 256\nearly_stopping_rounds = 0\n\
             shuffle_window = {window}\n"
        )
    };
    std::fs::write(dir.join("stream.toml"), params(1_000)).expect("params");
    std::fs::write(dir.join("memory.toml"), params(0)).expect("params");
    let train = |data: &str, out: &str, nn: &str| {
        contrail(
            dir,
            &[
                "train",
                "--model",
                "nn",
                "--data",
                data,
                "--valid",
                "valid.parquet",
                "--target",
                "y",
                "--out",
                out,
                "--nn-params",
                nn,
                "--objective",
                "poisson",
            ],
            &[],
        )
    };
    let out = train("train.parquet", "s1.ctm", "stream.toml");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    assert!(log.contains("4000 rows in 8 row groups"), "{log}");
    assert!(log.contains("read in windows of 1000+ rows"), "{log}");
    assert_eq!(log.matches("valid-nll: ").count(), 3, "{log}");
    let out = train("train.parquet", "s2.ctm", "stream.toml");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = train("train.parquet", "m.ctm", "memory.toml");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("held encoded in memory"));
    let pkg = |name: &str| {
        contrail::nn::package::from_bytes(&std::fs::read(dir.join(name)).expect(name), name)
            .expect(name)
    };
    let (s1, s2, m) = (pkg("s1.ctm"), pkg("s2.ctm"), pkg("m.ctm"));
    assert_eq!(s1.members, s2.members, "streamed training is deterministic");
    assert_ne!(
        s1.members, m.members,
        "windows shuffle otherwise than the whole"
    );
    // Encoder and fingerprint read row group by row group: those of the whole table.
    let cols = contrail::gbdt::data::Columns {
        target: "y".into(),
        ..Default::default()
    };
    let whole = contrail::gbdt::data::from_batches(&[batch(y.clone())], &cols, "t").expect("d");
    assert_eq!(
        s1.manifest.training_data,
        contrail::gbdt::package::fingerprint(&whole)
    );
    let enc = contrail::nn::Encoder::fit_with(&whole, 0, 16, 0).expect("enc");
    assert_eq!(s1.manifest.encoder, enc);
    assert_eq!(m.manifest.encoder, enc);
    // Both score: the streamed model's validation loss is near the in-memory one's.
    let nll = |p: &contrail::nn::NnPackage| p.manifest.metrics["valid-nll"];
    assert!(
        (nll(&s1) / nll(&m) - 1.0).abs() < 0.05,
        "{} vs {}",
        nll(&s1),
        nll(&m)
    );

    // The same file on an S3 server, streamed by ranged reads: the same bits.
    if let Some(server) = S3Server::start("lake") {
        let at = server.root.join("lake/nn");
        std::fs::create_dir_all(&at).expect("dir");
        std::fs::copy(dir.join("train.parquet"), at.join("train.parquet")).expect("copy");
        let out = contrail(
            dir,
            &[
                "train",
                "--model",
                "nn",
                "--data",
                "s3://lake/nn/train.parquet",
                "--valid",
                "valid.parquet",
                "--target",
                "y",
                "--out",
                "s3.ctm",
                "--nn-params",
                "stream.toml",
                "--objective",
                "poisson",
            ],
            &server.env(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(pkg("s3.ctm").members, s1.members);
    }

    // A missing target in a late row group: a user error naming the file, the row group
    // and the row.
    let mut bad = y.clone();
    bad[3_210] = None;
    write_row_groups(&dir.join("bad.parquet"), &batch(bad), 500);
    let out = train("bad.parquet", "bad.ctm", "stream.toml");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.parquet row group 6") && err.contains("row 210"),
        "{err}"
    );
    // A target past f32's range (it would train as inf): named, not "target inf".
    let mut huge = y.clone();
    huge[1_234] = Some(1e39);
    write_row_groups(&dir.join("huge.parquet"), &batch(huge), 500);
    let out = train("huge.parquet", "huge.ctm", "stream.toml");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("huge.parquet row group 2")
            && err.contains("row 234")
            && err.contains("1e39")
            && err.contains("32-bit"),
        "{err}"
    );
}
