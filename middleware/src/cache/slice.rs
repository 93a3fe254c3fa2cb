//! Slice caching of large objects (`cache.slice_size`): an object is cached
//! as aligned slices of `slice_size` bytes, each fetched with `Range` (and
//! `If-Match` the object's ETag), plus a small index entry (the object's
//! headers and length). A client `Range` is answered from the slices it
//! covers, fetching only the missing ones (one upstream request per missing
//! slice, coalesced across clients); a full `GET` streams slice after slice.
//!
//! All slices of one answer come from one object version: every slice is
//! checked against the index's ETag, and a mismatch (or a `412` to
//! `If-Match`) drops the index. A mismatch on the first slice falls back to
//! an ordinary miss; on a later one the body is cut short (the client sees
//! an incomplete transfer, never a spliced object).
//!
//! One file over 400 lines on purpose: the index, the slice fetch and the
//! streamed answer are one protocol (each step checks what the others wrote),
//! read top to bottom.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

use super::entry::CachedObject;
use super::future::Policy;
use super::stats::CacheStats;
use super::store::{CacheStore, FillGuard, Found, Join};
use crate::error::FetchError;
use crate::http::headers::X_CACHE;
use crate::http::range::{parse_range, RangeSpec};
use crate::object::{ObjectMethod, ObjectRequest};

/// Calls the inner service (the replicas) from a slice fetch.
pub(crate) type Fetcher =
    Arc<dyn Fn(ObjectRequest) -> BoxFuture<'static, Result<Response<Body>, FetchError>> + Send + Sync>;

/// `X-Cache` of an answer made from slices.
const SLICE: &str = "SLICE";

/// What the index entry of a sliced object says.
#[derive(Clone)]
struct Index {
    headers: HeaderMap,
    etag: HeaderValue,
    len: u64,
    stored_at_ms: u64,
}

impl Index {
    fn from_entry(obj: &CachedObject) -> Option<Self> {
        let len = u64::from_be_bytes(obj.body().as_ref().try_into().ok()?);
        Some(Self {
            etag: obj.headers().get(header::ETAG)?.clone(),
            headers: obj.headers().clone(),
            len,
            stored_at_ms: obj.stored_at_ms(),
        })
    }
}

/// Why a slice could not be had.
#[derive(Debug, thiserror::Error)]
enum SliceError {
    #[error("the object changed upstream (ETag differs from its index)")]
    Changed,
    #[error("unexpected answer to a slice request: {0}")]
    Unexpected(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

/// One bucket's view of sliced objects.
struct Sliced {
    store: CacheStore,
    bucket: Arc<str>,
    key: String,
    size: u64,
    policy: Arc<Policy>,
    fetch: Fetcher,
}

/// Whether `req` may be answered from slices: a `GET` without preconditions
/// (they go to the replicas, which know the current version).
pub(crate) fn applies(req: &ObjectRequest) -> bool {
    req.method() == ObjectMethod::Get
        && ![
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::IF_UNMODIFIED_SINCE,
            header::IF_RANGE,
        ]
        .iter()
        .any(|h| req.headers().contains_key(h))
}

/// Answers `req` from slices when the object is known to be sliced, or when
/// a `Range` miss can start slicing it; `None` sends it down the ordinary
/// path.
pub(crate) async fn serve(policy: Arc<Policy>, req: &ObjectRequest, fetch: Fetcher) -> Option<Response<Body>> {
    let store = policy.store.clone();
    let size = store.slice_size()?;
    let sliced = Sliced {
        key: req.key().to_owned(),
        bucket: policy.bucket.clone(),
        store,
        size,
        policy,
        fetch,
    };
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    let (index, first) = match sliced.index().await {
        Some(index) => (index, None),
        None => {
            // Unknown object: only a range with a known start begins slicing
            // (a plain GET learns the length from its ordinary answer).
            let start = range.and_then(range_start)?;
            // Concurrent first requests of one object: one probes, the
            // others wait for its index (else each fetched a slice).
            match sliced.store.join(&sliced.index_key()) {
                Join::Leader(guard) => {
                    // The guard goes with the index: released once it can be found.
                    match sliced.probe(start / size, guard).await {
                        Ok(Some((index, slice))) => (index, Some((start / size, slice))),
                        _ => return None,
                    }
                }
                Join::Follower(mut rx) => {
                    CacheStats::inc(&sliced.store.stats().coalesced_waits);
                    let _ = tokio::time::timeout(sliced.store.coalesce_timeout(), rx.changed()).await;
                    (sliced.index().await?, None)
                }
            }
        }
    };
    let spec = match range {
        Some(v) => parse_range(v, index.len),
        None => RangeSpec::Full,
    };
    let (status, first_byte, last_byte) = match spec {
        RangeSpec::Full if index.len == 0 => return None,
        RangeSpec::Full => (StatusCode::OK, 0, index.len - 1),
        RangeSpec::Bytes(a, b) => (StatusCode::PARTIAL_CONTENT, a, b),
        RangeSpec::Unsatisfiable => return None,
    };
    let first_slice = first_byte / size;
    // The first slice before any header goes out: a changed object is then
    // an ordinary miss.
    let head = match first {
        Some((n, bytes)) if n == first_slice => bytes,
        _ => match sliced.slice(&index, first_slice).await {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::debug!(error = %err, "slice unavailable, ordinary fetch");
                return None;
            }
        },
    };
    let stats = sliced.store.stats();
    CacheStats::inc(&stats.slice_answers);
    let mut res = Response::new(Body::from_stream(body_stream(
        Arc::new(sliced),
        index.clone(),
        head,
        first_byte,
        last_byte,
    )));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    for (name, value) in index.headers.iter() {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last_byte - first_byte + 1));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {first_byte}-{last_byte}/{}", index.len)) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    headers.insert(X_CACHE, HeaderValue::from_static(SLICE));
    let age = super::entry::now_ms().saturating_sub(index.stored_at_ms) / 1000;
    headers.insert(header::AGE, super::entry::age_value(age));
    Some(res)
}

