//! Verification against AWS's published examples, and the layer end to end.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use tower::{Layer, ServiceExt};

use super::signed::parse_amz_date;
use super::*;
use crate::auth::config::{Secret, SigV4Config, SigV4Credential};
use crate::auth::verify::Identity;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

fn verifier() -> SigV4Verifier {
    SigV4Verifier::from_config(&SigV4Config {
        credentials: vec![SigV4Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new(SECRET),
        }],
    })
    .unwrap()
}

fn at(amz: &str) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(parse_amz_date(amz).unwrap() as u64)
}

/// AWS's published example: "GET Object" with a range, header form
/// (S3 API reference, "Signature Calculations for the Authorization Header").
fn example_get() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
    h.insert("range", "bytes=0-9".parse().unwrap());
    h.insert("x-amz-content-sha256", EMPTY_SHA256.parse().unwrap());
    h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
    h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
                .parse()
                .unwrap(),
        );
    h
}

#[test]
fn published_header_vector_verifies() {
    let uri: Uri = "/test.txt".parse().unwrap();
    let v = verifier();
    let now = at("20130524T000500Z");
    assert_eq!(
        v.verify(&Method::GET, &uri, &example_get(), now).unwrap(),
        "AKIAIOSFODNN7EXAMPLE"
    );
    let mut tampered = example_get();
    tampered.insert("range", "bytes=0-10".parse().unwrap());
    assert_eq!(
        v.verify(&Method::GET, &uri, &tampered, now),
        Err(SigV4Error::SignatureMismatch)
    );
    let other: Uri = "/test2.txt".parse().unwrap();
    assert_eq!(
        v.verify(&Method::GET, &other, &example_get(), now),
        Err(SigV4Error::SignatureMismatch)
    );
    assert_eq!(
        v.verify(&Method::GET, &uri, &example_get(), at("20130524T001600Z")),
        Err(SigV4Error::Skewed)
    );
}

/// AWS's published presigned example ("Authenticating Requests: Using Query Parameters").
#[test]
fn published_presigned_vector_verifies_and_expires() {
    let uri: Uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404".parse().unwrap();
    let mut h = HeaderMap::new();
    h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
    let v = verifier();
    assert!(v.verify(&Method::GET, &uri, &h, at("20130524T120000Z")).is_ok());
    assert_eq!(
        v.verify(&Method::GET, &uri, &h, at("20130525T000001Z")),
        Err(SigV4Error::Expired)
    );
    assert_eq!(
        v.verify(&Method::GET, &uri, &h, at("20130523T000000Z")),
        Err(SigV4Error::NotYetValid)
    );
    assert_eq!(
        v.verify(&Method::HEAD, &uri, &h, at("20130524T120000Z")),
        Err(SigV4Error::SignatureMismatch)
    );
}

/// HTTP/2 carries the signed host as the `:authority` (the URI's), not a `Host` header.
#[test]
fn http2_authority_is_the_signed_host() {
    let mut h = example_get();
    h.remove("host");
    let now = at("20130524T000500Z");
    let h2: Uri = "https://examplebucket.s3.amazonaws.com/test.txt".parse().unwrap();
    assert_eq!(
        verifier().verify(&Method::GET, &h2, &h, now).unwrap(),
        "AKIAIOSFODNN7EXAMPLE"
    );
    let other: Uri = "https://other.s3.amazonaws.com/test.txt".parse().unwrap();
    assert_eq!(
        verifier().verify(&Method::GET, &other, &h, now),
        Err(SigV4Error::SignatureMismatch)
    );
    // A Host header, when there is one, is what was signed.
    assert_eq!(
        verifier().verify(&Method::GET, &other, &example_get(), now).unwrap(),
        "AKIAIOSFODNN7EXAMPLE"
    );
}

