//! Faults the failover must see, through the real binary in front of real S3
//! servers (SigV4 checked): a replica's own 401/403, 404s on lagging
//! replicas, readiness that recovers without traffic, full bulkheads,
//! retries, bodies that stall, reloaded credentials, and the metric values
//! all of it leaves behind. Replicas that misbehave in ways the S3 test
//! server does not ([`replica`]: a forwarder in front of it): the wrong
//! region (400 / 301 / 307), throttling (429), pooled connections closed
//! under a request, a 206 nobody asked for, and a chunked body cut mid-way.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

mod replica;

use replica::{Act, Replica};

const WAIT: Duration = Duration::from_secs(15);
const BIG: usize = 1024 * 1024 + 11;

struct Pair {
    primary: S3,
    backup: S3,
}

async fn pair() -> Pair {
    let (primary, backup) = (s3().await, s3().await);
    for (s3, label) in [(&primary, "Primary"), (&backup, "Backup")] {
        s3.put_object("data-bucket", "test.txt", format!("{label} data!\n").as_bytes())
            .unwrap();
        s3.put_object("data-bucket", "big.bin", &pattern(BIG, 3)).unwrap();
    }
    Pair { primary, backup }
}

/// A two-replica bucket `ha` at `/data`, health checks off, metrics on.
struct Cfg {
    /// Appended inside the primary's `{ ... }`.
    primary: &'static str,
    /// Extra lines of the `s3:` block (6-space indent).
    s3: &'static str,
    /// Extra keys of `server:` (inside `{ ... }`).
    server: &'static str,
    health: bool,
    failure_threshold: u32,
    secret: &'static str,
}

impl Default for Cfg {
    fn default() -> Self {
        Self {
            primary: "",
            s3: "",
            server: "",
            health: false,
            failure_threshold: 3,
            secret: SECRET_KEY,
        }
    }
}

impl Cfg {
    fn render(&self, p: &Pair) -> String {
        self.render_at(p, &p.primary.endpoint())
    }

    /// With the primary reached at `primary` (a misbehaving replica in
    /// front of the primary's S3 server).
    fn render_at(&self, p: &Pair, primary: &str) -> String {
        BucketConfig::new("ha", "/data")
            .server(self.server)
            .secret(self.secret)
            .s3("      retry: { max_attempts: 1 }")
            .s3(&format!(
                "      circuit_breaker: {{ failure_threshold: {}, timeout_seconds: 600 }}",
                self.failure_threshold
            ))
            .s3(&format!(
                "      health_check: {{ enabled: {}, interval_seconds: 1, timeout_seconds: 1 }}",
                self.health
            ))
            .s3(self.s3)
            .replica(
                "primary",
                primary,
                &format!("priority: 1, timeout_seconds: 2 {}", self.primary),
            )
            .replica("backup", &p.backup.endpoint(), "priority: 2, timeout_seconds: 2")
            .then("metrics: { enabled: true, address: 127.0.0.1, port: 0 }")
            .render()
    }
}

/// One bucket `main` at `/d` over a single replica, health checks off.
fn single(endpoint: &str, secret: &str, extra_s3: &str, extra_server: &str) -> String {
    BucketConfig::new("main", "/d")
        .bucket("bkt")
        .secret(secret)
        .server(extra_server)
        .s3(&format!("      endpoint: \"{endpoint}\""))
        .s3("      timeout_seconds: 2")
        .s3("      health_check: { enabled: false }")
        .s3(extra_s3)
        .then("metrics: { enabled: false }")
        .render()
}

async fn ready(proxy: &Proxy) -> (u16, Value) {
    let res = client().get(proxy.url("/ready")).send().await.unwrap();
    let status = res.status().as_u16();
    (status, serde_json::from_str(&res.text().await.unwrap()).unwrap())
}

async fn scrape(proxy: &Proxy) -> String {
    get_text(proxy.metrics_url("/metrics")).await
}

/// The value of one series, by its exact name and label set.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_replica_with_a_wrong_key_is_failed_over_and_its_error_code_logged() {
    let p = pair().await;
    let cfg = Cfg {
        primary: r#", secret_key: "wrong-secret-value-0000""#,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    for _ in 0..3 {
        let (status, replica, body) = get(&proxy, "/data/test.txt").await;
        assert_eq!(
            (status, replica.as_str(), body.as_str()),
            (200, "backup", "Backup data!\n")
        );
    }
    // The proxy tells the operator which replica refused it and with which code, nothing more.
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("Replica 'primary' refused the proxy's request (403 SignatureDoesNotMatch)"),
        "{logs}"
    );
    assert!(logs.contains("Replica 'primary' failed, trying 'backup'"), "{logs}");
    assert!(!logs.contains("wrong-secret-value"), "a secret reached the logs");
    assert!(!logs.contains("<Error>"), "an upstream error body reached the logs");
    // Three refusals reached the failure threshold: the breaker is open.
    assert_eq!(
        ready(&proxy).await.1["buckets"]["ha"]["replicas"][0]["circuit_breaker"],
        "open"
    );
}

