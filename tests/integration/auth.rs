//! JWT auth through the real binary.

use crate::common::*;

const SECRET: &str = "auth-test-secret-0123456789abcdef";

fn token(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config(endpoint: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
jwt:
  algorithm: HS256
  secret: "${{JWT_SECRET}}"
  issuer: "https://issuer.test"
  token_sources:
    - {{ type: bearer }}
    - {{ type: header, name: X-Api-Token }}
    - {{ type: query, name: token }}
  claims:
    - {{ claim: role, in: [reader, admin] }}
buckets:
  - name: docs
    path_prefix: /docs
    s3: {{ bucket: docs-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
    auth: {{ enabled: true }}
  - name: public
    path_prefix: /public
    s3: {{ bucket: docs-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
health_check: {{ enabled: false }}
metrics: {{ enabled: false }}
"#
    )
}

#[tokio::test]
async fn every_outcome_through_the_binary() {
    let s3 = s3().await;
    s3.put_object("docs-bkt", "guide.txt", b"the guide").unwrap();
    let proxy = Proxy::start_with_env(&config(&s3.endpoint()), &[("JWT_SECRET", SECRET)]);
    let c = client();
    let url = proxy.url("/docs/guide.txt");
    let valid =
        token(serde_json::json!({"sub": "bob", "iss": "https://issuer.test", "role": "reader", "exp": now() + 600}));

    for req in [
        c.get(&url).bearer_auth(&valid),
        c.get(&url).header("x-api-token", &valid),
        c.get(format!("{url}?token={valid}")),
    ] {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await.unwrap(), "the guide");
    }
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    assert!(res.text().await.unwrap().contains("<Error><Code>"));

    let cases = [
        token(serde_json::json!({"sub": "bob", "iss": "https://issuer.test", "role": "reader", "exp": now() - 600})),
        token(serde_json::json!({"sub": "bob", "iss": "https://evil.test", "role": "reader", "exp": now() + 600})),
        "not.a.token".to_owned(),
        format!("{}x", &valid[..valid.len() - 1]),
    ];
    for bad in cases {
        let res = c.get(&url).bearer_auth(&bad).send().await.unwrap();
        assert_eq!(res.status(), 401, "{bad}");
        assert!(!res.text().await.unwrap().contains(&bad));
    }
    let wrong_role =
        token(serde_json::json!({"sub": "eve", "iss": "https://issuer.test", "role": "guest", "exp": now() + 600}));
    assert_eq!(c.get(&url).bearer_auth(&wrong_role).send().await.unwrap().status(), 403);

    // The open bucket needs nothing.
    assert_eq!(
        c.get(proxy.url("/public/guide.txt")).send().await.unwrap().status(),
        200
    );
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains(&valid), "a token reached the logs");
    assert!(logs.contains("identity=bob"), "the identity is not in the request log");
}

#[test]
fn auth_without_a_usable_key_fails_closed_at_start() {
    let config = r#"
buckets:
  - name: docs
    path_prefix: /docs
    s3: { bucket: docs-bkt, endpoint: "http://127.0.0.1:9" }
    auth: { enabled: true }
  - name: other
    path_prefix: /other
    s3: { bucket: docs-bkt, endpoint: "http://127.0.0.1:9" }
    auth: { enabled: true, jwt: { algorithm: HS999, secret: x } }
metrics: { enabled: false }
"#;
    let out = check(config, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("buckets[0].auth.jwt"), "{err}");
    assert!(err.contains("buckets[1].auth.jwt.algorithm"), "{err}");
}

/// A throwaway P-256 key for the JWKS test (generated for it, used nowhere else).
const ES256_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5C037P5WX+/8JV6g
9eQbpb8DcsJ7qnLxOVwS74pW05ihRANCAAQjhQVfjUlAajY3tGbbT5+IuUFHzpbf
JDAr/JKwGXMbYBV65eeiEozjSmVYxY5rG0kmcxL1CVdgdM8/cpX61UK7
-----END PRIVATE KEY-----
";

fn es256_token(kid: &str, claims: serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(ES256_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

// Multi-thread: `Proxy::start` blocks while the binary fetches the JWKS from
// the server running on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_through_the_binary_accepts_its_key_and_refuses_an_unknown_kid() {
    // The issuer: a loopback HTTP server serving the JWKS of the key above.
    let key = jsonwebtoken::EncodingKey::from_ec_pem(ES256_KEY.as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("k1".to_owned());
    let jwks = serde_json::json!({ "keys": [jwk] });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let s3 = s3().await;
    s3.put_object("docs-bkt", "guide.txt", b"the guide").unwrap();
    let config = format!(
        r#"
server: {{ address: "127.0.0.1:0" }}
jwt:
  algorithm: ES256
  jwks_url: "http://{issuer}/jwks.json"
  issuer: "https://issuer.test"
buckets:
  - name: docs
    path_prefix: /docs
    s3: {{ bucket: docs-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
    auth: {{ enabled: true }}
health_check: {{ enabled: false }}
metrics: {{ enabled: false }}
"#,
        endpoint = s3.endpoint()
    );
    let proxy = Proxy::start(&config);
    let c = client();
    let url = proxy.url("/docs/guide.txt");
    let claims = serde_json::json!({"sub": "carol", "iss": "https://issuer.test", "exp": now() + 600});

    let res = c
        .get(&url)
        .bearer_auth(es256_token("k1", claims.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "the guide");

    let res = c
        .get(&url)
        .bearer_auth(es256_token("unknown", claims))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("<Error><Code>"));
    server.abort();
}

const CLIENT_KEY: &str = "AKIAAUTHTESTCLIENT01";
const CLIENT_SECRET: &str = "auth-test-client/secret+9";

/// A bucket `/data` whose clients sign with [`CLIENT_KEY`]; `server` is the
/// `server:` block (YAML flow mapping).
fn sigv4_config(s3: &S3, server: &str) -> String {
    format!(
        r#"
server: {server}
buckets:
  - name: data
    path_prefix: /data
    s3: {{ bucket: data-bkt, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
    auth:
      enabled: true
      sigv4:
        credentials:
          - {{ access_key_id: "{CLIENT_KEY}", secret_access_key: "{CLIENT_SECRET}" }}
health_check: {{ enabled: false }}
metrics: {{ enabled: false }}
"#,
        endpoint = s3.endpoint()
    )
}

/// `rclone ARGS` with remote `yg:` at `base` signing with `secret` (see
/// [`crate::rclone::rclone`]): `None` when rclone is missing and
/// `YATAGARASU_ALLOW_MISSING_TOOLS` is set, else (success, stdout, stderr).
async fn rclone(dir: &std::path::Path, base: &str, secret: &str, args: &[&str]) -> Option<(bool, String, String)> {
    if !crate::rclone::rclone_present() {
        return None;
    }
    Some(crate::rclone::rclone(dir, base, Some((CLIENT_KEY, secret)), args).await)
}

/// rclone over HTTPS speaks HTTP/2 (Go's default): the host it signed then
/// arrives as the `:authority`, with no `Host` header.
#[tokio::test]
async fn rclone_signs_with_proxy_issued_keys_over_https_and_http2() {
    let s3 = s3().await;
    s3.put_object("data-bkt", "dir/a b+c.txt", b"over h2\n").unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "proxy", false);
    let proxy = Proxy::start(&sigv4_config(
        &s3,
        &format!(r#"{{ address: "127.0.0.1:0", tls: {{ cert_file: {cert:?}, key_file: {key:?} }} }}"#),
    ));
    assert!(proxy.base.starts_with("https://"), "{}", proxy.base);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let rclone = |secret: &'static str, args: &'static [&'static str]| {
        let (dir, base) = (dir.path().to_owned(), proxy.base.clone());
        async move {
            let mut all = vec!["--ca-cert", ca, "--dump", "headers"];
            all.extend_from_slice(args);
            rclone(&dir, &base, secret, &all).await
        }
    };
    let Some((ok, out, err)) = rclone(CLIENT_SECRET, &["lsf", "-R", "--files-only", "yg:data"]).await else {
        return;
    };
    assert!(ok, "rclone lsf: {err}\n{}", proxy.logs());
    assert!(err.contains("HTTP/2.0 200"), "rclone did not speak HTTP/2: {err}");
    assert_eq!(out, "dir/a b+c.txt\n");
    let (ok, out, err) = rclone(CLIENT_SECRET, &["cat", "yg:data/dir/a b+c.txt"]).await.unwrap();
    assert!(ok, "rclone cat: {err}\n{}", proxy.logs());
    assert_eq!(out, "over h2\n");
    // A wrong secret is still refused.
    let (ok, _, err) = rclone("not-the-secret", &["cat", "yg:data/dir/a b+c.txt"])
        .await
        .unwrap();
    assert!(!ok && err.contains("SignatureDoesNotMatch"), "{err}");
}

/// The request log names the access key of a SigV4-signed request (as it
/// names a JWT's subject), and nothing of its signature.
#[tokio::test]
async fn the_access_log_names_the_access_key_of_signed_requests() {
    let s3 = s3().await;
    s3.put_object("data-bkt", "report.txt", b"signed\n").unwrap();
    let proxy = Proxy::start(&sigv4_config(&s3, r#"{ address: "127.0.0.1:0" }"#));
    let dir = tempfile::tempdir().unwrap();
    let Some((ok, out, err)) = rclone(dir.path(), &proxy.base, CLIENT_SECRET, &["cat", "yg:data/report.txt"]).await
    else {
        return;
    };
    assert!(ok, "rclone cat: {err}\n{}", proxy.logs());
    assert_eq!(out, "signed\n");
    let logs = proxy.settled_logs().await;
    let get = logs
        .lines()
        .find(|l| l.contains("operation=\"GetObject\"") && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no GetObject line:\n{logs}"));
    assert!(get.contains(&format!("identity={CLIENT_KEY}")), "{get}");
    assert!(!logs.contains(CLIENT_SECRET) && !logs.contains("Signature="), "{logs}");
}
