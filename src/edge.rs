//! The edge every request crosses first, whatever config is live: request
//! ids, the access log and metrics, request limits, rate limiting and load
//! shedding.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode, Version};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower::util::MapRequestLayer;
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use yatagarasu_middleware::error::S3Error;
use yatagarasu_middleware::object::{request_id, REQUEST_ID};
use yatagarasu_middleware::protect::{LoadShedLayer, RateLimitLayer, RequestLimitsLayer};

use crate::access_log::log_request;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The edge in front of `inner` (the live app): request ids, the access log
/// and metrics, request limits (414/431), then, except for `/health` and
/// `/ready`, rate limiting (429) and load shedding (503).
pub fn edge<S>(inner: S, metrics: Arc<Metrics>, server: &ServerConfig) -> Router
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let mut rate_limit = RateLimitLayer::new();
    let rl = &server.rate_limit;
    if rl.enabled {
        rate_limit = rate_limit.with_global(rl.requests_per_second, rl.burst);
    }
    if rl.per_ip.enabled {
        rate_limit = rate_limit
            .with_per_ip(rl.per_ip.requests_per_second, rl.per_ip.burst)
            .with_trusted_proxies(rl.per_ip.trusted_networks().unwrap_or_default());
    }
    let protected = ServiceBuilder::new()
        .layer(rate_limit)
        .layer(LoadShedLayer::new(server.max_concurrent_requests))
        .service(inner.clone());
    Router::new()
        .route_service("/health", inner.clone())
        .route_service("/ready", inner)
        .fallback_service(protected)
        .layer(RequestLimitsLayer::new(server.max_uri_length, server.max_header_bytes))
        .layer(middleware::from_fn(conformance))
        .layer(middleware::from_fn_with_state(metrics, log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(MapRequestLayer::new(drop_unsafe_request_id))
}

/// The longest inbound `X-Request-Id` kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client's `X-Request-Id` may be used as ours: short, and only
/// letters, digits and `-_.:`, so it cannot forge a log field.
pub fn acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Removes an inbound request id we would not use (a new one is minted).
fn drop_unsafe_request_id(mut req: Request<Body>) -> Request<Body> {
    let ids = req.headers().get_all(&REQUEST_ID);
    let mut it = ids.iter();
    let keep = matches!((it.next(), it.next()), (Some(id), None) if acceptable_request_id(id.as_bytes()));
    if !keep {
        req.headers_mut().remove(&REQUEST_ID);
    }
    req
}

/// RFC 9112/9110 edges: an HTTP/1.1 request with no `Host` or with two is
/// 400; `CONNECT` and `OPTIONS *` are 405 (this proxy serves objects only).
async fn conformance(req: Request<Body>, next: Next) -> Response {
    let id = request_id(req.headers()).unwrap_or_default().to_owned();
    if req.method() == Method::CONNECT || req.uri() == "*" {
        return S3Error::method_not_allowed().with_request_id(id).into_response();
    }
    if req.version() == Version::HTTP_11 && req.headers().get_all(header::HOST).iter().count() != 1 {
        return S3Error::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "An HTTP/1.1 request must carry exactly one Host header.",
        )
        .with_request_id(id)
        .into_response();
    }
    next.run(req).await
}
