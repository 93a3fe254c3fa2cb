//! [`S3Error`]: an error answer as S3 writes it (status, XML body, headers),
//! and the mapping of a [`FetchError`] to it.

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

use super::FetchError;

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