#[tokio::test]
async fn a_probe_refused_for_a_wrong_key_reads_unhealthy_with_the_reason() {
    let p = pair().await;
    let cfg = Cfg {
        primary: r#", secret_key: "wrong-secret-value-0000""#,
        health: true,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    let shown = eventually(WAIT, || async {
        let (status, report) = ready(&proxy).await;
        let primary = &report["buckets"]["ha"]["replicas"][0];
        status == 200
            && primary["health"] == "unhealthy"
            && primary["reason"]
                .as_str()
                .is_some_and(|r| r.contains("refused the proxy's request: 403"))
            && report["buckets"]["ha"]["replicas"][1]["health"] == "healthy"
    })
    .await;
    assert!(
        shown,
        "/ready never showed the refusing primary: {:?}",
        ready(&proxy).await
    );
    // Clients are served by the backup.
    let (status, replica, _) = get(&proxy, "/data/test.txt").await;
    assert_eq!((status, replica.as_str()), (200, "backup"));
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("health check failed replica=primary error=upstream refused the proxy's request: 403"),
        "{logs}"
    );
    assert!(!logs.contains("wrong-secret-value"), "a secret reached the logs");
}

#[tokio::test]
async fn every_replica_refusing_is_a_502_never_the_upstream_403() {
    let p = pair().await;
    let cfg = Cfg {
        secret: "wrong-secret-value-0000",
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    let res = client().get(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    let body = res.text().await.unwrap();
    assert!(body.contains("<Code>BadGateway</Code>"), "{body}");
    assert!(
        !body.contains("SignatureDoesNotMatch") && !body.contains(ACCESS_KEY),
        "{body}"
    );
    let res = client().head(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'backup' refused the proxy's request (403"));
}

#[tokio::test]
async fn failover_on_404_finds_an_object_on_a_lagging_replica_and_404s_when_none_has_it() {
    let p = pair().await;
    p.backup
        .put_object("data-bucket", "late.txt", b"replicated late")
        .unwrap();
    let cfg = Cfg {
        s3: "      failover_on_404: true",
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    let (status, replica, body) = get(&proxy, "/data/late.txt").await;
    assert_eq!(
        (status, replica.as_str(), body.as_str()),
        (200, "backup", "replicated late")
    );

    let before = p.backup.requests();
    let res = client().get(proxy.url("/data/nowhere.txt")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("<Code>NoSuchKey</Code>"));
    assert_eq!(p.backup.requests(), before + 1, "the backup was not asked");
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'primary' answered 404, trying 'backup'"));
    // A 404 says nothing bad about the primary: it still serves what it has.
    assert_eq!(get(&proxy, "/data/test.txt").await.1, "primary");
}

#[tokio::test]
async fn ready_recovers_without_traffic_when_health_checks_are_off() {
    let mut s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let config = single(
        &s3.endpoint(),
        SECRET_KEY,
        "      circuit_breaker: { failure_threshold: 1, timeout_seconds: 4 }",
        "",
    );
    let proxy = Proxy::start(&config);
    assert_eq!(ready(&proxy).await.0, 200);
    s3.stop().await;
    assert_eq!(get(&proxy, "/d/k.txt").await.0, 502);
    let (status, report) = ready(&proxy).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["buckets"]["main"]["replicas"][0]["circuit_breaker"], "open");
    assert_eq!(report["buckets"]["main"]["replicas"][0]["usable"], false);

    // The replica comes back; nothing but /ready is asked, and it turns 200.
    s3.restart().await.unwrap();
    let before = s3.requests();
    assert!(
        eventually(WAIT, || async { ready(&proxy).await.0 == 200 }).await,
        "/ready never recovered"
    );
    assert_eq!(s3.requests(), before, "readiness sent a request upstream");
    // The next request is the breaker's trial, and it passes.
    let (status, _, body) = get(&proxy, "/d/k.txt").await;
    assert_eq!((status, body.as_str()), (200, "v"));
}

#[tokio::test]
async fn readiness_that_does_not_require_replicas_reports_the_outage_and_stays_200() {
    let mut s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let config = single(
        &s3.endpoint(),
        SECRET_KEY,
        "      circuit_breaker: { failure_threshold: 1, timeout_seconds: 600 }",
        ", readiness: { require_replicas: false }",
    );
    let proxy = Proxy::start(&config);
    assert_eq!(ready(&proxy).await.1["status"], "ready");
    s3.stop().await;
    assert_eq!(get(&proxy, "/d/k.txt").await.0, 502);
    let (status, report) = ready(&proxy).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(report["buckets"]["main"]["ready"], false, "{report}");
    assert_eq!(report["buckets"]["main"]["replicas"][0]["usable"], false, "{report}");
    // A drain still takes the pod out.
    proxy.signal("TERM");
    let drained = eventually(WAIT, || async {
        match client().get(proxy.url("/ready")).send().await {
            Ok(res) => res.status() == 503,
            Err(_) => true,
        }
    })
    .await;
    assert!(drained);
}

#[tokio::test]
async fn content_type_cache_control_and_user_metadata_pass_through_the_binary() {
    let s3 = s3().await;
    let headers = [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "public, max-age=60"),
        ("x-amz-meta-owner", "team-a"),
        ("x-amz-meta-build", "42"),
    ];
    s3.put_object_with("bkt", "page.html", "<h1>hi</h1>", &headers)
        .await
        .unwrap();
    let proxy = Proxy::start(&single(&s3.endpoint(), SECRET_KEY, "", ""));
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let res = client()
            .request(method.clone(), proxy.url("/d/page.html"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{method}");
        for (name, value) in headers {
            assert_eq!(
                res.headers().get(name).map(|v| v.to_str().unwrap()),
                Some(value),
                "{method} {name}"
            );
        }
        if method == reqwest::Method::GET {
            assert_eq!(res.text().await.unwrap(), "<h1>hi</h1>");
        }
    }
}

#[tokio::test]
async fn fault_modes_check_the_signature_first() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let endpoint: url::Url = s3.endpoint().parse().unwrap();
    let bucket = rusty_s3::Bucket::new(
        endpoint,
        rusty_s3::UrlStyle::Path,
        "bkt".to_owned(),
        "us-east-1".to_owned(),
    )
    .unwrap();
    let url = |secret: &str| {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(ACCESS_KEY, secret);
        bucket.get_object(Some(&creds), "k.txt").sign(Duration::from_secs(60))
    };
    for (fault, status) in [(Fault::Error500, 500), (Fault::SlowDown, 503)] {
        s3.set_fault(fault);
        let wrong = client().get(url("wrong-secret")).send().await.unwrap();
        assert_eq!(wrong.status(), 403, "{fault:?}");
        let right = client().get(url(SECRET_KEY)).send().await.unwrap();
        assert_eq!(right.status(), status, "{fault:?}");
    }
    // A stall still refuses a bad signature at once.
    s3.set_fault(Fault::Stall);
    let wrong = tokio::time::timeout(WAIT, client().get(url("wrong-secret")).send())
        .await
        .expect("a wrongly signed request stalled")
        .unwrap();
    assert_eq!(wrong.status(), 403);
}

#[tokio::test]
async fn a_full_bulkhead_skips_to_the_next_replica() {
    let p = pair().await;
    let cfg = Cfg {
        primary: ", max_concurrent_requests: 1",
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    p.primary.set_fault(Fault::Stall);
    // One request holds the primary's only slot (it stalls until its 2 s timeout).
    let url = proxy.url("/data/test.txt");
    let holder = tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() });
    assert!(eventually(WAIT, || async { p.primary.requests() == 1 }).await);
    // The next one is refused by the bulkhead at once and served by the backup.
    let (status, replica, body) = get(&proxy, "/data/test.txt").await;
    assert_eq!(
        (status, replica.as_str(), body.as_str()),
        (200, "backup", "Backup data!\n")
    );
    assert_eq!(p.primary.requests(), 1, "a request got past a full bulkhead");
    // The refused request was not sent: not counted as one sent to the primary.
    let text = scrape(&proxy).await;
    for (name, value) in [
        (
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"}"#,
            1.0,
        ),
        (
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"}"#,
            1.0,
        ),
        (
            r#"yatagarasu_replica_failover_total{bucket="ha",from="primary",to="backup"}"#,
            1.0,
        ),
    ] {
        assert_eq!(series(&text, name), Some(value), "{name}\n{text}");
    }
    assert_eq!(holder.await.unwrap(), 200);
}

#[tokio::test]
async fn retries_with_backoff_when_every_replica_failed() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let config = single(
        &s3.endpoint(),
        SECRET_KEY,
        "      retry: { max_attempts: 3, initial_interval: 50, max_interval: 200 }\n      circuit_breaker: { failure_threshold: 50 }",
        "",
    );
    let proxy = Proxy::start(&config);
    // Two failures, then the third attempt serves.
    s3.set_fault(Fault::FailNext(2));
    let before = s3.requests();
    let (status, _, body) = get(&proxy, "/d/k.txt").await;
    assert_eq!((status, body.as_str()), (200, "v"));
    assert_eq!(s3.requests() - before, 3);
    // Three failures: max_attempts is spent, the client gets the 502.
    s3.set_fault(Fault::FailNext(3));
    let before = s3.requests();
    assert_eq!(get(&proxy, "/d/k.txt").await.0, 502);
    assert_eq!(s3.requests() - before, 3);
}

