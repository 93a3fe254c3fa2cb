//! Validation through the loader: each error names its key.

use crate::config::load_str;

fn errors(yaml: &str) -> Vec<String> {
    match load_str(yaml, "test", &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn protection_keys_are_checked_by_name() {
    let yaml = r#"
server:
  max_concurrent_requests: 0
  max_header_bytes: 10
  max_uri_length: 10
  rate_limit: { enabled: true, requests_per_second: 0, per_ip: { enabled: true, burst: 0 } }
metrics: { admin_token: "" }
"#;
    let errs = errors(yaml);
    for key in [
        "server.max_concurrent_requests",
        "server.max_header_bytes",
        "server.max_uri_length",
        "server.rate_limit.requests_per_second",
        "server.rate_limit.per_ip.burst",
        "metrics.admin_token",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(key)), "no error for {key}: {errs:?}");
    }
    // Off by default, and a disabled limit's values are not checked.
    assert!(!errors("server: { rate_limit: { requests_per_second: 0 } }")
        .iter()
        .any(|e| e.contains("rate_limit")));
}

#[test]
fn hedge_and_latency_keys_are_checked_by_name() {
    let bucket = |s3: &str| {
        format!("buckets:\n  - name: b\n    path_prefix: /b\n    s3: {{ bucket: b, anonymous: true, {s3} }}\n")
    };
    assert_eq!(
        errors(&bucket(r#"hedge: { enabled: true, delay_ms: "p95" }"#)),
        Vec::<String>::new()
    );
    let config = load_str(&bucket("hedge: { enabled: true, delay_ms: 75 }"), "test", &|_| None).unwrap();
    assert_eq!(
        config.buckets[0].s3.hedge.to_hedge(&[]).unwrap().delay,
        yatagarasu_middleware::failover::HedgeDelay::Fixed(std::time::Duration::from_millis(75))
    );
    let errs = errors(&bucket(
            "hedge: { delay_ms: 0, max_extra_percent: 150 }, latency_aware: { decay_seconds: 0, outlier_factor: 0.5, outlier_consecutive: 0 }",
        ));
    for key in [
        "buckets[0].s3.hedge.delay_ms",
        "buckets[0].s3.hedge.max_extra_percent",
        "buckets[0].s3.latency_aware.decay_seconds",
        "buckets[0].s3.latency_aware.outlier_factor",
        "buckets[0].s3.latency_aware.outlier_consecutive",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(key)), "no error for {key}: {errs:?}");
    }
    let errs = errors(&bucket(r#"hedge: { delay_ms: "soon" }"#));
    assert!(errs.iter().any(|e| e.contains("hedge.delay_ms")), "{errs:?}");

    // A replica's override: checked by name; on for one replica alone.
    let replicas = |hedge: &str| {
        format!(
                "buckets:\n  - name: b\n    path_prefix: /b\n    s3:\n      bucket: b\n      anonymous: true\n      replicas:\n        - {{ name: a, hedge: {{ {hedge} }} }}\n        - {{ name: c, priority: 1 }}\n"
            )
    };
    let errs = errors(&replicas("delay_ms: 0, enabeld: true"));
    for key in [
        "buckets[0].s3.replicas[0].hedge.delay_ms",
        "buckets[0].s3.replicas[0].hedge.enabeld",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(key)), "no error for {key}: {errs:?}");
    }
    let config = load_str(&replicas(r#"enabled: true, delay_ms: "p95""#), "test", &|_| None).unwrap();
    let s3 = &config.buckets[0].s3;
    let hedge = s3
        .hedge
        .to_hedge(&s3.replicas)
        .expect("on for the replica that enables it");
    assert!(!hedge.enabled_by_default);
    let resolved = s3.resolved_replicas();
    assert_eq!(resolved[0].hedge.enabled, Some(true));
    assert_eq!(
        resolved[0].hedge.delay,
        Some(yatagarasu_middleware::failover::HedgeDelay::P95)
    );
    assert_eq!(resolved[1].hedge, Default::default());
}

#[test]
fn s3_api_keys_are_checked_by_name() {
    let yaml = r#"
server: { s3_api: { token_key: "short" }, s3_domain: "s3..example com" }
buckets:
  - { name: a, path_prefix: /a, s3: { bucket: b, listing_cache_ttl_seconds: 100000000 } }
"#;
    let errs = errors(yaml);
    for key in [
        "server.s3_api.token_key",
        "server.s3_domain",
        "buckets[0].s3.listing_cache_ttl_seconds",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(key)), "no error for {key}: {errs:?}");
    }
    assert!(
        !errs.iter().any(|e| e.contains("short")),
        "the key is never echoed: {errs:?}"
    );
}

#[test]
fn tracing_keys_are_checked_by_name() {
    let yaml = r#"
tracing:
  otlp_endpoint: "collector:4318"
  sample_ratio: 1.5
  service_name: ""
  export_interval_ms: 0
  max_queue_spans: 10
  max_batch_spans: 20
"#;
    let errs = errors(yaml);
    for key in [
        "tracing.otlp_endpoint",
        "tracing.sample_ratio",
        "tracing.service_name",
        "tracing.export_interval_ms",
        "tracing.max_batch_spans",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(key)), "no error for {key}: {errs:?}");
    }
    // Off without an endpoint (an empty one too); the signal path is added once.
    assert!(!errors("tracing: { otlp_endpoint: \"\" }")
        .iter()
        .any(|e| e.starts_with("tracing")));
    let t = |e: &str| crate::config::TracingConfig {
        otlp_endpoint: Some(e.into()),
        ..Default::default()
    };
    assert_eq!(t("").traces_url(), None);
    assert_eq!(t("http://c:4318/").traces_url().unwrap(), "http://c:4318/v1/traces");
    assert_eq!(
        t("http://c:4318/v1/traces").traces_url().unwrap(),
        "http://c:4318/v1/traces"
    );
}

