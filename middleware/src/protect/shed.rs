//! A global concurrency limit with load shedding.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::error::S3Error;

/// At most `max` requests in flight, each counted until its response body
/// ends or is dropped (a long download holds its slot); one more is answered
/// at once with `503 SlowDown` and `Retry-After`.
///
/// Unlike `tower::limit::ConcurrencyLimit`, nothing waits: axum treats
/// services as always ready, so a limit that waits in `poll_ready` would queue
/// without bound. The slot is taken in `call`, where the answer can be a 503.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    slots: Arc<Semaphore>,
    max: usize,
    retry_after: u64,
}

impl LoadShedLayer {
    /// At most `max` (at least 1) requests in flight; refusals say `Retry-After: 1`.
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            retry_after: 1,
        }
    }

    /// The `Retry-After` seconds of a refusal.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = seconds.max(1);
        self
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> LoadShed<S> {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`LoadShedLayer`]; clones share the limit.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

impl<S> LoadShed<S> {
    /// Wraps `inner` with a limit of `max` requests in flight.
    pub fn new(inner: S, max: usize) -> Self {
        LoadShedLayer::new(max).layer(inner)
    }

    /// A shortcut for [`LoadShedLayer::new`].
    pub fn layer(max: usize) -> LoadShedLayer {
        LoadShedLayer::new(max)
    }

    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.layer.slots.clone().try_acquire_owned() {
            Ok(permit) => ResponseFuture::inner(self.inner.call(req), Some(permit)),
            Err(_) => ResponseFuture::refused(
                S3Error::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "The proxy is at its limit of concurrent requests; retry later.",
                )
                .with_retry_after(self.layer.retry_after)
                .with_request_id_of(req.headers())
                .into_response(),
            ),
        }
    }
}

pin_project! {
    /// A response body holding a load-shed slot until it ends or is dropped.
    pub(crate) struct PermitBody {
        #[pin]
        inner: Body,
        permit: Option<OwnedSemaphorePermit>,
    }
}

impl PermitBody {
    pub(crate) fn new(inner: Body, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            permit: Some(permit),
        }
    }
}

impl http_body::Body for PermitBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if matches!(frame, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.permit.take();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn sheds_beyond_the_limit_until_the_body_ends() {
        let layer = LoadShedLayer::new(1).with_retry_after(2);
        let svc = layer.clone().layer(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("data")))
        }));
        let first = svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(layer.in_flight(), 1);

        let refused = svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers()["retry-after"], "2");

        // The slot is held by the first body until it ends.
        assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "data");
        assert_eq!(layer.in_flight(), 0);
        let again = svc.oneshot(Request::new(Body::empty())).await.unwrap();
        assert_eq!(again.status(), StatusCode::OK);
    }
}
