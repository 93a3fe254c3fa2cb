//! The [`Failover`] service: its handle and its `Service` impl. It is
//! configured in [`builder`](super::builder); the loop it runs is in
//! [`pass`](super::pass).

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::Response;
use tower::retry::budget::Budget;
use tower::Service;

use super::future::FailoverFuture;
use super::pass::Shared;
use super::replica::Replica;
use crate::error::FetchError;
use crate::object::ObjectRequest;

/// Serves each request from the first replica, in priority order, whose
/// breaker admits it; moves on at once when a replica fails (connection
/// error, timeout, 5xx, or a refusal of the proxy's own credentials:
/// [`FetchError::Rejected`]); returns other 4xx answers as they are. With
/// [`failover_on_404`](super::FailoverBuilder::failover_on_404), a 404 tries the
/// next replica too (replicas behind asynchronous replication), and the
/// client gets the 404 only when no replica has the object.
///
/// - Readiness is per replica and immediate (an open breaker or a full
///   bulkhead refuses at once), so the failover never waits on a replica it
///   will not use.
/// - When every replica failed, the whole pass is retried after an
///   exponential backoff with jitter, at most `max_retries` times and only
///   while the retry budget allows (so a full outage does not multiply load).
/// - A `GET` whose body breaks after the headers were sent is resumed from
///   the next replica with a `Range` request from the byte already sent,
///   guarded by the `ETag`; when nothing can continue, the body ends with an
///   error (the connection is cut: never a silently truncated 200).
/// - With [`hedge`](super::FailoverBuilder::hedge), a request without response
///   headers after the hedge delay is also sent to the next admitted
///   replica; the first answer wins and the other request is dropped
///   (cancelled: its breaker is not charged, its bulkhead slot is freed).
/// - With [`latency_aware`](super::FailoverBuilder::latency_aware), replicas of
///   equal priority share requests by weight and observed latency, and a
///   latency outlier is tried after its peers for a while.
/// - Each request sent to a replica carries an [`Attempt`](super::Attempt) extension, and
///   the response the failover returns carries the answering [`Attempt`](super::Attempt)
///   (and a [`HedgeOutcome`](super::HedgeOutcome) when a hedge was sent).
///
/// Its future, [`FailoverFuture`], is a named state machine: no allocation
/// per request for the loop itself.
///
/// Logs `Replica 'primary' failed, trying 'backup'` at WARN with the cause.
pub struct Failover<S> {
    pub(super) shared: Arc<Shared<S>>,
}

impl<S> Clone for Failover<S> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Failover<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failover")
            .field("bucket", &self.shared.bucket)
            .field(
                "replicas",
                &self.shared.replicas.iter().map(|r| r.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<S> Failover<S> {
    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[Replica<S>] {
        &self.shared.replicas
    }
}

impl<S> Service<ObjectRequest> for Failover<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = FetchError;
    type Future = FailoverFuture<S>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        // Admission is decided per replica, in `call`, in priority order.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ObjectRequest) -> Self::Future {
        self.shared.budget.deposit();
        if let Some((_, hedges)) = &self.shared.hedge {
            hedges.deposit();
        }
        FailoverFuture::new(self.shared.clone(), req)
    }
}
