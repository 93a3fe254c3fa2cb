//! Per-bucket CORS (`buckets[].cors`) through the real binary: preflights
//! answered before auth, the headers on hits, misses and refusals alike,
//! none for other origins or for buckets without the block, a reload that
//! changes the block, and the same headers on the edge's own answers (429,
//! 503, 414, 431) with preflights neither rate-limited nor shed.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;

use crate::common::*;

const SECRET: &str = "cors-test-secret-0123456789abcdef";
const APP: &str = "https://app.example.com";

fn token() -> String {
    hs256_token(SECRET, serde_json::json!({ "sub": "web" }))
}

/// `/private`: JWT and CORS for [`APP`]; `/down`: CORS over a replica that
/// refuses connections; `/plain`: no `cors` block. A memory cache.
fn config(endpoint: &str, origins: &str) -> String {
    let s3 = format!(
        r#"endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 1, retry: {{ max_attempts: 1 }}"#
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    format!(
        r#"
server: {{ address: "127.0.0.1:0", shutdown_grace_seconds: 2 }}
jwt: {{ algorithm: HS256, secret: "{SECRET}" }}
buckets:
  - name: private
    path_prefix: /private
    s3: {{ bucket: web-bkt, {s3} }}
    auth: {{ enabled: true }}
    cors: {{ allowed_origins: {origins} }}
  - name: down
    path_prefix: /down
    s3: {{ bucket: web-bkt, endpoint: "{dead}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 1, retry: {{ max_attempts: 1 }} }}
    cors: {{ allowed_origins: ["*"] }}
  - name: plain
    path_prefix: /plain
    s3: {{ bucket: web-bkt, {s3} }}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 16777216, ttl_seconds: 60 }}
metrics: {{ enabled: false }}
"#
    )
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_ascii_lowercase())
}

/// The comma-separated entries of a header, lower case.
fn entries(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(',').map(|s| s.trim().to_ascii_lowercase()))
        .collect()
}

async fn start() -> (S3, Proxy) {
    let s3 = s3().await;
    s3.put_object("web-bkt", "app.json", b"{\"hello\":\"browser\"}")
        .unwrap();
    // Large enough for a memfd: its hits are sent with sendfile(2).
    s3.put_object("web-bkt", "big.bin", &pattern(200_000, 3)).unwrap();
    let proxy = Proxy::start(&config(&s3.endpoint(), &format!("[\"{APP}\"]")));
    (s3, proxy)
}

