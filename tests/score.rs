//! `contrail score` end to end: SIGKILL and resume, S3, racing jobs, a faulty network,
//! and bad input (docs/scoring.md).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use contrail::store::testkit::{S3Server, TempDir};

const PARTS: usize = 20;
const ROWS_PER_PART: usize = 50_000;
const TOTAL: usize = PARTS * ROWS_PER_PART;
const CARRIERS: [&str; 4] = ["BA", "AF", "LH", "KL"];

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_contrail"));
    c.env_remove("CONTRAIL_LAKE");
    c
}

fn contrail(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut c = bin();
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run contrail")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// SplitMix64: the tests' seeded randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows `from..from + n`: `id`, numeric `x`, categorical `carrier`, boolean `flag`, and
/// (for training) the target `fare`.
fn rows(from: usize, n: usize, with_target: bool) -> RecordBatch {
    let ids: Vec<i64> = (from..from + n).map(|i| i as i64).collect();
    let x: Vec<f64> = ids
        .iter()
        .map(|i| ((i * 7919) % 1000) as f64 / 100.0)
        .collect();
    let carrier: Vec<&str> = ids
        .iter()
        .map(|i| CARRIERS[(*i as usize / 3) % 4])
        .collect();
    let flag: Vec<bool> = ids.iter().map(|i| i % 5 == 0).collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        ("x", Arc::new(Float64Array::from(x.clone()))),
        ("carrier", Arc::new(StringArray::from(carrier.clone()))),
        ("flag", Arc::new(BooleanArray::from(flag.clone()))),
    ];
    if with_target {
        let y: Vec<f64> = (0..n)
            .map(|i| {
                x[i] * 3.0
                    + if carrier[i] == "LH" { 7.0 } else { 0.0 }
                    + if flag[i] { 2.0 } else { 0.0 }
            })
            .collect();
        cols.push(("fare", Arc::new(Float64Array::from(y))));
    }
    RecordBatch::try_from_iter(cols).expect("batch")
}

fn write_batch(path: &Path, b: &RecordBatch) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let bytes = contrail::store::parquet_io::encode(b.schema(), std::slice::from_ref(b), "t")
        .expect("encode");
    std::fs::write(path, &bytes).expect("write");
}

/// The 20 input parts of 50,000 rows (ids 0..1,000,000) in `dir`.
fn write_input(dir: &Path) {
    for p in 0..PARTS {
        write_batch(
            &dir.join(format!("part-{p:02}.parquet")),
            &rows(p * ROWS_PER_PART, ROWS_PER_PART, false),
        );
    }
}

