//! Per-replica concurrency limit (bulkhead): when a replica already has its
//! maximum of requests waiting for response headers, further ones are
//! refused at once with [`FetchError::Overloaded`] (the failover moves on)
//! instead of queueing without bound behind a slow replica.
//!
//! Built from tower's `ConcurrencyLimit` and `LoadShed`.

use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::util::MapErrLayer;
use tower::{BoxError, Layer};

use crate::error::FetchError;

/// The bulkhead around a service.
pub type Bulkhead<S> =
    tower::util::MapErr<tower::load_shed::LoadShed<tower::limit::ConcurrencyLimit<S>>, fn(BoxError) -> FetchError>;

/// Limits `inner` to `max` requests in flight (until response headers).
#[derive(Debug, Clone, Copy)]
pub struct BulkheadLayer {
    max: usize,
}

impl BulkheadLayer {
    /// At most `max` (at least 1) concurrent requests.
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1) }
    }
}

/// The inner service's own error, or `Overloaded`: the only other error this
/// stack makes is `LoadShed`'s refusal.
fn to_fetch_error(e: BoxError) -> FetchError {
    e.downcast::<FetchError>().map_or(FetchError::Overloaded, |e| *e)
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let limited = LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(self.max).layer(inner));
        MapErrLayer::new(to_fetch_error as fn(BoxError) -> FetchError).layer(limited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[tokio::test]
    async fn refuses_at_once_when_full_and_keeps_inner_errors() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let inner = tower::service_fn(move |fail: bool| {
            let rx = rx.clone();
            async move {
                if fail {
                    return Err(FetchError::Status(http::StatusCode::BAD_GATEWAY));
                }
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, FetchError>(())
            }
        });
        let mut svc = BulkheadLayer::new(1).layer(inner);
        let first = svc.ready().await.unwrap().call(false);
        let handle = tokio::spawn(first);
        tokio::task::yield_now().await;
        // LoadShed reports "not ready" as an immediate error of the call.
        let second = svc.ready().await.unwrap().call(false).await;
        assert!(matches!(second, Err(FetchError::Overloaded)), "{second:?}");
        tx.send(()).unwrap();
        handle.await.unwrap().unwrap();
        let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert!(matches!(err, FetchError::Status(_)));
    }
}
