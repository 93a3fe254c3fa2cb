//! The edge every request crosses first, whatever config is live: request
//! ids, the access log and metrics, request limits, rate limiting and load
//! shedding.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::middleware;
use axum::response::Response;
use axum::Router;
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use yatagarasu_middleware::object::REQUEST_ID;
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
        .layer(middleware::from_fn_with_state(metrics, log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