#[tokio::test]
async fn a_body_stalling_past_the_read_timeout_resumes_from_the_next_replica() {
    let p = pair().await;
    let cfg = Cfg {
        server: ", upstream_read_timeout_seconds: 1",
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    p.primary.set_fault(Fault::StallAfter(256 * 1024));
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-yatagarasu-replica"], "primary");
    let body = res.bytes().await.expect("complete body");
    assert_eq!(sha256(&body), sha256(&pattern(BIG, 3)));
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'primary' failed mid-body, resuming from byte 262144"));

    // Every replica stalls (four legs of 64 KiB never make the 1 MiB): the
    // download is cut, never delivered short as complete.
    p.primary.set_fault(Fault::StallAfter(64 * 1024));
    p.backup.set_fault(Fault::StallAfter(64 * 1024));
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.is_err(), "a stalled body was delivered as complete");
}

#[tokio::test]
async fn a_reload_with_corrected_credentials_takes_effect_with_a_fresh_breaker() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let breaker = "      circuit_breaker: { failure_threshold: 1, timeout_seconds: 600 }";
    let proxy = Proxy::start(&single(&s3.endpoint(), "wrong-secret-value-0000", breaker, ""));
    assert_eq!(get(&proxy, "/d/k.txt").await.0, 502);
    // The refusal opened the breaker: now the replica is not even tried.
    let res = client().get(proxy.url("/d/k.txt")).send().await.unwrap();
    assert_eq!(res.status(), 503);

    proxy.rewrite_config(&single(&s3.endpoint(), SECRET_KEY, breaker, ""));
    proxy.signal("HUP");
    assert!(proxy.wait_for_log("config reloaded", WAIT).await, "{}", proxy.logs());
    let (status, _, body) = get(&proxy, "/d/k.txt").await;
    assert_eq!((status, body.as_str()), (200, "v"));
}

