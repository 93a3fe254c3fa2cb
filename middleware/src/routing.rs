//! Routing by path prefix: `/assets/logo.png` goes to the bucket mounted at
//! `/assets`, as `/logo.png`; with an S3 domain, also by host name
//! (virtual-hosted style): `Host: assets.s3.example.com` + `/logo.png` goes
//! to the same bucket.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use tower::{Service, ServiceExt};

use crate::error::S3Error;
use crate::s3api::{ListBuckets, S3Operation};

/// The bucket a request was routed to and the S3 call it makes: an
/// extension of the routed request and of its response (unless turned off
/// with [`PrefixRouter::with_matched_bucket_on_requests`] and
/// [`PrefixRouter::with_matched_bucket_on_responses`]), and the answer of
/// [`PrefixRouter::matched`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedBucket {
    /// The bucket's name, as mounted.
    pub name: Arc<str>,
    /// The S3 call, from the method, the path under the prefix and the query.
    pub operation: S3Operation,
}

/// The URI as the client sent it, before the prefix was stripped, as a
/// request extension (SigV4 signs it). [`PrefixRouter`] sets it; in front of
/// axum's own `nest_service`/`nest`, [`OriginalUriLayer`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalUri(pub Uri);

/// Records each request's URI as [`OriginalUri`] (unless a layer in front
/// already did), so that [`SigV4`](crate::auth::SigV4) behind axum's
/// `Router::nest_service` or `Router::nest` verifies the path the client
/// signed, not the one left after axum stripped the prefix (every request
/// would otherwise fail with `SignatureDoesNotMatch`).
///
/// Add it with `Router::layer` on the router that does the nesting, after the
/// `nest_service` call (`Router::layer` wraps the routes added before it): it
/// then wraps each route, nested ones included, outside the prefix stripping.
///
/// ```
/// use axum::Router;
/// use tower::Layer;
/// use yatagarasu_middleware::auth::{SigV4Config, SigV4Layer};
/// use yatagarasu_middleware::object::ObjectService;
/// use yatagarasu_middleware::routing::OriginalUriLayer;
/// # use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
///
/// # fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let replica = S3Upstream::new("s3", s3_bucket(Some(&"http://127.0.0.1:9000".parse()?), "data", "us-east-1")?, reqwest::Client::new());
/// # let sigv4_config = SigV4Config::default();
/// // aws --endpoint-url http://this-app s3 cp s3://data/key -  (path style)
/// let sigv4 = SigV4Layer::from_config(&sigv4_config)?;
/// let app: Router = Router::new()
///     .nest_service("/data", sigv4.layer(ObjectService::new(replica)))
///     .layer(OriginalUriLayer::new());
/// # let _ = app; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginalUriLayer {
    _priv: (),
}

impl OriginalUriLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> tower::Layer<S> for OriginalUriLayer {
    type Service = SetOriginalUri<S>;

    fn layer(&self, inner: S) -> SetOriginalUri<S> {
        SetOriginalUri { inner }
    }
}

/// The service of [`OriginalUriLayer`].
#[derive(Debug, Clone)]
pub struct SetOriginalUri<S> {
    inner: S,
}

impl<S> SetOriginalUri<S> {
    /// A shortcut for [`OriginalUriLayer::new`].
    pub fn layer() -> OriginalUriLayer {
        OriginalUriLayer::new()
    }

    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for SetOriginalUri<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if req.extensions().get::<OriginalUri>().is_none() {
            let uri = req.uri().clone();
            req.extensions_mut().insert(OriginalUri(uri));
        }
        self.inner.call(req)
    }
}

/// A mounted bucket's service, type-erased. Called through a shared
/// reference: each request clones the concrete service inside and boxes one
/// future (a `BoxCloneSyncService` boxes the clone too: issue 13).
trait Route: Send + Sync {
    fn call(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, Infallible>>;
}

/// A mounted bucket: prefix, name, service.
type Mount = (String, Arc<str>, Arc<dyn Route>);

/// [`Route`] for a concrete service.
struct Mounted<S>(S);

impl<S> Route for Mounted<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    fn call(&self, req: Request<Body>) -> BoxFuture<'static, Result<Response<Body>, Infallible>> {
        let mut svc = self.0.clone();
        // Called at once when ready (a bucket's stack always is): the boxed
        // future then holds neither the clone nor the request.
        match svc.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => Box::pin(svc.call(req)),
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => Box::pin(svc.oneshot(req)),
        }
    }
}

