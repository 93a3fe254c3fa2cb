//! The two-tier cache through the real binary, with a real redis-server.

use std::time::Duration;

use crate::common::*;

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
metrics: {{ enabled: true, port: 0, address: "127.0.0.1" }}
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
    // A bucket whose copies are fresh for one second only.
    let short = format!(
        r#"  - name: short
    path_prefix: /short
    s3: {{ bucket: assets-bkt, endpoint: "{}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 1, retry: {{ max_attempts: 1 }} }}
    cache: {{ ttl_seconds: 1 }}"#,
        s3.endpoint()
    );
    let config = cached_config(&s3.endpoint(), &short);
    let url = redis.url();
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &url)]);
    assert_eq!(get(&proxy, "/assets/a.css", &[]).await.0, 200);
    assert_eq!(get(&proxy, "/short/a.css", &[]).await.0, 200);

    // Every replica down: the cached object is still served, fresh at first,
    // then (past its 1 s bucket TTL, within stale_seconds) as STALE.
    s3.stop().await;
    let (status, cache, body) = get(&proxy, "/assets/a.css", &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"body { color: black }".as_slice()));
    assert!(cache.starts_with("HIT"), "{cache}");
    let went_stale = eventually(Duration::from_secs(10), || async {
        let (status, cache, body) = get(&proxy, "/short/a.css", &[]).await;
        assert_eq!(
            (status, body.as_slice()),
            (200, b"body { color: black }".as_slice()),
            "{cache}"
        );
        cache == "STALE"
    })
    .await;
    assert!(went_stale, "the copy never turned STALE during the outage");
    // Stale-if-error from Redis: an instance started during the outage has
    // nothing in memory, and serves the shared copy as STALE.
    let fresh = Proxy::start_with_env(&config, &[("REDIS_URL", &url)]);
    let (status, cache, body) = get(&fresh, "/short/a.css", &[]).await;
    assert_eq!(
        (status, cache.as_str(), body.as_slice()),
        (200, "STALE", b"body { color: black }".as_slice())
    );
    drop(fresh);
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
        let cache = get(&other, "/assets/c.css", &[]).await.1;
        cache == "HIT-REDIS" || cache == "HIT-MEMORY"
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