#[tokio::test]
async fn failover_and_breaker_metrics_have_their_label_sets_and_values() {
    let mut p = pair().await;
    let cfg = Cfg {
        failure_threshold: 2,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    p.primary.stop().await;
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    }
    let expected = [
        // Two refused connections, then three skips of the open breaker: five failovers.
        (
            r#"yatagarasu_replica_failover_total{bucket="ha",from="primary",to="backup"}"#,
            5.0,
        ),
        (
            r#"yatagarasu_replica_failover_total{bucket="ha",from="backup",to="primary"}"#,
            0.0,
        ),
        (
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"}"#,
            2.0,
        ),
        (
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"}"#,
            5.0,
        ),
        (
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
            2.0,
        ),
        (
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="backup"}"#,
            0.0,
        ),
        (
            r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#,
            1.0,
        ),
        (r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="backup"}"#, 0.0),
    ];
    let text = scrape(&proxy).await;
    for (name, value) in expected {
        assert_eq!(series(&text, name), Some(value), "{name}\n{text}");
    }
    // The request counter is written when each response body ends.
    let counted = eventually(WAIT, || async {
        series(
            &scrape(&proxy).await,
            r#"yatagarasu_requests_total{bucket="ha",method="GET",operation="GetObject",status_class="2xx"}"#,
        ) == Some(5.0)
    })
    .await;
    assert!(counted, "{}", scrape(&proxy).await);
}

