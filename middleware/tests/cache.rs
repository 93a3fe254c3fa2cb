//! The two-tier cache against a real `redis-server` (a child process per test).

mod cache_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use cache_support::*;
use http::{header, HeaderValue, Request, StatusCode};
use tower::ServiceExt;
use yatagarasu_middleware::cache::{Cache, CacheConfig, CacheLayer, CacheStore};
use yatagarasu_middleware::object::{ObjectRequest, ObjectService};
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};

fn config(redis: Option<&RedisServer>) -> CacheConfig {
    let mut cfg = CacheConfig {
        stale_seconds: 60,
        ..Default::default()
    };
    if let Some(redis) = redis {
        cfg.redis.enabled = true;
        cfg.redis.url = redis.url();
        cfg.redis.timeout_ms = 300;
        cfg.redis.failure_threshold = 2;
        cfg.redis.cooldown_ms = 200;
    }
    cfg
}

fn store(cfg: &CacheConfig) -> CacheStore {
    CacheStore::new(cfg).unwrap()
}

type Inner = tower::util::BoxCloneService<ObjectRequest, http::Response<Body>, yatagarasu_middleware::FetchError>;

fn cache(store: &CacheStore, bucket: &str, up: &FakeUpstream) -> Cache<Inner> {
    CacheLayer::new(store.clone(), bucket).layer_on(up.service())
}

trait LayerOn {
    fn layer_on(self, inner: Inner) -> Cache<Inner>;
}

impl LayerOn for CacheLayer {
    fn layer_on(self, inner: Inner) -> Cache<Inner> {
        tower::Layer::layer(&self, inner)
    }
}

async fn get(svc: &Cache<Inner>, req: ObjectRequest) -> http::Response<Body> {
    svc.clone().oneshot(req).await.unwrap()
}

async fn wait_redis_writes(store: &CacheStore, n: u64) {
    eventually("redis writes", || {
        store.stats().redis_writes.load(Ordering::Relaxed) >= n
    })
    .await;
}

