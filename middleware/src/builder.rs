//! [`ServiceBuilderExt`]: stack Yatagarasu's layers on a `tower::ServiceBuilder` in one line each.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker};
//! use yatagarasu_middleware::builder::ServiceBuilderExt;
//! use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fetch = S3Upstream::new("minio", s3_bucket(Some(&"http://127.0.0.1:9000".parse()?), "data", "us-east-1")?, reqwest::Client::new());
//! let replica = ServiceBuilder::new()
//!     .circuit_breaker(CircuitBreaker::new(BreakerConfig::default()))
//!     .bulkhead(128)
//!     .service(fetch);
//! # let _ = replica; Ok(()) }
//! ```

use std::sync::Arc;

use tower::layer::util::Stack;
use tower::ServiceBuilder;

use crate::auth::AuthLayer;
use crate::breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::bulkhead::BulkheadLayer;
use crate::cache::{CacheLayer, CacheStore};

/// Yatagarasu's layers as `ServiceBuilder` methods.
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Gates the service with a circuit breaker ([`CircuitBreakerLayer`]).
    fn circuit_breaker(self, breaker: Arc<CircuitBreaker>) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>>;
    /// Refuses requests past `max` in flight ([`BulkheadLayer`]).
    fn bulkhead(self, max: usize) -> ServiceBuilder<Stack<BulkheadLayer, L>>;
    /// Caches objects of `bucket` in `store` ([`CacheLayer`]).
    fn object_cache(self, store: CacheStore, bucket: &str) -> ServiceBuilder<Stack<CacheLayer, L>>;
    /// Requires a JWT ([`AuthLayer`]).
    fn jwt_auth(self, auth: AuthLayer) -> ServiceBuilder<Stack<AuthLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn circuit_breaker(self, breaker: Arc<CircuitBreaker>) -> ServiceBuilder<Stack<CircuitBreakerLayer, L>> {
        self.layer(CircuitBreakerLayer::new(breaker))
    }

    fn bulkhead(self, max: usize) -> ServiceBuilder<Stack<BulkheadLayer, L>> {
        self.layer(BulkheadLayer::new(max))
    }

    fn object_cache(self, store: CacheStore, bucket: &str) -> ServiceBuilder<Stack<CacheLayer, L>> {
        self.layer(CacheLayer::new(store, bucket.to_owned()))
    }

    fn jwt_auth(self, auth: AuthLayer) -> ServiceBuilder<Stack<AuthLayer, L>> {
        self.layer(auth)
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
