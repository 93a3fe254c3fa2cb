//! S3-style error responses, and the one place where typed causes become them.
//!
//! Layers facing upstream return small typed causes ([`FetchError`]); the
//! client-facing [`ObjectService`](crate::object::ObjectService) maps them to an
//! [`S3Error`] once, here, so every client sees the status code and XML body an
//! S3 client or browser expects:
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>…</RequestId></Error>
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

/// Why fetching an object from one upstream replica failed.
///
/// Messages never contain a presigned URL or a credential: reqwest errors are
/// stripped of their URL before they are wrapped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The TCP/TLS connection could not be made.
    #[error("connection failed: {}", chain(.0))]
    Connect(#[source] reqwest::Error),
    /// No response headers arrived within the replica's timeout.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The request failed for another transport reason.
    #[error("request failed: {}", chain(.0))]
    Transport(#[source] reqwest::Error),
    /// The replica answered with a server error (5xx, including 503 SlowDown),
    /// or a health probe got an answer that does not prove the replica serves.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// The replica refused the proxy's own request: its credentials, session
    /// token, signature or region are wrong for it (401, 403, a 301/307
    /// redirect, or a 400 with an authorization error code). The client sent
    /// no credentials upstream, so this is the replica's fault: another
    /// replica may serve.
    #[error("upstream refused the proxy's request: {status} {}", .code.as_deref().unwrap_or("(no error code)"))]
    Rejected {
        /// The upstream status.
        status: StatusCode,
        /// The S3 error code from the body (`AccessDenied`, …), when there was one.
        code: Option<String>,
    },
    /// The replica's circuit breaker is open: it was not tried.
    #[error("circuit breaker open")]
    BreakerOpen,
    /// The replica's concurrency limit is reached: it was not tried.
    #[error("too many requests in flight")]
    Overloaded,
    /// No replica is configured or admissible.
    #[error("no replica available")]
    NoReplica,
    /// The replica's body broke after its headers were sent on (a failure
    /// of that replica, reported to [`FailoverEvents`](crate::failover::FailoverEvents)
    /// when a resume starts; the client's response cannot become an error any more).
    #[error("response body cut after the headers: {0}")]
    BodyCut(String),
    /// The replica has no usable credentials (expired, or never obtained):
    /// a failure of that replica.
    #[error("no usable credentials: {0}")]
    Credentials(#[from] crate::credentials::CredentialsError),
}

/// S3 error codes that a `400` carries when the proxy's own signing is wrong
/// for a replica (AWS answers some of them 400, others 403).
const REJECTION_CODES: [&str; 8] = [
    "AuthorizationHeaderMalformed",
    "AuthorizationQueryParametersError",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IllegalLocationConstraintException",
];

/// The `<Code>` of an S3 error body, when it looks like one: ASCII letters
/// and digits only, at most 64 of them (nothing else of the body is kept; it
/// may echo a key id).
pub fn s3_error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = text[start..start + len].trim();
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| code.to_owned())
}

/// An error and its causes, `a: b: c` (reqwest's own message alone is vague:
/// "error sending request").
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl FetchError {
    /// Wraps a reqwest error, removing the (presigned) URL from it.
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        let err = err.without_url();
        if err.is_connect() {
            FetchError::Connect(err)
        } else {
            FetchError::Transport(err)
        }
    }

    /// Whether an upstream answer with this status and S3 error code is the
    /// replica refusing the proxy itself (bad key, expired token, wrong
    /// region) rather than an answer about the object.
    pub fn is_rejection(status: StatusCode, code: Option<&str>) -> bool {
        match status {
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::MOVED_PERMANENTLY
            | StatusCode::TEMPORARY_REDIRECT => true,
            StatusCode::BAD_REQUEST => code.is_some_and(|c| REJECTION_CODES.contains(&c)),
            _ => false,
        }
    }
}

/// An error answer in the format S3 uses: status code, `Code`, `Message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
    resource: Option<String>,
    request_id: Option<String>,
    retry_after: Option<u64>,
    allow: Option<&'static str>,
}

