//! The upstream's unit tests: addressing style, presigned URLs and their reuse.

use super::*;

#[test]
fn path_style_for_endpoints_virtual_host_for_aws() {
    let ep: Url = "http://127.0.0.1:9000".parse().unwrap();
    let b = s3_bucket(Some(&ep), "data-bucket", "us-east-1").unwrap();
    assert_eq!(b.base_url().as_str(), "http://127.0.0.1:9000/data-bucket/");
    let b = s3_bucket(None, "assets", "us-west-2").unwrap();
    assert_eq!(b.base_url().as_str(), "https://assets.s3.us-west-2.amazonaws.com/");
}

#[test]
fn the_host_header_is_the_signed_urls_authority() {
    let host = |endpoint: Option<&str>, bucket: &str| {
        let ep = endpoint.map(|e| e.parse::<Url>().unwrap());
        let b = s3_bucket(ep.as_ref(), bucket, "us-west-2").unwrap();
        host_header(&b).unwrap()
    };
    assert_eq!(host(Some("http://127.0.0.1:9000"), "b"), "127.0.0.1:9000");
    // The scheme's default port is left out, as hyper-util and SigV4 do.
    assert_eq!(host(Some("http://minio.internal:80"), "b"), "minio.internal");
    assert_eq!(host(Some("https://r2.example:443/"), "b"), "r2.example");
    assert_eq!(host(Some("http://user:pw@[::1]:9000"), "b"), "[::1]:9000");
    assert_eq!(host(None, "assets"), "assets.s3.us-west-2.amazonaws.com");
    assert_eq!(host(None, "dotted.name"), "s3.us-west-2.amazonaws.com");
}

#[test]
fn presigned_urls_carry_no_secret_and_encode_keys() {
    let ep: Url = "http://127.0.0.1:9000".parse().unwrap();
    let up = S3Upstream::new(
        "p",
        s3_bucket(Some(&ep), "b", "us-east-1").unwrap(),
        reqwest::Client::new(),
    )
    .with_credentials(Credentials::new("AKIDEXAMPLE", "s3cr3t-value"));
    let url = up.presign(&ObjectRequest::get("dir/a b+c%.txt"));
    assert!(
        url.as_str()
            .starts_with("http://127.0.0.1:9000/b/dir/a%20b%2Bc%25.txt?"),
        "{url}"
    );
    assert!(!url.as_str().contains("s3cr3t-value"));
    let url = up.presign(
        &ObjectRequest::get("k")
            .with_query("versionId", "v 1")
            .with_query("response-content-type", "text/plain"),
    );
    assert!(url.query().unwrap().contains("versionId=v%201"), "{url}");
    assert!(
        url.query().unwrap().contains("response-content-type=text%2Fplain"),
        "{url}"
    );
    let url = up.presign(&ObjectRequest::list_objects_v2(vec![(
        "start-after".into(),
        "a/b".into(),
    )]));
    assert!(url.as_str().starts_with("http://127.0.0.1:9000/b/?"), "{url}");
    assert!(url.query().unwrap().contains("list-type=2"), "{url}");
    assert!(url.query().unwrap().contains("start-after=a%2Fb"), "{url}");
    assert!(!format!("{up:?}").contains("s3cr3t"));
}
#[test]
fn presigned_urls_are_reused_per_request_and_credentials() {
    let ep: Url = "http://127.0.0.1:9000".parse().unwrap();
    let bucket = s3_bucket(Some(&ep), "b", "us-east-1").unwrap();
    let up = S3Upstream::new("p", bucket, reqwest::Client::new())
        .with_credentials(Credentials::new("AKIDFIRST", "s3cr3t-value"));
    let req = ObjectRequest::get("dir/k").with_query("versionId", "1");
    let first = up.signed_url(&req).unwrap();
    // The same request reuses the kept URL: replace it with a marker.
    let marker: Url = "http://marker.invalid/".parse().unwrap();
    let keys: Vec<String> = up.inner.presigned.iter().map(|e| e.key().clone()).collect();
    assert_eq!(keys.len(), 1, "one URL kept");
    let id = up
        .inner
        .credentials
        .current()
        .unwrap()
        .map_or(0, |c| Arc::as_ptr(&c) as usize);
    up.inner.presigned.insert(
        keys[0].clone(),
        Arc::new(Recent {
            url: marker.clone(),
            credentials: id,
        }),
    );
    assert_eq!(up.signed_url(&req).unwrap(), marker);
    // Another method, key or query is signed anew.
    for other in [
        ObjectRequest::head("dir/k").with_query("versionId", "1"),
        ObjectRequest::get("dir/k"),
        ObjectRequest::get("dir/k").with_query("versionId", "2"),
        ObjectRequest::get("dir/k2").with_query("versionId", "1"),
    ] {
        assert_ne!(up.signed_url(&other).unwrap(), marker, "{other:?}");
    }
    // Kept URLs signed with other credentials are not reused.
    up.inner.presigned.insert(
        keys[0].clone(),
        Arc::new(Recent {
            url: marker.clone(),
            credentials: id + 1,
        }),
    );
    let again = up.signed_url(&req).unwrap();
    assert_ne!(again, marker);
    assert_eq!(again.path(), first.path());
    assert!(again.query().unwrap().contains("AKIDFIRST"), "{again}");
}

#[test]
fn forwarded_headers_keep_the_first_of_each_named_header_and_every_meta_value() {
    let mut from = HeaderMap::new();
    for (name, value) in [
        ("x-amz-request-id", "R1"),
        ("content-type", "text/plain"),
        ("cache-control", "max-age=60"),
        ("cache-control", "public"),
        ("x-amz-meta-owner", "a"),
        ("x-amz-meta-owner", "b"),
        ("date", "Sat, 28 Nov 2026 10:00:00 GMT"),
        ("etag", "\"abc\""),
        ("server", "s3"),
    ] {
        from.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    let to = forwarded(&from);
    let all = |name: &str| to.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
    assert_eq!(all("content-type"), ["text/plain"]);
    assert_eq!(all("cache-control"), ["max-age=60"]);
    assert_eq!(all("x-amz-meta-owner"), ["a", "b"]);
    assert_eq!(all("etag"), ["\"abc\""]);
    assert_eq!(to.len(), 5, "{to:?}");
}
