//! Chaos soak (bounded, ~60 s; `SOAK_SECONDS` to change): concurrent clients
//! with mixed workloads (small and large objects, ranges, conditional
//! requests, cache hits and misses, slow readers, idle connections) through
//! the real binary, while a fault schedule stops, stalls, breaks and restarts
//! the replicas and Redis and sends SIGHUP reloads. Every response is checked
//! byte for byte; the run fails on any failed or corrupted request. A `503`
//! is counted apart (refused): only the phase that stops every replica may
//! cause one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::common::*;

#[derive(Default)]
struct Tally {
    served: AtomicU64,
    failed: AtomicU64,
    corrupted: AtomicU64,
    refused: AtomicU64,
    /// Failed while every replica was down (or right after): counted apart.
    cut: AtomicU64,
    /// Set while every replica is down, and for a few seconds after.
    all_down: AtomicBool,
    notes: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, started_down: bool, what: String) {
        if started_down || self.all_down.load(Ordering::SeqCst) {
            self.cut.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut notes = self.notes.lock().unwrap();
            if notes.len() < 10 {
                notes.push(what);
            }
        }
    }
}

const SMALL: usize = 5;
const LARGE: usize = 2;

fn objects() -> Vec<(String, Vec<u8>)> {
    let mut v = Vec::new();
    for i in 0..SMALL {
        v.push((format!("small-{i}.bin"), pattern(1000 + i * 337, i as u64)));
    }
    for i in 0..LARGE {
        v.push((
            format!("large-{i}.bin"),
            pattern(3 * 1024 * 1024 + i * 4099, 100 + i as u64),
        ));
    }
    v
}

fn config(primary: &str, backup: &str, redis: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 2
  upstream_read_timeout_seconds: 3
buckets:
  - name: soak
    path_prefix: /s
    s3:
      bucket: bkt
      access_key: {ACCESS_KEY}
      secret_key: {SECRET_KEY}
      timeout_seconds: 2
      retry: {{ max_attempts: 3, initial_interval: 50, max_interval: 300 }}
      circuit_breaker: {{ failure_threshold: 3, timeout_seconds: 2 }}
      health_check: {{ enabled: true, interval_seconds: 1, timeout_seconds: 1 }}
      replicas:
        - {{ name: primary, endpoint: "{primary}", priority: 1 }}
        - {{ name: backup, endpoint: "{backup}", priority: 2 }}
cache:
  memory: {{ max_capacity: 8388608, ttl_seconds: 5, max_item_size: 65536 }}
  redis: {{ enabled: true, url: "{redis}", ttl_seconds: 5, max_item_size: 65536, timeout_ms: 200 }}
metrics: {{ enabled: false }}
"#
    )
}

