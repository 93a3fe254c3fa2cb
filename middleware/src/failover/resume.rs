//! Mid-body failover: when the serving replica's body breaks after the
//! headers went out, the response continues from another replica with a
//! `Range` request from the byte already sent, guarded by the `ETag`. A body
//! of unknown length (a `200` sent chunked, without `Content-Length`)
//! resumes too: its rest is asked for open-ended (`bytes=N-`), and the
//! `Content-Range` of the answer says where it ends.
//!
//! Every body cut is the serving replica's failure, resumed or not: it is
//! reported to [`FailoverEvents::failure`](super::FailoverEvents::failure)
//! and logged at WARN here. Its breaker is charged by the replica's own
//! [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer), which
//! watches the body it admitted (see [`Settle`](crate::breaker::Settle)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tower::{BoxError, Service};

use super::future::Run;
use super::pass::Shared;
use crate::error::FetchError;
use crate::object::{ObjectMethod, ObjectRequest};

/// The absolute byte range `first..=last` a response body carries.
fn body_range(res: &Response<Body>) -> Option<(u64, u64)> {
    // A range that runs backwards cannot be resumed (and must not underflow): `None`.
    crate::http::range::body_range(res.status(), res.headers())
}

/// Wraps a served response's body so that it can resume elsewhere, when it
/// can be resumed at all (a `GET` with an `ETag`, and a known range or a
/// `200` of unknown length); a `GET` body that cannot be resumed is
/// watched, so that its cut is still reported as the replica's failure.
pub(crate) fn wrap<S>(shared: Arc<Shared<S>>, req: &ObjectRequest, index: usize, res: Response<Body>) -> Response<Body>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    if req.method() != ObjectMethod::Get || shared.replicas.is_empty() || http_body::Body::is_end_stream(res.body()) {
        return res;
    }
    let etag = res.headers().get(header::ETAG).cloned();
    let range = match body_range(&res) {
        Some((first, last)) => Some((first, Some(last))),
        // Sent without a length: from its first byte to wherever it ends.
        None if res.status() == StatusCode::OK && !res.headers().contains_key(header::CONTENT_LENGTH) => {
            Some((0, None))
        }
        None => None,
    };
    let (Some(etag), Some((first, last))) = (etag.clone(), range) else {
        let why = if etag.is_none() { "no ETag" } else { "length unknown" };
        return res.map(|body| {
            Body::new(WatchedBody {
                shared,
                serving: index,
                why,
                body,
            })
        });
    };
    let (parts, body) = res.into_parts();
    let body = ResumeBody {
        shared,
        key: req.key().into(),
        etag,
        first,
        last,
        sent: 0,
        serving: index,
        resumes_left: 3,
        state: State::Streaming(body),
    };
    Response::from_parts(parts, Body::new(body))
}

enum State<S: Service<ObjectRequest>> {
    Streaming(Body),
    /// A pass for the rest, boxed: it is large and only a failure needs it.
    Resuming(Pin<Box<Run<S>>>),
    Failed,
}

struct ResumeBody<S: Service<ObjectRequest>> {
    shared: Arc<Shared<S>>,
    key: Arc<str>,
    etag: HeaderValue,
    first: u64,
    /// The last byte, once known (a body sent without a length learns it
    /// from its first resume's `Content-Range`).
    last: Option<u64>,
    sent: u64,
    serving: usize,
    resumes_left: u32,
    state: State<S>,
}

impl<S> ResumeBody<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    /// The bytes the body carries in all, when known.
    fn total(&self) -> Option<u64> {
        self.last.map(|last| last - self.first + 1)
    }

    fn start_resume(&mut self, cause: &dyn std::fmt::Display) -> Result<(), BoxError> {
        // The breaker was charged by the replica's breaker layer, which
        // watches the body it admitted: the metric and the log are ours.
        let failed = &self.shared.replicas[self.serving];
        self.shared.events.failure(
            &self.shared.bucket,
            failed.name(),
            &FetchError::BodyCut(cause.to_string()),
        );
        if self.resumes_left == 0 {
            tracing::warn!(bucket = %self.shared.bucket, replica = %failed.name(), error = %cause,
                "Replica '{}' failed mid-body, no resume left: aborting the response", failed.name());
            return Err(format!("upstream body failed: {cause}").into());
        }
        self.resumes_left -= 1;
        let from = self.first + self.sent;
        tracing::warn!(bucket = %self.shared.bucket, error = %cause, offset = from,
            "Replica '{}' failed mid-body, resuming from byte {}", failed.name(), from);
        let range = match self.last {
            Some(last) => format!("bytes={from}-{last}"),
            None => format!("bytes={from}-"),
        };
        let range = HeaderValue::from_str(&range).expect("ascii");
        let req = ObjectRequest::get(self.key.clone())
            .with_header(header::RANGE, range)
            .with_header(header::IF_MATCH, self.etag.clone());
        let etag = self.etag.clone();
        let accept = move |res: &Response<Body>| {
            res.status() == StatusCode::PARTIAL_CONTENT
                && res.headers().get(header::ETAG) == Some(&etag)
                && body_range(res).map(|(f, _)| f) == Some(from)
        };
        // Attempt 1 was the served request: the resume counts from 2.
        self.state = State::Resuming(Box::pin(Run::new(
            self.shared.clone(),
            req,
            Some(self.serving),
            Some(Box::new(accept)),
            false,
            1,
        )));
        Ok(())
    }
}

