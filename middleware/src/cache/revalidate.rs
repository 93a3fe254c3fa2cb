//! Warming the cache under revalidating clients.
//!
//! A browser or CDN that holds a copy revalidates it on every use
//! (`If-None-Match: "etag"`). On a miss such a request goes to the replicas
//! with its preconditions, and their `304` (or `412`) has no body: nothing
//! to store, so the cache stayed cold for as long as clients revalidated,
//! and every revalidation went to S3. Now, when the answer shows that the
//! object exists, the request's fill goes on in the background, still
//! registered as the object's fill in flight (concurrent plain misses wait
//! for it instead of fetching), and the next revalidation is a hit:
//!
//! - **a `304` or `412` from the replicas**: a plain `GET` of the object
//!   (the request without its preconditions), stored as an ordinary miss's
//!   answer is;
//! - **a `200` that fails the preconditions** (a replica that ignores them,
//!   as some S3-compatible servers do): the client gets its `304`/`412` at
//!   once, and the body the replica is already sending is read to its end
//!   and stored rather than dropped and fetched again.
//!
//! The client's answer is never held back for the fill: it is the one it
//! had before. Every rule of an ordinary fill applies (`max_item_size`,
//! `no-store`/`private`/`no-cache`, a purge meanwhile stores nothing), and
//! a body that sends nothing for `coalesce_timeout_ms` is given up (the
//! requests waiting for it stopped waiting by then). At most
//! [`BACKGROUND_FILLS`] run at once per store; a revalidation that finds
//! them all busy starts none, and its object is filled by a later request.
//! Counted in `revalidation_fills` and `revalidation_fills_skipped`.
//!
//! Why not always fetch the whole object on a conditional miss and answer
//! the preconditions here (as nginx's `proxy_cache` does)? The request
//! would then always move the whole body from the replica, also for objects
//! the cache will not keep (too large, `no-store`) and when the background
//! budget is spent, and a replica's `304` would never be seen. Here the
//! second request is made only once per object and TTL, and only for
//! objects that exist and may be cached.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;

use super::future::{cacheable, content_length, mark, storable_head, tee, Miss, Policy};
use super::slice::Fetcher;
use super::stats::CacheStats;
use crate::error::S3Error;
use crate::http::conditional::{self, not_modified, Precondition};
use crate::http::headers::REPLICA_HEADER;
use crate::object::{ObjectMethod, ObjectRequest};

/// Background fills one store runs at once, at most.
pub(crate) const BACKGROUND_FILLS: usize = 8;

/// The request headers a revalidation's plain `GET` leaves out.
const PRECONDITIONS: [header::HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// What a conditional `GET` miss keeps for a fill in the background.
pub(crate) struct Revalidation {
    /// The client's preconditions.
    conditions: HeaderMap,
    /// The same request without them.
    plain: ObjectRequest,
    fetch: Fetcher,
}

/// Whether `req` can warm the cache this way: a `GET` with preconditions
/// and no `Range`.
pub(crate) fn applies(req: &ObjectRequest) -> bool {
    req.method() == ObjectMethod::Get
        && !req.headers().contains_key(header::RANGE)
        && conditional::has_preconditions(req.headers())
}

impl Revalidation {
    /// For `req` (see [`applies`]), whose plain `GET` goes to `fetch`.
    pub(crate) fn new(req: &ObjectRequest, fetch: Fetcher) -> Self {
        let mut plain = req.clone();
        for name in &PRECONDITIONS {
            plain.headers_mut().remove(name);
        }
        Self {
            conditions: req.headers().clone(),
            plain,
            fetch,
        }
    }
}

/// The client's answer to a conditional `GET` miss, when it is a `304` or
/// `412` whose object is filled in the background; else the answer and the
/// miss back, for an ordinary fill.
#[allow(clippy::result_large_err)] // the answer itself, handed back at once
pub(crate) fn answer(
    res: Response<Body>,
    miss: Miss,
    revalidation: Revalidation,
    policy: &Arc<Policy>,
) -> Result<Response<Body>, (Response<Body>, Miss)> {
    // Only the object's registered fill (not a request that stopped
    // waiting for another), and only with a tier to fill.
    if miss.guard.is_none() || policy.store.fill_limit() == 0 {
        return Err((res, miss));
    }
    match res.status() {
        StatusCode::OK => read_on(res, miss, &revalidation.conditions, policy),
        StatusCode::NOT_MODIFIED | StatusCode::PRECONDITION_FAILED => {
            // Not stored (a bypass, as before) unless a fill starts.
            let Some(place) = storable_head(res.headers())
                .then(|| Background::reserve(policy))
                .flatten()
            else {
                return Err((res, miss));
            };
            fetch_in_background(place, miss, revalidation, policy);
            Ok(mark(res, "MISS"))
        }
        _ => Err((res, miss)),
    }
}

/// A `200` to a conditional `GET`: when its validators fail the
/// preconditions, the client's `304`/`412`, and the body read on and stored
/// in the background.
#[allow(clippy::result_large_err)]
fn read_on(
    res: Response<Body>,
    miss: Miss,
    conditions: &HeaderMap,
    policy: &Arc<Policy>,
) -> Result<Response<Body>, (Response<Body>, Miss)> {
    let store = &policy.store;
    let etag = res.headers().get(header::ETAG).and_then(|v| v.to_str().ok());
    let modified = res.headers().get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok());
    let verdict = conditional::evaluate(conditions, etag, modified);
    let fits = content_length(&res).is_none_or(|n| n <= store.fill_limit());
    if verdict == Precondition::Pass || !cacheable(&res) || !fits {
        return Err((res, miss));
    }
    let Some(spawn) = Background::reserve(policy) else {
        return Err((res, miss));
    };
    let client = match verdict {
        Precondition::NotModified => not_modified(res.headers()),
        _ => precondition_failed(res.headers()),
    };
    match tee(res, miss, policy) {
        Ok(teed) => spawn.run(drain(teed.into_body(), store.coalesce_timeout())),
        // Checked above: not reached.
        Err(_) => CacheStats::inc(&store.stats().fills_abandoned),
    }
    Ok(mark(client, "MISS"))
}

