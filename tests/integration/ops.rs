//! Operations: the metrics listener and its seed names, the alert rules'
//! metrics, hot reload (SIGHUP and the admin endpoint), protection (rate
//! limit, load shedding, request limits) and the drain on SIGTERM.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const TOKEN: &str = "admin-token-for-tests";
const WAIT: Duration = Duration::from_secs(15);

/// One bucket `ha` at `/d`: `primary` is dead (nothing listens there),
/// `backup` is the real S3 server; health checks off so the breaker moves
/// only with requests. Extra YAML goes under `server:` and at the top level.
fn ha_config(endpoint: &str, server_extra: &str, extra: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 10
{server_extra}
buckets:
  - name: ha
    path_prefix: /d
    s3:
      bucket: bkt
      access_key: {ACCESS_KEY}
      secret_key: {SECRET_KEY}
      timeout_seconds: 2
      health_check: {{ enabled: false }}
      circuit_breaker: {{ failure_threshold: 2, timeout_seconds: 600 }}
      replicas:
        - {{ name: primary, endpoint: "http://127.0.0.1:1", priority: 1 }}
        - {{ name: backup, endpoint: "{endpoint}", priority: 2 }}
metrics:
  enabled: true
  address: 127.0.0.1
  port: 0
{extra}
"#
    )
}

