//! S3-style error responses, and the one place where typed causes become them.
//!
//! Layers facing upstream return small typed causes ([`FetchError`]); the
//! client-facing [`ObjectService`](crate::object::ObjectService) maps them to
//! an [`S3Error`] once ([`S3Error::from_fetch_error`]), so every client sees
//! the status code and XML body an S3 client or browser expects:
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>…</RequestId></Error>
//! ```

mod s3;
#[cfg(test)]
mod tests;

use http::StatusCode;

pub(crate) use s3::escape_into;
pub use s3::S3Error;

/// Why fetching an object from one upstream replica failed.
///
/// Messages never contain a presigned URL or a credential: reqwest errors are
/// stripped of their URL before they are wrapped, and hyper's carry none.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The TCP/TLS connection could not be made.
    #[error("connection failed: {}", chain(&**.0))]
    Connect(#[source] tower::BoxError),
    /// No response headers arrived within the replica's timeout.
    #[error("no response within {0:?}")]
    Timeout(std::time::Duration),
    /// The request failed for another transport reason.
    #[error("request failed: {}", chain(&**.0))]
    Transport(#[source] tower::BoxError),
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
    /// whether the response resumes elsewhere or is cut; the client's
    /// response cannot become an error any more).
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
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
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
            FetchError::Connect(err.into())
        } else {
            FetchError::Transport(err.into())
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
