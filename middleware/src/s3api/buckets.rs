//! [`ListBuckets`]: `GET /` with no bucket in the path or host, answered
//! with the buckets the caller may read, so `aws s3 ls`, `rclone lsd`,
//! `s3cmd ls` and the bucket pickers of GUI clients work.
//!
//! A bucket is listed either for everyone ([`ListBuckets::bucket`]) or
//! behind a guard ([`ListBuckets::guarded`]): the same authentication layer
//! the bucket's objects sit behind, wrapped around [`Admit`]. The listing
//! sends a copy of the request through each guard and lists the bucket only
//! if the guard let it reach [`Admit`], so the rules are the bucket's own
//! (SigV4 keys, JWT claims, a JWKS fetched on first use) and no bucket name
//! is shown to a caller who could not read it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::error::{escape_into, S3Error};
use crate::object::REQUEST_ID;

/// The most buckets one page holds (S3's `max-buckets` limit).
pub const MAX_BUCKETS: usize = 10_000;

/// The service a guard of [`ListBuckets::guarded`] wraps: a request that
/// reaches it was admitted by the guard (answered `200`, with an extension
/// that says so, so that no answer the guard makes itself is taken for it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Admit;

/// The response extension [`Admit`] sets.
#[derive(Clone, Copy, Debug)]
struct Admitted;

impl<B> Service<Request<B>> for Admit {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let mut res = Response::new(Body::empty());
        res.extensions_mut().insert(Admitted);
        std::future::ready(Ok(res))
    }
}

type Guard = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

#[derive(Clone)]
struct Listed {
    name: Arc<str>,
    guard: Option<Guard>,
}

/// `ListBuckets` (see the [module](self) docs): mount it on a
/// [`PrefixRouter`](crate::routing::PrefixRouter) with
/// [`with_list_buckets`](crate::routing::PrefixRouter::with_list_buckets).
///
/// Answers `GET /` and `HEAD /` with `ListAllMyBucketsResult`, names in
/// order, honouring `prefix`, `max-buckets` (1 to [`MAX_BUCKETS`]) and
/// `continuation-token`. When no bucket is visible and a guard refused the
/// request, the answer is that guard's refusal (a wrong SigV4 secret gets
/// `403 SignatureDoesNotMatch`, not an empty list). A guard's `400` (the
/// credentials cannot be read: Signature Version 2, a malformed signature)
/// is the answer even when other buckets are visible.
///
/// ```
/// use yatagarasu_middleware::routing::PrefixRouter;
/// use yatagarasu_middleware::s3api::ListBuckets;
///
/// let buckets = ListBuckets::new().bucket("public-data");
/// let router = PrefixRouter::new().with_list_buckets(buckets);
/// # let _ = router;
/// ```
#[derive(Clone)]
pub struct ListBuckets {
    // One `Arc`: a router holding it clones it with every request.
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    buckets: Vec<Listed>,
    created: Arc<str>,
    owner: Arc<str>,
}

impl std::fmt::Debug for ListBuckets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.inner.buckets.iter().map(|b| (&b.name, b.guard.is_some())))
            .finish()
    }
}

impl Default for ListBuckets {
    fn default() -> Self {
        Self::new()
    }
}

impl ListBuckets {
    /// No bucket yet; every bucket's `CreationDate` is now (see
    /// [`with_creation_date`](Self::with_creation_date)).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                buckets: Vec::new(),
                created: humantime::format_rfc3339_millis(SystemTime::now()).to_string().into(),
                owner: "yatagarasu".into(),
            }),
        }
    }

    /// The `CreationDate` given for every bucket (the proxy knows no
    /// other: its buckets are mounts, not the replicas' buckets).
    pub fn with_creation_date(mut self, when: SystemTime) -> Self {
        Arc::make_mut(&mut self.inner).created = humantime::format_rfc3339_millis(when).to_string().into();
        self
    }

    /// The `<Owner>`'s `ID` and `DisplayName` (default `yatagarasu`).
    pub fn with_owner(mut self, owner: impl Into<Arc<str>>) -> Self {
        Arc::make_mut(&mut self.inner).owner = owner.into();
        self
    }

    /// Lists `name` for every caller.
    pub fn bucket(self, name: impl Into<Arc<str>>) -> Self {
        self.push(name.into(), None)
    }

    /// Lists `name` to the callers `guard` admits: `guard` is the layer the
    /// bucket's objects sit behind (an [`AuthLayer`](crate::auth::AuthLayer),
    /// a [`SigV4Layer`](crate::auth::sigv4::SigV4Layer)...), here wrapped
    /// around [`Admit`]. Give it its own stats if its outcomes are counted:
    /// every listing sends each guard a request.
    pub fn guarded<L>(self, name: impl Into<Arc<str>>, guard: L) -> Self
    where
        L: Layer<Admit>,
        L::Service:
            Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
    {
        let guard = BoxCloneSyncService::new(guard.layer(Admit));
        self.push(name.into(), Some(guard))
    }

    fn push(mut self, name: Arc<str>, guard: Option<Guard>) -> Self {
        let buckets = &mut Arc::make_mut(&mut self.inner).buckets;
        buckets.retain(|b| b.name != name);
        buckets.push(Listed { name, guard });
        buckets.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    /// The names listed, guarded or not, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.buckets.iter().map(|b| &*b.name)
    }
}