#[tokio::test]
async fn miss_then_hit_through_a_real_s3_replica() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data/dir")).unwrap();
    std::fs::write(dir.path().join("data/dir/a b.txt"), b"hello from s3").unwrap();
    let endpoint = start_s3(dir.path()).await;
    let replica = S3Upstream::new(
        "local",
        s3_bucket(Some(&endpoint.parse().unwrap()), "data", "us-east-1").unwrap(),
        reqwest::Client::new(),
    )
    .with_credentials(rusty_s3::Credentials::new(AK, SK));
    let redis = RedisServer::start().await;
    let store = store(&config(Some(&redis)));
    let app = ObjectService::new(CacheLayer::new(store.clone(), "data").layer_on_any(replica));

    let send = |uri: &str, method: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder().uri(uri).method(method);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        app.clone().oneshot(b.body(Body::empty()).unwrap())
    };
    let res = send("/dir/a%20b.txt", "GET", &[]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(x_cache(&res), "MISS");
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(body_of(res).await, "hello from s3");

    let res = send("/dir/a%20b.txt", "GET", &[]).await.unwrap();
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "13");
    assert_eq!(body_of(res).await, "hello from s3");

    // From the cached copy: HEAD, ranges and preconditions, as S3 answers them.
    let res = send("/dir/a%20b.txt", "HEAD", &[]).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "13");
    assert!(body_of(res).await.is_empty());
    let res = send("/dir/a%20b.txt", "GET", &[("range", "bytes=6-9")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 6-9/13");
    assert_eq!(body_of(res).await, "from");
    let res = send("/dir/a%20b.txt", "GET", &[("range", "bytes=50-")]).await.unwrap();
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */13");
    let weak = format!("\"nope\", W/{etag}");
    let res = send("/dir/a%20b.txt", "GET", &[("if-none-match", weak.as_str())])
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(store.stats().upstream_fetches.load(Ordering::Relaxed), 1);

    // A second instance sharing Redis gets it from there.
    wait_redis_writes(&store, 1).await;
    let other = self::store(&config(Some(&redis)));
    let up = FakeUpstream::new();
    let b = cache(&other, "data", &up);
    let res = get(&b, ObjectRequest::get("dir/a b.txt")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
    assert_eq!(body_of(res).await, "hello from s3");
    assert_eq!(up.calls(), 0);
}

trait LayerOnAny {
    fn layer_on_any<S>(self, inner: S) -> Cache<S>;
}

impl LayerOnAny for CacheLayer {
    fn layer_on_any<S>(self, inner: S) -> Cache<S> {
        tower::Layer::layer(&self, inner)
    }
}

#[tokio::test]
async fn two_instances_share_redis_and_buckets_never_collide() {
    let redis = RedisServer::start().await;
    let (a_store, b_store) = (store(&config(Some(&redis))), store(&config(Some(&redis))));
    let (up_a, up_b) = (FakeUpstream::new(), FakeUpstream::new());
    up_a.put("k", FakeObject::new("from bucket one"));
    let a = cache(&a_store, "one", &up_a);
    let res = get(&a, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    body_of(res).await;
    wait_redis_writes(&a_store, 1).await;

    let b = cache(&b_store, "one", &up_b);
    let res = get(&b, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
    assert_eq!(res.headers()[header::ETAG], "\"etag-1\"");
    assert_eq!(res.headers()[header::LAST_MODIFIED], LAST_MODIFIED);
    assert_eq!(body_of(res).await, "from bucket one");
    // The Redis hit filled B's memory.
    assert_eq!(x_cache(&get(&b, ObjectRequest::get("k")).await), "HIT-MEMORY");
    assert_eq!(up_b.calls(), 0);

    // Same key, other bucket: its own entry.
    up_b.put("k", FakeObject::new("from bucket two"));
    let two = cache(&b_store, "two", &up_b);
    let res = get(&two, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "from bucket two");
    assert_eq!(body_of(get(&b, ObjectRequest::get("k")).await).await, "from bucket one");
}

#[tokio::test]
async fn cached_objects_are_served_while_every_replica_fails() {
    let redis = RedisServer::start().await;
    let store = store(&config(Some(&redis)));
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("kept"));
    let svc = cache(&store, "b", &up);
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    up.fail(true);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(body_of(res).await, "kept");
    // Not cached and no replica: the error goes on to ObjectService.
    assert!(svc.clone().oneshot(ObjectRequest::get("other")).await.is_err());
}

#[tokio::test]
async fn stale_copies_serve_only_when_replicas_fail_and_within_the_window() {
    let redis = RedisServer::start().await;
    let mut cfg = config(Some(&redis));
    cfg.stale_seconds = 2;
    let store = store(&cfg);
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("v1"));
    let svc = tower::Layer::layer(
        &CacheLayer::new(store.clone(), "b").with_ttl(Duration::from_millis(300)),
        up.service(),
    );
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    wait_redis_writes(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    up.fail(true);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "STALE");
    assert_eq!(body_of(res).await, "v1");
    assert_eq!(store.stats().stale_hits.load(Ordering::Relaxed), 1);

    // Replicas back: past its TTL the copy is fetched again.
    up.fail(false);
    up.put("k", FakeObject::new("v2"));
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "v2");

    // Past TTL + stale window: nothing to fall back on.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    up.fail(true);
    assert!(svc.clone().oneshot(ObjectRequest::get("k")).await.is_err());
}

#[tokio::test]
async fn conditional_range_and_head_from_cache() {
    let store = store(&config(None));
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("0123456789"));
    let svc = cache(&store, "b", &up);
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    let with = |name: header::HeaderName, v: &'static str| {
        ObjectRequest::get("k").with_header(name, HeaderValue::from_static(v))
    };

    for v in ["\"etag-1\"", "W/\"etag-1\"", "\"x\", \"etag-1\"", "*"] {
        let res = get(&svc, with(header::IF_NONE_MATCH, v)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{v}");
        assert_eq!(res.headers()[header::ETAG], "\"etag-1\"");
        assert!(body_of(res).await.is_empty());
    }
    let res = get(&svc, with(header::IF_NONE_MATCH, "\"other\"")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = get(&svc, with(header::IF_MODIFIED_SINCE, "Thu, 22 Oct 2015 07:28:00 GMT")).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = get(&svc, with(header::IF_MODIFIED_SINCE, "Tue, 20 Oct 2015 07:28:00 GMT")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = get(&svc, with(header::IF_MATCH, "\"other\"")).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);

    let res = get(&svc, with(header::RANGE, "bytes=0-")).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 0-9/10");
    let res = get(&svc, with(header::RANGE, "bytes=-3")).await;
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "3");
    assert_eq!(body_of(res).await, "789");
    let res = get(&svc, with(header::RANGE, "bytes=10-")).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */10");

    let res = get(&svc, ObjectRequest::head("k")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "10");
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert!(body_of(res).await.is_empty());
    assert_eq!(up.calls(), 1);

    // A range on a miss passes through and stores nothing.
    up.put("r", FakeObject::new("abc"));
    let r = ObjectRequest::get("r").with_header(header::RANGE, HeaderValue::from_static("bytes=0-0"));
    assert_eq!(x_cache(&get(&svc, r.clone()).await), "MISS");
    assert_eq!(x_cache(&get(&svc, r).await), "MISS");
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn large_and_uncacheable_answers_stream_through() {
    let redis = RedisServer::start().await;
    let mut cfg = config(Some(&redis));
    cfg.memory.max_item_size = 1024;
    cfg.redis.max_item_size = 1024;
    let store = store(&cfg);
    let up = FakeUpstream::new();
    let big = Bytes::from(vec![b'x'; 4096]);
    up.put("big", FakeObject::new(big.clone()));
    up.put(
        "private",
        FakeObject {
            cache_control: Some("private, max-age=60"),
            ..FakeObject::new("secret")
        },
    );
    let svc = cache(&store, "b", &up);
    for _ in 0..2 {
        let res = get(&svc, ObjectRequest::get("big")).await;
        assert_eq!(x_cache(&res), "BYPASS");
        assert_eq!(body_of(res).await, big);
        let res = get(&svc, ObjectRequest::get("private")).await;
        assert_eq!(x_cache(&res), "BYPASS");
        let res = get(&svc, ObjectRequest::get("missing")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(x_cache(&res), "BYPASS");
    }
    assert_eq!(up.calls(), 6);
    assert_eq!(store.stats().memory_inserts.load(Ordering::Relaxed), 0);

    // A bucket with caching off.
    up.put("k", FakeObject::new("v"));
    let off = tower::Layer::layer(&CacheLayer::new(store.clone(), "b").with_enabled(false), up.service());
    assert_eq!(
        x_cache(&off.clone().oneshot(ObjectRequest::get("k")).await.unwrap()),
        "BYPASS"
    );
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let store = store(&config(None));
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new(vec![b'z'; 100_000]));
    up.set_delay(Duration::from_millis(300));
    let svc = cache(&store, "b", &up);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(ObjectRequest::get("k")).await.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                let x = x_cache(&res);
                assert_eq!(body_of(res).await.len(), 100_000);
                x
            })
        })
        .collect();
    let mut labels = Vec::new();
    for t in tasks {
        labels.push(t.await.unwrap());
    }
    assert_eq!(up.calls(), 1, "{labels:?}");
    assert_eq!(labels.iter().filter(|l| *l == "MISS").count(), 1, "{labels:?}");
    assert_eq!(store.stats().coalesced_hits.load(Ordering::Relaxed), 9);
}