#[tokio::test]
async fn probes_pass_on_2xx_for_the_bucket_and_on_2xx_or_404_for_a_key() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let checks = |path: &str| {
        format!("health_check: {{ enabled: true, interval_seconds: 1, timeout_seconds: 1, path: \"{path}\" }}")
    };
    let replica = |report: &Value| report["buckets"]["main"]["replicas"][0].clone();

    // A bucket that does not exist answers its HEAD 404: not a replica that can serve.
    let config = single(&s3.endpoint(), SECRET_KEY, "", "").replace("bucket: bkt", "bucket: no-such-bucket");
    let proxy = Proxy::start(&config.replace("health_check: { enabled: false }", &checks("/")));
    let seen = eventually(WAIT, || async {
        let (status, report) = ready(&proxy).await;
        status == 503
            && replica(&report)["health"] == "unhealthy"
            && replica(&report)["reason"] == "upstream answered 404 Not Found"
    })
    .await;
    assert!(seen, "{:?}", ready(&proxy).await);
    drop(proxy);

    // A missing probe key still proves the replica answers with our credentials.
    let config = single(&s3.endpoint(), SECRET_KEY, "", "");
    let proxy = Proxy::start(&config.replace("health_check: { enabled: false }", &checks("/no-such-key.txt")));
    let seen = eventually(WAIT, || async {
        let (status, report) = ready(&proxy).await;
        status == 200 && replica(&report)["health"] == "healthy"
    })
    .await;
    assert!(seen, "{:?}", ready(&proxy).await);
}

/// `/ready`'s report of the primary has `field` == `value`.
async fn primary_reads(proxy: &Proxy, field: &str, value: &str) -> bool {
    ready(proxy).await.1["buckets"]["ha"]["replicas"][0][field] == value
}

#[tokio::test]
async fn a_replica_that_breaks_every_body_opens_its_breaker_and_each_resume_is_a_failover() {
    let p = pair().await;
    let proxy = Proxy::start(&Cfg::default().render(&p));
    // Good headers (full length, ETag), then a reset at 64 KiB: every time.
    p.primary.set_fault(Fault::ResetAfter(64 * 1024));
    for _ in 0..3 {
        let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
        assert_eq!(res.headers()["x-yatagarasu-replica"], "primary");
        let body = res.bytes().await.expect("resumed from the backup");
        assert_eq!(sha256(&body), sha256(&pattern(BIG, 3)));
    }
    let expected = [
        (
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
            3.0,
        ),
        (
            r#"yatagarasu_replica_failover_total{bucket="ha",from="primary",to="backup"}"#,
            3.0,
        ),
        // failure_threshold 3: three cuts in a row, no success in between.
        (
            r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#,
            1.0,
        ),
    ];
    let counted = eventually(WAIT, || async {
        let text = scrape(&proxy).await;
        expected.iter().all(|(name, value)| series(&text, name) == Some(*value))
    })
    .await;
    assert!(counted, "{}", scrape(&proxy).await);
    // Open: the next download goes to the backup without touching the primary.
    let gets = p.primary.gets();
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
    assert_eq!(sha256(&res.bytes().await.unwrap()), sha256(&pattern(BIG, 3)));
    assert_eq!(p.primary.gets(), gets, "an open breaker let a request through");
}

#[tokio::test]
async fn a_cut_body_that_cannot_be_resumed_is_counted_logged_and_charged() {
    let p = pair().await;
    let proxy = Proxy::start(&Cfg::default().render(&p));
    // No ETag: nothing can guard a resume, so the client's download is cut.
    p.primary.set_fault(Fault::ResetAfterWithoutEtag(64 * 1024));
    for _ in 0..3 {
        let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.bytes().await.is_err(), "a cut body was delivered as complete");
    }
    let counted = eventually(WAIT, || async {
        let text = scrape(&proxy).await;
        series(
            &text,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
        ) == Some(3.0)
            && series(
                &text,
                r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#,
            ) == Some(1.0)
    })
    .await;
    assert!(counted, "{}", scrape(&proxy).await);
    assert!(
        proxy
            .wait_for_log("Replica 'primary' failed mid-body, cannot resume (no ETag)", WAIT)
            .await,
        "{}",
        proxy.logs()
    );
    // The open breaker sends the next download to the backup, whole.
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
    assert_eq!(sha256(&res.bytes().await.unwrap()), sha256(&pattern(BIG, 3)));
}