/// After an ordinary `200` too large to store whole: with slicing on,
/// stores the object's index, so the next requests are answered from slices.
pub(crate) fn index_large(policy: &Policy, object_key: &str, headers: &HeaderMap, len: u64, epoch: u64) {
    let store = &policy.store;
    if store.slice_size().is_none() || !headers.contains_key(header::ETAG) || len == 0 {
        return;
    }
    let Some(key) = store.object_name(&policy.bucket, object_key) else {
        return;
    };
    let index_key: Arc<str> = Arc::from(store.entry_key(&policy.bucket, key, "m"));
    store.insert(
        &index_key,
        headers,
        Bytes::copy_from_slice(&len.to_be_bytes()),
        policy.ttl,
        epoch,
    );
}

/// The body: the covered part of each slice in turn, fetched as needed.
fn body_stream(
    sliced: Arc<Sliced>,
    index: Index,
    head: Bytes,
    first_byte: u64,
    last_byte: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, SliceStreamError>> + Send {
    let size = sliced.size;
    let (first_slice, last_slice) = (first_byte / size, last_byte / size);
    futures_util::stream::unfold(Some(first_slice), move |next| {
        let (sliced, index, head) = (sliced.clone(), index.clone(), head.clone());
        async move {
            let n = next?;
            let bytes = if n == first_slice {
                head
            } else {
                match sliced.slice(&index, n).await {
                    Ok(b) => b,
                    Err(err) => {
                        tracing::warn!(error = %err, "slice unavailable mid-answer, body cut short");
                        return Some((Err(SliceStreamError(err.to_string())), None));
                    }
                }
            };
            let start = n * size;
            let from = first_byte.saturating_sub(start) as usize;
            let to = ((last_byte - start + 1).min(bytes.len() as u64)) as usize;
            if from > to || to > bytes.len() {
                return Some((Err(SliceStreamError("slice shorter than expected".into())), None));
            }
            let part = bytes.slice(from..to);
            Some((Ok(part), (n < last_slice).then_some(n + 1)))
        }
    })
}

/// A slice body that could not be completed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct SliceStreamError(String);

/// The start of a `bytes=a-[b]` range (a suffix range has none until the
/// length is known).
fn range_start(value: &str) -> Option<u64> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    spec.split_once('-')?.0.trim().parse().ok()
}

impl Sliced {
    fn index_key(&self) -> Arc<str> {
        Arc::from(self.store.entry_key(&self.bucket, &self.key, "m"))
    }

    fn slice_key(&self, n: u64) -> Arc<str> {
        Arc::from(
            self.store
                .entry_key(&self.bucket, &self.key, &format!("s{}.{n}", self.size)),
        )
    }

    async fn lookup(&self, key: &Arc<str>) -> Option<Arc<CachedObject>> {
        if let Found::Fresh(obj, _) = self.store.memory_get(key) {
            return Some(obj);
        }
        if self.store.has_redis() {
            if let Found::Fresh(obj, _) = self.store.redis_get(key).await {
                return Some(obj);
            }
        }
        None
    }

    async fn index(&self) -> Option<Index> {
        let obj = self.lookup(&self.index_key()).await?;
        Index::from_entry(&obj)
    }

