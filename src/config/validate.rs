//! Checks that need the whole config: every problem is collected, none stops
//! the others from being found.

use std::collections::HashSet;
use std::net::SocketAddr;

use yatagarasu_middleware::routing::{prefix_matches, validate_prefix};

use yatagarasu_middleware::auth::AuthLayer;

use super::{load::ConfigError, BucketConfig, Config, HealthCheckConfig, Secret};

/// Paths the proxy answers itself.
const RESERVED_PATHS: [&str; 2] = ["/health", "/ready"];

pub(super) fn validate(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |path: String, msg: String| errors.push(ConfigError::new(path, msg));

    let server_addr = config.server.address.parse::<SocketAddr>();
    if server_addr.is_err() {
        err(
            "server.address".into(),
            format!("'{}' is not an address like 0.0.0.0:8080", config.server.address),
        );
    }
    if config.metrics.enabled {
        match config.metrics_socket_addr().ok_or(()) {
            Err(_) if server_addr.is_err() && config.metrics.address.trim().is_empty() => {}
            Err(_) => err(
                "metrics.address".into(),
                format!("'{}' is not an IP address", config.metrics.address),
            ),
            Ok(m) => {
                if let Ok(s) = &server_addr {
                    if s.port() == m.port() && s.port() != 0 {
                        err("metrics.port".into(), format!("{} is also the proxy's port", m.port()));
                    }
                }
            }
        }
    }
    if matches!(&config.metrics.admin_token, Some(t) if t.expose().trim().is_empty()) {
        err(
            "metrics.admin_token".into(),
            "is empty (remove the key to disable the admin endpoints)".into(),
        );
    }
    // TLS blocks: the files are loaded now, so a bad certificate names its key.
    for (at, tls) in [("server.tls", &config.server.tls), ("metrics.tls", &config.metrics.tls)] {
        if let Some(tls) = tls {
            for (key, msg) in crate::tls::check(tls) {
                err(format!("{at}.{key}"), msg);
            }
        }
    }
    let server = &config.server;
    for (key, v, min) in [
        ("max_concurrent_requests", server.max_concurrent_requests, 1),
        ("max_header_bytes", server.max_header_bytes, 1024),
        ("max_uri_length", server.max_uri_length, 256),
    ] {
        if v < min {
            err(format!("server.{key}"), format!("must be at least {min}"));
        }
    }
    if matches!(&server.s3_api.token_key, Some(k) if k.expose().trim().len() < 16) {
        err(
            "server.s3_api.token_key".into(),
            "must be at least 16 characters (a random secret, the same on every instance)".into(),
        );
    }
    if let Some(domain) = &server.s3_domain {
        let d = domain.trim().trim_matches('.');
        let label_ok = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !d.split('.').all(label_ok) {
            err(
                "server.s3_domain".into(),
                format!("'{domain}' is not a DNS name like s3.example.com"),
            );
        }
    }
    let rl = &server.rate_limit;
    for (key, on, v) in [
        ("requests_per_second", rl.enabled, rl.requests_per_second),
        ("burst", rl.enabled, rl.burst),
        (
            "per_ip.requests_per_second",
            rl.per_ip.enabled,
            rl.per_ip.requests_per_second,
        ),
        ("per_ip.burst", rl.per_ip.enabled, rl.per_ip.burst),
    ] {
        if on && v == 0 {
            err(format!("server.rate_limit.{key}"), "must be at least 1".into());
        }
    }
    if let Err(bad) = rl.per_ip.trusted_networks() {
        err(
            "server.rate_limit.per_ip.trusted_proxies".into(),
            format!("'{bad}' is not an IP address or CIDR network"),
        );
    }
    let level = config.logging.level.to_ascii_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str())
        && tracing_subscriber::EnvFilter::try_new(&config.logging.level).is_err()
    {
        err(
            "logging.level".into(),
            format!("'{}' is not a log level", config.logging.level),
        );
    }
    if !["text", "json"].contains(&config.logging.format.as_str()) {
        err(
            "logging.format".into(),
            format!("'{}' is not 'text' or 'json'", config.logging.format),
        );
    }
    tracing(&mut err, &config.tracing);
    health_check(&mut err, "health_check", &config.health_check);
    if let Some(cache) = &config.cache {
        if let Err(e) = cache.validate() {
            // The cache names its keys from `cache.` already.
            let key = e.key.strip_prefix("cache.").unwrap_or(e.key);
            err(format!("cache.{key}"), e.message.clone());
        }
    }
    for (key, value, min, max) in bounds(config) {
        if value < min || value > max {
            err(key, format!("{value} is out of range ({min} to {max})"));
        }
    }

    if config.buckets.is_empty() {
        err("buckets".into(), "at least one bucket is required".into());
    }
    let mut names = HashSet::new();
    for (i, bucket) in config.buckets.iter().enumerate() {
        let at = format!("buckets[{i}]");
        if bucket.name.trim().is_empty() {
            err(format!("{at}.name"), "is required".into());
        } else if !names.insert(bucket.name.as_str()) {
            err(
                format!("{at}.name"),
                format!("'{}' is used by another bucket", bucket.name),
            );
        }
        prefix(&mut err, &at, bucket, &config.buckets[..i]);
        s3(&mut err, &at, bucket);
        if let Some(auth) = &bucket.auth {
            // Fail closed: a bucket that enables auth must have a usable key now.
            // The layer's messages start with the key (`jwt.algorithm: ...`).
            match auth.effective(config.jwt.as_ref()) {
                Err(e) => err(String::new(), format!("{at}.{e}")),
                Ok(Some(jwt)) => {
                    if let Err(e) = AuthLayer::from_config(jwt) {
                        if auth.jwt.is_some() {
                            err(String::new(), format!("{at}.auth.{e}"));
                        } else {
                            err(String::new(), format!("{e} (top-level jwt, used by {at})"));
                        }
                    }
                }
                Ok(None) => {}
            }
            if let Some(sigv4) = auth.effective_sigv4() {
                if let Err(e) = yatagarasu_middleware::auth::sigv4::SigV4Verifier::from_config(sigv4) {
                    err(String::new(), format!("{at}.{e}"));
                }
            }
        }
    }
    errors
}

