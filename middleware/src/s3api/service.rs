use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use rusty_s3::actions::ListObjectsV2;
use tower::{Service, ServiceExt};

use super::listing::{self, ListParams, ListVersion};
use super::operation::{unsupported_object_subresource, S3Operation, UNSUPPORTED_SUBRESOURCES};
use super::token::TokenKey;
use crate::cache::X_CACHE;
use crate::error::{FetchError, S3Error};
use crate::object::{request_id, ObjectRequest, ObjectService, ResponseFuture as ObjectFuture};

/// The largest listing page read from a replica (1,000 keys of 1 KiB plus XML).
const MAX_PAGE_BYTES: usize = 8 << 20;

/// S3's XML namespace.
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// A bucket's S3 API face for SDK clients: bucket-level calls answered here,
/// object reads passed to object services.
///
/// - `GET /` (the bucket's root, after the prefix router): `ListObjectsV2`
///   (`list-type=2`), `GetBucketLocation` (`location`), else `ListObjects` V1.
///   Listings are read from the replicas through `bucket` (the failover,
///   uncached) and answered with S3's XML naming the client-visible bucket;
///   continuation tokens are the proxy's own (see [`TokenKey`]).
/// - `HEAD /`: `HeadBucket`, asked of a replica.
/// - Object reads with `versionId`, `partNumber` or `response-*` parameters go
///   to `direct` (uncached: they vary by more than the key); others to `objects`.
/// - Any other method: 405 `MethodNotAllowed` (the proxy is read-only).
pub struct S3Api<O, U> {
    inner: ObjectService<O>,
    direct: ObjectService<U>,
    bucket: U,
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    region: String,
    tokens: TokenKey,
    listings: Option<ListingCache>,
}

/// The most bytes of rendered listing pages kept per bucket.
const LISTING_CACHE_BYTES: u64 = 32 << 20;

/// Rendered listing pages by every parameter of the call (version, prefix,
/// delimiter, page size, position, owner and encoding flags).
type ListingCache = mini_moka::sync::Cache<(ListVersion, ListParams), CachedPage>;

#[derive(Clone)]
struct CachedPage {
    xml: Bytes,
}

impl<O: Clone, U: Clone> Clone for S3Api<O, U> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            direct: self.direct.clone(),
            bucket: self.bucket.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<O, U> std::fmt::Debug for S3Api<O, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Api")
            .field("bucket", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<O, U: Clone> S3Api<O, U> {
    /// The API of the bucket clients call `name`: object reads go to `objects`
    /// (e.g. the cache in front of the failover), listings and reads that must
    /// not be cached to `uncached` (the failover). Region `us-east-1`, tokens
    /// keyed by [`TokenKey::process`].
    pub fn new(name: impl Into<Arc<str>>, objects: O, uncached: U) -> Self {
        Self {
            inner: ObjectService::new(objects),
            direct: ObjectService::new(uncached.clone()),
            bucket: uncached,
            shared: Arc::new(Shared {
                name: name.into(),
                region: "us-east-1".to_owned(),
                tokens: TokenKey::process(),
                listings: None,
            }),
        }
    }

    fn update(mut self, f: impl FnOnce(&mut Shared)) -> Self {
        let shared = Arc::get_mut(&mut self.shared).expect("configure an S3Api before cloning it");
        f(shared);
        self
    }

    /// The region `GetBucketLocation` answers.
    pub fn with_region(self, region: impl Into<String>) -> Self {
        let region = region.into();
        self.update(|s| s.region = region)
    }

    /// Mints and checks continuation tokens with this key.
    pub fn with_token_key(self, tokens: TokenKey) -> Self {
        self.update(|s| s.tokens = tokens)
    }

    /// Keeps each listing page answered for `ttl` (none when zero, the
    /// default) in memory, keyed by every listing parameter: a page asked
    /// again within `ttl` is answered without a replica. Listings are per
    /// bucket, so once a client passed the bucket's auth (in front of this
    /// service) it gets the same page as any other client.
    pub fn with_listing_cache(self, ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            mini_moka::sync::Cache::builder()
                .max_capacity(LISTING_CACHE_BYTES)
                .weigher(|_: &(ListVersion, ListParams), v: &CachedPage| u32::try_from(v.xml.len()).unwrap_or(u32::MAX))
                .time_to_live(ttl)
                .build()
        });
        self.update(|s| s.listings = cache)
    }

    /// The object service for plain reads.
    pub fn get_ref(&self) -> &ObjectService<O> {
        &self.inner
    }
}