    /// Fetches slice `n` of an object not yet indexed; stores both, and
    /// releases `guard` (the requests waiting for the index) once the index
    /// can be found: in memory, or when its Redis write has ended.
    async fn probe(&self, n: u64, guard: FillGuard) -> Result<Option<(Index, Bytes)>, SliceError> {
        let epoch = self.store.epoch();
        let (headers, total, bytes) = self.fetch_slice(n, None).await?;
        let Some(etag) = headers.get(header::ETAG).cloned() else {
            return Ok(None);
        };
        let index = Index {
            headers: CachedObject::new(&headers, Bytes::new(), std::time::Duration::ZERO)
                .headers()
                .clone(),
            etag,
            len: total,
            stored_at_ms: super::entry::now_ms(),
        };
        // The slice first: its Redis write starts before the index's.
        self.store
            .insert(&self.slice_key(n), &headers, bytes.clone(), self.policy.ttl, epoch);
        self.store.insert_and_release(
            &self.index_key(),
            &headers,
            Bytes::copy_from_slice(&total.to_be_bytes()),
            self.policy.ttl,
            epoch,
            Some(guard),
        );
        Ok(Some((index, bytes)))
    }

    /// Slice `n` of the indexed version: cached, or fetched once across
    /// concurrent requests.
    async fn slice(&self, index: &Index, n: u64) -> Result<Bytes, SliceError> {
        let key = self.slice_key(n);
        let matches = |obj: &CachedObject| obj.headers().get(header::ETAG) == Some(&index.etag);
        if let Some(obj) = self.lookup(&key).await {
            if matches(&obj) {
                return Ok(obj.body().clone());
            }
        }
        let stats = self.store.stats();
        let guard = match self.store.join(&key) {
            Join::Leader(g) => Some(g),
            Join::Follower(mut rx) => {
                CacheStats::inc(&stats.coalesced_waits);
                let _ = tokio::time::timeout(self.store.coalesce_timeout(), rx.changed()).await;
                if let Some(obj) = self.lookup(&key).await {
                    if matches(&obj) {
                        CacheStats::inc(&stats.coalesced_hits);
                        return Ok(obj.body().clone());
                    }
                }
                None
            }
        };
        let epoch = self.store.epoch();
        let result = self.fetch_slice(n, Some(index)).await;
        match result {
            Ok((headers, _, bytes)) => {
                self.store
                    .insert_and_release(&key, &headers, bytes.clone(), self.policy.ttl, epoch, guard);
                Ok(bytes)
            }
            Err(SliceError::Changed) => {
                // A new version upstream: its index and slices start over.
                self.store.forget(&[self.index_key()]).await;
                CacheStats::inc(&stats.slice_invalidations);
                Err(SliceError::Changed)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET` of slice `n` with `Range` (and `If-Match` once indexed); the
    /// answer's headers, the object's length and the slice's bytes.
    async fn fetch_slice(&self, n: u64, index: Option<&Index>) -> Result<(HeaderMap, u64, Bytes), SliceError> {
        let start = n * self.size;
        let mut end = start + self.size - 1;
        if let Some(index) = index {
            if start >= index.len {
                return Err(SliceError::Unexpected(format!("slice {n} past the end")));
            }
            end = end.min(index.len - 1);
        }
        let mut req = ObjectRequest::get(self.key.as_str()).with_header(
            header::RANGE,
            HeaderValue::from_str(&format!("bytes={start}-{end}")).expect("ascii"),
        );
        if let Some(index) = index {
            req = req.with_header(header::IF_MATCH, index.etag.clone());
        }
        CacheStats::inc(&self.store.stats().slice_fetches);
        let res = (self.fetch)(req).await?;
        match res.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::PRECONDITION_FAILED => return Err(SliceError::Changed),
            other => return Err(SliceError::Unexpected(other.to_string())),
        }
        if let Some(index) = index {
            if res.headers().get(header::ETAG) != Some(&index.etag) {
                return Err(SliceError::Changed);
            }
        }
        let (got_start, got_end, total) = res
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range)
            .ok_or_else(|| SliceError::Unexpected("no Content-Range".into()))?;
        if got_start != start || index.is_some_and(|i| i.len != total) {
            return Err(SliceError::Changed);
        }
        let want = (start + self.size).min(total) - start;
        if got_end + 1 - got_start != want {
            return Err(SliceError::Unexpected("short slice".into()));
        }
        let (parts, body) = res.into_parts();
        let bytes = http_body_util::Limited::new(body, want as usize)
            .collect()
            .await
            .map_err(|e| SliceError::Unexpected(e.to_string()))?
            .to_bytes();
        if bytes.len() as u64 != want {
            return Err(SliceError::Unexpected("short slice body".into()));
        }
        Ok((parts.headers, total, bytes))
    }
}

/// `bytes a-b/total` with a known total (a slice needs the object's length),
/// read by the one `Content-Range` parser of [`crate::http::range`].
fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let (first, last, total) = crate::http::range::parse_content_range(v)?;
    Some((first, last, total?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_content_ranges() {
        assert_eq!(range_start("bytes=100-"), Some(100));
        assert_eq!(range_start("bytes=5-9"), Some(5));
        assert_eq!(range_start("bytes=-9"), None);
        assert_eq!(range_start("bytes=0-1,4-5"), None);
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
    }
}
