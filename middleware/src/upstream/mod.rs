//! Fetching from one S3 replica: a SigV4 presigned URL made by rusty-s3, sent
//! by a reqwest client (one per event loop: [`UpstreamClients`]) or, when
//! [`UpstreamClients::with_direct_http`] is on, over hyper's HTTP/1
//! connections pooled by the replica (TLS for `https://` with
//! [`UpstreamClients::with_direct_tls`]); the answer streamed back as it
//! arrives.
//!
//! [`S3Upstream`] is an object-level service
//! (`Service<ObjectRequest, Response = http::Response<Body>, Error = FetchError>`):
//! the innermost layer of a replica's stack.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use rusty_s3::{Bucket, BucketError, Credentials, S3Action, UrlStyle};
use smallvec::SmallVec;
use tower::Service;
use url::Url;

use crate::credentials::ReplicaCredentials;
use crate::error::FetchError;
use crate::object::{ObjectMethod, ObjectRequest, Operation};

pub use crate::http::headers::REPLICA_HEADER;
pub use clients::UpstreamClients;
pub use direct::BodyReadTimeout;
pub use future::FetchFuture;

use direct::DirectHttp;
use reuse::Reuse;

mod clients;
mod direct;
mod future;
mod reuse;

/// Response headers passed from S3 to the client (plus every `x-amz-meta-*`).
pub const FORWARDED_RESPONSE_HEADERS: [HeaderName; 11] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_ENCODING,
    header::CONTENT_DISPOSITION,
    header::CONTENT_LANGUAGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
];

/// The most of an upstream error body read to find its `<Code>`.
pub(super) const MAX_ERROR_BODY: usize = 64 * 1024;

/// How long presigned URLs stay valid. They are used at once; a short life
/// limits what a leaked URL is worth.
const PRESIGN_TTL: Duration = Duration::from_secs(60);

/// How long a presigned URL is reused for the same request (same
/// operation, key, query and credentials): signing (rusty-s3's HMAC chain
/// and URL building) was ~10% of the proxy's CPU on a pass-through request
/// (issue 13). A reused URL still has at least 50 s of its 60 s left.
const PRESIGN_REUSE: Duration = Duration::from_secs(10);

/// The slots of each replica's table of presigned URLs kept for reuse.
const PRESIGN_REUSE_SLOTS: usize = 1024;

/// Recently presigned URLs, by request (see `S3Upstream::signed`).
type Presigned = Reuse<Recent>;

/// A presigned URL and the credentials it was signed with.
struct Recent {
    url: Url,
    /// `url`'s path and query: the request target of an HTTP/1 request sent
    /// without reqwest (`None` if `http` cannot hold it; reqwest sends then).
    target: Option<http::Uri>,
    /// The address of the credentials' `Arc` (0: anonymous): keys rotated
    /// since make a new URL.
    credentials: usize,
}

impl Recent {
    fn new(url: Url, credentials: usize) -> Self {
        let target = http::Uri::from_maybe_shared(bytes::Bytes::copy_from_slice(
            url[url::Position::BeforePath..].as_bytes(),
        ))
        .ok();
        Self {
            url,
            target,
            credentials,
        }
    }
}

fn presigned_cache() -> Presigned {
    Reuse::new(PRESIGN_REUSE_SLOTS, PRESIGN_REUSE)
}

/// Writes the key under which `req`'s presigned URL is kept into `key`:
/// length-prefixed parts, so no two requests share a key. Written without
/// `core::fmt` (it runs on every pass-through request).
fn presign_key(key: &mut String, req: &ObjectRequest) {
    key.clear();
    key.push_str(match (req.operation(), req.method()) {
        (Operation::Object, ObjectMethod::Get) => "GetObject ",
        (Operation::Object, ObjectMethod::Head) => "HeadObject ",
        (Operation::ListObjectsV2, _) => "ListObjectsV2 ",
        (Operation::HeadBucket, _) => "HeadBucket ",
    });
    let mut digits = itoa::Buffer::new();
    let mut part = |key: &mut String, text: &str| {
        key.push_str(digits.format(text.len()));
        key.push(':');
        key.push_str(text);
    };
    part(key, req.key());
    for (name, value) in req.query() {
        key.push(' ');
        part(key, name);
        part(key, value);
    }
}

