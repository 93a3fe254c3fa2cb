//! Prometheus metrics (`yatagarasu_*`).
//!
//! STUB: the interface the app reports through; the exporter is being
//! implemented (issue 6). Every method is a no-op for now.

use std::sync::Arc;
use std::time::Duration;

use yatagarasu_middleware::auth::AuthStats;
use yatagarasu_middleware::breaker::BreakerState;
use yatagarasu_middleware::cache::CacheStore;
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::failover::FailoverEvents;

/// Every metric of the process.
#[derive(Default)]
pub struct Metrics {}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// `yatagarasu_replica_health{bucket,replica}`: 1 healthy, 0 not.
    pub fn replica_health(&self, _bucket: &str, _replica: &str, _healthy: bool) {}

    /// `yatagarasu_circuit_breaker_state{bucket,replica}`: 0 closed, 1 open, 2 half-open.
    pub fn breaker_state(&self, _bucket: &str, _replica: &str, _state: BreakerState) {}

    /// A finished request (response headers sent).
    pub fn request_done(&self, _bucket: &str, _method: &str, _status: u16, _cache: &str, _duration: Duration) {}

    /// Exports the cache's counters at scrape time.
    pub fn watch_cache(&self, _store: CacheStore) {}

    /// Exports the auth counters at scrape time.
    pub fn watch_auth(&self, _stats: Arc<AuthStats>) {}

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        String::new()
    }
}

impl FailoverEvents for Metrics {
    fn request(&self, _bucket: &str, _replica: &str) {}
    fn failure(&self, _bucket: &str, _replica: &str, _error: &FetchError) {}
    fn failover(&self, _bucket: &str, _from: &str, _to: &str) {}
}
