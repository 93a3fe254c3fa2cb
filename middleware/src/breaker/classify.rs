use axum::body::Body;
use http::Response;

use crate::error::FetchError;

/// What an outcome says about a replica's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The replica answered (any 2xx, 3xx or 4xx: a 404 is a healthy answer).
    Success,
    /// The replica failed: connection error, timeout, 5xx.
    Failure,
    /// Says nothing about the replica (not admitted: breaker open, bulkhead full).
    Neutral,
}

/// Responses whose status tells success from failure.
pub trait Classify {
    /// Whether this response shows the replica failing.
    fn is_failure(&self) -> bool;
}

impl Classify for Response<Body> {
    fn is_failure(&self) -> bool {
        self.status().is_server_error()
    }
}

/// Classifies a replica's result.
pub fn classify<T: Classify>(result: &Result<T, FetchError>) -> FailureClass {
    match result {
        Ok(res) if res.is_failure() => FailureClass::Failure,
        Ok(_) => FailureClass::Success,
        Err(FetchError::BreakerOpen | FetchError::Overloaded | FetchError::NoReplica) => FailureClass::Neutral,
        Err(_) => FailureClass::Failure,
    }
}
