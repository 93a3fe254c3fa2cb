//! The response future of [`S3Upstream`](super::S3Upstream).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower::Service;

use super::{client_response, from_reqwest, MAX_ERROR_BODY};
use crate::error::{s3_error_code, FetchError};

/// reqwest's response future (named through its `tower::Service` impl).
type ReqwestSend = <reqwest::Client as Service<reqwest::Request>>::Future;

/// A request sent over the replica's own HTTP/1 connections
/// (`direct.rs`): an `async fn`, so boxed (one allocation, against the
/// thousands of instructions reqwest's layers took).
pub(super) type DirectSend = BoxFuture<'static, Result<Response<Body>, FetchError>>;

pin_project! {
    /// A request on its way to the replica, through reqwest or directly.
    #[project = SendProj]
    pub(super) enum SendFuture {
        Reqwest { #[pin] send: ReqwestSend },
        Direct { send: DirectSend },
    }
}

impl SendFuture {
    pub(super) fn reqwest(send: ReqwestSend) -> Self {
        SendFuture::Reqwest { send }
    }

    pub(super) fn direct(send: DirectSend) -> Self {
        SendFuture::Direct { send }
    }
}

impl Future for SendFuture {
    type Output = Result<Response<Body>, FetchError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            SendProj::Reqwest { send } => send
                .poll(cx)
                .map(|res| res.map(from_reqwest).map_err(FetchError::from_reqwest)),
            SendProj::Direct { send } => send.as_mut().poll(cx),
        }
    }
}

/// An error answer whose body is read (bounded) to learn its S3 code: rare,
/// so boxed.
type ErrorAnswer = BoxFuture<'static, Result<Response<Body>, FetchError>>;

pin_project! {
    /// The response future of [`S3Upstream`]: the presigned request sent,
    /// its headers awaited within the replica's timeout. Named rather than
    /// boxed, as it runs on every pass-through request (issue 17); only an
    /// error answer, whose body is read, takes a box.
    pub struct FetchFuture {
        #[pin]
        state: FetchState,
    }
}

pin_project! {
    #[project = FetchStateProj]
    enum FetchState {
        Failed { error: Option<FetchError> },
        Sending {
            #[pin]
            send: tokio::time::Timeout<SendFuture>,
            timeout: Duration,
            name: Arc<str>,
            replica: Option<HeaderValue>,
            // What the request asked for, which a `206` must answer.
            asked: Asked,
        },
        ErrorBody { #[pin] read: ErrorAnswer },
    }
}

impl FetchFuture {
    /// `replica` is the replica's name as the `X-Yatagarasu-Replica` value;
    /// `asked` what the request asked for (a `206` must answer it).
    pub(super) fn sending(
        send: tokio::time::Timeout<SendFuture>,
        timeout: Duration,
        name: Arc<str>,
        replica: Option<HeaderValue>,
        asked: Asked,
    ) -> Self {
        Self {
            state: FetchState::Sending {
                send,
                timeout,
                name,
                replica,
                asked,
            },
        }
    }

    pub(super) fn failed(error: FetchError) -> Self {
        Self {
            state: FetchState::Failed { error: Some(error) },
        }
    }
}

impl std::fmt::Debug for FetchFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchFuture").finish_non_exhaustive()
    }
}

