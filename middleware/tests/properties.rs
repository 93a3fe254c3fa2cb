//! Properties over arbitrary input: no panic, and no key ever leaves its bucket.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rusty_s3::Credentials;
use yatagarasu_middleware::conditional;
use yatagarasu_middleware::object::{decode_key, ObjectRequest};
use yatagarasu_middleware::routing::{prefix_matches, validate_prefix};
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};

fn upstream() -> S3Upstream {
    let endpoint = "http://127.0.0.1:9000".parse().unwrap();
    S3Upstream::new(
        "p",
        s3_bucket(Some(&endpoint), "bkt", "us-east-1").unwrap(),
        reqwest::Client::new(),
    )
    .with_credentials(Credentials::new("AKIDEXAMPLE", "secret"))
}

/// Paths built from the pieces traversal attempts are made of.
fn tricky_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E".to_owned()),
        Just("%2f".to_owned()),
        Just("%5c".to_owned()),
        Just("\\".to_owned()),
        Just("%00".to_owned()),
        Just("%".to_owned()),
        Just("+".to_owned()),
        Just("?".to_owned()),
        Just("#".to_owned()),
        "[a-z]{1,3}",
        "\\PC{1,2}",
    ];
    proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn accepted_keys_stay_in_their_bucket(path in tricky_path()) {
        if let Ok(key) = decode_key(&path) {
            prop_assert!(!key.is_empty());
            prop_assert!(key.len() <= 1024);
            prop_assert!(!key.split('/').any(|s| s == "." || s == ".."));
            // What is actually sent: the presigned URL, as reqwest's URL parser sees it.
            let url = upstream().presign(&ObjectRequest::get(key.clone()));
            let reparsed: url::Url = url.as_str().parse().unwrap();
            prop_assert!(reparsed.path().starts_with("/bkt/"), "{} -> {}", key, reparsed);
            prop_assert!(reparsed.path().len() > "/bkt/".len());
        }
    }

    #[test]
    fn arbitrary_paths_never_panic(path in "\\PC*") {
        let _ = decode_key(&path);
        let _ = validate_prefix(&path);
        let _ = prefix_matches("/assets", &path);
    }

    #[test]
    fn arbitrary_preconditions_never_panic(
        values in proptest::collection::vec(("[a-zA-Z/\",* :0-9-]{0,40}", 0usize..4), 0..6),
        etag in proptest::option::of("[W/\"a-z0-9]{0,12}"),
        modified in proptest::option::of("[A-Za-z0-9 ,:]{0,30}"),
    ) {
        let names = ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"];
        let mut headers = HeaderMap::new();
        for (value, which) in values {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.append(HeaderName::from_static(names[which]), v);
            }
        }
        let _ = conditional::evaluate(&headers, etag.as_deref(), modified.as_deref());
    }
}

/// Runs `strategy` `cases` times through `check`, which says whether the
/// input was accepted; fails unless at least `min_share` of them were, so a
/// property cannot pass by rejecting everything.
fn not_vacuous<S: Strategy>(strategy: S, cases: u32, min_share: f64, check: impl Fn(S::Value) -> bool) {
    use std::cell::Cell;
    let accepted = Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    runner
        .run(&strategy, |v| {
            if check(v) {
                accepted.set(accepted.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    let share = f64::from(accepted.get()) / f64::from(cases);
    assert!(share >= min_share, "only {share:.3} of the inputs were accepted");
}

#[test]
fn tricky_paths_are_not_all_refused() {
    not_vacuous(tricky_path(), 1000, 0.05, |p| decode_key(&p).is_ok());
}

/// `If-Range` values: the object's own tag, other tags, weak tags, dates, junk.
fn if_range_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"v1\"".to_owned()),
        Just("W/\"v1\"".to_owned()),
        "\"[a-z0-9]{0,6}\"",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_owned()),
        "[A-Za-z0-9 ,:/\"*-]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// `If-Range` holds only for the strong tag or the exact date of the object.
    #[test]
    fn if_range_holds_only_for_the_object_itself(value in if_range_value()) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(http::header::IF_RANGE, v);
            let holds = conditional::if_range_holds(&headers, Some("\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"));
            let exact = value.trim() == "\"v1\"" || value.trim() == "Wed, 21 Oct 2015 07:28:00 GMT";
            prop_assert_eq!(holds, exact, "{}", value);
        }
    }
}

#[test]
fn if_range_values_are_not_all_refused() {
    not_vacuous(if_range_value(), 1000, 0.1, |value| {
        let mut headers = HeaderMap::new();
        let Ok(v) = HeaderValue::from_str(&value) else {
            return false;
        };
        headers.insert(http::header::IF_RANGE, v);
        conditional::if_range_holds(&headers, Some("\"v1\""), Some("Wed, 21 Oct 2015 07:28:00 GMT"))
    });
}

/// Tokens: well signed with arbitrary claims, or bent (header, payload,
/// signature or separators changed).
fn token() -> impl Strategy<Value = String> {
    let claims = (
        proptest::option::of("[a-z]{0,8}"),
        proptest::option::weighted(
            0.9,
            prop_oneof![4 => Just(4_000_000_000i64), 1 => Just(1i64), 1 => any::<i64>()],
        ),
        proptest::option::weighted(0.9, prop_oneof![3 => Just("admin".to_owned()), 1 => "[a-z]{0,5}"]),
    );
    let crit = any::<bool>();
    let bend = 0usize..6;
    (claims, crit, bend, "\\PC{0,12}").prop_map(|((sub, exp, role), crit, bend, junk)| {
        let mut body = serde_json::Map::new();
        if let Some(s) = sub {
            body.insert("sub".into(), s.into());
        }
        if let Some(e) = exp {
            body.insert("exp".into(), e.into());
        }
        if let Some(r) = role {
            body.insert("role".into(), r.into());
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        if crit && bend == 5 {
            header.crit = Some(vec!["x".into()]);
        }
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let good = jsonwebtoken::encode(&header, &body, &key).unwrap();
        match bend {
            1 => good.replacen('.', &junk, 1),
            2 => format!("{good}{junk}"),
            3 => junk,
            4 => good.chars().rev().collect(),
            _ => good,
        }
    })
}

const SECRET: &str = "a-property-test-secret-of-32-byt";

#[test]
fn arbitrary_tokens_never_panic_and_valid_ones_pass() {
    use axum::body::Body;
    use tower::{Layer, ServiceExt};
    use yatagarasu_middleware::auth::{AuthLayer, JwtConfig};

    let cfg: JwtConfig = serde_json::from_value(serde_json::json!({
        "algorithm": "HS256", "secret": SECRET,
        "claims": [{"claim": "role", "equals": "admin"}]
    }))
    .unwrap();
    let layer = AuthLayer::from_config(&cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    not_vacuous(token(), 500, 0.05, |token| {
        let svc = layer.layer(tower::service_fn(|_req: http::Request<Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
        }));
        let Ok(req) = http::Request::get("/k")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
        else {
            return false;
        };
        let status = rt.block_on(svc.oneshot(req)).unwrap().status().as_u16();
        assert!(matches!(status, 200 | 401 | 403), "{status} for {token}");
        status == 200
    });
}