/// A day: the longest timeout or interval that makes sense here, and far
/// below anything that overflows an `Instant` or a TTL in milliseconds.
const DAY: u64 = 86_400;
/// A year: the longest cache lifetime.
const YEAR: u64 = 365 * DAY;
const GIB: u64 = 1024 * 1024 * 1024;

/// Every duration and size with the range it must fall in: `(key, value, min, max)`.
fn bounds(config: &Config) -> Vec<(String, u64, u64, u64)> {
    let s = &config.server;
    let n = |v: usize| v as u64;
    let mut out: Vec<(String, u64, u64, u64)> = vec![
        ("server.shutdown_grace_seconds".into(), s.shutdown_grace_seconds, 0, DAY),
        (
            "server.upstream_read_timeout_seconds".into(),
            s.upstream_read_timeout_seconds,
            1,
            DAY,
        ),
        (
            "server.max_concurrent_requests".into(),
            n(s.max_concurrent_requests),
            1,
            10_000_000,
        ),
        (
            "server.max_header_bytes".into(),
            n(s.max_header_bytes),
            1024,
            1024 * 1024,
        ),
        ("server.max_uri_length".into(), n(s.max_uri_length), 256, 1024 * 1024),
        (
            "server.header_read_timeout_seconds".into(),
            s.header_read_timeout_seconds,
            1,
            3600,
        ),
        (
            "server.keepalive_idle_timeout_seconds".into(),
            s.keepalive_idle_timeout_seconds,
            1,
            DAY,
        ),
        ("server.send_timeout_seconds".into(), s.send_timeout_seconds, 1, DAY),
        (
            "server.max_client_connections".into(),
            n(s.max_client_connections),
            1,
            10_000_000,
        ),
        (
            "server.http2_keepalive_interval_seconds".into(),
            s.http2_keepalive_interval_seconds,
            0,
            DAY,
        ),
        (
            "server.http2_keepalive_timeout_seconds".into(),
            s.http2_keepalive_timeout_seconds,
            1,
            DAY,
        ),
        (
            "server.http2_max_concurrent_streams".into(),
            u64::from(s.http2_max_concurrent_streams),
            1,
            100_000,
        ),
    ];
    let hc = |at: &str, h: &HealthCheckConfig, out: &mut Vec<(String, u64, u64, u64)>| {
        out.push((format!("{at}.interval_seconds"), h.interval_seconds, 1, DAY));
        out.push((format!("{at}.timeout_seconds"), h.timeout_seconds, 1, DAY));
    };
    hc("health_check", &config.health_check, &mut out);
    if let Some(c) = &config.cache {
        out.extend([
            ("cache.stale_seconds".into(), c.stale_seconds, 0, YEAR),
            ("cache.coalesce_timeout_ms".into(), c.coalesce_timeout_ms, 0, DAY * 1000),
            ("cache.memory.ttl_seconds".into(), c.memory.ttl_seconds, 0, YEAR),
            ("cache.memory.max_capacity".into(), c.memory.max_capacity, 0, 1024 * GIB),
            ("cache.redis.ttl_seconds".into(), c.redis.ttl_seconds, 0, YEAR),
            (
                "cache.redis.max_capacity".into(),
                c.redis.max_capacity,
                0,
                1024 * 1024 * GIB,
            ),
            ("cache.redis.timeout_ms".into(), c.redis.timeout_ms, 0, DAY * 1000),
            ("cache.redis.cooldown_ms".into(), c.redis.cooldown_ms, 0, DAY * 1000),
            ("cache.redis.pool_size".into(), n(c.redis.pool_size), 0, 100_000),
        ]);
    }
    let jwt = |at: &str, j: &crate::config::JwtConfig, out: &mut Vec<(String, u64, u64, u64)>| {
        out.push((format!("{at}.leeway_seconds"), j.leeway_seconds, 0, DAY));
        out.push((
            format!("{at}.jwks_refresh_seconds"),
            j.jwks_refresh_seconds,
            0,
            30 * DAY,
        ));
        out.push((
            format!("{at}.jwks_min_refetch_seconds"),
            j.jwks_min_refetch_seconds,
            0,
            DAY,
        ));
        out.push((format!("{at}.jwks_timeout_seconds"), j.jwks_timeout_seconds, 0, 3600));
    };
    if let Some(j) = &config.jwt {
        jwt("jwt", j, &mut out);
    }
    for (i, b) in config.buckets.iter().enumerate() {
        let at = format!("buckets[{i}].s3");
        let s3 = &b.s3;
        out.extend([
            (format!("{at}.timeout_seconds"), s3.timeout_seconds, 1, DAY),
            (
                format!("{at}.max_concurrent_requests"),
                n(s3.max_concurrent_requests),
                1,
                10_000_000,
            ),
            (
                format!("{at}.retry.max_attempts"),
                u64::from(s3.retry.max_attempts),
                1,
                100,
            ),
            (
                format!("{at}.retry.initial_interval"),
                s3.retry.initial_interval,
                1,
                DAY * 1000,
            ),
            (format!("{at}.retry.max_interval"), s3.retry.max_interval, 1, DAY * 1000),
            (
                format!("{at}.listing_cache_ttl_seconds"),
                s3.listing_cache_ttl_seconds,
                0,
                DAY,
            ),
            (
                format!("{at}.circuit_breaker.timeout_seconds"),
                s3.circuit_breaker.timeout_seconds,
                1,
                DAY,
            ),
        ]);
        if let Some(h) = &s3.health_check {
            hc(&format!("{at}.health_check"), h, &mut out);
        }
        for (j, r) in s3.replicas.iter().enumerate() {
            if let Some(t) = r.timeout_seconds {
                out.push((format!("{at}.replicas[{j}].timeout_seconds"), t, 1, DAY));
            }
            if let Some(m) = r.max_concurrent_requests {
                out.push((
                    format!("{at}.replicas[{j}].max_concurrent_requests"),
                    n(m),
                    1,
                    10_000_000,
                ));
            }
        }
        if let Some(t) = b.cache.as_ref().and_then(|c| c.ttl_seconds) {
            out.push((format!("buckets[{i}].cache.ttl_seconds"), t, 0, YEAR));
        }
        if let Some(j) = b.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
            jwt(&format!("buckets[{i}].auth.jwt"), j, &mut out);
        }
    }
    out
}