impl Future for FetchFuture {
    type Output = Result<Response<Body>, FetchError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                FetchStateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("FetchFuture polled after completion")))
                }
                FetchStateProj::ErrorBody { read } => return read.poll(cx),
                FetchStateProj::Sending {
                    send,
                    timeout,
                    name,
                    replica,
                    asked,
                } => {
                    let res = match ready!(send.poll(cx)) {
                        Err(_) => return Poll::Ready(Err(FetchError::Timeout(*timeout))),
                        Ok(Err(e)) => return Poll::Ready(Err(e)),
                        Ok(Ok(res)) => res,
                    };
                    match answered(res, name, replica.as_ref(), asked, *timeout) {
                        Answered::Done(result) => return Poll::Ready(result),
                        Answered::ReadError(read) => FetchState::ErrorBody { read },
                    }
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// What a replica's answer becomes.
enum Answered {
    /// The client's response, or a failure of the replica (a 5xx, a 429, a
    /// 206 that does not answer the request's range).
    Done(Result<Response<Body>, FetchError>),
    /// A 4xx that may be a refusal: its error body is read first.
    ReadError(ErrorAnswer),
}

fn answered(
    res: Response<Body>,
    name: &Arc<str>,
    replica: Option<&HeaderValue>,
    asked: &Asked,
    timeout: Duration,
) -> Answered {
    let status = res.status();
    if crate::breaker::is_failure_status(status) {
        return Answered::Done(Err(FetchError::Status(status)));
    }
    if status == StatusCode::PARTIAL_CONTENT && !asked.answered_by(res.headers()) {
        tracing::warn!(
            replica = %name,
            range = match asked {
                Asked::Range(v) => v.to_str().unwrap_or("?"),
                _ => "-",
            },
            content_range = res.headers().get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or("-"),
            "Replica '{}' answered 206 with other bytes than the request asked for: not passed on",
            name
        );
        return Answered::Done(Err(FetchError::Status(status)));
    }
    // A 400 or 404 may be a refusal, as its code says (`NoSuchBucket`:
    // the replica has no bucket of the name the proxy asks for).
    if !FetchError::is_rejection(status, None) && status != StatusCode::BAD_REQUEST && status != StatusCode::NOT_FOUND {
        return Answered::Done(Ok(client_response(res, replica)));
    }
    // Read before `client_response` drops them: a `HEAD`'s error has no
    // body, only these headers may say why.
    let hints = Hints::of(res.headers());
    Answered::ReadError(Box::pin(error_answer(
        client_response(res, replica),
        status,
        name.clone(),
        hints,
        timeout,
    )))
}

/// The bytes a request asked for, which a `206` must answer.
#[derive(Debug, Clone)]
pub(super) enum Asked {
    /// The whole object: a `206` is no answer to it.
    Whole,
    /// The range of this `Range` header.
    Range(HeaderValue),
    /// A part (`partNumber`): S3 answers `206` with the part's range, which
    /// only the replica knows.
    Part,
}

impl Asked {
    /// What `req` asks for.
    pub(super) fn of(req: &crate::object::ObjectRequest) -> Self {
        if req.query().iter().any(|(name, _)| name == "partNumber") {
            return Self::Part;
        }
        match req.headers().get(header::RANGE) {
            Some(range) => Self::Range(range.clone()),
            None => Self::Whole,
        }
    }

    /// Whether a `206` with these headers carries the bytes asked for: for a
    /// single range, only when its `Content-Range` is that range of the
    /// length it gives. A `Range` S3 would not serve as one range (several
    /// ranges, or one that does not parse) is not judged, nor is a part.
    fn answered_by(&self, headers: &http::HeaderMap) -> bool {
        use crate::http::range::{parse_content_range, parse_range, RangeSpec};
        let range = match self {
            Self::Whole => return false,
            Self::Part => return true,
            Self::Range(range) => match range.to_str() {
                Ok(range) => range,
                Err(_) => return true,
            },
        };
        let answered = headers
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_content_range);
        let len = answered.and_then(|(_, _, len)| len).unwrap_or(u64::MAX);
        match (parse_range(range, len), answered) {
            (RangeSpec::Full, _) => true,
            (RangeSpec::Bytes(first, last), Some((f, l, len))) => first == f && (last == l || len.is_none()),
            _ => false,
        }
    }
}

/// S3's code for a bucket that does not exist.
const NO_SUCH_BUCKET: &str = "NoSuchBucket";

/// What an error answer's headers say: some servers name the error code in
/// `x-amz-error-code`; S3 names the bucket's region in
/// `x-amz-bucket-region` when the request was signed for another one.
pub(super) struct Hints {
    pub(super) code: Option<String>,
    pub(super) region: Option<String>,
}

