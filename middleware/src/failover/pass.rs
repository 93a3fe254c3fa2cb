//! The failover's loop: retry rounds of passes over the replicas in try
//! order, each answer judged (answer, failure, or a reason to move on), a
//! hedge raced against a slow replica, and the state every clone of a
//! [`Failover`](super::Failover) shares.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Response, StatusCode};
use tower::retry::backoff::{Backoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::rng::HasherRng;
use tower::{Service, ServiceExt};

use super::attempt::{Attempt, AttemptKind, HedgeOutcome};
use super::events::{FailoverEvents, HedgeEvent};
use super::hedge::{HedgeConfig, HedgeDelay, P95_UNTIL_KNOWN};
use super::latency::{is_outlier, LatencyConfig};
use super::replica::{try_order, Replica};
use super::resume;
use crate::error::FetchError;
use crate::object::ObjectRequest;

pub(crate) struct Shared<S> {
    pub(crate) bucket: Arc<str>,
    pub(crate) replicas: Vec<Replica<S>>,
    pub(crate) events: Arc<dyn FailoverEvents>,
    pub(super) budget: Arc<TpsBudget>,
    pub(super) backoff: ExponentialBackoffMaker<HasherRng>,
    pub(super) max_retries: u32,
    pub(super) failover_on_404: bool,
    pub(super) hedge: Option<(HedgeConfig, TpsBudget)>,
    pub(super) latency: Option<LatencyConfig>,
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
    pub(super) async fn serve(self: Arc<Self>, req: ObjectRequest) -> Result<Response<Body>, FetchError> {
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
