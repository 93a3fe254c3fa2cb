//! Revalidating clients (a CDN, a browser: `If-None-Match` on every use)
//! warm a cold cache, through the real binary: against serve-s3 (which
//! ignores preconditions and answers `200`) and moto (which answers `304`
//! and `412`, as S3 does). The cache stayed cold: a conditional miss's
//! answer has no body to store, and every revalidation went upstream.

use std::time::Duration;

use crate::common::*;
use crate::credentials::Moto;

/// One cached bucket `/assets` over `endpoint`'s `bucket`, memory tier only,
/// metrics on.
fn config(endpoint: &str, bucket: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
buckets:
  - name: assets
    path_prefix: /assets
    s3: {{ bucket: {bucket}, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", timeout_seconds: 2, retry: {{ max_attempts: 1 }} }}
health_check: {{ enabled: false }}
cache:
  memory: {{ max_capacity: 16777216, ttl_seconds: 60 }}
metrics: {{ enabled: true, port: 0, address: "127.0.0.1" }}
"#
    )
}

/// An answer: status, `X-Cache`, `Age` (empty when absent) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    cache: String,
    age: String,
    body: Vec<u8>,
}

/// `curl` getting `url` with these extra request headers.
async fn curl(url: String, headers: &[(&str, &str)]) -> Answer {
    let dir = tempfile::tempdir().unwrap();
    let (head, body) = (dir.path().join("h"), dir.path().join("b"));
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-D"]).arg(&head).arg("-o").arg(&body).arg(&url);
    for (name, value) in headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    assert!(cmd.status().await.expect("curl").success());
    let head = std::fs::read_to_string(&head).unwrap();
    let header = |wanted: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(name, _)| name.eq_ignore_ascii_case(wanted)))
            .map(|(_, value)| value.trim().to_owned())
            .unwrap_or_default()
    };
    Answer {
        status: head.split_whitespace().nth(1).unwrap_or_default().parse().unwrap_or(0),
        cache: header("x-cache"),
        age: header("age"),
        body: std::fs::read(&body).unwrap_or_default(), // no file without a body
    }
}

/// The sum of the counter `name` over its labels on `proxy`'s metrics port.
async fn counter(proxy: &Proxy, name: &str) -> u64 {
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    let series: Vec<u64> = metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .map(|l| l.rsplit(' ').next().unwrap().trim().parse().unwrap())
        .collect();
    assert!(!series.is_empty(), "{name} missing from the metrics");
    series.iter().sum()
}

/// Revalidations until one is a hit, at most 50 (the fill runs in the
/// background after the first one's `304`).
async fn revalidate_until_hit(proxy: &Proxy, path: &str, etag: &str) -> Answer {
    for _ in 0..50 {
        let answer = curl(proxy.url(path), &[("if-none-match", etag)]).await;
        assert_eq!((answer.status, answer.body.len()), (304, 0), "{answer:?}");
        if answer.cache.starts_with("HIT") {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("50 revalidations of {path} and the cache never answered one");
}

/// Against serve-s3, which answers a conditional `GET` with the whole
/// object: the client gets its `304` (made by the proxy) and the body is
/// read on and stored; then the replica stops, and revalidations and plain
/// `GET`s are still answered, from the cache.
#[tokio::test]
async fn revalidations_warm_the_cache_from_a_replica_that_ignores_preconditions() {
    let mut s3 = s3().await;
    let css = pattern(30_000, 5);
    let etag = s3
        .put_object_with("assets-bkt", "site.css", css.clone(), &[])
        .await
        .unwrap();
    let proxy = Proxy::start(&config(&s3.endpoint(), "assets-bkt"));

    let first = curl(proxy.url("/assets/site.css"), &[("if-none-match", &etag)]).await;
    assert_eq!((first.status, first.cache.as_str(), first.body.len()), (304, "MISS", 0));
    let hit = revalidate_until_hit(&proxy, "/assets/site.css", &etag).await;
    assert_eq!(hit.cache, "HIT-MEMORY");
    assert!(!hit.age.is_empty(), "a 304 from the cache without Age");
    assert_eq!(s3.gets(), 1, "the object was fetched more than once");
    assert_eq!(counter(&proxy, "yatagarasu_cache_revalidation_fills_total").await, 1);

    s3.stop().await;
    let answer = curl(proxy.url("/assets/site.css"), &[("if-none-match", &etag)]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (304, "HIT-MEMORY"));
    let answer = curl(proxy.url("/assets/site.css"), &[]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (200, "HIT-MEMORY"));
    assert!(answer.body == css, "a wrong body from the cache");
}

/// Plain `GET`s that arrive while a revalidation's answer is on its way
/// wait for it, as for any fill in flight, and are answered from what it
/// stores: one upstream request in all. They were woken by the `304`, found
/// nothing, and one of them fetched the object again.
#[tokio::test]
async fn plain_gets_during_a_revalidations_fill_wait_for_it() {
    let s3 = s3().await;
    let js = pattern(50_000, 6);
    let etag = s3
        .put_object_with("assets-bkt", "app.js", js.clone(), &[])
        .await
        .unwrap();
    let proxy = Proxy::start(&config(&s3.endpoint(), "assets-bkt"));

    s3.hold();
    let url = proxy.url("/assets/app.js");
    let conditional = vec![("if-none-match".to_owned(), etag.clone())];
    let revalidation = tokio::spawn(curl_owned(url.clone(), conditional));
    assert!(
        eventually(Duration::from_secs(10), || async { s3.waiting() == 1 }).await,
        "the revalidation never reached the replica"
    );
    let plain: Vec<_> = (0..4)
        .map(|_| tokio::spawn(curl_owned(url.clone(), Vec::new())))
        .collect();
    let waiting = eventually(Duration::from_secs(10), || async {
        counter(&proxy, "yatagarasu_cache_coalesced_waits_total").await == 4
    })
    .await;
    assert!(waiting, "the plain GETs did not wait for the revalidation");
    s3.release();

    let first = revalidation.await.unwrap();
    assert_eq!((first.status, first.cache.as_str(), first.body.len()), (304, "MISS", 0));
    for answer in plain {
        let answer = answer.await.unwrap();
        assert_eq!((answer.status, answer.cache.as_str()), (200, "HIT-MEMORY"));
        assert!(answer.body == js, "a wrong body");
    }
    assert_eq!(s3.gets(), 1, "the plain GETs went upstream");
}

/// A SigV4-signed `PUT` to moto with `curl` and these arguments.
async fn seed(args: Vec<String>) {
    let user = format!("{ACCESS_KEY}:{SECRET_KEY}");
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-f",
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
            &user,
            "-X",
            "PUT",
        ])
        .args(args)
        .output()
        .await
        .expect("curl");
    assert!(out.status.success(), "{out:?}");
}

