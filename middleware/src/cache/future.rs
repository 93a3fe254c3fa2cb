//! The response future of [`Cache`](super::Cache): a cache lookup, then, on a
//! miss, the inner service, then a stale copy if the inner service failed.
//!
//! Just over 400 lines on purpose: the lookup order (memory, Redis, a fill in
//! flight, the origin, a stale copy) is one sequence read top to bottom; its
//! pieces that stand alone already live beside it (`serve`, `body`, `slice`,
//! `store`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::Service;

use super::body::{Fill, FillBuffer, TeeBody};
use super::entry::now_ms;
use super::entry::CachedObject;
use super::entry::HIT_SLOTS;
use super::revalidate::{self, Revalidation};
use super::serve::respond;
use super::slice::{self, Fetcher};
use super::stats::CacheStats;
use super::store::{CacheStore, FillGuard, Found, Join, Tier};
use crate::error::FetchError;
use crate::http::headers::{body_length, REQUEST_ID, X_CACHE};
use crate::object::{ObjectMethod, ObjectRequest};

/// What one bucket's layer does with the shared store.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) store: CacheStore,
    pub(crate) bucket: Arc<str>,
    pub(crate) enabled: bool,
    pub(crate) ttl: Option<Duration>,
}

/// The outcome of a lookup.
pub(crate) enum Lookup {
    /// Answered from the cache.
    Hit(Response<Body>),
    /// Go to the inner service.
    Miss(Miss),
}

