//! When a successful answer is settled: a response whose body is still to
//! come is a success only once that body has ended cleanly.
//!
//! A replica that sends good headers and then breaks the body (a reset, a
//! short body, a stall past the read timeout) has failed that request. Were
//! the success recorded at the headers, it would reset the consecutive
//! failure count before the body failed, and such a replica would never
//! open its breaker. So the [`Permit`] of a 2xx answer with a body rides in
//! the body ([`BreakerBody`]) and is spent there:
//!
//! - the body ends with all its bytes: a success;
//! - the body errors, or ends short of its known length: a failure;
//! - the body is dropped before its end (the client left, a hedge lost, a
//!   cache gave up): no outcome. A client leaving says nothing about the
//!   replica; the permit's drop only frees its half-open trial slot, so no
//!   slot leaks.
//!
//! A half-open trial therefore lasts until its body ends: while it streams,
//! the breaker admits no more than `half_open_requests` trials.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use tower::BoxError;

use super::state::Permit;

/// When a successful answer counts as a success in its breaker.
///
/// For `Response<Body>`: a 2xx answer whose body is still to come carries
/// its permit in the body, which records a success when it ends with all its
/// bytes and a failure when it errors or ends short of its length; dropped
/// before its end (the client left, a hedge lost), it records nothing and
/// frees its half-open trial slot. Any other answer is a success at once.
pub trait Settle: Sized {
    /// Spends `permit`, the permit of an answer classified a success: at
    /// once, or when the answer's body ends.
    fn settle(self, permit: Permit) -> Self;
}

impl Settle for Response<Body> {
    fn settle(self, permit: Permit) -> Self {
        let body = self.body();
        if !self.status().is_success() || http_body::Body::is_end_stream(body) {
            // Headers say it all (a 304, a 404, a `HEAD`, an empty body).
            permit.success();
            return self;
        }
        let remaining = http_body::Body::size_hint(body).exact();
        self.map(|inner| {
            Body::new(BreakerBody {
                inner,
                permit: Some(permit),
                remaining,
            })
        })
    }
}

/// A replica's response body carrying the breaker permit of its request,
/// spent when the body ends (see the module docs).
struct BreakerBody {
    inner: Body,
    /// `None` once spent.
    permit: Option<Permit>,
    /// Bytes still due, when the length is known.
    remaining: Option<u64>,
}

impl BreakerBody {
    fn succeed(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.success();
        }
    }

    fn fail(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.failure();
        }
    }
}

impl http_body::Body for BreakerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let (Some(data), Some(remaining)) = (frame.data_ref(), this.remaining.as_mut()) {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                // A sized body is not necessarily polled past its last byte.
                if this.remaining == Some(0) || this.inner.is_end_stream() {
                    this.succeed();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.fail();
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                if this.remaining.is_some_and(|n| n > 0) {
                    this.fail();
                } else {
                    this.succeed();
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