#[tokio::test]
async fn a_byte_changed_in_redis_is_never_served() {
    let redis = Redis::start();
    let s3 = s3().await;
    let original = pattern(20_000, 9);
    s3.put_object("assets-bkt", "app.js", &original).unwrap();
    let config = cached_config(&s3.endpoint(), "");
    let a = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    assert_eq!(get(&a, "/assets/app.js", &[]).await.2, original);
    let port = redis.port;
    let key = eventually_key(port).await;
    // One byte of the stored body changed with SETRANGE.
    let len: usize = crate::common::cli(port, &["STRLEN", &key]).trim().parse().unwrap();
    assert!(len > 20_000);
    let out = crate::common::cli(port, &["SETRANGE", &key, &(len - 5_000).to_string(), "#"]);
    assert_eq!(out.trim(), len.to_string());

    // A fresh instance reads the bad value from Redis: never served.
    let b = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    let (status, cache, body) = get(&b, "/assets/app.js", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert!(body == original, "a corrupted value was served");
    assert_eq!(s3.requests(), 2);
    // Counted in the metrics.
    let metrics = get_text(b.metrics_url("/metrics")).await;
    let corrupt = metrics
        .lines()
        .find(|l| l.starts_with("yatagarasu_cache_redis_corrupt_total"))
        .unwrap_or_default()
        .to_owned();
    assert!(corrupt.ends_with(" 1"), "{corrupt}");
}

/// The one cache key in the Redis at `port`, once written.
async fn eventually_key(port: u16) -> String {
    let mut key = String::new();
    let found = eventually(Duration::from_secs(10), || {
        let out = crate::common::cli(port, &["--scan", "--pattern", "yatagarasu:cache:*"]);
        key = out.lines().next().unwrap_or_default().to_owned();
        let found = !key.is_empty();
        async move { found }
    })
    .await;
    assert!(found, "nothing was written to redis");
    key
}

#[test]
fn redis_modes_are_checked_by_name() {
    let base = |redis: &str| {
        format!(
            "server: {{ address: \"127.0.0.1:0\" }}\nbuckets:\n  - name: a\n    path_prefix: /a\n    s3: {{ bucket: b, endpoint: \"http://127.0.0.1:1\", access_key: k, secret_key: s }}\ncache:\n  redis:\n    enabled: true\n{redis}\n"
        )
    };
    for (redis, key) in [
        (
            "    url: \"redis://a:1\"\n    urls: [\"redis://b:1\"]",
            "cache.redis.urls",
        ),
        (
            "    mode: sentinel\n    urls: [\"redis://s:26379\"]",
            "cache.redis.sentinel_master",
        ),
        ("    mode: ring\n    urls: [\"redis://a:1\"]", "cache.redis.mode"),
        (
            "    mode: cluster\n    urls: [\"http://user:hunter2@a:1\"]",
            "cache.redis.urls",
        ),
    ] {
        let out = check(&base(redis), &[]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{redis}: {text}");
        assert!(text.contains(key), "{redis}: expected {key} in {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    let ok = base("    mode: cluster\n    urls: [\"redis://:hunter2@a:1\", \"redis://b:1\"]");
    let out = check(&ok, &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// Writes an object through the S3 API (presigned PUT), so its ETag is stored
/// once rather than recomputed over the whole file on every read.
async fn put_via_api(endpoint: &str, bucket: &str, key: &str, body: Vec<u8>) {
    use rusty_s3::S3Action;
    let s3_bucket = rusty_s3::Bucket::new(
        endpoint.parse().unwrap(),
        rusty_s3::UrlStyle::Path,
        bucket.to_owned(),
        "us-east-1".to_owned(),
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(ACCESS_KEY, SECRET_KEY);
    let url = s3_bucket.put_object(Some(&creds), key).sign(Duration::from_secs(600));
    let res = client().put(url).body(body).send().await.unwrap();
    assert!(res.status().is_success(), "PUT {key}: {}", res.status());
}

#[tokio::test]
async fn large_objects_are_served_from_slices_through_the_binary() {
    const MIB: u64 = 1024 * 1024;
    const LEN: u64 = 24 * MIB;
    let redis = Redis::start();
    let s3 = s3().await;
    s3.create_bucket("assets-bkt").unwrap();
    let object = pattern(LEN as usize, 21);
    put_via_api(&s3.endpoint(), "assets-bkt", "film.mp4", object.clone()).await;
    let config = cached_config(&s3.endpoint(), "")
        .replace("  stale_seconds: 600", "  stale_seconds: 600\n  slice_size: 1048576");
    assert!(config.contains("slice_size"));
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    let base = s3.requests();

    let mut touched = std::collections::BTreeSet::new();
    let mut x: u64 = 0x2545f4914f6cdd1d;
    for _ in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let first = x % LEN;
        let last = (first + (x >> 40) % (3 * MIB)).min(LEN - 1);
        let range = format!("bytes={first}-{last}");
        let (status, cache, body) = get(&proxy, "/assets/film.mp4", &[("range", &range)]).await;
        assert_eq!((status, cache.as_str()), (206, "SLICE"), "{range}");
        assert!(body == object[first as usize..=last as usize], "{range}");
        touched.extend(first / MIB..=last / MIB);
        assert_eq!(s3.requests() - base, touched.len() as u64, "after {range}");
    }
    let (status, cache, body) = get(&proxy, "/assets/film.mp4", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "SLICE"));
    assert!(body == object);
    assert_eq!(s3.requests() - base, LEN / MIB);
}

/// The value of the counter `name` (no labels) on `proxy`'s metrics port.
async fn counter(proxy: &Proxy, name: &str) -> u64 {
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from the metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn redis_max_capacity_refuses_writes_at_its_boundary() {
    let redis = Redis::start();
    let info = crate::common::cli(redis.port, &["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .expect("used_memory in INFO")
        .trim()
        .parse()
        .unwrap();
    // Room for one 1.5 MB object (plus the proxy's connections and Redis'
    // own overhead, well under 0.5 MB), not for a second one of 1 MB.
    let capacity = used + 2_000_000;
    let s3 = s3().await;
    s3.put_object("assets-bkt", "fits.bin", &pattern(1_500_000, 3)).unwrap();
    s3.put_object("assets-bkt", "over.bin", &pattern(1_000_000, 4)).unwrap();
    let config = cached_config(&s3.endpoint(), "")
        .replace(
            "memory: { max_capacity: 16777216, ttl_seconds: 60 }",
            "memory: { max_capacity: 0 }",
        )
        .replace("pool_size: 4 }", &format!("pool_size: 4, max_capacity: {capacity} }}"));
    assert!(config.contains(&format!("max_capacity: {capacity}")), "{config}");
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Proxy::start_with_env(&config, &env);

    assert_eq!(get(&a, "/assets/fits.bin", &[]).await.2, pattern(1_500_000, 3));
    let written = eventually(Duration::from_secs(10), || async {
        counter(&a, "yatagarasu_cache_redis_writes_total").await == 1
    })
    .await;
    assert!(written, "the object under the limit was not written to Redis");
    assert_eq!(counter(&a, "yatagarasu_cache_redis_writes_refused_total").await, 0);

    // Past the limit: served in full, refused by the tier, counted.
    assert_eq!(get(&a, "/assets/over.bin", &[]).await.2, pattern(1_000_000, 4));
    let refused = eventually(Duration::from_secs(10), || async {
        counter(&a, "yatagarasu_cache_redis_writes_refused_total").await == 1
    })
    .await;
    assert!(refused, "the write past redis.max_capacity was not refused");
    assert_eq!(counter(&a, "yatagarasu_cache_redis_writes_total").await, 1);
    let keys = crate::common::cli(redis.port, &["--scan", "--pattern", "yatagarasu:cache:*"]);
    assert_eq!(keys.lines().filter(|k| k.contains("fits.bin")).count(), 1, "{keys}");
    assert!(!keys.contains("over.bin"), "{keys}");

    // A second instance: the stored object is a Redis hit, the refused one a miss.
    let b = Proxy::start_with_env(&config, &env);
    let (status, cache, body) = get(&b, "/assets/fits.bin", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "HIT-REDIS"));
    assert_eq!(body, pattern(1_500_000, 3));
    let (status, cache, body) = get(&b, "/assets/over.bin", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert_eq!(body, pattern(1_000_000, 4));
}

/// `curl` fetching `url` (with a `Range` when given): status line's code,
/// `X-Cache` and body.
async fn curl(url: String, range: Option<&str>) -> (String, String, Vec<u8>) {
    curl_with(url, range, &[]).await
}

/// [`curl`] with more arguments.
async fn curl_with(url: String, range: Option<&str>, args: &[&str]) -> (String, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("h"), dir.path().join("b"));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(args)
        .arg(&url);
    if let Some(range) = range {
        cmd.args(["-r", range]);
    }
    assert!(cmd.status().await.expect("curl").success());
    let head = std::fs::read_to_string(&headers).unwrap();
    let status = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let x_cache = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("x-cache"))
        })
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    (status, x_cache, std::fs::read(&body).unwrap())
}

/// Reads one HTTP/1.1 response with a `Content-Length` from `stream`,
/// slowly: 4 KiB at a time, pausing every 256 KiB, and calling `midway`
/// once half of the body is in.
async fn read_response_slowly(stream: &mut tokio::net::TcpStream, mut midway: impl AsyncFnMut()) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, len) = loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(got[..end].to_vec()).unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            got.drain(..end + 4);
            break (head, len);
        }
    };
    let mut called = false;
    while got.len() < len {
        let want = (len - got.len()).min(buf.len());
        let n = stream.read(&mut buf[..want]).await.unwrap();
        assert!(n > 0, "closed after {} of {len} body bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if !called && got.len() >= len / 2 {
            called = true;
            midway().await;
        }
        if got.len() % (256 * 1024) < 4096 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    (head, got)
}

#[tokio::test]
async fn large_hits_are_sent_from_sealed_memfds_byte_for_byte() {
    const LEN: usize = 3 * 1024 * 1024;
    let s3 = s3().await;
    s3.create_bucket("assets-bkt").unwrap();
    let object = pattern(LEN, 33);
    put_via_api(&s3.endpoint(), "assets-bkt", "big.bin", object.clone()).await;
    s3.put_object("assets-bkt", "small.txt", b"not in a file").unwrap();
    let config = format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
buckets:
  - name: assets
    path_prefix: /assets
    s3: {{ bucket: assets-bkt, endpoint: "{}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 33554432, ttl_seconds: 60 }}
metrics: {{ enabled: true, port: 0, address: "127.0.0.1", admin_token: "t0ken-for-purge" }}
"#,
        s3.endpoint()
    );
    let proxy = Proxy::start(&config);
    let url = proxy.url("/assets/big.bin");

    // curl: the miss fills the memory tier, then whole and ranged hits.
    let (status, x_cache, body) = curl(url.clone(), None).await;
    assert_eq!((status.as_str(), x_cache.as_str()), ("200", "MISS"));
    assert!(body == object, "the miss differs");
    eventually(Duration::from_secs(5), || async { memfds(proxy.pid()) == 1 }).await;
    let metrics = get_text(&proxy.metrics_url("/metrics")).await;
    assert!(metrics.contains("\nyatagarasu_cache_memory_files 1\n"), "{metrics}");
    let (status, x_cache, body) = curl(url.clone(), None).await;
    assert_eq!((status.as_str(), x_cache.as_str()), ("200", "HIT-MEMORY"));
    assert!(body == object, "the hit differs");
    let (status, _, body) = curl(url.clone(), Some("1000-2500000")).await;
    assert_eq!(status, "206");
    assert!(body == object[1000..=2_500_000], "the range differs");
    let (status, _, body) = curl(url.clone(), Some("-70000")).await;
    assert_eq!(status, "206");
    assert!(body == object[LEN - 70_000..], "the suffix range differs");
    // HTTP/2 (h2c): DATA frames of the same bytes.
    let (status, x_cache, body) = curl_with(url.clone(), None, &["--http2-prior-knowledge"]).await;
    assert_eq!((status.as_str(), x_cache.as_str()), ("200", "HIT-MEMORY"));
    assert!(body == object, "the HTTP/2 hit differs");
    let (status, _, body) = curl_with(url.clone(), Some("5-1500000"), &["--http2-prior-knowledge"]).await;
    assert_eq!(status, "206");
    assert!(body == object[5..=1_500_000], "the HTTP/2 range differs");
    // Small objects stay on the heap.
    let (_, _, body) = curl(proxy.url("/assets/small.txt"), None).await;
    assert_eq!(body, b"not in a file");
    curl(proxy.url("/assets/small.txt"), None).await;
    assert_eq!(memfds(proxy.pid()), 1);

    // A slow client on one keep-alive connection, two hits; the object is
    // purged while the first is half sent: both arrive whole (the answer
    // in flight keeps its file), and the file goes once nothing uses it.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET /assets/big.bin HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr());
    let purge = proxy.metrics_url("/admin/cache/assets/big.bin");
    for round in 0..2 {
        use tokio::io::AsyncWriteExt;
        stream.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response_slowly(&mut stream, async || {
            if round == 0 {
                let res = client()
                    .delete(&purge)
                    .bearer_auth("t0ken-for-purge")
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "purge: {}", res.status());
            }
        })
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(body == object, "round {round}: the body differs");
    }
    // The second round was a miss that filled a new file; the purged one is closed.
    eventually(Duration::from_secs(5), || async { memfds(proxy.pid()) == 1 }).await;

    // Off with `sendfile_min_size: 0`: the same answers from the heap.
    let off = Proxy::start(&config.replace("ttl_seconds: 60 }", "ttl_seconds: 60, sendfile_min_size: 0 }"));
    let url = off.url("/assets/big.bin");
    curl(url.clone(), None).await;
    let (_, x_cache, body) = curl(url, None).await;
    assert_eq!(x_cache, "HIT-MEMORY");
    assert!(body == object);
    assert_eq!(memfds(off.pid()), 0);
    let metrics = get_text(&off.metrics_url("/metrics")).await;
    assert!(metrics.contains("\nyatagarasu_cache_memory_files 0\n"), "{metrics}");
}

/// Concurrent misses of an object the memory tier does not keep (here the
/// tier is off) make one upstream request: the others wait for the fill and
/// are answered from Redis. They were woken as the body ended, before the
/// Redis write (in the background) had landed, found nothing and each
/// fetched the object again. Writes are held back by `CLIENT PAUSE ... WRITE`
/// (reads still answered) so that the write lands well after the body ends.
#[tokio::test]
async fn concurrent_misses_of_a_redis_only_object_make_one_upstream_request() {
    let redis = Redis::start();
    let s3 = s3().await;
    let body = pattern(2_000_000, 7);
    s3.put_object("assets-bkt", "big.bin", &body).unwrap();
    let config = cached_config(&s3.endpoint(), "")
        .replace(
            "memory: { max_capacity: 16777216, ttl_seconds: 60 }",
            "memory: { max_capacity: 0 }",
        )
        .replace("pool_size: 4 }", "pool_size: 4, timeout_ms: 10000 }");
    assert!(config.contains("timeout_ms: 10000"), "{config}");
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    // The pool's first connection, before the pause.
    assert_eq!(get(&proxy, "/assets/absent.bin", &[]).await.0, 404);
    let before = s3.requests();

    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]).trim(), "OK");
    let gets = (0..12).map(|_| get(&proxy, "/assets/big.bin", &[]));
    let answers = futures_util::future::join_all(gets).await;
    for (status, cache, got) in &answers {
        assert_eq!(*status, 200, "{cache}");
        assert!(*got == body, "a wrong body ({cache})");
    }
    let caches: Vec<&str> = answers.iter().map(|(_, c, _)| c.as_str()).collect();
    assert_eq!(
        s3.requests() - before,
        1,
        "concurrent misses went upstream more than once: {caches:?}"
    );
    assert_eq!(caches.iter().filter(|c| **c == "MISS").count(), 1, "{caches:?}");
    assert_eq!(caches.iter().filter(|c| **c == "HIT-REDIS").count(), 11, "{caches:?}");
}