/// What a miss carries to the inner service's answer.
pub(crate) struct Miss {
    pub(crate) key: Arc<str>,
    /// A `GET` without `Range`: a `200` answer may be stored.
    fill: bool,
    pub(crate) guard: Option<FillGuard>,
    stale: Option<Arc<CachedObject>>,
    pub(crate) epoch: u64,
    /// A conditional `GET` that leads the object's fill: its `304`/`412`
    /// fills the cache in the background ([`revalidate`]). Boxed: rare, and
    /// a miss travels by value.
    revalidation: Option<Box<Revalidation>>,
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // A memory hit, answered in `call` without boxing anything.
        Ready { res: Option<Response<Body>> },
        // Boxed: the rest of the lookup awaits Redis and other requests' fills.
        Lookup { fut: BoxFuture<'static, (Lookup, ObjectRequest)> },
        Inner { #[pin] fut: F, miss: Option<Miss> },
        Done,
    }
}

pin_project! {
    /// Response future of [`Cache`](super::Cache).
    pub struct ResponseFuture<S>
    where
        S: Service<ObjectRequest>,
    {
        #[pin]
        state: State<S::Future>,
        service: Option<S>,
        request: Option<ObjectRequest>,
        policy: Arc<Policy>,
    }
}

impl<S> ResponseFuture<S>
where
    S: Service<ObjectRequest>,
{
    /// The inner service was already called; the cache is not used.
    pub(crate) fn bypass(fut: S::Future, policy: Arc<Policy>) -> Self {
        Self {
            state: State::Inner { fut, miss: None },
            service: None,
            request: None,
            policy,
        }
    }

    /// Answered from memory in `call`: the inner service is not used.
    pub(crate) fn ready(res: Response<Body>, policy: Arc<Policy>) -> Self {
        Self {
            state: State::Ready { res: Some(res) },
            service: None,
            request: None,
            policy,
        }
    }

    /// Memory did not answer ([`first_look`]): the rest of the lookup runs in
    /// the future, then `service` (ready) is called on a miss.
    pub(crate) fn lookup(
        service: S,
        request: ObjectRequest,
        policy: Arc<Policy>,
        fetcher: Option<Fetcher>,
        look: MemoryMiss,
    ) -> Self {
        let fut = Box::pin(lookup(policy.clone(), request, fetcher, look));
        Self {
            state: State::Lookup { fut },
            service: Some(service),
            request: None,
            policy,
        }
    }
}

/// What a look in memory left for the rest of the lookup.
pub(crate) struct MemoryMiss {
    key: Arc<str>,
    epoch: u64,
    stale: Option<Arc<CachedObject>>,
}

/// The memory tier, looked at in `call`: a fresh copy is the answer (no
/// future to box, no inner service to clone); else what the rest of the
/// lookup needs.
pub(crate) fn first_look(policy: &Policy, req: &ObjectRequest) -> Result<Response<Body>, MemoryMiss> {
    let store = &policy.store;
    let epoch = store.epoch();
    let stale = match store.memory_get_object(&policy.bucket, req.key()) {
        Found::Fresh(obj, tier) => return Ok(hit(&obj, tier, req, store)),
        Found::Stale(obj) => Some(obj),
        Found::None => None,
    };
    let key = store.shared_cache_key(&policy.bucket, req.key());
    Err(MemoryMiss { key, epoch, stale })
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError>,
{
    type Output = Result<Response<Body>, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Ready { res } => {
                    let res = res.take().expect("polled after completion");
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(res));
                }
                StateProj::Lookup { fut } => match ready!(fut.as_mut().poll(cx)) {
                    (Lookup::Hit(res), _) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(res));
                    }
                    (Lookup::Miss(miss), request) => {
                        let mut service = this.service.take().expect("polled after completion");
                        CacheStats::inc(&this.policy.store.stats().upstream_fetches);
                        // Kept for a stale answer only when there is a stale copy.
                        let fut = if miss.stale.is_some() {
                            let fut = service.call(request.clone());
                            *this.request = Some(request);
                            fut
                        } else {
                            service.call(request)
                        };
                        this.state.set(State::Inner { fut, miss: Some(miss) });
                    }
                },
                StateProj::Inner { fut, miss } => {
                    let result = ready!(fut.poll(cx));
                    let miss = miss.take();
                    this.state.set(State::Done);
                    let stats = this.policy.store.stats();
                    return Poll::Ready(match (result, miss) {
                        (Ok(res), Some(miss)) => Ok(after_miss(res, miss, this.policy)),
                        (Ok(res), None) => {
                            CacheStats::inc(&stats.bypasses);
                            Ok(mark(res, "BYPASS"))
                        }
                        (Err(err), Some(Miss { stale: Some(obj), .. })) => {
                            tracing::warn!(
                                bucket = %this.policy.bucket,
                                error = %err,
                                "no replica could serve, answering with a stale cached copy"
                            );
                            CacheStats::inc(&stats.stale_hits);
                            let req = this.request.as_ref().expect("polled after completion");
                            Ok(respond(&obj, req, "STALE"))
                        }
                        (Err(err), _) => Err(err),
                    });
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

pub(crate) fn mark(mut res: Response<Body>, x_cache: &'static str) -> Response<Body> {
    res.headers_mut().insert(X_CACHE, HeaderValue::from_static(x_cache));
    res
}

/// Whether S3's answer may be stored: a full `200` the origin does not mark
/// `no-store`, `private` or `no-cache` (the last would need revalidation on
/// every use, which this cache does not do).
pub(crate) fn cacheable(res: &Response<Body>) -> bool {
    res.status() == StatusCode::OK && storable_head(res.headers())
}

/// Whether an answer with these headers does not forbid storing its object
/// (see [`cacheable`]).
pub(crate) fn storable_head(headers: &http::HeaderMap) -> bool {
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for directive in value.split(',') {
            let name = directive.split('=').next().unwrap_or("").trim().to_ascii_lowercase();
            if matches!(name.as_str(), "no-store" | "private" | "no-cache") {
                return false;
            }
        }
    }
    true
}

pub(crate) fn content_length(res: &Response<Body>) -> Option<u64> {
    crate::http::headers::content_length(res.headers())
}

fn after_miss(res: Response<Body>, mut miss: Miss, policy: &Arc<Policy>) -> Response<Body> {
    if !miss.fill {
        return mark(res, "MISS");
    }
    let res = match miss.revalidation.take() {
        Some(revalidation) => match revalidate::answer(res, miss, *revalidation, policy) {
            Ok(res) => return res,
            Err((res, back)) => {
                miss = back;
                res
            }
        },
        None => res,
    };
    match tee(res, miss, policy) {
        Ok(res) => mark(res, "MISS"),
        Err(res) => {
            // `miss.guard` has dropped: waiting requests fetch for themselves.
            CacheStats::inc(&policy.store.stats().bypasses);
            mark(res, "BYPASS")
        }
    }
}

