//! The edge every request crosses first, whatever config is live: request
//! ids, the access log and metrics, request limits, rate limiting and load
//! shedding.
//!
//! Its own answers (414/431, 429, 503) to a browser's request for a bucket
//! with a `cors` block carry that bucket's CORS headers, so the app can read
//! them; a CORS preflight to such a bucket is answered by the bucket's CORS
//! layer from config and is neither rate-limited nor shed (a browser reads
//! any refused preflight as a network error, whatever its headers).
//!
//! [`Edge`] is one service with a named future (no `from_fn`, no boxed
//! per-request stack): a request costs one `Arc` clone of the edge and one
//! clone of the (concrete) inner stack.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Version};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::util::{Either, Oneshot};
use tower::{Layer, Service, ServiceExt};
use yatagarasu_middleware::error::S3Error;
use yatagarasu_middleware::object::REQUEST_ID;
use yatagarasu_middleware::protect::{
    LoadShed, LoadShedLayer, RateLimit, RateLimitLayer, RequestLimits, RequestLimitsLayer,
};
use yatagarasu_middleware::routing::MatchedBucket;

use crate::access_log::{self, AccessStart};
use crate::app::CorsAnswer;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// `/health` and `/ready`: request limits only.
type Open<S> = RequestLimits<S>;
/// Everything else: request limits, the rate limit when one is configured,
/// load shedding.
type Protected<S> = RequestLimits<Either<RateLimit<LoadShed<S>>, LoadShed<S>>>;

/// What the edge asks of the app behind it: the bucket a request goes to,
/// for its access line and metrics, and that bucket's CORS.
pub trait Buckets {
    /// The bucket `req` is routed to, and its CORS for a browser's request.
    fn matched(&self, req: &Request<Body>) -> Matched;
}

/// The answer of [`Buckets::matched`].
#[derive(Debug, Default)]
pub struct Matched {
    /// The bucket and the S3 call it makes (`None`: `NoSuchBucket`).
    pub bucket: Option<MatchedBucket>,
    /// When the bucket has a `cors` block and the request an `Origin`: the
    /// headers the edge's own answers to it carry.
    pub cors: Option<CorsAnswer>,
}

/// The edge in front of `inner` (the live app): request ids, the access log
/// and metrics, request limits (414/431), then, except for `/health` and
/// `/ready`, rate limiting (429) and load shedding (503).
pub fn edge<S>(inner: S, metrics: Arc<Metrics>, server: &ServerConfig) -> Edge<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Buckets + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    let rl = &server.rate_limit;
    let rate_limit = (rl.enabled || rl.per_ip.enabled).then(|| {
        let mut layer = RateLimitLayer::new();
        if rl.enabled {
            layer = layer.with_global(rl.requests_per_second, rl.burst);
        }
        if rl.per_ip.enabled {
            layer = layer
                .with_per_ip(rl.per_ip.requests_per_second, rl.per_ip.burst)
                .with_trusted_proxies(rl.per_ip.trusted_networks().unwrap_or_default());
        }
        layer
    });
    let limits = RequestLimitsLayer::new(server.max_uri_length, server.max_header_bytes);
    let shed = LoadShedLayer::new(server.max_concurrent_requests).layer(inner.clone());
    let protected = match rate_limit {
        Some(layer) => Either::Left(layer.layer(shed)),
        None => Either::Right(shed),
    };
    Edge {
        shared: Arc::new(Shared {
            buckets: inner.clone(),
            open: limits.layer(inner),
            protected: limits.layer(protected),
            metrics,
        }),
    }
}

/// The service of [`edge`]; clones share everything.
pub struct Edge<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    /// The app, asked for the bucket of each request.
    buckets: S,
    open: Open<S>,
    protected: Protected<S>,
    metrics: Arc<Metrics>,
}

impl<S> Clone for Edge<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Edge<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Buckets + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Every inner layer is always ready (limits answer in `call`).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let id = set_request_id(&mut req);
        let mut log = access_log::begin(&self.shared.metrics, &req, &id);
        let mut cors = None;
        let state = match conformance(&req, &id) {
            Some(res) => State::Answered { res: Some(res) },
            None => match req.uri().path() {
                "/health" | "/ready" => State::Open {
                    fut: self.shared.open.clone().oneshot(req),
                },
                _ => {
                    // Asked here rather than carried on the response: a
                    // response extension allocates a map (issue 13). A
                    // request shed or rate-limited counts for its bucket too.
                    let matched = self.shared.buckets.matched(&req);
                    log.matched = matched.bucket;
                    cors = matched.cors;
                    if cors.is_some() && is_preflight(&req) {
                        // The bucket's CORS layer answers it from config.
                        State::Open {
                            fut: self.shared.open.clone().oneshot(req),
                        }
                    } else {
                        State::Protected {
                            fut: self.shared.protected.clone().oneshot(req),
                        }
                    }
                }
            },
        };
        EdgeFuture {
            state,
            log: Some(log),
            id: Some(id),
            cors,
        }
    }
}

