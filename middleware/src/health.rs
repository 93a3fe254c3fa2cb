//! Active health checks: a background task per replica sends a signed `HEAD`
//! every interval and records whether the replica answered, and how fast.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

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
        }
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