/// Why a prefix cannot be mounted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `/` followed by path segments, or holding characters that need encoding.
    #[error("must start with '/', not end with '/', and hold only unreserved path characters")]
    Malformed,
    /// Already mounted.
    #[error("is mounted twice")]
    Duplicate,
}

/// Routes each request to the service mounted at the longest prefix that
/// matches on a `/` boundary (`/assets` matches `/assets/a`, never `/assetsX/a`),
/// strips the prefix from the URI (the query is kept) and records
/// [`MatchedBucket`]. Unmatched paths get a 404 `NoSuchBucket`.
///
/// With [`with_s3_domain`](Self::with_s3_domain), a request whose host is
/// `NAME.<domain>` goes to the bucket mounted at `/NAME`, with its path
/// unchanged (virtual-hosted-style S3 addressing).
///
/// The response of a routed request carries [`MatchedBucket`] (the bucket
/// and the [`S3Operation`] it called) as an extension, for the access log
/// (or the log asks [`matched`](Self::matched) first).
#[derive(Clone, Default)]
pub struct PrefixRouter {
    // Longest prefix first.
    routes: Arc<Vec<Mount>>,
    // `.s3.example.com`: lower case, with its leading dot.
    s3_domain: Option<Arc<str>>,
    // Set [`OriginalUri`] on routed requests (the default).
    skip_original_uri: bool,
    // Set [`MatchedBucket`] on routed requests (the default).
    skip_matched_on_requests: bool,
    // Set [`MatchedBucket`] on the responses of routed requests (the default).
    skip_matched_on_responses: bool,
    // `GET /` with no bucket: `ListBuckets`.
    list_buckets: Option<ListBuckets>,
}

impl std::fmt::Debug for PrefixRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.routes.iter().map(|(p, n, _)| (p, n)))
            .finish()
    }
}

thread_local! {
    /// The bucket name of a `ListBuckets` call (`-`, as the log writes a
    /// request of no bucket), shared so a call allocates none.
    static NO_BUCKET: Arc<str> = Arc::from("-");
}

/// Checks that a prefix can be mounted: `/` alone, or `/seg[/seg...]` with
/// unreserved characters, no empty, `.` or `..` segment and no trailing `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), PrefixError> {
    if prefix == "/" {
        return Ok(());
    }
    let rest = prefix.strip_prefix('/').ok_or(PrefixError::Malformed)?;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c);
    for seg in rest.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." || !seg.chars().all(ok_char) {
            return Err(PrefixError::Malformed);
        }
    }
    Ok(())
}

