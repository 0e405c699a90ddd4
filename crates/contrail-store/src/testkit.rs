//! Test support: a real S3-compatible server (s3s-fs) on 127.0.0.1.
//!
//! [`S3Server::start`] looks for the `s3s-fs` binary (`$S3S_FS_BIN`, then `PATH`, then
//! `~/.cargo/bin`), starts it on a free port over a temporary folder and stops it on drop.
//! When the binary is missing it returns `None` and says why on stderr, unless
//! `CONTRAIL_REQUIRE_S3=1` (set by CI), where a missing server fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Lake, StoreError};

pub const ACCESS_KEY: &str = "contrail-test";
pub const SECRET_KEY: &str = "contrail-test-secret";

pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
    _dir: TempDir,
}

/// A temporary folder removed on drop (std only, so the library needs no tempfile).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("contrail-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS_BIN") {
        return Some(PathBuf::from(p));
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"));
    in_path.into_iter().chain(home).find(|p| p.is_file())
}

/// Whether tests must have the S3 server (CI sets `CONTRAIL_REQUIRE_S3=1`).
pub fn s3_required() -> bool {
    std::env::var("CONTRAIL_REQUIRE_S3").is_ok_and(|v| v == "1")
}

impl S3Server {
    /// Starts a server with one bucket, `bucket`. `None` (with the reason on stderr) when
    /// s3s-fs is not installed and the server is not required.
    #[allow(clippy::panic)]
    pub fn start(bucket: &str) -> Option<S3Server> {
        let Some(bin) = find_binary() else {
            if s3_required() {
                panic!(
                    "CONTRAIL_REQUIRE_S3=1 but s3s-fs was not found (set S3S_FS_BIN or install it)"
                );
            }
            eprintln!("skipped: the S3 part of this test needs s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked)");
            return None;
        };
        let dir = TempDir::new("s3").ok()?;
        let root = dir.0.clone();
        std::fs::create_dir_all(root.join(bucket)).ok()?;
        // Bind port 0 to find a free port, then hand it to the server.
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                if s3_required() {
                    panic!("cannot start {}: {e}", bin.display());
                }
                eprintln!("skipped: cannot start {}: {e}", bin.display());
                return None;
            }
        };
        let server = S3Server {
            child,
            port,
            root,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                panic!("s3s-fs did not listen on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The S3 options for [`Lake::open_with`].
    pub fn options(&self) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", ACCESS_KEY.into()),
            ("aws_secret_access_key", SECRET_KEY.into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// Opens `s3://<bucket>/<prefix>` on this server.
    pub fn lake(&self, url: &str) -> Result<Lake, StoreError> {
        let opts = self.options();
        let pairs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Lake::open_with(url, &pairs)
    }

    /// Environment variables that point the `contrail` binary at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