/// `prefix`, `max-buckets` and `continuation-token` of a `ListBuckets` call.
#[derive(Debug, Default, PartialEq)]
struct Params {
    prefix: Option<String>,
    max: Option<usize>,
    after: Option<String>,
}

#[allow(clippy::result_large_err)] // mapped to a response at once
fn parse(query: Option<&str>) -> Result<Params, S3Error> {
    let invalid = |m: &'static str| S3Error::new(StatusCode::BAD_REQUEST, "InvalidArgument", m);
    let mut p = Params::default();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*k {
            "prefix" => p.prefix = Some(v.into_owned()),
            "continuation-token" => p.after = Some(v.into_owned()),
            "max-buckets" => {
                p.max = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_BUCKETS).contains(n))
                        .ok_or_else(|| invalid("max-buckets must be an integer from 1 to 10000."))?,
                )
            }
            _ => {}
        }
    }
    Ok(p)
}

/// A copy of `req` for a guard: same method, URI, version and headers
/// (credentials included), no body.
fn probe(req: &Parts) -> Request<Body> {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = Method::GET;
    *copy.uri_mut() = req.uri.clone();
    *copy.version_mut() = req.version;
    *copy.headers_mut() = req.headers.clone();
    if let Some(original) = req.extensions.get::<crate::routing::OriginalUri>() {
        copy.extensions_mut().insert(original.clone());
    }
    copy
}

impl ListBuckets {
    async fn answer(self, req: Request<Body>) -> Response<Body> {
        // The body (empty on a `GET /`) is not `Sync`: only the head is kept.
        let (req, _) = req.into_parts();
        let head = req.method == Method::HEAD;
        let request_id = req.headers.get(&REQUEST_ID).cloned();
        let mut res = match parse(req.uri.query()) {
            Err(e) => e.with_request_id_of(&req.headers).into_response(),
            Ok(params) => self.list(&req, &params).await,
        };
        if head {
            *res.body_mut() = Body::empty();
        }
        if let Some(id) = request_id {
            res.headers_mut().entry(&REQUEST_ID).or_insert(id);
        }
        res
    }

