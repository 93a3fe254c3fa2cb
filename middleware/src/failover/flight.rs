//! One flight of a pass: the request sent to a replica, timed to its
//! headers, with the hedge delay's timer; when the timer fires first, the
//! next admitted replica gets a hedge and the two race (see
//! [`future`](super::future) for the pass around it).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use http::Response;
use tokio::time::Sleep;
use tower::retry::budget::Budget;
use tower::Service;

use super::attempt::{Attempt, AttemptKind, HedgeOutcome};
use super::events::HedgeEvent;
use super::latency::Pending;
use super::pass::{Accept, Seen, Shared};
use crate::error::FetchError;
use crate::object::ObjectRequest;

pin_project_lite::pin_project! {
    /// A request sent to replica `i`, timed to its headers, and its hedge.
    pub(super) struct Flight<S, F> {
        i: usize,
        // `None` once answered.
        #[pin]
        call: Option<Sent<F>>,
        // The hedge delay, while it runs.
        #[pin]
        timer: Option<Sleep>,
        delay: Duration,
        // Looking for a hedge target: a position in the order, and the
        // candidate being asked for readiness.
        seeking: Option<(usize, Option<S>)>,
        // The hedge's replica, once sent (its request in `hedge`).
        hedged: Option<(usize, Instant)>,
        #[pin]
        hedge: Option<Sent<F>>,
    }
}

pin_project_lite::pin_project! {
    /// A replica's response future, with when it was sent and as which attempt.
    pub(super) struct Sent<F> {
        // Boxed: a flight holds two (the call and its hedge) and the run
        // holding the flight moves while it is built; a box keeps both small.
        fut: Pin<Box<F>>,
        started: Instant,
        attempt: Attempt,
        _pending: Pending,
    }
}

impl<F> Future for Sent<F>
where
    F: Future<Output = Result<Response<Body>, FetchError>>,
{
    type Output = (Duration, Attempt, Result<Response<Body>, FetchError>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = ready!(this.fut.as_mut().poll(cx));
        Poll::Ready((this.started.elapsed(), *this.attempt, answer))
    }
}

/// What a flight came to.
pub(super) enum Landed {
    /// The pass's answer, from replica `.0`.
    Answer(usize, Response<Body>),
    /// Nothing usable: on to the next replica.
    MoveOn,
}

/// The state of the pass a flight reads and updates.
pub(super) struct PassState<'a, S> {
    pub(super) shared: &'a Shared<S>,
    pub(super) req: &'a ObjectRequest,
    pub(super) accept: Option<Accept<'a>>,
    pub(super) order: &'a mut VecDeque<usize>,
    pub(super) seen: &'a mut Seen,
    pub(super) attempts: &'a mut u32,
    pub(super) may_hedge: &'a mut bool,
}

impl<S> Shared<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// Sends `req` to replica `i` through `svc` (ready) as `attempt`.
    pub(super) fn send(&self, i: usize, svc: &mut S, req: &ObjectRequest, attempt: Attempt) -> Sent<S::Future> {
        let replica = &self.replicas[i];
        let req = req.clone().with_attempt(attempt);
        self.events.request(&self.bucket, replica.name());
        let pending = replica.latency().start();
        Sent {
            started: Instant::now(),
            fut: Box::pin(svc.call(req)),
            attempt,
            _pending: pending,
        }
    }

    /// Replica `i` answered after `rtt`: a success is timed.
    pub(super) fn landed(
        &self,
        i: usize,
        (rtt, answer): (Duration, Result<Response<Body>, FetchError>),
    ) -> Result<Response<Body>, FetchError> {
        if answer.is_ok() {
            self.observe(i, rtt);
        }
        answer
    }
}

