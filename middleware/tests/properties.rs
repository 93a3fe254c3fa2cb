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
