//! The checks of one `buckets[]` entry: its prefix against the others, its
//! `s3` block, its replicas' endpoints and credentials, its health checks.

use std::collections::HashSet;

use yatagarasu_middleware::routing::{prefix_matches, validate_prefix};

use crate::config::{BucketConfig, HealthCheckConfig, Secret};

/// Paths the proxy answers itself.
const RESERVED_PATHS: [&str; 2] = ["/health", "/ready"];

pub(super) fn prefix(err: &mut impl FnMut(String, String), at: &str, bucket: &BucketConfig, before: &[BucketConfig]) {
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

pub(super) fn s3(err: &mut impl FnMut(String, String), at: &str, bucket: &BucketConfig) {
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
    if s3.hedge.delay_ms == crate::config::HedgeDelayMs::Fixed(0) {
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
        if r.hedge.delay_ms == Some(crate::config::HedgeDelayMs::Fixed(0)) {
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
    replica: Option<&crate::config::ReplicaConfig>,
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
            for (key, value) in [("access_key", a), ("secret_key", s)] {
                let v = value.expose();
                if v.trim().is_empty() {
                    err(format!("{at}.{key}"), "is empty".into());
                } else if v.trim() != v {
                    // Signed as is, it fails every request (502) while `check` passed.
                    err(
                        format!("{at}.{key}"),
                        "starts or ends with whitespace (a newline from a file or Secret?): remove it".into(),
                    );
                }
            }
        }
        (Some(_), None) => err(format!("{at}.secret_key"), "is required with access_key".into()),
        (None, Some(_)) => err(format!("{at}.access_key"), "is required with secret_key".into()),
    }
}

pub(super) fn health_check(err: &mut impl FnMut(String, String), at: &str, hc: &HealthCheckConfig) {
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
