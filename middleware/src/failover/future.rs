//! The failover's per-request futures, as named state machines: [`Run`]
//! goes through retry rounds of passes over the replicas, racing a hedge
//! against a slow replica; [`FailoverFuture`] is a boxed `Run` whose answer
//! can resume mid-body elsewhere. The judgement of each answer and
//! the events it reports are in [`pass`](super::pass).
//!
//! States of a [`Run`] (one `poll` goes through as many as are ready):
//!
//! ```text
//! Start --order--> Next --pop--> Ready(i) --ready--> Flight --answer--> done
//!   ^               ^  \            | not ready          | not usable
//!   |               |   \ pass over  \--> Next           \--> Next
//!   |               |    \--> pass ended: done, error, or Backoff
//!   \--- Backoff <--/
//! ```
//!
//! A `Flight` ([`flight`](super::flight)) holds the request to replica `i`
//! and, when it may be hedged, the hedge delay's timer and the race.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use http::Response;
use tokio::time::Sleep;
use tower::retry::backoff::{Backoff, ExponentialBackoff, MakeBackoff};
use tower::retry::budget::Budget;
use tower::util::rng::HasherRng;
use tower::Service;

use super::attempt::{Attempt, AttemptKind};
use super::flight::{Flight, Landed, PassState};
use super::pass::{Seen, Shared};
use super::replica::try_order;
use super::resume;
use crate::error::FetchError;
use crate::object::ObjectRequest;

/// Which answers a resume accepts (a matching 206).
pub(crate) type AcceptFn = Box<dyn Fn(&Response<Body>) -> bool + Send + Sync>;

pin_project_lite::pin_project! {
    /// The response future of [`Failover`](super::Failover): the replicas
    /// tried in order, with retry rounds and a hedge, as a named state
    /// machine; a `GET` answer is wrapped so that its body can resume from
    /// another replica.
    pub struct FailoverFuture<S>
    where
        S: Service<ObjectRequest>,
    {
        // Boxed (about 1 KiB: the request, the try order, a flight): inline,
        // it made every future above it 2 KiB or more, a cache hit's too
        // (whose future holds the failover's in an unused variant), copied
        // each time one moved. One allocation per fetch instead.
        run: Pin<Box<Run<S>>>,
    }
}

impl<S> FailoverFuture<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    pub(super) fn new(shared: Arc<Shared<S>>, req: ObjectRequest) -> Self {
        Self {
            run: Box::pin(Run::new(shared, req, None, None, true, 0)),
        }
    }
}

impl<S> Future for FailoverFuture<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<Response<Body>, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let run = self.project().run;
        let (index, res) = ready!(run.as_mut().poll(cx))?;
        let run = run.as_mut().project();
        Poll::Ready(Ok(resume::wrap(run.shared.clone(), run.req, index, res)))
    }
}

pin_project_lite::pin_project! {
    /// Passes over the replicas until one answers: the first pass in try
    /// order, then, with `retries`, more passes after a backoff while the
    /// retry budget allows. Resolves to the answering replica's index and
    /// its answer. A resume's run sets `cut`, the replica whose body broke:
    /// it is tried last, and the first move is reported from it.
    pub(crate) struct Run<S>
    where
        S: Service<ObjectRequest>,
    {
        shared: Arc<Shared<S>>,
        req: ObjectRequest,
        cut: Option<usize>,
        accept: Option<AcceptFn>,
        retries: bool,
        attempts: u32,
        round: u32,
        backoff: Option<ExponentialBackoff<HasherRng>>,
        // The last real failure: a retry round that found every breaker open
        // (opened by the earlier rounds) reports it, not "breaker open".
        cause: Option<FetchError>,
        order: VecDeque<usize>,
        seen: Seen,
        may_hedge: bool,
        #[pin]
        stage: Stage<S, S::Future>,
    }
}

