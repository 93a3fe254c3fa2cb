//! A cache purge reaches every instance sharing the Redis tier: real
//! proxies, one real `redis-server` (or a Cluster), purges sent to one
//! instance's admin API. Each instance keeps its own copy in its memory
//! tier (`X-Cache: HIT-MEMORY`); without the broadcast the others served
//! the purged copy until its TTL ran out.

use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const TOKEN: &str = "purge-broadcast-token";
const CHANNEL: &str = "yatagarasu:cache:purge";
/// A key with spaces, `%`, non-ASCII and `/` in it.
const ODD_KEY: &str = "dir/a b%20ü 日本/x.txt";
/// [`ODD_KEY`] in a URL path.
const ODD_PATH: &str = "dir/a%20b%2520%C3%BC%20%E6%97%A5%E6%9C%AC/x.txt";

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
  memory: {{ max_capacity: 16777216, ttl_seconds: 600 }}
  redis:
    enabled: true
    ttl_seconds: 600
    pool_size: 4
    cooldown_ms: 300
{redis}
metrics: {{ enabled: true, port: 0, address: "127.0.0.1", admin_token: "{TOKEN}" }}
"#
    )
}

/// `(status, x-cache, body)` of `GET /assets/{path}`.
async fn get(proxy: &Proxy, path: &str) -> (u16, String, String) {
    let res = client()
        .get(proxy.url(&format!("/assets/{path}")))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, res.text().await.unwrap())
}