#[tokio::test]
async fn redis_killed_and_restarted_costs_no_request() {
    let mut redis = RedisServer::start().await;
    let store = store(&config(Some(&redis)));
    let up = FakeUpstream::new();
    for i in 0..6 {
        up.put(&format!("k{i}"), FakeObject::new(format!("v{i}")));
    }
    let svc = cache(&store, "b", &up);
    body_of(get(&svc, ObjectRequest::get("k0")).await).await;
    wait_redis_writes(&store, 1).await;

    redis.kill();
    for round in 0..3 {
        for i in 0..4 {
            let res = svc.clone().oneshot(ObjectRequest::get(format!("k{i}"))).await;
            let res = res.unwrap_or_else(|e| panic!("round {round} k{i}: {e}"));
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(body_of(res).await, format!("v{i}"));
        }
    }
    assert!(store.stats().redis_errors.load(Ordering::Relaxed) > 0);

    redis.restart().await;
    // After the breaker's cooldown the pool dials again by itself.
    let writes = store.stats().redis_writes.load(Ordering::Relaxed);
    let mut n = 4;
    eventually_async(
        || {
            let svc = svc.clone();
            let up = up.clone();
            n += 1;
            let key = format!("n{n}");
            up.put(&key, FakeObject::new("again"));
            async move {
                let res = svc.oneshot(ObjectRequest::get(key)).await.unwrap();
                body_of(res).await;
            }
        },
        || store.stats().redis_writes.load(Ordering::Relaxed) > writes,
    )
    .await;
    let other = self::store(&config(Some(&redis)));
    let key = format!("n{n}");
    let res = get(&cache(&other, "b", &FakeUpstream::new()), ObjectRequest::get(key)).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}