impl Hints {
    pub(super) fn of(headers: &http::HeaderMap) -> Self {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Self {
            code: text("x-amz-error-code").and_then(|c| s3_error_code(format!("<Code>{c}</Code>").as_bytes())),
            region: text("x-amz-bucket-region")
                .filter(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .map(str::to_owned),
        }
    }

    /// Whether an answer with `status` and S3 error `code` is the replica
    /// refusing the proxy itself ([`FetchError::is_rejection`]); or, for a
    /// `400` that names no code (a `HEAD`'s has no body), one that names the
    /// bucket's region: S3's answer to a request signed for the wrong
    /// region; or a `404 NoSuchBucket`: the replica has no bucket of the name
    /// the proxy's config gives it (the client names no upstream bucket).
    pub(super) fn refused(&self, status: StatusCode, code: Option<&str>) -> bool {
        FetchError::is_rejection(status, code)
            || (status == StatusCode::BAD_REQUEST && code.is_none() && self.region.is_some())
            || (status == StatusCode::NOT_FOUND && code == Some(NO_SUCH_BUCKET))
    }
}

/// A 4xx that may be the replica refusing the proxy: its body (bounded in
/// size, and in time by the replica's `timeout`: one that stalls it fails
/// as one that stalls its headers) names the S3 error code; a refusal is an
/// error (another replica may serve), anything else the client's answer.
async fn error_answer(
    res: Response<Body>,
    status: StatusCode,
    name: Arc<str>,
    hints: Hints,
    timeout: Duration,
) -> Result<Response<Body>, FetchError> {
    let (mut parts, body) = res.into_parts();
    let read = http_body_util::Limited::new(body, MAX_ERROR_BODY).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Err(_) => return Err(FetchError::Timeout(timeout)),
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            bytes::Bytes::new()
        }
    };
    let code = s3_error_code(&bytes).or_else(|| hints.code.clone());
    if hints.refused(status, code.as_deref()) {
        let region = hints.region.as_deref();
        tracing::warn!(
            replica = %name,
            status = status.as_u16(),
            code = code.as_deref().unwrap_or("-"),
            bucket_region = region.unwrap_or("-"),
            "Replica '{}' refused the proxy's request ({} {}{}): check its {}",
            name,
            status.as_u16(),
            code.as_deref().unwrap_or("without an error code"),
            region.map(|r| format!("; the bucket is in region '{r}'")).unwrap_or_default(),
            if code.as_deref() == Some(NO_SUCH_BUCKET) {
                "bucket name"
            } else {
                "credentials, token and region"
            }
        );
        return Err(FetchError::Rejected { status, code });
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_range(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_206_must_answer_the_range_asked_for() {
        let range = |v: &'static str| Asked::Range(HeaderValue::from_static(v));
        let answers = |asked: Asked, got: &str| asked.answered_by(&content_range(got));
        // No Range: the client asked for the whole object.
        assert!(!answers(Asked::Whole, "bytes 0-65535/1048587"));
        // A part's range is the replica's to say.
        assert!(answers(Asked::Part, "bytes 5242880-10485759/12582912"));
        assert!(answers(range("bytes=0-99"), "bytes 0-99/1000"));
        assert!(answers(range("bytes=900-"), "bytes 900-999/1000"));
        assert!(answers(range("bytes=-100"), "bytes 900-999/1000"));
        // Past the end: the end is the object's.
        assert!(answers(range("bytes=0-5000"), "bytes 0-999/1000"));
        assert!(answers(range("bytes=100-"), "bytes 100-999/*"));
        assert!(!answers(range("bytes=100-199"), "bytes 0-99/1000"));
        assert!(!answers(range("bytes=100-"), "bytes 0-999/1000"));
        assert!(!answers(range("bytes=100-199"), "bytes 100-149/1000"));
        assert!(!answers(range("bytes=100-199"), "nonsense"));
        // Several ranges: not S3's to serve as one; not judged.
        assert!(answers(range("bytes=0-1,5-6"), "nonsense"));
    }

    #[test]
    fn a_bodiless_400_naming_the_buckets_region_is_a_refusal() {
        let mut headers = http::HeaderMap::new();
        let hints = Hints::of(&headers);
        assert!(!hints.refused(StatusCode::BAD_REQUEST, None));
        headers.insert("x-amz-bucket-region", HeaderValue::from_static("eu-west-1"));
        let hints = Hints::of(&headers);
        assert_eq!(hints.region.as_deref(), Some("eu-west-1"));
        assert!(hints.refused(StatusCode::BAD_REQUEST, None));
        // A 400 whose code says something else is the client's answer.
        assert!(!hints.refused(StatusCode::BAD_REQUEST, Some("InvalidArgument")));
        // A missing bucket is the replica's; a missing key is an answer.
        assert!(hints.refused(StatusCode::NOT_FOUND, Some("NoSuchBucket")));
        assert!(!hints.refused(StatusCode::NOT_FOUND, Some("NoSuchKey")));
        assert!(!hints.refused(StatusCode::NOT_FOUND, None));
        headers.insert("x-amz-error-code", HeaderValue::from_static("ExpiredToken"));
        assert_eq!(Hints::of(&headers).code.as_deref(), Some("ExpiredToken"));
        headers.insert("x-amz-bucket-region", HeaderValue::from_static("<script>"));
        assert_eq!(
            Hints::of(&headers).region,
            None,
            "only a region's characters are logged"
        );
    }
}