/// Requests `path` until `proxy` answers `body` from its memory tier.
async fn warm(proxy: &Proxy, path: &str, body: &str) {
    let mut last = None;
    for _ in 0..50 {
        let got = get(proxy, path).await;
        if got == (200, "HIT-MEMORY".to_owned(), body.to_owned()) {
            return;
        }
        last = Some(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never served from memory: last answer {last:?}");
}

/// Requests `path` until `proxy` answers `body` (bounded attempts);
/// whether it did.
async fn serves(proxy: &Proxy, path: &str, body: &str) -> bool {
    for _ in 0..50 {
        if get(proxy, path).await.2 == body {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// `DELETE` on the admin API: the status and the JSON answer.
async fn purge(proxy: &Proxy, path: &str) -> (u16, Value) {
    let res = client()
        .delete(proxy.metrics_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, serde_json::from_str(&res.text().await.unwrap()).unwrap())
}

/// A counter of `proxy`'s `/metrics`.
async fn counter(proxy: &Proxy, name: &str) -> u64 {
    let text = get_text(proxy.metrics_url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}")) as u64
}

/// Subscribers of the purge channel on the server at `port`.
fn numsub(port: u16) -> u64 {
    cli(port, &["PUBSUB", "NUMSUB", CHANNEL])
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls until `f` holds (bounded attempts); whether it did.
async fn until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..150 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The object `key` changes upstream: `v1` before, `v2` after.
fn version(key: &str, n: u32) -> String {
    format!("{key} version {n}")
}

/// Warms `path` (object `key`) in both instances' memory tiers, changes it
/// upstream, purges it through A's admin `purge_path` and checks that B
/// answers the new version; returns A's answer.
async fn purge_reaches_b(s3: &S3, a: &Proxy, b: &Proxy, key: &str, path: &str, purge_path: &str) -> Value {
    s3.put_object("assets-bkt", key, version(key, 1).as_bytes()).unwrap();
    let (status, _, body) = get(a, path).await;
    assert_eq!((status, body.as_str()), (200, version(key, 1).as_str()));
    warm(a, path, &version(key, 1)).await;
    warm(b, path, &version(key, 1)).await;
    s3.put_object("assets-bkt", key, version(key, 2).as_bytes()).unwrap();
    // Still the old copy: nothing purged yet.
    assert_eq!(get(b, path).await.2, version(key, 1));

    let (status, answer) = purge(a, purge_path).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "purged", "{answer}");
    assert!(serves(a, path, &version(key, 2)).await, "A kept {path}");
    assert!(
        serves(b, path, &version(key, 2)).await,
        "B still serves the purged copy of {path} ({:?}); A answered {answer}",
        get(b, path).await
    );
    answer
}

/// Object, bucket and whole-cache purges sent to A reach B's memory tier,
/// for a key with odd bytes too; A tells how many instances heard it, and
/// B counts what it heard (A does not count its own purges).
#[tokio::test]
async fn a_purge_sent_to_one_instance_reaches_the_others_memory_tier() {
    let redis = Redis::start();
    let s3 = s3().await;
    let cfg = config(&s3.endpoint(), &format!("    url: \"{}\"", redis.url()));
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);
    assert!(
        until(|| numsub(redis.port) == 2).await,
        "both instances never subscribed"
    );

    let answer = purge_reaches_b(&s3, &a, &b, "one.txt", "one.txt", "/admin/cache/assets/one.txt").await;
    assert_eq!(answer["what"], "assets/one.txt", "{answer}");
    assert_eq!(answer["broadcast"]["published"], true, "{answer}");
    assert_eq!(answer["broadcast"]["subscribers"], 2, "{answer}");
    assert_eq!(counter(&b, "yatagarasu_cache_purges_received_total").await, 1);

    let odd = purge_reaches_b(
        &s3,
        &a,
        &b,
        ODD_KEY,
        ODD_PATH,
        &format!("/admin/cache/assets/{ODD_PATH}"),
    )
    .await;
    assert_eq!(odd["what"], format!("assets/{ODD_KEY}"), "{odd}");

    // A bucket purge: another object of the bucket, warmed in both, goes too.
    s3.put_object("assets-bkt", "kept.txt", b"kept").unwrap();
    warm(&b, "kept.txt", "kept").await;
    purge_reaches_b(&s3, &a, &b, "bucket.txt", "bucket.txt", "/admin/cache/assets").await;
    assert_eq!(
        get(&b, "kept.txt").await.1,
        "MISS",
        "the bucket purge left kept.txt in B"
    );

    purge_reaches_b(&s3, &a, &b, "all.txt", "all.txt", "/admin/cache").await;

    assert_eq!(counter(&b, "yatagarasu_cache_purges_received_total").await, 4);
    assert_eq!(counter(&a, "yatagarasu_cache_purges_received_total").await, 0);
    assert_eq!(counter(&a, "yatagarasu_cache_purges_total").await, 4);
}

/// How many times `proxy` has subscribed to the purge channel (its log
/// lines say so once the subscription is handled: after its memory tier
/// was cleared, if it was).
fn subscriptions(proxy: &Proxy) -> usize {
    proxy.logs().matches("subscribed to the cache purge channel").count()
}

/// Waits until both instances have subscribed `n` times and Redis counts
/// both subscriptions again.
async fn resubscribed(port: u16, a: &Proxy, b: &Proxy, n: usize) {
    assert!(
        until(|| numsub(port) == 2 && subscriptions(a) >= n && subscriptions(b) >= n).await,
        "the instances never subscribed again ({} and {} times, {n} awaited); B's logs:\n{}",
        subscriptions(a),
        subscriptions(b),
        b.logs()
    );
}

/// Whether `proxy` answers `warm.txt` from its memory tier.
async fn in_memory(proxy: &Proxy) -> bool {
    get(proxy, "warm.txt").await == (200, "HIT-MEMORY".to_owned(), "warm".to_owned())
}

/// The purge channel lost without any purge announced meanwhile keeps
/// every instance's memory tier: connections killed by Redis (the listeners
/// subscribe again), Redis restarted empty with no purge ever announced (it
/// cannot have carried one; a purge sent to A while Redis was down was
/// never announced, and A's answer says so), and again after a purge the
/// instances heard. Only a Redis restarted empty after a purge clears them:
/// with the mark of that purge gone, it cannot tell whether another was
/// announced before it went.
#[tokio::test]
async fn a_redis_blip_without_a_purge_keeps_the_memory_tiers() {
    let mut redis = Redis::start();
    let s3 = s3().await;
    let cfg = config(&s3.endpoint(), &format!("    url: \"{}\"", redis.url()));
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);
    resubscribed(redis.port, &a, &b, 1).await;
    s3.put_object("assets-bkt", "warm.txt", b"warm").unwrap();
    warm(&a, "warm.txt", "warm").await;
    warm(&b, "warm.txt", "warm").await;
    // Connections killed, nothing announced: both keep their copy.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "2", "{killed}");
    resubscribed(redis.port, &a, &b, 2).await;
    assert!(in_memory(&b).await, "B cleared its memory tier after a blip");
    assert!(in_memory(&a).await, "A cleared its memory tier after a blip");

    // Redis restarted empty, no purge ever announced; one sent to A while
    // Redis was down is answered as not announced.
    redis.kill();
    s3.put_object("assets-bkt", "other.txt", b"other").unwrap();
    let (status, answer) = purge(&a, "/admin/cache/assets/other.txt").await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["broadcast"]["published"], false, "{answer}");
    redis.restart();
    resubscribed(redis.port, &a, &b, 3).await;
    assert!(
        in_memory(&b).await,
        "B cleared its memory tier after a restart with no purge announced"
    );

    // A purge heard by both (of another object), then a blip: kept. A's
    // Redis breaker, opened by the purge sent while Redis was down, may not
    // have cooled down yet (its listener subscribes around it): retried
    // until Redis takes it.
    warm(&b, "other.txt", "other").await;
    let mut answered = purge(&a, "/admin/cache/assets/other.txt").await;
    for _ in 0..50 {
        if answered.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answered = purge(&a, "/admin/cache/assets/other.txt").await;
    }
    let (status, answer) = answered;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["broadcast"]["subscribers"], 2, "{answer}");
    let mut heard = false;
    for _ in 0..50 {
        heard = counter(&b, "yatagarasu_cache_purges_received_total").await == 1;
        if heard {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(heard, "B never heard the purge");
    assert_eq!(get(&b, "other.txt").await.1, "MISS");
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    resubscribed(redis.port, &a, &b, 4).await;
    assert!(in_memory(&b).await, "B cleared its memory tier after a blip");

    // Restarted empty after a purge: the mark is gone, so both clear.
    redis.restart();
    resubscribed(redis.port, &a, &b, 5).await;
    assert_ne!(get(&b, "warm.txt").await.1, "HIT-MEMORY");
}

/// B alone cut off from Redis (its user disabled and its connections
/// killed) while A purges: the purge reaches Redis but not B, so B clears
/// its memory tier when it subscribes again; a later purge reaches it again.
#[tokio::test]
async fn a_purge_announced_while_an_instance_was_cut_off_clears_its_memory_tier() {
    let redis = Redis::start();
    let s3 = s3().await;
    let user = redis.cli(&["ACL", "SETUSER", "b", "on", ">b-secret", "~*", "&*", "+@all"]);
    assert_eq!(user.trim(), "OK", "{user}");
    let cfg = config(&s3.endpoint(), &format!("    url: \"{}\"", redis.url()));
    let cfg_b = config(
        &s3.endpoint(),
        &format!("    url: \"redis://b:b-secret@127.0.0.1:{}\"", redis.port),
    );
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg_b);
    resubscribed(redis.port, &a, &b, 1).await;
    s3.put_object("assets-bkt", "gap.txt", version("gap.txt", 1).as_bytes())
        .unwrap();
    warm(&b, "gap.txt", &version("gap.txt", 1)).await;
    s3.put_object("assets-bkt", "kept.txt", b"kept").unwrap();
    warm(&a, "kept.txt", "kept").await;

    redis.cli(&["ACL", "SETUSER", "b", "off"]);
    redis.cli(&["CLIENT", "KILL", "USER", "b"]);
    assert!(until(|| numsub(redis.port) == 1).await, "B still subscribed");
    s3.put_object("assets-bkt", "gap.txt", version("gap.txt", 2).as_bytes())
        .unwrap();
    let (status, answer) = purge(&a, "/admin/cache/assets/gap.txt").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["broadcast"]["subscribers"], 1, "{answer}");
    // Requests go on while B cannot reach Redis.
    assert_eq!(get(&b, "gap.txt").await.0, 200);

    redis.cli(&["ACL", "SETUSER", "b", "on"]);
    assert!(
        until(|| numsub(redis.port) == 2).await,
        "B never subscribed again; B's logs:\n{}",
        b.logs()
    );
    assert!(
        serves(&b, "gap.txt", &version("gap.txt", 2)).await,
        "B kept the copy purged while it was cut off"
    );
    // A had no gap: its memory tier is whole.
    assert_eq!(get(&a, "kept.txt").await.1, "HIT-MEMORY");

    let answer = purge_reaches_b(&s3, &a, &b, "later.txt", "later.txt", "/admin/cache/assets/later.txt").await;
    assert_eq!(answer["broadcast"]["subscribers"], 2, "{answer}");
}

/// Cluster mode: each instance subscribes on one node; a `PUBLISH` reaches
/// every node, and A counts the subscribers over all of them.
#[tokio::test]
async fn a_purge_reaches_the_other_instances_through_a_cluster() {
    let cluster = Cluster::start();
    let s3 = s3().await;
    let urls: Vec<String> = cluster.seed_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = config(
        &s3.endpoint(),
        &format!("    mode: cluster\n    urls: [{}]", urls.join(", ")),
    );
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    assert!(
        until(|| ports.iter().map(|p| numsub(*p)).sum::<u64>() == 2).await,
        "both instances never subscribed"
    );

    let answer = purge_reaches_b(&s3, &a, &b, "c.txt", "c.txt", "/admin/cache/assets/c.txt").await;
    assert_eq!(answer["broadcast"]["subscribers"], 2, "{answer}");
    purge_reaches_b(&s3, &a, &b, "c2.txt", "c2.txt", "/admin/cache").await;
    assert_eq!(counter(&b, "yatagarasu_cache_purges_received_total").await, 2);
}

/// Sentinel mode: after a failover that leaves the old primary running
/// (now a replica), the instances follow the new primary (their heartbeat
/// asks the sentinels) keeping their memory tiers (no purge was announced
/// meanwhile: the mark replicated to the new primary has not moved), and a
/// purge published there reaches B.
#[tokio::test]
async fn the_listeners_follow_the_primary_after_a_sentinel_failover() {
    let set = SentinelSet::start();
    let s3 = s3().await;
    let in_sync = until(|| {
        set.replica.cli(&["ROLE"]).contains("connected")
            && set.sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "replicas", "mymaster"])
                    .contains(&set.replica.port.to_string())
            })
    });
    assert!(in_sync.await, "replica never in sync / known to the sentinels");
    let urls: Vec<String> = set.sentinel_urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = config(
        &s3.endpoint(),
        &format!(
            "    mode: sentinel\n    sentinel_master: mymaster\n    urls: [{}]",
            urls.join(", ")
        ),
    );
    let a = Proxy::start(&cfg);
    let b = Proxy::start(&cfg);
    assert!(
        until(|| numsub(set.primary.port) == 2).await,
        "both instances never subscribed"
    );
    purge_reaches_b(&s3, &a, &b, "s1.txt", "s1.txt", "/admin/cache/assets/s1.txt").await;
    s3.put_object("assets-bkt", "keep.txt", b"keep").unwrap();
    warm(&b, "keep.txt", "keep").await;

    let failover = set.sentinels[0].cli(&["SENTINEL", "FAILOVER", "mymaster"]);
    assert!(failover.starts_with("OK"), "{failover}");
    assert!(
        until(|| set.current_primary_port() == Some(set.replica.port)).await,
        "the sentinels never promoted the replica"
    );
    // Until the sentinels demote it, the old primary still takes writes and
    // `PUBLISH`es (which no instance, gone to the new primary, hears).
    assert!(
        until(|| set.primary.cli(&["ROLE"]).starts_with("slave")).await,
        "the old primary was never demoted"
    );
    assert!(
        until(|| numsub(set.replica.port) == 2).await,
        "the instances never moved to the new primary; B's logs:\n{}",
        b.logs()
    );
    // No purge was announced during the move: B kept its memory tier.
    assert!(until(|| subscriptions(&b) >= 2).await, "{}", b.logs());
    assert_eq!(get(&b, "keep.txt").await.1, "HIT-MEMORY", "{}", b.logs());
    let answer = purge_reaches_b(&s3, &a, &b, "s2.txt", "s2.txt", "/admin/cache/assets/s2.txt").await;
    assert_eq!(answer["broadcast"]["subscribers"], 2, "{answer}");
}

/// Without Redis there is no channel: the purge answer says it was not
/// announced (each instance must be purged on its own).
#[tokio::test]
async fn a_memory_only_instance_says_its_purge_was_not_announced() {
    let s3 = s3().await;
    let cfg = config(&s3.endpoint(), "").replace("    enabled: true\n", "    enabled: false\n");
    assert!(cfg.contains("enabled: false"), "{cfg}");
    let a = Proxy::start(&cfg);
    let (status, answer) = purge(&a, "/admin/cache/assets").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["broadcast"]["published"], false, "{answer}");
    assert!(
        answer["broadcast"]["reason"]
            .as_str()
            .unwrap()
            .contains("purge each instance"),
        "{answer}"
    );
}