/// In standalone mode an operation gets all of `redis.timeout_ms`: a write
/// Redis holds back for longer than the redis crate's own default answer
/// timeout (500 ms), but less than `timeout_ms`, lands. It failed at 500 ms
/// as an error (not even counted as a timeout), and the object never reached
/// the shared tier.
#[tokio::test]
async fn redis_operations_get_all_of_timeout_ms() {
    let redis = Redis::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "slow.css", b"p { margin: 1px }").unwrap();
    let config = cached_config(&s3.endpoint(), "").replace("pool_size: 4 }", "pool_size: 4, timeout_ms: 10000 }");
    assert!(config.contains("timeout_ms: 10000"), "{config}");
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Proxy::start_with_env(&config, &env);
    // The pool's first connection, before the pause.
    assert_eq!(get(&a, "/assets/absent.css", &[]).await.0, 404);

    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]).trim(), "OK");
    let (status, cache, body) = get(&a, "/assets/slow.css", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert_eq!(body, b"p { margin: 1px }");
    let written = eventually(Duration::from_secs(10), || async {
        counter(&a, "yatagarasu_cache_redis_writes_total").await == 1
    })
    .await;
    assert!(written, "the write held back by the pause never landed");
    assert_eq!(counter(&a, "yatagarasu_cache_redis_errors_total").await, 0);

    let b = Proxy::start_with_env(&config, &env);
    let (status, cache, body) = get(&b, "/assets/slow.css", &[]).await;
    assert_eq!((status, cache.as_str()), (200, "HIT-REDIS"));
    assert_eq!(body, b"p { margin: 1px }");
}

