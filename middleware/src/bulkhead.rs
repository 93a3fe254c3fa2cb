//! Per-replica concurrency limit (bulkhead): when a replica already has its
//! maximum of requests waiting for response headers, further ones are
//! refused at once with [`FetchError::Overloaded`] (the failover moves on)
//! instead of queueing without bound behind a slow replica.
//!
//! The refusal comes from `poll_ready`, not from the call: a refused request
//! is never sent, so it is not counted as one sent to the replica (and the
//! breaker above records nothing for it). Built on tower's `ConcurrencyLimit`.
//!
//! ```
//! use tower::{service_fn, Layer};
//! use yatagarasu_middleware::bulkhead::BulkheadLayer;
//! use yatagarasu_middleware::error::FetchError;
//!
//! let fetch = service_fn(|key: String| async move { Ok::<_, FetchError>(key) });
//! let limited = BulkheadLayer::new(256).layer(fetch);
//! # let _ = limited;
//! ```

use std::task::{Context, Poll};

use futures_util::future::{ready, Either, Ready};
use tower::limit::concurrency::future::ResponseFuture;
use tower::limit::ConcurrencyLimit;
use tower::{Layer, Service};

use crate::error::FetchError;

/// Limits `inner` to `max` requests in flight (until response headers).
#[derive(Debug, Clone, Copy)]
pub struct BulkheadLayer {
    max: usize,
}

impl BulkheadLayer {
    /// At most `max` (at least 1) concurrent requests.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1) }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner: ConcurrencyLimit::new(inner, self.max),
            ready: false,
        }
    }
}

/// A service behind a bulkhead: `poll_ready` reserves one of its slots or
/// fails at once with [`FetchError::Overloaded`] (never waits); `call`
/// spends the slot until the response headers. Clones start without a slot;
/// a `call` made without one is refused with `Overloaded`, unsent.
#[derive(Debug)]
pub struct Bulkhead<S> {
    inner: ConcurrencyLimit<S>,
    ready: bool,
}

impl<S: Clone> Clone for Bulkhead<S> {
    fn clone(&self) -> Self {
        // `ConcurrencyLimit`'s clone holds no slot: neither does ours.
        Self {
            inner: self.inner.clone(),
            ready: false,
        }
    }
}

impl<S> Bulkhead<S> {
    /// The limited service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The limited service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// The limited service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req, Error = FetchError>,
{
    type Response = S::Response;
    type Error = FetchError;
    type Future = Either<ResponseFuture<S::Future>, Ready<Result<S::Response, FetchError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Full: refused now, never queued.
            Poll::Pending => Poll::Ready(Err(FetchError::Overloaded)),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !std::mem::take(&mut self.ready) {
            return Either::Right(ready(Err(FetchError::Overloaded)));
        }
        Either::Left(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn refuses_at_once_when_full_and_keeps_inner_errors() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let inner = tower::service_fn(move |fail: bool| {
            let rx = rx.clone();
            async move {
                if fail {
                    return Err(FetchError::Status(http::StatusCode::BAD_GATEWAY));
                }
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, FetchError>(())
            }
        });
        let mut svc = BulkheadLayer::new(1).layer(inner);
        let first = svc.ready().await.unwrap().call(false);
        let handle = tokio::spawn(first);
        tokio::task::yield_now().await;
        // Full: refused by `poll_ready`, so the request is never sent (nor
        // counted as sent by the failover).
        let second = svc.clone().ready().await.map(|_| ());
        assert!(matches!(second, Err(FetchError::Overloaded)), "{second:?}");
        // A call without a slot is refused too, unsent.
        let unready = svc.clone().call(false).await;
        assert!(matches!(unready, Err(FetchError::Overloaded)), "{unready:?}");
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(matches!(err, FetchError::Status(_)));
    }
}