#[tokio::test]
async fn cors_preflight_on_a_jwt_bucket_is_answered_without_credentials() {
    let (_s3, proxy) = start().await;
    let res = client()
        .request(Method::OPTIONS, proxy.url("/private/app.json"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization, range")
        .send()
        .await
        .unwrap();
    assert!(matches!(res.status().as_u16(), 200 | 204), "{}", res.status());
    let h = res.headers();
    assert_eq!(header(h, "access-control-allow-origin").as_deref(), Some(APP));
    let methods = entries(h, "access-control-allow-methods");
    assert!(
        methods.contains(&"get".into()) && methods.contains(&"head".into()),
        "{methods:?}"
    );
    assert!(!methods.contains(&"put".into()), "{methods:?}");
    let allowed = entries(h, "access-control-allow-headers");
    for needed in ["authorization", "range", "if-none-match"] {
        assert!(allowed.contains(&needed.to_owned()), "{needed} not in {allowed:?}");
    }
    assert_eq!(header(h, "access-control-max-age").as_deref(), Some("600"));
    assert!(entries(h, "vary").contains(&"origin".into()), "{h:?}");
    assert!(h.get("access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn cors_headers_on_reads_cache_hits_and_refusals() {
    let (_s3, proxy) = start().await;
    let c = client();
    let jwt = token();
    let url = proxy.url("/private/app.json");
    let allowed = |h: &HeaderMap, what: &str| {
        assert_eq!(
            header(h, "access-control-allow-origin").as_deref(),
            Some(APP),
            "{what}: {h:?}"
        );
        assert!(entries(h, "vary").contains(&"origin".into()), "{what}: {h:?}");
        let exposed = entries(h, "access-control-expose-headers");
        for name in ["etag", "content-range", "x-cache", "x-request-id"] {
            assert!(exposed.contains(&name.to_owned()), "{what}: {name} not in {exposed:?}");
        }
    };

    // A small hit, and one whose body is sent with sendfile(2): both keep
    // the headers.
    let small = b"{\"hello\":\"browser\"}".to_vec();
    for (path, body) in [
        (url.clone(), small),
        (proxy.url("/private/big.bin"), pattern(200_000, 3)),
    ] {
        for expected in ["MISS", "HIT-MEMORY"] {
            let res = c
                .get(&path)
                .header("origin", APP)
                .bearer_auth(&jwt)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(
                header(res.headers(), "x-cache").as_deref(),
                Some(&*expected.to_ascii_lowercase())
            );
            allowed(res.headers(), expected);
            assert_eq!(res.bytes().await.unwrap().as_ref(), body.as_slice(), "{path}");
        }
    }
    // A range read: the app can read Content-Range.
    let res = c
        .get(&url)
        .header("origin", APP)
        .header("range", "bytes=0-3")
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    allowed(res.headers(), "range");

    let res = c
        .get(proxy.url("/private/missing.json"))
        .header("origin", APP)
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    allowed(res.headers(), "404");
    assert!(res.text().await.unwrap().contains("NoSuchKey"));

    let res = c.get(&url).header("origin", APP).send().await.unwrap();
    assert_eq!(res.status(), 401);
    allowed(res.headers(), "401");

    // A bucket whose replica is down: the 5xx is readable too.
    let res = c
        .get(proxy.url("/down/app.json"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    assert_eq!(
        header(res.headers(), "access-control-allow-origin").as_deref(),
        Some("*")
    );

    // Another origin: served (the browser enforces), but not allowed to read.
    let res = c
        .get(&url)
        .header("origin", "https://evil.example")
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{res:?}");
    let res = c
        .request(Method::OPTIONS, &url)
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{res:?}");
}

#[tokio::test]
async fn cors_absent_block_answers_as_before() {
    let (_s3, proxy) = start().await;
    let c = client();
    let res = c
        .get(proxy.url("/plain/app.json"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for name in ["access-control-allow-origin", "access-control-expose-headers"] {
        assert!(res.headers().get(name).is_none(), "{name}: {res:?}");
    }
    let res = c
        .request(Method::OPTIONS, proxy.url("/plain/app.json"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!res.status().is_success(), "{}", res.status());
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{res:?}");
}

#[tokio::test]
async fn cors_block_changed_on_reload_applies() {
    let (s3, proxy) = start().await;
    let c = client();
    let preflight = |origin: &'static str| {
        c.request(Method::OPTIONS, proxy.url("/private/app.json"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let other = "https://other.example";
    let res = preflight(other).await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    proxy.rewrite_config(&config(&s3.endpoint(), &format!("[\"{other}\"]")));
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("config reloaded", Duration::from_secs(10)).await,
        "{}",
        proxy.settled_logs().await
    );
    let res = preflight(other).await.unwrap();
    assert_eq!(
        header(res.headers(), "access-control-allow-origin").as_deref(),
        Some(other)
    );
    let res = preflight(APP).await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// `/web`: CORS for [`APP`], no auth; `/plain`: no `cors` block. `server`
/// is YAML under `server:` (the edge's limits).
fn edge_config(endpoint: &str, server: &str) -> String {
    let s3 = format!(
        r#"bucket: web-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 5"#
    );
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 2
{server}
buckets:
  - name: web
    path_prefix: /web
    s3: {{ {s3} }}
    cors: {{ allowed_origins: ["{APP}"] }}
  - name: plain
    path_prefix: /plain
    s3: {{ {s3} }}
health_check: {{ enabled: false }}
metrics: {{ enabled: false }}
"#
    )
}

/// A CORS answer the app on [`APP`] can read, with `Retry-After` among the
/// headers it may read.
fn readable_refusal(res: &reqwest::Response, what: &str) {
    let h = res.headers();
    assert_eq!(
        header(h, "access-control-allow-origin").as_deref(),
        Some(APP),
        "{what}: {h:?}"
    );
    assert!(entries(h, "vary").contains(&"origin".into()), "{what}: {h:?}");
    let exposed = entries(h, "access-control-expose-headers");
    for name in ["retry-after", "x-request-id", "etag"] {
        assert!(exposed.contains(&name.to_owned()), "{what}: {name} not in {exposed:?}");
    }
}

fn no_cors_headers(res: &reqwest::Response, what: &str) {
    for (name, _) in res.headers() {
        assert!(
            !name.as_str().starts_with("access-control-"),
            "{what}: {name} on {res:?}"
        );
    }
}

/// The first 429 of up to 20 sends of `req` (the limit refills at 1/s).
async fn limited(req: impl Fn() -> reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..20 {
        let res = req().send().await.unwrap();
        if res.status() == 429 {
            return res;
        }
    }
    panic!("20 requests at 1/s with a burst of 1 were never limited");
}

#[tokio::test]
async fn cors_rate_limited_answers_carry_the_buckets_headers() {
    let s3 = s3().await;
    s3.put_object("web-bkt", "app.json", b"{}").unwrap();
    let server = "  rate_limit: { enabled: true, requests_per_second: 1, burst: 1 }";
    let proxy = Proxy::start(&edge_config(&s3.endpoint(), server));
    let c = client();
    let get = |path: &str, origin: &'static str| {
        let url = proxy.url(path);
        let c = c.clone();
        move || c.get(&url).header("origin", origin)
    };

    // The app on an allowed origin reads the 429 and when to retry.
    let res = limited(get("/web/app.json", APP)).await;
    readable_refusal(&res, "429");
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{res:?}");
    assert!(res.text().await.unwrap().contains("<Code>SlowDown</Code>"));

    // A preflight is answered from the bucket's config, never limited: the
    // limit is spent now, and a refused preflight is an opaque network
    // error to the app whatever its headers.
    for _ in 0..5 {
        let res = c
            .request(Method::OPTIONS, proxy.url("/web/app.json"))
            .header("origin", APP)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "range")
            .send()
            .await
            .unwrap();
        assert!(matches!(res.status().as_u16(), 200 | 204), "preflight: {res:?}");
        assert_eq!(
            header(res.headers(), "access-control-allow-origin").as_deref(),
            Some(APP)
        );
    }

    // Another origin: the 429, but not for it to read.
    let res = limited(get("/web/app.json", "https://evil.example")).await;
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{res:?}");
    // A bucket without the block, and a path of no bucket: no CORS headers.
    let res = limited(get("/plain/app.json", APP)).await;
    no_cors_headers(&res, "plain 429");
    let res = limited(get("/nowhere/app.json", APP)).await;
    no_cors_headers(&res, "no bucket 429");
}

#[tokio::test]
async fn cors_headers_on_the_edges_503_414_and_431() {
    let s3 = s3().await;
    let big = pattern(32 * 1024 * 1024, 5);
    s3.put_object("web-bkt", "big.bin", &big).unwrap();
    s3.put_object("web-bkt", "app.json", b"{}").unwrap();
    let server = "  max_concurrent_requests: 1\n  max_uri_length: 300\n  max_header_bytes: 2048";
    let proxy = Proxy::start(&edge_config(&s3.endpoint(), server));
    let c = client();
    // A browser's GET from the app's origin.
    let from_app = |path: &str| c.get(proxy.url(path)).header("origin", APP);

    let res = from_app(&format!("/web/{}", "k".repeat(400))).send().await.unwrap();
    assert_eq!(res.status(), 414);
    readable_refusal(&res, "414");
    let res = from_app("/web/app.json")
        .header("x-padding", "p".repeat(4000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);
    readable_refusal(&res, "431");
    let res = from_app(&format!("/plain/{}", "k".repeat(400))).send().await.unwrap();
    assert_eq!(res.status(), 414);
    no_cors_headers(&res, "plain 414");

    // The download holds the only slot until its body ends.
    let mut download = c.get(proxy.url("/web/big.bin")).send().await.unwrap();
    assert_eq!(download.status(), 200);
    let mut body = download.chunk().await.unwrap().unwrap().to_vec();
    let res = from_app("/web/app.json").send().await.unwrap();
    assert_eq!(res.status(), 503);
    readable_refusal(&res, "503");
    assert_eq!(res.headers()["retry-after"], "1");
    let res = from_app("/plain/app.json").send().await.unwrap();
    assert_eq!(res.status(), 503);
    no_cors_headers(&res, "plain 503");
    // A preflight is answered from config, not shed.
    let res = c
        .request(Method::OPTIONS, proxy.url("/web/app.json"))
        .header("origin", APP)
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(matches!(res.status().as_u16(), 200 | 204), "preflight: {res:?}");

    while let Some(chunk) = download.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&big));
}

#[test]
fn cors_config_refusals_name_the_key() {
    let config = r#"
buckets:
  - name: a
    path_prefix: /a
    s3: { bucket: b, endpoint: "http://127.0.0.1:9", anonymous: true }
    cors: { allowed_origins: ["*"], allow_credentials: true, allowed_methods: [GET, PUT] }
  - name: b
    path_prefix: /b
    s3: { bucket: b, endpoint: "http://127.0.0.1:9", anonymous: true }
    cors: { allowed_origins: ["https://ok.example", "app.example.com", "https://x.example/"] }
metrics: { enabled: false }
"#;
    let out = check(config, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "buckets[0].cors.allow_credentials",
        "buckets[0].cors.allowed_methods[1]",
        "buckets[1].cors.allowed_origins[1]",
        "buckets[1].cors.allowed_origins[2]",
    ] {
        assert!(err.contains(key), "no error for {key}: {err}");
    }
    assert!(!err.contains("allowed_origins[0]"), "{err}");
    assert!(err.contains("'PUT'"), "{err}");
}