/// The `304` and `412` the proxy makes from a replica's `200` (for
/// S3-compatible servers that ignore preconditions, as serve-s3 does) say
/// `X-Cache` like every other object answer. They carried none, so the
/// access log's `cache` field was empty for them, while the same answers
/// from a cached copy said `HIT-*`.
#[tokio::test]
async fn conditional_answers_made_on_a_miss_say_x_cache() {
    let redis = Redis::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "c.css", b"a { color: red }").unwrap();
    s3.put_object("assets-bkt", "d.css", b"a { color: blue }").unwrap();
    let config = cached_config(&s3.endpoint(), "");
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);

    // Two objects: each answer fills its object's copy in the background
    // (`cache_revalidation`), so the second on one object could be a hit.
    let (status, cache, body) = get(&proxy, "/assets/c.css", &[("if-none-match", "*")]).await;
    assert_eq!((status, cache.as_str(), body.len()), (304, "MISS", 0));
    let (status, cache, _) = get(&proxy, "/assets/d.css", &[("if-match", "\"other\"")]).await;
    assert_eq!((status, cache.as_str()), (412, "MISS"));

    // The same from the cached copy.
    assert_eq!(get(&proxy, "/assets/c.css", &[]).await.0, 200);
    let (status, cache, _) = get(&proxy, "/assets/c.css", &[("if-none-match", "*")]).await;
    assert_eq!((status, cache.as_str()), (304, "HIT-MEMORY"));
    let (status, cache, _) = get(&proxy, "/assets/c.css", &[("if-match", "\"other\"")]).await;
    assert_eq!((status, cache.as_str()), (412, "HIT-MEMORY"));
}