fn prefix(err: &mut impl FnMut(String, String), at: &str, bucket: &BucketConfig, before: &[BucketConfig]) {
    let p = &bucket.path_prefix;
    let path = format!("{at}.path_prefix");
    if p.is_empty() {
        return err(path, "is required".into());
    }
    if p == "/" {
        return err(
            path,
            "'/' would serve every path as this bucket's keys; give the bucket a prefix of its own, like /assets"
                .into(),
        );
    }
    if validate_prefix(p).is_err() {
        return err(
            path,
            format!("'{p}' must start with '/', not end with '/', and hold only unreserved characters"),
        );
    }
    if RESERVED_PATHS
        .iter()
        .any(|r| prefix_matches(p, r) || prefix_matches(r, p))
    {
        return err(path, format!("'{p}' collides with the proxy's own /health or /ready"));
    }
    for (j, other) in before.iter().enumerate() {
        let q = &other.path_prefix;
        if q == p {
            err(path.clone(), format!("'{p}' is also the prefix of buckets[{j}]"));
        } else if prefix_matches(q, p) || prefix_matches(p, q) {
            err(path.clone(), format!("'{p}' overlaps '{q}' of buckets[{j}]"));
        }
    }
}

fn s3(err: &mut impl FnMut(String, String), at: &str, bucket: &BucketConfig) {
    let s3 = &bucket.s3;
    let at = format!("{at}.s3");
    let bucket_needed = s3.replicas.is_empty() || s3.replicas.iter().any(|r| r.bucket.is_none());
    if bucket_needed && s3.bucket.trim().is_empty() {
        err(format!("{at}.bucket"), "is required".into());
    }
    if s3.region.trim().is_empty() {
        err(format!("{at}.region"), "must not be empty".into());
    }
    endpoint(err, &format!("{at}.endpoint"), s3.endpoint.as_deref());
    credentials(err, &at, s3.access_key.as_ref(), s3.secret_key.as_ref());
    replica_credentials(err, &at, bucket, None);
    if s3.max_concurrent_requests == 0 {
        err(format!("{at}.max_concurrent_requests"), "must be at least 1".into());
    }
    if s3.retry.max_attempts == 0 {
        err(format!("{at}.retry.max_attempts"), "must be at least 1".into());
    }
    if s3.retry.initial_interval == 0 || s3.retry.max_interval < s3.retry.initial_interval {
        err(
            format!("{at}.retry"),
            "initial_interval must be at least 1 ms and max_interval at least initial_interval".into(),
        );
    }
    if s3.timeout_seconds == 0 {
        err(format!("{at}.timeout_seconds"), "must be at least 1".into());
    }
    if s3.hedge.max_extra_percent > 100 {
        err(
            format!("{at}.hedge.max_extra_percent"),
            "must be between 0 and 100".into(),
        );
    }
    if s3.hedge.delay_ms == super::HedgeDelayMs::Fixed(0) {
        err(format!("{at}.hedge.delay_ms"), "must be at least 1 (or \"p95\")".into());
    }
    let la = &s3.latency_aware;
    if la.decay_seconds == 0 {
        err(format!("{at}.latency_aware.decay_seconds"), "must be at least 1".into());
    }
    if !(la.outlier_factor.is_finite() && la.outlier_factor > 1.0) {
        err(
            format!("{at}.latency_aware.outlier_factor"),
            "must be a number above 1".into(),
        );
    }
    if la.outlier_consecutive == 0 {
        err(
            format!("{at}.latency_aware.outlier_consecutive"),
            "must be at least 1".into(),
        );
    }
    let cb = &s3.circuit_breaker;
    for (key, v) in [
        ("failure_threshold", cb.failure_threshold as u64),
        ("success_threshold", cb.success_threshold as u64),
        ("timeout_seconds", cb.timeout_seconds),
        ("half_open_requests", cb.half_open_requests as u64),
    ] {
        if v == 0 {
            err(format!("{at}.circuit_breaker.{key}"), "must be at least 1".into());
        }
    }
    if let Some(hc) = &s3.health_check {
        health_check(err, &format!("{at}.health_check"), hc);
    }
    let mut names = HashSet::new();
    for (i, r) in s3.replicas.iter().enumerate() {
        let rat = format!("{at}.replicas[{i}]");
        if r.hedge.delay_ms == Some(super::HedgeDelayMs::Fixed(0)) {
            err(
                format!("{rat}.hedge.delay_ms"),
                "must be at least 1 (or \"p95\")".into(),
            );
        }
        if r.name.trim().is_empty() {
            err(format!("{rat}.name"), "is required".into());
        } else if !names.insert(r.name.as_str()) {
            err(
                format!("{rat}.name"),
                format!("'{}' is used by another replica", r.name),
            );
        }
        endpoint(err, &format!("{rat}.endpoint"), r.endpoint.as_deref());
        if matches!(&r.bucket, Some(b) if b.trim().is_empty()) {
            err(format!("{rat}.bucket"), "must not be empty".into());
        }
        if matches!(&r.region, Some(b) if b.trim().is_empty()) {
            err(format!("{rat}.region"), "must not be empty".into());
        }
        let access = r.access_key.as_ref().or(s3.access_key.as_ref());
        let secret = r.secret_key.as_ref().or(s3.secret_key.as_ref());
        if r.access_key.is_some() || r.secret_key.is_some() {
            credentials(err, &rat, access, secret);
        }
        if r.timeout_seconds == Some(0) {
            err(format!("{rat}.timeout_seconds"), "must be at least 1".into());
        }
        replica_credentials(err, &rat, bucket, Some(r));
    }
}

