//! Observed latency per replica (time to response headers): a peak-EWMA
//! estimate as linkerd and Finagle use for load balancing, the recent
//! samples for the hedge delay's p95, and the outlier-demotion state.
//!
//! Hand-written rather than `tower::load::PeakEwma`: that one wraps a
//! service and measures every call it sees, while the failover must also
//! count a cancelled hedge loser (its elapsed time, a lower bound), keep the
//! samples for a p95, and compare a replica with its peers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Latency-aware choice among replicas of equal priority, and outlier
/// demotion (see [`FailoverBuilder::latency_aware`](super::FailoverBuilder::latency_aware)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyConfig {
    /// Time constant of the peak-EWMA: how fast an estimate forgets (an
    /// unused replica's estimate decays towards zero, so it is tried again).
    pub decay: Duration,
    /// A replica whose estimate exceeds this many times the best of its
    /// equal-priority peers' (and by at least 10 ms) is an outlier...
    pub outlier_factor: f64,
    /// ...once it was one on this many consecutive answers...
    pub outlier_consecutive: u32,
    /// ...and is then tried after its peers for this long (not marked unhealthy).
    pub demotion: Duration,
}

impl Default for LatencyConfig {
    /// Decay 10 s; outlier at 3x the best peer for 5 answers; demoted 30 s.
    fn default() -> Self {
        Self {
            decay: Duration::from_secs(10),
            outlier_factor: 3.0,
            outlier_consecutive: 5,
            demotion: Duration::from_secs(30),
        }
    }
}

/// An outlier must also be this much slower than its best peer (so 1 ms
/// against 3 ms is not an outlier).
const OUTLIER_FLOOR: Duration = Duration::from_millis(10);
/// Samples kept for the p95.
const WINDOW: usize = 64;
/// Samples needed before the p95 is trusted.
const MIN_SAMPLES: usize = 16;

#[derive(Debug, Default)]
struct Stats {
    /// Peak-EWMA estimate in seconds, as of `updated`.
    estimate: f64,
    updated: Option<Instant>,
    /// Recent samples in microseconds (a ring).
    samples: Vec<u32>,
    next: usize,
    /// Consecutive answers as an outlier.
    outlier_run: u32,
    demoted_until: Option<Instant>,
}

impl Stats {
    fn decayed(&self, now: Instant, decay: Duration) -> f64 {
        match self.updated {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.estimate * (-dt / decay.as_secs_f64().max(1e-3)).exp()
            }
            None => 0.0,
        }
    }
}

/// One replica's latency state (shared by the clones of its [`Replica`](super::Replica)).
#[derive(Debug, Default)]
pub(crate) struct ReplicaLatency {
    stats: Mutex<Stats>,
    pending: AtomicUsize,
}

