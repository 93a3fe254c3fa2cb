//! Error bodies, codes and the mapping of causes to answers.

use http::{header, StatusCode};

use super::*;

#[test]
fn xml_escapes_and_names_the_request() {
    let xml = S3Error::no_such_key()
        .with_resource("/a/<b>&'\"")
        .with_request_id("r-1")
        .to_xml();
    assert!(xml.contains("<Code>NoSuchKey</Code>"));
    assert!(xml.contains("<Resource>/a/&lt;b&gt;&amp;&apos;&quot;</Resource>"));
    assert!(xml.contains("<RequestId>r-1</RequestId>"));
}

#[test]
fn method_not_allowed_sets_allow() {
    let res = S3Error::method_not_allowed().into_response();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
}

#[test]
fn error_codes_are_read_and_only_plain_ones_kept() {
    let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIA1</AWSAccessKeyId></Error>";
    assert_eq!(s3_error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
    assert_eq!(s3_error_code(b"<Error><Code>a<b</Code></Error>"), None);
    assert_eq!(s3_error_code(b"not xml"), None);
    assert!(FetchError::is_rejection(StatusCode::FORBIDDEN, None));
    assert!(FetchError::is_rejection(StatusCode::BAD_REQUEST, Some("ExpiredToken")));
    assert!(!FetchError::is_rejection(
        StatusCode::BAD_REQUEST,
        Some("InvalidArgument")
    ));
    assert!(!FetchError::is_rejection(StatusCode::NOT_FOUND, Some("NoSuchKey")));
    let e = FetchError::Rejected {
        status: StatusCode::FORBIDDEN,
        code: Some("InvalidAccessKeyId".into()),
    };
    assert_eq!(
        e.to_string(),
        "upstream refused the proxy's request: 403 Forbidden InvalidAccessKeyId"
    );
    let res = S3Error::from_fetch_error(&e).into_response();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
}

#[test]
fn outage_answers_carry_retry_after() {
    let res = S3Error::from_fetch_error(&FetchError::NoReplica).into_response();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    let res = S3Error::from_fetch_error(&FetchError::Timeout(std::time::Duration::from_secs(1)));
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
}
