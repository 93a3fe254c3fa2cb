//! `yatagarasu healthcheck`: the binary asking a running proxy (the real
//! binary, in front of a local S3 replica) whether it is healthy, as the
//! image's `HEALTHCHECK` and the compose stacks do.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// The most `healthcheck --ready` runs while waiting for a replica's probe.
const ATTEMPTS: usize = 150;

/// One bucket over `endpoint` (probed every second), the proxy on
/// `127.0.0.1:{server_port}`, and `metrics` as the `metrics:` block's lines.
fn config(endpoint: &str, server_port: u16, metrics: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:{server_port}"
  shutdown_grace_seconds: 1
buckets:
  - name: main
    path_prefix: /d
    s3:
      bucket: data-bucket
      region: us-east-1
      endpoint: "{endpoint}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
      timeout_seconds: 1
health_check:
  interval_seconds: 1
  timeout_seconds: 1
metrics:
{metrics}
"#
    )
}

/// A metrics listener on `127.0.0.1:{port}`.
fn metrics_on(port: u16) -> String {
    format!("  enabled: true\n  address: 127.0.0.1\n  port: {port}")
}

/// What a `yatagarasu healthcheck` run says.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `yatagarasu healthcheck ARGS` with these variables set, `YATAGARASU_CONFIG`
/// and the `AWS_*` variables removed (a child process of the async runtime,
/// so the in-process S3 server keeps serving meanwhile).
async fn healthcheck_with_env(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("healthcheck").args(args).env_remove("YATAGARASU_CONFIG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().await.unwrap();
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn healthcheck(args: &[&str]) -> Outcome {
    healthcheck_with_env(args, &[]).await
}

fn path_arg(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap()
}

async fn s3_with_object() -> S3 {
    let s3 = s3().await;
    s3.put_object("data-bucket", "hello.txt", b"hello").unwrap();
    s3
}

/// With the same config as the proxy, `healthcheck` asks the metrics
/// listener's `/health` and exits 0.
#[tokio::test]
async fn healthcheck_exits_0_when_the_metrics_listener_answers_health() {
    let s3 = s3_with_object().await;
    let port = free_port();
    let text = config(&s3.endpoint(), 0, &metrics_on(port));
    let _proxy = Proxy::start(&text);
    let file = write_config(&text);
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("http://127.0.0.1:{port}/health answered 200")),
        "{out:?}"
    );
    // YATAGARASU_CONFIG is read as serve reads it.
    let out = healthcheck_with_env(&[], &[("YATAGARASU_CONFIG", path_arg(&file))]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// Without a metrics listener, the proxy's own listener is asked.
#[tokio::test]
async fn healthcheck_asks_the_proxy_listener_when_metrics_are_off() {
    let s3 = s3_with_object().await;
    let port = free_port();
    let text = config(&s3.endpoint(), port, "  enabled: false");
    let _proxy = Proxy::start(&text);
    let file = write_config(&text);
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("http://127.0.0.1:{port}/health")),
        "{out:?}"
    );
}

/// `--ready` follows `/ready`: 1 (with the status and the report's start)
/// while the only replica is down, 0 once its probe passes again; `/health`
/// stays 0 throughout.
#[tokio::test]
async fn healthcheck_ready_follows_the_only_replica() {
    let mut s3 = s3_with_object().await;
    s3.stop().await;
    let text = config(&s3.endpoint(), 0, &metrics_on(free_port()));
    let _proxy = Proxy::start(&text);
    let file = write_config(&text);
    let args = ["-c", path_arg(&file), "--ready"];

    let out = healthcheck(&args).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("/ready answered 503"), "{out:?}");
    assert!(out.stderr.contains(r#""ready":false"#), "{out:?}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:?}");
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(0), "/health while the replica is down: {out:?}");

    s3.restart().await.unwrap();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let out = healthcheck(&args).await;
        if out.code == Some(0) {
            return;
        }
        last = Some(out);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("--ready never exited 0 once the replica was back: {last:?}");
}

/// Nothing listening: exit 1, one line naming the URL and the refusal;
/// from the config and from `--url` alike.
#[tokio::test]
async fn healthcheck_says_connection_refused_when_nothing_listens() {
    let port = free_port();
    let file = write_config(&config("http://127.0.0.1:1", 0, &metrics_on(port)));
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("http://127.0.0.1:{port}/health: connection refused")),
        "{out:?}"
    );
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:?}");

    let url = format!("http://127.0.0.1:{}/ready", free_port());
    let out = healthcheck(&["--url", &url]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("{url}: connection refused")), "{out:?}");
}

/// A metrics listener with TLS is asked over HTTPS; its certificate (from a
/// CA the healthcheck does not know) is accepted: a loopback self-check.
#[tokio::test]
async fn healthcheck_speaks_https_to_a_tls_metrics_listener() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("metrics", "metrics", false);
    let port = free_port();
    let metrics = format!(
        "{}\n  tls: {{ cert_file: {cert:?}, key_file: {key:?} }}",
        metrics_on(port)
    );
    let text = config(&s3.endpoint(), 0, &metrics);
    let _proxy = Proxy::start(&text);
    let file = write_config(&text);
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("https://127.0.0.1:{port}/health")),
        "{out:?}"
    );
}

/// `--url` is asked as given, whatever the config says (here: none).
#[tokio::test]
async fn healthcheck_url_overrides_the_config() {
    let s3 = s3_with_object().await;
    let proxy = Proxy::start(&config(&s3.endpoint(), 0, "  enabled: false"));
    let missing = Path::new("/nonexistent/yatagarasu.yaml").to_str().unwrap();
    let out = healthcheck(&["-c", missing, "--url", &proxy.url("/health")]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = healthcheck(&["-c", missing, "--url", &proxy.url("/ready")]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // Any status but 200 is a failure, quoted.
    let out = healthcheck(&["--url", &proxy.url("/d/missing.txt")]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("answered 404 Not Found"), "{out:?}");
    assert!(out.stderr.contains("NoSuchKey"), "{out:?}");
}

/// A credential whose `${VAR}` the healthcheck's environment lacks does not
/// stop it (it needs the listener, not the secret); a listener key whose
/// `${VAR}` is unset is an error naming the variable.
#[tokio::test]
async fn healthcheck_needs_the_listener_not_the_secrets() {
    let s3 = s3_with_object().await;
    let port = free_port();
    let text =
        config(&s3.endpoint(), 0, &metrics_on(port)).replace(&format!("\"{SECRET_KEY}\""), "\"${HC_TEST_SECRET}\"");
    let _proxy = Proxy::start_with_env(&text, &[("HC_TEST_SECRET", SECRET_KEY)]);
    let file = write_config(&text);
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(0), "{out:?}");

    let text = text.replace(&format!("port: {port}"), "port: \"${HC_TEST_PORT}\"");
    let file = write_config(&text);
    let out = healthcheck(&["-c", path_arg(&file)]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("metrics.port: environment variable HC_TEST_PORT is not set"),
        "{out:?}"
    );
    let port = port.to_string();
    let out = healthcheck_with_env(&["-c", path_arg(&file)], &[("HC_TEST_PORT", &port)]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
}
