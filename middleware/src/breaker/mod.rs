//! Per-replica circuit breakers.
//!
//! [`CircuitBreaker`] is the state machine (closed / open / half-open);
//! [`CircuitBreakerLayer`] gates a replica's service with one; [`classify`]
//! decides which outcomes count as failures; [`Settle`] decides when a
//! success counts (a response whose body is still to come: once its body
//! has ended cleanly, so a replica that breaks bodies mid-way opens its
//! breaker like one that fails at the headers). They are separate so each
//! can be tested alone: the state machine with a [`ManualClock`], no sleeps.
//!
//! ```
//! use std::time::Duration;
//! use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig {
//!     failure_threshold: 3,
//!     success_threshold: 2,
//!     open_timeout: Duration::from_secs(30),
//!     half_open_requests: 1,
//! });
//! let layer = CircuitBreakerLayer::new(breaker.clone());
//! # let _ = layer;
//! ```

mod body;
mod classify;
mod clock;
mod service;
mod state;

pub use body::Settle;
pub use classify::{classify, is_failure_status, Classify, FailureClass};
pub use clock::{Clock, ManualClock, SystemClock};
pub use service::{CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use state::{BreakerConfig, BreakerState, CircuitBreaker, Permit, TransitionHook};