/// One request of the mixed workload, checked against `source`.
async fn one_request(client: &reqwest::Client, base: &str, n: u64, objects: &[(String, Vec<u8>)], tally: &Tally) {
    let (key, source) = &objects[(n as usize * 7 + 3) % objects.len()];
    let url = format!("{base}/s/{key}");
    let kind = n % 4;
    let len = source.len() as u64;
    let (first, last) = (
        (n * 7919) % len,
        ((n * 7919) % len + 1 + (n * 104_729) % 70_000).min(len - 1),
    );
    let req = match kind {
        0 | 1 => client.get(&url),
        2 => client.get(&url).header("range", format!("bytes={first}-{last}")),
        _ => client.get(&url).header("if-none-match", "\"not-the-etag\""),
    };
    let down = tally.all_down.load(Ordering::SeqCst);
    let res = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            tally.fail(down, format!("{key} kind {kind}: {e}"));
            return;
        }
    };
    let status = res.status().as_u16();
    let body = res.bytes().await;
    let expected: &[u8] = match (kind, status) {
        (2, 206) => &source[first as usize..=last as usize],
        (_, 200) => source,
        (_, 503) => {
            tally.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        _ => {
            tally.fail(down, format!("{key} kind {kind}: status {status}"));
            return;
        }
    };
    match body {
        Ok(b) if b.as_ref() == expected => {
            tally.served.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => {
            tally.corrupted.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tally.fail(down, format!("{key} kind {kind}: body {e}")),
    }
}

/// A client that reads a large object slowly, then checks it.
async fn slow_reader(addr: String, key: String, source: Vec<u8>, tally: Arc<Tally>) {
    use tokio::io::AsyncWriteExt;
    let down = tally.all_down.load(Ordering::SeqCst);
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        tally.fail(down, "slow reader: connect".into());
        return;
    };
    let req = format!("GET /s/{key} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        tally.fail(down, "slow reader: write".into());
        return;
    }
    let mut all = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(split) = all.windows(4).position(|w| w == b"\r\n\r\n") else {
        tally.fail(down, "slow reader: no response head".into());
        return;
    };
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let body = &all[split + 4..];
    if head.starts_with("HTTP/1.1 503") {
        tally.refused.fetch_add(1, Ordering::Relaxed);
    } else if !head.starts_with("HTTP/1.1 200") || body.len() < source.len() {
        let status = head.lines().next().unwrap_or_default().to_owned();
        tally.fail(
            down,
            format!("slow reader {key}: {status}, {} of {} bytes", body.len(), source.len()),
        );
    } else if body == source.as_slice() {
        tally.served.fetch_add(1, Ordering::Relaxed);
    } else {
        tally.corrupted.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_soak_serves_every_byte_right() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let objects = Arc::new(objects());
    let mut primary = s3().await;
    let mut backup = s3().await;
    for (key, data) in objects.iter() {
        primary.put_object("bkt", key, data).unwrap();
        backup.put_object("bkt", key, data).unwrap();
    }
    let mut redis = Redis::start();
    let proxy = Arc::new(Proxy::start(&config(
        &primary.endpoint(),
        &backup.endpoint(),
        &redis.url(),
    )));
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);

    // Idle connections held for the whole run (closed by the proxy's idle timeout or not).
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr()).await.unwrap());
    }

    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (base, objects, tally, stop) = (proxy.base.clone(), objects.clone(), tally.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut n = c * 1_000_003;
            while !stop.load(Ordering::Relaxed) {
                one_request(&client, &base, n, &objects, &tally).await;
                n += 1;
            }
        }));
    }
    let slow = {
        let (addr, objects, tally, stop) = (proxy.addr(), objects.clone(), tally.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, data) = objects[SMALL + i % LARGE].clone();
                slow_reader(addr.clone(), key, data, tally.clone()).await;
                i += 1;
            }
        })
    };

    // The fault schedule: one fault at a time, each undone before the next.
    let mut faults = 0u32;
    let mut all_down_phases = 0u32;
    let mut step = 0u32;
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        match step % 7 {
            0 => {
                primary.stop().await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                primary.restart().await.unwrap();
            }
            1 => {
                backup.set_fault(Fault::Stall);
                tokio::time::sleep(Duration::from_secs(3)).await;
                backup.set_fault(Fault::None);
            }
            2 => {
                redis.kill();
                tokio::time::sleep(Duration::from_secs(3)).await;
                redis.restart();
            }
            3 => proxy.signal("HUP"),
            4 => {
                primary.set_fault(Fault::ResetAfter(64 * 1024));
                tokio::time::sleep(Duration::from_secs(3)).await;
                primary.set_fault(Fault::None);
            }
            5 => {
                primary.set_fault(Fault::Error500);
                tokio::time::sleep(Duration::from_secs(3)).await;
                primary.set_fault(Fault::None);
            }
            _ => {
                // Every replica down: cache hits go on, misses may be refused (503).
                tally.all_down.store(true, Ordering::SeqCst);
                primary.stop().await;
                backup.stop().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                primary.restart().await.unwrap();
                backup.restart().await.unwrap();
                // Breakers and health checks need a moment to see them back.
                tokio::time::sleep(Duration::from_secs(3)).await;
                tally.all_down.store(false, Ordering::SeqCst);
                all_down_phases += 1;
            }
        }
        faults += 1;
        step += 1;
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    slow.await.unwrap();
    drop(idle);

    let (served, failed, corrupted, refused, cut) = (
        tally.served.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.corrupted.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.cut.load(Ordering::Relaxed),
    );
    println!(
        "soak: {seconds} s, {faults} faults ({all_down_phases} with every replica down): served={served} \
         failed={failed} corrupted={corrupted} refused_503={refused} cut_while_all_down={cut}"
    );
    println!("soak failures: {:?}", tally.notes.lock().unwrap());
    assert!(served > 100, "too little traffic to mean anything: {served}");
    assert_eq!(corrupted, 0, "corrupted responses");
    assert_eq!(failed, 0, "failed requests; logs:\n{}", tail(&proxy.logs(), 60));
    if all_down_phases == 0 {
        assert_eq!(refused, 0, "503 while a replica could serve");
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
