use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Response, StatusCode};
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;
use tower::{Service, ServiceExt};

use super::events::{FailoverEvents, NoEvents};
use super::replica::{try_order, Replica};
use super::resume;
use crate::error::FetchError;
use crate::object::ObjectRequest;

/// Serves each request from the first replica, in priority order, whose
/// breaker admits it; moves on at once when a replica fails (connection
/// error, timeout, 5xx, or a refusal of the proxy's own credentials:
/// [`FetchError::Rejected`]); returns other 4xx answers as they are. With
/// [`with_failover_on_404`](Failover::with_failover_on_404), a 404 tries the
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
///
/// Logs `Replica 'primary' failed, trying 'backup'` at WARN with the cause.
pub struct Failover<S> {
    shared: Arc<Shared<S>>,
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

pub(crate) struct Shared<S> {
    pub(crate) bucket: Arc<str>,
    pub(crate) replicas: Vec<Replica<S>>,
    pub(crate) events: Arc<dyn FailoverEvents>,
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoffMaker<HasherRng>,
    max_retries: u32,
    pub(crate) resume: bool,
    failover_on_404: bool,
}

impl<S> Failover<S> {
    /// A failover over `replicas` of `bucket` (the name in logs and events),
    /// with one retry round after 50–500 ms, a budget of 20% retries over
    /// 10 s (at least 5 per second), and mid-body resume on.
    pub fn new(bucket: impl Into<Arc<str>>, replicas: Vec<Replica<S>>) -> Self {
        Self {
            shared: Arc::new(Shared {
                bucket: bucket.into(),
                replicas,
                events: Arc::new(NoEvents),
                budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2)),
                backoff: backoff(Duration::from_millis(50), Duration::from_millis(500)),
                max_retries: 1,
                resume: true,
                failover_on_404: false,
            }),
        }
    }

    fn update(self, f: impl FnOnce(&mut Shared<S>)) -> Self {
        let mut shared =
            Arc::try_unwrap(self.shared).unwrap_or_else(|_| panic!("configure a Failover before cloning it"));
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Reports requests, failures and failovers to `events`.
    pub fn with_events(self, events: Arc<dyn FailoverEvents>) -> Self {
        self.update(|s| s.events = events)
    }

    /// Retry rounds after every replica failed (0 disables), and their backoff bounds.
    pub fn with_retries(self, max_retries: u32, min_backoff: Duration, max_backoff: Duration) -> Self {
        self.update(|s| {
            s.max_retries = max_retries;
            s.backoff = backoff(min_backoff, max_backoff);
        })
    }

    /// Shares a retry budget (e.g. between the buckets of one process).
    pub fn with_budget(self, budget: Arc<TpsBudget>) -> Self {
        self.update(|s| s.budget = budget)
    }

    /// Turns mid-body resume on or off.
    pub fn with_resume(self, resume: bool) -> Self {
        self.update(|s| s.resume = resume)
    }

    /// Whether a 404 moves on to the next replica (off by default: a 404 is an answer).
    pub fn with_failover_on_404(self, on: bool) -> Self {
        self.update(|s| s.failover_on_404 = on)
    }

    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[Replica<S>] {
        &self.shared.replicas
    }
}

fn backoff(min: Duration, max: Duration) -> ExponentialBackoffMaker<HasherRng> {
    let min = min.max(Duration::from_millis(1));
    let max = max.max(min);
    ExponentialBackoffMaker::new(min, max, 1.0, HasherRng::default()).expect("valid backoff bounds")
}

impl<S> Service<ObjectRequest> for Failover<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = FetchError;
    type Future = BoxFuture<'static, Result<Response<Body>, FetchError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        // Admission is decided per replica, in `call`, in priority order.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ObjectRequest) -> Self::Future {
        Box::pin(self.shared.clone().serve(req))
    }
}

/// Which answers a pass accepts (a resume wants a matching 206).
pub(crate) type Accept<'a> = &'a (dyn Fn(&Response<Body>) -> bool + Send + Sync);

/// How one pass over the replicas ended without an answer.
pub(crate) struct PassFailed {
    pub(crate) error: FetchError,
    pub(crate) tried: bool,
}

