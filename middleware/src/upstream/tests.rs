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
    let keys = up.inner.presigned.keys();
    assert_eq!(keys.len(), 1, "one URL kept");
    let id = up
        .inner
        .credentials
        .current()
        .unwrap()
        .map_or(0, |c| Arc::as_ptr(&c) as usize);
    up.inner
        .presigned
        .insert(&keys[0], Arc::new(Recent::new(marker.clone(), id)));
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
    up.inner
        .presigned
        .insert(&keys[0], Arc::new(Recent::new(marker.clone(), id + 1)));
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
    let mut to = from.clone();
    keep_forwarded(&mut to);
    let all = |name: &str| to.get_all(name).iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
    assert_eq!(all("content-type"), ["text/plain"]);
    assert_eq!(all("cache-control"), ["max-age=60"]);
    assert_eq!(all("x-amz-meta-owner"), ["a", "b"]);
    assert_eq!(all("etag"), ["\"abc\""]);
    assert_eq!(to.len(), 5, "{to:?}");
}

/// The test S3 server's key pair in these tests.
const KEYS: (&str, &str) = ("AKIATESTDIRECT001", "direct-secret-1a2b3c");

/// The test S3 server (SigV4 checked) with bucket `direct`: `small` (4 KiB),
/// `large` (4 MiB) and `empty`.
async fn s3_with_objects() -> (yatagarasu_testkit::s3::LocalS3, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s3 = yatagarasu_testkit::s3::LocalS3::start(dir.path(), "127.0.0.1:0".parse().unwrap(), KEYS.0, KEYS.1)
        .await
        .unwrap();
    s3.put_object("direct", "small", &[7u8; 4096]).unwrap();
    s3.put_object("direct", "large", &vec![9u8; 4 << 20]).unwrap();
    s3.put_object("direct", "empty", b"").unwrap();
    (s3, dir)
}

/// A replica served by [`s3_with_objects`] with `direct_http` on, and the
/// server.
async fn direct_replica(read_timeout: Duration) -> (S3Upstream, yatagarasu_testkit::s3::LocalS3, tempfile::TempDir) {
    let (key, secret) = KEYS;
    let (s3, dir) = s3_with_objects().await;
    let endpoint: Url = s3.endpoint().parse().unwrap();
    let clients = UpstreamClients::from(reqwest::Client::new()).with_direct_http(Some(read_timeout));
    let up = S3Upstream::new("r", s3_bucket(Some(&endpoint), "direct", "us-east-1").unwrap(), clients)
        .with_credentials(Credentials::new(key, secret));
    assert!(up.inner.direct.is_some(), "a plain-http replica takes the direct path");
    (up, s3, dir)
}

async fn body_of(res: Response<Body>) -> Result<bytes::Bytes, axum::Error> {
    res.into_body().collect().await.map(|c| c.to_bytes())
}

/// The length of `small` fetched from `up`.
async fn small_len(up: &S3Upstream) -> usize {
    let res = up.fetch(&ObjectRequest::get("small")).await.unwrap();
    body_of(res).await.unwrap().len()
}

#[tokio::test]
async fn direct_http_reuses_its_connection_and_replaces_dead_ones() {
    let (up, mut s3, _dir) = direct_replica(Duration::from_secs(30)).await;
    for _ in 0..3 {
        let res = up.fetch(&ObjectRequest::get("small")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[REPLICA_HEADER], "r");
        assert_eq!(body_of(res).await.unwrap(), vec![7u8; 4096]);
    }
    // Bodiless answers give the connection back at once: hyper's server
    // never polls a body that says it is at its end.
    let res = up.fetch(&ObjectRequest::head("small")).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "4096");
    assert!(http_body::Body::is_end_stream(res.body()));
    drop(res);
    let res = up.fetch(&ObjectRequest::get("empty")).await.unwrap();
    assert!(http_body::Body::is_end_stream(res.body()));
    drop(res);
    let res = up.fetch(&ObjectRequest::get("missing")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    body_of(res).await.unwrap();
    assert_eq!(s3.requests(), 6);
    assert_eq!(s3.connections(), 1, "one connection for six requests in a row");

    // A body dropped before its end takes its connection with it.
    let res = up.fetch(&ObjectRequest::get("large")).await.unwrap();
    let mut body = res.into_body();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    drop(body);
    assert_eq!(small_len(&up).await, 4096);
    assert_eq!(s3.connections(), 2);

    // The server restarts: the idle connection is closed, the next request
    // goes out on a new one and succeeds.
    s3.stop().await;
    s3.restart().await.unwrap();
    assert_eq!(small_len(&up).await, 4096);
    assert_eq!(s3.connections(), 3);

    // A server that is gone is a connect error, with no URL in it.
    s3.stop().await;
    let err = up.fetch(&ObjectRequest::get("small")).await.unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(!err.to_string().contains("X-Amz-Signature"), "{err}");
}