async fn scrape(proxy: &Proxy) -> String {
    let res = client().get(proxy.metrics_url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    res.text().await.unwrap()
}

/// The value of the sample `name{labels}` (labels as rendered, in order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for_sample(proxy: &Proxy, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = scrape(proxy).await;
        if sample(&text, series).is_some_and(&ok) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} with the expected value in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_use_the_seed_names_and_move() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"hello metrics").unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));

    // From startup: gauges for every replica, counters at zero.
    let text = scrape(&proxy).await;
    for series in [
        r#"yatagarasu_replica_health{bucket="ha",replica="primary"}"#,
        r#"yatagarasu_replica_health{bucket="ha",replica="backup"}"#,
        r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#,
        r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="backup"}"#,
        r#"yatagarasu_replica_failover_total{bucket="ha",from="primary",to="backup"}"#,
        r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"}"#,
        r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
    ] {
        assert!(sample(&text, series).is_some(), "missing {series} in:\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#
        ),
        Some(0.0)
    );
    assert!(!text.contains("otel_scope") && !text.contains("target_info"), "{text}");

    // The proxy port does not serve them.
    let res = client().get(proxy.url("/metrics")).send().await.unwrap();
    assert_ne!(res.status(), 200);

    let c = client();
    for _ in 0..3 {
        let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello metrics");
    }
    let text = wait_for_sample(
        &proxy,
        r#"yatagarasu_requests_total{bucket="ha",method="GET",operation="GetObject",status_class="2xx"}"#,
        |v| v >= 3.0,
    )
    .await;
    let at_least = |series: &str, min: f64| {
        let v = sample(&text, series);
        assert!(
            v.is_some_and(|v| v >= min),
            "{series} = {v:?}, wanted >= {min}, in:\n{text}"
        );
    };
    at_least(
        r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"}"#,
        3.0,
    );
    at_least(
        r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
        2.0,
    );
    at_least(
        r#"yatagarasu_replica_failover_total{bucket="ha",from="primary",to="backup"}"#,
        3.0,
    );
    at_least(r#"yatagarasu_response_bytes_total{bucket="ha"}"#, 3.0 * 13.0);
    at_least(
        r#"yatagarasu_request_duration_seconds_count{bucket="ha",cache="-",operation="GetObject",status_class="2xx"}"#,
        3.0,
    );
    // Two failures opened the primary's breaker.
    assert_eq!(
        sample(
            &text,
            r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("# TYPE yatagarasu_requests_in_flight gauge"), "{text}");
    assert!(text.contains("yatagarasu_auth_total{reason=\"success\"}"), "{text}");

    // The access line counts the bytes.
    assert!(
        proxy.settled_logs().await.contains("bytes=13 complete=true"),
        "{}",
        proxy.settled_logs().await
    );
}

#[tokio::test]
async fn every_metric_of_the_alert_rules_is_exported() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/prometheus/yatagarasu-alerts.yaml"
    ))
    .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&rules).unwrap();
    let mut names = Vec::new();
    for group in doc["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("yatagarasu_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.push(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    for alert in [
        "YatagarasuReplicaDown",
        "YatagarasuAllReplicasDown",
        "YatagarasuHighFailoverRate",
    ] {
        assert!(rules.contains(alert), "{alert} is not in the rules file");
    }
    assert!(names.iter().any(|n| n == "yatagarasu_replica_health"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "yatagarasu_replica_failover_total"),
        "{names:?}"
    );

    // The TLS listeners' series exist only with TLS on: the TLS tests
    // check it (`tls::the_metrics_port_serves_https_from_its_own_block`).
    let tls_only = "yatagarasu_tls_certificate_expiry_timestamp_seconds";
    assert!(names.iter().any(|n| n == tls_only), "{names:?}");
    names.retain(|n| n != tls_only);

    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    let exported = |text: &str, name: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
    };
    // Before any traffic: every gauge and counter the alerts read is already
    // there (a histogram has no series before its first observation).
    let text = scrape(&proxy).await;
    for name in names.iter().filter(|n| !n.ends_with("_bucket")) {
        assert!(
            exported(&text, name),
            "{name} (used by the alert rules) is not exported:\n{text}"
        );
    }
    // After one request, the histograms too.
    let res = client().get(proxy.url("/d/obj.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = wait_for_sample(
        &proxy,
        r#"yatagarasu_requests_total{bucket="ha",method="GET",operation="GetObject",status_class="2xx"}"#,
        |v| v >= 1.0,
    )
    .await;
    for name in &names {
        assert!(
            exported(&text, name),
            "{name} (used by the alert rules) is not exported:\n{text}"
        );
    }
}

/// The `yatagarasu_*` names in a PromQL expression.
fn metric_names(expr: &str, names: &mut Vec<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("yatagarasu_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

/// Every metric the Grafana dashboard reads (panel queries and variables) is
/// exported by the binary once it has served a cached bucket (promtool parses
/// the queries in scripts/check-deploy.sh).
#[tokio::test]
async fn every_metric_of_the_grafana_dashboard_is_exported() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/k8s/grafana/yatagarasu-dashboard.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut names = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dash["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(nested) = p["panels"].as_array() {
            panels.extend(nested);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().unwrap(), &mut names);
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            metric_names(q, &mut names);
        }
    }
    names.sort();
    names.dedup();
    for name in [
        "yatagarasu_requests_total",
        "yatagarasu_replica_request_duration_seconds_bucket",
        "yatagarasu_circuit_breaker_state",
        "yatagarasu_cache_redis_errors_total",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"dashboard").unwrap();
    let extra = "cache:\n  memory: { max_capacity: 16777216, ttl_seconds: 60 }";
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", extra));
    let c = client();
    for _ in 0..2 {
        let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"dashboard");
    }
    let text = wait_for_sample(
        &proxy,
        r#"yatagarasu_requests_total{bucket="ha",method="GET",operation="GetObject",status_class="2xx"}"#,
        |v| v >= 2.0,
    )
    .await;
    for name in &names {
        let exported = text
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(
            exported,
            "{name} (read by the Grafana dashboard) is not exported:\n{text}"
        );
    }
}

