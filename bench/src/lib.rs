//! Fixtures of the hot-path micro-benchmarks, shared by the criterion benches
//! (`benches/hot_path.rs`) and the quick in-binary timing loop (`micro`) of
//! `yatagarasu-bench`.
//!
//! Each fixture is built once; its `run` method is one iteration of the
//! measured operation, through the public API of `yatagarasu-middleware`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use rusty_s3::Credentials;
use tower::{Service, ServiceExt};
use yatagarasu_middleware::auth::{Auth, AuthLayer, JwtConfig};
use yatagarasu_middleware::cache::{Cache, CacheConfig, CacheStore, X_CACHE};
use yatagarasu_middleware::object::{ObjectRequest, ObjectService, REQUEST_ID};
use yatagarasu_middleware::routing::PrefixRouter;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
use yatagarasu_middleware::FetchError;

/// Figures published by upstream Yatagarasu for the same pieces, in ns.
pub const UPSTREAM_ROUTING_NS: f64 = 96.0;
/// Upstream's SigV4 signing figure, in ns.
pub const UPSTREAM_SIGV4_NS: f64 = 5_900.0;
/// Upstream's HS256 JWT verification figure, in ns.
pub const UPSTREAM_JWT_NS: f64 = 1_800.0;
/// Upstream's cache-hit figure, in ns.
pub const UPSTREAM_CACHE_HIT_NS: f64 = 319.0;

/// The request path used by the routing benchmark.
pub const ROUTE_PATH: &str = "/data/images/2024/photo%20001.jpg";

/// The buckets the routing benchmark mounts: (prefix, name).
const MOUNTS: [(&str, &str); 4] = [
    ("/assets", "assets"),
    ("/data", "data"),
    ("/media/video", "video"),
    ("/logs", "logs"),
];

/// Routing as the proxy runs it: a request through `PrefixRouter`'s
/// `Service::call` (longest-prefix match, the prefix stripped from the URI,
/// `MatchedBucket` recorded on the response, as the binary routes), cloned per
/// request as axum's `fallback_service` does, into a mounted bucket service
/// that answers at once.
pub struct Routing {
    /// Buckets answering at once.
    bare: PrefixRouter,
    /// Buckets that are an `ObjectService` (key decoding, `ObjectRequest`
    /// built, response checked) over an object service answering at once.
    object: PrefixRouter,
}

impl Default for Routing {
    fn default() -> Self {
        Self::new()
    }
}

/// A `PrefixRouter` with [`MOUNTS`], each bucket served by `service`.
fn router<S>(service: S) -> PrefixRouter
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    // As the binary sets it up without SigV4 buckets.
    let router = PrefixRouter::new()
        .with_original_uri(false)
        .with_matched_bucket_on_requests(false);
    MOUNTS.iter().fold(router, |router, (prefix, name)| {
        router.mount(prefix, *name, service.clone()).expect("valid prefix")
    })
}

impl Routing {
    /// Two routers over four buckets (`/assets`, `/data`, `/media/video`, `/logs`).
    pub fn new() -> Self {
        let bare = router(tower::service_fn(|_req: Request<Body>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
        }));
        let object = router(ObjectService::new(tower::service_fn(|_req: ObjectRequest| {
            std::future::ready(Ok::<_, FetchError>(Response::new(Body::empty())))
        })));
        Self { bare, object }
    }

    /// A `GET` of [`ROUTE_PATH`] with a request id (the proxy's edge sets one).
    fn request() -> Request<Body> {
        Request::get(black_box(ROUTE_PATH))
            .header(REQUEST_ID, "bench-0000000000000001")
            .body(Body::empty())
            .expect("request")
    }

    fn call(router: &PrefixRouter) -> u16 {
        match router.clone().oneshot(Self::request()).now_or_never() {
            Some(Ok(res)) => res.status().as_u16(),
            Some(Err(never)) => match never {},
            None => 0,
        }
    }

    /// Routes one request to a bucket that answers at once; returns the
    /// status (200).
    pub fn run(&self) -> u16 {
        Self::call(&self.bare)
    }

    /// Routes one request through the bucket's `ObjectService` (the key
    /// percent-decoded and checked, an `ObjectRequest` built) to an object
    /// service that answers at once; returns the status (200).
    pub fn run_with_key(&self) -> u16 {
        Self::call(&self.object)
    }
}