#[test]
fn errors_map_to_s3_codes() {
    let v = verifier();
    let uri: Uri = "/test.txt".parse().unwrap();
    let now = at("20130524T000000Z");
    assert_eq!(
        v.verify(&Method::GET, &uri, &HeaderMap::new(), now),
        Err(SigV4Error::Missing)
    );
    let mut h = example_get();
    let auth = h["authorization"]
        .to_str()
        .unwrap()
        .replace("AKIAIOSFODNN7EXAMPLE", "AKIAUNKNOWN");
    h.insert("authorization", auth.parse().unwrap());
    assert_eq!(v.verify(&Method::GET, &uri, &h, now), Err(SigV4Error::UnknownAccessKey));
    h.insert("authorization", "AWS4-HMAC-SHA256 Credential=x".parse().unwrap());
    let err = v.verify(&Method::GET, &uri, &h, now).unwrap_err();
    assert_eq!(err.to_s3_error().code(), "AuthorizationHeaderMalformed");
    assert_eq!(err.to_s3_error().status(), StatusCode::BAD_REQUEST);
    assert_eq!(SigV4Error::Skewed.to_s3_error().code(), "RequestTimeTooSkewed");
    assert_eq!(SigV4Error::Expired.to_s3_error().code(), "AccessDenied");
    assert_eq!(
        SigV4Error::SignatureMismatch.to_s3_error().code(),
        "SignatureDoesNotMatch"
    );
    assert_eq!(SigV4Error::UnknownAccessKey.to_s3_error().code(), "InvalidAccessKeyId");
}

#[test]
fn amz_dates_parse_to_epoch_seconds() {
    assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
    assert_eq!(parse_amz_date("20130524T000000Z"), Some(1_369_353_600));
    assert_eq!(parse_amz_date("20130524T000000"), None);
    assert_eq!(parse_amz_date("2013052xT000000Z"), None);
}

#[tokio::test]
async fn unsigned_requests_go_to_the_fallback_signed_ones_are_checked() {
    let echo = |tag: &'static str| {
        tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| async move {
            let who = req.extensions().get::<Identity>().and_then(|i| i.subject.clone());
            let auth = req.headers().contains_key(header::AUTHORIZATION);
            Ok::<_, Infallible>(Response::new(Body::from(format!("{tag} {who:?} {auth}"))))
        }))
    };
    let layer = SigV4Layer::from_config(&SigV4Config {
        credentials: vec![SigV4Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new(SECRET),
        }],
    })
    .unwrap();
    let both = layer.with_unsigned(echo("signed"), echo("jwt"));
    let bearer = Request::get("/k")
        .header("authorization", "Bearer x")
        .body(Body::empty())
        .unwrap();
    let res = both.clone().oneshot(bearer).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"jwt None true");
    let only = layer.layer(echo("signed"));
    let res = only
        .clone()
        .oneshot(Request::get("/k").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // No layer in front set an id: the body names a new one.
    assert!(!crate::auth::service::tests::request_id_in(res).await.is_empty());
    let sigv2 = Request::get("/k?AWSAccessKeyId=A&Signature=s&Expires=1")
        .body(Body::empty())
        .unwrap();
    let res = both.oneshot(sigv2).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn credentials_are_stripped() {
    let mut req = Request::get("/k?versionId=3&X-Amz-Signature=abc&X-Amz-Credential=A%2Fb")
        .header("authorization", "AWS4-HMAC-SHA256 x")
        .body(())
        .unwrap();
    strip_credentials(&mut req);
    assert_eq!(req.uri(), "/k?versionId=3");
    assert!(req.headers().get("authorization").is_none());
}

/// A client presigns `GET /data/k` (path style); the app nests the bucket at
/// `/data` with axum, which strips the prefix before SigV4 sees the request.
#[tokio::test]
async fn behind_axum_nest_service_the_signed_path_is_verified_with_original_uri_layer() {
    use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

    let layer = SigV4Layer::from_config(&SigV4Config {
        credentials: vec![SigV4Credential {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: Secret::new(SECRET),
        }],
    })
    .unwrap();
    let echo = tower::service_fn(|req: Request<Body>| async move {
        Ok::<_, Infallible>(Response::new(Body::from(req.uri().path().to_owned())))
    });
    let bucket = Bucket::new("http://localhost".parse().unwrap(), UrlStyle::Path, "data", "us-east-1").unwrap();
    let credentials = Credentials::new("AKIAIOSFODNN7EXAMPLE", SECRET);
    let url = bucket
        .get_object(Some(&credentials), "dir/a b.txt")
        .sign(Duration::from_secs(60));
    let request = || {
        Request::get(&url[url::Position::BeforePath..])
            .header(header::HOST, "localhost")
            .body(Body::empty())
            .unwrap()
    };

    let nested = axum::Router::new().nest_service("/data", layer.layer(echo));
    let res = nested.clone().oneshot(request()).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "axum strips the prefix the client signed"
    );

    let app = nested.layer(crate::routing::OriginalUriLayer::new());
    let res = app.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"/dir/a%20b.txt");
}