/// `yatagarasu_replica_request_duration_seconds{bucket,replica}` observes
/// every attempt that reaches a replica: its count equals the replica's
/// `yatagarasu_replica_requests_total`, failed attempts (the dead primary)
/// included, and none is observed once the breaker turns requests away.
#[tokio::test]
async fn replica_latency_histogram_counts_every_attempt() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"latency").unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    let text = scrape(&proxy).await;
    assert!(
        !text.contains("yatagarasu_replica_request_duration_seconds_count{"),
        "observed before any request:\n{text}"
    );
    let c = client();
    const N: usize = 5;
    for _ in 0..N {
        let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"latency");
    }
    let count = |replica: &str| {
        format!(r#"yatagarasu_replica_request_duration_seconds_count{{bucket="ha",replica="{replica}"}}"#)
    };
    let text = wait_for_sample(&proxy, &count("backup"), |v| v >= N as f64).await;
    assert!(
        text.contains("# TYPE yatagarasu_replica_request_duration_seconds histogram"),
        "{text}"
    );
    assert_eq!(sample(&text, &count("backup")), Some(N as f64), "{text}");
    // The primary's breaker opened after 2 failures (failure_threshold: 2):
    // the attempts sent to it are observed, the ones the breaker refused not.
    let primary_sent = sample(
        &text,
        r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"}"#,
    );
    assert!(primary_sent.is_some_and(|n| (2.0..N as f64).contains(&n)), "{text}");
    assert_eq!(sample(&text, &count("primary")), primary_sent, "{text}");
    // Every observation is in the +Inf bucket; the sum is a duration.
    assert_eq!(
        sample(
            &text,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="backup",le="+Inf"}"#
        ),
        Some(N as f64),
        "{text}"
    );
    let sum = sample(
        &text,
        r#"yatagarasu_replica_request_duration_seconds_sum{bucket="ha",replica="backup"}"#,
    );
    assert!(sum.is_some_and(|s| s > 0.0 && s < 2.0 * N as f64), "{text}");
}

