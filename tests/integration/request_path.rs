//! The streaming request path: bodies, headers, ranges, preconditions, errors,
//! odd keys and traversal, through the real binary against a real S3 server.

use std::time::Duration;

use crate::common::*;

async fn setup() -> (S3, Proxy) {
    let s3 = s3().await;
    s3.put_object("bucket-a", "small.txt", b"hello, yatagarasu\n").unwrap();
    s3.put_object("bucket-a", "large.bin", &pattern(9 * 1024 * 1024 + 17, 1))
        .unwrap();
    s3.put_object("bucket-b", "secret.txt", b"top secret of bucket b")
        .unwrap();
    let proxy = Proxy::start(&two_buckets(&s3.endpoint()));
    (s3, proxy)
}

fn two_buckets(endpoint: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
buckets:
  - name: a
    path_prefix: /data
    s3: {{ bucket: bucket-a, endpoint: "{endpoint}", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY}, timeout_seconds: 2 }}
  - name: b
    path_prefix: /private
    s3: {{ bucket: bucket-b, endpoint: "{endpoint}", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY} }}
  - name: a2
    path_prefix: /data2
    s3: {{ bucket: bucket-b, endpoint: "{endpoint}", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY} }}
health_check: {{ interval_seconds: 1, timeout_seconds: 1 }}
metrics: {{ enabled: false }}
"#
    )
}

