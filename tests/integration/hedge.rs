//! Hedged requests and latency-aware choice through the real binary, with
//! real delay: a loopback TCP proxy of this file sits in front of a real S3
//! server and holds each request (a fixed delay, or a long stall on every
//! Nth request) before forwarding it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// What the delaying proxy does to each request it forwards.
#[derive(Clone, Copy)]
enum Delay {
    /// Holds every request this long.
    Fixed(Duration),
    /// Holds every `nth` request (1-based: the nth, 2nth...) this long.
    StallEvery { nth: u64, stall: Duration },
}

/// A TCP proxy on a free loopback port in front of `upstream`, delaying the
/// first chunk the client sends after a quiet moment (one small signed `GET`
/// arrives as one chunk). Runs until the test's runtime ends.
async fn delaying_proxy(upstream: std::net::SocketAddr, delay: Delay) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let count = seen.fetch_add(1, Ordering::SeqCst) + 1;
                        let hold = match delay {
                            Delay::Fixed(d) => d,
                            Delay::StallEvery { nth, stall } if count.is_multiple_of(nth) => stall,
                            Delay::StallEvery { .. } => Duration::ZERO,
                        };
                        tokio::time::sleep(hold).await;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    let _ = cw.shutdown().await;
                };
                // Either side closing (e.g. the proxy cancels a hedge loser) ends both.
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    format!("http://{addr}")
}

fn config(a: &str, b: &str, priorities: (u32, u32), s3_extra: &str) -> String {
    BucketConfig::new("hb", "/data")
        .s3("      timeout_seconds: 60")
        .s3("      retry: { max_attempts: 1 }")
        .s3("      health_check: { enabled: false }")
        .s3(s3_extra)
        .replica("a", a, &format!("priority: {}", priorities.0))
        .replica("b", b, &format!("priority: {}", priorities.1))
        .then("metrics: { enabled: true, address: 127.0.0.1, port: 0 }")
        .render()
}

async fn servers() -> (S3, S3) {
    let (a, b) = (s3().await, s3().await);
    for s in [&a, &b] {
        s.put_object("data-bucket", "obj.txt", b"hello hedge\n").unwrap();
    }
    (a, b)
}

