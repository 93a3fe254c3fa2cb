//! JWT authentication layer: every outcome, every token source, claim rules,
//! static keys of every family and a JWKS served on 127.0.0.1 with rotation.
//! Tokens are signed here with real keys (tests/fixtures/auth/).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{header, Request, Response, StatusCode};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tower::{Layer, ServiceExt};
use yatagarasu_middleware::auth::{AuthConfigError, AuthLayer, AuthOutcome, Identity, JwtConfig};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/auth")
        .join(name)
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn config(v: Value) -> JwtConfig {
    serde_json::from_value(v).unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn hs(claims: Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims,
    )
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// The inner service: echoes what reached it (URI, credential headers, identity).
async fn echo(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let seen = json!({
        "uri": req.uri().to_string(),
        "authorization": req.headers().contains_key(header::AUTHORIZATION),
        "x_token": req.headers().contains_key("x-token"),
        "subject": req.extensions().get::<Identity>().and_then(|i| i.subject.clone()),
    });
    Ok(Response::new(Body::from(seen.to_string())))
}

struct Answer {
    status: StatusCode,
    res: http::response::Parts,
    body: String,
}

impl Answer {
    fn seen(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn outcome(&self) -> Option<AuthOutcome> {
        self.res.extensions.get::<AuthOutcome>().copied()
    }
}

async fn send(layer: &AuthLayer, req: Request<Body>) -> Answer {
    let svc = layer.layer(tower::service_fn(echo));
    let res = svc.oneshot(req).await.unwrap();
    let (res, body) = res.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    Answer {
        status: res.status,
        res,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn bearer(token: &str) -> Request<Body> {
    Request::get("/bucket/key.txt")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header("x-request-id", "rid-42")
        .body(Body::empty())
        .unwrap()
}

async fn expect_rejected(layer: &AuthLayer, token: &str, status: StatusCode, outcome: AuthOutcome) -> Answer {
    let before = layer.stats().get(outcome);
    let a = send(layer, bearer(token)).await;
    assert_eq!(a.status, status, "{outcome}: {}", a.body);
    assert_eq!(a.outcome(), Some(outcome));
    assert_eq!(layer.stats().get(outcome), before + 1);
    assert!(!a.body.contains(token), "the token is echoed");
    assert!(a.body.contains("<RequestId>rid-42</RequestId>"), "{}", a.body);
    assert_eq!(a.res.headers[header::CONTENT_TYPE], "application/xml");
    a
}

fn hs_layer(extra: Value) -> AuthLayer {
    let mut v = json!({"algorithm": "HS256", "secret": SECRET});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    AuthLayer::from_config(&config(v)).unwrap()
}

#[tokio::test]
async fn valid_token_passes_with_identity_and_without_credentials() {
    let layer = hs_layer(json!({}));
    let a = send(&layer, bearer(&hs(claims(json!({}))))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let seen = a.seen();
    assert_eq!(seen["subject"], "alice");
    assert_eq!(seen["authorization"], false);
    let identity = a.res.extensions.get::<Identity>().unwrap();
    assert_eq!(identity.subject.as_deref(), Some("alice"));
    assert_eq!(identity.claims["sub"], "alice");
    assert_eq!(layer.stats().get(AuthOutcome::Success), 1);
}

#[tokio::test]
async fn missing_token_is_401_with_challenge() {
    let layer = hs_layer(json!({}));
    let req = Request::get("/k")
        .header("x-request-id", "rid-42")
        .body(Body::empty())
        .unwrap();
    let a = send(&layer, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.res.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(a.outcome(), Some(AuthOutcome::Missing));
    assert!(a.body.contains("<RequestId>rid-42</RequestId>"));
    // Another scheme is no bearer token either.
    let req = Request::get("/k")
        .header(header::AUTHORIZATION, "Basic YTpi")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&layer, req).await.outcome(), Some(AuthOutcome::Missing));
    assert_eq!(layer.stats().get(AuthOutcome::Missing), 2);
}

#[tokio::test]
async fn every_invalid_token_is_401() {
    use AuthOutcome::*;
    let layer = hs_layer(json!({"issuer": "https://idp.test", "audience": ["proxy", "other"], "leeway_seconds": 0}));
    let ok = json!({"iss": "https://idp.test", "aud": "proxy"});
    let good = hs(claims(ok.clone()));
    assert_eq!(send(&layer, bearer(&good)).await.status, StatusCode::OK);

    let u = StatusCode::UNAUTHORIZED;
    let other_secret = EncodingKey::from_secret(b"another-secret-another-secret-!!");
    let forged = sign(Algorithm::HS256, &other_secret, None, claims(ok.clone()));
    let a = expect_rejected(&layer, &forged, u, BadSignature).await;
    assert_eq!(
        a.res.headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert!(a.body.contains("<Code>InvalidToken</Code>"));

    // Tampered payload, original signature.
    let parts: Vec<&str> = good.split('.').collect();
    let evil = hs(claims(
        json!({"iss": "https://idp.test", "aud": "proxy", "sub": "mallory"}),
    ));
    let tampered = format!("{}.{}.{}", parts[0], evil.split('.').nth(1).unwrap(), parts[2]);
    expect_rejected(&layer, &tampered, u, BadSignature).await;

    // Same secret, another algorithm.
    let hs384 = sign(
        Algorithm::HS384,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        claims(ok.clone()),
    );
    expect_rejected(&layer, &hs384, u, BadAlgorithm).await;

    // alg: none, with and without a signature part.
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let body = b64(&claims(ok.clone()).to_string());
    for none in [
        format!("{}.{body}.", b64(r#"{"alg":"none","typ":"JWT"}"#)),
        format!("{}.{body}.{}", b64(r#"{"alg":"none"}"#), parts[2]),
    ] {
        expect_rejected(&layer, &none, u, BadAlgorithm).await;
    }

    for junk in ["abc", "a.b.c", &format!("{}.{}", parts[0], parts[1])] {
        expect_rejected(&layer, junk, u, Malformed).await;
    }
    // The signature is checked before the payload is even parsed.
    expect_rejected(&layer, "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.sig", u, BadSignature).await;

    let a = expect_rejected(
        &layer,
        &hs(claims(
            json!({"iss": "https://idp.test", "aud": "proxy", "exp": now() - 3600}),
        )),
        u,
        Expired,
    )
    .await;
    assert!(a.body.contains("<Code>ExpiredToken</Code>"));
    let no_exp = json!({"sub": "alice", "iss": "https://idp.test", "aud": "proxy"});
    expect_rejected(&layer, &hs(no_exp), u, Malformed).await;
    let future = claims(json!({"iss": "https://idp.test", "aud": "proxy", "nbf": now() + 3600}));
    expect_rejected(&layer, &hs(future), u, NotYetValid).await;
    expect_rejected(
        &layer,
        &hs(claims(json!({"iss": "https://evil.test", "aud": "proxy"}))),
        u,
        BadIssuer,
    )
    .await;
    expect_rejected(&layer, &hs(claims(json!({"aud": "proxy"}))), u, BadIssuer).await;
    expect_rejected(
        &layer,
        &hs(claims(json!({"iss": "https://idp.test", "aud": "nope"}))),
        u,
        BadAudience,
    )
    .await;
    expect_rejected(&layer, &hs(claims(json!({"iss": "https://idp.test"}))), u, BadAudience).await;
    let many = claims(json!({"iss": "https://idp.test", "aud": ["x", "other"]}));
    assert_eq!(send(&layer, bearer(&hs(many))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn leeway_tolerates_small_skew() {
    let layer = hs_layer(json!({"leeway_seconds": 600}));
    let token = hs(claims(json!({"exp": now() - 60, "nbf": now() + 60})));
    assert_eq!(send(&layer, bearer(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn claim_rules_give_403() {
    let layer = hs_layer(json!({"claims": [
        {"claim": "role", "in": ["reader", "admin"]},
        {"claim": "scope", "contains": "s3:read"},
        {"claim": "level", "gte": 2},
        {"claim": "tenant", "equals": "acme"},
    ]}));
    let good = json!({"role": "reader", "scope": "openid s3:read", "level": 3, "tenant": "acme"});
    assert_eq!(
        send(&layer, bearer(&hs(claims(good.clone())))).await.status,
        StatusCode::OK
    );
    for (k, v) in [
        ("role", json!("guest")),
        ("scope", json!("openid")),
        ("level", json!(1)),
        ("tenant", json!("evil")),
        ("level", Value::Null),
    ] {
        let mut c = good.clone();
        c[k] = v;
        let token = hs(claims(c));
        let a = expect_rejected(&layer, &token, StatusCode::FORBIDDEN, AuthOutcome::Forbidden).await;
        assert!(a.body.contains("<Code>AccessDenied</Code>"));
        assert!(!a.res.headers.contains_key(header::WWW_AUTHENTICATE));
    }
    let mut no_role = good;
    no_role.as_object_mut().unwrap().remove("role");
    let token = hs(claims(no_role));
    expect_rejected(&layer, &token, StatusCode::FORBIDDEN, AuthOutcome::Forbidden).await;
}

#[tokio::test]
async fn token_sources_in_order_and_stripped() {
    let layer = hs_layer(json!({"token_sources": [
        {"type": "header", "name": "x-token", "prefix": "Token "},
        {"type": "query", "name": "access_token"},
        {"type": "bearer"},
    ]}));
    let token = hs(claims(json!({})));

    let req = Request::get("/k?a=1")
        .header("x-token", format!("Token {token}"))
        .body(Body::empty())
        .unwrap();
    let a = send(&layer, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.seen()["x_token"], false);
    assert_eq!(a.seen()["uri"], "/k?a=1");

    // Without the prefix, the header is no token; the query is tried next.
    let req = Request::get(format!("/k?a=1&access_token={token}&b=%20"))
        .header("x-token", token.clone())
        .body(Body::empty())
        .unwrap();
    let a = send(&layer, req).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.seen()["uri"], "/k?a=1&b=%20");
    assert_eq!(a.seen()["x_token"], false);

    // The first source wins: a bad header token is not rescued by a good query token.
    let req = Request::get(format!("/k?access_token={token}"))
        .header("x-token", "Token garbage")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&layer, req).await.outcome(), Some(AuthOutcome::Malformed));

    let a = send(&layer, bearer(&token)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.seen()["authorization"], false);

    // Query token only: stripped entirely, even on rejection paths nothing leaks.
    let req = Request::get(format!("/k?access_token={token}"))
        .body(Body::empty())
        .unwrap();
    let a = send(&layer, req).await;
    assert_eq!(a.seen()["uri"], "/k");

    // Only configured sources count.
    let query_only = hs_layer(json!({"token_sources": [{"type": "query", "name": "t"}]}));
    let a = send(&query_only, bearer(&token)).await;
    assert_eq!(a.outcome(), Some(AuthOutcome::Missing));
}

#[tokio::test]
async fn public_key_files_of_every_family() {
    let cases = [
        (
            Algorithm::RS256,
            "RS256",
            EncodingKey::from_rsa_pem(&pem("rsa-private.pem")),
            "rsa-public.pem",
        ),
        (
            Algorithm::RS512,
            "RS512",
            EncodingKey::from_rsa_pem(&pem("rsa-private.pem")),
            "rsa-public.pem",
        ),
        (
            Algorithm::PS256,
            "PS256",
            EncodingKey::from_rsa_pem(&pem("rsa-private.pem")),
            "rsa-public.pem",
        ),
        (
            Algorithm::ES256,
            "ES256",
            EncodingKey::from_ec_pem(&pem("ec-private.pem")),
            "ec-public.pem",
        ),
        (
            Algorithm::EdDSA,
            "EdDSA",
            EncodingKey::from_ed_pem(&pem("ed25519-private.pem")),
            "ed25519-public.pem",
        ),
    ];
    for (alg, name, key, public) in cases {
        let key = key.unwrap();
        let layer = AuthLayer::from_config(&config(json!({
            "algorithm": name, "public_key_file": fixture(public),
        })))
        .unwrap();
        let token = sign(alg, &key, None, claims(json!({})));
        let a = send(&layer, bearer(&token)).await;
        assert_eq!(a.status, StatusCode::OK, "{name}: {}", a.body);
        // HS256 signed with the public key as secret (key confusion) is refused.
        let confused = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&pem(public)),
            None,
            claims(json!({})),
        );
        expect_rejected(&layer, &confused, StatusCode::UNAUTHORIZED, AuthOutcome::BadAlgorithm).await;
    }
    // A token of another RSA key does not verify.
    let layer = AuthLayer::from_config(&config(json!({
        "algorithm": "RS256", "public_key_file": fixture("rsa-public.pem"),
    })))
    .unwrap();
    let other = EncodingKey::from_rsa_pem(&pem("rsa2-private.pem")).unwrap();
    let token = sign(Algorithm::RS256, &other, None, claims(json!({})));
    expect_rejected(&layer, &token, StatusCode::UNAUTHORIZED, AuthOutcome::BadSignature).await;
}

#[tokio::test]
async fn config_errors_name_the_key() {
    let err = |v: Value| AuthLayer::from_config(&config(v)).unwrap_err();
    let e = err(json!({"algorithm": "HS999", "secret": "x"}));
    assert_eq!(e.to_string(), "jwt.algorithm: unknown algorithm 'HS999'");
    assert!(matches!(
        err(json!({"algorithm": "none", "secret": "x"})),
        AuthConfigError::UnknownAlgorithm(_)
    ));
    assert!(matches!(err(json!({"secret": "x"})), AuthConfigError::MissingAlgorithm));
    let e = err(json!({"algorithm": "HS256"}));
    assert_eq!(e.to_string(), "jwt: no key: set secret, public_key_file or jwks_url");
    assert!(matches!(
        err(json!({"algorithm": "HS256", "secret": "x", "jwks_url": "http://127.0.0.1:1/"})),
        AuthConfigError::ConflictingKeys
    ));
    let e = err(json!({"algorithm": "RS256", "secret": "supersecretvalue"}));
    assert_eq!(e.to_string(), "jwt.secret: cannot be used with algorithm RS256");
    assert!(!format!("{e:?}").contains("supersecretvalue"));
    assert!(matches!(
        err(json!({"algorithm": "HS256", "secret": ""})),
        AuthConfigError::EmptySecret
    ));
    let e = err(json!({"algorithm": "RS256", "public_key_file": "/nonexistent/key.pem"}));
    assert!(
        e.to_string()
            .starts_with("jwt.public_key_file: cannot read /nonexistent/key.pem"),
        "{e}"
    );
    let e = err(json!({"algorithm": "ES256", "public_key_file": fixture("rsa-public.pem")}));
    assert!(e.to_string().starts_with("jwt.public_key_file: "), "{e}");
    let e = err(json!({"algorithm": "RS256", "public_key_file": fixture("README.md")}));
    assert!(matches!(e, AuthConfigError::BadKeyFile { .. }), "{e}");
    let e = err(json!({"algorithm": "HS256", "public_key_file": fixture("rsa-public.pem")}));
    assert!(matches!(
        e,
        AuthConfigError::KeyAlgorithmMismatch {
            key: "public_key_file",
            ..
        }
    ));
    let e = err(json!({"algorithm": "RS256", "jwks_url": "ftp://x/"}));
    assert!(e.to_string().starts_with("jwt.jwks_url: "));
    let e = err(json!({"algorithm": "HS256", "secret": "x", "claims": [{"claim": "role"}]}));
    assert!(e.to_string().starts_with("jwt.claims[0]: no operator"), "{e}");
    let e =
        err(json!({"algorithm": "HS256", "secret": "x", "token_sources": [{"type": "header", "name": "bad header"}]}));
    assert!(e.to_string().starts_with("jwt.token_sources[0]: name"), "{e}");
    let e = err(json!({"algorithm": "HS256", "secret": "x", "token_sources": []}));
    assert!(e.to_string().starts_with("jwt.token_sources[0]: empty"), "{e}");
    let e = err(json!({"algorithm": "HS256", "secret": "x", "audience": []}));
    assert_eq!(e.to_string(), "jwt.audience: empty list");
}

/// A JWKS endpoint on 127.0.0.1 whose document can be swapped (key rotation).
struct JwksServer {
    url: String,
    doc: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(doc: String) -> Self {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (d, h) = (d.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = d.lock().unwrap().clone();
                    ([(header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, doc, hits }
    }

    fn set(&self, doc: String) {
        *self.doc.lock().unwrap() = doc;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn jwks(keys: &[(&str, &EncodingKey)]) -> String {
    let keys = keys
        .iter()
        .map(|(kid, key)| {
            let mut jwk = Jwk::from_encoding_key(key, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some(kid.to_string());
            jwk
        })
        .collect();
    let mut doc = serde_json::to_value(JwkSet { keys }).unwrap();
    // An encryption key and an unsupported entry are skipped, not fatal.
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "junk"}));
    doc.to_string()
}

fn jwks_config(url: &str, min_refetch: u64) -> JwtConfig {
    config(json!({"algorithm": "RS256", "jwks_url": url, "jwks_min_refetch_seconds": min_refetch}))
}

#[tokio::test]
async fn jwks_keys_by_kid_with_rotation() {
    let k1 = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let k2 = EncodingKey::from_rsa_pem(&pem("rsa2-private.pem")).unwrap();
    let server = JwksServer::start(jwks(&[("k1", &k1)])).await;
    let layer = AuthLayer::from_config_async(&jwks_config(&server.url, 0))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);

    let t1 = sign(Algorithm::RS256, &k1, Some("k1"), claims(json!({})));
    assert_eq!(send(&layer, bearer(&t1)).await.status, StatusCode::OK);
    // A one-key set also serves tokens without kid.
    let anon = sign(Algorithm::RS256, &k1, None, claims(json!({})));
    assert_eq!(send(&layer, bearer(&anon)).await.status, StatusCode::OK);
    assert_eq!(server.hits(), 1, "cached keys need no fetch");

    // k2 signed with the kid of k1: bad signature, no fetch.
    let liar = sign(Algorithm::RS256, &k2, Some("k1"), claims(json!({})));
    expect_rejected(&layer, &liar, StatusCode::UNAUTHORIZED, AuthOutcome::BadSignature).await;
    assert_eq!(server.hits(), 1);

    // Rotation: the IdP now publishes k2 only; an unknown kid triggers a fetch.
    server.set(jwks(&[("k2", &k2)]));
    let t2 = sign(Algorithm::RS256, &k2, Some("k2"), claims(json!({})));
    let a = send(&layer, bearer(&t2)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.seen()["subject"], "alice");
    assert_eq!(server.hits(), 2);
    // k1 is gone.
    expect_rejected(&layer, &t1, StatusCode::UNAUTHORIZED, AuthOutcome::UnknownKey).await;
    assert_eq!(server.hits(), 3);
    // A wrong algorithm is rejected before any key lookup or fetch.
    let hs = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"k2"),
        Some("k9"),
        claims(json!({})),
    );
    expect_rejected(&layer, &hs, StatusCode::UNAUTHORIZED, AuthOutcome::BadAlgorithm).await;
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn jwks_refetch_on_unknown_kid_is_rate_limited() {
    let k1 = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let server = JwksServer::start(jwks(&[("k1", &k1)])).await;
    let layer = AuthLayer::from_config_async(&jwks_config(&server.url, 3600))
        .await
        .unwrap();
    assert_eq!(server.hits(), 1);
    for kid in ["x1", "x2", "x3"] {
        let t = sign(Algorithm::RS256, &k1, Some(kid), claims(json!({})));
        expect_rejected(&layer, &t, StatusCode::UNAUTHORIZED, AuthOutcome::UnknownKey).await;
    }
    assert_eq!(server.hits(), 1, "unknown kids must not hammer the IdP");
}

#[tokio::test]
async fn jwks_unavailable_fails_closed() {
    // Nothing listens on this port once the listener is dropped.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/jwks.json");
    let e = AuthLayer::from_config_async(&jwks_config(&url, 0)).await.unwrap_err();
    assert!(e.to_string().starts_with("jwt.jwks_url: "), "{e}");

    // A JWKS without any key for the algorithm is also refused at start.
    let ec = EncodingKey::from_ec_pem(&pem("ec-private.pem")).unwrap();
    let mut jwk = Jwk::from_encoding_key(&ec, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ec".into());
    let server = JwksServer::start(serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()).await;
    let e = AuthLayer::from_config_async(&jwks_config(&server.url, 0))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no usable"), "{e}");

    // Built lazily, an unreachable JWKS answers 503, never lets a request through.
    let layer = AuthLayer::from_config(&jwks_config(&url, 0)).unwrap();
    let k1 = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let t = sign(Algorithm::RS256, &k1, Some("k1"), claims(json!({})));
    let a = expect_rejected(
        &layer,
        &t,
        StatusCode::SERVICE_UNAVAILABLE,
        AuthOutcome::KeysUnavailable,
    )
    .await;
    assert_eq!(a.res.headers[header::RETRY_AFTER], "1");
}

#[tokio::test]
async fn lazy_jwks_is_fetched_on_first_request() {
    let k1 = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let server = JwksServer::start(jwks(&[("k1", &k1)])).await;
    let layer = AuthLayer::from_config(&jwks_config(&server.url, 3600)).unwrap();
    assert_eq!(server.hits(), 0);
    let t = sign(Algorithm::RS256, &k1, Some("k1"), claims(json!({})));
    assert_eq!(send(&layer, bearer(&t)).await.status, StatusCode::OK);
    assert_eq!(send(&layer, bearer(&t)).await.status, StatusCode::OK);
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn drops_into_an_axum_router() {
    let layer = hs_layer(json!({}));
    let app = axum::Router::new()
        .route(
            "/whoami",
            axum::routing::get(|axum::Extension(id): axum::Extension<Identity>| async move {
                id.subject.unwrap_or_default()
            }),
        )
        .layer(layer);
    let token = hs(claims(json!({})));
    let res = app.clone().oneshot(bearer_to("/whoami", &token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"alice");
    let res = app
        .oneshot(Request::get("/whoami").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

fn bearer_to(uri: &str, token: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::AUTHORIZATION, format!("bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

/// Waits (real time, generous deadline) until the server was hit `n` times.
async fn wait_for_hits(server: &JwksServer, n: usize) {
    for _ in 0..400 {
        if server.hits() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the JWKS was fetched {} times, expected {n}", server.hits());
}

#[tokio::test]
async fn jwks_background_refresh_rotates_and_keeps_keys_on_failure() {
    let k1 = EncodingKey::from_rsa_pem(&pem("rsa-private.pem")).unwrap();
    let k2 = EncodingKey::from_rsa_pem(&pem("rsa2-private.pem")).unwrap();
    let server = JwksServer::start(jwks(&[("k1", &k1)])).await;
    // Unknown kids never cause a fetch here: only the background refresh can load k2.
    let cfg = config(json!({
        "algorithm": "RS256", "jwks_url": server.url, "jwks_refresh_seconds": 1, "jwks_min_refetch_seconds": 3600,
    }));
    let layer = AuthLayer::from_config_async(&cfg).await.unwrap();
    let t1 = sign(Algorithm::RS256, &k1, Some("k1"), claims(json!({})));
    let t2 = sign(Algorithm::RS256, &k2, Some("k2"), claims(json!({})));

    // A broken document is ignored: the cached k1 keeps working.
    server.set("not json".into());
    wait_for_hits(&server, 2).await;
    assert_eq!(send(&layer, bearer(&t1)).await.status, StatusCode::OK);

    server.set(jwks(&[("k1", &k1), ("k2", &k2)]));
    let hits = server.hits();
    wait_for_hits(&server, hits + 1).await;
    // The fetch has been answered; give the cache swap a moment, then k2 is known.
    let mut ok = false;
    for _ in 0..100 {
        if send(&layer, bearer(&t2)).await.status == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ok, "k2 was never loaded by the background refresh");
    assert_eq!(send(&layer, bearer(&t1)).await.status, StatusCode::OK);
}