impl<S> Flight<S, S::Future>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// A flight for the request just sent to replica `i`, hedged after `delay`.
    pub(super) fn new(i: usize, call: Sent<S::Future>, delay: Option<Duration>) -> Self {
        Self {
            i,
            call: Some(call),
            timer: delay.map(tokio::time::sleep),
            delay: delay.unwrap_or_default(),
            seeking: None,
            hedged: None,
            hedge: None,
        }
    }

    /// Drives the flight; `pass` is the state of the pass it belongs to.
    pub(super) fn poll_flight(self: Pin<&mut Self>, cx: &mut Context<'_>, pass: &mut PassState<'_, S>) -> Poll<Landed> {
        let mut this = self.project();
        let shared = pass.shared;
        let i = *this.i;
        loop {
            let Some((j, hedged_at)) = *this.hedged else {
                // The request alone, its answer first (a ready answer is
                // never hedged).
                let Some(call) = this.call.as_mut().as_pin_mut() else {
                    unreachable!("a flight without a hedge ends with its answer");
                };
                if let Poll::Ready((rtt, _, answer)) = call.poll(cx) {
                    this.call.set(None);
                    let answer = shared.landed(i, (rtt, answer));
                    return Poll::Ready(match shared.judge(i, answer, pass.seen, pass.accept) {
                        Some(res) => Landed::Answer(i, res),
                        None => Landed::MoveOn,
                    });
                }
                if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                    ready!(timer.poll(cx));
                    // No headers after the delay: look for a hedge target.
                    this.timer.set(None);
                    *this.seeking = Some((0, None));
                }
                let Some((pos, candidate)) = this.seeking.as_mut() else {
                    return Poll::Pending;
                };
                let Some((_, budget)) = shared.hedge.as_ref() else {
                    *this.seeking = None;
                    continue;
                };
                // The next replica of the order that admits a request now,
                // if the hedge budget allows one more hedge.
                let Some(&j) = pass.order.get(*pos) else {
                    *this.seeking = None;
                    continue;
                };
                let svc = candidate.get_or_insert_with(|| shared.replicas[j].service().clone());
                if ready!(svc.poll_ready(cx)).is_err() {
                    *pos += 1;
                    *candidate = None;
                    continue;
                }
                let Some((pos, Some(mut svc))) = this.seeking.take() else {
                    unreachable!("the candidate was just polled ready");
                };
                if !budget.withdraw() {
                    tracing::debug!(bucket = %shared.bucket, "hedge budget spent: not hedging");
                    continue;
                }
                pass.order.remove(pos);
                *pass.may_hedge = false;
                tracing::debug!(bucket = %shared.bucket, delay_ms = this.delay.as_millis() as u64,
                    "Replica '{}' has not answered: hedging to '{}'", shared.replicas[i].name(), shared.replicas[j].name());
                shared
                    .events
                    .hedge(&shared.bucket, shared.replicas[j].name(), HedgeEvent::Sent);
                *pass.attempts += 1;
                let attempt = Attempt {
                    number: *pass.attempts,
                    kind: AttemptKind::Hedge,
                };
                this.hedge.set(Some(shared.send(j, &mut svc, pass.req, attempt)));
                *this.hedged = Some((j, Instant::now()));
                continue;
            };
            // Two requests in flight (or one left, after the other's answer
            // was not usable): the first usable answer wins.
            let racing = this.call.is_some() && this.hedge.is_some();
            let (winner, (rtt, attempt, answer)) =
                if let Some(Poll::Ready(answer)) = this.call.as_mut().as_pin_mut().map(|c| c.poll(cx)) {
                    this.call.set(None);
                    (i, answer)
                } else if let Some(Poll::Ready(answer)) = this.hedge.as_mut().as_pin_mut().map(|h| h.poll(cx)) {
                    this.hedge.set(None);
                    (j, answer)
                } else {
                    return Poll::Pending;
                };
            let answer = shared.landed(winner, (rtt, answer));
            let Some(mut res) = shared.judge(winner, answer, pass.seen, pass.accept) else {
                if this.call.is_none() && this.hedge.is_none() {
                    return Poll::Ready(Landed::MoveOn);
                }
                // The first answer was not usable: the other one may be.
                continue;
            };
            if racing {
                // The other request is dropped with this flight: cancelled,
                // its breaker uncharged, its bulkhead slot freed. Its elapsed
                // time is a lower bound of its latency: count it, so a
                // replica that keeps losing races is seen as slow.
                let (other, elapsed) = if winner == j {
                    (i, hedged_at.elapsed() + *this.delay)
                } else {
                    (j, hedged_at.elapsed())
                };
                shared.observe(other, elapsed);
            }
            let outcome = if winner == j {
                shared
                    .events
                    .hedge(&shared.bucket, shared.replicas[j].name(), HedgeEvent::Won);
                if racing {
                    tracing::debug!(bucket = %shared.bucket, "hedge to '{}' answered first", shared.replicas[j].name());
                }
                HedgeOutcome::Won
            } else {
                HedgeOutcome::Lost
            };
            res.extensions_mut().insert(outcome);
            res.extensions_mut().insert(attempt);
            return Poll::Ready(Landed::Answer(winner, res));
        }
    }
}
