//! Test harness: real S3 servers (s3s-fs, SigV4 checked) started in-process on
//! free loopback ports, and the real `yatagarasu` binary as a child process.
//! The generic parts come from the workspace's test kit (`testkit/`); what is
//! here knows this binary: its path, its key pair, its configs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;

use tempfile::TempDir;
pub use yatagarasu_testkit::pki::Pki;
pub use yatagarasu_testkit::ports::free_port;
pub use yatagarasu_testkit::proxy::{Proxy, ProxyBuilder};
pub use yatagarasu_testkit::redis::{cli, Cluster, Redis, SentinelSet};
pub use yatagarasu_testkit::s3::{Fault, LocalS3};
pub use yatagarasu_testkit::util::{client, eventually, get_text, pattern, raw_get, sha256, write_config};

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

/// Starting the `yatagarasu` binary ([`BIN`]) as a [`Proxy`].
pub trait StartProxy {
    /// The proxy with `config`.
    fn start(config: &str) -> Proxy {
        Self::start_with_env(config, &[])
    }

    /// The proxy with `config` and these environment variables.
    fn start_with_env(config: &str, env: &[(&str, &str)]) -> Proxy {
        ProxyBuilder::new(BIN, config).envs(env.iter().copied()).start()
    }

    /// The proxy with the machine's `AWS_*` variables removed (the test
    /// chooses the credential environment).
    fn start_clean(config: &str) -> Proxy {
        Self::start_clean_with_env(config, &[])
    }

    /// [`start_clean`](Self::start_clean) with these environment variables.
    fn start_clean_with_env(config: &str, env: &[(&str, &str)]) -> Proxy {
        ProxyBuilder::new(BIN, config)
            .without_aws_env()
            .envs(env.iter().copied())
            .start()
    }
}

impl StartProxy for Proxy {}

/// `GET path` from the proxy: the status, the replica that answered
/// (`X-Yatagarasu-Replica`, empty if none) and the body as text.
pub async fn get(proxy: &Proxy, path: &str) -> (u16, String, String) {
    let res = client().get(proxy.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    let replica = res
        .headers()
        .get("x-yatagarasu-replica")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, replica, res.text().await.unwrap())
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

/// A proxy config with one bucket, built by parts: what the failover, fault,
/// S3 API, rclone, hedging and tracing tests share. The bucket serves
/// `data-bucket` in `us-east-1`, signed with [`ACCESS_KEY`] / [`SECRET_KEY`];
/// the server listens on a free loopback port with a 2 s shutdown grace.
pub struct BucketConfig {
    name: String,
    prefix: String,
    bucket: String,
    secret: String,
    server: String,
    s3: Vec<String>,
    replicas: Vec<String>,
    then: Vec<String>,
}

impl BucketConfig {
    /// The bucket `name` at `prefix`.
    pub fn new(name: &str, prefix: &str) -> Self {
        Self {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            bucket: "data-bucket".to_owned(),
            secret: SECRET_KEY.to_owned(),
            server: String::new(),
            s3: Vec::new(),
            replicas: Vec::new(),
            then: Vec::new(),
        }
    }

    /// Another upstream bucket than `data-bucket`.
    pub fn bucket(mut self, bucket: &str) -> Self {
        bucket.clone_into(&mut self.bucket);
        self
    }

    /// Another secret key than [`SECRET_KEY`].
    pub fn secret(mut self, secret: &str) -> Self {
        secret.clone_into(&mut self.secret);
        self
    }

    /// Text added inside the `server: { ... }` flow mapping, after the
    /// grace (`, upstream_read_timeout_seconds: 3`).
    pub fn server(mut self, fields: &str) -> Self {
        self.server.push_str(fields);
        self
    }

    /// Lines of the bucket's `s3:` block (indented six spaces), before its
    /// `replicas:`.
    pub fn s3(mut self, lines: &str) -> Self {
        self.s3.push(lines.to_owned());
        self
    }

    /// A replica: `{ name: NAME, endpoint: "ENDPOINT", FIELDS }`.
    pub fn replica(mut self, name: &str, endpoint: &str, fields: &str) -> Self {
        self.replicas.push(format!(
            "        - {{ name: {name}, endpoint: \"{endpoint}\", {fields} }}"
        ));
        self
    }

    /// Lines after the bucket's `s3:` block: keys of the bucket (indented
    /// four spaces) or top-level sections.
    pub fn then(mut self, lines: &str) -> Self {
        self.then.push(lines.to_owned());
        self
    }

    /// The config text.
    pub fn render(&self) -> String {
        let Self {
            name,
            prefix,
            bucket,
            secret,
            server,
            ..
        } = self;
        let mut out = format!(
            r#"
server: {{ address: "127.0.0.1:0", shutdown_grace_seconds: 2{server} }}
buckets:
  - name: {name}
    path_prefix: {prefix}
    s3:
      bucket: {bucket}
      region: us-east-1
      access_key: "{ACCESS_KEY}"
      secret_key: "{secret}"
"#
        );
        let replicas = (!self.replicas.is_empty()).then(|| format!("      replicas:\n{}", self.replicas.join("\n")));
        for part in self.s3.iter().chain(&replicas).chain(&self.then) {
            if !part.is_empty() {
                out.push_str(part);
                out.push('\n');
            }
        }
        out
    }
}

/// memfds process `pid` holds: the memory tier's bodies kept for `sendfile`.
pub fn memfds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("memfd:yatagarasu-cache"))
        .count()
}

/// Whether `program --version` runs here (a tool `scripts/test.sh`
/// installs). Missing: a failure in CI (`CI=true`), a loud skip elsewhere.
pub fn tool_present(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{program} is not installed: scripts/test.sh installs it");
    }
    eprintln!("\n!!!!! SKIPPED: {program} is not installed (scripts/test.sh installs it) !!!!!\n");
    false
}

/// An HS256 token signed with `secret` holding `claims` (a JSON object),
/// valid for ten minutes.
pub fn hs256_token(secret: &str, mut claims: serde_json::Value) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    claims["exp"] = exp.into();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
