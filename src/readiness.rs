//! `/ready`: whether every bucket has a replica to serve from, with a JSON
//! report of each replica's health (and why it failed) and circuit breaker.
//!
//! A replica is usable when its breaker would let a request through (an
//! open breaker whose open period has elapsed counts: the next request is
//! its trial, and an unready pod gets no requests to make one) and, with
//! health checks on, its last probe passed. With
//! `server.readiness.require_replicas: false` the report still says which
//! bucket has no usable replica (`"status": "degraded"`) but the answer stays
//! 200, so an outage of every replica does not take every pod out of the
//! Service at once. See `docs/readiness.md`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use yatagarasu_middleware::breaker::CircuitBreaker;
use yatagarasu_middleware::cache::CacheStore;
use yatagarasu_middleware::health::{Health, ReplicaHealth};

/// What `/ready` reports on.
#[derive(Debug, Default)]
pub struct ReadyState {
    buckets: Vec<BucketReadiness>,
    /// Shared by every app built from one process: a drain started on one
    /// config holds for the configs reloaded after it.
    draining: Arc<AtomicBool>,
    /// Whether a bucket without a usable replica makes the pod unready.
    require_replicas: bool,
    /// The shared cache, reported on (never a readiness condition).
    cache: Option<CacheStore>,
}

#[derive(Debug)]
pub(crate) struct BucketReadiness {
    pub(crate) name: String,
    pub(crate) replicas: Vec<ReplicaReadiness>,
}

#[derive(Debug)]
pub(crate) struct ReplicaReadiness {
    pub(crate) name: String,
    pub(crate) health: Arc<ReplicaHealth>,
    pub(crate) breaker: Arc<CircuitBreaker>,
    pub(crate) checked: bool,
}

impl ReadyState {
    /// No bucket yet, sharing the process's drain flag.
    pub(crate) fn new(draining: Arc<AtomicBool>) -> Self {
        Self {
            buckets: Vec::new(),
            draining,
            require_replicas: true,
            cache: None,
        }
    }

    /// Reports the shared cache tier's mode and health (information only).
    pub(crate) fn with_cache(mut self, cache: Option<CacheStore>) -> Self {
        self.cache = cache;
        self
    }

    /// Whether a bucket without a usable replica answers 503 (the default) or
    /// is only reported.
    pub(crate) fn with_require_replicas(mut self, require: bool) -> Self {
        self.require_replicas = require;
        self
    }

    pub(crate) fn push_bucket(&mut self, bucket: BucketReadiness) {
        self.buckets.push(bucket);
    }

    /// The drain flag, to share with the next build.
    pub(crate) fn draining_flag(&self) -> Arc<AtomicBool> {
        self.draining.clone()
    }

    /// Makes `/ready` answer 503 from now on (graceful drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn replica_usable(r: &ReplicaReadiness) -> bool {
        if !r.breaker.is_usable() {
            return false;
        }
        match r.health.health() {
            Health::Healthy => true,
            Health::Unhealthy => false,
            Health::Unknown => !r.checked,
        }
    }

    fn replicas_ok(&self) -> bool {
        self.buckets.iter().all(|b| b.replicas.iter().any(Self::replica_usable))
    }

    /// Whether no drain is under way and every bucket has a usable replica
    /// (the latter only when `require_replicas` is on).
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && (!self.require_replicas || self.replicas_ok())
    }

    fn report(&self) -> serde_json::Value {
        let buckets: serde_json::Map<String, serde_json::Value> = self
            .buckets
            .iter()
            .map(|b| {
                let replicas: Vec<_> = b
                    .replicas
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "health": if r.checked { r.health.health().as_str() } else { "unchecked" },
                            "circuit_breaker": r.breaker.state().as_str(),
                            "usable": Self::replica_usable(r),
                            "reason": if r.checked && r.health.health() == Health::Unhealthy {
                                r.health.last_error()
                            } else {
                                None
                            },
                            "last_latency_ms": r.health.last_latency().map(millis),
                        })
                    })
                    .collect();
                let ready = b.replicas.iter().any(Self::replica_usable);
                (b.name.clone(), json!({ "ready": ready, "replicas": replicas }))
            })
            .collect();
        json!({
            "status": match (self.is_ready(), self.replicas_ok()) {
                (false, _) => "not_ready",
                (true, true) => "ready",
                (true, false) => "degraded",
            },
            "require_replicas": self.require_replicas,
            "draining": self.draining.load(Ordering::SeqCst),
            "buckets": buckets,
        })
    }
}

/// The `/ready` handler.
pub(crate) async fn ready_handler(State(ready): State<Arc<ReadyState>>) -> impl IntoResponse {
    let status = if ready.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut report = ready.report();
    // The shared cache tier's mode and health: information only, a dead
    // cache never makes the proxy unready.
    if let Some(health) = match &ready.cache {
        Some(store) => store.redis_health().await,
        None => None,
    } {
        report["cache"] = json!({ "redis": health });
    }
    (status, Json(report))
}

/// A probe latency in milliseconds with microsecond precision: `4.761`, not
/// the `4.760999999999999` that `as_secs_f64() * 1000.0` prints.
fn millis(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn latency_prints_as_the_microseconds_it_was_stored_in() {
        let v = serde_json::json!(super::millis(Duration::from_micros(4761)));
        assert_eq!(v.to_string(), "4.761");
        assert_eq!(
            serde_json::json!(super::millis(Duration::from_micros(1800))).to_string(),
            "1.8"
        );
    }
}
