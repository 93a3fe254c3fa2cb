//! The two-tier cache through the real binary, with a real redis-server.

use std::time::Duration;

use crate::common::*;
use crate::redis::Redis;

fn cached_config(endpoint: &str, extra_bucket: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
buckets:
  - name: assets
    path_prefix: /assets
    s3: {{ bucket: assets-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 1, retry: {{ max_attempts: 1 }} }}
{extra_bucket}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 16777216, ttl_seconds: 60 }}
  redis: {{ enabled: true, url: "${{REDIS_URL}}", ttl_seconds: 60, pool_size: 4 }}
  stale_seconds: 600
metrics: {{ enabled: false }}
"#
    )
}

async fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut req = client().get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, res.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn instances_share_the_redis_tier_and_spare_the_origin() {
    let redis = Redis::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "logo.png", &pattern(40_000, 1)).unwrap();
    let config = cached_config(&s3.endpoint(), "");
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Proxy::start_with_env(&config, &env);
    let b = Proxy::start_with_env(&config, &env);

    let (status, cache, body) = get(&a, "/assets/logo.png", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert_eq!(body, pattern(40_000, 1));
    let (_, cache, _) = get(&a, "/assets/logo.png", &[]).await;
    assert_eq!(cache, "HIT-MEMORY");
    // The Redis write happens as the body ends; B finds it there.
    let shared = eventually(Duration::from_secs(5), || async {
        get(&b, "/assets/logo.png", &[]).await.1.starts_with("HIT")
    })
    .await;
    assert!(shared, "instance B never hit what A fetched");
    assert_eq!(s3.requests(), 1, "the origin was asked more than once");

    // Range, HEAD and conditionals are answered from the cached copy.
    let (status, cache, body) = get(&b, "/assets/logo.png", &[("range", "bytes=10-19")]).await;
    assert_eq!((status, body.as_slice()), (206, &pattern(40_000, 1)[10..20]));
    assert!(cache.starts_with("HIT"), "{cache}");
    let (status, _, _) = get(&b, "/assets/logo.png", &[("range", "bytes=50000-")]).await;
    assert_eq!(status, 416);
    let head = client().head(b.url("/assets/logo.png")).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "40000");
    let etag = head.headers()["etag"].to_str().unwrap().to_owned();
    let (status, _, _) = get(&b, "/assets/logo.png", &[("if-none-match", &format!("W/{etag}"))]).await;
    assert_eq!(status, 304);
    assert_eq!(s3.requests(), 1);
}

#[tokio::test]
async fn cached_objects_survive_an_origin_outage_and_redis_crashes() {
    let mut redis = Redis::start();
    let mut s3 = s3().await;
    s3.put_object("assets-bkt", "a.css", b"body { color: black }").unwrap();
    s3.put_object("assets-bkt", "b.css", b"p { margin: 0 }").unwrap();
    let config = cached_config(&s3.endpoint(), "");
    let url = redis.url();
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &url)]);
    assert_eq!(get(&proxy, "/assets/a.css", &[]).await.0, 200);

    // Every replica down: the cached object is still served.
    s3.stop().await;
    let (status, cache, body) = get(&proxy, "/assets/a.css", &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"body { color: black }".as_slice()));
    assert!(cache.starts_with("HIT"), "{cache}");
    s3.restart().await.unwrap();

    // Redis killed mid-run: zero client errors.
    redis.kill();
    for _ in 0..10 {
        assert_eq!(get(&proxy, "/assets/a.css", &[]).await.0, 200);
        assert_eq!(get(&proxy, "/assets/b.css", &[]).await.0, 200);
    }
    // Restarted: used again (an object fetched now reaches Redis, and a fresh instance hits it).
    redis.restart();
    s3.put_object("assets-bkt", "c.css", b"a { }").unwrap();
    let stored = eventually(Duration::from_secs(15), || async {
        let _ = get(&proxy, "/assets/c.css", &[]).await;
        let other = Proxy::start_with_env(&config, &[("REDIS_URL", &url)]);
        get(&other, "/assets/c.css", &[]).await.1 == "HIT-REDIS"
    })
    .await;
    assert!(stored, "Redis was not used again after its restart");
}

const SECRET: &str = "integration-secret-0123456789abcdef";

fn token(sub: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({ "sub": sub, "exp": now + exp_offset, "role": "reader" });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_cache_never_serves_what_auth_would_refuse() {
    let redis = Redis::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "private.txt", b"for readers only").unwrap();
    let private = format!(
        r#"  - name: private
    path_prefix: /private
    s3: {{ bucket: assets-bkt, endpoint: "{}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
    auth: {{ enabled: true, jwt: {{ algorithm: HS256, secret: "{SECRET}" }} }}"#,
        s3.endpoint()
    );
    let config = cached_config(&s3.endpoint(), &private);
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    let good = format!("Bearer {}", token("alice", 600));

    let (status, cache, body) = get(&proxy, "/private/private.txt", &[("authorization", &good)]).await;
    assert_eq!(
        (status, cache.as_str(), body.as_slice()),
        (200, "MISS", b"for readers only".as_slice())
    );
    assert!(get(&proxy, "/private/private.txt", &[("authorization", &good)])
        .await
        .1
        .starts_with("HIT"));

    let res = client().get(proxy.url("/private/private.txt")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    assert!(!res.text().await.unwrap().contains("for readers"));
    let expired = format!("Bearer {}", token("alice", -3600));
    let (status, _, body) = get(&proxy, "/private/private.txt", &[("authorization", &expired)]).await;
    assert_eq!(status, 401);
    assert!(!String::from_utf8_lossy(&body).contains("for readers"));
    // The same object under the open prefix is its own cache entry (keys carry the bucket).
    let (status, cache, _) = get(&proxy, "/assets/private.txt", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    // Tokens never reach the logs.
    assert!(!proxy.settled_logs().await.contains(good.trim_start_matches("Bearer ")));
}