type Obj = ObjectRequest;

impl<O, U> S3Api<O, U> {
    /// 501 `NotImplemented` for an object API the proxy does not serve
    /// (`GET /bucket/key?tagging`...), rather than the object's bytes.
    fn object_api_refused<B>(&self, req: &Request<B>, sub: &str) -> Response<Body> {
        let id = request_id(req.headers())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut res = S3Error::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("The proxy does not serve the '{sub}' object API."),
        )
        .with_resource(format!("/{}{}", self.shared.name, req.uri().path()))
        .with_request_id(id)
        .into_response();
        if req.method() == Method::HEAD {
            *res.body_mut() = Body::empty();
        }
        res
    }
}

impl<O, U, B> Service<Request<B>> for S3Api<O, U>
where
    O: Service<Obj, Response = Response<Body>, Error = FetchError> + Clone,
    U: Service<Obj, Response = Response<Body>, Error = FetchError> + Clone + Send + 'static,
    U::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<O, U>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // As ObjectService: readiness is awaited per request, in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path == "/" || path.is_empty() {
            let id = request_id(req.headers())
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let fut = bucket_call(
                self.bucket.clone(),
                self.shared.clone(),
                req.method().clone(),
                req.uri().query().map(str::to_owned),
                id,
            );
            return ResponseFuture {
                kind: Kind::Bucket { fut },
            };
        }
        if let Some(sub) = unsupported_object_subresource(req.uri().query()) {
            if matches!(*req.method(), Method::GET | Method::HEAD) {
                let fut = Box::pin(std::future::ready(self.object_api_refused(&req, sub)));
                return ResponseFuture {
                    kind: Kind::Bucket { fut },
                };
            }
        }
        if ObjectRequest::query_has_forwarded_params(req.uri().query()) {
            return ResponseFuture {
                kind: Kind::Direct {
                    fut: self.direct.call(req),
                },
            };
        }
        ResponseFuture {
            kind: Kind::Object {
                fut: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// The response future of [`S3Api`]: an object read, or a bucket-level call.
    pub struct ResponseFuture<O, U>
    where
        O: Service<Obj>,
        U: Service<Obj>,
    {
        #[pin]
        kind: Kind<O, U>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<O, U>
    where
        O: Service<Obj>,
        U: Service<Obj>,
    {
        Object { #[pin] fut: ObjectFuture<O> },
        Direct { #[pin] fut: ObjectFuture<U> },
        // Several steps (call, read, parse, render): boxed.
        Bucket { fut: BoxFuture<'static, Response<Body>> },
    }
}

impl<O, U> Future for ResponseFuture<O, U>
where
    O: Service<Obj, Response = Response<Body>, Error = FetchError>,
    U: Service<Obj, Response = Response<Body>, Error = FetchError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Object { fut } => fut.poll(cx),
            KindProj::Direct { fut } => fut.poll(cx),
            KindProj::Bucket { fut } => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

fn bucket_call<U>(
    bucket: U,
    shared: Arc<Shared>,
    method: Method,
    query: Option<String>,
    id: String,
) -> BoxFuture<'static, Response<Body>>
where
    U: Service<Obj, Response = Response<Body>, Error = FetchError> + Send + 'static,
    U::Future: Send + 'static,
{
    Box::pin(async move {
        let resource = format!("/{}", shared.name);
        let query = query.as_deref();
        let result = match S3Operation::classify(&method, "/", query) {
            S3Operation::HeadBucket => head_bucket(bucket, &shared).await,
            S3Operation::GetBucketLocation => Ok(bucket_location(&shared)),
            S3Operation::Unsupported => {
                let sub = UNSUPPORTED_SUBRESOURCES
                    .iter()
                    .find(|s| has_param(query, s))
                    .copied()
                    .unwrap_or_default();
                Err(S3Error::new(
                    StatusCode::NOT_IMPLEMENTED,
                    "NotImplemented",
                    format!("The proxy does not serve the '{sub}' bucket API."),
                ))
            }
            S3Operation::ListObjectsV2 => list(bucket, &shared, ListVersion::V2, query).await,
            S3Operation::ListObjects => list(bucket, &shared, ListVersion::V1, query).await,
            _ => Err(S3Error::method_not_allowed()),
        };
        result.unwrap_or_else(|err| {
            let mut res = err.with_resource(resource).with_request_id(id).into_response();
            if method == Method::HEAD {
                *res.body_mut() = Body::empty();
            }
            res
        })
    })
}

fn xml_response(xml: Bytes) -> Response<Body> {
    let mut res = Response::new(Body::from(xml));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    res
}

fn has_param(query: Option<&str>, name: &str) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).any(|(k, _)| k == name)
}

fn bucket_location(shared: &Shared) -> Response<Body> {
    let xml = if shared.region == "us-east-1" {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_NS}\"/>")
    } else {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_NS}\">{}</LocationConstraint>",
            shared.region
        )
    };
    xml_response(xml.into())
}

