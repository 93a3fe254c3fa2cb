use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A source of the current time; tests use [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<Instant>);

impl Default for ManualClock {
    fn default() -> Self {
        Self(Mutex::new(Instant::now()))
    }
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("not poisoned") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().expect("not poisoned")
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
    inner: Mutex<Inner>,
    clock: Arc<dyn Clock>,
    hook: Option<TransitionHook>,
}

#[derive(Debug)]
struct Inner {
    opened_at: Option<Instant>,
    trials_in_flight: u32,
    successes: u32,
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
        self.breaker.on_success(self.trial);
    }

    /// The request failed.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_failure(self.trial);
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
            inner: Mutex::new(Inner {
                opened_at: None,
                trials_in_flight: 0,
                successes: 0,
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

    /// Records a success seen outside a permit (a health probe): it resets
    /// the failure count, counts toward closing a half-open breaker, and
    /// moves an open one to half-open (the replica answers again).
    pub fn record_success(&self) {
        match self.state() {
            BreakerState::Closed => self.reset_failures(),
            _ => {
                let mut inner = self.lock();
                if self.state() == BreakerState::Open {
                    self.set_state(&mut inner, BreakerState::HalfOpen);
                }
                drop(inner);
                self.on_success(false);
            }
        }
    }

    /// Records a failure seen outside a permit (a health probe, a body cut
    /// after the headers).
    pub fn record_failure(&self) {
        self.on_failure(false);
    }

    fn reset_failures(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    fn on_success(&self, trial: bool) {
        if self.state() == BreakerState::Closed && !trial {
            return self.reset_failures();
        }
        let mut inner = self.lock();
        if trial {
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
        }
        match self.state() {
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

    fn on_failure(&self, trial: bool) {
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
                if self.failures.load(Ordering::Acquire) >= self.config.failure_threshold {
                    self.set_state(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => self.set_state(&mut inner, BreakerState::Open),
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
                self.failures.store(0, Ordering::Release);
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
mod tests {
    use super::*;

    fn breaker(f: u32, s: u32, half: u32) -> (Arc<CircuitBreaker>, Arc<ManualClock>, Arc<Mutex<Vec<BreakerState>>>) {
        let clock = Arc::new(ManualClock::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let b = CircuitBreaker::with_clock(
            BreakerConfig {
                failure_threshold: f,
                success_threshold: s,
                open_timeout: Duration::from_secs(30),
                half_open_requests: half,
            },
            clock.clone(),
            Some(Arc::new(move |s| log.lock().unwrap().push(s))),
        );
        (b, clock, seen)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (b, _, _) = breaker(3, 1, 1);
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().success(); // resets the run
        b.try_acquire().unwrap().failure();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn half_open_after_timeout_then_closes_on_successes() {
        let (b, clock, seen) = breaker(1, 2, 1);
        b.try_acquire().unwrap().failure();
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_secs(29));
        assert!(b.try_acquire().is_none());
        clock.advance(Duration::from_secs(1));
        let trial = b.try_acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire().is_none(), "one trial at a time");
        trial.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![BreakerState::Open, BreakerState::HalfOpen, BreakerState::Closed]
        );
    }

    #[test]
    fn one_failure_in_half_open_reopens() {
        let (b, clock, _) = breaker(1, 3, 2);
        b.try_acquire().unwrap().failure();
        clock.advance(Duration::from_secs(30));
        let t1 = b.try_acquire().unwrap();
        let t2 = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "half_open_requests = 2");
        t1.success();
        t2.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn a_dropped_trial_frees_its_slot() {
        let (b, clock, _) = breaker(1, 1, 1);
        b.try_acquire().unwrap().failure();
        clock.advance(Duration::from_secs(30));
        drop(b.try_acquire().unwrap());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_is_usable_once_its_open_period_elapsed() {
        let (b, clock, _) = breaker(1, 1, 1);
        assert!(b.is_usable());
        b.try_acquire().unwrap().failure();
        assert!(!b.is_usable());
        clock.advance(Duration::from_secs(29));
        assert!(!b.is_usable());
        clock.advance(Duration::from_secs(1));
        assert!(b.is_usable());
        // Asking took no permit: the state is unchanged and the trial is still free.
        assert_eq!(b.state(), BreakerState::Open);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn probes_feed_the_breaker() {
        let (b, _, _) = breaker(2, 1, 1);
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        // A successful probe moves it to half-open without waiting, and with
        // success_threshold 1 closes it.
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn concurrent_failures_open_it_exactly_once_at_the_threshold() {
        let (b, _, seen) = breaker(100, 1, 1);
        let granted = AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if let Some(p) = b.try_acquire() {
                            granted.fetch_add(1, Ordering::Relaxed);
                            p.failure();
                        }
                    }
                });
            }
        });
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(*seen.lock().unwrap(), vec![BreakerState::Open], "opened more than once");
        // The threshold was reached; past it, only permits already taken by
        // the other threads (one each) got through.
        let granted = granted.load(Ordering::Relaxed);
        assert!(
            (100..=103).contains(&granted),
            "{granted} permits for a threshold of 100"
        );
        assert!(b.try_acquire().is_none());
    }
}