/// Trains a small gradient-boosted model in `dir` (`model.ctm`).
fn train_model(dir: &Path) -> PathBuf {
    write_batch(&dir.join("train.parquet"), &rows(0, 5000, true));
    let out = contrail(
        dir,
        &[
            "-q",
            "train",
            "--data",
            "train.parquet",
            "--target",
            "fare",
            "--features",
            "x,carrier,flag",
            "--num-iterations",
            "40",
            "--num-leaves",
            "15",
            "--out",
            "model.ctm",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join("model.ctm")
}

/// Every file under `root` but hidden ones, relative path to contents.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !e.file_name().to_string_lossy().starts_with('.') {
                let rel = p.strip_prefix(root).expect("prefix").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn hidden_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with('.') {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

fn score_args<'a>(model: &'a str, input: &'a str, output: &'a str) -> Vec<&'a str> {
    vec![
        "score",
        "--model",
        model,
        "--input",
        input,
        "--output",
        output,
        "--keep",
        "id",
        "--batch-rows",
        "8192",
    ]
}

/// Runs a job to the end; returns its JSON summary.
fn score_ok(dir: &Path, args: &[&str], env: &[(&str, String)]) -> serde_json::Value {
    let out = contrail(dir, args, env);
    assert!(
        out.status.success(),
        "{:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("summary JSON")
}

/// Exactly `TOTAL` output rows, each id once; every part has `id` and `prediction`.
fn check_rows(out: &BTreeMap<String, Vec<u8>>) {
    let mut seen = vec![false; TOTAL];
    let mut n = 0;
    for (name, bytes) in out {
        if !name.ends_with(".parquet") {
            continue;
        }
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes.clone()),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        for b in r {
            let b = b.expect("batch");
            assert_eq!(b.schema().field(0).name(), "id");
            assert_eq!(b.schema().field(1).name(), "prediction");
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ids");
            for i in 0..ids.len() {
                let id = ids.value(i) as usize;
                assert!(!seen[id], "id {id} twice");
                seen[id] = true;
                n += 1;
            }
        }
    }
    assert_eq!(n, TOTAL);
}

/// Spawns a job, waits for `commits` parts to be committed and then `delay`, and
/// SIGKILLs it. True when the kill landed (the job was still running).
fn kill_mid_run(
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
    commits: usize,
    delay: Duration,
) -> bool {
    let mut c = bin();
    c.current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child: Child = c.spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = 0;
    while seen < commits {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.contains("committed ") => seen += 1,
            Ok(_) => {}
            Err(_) => break, // the job ended (or hung: the kill below ends it)
        }
    }
    std::thread::sleep(delay);
    let running = child.try_wait().expect("try_wait").is_none();
    child.kill().expect("kill"); // SIGKILL on Unix
    let status = child.wait().expect("wait");
    drop(rx);
    let _ = reader.join();
    if !running {
        assert!(status.success(), "the job failed on its own: {status:?}");
    }
    running
}

/// Kills a job `kills` times at seeded random points, then lets it finish.
fn kill_and_resume(
    dir: &Path,
    args: &[&str],
    env: &[(&str, String)],
    kills: usize,
    seed: u64,
    part_time: Duration,
) -> usize {
    let mut rng = Rng(seed);
    let mut landed = 0;
    for _ in 0..kills {
        let commits = rng.below(3) as usize;
        let delay = part_time.mul_f64(0.9 * rng.unit());
        if kill_mid_run(dir, args, env, commits, delay) {
            landed += 1;
        }
    }
    landed
}

