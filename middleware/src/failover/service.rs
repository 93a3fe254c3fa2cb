use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{Response, StatusCode};
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;
use tower::{Service, ServiceExt};

use super::attempt::{Attempt, AttemptKind, HedgeOutcome};
use super::events::{FailoverEvents, HedgeEvent, NoEvents};
use super::latency::{is_outlier, LatencyConfig};
use super::replica::{try_order, Replica};
use super::resume;
use crate::error::FetchError;
use crate::object::ObjectRequest;

/// Serves each request from the first replica, in priority order, whose
/// breaker admits it; moves on at once when a replica fails (connection
/// error, timeout, 5xx, or a refusal of the proxy's own credentials:
/// [`FetchError::Rejected`]); returns other 4xx answers as they are. With
/// [`failover_on_404`](FailoverBuilder::failover_on_404), a 404 tries the
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
/// - With [`hedge`](FailoverBuilder::hedge), a request without response
///   headers after the hedge delay is also sent to the next admitted
///   replica; the first answer wins and the other request is dropped
///   (cancelled: its breaker is not charged, its bulkhead slot is freed).
/// - With [`latency_aware`](FailoverBuilder::latency_aware), replicas of
///   equal priority share requests by weight and observed latency, and a
///   latency outlier is tried after its peers for a while.
/// - Each request sent to a replica carries an [`Attempt`] extension, and
///   the response the failover returns carries the answering [`Attempt`]
///   (and a [`HedgeOutcome`] when a hedge was sent).
///
/// The future is boxed: the "replica N, then N+1" loop with its hedge race,
/// retry backoff and budget is an `async fn`; a hand-written state enum for
/// it would be several hundred lines for one allocation per request.
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

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelay {
    /// After this long without response headers.
    Fixed(Duration),
    /// After the replica's own observed p95 time to headers (its last 64
    /// answers; 100 ms until it has answered 16 times).
    P95,
}

/// The delay a `P95` hedge uses before the replica has enough samples.
const P95_UNTIL_KNOWN: Duration = Duration::from_millis(100);

/// Hedged requests (see [`FailoverBuilder::hedge`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// When to hedge.
    pub delay: HedgeDelay,
    /// Hedges allowed as a percentage of requests (over 10 s): a budget.
    pub max_extra_percent: f32,
    /// Whether a replica without its own [`ReplicaHedge::enabled`] is
    /// hedged (`false`: only the replicas that enable it are).
    pub enabled_by_default: bool,
}

pub(crate) struct Shared<S> {
    pub(crate) bucket: Arc<str>,
    pub(crate) replicas: Vec<Replica<S>>,
    pub(crate) events: Arc<dyn FailoverEvents>,
    budget: Arc<TpsBudget>,
    backoff: ExponentialBackoffMaker<HasherRng>,
    max_retries: u32,
    failover_on_404: bool,
    hedge: Option<(HedgeConfig, TpsBudget)>,
    latency: Option<LatencyConfig>,
}

/// Configures a [`Failover`] (built once, so nothing can change after it is
/// cloned).
pub struct FailoverBuilder<S> {
    shared: Shared<S>,
}

impl<S> std::fmt::Debug for FailoverBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailoverBuilder")
            .field("bucket", &self.shared.bucket)
            .finish_non_exhaustive()
    }
}

impl<S> Failover<S> {
    /// A failover with the defaults of [`Failover::builder`].
    pub fn new(bucket: impl Into<Arc<str>>, replicas: Vec<Replica<S>>) -> Self {
        Self::builder(bucket, replicas).build()
    }

    /// Configures a failover over `replicas` of `bucket` (the name in logs
    /// and events). Defaults: one retry round after 50–500 ms, a budget of
    /// 20% retries over 10 s (at least 5 per second), mid-body resume, no
    /// failover on 404, no hedging, no latency-aware choice.
    pub fn builder(bucket: impl Into<Arc<str>>, replicas: Vec<Replica<S>>) -> FailoverBuilder<S> {
        FailoverBuilder {
            shared: Shared {
                bucket: bucket.into(),
                replicas,
                events: Arc::new(NoEvents),
                budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2)),
                backoff: backoff(Duration::from_millis(50), Duration::from_millis(500)),
                max_retries: 1,
                failover_on_404: false,
                hedge: None,
                latency: None,
            },
        }
    }

    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[Replica<S>] {
        &self.shared.replicas
    }
}

