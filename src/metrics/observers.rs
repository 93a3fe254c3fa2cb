//! The series read at scrape time: replica health and breaker state, the
//! cache and auth counters, credential expiry.

use std::sync::{Arc, Mutex};

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use yatagarasu_middleware::auth::AuthStats;
use yatagarasu_middleware::cache::{CacheStatsSnapshot, CacheStore};

use super::{CredentialGauges, ReplicaGauges, NEVER_EXPIRES};

/// The cache counters, by field name of [`CacheStatsSnapshot`].
fn cache_fields(s: &CacheStatsSnapshot) -> [(&'static str, &'static str, u64); 29] {
    [
        ("memory_hits", "Requests answered from the memory tier.", s.memory_hits),
        (
            "memory_misses",
            "Memory lookups that found no fresh copy.",
            s.memory_misses,
        ),
        ("redis_hits", "Requests answered from Redis.", s.redis_hits),
        (
            "redis_misses",
            "Redis lookups that found no fresh, valid copy.",
            s.redis_misses,
        ),
        (
            "stale_hits",
            "Requests answered with a stale copy because no replica could serve.",
            s.stale_hits,
        ),
        (
            "coalesced_hits",
            "Requests answered from a concurrent request's fetch.",
            s.coalesced_hits,
        ),
        (
            "bypasses",
            "Responses not cached (bucket off, not cacheable, too large).",
            s.bypasses,
        ),
        (
            "upstream_fetches",
            "Requests that went to the replicas after a miss.",
            s.upstream_fetches,
        ),
        (
            "memory_inserts",
            "Objects written to the memory tier.",
            s.memory_inserts,
        ),
        (
            "memory_evictions",
            "Memory entries evicted or expired.",
            s.memory_evictions,
        ),
        ("redis_writes", "Objects written to Redis.", s.redis_writes),
        (
            "redis_writes_refused",
            "Redis writes refused at redis.max_capacity.",
            s.redis_writes_refused,
        ),
        ("fills_abandoned", "Cache fills given up.", s.fills_abandoned),
        (
            "revalidation_fills",
            "Fills run in the background after a conditional GET miss answered 304/412.",
            s.revalidation_fills,
        ),
        (
            "revalidation_fills_skipped",
            "Background fills not started: as many as the store allows were running.",
            s.revalidation_fills_skipped,
        ),
        (
            "memory_bytes_served",
            "Body bytes answered from the memory tier.",
            s.memory_bytes_served,
        ),
        (
            "redis_bytes_served",
            "Body bytes answered from Redis.",
            s.redis_bytes_served,
        ),
        ("bytes_stored", "Body bytes stored in the cache.", s.bytes_stored),
        ("redis_errors", "Failed Redis operations.", s.redis_errors),
        ("redis_timeouts", "Redis operations that timed out.", s.redis_timeouts),
        (
            "redis_corrupt",
            "Redis values that were not a valid cache entry.",
            s.redis_corrupt,
        ),
        (
            "redis_skipped",
            "Redis operations skipped while its breaker was open.",
            s.redis_skipped,
        ),
        (
            "redis_breaker_opened",
            "Times the Redis breaker opened.",
            s.redis_breaker_opened,
        ),
        ("purges", "Objects, buckets or whole caches purged.", s.purges),
        (
            "purges_received",
            "Purges announced by other instances and applied here.",
            s.purges_received,
        ),
        (
            "coalesced_waits",
            "Misses that waited for a concurrent fetch of the same object or slice.",
            s.coalesced_waits,
        ),
        (
            "slice_answers",
            "Answers made from the slices of a large object.",
            s.slice_answers,
        ),
        ("slice_fetches", "Slices requested from the replicas.", s.slice_fetches),
        (
            "slice_invalidations",
            "Sliced objects dropped because their ETag changed upstream.",
            s.slice_invalidations,
        ),
    ]
}

pub(super) fn register_credentials_gauge(meter: &Meter, credentials: &Arc<Mutex<CredentialGauges>>) {
    let credentials = credentials.clone();
    meter
        .f64_observable_gauge("yatagarasu_credentials_expiry_seconds")
        .with_description("Seconds until the replica's current credentials expire (negative: expired).")
        .with_callback(move |obs| {
            let now = std::time::SystemTime::now();
            let map = credentials.lock().unwrap_or_else(|e| e.into_inner());
            for ((bucket, replica), creds) in map.iter() {
                let left = |e: std::time::SystemTime| match e.duration_since(now) {
                    Ok(left) => left.as_secs_f64().round(),
                    Err(e) => -e.duration().as_secs_f64().round(),
                };
                let secs = match (creds.current(), creds.expires()) {
                    (_, Some(expires)) => left(expires),
                    (Ok(_), None) => NEVER_EXPIRES,
                    (Err(_), None) => 0.0,
                };
                obs.observe(
                    secs,
                    &[
                        KeyValue::new("bucket", bucket.clone()),
                        KeyValue::new("replica", replica.clone()),
                    ],
                );
            }
        })
        .build();
}

