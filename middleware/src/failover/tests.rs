//! The failover's state-machine tests (paused time, scripted replicas), in one
//! file over 400 lines: they share the scripted and slow replica helpers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use super::*;
use crate::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use crate::error::FetchError;
use crate::health::ReplicaHealth;
use crate::object::ObjectRequest;

type Svc = BoxCloneSyncService<ObjectRequest, Response<Body>, FetchError>;

/// A replica answering from a script: each call pops the next outcome
/// (the last one repeats).
fn scripted(
    name: &'static str,
    script: Vec<Result<u16, ()>>,
    calls: Arc<AtomicUsize>,
) -> (Replica<Svc>, Arc<CircuitBreaker>) {
    let script = Arc::new(Mutex::new(script));
    let inner = tower::service_fn(move |req: ObjectRequest| {
        calls.fetch_add(1, Ordering::SeqCst);
        let mut s = script.lock().unwrap();
        let next = if s.len() > 1 { s.remove(0) } else { s[0] };
        // The attempt as the replica saw it.
        let attempt = req
            .attempt()
            .map(|a| format!("{} {}", a.number, a.kind.as_str()))
            .unwrap_or_default();
        async move {
            match next {
                Ok(status) => {
                    let mut res = Response::new(Body::from(name));
                    *res.status_mut() = StatusCode::from_u16(status).unwrap();
                    res.headers_mut().insert("x-attempt", attempt.parse().unwrap());
                    Ok(res)
                }
                Err(()) => Err(FetchError::Timeout(Duration::from_secs(1))),
            }
        }
    });
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 2,
        ..BreakerConfig::default()
    });
    let svc = BoxCloneSyncService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner));
    (Replica::new(name, svc, breaker.clone(), ReplicaHealth::new()), breaker)
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl FailoverEvents for Recorder {
    fn failover(&self, _bucket: &str, from: &str, to: &str) {
        self.0.lock().unwrap().push(format!("{from}->{to}"));
    }
}

async fn body(res: Response<Body>) -> String {
    String::from_utf8(axum::body::to_bytes(res.into_body(), 1024).await.unwrap().to_vec()).unwrap()
}

use tower::Layer;

