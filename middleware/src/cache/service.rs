use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::Response;
use tower::Service;

use super::future::{first_look, Policy, ResponseFuture};
use super::layer::CacheLayer;
use super::revalidate;
use super::slice::Fetcher;
use super::store::CacheStore;
use crate::error::FetchError;
use crate::object::ObjectRequest;

/// An object-level service answering from the two-tier cache, and from the
/// inner service (the replicas) on a miss. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Cache<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S> Cache<S> {
    /// Caches `inner`'s objects of `bucket` in `store`.
    pub fn new(inner: S, store: CacheStore, bucket: impl Into<Arc<str>>) -> Self {
        tower::Layer::layer(&CacheLayer::new(store, bucket), inner)
    }

    /// A [`CacheLayer`] for `bucket` (shortcut for [`CacheLayer::new`]).
    pub fn layer(store: CacheStore, bucket: impl Into<Arc<str>>) -> CacheLayer {
        CacheLayer::new(store, bucket)
    }

    pub(crate) fn from_policy(inner: S, policy: Arc<Policy>) -> Self {
        Self { inner, policy }
    }

    inner_service_accessors!();
}

impl<S> Service<ObjectRequest> for Cache<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = FetchError;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        // Readiness is reserved for a possible miss; a memory hit answered in
        // `call` keeps it for the next call, any other lookup takes the ready
        // service into its future (released when that is dropped).
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ObjectRequest) -> Self::Future {
        if !self.policy.enabled {
            return ResponseFuture::bypass(self.inner.call(req), self.policy.clone());
        }
        // A fresh copy in memory is answered here, before anything is cloned
        // or boxed (the inner service stays ready for the next call).
        let look = match first_look(&self.policy, &req) {
            Ok(res) => return ResponseFuture::ready(res, self.policy.clone()),
            Err(look) => look,
        };
        // Slice fetches, and a revalidation's fill in the background, call
        // the inner service on their own (a clone each).
        let fetcher = (self.policy.store.slice_size().is_some() || revalidate::applies(&req))
            .then(|| fetcher(self.inner.clone()));
        // The ready service goes into the future; this one gets a fresh clone.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::lookup(ready, req, self.policy.clone(), fetcher, look)
    }
}

/// The inner service as a [`Fetcher`] for slice requests.
fn fetcher<S>(inner: S) -> Fetcher
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let inner = std::sync::Mutex::new(inner);
    Arc::new(move |req| {
        let svc = inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Box::pin(async move {
            use tower::ServiceExt;
            svc.oneshot(req).await
        })
    })
}