impl<S> http_body::Body for ResumeBody<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Streaming(body) => match ready!(Pin::new(body).poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            if let Some(total) = this.total() {
                                let room = total - this.sent;
                                if data.len() as u64 > room {
                                    // More than the range: never send bytes past it.
                                    let data = data.slice(..room as usize);
                                    this.sent += room;
                                    return Poll::Ready(Some(Ok(Frame::data(data))));
                                }
                            }
                            this.sent += data.len() as u64;
                        }
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    // A body of unknown length ends where its replica says.
                    None if this.total().is_none_or(|total| this.sent >= total) => return Poll::Ready(None),
                    None => {
                        let total = this.total().unwrap_or_default();
                        let cause = format!("body ended after {} of {total} bytes", this.sent);
                        if let Err(e) = this.start_resume(&cause) {
                            this.state = State::Failed;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                    Some(Err(e)) => {
                        if let Err(e) = this.start_resume(&e) {
                            this.state = State::Failed;
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                },
                State::Resuming(fut) => match ready!(fut.as_mut().poll(cx)) {
                    Ok((index, res)) => {
                        tracing::info!(bucket = %this.shared.bucket, replica = %this.shared.replicas[index].name(),
                            offset = this.first + this.sent, "response resumed");
                        if this.last.is_none() {
                            // The rest's `Content-Range` says where the body ends.
                            this.last = body_range(&res).map(|(_, last)| last);
                        }
                        this.serving = index;
                        this.state = State::Streaming(res.into_body());
                    }
                    Err(e) => {
                        tracing::warn!(bucket = %this.shared.bucket, error = %e, "no replica could resume the response: aborting it");
                        this.state = State::Failed;
                        return Poll::Ready(Some(Err(format!("resume failed: {e}").into())));
                    }
                },
                State::Failed => return Poll::Ready(None),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Failed) || self.total().is_some_and(|total| self.sent >= total)
    }

    fn size_hint(&self) -> SizeHint {
        match self.total() {
            Some(total) => SizeHint::with_exact(total.saturating_sub(self.sent)),
            None => SizeHint::default(),
        }
    }
}

/// A `GET` body that cannot be resumed (no `ETag`, or no known length):
/// passed through as it is, its cut reported as the serving replica's
/// failure (the client's response is cut too).
struct WatchedBody<S> {
    shared: Arc<Shared<S>>,
    serving: usize,
    /// Why it cannot be resumed.
    why: &'static str,
    body: Body,
}

impl<S: Send + Sync + 'static> http_body::Body for WatchedBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        if let Some(Err(e)) = &frame {
            let failed = this.shared.replicas[this.serving].name();
            this.shared
                .events
                .failure(&this.shared.bucket, failed, &FetchError::BodyCut(e.to_string()));
            tracing::warn!(bucket = %this.shared.bucket, replica = %failed, error = %e,
                "Replica '{}' failed mid-body, cannot resume ({}): aborting the response", failed, this.why);
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_of_full_and_partial_answers() {
        let full = Response::builder()
            .header("content-length", "10")
            .body(Body::empty())
            .unwrap();
        assert_eq!(body_range(&full), Some((0, 9)));
        let part = Response::builder()
            .status(206)
            .header("content-range", "bytes 5-9/10")
            .body(Body::empty())
            .unwrap();
        assert_eq!(body_range(&part), Some((5, 9)));
        let empty = Response::builder()
            .header("content-length", "0")
            .body(Body::empty())
            .unwrap();
        assert_eq!(body_range(&empty), None);
        let backwards = Response::builder()
            .status(206)
            .header("content-range", "bytes 9-5/10")
            .body(Body::empty())
            .unwrap();
        assert_eq!(body_range(&backwards), None);
    }
}