#[tokio::test]
async fn sighup_reload_adds_a_bucket_keeps_breakers_and_open_downloads() {
    let s3 = s3().await;
    let big = pattern(32 * 1024 * 1024, 7);
    s3.put_object("bkt", "big.bin", &big).unwrap();
    s3.put_object("bkt", "obj.txt", b"one").unwrap();
    s3.put_object("other", "new.txt", b"from the new bucket").unwrap();
    let config = ha_config(&s3.endpoint(), "", "");
    let proxy = Proxy::start(&config);
    let c = client();

    // Open the primary's breaker (2 failures), and start a long download.
    for _ in 0..2 {
        assert_eq!(c.get(proxy.url("/d/obj.txt")).send().await.unwrap().status(), 200);
    }
    wait_for_sample(
        &proxy,
        r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#,
        |v| v == 1.0,
    )
    .await;
    let mut download = c.get(proxy.url("/d/big.bin")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mut body = download.chunk().await.unwrap().unwrap().to_vec();

    assert_eq!(c.get(proxy.url("/n/new.txt")).send().await.unwrap().status(), 404);
    let endpoint = s3.endpoint();
    let added = format!(
        r#"
  - name: added
    path_prefix: /n
    s3: {{ bucket: other, endpoint: "{endpoint}", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY}, health_check: {{ enabled: false }} }}
"#
    );
    let new_config = config.replace("\nmetrics:", &format!("{added}metrics:"));
    proxy.rewrite_config(&new_config);
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("config reloaded", WAIT).await,
        "{}",
        proxy.settled_logs().await
    );

    let res = c.get(proxy.url("/n/new.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"from the new bucket");
    // The unchanged primary kept its open breaker: it is still skipped.
    let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = scrape(&proxy).await;
    assert_eq!(
        sample(
            &text,
            r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#
        ),
        Some(1.0)
    );
    assert!(
        sample(&text, r#"yatagarasu_replica_health{bucket="added",replica="default"}"#).is_some(),
        "{text}"
    );
    assert!(
        proxy.settled_logs().await.contains("replicas_kept=2"),
        "{}",
        proxy.settled_logs().await
    );

    // The download that began before the reload ends byte-exact.
    while let Some(chunk) = download.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&big));

    // Removing the bucket again removes its gauges (no stale series for the alerts).
    proxy.rewrite_config(&config);
    proxy.signal("HUP");
    let twice = eventually(WAIT, || async { proxy.logs().matches("config reloaded").count() >= 2 }).await;
    assert!(twice, "{}", proxy.settled_logs().await);
    let text = scrape(&proxy).await;
    assert!(
        sample(&text, r#"yatagarasu_replica_health{bucket="added",replica="default"}"#).is_none(),
        "{text}"
    );
    assert_eq!(c.get(proxy.url("/n/new.txt")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn failed_reload_keeps_the_running_config_and_says_why() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"still here").unwrap();
    let config = ha_config(&s3.endpoint(), "", "");
    let proxy = Proxy::start(&config);
    proxy.rewrite_config(&config.replace("path_prefix: /d", "path_prefix: no-slash"));
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("config reload failed", WAIT).await,
        "{}",
        proxy.settled_logs().await
    );
    let logs = proxy.settled_logs().await;
    let line = logs.lines().find(|l| l.contains("config reload failed")).unwrap();
    assert!(line.contains("buckets[0].path_prefix"), "{line}");

    let res = client().get(proxy.url("/d/obj.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"still here");
    let text = scrape(&proxy).await;
    assert_eq!(
        sample(&text, r#"yatagarasu_config_reloads_total{result="failure"}"#),
        Some(1.0)
    );
}

/// A reload warns, by key, about each change it does not apply, and only
/// about those: `server.readiness` and `server.upstream_read_timeout_seconds`
/// apply at once, a new `metrics.tls` block needs a restart.
#[tokio::test]
async fn a_reload_names_each_key_that_needs_a_restart_and_no_other() {
    let s3 = s3().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("metrics-1", "first", false);
    let (cert2, key2) = pki.issue("metrics-2", "second", false);
    let tls = |c: &std::path::Path, k: &std::path::Path| format!("  tls: {{ cert_file: {c:?}, key_file: {k:?} }}");
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", &tls(&cert, &key)));

    // Keys the new app is built from: applied, so no warning.
    let applied = ha_config(
        &s3.endpoint(),
        "  upstream_read_timeout_seconds: 40\n  readiness: { require_replicas: false }",
        &tls(&cert, &key),
    );
    proxy.rewrite_config(&applied);
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("config reloaded", WAIT).await, "{}", proxy.logs());
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains("restart only"), "{logs}");
    let ready = client()
        .get(proxy.url("/ready"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["require_replicas"], false, "{ready}");

    // Another certificate path for the metrics listener: not applied, so named.
    let moved = ha_config(
        &s3.endpoint(),
        "  upstream_read_timeout_seconds: 40\n  readiness: { require_replicas: false }",
        &tls(&cert2, &key2),
    );
    proxy.rewrite_config(&moved);
    proxy.signal("HUP");
    let twice = eventually(WAIT, || async { proxy.logs().matches("config reloaded").count() >= 2 }).await;
    assert!(twice, "{}", proxy.logs());
    let logs = proxy.settled_logs().await;
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("restart only")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains(r#"key="metrics.tls""#), "{logs}");
}

/// A wrong method or an unknown path on the metrics listener gets a body
/// saying so (and `Allow`), not an empty answer.
#[tokio::test]
async fn the_metrics_listener_explains_a_wrong_method_or_path() {
    let s3 = s3().await;
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", &format!("  admin_token: {TOKEN}")));
    let c = client();
    for (method, path, allow) in [
        (reqwest::Method::POST, "/metrics", "GET,HEAD"),
        (reqwest::Method::GET, "/admin/reload", "POST"),
    ] {
        let res = c.request(method.clone(), proxy.metrics_url(path)).send().await.unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert_eq!(res.headers()["allow"], allow, "{method} {path}");
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body = res.text().await.unwrap();
        assert!(body.contains("method not allowed"), "{method} {path}: {body:?}");
    }
    let res = c.get(proxy.metrics_url("/metric")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body = res.text().await.unwrap();
    assert!(body.contains("GET /metrics"), "{body:?}");
}

/// An admin token read from a Secret file usually ends with a newline (`echo
/// TOKEN > file; kubectl create secret generic --from-file`): no header can
/// carry it, so the token it holds must be enough.
#[tokio::test]
async fn an_admin_token_from_a_file_with_a_trailing_newline_still_works() {
    let s3 = s3().await;
    let config =
        ha_config(&s3.endpoint(), "", "").replace("  port: 0\n", "  port: 0\n  admin_token: \"${ADMIN_TOKEN}\"\n");
    let from_file = format!("{TOKEN}\n");
    let proxy = Proxy::start_with_env(&config, &[("ADMIN_TOKEN", from_file.as_str())]);
    let c = client();
    let reload = proxy.metrics_url("/admin/reload");
    let res = c.post(&reload).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = c.post(&reload).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c.post(&reload).bearer_auth(format!("{TOKEN}x")).send().await.unwrap();
    assert_eq!(res.status(), 401);
}

/// `/health` and `/ready` answer on the metrics port as on the proxy's.
#[tokio::test]
async fn the_metrics_port_answers_health_and_ready_too() {
    let s3 = s3().await;
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    let health = client().get(proxy.metrics_url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), r#"{"status":"ok"}"#);
    let json = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
    let on_metrics = json(get_text(proxy.metrics_url("/ready")).await);
    let on_proxy = json(get_text(proxy.url("/ready")).await);
    assert_eq!(on_metrics["status"], on_proxy["status"], "{on_metrics}");
    let buckets = |v: &serde_json::Value| v["buckets"].as_object().map(|b| b.keys().cloned().collect::<Vec<_>>());
    assert!(buckets(&on_metrics).is_some_and(|b| !b.is_empty()), "{on_metrics}");
    assert_eq!(buckets(&on_metrics), buckets(&on_proxy));
}

/// A wrong method on `/health` or `/ready` (the proxy's port) gets a body
/// saying so, and `Allow`.
#[tokio::test]
async fn health_and_ready_explain_a_wrong_method() {
    let s3 = s3().await;
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    for path in ["/health", "/ready"] {
        let res = client().post(proxy.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 405, "{path}");
        assert_eq!(res.headers()["allow"], "GET,HEAD", "{path}");
        let body = res.text().await.unwrap();
        assert!(body.contains("answer GET and HEAD"), "{path}: {body:?}");
    }
}

#[tokio::test]
async fn admin_endpoints_need_the_token_and_are_off_without_one() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let with_token =
        ha_config(&s3.endpoint(), "", "").replace("  port: 0\n", "  port: 0\n  admin_token: \"${ADMIN_TOKEN}\"\n");
    let proxy = Proxy::start_with_env(&with_token, &[("ADMIN_TOKEN", TOKEN)]);
    let c = client();
    let reload = proxy.metrics_url("/admin/reload");

    let res = c.post(&reload).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c.post(&reload).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c.post(&reload).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "reloaded");
    assert_eq!(body["report"]["replicas_kept"], 2);
    // No cache configured: the purge says so.
    let res = c
        .delete(proxy.metrics_url("/admin/cache/ha/obj.txt"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    // Not on the proxy port.
    let res = c
        .post(proxy.url("/admin/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200);

    // An invalid config is refused, naming the key.
    proxy.rewrite_config(&with_token.replace("timeout_seconds: 2", "timeout_seconds: 0"));
    let res = c.post(&reload).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 422);
    let text = res.text().await.unwrap();
    assert!(text.contains("buckets[0].s3.timeout_seconds"), "{text}");

    // Reload to a config without a token: the admin endpoints are gone.
    proxy.rewrite_config(&ha_config(&s3.endpoint(), "", ""));
    let res = c.post(&reload).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let res = c.post(&reload).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = c.delete(proxy.metrics_url("/admin/cache")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn rate_limit_answers_429_slowdown_with_retry_after() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let server = "  rate_limit: { per_ip: { enabled: true, requests_per_second: 1, burst: 2 } }";
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), server, ""));
    let c = client();
    let mut limited = None;
    for _ in 0..20 {
        let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let res = limited.expect("20 requests at 1/s with a burst of 2 were never limited");
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(res.text().await.unwrap().contains("<Code>SlowDown</Code>"));
    // Probes are never limited.
    assert_eq!(c.get(proxy.url("/health")).send().await.unwrap().status(), 200);
    // A limited request counts for the bucket it was sent to.
    let text = scrape(&proxy).await;
    let limited = r#"yatagarasu_requests_total{bucket="ha",method="GET",operation="GetObject",status_class="4xx"}"#;
    assert!(
        sample(&text, limited).is_some_and(|n| n >= 1.0),
        "{limited} missing:\n{text}"
    );
}

#[tokio::test]
async fn per_ip_limits_see_the_client_behind_a_trusted_load_balancer() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let server = "  rate_limit: { per_ip: { enabled: true, requests_per_second: 1, burst: 1, trusted_proxies: [\"127.0.0.0/8\"] } }";
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), server, ""));
    let c = client();
    let get = |client_ip: &'static str| {
        c.get(proxy.url("/d/obj.txt"))
            .header("x-forwarded-for", format!("6.6.6.6, {client_ip}"))
            .send()
    };
    // Each forwarded client has its own bucket (the forged left-most entry is ignored) ...
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        assert_eq!(get(ip).await.unwrap().status(), 200, "{ip}");
    }
    // ... and one client over its burst is limited.
    let mut limited = false;
    for _ in 0..10 {
        if get("203.0.113.1").await.unwrap().status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the forwarded client was never limited");
}