    async fn list(&self, req: &Parts, params: &Params) -> Response<Body> {
        let mut visible: Vec<&str> = Vec::new();
        let mut refusal = None;
        let mut more = false;
        let max = params.max.unwrap_or(MAX_BUCKETS);
        for b in self.inner.buckets.iter() {
            if params.prefix.as_deref().is_some_and(|p| !b.name.starts_with(p))
                || params.after.as_deref().is_some_and(|a| &*b.name <= a)
            {
                continue;
            }
            if let Some(guard) = &b.guard {
                let res = match guard.clone().oneshot(probe(req)).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                if res.extensions().get::<Admitted>().is_none() {
                    // Credentials no guard can read (Signature Version 2, a
                    // malformed SigV4 header or presigned URL: 400) are
                    // refused whatever else is visible, as S3 refuses them
                    // before listing anything. Shown the open buckets alone,
                    // a client signing with SigV2 (s3cmd's `signature_v2 =
                    // True`) would never switch to SigV4, and would miss the
                    // buckets its key opens.
                    if res.status() == StatusCode::BAD_REQUEST {
                        return res;
                    }
                    refusal.get_or_insert(res);
                    continue;
                }
            }
            if visible.len() == max {
                more = true;
                break;
            }
            visible.push(&b.name);
        }
        if visible.is_empty() {
            if let Some(refusal) = refusal {
                return refusal;
            }
        }
        let mut xml = String::with_capacity(256 + visible.len() * 96);
        xml.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
        xml.push_str(r#"<ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>"#);
        escape_into(&mut xml, &self.inner.owner);
        xml.push_str("</ID><DisplayName>");
        escape_into(&mut xml, &self.inner.owner);
        xml.push_str("</DisplayName></Owner><Buckets>");
        for name in &visible {
            xml.push_str("<Bucket><Name>");
            escape_into(&mut xml, name);
            xml.push_str("</Name><CreationDate>");
            xml.push_str(&self.inner.created);
            xml.push_str("</CreationDate></Bucket>");
        }
        xml.push_str("</Buckets>");
        if let (true, Some(last)) = (more, visible.last()) {
            xml.push_str("<ContinuationToken>");
            escape_into(&mut xml, last);
            xml.push_str("</ContinuationToken>");
        }
        if let Some(prefix) = &params.prefix {
            xml.push_str("<Prefix>");
            escape_into(&mut xml, prefix);
            xml.push_str("</Prefix>");
        }
        xml.push_str("</ListAllMyBucketsResult>");
        let mut res = Response::new(Body::from(xml));
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        res
    }
}

impl Service<Request<Body>> for ListBuckets {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.answer(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Admits requests carrying `x-key: <key>`; answers 403 otherwise.
    #[derive(Clone)]
    struct KeyGuard(&'static str);

    #[derive(Clone)]
    struct KeyGuarded<S>(&'static str, S);

    impl<S> Layer<S> for KeyGuard {
        type Service = KeyGuarded<S>;
        fn layer(&self, inner: S) -> KeyGuarded<S> {
            KeyGuarded(self.0, inner)
        }
    }

    impl<S> Service<Request<Body>> for KeyGuarded<S>
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;
        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: Request<Body>) -> Self::Future {
            if req.headers().get("x-key").is_some_and(|v| v == self.0) {
                Box::pin(self.1.clone().oneshot(req))
            } else if req.headers().get("x-key").is_some_and(|v| v == "v2") {
                let res = S3Error::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequest",
                    "Please use AWS4-HMAC-SHA256.",
                )
                .into_response();
                Box::pin(std::future::ready(Ok(res)))
            } else {
                let res = S3Error::new(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied").into_response();
                Box::pin(std::future::ready(Ok(res)))
            }
        }
    }

    async fn call(list: &ListBuckets, uri: &str, key: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(uri);
        if let Some(k) = key {
            req = req.header("x-key", k);
        }
        let res = list.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn names(xml: &str) -> Vec<&str> {
        xml.split("<Name>")
            .skip(1)
            .map(|s| s.split_once("</Name>").unwrap().0)
            .collect()
    }

    fn sample() -> ListBuckets {
        ListBuckets::new()
            .with_creation_date(std::time::UNIX_EPOCH)
            .bucket("public")
            .guarded("alpha", KeyGuard("a"))
            .guarded("beta", KeyGuard("b"))
            .bucket("assets")
    }

    #[tokio::test]
    async fn lists_public_buckets_and_the_guarded_ones_the_caller_passes() {
        let list = sample();
        let (status, xml) = call(&list, "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&xml), ["assets", "public"]);
        assert!(
            xml.contains("<CreationDate>1970-01-01T00:00:00.000Z</CreationDate>"),
            "{xml}"
        );
        assert!(xml.contains("<Owner><ID>yatagarasu</ID>"), "{xml}");
        assert_eq!(
            names(&call(&list, "/", Some("a")).await.1),
            ["alpha", "assets", "public"]
        );
        assert_eq!(
            names(&call(&list, "/", Some("b")).await.1),
            ["assets", "beta", "public"]
        );
        assert_eq!(list.names().collect::<Vec<_>>(), ["alpha", "assets", "beta", "public"]);
    }

    #[tokio::test]
    async fn with_nothing_visible_a_guard_refusal_is_the_answer() {
        let list = ListBuckets::new().guarded("alpha", KeyGuard("a"));
        let (status, xml) = call(&list, "/", Some("wrong")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(xml.contains("AccessDenied"), "{xml}");
        // Nothing configured at all: an empty list, not an error.
        let (status, xml) = call(&ListBuckets::new(), "/", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(xml.contains("<Buckets></Buckets>"), "{xml}");
    }

    #[tokio::test]
    async fn credentials_no_guard_can_read_are_refused_even_beside_open_buckets() {
        // A guard's 400 (SigV2 here) is the answer, not the open buckets
        // alone: the client learns to sign another way.
        let (status, xml) = call(&sample(), "/", Some("v2")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(xml.contains("InvalidRequest"), "{xml}");
        // A 403 beside open buckets still lists them.
        let (status, xml) = call(&sample(), "/", Some("wrong")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&xml), ["assets", "public"]);
    }

    #[tokio::test]
    async fn prefix_pages_and_bad_arguments() {
        let list = sample();
        let (_, xml) = call(&list, "/?prefix=a", Some("a")).await;
        assert_eq!(names(&xml), ["alpha", "assets"]);
        assert!(xml.contains("<Prefix>a</Prefix>"), "{xml}");
        let (_, page) = call(&list, "/?max-buckets=1", None).await;
        assert_eq!(names(&page), ["assets"]);
        assert!(page.contains("<ContinuationToken>assets</ContinuationToken>"), "{page}");
        let (_, page) = call(&list, "/?max-buckets=1&continuation-token=assets", None).await;
        assert_eq!(names(&page), ["public"]);
        assert!(!page.contains("ContinuationToken"), "{page}");
        for bad in ["0", "10001", "x", "-1"] {
            let (status, xml) = call(&list, &format!("/?max-buckets={bad}"), None).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(xml.contains("InvalidArgument"), "{xml}");
        }
    }

    #[tokio::test]
    async fn head_has_no_body_and_names_are_escaped() {
        let list = ListBuckets::new().bucket("a&b").with_owner("o<x>");
        let (_, xml) = call(&list, "/", None).await;
        assert!(xml.contains("<Name>a&amp;b</Name>"), "{xml}");
        assert!(xml.contains("<ID>o&lt;x&gt;</ID>"), "{xml}");
        let res = list
            .clone()
            .oneshot(Request::head("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.into_body().collect().await.unwrap().to_bytes().is_empty());
    }
}
