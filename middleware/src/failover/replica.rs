use std::sync::Arc;
use std::time::Instant;

use super::hedge::HedgeDelay;
use super::latency::{LatencyConfig, ReplicaLatency};
use crate::breaker::CircuitBreaker;
use crate::health::{Health, ReplicaHealth};

/// One replica as the failover sees it: its stack (usually a breaker-gated,
/// bulkheaded, presigned fetch), its rank and the state that decides its turn.
#[derive(Debug, Clone)]
pub struct Replica<S> {
    name: Arc<str>,
    priority: u32,
    weight: u32,
    service: S,
    breaker: Arc<CircuitBreaker>,
    health: Arc<ReplicaHealth>,
    latency: Arc<ReplicaLatency>,
    hedge: ReplicaHedge,
}

/// This replica's override of the failover's hedge settings (see
/// [`Replica::with_hedge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplicaHedge {
    /// `Some(false)`: a request sent to this replica is never hedged;
    /// `Some(true)`: it is, with the failover's budget; `None`: as the
    /// failover's own setting.
    pub enabled: Option<bool>,
    /// The delay for requests sent to this replica (`None`: the failover's).
    pub delay: Option<HedgeDelay>,
}

impl<S> Replica<S> {
    /// A replica of priority 0, weight 100, with its breaker and health.
    ///
    /// `breaker` should be the one whose
    /// [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer) gates
    /// `service`: the failover admits a replica through `service`'s
    /// `poll_ready`, and keeps `breaker` only so that the app can read the
    /// replica's state ([`Failover::replicas`](super::Failover::replicas));
    /// another breaker would show a state that decides nothing. `health` is
    /// what a [`HealthCheck`](crate::health::HealthCheck) records into
    /// (replicas whose last probe failed are tried last); a fresh
    /// [`ReplicaHealth::new`] without a probe stays `Unknown` and changes no order.
    pub fn new(
        name: impl Into<Arc<str>>,
        service: S,
        breaker: Arc<CircuitBreaker>,
        health: Arc<ReplicaHealth>,
    ) -> Self {
        Self {
            name: name.into(),
            priority: 0,
            weight: 100,
            service,
            breaker,
            health,
            latency: Arc::default(),
            hedge: ReplicaHedge::default(),
        }
    }

    /// Lower is tried first.
    pub fn with_priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Share of first tries among replicas of equal priority.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Overrides the failover's hedge settings for requests sent to this
    /// replica (e.g. a longer delay for a far region, or no hedging).
    pub fn with_hedge(mut self, hedge: ReplicaHedge) -> Self {
        self.hedge = hedge;
        self
    }

    /// This replica's hedge override.
    pub fn hedge(&self) -> ReplicaHedge {
        self.hedge
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Priority.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The health state.
    pub fn health(&self) -> &Arc<ReplicaHealth> {
        &self.health
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    pub(crate) fn latency(&self) -> &Arc<ReplicaLatency> {
        &self.latency
    }
}

/// The order in which to try replicas: known-unhealthy ones last, then by
/// priority, then (with `latency`) latency outliers after their peers; among
/// equal ranks a weighted random order, so load is shared by weight, or with
/// `latency` by weight divided by the replica's cost (its peak-EWMA latency
/// times its requests in flight plus one), so a slow twin gets less traffic.
pub(crate) fn try_order<S>(replicas: &[Replica<S>], latency: Option<&LatencyConfig>) -> Vec<usize> {
    let now = Instant::now();
    let mut order: Vec<usize> = (0..replicas.len()).collect();
    let demoted = |i: usize| latency.is_some() && replicas[i].latency.demoted(now);
    let rank = |i: usize| {
        (
            replicas[i].health.health() == Health::Unhealthy,
            replicas[i].priority,
            demoted(i),
        )
    };
    order.sort_by_key(|&i| rank(i));
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && rank(order[end]) == rank(order[start]) {
            end += 1;
        }
        if end - start > 1 {
            match latency {
                Some(config) => weighted_shuffle(&mut order[start..end], |i| {
                    f64::from(replicas[i].weight) / replicas[i].latency.cost(now, config.decay)
                }),
                None => weighted_shuffle(&mut order[start..end], |i| f64::from(replicas[i].weight)),
            }
        }
        start = end;
    }
    order
}

fn weighted_shuffle(slice: &mut [usize], weight: impl Fn(usize) -> f64) {
    let weights: Vec<f64> = slice.iter().map(|&i| weight(i).max(f64::MIN_POSITIVE)).collect();
    let mut weights: Vec<(usize, f64)> = slice.iter().copied().zip(weights).collect();
    for pos in 0..weights.len() {
        let total: f64 = weights[pos..].iter().map(|(_, w)| w).sum();
        let mut pick = fastrand::f64() * total;
        let mut chosen = weights.len() - 1;
        for (j, (_, w)) in weights.iter().enumerate().skip(pos) {
            if pick < *w {
                chosen = j;
                break;
            }
            pick -= w;
        }
        weights.swap(pos, chosen);
    }
    for (slot, (i, _)) in slice.iter_mut().zip(weights) {
        *slot = i;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;

    fn replica(name: &str, priority: u32, weight: u32) -> Replica<()> {
        Replica::new(
            name,
            (),
            CircuitBreaker::new(BreakerConfig::default()),
            ReplicaHealth::new(),
        )
        .with_priority(priority)
        .with_weight(weight)
    }

    #[test]
    fn priority_then_health() {
        let rs = [replica("b", 2, 1), replica("a", 1, 1), replica("c", 3, 1)];
        assert_eq!(try_order(&rs, None), vec![1, 0, 2]);
        rs[1].health().record(&Err(crate::error::FetchError::NoReplica));
        assert_eq!(try_order(&rs, None), vec![0, 2, 1]);
    }

    #[test]
    fn equal_priorities_share_by_weight() {
        let rs = [replica("a", 1, 300), replica("b", 1, 100), replica("z", 2, 1)];
        let mut first_a = 0;
        for _ in 0..4000 {
            let order = try_order(&rs, None);
            assert_eq!(order[2], 2);
            if order[0] == 0 {
                first_a += 1;
            }
        }
        // Expect about 3000 of 4000; the bound is loose enough never to flake.
        assert!((2600..3400).contains(&first_a), "{first_a}");
    }

    #[test]
    fn a_slow_twin_gets_less_traffic_and_an_outlier_goes_last() {
        let rs = [replica("fast", 1, 100), replica("slow", 1, 100)];
        let config = LatencyConfig::default();
        let now = Instant::now();
        rs[0]
            .latency()
            .record(std::time::Duration::from_millis(5), now, config.decay);
        rs[1]
            .latency()
            .record(std::time::Duration::from_millis(200), now, config.decay);
        let slow_first = (0..1000).filter(|_| try_order(&rs, Some(&config))[0] == 1).count();
        // Expect about 1000 * 5/205 = 24; without latency, about 500.
        assert!(slow_first < 100, "{slow_first}");
        for _ in 0..config.outlier_consecutive {
            rs[1].latency().outlier(true, now, &config);
        }
        assert!((0..100).all(|_| try_order(&rs, Some(&config)) == vec![0, 1]));
    }
}
