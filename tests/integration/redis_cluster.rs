//! The shared cache tier as a Redis Cluster (3 primaries, 3 replicas) and as
//! a Sentinel-managed primary/replica set: real `redis-server` processes,
//! real proxies, primaries killed with SIGKILL under traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const TOKEN: &str = "cache-admin-token";

/// A proxy config whose memory tier is off, so every hit comes from Redis.
fn config(endpoint: &str, redis: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
buckets:
  - name: assets
    path_prefix: /assets
    s3: {{ bucket: assets-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 2, retry: {{ max_attempts: 1 }} }}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 0 }}
  redis:
    enabled: true
    ttl_seconds: 120
    pool_size: 4
    timeout_ms: 300
    failure_threshold: 3
    cooldown_ms: 300
{redis}
metrics: {{ enabled: true, port: 0, address: "127.0.0.1", admin_token: "{TOKEN}" }}
"#
    )
}

fn urls_yaml(urls: &[String]) -> String {
    urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", ")
}

fn body(i: usize) -> Vec<u8> {
    pattern(3_000 + i * 37, i as u64)
}

/// `(status, x-cache, body)`.
async fn get(proxy: &Proxy, key: &str) -> Result<(u16, String, Vec<u8>), reqwest::Error> {
    let res = client().get(proxy.url(&format!("/assets/{key}"))).send().await?;
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    Ok((status, cache, res.bytes().await?.to_vec()))
}

/// Keys `o0..o{n}` all answer `HIT-REDIS` from `proxy`.
async fn all_hit_redis(proxy: &Proxy, n: usize) -> bool {
    for i in 0..n {
        match get(proxy, &format!("o{i}")).await {
            Ok((200, cache, b)) if cache == "HIT-REDIS" && b == body(i) => {}
            _ => return false,
        }
    }
    true
}

/// Requests every object in a loop until stopped; counts the requests and
/// the failed ones (an error, a status other than 200, or a wrong body).
fn traffic(
    proxy: &Proxy,
    n: usize,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let base = proxy.base.clone();
    let task = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            let c = client();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let res = c.get(format!("{base}/assets/o{}", i % n)).send().await;
                let ok = match res {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok_and(|b| b.as_ref() == body(i % n)),
                    _ => false,
                };
                sent.fetch_add(1, Ordering::SeqCst);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    (stop, sent, failed, task)
}

async fn wait_sent(sent: &AtomicU64, more_than: u64) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            sent.load(Ordering::SeqCst) > more_than
        })
        .await,
        "traffic stalled"
    );
}

/// Two instances on one cluster, filled, spread over every primary.
async fn shared_cluster(n: usize) -> (Cluster, S3, Proxy, Proxy) {
    let cluster = Cluster::start();
    let s3 = s3().await;
    for i in 0..n {
        s3.put_object("assets-bkt", &format!("o{i}"), &body(i)).unwrap();
    }
    let redis = format!("    mode: cluster\n    urls: [{}]", urls_yaml(&cluster.seed_urls()));
    let cfg = config(&s3.endpoint(), &redis);
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);

    for i in 0..n {
        let (status, cache, got) = get(&a, &format!("o{i}")).await.unwrap();
        assert_eq!((status, cache.as_str()), (200, "MISS"));
        assert_eq!(got, body(i));
    }
    // B answers from what A stored (writes end in the background).
    assert!(
        eventually(Duration::from_secs(10), || all_hit_redis(&b, n)).await,
        "instance B never hit every object A fetched"
    );
    assert_eq!(
        s3.requests(),
        n as u64,
        "the origin was asked more than once per object"
    );
    (cluster, s3, a, b)
}

