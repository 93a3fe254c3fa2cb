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
/// without a permit. A `call` made without a permit (the caller skipped
/// `poll_ready`) takes one there, and is refused with
/// [`FetchError::BreakerOpen`] without reaching the inner service when the
/// breaker admits nothing: no request passes ungated or unrecorded.
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
        match self.permit.take().or_else(|| self.breaker.try_acquire()) {
            Some(permit) => ResponseFuture {
                state: State::Gated {
                    inner: self.inner.call(req),
                    permit: Some(permit),
                },
            },
            None => ResponseFuture { state: State::Refused },
        }
    }
}

pin_project! {
    /// Records the outcome of a gated request in its breaker (or refuses a
    /// request called without a permit while the breaker admits nothing).
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Admitted: the inner call, and the permit its outcome spends.
        Gated { #[pin] inner: F, permit: Option<Permit> },
        // Called without a permit while the breaker admits nothing.
        Refused,
    }
}

impl<F, T> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, FetchError>>,
    T: Classify,
{
    type Output = Result<T, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, permit) = match self.project().state.project() {
            StateProj::Gated { inner, permit } => (inner, permit),
            StateProj::Refused => return Poll::Ready(Err(FetchError::BreakerOpen)),
        };
        let result = ready!(inner.poll(cx));
        if let Some(permit) = permit.take() {
            match super::classify::classify(&result) {
                FailureClass::Success => permit.success(),
                FailureClass::Failure => permit.failure(),
                FailureClass::Neutral => drop(permit),
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::body::Body;
    use http::{Response, StatusCode};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::breaker::{BreakerConfig, BreakerState, ManualClock};

    fn open_breaker() -> (Arc<CircuitBreaker>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let config = BreakerConfig {
            failure_threshold: 1,
            success_threshold: 1,
            open_timeout: Duration::from_secs(30),
            half_open_requests: 1,
        };
        let breaker = CircuitBreaker::with_clock(config, clock.clone(), None);
        breaker.try_acquire().unwrap().failure();
        assert_eq!(breaker.state(), BreakerState::Open);
        (breaker, clock)
    }

    fn counting(
        calls: Arc<AtomicUsize>,
        status: StatusCode,
    ) -> impl Service<(), Response = Response<Body>, Error = FetchError, Future: Send> + Clone {
        service_fn(move |()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, FetchError>(Response::builder().status(status).body(Body::empty()).unwrap()) }
        })
    }

    #[tokio::test]
    async fn call_without_poll_ready_is_refused_while_open() {
        let (breaker, _) = open_breaker();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = CircuitBreakerService::new(counting(calls.clone(), StatusCode::OK), breaker.clone());
        let result = svc.call(()).await;
        assert!(matches!(result, Err(FetchError::BreakerOpen)));
        assert_eq!(calls.load(Ordering::SeqCst), 0, "the inner service was reached");
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn call_without_poll_ready_takes_and_spends_a_permit() {
        let (breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = CircuitBreakerService::new(counting(calls.clone(), StatusCode::BAD_GATEWAY), breaker.clone());
        // The trial request, taken in `call`: its failure is recorded and reopens the breaker.
        assert_eq!(svc.call(()).await.unwrap().status(), StatusCode::BAD_GATEWAY);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(matches!(svc.call(()).await, Err(FetchError::BreakerOpen)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn ready_then_call_records_success() {
        let (breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = CircuitBreakerService::new(counting(calls.clone(), StatusCode::NOT_FOUND), breaker.clone());
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
