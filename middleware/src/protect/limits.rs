//! Limits on the request target's length and the headers' size.

use std::task::{Context, Poll};

use axum::body::Body;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::ResponseFuture;
use crate::error::S3Error;

/// Refuses request targets longer than `max_uri_length` bytes (414) and
/// header blocks larger than `max_header_bytes` (431; each header counts its
/// name, value and 4 bytes of `: ` and CRLF).
#[derive(Debug, Clone, Copy)]
pub struct RequestLimitsLayer {
    max_uri_length: usize,
    max_header_bytes: usize,
}

impl RequestLimitsLayer {
    /// Both limits, in bytes.
    pub fn new(max_uri_length: usize, max_header_bytes: usize) -> Self {
        Self {
            max_uri_length,
            max_header_bytes,
        }
    }
}

impl<S> Layer<S> for RequestLimitsLayer {
    type Service = RequestLimits<S>;

    fn layer(&self, inner: S) -> RequestLimits<S> {
        RequestLimits { inner, limits: *self }
    }
}

/// The service of [`RequestLimitsLayer`].
#[derive(Debug, Clone)]
pub struct RequestLimits<S> {
    inner: S,
    limits: RequestLimitsLayer,
}

impl<S> RequestLimits<S> {
    /// Wraps `inner` with both limits, in bytes.
    pub fn new(inner: S, max_uri_length: usize, max_header_bytes: usize) -> Self {
        RequestLimitsLayer::new(max_uri_length, max_header_bytes).layer(inner)
    }

    /// A shortcut for [`RequestLimitsLayer::new`].
    pub fn layer(max_uri_length: usize, max_header_bytes: usize) -> RequestLimitsLayer {
        RequestLimitsLayer::new(max_uri_length, max_header_bytes)
    }

    inner_service_accessors!();
}

fn header_bytes<B>(req: &Request<B>) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

impl<S, B> Service<Request<B>> for RequestLimits<S>
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
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > self.limits.max_uri_length {
            return ResponseFuture::refused(
                S3Error::new(
                    StatusCode::URI_TOO_LONG,
                    "KeyTooLongError",
                    format!(
                        "The request target is longer than {} bytes.",
                        self.limits.max_uri_length
                    ),
                )
                .with_request_id_of(req.headers())
                .into_response(),
            );
        }
        if header_bytes(&req) > self.limits.max_header_bytes {
            return ResponseFuture::refused(
                S3Error::new(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "RequestHeaderSectionTooLarge",
                    format!("The request headers exceed {} bytes.", self.limits.max_header_bytes),
                )
                .with_request_id_of(req.headers())
                .into_response(),
            );
        }
        ResponseFuture::inner(self.inner.call(req), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn ok() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone {
        service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) })
    }

    #[tokio::test]
    async fn long_targets_and_large_headers_are_refused() {
        let svc = RequestLimits::new(ok(), 32, 200);
        let res = svc
            .clone()
            .oneshot(Request::get("/short").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);

        let long = format!("/{}", "k".repeat(40));
        let res = svc
            .clone()
            .oneshot(Request::get(long).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::URI_TOO_LONG);

        let req = Request::get("/a")
            .header("x-big", "v".repeat(300))
            .body(Body::empty())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