impl S3Error {
    /// A new error with a status, an S3 error code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            resource: None,
            request_id: None,
            retry_after: None,
            allow: None,
        }
    }

    /// 404 `NoSuchKey`.
    pub fn no_such_key() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
    }

    /// 404 `NoSuchBucket`: no configured path prefix matches.
    pub fn no_such_bucket() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist.",
        )
    }

    /// 405 `MethodNotAllowed`, with `Allow: GET, HEAD`.
    pub fn method_not_allowed() -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The specified method is not allowed against this resource.",
        );
        e.allow = Some("GET, HEAD");
        e
    }

    /// 400 `InvalidURI`: the path cannot name an object (traversal, bad encoding).
    pub fn invalid_uri(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidURI", message)
    }

    /// 416 `InvalidRange`.
    pub fn invalid_range() -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            "The requested range is not satisfiable",
        )
    }

    /// 412 `PreconditionFailed`.
    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
        )
    }

    /// 403 `AccessDenied`.
    pub fn access_denied() -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied")
    }

    /// The error for an upstream answer with this 4xx status.
    pub fn from_upstream_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::no_such_key(),
            StatusCode::FORBIDDEN => Self::access_denied(),
            StatusCode::PRECONDITION_FAILED => Self::precondition_failed(),
            StatusCode::RANGE_NOT_SATISFIABLE => Self::invalid_range(),
            StatusCode::BAD_REQUEST => Self::new(status, "InvalidRequest", "Invalid request"),
            s => Self::new(
                s,
                "InvalidRequest",
                s.canonical_reason().unwrap_or("Request failed").to_string(),
            ),
        }
    }

    /// The error a client sees when every replica failed, the last with `cause`.
    pub fn from_fetch_error(cause: &FetchError) -> Self {
        match cause {
            FetchError::Timeout(_) => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "GatewayTimeout",
                "The upstream storage did not answer in time.",
            ),
            FetchError::BreakerOpen | FetchError::NoReplica | FetchError::Overloaded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "No upstream storage replica is available. Please retry.",
            )
            .with_retry_after(1),
            FetchError::Credentials(_) => Self::new(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "The upstream storage failed to answer.",
            )
            .with_retry_after(1),
            FetchError::Rejected { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "BadGateway",
                "The upstream storage refused the proxy's request.",
            )
            .with_retry_after(1),
            FetchError::Connect(_) | FetchError::Transport(_) | FetchError::Status(_) | FetchError::BodyCut(_) => {
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "BadGateway",
                    "The upstream storage failed to answer.",
                )
                .with_retry_after(1)
            }
        }
    }

    /// Names the resource (`/bucket/key`) in the body.
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.resource = Some(resource.into());
        self
    }

    /// Sets the `RequestId` of the body.
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// Sets the `RequestId` of the body to the request's
    /// [`X-Request-Id`](crate::http::headers::REQUEST_ID), or to a new id
    /// when no layer in front set one, so every error body names its request.
    pub fn with_request_id_of(self, request: &http::HeaderMap) -> Self {
        match crate::http::headers::request_id(request) {
            Some(id) => self.with_request_id(id),
            None => self.with_request_id(uuid::Uuid::new_v4().to_string()),
        }
    }

    /// Adds `Retry-After: secs`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The S3 error code (`NoSuchKey`, …).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The XML body.
    pub fn to_xml(&self) -> String {
        let mut xml = String::with_capacity(256);
        xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>");
        xml.push_str(self.code);
        xml.push_str("</Code><Message>");
        escape_into(&mut xml, &self.message);
        xml.push_str("</Message>");
        if let Some(resource) = &self.resource {
            xml.push_str("<Resource>");
            escape_into(&mut xml, resource);
            xml.push_str("</Resource>");
        }
        xml.push_str("<RequestId>");
        if let Some(id) = &self.request_id {
            escape_into(&mut xml, id);
        }
        xml.push_str("</RequestId></Error>");
        xml
    }

    /// The full HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let xml = self.to_xml();
        let mut res = Response::new(Body::from(xml));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl axum::response::IntoResponse for S3Error {
    fn into_response(self) -> axum::response::Response {
        S3Error::into_response(self)
    }
}

/// Escapes text for an XML element (also used by the listing XML).
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {
                let _ = write!(out, "&#x{:x};", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