impl<S> Shared<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    async fn serve(self: Arc<Self>, req: ObjectRequest) -> Result<Response<Body>, FetchError> {
        self.budget.deposit();
        let mut backoff = self.backoff.clone().make_backoff();
        let mut round = 0;
        // The last real failure: a retry round that found every breaker open
        // (opened by the earlier rounds) reports it, not "breaker open".
        let mut cause: Option<FetchError> = None;
        loop {
            match self.pass(&req, None, None).await {
                Ok((index, res)) => return Ok(resume::wrap(self.clone(), &req, index, res)),
                Err(failed) => {
                    if !failed.tried {
                        return Err(cause.unwrap_or(failed.error));
                    }
                    if round >= self.max_retries || !self.budget.withdraw() {
                        return Err(failed.error);
                    }
                    cause = Some(failed.error);
                    round += 1;
                    backoff.next_backoff().await;
                }
            }
        }
    }

    /// Tries the replicas in order (`last` goes last, `accept` filters
    /// answers) and returns the first acceptable answer.
    pub(crate) async fn pass(
        &self,
        req: &ObjectRequest,
        last: Option<usize>,
        accept: Option<Accept<'_>>,
    ) -> Result<(usize, Response<Body>), PassFailed> {
        let mut order = try_order(&self.replicas);
        if let Some(last) = last {
            order.retain(|&i| i != last);
            order.push(last);
        }
        let mut failed: Option<(usize, FetchError)> = None;
        let mut skipped: Option<(usize, FetchError)> = None;
        let mut not_found: Option<(usize, Response<Body>)> = None;
        let mut tried = false;
        for i in order {
            let replica = &self.replicas[i];
            let mut svc = replica.service().clone();
            if let Err(e) = svc.ready().await {
                tracing::debug!(bucket = %self.bucket, replica = %replica.name(), reason = %e, "replica skipped");
                skipped = Some((i, e));
                continue;
            }
            if let Some((from, e)) = &failed {
                let from = self.replicas[*from].name();
                tracing::warn!(bucket = %self.bucket, error = %e, "Replica '{}' failed, trying '{}'", from, replica.name());
                self.events.failover(&self.bucket, from, replica.name());
            } else if let Some((from, _)) = &not_found {
                let from = self.replicas[*from].name();
                tracing::info!(bucket = %self.bucket, "Replica '{}' answered 404, trying '{}'", from, replica.name());
                self.events.failover(&self.bucket, from, replica.name());
            } else if let Some((from, _)) = &skipped {
                self.events
                    .failover(&self.bucket, self.replicas[*from].name(), replica.name());
            }
            self.events.request(&self.bucket, replica.name());
            match svc.call(req.clone()).await {
                Ok(res) if self.failover_on_404 && accept.is_none() && res.status() == StatusCode::NOT_FOUND => {
                    // Maybe not replicated here yet: the next replica may have it.
                    failed = None;
                    skipped = None;
                    not_found = Some((i, res));
                }
                Ok(res) if accept.is_none_or(|ok| ok(&res)) => return Ok((i, res)),
                Ok(res) => {
                    tracing::debug!(replica = %replica.name(), status = %res.status(), "answer not usable here");
                    skipped = Some((i, FetchError::Status(res.status())));
                }
                Err(FetchError::Overloaded) => skipped = Some((i, FetchError::Overloaded)),
                Err(e) => {
                    self.events.failure(&self.bucket, replica.name(), &e);
                    tried = true;
                    failed = Some((i, e));
                }
            }
        }
        if let Some(found) = not_found {
            // No replica had it (or the rest failed): the 404 is the answer.
            return Ok(found);
        }
        if let Some((from, e)) = &failed {
            tracing::warn!(
                bucket = %self.bucket,
                error = %e,
                "Replica '{}' failed, no replica left to try",
                self.replicas[*from].name()
            );
        }
        let error = failed.or(skipped).map(|(_, e)| e).unwrap_or(FetchError::NoReplica);
        Err(PassFailed { error, tried })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use http::StatusCode;
    use tower::util::BoxCloneSyncService;

    use super::*;
    use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
    use crate::health::ReplicaHealth;

    type Svc = BoxCloneSyncService<ObjectRequest, Response<Body>, FetchError>;

    /// A replica answering from a script: each call pops the next outcome
    /// (the last one repeats).
    fn scripted(
        name: &'static str,
        script: Vec<Result<u16, ()>>,
        calls: Arc<AtomicUsize>,
    ) -> (Replica<Svc>, Arc<CircuitBreaker>) {
        let script = Arc::new(Mutex::new(script));
        let inner = tower::service_fn(move |_req: ObjectRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut s = script.lock().unwrap();
            let next = if s.len() > 1 { s.remove(0) } else { s[0] };
            async move {
                match next {
                    Ok(status) => {
                        let mut res = Response::new(Body::from(name));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok(res)
                    }
                    Err(()) => Err(FetchError::Timeout(Duration::from_secs(1))),
                }
            }
        });
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        });
        let svc = BoxCloneSyncService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner));
        (Replica::new(name, svc, breaker.clone(), ReplicaHealth::new()), breaker)
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl FailoverEvents for Recorder {
        fn failover(&self, _bucket: &str, from: &str, to: &str) {
            self.0.lock().unwrap().push(format!("{from}->{to}"));
        }
    }

    async fn body(res: Response<Body>) -> String {
        String::from_utf8(axum::body::to_bytes(res.into_body(), 1024).await.unwrap().to_vec()).unwrap()
    }

    use tower::Layer;

    #[tokio::test(start_paused = true)]
    async fn fails_over_in_priority_order_and_reports_it() {
        let (a_calls, b_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, _) = scripted("a", vec![Err(())], a_calls.clone());
        let (b, _) = scripted("b", vec![Ok(200)], b_calls.clone());
        let events = Arc::new(Recorder::default());
        let failover = Failover::new("bkt", vec![b.with_priority(2), a.with_priority(1)]).with_events(events.clone());
        let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
        assert_eq!((a_calls.load(Ordering::SeqCst), b_calls.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(*events.0.lock().unwrap(), vec!["a->b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_is_skipped_without_a_call() {
        let a_calls = Arc::new(AtomicUsize::new(0));
        let (a, a_breaker) = scripted("a", vec![Ok(200)], a_calls.clone());
        let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
        a_breaker.record_failure();
        a_breaker.record_failure();
        let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)]);
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
        assert_eq!(a_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_answers_not_failures() {
        let b_calls = Arc::new(AtomicUsize::new(0));
        let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
        let (b, _) = scripted("b", vec![Ok(200)], b_calls.clone());
        let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)]);
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(b_calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn with_failover_on_404_a_miss_tries_the_next_replica() {
        let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
        let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
        let events = Arc::new(Recorder::default());
        let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)])
            .with_failover_on_404(true)
            .with_events(events.clone());
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
        assert_eq!(*events.0.lock().unwrap(), vec!["a->b"]);

        // Missing everywhere, or missing on one and failing on the rest: a 404.
        let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
        let (b, _) = scripted("b", vec![Err(())], Arc::new(AtomicUsize::new(0)));
        let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)]).with_failover_on_404(true);
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(body(res).await, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_replica_is_a_failure_and_the_next_one_serves() {
        let a_calls = Arc::new(AtomicUsize::new(0));
        let rejected = tower::service_fn(move |_req: ObjectRequest| {
            a_calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<Response<Body>, _>(FetchError::Rejected {
                    status: StatusCode::FORBIDDEN,
                    code: Some("SignatureDoesNotMatch".into()),
                })
            }
        });
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        });
        let svc: Svc = BoxCloneSyncService::new(CircuitBreakerLayer::new(breaker.clone()).layer(rejected));
        let a = Replica::new("a", svc, breaker.clone(), ReplicaHealth::new()).with_priority(1);
        let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
        let failover = Failover::new("bkt", vec![a, b.with_priority(2)]);
        for _ in 0..2 {
            let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
            assert_eq!(body(res).await, "b");
        }
        assert_eq!(breaker.state(), crate::breaker::BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_a_failed_pass_after_backoff_within_the_budget() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, _) = scripted("a", vec![Err(()), Ok(200)], calls.clone());
        let failover =
            Failover::new("bkt", vec![a]).with_retries(2, Duration::from_millis(10), Duration::from_millis(20));
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "a");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, _) = scripted("a", vec![Err(()), Ok(200)], calls.clone());
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
        let failover = Failover::new("bkt", vec![a])
            .with_retries(3, Duration::from_millis(10), Duration::from_millis(20))
            .with_budget(budget);
        let err = failover.oneshot(ObjectRequest::get("k")).await.unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_admissible_is_a_fast_unavailable() {
        let (a, a_breaker) = scripted("a", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
        a_breaker.record_failure();
        a_breaker.record_failure();
        let err = Failover::new("bkt", vec![a])
            .oneshot(ObjectRequest::get("k"))
            .await
            .unwrap_err();
        assert!(matches!(err, FetchError::BreakerOpen), "{err}");
    }
}