pin_project_lite::pin_project! {
    #[project = StageProj]
    enum Stage<S, F> {
        // A pass begins: the try order is drawn.
        Start,
        // The next replica of the order, or the end of the pass.
        Next,
        // Waiting for replica `i` to admit the request.
        Ready { i: usize, svc: S },
        // Replica `i` has the request (and maybe a hedge is in flight).
        Flight { #[pin] flight: Flight<S, F> },
        // Between two passes.
        Backoff { #[pin] sleep: Sleep },
    }
}

impl<S> Run<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// A run of passes for `req`; attempts are numbered from `attempts + 1`.
    pub(crate) fn new(
        shared: Arc<Shared<S>>,
        req: ObjectRequest,
        cut: Option<usize>,
        accept: Option<AcceptFn>,
        retries: bool,
        attempts: u32,
    ) -> Self {
        Self {
            shared,
            req,
            cut,
            accept,
            retries,
            attempts,
            round: 0,
            backoff: None,
            cause: None,
            order: VecDeque::new(),
            seen: Seen::default(),
            may_hedge: false,
            stage: Stage::Start,
        }
    }
}

impl<S> Future for Run<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<(usize, Response<Body>), FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Shared<S> = this.shared;
        loop {
            match this.stage.as_mut().project() {
                StageProj::Start => {
                    let mut order: VecDeque<usize> = try_order(&shared.replicas, shared.latency.as_ref()).into();
                    *this.seen = Seen::default();
                    if let Some(cut) = *this.cut {
                        order.retain(|&i| i != cut);
                        order.push_back(cut);
                        this.seen.cut = Some(cut);
                    }
                    *this.order = order;
                    *this.may_hedge = this.accept.is_none();
                    this.stage.set(Stage::Next);
                }
                StageProj::Next => match this.order.pop_front() {
                    Some(i) => this.stage.set(Stage::Ready {
                        i,
                        svc: shared.replicas[i].service().clone(),
                    }),
                    None => match pass_ended(shared, std::mem::take(this.seen)) {
                        Ok(found) => return Poll::Ready(Ok(found)),
                        Err((error, tried)) => {
                            if !*this.retries {
                                return Poll::Ready(Err(error));
                            }
                            if !tried {
                                return Poll::Ready(Err(this.cause.take().unwrap_or(error)));
                            }
                            if *this.round >= shared.max_retries || !shared.budget.withdraw() {
                                return Poll::Ready(Err(error));
                            }
                            *this.cause = Some(error);
                            *this.round += 1;
                            let backoff = this
                                .backoff
                                .get_or_insert_with(|| shared.backoff.clone().make_backoff());
                            this.stage.set(Stage::Backoff {
                                sleep: backoff.next_backoff(),
                            });
                        }
                    },
                },
                StageProj::Ready { i, svc } => {
                    let i = *i;
                    match ready!(svc.poll_ready(cx)) {
                        Err(e) => {
                            tracing::debug!(bucket = %shared.bucket, replica = %shared.replicas[i].name(), reason = %e, "replica skipped");
                            this.seen.skipped = Some((i, e));
                            this.stage.set(Stage::Next);
                        }
                        Ok(()) => {
                            shared.report_move(i, this.seen);
                            *this.attempts += 1;
                            let kind = if *this.attempts == 1 {
                                AttemptKind::Primary
                            } else {
                                AttemptKind::Failover
                            };
                            let attempt = Attempt {
                                number: *this.attempts,
                                kind,
                            };
                            let call = shared.send(i, svc, this.req, attempt);
                            let delay = if *this.may_hedge { shared.hedge_delay(i) } else { None };
                            this.stage.set(Stage::Flight {
                                flight: Flight::new(i, call, delay),
                            });
                        }
                    }
                }
                StageProj::Flight { flight } => {
                    let mut pass = PassState {
                        shared,
                        req: this.req,
                        accept: this.accept.as_deref(),
                        order: this.order,
                        seen: this.seen,
                        attempts: this.attempts,
                        may_hedge: this.may_hedge,
                    };
                    match ready!(flight.poll_flight(cx, &mut pass)) {
                        Landed::Answer(i, res) => return Poll::Ready(Ok((i, res))),
                        Landed::MoveOn => this.stage.set(Stage::Next),
                    }
                }
                StageProj::Backoff { sleep } => {
                    ready!(sleep.poll(cx));
                    this.stage.set(Stage::Start);
                }
            }
        }
    }
}

/// A pass went through the whole order: a 404 seen on the way is the
/// answer (with `failover_on_404`); else the error to report, and whether a
/// replica was really tried (not only skipped).
fn pass_ended<S>(shared: &Shared<S>, seen: Seen) -> Result<(usize, Response<Body>), (FetchError, bool)> {
    if let Some((from, res)) = seen.not_found {
        // No replica had it (or the rest failed): the 404 is the answer.
        return Ok((from, *res));
    }
    if let Some((from, e)) = &seen.failed {
        tracing::warn!(
            bucket = %shared.bucket,
            error = %e,
            "Replica '{}' failed, no replica left to try",
            shared.replicas[*from].name()
        );
    }
    let error = seen
        .failed
        .or(seen.skipped)
        .map(|(_, e)| e)
        .unwrap_or(FetchError::NoReplica);
    Err((error, seen.tried))
}