/// The credential keys of the `s3` block (`replica: None`) or of one replica
/// (with what it inherits): anonymous excludes every other source, a session
/// token needs static keys, files must be readable.
fn replica_credentials(
    err: &mut impl FnMut(String, String),
    at: &str,
    bucket: &BucketConfig,
    replica: Option<&super::ReplicaConfig>,
) {
    let s3 = &bucket.s3;
    let pick = |r: Option<&Secret>, s: Option<&Secret>| r.or(s).is_some();
    let (access, token, role, anonymous, ca_file) = match replica {
        Some(r) => (
            pick(r.access_key.as_ref(), s3.access_key.as_ref()),
            pick(r.session_token.as_ref(), s3.session_token.as_ref()),
            r.role_arn.as_ref().or(s3.role_arn.as_ref()),
            r.anonymous.unwrap_or(s3.anonymous),
            r.ca_file.as_ref(),
        ),
        None => (
            s3.access_key.is_some(),
            s3.session_token.is_some(),
            s3.role_arn.as_ref(),
            s3.anonymous,
            s3.ca_file.as_ref(),
        ),
    };
    if anonymous && (access || role.is_some()) {
        err(
            format!("{at}.anonymous"),
            "cannot be combined with access_key or role_arn".into(),
        );
    }
    if token && !access {
        err(
            format!("{at}.session_token"),
            "is set without access_key and secret_key".into(),
        );
    }
    if let Some(arn) = role {
        if !arn.starts_with("arn:") {
            err(
                format!("{at}.role_arn"),
                format!("'{arn}' is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
            );
        }
    }
    if let Some(path) = ca_file {
        if let Err(e) = crate::tls::read_ca_bundle(path) {
            err(format!("{at}.ca_file"), e);
        }
    }
}

fn endpoint(err: &mut impl FnMut(String, String), path: &str, endpoint: Option<&str>) {
    let Some(e) = endpoint else { return };
    match e.parse::<url::Url>() {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            if u.query().is_some() || !u.username().is_empty() {
                err(path.into(), "must not carry a query string or user info".into());
            }
        }
        _ => err(path.into(), format!("'{e}' is not an http(s) URL with a host")),
    }
}