async fn list<U>(
    bucket: U,
    shared: &Shared,
    version: ListVersion,
    query: Option<&str>,
) -> Result<Response<Body>, S3Error>
where
    U: Service<Obj, Response = Response<Body>, Error = FetchError>,
{
    let params = ListParams::parse(query)?;
    let upstream = params.upstream(version, &shared.name, &shared.tokens)?;
    let cache_key = (version, params);
    if let Some(page) = shared.listings.as_ref().and_then(|c| c.get(&cache_key)) {
        let mut out = xml_response(page.xml);
        out.headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("HIT-MEMORY"));
        return Ok(out);
    }
    let (version, params) = cache_key;
    let res = call(bucket, upstream).await?;
    let replica = res.headers().get(crate::upstream::REPLICA_HEADER).cloned();
    let body = axum::body::to_bytes(res.into_body(), MAX_PAGE_BYTES)
        .await
        .map_err(|e| {
            tracing::warn!(bucket = %shared.name, error = %e, "listing body failed");
            S3Error::from_fetch_error(&FetchError::Status(StatusCode::BAD_GATEWAY))
        })?;
    let text = String::from_utf8_lossy(&body);
    let page = ListObjectsV2::parse_response(&text).map_err(|e| {
        tracing::warn!(bucket = %shared.name, error = %e, "unreadable listing from the replica");
        S3Error::from_fetch_error(&FetchError::Status(StatusCode::BAD_GATEWAY))
    })?;
    let xml = Bytes::from(listing::render(version, &shared.name, &params, &page, &shared.tokens));
    let mut out = xml_response(xml.clone());
    if let Some(replica) = replica {
        out.headers_mut().insert(crate::upstream::REPLICA_HEADER, replica);
    }
    if let Some(cache) = &shared.listings {
        cache.insert((version, params), CachedPage { xml });
        out.headers_mut().insert(X_CACHE, HeaderValue::from_static("MISS"));
    }
    Ok(out)
}

async fn head_bucket<U>(bucket: U, shared: &Shared) -> Result<Response<Body>, S3Error>
where
    U: Service<Obj, Response = Response<Body>, Error = FetchError>,
{
    let res = call(bucket, ObjectRequest::head_bucket()).await?;
    let mut out = Response::new(Body::empty());
    if let Ok(region) = HeaderValue::from_str(&shared.region) {
        out.headers_mut().insert("x-amz-bucket-region", region);
    }
    if let Some(v) = res.headers().get(crate::upstream::REPLICA_HEADER) {
        out.headers_mut().insert(crate::upstream::REPLICA_HEADER, v.clone());
    }
    Ok(out)
}

/// Calls the failover; non-2xx answers become the client's errors (a missing
/// bucket upstream is `NoSuchBucket`).
async fn call<U>(bucket: U, req: ObjectRequest) -> Result<Response<Body>, S3Error>
where
    U: Service<Obj, Response = Response<Body>, Error = FetchError>,
{
    let res = bucket.oneshot(req).await.map_err(|e| {
        tracing::warn!(error = %e, "bucket request failed");
        S3Error::from_fetch_error(&e)
    })?;
    let status = res.status();
    if status == StatusCode::NOT_FOUND {
        return Err(S3Error::no_such_bucket());
    }
    if !status.is_success() {
        return Err(S3Error::from_upstream_status(status));
    }
    Ok(res)
}
