//! [`CircuitBreaker`]: the closed / open / half-open state machine and its
//! [`Permit`]s.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clock::{Clock, SystemClock};

/// Where a breaker is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused at once.
    Open,
    /// A few trial requests are let through.
    HalfOpen,
}

impl BreakerState {
    /// The metric value: 0 closed, 1 open, 2 half-open.
    pub fn as_metric(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// The breaker's thresholds (the `circuit_breaker` config block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// Successes in half-open that close it.
    pub success_threshold: u32,
    /// Time open before trials are let through.
    pub open_timeout: Duration,
    /// Concurrent trials in half-open.
    pub half_open_requests: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: Duration::from_secs(60),
            half_open_requests: 1,
        }
    }
}

/// Called on every state change with the new state.
pub type TransitionHook = Arc<dyn Fn(BreakerState) + Send + Sync>;

/// A circuit breaker for one replica: closed -> open after
/// `failure_threshold` consecutive failures; open refuses at once; after
/// `open_timeout`, half-open admits at most `half_open_requests` concurrent
/// trials; `success_threshold` successes close it, one failure reopens it.
///
/// Lock-free while closed (the hot path: one atomic load to admit, one
/// atomic store on success); transitions take a short mutex, never held
/// across an await.
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: AtomicU8,
    failures: AtomicU32,
    /// How many of `failures` were health probes' (see `record_success`).
    probe_failures: AtomicU32,
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    hook: Option<TransitionHook>,
}

#[derive(Debug)]
struct Inner {
    opened_at: Option<Instant>,
    trials_in_flight: u32,
    successes: u32,
    /// Whether a request's failure (not only probes') opened the breaker:
    /// then only requests' successes close it again.
    opened_by_requests: bool,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.config)
            .finish()
    }
}

/// The right to send one request through a breaker. Record its outcome with
/// [`success`](Permit::success) or [`failure`](Permit::failure); dropped
/// without either (a cancelled request), it only frees its trial slot.
#[derive(Debug)]
#[must_use]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    trial: bool,
    done: bool,
}