#[test]
fn sigkill_at_random_points_then_resume_gives_the_uninterrupted_output() {
    let t0 = Instant::now();
    let dir = TempDir::new("score-kill").expect("tmp");
    train_model(&dir.0);
    write_input(&dir.0.join("in"));
    // The uninterrupted run.
    let t = Instant::now();
    let s = score_ok(&dir.0, &score_args("model.ctm", "in", "ref"), &[]);
    let full = t.elapsed();
    assert_eq!(s["rows"], TOTAL);
    assert_eq!(s["parts_scored"], PARTS);
    let reference = tree(&dir.0.join("ref"));
    assert_eq!(reference.len(), PARTS + 1, "{:?}", reference.keys());
    check_rows(&reference);
    let manifest: serde_json::Value =
        serde_json::from_slice(&reference["_SUCCESS"]).expect("_SUCCESS");
    assert_eq!(manifest["total_rows"], TOTAL);
    assert_eq!(manifest["parts"].as_array().map(Vec::len), Some(PARTS));
    assert_eq!(manifest["columns"], serde_json::json!(["id", "prediction"]));

    // Ten kills at random points, a restart after each, then to the end.
    let args = score_args("model.ctm", "in", "killed");
    let landed = kill_and_resume(&dir.0, &args, &[], 10, 2026, full / PARTS as u32);
    assert!(landed >= 8, "only {landed} of 10 kills landed mid-run");
    // A temporary file of a process that is gone (beyond any pid_max) is removed too.
    std::fs::write(
        dir.0.join("killed/.part-00-x.parquet.tmp-4194999-0"),
        b"partial",
    )
    .expect("plant");
    let s = score_ok(&dir.0, &args, &[]);
    eprintln!("after the kills: {s}");
    assert_eq!(s["rows"], TOTAL);
    assert!(
        s["parts_skipped"].as_u64().unwrap_or(0) > 0,
        "the killed runs committed nothing: {s}"
    );
    let killed = tree(&dir.0.join("killed"));
    assert_eq!(
        killed.keys().collect::<Vec<_>>(),
        reference.keys().collect::<Vec<_>>()
    );
    assert!(
        killed == reference,
        "output differs from the uninterrupted run"
    );
    check_rows(&killed);
    // The final run removed what the killed runs left behind.
    if Path::new("/proc/self").exists() {
        assert_eq!(hidden_files(&dir.0.join("killed")), Vec::<String>::new());
    }

    // A re-run of a finished job scores nothing and changes nothing; --batch-rows does
    // not change the bytes.
    let mut again = score_args("model.ctm", "in", "killed");
    let last = again.len() - 1;
    again[last] = "50000";
    let s = score_ok(&dir.0, &again, &[]);
    assert_eq!(s["parts_scored"], 0);
    assert_eq!(s["parts_skipped"], PARTS);
    assert!(tree(&dir.0.join("killed")) == reference);
    let s = score_ok(&dir.0, &score_args("model.ctm", "in", "other"), &[]);
    assert_eq!(s["parts_scored"], PARTS);
    assert!(tree(&dir.0.join("other")) == reference);
    eprintln!(
        "kill test: uninterrupted run {:.2}s, {landed} kills landed, whole test {:.1}s",
        full.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

/// A TCP proxy in front of the S3 server that fails a share of requests: half with
/// `503 SlowDown` (S3's XML error body), half by dropping the connection unanswered
/// (mid-request for bodies, so the peer sees a reset). One request per connection.
struct FaultProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    slowdowns: Arc<AtomicUsize>,
    resets: Arc<AtomicUsize>,
    passed: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: u16, fail_rate: f64, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let (slowdowns, resets, passed) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let rng = Arc::new(Mutex::new(Rng(seed)));
        let (s, sd, rs, ps) = (
            stop.clone(),
            slowdowns.clone(),
            resets.clone(),
            passed.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let roll = rng.lock().map(|mut r| r.unit()).unwrap_or(1.0);
                let (sd, rs, ps) = (sd.clone(), rs.clone(), ps.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, upstream, roll, fail_rate, &sd, &rs, &ps);
                });
            }
        });
        FaultProxy {
            port,
            stop,
            slowdowns,
            resets,
            passed,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            (
                "AWS_ACCESS_KEY_ID",
                contrail::store::testkit::ACCESS_KEY.into(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY",
                contrail::store::testkit::SECRET_KEY.into(),
            ),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn proxy_one(
    mut client: TcpStream,
    upstream: u16,
    roll: f64,
    fail_rate: f64,
    slowdowns: &AtomicUsize,
    resets: &AtomicUsize,
    passed: &AtomicUsize,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    // The request head.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if roll < fail_rate / 2.0 {
        // Dropped unanswered, before the body is read: a reset connection.
        resets.fetch_add(1, Ordering::Relaxed);
        drop(client);
        return Ok(());
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = client.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if roll < fail_rate {
        slowdowns.fetch_add(1, Ordering::Relaxed);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>fault-proxy</RequestId></Error>";
        write!(
            client,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        client.flush()?;
        let _ = client.shutdown(Shutdown::Write);
        return Ok(());
    }
    passed.fetch_add(1, Ordering::Relaxed);
    // Forward with `Connection: close`, so the answer ends with the connection.
    let mut new_head = String::new();
    for l in head.trim_end().split("\r\n") {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            new_head.push_str(l);
            new_head.push_str("\r\n");
        }
    }
    new_head.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(new_head.as_bytes())?;
    up.write_all(&buf[head_end..])?;
    up.flush()?;
    std::io::copy(&mut up, &mut client)?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// Copies the input parts into the server's bucket folder (s3s-fs serves files as they
/// lie).
fn upload_input(server: &S3Server, from: &Path, prefix: &str) {
    let dest = server.root.join("lake").join(prefix);
    std::fs::create_dir_all(&dest).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        std::fs::copy(e.path(), dest.join(e.file_name())).expect("copy");
    }
}

#[test]
fn on_s3_kills_races_and_a_faulty_network_leave_the_same_output() {
    let Some(server) = S3Server::start("lake") else {
        return;
    };
    let t0 = Instant::now();
    let dir = TempDir::new("score-s3").expect("tmp");
    train_model(&dir.0);
    write_input(&dir.0.join("in"));
    let t = Instant::now();
    score_ok(&dir.0, &score_args("model.ctm", "in", "ref"), &[]);
    let local_time = t.elapsed();
    let reference = tree(&dir.0.join("ref"));
    upload_input(&server, &dir.0.join("in"), "in");
    let env = server.env();
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
    let bucket = |p: &str| tree(&server.root.join("lake").join(p));

    // Uninterrupted on S3: the same bytes as on local disk.
    let t = Instant::now();
    let s = score_ok(
        &dir.0,
        &score_args("model.ctm", "s3://lake/in", "s3://lake/one"),
        &env,
    );
    let s3_time = t.elapsed();
    assert_eq!(s["rows"], TOTAL);
    assert!(bucket("one") == reference, "S3 output differs from local");

    // Killed at 10 random points and resumed, as on local disk.
    let args = score_args("model.ctm", "s3://lake/in", "s3://lake/killed");
    let landed = kill_and_resume(&dir.0, &args, &env, 10, 7, s3_time / PARTS as u32);
    assert!(landed >= 8, "only {landed} of 10 kills landed mid-run");
    let s = score_ok(&dir.0, &args, &env);
    assert_eq!(s["rows"], TOTAL);
    let killed = bucket("killed");
    assert!(killed == reference, "resumed S3 output differs");
    check_rows(&killed);

    // Two jobs racing on one output prefix: both succeed, same output.
    let args = score_args("model.ctm", "s3://lake/in", "s3://lake/race");
    let spawn = || {
        let mut c = bin();
        c.current_dir(&dir.0)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &env {
            c.env(k, v);
        }
        c.spawn().expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    );
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let summary =
        |o: &Output| -> serde_json::Value { serde_json::from_slice(&o.stdout).expect("summary") };
    let (sa, sb) = (summary(&a), summary(&b));
    let scored =
        sa["parts_scored"].as_u64().unwrap_or(0) + sb["parts_scored"].as_u64().unwrap_or(0);
    assert!(scored >= PARTS as u64, "{sa}\n{sb}");
    assert!(bucket("race") == reference, "raced output differs");
    eprintln!("race: {sa}\n{sb}");

    // A fifth of the requests fail (503 SlowDown or a dropped connection).
    let proxy = FaultProxy::start(server.port, 0.2, 99);
    let penv = proxy.env();
    let penv: Vec<(&str, String)> = penv.iter().map(|(k, v)| (*k, v.clone())).collect();
    let t = Instant::now();
    let o = contrail(
        &dir.0,
        &score_args("model.ctm", "s3://lake/in", "s3://lake/faulty"),
        &penv,
    );
    let log = text(&o.stderr);
    assert!(o.status.success(), "{log}");
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("summary");
    assert_eq!(s["rows"], TOTAL);
    // Commits the job itself retried (a reset conditional PUT).
    let commit_retries = log.matches("retrying in").count();
    assert!(
        bucket("faulty") == reference,
        "output through the faulty proxy differs"
    );
    let (sd, rs, ps) = (
        proxy.slowdowns.load(Ordering::Relaxed),
        proxy.resets.load(Ordering::Relaxed),
        proxy.passed.load(Ordering::Relaxed),
    );
    assert!(
        sd > 0 && rs > 0,
        "no faults injected: {sd} 503s, {rs} resets"
    );
    eprintln!(
        "S3 test: local {:.2}s, S3 {:.2}s, {landed} kills landed; faulty proxy {:.2}s with {sd} 503s and {rs} resets of {} requests ({commit_retries} commits retried by the job); whole test {:.1}s",
        local_time.as_secs_f64(),
        s3_time.as_secs_f64(),
        t.elapsed().as_secs_f64(),
        sd + rs + ps,
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn bad_packages_and_inputs_fail_before_anything_is_written() {
    let dir = TempDir::new("score-bad").expect("tmp");
    let model = train_model(&dir.0);
    write_batch(&dir.0.join("in/a.parquet"), &rows(0, 1000, false));
    let fails = |args: &[&str], out: &str, want: &[&str]| {
        let o = contrail(&dir.0, args, &[]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}:\n{err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: missing {w:?} in:\n{err}");
        }
        assert!(!dir.0.join(out).exists(), "{args:?} wrote {out}");
    };
    // Malformed packages: garbage, a truncated package, one flipped byte.
    let good = std::fs::read(&model).expect("model");
    std::fs::write(dir.0.join("garbage.ctm"), b"not a model at all").expect("w");
    std::fs::write(dir.0.join("short.ctm"), &good[..good.len() / 2]).expect("w");
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(dir.0.join("flipped.ctm"), &flipped).expect("w");
    for m in ["garbage.ctm", "short.ctm", "flipped.ctm"] {
        fails(&score_args(m, "in", "o1"), "o1", &[m]);
    }
    fails(
        &score_args("missing.ctm", "in", "o1"),
        "o1",
        &["missing.ctm"],
    );
    // A missing model column, a wrong type, a --keep column not in the input.
    let b = rows(0, 1000, false);
    let no_x = b.project(&[0, 2, 3]).expect("project");
    write_batch(&dir.0.join("nox/a.parquet"), &no_x);
    fails(
        &score_args("model.ctm", "nox", "o2"),
        "o2",
        &["nox/a.parquet", "`x`", "missing"],
    );
    let x_text: ArrayRef = Arc::new(StringArray::from(vec!["1.5"; 1000]));
    let wrong = RecordBatch::try_from_iter(vec![
        ("id", b.column(0).clone()),
        ("x", x_text),
        ("carrier", b.column(2).clone()),
        ("flag", b.column(3).clone()),
    ])
    .expect("batch");
    // The good part first: nothing is written for it either.
    write_batch(&dir.0.join("mixed/a.parquet"), &b);
    write_batch(&dir.0.join("mixed/b.parquet"), &wrong);
    fails(
        &score_args("model.ctm", "mixed", "o3"),
        "o3",
        &["mixed/b.parquet", "`x`", "numeric"],
    );
    let mut keep = score_args("model.ctm", "in", "o4");
    keep[8] = "id,nope";
    fails(&keep, "o4", &["`nope`", "in/a.parquet"]);
    fails(
        &score_args("model.ctm", "empty", "o5"),
        "o5",
        &["no Parquet"],
    );
    fails(
        &score_args("model.ctm", "in", "in/o"),
        "in/o",
        &["inside the input"],
    );
    // An input that has a `prediction` column already, kept whole.
    let clash = RecordBatch::try_from_iter(vec![
        ("x", b.column(1).clone()),
        ("carrier", b.column(2).clone()),
        ("flag", b.column(3).clone()),
        ("prediction", b.column(1).clone()),
    ])
    .expect("batch");
    write_batch(&dir.0.join("clash/a.parquet"), &clash);
    fails(
        &[
            "score",
            "--model",
            "model.ctm",
            "--input",
            "clash",
            "--output",
            "o6",
        ],
        "o6",
        &["`prediction`", "--keep"],
    );

    // Unseen categories go to the model's "other" bin: the same predictions as
    // `predict`, which follows the same rule, and as a category the model saw in no row
    // of training.
    // Rows in pairs with equal `x` and `flag`, carriers ZZ and QQ (neither seen).
    let x: Vec<f64> = (0..1000).map(|i| (i / 2) as f64 / 50.0).collect();
    let flag: Vec<bool> = (0..1000).map(|i| (i / 2) % 5 == 0).collect();
    let carrier: Vec<&str> = (0..1000).map(|i| ["ZZ", "QQ"][i % 2]).collect();
    let novel = RecordBatch::try_from_iter(vec![
        ("id", b.column(0).clone()),
        ("x", Arc::new(Float64Array::from(x)) as ArrayRef),
        ("carrier", Arc::new(StringArray::from(carrier)) as ArrayRef),
        ("flag", Arc::new(BooleanArray::from(flag)) as ArrayRef),
    ])
    .expect("batch");
    write_batch(&dir.0.join("novel/a.parquet"), &novel);
    let s = score_ok(&dir.0, &score_args("model.ctm", "novel", "o7"), &[]);
    assert_eq!(s["rows"], 1000);
    let o = contrail(
        &dir.0,
        &[
            "predict",
            "--model",
            "model.ctm",
            "--data",
            "novel/a.parquet",
            "--out",
            "novel.pred.parquet",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let preds = |path: PathBuf, col: &str| -> Vec<f64> {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(std::fs::read(path).expect("read")),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        let mut v = Vec::new();
        for b in r {
            let b = b.expect("batch");
            let c = b.column_by_name(col).expect("column");
            let f = c.as_any().downcast_ref::<Float64Array>().expect("f64");
            v.extend((0..f.len()).map(|i| f.value(i)));
        }
        v
    };
    let name = std::fs::read_dir(dir.0.join("o7"))
        .expect("o7")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".parquet"))
        .expect("a part");
    let scored = preds(dir.0.join("o7").join(&name), "prediction");
    let predicted = preds(dir.0.join("novel.pred.parquet"), "prediction");
    assert_eq!(scored, predicted);
    // ZZ and QQ both land in the "other" bin.
    for k in 0..500 {
        assert_eq!(scored[2 * k], scored[2 * k + 1], "row pair {k}");
    }
}

#[test]
fn an_isolation_forest_scores_through_the_same_job() {
    let dir = TempDir::new("score-forest").expect("tmp");
    let b = rows(0, 4000, false);
    write_batch(
        &dir.0.join("train.parquet"),
        &b.project(&[1, 3]).expect("p"),
    );
    let o = contrail(
        &dir.0,
        &[
            "-q",
            "train",
            "--model",
            "isolation-forest",
            "--data",
            "train.parquet",
            "--out",
            "forest.ctm",
            "--n-estimators",
            "20",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    write_batch(&dir.0.join("in/p0.parquet"), &rows(0, 3000, false));
    write_batch(&dir.0.join("in/p1.parquet"), &rows(3000, 3000, false));
    let args = score_args("forest.ctm", "in", "out");
    let s = score_ok(&dir.0, &args, &[]);
    assert_eq!(s["rows"], 6000);
    let out = tree(&dir.0.join("out"));
    let m: serde_json::Value = serde_json::from_slice(&out["_SUCCESS"]).expect("manifest");
    assert_eq!(m["model_kind"], "isolation_forest");
    assert_eq!(
        m["columns"],
        serde_json::json!(["id", "anomaly_score", "is_anomaly"])
    );
    // The manifest's hashes are the parts' SHA-256.
    for p in m["parts"].as_array().expect("parts") {
        let name = p["output"].as_str().expect("name");
        assert_eq!(
            p["sha256"].as_str(),
            Some(contrail::score::sha256_hex(&out[name]).as_str())
        );
        assert_eq!(p["bytes"].as_u64(), Some(out[name].len() as u64));
    }
    // --device with a forest is a user error (here or, in a GPU build, the job says so).
    let mut gpu = args.clone();
    gpu.extend(["--device", "wgpu"]);
    let o = contrail(&dir.0, &gpu, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

/// The `prediction` column of every Parquet file under `root`, by `event_id`.
fn predictions_by_event(root: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, bytes) in tree(root) {
        if !name.ends_with(".parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            bytes::Bytes::from(bytes),
        )
        .expect("parquet")
        .build()
        .expect("reader");
        for b in reader {
            let b = b.expect("batch");
            let ids = b
                .column_by_name("event_id")
                .expect("event_id")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("strings")
                .clone();
            let p = b
                .column_by_name("prediction")
                .expect("prediction")
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("f64")
                .clone();
            for i in 0..b.num_rows() {
                out.insert(ids.value(i).to_string(), p.value(i));
            }
        }
    }
    out
}

/// A model trained on the lake's features scores the curated table through the job with
/// the features training computed (rolling statistics carried from partition to
/// partition in time order), also when a re-run finds earlier partitions already scored.
#[test]
fn a_lake_model_scores_the_curated_table_with_trainings_features() {
    let dir = TempDir::new("score-lake").expect("tmp");
    let lake = dir.0.join("lake").display().to_string();
    for args in [
        vec![
            "simulate", "--lake", &lake, "--days", "4", "--routes", "6", "--seed", "5",
        ],
        vec!["etl", "--lake", &lake],
    ] {
        let o = contrail(&dir.0, &args, &[]);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    }
    std::fs::write(
        dir.0.join("fare.toml"),
        format!(
            "lake = {lake:?}\n\n[train]\ntarget = \"price\"\nvalid_days = 1\ntest_days = 1\nout = \"model.ctm\"\n\n[train.params]\nnum_iterations = 30\nnum_leaves = 15\n"
        ),
    )
    .expect("config");
    let o = contrail(&dir.0, &["train", "--config", "fare.toml"], &[]);
    assert!(o.status.success(), "train: {}", text(&o.stderr));
    // The training pipeline's features of the test day, and the model's predictions.
    let o = contrail(
        &dir.0,
        &[
            "export-features",
            "--lake",
            &lake,
            "--config",
            "fare.toml",
            "--out",
            "feats",
            "--event-ids",
        ],
        &[],
    );
    assert!(o.status.success(), "export-features: {}", text(&o.stderr));
    std::fs::create_dir_all(dir.0.join("want")).expect("mkdir");
    let o = contrail(
        &dir.0,
        &[
            "predict",
            "--model",
            "model.ctm",
            "--data",
            "feats/test.parquet",
            "--out",
            "want/test.parquet",
        ],
        &[],
    );
    assert!(o.status.success(), "predict: {}", text(&o.stderr));
    let want = predictions_by_event(&dir.0.join("want"));
    assert!(want.len() > 100, "{} test rows", want.len());

    // The job over the whole curated table.
    let curated = format!("{lake}/curated/flight_searches");
    let args = [
        "score",
        "--model",
        "model.ctm",
        "--input",
        &curated,
        "--output",
        "scored",
        "--keep",
        "event_id",
    ];
    let s = score_ok(&dir.0, &args, &[]);
    let parts = s["parts"].as_u64().expect("parts");
    assert!(parts >= 48, "{parts} hourly parts");
    let got = predictions_by_event(&dir.0.join("scored"));
    for (id, w) in &want {
        let g = got.get(id).expect("every test event scored");
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "event {id}: job {g} vs training's features {w}"
        );
    }
    // Lose the later half of the parts: the re-run reads the earlier ones for their
    // history and writes the same bytes.
    let first = tree(&dir.0.join("scored"));
    let mut names: Vec<&String> = first.keys().filter(|n| n.ends_with(".parquet")).collect();
    names.sort();
    for n in &names[names.len() / 2..] {
        std::fs::remove_file(dir.0.join("scored").join(n)).expect("rm");
    }
    std::fs::remove_file(dir.0.join("scored/_SUCCESS")).expect("rm _SUCCESS");
    let s = score_ok(&dir.0, &args, &[]);
    assert_eq!(s["parts_skipped"].as_u64(), Some((names.len() / 2) as u64));
    assert_eq!(
        tree(&dir.0.join("scored")),
        first,
        "the resumed output differs"
    );
}