#[tokio::test(start_paused = true)]
async fn fails_over_in_priority_order_and_reports_it() {
    let (a_calls, b_calls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, _) = scripted("a", vec![Err(())], a_calls.clone());
    let (b, _) = scripted("b", vec![Ok(200)], b_calls.clone());
    let events = Arc::new(Recorder::default());
    let failover = Failover::builder("bkt", vec![b.with_priority(2), a.with_priority(1)])
        .events(events.clone())
        .build();
    let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(body(res).await, "b");
    assert_eq!((a_calls.load(Ordering::SeqCst), b_calls.load(Ordering::SeqCst)), (1, 1));
    assert_eq!(*events.0.lock().unwrap(), vec!["a->b"]);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_skipped_without_a_call() {
    let a_calls = Arc::new(AtomicUsize::new(0));
    let (a, a_breaker) = scripted("a", vec![Ok(200)], a_calls.clone());
    let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
    a_breaker.record_failure();
    a_breaker.record_failure();
    let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)]);
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(body(res).await, "b");
    assert_eq!(a_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_answers_not_failures() {
    let b_calls = Arc::new(AtomicUsize::new(0));
    let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
    let (b, _) = scripted("b", vec![Ok(200)], b_calls.clone());
    let failover = Failover::new("bkt", vec![a.with_priority(1), b.with_priority(2)]);
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(b_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn with_failover_on_404_a_miss_tries_the_next_replica() {
    let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
    let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
    let events = Arc::new(Recorder::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .failover_on_404(true)
        .events(events.clone())
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(body(res).await, "b");
    assert_eq!(*events.0.lock().unwrap(), vec!["a->b"]);

    // Missing everywhere, or missing on one and failing on the rest: a 404.
    let (a, _) = scripted("a", vec![Ok(404)], Arc::new(AtomicUsize::new(0)));
    let (b, _) = scripted("b", vec![Err(())], Arc::new(AtomicUsize::new(0)));
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .failover_on_404(true)
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await, "a");
}

#[tokio::test(start_paused = true)]
async fn a_rejected_replica_is_a_failure_and_the_next_one_serves() {
    let a_calls = Arc::new(AtomicUsize::new(0));
    let rejected = tower::service_fn(move |_req: ObjectRequest| {
        a_calls.fetch_add(1, Ordering::SeqCst);
        async {
            Err::<Response<Body>, _>(FetchError::Rejected {
                status: StatusCode::FORBIDDEN,
                code: Some("SignatureDoesNotMatch".into()),
            })
        }
    });
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 2,
        ..BreakerConfig::default()
    });
    let svc: Svc = BoxCloneSyncService::new(CircuitBreakerLayer::new(breaker.clone()).layer(rejected));
    let a = Replica::new("a", svc, breaker.clone(), ReplicaHealth::new()).with_priority(1);
    let (b, _) = scripted("b", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
    let failover = Failover::new("bkt", vec![a, b.with_priority(2)]);
    for _ in 0..2 {
        let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "b");
    }
    assert_eq!(breaker.state(), crate::breaker::BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn retries_a_failed_pass_after_backoff_within_the_budget() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, _) = scripted("a", vec![Err(()), Ok(200)], calls.clone());
    let failover = Failover::builder("bkt", vec![a])
        .retries(2, Duration::from_millis(10), Duration::from_millis(20))
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(body(res).await, "a");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, _) = scripted("a", vec![Err(()), Ok(200)], calls.clone());
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
    let failover = Failover::builder("bkt", vec![a])
        .retries(3, Duration::from_millis(10), Duration::from_millis(20))
        .budget(budget)
        .build();
    let err = failover.oneshot(ObjectRequest::get("k")).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn nothing_admissible_is_a_fast_unavailable() {
    let (a, a_breaker) = scripted("a", vec![Ok(200)], Arc::new(AtomicUsize::new(0)));
    a_breaker.record_failure();
    a_breaker.record_failure();
    let err = Failover::new("bkt", vec![a])
        .oneshot(ObjectRequest::get("k"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::BreakerOpen), "{err}");
}

/// A replica answering 200 with its name after `delay`, counting calls
/// and recording the attempts it was sent.
fn slow(name: &'static str, delay: Duration, seen: Arc<Mutex<Vec<Attempt>>>) -> (Replica<Svc>, Arc<CircuitBreaker>) {
    slow_to(name, delay, true, seen)
}

/// As [`slow`], answering with a 503 failure instead when `ok` is false.
fn slow_to(
    name: &'static str,
    delay: Duration,
    ok: bool,
    seen: Arc<Mutex<Vec<Attempt>>>,
) -> (Replica<Svc>, Arc<CircuitBreaker>) {
    let inner = tower::service_fn(move |req: ObjectRequest| {
        seen.lock().unwrap().push(req.attempt().unwrap());
        async move {
            tokio::time::sleep(delay).await;
            if ok {
                Ok(Response::new(Body::from(name)))
            } else {
                Err(FetchError::Status(StatusCode::SERVICE_UNAVAILABLE))
            }
        }
    });
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 1,
        ..BreakerConfig::default()
    });
    let svc = BoxCloneSyncService::new(
        CircuitBreakerLayer::new(breaker.clone()).layer(crate::bulkhead::BulkheadLayer::new(1).layer(inner)),
    );
    (Replica::new(name, svc, breaker.clone(), ReplicaHealth::new()), breaker)
}

#[derive(Default)]
struct Hedges(Mutex<Vec<String>>);

impl FailoverEvents for Hedges {
    fn hedge(&self, _bucket: &str, replica: &str, event: HedgeEvent) {
        self.0.lock().unwrap().push(format!("{replica}:{}", event.as_str()));
    }
}

