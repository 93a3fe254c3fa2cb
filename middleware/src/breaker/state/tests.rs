//! The state machine driven by a [`ManualClock`](crate::breaker::ManualClock).

use super::*;
use crate::breaker::ManualClock;

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
fn probes_do_not_close_a_breaker_that_requests_opened() {
    // A replica whose HEAD passes while its GETs fail: requests open it.
    let (b, clock, _) = breaker(2, 2, 1);
    b.try_acquire().unwrap().failure();
    b.record_failure();
    assert_eq!(b.state(), BreakerState::Open);
    // A passing probe lets the next request through as a trial ...
    b.record_success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // ... but passing probes alone never close it.
    for _ in 0..5 {
        b.record_success();
    }
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // The trial fails: open again, and a probe's failure in half-open
    // does not forget that requests opened it.
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    b.record_success();
    b.record_failure();
    assert_eq!(b.state(), BreakerState::Open);
    b.record_success();
    b.record_success();
    b.record_success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    // Requests' successes close it.
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
    // Closed again, a breaker that probes alone open is closed by probes.
    b.record_failure();
    b.record_failure();
    assert_eq!(b.state(), BreakerState::Open);
    b.record_success();
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    // And one opened by requests still reaches half-open by its timeout.
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert!(b.try_acquire().is_none());
    clock.advance(Duration::from_secs(30));
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn a_probe_success_does_not_reset_the_count_of_a_closed_breaker() {
    // Requests fail, probes pass in between: the requests' consecutive
    // failures still open it.
    let (b, _, _) = breaker(3, 1, 1);
    b.try_acquire().unwrap().failure();
    b.record_success();
    b.try_acquire().unwrap().failure();
    b.record_success();
    assert_eq!(b.state(), BreakerState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    // A request's success still resets the count.
    let (b, _, _) = breaker(2, 1, 1);
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Closed);
    // Failures that were all probes' are cleared by a passing probe: an idle
    // replica does not open on probe blips far apart.
    let (b, _, _) = breaker(2, 1, 1);
    b.record_failure();
    b.record_success();
    b.record_failure();
    assert_eq!(b.state(), BreakerState::Closed);
    // ... but not when a request failed among them.
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    let (b, _, _) = breaker(3, 1, 1);
    b.record_failure();
    b.try_acquire().unwrap().failure();
    b.record_success();
    b.record_failure();
    assert_eq!(b.state(), BreakerState::Open);
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

#[test]
fn consecutive_failures_count_the_run_until_the_breaker_closes() {
    let (b, clock, _) = breaker(3, 1, 1);
    assert_eq!(b.consecutive_failures(), 0);
    b.try_acquire().unwrap().failure();
    b.record_failure(); // a probe's
    assert_eq!(b.consecutive_failures(), 2);
    b.try_acquire().unwrap().success();
    assert_eq!(b.consecutive_failures(), 0);
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!((b.state(), b.consecutive_failures()), (BreakerState::Open, 3));
    clock.advance(Duration::from_secs(30));
    b.try_acquire().unwrap().success();
    assert_eq!((b.state(), b.consecutive_failures()), (BreakerState::Closed, 0));
}

#[test]
fn with_hook_reports_transitions() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let b = CircuitBreaker::with_hook(
        BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        },
        Arc::new(move |s| log.lock().unwrap().push(s)),
    );
    b.try_acquire().unwrap().failure();
    assert_eq!(*seen.lock().unwrap(), [BreakerState::Open]);
}
