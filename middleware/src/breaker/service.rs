use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::classify::{Classify, FailureClass};
use super::state::{CircuitBreaker, Permit};
use crate::error::FetchError;

/// Wraps a replica's service in a [`CircuitBreaker`].
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    /// Gates services with this (shared) breaker.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone())
    }
}

/// A service gated by a circuit breaker.
///
/// `poll_ready` takes a permit from the breaker (or fails at once with
/// [`FetchError::BreakerOpen`], so a failover moves on without waiting) and
/// then waits for the inner service; `call` spends the permit, and the
/// response future records the outcome as [`Classify`] sees it. Clones start
/// without a permit.
#[derive(Debug)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    permit: Option<Permit>,
}

impl<S: Clone> Clone for CircuitBreakerService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            permit: None,
        }
    }
}

impl<S> CircuitBreakerService<S> {
    /// Gates `inner` with `breaker`.
    pub fn new(inner: S, breaker: Arc<CircuitBreaker>) -> Self {
        Self {
            inner,
            breaker,
            permit: None,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    inner_service_accessors!();
}

impl<S, Req> Service<Req> for CircuitBreakerService<S>
where
    S: Service<Req, Error = FetchError>,
    S::Response: Classify,
{
    type Response = S::Response;
    type Error = FetchError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        if self.permit.is_none() {
            match self.breaker.try_acquire() {
                Some(permit) => self.permit = Some(permit),
                None => return Poll::Ready(Err(FetchError::BreakerOpen)),
            }
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => {
                // Not admitted downstream (e.g. bulkhead full): no outcome to record.
                self.permit = None;
                Poll::Ready(Err(e))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = self.permit.take().or_else(|| self.breaker.try_acquire());
        ResponseFuture {
            inner: self.inner.call(req),
            permit,
        }
    }
}

pin_project! {
    /// Records the outcome of a gated request in its breaker.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<Permit>,
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, FetchError>>,
    T: Classify,
{
    type Output = Result<T, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(permit) = this.permit.take() {
            match super::classify::classify(&result) {
                FailureClass::Success => permit.success(),
                FailureClass::Failure => permit.failure(),
                FailureClass::Neutral => drop(permit),
            }
        }
        Poll::Ready(result)
    }
}
