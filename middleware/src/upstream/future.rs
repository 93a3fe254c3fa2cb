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
        },
        ErrorBody { #[pin] read: ErrorAnswer },
    }
}

impl FetchFuture {
    /// `replica` is the replica's name as the `X-Yatagarasu-Replica` value.
    pub(super) fn sending(
        send: tokio::time::Timeout<SendFuture>,
        timeout: Duration,
        name: Arc<str>,
        replica: Option<HeaderValue>,
    ) -> Self {
        Self {
            state: FetchState::Sending {
                send,
                timeout,
                name,
                replica,
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
                } => {
                    let res = match ready!(send.poll(cx)) {
                        Err(_) => return Poll::Ready(Err(FetchError::Timeout(*timeout))),
                        Ok(Err(e)) => return Poll::Ready(Err(e)),
                        Ok(Ok(res)) => res,
                    };
                    match answered(res, name, replica.as_ref()) {
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
    /// The client's response, or a 5xx as [`FetchError::Status`].
    Done(Result<Response<Body>, FetchError>),
    /// A 4xx that may be a refusal: its error body is read first.
    ReadError(ErrorAnswer),
}

fn answered(res: Response<Body>, name: &Arc<str>, replica: Option<&HeaderValue>) -> Answered {
    let status = res.status();
    if status.is_server_error() {
        return Answered::Done(Err(FetchError::Status(status)));
    }
    let res = client_response(res, replica);
    if !FetchError::is_rejection(status, None) && status != StatusCode::BAD_REQUEST {
        return Answered::Done(Ok(res));
    }
    Answered::ReadError(Box::pin(error_answer(res, status, name.clone())))
}

/// A 4xx that may be the replica refusing the proxy: its body (bounded)
/// names the S3 error code; a refusal is an error (another replica may
/// serve), anything else the client's answer.
async fn error_answer(res: Response<Body>, status: StatusCode, name: Arc<str>) -> Result<Response<Body>, FetchError> {
    let (mut parts, body) = res.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_ERROR_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            bytes::Bytes::new()
        }
    };
    let code = s3_error_code(&bytes);
    if FetchError::is_rejection(status, code.as_deref()) {
        tracing::warn!(
            replica = %name,
            status = status.as_u16(),
            code = code.as_deref().unwrap_or("-"),
            "Replica '{}' refused the proxy's request ({} {}): check its credentials, token and region",
            name,
            status.as_u16(),
            code.as_deref().unwrap_or("without an error code")
        );
        return Err(FetchError::Rejected { status, code });
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
