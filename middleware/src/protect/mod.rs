//! Protection of the proxy itself, for the client-facing edge of an axum app:
//!
//! - [`RequestLimitsLayer`]: refuses a request target longer than a limit
//!   (`414 URI Too Long`) or headers larger than a limit
//!   (`431 Request Header Fields Too Large`);
//! - [`RateLimitLayer`]: a token bucket for the whole process and/or one per
//!   client IP (`429 Too Many Requests`, S3 code `SlowDown`, `Retry-After`);
//! - [`LoadShedLayer`]: at most N requests in flight, counted until their
//!   response body ends; the next one is answered at once with
//!   `503 Service Unavailable` (`SlowDown`, `Retry-After`) instead of queueing
//!   without bound.
//!
//! Every layer answers with an S3-style XML response and keeps the inner
//! error type, so they drop into any `Router::layer` without
//! `HandleErrorLayer`. They work on `Response<axum::body::Body>` services.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::protect::{LoadShedLayer, RateLimitLayer, RequestLimitsLayer};
//!
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RequestLimitsLayer::new(8 * 1024, 64 * 1024))
//!         .layer(RateLimitLayer::new().with_global(1000, 2000).with_per_ip(50, 100))
//!         .layer(LoadShedLayer::new(10_000)),
//! );
//! # let _ = app;
//! ```

mod future;
mod limits;
mod rate_limit;
mod shed;

pub use future::ResponseFuture;
pub use limits::{RequestLimits, RequestLimitsLayer};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use shed::{LoadShed, LoadShedLayer};

use std::time::Duration;

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