async fn eventually_async<F, Fut>(mut step: F, mut done: impl FnMut() -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..100 {
        step().await;
        for _ in 0..10 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("condition never held");
}

#[tokio::test]
async fn unreachable_redis_at_startup_is_only_misses() {
    let mut cfg = config(None);
    cfg.redis.enabled = true;
    cfg.redis.url = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://127.0.0.1:{port}")
    };
    cfg.redis.timeout_ms = 100;
    let store = store(&cfg);
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("v"));
    let svc = cache(&store, "b", &up);
    for _ in 0..5 {
        let res = get(&svc, ObjectRequest::get("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        body_of(res).await;
    }
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn foreign_values_in_redis_are_misses() {
    let redis = RedisServer::start().await;
    let store = store(&config(Some(&redis)));
    let key = store.cache_key("b", "k");
    let _: () = redis
        .cmd(deadpool_redis::redis::cmd("SET").arg(&key).arg("not a cache entry"))
        .await;
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("real"));
    let svc = cache(&store, "b", &up);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "real");
    assert_eq!(store.stats().redis_corrupt.load(Ordering::Relaxed), 1);
    // The fill replaced it with a real entry.
    wait_redis_writes(&store, 1).await;
    let other = self::store(&config(Some(&redis)));
    let res = get(&cache(&other, "b", &FakeUpstream::new()), ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}

#[tokio::test]
async fn purge_object_bucket_and_all_clear_both_tiers() {
    let redis = RedisServer::start().await;
    let store = store(&config(Some(&redis)));
    let up = FakeUpstream::new();
    up.put("k1", FakeObject::new("1"));
    up.put("k2", FakeObject::new("2"));
    let (a, b) = (cache(&store, "a", &up), cache(&store, "b*", &up));
    for svc in [&a, &b] {
        for k in ["k1", "k2"] {
            body_of(get(svc, ObjectRequest::get(k)).await).await;
        }
    }
    wait_redis_writes(&store, 4).await;
    let count = || async {
        let keys: Vec<String> = redis
            .cmd(deadpool_redis::redis::cmd("KEYS").arg("yatagarasu:cache:*"))
            .await;
        keys.len()
    };
    assert_eq!(count().await, 4);

    store.purge_object("a", "k1").await.unwrap();
    assert_eq!(count().await, 3);
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k1")).await), "MISS");
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "HIT-MEMORY");

    store.purge_bucket("b*").await.unwrap();
    assert_eq!(x_cache(&get(&b, ObjectRequest::get("k1")).await), "MISS");
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "HIT-MEMORY");

    store.purge_all().await.unwrap();
    // Other data in the same Redis is left alone.
    let _: () = redis
        .cmd(deadpool_redis::redis::cmd("SET").arg("unrelated").arg("x"))
        .await;
    store.purge_all().await.unwrap();
    assert_eq!(count().await, 0);
    let exists: i64 = redis.cmd(deadpool_redis::redis::cmd("EXISTS").arg("unrelated")).await;
    assert_eq!(exists, 1);
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "MISS");
}

#[tokio::test]
async fn redis_capacity_refuses_writes() {
    let redis = RedisServer::start().await;
    let mut cfg = config(Some(&redis));
    cfg.redis.max_capacity = 1; // below Redis' own used_memory
    let store = store(&cfg);
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("v"));
    let svc = cache(&store, "b", &up);
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    eventually("refused write", || {
        store.stats().redis_writes_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(store.stats().redis_writes.load(Ordering::Relaxed), 0);
    // Memory still has it.
    assert_eq!(x_cache(&get(&svc, ObjectRequest::get("k")).await), "HIT-MEMORY");
    let _ = svc.clone().ready().await;
}

#[tokio::test]
async fn abandoned_fills_store_nothing() {
    use http_body_util::BodyExt;
    let store = store(&config(None));
    let up = FakeUpstream::new();
    up.put(
        "k",
        FakeObject {
            chunked: true,
            ..FakeObject::new(vec![b'a'; 8192])
        },
    );
    let svc = cache(&store, "b", &up);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap().len(), 1024);
    drop(body); // the client went away mid-stream
    assert_eq!(store.stats().fills_abandoned.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats().memory_inserts.load(Ordering::Relaxed), 0);

    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await.len(), 8192);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(body_of(res).await.len(), 8192);
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn slow_redis_costs_no_request() {
    let redis = RedisServer::start().await;
    let up = FakeUpstream::new();
    up.put("k", FakeObject::new("v"));
    let a = self::store(&config(Some(&redis)));
    body_of(get(&cache(&a, "b", &up), ObjectRequest::get("k")).await).await;
    wait_redis_writes(&a, 1).await;

    // Redis stops answering for a while (the whole server sleeps).
    let url = redis.url();
    let sleeper = tokio::spawn(async move {
        let client = deadpool_redis::redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = deadpool_redis::redis::cmd("DEBUG");
        cmd.arg("SLEEP").arg("1.5");
        // The client may give up waiting first; the server sleeps on.
        let _: Result<String, _> = cmd.query_async(&mut conn).await;
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = self::store(&config(Some(&redis)));
    let svc = cache(&b, "b", &up);
    for _ in 0..3 {
        let res = get(&svc, ObjectRequest::get("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_of(res).await, "v");
    }
    assert!(b.stats().redis_timeouts.load(Ordering::Relaxed) >= 1);
    sleeper.await.unwrap();
    redis.wait_ready().await;

    // Once Redis answers again, it is used again.
    let c = self::store(&config(Some(&redis)));
    let res = get(&cache(&c, "b", &FakeUpstream::new()), ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}