/// Builds the rusty-s3 bucket for an endpoint: path-style for a custom
/// endpoint (MinIO, R2, anything with a port), virtual-host style on AWS
/// (`https://{bucket}.s3.{region}.amazonaws.com`) when no endpoint is given.
pub fn s3_bucket(endpoint: Option<&Url>, bucket: &str, region: &str) -> Result<Bucket, BucketError> {
    match endpoint {
        Some(endpoint) => Bucket::new(endpoint.clone(), UrlStyle::Path, bucket.to_owned(), region.to_owned()),
        None => {
            let aws: Url = format!("https://s3.{region}.amazonaws.com")
                .parse()
                .map_err(|_| BucketError::MissingHost)?;
            // Dotted names break TLS on virtual hosts: AWS documents path style for them.
            let style = if bucket.contains('.') {
                UrlStyle::Path
            } else {
                UrlStyle::VirtualHost
            };
            Bucket::new(aws, style, bucket.to_owned(), region.to_owned())
        }
    }
}

/// One S3 replica: where it is, how to sign for it, how long to wait for it.
///
/// Cloning is cheap (an `Arc`); every clone shares the reqwest clients and so
/// their connection pools.
#[derive(Clone)]
pub struct S3Upstream {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    bucket: Bucket,
    credentials: ReplicaCredentials,
    clients: UpstreamClients,
    /// This replica's own HTTP/1 connections, when `clients` has
    /// [`UpstreamClients::with_direct_http`] on (and, for `https://`, a TLS
    /// config).
    direct: Option<Arc<DirectHttp>>,
    timeout: Duration,
    presigned: Presigned,
    /// The `Host` the presigned URLs are signed for (their authority), sent
    /// with each request: hyper-util would otherwise format it per request
    /// (~2% of a pass-through's instructions; issue 13).
    host: Option<HeaderValue>,
    /// `name` as the `X-Yatagarasu-Replica` value of its responses.
    replica_header: Option<HeaderValue>,
}

/// The `Host` header of requests to `bucket`: its URL's host, and port when
/// not the scheme's default (as hyper-util and SigV4 write it).
fn host_header(bucket: &Bucket) -> Option<HeaderValue> {
    let url = bucket.base_url();
    HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort]).ok()
}

impl std::fmt::Debug for S3Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are left out on purpose.
        f.debug_struct("S3Upstream")
            .field("name", &self.inner.name)
            .field("url", &self.inner.bucket.base_url().as_str())
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