#[tokio::test]
async fn cluster_is_shared_spread_purged_and_survives_a_killed_primary() {
    const N: usize = 24;
    let (mut cluster, _s3, a, b) = shared_cluster(N).await;

    // The objects spread over all three primaries.
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for &p in &primaries {
        let keys = cli(cluster.nodes[p].port, &["--scan", "--pattern", "yatagarasu:cache:*"]);
        assert!(keys.lines().count() > 0, "primary {p} holds no object");
    }

    // /ready shows the mode and that every slot is served.
    let ready: serde_json::Value = serde_json::from_str(&get_text(b.url("/ready")).await).unwrap();
    assert_eq!(ready["cache"]["redis"]["mode"], "cluster", "{ready}");
    assert_eq!(ready["cache"]["redis"]["reachable"], true, "{ready}");
    assert_eq!(ready["cache"]["redis"]["primaries"], 3, "{ready}");

    // A purge of the bucket reaches every primary (SCAN per node).
    let res = client()
        .delete(a.metrics_url("/admin/cache/assets"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    for p in cluster.primaries() {
        // Cached entries (hash-tagged; the purge mark is no entry and stays).
        let keys = cli(cluster.nodes[p].port, &["--scan", "--pattern", "yatagarasu:cache:{*"]);
        assert_eq!(keys.lines().count(), 0, "primary {p} still holds {keys}");
    }
    assert_eq!(get(&b, "o0").await.unwrap().1, "MISS");
    // After the purge the shared tier fills again: what B fetched, A hits.
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&a, "o0").await.is_ok_and(|r| r.1 == "HIT-REDIS")
        })
        .await,
        "objects never became HIT-REDIS again after the purge"
    );
    assert_eq!(get(&a, "o1").await.unwrap().1, "MISS");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&b, "o1").await.is_ok_and(|r| r.1 == "HIT-REDIS")
        })
        .await,
        "objects never became HIT-REDIS again after the purge"
    );

    // SIGKILL one primary while B serves continuously: no client request
    // fails (the cache operations of the lost shard are misses, served from S3).
    let (stop, sent, failed, task) = traffic(&b, N);
    wait_sent(&sent, 20).await;
    cluster.nodes[primaries[0]].kill();
    let at_kill = sent.load(Ordering::SeqCst);
    cluster.wait_ok(Duration::from_secs(30));
    wait_sent(&sent, at_kill + 50).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "client requests failed during the failover"
    );
}

/// After a primary is SIGKILLed and its replica promoted, hits return
/// without a restart. (They used not to under load: deadpool-redis's recycle
/// `PING` fanned out to the dead node still in the client's slot map, so
/// every pooled connection was dropped and re-created, which timed out; see
/// `ClusterManager` in `middleware/src/cache/redis.rs`.)
#[tokio::test]
async fn cluster_hits_return_after_a_primary_is_killed_and_its_replica_promoted() {
    const N: usize = 24;
    let (mut cluster, _s3, _a, b) = shared_cluster(N).await;
    let (stop, sent, _failed, task) = traffic(&b, N);
    wait_sent(&sent, 20).await;
    let victim = cluster.primaries()[0];
    cluster.nodes[victim].kill();
    let at_kill = sent.load(Ordering::SeqCst);
    cluster.wait_promoted(Duration::from_secs(30));
    wait_sent(&sent, at_kill + 20).await;
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    if !eventually(Duration::from_secs(20), || all_hit_redis(&b, N)).await {
        let mut seen = Vec::new();
        for i in 0..N {
            seen.push(get(&b, &format!("o{i}")).await.map(|r| r.1));
        }
        let logs = b.logs();
        let tail: Vec<&str> = logs.lines().rev().take(30).collect();
        let states: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| format!("{}: {}", n.port, n.cli(&["CLUSTER", "NODES"])))
            .collect();
        panic!(
            "hits never came back after the promotion: {seen:?}\n{}\n{}",
            states.join("\n"),
            tail.join("\n")
        );
    }
}

