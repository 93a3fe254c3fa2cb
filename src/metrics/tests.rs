//! The exported names and labels, as the deployment guide and dashboards expect them.

use super::*;

#[test]
fn names_and_labels_are_the_seed_ones() {
    let m = Metrics::new();
    m.replica_health("assets", "primary", true);
    m.breaker_state("assets", "primary", BreakerState::Open);
    m.request_done("assets", "GET", "GetObject", 200, "miss", Duration::from_millis(3));
    m.request("assets", "primary");
    m.failover("assets", "primary", "backup");
    m.bytes_sent("assets", 10);
    m.replica_answered("assets", "primary", Duration::from_millis(60));
    m.hedge("assets", "backup", HedgeEvent::Sent);
    let text = m.render();
    assert_rendered(
        &text,
        &[
            r#"yatagarasu_replica_health{bucket="assets",replica="primary"} 1"#,
            r#"yatagarasu_circuit_breaker_state{bucket="assets",replica="primary"} 1"#,
            r#"yatagarasu_requests_total{bucket="assets",method="GET",operation="GetObject",status_class="2xx"} 1"#,
            r#"yatagarasu_replica_requests_total{bucket="assets",replica="primary"} 1"#,
            r#"yatagarasu_replica_failover_total{bucket="assets",from="primary",to="backup"} 1"#,
            r#"yatagarasu_response_bytes_total{bucket="assets"} 10"#,
            r#"yatagarasu_hedges_total{bucket="assets",outcome="sent",replica="backup"} 1"#,
            "# TYPE yatagarasu_request_duration_seconds histogram",
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="assets",replica="primary",le="0.05"} 0"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="assets",replica="primary",le="0.075"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_count{bucket="assets",replica="primary"} 1"#,
        ],
    );
    assert!(!text.contains("otel_scope"), "{text}");
    assert!(!text.contains("target_info"), "{text}");
    assert!(
        text.contains(r#"yatagarasu_config_reloads_total{result="failure"} 0"#),
        "{text}"
    );
    assert!(!text.contains("_total_total"), "{text}");

    m.retain_replicas(&HashSet::new());
    assert!(!m.render().contains("yatagarasu_replica_health{"));
}

/// The per-replica series (pre-resolved collectors, not OpenTelemetry
/// instruments): the counters at zero from `init_replicas`, the histogram
/// from its first observation, each with its help text and labels.
#[test]
fn replica_series_are_recorded() {
    let m = Metrics::new();
    m.init_replicas("ha", &["primary", "backup"]);
    let text = m.render();
    assert_rendered(
        &text,
        &[
            "# HELP yatagarasu_replica_requests_total Requests sent to a replica.",
            "# TYPE yatagarasu_replica_requests_total counter",
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"} 0"#,
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"} 0"#,
            "# HELP yatagarasu_replica_failures_total Requests a replica failed (before or after its headers).",
            "# TYPE yatagarasu_replica_failures_total counter",
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"} 0"#,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="backup"} 0"#,
        ],
    );
    assert!(!text.contains("yatagarasu_replica_request_duration_seconds"), "{text}");

    m.request("ha", "primary");
    m.request("ha", "primary");
    m.failure("ha", "primary", &FetchError::Timeout(Duration::from_secs(1)));
    m.request("ha", "backup");
    m.replica_answered("ha", "primary", Duration::from_secs(1));
    m.replica_answered("ha", "backup", Duration::from_millis(3));
    m.replica_answered("ha", "backup", Duration::from_millis(30));
    let text = m.render();
    assert_rendered(
        &text,
        &[
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"} 2"#,
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"} 1"#,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="primary"} 1"#,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="backup"} 0"#,
            "# HELP yatagarasu_replica_request_duration_seconds Time from sending a request to a replica to its response headers (or its failure).",
            "# TYPE yatagarasu_replica_request_duration_seconds histogram",
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="primary",le="0.75"} 0"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="primary",le="1"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="primary",le="20"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="primary",le="+Inf"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_sum{bucket="ha",replica="primary"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_count{bucket="ha",replica="primary"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="backup",le="0.005"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="backup",le="0.025"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_bucket{bucket="ha",replica="backup",le="0.05"} 2"#,
            r#"yatagarasu_replica_request_duration_seconds_count{bucket="ha",replica="backup"} 2"#,
        ],
    );
}

/// A reload that removes a replica drops its gauges; its counters and
/// histogram stay (and go on counting if the name comes back).
#[test]
fn retain_replicas_keeps_the_replica_counters() {
    let m = Metrics::new();
    m.init_replicas("ha", &["primary", "backup"]);
    for replica in ["primary", "backup"] {
        m.request("ha", replica);
        m.failure("ha", replica, &FetchError::Timeout(Duration::from_secs(1)));
        m.replica_answered("ha", replica, Duration::from_millis(3));
        m.replica_health("ha", replica, true);
    }
    let live: HashSet<(String, String)> = [("ha".to_owned(), "primary".to_owned())].into();
    m.retain_replicas(&live);
    m.request("ha", "backup");
    let text = m.render();
    // Counters stay until restart (docs/metrics.md); a removed replica's
    // gauges go.
    assert_rendered(
        &text,
        &[
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="primary"} 1"#,
            r#"yatagarasu_replica_requests_total{bucket="ha",replica="backup"} 2"#,
            r#"yatagarasu_replica_failures_total{bucket="ha",replica="backup"} 1"#,
            r#"yatagarasu_replica_request_duration_seconds_count{bucket="ha",replica="backup"} 1"#,
        ],
    );
    assert!(
        text.contains(r#"yatagarasu_replica_health{bucket="ha",replica="primary"}"#),
        "{text}"
    );
    assert!(
        !text.contains(r#"yatagarasu_replica_health{bucket="ha",replica="backup"}"#),
        "{text}"
    );
}

#[test]
fn requests_in_flight_counts_the_live_guards() {
    let m = Metrics::new();
    let in_flight = |m: &Metrics| {
        let text = m.render();
        assert_rendered(
            &text,
            &[
                "# HELP yatagarasu_requests_in_flight Requests whose response has not ended yet.",
                "# TYPE yatagarasu_requests_in_flight gauge",
            ],
        );
        text.lines()
            .find_map(|l| l.strip_prefix("yatagarasu_requests_in_flight "))
            .unwrap_or_else(|| panic!("no in-flight sample in {text}"))
            .to_owned()
    };
    assert_eq!(in_flight(&m), "0", "the series exists from the start");
    let (a, b) = (m.in_flight(), m.in_flight());
    assert_eq!(in_flight(&m), "2");
    drop(a);
    assert_eq!(in_flight(&m), "1");
    drop(b);
    assert_eq!(in_flight(&m), "0");
}

/// Fails naming the first of `lines` missing from the rendered `text`.
fn assert_rendered(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
}