impl S3Upstream {
    /// A replica named `name` (for logs, metrics and `X-Yatagarasu-Replica`)
    /// serving `bucket` through `clients` (a `reqwest::Client`, or one per
    /// event loop), anonymous until
    /// [`with_credentials`](Self::with_credentials), with a 30 s timeout.
    pub fn new(name: impl Into<Arc<str>>, bucket: Bucket, clients: impl Into<UpstreamClients>) -> Self {
        let name: Arc<str> = name.into();
        let clients: UpstreamClients = clients.into();
        let host = host_header(&bucket);
        let direct = match (clients.direct(), &host) {
            (Some(config), Some(_)) => DirectHttp::for_url(bucket.base_url(), clients.lanes(), config).map(Arc::new),
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                replica_header: HeaderValue::from_str(&name).ok(),
                name,
                host,
                bucket,
                credentials: ReplicaCredentials::anonymous(),
                clients,
                direct,
                timeout: Duration::from_secs(30),
                presigned: presigned_cache(),
            }),
        }
    }

    fn update(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|arc| Inner {
            name: arc.name.clone(),
            bucket: arc.bucket.clone(),
            host: arc.host.clone(),
            replica_header: arc.replica_header.clone(),
            credentials: arc.credentials.clone(),
            clients: arc.clients.clone(),
            direct: arc.direct.clone(),
            timeout: arc.timeout,
            presigned: presigned_cache(),
        });
        f(&mut inner);
        Self { inner: Arc::new(inner) }
    }

    /// Signs requests with these credentials.
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        self.with_replica_credentials(ReplicaCredentials::fixed(credentials))
    }

    /// Signs requests with the current keys of `credentials` (fixed,
    /// refreshing or anonymous); while they have none, requests fail with
    /// [`FetchError::Credentials`].
    pub fn with_replica_credentials(self, credentials: ReplicaCredentials) -> Self {
        self.update(|i| i.credentials = credentials)
    }

    /// The replica's credentials.
    pub fn credentials(&self) -> &ReplicaCredentials {
        &self.inner.credentials
    }

    /// Bounds connect plus time to response headers (not the body).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.update(|i| i.timeout = timeout)
    }

    /// The replica's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The header timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The presigned URL for a request (the secret never appears in it); the
    /// request's query parameters are signed into it. Unsigned when the
    /// replica has no usable credentials (see [`try_presign`](Self::try_presign)).
    pub fn presign(&self, req: &ObjectRequest) -> Url {
        let creds = self.inner.credentials.current().ok().flatten();
        self.sign_with(creds.as_deref(), req)
    }

    /// The presigned URL for a request, signed with the current credentials;
    /// an error when they expired or were never obtained.
    pub fn try_presign(&self, req: &ObjectRequest) -> Result<Url, FetchError> {
        let creds = self.inner.credentials.current()?;
        Ok(self.sign_with(creds.as_deref(), req))
    }

    /// [`signed`](Self::signed)'s URL.
    #[cfg(test)]
    fn signed_url(&self, req: &ObjectRequest) -> Result<Url, FetchError> {
        self.signed(req).map(|recent| recent.url.clone())
    }

    /// [`try_presign`](Self::try_presign) with the URL's request target,
    /// reusing the URL presigned for the same request (operation, method,
    /// key, query) with the same credentials in the last [`PRESIGN_REUSE`].
    fn signed(&self, req: &ObjectRequest) -> Result<Arc<Recent>, FetchError> {
        let creds = self.inner.credentials.current()?;
        let id = creds.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize);
        thread_local! {
            /// The key being looked up: built here, allocated only when kept.
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            presign_key(key, req);
            if let Some(recent) = self.inner.presigned.get(key) {
                if recent.credentials == id {
                    return Ok(recent);
                }
            }
            let recent = Arc::new(Recent::new(self.sign_with(creds.as_deref(), req), id));
            self.inner.presigned.insert(key, recent.clone());
            Ok(recent)
        })
    }

    fn sign_with(&self, creds: Option<&Credentials>, req: &ObjectRequest) -> Url {
        fn with_query<'a, A: S3Action<'a>>(mut action: A, req: &'a ObjectRequest) -> Url {
            for (name, value) in req.query() {
                action.query_mut().insert(name.as_str(), value.as_str());
            }
            action.sign(PRESIGN_TTL)
        }
        let bucket = &self.inner.bucket;
        match (req.operation(), req.method()) {
            (Operation::ListObjectsV2, _) => with_query(bucket.list_objects_v2(creds), req),
            (Operation::HeadBucket, _) => with_query(bucket.head_bucket(creds), req),
            (Operation::Object, ObjectMethod::Get) => with_query(bucket.get_object(creds, req.key()), req),
            (Operation::Object, ObjectMethod::Head) => with_query(bucket.head_object(creds, req.key()), req),
        }
    }

    /// Sends a signed `HEAD` of the bucket, or of `key` when given, and
    /// returns how long the answer took. A probe passes only on an answer
    /// that proves the replica can serve: 2xx for the bucket, 2xx or 404 for
    /// a key (the key may be missing; the replica still answered with our
    /// credentials). 401/403/301 are [`FetchError::Rejected`] (a bad key,
    /// expired token or wrong region), and so is a 400 naming the bucket's
    /// region (`x-amz-bucket-region`: signed for another region); any other
    /// status is [`FetchError::Status`]. A probe that met a pooled
    /// connection closed under it by the replica is sent once more.
    pub async fn probe(&self, key: Option<&str>, timeout: Duration) -> Result<Duration, FetchError> {
        let creds = self.inner.credentials.current()?;
        let creds = creds.as_deref();
        let url = match key {
            Some(key) => self.inner.bucket.head_object(creds, key).sign(PRESIGN_TTL),
            None => self.inner.bucket.head_bucket(creds).sign(PRESIGN_TTL),
        };
        let started = Instant::now();
        let client = self.inner.clients.current();
        let send = async {
            match client.head(url.clone()).send().await {
                // The replica closed the pooled connection under the probe
                // (its idle timeout crossed the probe's interval): not its
                // failure. Once more, on another connection.
                Err(e) if direct::closed_under(&e) => client.head(url).send().await,
                sent => sent,
            }
        };
        let res = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| FetchError::Timeout(timeout))?
            .map_err(FetchError::from_reqwest)?;
        let status = res.status();
        // A HEAD answer has no body; its headers may say why it failed.
        let hints = future::Hints::of(res.headers());
        match status {
            s if s.is_success() => Ok(started.elapsed()),
            s if hints.refused(s, hints.code.as_deref()) => Err(FetchError::Rejected {
                status: s,
                code: hints.code,
            }),
            StatusCode::NOT_FOUND if key.is_some() => Ok(started.elapsed()),
            s => Err(FetchError::Status(s)),
        }
    }

    /// Fetches an object: the response headers within the timeout, the body
    /// streamed as it arrives. 5xx and 429 answers are errors (another
    /// replica may serve), and so are the replica's refusals of the proxy
    /// itself ([`FetchError::Rejected`]: 401, 403, 301/307, a 400 with an
    /// authorization code, a `HEAD`'s bodiless 400 naming the bucket's
    /// region, a `404 NoSuchBucket`), logged with the replica's name, the S3 error code and the
    /// region it names (never the body: it may echo the key id), and a 206
    /// whose `Content-Range` is not the range asked for (none, for a request
    /// without `Range` or `partNumber`). Other 2xx, 3xx and 4xx answers are responses.
    pub fn fetch(&self, req: &ObjectRequest) -> FetchFuture {
        let signed = match self.signed(req) {
            Ok(signed) => signed,
            Err(e) => return FetchFuture::failed(e),
        };
        let method = match req.method() {
            ObjectMethod::Get => reqwest::Method::GET,
            ObjectMethod::Head => reqwest::Method::HEAD,
        };
        let mut headers = req.headers().clone();
        if let Some(host) = &self.inner.host {
            headers.insert(header::HOST, host.clone());
        }
        let timeout = self.inner.timeout;
        let asked = future::Asked::of(req);
        if let (Some(direct), Some(target)) = (&self.inner.direct, &signed.target) {
            let mut request = http::Request::new(http_body_util::Empty::new());
            *request.method_mut() = method;
            *request.uri_mut() = target.clone();
            *request.headers_mut() = headers;
            let lane = self.inner.clients.lane();
            return FetchFuture::sending(
                tokio::time::timeout(
                    timeout,
                    future::SendFuture::direct(Box::pin(direct.clone().send(lane, request))),
                ),
                timeout,
                self.inner.name.clone(),
                self.inner.replica_header.clone(),
                asked,
            );
        }
        let mut client = self.inner.clients.current();
        let request = match client.request(method, signed.url.clone()).headers(headers).build() {
            Ok(request) => request,
            Err(e) => return FetchFuture::failed(FetchError::from_reqwest(e)),
        };
        FetchFuture::sending(
            tokio::time::timeout(timeout, future::SendFuture::reqwest(client.call(request))),
            timeout,
            self.inner.name.clone(),
            self.inner.replica_header.clone(),
            asked,
        )
    }
}

