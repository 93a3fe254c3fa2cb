use axum::body::Body;
use http::{Response, StatusCode};

use crate::error::FetchError;

/// What an outcome says about a replica's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The replica answered (any 2xx, 3xx or 4xx but 429: a 404 is a
    /// healthy answer).
    Success,
    /// The replica failed: connection error, timeout, 5xx, 429.
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
        is_failure_status(self.status())
    }
}

/// Statuses that are the replica's failure whatever the request: a server
/// error (including `503 SlowDown`), and `429 Too Many Requests` (the
/// replica throttling the proxy's own key: the client sends no credentials
/// upstream). Another replica may serve.
pub fn is_failure_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
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
