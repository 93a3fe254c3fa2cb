//! Hedged requests' settings: when a replica is slow to answer, the same
//! request goes to the next admitted replica and the first answer wins (the
//! race itself runs in [`pass`](super::pass)).

use std::time::Duration;

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
pub(super) const P95_UNTIL_KNOWN: Duration = Duration::from_millis(100);

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
