//! Test harness: real S3 servers (s3s-fs, SigV4 checked) started in-process on
//! free loopback ports, and the real `yatagarasu` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;
pub use yatagarasu::local_s3::{Fault, LocalS3};

pub const ACCESS_KEY: &str = "AKIATESTPROXY0001";
pub const SECRET_KEY: &str = "test-secret-9f8e7d6c5b4a";

pub const BIN: &str = env!("CARGO_BIN_EXE_yatagarasu");

/// A local S3 server with its own temp dir.
pub struct S3 {
    pub server: LocalS3,
    _dir: TempDir,
}

impl std::ops::Deref for S3 {
    type Target = LocalS3;
    fn deref(&self) -> &LocalS3 {
        &self.server
    }
}

impl std::ops::DerefMut for S3 {
    fn deref_mut(&mut self) -> &mut LocalS3 {
        &mut self.server
    }
}

pub async fn s3() -> S3 {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = LocalS3::start(dir.path(), any, ACCESS_KEY, SECRET_KEY).await.unwrap();
    S3 { server, _dir: dir }
}

/// The `yatagarasu` binary running with a config.
pub struct Proxy {
    child: Child,
    pub base: String,
    logs: Arc<Mutex<String>>,
    /// The metrics listener's address, once logged ("metrics listening on http://ADDR").
    metrics_addr: Arc<Mutex<Option<String>>>,
    _config: tempfile::NamedTempFile,
}

impl Proxy {
    pub fn start(config: &str) -> Proxy {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Proxy {
        let file = write_config(config);
        let mut cmd = Command::new(BIN);
        cmd.arg("-c")
            .arg(file.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn yatagarasu");
        let logs = Arc::new(Mutex::new(String::new()));
        let metrics_addr = Arc::new(Mutex::new(None));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            let metrics_addr = metrics_addr.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(i) = line.find("listening on http://") {
                        let addr = line[i + "listening on http://".len()..]
                            // Text or JSON log lines: the address ends at a space or quote.
                            .split(|c: char| c.is_whitespace() || c == '"')
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        if line.contains("metrics listening on http://") {
                            *metrics_addr.lock().unwrap() = Some(addr);
                        } else {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("proxy did not start; logs:\n{}", logs.lock().unwrap());
            }
        };
        Proxy {
            child,
            base: format!("http://{addr}"),
            logs,
            metrics_addr,
            _config: file,
        }
    }

    /// A URL on the metrics listener (waits up to 10 s for its log line).
    pub fn metrics_url(&self, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(addr) = self.metrics_addr.lock().unwrap().clone() {
                return format!("http://{addr}{path}");
            }
            if Instant::now() > deadline {
                panic!("no metrics listener; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the config file the proxy was started with (for reloads).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self._config.path(), config).unwrap();
    }

    /// Sends a signal (`TERM`, `HUP`, ...) to the proxy.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The logs once everything logged so far is written: logs go through a
    /// writer thread, so a line may trail the response it describes. This
    /// makes a request and waits for its own access-log line; the writer is
    /// FIFO, so every earlier line is out by then. Use it before asserting on
    /// the logs, and above all before asserting that something is absent.
    pub async fn settled_logs(&self) -> String {
        let res = client().get(self.url("/health")).send().await.unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(
            self.wait_for_log(&id, Duration::from_secs(10)).await,
            "the access log never showed request {id}"
        );
        self.logs()
    }

    /// Waits until the logs contain `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(config: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(config.as_bytes()).unwrap();
    file
}

/// `yatagarasu check -c` on a config text.
pub fn check(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let file = write_config(config);
    let mut cmd = Command::new(BIN);
    cmd.arg("check").arg("-c").arg(file.path()).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// One bucket at `prefix` over a single upstream.
pub fn single_bucket_config(prefix: &str, endpoint: &str, bucket: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 5
buckets:
  - name: "main"
    path_prefix: "{prefix}"
    s3:
      bucket: "{bucket}"
      region: "us-east-1"
      endpoint: "{endpoint}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
      timeout_seconds: 2
health_check:
  interval_seconds: 1
  timeout_seconds: 1
metrics:
  enabled: false
"#
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET url` and its body as text.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    client().get(url).send().await.unwrap().text().await.unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sends a request line exactly as written (no client-side path normalisation)
/// and returns the status code and the whole response text.
pub async fn raw_get(addr: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Polls `f` until it returns true.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
