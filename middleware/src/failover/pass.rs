//! What a pass over the replicas decides, step by step (the state machine
//! that runs it is in [`future`](super::future)): each answer judged (answer,
//! failure, or a reason to move on), moves reported, hedge delays chosen,
//! latencies observed; and the state every clone of a
//! [`Failover`](super::Failover) shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::{Response, StatusCode};
use tower::retry::backoff::ExponentialBackoffMaker;
use tower::retry::budget::TpsBudget;
use tower::util::rng::HasherRng;
use tower::Service;

use super::events::FailoverEvents;
use super::hedge::{HedgeConfig, HedgeDelay, P95_UNTIL_KNOWN};
use super::latency::{is_outlier, LatencyConfig};
use super::replica::Replica;
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

/// What a pass has seen so far.
#[derive(Default)]
pub(crate) struct Seen {
    /// The last replica that failed, and how.
    pub(super) failed: Option<(usize, FetchError)>,
    /// The last replica skipped (not admitted, or its answer not usable).
    pub(super) skipped: Option<(usize, FetchError)>,
    /// The first 404 (with `failover_on_404`): the answer if no replica has
    /// it. Boxed: rare, and it would make every request's `Run` larger.
    pub(super) not_found: Option<(usize, Box<Response<Body>>)>,
    /// Whether a replica was really tried (not only skipped).
    pub(super) tried: bool,
    /// A resume's pass: the replica whose body broke (reported as the
    /// origin of a move unless a replica failed since).
    pub(super) cut: Option<usize>,
}

impl<S> Shared<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// The hedge delay for a request now sent to replica `i`, if it may be hedged.
    pub(super) fn hedge_delay(&self, i: usize) -> Option<Duration> {
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
    pub(super) fn observe(&self, i: usize, rtt: Duration) {
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

    /// Judges one answer of replica `i`: `Some` when it is the pass's answer.
    pub(super) fn judge(
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
                    seen.not_found = Some((i, Box::new(res)));
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

    /// Reports moving on to replica `i` after what the pass has seen (for a
    /// resume, first the move away from the replica whose body broke).
    pub(super) fn report_move(&self, i: usize, seen: &Seen) {
        let to = self.replicas[i].name();
        if let Some((from, e)) = &seen.failed {
            let from = self.replicas[*from].name();
            tracing::warn!(bucket = %self.bucket, error = %e, "Replica '{}' failed, trying '{}'", from, to);
            self.events.failover(&self.bucket, from, to);
        } else if let Some((from, _)) = &seen.not_found {
            let from = self.replicas[*from].name();
            tracing::info!(bucket = %self.bucket, "Replica '{}' answered 404, trying '{}'", from, to);
            self.events.failover(&self.bucket, from, to);
        } else if let Some(from) = seen.cut {
            // A body resumed elsewhere (logged when the resume started); as
            // with a failure, a replica skipped since does not hide it.
            if from != i {
                self.events.failover(&self.bucket, self.replicas[from].name(), to);
            }
        } else if let Some((from, _)) = &seen.skipped {
            self.events.failover(&self.bucket, self.replicas[*from].name(), to);
        }
    }
}
