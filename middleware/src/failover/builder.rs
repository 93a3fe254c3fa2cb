//! [`Failover::builder`] and [`FailoverBuilder`]: the failover's settings
//! and their defaults, fixed once it is built.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::backoff::ExponentialBackoffMaker;
use tower::retry::budget::TpsBudget;
use tower::util::rng::HasherRng;

use super::events::{FailoverEvents, NoEvents};
use super::hedge::HedgeConfig;
use super::latency::LatencyConfig;
use super::pass::Shared;
use super::replica::Replica;
use super::service::Failover;

/// Configures a [`Failover`] (built once, so nothing can change after it is
/// cloned).
pub struct FailoverBuilder<S> {
    pub(super) shared: Shared<S>,
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