impl Service<ObjectRequest> for S3Upstream {
    type Response = Response<Body>;
    type Error = FetchError;
    type Future = FetchFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        // reqwest's pool queues internally; admission is the breaker's and
        // bulkhead's job, in the layers around this one.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ObjectRequest) -> Self::Future {
        self.fetch(&req)
    }
}

/// reqwest's answer as an `http` response (errors without the URL).
pub(super) fn from_reqwest(res: reqwest::Response) -> Response<Body> {
    let res: Response<reqwest::Body> = res.into();
    res.map(|body| Body::new(body.map_err(|e| e.without_url())))
}

/// The replica's answer as the client gets it: status, body,
/// [`keep_forwarded`] headers and the replica's name.
pub(super) fn client_response(res: Response<Body>, replica: Option<&HeaderValue>) -> Response<Body> {
    let (parts, body) = res.into_parts();
    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    let mut headers = parts.headers;
    keep_forwarded(&mut headers);
    if let Some(v) = replica {
        headers.insert(REPLICA_HEADER, v.clone());
    }
    *out.headers_mut() = headers;
    out
}

/// Keeps in `headers` the response headers passed on: the first value of
/// each of [`FORWARDED_RESPONSE_HEADERS`] and every value of each
/// `x-amz-meta-*`. In place, in one pass over the map: a new map with the
/// kept values cloned into it (and the replica's map dropped) cost ~1.8k
/// instructions per pass-through request (issue 13).
fn keep_forwarded(headers: &mut HeaderMap) {
    let mut gone: SmallVec<[HeaderName; 8]> = SmallVec::new();
    let mut first_only: SmallVec<[HeaderName; 2]> = SmallVec::new();
    let mut prev: Option<&HeaderName> = None;
    // `iter` yields the values of one name one after another.
    for (name, _) in headers.iter() {
        let repeat = prev == Some(name);
        prev = Some(name);
        if FORWARDED_RESPONSE_HEADERS.contains(name) {
            if repeat && first_only.last() != Some(name) {
                first_only.push(name.clone());
            }
        } else if !repeat && !name.as_str().starts_with("x-amz-meta-") {
            gone.push(name.clone());
        }
    }
    for name in gone {
        headers.remove(name);
    }
    for name in first_only {
        if let Some(first) = headers.get(&name).cloned() {
            headers.insert(name, first);
        }
    }
}

#[cfg(test)]
mod tests;
