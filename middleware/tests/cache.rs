//! The two-tier cache against a real `redis-server` (a child process per
//! test) and a real S3 server (s3s-fs checking SigV4) as the origin.

mod cache_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use cache_support::*;
use http::{header, HeaderValue, Request, Response, StatusCode};
use tower::ServiceExt;
use yatagarasu_middleware::cache::{
    BodyPlacement, Cache, CacheConfig, CacheLayer, CacheStore, CachedObject, PlacedBodyWriter,
};
use yatagarasu_middleware::object::{ObjectRequest, ObjectService};

fn config(redis: Option<&Redis>) -> CacheConfig {
    let mut cfg = CacheConfig {
        stale_seconds: 60,
        ..Default::default()
    };
    if let Some(redis) = redis {
        cfg.redis.enabled = true;
        cfg.redis.url = Some(redis.url());
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

fn cache(store: &CacheStore, bucket: &str, s3: &TestS3) -> Cache<Inner> {
    tower::Layer::layer(&CacheLayer::new(store.clone(), bucket), s3.service())
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
    let s3 = TestS3::start().await;
    s3.put("dir/a b.txt", "hello from s3").await;
    let redis = redis_server();
    let store = store(&config(Some(&redis)));
    let app = ObjectService::new(tower::Layer::layer(
        &CacheLayer::new(store.clone(), "data"),
        s3.replica(),
    ));

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
    // The prebuilt head's request-id slot: gone for a request without an id...
    assert!(!res.headers().contains_key("x-request-id"));
    assert_eq!(body_of(res).await, "hello from s3");
    // ...the request's own id otherwise, once.
    let res = send("/dir/a%20b.txt", "GET", &[("x-request-id", "req-7")])
        .await
        .unwrap();
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    let ids: Vec<_> = res.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["req-7"]);

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
    assert_eq!(s3.requests(), 1);

    // A second instance sharing Redis gets it from there.
    wait_redis_writes(&store, 1).await;
    let other = self::store(&config(Some(&redis)));
    let b = cache(&other, "data", &s3);
    let res = get(
        &b,
        ObjectRequest::get("dir/a b.txt").with_request_id(Some(HeaderValue::from_static("req-8"))),
    )
    .await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
    assert_eq!(res.headers()["x-request-id"], "req-8");
    hit_head_once(&res, Some("req-8"));
    assert_eq!(body_of(res).await, "hello from s3");
    let res = get(&b, ObjectRequest::get("dir/a b.txt")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert!(!res.headers().contains_key("x-request-id"));
    hit_head_once(&res, None);
    let res = get(
        &b,
        ObjectRequest::get("dir/a b.txt").with_request_id(Some(HeaderValue::from_static("req-9"))),
    )
    .await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    hit_head_once(&res, Some("req-9"));
    assert_eq!(s3.requests(), 1);
}

/// A whole-object hit's head: one `X-Cache`, one `Age` in whole seconds,
/// the request's id once (or none), and the object's own headers.
fn hit_head_once(res: &Response<Body>, id: Option<&str>) {
    let count = |name: &str| res.headers().get_all(name).iter().count();
    assert_eq!(count("x-cache"), 1, "{:?}", res.headers());
    assert_eq!(count("age"), 1, "{:?}", res.headers());
    let age: u64 = res.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age < 60, "age {age}");
    assert_eq!(count("x-request-id"), usize::from(id.is_some()), "{:?}", res.headers());
    if let Some(id) = id {
        assert_eq!(res.headers()["x-request-id"], id);
    }
    assert_eq!(count("etag"), 1, "{:?}", res.headers());
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "13");
    assert_eq!(res.headers()[header::ACCEPT_RANGES], "bytes");
}