pin_project! {
    /// The response future of [`Edge`]. Dropped before its answer (the
    /// client closed its connection or reset its HTTP/2 stream), it still
    /// writes the access line and counts the request: status `499`.
    pub struct EdgeFuture<S>
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        #[pin]
        state: State<S>,
        log: Option<AccessStart>,
        id: Option<HeaderValue>,
        cors: Option<CorsAnswer>,
    }

    impl<S> PinnedDrop for EdgeFuture<S>
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(log) = this.project().log.take() {
                access_log::abandoned(log);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<Request<Body>, Response = Response, Error = Infallible>,
    {
        Answered { res: Option<Response> },
        Open { #[pin] fut: Oneshot<Open<S>, Request<Body>> },
        Protected { #[pin] fut: Oneshot<Protected<S>, Request<Body>> },
    }
}

impl<S> Future for EdgeFuture<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = {
            // The inner services run inside the request span (a no-op span
            // when tracing is off), as `Instrumented` would do.
            let _entered = this.log.as_ref().map(|log| log.span.enter());
            match this.state.project() {
                StateProj::Answered { res } => res.take().expect("polled after completion"),
                StateProj::Open { fut } => ready!(fut.poll(cx))?,
                StateProj::Protected { fut } => ready!(fut.poll(cx))?,
            }
        };
        // The request id goes back to the client unless the service set one.
        if let Some(id) = this.id.take() {
            res.headers_mut().entry(REQUEST_ID).or_insert(id);
        }
        // The bucket's CORS layer sets `Vary` on every answer it passes;
        // without one, the answer is the edge's own (429, 503, 414, 431).
        if let Some(cors) = this.cors.take() {
            if !res.headers().contains_key(header::VARY) {
                cors.add_to(res.headers_mut());
            }
        }
        let log = this.log.take().expect("polled after completion");
        Poll::Ready(Ok(access_log::finish(log, res)))
    }
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

/// The request's id: the client's when it is one we would use (exactly one
/// acceptable `X-Request-Id`), else a new UUID; set on the request either way.
fn set_request_id(req: &mut Request<Body>) -> HeaderValue {
    let ids = req.headers().get_all(&REQUEST_ID);
    let mut it = ids.iter();
    if let (Some(id), None) = (it.next(), it.next()) {
        if acceptable_request_id(id.as_bytes()) {
            return id.clone();
        }
    }
    // A UUID v4, written on the stack and moved into a shared buffer: one
    // allocation, and the clones (access log, response header) count
    // references instead of copying (a `Vec`-backed value would allocate
    // again on its first clone).
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let id = HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    req.headers_mut().insert(REQUEST_ID, id.clone());
    id
}

/// A CORS preflight (Fetch: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`).
fn is_preflight(req: &Request<Body>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && req.headers().contains_key(header::ORIGIN)
}

/// RFC 9112/9110 edges: an HTTP/1.1 request with no `Host` or with two is
/// 400; `CONNECT` and `OPTIONS *` are 405 (this proxy serves objects only).
fn conformance(req: &Request<Body>, id: &HeaderValue) -> Option<Response> {
    let id = || id.to_str().unwrap_or_default().to_owned();
    if req.method() == Method::CONNECT || req.uri() == "*" {
        return Some(S3Error::method_not_allowed().with_request_id(id()).into_response());
    }
    if req.version() == Version::HTTP_11 {
        let hosts = req.headers().get_all(header::HOST);
        let mut it = hosts.iter();
        if !matches!((it.next(), it.next()), (Some(_), None)) {
            return Some(
                S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "An HTTP/1.1 request must carry exactly one Host header.",
                )
                .with_request_id(id())
                .into_response(),
            );
        }
    }
    None
}

/// The edge in front of the live app, as the server runs it.
pub type EdgeService = Edge<crate::reload::LiveService>;
