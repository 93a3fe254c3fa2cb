use std::sync::Arc;

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
}

impl<S> Replica<S> {
    /// A replica of priority 0, weight 100, with its breaker and health.
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
}

/// The order in which to try replicas: known-unhealthy ones last, then by
/// priority; among equal priorities a weighted random order, so load is
/// shared by weight.
pub(crate) fn try_order<S>(replicas: &[Replica<S>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..replicas.len()).collect();
    let rank = |i: usize| (replicas[i].health.health() == Health::Unhealthy, replicas[i].priority);
    order.sort_by_key(|&i| rank(i));
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && rank(order[end]) == rank(order[start]) {
            end += 1;
        }
        if end - start > 1 {
            weighted_shuffle(&mut order[start..end], |i| replicas[i].weight);
        }
        start = end;
    }
    order
}

fn weighted_shuffle(slice: &mut [usize], weight: impl Fn(usize) -> u32) {
    for pos in 0..slice.len() {
        let total: u64 = slice[pos..].iter().map(|&i| weight(i) as u64).sum();
        let mut pick = fastrand::u64(0..total.max(1));
        for j in pos..slice.len() {
            let w = weight(slice[j]) as u64;
            if pick < w {
                slice.swap(pos, j);
                break;
            }
            pick -= w;
        }
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
        assert_eq!(try_order(&rs), vec![1, 0, 2]);
        rs[1].health().record(&Err(crate::error::FetchError::NoReplica));
        assert_eq!(try_order(&rs), vec![0, 2, 1]);
    }

    #[test]
    fn equal_priorities_share_by_weight() {
        let rs = [replica("a", 1, 300), replica("b", 1, 100), replica("z", 2, 1)];
        let mut first_a = 0;
        for _ in 0..4000 {
            let order = try_order(&rs);
            assert_eq!(order[2], 2);
            if order[0] == 0 {
                first_a += 1;
            }
        }
        // Expect about 3000 of 4000; the bound is loose enough never to flake.
        assert!((2600..3400).contains(&first_a), "{first_a}");
    }
}
