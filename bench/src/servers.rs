//! The S3 server (`yatagarasu serve-s3`, s3s-fs checking SigV4) and the
//! proxy under test, as child processes, and the proxy's generated config.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::data::BUCKET;
use crate::procs::Proc;
use crate::Opts;

/// The S3 server's access key (the proxy and presigned URLs use it).
pub const ACCESS_KEY: &str = "AKIABENCHPROXY001";
/// The S3 server's secret key.
pub const SECRET_KEY: &str = "bench-secret-5e4d3c2b1a";

/// A presigned `GET` URL of `key` in [`BUCKET`] at `endpoint`, valid for
/// `ttl`. The signature covers `endpoint`'s host, so a URL presigned for
/// nginx's address holds at the S3 server when nginx forwards the client's
/// `Host` (`proxy_set_header Host $http_host`).
pub fn presign(endpoint: &str, key: &str, ttl: Duration) -> String {
    let bucket = Bucket::new(
        endpoint.parse().expect("endpoint url"),
        UrlStyle::Path,
        BUCKET.to_owned(),
        "us-east-1".to_owned(),
    )
    .expect("bucket");
    let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
    bucket.get_object(Some(&creds), key).sign(ttl).to_string()
}

/// A `yatagarasu serve-s3` process over a root directory.
pub struct S3Server {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl S3Server {
    /// Starts an S3 server over `root`, logging to `<logs>/<name>.log`.
    pub fn start(opts: &Opts, name: &str, root: &Path, logs: &Path) -> Result<S3Server, String> {
        let mut cmd = Command::new(opts.bin());
        cmd.arg("serve-s3")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--root")
            .arg(root)
            .arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        let mut proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
        let endpoint = proc.wait_for("S3 listening on ", Duration::from_secs(30))?;
        Ok(S3Server { proc, endpoint })
    }

    /// A presigned `GET` URL of `key` straight to this server, valid for `ttl`.
    pub fn presign(&self, key: &str, ttl: Duration) -> String {
        presign(&self.endpoint, key, ttl)
    }
}

/// The proxy binary with a generated config.
pub struct Proxy {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub base: String,
}

impl Proxy {
    /// Starts the proxy with `config` (written to `<logs>/<name>.yaml`). Its
    /// access log (the default text format, to stdout, i.e. to
    /// `<logs>/<name>.log`) is on only with `--access-log`.
    pub fn start(opts: &Opts, name: &str, config: &str, logs: &Path) -> Result<Proxy, String> {
        Self::start_scheme(opts, name, config, logs, "http")
    }

    /// [`start`](Self::start) for a config with `server.tls` ([`with_tls`]):
    /// its URLs are `https://`.
    pub fn start_tls(opts: &Opts, name: &str, config: &str, logs: &Path) -> Result<Proxy, String> {
        Self::start_scheme(opts, name, config, logs, "https")
    }

    fn start_scheme(opts: &Opts, name: &str, config: &str, logs: &Path, scheme: &str) -> Result<Proxy, String> {
        let path = logs.join(format!("{name}.yaml"));
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(opts.bin());
        cmd.arg("-c").arg(&path).env("NO_COLOR", "1");
        if opts.access_log() {
            cmd.env_remove("RUST_LOG");
        } else {
            // `info` for the startup line the bench waits for; no per-request line.
            cmd.env("RUST_LOG", "info,yatagarasu::access=off");
        }
        let mut proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
        let addr = proc.wait_for(&format!("listening on {scheme}://"), Duration::from_secs(30))?;
        Ok(Proxy {
            proc,
            base: format!("{scheme}://{addr}"),
        })
    }

    /// The proxy's URL of `key` (no signature: the proxy signs upstream).
    pub fn url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.base)
    }
}

/// The config's `buckets:` entry for [`BUCKET`] at `endpoint`, with `extra`
/// lines (indented four spaces) appended.
pub fn bucket_block(endpoint: &str, extra: &str) -> String {
    format!(
        r#"  - name: "bench"
    path_prefix: "/{BUCKET}"
    s3:
      bucket: "{BUCKET}"
      region: "us-east-1"
      endpoint: "{endpoint}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
      timeout_seconds: 10
{extra}"#
    )
}

/// `extra` for [`bucket_block`]: the bucket's cache off.
pub const NO_CACHE: &str = "    cache:\n      enabled: false\n";

/// `top_extra` for [`config`]: a 64 MiB memory cache tier, one hour TTL.
pub const MEMORY_CACHE: &str = "cache:\n  memory:\n    max_capacity: 67108864\n    ttl_seconds: 3600\n";

/// A whole proxy config: loopback on a free port, metrics off, `buckets`
/// (from [`bucket_block`]) and `top_extra` top-level sections.
pub fn config(buckets: &str, top_extra: &str) -> String {
    format!(
        r#"server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 1
metrics:
  enabled: false
health_check:
  interval_seconds: 30
  timeout_seconds: 2
{top_extra}buckets:
{buckets}"#
    )
}

/// `config` (from [`config`]) with `server.tls` serving `cert` and `key`.
pub fn with_tls(config: &str, cert: &Path, key: &Path) -> String {
    config.replacen(
        "server:\n",
        &format!(
            "server:\n  tls:\n    cert_file: \"{}\"\n    key_file: \"{}\"\n",
            cert.display(),
            key.display()
        ),
        1,
    )
}

/// `hyper-floor` (this package's other binary) serving one file: the least a
/// hyper server does per request, the reference under the proxy's stack.
pub struct Floor {
    /// The process.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Floor {
    /// Starts `hyper-floor` (next to this binary) on `file`, logging to
    /// `<logs>/<name>.log`; `None` when it was not built.
    pub fn start(name: &str, file: &Path, logs: &Path) -> Result<Option<Floor>, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = exe.with_file_name("hyper-floor");
        if !bin.exists() {
            return Ok(None);
        }
        let mut cmd = Command::new(bin);
        cmd.arg(file);
        let mut proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
        let addr = proc.wait_for("floor listening on ", Duration::from_secs(10))?;
        Ok(Some(Floor {
            proc,
            base: format!("http://{addr}"),
        }))
    }

    /// The URL of `key` (any path gets the file).
    pub fn url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.base)
    }
}