fn hedge(percent: f32) -> Option<HedgeConfig> {
    Some(HedgeConfig {
        delay: HedgeDelay::Fixed(Duration::from_millis(50)),
        max_extra_percent: percent,
        enabled_by_default: true,
    })
}

#[tokio::test(start_paused = true)]
async fn a_stalled_replica_is_hedged_and_the_loser_is_cancelled_uncharged() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (a, a_breaker) = slow("a", Duration::from_secs(30), sent.clone());
    let (b, _) = slow("b", Duration::from_millis(10), sent.clone());
    let events = Arc::new(Hedges::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .hedge(hedge(100.0))
        .events(events.clone())
        .build();
    let started = tokio::time::Instant::now();
    let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(60));
    assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Won));
    assert_eq!(
        res.extensions().get::<Attempt>(),
        Some(&Attempt {
            number: 2,
            kind: AttemptKind::Hedge
        })
    );
    assert_eq!(body(res).await, "b");
    assert_eq!(
        *sent.lock().unwrap(),
        vec![
            Attempt {
                number: 1,
                kind: AttemptKind::Primary
            },
            Attempt {
                number: 2,
                kind: AttemptKind::Hedge
            }
        ]
    );
    assert_eq!(*events.0.lock().unwrap(), vec!["b:sent", "b:won"]);
    // The cancelled request charged nothing (threshold 1) and freed its
    // bulkhead slot (of 1): the next request is admitted to `a` again.
    assert_eq!(a_breaker.state(), crate::breaker::BreakerState::Closed);
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(body(res).await, "b");
    assert_eq!(sent.lock().unwrap()[2].kind, AttemptKind::Primary);
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_is_not_hedged_and_at_most_one_hedge_per_request() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (a, _) = slow("a", Duration::from_millis(10), sent.clone());
    let (b, _) = slow("b", Duration::from_secs(1), sent.clone());
    let (c, _) = slow("c", Duration::from_secs(1), sent.clone());
    let failover = Failover::builder("bkt", vec![a.with_priority(1)])
        .hedge(hedge(100.0))
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(res.extensions().get::<HedgeOutcome>(), None);
    assert_eq!(sent.lock().unwrap().len(), 1);
    sent.lock().unwrap().clear();
    let (a, _) = slow("a", Duration::from_secs(2), sent.clone());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2), c.with_priority(3)])
        .hedge(hedge(100.0))
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Won));
    assert_eq!(body(res).await, "b");
    assert_eq!(sent.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_hedges() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (a, _) = slow("a", Duration::from_millis(100), sent.clone());
    let (b, _) = slow("b", Duration::from_millis(100), sent.clone());
    let events = Arc::new(Hedges::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .hedge(hedge(10.0))
        .events(events.clone())
        .build();
    for _ in 0..50 {
        failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
    }
    let hedges = events.0.lock().unwrap().iter().filter(|e| e.ends_with(":sent")).count();
    // 10% of 50 requests.
    assert!((1..=5).contains(&hedges), "{hedges}");
}

#[tokio::test(start_paused = true)]
async fn a_replica_overrides_the_hedge_delay_or_opts_out() {
    use crate::failover::ReplicaHedge;
    let sent = Arc::new(Mutex::new(Vec::new()));
    let run = |own: ReplicaHedge, default_on: bool| {
        let sent = sent.clone();
        async move {
            sent.lock().unwrap().clear();
            let (a, _) = slow("a", Duration::from_millis(500), sent.clone());
            let (b, _) = slow("b", Duration::from_millis(10), sent.clone());
            let mut config = hedge(100.0).unwrap();
            config.enabled_by_default = default_on;
            let failover = Failover::builder("bkt", vec![a.with_priority(1).with_hedge(own), b.with_priority(2)])
                .hedge(Some(config))
                .build();
            let started = tokio::time::Instant::now();
            let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
            (started.elapsed(), body(res).await, sent.lock().unwrap().len())
        }
    };
    // The failover's 50 ms.
    assert_eq!(
        run(ReplicaHedge::default(), true).await,
        (Duration::from_millis(60), "b".into(), 2)
    );
    // The replica's own delay.
    let own = ReplicaHedge {
        enabled: None,
        delay: Some(HedgeDelay::Fixed(Duration::from_millis(200))),
    };
    assert_eq!(run(own, true).await, (Duration::from_millis(210), "b".into(), 2));
    // Opted out: waits for its own answer.
    let out = ReplicaHedge {
        enabled: Some(false),
        delay: None,
    };
    assert_eq!(run(out, true).await, (Duration::from_millis(500), "a".into(), 1));
    // Hedging off for the bucket, on for this replica alone.
    let only = ReplicaHedge {
        enabled: Some(true),
        delay: None,
    };
    assert_eq!(run(only, false).await, (Duration::from_millis(60), "b".into(), 2));
    assert_eq!(run(ReplicaHedge::default(), false).await.2, 1);
}

#[tokio::test(start_paused = true)]
async fn when_the_first_answer_of_a_race_fails_the_other_one_serves() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    // The stalled primary fails at 200 ms; the hedge (sent at 50 ms) answers at 550 ms.
    let (a, a_breaker) = slow_to("a", Duration::from_millis(200), false, sent.clone());
    let (b, _) = slow_to("b", Duration::from_millis(500), true, sent.clone());
    let events = Arc::new(Hedges::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .hedge(hedge(100.0))
        .events(events.clone())
        .build();
    let started = tokio::time::Instant::now();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(550));
    assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Won));
    assert_eq!(body(res).await, "b");
    assert_eq!(*events.0.lock().unwrap(), vec!["b:sent", "b:won"]);
    // The primary's failure was charged to its breaker (threshold 1).
    assert_eq!(a_breaker.state(), crate::breaker::BreakerState::Open);

    // The other way round: the hedge fails first, the primary still serves.
    sent.lock().unwrap().clear();
    let (a, _) = slow_to("a", Duration::from_millis(300), true, sent.clone());
    let (b, b_breaker) = slow_to("b", Duration::from_millis(10), false, sent.clone());
    let events = Arc::new(Hedges::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .hedge(hedge(100.0))
        .events(events.clone())
        .build();
    let started = tokio::time::Instant::now();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(res.extensions().get::<HedgeOutcome>(), Some(&HedgeOutcome::Lost));
    assert_eq!(
        res.extensions().get::<Attempt>(),
        Some(&Attempt {
            number: 1,
            kind: AttemptKind::Primary
        })
    );
    assert_eq!(body(res).await, "a");
    assert_eq!(*events.0.lock().unwrap(), vec!["b:sent"]);
    assert_eq!(b_breaker.state(), crate::breaker::BreakerState::Open);
    assert_eq!(sent.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pass_is_retried_with_every_replica_again_after_the_backoff() {
    // Both replicas fail on the first pass and serve on the second: the
    // retry round starts a fresh pass over the whole try order.
    let a_calls = Arc::new(AtomicUsize::new(0));
    let b_calls = Arc::new(AtomicUsize::new(0));
    let (a, _) = scripted("a", vec![Err(()), Ok(200)], a_calls.clone());
    let (b, _) = scripted("b", vec![Err(()), Ok(200)], b_calls.clone());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .retries(1, Duration::from_millis(10), Duration::from_millis(20))
        .build();
    let res = failover.oneshot(ObjectRequest::get("k")).await.unwrap();
    assert_eq!(res.headers()["x-attempt"], "3 failover");
    // No hedge was sent: the attempt is on the request only.
    assert_eq!(res.extensions().get::<Attempt>(), None);
    assert_eq!(body(res).await, "a");
    assert_eq!((a_calls.load(Ordering::SeqCst), b_calls.load(Ordering::SeqCst)), (2, 1));
}

/// Every failure and failover, as `fail:a` and `a->b`.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl FailoverEvents for Log {
    fn failure(&self, _bucket: &str, replica: &str, _error: &FetchError) {
        self.0.lock().unwrap().push(format!("fail:{replica}"));
    }

    fn failover(&self, _bucket: &str, from: &str, to: &str) {
        self.0.lock().unwrap().push(format!("{from}->{to}"));
    }
}

const OBJECT: &[u8] = b"0123456789";

/// A replica of the 10-byte `OBJECT`, with ETag `"e"` when `etag`: a whole
/// `GET` sends its headers, then its first `cut` bytes and a reset (`None`:
/// the whole body); a ranged `GET` is served.
fn object(name: &'static str, cut: Option<usize>, etag: bool) -> (Replica<Svc>, Arc<CircuitBreaker>) {
    let inner = tower::service_fn(move |req: ObjectRequest| {
        let range = req
            .headers()
            .get(http::header::RANGE)
            .and_then(|v| v.to_str().ok()?.strip_prefix("bytes=")?.split_once('-'))
            .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
        async move {
            let mut res = match range {
                Some((first, last)) => {
                    let mut res = Response::new(Body::from(&OBJECT[first..=last]));
                    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                    let range = format!("bytes {first}-{last}/{}", OBJECT.len());
                    res.headers_mut().insert("content-range", range.parse().unwrap());
                    res.headers_mut().insert("content-length", (last + 1 - first).into());
                    res
                }
                None => {
                    let mut chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
                        vec![Ok(bytes::Bytes::from_static(&OBJECT[..cut.unwrap_or(OBJECT.len())]))];
                    if cut.is_some() {
                        chunks.push(Err(std::io::Error::other("connection reset")));
                    }
                    let mut res = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
                    res.headers_mut().insert("content-length", OBJECT.len().into());
                    res
                }
            };
            if etag {
                res.headers_mut().insert("etag", "\"e\"".parse().unwrap());
            }
            Ok::<_, FetchError>(res)
        }
    });
    let breaker = CircuitBreaker::new(BreakerConfig {
        failure_threshold: 2,
        ..BreakerConfig::default()
    });
    let svc = BoxCloneSyncService::new(CircuitBreakerLayer::new(breaker.clone()).layer(inner));
    (Replica::new(name, svc, breaker.clone(), ReplicaHealth::new()), breaker)
}

/// Replica `a` (first) cuts its body after 4 bytes, `b` serves it whole;
/// both with an `ETag` when `etag`: the failover, its events and `a`'s breaker.
fn cut_then_whole(etag: bool) -> (Failover<Svc>, Arc<Log>, Arc<CircuitBreaker>) {
    let (a, a_breaker) = object("a", Some(4), etag);
    let (b, _) = object("b", None, etag);
    let events = Arc::new(Log::default());
    let failover = Failover::builder("bkt", vec![a.with_priority(1), b.with_priority(2)])
        .events(events.clone())
        .build();
    (failover, events, a_breaker)
}

#[tokio::test(start_paused = true)]
async fn a_body_resumed_elsewhere_is_a_failure_and_a_move_and_cuts_open_the_breaker() {
    let (failover, events, a_breaker) = cut_then_whole(true);
    for _ in 0..2 {
        let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        assert_eq!(body(res).await, "0123456789");
    }
    assert_eq!(*events.0.lock().unwrap(), vec!["fail:a", "a->b", "fail:a", "a->b"]);
    // The good headers in between did not reset the count: two cuts in a row.
    assert_eq!(a_breaker.state(), crate::breaker::BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_cut_that_cannot_be_resumed_is_still_the_replicas_failure() {
    let (failover, events, a_breaker) = cut_then_whole(false);
    for _ in 0..2 {
        let res = failover.clone().oneshot(ObjectRequest::get("k")).await.unwrap();
        assert!(
            axum::body::to_bytes(res.into_body(), 1024).await.is_err(),
            "delivered as complete"
        );
    }
    assert_eq!(*events.0.lock().unwrap(), vec!["fail:a", "fail:a"]);
    assert_eq!(a_breaker.state(), crate::breaker::BreakerState::Open);
}