/// `res` with a body that stores the object as it streams ([`TeeBody`]),
/// or `Err(res)` when it may not be stored (not [`cacheable`], over the
/// fill limit); the miss's guard then drops. A `200` too large to store
/// whole is indexed for slicing.
#[allow(clippy::result_large_err)] // the answer itself, handed back at once
pub(crate) fn tee(res: Response<Body>, miss: Miss, policy: &Policy) -> Result<Response<Body>, Response<Body>> {
    let store = &policy.store;
    let limit = store.fill_limit();
    let expected_len = content_length(&res);
    if cacheable(&res) && expected_len.is_some_and(|n| n > limit) {
        // Too large to store whole: with slicing on, index it so the next
        // requests are answered from slices.
        slice::index_large(policy, &miss.key, res.headers(), expected_len.unwrap_or(0), miss.epoch);
    }
    if !cacheable(&res) || expected_len.is_some_and(|n| n > limit) {
        return Err(res);
    }
    let (parts, body) = res.into_parts();
    let fill = Fill {
        store: store.clone(),
        key: miss.key,
        headers: parts.headers.clone(),
        limit,
        expected_len,
        ttl: policy.ttl,
        epoch: miss.epoch,
        guard: miss.guard,
        parts: FillBuffer::Empty,
        len: 0,
        stored: false,
    };
    Ok(Response::from_parts(parts, Body::new(TeeBody::new(body, fill))))
}

