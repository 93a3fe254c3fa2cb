use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::body::Settle;
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
    S::Response: Classify + Settle,
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
    /// A successful answer's permit is handed to [`Settle`]: a response
    /// whose body is still to come counts once its body has ended.
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
    T: Classify + Settle,
{
    type Output = Result<T, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, permit) = match self.project().state.project() {
            StateProj::Gated { inner, permit } => (inner, permit),
            StateProj::Refused => return Poll::Ready(Err(FetchError::BreakerOpen)),
        };
        let result = ready!(inner.poll(cx));
        let Some(permit) = permit.take() else {
            return Poll::Ready(result);
        };
        match super::classify::classify(&result) {
            FailureClass::Success => return Poll::Ready(result.map(|res| res.settle(permit))),
            FailureClass::Failure => permit.failure(),
            FailureClass::Neutral => drop(permit),
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
    use tower::{service_fn, BoxError, ServiceExt};

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

    /// A body of `len` bytes (its exact length known) that yields `chunks`
    /// then `end`: `Ok(())` ends it (short if the chunks fall short of
    /// `len`), `Err(())` breaks it, and no `end` leaves it pending.
    struct Scripted {
        chunks: Vec<&'static [u8]>,
        len: u64,
        end: Option<Result<(), ()>>,
    }

    impl http_body::Body for Scripted {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, BoxError>>> {
            if !self.chunks.is_empty() {
                let chunk = self.chunks.remove(0);
                return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from_static(chunk)))));
            }
            match self.end {
                Some(Ok(())) => Poll::Ready(None),
                Some(Err(())) => Poll::Ready(Some(Err("connection reset".into()))),
                None => Poll::Pending,
            }
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::SizeHint::with_exact(self.len)
        }
    }

    /// A replica answering 200 with bodies made by `body`.
    fn streaming(
        body: impl Fn() -> Scripted + Clone + Send + 'static,
    ) -> impl Service<(), Response = Response<Body>, Error = FetchError, Future: Send> + Clone {
        service_fn(move |()| {
            let body = body.clone();
            async move { Ok::<_, FetchError>(Response::new(Body::new(body()))) }
        })
    }

    fn closed_breaker(failure_threshold: u32) -> Arc<CircuitBreaker> {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold,
            success_threshold: 1,
            open_timeout: Duration::from_secs(30),
            half_open_requests: 1,
        })
    }

    /// Reads a body to its end or its first error (Err: the body broke).
    async fn drain(res: Response<Body>) -> Result<usize, axum::Error> {
        axum::body::to_bytes(res.into_body(), usize::MAX).await.map(|b| b.len())
    }

    #[tokio::test]
    async fn bodies_that_break_after_good_headers_open_the_breaker() {
        let breaker = closed_breaker(3);
        let broken = || Scripted {
            chunks: vec![b"0123"],
            len: 10,
            end: Some(Err(())),
        };
        let svc = CircuitBreakerService::new(streaming(broken), breaker.clone());
        for _ in 0..3 {
            let res = svc.clone().oneshot(()).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            // The headers were good: nothing is counted yet, no success in between.
            assert!(drain(res).await.is_err());
        }
        assert_eq!(breaker.state(), BreakerState::Open, "three broken bodies in a row");
    }

    #[tokio::test]
    async fn a_body_ending_short_of_its_length_is_a_failure() {
        let breaker = closed_breaker(1);
        let short = || Scripted {
            chunks: vec![b"0123"],
            len: 10,
            end: Some(Ok(())),
        };
        let res = CircuitBreakerService::new(streaming(short), breaker.clone())
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(drain(res).await.unwrap(), 4);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_the_success_and_resets_the_count() {
        let breaker = closed_breaker(2);
        breaker.try_acquire().unwrap().failure();
        let whole = || Scripted {
            chunks: vec![b"01234", b"56789"],
            len: 10,
            end: None,
        };
        // Settled at its last byte, even if never polled past it.
        let mut body = CircuitBreakerService::new(streaming(whole), breaker.clone())
            .oneshot(())
            .await
            .unwrap()
            .into_body();
        use http_body_util::BodyExt;
        body.frame().await.unwrap().unwrap();
        body.frame().await.unwrap().unwrap();
        breaker.try_acquire().unwrap().failure();
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "the body's success reset the count"
        );
    }

    #[tokio::test]
    async fn a_half_open_trial_lasts_until_its_body_ends() {
        let (breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(30));
        let whole = || Scripted {
            chunks: vec![b"0123456789"],
            len: 10,
            end: Some(Ok(())),
        };
        let res = CircuitBreakerService::new(streaming(whole), breaker.clone())
            .oneshot(())
            .await
            .unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(breaker.try_acquire().is_none(), "the trial's slot is still taken");
        assert_eq!(drain(res).await.unwrap(), 10);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test]
    async fn a_body_dropped_mid_way_records_nothing_and_frees_its_trial_slot() {
        let (breaker, clock) = open_breaker();
        clock.advance(Duration::from_secs(30));
        let stalled = || Scripted {
            chunks: vec![b"0123"],
            len: 10,
            end: None,
        };
        let mut body = CircuitBreakerService::new(streaming(stalled), breaker.clone())
            .oneshot(())
            .await
            .unwrap()
            .into_body();
        use http_body_util::BodyExt;
        body.frame().await.unwrap().unwrap();
        assert!(breaker.try_acquire().is_none(), "one trial at a time");
        // The client leaves: neither a success nor a failure of the replica.
        drop(body);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.try_acquire().expect("the slot was freed").success();
        assert_eq!(breaker.state(), BreakerState::Closed);
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
