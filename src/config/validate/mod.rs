//! Checks that need the whole config: every problem is collected, none stops
//! the others from being found.

use std::collections::HashSet;
use std::net::SocketAddr;

use yatagarasu_middleware::auth::AuthLayer;

use super::{load::ConfigError, Config};

mod bounds;
mod bucket;
mod cors;

use bounds::bounds;
use bucket::{health_check, prefix, s3};
use cors::cors;

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
    if let Err(message) = log_filter(&config.logging.level) {
        err("logging.level".into(), message);
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
        if let Some(c) = &bucket.cors {
            cors(&mut err, &at, c);
        }
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

/// `logging.level`: a level, or a `RUST_LOG` filter. A word alone in a
/// filter is a target (`warning` would log only the target `warning`, that
/// is nothing at all), so one that is not a level is refused.
fn log_filter(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if level.trim().is_empty() {
        return Err("must not be empty (info is the default)".into());
    }
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let is_level = LEVELS.iter().any(|l| directive.eq_ignore_ascii_case(l));
        if !is_level && !directive.contains(['=', '[']) {
            return Err(format!(
                "'{directive}' is not a log level (trace, debug, info, warn, error, off) \
                 nor a TARGET=LEVEL directive"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| format!("'{level}' is not a log level or filter: {e}"))
}

/// The most spans `tracing.max_queue_spans` and `max_batch_spans` may hold
/// (each slot of the queue is allocated at start).
const MAX_SPANS: u64 = 100_000;

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
    // The exporter allocates its queue and batch whole at start: a large
    // count would abort the process there (`check` said it was valid).
    for (key, value, max) in [
        ("tracing.export_interval_ms", t.export_interval_ms, 3_600_000),
        ("tracing.export_timeout_seconds", t.export_timeout_seconds, 3600),
        ("tracing.max_queue_spans", t.max_queue_spans as u64, MAX_SPANS),
        ("tracing.max_batch_spans", t.max_batch_spans as u64, MAX_SPANS),
    ] {
        if value == 0 || value > max {
            err(key.into(), format!("{value} is out of range (1 to {max})"));
        }
    }
    if t.max_batch_spans > t.max_queue_spans && t.max_queue_spans as u64 <= MAX_SPANS {
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
mod tests;
