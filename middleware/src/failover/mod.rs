//! Failover across a bucket's replicas: a selector over per-replica stacks,
//! each gated by its own circuit breaker, with optional hedged requests and
//! latency-aware choice among equal priorities (see docs/reliability.md).
//!
//! ```no_run
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
//! use yatagarasu_middleware::bulkhead::BulkheadLayer;
//! use yatagarasu_middleware::failover::{Failover, HedgeConfig, HedgeDelay, LatencyConfig, Replica};
//! use yatagarasu_middleware::health::ReplicaHealth;
//! use yatagarasu_middleware::object::ObjectService;
//! use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = reqwest::Client::new();
//! let mut replicas = Vec::new();
//! for (priority, (name, endpoint)) in [("primary", "http://10.0.0.1:9000"), ("backup", "http://10.0.0.2:9000")]
//!     .into_iter()
//!     .enumerate()
//! {
//!     let bucket = s3_bucket(Some(&endpoint.parse()?), "data-bucket", "us-east-1")?;
//!     let fetch = S3Upstream::new(name, bucket, client.clone()).with_timeout(Duration::from_secs(5));
//!     let breaker = CircuitBreaker::new(BreakerConfig::default());
//!     let stack = ServiceBuilder::new()
//!         .layer(CircuitBreakerLayer::new(breaker.clone()))
//!         .layer(BulkheadLayer::new(256))
//!         .service(fetch);
//!     replicas.push(Replica::new(name, stack, breaker, ReplicaHealth::new()).with_priority(priority as u32));
//! }
//! let failover = Failover::builder("data", replicas)
//!     .hedge(Some(HedgeConfig { delay: HedgeDelay::P95, max_extra_percent: 10.0, enabled_by_default: true }))
//!     .latency_aware(Some(LatencyConfig::default()))
//!     .build();
//! let service = ObjectService::new(failover);
//! # let _ = service; Ok(()) }
//! ```

mod attempt;
mod builder;
mod events;
mod flight;
mod future;
mod hedge;
mod latency;
mod pass;
mod replica;
mod resume;
mod service;
#[cfg(test)]
mod tests;

pub use attempt::{Attempt, AttemptKind, HedgeOutcome};
pub use builder::FailoverBuilder;
pub use events::{FailoverEvents, HedgeEvent, NoEvents};
pub use future::FailoverFuture;
pub use hedge::{HedgeConfig, HedgeDelay};
pub use latency::LatencyConfig;
pub use replica::{Replica, ReplicaHedge};
pub use service::Failover;