#[tokio::test]
async fn concurrency_limit_sheds_with_503_and_retry_after() {
    let s3 = s3().await;
    let big = pattern(32 * 1024 * 1024, 9);
    s3.put_object("bkt", "big.bin", &big).unwrap();
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "  max_concurrent_requests: 1", ""));
    let c = client();
    let mut download = c.get(proxy.url("/d/big.bin")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mut body = download.chunk().await.unwrap().unwrap().to_vec();

    // The download holds the only slot until its body ends.
    let res = c.get(proxy.url("/d/obj.txt")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(res.text().await.unwrap().contains("<Code>SlowDown</Code>"));
    assert_eq!(c.get(proxy.url("/ready")).send().await.unwrap().status(), 200);

    while let Some(chunk) = download.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&big));
    let freed = eventually(WAIT, || async {
        c.get(proxy.url("/d/obj.txt"))
            .send()
            .await
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(freed, "the slot was not given back");
}

#[tokio::test]
async fn long_targets_get_414_and_large_headers_431() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let server = "  max_uri_length: 300\n  max_header_bytes: 2048";
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), server, ""));
    let c = client();
    assert_eq!(c.get(proxy.url("/d/obj.txt")).send().await.unwrap().status(), 200);
    let res = c
        .get(proxy.url(&format!("/d/{}", "k".repeat(400))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 414);
    let res = c
        .get(proxy.url("/d/obj.txt"))
        .header("x-padding", "p".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
}

/// Limits above hyper's default buffer (~408 KiB) are the proxy's own: a
/// head within them is served, one over them gets the S3 XML 431 (hyper
/// refused both with a bare 431 before).
#[tokio::test]
async fn header_limits_above_hypers_buffer_hold_as_configured() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"x").unwrap();
    let server = "  max_header_bytes: 1048576";
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), server, ""));
    let c = client();
    let res = c
        .get(proxy.url("/d/obj.txt"))
        .header("x-padding", "p".repeat(600 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c
        .get(proxy.url("/d/obj.txt"))
        .header("x-padding", "p".repeat(1080 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    let body = res.text().await.unwrap();
    assert!(body.contains("<Code>RequestHeaderSectionTooLarge</Code>"), "{body}");
}

#[tokio::test]
async fn after_sigterm_new_connections_are_refused_while_downloads_finish() {
    drains_on("TERM").await;
}

#[tokio::test]
async fn after_sigint_new_connections_are_refused_while_downloads_finish() {
    drains_on("INT").await;
}

/// README: on SIGTERM / SIGINT the proxy "stops accepting at once" while
/// in-flight downloads go on, then exits 0.
async fn drains_on(signal: &str) {
    let s3 = s3().await;
    let big = pattern(32 * 1024 * 1024, 11);
    s3.put_object("bkt", "big.bin", &big).unwrap();
    let mut proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    let mut download = client().get(proxy.url("/d/big.bin")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mut body = download.chunk().await.unwrap().unwrap().to_vec();
    // A keep-alive connection idle between requests when the signal comes.
    let mut idle = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    proxy.signal(signal);
    assert!(proxy.wait_for_log("shutting down", WAIT).await);
    assert!(proxy.wait_for_log("stopped accepting connections", WAIT).await);
    // It is closed at once, not at the idle timeout (60 s) or the drain's
    // end (`shutdown_grace_seconds`, 30 s).
    let closed = async {
        let mut buf = [0u8; 1024];
        while !matches!(idle.read(&mut buf).await, Ok(0) | Err(_)) {}
    };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), closed).await.is_ok(),
        "an idle connection stayed open after {signal}"
    );
    // A fresh client, so a new connection: the listener is closed.
    for path in ["/ready", "/d/big.bin"] {
        match client().get(proxy.url(path)).send().await {
            Err(e) => assert!(e.is_connect(), "{path}: {e:?}"),
            Ok(res) => panic!("{path}: accepted after {signal}: {}", res.status()),
        }
    }

    while let Some(chunk) = download.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&big));
    assert_eq!(proxy.wait_exit(Duration::from_secs(15)), Some(0));
}