#[tokio::test]
async fn two_instances_share_redis_and_buckets_never_collide() {
    let redis = redis_server();
    let (a_store, b_store) = (store(&config(Some(&redis))), store(&config(Some(&redis))));
    let (one, two) = (TestS3::start().await, TestS3::start().await);
    let etag = one
        .put_with("k", "from bucket one", &[("x-amz-meta-owner", "team-a")])
        .await;
    two.put("k", "from bucket two").await;
    let a = cache(&a_store, "one", &one);
    let res = get(&a, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    body_of(res).await;
    wait_redis_writes(&a_store, 1).await;

    let b = cache(&b_store, "one", &one);
    let res = get(&b, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
    assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
    assert!(res.headers().contains_key(header::LAST_MODIFIED));
    assert_eq!(res.headers()["x-amz-meta-owner"], "team-a");
    assert_eq!(body_of(res).await, "from bucket one");
    // The Redis hit filled B's memory.
    assert_eq!(x_cache(&get(&b, ObjectRequest::get("k")).await), "HIT-MEMORY");
    assert_eq!(one.requests(), 1);

    // Same key, other bucket: its own entry.
    let b_two = cache(&b_store, "two", &two);
    let res = get(&b_two, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "from bucket two");
    assert_eq!(body_of(get(&b, ObjectRequest::get("k")).await).await, "from bucket one");
}

#[tokio::test]
async fn cached_objects_are_served_while_every_replica_fails() {
    let redis = redis_server();
    let store = store(&config(Some(&redis)));
    let s3 = TestS3::start().await;
    s3.put("k", "kept").await;
    s3.put("other", "not cached").await;
    let svc = cache(&store, "b", &s3);
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    s3.fail(true);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(body_of(res).await, "kept");
    // Not cached and no replica: the 503 goes on to ObjectService as an error.
    let err = svc.clone().oneshot(ObjectRequest::get("other")).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn stale_copies_serve_only_when_replicas_fail_and_within_the_window() {
    let redis = redis_server();
    let mut cfg = config(Some(&redis));
    cfg.stale_seconds = 2;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    s3.put("k", "v1").await;
    let svc = tower::Layer::layer(
        &CacheLayer::new(store.clone(), "b").with_ttl(Duration::from_millis(300)),
        s3.service(),
    );
    body_of(get(&svc, ObjectRequest::get("k")).await).await;
    wait_redis_writes(&store, 1).await;

    // The replica fails: fresh, the copy is a hit; past its TTL, STALE.
    s3.fail(true);
    eventually_async_until(|| async {
        let res = get(&svc, ObjectRequest::get("k")).await;
        let x = x_cache(&res);
        assert!(x == "HIT-MEMORY" || x == "STALE", "{x}");
        assert_eq!(body_of(res).await, "v1");
        x == "STALE"
    })
    .await;
    assert!(store.stats().stale_hits.load(Ordering::Relaxed) >= 1);

    // Replicas back: past its TTL the copy is fetched again.
    s3.fail(false);
    s3.put("k", "v2").await;
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "v2");

    // Past TTL + stale window: nothing to fall back on; the error goes on.
    s3.fail(true);
    eventually_async_until(|| async { svc.clone().oneshot(ObjectRequest::get("k")).await.is_err() }).await;
}

/// Repeats `step` (bounded, 10 s) until it returns true.
async fn eventually_async_until<F, Fut>(mut step: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if step().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held");
}

#[tokio::test]
async fn stale_if_error_from_redis_in_a_fresh_instance() {
    let redis = redis_server();
    let mut cfg = config(Some(&redis));
    cfg.stale_seconds = 60;
    let s3 = TestS3::start().await;
    s3.put("k", "shared copy").await;
    let a = store(&cfg);
    let layer = |store: &CacheStore| {
        tower::Layer::layer(
            &CacheLayer::new(store.clone(), "b").with_ttl(Duration::from_millis(200)),
            s3.service(),
        )
    };
    body_of(get(&layer(&a), ObjectRequest::get("k")).await).await;
    wait_redis_writes(&a, 1).await;
    s3.fail(true);
    // A new instance (empty memory) with every replica failing: the Redis
    // copy past its TTL is served as STALE.
    eventually_async_until(|| async {
        let b = store(&cfg);
        let res = get(&layer(&b), ObjectRequest::get("k")).await;
        let x = x_cache(&res);
        assert_eq!(body_of(res).await, "shared copy", "{x}");
        x == "STALE"
    })
    .await;
}

#[tokio::test]
async fn conditional_range_and_head_from_cache() {
    let store = store(&config(None));
    let s3 = TestS3::start().await;
    let etag = s3.put("k", "0123456789").await;
    let svc = cache(&store, "b", &s3);
    let first = get(&svc, ObjectRequest::get("k")).await;
    let modified = first.headers()[header::LAST_MODIFIED].to_str().unwrap().to_owned();
    body_of(first).await;
    let with = |name: header::HeaderName, v: &str| {
        ObjectRequest::get("k").with_header(name, HeaderValue::from_str(v).unwrap())
    };
    let modified_at = httpdate::parse_http_date(&modified).unwrap();
    let later = httpdate::fmt_http_date(modified_at + Duration::from_secs(86_400));
    let earlier = httpdate::fmt_http_date(modified_at - Duration::from_secs(86_400));

    for v in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".into()] {
        let res = get(&svc, with(header::IF_NONE_MATCH, &v)).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{v}");
        assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
        assert!(body_of(res).await.is_empty());
    }
    let res = get(&svc, with(header::IF_NONE_MATCH, "\"other\"")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = get(&svc, with(header::IF_MODIFIED_SINCE, &later)).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = get(&svc, with(header::IF_MODIFIED_SINCE, &earlier)).await;
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
    assert_eq!(s3.requests(), 1);

    // A range on a miss passes through and stores nothing.
    s3.put("r", "abc").await;
    let r = ObjectRequest::get("r").with_header(header::RANGE, HeaderValue::from_static("bytes=0-0"));
    let res = get(&svc, r.clone()).await;
    assert_eq!(
        (res.status(), x_cache(&res).as_str()),
        (StatusCode::PARTIAL_CONTENT, "MISS")
    );
    assert_eq!(body_of(res).await, "a");
    assert_eq!(x_cache(&get(&svc, r).await), "MISS");
    assert_eq!(s3.requests(), 3);
}

#[tokio::test]
async fn large_and_uncacheable_answers_stream_through() {
    let redis = redis_server();
    let mut cfg = config(Some(&redis));
    cfg.memory.max_item_size = 1024;
    cfg.redis.max_item_size = 1024;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    let big = Bytes::from(vec![b'x'; 4096]);
    s3.put("big", big.clone()).await;
    s3.put_with("private", "secret", &[("cache-control", "private, max-age=60")])
        .await;
    let svc = cache(&store, "b", &s3);
    for _ in 0..2 {
        let res = get(&svc, ObjectRequest::get("big")).await;
        assert_eq!(x_cache(&res), "BYPASS");
        assert_eq!(body_of(res).await, big);
        let res = get(&svc, ObjectRequest::get("private")).await;
        assert_eq!(x_cache(&res), "BYPASS");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "private, max-age=60");
        let res = get(&svc, ObjectRequest::get("missing")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(x_cache(&res), "BYPASS");
    }
    assert_eq!(s3.requests(), 6);
    assert_eq!(store.stats().memory_inserts.load(Ordering::Relaxed), 0);

    // A bucket with caching off.
    s3.put("k", "v").await;
    let off = tower::Layer::layer(&CacheLayer::new(store.clone(), "b").with_enabled(false), s3.service());
    for _ in 0..2 {
        assert_eq!(
            x_cache(&off.clone().oneshot(ObjectRequest::get("k")).await.unwrap()),
            "BYPASS"
        );
    }
    assert_eq!(s3.requests(), 8);
}

#[tokio::test]
async fn concurrent_misses_make_one_upstream_request() {
    let store = store(&config(None));
    let s3 = TestS3::start().await;
    s3.put("k", vec![b'z'; 100_000]).await;
    s3.hold();
    let svc = cache(&store, "b", &s3);
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
    // One request reached S3 and waits there; the nine others wait for it.
    eventually("the leader at S3 and nine followers", || {
        s3.waiting() == 1 && store.stats().coalesced_waits.load(Ordering::SeqCst) == 9
    })
    .await;
    s3.release();
    let mut labels = Vec::new();
    for t in tasks {
        labels.push(t.await.unwrap());
    }
    assert_eq!(s3.requests(), 1, "{labels:?}");
    assert_eq!(labels.iter().filter(|l| *l == "MISS").count(), 1, "{labels:?}");
    assert_eq!(labels.iter().filter(|l| *l == "HIT-MEMORY").count(), 9, "{labels:?}");
    assert_eq!(store.stats().coalesced_hits.load(Ordering::Relaxed), 9);
}

#[tokio::test]
async fn followers_fetch_themselves_when_the_leader_gives_up() {
    let mut cfg = config(None);
    cfg.memory.max_item_size = 1000;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    s3.put("big", vec![b'q'; 5000]).await;
    s3.hold();
    let svc = cache(&store, "b", &s3);
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                body_of(svc.oneshot(ObjectRequest::get("big")).await.unwrap())
                    .await
                    .len()
            })
        })
        .collect();
    eventually("leader at S3, two followers", || {
        s3.waiting() == 1 && store.stats().coalesced_waits.load(Ordering::SeqCst) == 2
    })
    .await;
    s3.release();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 5000);
    }
    // Too large to store: every request got the object from S3 itself.
    assert_eq!(s3.requests(), 3);
}