/// Request headers that can make an answer from a cached object anything
/// but the whole object with its stored head.
const CONDITIONAL: [header::HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// The answer from a cached object: a plain `GET`/`HEAD` (no range, no
/// precondition) takes the object's prebuilt head and shares its body;
/// anything else goes through [`respond`].
fn answer(obj: &CachedObject, req: &ObjectRequest, x_cache: &'static str) -> Response<Body> {
    if CONDITIONAL.iter().any(|h| req.headers().contains_key(h)) {
        return respond(obj, req, x_cache);
    }
    let body = match req.method() {
        ObjectMethod::Get => super::serve::hit_body(obj.body().clone()),
        ObjectMethod::Head => Body::empty(),
    };
    let mut res = Response::new(body);
    let headers = res.headers_mut();
    *headers = obj.whole_head().clone();
    let age = now_ms().saturating_sub(obj.stored_at_ms()) / 1000;
    let mut values = [
        Some(HeaderValue::from_static(x_cache)),
        Some(super::entry::age_value(age)),
        req.request_id().cloned(),
    ];
    // The prebuilt head starts with the three slots (`HIT_SLOTS`): set in
    // place by position, no lookup hashing a name (issue 13).
    let mut entries = headers.iter_mut();
    for (slot, value) in HIT_SLOTS.iter().zip(values.iter_mut()) {
        match entries.next() {
            Some((name, v)) if name == slot => {
                if let Some(value) = value.take() {
                    *v = value;
                }
            }
            _ => break,
        }
    }
    // Not in place (a head built otherwise): by name.
    for (name, value) in HIT_SLOTS.iter().zip(values) {
        if let Some(value) = value {
            headers.insert(name.clone(), value);
        }
    }
    if req.request_id().is_none() {
        headers.remove(REQUEST_ID);
    }
    res
}

fn hit(obj: &CachedObject, tier: Tier, req: &ObjectRequest, store: &CacheStore) -> Response<Body> {
    let stats = store.stats();
    let res = answer(
        obj,
        req,
        match tier {
            Tier::Memory => "HIT-MEMORY",
            Tier::Redis => "HIT-REDIS",
        },
    );
    let sent = match (req.method(), res.status()) {
        (ObjectMethod::Get, StatusCode::OK | StatusCode::PARTIAL_CONTENT) => body_length(&res).unwrap_or(0),
        _ => 0,
    };
    match tier {
        Tier::Memory => {
            CacheStats::inc(&stats.memory_hits);
            CacheStats::add(&stats.memory_bytes_served, sent);
        }
        Tier::Redis => {
            CacheStats::inc(&stats.redis_hits);
            CacheStats::add(&stats.redis_bytes_served, sent);
        }
    }
    res
}

/// After a memory miss (or a stale copy in memory, `stale`): once per object
/// across concurrent misses Redis; a plain `GET` that misses both becomes
/// the fill leader, or waits for the leader already fetching the object.
/// Gives the request back.
async fn lookup(
    policy: Arc<Policy>,
    req: ObjectRequest,
    fetcher: Option<Fetcher>,
    look: MemoryMiss,
) -> (Lookup, ObjectRequest) {
    let MemoryMiss { key, epoch, stale } = look;
    let found = lookup_rest(&policy, &req, fetcher, key, epoch, stale).await;
    (found, req)
}

async fn lookup_rest(
    policy: &Arc<Policy>,
    req: &ObjectRequest,
    fetcher: Option<Fetcher>,
    key: Arc<str>,
    epoch: u64,
    mut stale: Option<Arc<CachedObject>>,
) -> Lookup {
    let store = &policy.store;
    let stats = store.stats();
    CacheStats::inc(&stats.memory_misses);

    // Ranges and HEADs are answered from a cached object but never fill one.
    let fill = req.method() == ObjectMethod::Get && !req.headers().contains_key(header::RANGE);
    let mut guard = None;
    if fill {
        for attempt in 0..2 {
            match store.join(&key) {
                Join::Leader(g) => {
                    guard = Some(g);
                    break;
                }
                Join::Follower(mut rx) => {
                    CacheStats::inc(&stats.coalesced_waits);
                    let _ = tokio::time::timeout(store.coalesce_timeout(), rx.changed()).await;
                    if let Found::Fresh(obj, _) = store.memory_get(&key) {
                        CacheStats::inc(&stats.coalesced_hits);
                        return Lookup::Hit(hit(&obj, Tier::Memory, req, store));
                    }
                    // A copy the memory tier does not keep (tier off, object
                    // over its `max_item_size`) is in Redis once the leader
                    // lets us go.
                    if store.has_redis() {
                        if let Found::Fresh(obj, tier) = store.redis_get(&key).await {
                            CacheStats::inc(&stats.coalesced_hits);
                            return Lookup::Hit(hit(&obj, tier, req, store));
                        }
                    }
                    if attempt == 1 {
                        // The leader gave up twice: fetch without coalescing.
                        break;
                    }
                }
            }
        }
        // A fill may have finished between the first look and the join.
        if let Found::Fresh(obj, tier) = store.memory_get(&key) {
            return Lookup::Hit(hit(&obj, tier, req, store));
        }
    }

    if store.has_redis() {
        match store.redis_get(&key).await {
            Found::Fresh(obj, tier) => return Lookup::Hit(hit(&obj, tier, req, store)),
            Found::Stale(obj) => {
                CacheStats::inc(&stats.redis_misses);
                if stale.as_ref().is_none_or(|s| s.stored_at_ms() < obj.stored_at_ms()) {
                    stale = Some(obj);
                }
            }
            Found::None => CacheStats::inc(&stats.redis_misses),
        }
    }

    // A revalidation leading the object's fill may warm the cache.
    let revalidation = match &fetcher {
        Some(fetch) if guard.is_some() && revalidate::applies(req) => {
            Some(Box::new(Revalidation::new(req, fetch.clone())))
        }
        _ => None,
    };

    // No whole copy: a large object known to be sliced, or a range that
    // starts slicing one (not while a stale whole copy could still serve).
    if let Some(fetch) = fetcher.filter(|_| stale.is_none() && slice::applies(req)) {
        if let Some(res) = slice::serve(policy.clone(), req, fetch).await {
            return Lookup::Hit(res);
        }
    }

    Lookup::Miss(Miss {
        key,
        fill,
        guard,
        stale,
        epoch,
        revalidation,
    })
}