/// Every request's access line reaches stdout (a pipe here) whole, and
/// before the process's last line: connection threads keep their lines
/// until they idle, and write what is left as they end on SIGTERM.
#[tokio::test]
async fn every_access_line_is_written_whole_before_exit() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"cached").unwrap();
    let cache = "cache:\n  memory: { max_capacity: 16777216, ttl_seconds: 60 }";
    let mut proxy = Proxy::start(&ha_config(&s3.endpoint(), "  connection_threads: 2", cache));
    let url = proxy.url("/d/obj.txt");
    // Eight keep-alive connections, shared out over both threads.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                for _ in 0..50 {
                    let res = c.get(&url).send().await.unwrap();
                    assert_eq!(res.status(), 200);
                    assert_eq!(&res.bytes().await.unwrap()[..], b"cached");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(WAIT), Some(0));
    assert!(proxy.wait_for_log(" INFO stopped\n", WAIT).await, "{}", proxy.logs());
    let logs = proxy.logs();
    let (before, after) = logs.split_once(" INFO stopped\n").unwrap();
    let lines: Vec<&str> = before.lines().filter(|l| l.contains(" path=/d/obj.txt ")).collect();
    assert_eq!(lines.len(), 400, "{logs}");
    for line in &lines {
        assert!(
            line.contains(" INFO request request_id=")
                && line.contains(" status=200 ")
                && line.contains(" duration_ms="),
            "a line cut or mixed with another: {line}"
        );
        // What the router told the edge.
        assert!(
            line.contains(" bucket=ha ") && line.contains(" operation=\"GetObject\" "),
            "{line}"
        );
    }
    // What the cache and the failover told it: hits, and the one fill from
    // the backup (or a few, for requests that raced it).
    assert!(lines.iter().any(|l| l.contains(" cache=HIT-MEMORY ")), "{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" replica=backup ") && l.contains(" cache=MISS")),
        "{logs}"
    );
    assert!(
        !after.contains(" path=/d/obj.txt "),
        "access lines after the last line: {after}"
    );
}