/// The sum of a counter's samples whose labels contain every one of `labels`.
async fn counter(proxy: &Proxy, name: &str, labels: &[&str]) -> u64 {
    let text = get_text(proxy.metrics_url("/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Sends `n` sequential `GET`s; returns each answer's replica and latency.
async fn batch(proxy: &Proxy, n: usize) -> Vec<(String, Duration)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let res = client.get(proxy.url("/data/obj.txt")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let replica = res.headers()["x-yatagarasu-replica"].to_str().unwrap().to_owned();
        assert_eq!(res.text().await.unwrap(), "hello hedge\n");
        out.push((replica, started.elapsed()));
    }
    out
}

fn report(label: &str, answers: &[(String, Duration)]) {
    let mut times: Vec<Duration> = answers.iter().map(|(_, d)| *d).collect();
    times.sort();
    println!(
        "{label}: p50 {:?}, p99 {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_is_hedged_to_the_backup() {
    let (a, b) = servers().await;
    // Every 3rd request to the primary stalls 30 s (the replica timeout is 60 s).
    let stall = Delay::StallEvery {
        nth: 3,
        stall: Duration::from_secs(30),
    };
    let slow_a = delaying_proxy(a.addr(), stall).await;
    let hedge = "      hedge: { enabled: true, delay_ms: 200, max_extra_percent: 100 }";
    let proxy = Proxy::start(&config(&slow_a, &b.endpoint(), (1, 2), hedge));
    // The client gives up after 15 s, half the stall: only a hedge can answer.
    let answers = batch(&proxy, 9).await;
    report("stall every 3rd, hedging on", &answers);
    let by_b = answers.iter().filter(|(r, _)| r == "b").count();
    assert!(
        by_b >= 1,
        "the stalled requests were answered by the backup: {answers:?}"
    );
    let sent = counter(
        &proxy,
        "yatagarasu_hedges_total",
        &[r#"outcome="sent""#, r#"replica="b""#],
    )
    .await;
    let won = counter(
        &proxy,
        "yatagarasu_hedges_total",
        &[r#"outcome="won""#, r#"replica="b""#],
    )
    .await;
    assert!(won >= 1 && sent >= won, "sent {sent}, won {won}");
    assert_eq!(won as usize, by_b);
    // The primary was never charged for being slow: its breaker is closed.
    let open = counter(&proxy, "yatagarasu_circuit_breaker_state", &[r#"replica="a""#]).await;
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hedge_budget_holds_when_every_replica_is_slow() {
    let (a, b) = servers().await;
    let slow = Delay::Fixed(Duration::from_millis(300));
    let (slow_a, slow_b) = (
        delaying_proxy(a.addr(), slow).await,
        delaying_proxy(b.addr(), slow).await,
    );
    let hedge = "      hedge: { enabled: true, delay_ms: 20, max_extra_percent: 10 }";
    let proxy = Proxy::start(&config(&slow_a, &slow_b, (1, 2), hedge));
    let before = a.received().len() + b.received().len();
    // 40 requests, 8 at a time: each waits past the hedge delay.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = proxy.url("/data/obj.txt");
        tasks.spawn(async move {
            let client = client();
            for _ in 0..5 {
                let res = client.get(&url).send().await.unwrap();
                assert_eq!(res.status(), 200);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let sent = counter(&proxy, "yatagarasu_hedges_total", &[r#"outcome="sent""#]).await;
    // 10% of 40 requests; without a budget every request would hedge.
    assert!((1..=4).contains(&sent), "hedges sent: {sent}");
    let received = a.received().len() + b.received().len() - before;
    assert!(received <= 40 + 4, "requests reaching S3: {received}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_twin_gets_clearly_less_traffic() {
    let (a, b) = servers().await;
    let slow_b = delaying_proxy(b.addr(), Delay::Fixed(Duration::from_millis(200))).await;
    let latency = "      latency_aware: { enabled: true }";
    let proxy = Proxy::start(&config(&a.endpoint(), &slow_b, (1, 1), latency));
    let answers = batch(&proxy, 100).await;
    report("slow twin, latency-aware", &answers);
    let slow = answers.iter().filter(|(r, _)| r == "b").count();
    println!("slow twin served {slow} of 100");
    // Weight alone would send about 50 of 100 to each twin.
    assert!(slow < 30, "the slow twin served {slow} of 100");
    assert!(slow >= 1, "the slow twin was tried at least once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_turns_hedging_on_or_off_for_itself() {
    let (a, b) = servers().await;
    // The primary holds every request 30 s (the replica timeout is 60 s).
    let slow_a = delaying_proxy(a.addr(), Delay::Fixed(Duration::from_secs(30))).await;
    let with_own = |own: &str, bucket: &str| {
        let cfg = config(&slow_a, &b.endpoint(), (1, 2), bucket);
        let replaced = cfg.replace("{ name: a, ", &format!("{{ name: a, hedge: {{ {own} }}, "));
        assert_ne!(cfg, replaced);
        replaced
    };

    // Hedging off for the bucket (its budget allows every request), on for
    // the slow primary alone: the backup answers.
    let budget = "      hedge: { enabled: false, max_extra_percent: 100 }";
    let on = Proxy::start(&with_own("enabled: true, delay_ms: 100", budget));
    let answers = batch(&on, 3).await;
    assert!(answers.iter().all(|(r, _)| r == "b"), "{answers:?}");
    let sent = counter(&on, "yatagarasu_hedges_total", &[r#"outcome="sent""#]).await;
    assert_eq!(sent, 3);

    // Hedging on for the bucket, off for the primary: nothing is hedged, the
    // client (giving up after 2 s) gets no answer, and no hedge is counted.
    let bucket = "      hedge: { enabled: true, delay_ms: 100, max_extra_percent: 100 }";
    let off = Proxy::start(&with_own("enabled: false", bucket));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let res = client.get(off.url("/data/obj.txt")).send().await;
    assert!(res.is_err(), "answered although the only replica asked stalls: {res:?}");
    let sent = counter(&off, "yatagarasu_hedges_total", &[r#"outcome="sent""#]).await;
    assert_eq!(sent, 0);
}