/// Counts a request in flight to a replica until dropped.
pub(crate) struct Pending(Arc<ReplicaLatency>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ReplicaLatency {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a request in flight.
    pub(crate) fn start(self: &Arc<Self>) -> Pending {
        self.pending.fetch_add(1, Ordering::Relaxed);
        Pending(self.clone())
    }

    /// Records a time to headers (peak-EWMA: a slower sample is taken at
    /// once, a faster one is blended in by the time since the last).
    pub(crate) fn record(&self, rtt: Duration, now: Instant, decay: Duration) {
        let mut s = self.stats();
        let rtt_s = rtt.as_secs_f64();
        let current = s.decayed(now, decay);
        s.estimate = if rtt_s > current || s.updated.is_none() {
            rtt_s
        } else {
            let dt = s
                .updated
                .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
            let keep = (-dt / decay.as_secs_f64().max(1e-3)).exp();
            // Blend with the undecayed estimate, as tower's PeakEwma does.
            s.estimate * keep + rtt_s * (1.0 - keep)
        };
        s.updated = Some(now);
        let micros = rtt.as_micros().min(u32::MAX as u128) as u32;
        if s.samples.len() < WINDOW {
            s.samples.push(micros);
        } else {
            let next = s.next;
            s.samples[next] = micros;
        }
        s.next = (s.next + 1) % WINDOW;
    }

    /// The estimate (seconds), decayed to `now`; `None` before any sample.
    pub(crate) fn estimate(&self, now: Instant, decay: Duration) -> Option<f64> {
        let s = self.stats();
        s.updated.map(|_| s.decayed(now, decay))
    }

    /// The cost of sending one more request here: the decayed estimate
    /// (at least 1 ms) times the requests in flight plus one.
    pub(crate) fn cost(&self, now: Instant, decay: Duration) -> f64 {
        let estimate = self.estimate(now, decay).unwrap_or(0.0).max(0.001);
        estimate * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    /// The p95 of the recent samples, once there are enough of them.
    pub(crate) fn p95(&self) -> Option<Duration> {
        let s = self.stats();
        if s.samples.len() < MIN_SAMPLES {
            return None;
        }
        let mut sorted = s.samples.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64) * 0.95).ceil() as usize - 1;
        Some(Duration::from_micros(u64::from(sorted[at.min(sorted.len() - 1)])))
    }

    /// Whether the replica is demoted at `now`.
    pub(crate) fn demoted(&self, now: Instant) -> bool {
        self.stats().demoted_until.is_some_and(|until| now < until)
    }

    /// Counts one answer as an outlier or not; true when this demotes the replica.
    pub(crate) fn outlier(&self, is_outlier: bool, now: Instant, config: &LatencyConfig) -> bool {
        let mut s = self.stats();
        if !is_outlier {
            s.outlier_run = 0;
            return false;
        }
        s.outlier_run += 1;
        let demoted = s.demoted_until.is_some_and(|until| now < until);
        if s.outlier_run >= config.outlier_consecutive.max(1) && !demoted {
            s.outlier_run = 0;
            s.demoted_until = Some(now + config.demotion);
            return true;
        }
        false
    }
}

/// Whether `estimate` is an outlier against the best peer estimate.
pub(crate) fn is_outlier(estimate: f64, best_peer: f64, config: &LatencyConfig) -> bool {
    estimate > best_peer * config.outlier_factor && estimate - best_peer > OUTLIER_FLOOR.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_then_slow_decay() {
        let l = ReplicaLatency::default();
        let decay = Duration::from_secs(10);
        let t0 = Instant::now();
        l.record(Duration::from_millis(10), t0, decay);
        l.record(Duration::from_millis(200), t0 + Duration::from_millis(10), decay);
        // The peak is taken at once.
        let e = l.estimate(t0 + Duration::from_millis(10), decay).unwrap();
        assert!((e - 0.2).abs() < 1e-9, "{e}");
        // A fast answer soon after barely moves it; a long idle time decays it.
        l.record(Duration::from_millis(10), t0 + Duration::from_millis(20), decay);
        assert!(l.estimate(t0 + Duration::from_millis(20), decay).unwrap() > 0.19);
        assert!(l.estimate(t0 + Duration::from_secs(60), decay).unwrap() < 0.001);
    }

    #[test]
    fn p95_needs_enough_samples() {
        let l = ReplicaLatency::default();
        let now = Instant::now();
        for ms in 1..=15 {
            l.record(Duration::from_millis(ms), now, Duration::from_secs(10));
        }
        assert_eq!(l.p95(), None);
        for ms in 16..=100 {
            l.record(Duration::from_millis(ms), now, Duration::from_secs(10));
        }
        // The last 64 samples are 37..=100 ms: the p95 (61st of 64) is 97 ms.
        assert_eq!(l.p95(), Some(Duration::from_millis(97)));
    }

    #[test]
    fn demotion_after_consecutive_outliers_only() {
        let l = ReplicaLatency::default();
        let config = LatencyConfig::default();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(!l.outlier(true, now, &config));
        }
        assert!(!l.outlier(false, now, &config));
        for _ in 0..4 {
            assert!(!l.outlier(true, now, &config));
        }
        assert!(l.outlier(true, now, &config));
        assert!(l.demoted(now));
        assert!(!l.demoted(now + config.demotion));
        assert!(is_outlier(0.2, 0.005, &config));
        assert!(!is_outlier(0.003, 0.001, &config));
    }
}
