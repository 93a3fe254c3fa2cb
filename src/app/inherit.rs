//! What a reload carries over: each replica's identity ([`ReplicaKey`]),
//! its shared state ([`ReplicaSlot`]), and what a new build takes from the
//! running app ([`Inherited`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use yatagarasu_middleware::auth::AuthStats;
use yatagarasu_middleware::breaker::CircuitBreaker;
use yatagarasu_middleware::cache::CacheStore;
use yatagarasu_middleware::credentials::ReplicaCredentials;
use yatagarasu_middleware::health::{HealthCheck, ReplicaHealth};

use crate::config::{CacheConfig, Config, HealthCheckConfig, ResolvedReplica};

/// A replica's identity across reloads: same bucket, same name, and the same
/// settings that its breaker and health depend on (endpoint, bucket, region,
/// credentials, timeouts, bulkhead, breaker and health-check settings).
/// Priority and weight may change without losing state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaKey {
    /// The bucket's name.
    pub bucket: String,
    /// The replica's name.
    pub replica: String,
    fingerprint: u64,
}

impl ReplicaKey {
    pub(super) fn new(config: &Config, bucket: usize, r: &ResolvedReplica, hc: &HealthCheckConfig) -> Self {
        let b = &config.buckets[bucket];
        let mut h = DefaultHasher::new();
        r.endpoint.as_ref().map(url::Url::as_str).hash(&mut h);
        (&r.bucket, &r.region, r.timeout_seconds, r.max_concurrent_requests).hash(&mut h);
        r.credentials
            .as_ref()
            .map(|(a, s)| (a.expose(), s.expose()))
            .hash(&mut h);
        (&r.session_token, &r.role, r.anonymous, &r.ca_file).hash(&mut h);
        let cb = &b.s3.circuit_breaker;
        (
            cb.failure_threshold,
            cb.success_threshold,
            cb.timeout_seconds,
            cb.half_open_requests,
        )
            .hash(&mut h);
        (hc.enabled, hc.interval_seconds, hc.timeout_seconds, &hc.path).hash(&mut h);
        Self {
            bucket: b.name.clone(),
            replica: r.name.clone(),
            fingerprint: h.finish(),
        }
    }
}

/// One replica of a built app: its shared state and its (not yet started) probe.
#[derive(Debug, Clone)]
pub struct ReplicaSlot {
    /// Its identity across reloads.
    pub key: ReplicaKey,
    /// Its circuit breaker (inherited when the key did not change).
    pub breaker: Arc<CircuitBreaker>,
    /// Its health (inherited when the key did not change).
    pub health: Arc<ReplicaHealth>,
    /// Its background probe, when health checks are on.
    pub check: Option<HealthCheck>,
    /// The credentials it signs with (for the expiry gauge).
    pub credentials: ReplicaCredentials,
    pub(super) retired: Arc<AtomicBool>,
}

impl ReplicaSlot {
    /// Marks the replica as gone from the live config: its breaker (still
    /// used by requests in flight on the old config) stops reporting into the
    /// gauges, which now belong to its successor or are removed.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

/// What a new build takes over from the running app.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    pub(super) draining: Arc<AtomicBool>,
    pub(super) auth_stats: Arc<AuthStats>,
    pub(super) replicas: HashMap<ReplicaKey, ReplicaSlot>,
    pub(super) cache: Option<(CacheConfig, CacheStore)>,
}
