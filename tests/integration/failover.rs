//! High availability through the real binary: replicas killed, stalled,
//! answering 500, resetting mid-body, and coming back.

use std::time::Duration;

use crate::common::*;

struct Cluster {
    primary: S3,
    backup: S3,
    dr: S3,
}

async fn cluster() -> Cluster {
    let (primary, backup, dr) = (s3().await, s3().await, s3().await);
    for (s3, label) in [(&primary, "Primary"), (&backup, "Backup"), (&dr, "DR")] {
        s3.put_object("data-bucket", "test.txt", format!("{label} data!\n").as_bytes())
            .unwrap();
        s3.put_object("data-bucket", "big.bin", &pattern(4 * 1024 * 1024 + 3, 7))
            .unwrap();
    }
    Cluster { primary, backup, dr }
}

struct Opts {
    failure_threshold: u32,
    success_threshold: u32,
    open_seconds: u64,
    half_open: u32,
    health: bool,
    timeout: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            success_threshold: 2,
            open_seconds: 30,
            half_open: 1,
            health: false,
            timeout: 1,
        }
    }
}

fn ha_config(c: &Cluster, o: &Opts) -> String {
    let t = o.timeout;
    BucketConfig::new("ha-data", "/data")
        .s3("      retry: { max_attempts: 1 }")
        .s3(&format!(
            "      circuit_breaker: {{ failure_threshold: {}, success_threshold: {}, timeout_seconds: {}, half_open_requests: {} }}",
            o.failure_threshold, o.success_threshold, o.open_seconds, o.half_open
        ))
        .s3(&format!(
            "      health_check: {{ enabled: {}, interval_seconds: 1, timeout_seconds: 1 }}",
            o.health
        ))
        .replica("primary", &c.primary.endpoint(), &format!("priority: 1, timeout_seconds: {t}"))
        .replica("backup", &c.backup.endpoint(), &format!("priority: 2, timeout_seconds: {t}"))
        .replica("dr", &c.dr.endpoint(), &format!("priority: 3, timeout_seconds: {t}"))
        .then("metrics: { enabled: false }")
        .render()
}

#[tokio::test]
async fn primary_killed_backup_serves_with_zero_errors() {
    let mut c = cluster().await;
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    assert_eq!(get(&proxy, "/data/test.txt").await.2, "Primary data!\n");

    c.primary.stop().await;
    for _ in 0..30 {
        let (status, replica, body) = get(&proxy, "/data/test.txt").await;
        assert_eq!(
            (status, replica.as_str(), body.as_str()),
            (200, "backup", "Backup data!\n")
        );
    }
    assert!(
        proxy
            .settled_logs()
            .await
            .contains("Replica 'primary' failed, trying 'backup'"),
        "{}",
        proxy.settled_logs().await
    );

    // Primary and backup down: the DR copy serves.
    c.backup.stop().await;
    let (status, replica, body) = get(&proxy, "/data/test.txt").await;
    assert_eq!((status, replica.as_str(), body.as_str()), (200, "dr", "DR data!\n"));
}

#[tokio::test]
async fn stalled_primary_is_left_after_its_timeout() {
    let c = cluster().await;
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    c.primary.set_fault(Fault::Stall);
    let (status, replica, body) = get(&proxy, "/data/test.txt").await;
    assert_eq!(
        (status, replica.as_str(), body.as_str()),
        (200, "backup", "Backup data!\n")
    );
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'primary' failed, trying 'backup'"));
}

#[tokio::test]
async fn errors_open_the_breaker_and_later_requests_skip_the_replica() {
    let c = cluster().await;
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    c.primary.set_fault(Fault::Error500);
    for _ in 0..3 {
        let (status, replica, _) = get(&proxy, "/data/test.txt").await;
        assert_eq!((status, replica.as_str()), (200, "backup"));
    }
    assert!(
        proxy
            .wait_for_log("circuit breaker opened", Duration::from_secs(5))
            .await
    );
    let before = c.primary.requests();
    for _ in 0..20 {
        assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    }
    assert_eq!(c.primary.requests(), before, "an open breaker let requests through");
}

#[tokio::test]
async fn an_open_breaker_recovers_through_half_open() {
    let c = cluster().await;
    let opts = Opts {
        failure_threshold: 1,
        open_seconds: 1,
        ..Opts::default()
    };
    let proxy = Proxy::start(&ha_config(&c, &opts));
    c.primary.set_fault(Fault::Error500);
    assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    assert!(
        proxy
            .wait_for_log("circuit breaker opened", Duration::from_secs(5))
            .await
    );

    // The primary heals; after the open timeout a half-open trial reaches it.
    c.primary.set_fault(Fault::None);
    let back = eventually(Duration::from_secs(10), || async {
        get(&proxy, "/data/test.txt").await.1 == "primary"
    })
    .await;
    assert!(back, "primary never came back");
    assert!(proxy.settled_logs().await.contains("circuit breaker half-open"));
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/data/test.txt").await.2, "Primary data!\n");
    }
    // success_threshold (2) trial successes closed it.
    assert!(
        proxy
            .wait_for_log("circuit breaker closed", Duration::from_secs(5))
            .await
    );
}

