//! The `yatagarasu` binary as a child process: started with a config file,
//! its stdout and stderr captured, its listening addresses read from its
//! startup log lines, killed and reaped on drop.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{client, write_config};

/// How to start a [`Proxy`]: which binary, which config, which environment.
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    bin: PathBuf,
    config: String,
    env: Vec<(OsString, OsString)>,
    without_aws_env: bool,
}

impl ProxyBuilder {
    /// The binary at `bin` (`env!("CARGO_BIN_EXE_yatagarasu")` in the
    /// binary's integration tests) with `config` (YAML text).
    pub fn new(bin: impl Into<PathBuf>, config: &str) -> Self {
        Self {
            bin: bin.into(),
            config: config.to_owned(),
            env: Vec::new(),
            without_aws_env: false,
        }
    }

    /// Sets environment variables of the process.
    pub fn envs<K, V>(mut self, env: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env.extend(env.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Removes the machine's `AWS_*` variables from the process's
    /// environment (the test chooses the credential environment).
    pub fn without_aws_env(mut self) -> Self {
        self.without_aws_env = true;
        self
    }

    /// Starts the proxy and waits (up to 60 s) until it logs its listening
    /// address; panics with its logs if it does not.
    pub fn start(self) -> Proxy {
        let file = write_config(&self.config);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(file.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.without_aws_env {
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("AWS_") {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.envs(self.env);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let logs = Arc::new(Mutex::new(String::new()));
        let metrics = Arc::new(Mutex::new(None));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let (logs, metrics, tx) = (logs.clone(), metrics.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(url) = listening_url(&line) {
                        if line.contains("metrics listening on ") {
                            *metrics.lock().unwrap() = Some(url);
                        } else {
                            let _ = tx.send(url);
                        }
                    }
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let Ok(base) = rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            panic!("proxy did not start; logs:\n{}", logs.lock().unwrap());
        };
        Proxy {
            child,
            base,
            logs,
            metrics,
            config: file,
        }
    }
}

/// The URL in a "listening on http(s)://ADDR" line, text or JSON.
fn listening_url(line: &str) -> Option<String> {
    let i = line.find("listening on http")?;
    let url = line[i + "listening on ".len()..]
        // Text or JSON log lines: the address ends at a space or quote.
        .split(|c: char| c.is_whitespace() || c == '"')
        .next()
        .unwrap_or_default();
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_owned())
}

/// The proxy binary running with a config; killed on drop.
pub struct Proxy {
    child: Child,
    /// `http://ADDR` or `https://ADDR`.
    pub base: String,
    logs: Arc<Mutex<String>>,
    /// The metrics listener's URL, once logged ("metrics listening on URL").
    metrics: Arc<Mutex<Option<String>>>,
    config: tempfile::NamedTempFile,
}

impl Proxy {
    /// A URL on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL on the metrics listener (waits up to 10 s for its log line).
    pub fn metrics_url(&self, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(base) = self.metrics.lock().unwrap().clone() {
                return format!("{base}{path}");
            }
            if Instant::now() > deadline {
                panic!("no metrics listener; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `HOST:PORT` of the main listener.
    pub fn addr(&self) -> String {
        self.base.split("://").nth(1).unwrap_or_default().to_owned()
    }

    /// Everything the process wrote so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config file the proxy was started with (for reloads).
    pub fn rewrite_config(&self, config: &str) {
        std::fs::write(self.config.path(), config).unwrap();
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

    /// Waits until the logs contain `needle`; false after `timeout`.
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

#[cfg(test)]
mod tests {
    use super::listening_url;

    #[test]
    fn listening_urls_are_read_from_text_and_json_lines() {
        let text = "2026-01-01T00:00:00Z  INFO yatagarasu::server: Yatagarasu listening on https://127.0.0.1:4443";
        assert_eq!(listening_url(text).as_deref(), Some("https://127.0.0.1:4443"));
        let json = r#"{"level":"INFO","fields":{"message":"metrics listening on http://127.0.0.1:9090"}}"#;
        assert_eq!(listening_url(json).as_deref(), Some("http://127.0.0.1:9090"));
        assert_eq!(listening_url("S3 listening on ftp://x"), None);
        assert_eq!(listening_url("nothing here"), None);
    }
}