/// Whether `path` falls under `prefix` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl PrefixRouter {
    /// An empty router (everything is `NoSuchBucket`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Also routes virtual-hosted-style requests: host `NAME.domain` (any
    /// port) is the bucket mounted at `/NAME`. Path-style requests keep
    /// working, on `domain` itself or any other host.
    pub fn with_s3_domain(mut self, domain: &str) -> Self {
        let domain = domain.trim().trim_matches('.').to_ascii_lowercase();
        self.s3_domain = (!domain.is_empty()).then(|| format!(".{domain}").into());
        self
    }

    /// Whether routed requests carry [`OriginalUri`] (the default: yes). Only
    /// SigV4 verification ([`crate::auth::sigv4`]) reads it; a router with
    /// no such layer behind it can skip the clone and the insert.
    pub fn with_original_uri(mut self, keep: bool) -> Self {
        self.skip_original_uri = !keep;
        self
    }

    /// Whether routed requests carry [`MatchedBucket`] (the default: yes).
    /// A router whose buckets do not read it can skip the insert: the
    /// request then has no extension map to allocate and free (issue 13).
    pub fn with_matched_bucket_on_requests(mut self, on: bool) -> Self {
        self.skip_matched_on_requests = !on;
        self
    }

    /// Whether the responses of routed requests carry [`MatchedBucket`]
    /// (the default: yes). A log around the router that takes it from
    /// [`matched`](Self::matched) can skip the insert: most responses then
    /// have no extension map to allocate and free (issue 13).
    pub fn with_matched_bucket_on_responses(mut self, on: bool) -> Self {
        self.skip_matched_on_responses = !on;
        self
    }

    /// Answers `GET /` and `HEAD /` that name no bucket (path-style, or the
    /// S3 domain itself as host) with `list` (`ListBuckets`: `aws s3 ls`,
    /// `rclone lsd`). Without it they are `NoSuchBucket`; a bucket mounted
    /// at `/` takes them either way.
    pub fn with_list_buckets(mut self, list: ListBuckets) -> Self {
        self.list_buckets = Some(list);
        self
    }

    /// The `ListBuckets` service, when `req` is a `ListBuckets` call.
    fn list_buckets_of(&self, req: &Request<Body>) -> Option<&ListBuckets> {
        let list = self.list_buckets.as_ref()?;
        let root = matches!(req.uri().path(), "/" | "");
        let read = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        (root && read && self.virtual_bucket(req).is_none()).then_some(list)
    }

    /// The bucket label of a virtual-hosted-style request, if its host is
    /// `NAME.<s3 domain>`.
    fn virtual_bucket<'a>(&self, req: &'a Request<Body>) -> Option<&'a str> {
        let domain = self.s3_domain.as_deref()?;
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())?;
        // Drop a port (`[v6]:port` never names a bucket).
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let cut = host.len().checked_sub(domain.len())?;
        if !host.is_char_boundary(cut) || !host[cut..].eq_ignore_ascii_case(domain) {
            return None;
        }
        let label = &host[..cut];
        (!label.is_empty() && !label.contains('.')).then_some(label)
    }

    /// The bucket `req` goes to, and the S3 call it makes: what [`call`]
    /// records as [`MatchedBucket`], without calling (a log around the
    /// router can take it from the request; see
    /// [`with_matched_bucket_on_responses`](Self::with_matched_bucket_on_responses)).
    /// `None` for a request answered `NoSuchBucket`.
    ///
    /// [`call`]: Service::call
    pub fn matched(&self, req: &Request<Body>) -> Option<MatchedBucket> {
        let Some((index, rest)) = self.find(req) else {
            return self.list_buckets_of(req).map(|_| MatchedBucket {
                name: NO_BUCKET.with(Arc::clone),
                operation: S3Operation::ListBuckets,
            });
        };
        Some(MatchedBucket {
            name: self.routes[index].1.clone(),
            operation: S3Operation::classify(req.method(), rest, req.uri().query()),
        })
    }

    /// The route of `req` (its index in `routes`) and the path under its
    /// prefix (`/` for the prefix itself).
    fn find<'r>(&self, req: &'r Request<Body>) -> Option<(usize, &'r str)> {
        let path = req.uri().path();
        let (index, by_host) = match self.virtual_bucket(req) {
            Some(label) => (
                self.routes
                    .iter()
                    .position(|(p, _, _)| p.strip_prefix('/').is_some_and(|p| p.eq_ignore_ascii_case(label)))?,
                true,
            ),
            None => (self.routes.iter().position(|(p, _, _)| prefix_matches(p, path))?, false),
        };
        let prefix = &self.routes[index].0;
        let rest = if prefix == "/" || by_host {
            path
        } else {
            &path[prefix.len()..]
        };
        Some((index, if rest.is_empty() { "/" } else { rest }))
    }

    /// Mounts `service` for bucket `name` at `prefix`.
    pub fn mount<S>(mut self, prefix: &str, name: impl Into<Arc<str>>, service: S) -> Result<Self, PrefixError>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        validate_prefix(prefix)?;
        let routes = Arc::make_mut(&mut self.routes);
        if routes.iter().any(|(p, _, _)| p == prefix) {
            return Err(PrefixError::Duplicate);
        }
        routes.push((prefix.to_owned(), name.into(), Arc::new(Mounted(service))));
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Ok(self)
    }
}

impl Service<Request<Body>> for PrefixRouter {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.route(req)
    }
}