#[tokio::test]
async fn sentinel_failover_is_followed_without_restart() {
    const N: usize = 12;
    let mut set = SentinelSet::start();
    let s3 = s3().await;
    for i in 0..N {
        s3.put_object("assets-bkt", &format!("o{i}"), &body(i)).unwrap();
    }
    // The replica is in sync before anything is cached.
    assert!(
        eventually(Duration::from_secs(15), || async {
            set.replica.cli(&["ROLE"]).contains("connected")
                && set.sentinels.iter().all(|s| {
                    s.cli(&["SENTINEL", "replicas", "mymaster"])
                        .contains(&set.replica.port.to_string())
                })
        })
        .await,
        "replica never in sync / known to the sentinels"
    );
    let redis = format!(
        "    mode: sentinel\n    sentinel_master: mymaster\n    urls: [{}]",
        urls_yaml(&set.sentinel_urls())
    );
    let cfg = config(&s3.endpoint(), &redis);
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);
    for i in 0..N {
        assert_eq!(get(&a, &format!("o{i}")).await.unwrap().0, 200);
    }
    assert!(
        eventually(Duration::from_secs(10), || all_hit_redis(&b, N)).await,
        "B never hit what A stored through the sentinel-found primary"
    );
    let ready: serde_json::Value = serde_json::from_str(&get_text(b.url("/ready")).await).unwrap();
    assert_eq!(ready["cache"]["redis"]["mode"], "sentinel", "{ready}");
    assert_eq!(ready["cache"]["redis"]["reachable"], true, "{ready}");
    // The data reached the replica before the primary dies.
    assert!(
        eventually(Duration::from_secs(10), || async {
            set.replica.cli(&["DBSIZE"]).trim().parse::<usize>().unwrap_or(0) >= N
        })
        .await
    );

    let (stop, sent, failed, task) = traffic(&b, N);
    wait_sent(&sent, 10).await;
    set.primary.kill();
    let at_kill = sent.load(Ordering::SeqCst);
    let replica_port = set.replica.port;
    assert!(
        eventually(Duration::from_secs(30), || async {
            set.current_primary_port() == Some(replica_port)
        })
        .await,
        "the sentinels never promoted the replica"
    );
    // B (never restarted) hits again, now on the promoted replica.
    assert!(
        eventually(Duration::from_secs(20), || all_hit_redis(&b, N)).await,
        "hits never came back after the failover"
    );
    stop.store(true, Ordering::SeqCst);
    task.await.unwrap();
    assert!(sent.load(Ordering::SeqCst) > at_kill);
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "client requests failed during the failover"
    );

    // New writes land on the new primary.
    s3.put_object("assets-bkt", "after", b"written after the failover")
        .unwrap();
    assert_eq!(get(&a, "after").await.unwrap().1, "MISS");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&b, "after").await.is_ok_and(|r| r.1 == "HIT-REDIS")
        })
        .await
    );
    assert!(set.replica.cli(&["ROLE"]).starts_with("master"));
}

#[tokio::test]
async fn redis_passwords_never_show_in_ready_logs_or_metrics() {
    const PASSWORD: &str = "s3cr3t-redis-pass-42";
    const WRONG: &str = "wrong-redis-pass-77";
    let node = Redis::builder().password(PASSWORD).start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "o0", &body(0)).unwrap();
    let url = |password: &str| format!("    url: \"redis://:{password}@127.0.0.1:{}\"", node.port);

    // The right password: the tier is used and /ready says so.
    let good = Proxy::start(&config(&s3.endpoint(), &url(PASSWORD)));
    assert_eq!(get(&good, "o0").await.unwrap().1, "MISS");
    assert!(
        eventually(Duration::from_secs(10), || async {
            cli(node.port, &["-a", PASSWORD, "--no-auth-warning", "DBSIZE"]).trim() == "1"
        })
        .await,
        "nothing written with the password"
    );
    let ready = get_text(good.url("/ready")).await;
    assert!(ready.contains("\"reachable\":true"), "{ready}");
    assert!(ready.contains("***"), "{ready}");

    // A wrong password: misses only, reported unreachable, never echoed.
    let bad = Proxy::start(&config(&s3.endpoint(), &url(WRONG)));
    for _ in 0..4 {
        let (status, _, got) = get(&bad, "o0").await.unwrap();
        assert_eq!((status, got), (200, body(0)));
    }
    let ready = get_text(bad.url("/ready")).await;
    assert!(ready.contains("\"reachable\":false"), "{ready}");
    let ready_status = client().get(bad.url("/ready")).send().await.unwrap().status();
    assert_eq!(ready_status, 200, "a dead cache made the proxy unready");
    let metrics = get_text(bad.metrics_url("/metrics")).await;
    assert!(
        metrics.contains("yatagarasu_cache_redis_up{mode=\"standalone\"} 0"),
        "{metrics}"
    );
    for (proxy, secret) in [(&good, PASSWORD), (&bad, WRONG)] {
        let logs = proxy.settled_logs().await;
        let ready = get_text(proxy.url("/ready")).await;
        let metrics = get_text(proxy.metrics_url("/metrics")).await;
        for text in [&logs, &ready, &metrics] {
            assert!(!text.contains(secret), "the password leaked: {text}");
        }
    }
    assert!(bad.logs().contains("redis cache unavailable"), "{}", bad.logs());
}

