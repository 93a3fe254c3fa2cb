//! Hedged requests: when a replica is slow to answer, the same request
//! goes to the next admitted replica and the first answer wins. The race
//! itself runs in [`pass`](super::pass); the settings, the delay and the
//! choice of the second replica are here.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use http::Response;
use tower::retry::budget::Budget;
use tower::{Service, ServiceExt};

use super::pass::Shared;
use crate::error::FetchError;
use crate::object::ObjectRequest;

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

/// Hedged requests (see [`FailoverBuilder::hedge`](super::FailoverBuilder::hedge)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgeConfig {
    /// When to hedge.
    pub delay: HedgeDelay,
    /// Hedges allowed as a percentage of requests (over 10 s): a budget.
    pub max_extra_percent: f32,
    /// Whether a replica without its own [`ReplicaHedge::enabled`](super::ReplicaHedge::enabled) is
    /// hedged (`false`: only the replicas that enable it are).
    pub enabled_by_default: bool,
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

    /// The next replica of `order` that admits a request now, taken out of
    /// `order`, if the hedge budget allows one more hedge.
    pub(super) async fn hedge_target(&self, order: &mut VecDeque<usize>) -> Option<(usize, S)> {
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
}
