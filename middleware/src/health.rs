//! Active health checks: a background task per replica sends a signed `HEAD`
//! every interval and records whether the replica answered, and how fast.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::breaker::CircuitBreaker;
use crate::error::FetchError;
use crate::upstream::S3Upstream;

/// What the last probe said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet (or checks disabled).
    Unknown,
    /// The last probe was answered.
    Healthy,
    /// The last probe failed (see [`ReplicaHealth::last_error`]).
    Unhealthy,
}

impl Health {
    /// `unknown`, `healthy` or `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// A replica's health, shared between its checker and its readers. The
/// state is lock-free; the reason of the last failure takes a short lock.
#[derive(Debug, Default)]
pub struct ReplicaHealth {
    state: AtomicU8,
    latency_us: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ReplicaHealth {
    /// A replica not probed yet.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The current state.
    pub fn health(&self) -> Health {
        match self.state.load(Ordering::Acquire) {
            1 => Health::Healthy,
            2 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }

    /// The latency of the last successful probe.
    pub fn last_latency(&self) -> Option<Duration> {
        match self.latency_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Why the last probe failed (`None` after a passing probe).
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records a probe result; returns the previous state.
    pub fn record(&self, result: &Result<Duration, FetchError>) -> Health {
        let previous = self.health();
        match result {
            Ok(latency) => {
                self.latency_us
                    .store(latency.as_micros().clamp(1, u64::MAX as u128) as u64, Ordering::Relaxed);
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.state.store(1, Ordering::Release);
            }
            Err(e) => {
                *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.state.store(2, Ordering::Release);
            }
        }
        previous
    }
}

/// Called after each probe with the replica's name, the previous state and the result.
pub type ProbeObserver = Arc<dyn Fn(&str, Health, &Result<Duration, FetchError>) + Send + Sync>;

/// The background probe of one replica.
#[derive(Clone)]
pub struct HealthCheck {
    upstream: S3Upstream,
    health: Arc<ReplicaHealth>,
    interval: Duration,
    timeout: Duration,
    key: Option<String>,
    observer: Option<ProbeObserver>,
    breaker: Option<Arc<CircuitBreaker>>,
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck")
            .field("replica", &self.upstream.name())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("key", &self.key)
            .finish()
    }
}

impl HealthCheck {
    /// Probes `upstream` every 10 s with a 5 s timeout, recording into `health`.
    pub fn new(upstream: S3Upstream, health: Arc<ReplicaHealth>) -> Self {
        Self {
            upstream,
            health,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            key: None,
            observer: None,
            breaker: None,
        }
    }

    /// Feeds every probe's result to the replica's circuit breaker (the one
    /// its [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer)
    /// gates requests with): a failed probe counts as a failure, so a dead
    /// replica is skipped before a client hits it; a passing probe moves an
    /// open breaker to half-open, so a recovered one comes back without
    /// client traffic, but neither closes a breaker that requests opened nor
    /// clears the failures of a closed breaker's requests (see
    /// [`CircuitBreaker::record_success`]).
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Time between probes.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Time allowed for one probe.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Probes this path (`/` means the bucket itself, `/k` the object `k`).
    pub fn with_path(mut self, path: &str) -> Self {
        let key = path.trim_start_matches('/');
        self.key = (!key.is_empty()).then(|| key.to_owned());
        self
    }

    /// Calls `observer` after every probe.
    pub fn with_observer(mut self, observer: ProbeObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Runs one probe and records it.
    pub async fn probe_once(&self) -> Result<Duration, FetchError> {
        let result = self.upstream.probe(self.key.as_deref(), self.timeout).await;
        let previous = self.health.record(&result);
        match (&result, previous) {
            (Err(e), Health::Healthy | Health::Unknown) => {
                tracing::warn!(replica = %self.upstream.name(), error = %e, "health check failed");
            }
            (Ok(_), Health::Unhealthy) => tracing::info!(replica = %self.upstream.name(), "replica healthy again"),
            _ => {}
        }
        if let Some(breaker) = &self.breaker {
            match &result {
                // Moves an open breaker on; in a closed one, clears only
                // failures that were all probes'.
                Ok(_) => breaker.record_success(),
                Err(_) => breaker.record_failure(),
            }
        }
        if let Some(observer) = &self.observer {
            observer(self.upstream.name(), previous, &result);
        }
        result
    }

    /// Probes now, then every interval, until the handle is aborted.
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let _ = self.probe_once().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerConfig, BreakerState};
    use crate::upstream::s3_bucket;
    use rusty_s3::Credentials;
    use yatagarasu_testkit::s3::LocalS3;

    /// A probe given the breaker feeds it, as requests do: a replica that
    /// stops answering opens its breaker without client traffic.
    #[tokio::test]
    async fn probes_feed_the_replicas_breaker() {
        let (key, secret) = ("AKIATESTHEALTH001", "health-secret-1a2b3c");
        let dir = tempfile::tempdir().unwrap();
        let mut s3 = LocalS3::start(dir.path(), "127.0.0.1:0".parse().unwrap(), key, secret)
            .await
            .unwrap();
        s3.put_object("health", "k", b"x").unwrap();
        let endpoint: url::Url = s3.endpoint().parse().unwrap();
        // No pooled connection survives the server's restart.
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let up = S3Upstream::new("r", s3_bucket(Some(&endpoint), "health", "us-east-1").unwrap(), client)
            .with_credentials(Credentials::new(key, secret));
        let breaker = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        });
        let check = HealthCheck::new(up, ReplicaHealth::new())
            .with_timeout(Duration::from_secs(5))
            .with_breaker(breaker.clone());
        check.probe_once().await.unwrap();
        s3.stop().await;
        assert!(check.probe_once().await.is_err());
        assert_eq!(breaker.state(), BreakerState::Closed, "one failure of two");
        s3.restart().await.unwrap();
        check.probe_once().await.unwrap();
        assert_eq!(breaker.state(), BreakerState::Closed);
        s3.stop().await;
        // The passing probe cleared the probe's own failure (it does not
        // clear requests' failures: `breaker::state` tests) ...
        assert!(check.probe_once().await.is_err());
        assert_eq!(breaker.state(), BreakerState::Closed, "one failure of two again");
        // ... and two probe failures in a row open it.
        assert!(check.probe_once().await.is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        // A passing probe helps an open breaker recover: half-open at once.
        s3.restart().await.unwrap();
        check.probe_once().await.unwrap();
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }
}
