//! Protection of the proxy itself, for the client-facing edge of an axum app:
//!
//! - [`RequestLimitsLayer`]: refuses a request target longer than a limit
//!   (`414 URI Too Long`) or headers larger than a limit
//!   (`431 Request Header Fields Too Large`);
//! - [`RateLimitLayer`]: a token bucket for the whole process and/or one per
//!   client IP, an IPv6 client's being its `/64` (`429 Too Many Requests`, S3
//!   code `SlowDown`, `Retry-After`);
//! - [`LoadShedLayer`]: at most N requests in flight, counted until their
//!   response body ends; the next one is answered at once with
//!   `503 Service Unavailable` (`SlowDown`, `Retry-After`) instead of queueing
//!   without bound.
//!
//! Every layer answers with an S3-style XML response and keeps the inner
//! error type, so they drop into any `Router::layer` without
//! `HandleErrorLayer`. They work on `Response<axum::body::Body>` services.
//!
//! The per-IP rate limit keys on the peer address, which axum records only
//! when the app is served with `into_make_service_with_connect_info`; served
//! with plain `axum::serve(listener, app)`, requests count against the global
//! bucket alone and `with_per_ip` limits nothing.
//!
//! ```
//! use std::net::SocketAddr;
//! use axum::{routing::get, Router};
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::protect::{LoadShedLayer, RateLimitLayer, RequestLimitsLayer};
//!
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RequestLimitsLayer::new(8 * 1024, 64 * 1024))
//!         .layer(RateLimitLayer::new().with_global(1000, 2000).with_per_ip(50, 100))
//!         .layer(LoadShedLayer::new(10_000)),
//! );
//! # async fn serve(app: Router) -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! # let _ = app;
//! ```

mod future;
mod limits;
mod rate_limit;
mod shed;

pub use future::ResponseFuture;
pub use limits::{RequestLimits, RequestLimitsLayer};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use shed::{LoadShed, LoadShedLayer};

use std::time::Duration;

/// Seconds for `Retry-After`: the wait rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use http::{Request, Response, StatusCode};
    use tower::{service_fn, Layer, Service, ServiceExt};

    use super::*;

    fn ok() -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone {
        service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) })
    }

    fn req(uri: &str, id: Option<&str>) -> Request<Body> {
        let mut b = Request::get(uri);
        if let Some(id) = id {
            b = b.header("x-request-id", id);
        }
        b.body(Body::empty()).unwrap()
    }

    async fn request_id_of(res: Response<Body>, status: StatusCode) -> String {
        assert_eq!(res.status(), status);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let xml = String::from_utf8(body.to_vec()).unwrap();
        let start = xml.find("<RequestId>").expect("a RequestId element") + "<RequestId>".len();
        let end = xml.find("</RequestId>").unwrap();
        xml[start..end].to_owned()
    }

    #[tokio::test]
    async fn refusals_name_the_request() {
        let limits = RequestLimitsLayer::new(8, 1 << 16).layer(ok());
        let res = limits
            .clone()
            .oneshot(req("/a-long-target", Some("rid-414")))
            .await
            .unwrap();
        assert_eq!(request_id_of(res, StatusCode::URI_TOO_LONG).await, "rid-414");
        // Without an id from a layer in front, one is minted.
        let res = limits.oneshot(req("/a-long-target", None)).await.unwrap();
        assert!(!request_id_of(res, StatusCode::URI_TOO_LONG).await.is_empty());

        let rate = RateLimitLayer::new().with_global(1, 1).layer(ok());
        let first = rate.clone().oneshot(req("/", None)).await.unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        let res = rate.oneshot(req("/", Some("rid-429"))).await.unwrap();
        assert_eq!(request_id_of(res, StatusCode::TOO_MANY_REQUESTS).await, "rid-429");

        let shed = LoadShedLayer::new(1).layer(ok());
        let held = shed.clone().oneshot(req("/", None)).await.unwrap();
        let res = shed.oneshot(req("/", Some("rid-503"))).await.unwrap();
        assert_eq!(request_id_of(res, StatusCode::SERVICE_UNAVAILABLE).await, "rid-503");
        drop(held);
    }
}