#[tokio::test]
async fn direct_http_bodies_fail_on_a_stall_and_a_reset_and_lose_the_connection() {
    use yatagarasu_testkit::s3::Fault;
    let (up, s3, _dir) = direct_replica(Duration::from_millis(300)).await;
    s3.set_fault(Fault::StallAfter(1000));
    let res = up.fetch(&ObjectRequest::get("large")).await.unwrap();
    let err = body_of(res).await.unwrap_err();
    let source = std::error::Error::source(&err).expect("the body's error");
    assert!(source.downcast_ref::<BodyReadTimeout>().is_some(), "{err:?}");

    // The server may reset before its head is flushed: an error either way.
    s3.set_fault(Fault::ResetAfter(1000));
    match up.fetch(&ObjectRequest::get("large")).await {
        Ok(res) => assert!(body_of(res).await.is_err()),
        Err(e) => assert!(matches!(e, FetchError::Transport(_)), "{e:?}"),
    }

    s3.set_fault(Fault::None);
    assert_eq!(
        body_of(up.fetch(&ObjectRequest::get("large")).await.unwrap())
            .await
            .unwrap()
            .len(),
        4 << 20
    );
    assert_eq!(s3.connections(), 3, "neither broken connection was reused");
}

#[test]
fn replicas_skip_reqwest_with_direct_http_on_and_https_ones_with_a_tls_config() {
    let replica = |endpoint: &str, direct: bool, tls: bool| {
        let ep: Url = endpoint.parse().unwrap();
        let mut clients = UpstreamClients::from(reqwest::Client::new());
        if direct {
            clients = clients.with_direct_http(None);
        }
        if tls {
            clients = clients.with_direct_tls(client_tls([]));
        }
        S3Upstream::new("r", s3_bucket(Some(&ep), "b", "us-east-1").unwrap(), clients)
            .with_timeout(Duration::from_secs(5))
            .inner
            .direct
            .is_some()
    };
    assert!(replica("http://127.0.0.1:9000", true, false));
    assert!(replica("http://minio.internal", true, false));
    assert!(!replica("http://127.0.0.1:9000", false, true));
    assert!(!replica("https://r2.example", true, false));
    assert!(replica("https://r2.example", true, true));
    assert!(replica("https://[::1]:9000", true, true));
    assert!(!replica("https://r2.example", false, true));
}

/// A TLS front with a certificate from a private CA for `backend` (the test
/// S3 server, as a MinIO with its own certificate); returns its `https://`
/// URL and the CA's certificate.
async fn tls_front(
    backend: std::net::SocketAddr,
    pki: &yatagarasu_testkit::pki::Pki,
) -> (Url, rustls::pki_types::CertificateDer<'static>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = pki.issue("replica", "replica", false);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .map(Result::unwrap)
                .collect(),
            PrivateKeyDer::from_pem_file(&key).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap()).parse().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let (Ok(mut tls), Ok(mut plain)) = (
                    acceptor.accept(tcp).await,
                    tokio::net::TcpStream::connect(backend).await,
                ) {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (url, CertificateDer::from_pem_file(pki.ca()).unwrap())
}

/// A client TLS config trusting `roots` only, HTTP/1.1 by ALPN.
fn client_tls(
    roots: impl IntoIterator<Item = rustls::pki_types::CertificateDer<'static>>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root).unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn direct_https_verifies_the_replicas_certificate_and_reuses_its_connection() {
    let (key, secret) = KEYS;
    let (s3, _dir) = s3_with_objects().await;
    let pki = yatagarasu_testkit::pki::Pki::new();
    let (endpoint, ca) = tls_front(s3.addr(), &pki).await;
    let replica = |roots: Vec<rustls::pki_types::CertificateDer<'static>>| {
        let clients = UpstreamClients::from(reqwest::Client::new())
            .with_direct_http(Some(Duration::from_secs(30)))
            .with_direct_tls(client_tls(roots));
        let up = S3Upstream::new("r", s3_bucket(Some(&endpoint), "direct", "us-east-1").unwrap(), clients)
            .with_credentials(Credentials::new(key, secret));
        assert!(
            up.inner.direct.is_some(),
            "an https replica with TLS given takes the direct path"
        );
        up
    };

    let trusting = replica(vec![ca]);
    for _ in 0..3 {
        assert_eq!(small_len(&trusting).await, 4096);
    }
    assert_eq!(s3.connections(), 1, "one TLS connection for three requests");

    // A CA the replica's certificate does not chain to: no connection.
    let other = yatagarasu_testkit::pki::Pki::new();
    let (_, other_ca) = tls_front(s3.addr(), &other).await;
    let err = replica(vec![other_ca])
        .fetch(&ObjectRequest::get("small"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_eq!(s3.requests(), 3);
}
