//! The body of a cacheable miss: every chunk goes on to the client as it
//! arrives and is copied on the side; at a clean end of the stream the object
//! is stored. No second fetch, nothing held back from the client.
//!
//! The copy goes into one buffer of the announced length, the stored body
//! itself: keeping the chunks instead would pin the client library's read
//! buffers, each chunk a slice of a larger allocation (a 96 MiB fill grew
//! the RSS by ~190 MiB), and joining them at the end would double it again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use pin_project_lite::pin_project;

use super::placement::PlacedBodyWriter;
use super::stats::CacheStats;
use super::store::{CacheStore, FillGuard};

/// What a fill needs to store the object once the body has been read.
pub(crate) struct Fill {
    pub(crate) store: CacheStore,
    pub(crate) key: Arc<str>,
    pub(crate) headers: HeaderMap,
    pub(crate) limit: u64,
    pub(crate) expected_len: Option<u64>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) epoch: u64,
    pub(crate) guard: Option<FillGuard>,
    /// The body so far (its buffer chosen at the first chunk).
    pub(crate) parts: FillBuffer,
    pub(crate) len: u64,
    pub(crate) stored: bool,
}

/// Where a fill copies the body: one heap buffer of the announced length,
/// or the store's body placement (see [`super::placement`]).
pub(crate) enum FillBuffer {
    /// Nothing received yet.
    Empty,
    Heap(Vec<u8>),
    Placed(Box<dyn PlacedBodyWriter>),
}

impl Fill {
    fn push(&mut self, data: &Bytes) -> bool {
        self.len += data.len() as u64;
        if self.len > self.limit || self.expected_len.is_some_and(|n| self.len > n) {
            return false;
        }
        if matches!(self.parts, FillBuffer::Empty) {
            self.parts = match self.expected_len.and_then(|n| self.store.placed_writer(n)) {
                Some(writer) => FillBuffer::Placed(writer),
                None => {
                    // The whole object at once (pages are touched only as
                    // written), so that it is never moved by a reallocation.
                    let announced = self.expected_len.unwrap_or(0).min(self.limit);
                    FillBuffer::Heap(Vec::with_capacity(usize::try_from(announced).unwrap_or(0)))
                }
            };
        }
        match &mut self.parts {
            FillBuffer::Empty => false,
            FillBuffer::Heap(parts) => {
                parts.extend_from_slice(data);
                true
            }
            FillBuffer::Placed(writer) => match writer.write(data) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "cache fill abandoned: its body placement failed");
                    false
                }
            },
        }
    }

    fn complete(mut self) {
        if self.expected_len.is_some_and(|n| n != self.len) {
            return;
        }
        let body = match std::mem::replace(&mut self.parts, FillBuffer::Empty) {
            FillBuffer::Empty => Bytes::new(),
            FillBuffer::Heap(parts) => Bytes::from(parts),
            FillBuffer::Placed(writer) => match writer.finish() {
                Ok(body) => body,
                Err(e) => {
                    tracing::debug!(error = %e, "cache fill abandoned: its body placement failed");
                    return;
                }
            },
        };
        self.stored = true;
        // The guard is released once a copy can be found (in memory, or
        // after the Redis write): waiting requests find it.
        let guard = self.guard.take();
        self.store
            .insert_and_release(&self.key, &self.headers, body, self.ttl, self.epoch, guard);
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        // Over the limit, a body error, a short body or the client gone
        // before the end: nothing complete to store.
        if !self.stored {
            CacheStats::inc(&self.store.stats().fills_abandoned);
        }
        // Dropping `guard` wakes requests waiting for this fill.
        let _ = self.guard.take();
    }
}

pin_project! {
    /// A response body that stores what it streams. See the module docs.
    pub struct TeeBody {
        #[pin]
        inner: Body,
        fill: Option<Fill>,
    }
}

impl TeeBody {
    pub(crate) fn new(inner: Body, fill: Fill) -> Self {
        use http_body::Body as _;
        if inner.is_end_stream() {
            // An empty body is never polled: store it now.
            fill.complete();
            return Self { inner, fill: None };
        }
        Self {
            inner,
            fill: Some(fill),
        }
    }
}

fn abandon(fill: &mut Option<Fill>) {
    fill.take();
}

impl http_body::Body for TeeBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(fill) = this.fill.as_mut() {
                        if !fill.push(data) {
                            abandon(this.fill);
                        }
                    }
                }
                // hyper stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    if let Some(fill) = this.fill.take() {
                        fill.complete();
                    }
                }
            }
            Some(Err(_)) => abandon(this.fill),
            None => {
                if let Some(fill) = this.fill.take() {
                    fill.complete();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