fn credentials(err: &mut impl FnMut(String, String), at: &str, access: Option<&Secret>, secret: Option<&Secret>) {
    match (access, secret) {
        (None, None) => {}
        (Some(a), Some(s)) => {
            if a.expose().trim().is_empty() {
                err(format!("{at}.access_key"), "is empty".into());
            }
            if s.expose().trim().is_empty() {
                err(format!("{at}.secret_key"), "is empty".into());
            }
        }
        (Some(_), None) => err(format!("{at}.secret_key"), "is required with access_key".into()),
        (None, Some(_)) => err(format!("{at}.access_key"), "is required with secret_key".into()),
    }
}

fn health_check(err: &mut impl FnMut(String, String), at: &str, hc: &HealthCheckConfig) {
    if hc.interval_seconds == 0 {
        err(format!("{at}.interval_seconds"), "must be at least 1".into());
    }
    if hc.timeout_seconds == 0 {
        err(format!("{at}.timeout_seconds"), "must be at least 1".into());
    }
    if !hc.path.starts_with('/') {
        err(format!("{at}.path"), "must start with '/'".into());
    }
}

fn tracing(err: &mut impl FnMut(String, String), t: &crate::config::TracingConfig) {
    if let Some(url) = t.traces_url() {
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => err(
                "tracing.otlp_endpoint".into(),
                format!(
                    "'{}' is not an http(s) URL",
                    t.otlp_endpoint.as_deref().unwrap_or_default()
                ),
            ),
        }
    }
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        err(
            "tracing.sample_ratio".into(),
            format!("{} is not between 0.0 and 1.0", t.sample_ratio),
        );
    }
    if t.service_name.trim().is_empty() {
        err("tracing.service_name".into(), "must not be empty".into());
    }
    for (key, value) in [
        ("tracing.export_interval_ms", t.export_interval_ms),
        ("tracing.export_timeout_seconds", t.export_timeout_seconds),
        ("tracing.max_queue_spans", t.max_queue_spans as u64),
        ("tracing.max_batch_spans", t.max_batch_spans as u64),
    ] {
        if value == 0 {
            err(key.into(), "must be at least 1".into());
        }
    }
    if t.max_batch_spans > t.max_queue_spans {
        err(
            "tracing.max_batch_spans".into(),
            format!(
                "{} is more than max_queue_spans ({})",
                t.max_batch_spans, t.max_queue_spans
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::load_str;

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
}