/// Presigning: a SigV4 query-string signature of a `GET` with rusty-s3, as
/// `S3Upstream::fetch` does for every upstream request.
pub struct Presign {
    upstream: S3Upstream,
    request: ObjectRequest,
}

impl Default for Presign {
    fn default() -> Self {
        Self::new()
    }
}

impl Presign {
    /// One path-style replica with credentials.
    pub fn new() -> Self {
        let endpoint: url::Url = "http://127.0.0.1:9000".parse().expect("url");
        let bucket = s3_bucket(Some(&endpoint), "data-bucket", "us-east-1").expect("bucket");
        let upstream = S3Upstream::new("bench", bucket, reqwest::Client::new())
            .with_credentials(Credentials::new("AKIABENCH0000001", "bench-secret-0123456789"));
        Self {
            upstream,
            request: ObjectRequest::get("images/2024/photo 001.jpg"),
        }
    }

    /// Presigns the request; returns the URL length.
    pub fn run(&self) -> usize {
        self.upstream.presign(black_box(&self.request)).as_str().len()
    }
}

type Inner = tower::util::BoxCloneSyncService<Request<()>, Response<Body>, Infallible>;

/// JWT: the `Auth` service verifying an HS256 bearer token (`exp`, `iss`,
/// `aud` checked) in front of a service that answers at once.
pub struct Jwt {
    auth: Auth<Inner>,
    bearer: HeaderValue,
}

