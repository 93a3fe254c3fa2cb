//! The ranges every duration and size must fall in, checked by key.

use crate::config::{Config, HealthCheckConfig};

/// A day: the longest timeout or interval that makes sense here, and far
/// below anything that overflows an `Instant` or a TTL in milliseconds.
const DAY: u64 = 86_400;
/// A year: the longest cache lifetime.
const YEAR: u64 = 365 * DAY;
const GIB: u64 = 1024 * 1024 * 1024;

/// Every duration and size with the range it must fall in: `(key, value, min, max)`.
pub(super) fn bounds(config: &Config) -> Vec<(String, u64, u64, u64)> {
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
        // hyper refuses longer request targets itself, with a bare 414.
        ("server.max_uri_length".into(), n(s.max_uri_length), 256, 65_534),
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
        // Added to an `Instant` when a replica is demoted: past a day, a
        // demotion would panic the request that causes it. (0 for the decay
        // has its own message.)
        let la = &s3.latency_aware;
        out.push((format!("{at}.latency_aware.decay_seconds"), la.decay_seconds, 0, DAY));
        out.push((
            format!("{at}.latency_aware.outlier_demotion_seconds"),
            la.outlier_demotion_seconds,
            0,
            DAY,
        ));
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