/// A `304`/`412` from the replicas: the object exists, and the answer does
/// not forbid storing it; fetch it without preconditions in `place`.
fn fetch_in_background(place: Background, miss: Miss, revalidation: Revalidation, policy: &Arc<Policy>) {
    let stats = policy.store.stats();
    CacheStats::inc(&stats.upstream_fetches);
    let policy = policy.clone();
    let Revalidation { plain, fetch, .. } = revalidation;
    place.run(async move {
        let store = &policy.store;
        let res = match fetch(plain).await {
            Ok(res) => res,
            Err(err) => {
                // `miss` (its guard) drops: the waiting requests fetch.
                tracing::debug!(bucket = %policy.bucket, error = %err, "background cache fill failed");
                CacheStats::inc(&store.stats().fills_abandoned);
                return;
            }
        };
        match tee(res, miss, &policy) {
            Ok(teed) => drain(teed.into_body(), store.coalesce_timeout()).await,
            Err(res) => {
                tracing::debug!(bucket = %policy.bucket, status = %res.status(), "background cache fill not stored");
                CacheStats::inc(&store.stats().fills_abandoned);
            }
        }
    });
}

/// A reserved place among the store's [`BACKGROUND_FILLS`].
struct Background {
    permit: tokio::sync::OwnedSemaphorePermit,
    runtime: tokio::runtime::Handle,
    policy: Arc<Policy>,
}

impl Background {
    /// A place, or `None` (counted as skipped) when all are taken.
    fn reserve(policy: &Arc<Policy>) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let stats = policy.store.stats();
        let Some(permit) = policy.store.background_permit() else {
            CacheStats::inc(&stats.revalidation_fills_skipped);
            return None;
        };
        Some(Self {
            permit,
            runtime,
            policy: policy.clone(),
        })
    }

    /// Runs `fill`, holding the place until it ends.
    fn run(self, fill: impl std::future::Future<Output = ()> + Send + 'static) {
        CacheStats::inc(&self.policy.store.stats().revalidation_fills);
        let permit = self.permit;
        self.runtime.spawn(async move {
            fill.await;
            drop(permit);
        });
    }
}

/// Reads a stored-while-streaming body to its end (which stores it), or
/// until it fails or sends nothing for `idle`.
async fn drain(mut body: Body, idle: Duration) {
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(_))) => {}
            Ok(None) => return,
            Ok(Some(Err(_))) | Err(_) => {
                tracing::debug!("background cache fill given up: its body failed or stalled");
                return;
            }
        }
    }
}