/// [`curl`] with owned arguments, for a spawned task.
async fn curl_owned(url: String, headers: Vec<(String, String)>) -> Answer {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    curl(url, &headers).await
}

/// Against moto, which answers `304` as S3 does: the proxy fetches the
/// object once more, without the preconditions, in the background; plain
/// `GET`s meanwhile wait for that fetch; with moto gone, the cache answers.
#[tokio::test]
async fn revalidations_warm_the_cache_from_a_replica_that_answers_304() {
    let moto = Moto::start().await;
    let text = b"body { margin: 0 }\n".repeat(500);
    seed(vec![format!("{}/moto-bkt", moto.url)]).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    seed(vec![
        "-H".into(),
        "content-type: text/css".into(),
        "--data-binary".into(),
        format!("@{}", file.path().display()),
        format!("{}/moto-bkt/theme.css", moto.url),
    ])
    .await;
    let proxy = Proxy::start(&config(&moto.url, "moto-bkt"));
    let head = client().head(proxy.url("/assets/theme.css")).send().await.unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_owned();
    let requests = counter(&proxy, "yatagarasu_replica_requests_total").await;

    let first = curl(proxy.url("/assets/theme.css"), &[("if-none-match", &etag)]).await;
    assert_eq!((first.status, first.cache.as_str(), first.body.len()), (304, "MISS", 0));
    // Right after the 304 the object's fill is in flight or done: these
    // wait for it or hit what it stored.
    let plain: Vec<_> = (0..4)
        .map(|_| tokio::spawn(curl_owned(proxy.url("/assets/theme.css"), Vec::new())))
        .collect();
    for answer in plain {
        let answer = answer.await.unwrap();
        assert_eq!((answer.status, answer.cache.as_str()), (200, "HIT-MEMORY"));
        assert!(answer.body == text, "a wrong body");
    }
    assert_eq!(
        counter(&proxy, "yatagarasu_replica_requests_total").await - requests,
        2,
        "not one revalidation and one background fetch"
    );
    assert_eq!(counter(&proxy, "yatagarasu_cache_revalidation_fills_total").await, 1);

    drop(moto);
    let answer = curl(proxy.url("/assets/theme.css"), &[("if-none-match", &etag)]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (304, "HIT-MEMORY"));
    let answer = curl(proxy.url("/assets/theme.css"), &[("if-match", "\"other\"")]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (412, "HIT-MEMORY"));
    let answer = curl(proxy.url("/assets/theme.css"), &[]).await;
    assert_eq!((answer.status, answer.cache.as_str()), (200, "HIT-MEMORY"));
    assert!(answer.body == text, "a wrong body from the cache");
}

/// A `304`, `412` or `416` answered from a cached copy says how old the
/// copy is (`Age`) and where it came from (`X-Cache`), as a `200` or `206`
/// from it does. The `412` and `416` lost their `Age` on the way out.
#[tokio::test]
async fn answers_from_a_hit_say_age_and_x_cache_whatever_their_status() {
    let s3 = s3().await;
    let etag = s3
        .put_object_with("assets-bkt", "logo.svg", pattern(2_000, 8), &[])
        .await
        .unwrap();
    let proxy = Proxy::start(&config(&s3.endpoint(), "assets-bkt"));
    assert_eq!(curl(proxy.url("/assets/logo.svg"), &[]).await.cache, "MISS");

    let cases: [(&[(&str, &str)], u16); 5] = [
        (&[], 200),
        (&[("range", "bytes=0-9")], 206),
        (&[("if-none-match", &etag)], 304),
        (&[("if-match", "\"other\"")], 412),
        (&[("range", "bytes=9000-")], 416),
    ];
    for (headers, status) in cases {
        let answer = curl(proxy.url("/assets/logo.svg"), headers).await;
        assert_eq!(
            (answer.status, answer.cache.as_str()),
            (status, "HIT-MEMORY"),
            "{headers:?}"
        );
        assert!(!answer.age.is_empty(), "no Age on the {status} from the cache");
    }
}