#[tokio::test]
async fn rediss_with_a_password_works() {
    const PASSWORD: &str = "tls-redis-pass-5";
    let pki = Pki::new();
    let (cert, key) = pki.issue("redis", "127.0.0.1", false);
    let ca = pki.ca().to_string_lossy().into_owned();
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    // TLS only: the plain port is off, so `--tls-port` is the port found free.
    let node = Redis::builder().tls(&cert, &key, &ca).password(PASSWORD).start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "o0", &body(0)).unwrap();
    let redis = format!("    url: \"rediss://:{PASSWORD}@127.0.0.1:{}\"", node.port);
    let cfg = config(&s3.endpoint(), &redis);
    let env = [("SSL_CERT_FILE", ca.as_str())];
    let a = Proxy::start_with_env(&cfg, &env);
    let b = Proxy::start_with_env(&cfg, &env);
    assert_eq!(get(&a, "o0").await.unwrap().1, "MISS");
    assert!(
        eventually(Duration::from_secs(10), || async {
            get(&b, "o0").await.is_ok_and(|r| r.1 == "HIT-REDIS")
        })
        .await,
        "B never hit over TLS; logs: {}",
        b.logs()
    );
    let ready = get_text(b.url("/ready")).await;
    assert!(
        ready.contains("\"reachable\":true") && !ready.contains(PASSWORD),
        "{ready}"
    );
}

/// In sentinel mode an operation gets all of `redis.timeout_ms`, as in
/// standalone mode: a write the primary holds back (`CLIENT PAUSE ...
/// WRITE`) for longer than the redis crate's own 500 ms answer timeout,
/// but less than `timeout_ms`, lands. It failed at 500 ms as an error.
#[tokio::test]
async fn sentinel_operations_get_all_of_timeout_ms() {
    let set = SentinelSet::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "slow", &body(1)).unwrap();
    let redis = format!(
        "    mode: sentinel\n    sentinel_master: mymaster\n    urls: [{}]",
        urls_yaml(&set.sentinel_urls())
    );
    let cfg = config(&s3.endpoint(), &redis).replace("timeout_ms: 300", "timeout_ms: 10000");
    assert!(cfg.contains("timeout_ms: 10000"), "{cfg}");
    let a = Proxy::start(&cfg);
    // The pool's first connection (through the sentinels), before the pause.
    assert_eq!(get(&a, "absent").await.unwrap().0, 404);

    assert_eq!(set.primary.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]).trim(), "OK");
    assert_eq!(get(&a, "slow").await.unwrap(), (200, "MISS".to_owned(), body(1)));
    let metric = |name: &'static str| {
        let url = a.metrics_url("/metrics");
        async move {
            get_text(url)
                .await
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} missing from the metrics"))
        }
    };
    let written = eventually(Duration::from_secs(10), || async {
        metric("yatagarasu_cache_redis_writes_total").await == 1
    })
    .await;
    assert!(written, "the write held back by the pause never landed");
    assert_eq!(metric("yatagarasu_cache_redis_errors_total").await, 0);
    let b = Proxy::start(&cfg);
    assert_eq!(get(&b, "slow").await.unwrap(), (200, "HIT-REDIS".to_owned(), body(1)));
}