impl<S> FailoverBuilder<S> {
    /// Reports requests, failures, failovers and hedges to `events`.
    pub fn events(mut self, events: Arc<dyn FailoverEvents>) -> Self {
        self.shared.events = events;
        self
    }

    /// Retry rounds after every replica failed (0 disables), and their backoff bounds.
    pub fn retries(mut self, max_retries: u32, min_backoff: Duration, max_backoff: Duration) -> Self {
        self.shared.max_retries = max_retries;
        self.shared.backoff = backoff(min_backoff, max_backoff);
        self
    }

    /// Shares a retry budget (e.g. between the buckets of one process).
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.shared.budget = budget;
        self
    }

    /// Whether a 404 moves on to the next replica (off by default: a 404 is an answer).
    pub fn failover_on_404(mut self, on: bool) -> Self {
        self.shared.failover_on_404 = on;
        self
    }

    /// Hedges `GET`s and `HEAD`s (`None`: off, the default). At most one
    /// hedge per request, never once a body has started, and at most
    /// `max_extra_percent` of requests (tower's `TpsBudget` over 10 s).
    pub fn hedge(mut self, hedge: Option<HedgeConfig>) -> Self {
        self.shared.hedge = hedge.map(|h| {
            let percent = (h.max_extra_percent / 100.0).clamp(0.0, 1.0);
            (h, TpsBudget::new(Duration::from_secs(10), 0, percent))
        });
        self
    }

    /// Chooses among equal priorities by latency as well as weight, and
    /// demotes latency outliers (`None`: by weight only, the default).
    pub fn latency_aware(mut self, latency: Option<LatencyConfig>) -> Self {
        self.shared.latency = latency;
        self
    }

    /// The failover.
    pub fn build(self) -> Failover<S> {
        Failover {
            shared: Arc::new(self.shared),
        }
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

/// What a pass has seen so far.
#[derive(Default)]
struct Seen {
    failed: Option<(usize, FetchError)>,
    skipped: Option<(usize, FetchError)>,
    not_found: Option<(usize, Response<Body>)>,
    tried: bool,
}

impl<S> Shared<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    async fn serve(self: Arc<Self>, req: ObjectRequest) -> Result<Response<Body>, FetchError> {
        self.budget.deposit();
        if let Some((_, hedges)) = &self.hedge {
            hedges.deposit();
        }
        let mut backoff = self.backoff.clone().make_backoff();
        let mut round = 0;
        let mut attempts = 0;
        // The last real failure: a retry round that found every breaker open
        // (opened by the earlier rounds) reports it, not "breaker open".
        let mut cause: Option<FetchError> = None;
        loop {
            match self.pass(&req, None, None, &mut attempts).await {
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

    /// The hedge delay for a request now sent to replica `i`, if it may be hedged.
    fn hedge_delay(&self, i: usize) -> Option<Duration> {
        let (config, _) = self.hedge.as_ref()?;
        let own = self.replicas[i].hedge();
        if !own.enabled.unwrap_or(config.enabled_by_default) {
            return None;
        }
        Some(match own.delay.unwrap_or(config.delay) {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::P95 => self.replicas[i].latency().p95().unwrap_or(P95_UNTIL_KNOWN),
        })
    }

    /// Records a time to headers of replica `i`, and checks it against its
    /// equal-priority peers for outlier demotion.
    fn observe(&self, i: usize, rtt: Duration) {
        let now = Instant::now();
        let decay = self.latency.map_or(LatencyConfig::default().decay, |l| l.decay);
        let replica = &self.replicas[i];
        replica.latency().record(rtt, now, decay);
        let Some(config) = &self.latency else { return };
        let Some(estimate) = replica.latency().estimate(now, decay) else {
            return;
        };
        let best_peer = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(j, r)| *j != i && r.priority() == replica.priority())
            .filter_map(|(_, r)| r.latency().estimate(now, decay))
            .min_by(f64::total_cmp);
        let Some(best_peer) = best_peer else { return };
        if replica
            .latency()
            .outlier(is_outlier(estimate, best_peer, config), now, config)
        {
            tracing::warn!(
                bucket = %self.bucket,
                replica = %replica.name(),
                latency_ms = estimate * 1000.0,
                best_peer_ms = best_peer * 1000.0,
                demoted_for_seconds = config.demotion.as_secs(),
                "Replica '{}' is a latency outlier: tried after its peers for a while",
                replica.name()
            );
            self.events.demoted(&self.bucket, replica.name());
        }
    }

    /// Sends `req` to replica `i` (admitted: `svc` is ready) as attempt
    /// `number` of kind `kind`, timing its headers.
    async fn send(
        &self,
        i: usize,
        mut svc: S,
        req: &ObjectRequest,
        attempt: Attempt,
    ) -> Result<Response<Body>, FetchError> {
        let replica = &self.replicas[i];
        let mut req = req.clone();
        req.extensions_mut().insert(attempt);
        self.events.request(&self.bucket, replica.name());
        let _pending = replica.latency().start();
        let started = Instant::now();
        let answer = svc.call(req).await;
        if answer.is_ok() {
            self.observe(i, started.elapsed());
        }
        answer.map(|mut res| {
            res.extensions_mut().insert(attempt);
            res
        })
    }

    /// Judges one answer of replica `i`: `Some` when it is the pass's answer.
    fn judge(
        &self,
        i: usize,
        answer: Result<Response<Body>, FetchError>,
        seen: &mut Seen,
        accept: Option<Accept<'_>>,
    ) -> Option<Response<Body>> {
        let replica = &self.replicas[i];
        match answer {
            Ok(res) if self.failover_on_404 && accept.is_none() && res.status() == StatusCode::NOT_FOUND => {
                // Maybe not replicated here yet: the next replica may have it.
                seen.failed = None;
                seen.skipped = None;
                if seen.not_found.is_none() {
                    seen.not_found = Some((i, res));
                }
                None
            }
            Ok(res) if accept.is_none_or(|ok| ok(&res)) => Some(res),
            Ok(res) => {
                tracing::debug!(replica = %replica.name(), status = %res.status(), "answer not usable here");
                seen.skipped = Some((i, FetchError::Status(res.status())));
                None
            }
            Err(FetchError::Overloaded) => {
                seen.skipped = Some((i, FetchError::Overloaded));
                None
            }
            Err(e) => {
                self.events.failure(&self.bucket, replica.name(), &e);
                seen.tried = true;
                seen.failed = Some((i, e));
                None
            }
        }
    }

    /// Reports moving on to replica `i` after what the pass has seen.
    fn report_move(&self, i: usize, seen: &Seen) {
        let to = self.replicas[i].name();
        if let Some((from, e)) = &seen.failed {
            let from = self.replicas[*from].name();
            tracing::warn!(bucket = %self.bucket, error = %e, "Replica '{}' failed, trying '{}'", from, to);
            self.events.failover(&self.bucket, from, to);
        } else if let Some((from, _)) = &seen.not_found {
            let from = self.replicas[*from].name();
            tracing::info!(bucket = %self.bucket, "Replica '{}' answered 404, trying '{}'", from, to);
            self.events.failover(&self.bucket, from, to);
        } else if let Some((from, _)) = &seen.skipped {
            self.events.failover(&self.bucket, self.replicas[*from].name(), to);
        }
    }

    /// The next replica of `order` that admits a request now, taken out of
    /// `order`, if the hedge budget allows one more hedge.
    async fn hedge_target(&self, order: &mut VecDeque<usize>) -> Option<(usize, S)> {
        let (_, budget) = self.hedge.as_ref()?;
        for pos in 0..order.len() {
            let j = order[pos];
            let mut svc = self.replicas[j].service().clone();
            if svc.ready().await.is_err() {
                continue;
            }
            if !budget.withdraw() {
                tracing::debug!(bucket = %self.bucket, "hedge budget spent: not hedging");
                return None;
            }
            order.remove(pos);
            return Some((j, svc));
        }
        None
    }

    /// Tries the replicas in order (`last` goes last, `accept` filters
    /// answers) and returns the first acceptable answer. A first pass
    /// (`accept` unset) may hedge once.
    pub(crate) async fn pass(
        &self,
        req: &ObjectRequest,
        last: Option<usize>,
        accept: Option<Accept<'_>>,
        attempts: &mut u32,
    ) -> Result<(usize, Response<Body>), PassFailed> {
        let mut order: VecDeque<usize> = try_order(&self.replicas, self.latency.as_ref()).into();
        if let Some(last) = last {
            order.retain(|&i| i != last);
            order.push_back(last);
        }
        let mut seen = Seen::default();
        let mut may_hedge = accept.is_none();
        while let Some(i) = order.pop_front() {
            let replica = &self.replicas[i];
            let mut svc = replica.service().clone();
            if let Err(e) = svc.ready().await {
                tracing::debug!(bucket = %self.bucket, replica = %replica.name(), reason = %e, "replica skipped");
                seen.skipped = Some((i, e));
                continue;
            }
            self.report_move(i, &seen);
            *attempts += 1;
            let kind = if *attempts == 1 {
                AttemptKind::Primary
            } else {
                AttemptKind::Failover
            };
            let attempt = Attempt {
                number: *attempts,
                kind,
            };
            let call = self.send(i, svc, req, attempt);
            let delay = if may_hedge { self.hedge_delay(i) } else { None };
            let Some(delay) = delay else {
                if let Some(res) = self.judge(i, call.await, &mut seen, accept) {
                    return Ok((i, res));
                }
                continue;
            };
            tokio::pin!(call);
            let early = tokio::select! {
                biased;
                answer = &mut call => Some(answer),
                () = tokio::time::sleep(delay) => None,
            };
            if let Some(answer) = early {
                if let Some(res) = self.judge(i, answer, &mut seen, accept) {
                    return Ok((i, res));
                }
                continue;
            }
            // No headers after the delay: hedge to the next admitted replica.
            let Some((j, hedge_svc)) = self.hedge_target(&mut order).await else {
                if let Some(res) = self.judge(i, call.await, &mut seen, accept) {
                    return Ok((i, res));
                }
                continue;
            };
            may_hedge = false;
            let hedged_at = Instant::now();
            let first = replica.name();
            let second = self.replicas[j].name();
            tracing::debug!(bucket = %self.bucket, delay_ms = delay.as_millis() as u64,
                "Replica '{}' has not answered: hedging to '{}'", first, second);
            self.events.hedge(&self.bucket, second, HedgeEvent::Sent);
            *attempts += 1;
            let hedge_attempt = Attempt {
                number: *attempts,
                kind: AttemptKind::Hedge,
            };
            let hedge = self.send(j, hedge_svc, req, hedge_attempt);
            tokio::pin!(hedge);
            let first_answer = tokio::select! {
                answer = &mut call => (i, answer),
                answer = &mut hedge => (j, answer),
            };
            let (winner, answer) = first_answer;
            let other = if winner == i { j } else { i };
            if let Some(res) = self.judge(winner, answer, &mut seen, accept) {
                // The other request is dropped here: cancelled, its breaker
                // uncharged, its bulkhead slot freed. Its elapsed time is a
                // lower bound of its latency: count it, so a replica that
                // keeps losing races is seen as slow.
                let elapsed = if other == i {
                    hedged_at.elapsed() + delay
                } else {
                    hedged_at.elapsed()
                };
                self.observe(other, elapsed);
                let outcome = if winner == j {
                    self.events.hedge(&self.bucket, second, HedgeEvent::Won);
                    tracing::debug!(bucket = %self.bucket, "hedge to '{}' answered first", second);
                    HedgeOutcome::Won
                } else {
                    HedgeOutcome::Lost
                };
                let mut res = res;
                res.extensions_mut().insert(outcome);
                return Ok((winner, res));
            }
            // The first answer was not usable: the other one may be.
            let answer = if other == i { call.await } else { hedge.await };
            if let Some(mut res) = self.judge(other, answer, &mut seen, accept) {
                let outcome = if other == j {
                    self.events.hedge(&self.bucket, second, HedgeEvent::Won);
                    HedgeOutcome::Won
                } else {
                    HedgeOutcome::Lost
                };
                res.extensions_mut().insert(outcome);
                return Ok((other, res));
            }
        }
        if let Some(found) = seen.not_found {
            // No replica had it (or the rest failed): the 404 is the answer.
            return Ok(found);
        }
        if let Some((from, e)) = &seen.failed {
            tracing::warn!(
                bucket = %self.bucket,
                error = %e,
                "Replica '{}' failed, no replica left to try",
                self.replicas[*from].name()
            );
        }
        let tried = seen.tried;
        let error = seen
            .failed
            .or(seen.skipped)
            .map(|(_, e)| e)
            .unwrap_or(FetchError::NoReplica);
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
        let failover = Failover::builder("bkt", vec![b.with_priority(2), a.with_priority(1)])
            .events(events.clone())
            .build();
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
        let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
            .failover_on_404(true)
            .events(events.clone())
            .build();
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
        assert_eq!(*events.0.lock().unwrap(), vec!["a->b"]);

        // Missing everywhere, or missing on one and failing on the rest: a 404.
        let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
        let (b, _) = scripted("b", vec![Err(())], Arc::new(AtomicUsize::new(0)));
        let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
            .failover_on_404(true)
            .build();
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
        let failover = Failover::builder("bkt", vec![a])
            .retries(2, Duration::from_millis(10), Duration::from_millis(20))
            .build();
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "a");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, _) = scripted("a", vec![Err(()), Ok(200)], calls.clone());
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
        let failover = Failover::builder("bkt", vec![a])
            .retries(3, Duration::from_millis(10), Duration::from_millis(20))
            .budget(budget)
            .build();
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

    /// A replica answering 200 with its name after `delay`, counting calls
    /// and recording the attempts it was sent.
    fn slow(
        name: &'static str,
        delay: Duration,
        seen: Arc<Mutex<Vec<Attempt>>>,
    ) -> (Replica<Svc>, Arc<CircuitBreaker>) {
        let inner = tower::service_fn(move |req: ObjectRequest| {
            seen.lock().unwrap().push(*req.extensions().get::<Attempt>().unwrap());
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, FetchError>(Response::new(Body::from(name)))
            }
        });
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        });
        let svc = BoxCloneSyncService::new(
            CircuitBreakerLayer::new(breaker.clone()).layer(crate::bulkhead::BulkheadLayer::new(1).layer(inner)),
        );
        (Replica::new(name, svc, breaker.clone(), ReplicaHealth::new()), breaker)
    }

    #[derive(Default)]
    struct Hedges(Mutex<Vec<String>>);

    impl FailoverEvents for Hedges {
        fn hedge(&self, _bucket: &str, replica: &str, event: HedgeEvent) {
            self.0.lock().unwrap().push(format!("{replica}:{}", event.as_str()));
        }
    }

    fn hedge(percent: f32) -> Option<HedgeConfig> {
        Some(HedgeConfig {
            delay: HedgeDelay::Fixed(Duration::from_millis(50)),
            max_extra_percent: percent,
            enabled_by_default: true,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_replica_is_hedged_and_the_loser_is_cancelled_uncharged() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (a, a_breaker) = slow("a", Duration::from_secs(30), sent.clone());
        let (b, _) = slow("b", Duration::from_millis(10), sent.clone());
        let events = Arc::new(Hedges::default());
        let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
            .hedge(hedge(100.0))
            .events(events.clone())
            .build();
        let started = tokio::time::Instant::now();
        let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(60));
        assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Won));
        assert_eq!(
            res.extensions().get::<Attempt>(),
            Some(&Attempt {
                number: 2,
                kind: AttemptKind::Hedge
            })
        );
        assert_eq!(body(res).await, "b");
        assert_eq!(
            *sent.lock().unwrap(),
            vec![
                Attempt {
                    number: 1,
                    kind: AttemptKind::Primary
                },
                Attempt {
                    number: 2,
                    kind: AttemptKind::Hedge
                }
            ]
        );
        assert_eq!(*events.0.lock().unwrap(), vec!["b:sent", "b:won"]);
        // The cancelled request charged nothing (threshold 1) and freed its
        // bulkhead slot (of 1): the next request is admitted to `a` again.
        assert_eq!(a_breaker.state(), crate::breaker::BreakerState::Closed);
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
        assert_eq!(sent.lock().unwrap()[2].kind, AttemptKind::Primary);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_is_not_hedged_and_at_most_one_hedge_per_request() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (a, _) = slow("a", Duration::from_millis(10), sent.clone());
        let (b, _) = slow("b", Duration::from_secs(1), sent.clone());
        let (c, _) = slow("c", Duration::from_secs(1), sent.clone());
        let failover = Failover::builder("bkt", vec![a.with_priority(1)])
            .hedge(hedge(100.0))
            .build();
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(res.extensions().get::<HedgeOutcome>(), None);
        assert_eq!(sent.lock().unwrap().len(), 1);
        sent.lock().unwrap().clear();
        let (a, _) = slow("a", Duration::from_secs(2), sent.clone());
        let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2), c.with_priority(3)])
            .hedge(hedge(100.0))
            .build();
        let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Won));
        assert_eq!(body(res).await, "b");
        assert_eq!(sent.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_hedges() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (a, _) = slow("a", Duration::from_millis(100), sent.clone());
        let (b, _) = slow("b", Duration::from_millis(100), sent.clone());
        let events = Arc::new(Hedges::default());
        let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
            .hedge(hedge(10.0))
            .events(events.clone())
            .build();
        for _ in 0..50 {
            failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        }
        let hedges = events.0.lock().unwrap().iter().filter(|e| e.ends_with(":sent")).count();
        // 10% of 50 requests.
        assert!((1..=5).contains(&hedges), "{hedges}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_overrides_the_hedge_delay_or_opts_out() {
        use crate::failover::ReplicaHedge;
        let sent = Arc::new(Mutex::new(Vec::new()));
        let run = |own: ReplicaHedge, default_on: bool| {
            let sent = sent.clone();
            async move {
                sent.lock().unwrap().clear();
                let (a, _) = slow("a", Duration::from_millis(500), sent.clone());
                let (b, _) = slow("b", Duration::from_millis(10), sent.clone());
                let mut config = hedge(100.0).unwrap();
                config.enabled_by_default = default_on;
                let failover = Failover::builder("bkt", vec![a.with_priority(1).with_hedge(own), b.with_priority(2)])
                    .hedge(Some(config))
                    .build();
                let started = tokio::time::Instant::now();
                let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
                (started.elapsed(), body(res).await, sent.lock().unwrap().len())
            }
        };
        // The failover's 50 ms.
        assert_eq!(
            run(ReplicaHedge::default(), true).await,
            (Duration::from_millis(60), "b".into(), 2)
        );
        // The replica's own delay.
        let own = ReplicaHedge {
            enabled: None,
            delay: Some(HedgeDelay::Fixed(Duration::from_millis(200))),
        };
        assert_eq!(run(own, true).await, (Duration::from_millis(210), "b".into(), 2));
        // Opted out: waits for its own answer.
        let out = ReplicaHedge {
            enabled: Some(false),
            delay: None,
        };
        assert_eq!(run(out, true).await, (Duration::from_millis(500), "a".into(), 1));
        // Hedging off for the bucket, on for this replica alone.
        let only = ReplicaHedge {
            enabled: Some(true),
            delay: None,
        };
        assert_eq!(run(only, false).await, (Duration::from_millis(60), "b".into(), 2));
        assert_eq!(run(ReplicaHedge::default(), false).await.2, 1);
    }
}