/// Concurrent first ranges of an object sliced in Redis only (memory tier
/// off) wait for the one request that probes it, and are answered from its
/// slices. They were woken before the index's Redis write had landed, found
/// no index and each went to the replicas as an ordinary miss.
#[tokio::test]
async fn concurrent_first_ranges_of_an_object_sliced_in_redis_wait_for_its_index() {
    let redis = Redis::start();
    let s3 = s3().await;
    let body = pattern(2_500_000, 9);
    s3.put_object("assets-bkt", "video.bin", &body).unwrap();
    let config = cached_config(&s3.endpoint(), "")
        .replace(
            "memory: { max_capacity: 16777216, ttl_seconds: 60 }",
            "memory: { max_capacity: 0 }",
        )
        .replace(
            "pool_size: 4 }",
            "pool_size: 4, timeout_ms: 10000, max_item_size: 1048576 }\n  slice_size: 1048576",
        );
    assert!(config.contains("slice_size: 1048576"), "{config}");
    let proxy = Proxy::start_with_env(&config, &[("REDIS_URL", &redis.url())]);
    // The pool's first connection, before the pause.
    assert_eq!(get(&proxy, "/assets/absent.bin", &[]).await.0, 404);
    let before = s3.requests();

    // Writes land only after every request has started.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]).trim(), "OK");
    let gets = (0..8).map(|_| get(&proxy, "/assets/video.bin", &[("range", "bytes=100-1999999")]));
    let answers = futures_util::future::join_all(gets).await;
    for (status, cache, got) in &answers {
        assert_eq!(*status, 206, "{cache}");
        assert!(got.as_slice() == &body[100..2_000_000], "a wrong body ({cache})");
    }
    let caches: Vec<&str> = answers.iter().map(|(_, c, _)| c.as_str()).collect();
    assert!(caches.iter().all(|c| *c == "SLICE"), "{caches:?}");
    // Two slices, and perhaps the first again (its write and the index's
    // race once the pause ends); one request each without the wait.
    let upstream = s3.requests() - before;
    assert!(upstream <= 3, "{upstream} upstream requests: {caches:?}");
}

