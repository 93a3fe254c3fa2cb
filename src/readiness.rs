//! `/ready`: whether every bucket has a replica to serve from, with a JSON
//! report of each replica's health and circuit breaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use yatagarasu_middleware::breaker::{BreakerState, CircuitBreaker};
use yatagarasu_middleware::health::{Health, ReplicaHealth};

/// What `/ready` reports on.
#[derive(Debug, Default)]
pub struct ReadyState {
    buckets: Vec<BucketReadiness>,
    /// Shared by every app built from one process: a drain started on one
    /// config holds for the configs reloaded after it.
    draining: Arc<AtomicBool>,
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
        }
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
        if r.breaker.state() == BreakerState::Open {
            return false;
        }
        match r.health.health() {
            Health::Healthy => true,
            Health::Unhealthy => false,
            Health::Unknown => !r.checked,
        }
    }

    /// Whether every bucket has a usable replica and no drain is under way.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
            && self.buckets.iter().all(|b| b.replicas.iter().any(Self::replica_usable))
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
                            "last_latency_ms": r.health.last_latency().map(|d| d.as_secs_f64() * 1000.0),
                        })
                    })
                    .collect();
                let ready = b.replicas.iter().any(Self::replica_usable);
                (b.name.clone(), json!({ "ready": ready, "replicas": replicas }))
            })
            .collect();
        json!({
            "status": if self.is_ready() { "ready" } else { "not_ready" },
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
    (status, Json(ready.report()))
}