#[tokio::test]
async fn redis_killed_and_restarted_costs_no_request() {
    let mut redis = redis_server();
    let store = store(&config(Some(&redis)));
    let s3 = TestS3::start().await;
    for i in 0..4 {
        s3.put(&format!("k{i}"), format!("v{i}")).await;
    }
    let svc = cache(&store, "b", &s3);
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

    redis.restart();
    // After the breaker's cooldown the pool dials again by itself.
    let writes = store.stats().redis_writes.load(Ordering::Relaxed);
    let mut n = 0;
    let mut last = String::new();
    eventually_async_until(|| {
        n += 1;
        let key = format!("n{n}");
        last = key.clone();
        let (svc, s3, store) = (svc.clone(), &s3, &store);
        async move {
            s3.put(&key, "again").await;
            body_of(svc.oneshot(ObjectRequest::get(key)).await.unwrap()).await;
            // The write is in the background: give it its own bounded wait.
            for _ in 0..25 {
                if store.stats().redis_writes.load(Ordering::Relaxed) > writes {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        }
    })
    .await;
    let other = self::store(&config(Some(&redis)));
    let res = get(&cache(&other, "b", &s3), ObjectRequest::get(last)).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}

#[tokio::test]
async fn unreachable_redis_at_startup_is_only_misses() {
    // A port with nothing listening: bound, then closed by the listener drop.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(None);
    cfg.redis.enabled = true;
    cfg.redis.url = Some(format!("redis://127.0.0.1:{port}"));
    cfg.redis.timeout_ms = 100;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    s3.put("k", "v").await;
    let svc = cache(&store, "b", &s3);
    for _ in 0..5 {
        let res = get(&svc, ObjectRequest::get("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        body_of(res).await;
    }
    assert_eq!(s3.requests(), 1);
    assert!(store.stats().redis_errors.load(Ordering::Relaxed) >= 1);
    assert_eq!(store.redis_up(), Some(false));
    let health = store.redis_health().await.unwrap();
    assert_eq!((health.mode, health.reachable), ("standalone", false));
}

#[tokio::test]
async fn foreign_values_in_redis_are_misses_and_deleted() {
    let redis = redis_server();
    let store = store(&config(Some(&redis)));
    let key = store.cache_key("b", "k");
    let _: () = redis
        .cmd(deadpool_redis::redis::cmd("SET").arg(&key).arg("not a cache entry"))
        .await;
    let s3 = TestS3::start().await;
    s3.put("k", "real").await;
    let svc = cache(&store, "b", &s3);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, "real");
    assert_eq!(store.stats().redis_corrupt.load(Ordering::Relaxed), 1);
    // The fill replaced it with a real entry.
    wait_redis_writes(&store, 1).await;
    let other = self::store(&config(Some(&redis)));
    let res = get(&cache(&other, "b", &s3), ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}

#[tokio::test]
async fn a_flipped_byte_in_redis_is_never_served() {
    let redis = redis_server();
    let s3 = TestS3::start().await;
    let body = vec![b'a'; 5000];
    s3.put("k", body.clone()).await;
    let a = store(&config(Some(&redis)));
    body_of(get(&cache(&a, "b", &s3), ObjectRequest::get("k")).await).await;
    wait_redis_writes(&a, 1).await;
    let key = a.cache_key("b", "k");
    // One byte of the body changed in place, the way a bad disk or a buggy
    // writer would.
    let len: usize = redis.cmd(deadpool_redis::redis::cmd("STRLEN").arg(&key)).await;
    let _: i64 = redis
        .cmd(deadpool_redis::redis::cmd("SETRANGE").arg(&key).arg(len - 100).arg("b"))
        .await;

    let b = store(&config(Some(&redis)));
    let res = get(&cache(&b, "b", &s3), ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, body);
    assert_eq!(b.stats().redis_corrupt.load(Ordering::Relaxed), 1);
    assert_eq!(s3.requests(), 2);
    // The bad value was deleted, then replaced by B's fill.
    wait_redis_writes(&b, 1).await;
    let value: Vec<u8> = redis.cmd(deadpool_redis::redis::cmd("GET").arg(&key)).await;
    let stored = CachedObject::decode(Bytes::from(value.clone())).expect("a valid entry again");
    assert_eq!(stored.body().as_ref(), body.as_slice());

    // A value cut short is refused too.
    let _: () = redis
        .cmd(
            deadpool_redis::redis::cmd("SET")
                .arg(&key)
                .arg(&value[..value.len() - 1]),
        )
        .await;
    let c = store(&config(Some(&redis)));
    assert_eq!(
        x_cache(&get(&cache(&c, "b", &s3), ObjectRequest::get("k")).await),
        "MISS"
    );
    assert_eq!(c.stats().redis_corrupt.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn purge_object_bucket_and_all_clear_both_tiers() {
    let redis = redis_server();
    let store = store(&config(Some(&redis)));
    let s3 = TestS3::start().await;
    s3.put("k1", "1").await;
    s3.put("k2", "2").await;
    let (a, b) = (cache(&store, "a", &s3), cache(&store, "b*", &s3));
    for svc in [&a, &b] {
        for k in ["k1", "k2"] {
            body_of(get(svc, ObjectRequest::get(k)).await).await;
        }
    }
    wait_redis_writes(&store, 4).await;
    let keys = || async {
        let mut keys: Vec<String> = redis
            .cmd(deadpool_redis::redis::cmd("KEYS").arg("yatagarasu:cache:*"))
            .await;
        // The mark of the last purge announced is no cached entry (and no
        // purge deletes it).
        keys.retain(|k| k != "yatagarasu:cache:purge:last");
        keys.sort();
        keys
    };
    let all = |pairs: &[(&str, &str)]| {
        let mut v: Vec<String> = pairs.iter().map(|(b, k)| store.cache_key(b, k)).collect();
        v.sort();
        v
    };
    assert_eq!(
        keys().await,
        all(&[("a", "k1"), ("a", "k2"), ("b*", "k1"), ("b*", "k2")])
    );

    // One object: only its key goes.
    store.purge_object("a", "k1").await.unwrap();
    assert_eq!(keys().await, all(&[("a", "k2"), ("b*", "k1"), ("b*", "k2")]));
    let res = get(&a, ObjectRequest::get("k1")).await;
    assert_eq!(x_cache(&res), "MISS");
    body_of(res).await;
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "HIT-MEMORY");
    wait_redis_writes(&store, 5).await; // a/k1 stored again

    // One bucket (a glob character in its name): both of its keys, no other.
    store.purge_bucket("b*").await.unwrap();
    assert_eq!(keys().await, all(&[("a", "k1"), ("a", "k2")]));
    let res = get(&b, ObjectRequest::get("k1")).await;
    assert_eq!(x_cache(&res), "MISS");
    body_of(res).await;
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "HIT-MEMORY");
    wait_redis_writes(&store, 6).await;
    assert_eq!(keys().await, all(&[("a", "k1"), ("a", "k2"), ("b*", "k1")]));

    // Everything under the prefix; other data in the same Redis is left alone.
    let _: () = redis
        .cmd(deadpool_redis::redis::cmd("SET").arg("unrelated").arg("x"))
        .await;
    store.purge_all().await.unwrap();
    assert_eq!(keys().await, Vec::<String>::new());
    let exists: i64 = redis.cmd(deadpool_redis::redis::cmd("EXISTS").arg("unrelated")).await;
    assert_eq!(exists, 1);
    assert_eq!(x_cache(&get(&a, ObjectRequest::get("k2")).await), "MISS");
    assert_eq!(x_cache(&get(&b, ObjectRequest::get("k1")).await), "MISS");
}

#[tokio::test]
async fn redis_capacity_is_enforced_at_its_boundary() {
    let redis = redis_server();
    let info: String = redis.cmd(deadpool_redis::redis::cmd("INFO").arg("memory")).await;
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Room for one 1.5 MB object (plus Redis' own overhead, connections
    // included, well under 0.5 MB), not for a second one of 1 MB.
    let mut cfg = config(Some(&redis));
    cfg.memory.max_capacity = 0;
    cfg.redis.max_capacity = used + 2_000_000;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    s3.put("fits", vec![b'f'; 1_500_000]).await;
    s3.put("over", vec![b'o'; 1_000_000]).await;
    let svc = cache(&store, "b", &s3);
    body_of(get(&svc, ObjectRequest::get("fits")).await).await;
    eventually("the first write", || {
        store.stats().redis_writes.load(Ordering::Relaxed) + store.stats().redis_writes_refused.load(Ordering::Relaxed)
            == 1
    })
    .await;
    assert_eq!(
        store.stats().redis_writes.load(Ordering::Relaxed),
        1,
        "{:?}",
        store.snapshot()
    );
    body_of(get(&svc, ObjectRequest::get("over")).await).await;
    eventually("refused write", || {
        store.stats().redis_writes_refused.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(store.stats().redis_writes.load(Ordering::Relaxed), 1);
    assert_eq!(x_cache(&get(&svc, ObjectRequest::get("fits")).await), "HIT-REDIS");
    assert_eq!(x_cache(&get(&svc, ObjectRequest::get("over")).await), "MISS");
}

#[tokio::test]
async fn abandoned_fills_store_nothing() {
    use http_body_util::BodyExt;
    let store = store(&config(None));
    let s3 = TestS3::start().await;
    let len = 1024 * 1024;
    s3.put("k", vec![b'a'; len]).await;
    let svc = cache(&store, "b", &s3);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.into_data().unwrap().len() < len);
    drop(body); // the client went away mid-stream
    assert_eq!(store.stats().fills_abandoned.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats().memory_inserts.load(Ordering::Relaxed), 0);

    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await.len(), len);
    let res = get(&svc, ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert_eq!(body_of(res).await.len(), len);
    assert_eq!(s3.requests(), 2);
}

#[tokio::test]
async fn slow_redis_costs_no_request() {
    let redis = redis_server();
    let s3 = TestS3::start().await;
    s3.put("k", "v").await;
    let a = self::store(&config(Some(&redis)));
    body_of(get(&cache(&a, "b", &s3), ObjectRequest::get("k")).await).await;
    wait_redis_writes(&a, 1).await;

    // Redis stops answering for a while (the whole server sleeps).
    let url = redis.url();
    let sleeper = tokio::spawn(async move {
        let client = deadpool_redis::redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = deadpool_redis::redis::cmd("DEBUG");
        cmd.arg("SLEEP").arg("2");
        let _: Result<String, _> = cmd.query_async(&mut conn).await;
    });
    // Wait until the server is asleep: a PING on its own connection goes unanswered.
    eventually_async_until(|| async {
        let client = deadpool_redis::redis::Client::open(redis.url()).unwrap();
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(Duration::from_millis(100), client.get_multiplexed_async_connection()).await
        else {
            return true;
        };
        let ping = deadpool_redis::redis::cmd("PING");
        tokio::time::timeout(Duration::from_millis(100), ping.query_async::<String>(&mut conn))
            .await
            .is_err()
    })
    .await;
    let b = self::store(&config(Some(&redis)));
    let svc = cache(&b, "b", &s3);
    for _ in 0..3 {
        let res = get(&svc, ObjectRequest::get("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_of(res).await, "v");
    }
    assert!(b.stats().redis_timeouts.load(Ordering::Relaxed) >= 1);
    sleeper.await.unwrap();
    redis.wait_ready();

    // Once Redis answers again, it is used again.
    let c = self::store(&config(Some(&redis)));
    let res = get(&cache(&c, "b", &s3), ObjectRequest::get("k")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for 200 MiB.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn ranged(key: &str, first: u64, last: u64) -> ObjectRequest {
    ObjectRequest::get(key).with_header(
        header::RANGE,
        HeaderValue::from_str(&format!("bytes={first}-{last}")).unwrap(),
    )
}

/// The issue's object: 200 MiB in 8 MiB slices (25). The ranges are small
/// (at most 1 MiB, every third one across a slice boundary) so the test
/// stays within seconds in a debug build: the test S3 server hashes every
/// body it serves, so the cost is the slices fetched, not the ranges.
#[tokio::test]
async fn large_objects_are_cached_in_slices() {
    const MIB: u64 = 1024 * 1024;
    const SLICE: u64 = 8 * MIB;
    const LEN: u64 = 200 * MIB;
    let redis = redis_server();
    let mut cfg = config(Some(&redis));
    cfg.slice_size = SLICE;
    cfg.redis.timeout_ms = 2_000;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    let object = Bytes::from(pattern(LEN as usize, 7));
    s3.put("video.bin", object.clone()).await;
    let svc = cache(&store, "media", &s3);

    // Random ranges, byte for byte; one upstream request per distinct slice.
    let mut touched = std::collections::BTreeSet::new();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x >> 20) % MIB;
        let first = if i % 3 == 0 {
            // Across the boundary after a random slice.
            ((x % (LEN / SLICE - 1)) + 1) * SLICE - len / 2
        } else {
            x % LEN
        };
        let last = (first + len - 1).min(LEN - 1);
        let res = get(&svc, ranged("video.bin", first, last)).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(x_cache(&res), "SLICE");
        assert_eq!(
            res.headers()[header::CONTENT_RANGE].to_str().unwrap(),
            format!("bytes {first}-{last}/{LEN}")
        );
        let body = body_of(res).await;
        assert!(
            body == object.slice(first as usize..=last as usize),
            "range {first}-{last}"
        );
        touched.extend(first / SLICE..=last / SLICE);
        assert_eq!(s3.requests(), touched.len() as u64, "after range {first}-{last}");
    }

    // A range over cached and uncached slices fetches only the uncached ones.
    let cached = *touched.iter().next().unwrap();
    let uncached: Vec<u64> = (0..LEN / SLICE).filter(|n| !touched.contains(n)).collect();
    if let Some(&gap) = uncached.first() {
        let (a, b) = (cached.min(gap), cached.max(gap));
        let before = s3.requests();
        let res = get(&svc, ranged("video.bin", a * SLICE + 5, b * SLICE + 5)).await;
        let body = body_of(res).await;
        assert!(body == object.slice((a * SLICE + 5) as usize..=(b * SLICE + 5) as usize));
        let fetched = (a..=b).filter(|n| !touched.contains(n)).count() as u64;
        assert_eq!(s3.requests(), before + fetched);
        touched.extend(a..=b);
    }

    // (A full GET streaming slice after slice is checked on a smaller object
    // in `a_plain_get_of_a_large_object_indexes_it_for_slices`: here it
    // would fetch all 200 MiB through the hashing test server.)

    // Another instance sharing Redis answers from the slices there: every
    // slice touched and the index written (the writes end in the background).
    eventually("slices in redis", || {
        store.stats().redis_writes.load(Ordering::Relaxed) > touched.len() as u64
    })
    .await;
    let other = self::store(&cfg);
    let before = s3.requests();
    let n = *touched.iter().next().unwrap();
    let (first, last) = (n * SLICE + 3, n * SLICE + 3 * MIB);
    let res = get(&cache(&other, "media", &s3), ranged("video.bin", first, last)).await;
    assert_eq!(x_cache(&res), "SLICE");
    assert!(body_of(res).await == object.slice(first as usize..=last as usize));
    assert_eq!(s3.requests(), before);
}

#[tokio::test]
async fn a_replaced_object_is_never_spliced() {
    const SLICE: u64 = 256 * 1024;
    const LEN: u64 = 16 * SLICE;
    let mut cfg = config(None);
    cfg.slice_size = SLICE;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    let v1 = Bytes::from(pattern(LEN as usize, 1));
    let v2 = Bytes::from(pattern(LEN as usize, 2));
    s3.put("doc", v1.clone()).await;
    let svc = cache(&store, "b", &s3);

    // Slice 3 cached from version 1.
    let res = get(&svc, ranged("doc", 3 * SLICE, 3 * SLICE + 99)).await;
    assert!(body_of(res).await == v1.slice(3 * SLICE as usize..3 * SLICE as usize + 100));
    s3.put("doc", v2.clone()).await;

    // Slices 3 (cached, v1) and 4 (fetched: now v2): the answer is cut
    // short rather than spliced.
    let res = get(&svc, ranged("doc", 3 * SLICE, 4 * SLICE + 99)).await;
    let got = axum::body::to_bytes(res.into_body(), usize::MAX).await;
    assert!(got.is_err(), "a spliced body was served");
    assert_eq!(store.stats().slice_invalidations.load(Ordering::Relaxed), 1);

    // The index is gone: the next answer is all version 2.
    let res = get(&svc, ranged("doc", 3 * SLICE, 4 * SLICE + 99)).await;
    assert_eq!(x_cache(&res), "SLICE");
    assert!(body_of(res).await == v2.slice(3 * SLICE as usize..4 * SLICE as usize + 100));
    let res = get(&svc, ObjectRequest::get("doc")).await;
    assert!(body_of(res).await == v2);
}

#[tokio::test]
async fn a_plain_get_of_a_large_object_indexes_it_for_slices() {
    const SLICE: u64 = 64 * 1024;
    let mut cfg = config(None);
    cfg.slice_size = SLICE;
    cfg.memory.max_item_size = 100 * 1024;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    let body = Bytes::from(pattern(300_000, 3));
    s3.put("big", body.clone()).await;
    let svc = cache(&store, "b", &s3);
    let res = get(&svc, ObjectRequest::get("big")).await;
    assert_eq!(x_cache(&res), "BYPASS");
    assert!(body_of(res).await == body);
    let res = get(&svc, ObjectRequest::get("big")).await;
    assert_eq!(x_cache(&res), "SLICE");
    assert!(body_of(res).await == body);
    // 1 whole GET, then 5 slices (300 000 / 65 536, rounded up).
    assert_eq!(s3.requests(), 1 + 5);
    let res = get(&svc, ObjectRequest::get("big")).await;
    assert!(body_of(res).await == body);
    assert_eq!(s3.requests(), 6);
}

#[tokio::test]
async fn concurrent_first_ranges_of_an_object_fetch_its_slice_once() {
    const SLICE: u64 = 64 * 1024;
    let mut cfg = config(None);
    cfg.slice_size = SLICE;
    cfg.memory.max_item_size = 100 * 1024;
    let store = store(&cfg);
    let s3 = TestS3::start().await;
    let body = Bytes::from(pattern((8 * SLICE) as usize, 9));
    s3.put("v", body.clone()).await;
    let svc = cache(&store, "b", &s3);
    // Eight clients ask for ranges of slice 0 of an object never seen.
    let answers = futures_util::future::join_all((0..8u64).map(|i| {
        let svc = &svc;
        async move {
            let first = i * 1000;
            let res = get(svc, ranged("v", first, first + 99)).await;
            (first, res.status(), body_of(res).await)
        }
    }))
    .await;
    for (first, status, got) in answers {
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert!(got == body.slice(first as usize..first as usize + 100));
    }
    assert_eq!(s3.requests(), 1, "slice 0 was fetched more than once");
}

/// A [`BodyPlacement`] on the heap that records what it is given: the
/// lengths of the writers it opened and the bodies it made.
#[derive(Clone, Default)]
struct Recorder(std::sync::Arc<Records>);

#[derive(Default)]
struct Records {
    min_len: usize,
    opened: std::sync::Mutex<Vec<usize>>,
    writes: std::sync::atomic::AtomicUsize,
    made: std::sync::Mutex<Vec<Bytes>>,
}

impl std::ops::Deref for Recorder {
    type Target = Records;
    fn deref(&self) -> &Records {
        &self.0
    }
}

struct RecordingWriter {
    buf: Vec<u8>,
    recorder: Recorder,
}

impl BodyPlacement for Recorder {
    fn writer(&self, len: usize) -> Option<Box<dyn PlacedBodyWriter>> {
        if len < self.min_len {
            return None;
        }
        self.opened.lock().unwrap().push(len);
        Some(Box::new(RecordingWriter {
            buf: Vec::with_capacity(len),
            recorder: self.clone(),
        }))
    }

    fn holds(&self, body: &[u8]) -> bool {
        let (start, end) = (body.as_ptr() as usize, body.as_ptr() as usize + body.len());
        self.made.lock().unwrap().iter().any(|b| {
            let at = b.as_ptr() as usize;
            at <= start && end <= at + b.len()
        })
    }
}

impl PlacedBodyWriter for RecordingWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.recorder.writes.fetch_add(1, Ordering::Relaxed);
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finish(self: Box<Self>) -> std::io::Result<Bytes> {
        let body = Bytes::from(self.buf);
        self.recorder.made.lock().unwrap().push(body.clone());
        Ok(body)
    }
}

/// The first data frame of an answer (a cached body is one frame).
async fn first_frame(res: http::Response<Body>) -> Bytes {
    use http_body_util::BodyExt;
    let frame = res.into_body().frame().await.unwrap().unwrap();
    frame.into_data().unwrap()
}

#[tokio::test]
async fn a_body_placement_gets_fills_as_they_stream_and_redis_copies_once() {
    let s3 = TestS3::start().await;
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    s3.put("large", large.clone()).await;
    s3.put("small", "tiny").await;
    let redis = redis_server();
    let placement = Recorder(std::sync::Arc::new(Records {
        min_len: 64 * 1024,
        ..Default::default()
    }));
    let store = store(&config(Some(&redis))).with_body_placement(std::sync::Arc::new(placement.clone()));
    let svc = cache(&store, "data", &s3);

    // The fill writes into one writer of the announced length while the
    // client gets the body.
    let res = get(&svc, ObjectRequest::get("large")).await;
    assert_eq!(x_cache(&res), "MISS");
    assert_eq!(body_of(res).await, large);
    assert_eq!(*placement.opened.lock().unwrap(), [200_000]);
    let writes = placement.writes.load(Ordering::Relaxed);
    assert!(
        writes > 1,
        "the body was copied at the end ({writes} write), not as it streamed"
    );
    // Hits, whole or in part, are answered from the placed bytes.
    let res = get(&svc, ObjectRequest::get("large")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    let body = first_frame(res).await;
    assert_eq!(body, large);
    assert!(placement.holds(&body), "a hit served from the heap");
    let range = ObjectRequest::get("large").with_header(header::RANGE, HeaderValue::from_static("bytes=1000-99999"));
    let res = get(&svc, range).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    let part = first_frame(res).await;
    assert_eq!(part, &large[1000..100_000]);
    assert!(placement.holds(&part));
    // Below the placement's minimum, the heap.
    let res = get(&svc, ObjectRequest::get("small")).await;
    assert_eq!(body_of(res).await, "tiny");
    let res = get(&svc, ObjectRequest::get("small")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert!(!placement.holds(&first_frame(res).await));
    assert_eq!(
        placement.opened.lock().unwrap().len(),
        1,
        "no second copy of a placed fill"
    );

    // Another instance fills its memory from Redis: one copy into its placement.
    wait_redis_writes(&store, 2).await;
    let theirs = Recorder(std::sync::Arc::new(Records {
        min_len: 64 * 1024,
        ..Default::default()
    }));
    let other = self::store(&config(Some(&redis))).with_body_placement(std::sync::Arc::new(theirs.clone()));
    let b = cache(&other, "data", &s3);
    let res = get(&b, ObjectRequest::get("large")).await;
    assert_eq!(x_cache(&res), "HIT-REDIS");
    assert_eq!(body_of(res).await, large);
    let res = get(&b, ObjectRequest::get("large")).await;
    assert_eq!(x_cache(&res), "HIT-MEMORY");
    assert!(theirs.holds(&first_frame(res).await));
    assert_eq!(*theirs.opened.lock().unwrap(), [200_000]);
    assert_eq!(
        theirs.writes.load(Ordering::Relaxed),
        1,
        "one copy of the Redis value's body"
    );
    assert_eq!(s3.requests(), 2, "one fetch per object");
}