#[tokio::test]
async fn passing_probes_do_not_keep_closed_the_breaker_of_a_replica_whose_gets_fail() {
    let p = pair().await;
    let cfg = Cfg {
        health: true,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render(&p));
    assert!(
        eventually(WAIT, || primary_reads(&proxy, "health", "healthy")).await,
        "{:?}",
        ready(&proxy).await
    );
    // The bucket's HEAD passes, every GET answers 503.
    p.primary.set_fault(Fault::SlowDownGets);
    let probes = || p.primary.requests() - p.primary.gets();
    for _ in 0..3 {
        // A passing probe between every two failed GETs.
        let before = probes();
        assert!(eventually(WAIT, || async { probes() > before }).await);
        assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    }
    assert!(
        proxy.wait_for_log("circuit breaker opened", WAIT).await,
        "{}",
        proxy.logs()
    );
    // Requests opened it, so passing probes only let a trial through: more
    // than `success_threshold` (2) of them leave it half-open, not closed.
    for _ in 0..3 {
        let before = probes();
        assert!(eventually(WAIT, || async { probes() > before }).await);
    }
    let state = r#"yatagarasu_circuit_breaker_state{bucket="ha",replica="primary"}"#;
    assert_eq!(series(&scrape(&proxy).await, state), Some(2.0), "{}", proxy.logs());
    assert!(!proxy.logs().contains("circuit breaker closed"), "{}", proxy.logs());
    // The trial GET fails over to the backup and opens it again.
    let gets = p.primary.gets();
    assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    assert_eq!(p.primary.gets(), gets + 1, "the half-open breaker sent no trial");
    let reopened = eventually(WAIT, || async {
        proxy.logs().matches("circuit breaker opened").count() == 2
    })
    .await;
    assert!(reopened, "{}", proxy.logs());
}

/// An S3 error answer: `status`, extra header lines (each ending `\r\n`),
/// and, for a `GET`, the XML body naming `code`.
fn s3_error(method: &str, status: &str, headers: &str, code: &str) -> String {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>m</Message><RequestId>0A1B2C3D</RequestId></Error>"
    );
    let body = if method == "HEAD" { "" } else { xml.as_str() };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nx-amz-request-id: 0A1B2C3D\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        if method == "HEAD" { 0 } else { xml.len() }
    )
}

/// `HEAD` then `GET` of `/data/test.txt`: both from the backup, whole.
async fn head_and_get_served_by_backup(proxy: &Proxy, what: &str) {
    let res = client().head(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_eq!(
        (
            res.status().as_u16(),
            res.headers()
                .get("x-yatagarasu-replica")
                .map(|v| v.to_str().unwrap().to_owned())
        ),
        (200, Some("backup".to_owned())),
        "HEAD, primary {what}: {:?}\n{}",
        res.headers(),
        proxy.logs()
    );
    assert_eq!(res.headers()["content-length"], "13");
    let (status, replica, body) = get(proxy, "/data/test.txt").await;
    assert_eq!(
        (status, replica.as_str(), body.as_str()),
        (200, "backup", "Backup data!\n"),
        "GET, primary {what}"
    );
}

#[tokio::test]
async fn a_replica_in_the_wrong_region_is_failed_over_for_heads_and_gets() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let p = pair().await;
    // What S3 answers a replica configured with the wrong region, as seen in
    // three shapes; a HEAD's 400 has no body: only `x-amz-bucket-region` says why.
    let shape = Arc::new(AtomicUsize::new(0));
    let shapes = shape.clone();
    let wrong = Replica::start(p.primary.addr(), move |seen| {
        let m = seen.method.as_str();
        Act::Answer(match shapes.load(Ordering::SeqCst) {
            0 => s3_error(
                m,
                "400 Bad Request",
                "x-amz-bucket-region: eu-west-1\r\n",
                "AuthorizationQueryParametersError",
            ),
            1 => s3_error(
                m,
                "301 Moved Permanently",
                "x-amz-bucket-region: eu-west-1\r\n",
                "PermanentRedirect",
            ),
            _ => s3_error(
                m,
                "307 Temporary Redirect",
                "Location: http://127.0.0.1:9/data-bucket/test.txt\r\n",
                "TemporaryRedirect",
            ),
        })
    })
    .await;
    let cfg = Cfg {
        failure_threshold: 100,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render_at(&p, &wrong.endpoint()));
    for (i, what) in ["400 (wrong region)", "301 PermanentRedirect", "307 TemporaryRedirect"]
        .into_iter()
        .enumerate()
    {
        shape.store(i, Ordering::SeqCst);
        head_and_get_served_by_backup(&proxy, what).await;
    }
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("Replica 'primary' refused the proxy's request (400 AuthorizationQueryParametersError"),
        "{logs}"
    );
    assert!(
        logs.contains("Replica 'primary' refused the proxy's request (400 without an error code; the bucket is in region 'eu-west-1')"),
        "the HEAD's refusal names no region: {logs}"
    );
    // Every refusal was a failure of the primary: charged to its breaker.
    let failures = series(
        &scrape(&proxy).await,
        r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#,
    );
    assert_eq!(failures, Some(6.0), "{}", scrape(&proxy).await);
}