pub(super) fn register_observers(
    meter: &Meter,
    replicas: &Arc<Mutex<ReplicaGauges>>,
    cache: &Arc<Mutex<Option<CacheStore>>>,
    auth: &Arc<Mutex<Option<Arc<AuthStats>>>>,
) {
    let gauge = |name: &'static str, help: &'static str, pick: fn(&(i64, i64)) -> i64| {
        let replicas = replicas.clone();
        meter
            .i64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |obs| {
                let map = replicas.lock().unwrap_or_else(|e| e.into_inner());
                for ((bucket, replica), v) in map.iter() {
                    obs.observe(
                        pick(v),
                        &[
                            KeyValue::new("bucket", bucket.clone()),
                            KeyValue::new("replica", replica.clone()),
                        ],
                    );
                }
            })
            .build();
    };
    gauge(
        "yatagarasu_replica_health",
        "Whether the replica passes its health checks (1) or not (0).",
        |v| v.0,
    );
    gauge(
        "yatagarasu_circuit_breaker_state",
        "The replica's circuit breaker: 0 closed, 1 open, 2 half-open.",
        |v| v.1,
    );

    for (i, (field, help, _)) in cache_fields(&CacheStatsSnapshot::default()).into_iter().enumerate() {
        let cache = cache.clone();
        let name = format!("yatagarasu_cache_{field}_total");
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |obs| {
                if let Some(store) = cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    obs.observe(cache_fields(&store.snapshot())[i].2, &[]);
                }
            })
            .build();
    }
    for (name, help, pick) in [
        (
            "yatagarasu_cache_memory_entries",
            "Entries in the memory tier (approximate).",
            (|s: &CacheStatsSnapshot| s.memory_entries) as fn(&CacheStatsSnapshot) -> u64,
        ),
        (
            "yatagarasu_cache_memory_bytes",
            "Bytes held by the memory tier (approximate).",
            |s: &CacheStatsSnapshot| s.memory_bytes,
        ),
    ] {
        let cache = cache.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(help)
            .with_callback(move |obs| {
                if let Some(store) = cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    obs.observe(pick(&store.snapshot()), &[]);
                }
            })
            .build();
    }

    #[cfg(target_os = "linux")]
    {
        let cache = cache.clone();
        meter
            .u64_observable_gauge("yatagarasu_cache_memory_files")
            .with_description("Memory-tier bodies kept in memfds, sent with sendfile (cache.memory.sendfile_min_size).")
            .with_callback(move |obs| {
                if cache.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                    obs.observe(crate::zero_copy::live_files() as u64, &[]);
                }
            })
            .build();
    }

    meter
        .u64_observable_gauge("yatagarasu_tls_certificate_expiry_timestamp_seconds")
        .with_description("When the certificate a TLS listener serves expires (its notAfter), in Unix seconds.")
        .with_callback(|obs| {
            for (listener, at) in crate::tls::certificate_expiry() {
                obs.observe(at, &[KeyValue::new("listener", listener)]);
            }
        })
        .build();

    let redis_cache = cache.clone();
    meter
        .u64_observable_gauge("yatagarasu_cache_redis_up")
        .with_description("Whether the shared cache tier answered its last operation (1) or not (0), by mode.")
        .with_callback(move |obs| {
            if let Some(store) = redis_cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                if let (Some(mode), Some(up)) = (store.redis_mode(), store.redis_up()) {
                    obs.observe(u64::from(up), &[KeyValue::new("mode", mode)]);
                }
            }
        })
        .build();

    let auth = auth.clone();
    meter
        .u64_observable_counter("yatagarasu_auth_total")
        .with_description("Authentication decisions, by outcome.")
        .with_callback(move |obs| {
            if let Some(stats) = auth.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                for (outcome, n) in stats.snapshot() {
                    obs.observe(n, &[KeyValue::new("reason", outcome.as_str())]);
                }
            }
        })
        .build();
}