#[test]
fn connection_threads_are_auto_a_count_or_an_error_naming_the_key() {
    use crate::config::{load, ConnectionThreadsSetting, Format};
    const BUCKET: &str = "buckets: [{ name: b, path_prefix: /b, s3: { bucket: b, anonymous: true } }]\n";
    let threads = |server: &str| {
        load_str(&format!("{BUCKET}{server}"), "test", &|_| None)
            .unwrap()
            .server
            .connection_threads
    };
    assert_eq!(threads(""), ConnectionThreadsSetting::Auto);
    assert_eq!(
        threads("server: { connection_threads: auto }"),
        ConnectionThreadsSetting::Auto
    );
    assert_eq!(
        threads("server: { connection_threads: 0 }"),
        ConnectionThreadsSetting::Count(0)
    );
    assert_eq!(
        threads("server: { connection_threads: 3 }"),
        ConnectionThreadsSetting::Count(3)
    );
    assert!(ConnectionThreadsSetting::Auto.threads() >= 1);
    for bad in ["-1", "5000", "many"] {
        let errs = errors(&format!("{BUCKET}server: {{ connection_threads: {bad} }}"));
        assert!(
            errs.iter().any(|e| e.starts_with("server.connection_threads")),
            "{bad}: {errs:?}"
        );
    }
    // One key per pod from the environment: a string, as every override is.
    let overridden = load(
        BUCKET,
        Format::Yaml,
        "test",
        &|_| None,
        &[("YATAGARASU__SERVER__CONNECTION_THREADS".into(), "2".into())],
    )
    .unwrap();
    assert_eq!(overridden.server.connection_threads, ConnectionThreadsSetting::Count(2));
}

#[test]
fn cors_keys_are_checked_by_name() {
    let bucket = |cors: &str| {
        format!(
            "buckets:\n  - name: b\n    path_prefix: /b\n    s3: {{ bucket: b, anonymous: true }}\n    cors: {cors}\n"
        )
    };
    // The defaults, with origins listed.
    let config = load_str(
        &bucket(r#"{ allowed_origins: ["https://app.example.com", "http://localhost:3000"] }"#),
        "test",
        &|_| None,
    )
    .unwrap();
    let cors = config.buckets[0].cors.clone().unwrap();
    assert_eq!(cors.allowed_methods, ["GET", "HEAD"]);
    assert_eq!(cors.max_age_seconds, 600);
    assert!(!cors.allow_credentials);
    assert!(cors.allowed_headers.iter().any(|h| h == "authorization"));
    assert!(cors.expose_headers.iter().any(|h| h == "etag"));
    assert_eq!(
        errors(&bucket(
            r#"{ allowed_origins: ["*"], allowed_headers: ["*"], allowed_methods: [get, OPTIONS] }"#
        )),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&bucket(
            r#"{ allowed_origins: ["https://a.example"], allow_credentials: true }"#
        )),
        Vec::<String>::new()
    );

    let cases = [
        (
            r#"{ allowed_origins: ["*"], allow_credentials: true }"#,
            "buckets[0].cors.allow_credentials",
        ),
        (
            r#"{ allowed_origins: ["https://a.example"], allow_credentials: true, expose_headers: ["*"] }"#,
            "buckets[0].cors.allow_credentials",
        ),
        (
            r#"{ allowed_origins: ["app.example.com"] }"#,
            "buckets[0].cors.allowed_origins[0]",
        ),
        (
            r#"{ allowed_origins: ["https://a.example", "https://b.example/"] }"#,
            "buckets[0].cors.allowed_origins[1]",
        ),
        (
            r#"{ allowed_origins: ["https://a.example:443"] }"#,
            "buckets[0].cors.allowed_origins[0]",
        ),
        (
            r#"{ allowed_origins: ["https://A.example"] }"#,
            "buckets[0].cors.allowed_origins[0]",
        ),
        (
            r#"{ allowed_origins: ["https://a.example/path"] }"#,
            "buckets[0].cors.allowed_origins[0]",
        ),
        (
            r#"{ allowed_origins: ["*", "https://a.example"] }"#,
            "buckets[0].cors.allowed_origins",
        ),
        (r#"{ allowed_origins: [] }"#, "buckets[0].cors.allowed_origins"),
        (
            r#"{ allowed_origins: ["*"], allowed_methods: [GET, PUT] }"#,
            "buckets[0].cors.allowed_methods[1]",
        ),
        (
            r#"{ allowed_origins: ["*"], allowed_methods: [DELETE] }"#,
            "buckets[0].cors.allowed_methods[0]",
        ),
        (
            r#"{ allowed_origins: ["*"], allowed_headers: ["bad header"] }"#,
            "buckets[0].cors.allowed_headers[0]",
        ),
        (
            r#"{ allowed_origins: ["*"], expose_headers: ["etag", "a:b"] }"#,
            "buckets[0].cors.expose_headers[1]",
        ),
        (
            r#"{ allowed_origins: ["*"], max_age_seconds: 100000 }"#,
            "buckets[0].cors.max_age_seconds",
        ),
        (
            r#"{ allowed_origins: ["*"], allowed_origin: ["*"] }"#,
            "buckets[0].cors.allowed_origin",
        ),
    ];
    for (cors, key) in cases {
        let errs = errors(&bucket(cors));
        assert!(
            errs.iter().any(|e| e.starts_with(key)),
            "{cors}: no error for {key}: {errs:?}"
        );
    }
}