impl Jwt {
    /// An HS256 `Auth` layer and a valid token for it.
    pub fn new() -> Result<Self, String> {
        let secret = "bench-hs256-secret-0123456789abcdef";
        let cfg: JwtConfig = serde_json::from_value(serde_json::json!({
            "algorithm": "HS256",
            "secret": secret,
            "issuer": "https://idp.bench",
            "audience": "yatagarasu",
        }))
        .map_err(|e| e.to_string())?;
        let layer = AuthLayer::from_config(&cfg).map_err(|e| e.to_string())?;
        let inner: Inner = tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Body::empty())))
        }));
        let auth = Auth::layer(&layer, inner);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = serde_json::json!({
            "sub": "bench-user",
            "iss": "https://idp.bench",
            "aud": "yatagarasu",
            "iat": now,
            "exp": now + 24 * 3600,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| e.to_string())?;
        let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        let jwt = Self { auth, bearer };
        let status = jwt.call();
        if status != StatusCode::OK {
            return Err(format!("the Auth service answered {status} to a valid token"));
        }
        Ok(jwt)
    }

    fn call(&self) -> StatusCode {
        let mut req = Request::new(());
        req.headers_mut().insert(header::AUTHORIZATION, self.bearer.clone());
        let mut auth = self.auth.clone();
        let fut = auth.call(req);
        match fut.now_or_never() {
            Some(Ok(res)) => res.status(),
            Some(Err(never)) => match never {},
            None => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Verifies one request's token; returns the status (200).
    pub fn run(&self) -> u16 {
        self.call().as_u16()
    }
}

type ObjectInner = tower::util::BoxCloneSyncService<ObjectRequest, Response<Body>, FetchError>;

/// Cache lookup: a `GET` of a 4 KiB object answered from the memory tier
/// (`X-Cache: HIT-MEMORY`), the response built but its body not read.
pub struct CacheHit {
    cache: Cache<ObjectInner>,
    request: ObjectRequest,
    runtime: tokio::runtime::Runtime,
    /// Whether a hit resolves on its first poll (no runtime needed per call).
    sync: bool,
}

impl CacheHit {
    /// A memory-only store holding one 4 KiB object, filled by one miss.
    pub fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let _guard = runtime.enter();
        let store = CacheStore::new(&CacheConfig::default()).map_err(|e| e.to_string())?;
        let body = Bytes::from(vec![b'x'; 4096]);
        let inner: ObjectInner =
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |_req: ObjectRequest| {
                let body = body.clone();
                async move {
                    let mut res = Response::new(Body::from(body.clone()));
                    let h = res.headers_mut();
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    h.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    h.insert(
                        header::ETAG,
                        HeaderValue::from_static("\"0123456789abcdef0123456789abcdef\""),
                    );
                    h.insert(
                        header::LAST_MODIFIED,
                        HeaderValue::from_static("Mon, 02 Jan 2006 15:04:05 GMT"),
                    );
                    Ok::<_, FetchError>(res)
                }
            }));
        let mut cache = Cache::new(inner, store, "data");
        let request = ObjectRequest::get("images/2024/photo 001.jpg");
        // Fill: one miss, its body read to the end.
        let fill = runtime.block_on(async {
            let res = cache.ready().await?.call(request.clone()).await?;
            let _ = res.into_body().collect().await;
            Ok::<_, FetchError>(())
        });
        fill.map_err(|e| e.to_string())?;
        // Give a background fill (if any) a moment.
        runtime.block_on(tokio::time::sleep(Duration::from_millis(20)));
        let mut hit = Self {
            cache,
            request,
            runtime,
            sync: false,
        };
        let first = hit.call_sync();
        hit.sync = first.is_some();
        let x_cache = match first {
            Some(x) => x,
            None => hit.call_blocking(),
        };
        if !x_cache.starts_with("HIT") {
            return Err(format!("second GET answered X-Cache: {x_cache}"));
        }
        Ok(hit)
    }

    fn x_cache(res: &Response<Body>) -> String {
        res.headers()
            .get(X_CACHE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    }

    fn call_sync(&self) -> Option<String> {
        let mut cache = self.cache.clone();
        let fut = cache.call(self.request.clone());
        match fut.now_or_never() {
            Some(Ok(res)) => Some(Self::x_cache(&res)),
            Some(Err(e)) => Some(format!("error: {e}")),
            None => None,
        }
    }

    fn call_blocking(&self) -> String {
        let mut cache = self.cache.clone();
        let fut = cache.call(self.request.clone());
        match self.runtime.block_on(fut) {
            Ok(res) => Self::x_cache(&res),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Whether each hit completes on its first poll.
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// One cache hit; returns the response status.
    pub fn run(&self) -> u16 {
        let mut cache = self.cache.clone();
        let fut = cache.call(self.request.clone());
        let res = if self.sync {
            fut.now_or_never().expect("hits resolve at once")
        } else {
            self.runtime.block_on(fut)
        };
        match res {
            Ok(res) => res.status().as_u16(),
            Err(_) => 599,
        }
    }
}

/// Times `f` in a loop for about `budget` (after a short warm-up) and returns
/// the mean time per call in ns. Used by the `--quick` run instead of
/// criterion; the criterion benches give confidence intervals.
pub fn time_per_call<T>(budget: Duration, mut f: impl FnMut() -> T) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        black_box(f());
    }
    // Batches of growing size so the clock is read rarely.
    let mut iters: u64 = 0;
    let mut batch: u64 = 16;
    let started = Instant::now();
    loop {
        for _ in 0..batch {
            black_box(f());
        }
        iters += batch;
        let elapsed = started.elapsed();
        if elapsed >= budget {
            return elapsed.as_nanos() as f64 / iters as f64;
        }
        if batch < 1 << 16 {
            batch *= 2;
        }
    }
}

/// Runs `fut` to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use yatagarasu_middleware::routing::MatchedBucket;

    use super::*;

    #[test]
    fn routing_fixture_reaches_the_bucket_through_the_router() {
        let routing = Routing::new();
        for router in [&routing.bare, &routing.object] {
            let res = router
                .clone()
                .oneshot(Routing::request())
                .now_or_never()
                .expect("answers at once")
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let matched = res.extensions().get::<MatchedBucket>().expect("routed");
            assert_eq!(&*matched.name, "data");
        }
        assert_eq!((routing.run(), routing.run_with_key()), (200, 200));
    }
}
