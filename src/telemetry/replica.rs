//! [`ReplicaSpanLayer`]: a child span per replica attempt, its trace context
//! sent to the replica.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::Response;
use tower::{Layer, Service};
use tracing::field::Empty;
use tracing::Span;
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::object::ObjectRequest;

use super::{enabled, inject, TARGET};

/// Attributes an attempt takes from its request: attempt number and kind
/// (failover, hedge): `yatagarasu.attempt` and `yatagarasu.attempt_kind`,
/// from the [`Attempt`](yatagarasu_middleware::failover::Attempt) the
/// failover puts on every request it sends.
fn attempt_attributes(req: &ObjectRequest, span: &Span) {
    if let Some(attempt) = req.attempt() {
        span.record("yatagarasu.attempt", attempt.number);
        span.record("yatagarasu.attempt_kind", attempt.kind.as_str());
    }
}

/// Wraps one replica's stack: a child span of the request's per attempt
/// (replica, status, bytes, error), its trace context sent to the replica.
/// A pass-through when tracing is off.
#[derive(Debug, Clone)]
pub struct ReplicaSpanLayer {
    bucket: Arc<str>,
    replica: Arc<str>,
}

impl ReplicaSpanLayer {
    /// Spans for the attempts on `replica` of `bucket`.
    pub fn new(bucket: Arc<str>, replica: impl Into<Arc<str>>) -> Self {
        Self {
            bucket,
            replica: replica.into(),
        }
    }
}

impl<S> Layer<S> for ReplicaSpanLayer {
    type Service = ReplicaSpan<S>;

    fn layer(&self, inner: S) -> ReplicaSpan<S> {
        ReplicaSpan {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ReplicaSpanLayer`].
#[derive(Debug, Clone)]
pub struct ReplicaSpan<S> {
    inner: S,
    layer: ReplicaSpanLayer,
}

impl<S> Service<ObjectRequest> for ReplicaSpan<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError>,
{
    type Response = Response<Body>;
    type Error = FetchError;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: ObjectRequest) -> Self::Future {
        if !enabled() {
            return AttemptFuture {
                inner: self.inner.call(req),
                span: Span::none(),
            };
        }
        let span = tracing::info_span!(
            target: TARGET,
            "replica",
            otel.name = %format_args!("replica {}", self.layer.replica),
            otel.kind = "client",
            otel.status_code = Empty,
            yatagarasu.bucket = %self.layer.bucket,
            yatagarasu.replica = %self.layer.replica,
            yatagarasu.attempt = Empty,
            yatagarasu.attempt_kind = Empty,
            http.response.status_code = Empty,
            http.response.body.size = Empty,
            error.type = Empty,
        );
        attempt_attributes(&req, &span);
        inject(&span, req.headers_mut());
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        AttemptFuture { inner, span }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ReplicaSpan`]: the attempt inside its span, whose
    /// status, bytes (`Content-Length`) or error it records.
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F> std::future::Future for AttemptFuture<F>
where
    F: std::future::Future<Output = Result<Response<Body>, FetchError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let out = std::task::ready!(this.inner.poll(cx));
        if !this.span.is_none() {
            match &out {
                Ok(res) => {
                    this.span.record("http.response.status_code", res.status().as_u16());
                    if let Some(len) = res
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    {
                        this.span.record("http.response.body.size", len);
                    }
                }
                Err(e) => {
                    this.span.record("error.type", tracing::field::display(e));
                    this.span.record("otel.status_code", "ERROR");
                }
            }
        }
        Poll::Ready(out)
    }
}