#[tokio::test]
async fn a_throttling_replica_429_is_failed_over_and_charged() {
    let p = pair().await;
    let throttled = Replica::start(p.primary.addr(), |seen| {
        Act::Answer(s3_error(
            &seen.method,
            "429 Too Many Requests",
            "Retry-After: 2\r\n",
            "SlowDown",
        ))
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &throttled.endpoint()));
    head_and_get_served_by_backup(&proxy, "429").await;
    let text = scrape(&proxy).await;
    assert_eq!(
        series(
            &text,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert!(proxy.logs().contains("Replica 'primary' failed, trying 'backup'"));
}

#[tokio::test]
async fn a_pooled_connection_the_replica_closed_is_retried_on_a_new_one_not_failed_over() {
    let p = pair().await;
    // Every connection serves one request; the next request on it meets the
    // replica's close (its idle close crossed the request on the wire).
    let closing = Replica::start(p.primary.addr(), |seen| {
        if seen.on_conn > 1 {
            Act::Close
        } else {
            Act::Forward
        }
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &closing.endpoint()));
    let client = client();
    for i in 0..4 {
        if i > 0 {
            // As a replica's keep-alive timeout does: its close meets a
            // connection that sat idle (a request on one idle for less
            // than `RESEND_AFTER_IDLE`, 1 s, is not kept to send again).
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        let res = client.get(proxy.url("/data/test.txt")).send().await.unwrap();
        assert_eq!(res.headers()["x-yatagarasu-replica"], "primary", "{}", proxy.logs());
        assert_eq!(res.text().await.unwrap(), "Primary data!\n");
    }
    assert!(
        closing.seen().iter().any(|s| s.on_conn > 1),
        "no pooled connection was reused: the test tests nothing"
    );
    let text = scrape(&proxy).await;
    assert_eq!(
        series(
            &text,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert!(!proxy.logs().contains("failed"), "{}", proxy.logs());
}

#[tokio::test]
async fn a_206_to_a_request_without_range_is_not_passed_on() {
    let p = pair().await;
    let partial = Replica::start(p.primary.addr(), |seen| {
        if seen.method == "GET" && seen.header("range").is_none() {
            Act::ForwardWith(vec![("range", Some("bytes=0-65535".into()))])
        } else {
            Act::Forward
        }
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &partial.endpoint()));
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{:?}", res.headers());
    assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
    assert_eq!(sha256(&res.bytes().await.unwrap()), sha256(&pattern(BIG, 3)));
}

#[tokio::test]
async fn a_part_read_answered_206_is_passed_on() {
    let p = pair().await;
    // S3 answers `GetObject?partNumber=1` of a multipart object 206 with the
    // part's range, without any Range asked (the test server has no parts:
    // the replica asks it for the range S3 would answer).
    let parts = Replica::start(p.primary.addr(), |seen| {
        if seen.target.contains("partNumber=1") {
            Act::ForwardWith(vec![("range", Some("bytes=0-524287".into()))])
        } else {
            Act::Forward
        }
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &parts.endpoint()));
    let res = client()
        .get(proxy.url("/data/big.bin?partNumber=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206, "{}", proxy.logs());
    assert_eq!(res.headers()["x-yatagarasu-replica"], "primary");
    assert_eq!(res.headers()["content-range"], "bytes 0-524287/1048587");
    assert_eq!(sha256(&res.bytes().await.unwrap()), sha256(&pattern(BIG, 3)[..524288]));
}

#[tokio::test]
async fn a_body_sent_chunked_without_a_length_and_cut_resumes_from_the_next_replica() {
    let p = pair().await;
    // The whole object, re-sent chunked (no Content-Length, ETag kept), cut
    // cleanly (FIN, no last chunk) after 64 KiB.
    let chunked = Replica::start(p.primary.addr(), |seen| {
        if seen.method == "GET" {
            Act::ChunkedCutAfter(64 * 1024)
        } else {
            Act::Forward
        }
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &chunked.endpoint()));
    for _ in 0..2 {
        let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-yatagarasu-replica"], "primary");
        let body = res.bytes().await.expect("resumed from the backup");
        assert_eq!(sha256(&body), sha256(&pattern(BIG, 3)));
    }
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("Replica 'primary' failed mid-body, resuming from byte 65536"),
        "{logs}"
    );
    // A client that asked for a range gets the rest of that range only.
    let res = client()
        .get(proxy.url("/data/big.bin"))
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    let body = res.bytes().await.expect("resumed from the backup");
    assert_eq!(sha256(&body), sha256(&pattern(BIG, 3)[1000..]));
}

#[tokio::test]
async fn a_probe_on_a_pooled_connection_the_replica_closed_is_sent_again_not_failed() {
    let p = pair().await;
    // The probe's kept-alive connection meets the replica's close each time
    // it is reused (the replica's idle timeout crossing the probe interval).
    let closing = Replica::start(p.primary.addr(), |seen| {
        if seen.on_conn > 1 {
            Act::Close
        } else {
            Act::Forward
        }
    })
    .await;
    let cfg = Cfg {
        health: true,
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render_at(&p, &closing.endpoint()));
    let reused = || closing.seen().iter().filter(|s| s.on_conn > 1).count();
    assert!(
        eventually(WAIT, || async { reused() >= 3 }).await,
        "{:?}",
        closing.seen()
    );
    // Each closed connection was followed by the probe on a new one.
    let answered = eventually(WAIT, || async {
        closing.seen().iter().filter(|s| s.on_conn == 1).count() > reused()
    })
    .await;
    assert!(answered, "{:?}", closing.seen());
    assert!(
        primary_reads(&proxy, "health", "healthy").await,
        "{:?}",
        ready(&proxy).await
    );
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains("health check failed"), "{logs}");
}

#[tokio::test]
async fn a_replica_without_the_bucket_is_failed_over_not_a_404() {
    let p = pair().await;
    // The primary's bucket does not exist on its server (a typo, a
    // disaster-recovery bucket never created): S3 answers every GET 404
    // NoSuchBucket (the test server answers NoSuchKey: S3's answer is sent
    // in its place), a HEAD a bodiless 404. The client named no upstream
    // bucket: the replica is broken.
    let bucketless = Replica::start(p.primary.addr(), |seen| {
        Act::Answer(s3_error(&seen.method, "404 Not Found", "", "NoSuchBucket"))
    })
    .await;
    let proxy = Proxy::start(&Cfg::default().render_at(&p, &bucketless.endpoint()));
    for _ in 0..3 {
        let (status, replica, body) = get(&proxy, "/data/test.txt").await;
        assert_eq!(
            (status, replica.as_str(), body.as_str()),
            (200, "backup", "Backup data!\n")
        );
    }
    assert!(
        proxy
            .wait_for_log(
                "Replica 'primary' refused the proxy's request (404 NoSuchBucket): check its bucket name",
                WAIT
            )
            .await,
        "{}",
        proxy.logs()
    );
    // Three failures opened its breaker: a HEAD (whose 404 has no body to
    // tell a missing bucket from a missing key) goes to the backup too.
    assert!(primary_reads(&proxy, "circuit_breaker", "open").await);
    let res = client().head(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
    // A key missing everywhere is still the client's 404.
    assert_eq!(get(&proxy, "/data/missing.txt").await.0, 404);
}

#[tokio::test]
async fn an_error_answer_whose_body_stalls_fails_over_after_the_replicas_timeout() {
    let p = pair().await;
    // A 404's headers, the first bytes of its body, then nothing: the
    // connection stays open.
    let stalling = Replica::start(p.primary.addr(), |_| {
        Act::Answer(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: 200\r\n\r\n<?xml".into(),
        )
    })
    .await;
    let cfg = Cfg {
        server: ", upstream_read_timeout_seconds: 5",
        ..Cfg::default()
    };
    let proxy = Proxy::start(&cfg.render_at(&p, &stalling.endpoint()));
    let (status, replica, body) = get(&proxy, "/data/test.txt").await;
    assert_eq!(
        (status, replica.as_str(), body.as_str()),
        (200, "backup", "Backup data!\n"),
        "{}",
        proxy.logs()
    );
    assert!(
        proxy
            .wait_for_log(
                "Replica 'primary' failed, trying 'backup' bucket=ha error=no response within 2s",
                WAIT
            )
            .await,
        "{}",
        proxy.logs()
    );
}