impl Permit {
    /// The request succeeded.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.on_success(self.trial, false);
    }

    /// The request failed.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_failure(self.trial, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.trial {
            self.breaker.lock().trials_in_flight -= 1;
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker with these thresholds and the system clock.
    pub fn new(config: BreakerConfig) -> Arc<Self> {
        Self::with_clock(config, Arc::new(SystemClock), None)
    }

    /// A closed breaker with the system clock that calls `hook` on every
    /// state change, to log it or export it as a metric. The hook runs under
    /// the breaker's mutex: it must be quick, and must not take a permit nor
    /// record an outcome on the same breaker (that would deadlock).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::with_hook(
    ///     BreakerConfig::default(),
    ///     Arc::new(|to| println!("replica-0 breaker is now {}", to.as_str())),
    /// );
    /// # let _ = breaker;
    /// ```
    pub fn with_hook(config: BreakerConfig, hook: TransitionHook) -> Arc<Self> {
        Self::with_clock(config, Arc::new(SystemClock), Some(hook))
    }

    /// A closed breaker with a given clock and an optional transition hook.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>, hook: Option<TransitionHook>) -> Arc<Self> {
        Arc::new(Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                success_threshold: config.success_threshold.max(1),
                half_open_requests: config.half_open_requests.max(1),
                ..config
            },
            state: AtomicU8::new(0),
            failures: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
            inner: Mutex::new(Inner {
                opened_at: None,
                trials_in_flight: 0,
                successes: 0,
                opened_by_requests: false,
            }),
            clock,
            hook,
        })
    }

    /// The thresholds.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state (an open breaker whose timeout passed still reads
    /// `Open` until a request or probe moves it to half-open).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// The run of consecutive failures (requests' and health probes') a
    /// closed breaker has counted; it opens at
    /// [`failure_threshold`](BreakerConfig::failure_threshold). A success
    /// ends the run (see [`record_success`](Self::record_success) for
    /// probes'). Once the breaker has opened, this is the run that opened it,
    /// until the breaker closes again (trials do not add to it).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Acquire)
    }

    /// Whether a request sent now could get through: closed, half-open, or
    /// open with its open period elapsed (the next request would be the
    /// trial). Takes no permit. Readiness uses it, so that a pod whose
    /// breakers opened recovers without traffic (an unready pod gets none).
    pub fn is_usable(&self) -> bool {
        match self.state() {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => self
                .lock()
                .opened_at
                .is_none_or(|t| self.clock.now().saturating_duration_since(t) >= self.config.open_timeout),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a request, or refuses it at once.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        if self.state() == BreakerState::Closed {
            return Some(Permit {
                breaker: self.clone(),
                trial: false,
                done: false,
            });
        }
        let mut inner = self.lock();
        match self.state() {
            BreakerState::Closed => Some(Permit {
                breaker: self.clone(),
                trial: false,
                done: false,
            }),
            BreakerState::Open => {
                let waited = inner
                    .opened_at
                    .is_none_or(|t| self.clock.now().saturating_duration_since(t) >= self.config.open_timeout);
                if !waited {
                    return None;
                }
                self.set_state(&mut inner, BreakerState::HalfOpen);
                inner.trials_in_flight = 1;
                Some(Permit {
                    breaker: self.clone(),
                    trial: true,
                    done: false,
                })
            }
            BreakerState::HalfOpen => {
                if inner.trials_in_flight >= self.config.half_open_requests {
                    return None;
                }
                inner.trials_in_flight += 1;
                Some(Permit {
                    breaker: self.clone(),
                    trial: true,
                    done: false,
                })
            }
        }
    }

    /// Records a success seen outside a permit (a health probe). A probe
    /// that passes says the replica answers a `HEAD`, not that its requests
    /// succeed, so:
    /// - it moves an open breaker to half-open (the next request is a trial,
    ///   so a recovered replica comes back within one probe interval);
    /// - it counts toward closing a half-open breaker only when probes alone
    ///   opened it; when a request's failure did, only requests close it (a
    ///   replica whose `HEAD` passes while its `GET`s fail costs one trial
    ///   per probe interval, not `failure_threshold` requests per cycle);
    /// - in a closed breaker it clears the failures only when they were all
    ///   probes' (so a replica of an idle bucket does not open on probe
    ///   failures days apart), never a run that includes a request's.
    pub fn record_success(&self) {
        match self.state() {
            BreakerState::Closed => {
                if self.failures.load(Ordering::Acquire) == self.probe_failures.load(Ordering::Acquire) {
                    self.reset_failures();
                }
            }
            _ => {
                let mut inner = self.lock();
                if self.state() == BreakerState::Open {
                    self.set_state(&mut inner, BreakerState::HalfOpen);
                }
                drop(inner);
                self.on_success(false, true);
            }
        }
    }

    /// Records a failure seen outside a permit (a health probe).
    pub fn record_failure(&self) {
        if self.state() == BreakerState::Closed {
            self.probe_failures.fetch_add(1, Ordering::AcqRel);
        }
        self.on_failure(false, true);
    }

    fn reset_failures(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.probe_failures.store(0, Ordering::Relaxed);
        }
    }

    fn on_success(&self, trial: bool, probe: bool) {
        if self.state() == BreakerState::Closed && !trial {
            return self.reset_failures();
        }
        let mut inner = self.lock();
        if trial {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
        match self.state() {
            BreakerState::HalfOpen if probe && inner.opened_by_requests => {}
            BreakerState::HalfOpen => {
                inner.successes += 1;
                if inner.successes >= self.config.success_threshold {
                    self.set_state(&mut inner, BreakerState::Closed);
                }
            }
            BreakerState::Closed => self.reset_failures(),
            BreakerState::Open => {}
        }
    }

    fn on_failure(&self, trial: bool, probe: bool) {
        if self.state() == BreakerState::Closed && !trial {
            let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if n < self.config.failure_threshold {
                return;
            }
        }
        let mut inner = self.lock();
        if trial {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
        match self.state() {
            BreakerState::Closed => {
                let failures = self.failures.load(Ordering::Acquire);
                if failures >= self.config.failure_threshold {
                    inner.opened_by_requests = failures != self.probe_failures.load(Ordering::Acquire);
                    self.set_state(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => {
                // A probe's failure keeps who opened it; a request's marks it.
                inner.opened_by_requests |= !probe;
                self.set_state(&mut inner, BreakerState::Open);
            }
            BreakerState::Open => {}
        }
    }

    fn set_state(&self, inner: &mut Inner, to: BreakerState) {
        let from = self.state();
        if from == to {
            return;
        }
        match to {
            BreakerState::Open => {
                inner.opened_at = Some(self.clock.now());
                inner.successes = 0;
            }
            BreakerState::HalfOpen => {
                inner.successes = 0;
            }
            BreakerState::Closed => {
                inner.opened_at = None;
                inner.successes = 0;
                inner.trials_in_flight = 0;
                inner.opened_by_requests = false;
                self.failures.store(0, Ordering::Release);
                self.probe_failures.store(0, Ordering::Release);
            }
        }
        self.state.store(to as u8, Ordering::Release);
        if let Some(hook) = &self.hook {
            hook(to);
        }
    }
}

// `BreakerState as u8` must match `from_u8`.
const _: () = {
    assert!(BreakerState::Closed as u8 == 0);
    assert!(BreakerState::Open as u8 == 1);
    assert!(BreakerState::HalfOpen as u8 == 2);
};

#[cfg(test)]
mod tests;