/// A `412` made here from a replica's `200`, naming the replica.
fn precondition_failed(from: &HeaderMap) -> Response<Body> {
    let mut res = S3Error::precondition_failed().into_response();
    if let Some(v) = from.get(REPLICA_HEADER) {
        res.headers_mut().insert(REPLICA_HEADER, v.clone());
    }
    res
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use http::{HeaderValue, StatusCode};
    use tower::ServiceExt;
    use yatagarasu_testkit::s3::LocalS3;

    use crate::cache::{Cache, CacheConfig, CacheStore, X_CACHE};
    use crate::object::ObjectRequest;
    use crate::upstream::{s3_bucket, S3Upstream};

    const BUCKET: &str = "reval-bkt";

    /// A real S3 server (s3s-fs, SigV4 checked; it ignores preconditions,
    /// so a revalidation's answer is a `200`) with one object; its ETag.
    async fn origin(dir: &std::path::Path) -> (LocalS3, String) {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = LocalS3::start(dir, any, "reval-ak", "reval-sk-0123456789")
            .await
            .unwrap();
        let etag = server
            .put_object_with(BUCKET, "a.css", vec![b'a'; 4096], &[])
            .await
            .unwrap();
        (server, etag)
    }

    fn cache(server: &LocalS3, store: &CacheStore) -> Cache<S3Upstream> {
        let bucket = s3_bucket(Some(&server.endpoint().parse().unwrap()), BUCKET, "us-east-1").unwrap();
        let replica = S3Upstream::new("s3", bucket, reqwest::Client::new())
            .with_credentials(rusty_s3::Credentials::new("reval-ak", "reval-sk-0123456789"));
        Cache::new(replica, store.clone(), "b")
    }

    fn revalidation(etag: &str) -> ObjectRequest {
        ObjectRequest::get("a.css").with_header(http::header::IF_NONE_MATCH, HeaderValue::from_str(etag).unwrap())
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn answer(res: &http::Response<axum::body::Body>) -> (StatusCode, &str) {
        (res.status(), res.headers()[X_CACHE].to_str().unwrap())
    }

    fn stored(store: &CacheStore) -> bool {
        matches!(
            store.memory_get_object("b", "a.css"),
            super::super::store::Found::Fresh(..)
        )
    }

    /// With every background place taken, a revalidation starts no fill
    /// (counted) and is answered as before; with a place free, the next
    /// one fills the cache.
    #[tokio::test]
    async fn no_background_fill_starts_while_every_place_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (server, etag) = origin(dir.path()).await;
        let store = CacheStore::new(&CacheConfig::default()).unwrap();
        let svc = cache(&server, &store);
        let taken: Vec<_> = (0..super::BACKGROUND_FILLS)
            .map(|_| store.background_permit().expect("a free place"))
            .collect();
        assert!(store.background_permit().is_none());

        let res = svc.clone().oneshot(revalidation(&etag)).await.unwrap();
        // The replica's `200`, as before (the object face makes the `304`);
        // dropped unread, as the object face drops it.
        assert_eq!(answer(&res), (StatusCode::OK, "MISS"));
        drop(res);
        let stats = store.snapshot();
        assert_eq!((stats.revalidation_fills, stats.revalidation_fills_skipped), (0, 1));
        assert!(!stored(&store));

        drop(taken);
        let res = svc.clone().oneshot(revalidation(&etag)).await.unwrap();
        assert_eq!(answer(&res), (StatusCode::NOT_MODIFIED, "MISS"));
        until("the background fill", || stored(&store)).await;
        assert_eq!(store.snapshot().revalidation_fills, 1);
        assert_eq!(server.gets(), 2);
    }

    /// A purge while a revalidation is at the replica: its fill, run on in
    /// the background, stores nothing (the store's epoch moved on), and the
    /// next plain `GET` goes to the replica.
    #[tokio::test]
    async fn a_purge_while_a_revalidation_is_upstream_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (server, etag) = origin(dir.path()).await;
        let store = CacheStore::new(&CacheConfig::default()).unwrap();
        let svc = cache(&server, &store);

        server.hold();
        let pending = tokio::spawn(svc.clone().oneshot(revalidation(&etag)));
        until("the revalidation at the replica", || server.waiting() == 1).await;
        store.purge_all().await.unwrap();
        server.release();
        let res = pending.await.unwrap().unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(store.snapshot().revalidation_fills, 1);

        // Waits for the fill if it is still running, then fetches.
        let res = svc.clone().oneshot(ObjectRequest::get("a.css")).await.unwrap();
        assert_eq!(answer(&res), (StatusCode::OK, "MISS"));
        assert_eq!(store.snapshot().memory_inserts, 0);
        assert_eq!(server.gets(), 2);
    }
}