#[tokio::test]
async fn bodies_are_byte_exact_and_headers_forwarded() {
    let (s3, proxy) = setup().await;
    let c = client();
    let res = c.get(proxy.url("/data/small.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "18");
    assert!(res.headers().contains_key("etag"));
    assert!(res.headers().contains_key("last-modified"));
    assert_eq!(res.headers()["x-yatagarasu-replica"], "default");
    assert!(!res.headers()["x-request-id"].is_empty());
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello, yatagarasu\n");

    let expected = pattern(9 * 1024 * 1024 + 17, 1);
    let res = c.get(proxy.url("/data/large.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.content_length(), Some(expected.len() as u64));
    let body = res.bytes().await.unwrap();
    assert_eq!(sha256(&body), sha256(&expected));

    let res = c.head(proxy.url("/data/large.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], expected.len().to_string().as_str());
    assert!(res.bytes().await.unwrap().is_empty());
    drop(s3);
}

#[tokio::test]
async fn ranges_and_preconditions() {
    let (_s3, proxy) = setup().await;
    let c = client();
    let url = proxy.url("/data/small.txt");
    let get = |range: &'static str| c.get(&url).header("range", range).send();

    let res = get("bytes=0-4").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 0-4/18");
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello");

    let res = get("bytes=-10").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"yatagarasu\n".get(1..).unwrap());

    let res = get("bytes=7-").await.unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"yatagarasu\n");

    let res = get("bytes=1000-2000").await.unwrap();
    assert_eq!(res.status(), 416);
    assert!(res.text().await.unwrap().contains("<Code>InvalidRange</Code>"));

    // What S3 ignores is not sent to a replica that would refuse it
    // (serve-s3 answers 400 to these): the whole object, as S3 answers.
    for range in ["bytes=abc", "bytes=4-2", "bytes=0-1,3-4", "bytes=+1-3"] {
        let res = get(range).await.unwrap();
        assert_eq!(res.status(), 200, "{range}");
        assert_eq!(res.bytes().await.unwrap().as_ref(), b"hello, yatagarasu\n", "{range}");
    }
    for name in ["if-modified-since", "if-unmodified-since"] {
        let res = c.get(&url).header(name, "yesterday").send().await.unwrap();
        assert_eq!(res.status(), 200, "{name}");
    }

    let etag = c.head(&url).send().await.unwrap().headers()["etag"].clone();
    let res = c.get(&url).header("if-none-match", etag.clone()).send().await.unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(res.headers()["etag"], etag);
    assert!(res.bytes().await.unwrap().is_empty());

    let res = c.get(&url).header("if-none-match", "\"other\"").send().await.unwrap();
    assert_eq!(res.status(), 200);

    let res = c.get(&url).header("if-match", "\"other\"").send().await.unwrap();
    assert_eq!(res.status(), 412);
    assert!(res.text().await.unwrap().contains("PreconditionFailed"));

    let res = c
        .get(&url)
        .header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    let res = c
        .get(&url)
        .header("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn errors_are_s3_xml_with_the_right_status() {
    let (_s3, proxy) = setup().await;
    let c = client();

    let res = c.get(proxy.url("/data/missing.txt")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["content-type"], "application/xml");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    assert!(body.contains("<Code>NoSuchKey</Code>"), "{body}");
    assert!(body.contains(&format!("<RequestId>{id}</RequestId>")), "{body}");

    for path in ["/nope/x", "/dataX/small.txt", "/datasmall.txt"] {
        let res = c.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        assert!(
            res.text().await.unwrap().contains("<Code>NoSuchBucket</Code>"),
            "{path}"
        );
    }
    // `GET /` is `ListBuckets` (docs/s3-tools.md); other methods there name no bucket.
    let res = c.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<ListAllMyBucketsResult"));
    let res = c.delete(proxy.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("<Code>NoSuchBucket</Code>"));

    for method in ["PUT", "POST", "DELETE", "PATCH", "OPTIONS"] {
        let res = c
            .request(method.parse().unwrap(), proxy.url("/data/small.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method}");
        assert_eq!(res.headers()["allow"], "GET, HEAD");
    }

    // The bucket's root is its listing (issue #11: ListObjects for SDK clients).
    let res = c.get(proxy.url("/data/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<ListBucketResult"));
}

#[tokio::test]
async fn longest_prefix_on_segment_boundaries() {
    let (_s3, proxy) = setup().await;
    let c = client();
    // /data2 is its own bucket (bucket-b), not /data's key "2/secret.txt".
    let res = c.get(proxy.url("/data2/secret.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "top secret of bucket b");
    let res = c.get(proxy.url("/data/secret.txt")).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn odd_keys_round_trip() {
    let (s3, proxy) = setup().await;
    let c = client();
    let keys = [
        "with space.txt",
        "plus+sign.txt",
        "100%.txt",
        "ünïcødé/日本語.txt",
        "nested/deep/path/file.txt",
        "semi;colon,comma=eq&amp.txt",
        "tilde~(paren)!'star*.txt",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body = format!("object {i}: {key}");
        s3.put_object("bucket-a", key, body.as_bytes()).unwrap();
        let encoded: String = key
            .split('/')
            .map(|seg| percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC).to_string())
            .collect::<Vec<_>>()
            .join("/");
        let res = c.get(proxy.url(&format!("/data/{encoded}"))).send().await.unwrap();
        assert_eq!(res.status(), 200, "{key}");
        assert_eq!(res.text().await.unwrap(), body, "{key}");
    }
    // `+` in a path is a plus, never a space.
    let res = c.get(proxy.url("/data/plus+sign.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn traversal_never_reaches_another_bucket() {
    let (_s3, proxy) = setup().await;
    for target in [
        "/data/../private/secret.txt",
        "/data/%2e%2e/private/secret.txt",
        "/data/%2E%2E%2Fprivate%2Fsecret.txt",
        "/data/..%2f..%2fbucket-b/secret.txt",
        "/data/./../bucket-b/secret.txt",
        "/data/sub/%2e%2e/%2e%2e/bucket-b/secret.txt",
        "/data/..\\bucket-b\\secret.txt",
    ] {
        let (status, text) = raw_get(&proxy.addr(), target).await;
        assert!(!text.contains("top secret"), "{target} leaked: {text}");
        // README: `.`/`..` segments (raw or `%2e%2e`) are `400 InvalidURI`.
        assert_eq!(status, 400, "{target}: {text}");
        assert!(text.contains("<Code>InvalidURI</Code>"), "{target}: {text}");
    }
}

#[tokio::test]
async fn client_credentials_and_query_never_go_upstream() {
    let (s3, proxy) = setup().await;
    // Forwarded, either would break the presigned request's signature.
    let res = client()
        .get(proxy.url("/data/small.txt?X-Amz-Signature=forged&X-Amz-Credential=x&tracking=1"))
        .header("authorization", "AWS4-HMAC-SHA256 Credential=forged")
        .header("cookie", "session=1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello, yatagarasu\n");

    // What really reached the S3 server for that object.
    let fetches: Vec<_> = s3
        .received()
        .into_iter()
        .filter(|r| r.method == http::Method::GET && r.uri.path() == "/bucket-a/small.txt")
        .collect();
    assert!(!fetches.is_empty(), "the object was never fetched upstream");
    for r in &fetches {
        let query = r.uri.query().unwrap_or_default();
        assert!(!query.contains("forged"), "client signature went upstream: {query}");
        assert!(
            !query.contains("X-Amz-Credential=x"),
            "client credential went upstream: {query}"
        );
        // (`versionId` and the `response-*` overrides are the documented
        // exceptions, signed by the proxy: docs/s3-tools.md.)
        assert!(!query.contains("tracking"), "client query went upstream: {query}");
        assert!(
            !r.headers.contains_key("cookie"),
            "cookie went upstream: {:?}",
            r.headers
        );
        let auth = r
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(!auth.contains("forged"), "client Authorization went upstream: {auth}");
    }
}

#[tokio::test]
async fn upstream_down_or_stalled_gives_502_or_504() {
    let mut s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    // A breaker that never opens: every failure below is a replica that was
    // tried, which the README answers with 502 (503 is for "no replica
    // admissible", the open breaker, a different state).
    let config = single_bucket_config("/d", &s3.endpoint(), "bkt").replace(
        "      timeout_seconds: 2\n",
        "      timeout_seconds: 2\n      circuit_breaker: { failure_threshold: 1000 }\n",
    );
    let proxy = Proxy::start(&config);
    let c = client();
    assert_eq!(c.get(proxy.url("/d/k.txt")).send().await.unwrap().status(), 200);

    s3.set_fault(Fault::Stall);
    let res = c.get(proxy.url("/d/k.txt")).send().await.unwrap();
    assert_eq!(res.status(), 504);
    assert!(res.text().await.unwrap().contains("<Code>GatewayTimeout</Code>"));

    s3.set_fault(Fault::Error500);
    let res = c.get(proxy.url("/d/k.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.unwrap().contains("<Code>BadGateway</Code>"));

    s3.set_fault(Fault::None);
    s3.stop().await;
    let res = c.get(proxy.url("/d/k.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert!(res.headers().contains_key("retry-after"));
    let body = res.text().await.unwrap();
    assert!(body.contains("<Code>BadGateway</Code>"), "{body}");

    // /ready follows the health checks; /health stays up.
    let ready = eventually(Duration::from_secs(10), || async {
        c.get(proxy.url("/ready")).send().await.unwrap().status() == 503
    })
    .await;
    assert!(ready, "ready never turned 503");
    assert_eq!(c.get(proxy.url("/health")).send().await.unwrap().status(), 200);

    s3.restart().await.unwrap();
    let back = eventually(Duration::from_secs(10), || async {
        c.get(proxy.url("/ready")).send().await.unwrap().status() == 200
    })
    .await;
    assert!(back, "ready never came back");
    let report: serde_json::Value = serde_json::from_str(&get_text(proxy.url("/ready")).await).unwrap();
    assert_eq!(report["buckets"]["main"]["ready"], true);
    assert_eq!(c.get(proxy.url("/d/k.txt")).send().await.unwrap().status(), 200);

    let logs = proxy.settled_logs().await;
    assert!(!logs.contains(SECRET_KEY), "secret in logs");
    assert!(!logs.contains(ACCESS_KEY), "access key in logs");
    assert!(!logs.contains("X-Amz-Signature"), "presigned URL in logs");
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let s3 = s3().await;
    s3.put_object("bkt", "big.bin", &pattern(32 * 1024 * 1024, 3)).unwrap();
    let mut proxy = Proxy::start(&single_bucket_config("/d", &s3.endpoint(), "bkt"));
    let c = client();
    let res = c.get(proxy.url("/d/big.bin")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut res = res;
    let first = res.chunk().await.unwrap().unwrap();
    // SIGTERM with the download in flight: it must still complete byte-exact.
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &proxy.pid().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(proxy.wait_for_log("shutting down", Duration::from_secs(5)).await);
    let mut body = first.to_vec();
    while let Some(chunk) = res.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    assert_eq!(sha256(&body), sha256(&pattern(32 * 1024 * 1024, 3)));
    assert_eq!(proxy.wait_exit(Duration::from_secs(10)), Some(0));
}

/// S3 (and s3s-fs) ignore `If-Range`: on a cache miss the proxy checks it
/// against the upstream's validators and sends the whole object when it does
/// not hold, never 4 bytes of a version the client did not ask for.
#[tokio::test]
async fn if_range_is_checked_against_the_upstream_on_a_miss() {
    let (_s3, proxy) = setup().await;
    let url = proxy.url("/data/small.txt");
    let head = client().head(&url).send().await.unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_owned();
    let modified = head.headers()["last-modified"].to_str().unwrap().to_owned();
    let get = |if_range: String| {
        let url = url.clone();
        async move {
            let res = client()
                .get(url)
                .header("range", "bytes=0-3")
                .header("if-range", if_range)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
        }
    };
    let whole = b"hello, yatagarasu\n".to_vec();
    assert_eq!(get("\"an-old-etag\"".into()).await, (200, whole.clone()));
    assert_eq!(get(format!("W/{etag}")).await, (200, whole.clone()));
    assert_eq!(get("Wed, 21 Oct 2015 07:28:00 GMT".into()).await, (200, whole.clone()));
    assert_eq!(get(etag).await, (206, b"hell".to_vec()));
    assert_eq!(get(modified).await, (206, b"hell".to_vec()));
}

/// A forward proxy on 127.0.0.1 that counts the requests it carries: it
/// reads a request head, connects to the host its absolute-form target
/// names, and relays both ways.
async fn forward_proxy() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                // `GET http://127.0.0.1:PORT/bucket/key?... HTTP/1.1`
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                let target = line.split(' ').nth(1).unwrap_or_default();
                let Some(authority) = target.strip_prefix("http://").and_then(|t| t.split('/').next()) else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(mut upstream) = tokio::net::TcpStream::connect(authority).await else {
                    return;
                };
                if upstream.write_all(&head).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn replica_requests_go_through_the_proxy_http_proxy_names() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"via the forward proxy\n").unwrap();
    let (forward, seen) = forward_proxy().await;
    let config = single_bucket_config("/d", &s3.endpoint(), "bkt");
    let proxy = Proxy::start_with_env(&config, &[("HTTP_PROXY", &forward)]);
    let (status, _, body) = get(&proxy, "/d/k.txt").await;
    assert_eq!((status, body.as_str()), (200, "via the forward proxy\n"));
    assert!(seen.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // Without the variable the replica is reached directly.
    let before = seen.load(std::sync::atomic::Ordering::SeqCst);
    let direct = Proxy::start(&config);
    let (status, _, _) = get(&direct, "/d/k.txt").await;
    assert_eq!(status, 200);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), before);
}

/// A client that leaves before its answer (here an HTTP/2 stream reset)
/// still gets an access line and a count: status 499, `complete=false`, as
/// nginx logs "client closed request".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_its_answer_is_logged_and_counted_499() {
    let s3 = s3().await;
    s3.put_object("bkt", "k.txt", b"v").unwrap();
    let config = single_bucket_config("/d", &s3.endpoint(), "bkt")
        .replace("      timeout_seconds: 2\n", "      timeout_seconds: 60\n")
        // No probe may open the breaker while the replica stalls.
        .replace(
            "health_check:\n  interval_seconds: 1\n  timeout_seconds: 1\n",
            "health_check:\n  enabled: false\n",
        )
        .replace(
            "metrics:\n  enabled: false\n",
            "metrics:\n  enabled: true\n  address: 127.0.0.1\n  port: 0\n",
        );
    let proxy = Proxy::start(&config);
    s3.set_fault(Fault::Stall);
    let asked = |n: usize| {
        let s3 = &s3;
        async move {
            s3.received()
                .iter()
                .filter(|r| r.uri.path().ends_with("/k.txt"))
                .count()
                >= n
        }
    };

    // HTTP/2: the client gives up; reqwest resets the stream.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = proxy.url("/d/k.txt");
    let pending = tokio::spawn(async move { h2.get(url).send().await });
    assert!(
        eventually(Duration::from_secs(20), || asked(1)).await,
        "the replica never saw the h2 GET"
    );
    pending.abort();
    let line = |needle: &'static str| {
        let proxy = &proxy;
        async move {
            proxy
                .logs()
                .lines()
                .any(|l| l.contains(needle) && l.contains("status=499"))
        }
    };
    assert!(
        eventually(Duration::from_secs(20), || line("/d/k.txt")).await,
        "no 499 line for the reset stream:\n{}",
        proxy.logs()
    );

    // (HTTP/1.1 cannot tell a client that closed from one that half-closed
    // after its request, which is served: there the line comes with the
    // answer, `complete=false` when it could not be sent.)
    let line = proxy
        .logs()
        .lines()
        .find(|l| l.contains("status=499"))
        .unwrap()
        .to_owned();
    assert!(
        line.contains("complete=false") && line.contains("bucket=main"),
        "{line}"
    );
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("yatagarasu_requests_total{")
            && l.contains("bucket=\"main\"")
            && l.contains("status_class=\"4xx\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("yatagarasu_requests_in_flight") && l.ends_with(" 0")),
        "{metrics}"
    );
}