#[tokio::test]
async fn admin_purges_the_cache_and_its_counters_are_exported() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"cached").unwrap();
    let extra = format!("  admin_token: {TOKEN}\ncache:\n  memory: {{ max_capacity: 16777216, ttl_seconds: 60 }}");
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", &extra));
    let c = client();
    let x_cache = |res: &reqwest::Response| {
        res.headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let get = || c.get(proxy.url("/d/obj.txt")).send();
    let first = get().await.unwrap();
    assert_eq!(first.status(), 200);
    let _ = first.bytes().await;
    let hit = eventually(WAIT, || async {
        let res = get().await.unwrap();
        x_cache(&res).starts_with("HIT")
    })
    .await;
    assert!(hit, "the object was never served from the cache");

    for path in ["/admin/cache/ha/obj.txt", "/admin/cache/ha", "/admin/cache"] {
        let res = c
            .delete(proxy.metrics_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let res = c
        .delete(proxy.metrics_url("/admin/cache/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = get().await.unwrap();
    assert!(!x_cache(&res).starts_with("HIT"), "still cached after a purge");

    let text = scrape(&proxy).await;
    assert!(
        sample(&text, "yatagarasu_cache_memory_hits_total").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "yatagarasu_cache_purges_total").is_some_and(|v| v >= 3.0),
        "{text}"
    );
}

/// The field `name` of a JSON log line, at the top level or under `fields`.
fn json_field<'a>(line: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    line.get(name).or_else(|| line.get("fields").and_then(|f| f.get(name)))
}

#[tokio::test]
async fn json_logging_gives_one_object_per_request_with_the_documented_fields() {
    let s3 = s3().await;
    s3.put_object("bkt", "obj.txt", b"json log body").unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", "logging: { format: json }"));
    let mut ids = Vec::new();
    for _ in 0..2 {
        let res = client().get(proxy.url("/d/obj.txt")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        ids.push(res.headers()["x-request-id"].to_str().unwrap().to_owned());
        assert_eq!(res.bytes().await.unwrap().len(), 13);
    }
    let wanted = ids.clone();
    let logged = eventually(WAIT, || {
        let logs = proxy.logs();
        let wanted = wanted.clone();
        async move { wanted.iter().all(|id| logs.contains(id.as_str())) }
    })
    .await;
    assert!(logged, "{}", proxy.logs());
    let logs = proxy.settled_logs().await;
    let mut access = Vec::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not one JSON object: {line}: {e}"));
        // The target is a name for filters, not a printed field (README).
        if json_field(&value, "request_id").is_some() && json_field(&value, "complete").is_some() {
            access.push(value);
        }
    }
    for id in &ids {
        let lines: Vec<_> = access
            .iter()
            .filter(|v| json_field(v, "request_id").and_then(|r| r.as_str()) == Some(id.as_str()))
            .collect();
        assert_eq!(lines.len(), 1, "{id}: {logs}");
        let line = lines[0];
        for field in [
            "method",
            "path",
            "bucket",
            "status",
            "bytes",
            "complete",
            "replica",
            "cache",
            "identity",
            "duration_ms",
        ] {
            assert!(json_field(line, field).is_some(), "{field} missing: {line}");
        }
        assert_eq!(json_field(line, "method").unwrap(), "GET", "{line}");
        assert_eq!(json_field(line, "path").unwrap(), "/d/obj.txt", "{line}");
        assert_eq!(json_field(line, "bucket").unwrap(), "ha", "{line}");
        assert_eq!(json_field(line, "status").unwrap().as_u64(), Some(200), "{line}");
        assert_eq!(json_field(line, "bytes").unwrap().as_u64(), Some(13), "{line}");
        assert_eq!(json_field(line, "complete").unwrap().as_bool(), Some(true), "{line}");
        assert_eq!(json_field(line, "replica").unwrap(), "backup", "{line}");
    }
}

#[tokio::test]
async fn a_download_the_client_abandons_is_logged_complete_false() {
    let s3 = s3().await;
    s3.put_object("bkt", "big.bin", &pattern(32 * 1024 * 1024, 5)).unwrap();
    let proxy = Proxy::start(&ha_config(&s3.endpoint(), "", ""));
    let c = client();
    let mut res = c.get(proxy.url("/d/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!res.chunk().await.unwrap().unwrap().is_empty());
    // The client leaves mid-body: the connection goes with the client.
    drop(res);
    drop(c);
    assert!(proxy.wait_for_log("complete=false", WAIT).await, "{}", proxy.logs());
    let logs = proxy.settled_logs().await;
    let line = logs
        .lines()
        .find(|l| l.contains(id.as_str()) && l.contains("complete="))
        .unwrap_or_else(|| panic!("no access line for {id}: {logs}"));
    assert!(line.contains("complete=false"), "{line}");
    assert!(line.contains("status=200"), "{line}");
}