#[tokio::test]
async fn half_open_admits_only_its_trial_requests_under_concurrency() {
    let c = cluster().await;
    let opts = Opts {
        failure_threshold: 1,
        open_seconds: 1,
        half_open: 2,
        timeout: 2,
        ..Opts::default()
    };
    let proxy = Proxy::start(&ha_config(&c, &opts));
    c.primary.set_fault(Fault::Error500);
    assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    assert!(
        proxy
            .wait_for_log("circuit breaker opened", Duration::from_secs(5))
            .await
    );

    // Trials that hang: while they are in flight, no other request may reach the primary.
    c.primary.set_fault(Fault::Stall);
    // Wait (without traffic) until the open period is over: /ready counts the
    // primary usable again once its next request would be a trial.
    let due = eventually(Duration::from_secs(10), || async {
        let report: serde_json::Value = serde_json::from_str(&get_text(proxy.url("/ready")).await).unwrap();
        report["buckets"]["ha-data"]["replicas"][0]["usable"] == true
    })
    .await;
    assert!(due, "the open period never ended");
    let before = c.primary.requests();
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let url = proxy.url("/data/test.txt");
            tokio::spawn(async move {
                let res = client().get(url).send().await.unwrap();
                (res.status().as_u16(), res.text().await.unwrap())
            })
        })
        .collect();
    for task in burst {
        let (status, body) = task.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "Backup data!\n"));
    }
    let trials = c.primary.requests() - before;
    assert!(
        (1..=2).contains(&trials),
        "{trials} requests reached a half-open primary"
    );
}

#[tokio::test]
async fn reset_mid_body_is_resumed_from_the_next_replica() {
    let c = cluster().await;
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    c.primary.set_fault(Fault::ResetAfter(1024 * 1024 + 5));
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-yatagarasu-replica"], "primary");
    let body = res.bytes().await.expect("complete body");
    assert_eq!(sha256(&body), sha256(&pattern(4 * 1024 * 1024 + 3, 7)));
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'primary' failed mid-body, resuming from byte"));

    // A ranged download resumes within its range.
    let res = client()
        .get(proxy.url("/data/big.bin"))
        .header("range", "bytes=100-2500000")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    let body = res.bytes().await.expect("complete range");
    assert_eq!(body.as_ref(), &pattern(4 * 1024 * 1024 + 3, 7)[100..=2_500_000]);
}

#[tokio::test]
async fn resume_never_splices_different_content() {
    let c = cluster().await;
    // The other replicas hold different bytes (different ETags): resuming would corrupt.
    c.backup
        .put_object("data-bucket", "big.bin", &pattern(4 * 1024 * 1024 + 3, 8))
        .unwrap();
    c.dr.put_object("data-bucket", "big.bin", &pattern(4 * 1024 * 1024 + 3, 9))
        .unwrap();
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    c.primary.set_fault(Fault::ResetAfter(512 * 1024));
    let res = client().get(proxy.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // The connection is cut: the client sees an error, never a short or mixed 200.
    assert!(
        res.bytes().await.is_err(),
        "a truncated or spliced body was delivered as complete"
    );
}

#[tokio::test]
async fn all_replicas_down_is_a_clear_retryable_error() {
    let mut c = cluster().await;
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    c.primary.stop().await;
    c.backup.set_fault(Fault::Error500);
    c.dr.set_fault(Fault::SlowDown);
    // Every replica was tried and failed (no breaker is open yet): 502.
    let res = client().get(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.headers().contains_key("retry-after"));
    let body = res.text().await.unwrap();
    assert!(body.contains("<Error><Code>BadGateway</Code>"), "{body}");
    assert!(body.contains("<RequestId>"), "{body}");
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'backup' failed, trying 'dr'"));
}

#[tokio::test]
async fn client_errors_are_returned_without_failover() {
    let c = cluster().await;
    c.backup.put_object("data-bucket", "only-on-backup.txt", b"b").unwrap();
    let proxy = Proxy::start(&ha_config(&c, &Opts::default()));
    let (status, replica, body) = get(&proxy, "/data/only-on-backup.txt").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(replica, "primary");
    assert_eq!(c.backup.requests(), 0);
    assert!(!proxy.settled_logs().await.contains("failed, trying"));
}

#[tokio::test]
async fn health_checks_skip_a_dead_replica_before_clients_hit_it() {
    let mut c = cluster().await;
    let opts = Opts {
        health: true,
        ..Opts::default()
    };
    let proxy = Proxy::start(&ha_config(&c, &opts));
    c.primary.stop().await;
    let seen = eventually(Duration::from_secs(10), || async {
        let text = get_text(proxy.url("/ready")).await;
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        report["buckets"]["ha-data"]["replicas"][0]["health"] == "unhealthy"
    })
    .await;
    assert!(seen, "the health check never saw the primary die");
    let before = proxy.settled_logs().await.matches("failed, trying").count();
    for _ in 0..10 {
        assert_eq!(get(&proxy, "/data/test.txt").await.1, "backup");
    }
    assert_eq!(
        proxy.settled_logs().await.matches("failed, trying").count(),
        before,
        "a client request still hit the dead primary"
    );
    // Still ready: other replicas serve.
    assert_eq!(client().get(proxy.url("/ready")).send().await.unwrap().status(), 200);

    c.primary.restart().await.unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        get(&proxy, "/data/test.txt").await.1 == "primary"
    })
    .await;
    assert!(back, "the recovered primary never came back");
}

#[tokio::test]
async fn equal_priorities_share_the_load_by_weight() {
    let c = cluster().await;
    let config = ha_config(&c, &Opts::default()).replace("priority: 2,", "priority: 1, weight: 100,");
    let proxy = Proxy::start(&config);
    let (mut primary, mut backup) = (0, 0);
    for _ in 0..60 {
        match get(&proxy, "/data/test.txt").await.1.as_str() {
            "primary" => primary += 1,
            "backup" => backup += 1,
            other => panic!("served by {other}"),
        }
    }
    // Equal weights: each side gets a share (all 60 on one side has odds 2^-59).
    assert!(primary > 0 && backup > 0, "primary {primary}, backup {backup}");
    assert_eq!(c.dr.requests(), 0);
}