/// A bucket purge while a fill's Redis write is on its way leaves nothing
/// behind: the write landed after the purge had scanned Redis, and the
/// purged object came back (served as `HIT-REDIS` by every instance).
/// Writes are held back by `CLIENT PAUSE ... WRITE`; the purge's `SCAN`
/// still answers.
#[tokio::test]
async fn a_purge_during_a_fills_redis_write_leaves_nothing_behind() {
    let redis = Redis::start();
    let s3 = s3().await;
    s3.put_object("assets-bkt", "p.css", b"p { color: old }").unwrap();
    let config = cached_config(&s3.endpoint(), "")
        .replace("pool_size: 4 }", "pool_size: 4, timeout_ms: 10000 }")
        .replace(
            r#"metrics: { enabled: true, port: 0, address: "127.0.0.1" }"#,
            r#"metrics: { enabled: true, port: 0, address: "127.0.0.1", admin_token: "purge-token" }"#,
        );
    assert!(config.contains("purge-token"), "{config}");
    let env = [("REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Proxy::start_with_env(&config, &env);
    // The pool's first connection, before the pause.
    assert_eq!(get(&a, "/assets/absent.css", &[]).await.0, 404);

    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "2000", "WRITE"]).trim(), "OK");
    let (status, cache, body) = get(&a, "/assets/p.css", &[]).await;
    assert_eq!(
        (status, cache.as_str(), body.as_slice()),
        (200, "MISS", b"p { color: old }".as_slice())
    );
    // The object changes upstream and is purged while its write waits.
    s3.put_object("assets-bkt", "p.css", b"p { color: new }").unwrap();
    let purged = client()
        .delete(a.metrics_url("/admin/cache/assets"))
        .bearer_auth("purge-token")
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status().as_u16(), 200);
    let landed = eventually(Duration::from_secs(10), || async {
        counter(&a, "yatagarasu_cache_redis_writes_total").await == 1
    })
    .await;
    assert!(landed, "the held-back write never landed");

    for proxy in [&a, &Proxy::start_with_env(&config, &env)] {
        let (status, cache, body) = get(proxy, "/assets/p.css", &[]).await;
        assert_eq!(
            (status, body.as_slice()),
            (200, b"p { color: new }".as_slice()),
            "the purged copy was served ({cache})"
        );
    }
}