impl PrefixRouter {
    /// Routes `req` as [`call`](Service::call) does, through a shared
    /// reference: a caller holding the router (behind an `Arc`, a reload
    /// swap...) need not clone it per request (issue 13).
    pub fn route(&self, mut req: Request<Body>) -> RouteFuture {
        let Some((index, rest)) = self.find(&req) else {
            if let Some(list) = self.list_buckets_of(&req) {
                let matched = (!self.skip_matched_on_responses).then(|| MatchedBucket {
                    name: NO_BUCKET.with(Arc::clone),
                    operation: S3Operation::ListBuckets,
                });
                return RouteFuture {
                    state: RouteState::Routed {
                        fut: list.clone().call(req),
                        matched,
                    },
                };
            }
            return RouteFuture {
                state: RouteState::Answered {
                    res: Some(
                        S3Error::no_such_bucket()
                            .with_request_id_of(req.headers())
                            .into_response(),
                    ),
                },
            };
        };
        let (_, name, route) = &self.routes[index];
        let operation = S3Operation::classify(req.method(), rest, req.uri().query());
        let original = (!self.skip_original_uri).then(|| OriginalUri(req.uri().clone()));
        // Sized exactly, so that the buffer becomes the URI's bytes without
        // another allocation or copy.
        let query = req.uri().query();
        let mut pq = Vec::with_capacity(rest.len() + query.map_or(0, |q| q.len() + 1));
        pq.extend_from_slice(rest.as_bytes());
        if let Some(q) = query {
            pq.push(b'?');
            pq.extend_from_slice(q.as_bytes());
        }
        if let Ok(uri) = Uri::from_maybe_shared(bytes::Bytes::from(pq)) {
            *req.uri_mut() = uri;
        }
        let matched = MatchedBucket {
            name: name.clone(),
            operation,
        };
        if !self.skip_matched_on_requests {
            req.extensions_mut().insert(matched.clone());
        }
        if let Some(original) = original.filter(|_| req.extensions().get::<OriginalUri>().is_none()) {
            req.extensions_mut().insert(original);
        }
        RouteFuture {
            state: RouteState::Routed {
                fut: route.call(req),
                matched: (!self.skip_matched_on_responses).then_some(matched),
            },
        }
    }
}

pin_project! {
    /// The response future of [`PrefixRouter`]: a `NoSuchBucket` answer, or
    /// the routed bucket's response with [`MatchedBucket`] added to its
    /// extensions (for the request log around the router).
    pub struct RouteFuture {
        #[pin]
        state: RouteState,
    }
}

pin_project! {
    #[project = RouteStateProj]
    enum RouteState {
        Answered { res: Option<Response<Body>> },
        Routed {
            fut: BoxFuture<'static, Result<Response<Body>, Infallible>>,
            matched: Option<MatchedBucket>,
        },
    }
}

impl Future for RouteFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteStateProj::Answered { res } => Poll::Ready(Ok(res.take().expect("polled after completion"))),
            RouteStateProj::Routed { fut, matched } => {
                let mut res = ready!(fut.as_mut().poll(cx))?;
                if let Some(matched) = matched.take() {
                    res.extensions_mut().insert(matched);
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(
        tag: &'static str,
    ) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone + Send + Sync
    {
        tower::service_fn(move |req: Request<Body>| async move {
            let bucket = req.extensions().get::<MatchedBucket>().unwrap().name.clone();
            Ok::<_, Infallible>(Response::new(Body::from(format!("{tag} {bucket} {}", req.uri()))))
        })
    }

    async fn get(router: &PrefixRouter, uri: &str) -> (u16, String) {
        let res = router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn no_such_bucket_names_a_request_id_even_without_one_from_a_layer_in_front() {
        let router = PrefixRouter::new().mount("/assets", "assets", echo("A")).unwrap();
        let (status, body) = get(&router, "/elsewhere/a.txt").await;
        assert_eq!(status, 404);
        assert!(body.contains("<Code>NoSuchBucket</Code>"), "{body}");
        assert!(!body.contains("<RequestId></RequestId>"), "{body}");
    }

    #[tokio::test]
    async fn the_root_lists_buckets_when_asked_and_a_root_mount_still_wins() {
        let list = ListBuckets::new().bucket("assets");
        let router = PrefixRouter::new()
            .mount("/assets", "assets", echo("A"))
            .unwrap()
            .with_s3_domain("s3.example.com");
        // Without a listing: `NoSuchBucket`, as before.
        assert!(get(&router, "/").await.1.contains("NoSuchBucket"));
        let router = router.with_list_buckets(list.clone());
        let (status, body) = get(&router, "/").await;
        assert_eq!(status, 200);
        assert!(body.contains("<Name>assets</Name>"), "{body}");
        let req = |method: http::Method, host: &str| {
            Request::builder()
                .method(method)
                .uri("/")
                .header("host", host)
                .body(Body::empty())
                .unwrap()
        };
        let asked = router.matched(&req(http::Method::GET, "s3.example.com")).unwrap();
        assert_eq!(asked.operation, S3Operation::ListBuckets);
        assert_eq!(&*asked.name, "-");
        let res = router
            .clone()
            .oneshot(req(http::Method::GET, "s3.example.com"))
            .await
            .unwrap();
        assert_eq!(res.extensions().get::<MatchedBucket>(), Some(&asked));
        // A host naming an unknown bucket, and methods other than reads, are no bucket's.
        for (method, host) in [
            (http::Method::GET, "nope.s3.example.com"),
            (http::Method::DELETE, "localhost"),
            (http::Method::PUT, "localhost"),
        ] {
            assert!(router.matched(&req(method.clone(), host)).is_none(), "{method} {host}");
            let res = router.clone().oneshot(req(method, host)).await.unwrap();
            assert_eq!(res.status(), 404);
        }
        // A bucket mounted at `/` takes the root.
        let router = PrefixRouter::new()
            .mount("/", "root", echo("R"))
            .unwrap()
            .with_list_buckets(list);
        assert_eq!(get(&router, "/").await, (200, "R root /".into()));
    }

    #[tokio::test]
    async fn original_uri_is_kept_unless_turned_off() {
        let original = tower::service_fn(|req: Request<Body>| async move {
            let seen = req.extensions().get::<OriginalUri>().map(|o| o.0.to_string());
            Ok::<_, Infallible>(Response::new(Body::from(seen.unwrap_or_else(|| "none".into()))))
        });
        let router = PrefixRouter::new().mount("/assets", "assets", original).unwrap();
        assert_eq!(get(&router, "/assets/a.txt?x=1").await.1, "/assets/a.txt?x=1");
        let router = router.with_original_uri(false);
        assert_eq!(get(&router, "/assets/a.txt?x=1").await.1, "none");
    }

    #[tokio::test]
    async fn matched_bucket_on_requests_can_be_turned_off_and_responses_keep_it() {
        let seen = tower::service_fn(|req: Request<Body>| async move {
            let seen = req.extensions().get::<MatchedBucket>().map(|m| m.name.to_string());
            Ok::<_, Infallible>(Response::new(Body::from(seen.unwrap_or_else(|| "none".into()))))
        });
        let router = PrefixRouter::new().mount("/assets", "assets", seen).unwrap();
        for (router, on_request) in [
            (router.clone(), "assets"),
            (router.with_matched_bucket_on_requests(false), "none"),
        ] {
            let res = router
                .oneshot(Request::head("/assets/a.txt").body(Body::empty()).unwrap())
                .await
                .unwrap();
            let matched = res.extensions().get::<MatchedBucket>().cloned();
            let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
            assert_eq!(&body[..], on_request.as_bytes());
            assert_eq!(
                matched,
                Some(MatchedBucket {
                    name: "assets".into(),
                    operation: S3Operation::HeadObject
                })
            );
        }
    }

    #[tokio::test]
    async fn matched_bucket_on_responses_can_be_turned_off_and_matched_still_answers() {
        let router = PrefixRouter::new()
            .mount("/assets", "assets", echo("A"))
            .unwrap()
            .with_matched_bucket_on_responses(false);
        let req = Request::get("/assets/a.txt?tagging").body(Body::empty()).unwrap();
        assert_eq!(
            router.matched(&req),
            Some(MatchedBucket {
                name: "assets".into(),
                operation: S3Operation::classify(&http::Method::GET, "/a.txt", Some("tagging")),
            })
        );
        let res = router.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200, "the request still carries it: echo reads it");
        assert!(res.extensions().get::<MatchedBucket>().is_none());
        assert_eq!(
            router.matched(&Request::get("/other/a").body(Body::empty()).unwrap()),
            None
        );
    }

    /// A bucket's service not ready at once is called when it becomes ready
    /// (its readiness is waited for, not skipped).
    #[tokio::test]
    async fn a_route_not_ready_yet_is_called_once_ready() {
        #[derive(Clone)]
        struct Slow(Arc<std::sync::atomic::AtomicUsize>);
        impl Service<Request<Body>> for Slow {
            type Response = Response<Body>;
            type Error = Infallible;
            type Future = std::future::Ready<Result<Response<Body>, Infallible>>;
            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                // Pending on the first poll of each clone, then ready.
                if self
                    .0
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    .is_multiple_of(2)
                {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _req: Request<Body>) -> Self::Future {
                std::future::ready(Ok(Response::new(Body::from("called"))))
            }
        }
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let router = PrefixRouter::new().mount("/slow", "slow", Slow(polls.clone())).unwrap();
        assert_eq!(get(&router, "/slow/a").await, (200, "called".into()));
        assert_eq!(polls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn longest_prefix_on_segment_boundary() {
        let router = PrefixRouter::new()
            .mount("/assets", "assets", echo("A"))
            .unwrap()
            .mount("/assets/img", "img", echo("I"))
            .unwrap();
        assert_eq!(get(&router, "/assets/a.txt").await, (200, "A assets /a.txt".into()));
        assert_eq!(
            get(&router, "/assets/img/x.png?t=1").await,
            (200, "I img /x.png?t=1".into())
        );
        assert_eq!(
            get(&router, "/assets/imgX/x.png").await,
            (200, "A assets /imgX/x.png".into())
        );
        assert_eq!(get(&router, "/assetsX/a").await.0, 404);
        assert!(get(&router, "/other/a").await.1.contains("NoSuchBucket"));
    }

    #[tokio::test]
    async fn virtual_hosted_requests_go_to_the_bucket_named_by_the_host() {
        let router = PrefixRouter::new()
            .mount("/data", "ha-data", echo("D"))
            .unwrap()
            .mount("/", "root", echo("R"))
            .unwrap()
            .with_s3_domain("S3.Example.com.");
        let get = |host: &'static str, uri: &'static str| {
            let router = router.clone();
            async move {
                let req = Request::get(uri).header("host", host).body(Body::empty()).unwrap();
                let asked = router.matched(&req);
                let res = router.oneshot(req).await.unwrap();
                // `matched` answers what routing records, without calling.
                assert_eq!(asked.as_ref(), res.extensions().get::<MatchedBucket>(), "{host} {uri}");
                let op = res.extensions().get::<MatchedBucket>().map(|m| m.operation);
                let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
                (String::from_utf8(body.to_vec()).unwrap(), op)
            }
        };
        assert_eq!(
            get("data.s3.example.com:8080", "/a/b.txt").await,
            ("D ha-data /a/b.txt".into(), Some(S3Operation::GetObject))
        );
        assert_eq!(
            get("DATA.s3.example.com", "/?list-type=2").await,
            ("D ha-data /?list-type=2".into(), Some(S3Operation::ListObjectsV2))
        );
        assert_eq!(
            get("data.s3.example.com", "/data/x").await.0,
            "D ha-data /data/x",
            "the host names the bucket; the path is all key"
        );
        // Path style on the domain itself and on other hosts.
        assert_eq!(get("s3.example.com", "/data/x").await.0, "D ha-data /x");
        assert_eq!(get("127.0.0.1:8080", "/data").await.0, "D ha-data /");
        assert_eq!(get("a.b.s3.example.com", "/data/x").await.0, "D ha-data /x");
        assert!(get("nope.s3.example.com", "/x").await.0.contains("NoSuchBucket"));
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(validate_prefix("/data").is_ok());
        assert!(validate_prefix("/").is_ok());
        for bad in ["data", "/data/", "/a//b", "/a/../b", "/a b", "/a%20", "/a?x"] {
            assert_eq!(validate_prefix(bad), Err(PrefixError::Malformed), "{bad}");
        }
        let dup = PrefixRouter::new()
            .mount("/a", "a", echo("a"))
            .unwrap()
            .mount("/a", "b", echo("b"));
        assert_eq!(dup.err(), Some(PrefixError::Duplicate));
    }
}
