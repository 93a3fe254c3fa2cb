//! The access log: one structured line per request, written when its
//! response body ends (or is dropped), with the request metrics recorded at
//! the same moment.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request};
use axum::response::Response;
use yatagarasu_middleware::auth::{AuthOutcome, Identity};
use yatagarasu_middleware::cache::X_CACHE;
use yatagarasu_middleware::failover::HedgeOutcome;
use yatagarasu_middleware::http::headers::body_length;
use yatagarasu_middleware::routing::MatchedBucket;
use yatagarasu_middleware::upstream::REPLICA_HEADER;

use crate::metrics::{InFlight, Metrics};
use crate::telemetry::{self, TraceIdField};

pub mod format;
pub mod output;

/// The target of the access lines: `RUST_LOG=info,yatagarasu::access=off`
/// turns them off.
pub const TARGET: &str = "yatagarasu::access";

/// What the access line needs from a request, taken when it arrives (see
/// [`begin`] and [`finish`]).
pub(crate) struct AccessStart {
    /// Counts the request in flight; holds the metrics the record goes to
    /// (one `Arc` clone per request, not two: the count is shared by every
    /// connection thread).
    in_flight: InFlight,
    started: Instant,
    method: Method,
    path: String,
    id: HeaderValue,
    /// The request span (issue 16): `Span::none()` when tracing is off.
    pub(crate) span: tracing::Span,
    /// The bucket and S3 call, when the edge knows them before the response
    /// (else taken from the response's extensions).
    pub(crate) matched: Option<MatchedBucket>,
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// A request arrived with request id `id`: the clock starts, it counts as in flight.
pub(crate) fn begin(metrics: &Arc<Metrics>, req: &Request<Body>, id: &HeaderValue) -> AccessStart {
    let span = telemetry::request_span(req, id.to_str().unwrap_or_default());
    let trace_id = telemetry::trace_id(&span);
    AccessStart {
        span,
        trace_id,
        in_flight: metrics.in_flight(),
        started: Instant::now(),
        method: req.method().clone(),
        // Only the access line reads it: not copied while the line is off
        // (`yatagarasu::access=off`; an allocation and a copy per request).
        path: if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            req.uri().path().to_owned()
        } else {
            String::new()
        },
        id: id.clone(),
        matched: None,
    }
}

/// One structured line per request, written when the body of `res` ends (or
/// is dropped: `complete=false` for a download the client abandoned), with
/// the bytes sent; the request metrics are recorded at the same moment.
pub(crate) fn finish(start: AccessStart, res: Response) -> Response {
    // Both in one pass over the response's few headers: a lookup each
    // hashed the name (~400 instructions a request; issue 13).
    let (mut replica, mut cache) = (None, None);
    for (name, value) in res.headers() {
        if *name == X_CACHE {
            cache.get_or_insert_with(|| value.clone());
        } else if *name == REPLICA_HEADER {
            replica.get_or_insert_with(|| value.clone());
        }
    }
    // One literal, not `AccessRecord::new` and then the response's fields:
    // that cost every hit ~60 instructions more (`bench/ir.sh hit`: 20,889
    // against 20,830; issue 13).
    let matched = start
        .matched
        .as_ref()
        .or_else(|| res.extensions().get::<MatchedBucket>());
    let record = AccessRecord {
        replica,
        cache,
        hedge: res.extensions().get::<HedgeOutcome>().map_or("-", |h| h.as_str()),
        bucket: matched.map_or_else(|| Arc::from("-"), |m| m.name.clone()),
        operation: matched.map_or("-", |m| m.operation.as_str()),
        identity: res.extensions().get::<Identity>().and_then(|i| i.subject.clone()),
        status: res.status().as_u16(),
        expected: body_length(&res),
        complete: start.method == Method::HEAD,
        duration_us: 0,
        trace_id: start.trace_id,
        span: start.span,
        method: start.method,
        path: start.path,
        id: start.id,
        started: start.started,
        bytes: 0,
        in_flight: start.in_flight,
    };
    if !record.span.is_none() {
        let auth = match (
            res.extensions().get::<AuthOutcome>(),
            res.extensions().get::<Identity>(),
        ) {
            (Some(outcome), _) => outcome.as_str(),
            (None, Some(_)) => "success",
            (None, None) => "none",
        };
        telemetry::record_outcome(
            &record.span,
            &telemetry::RequestOutcome {
                bucket: &record.bucket,
                cache: text(&record.cache),
                auth,
                replica: text(&record.replica),
                status: record.status,
            },
        );
    }
    res.map(|inner| {
        let mut record = record;
        record.complete |= http_body::Body::is_end_stream(&inner);
        Body::new(LoggedBody { inner, record })
    })
}

/// The status logged for a request whose client left before its answer
/// (nginx's "client closed request").
pub const CLIENT_CLOSED: u16 = 499;

/// The client left before the answer (its connection closed, its HTTP/2
/// stream was reset, or a drain's grace time ran out): the line and the
/// request metrics say `499`, `complete=false`, 0 bytes, so a request that
/// ends this way is not missing from them.
pub(crate) fn abandoned(start: AccessStart) {
    drop(AccessRecord::new(start, CLIENT_CLOSED));
}

impl AccessRecord {
    /// The record of `start` answered `status` with no response to read
    /// (see [`abandoned`]); [`finish`] builds its own, from the response.
    fn new(start: AccessStart, status: u16) -> Self {
        let (bucket, operation) = match start.matched {
            Some(m) => (m.name, m.operation.as_str()),
            None => (Arc::from("-"), "-"),
        };
        Self {
            replica: None,
            cache: None,
            hedge: "-",
            bucket,
            operation,
            identity: None,
            status,
            expected: None,
            complete: false,
            duration_us: 0,
            trace_id: start.trace_id,
            span: start.span,
            method: start.method,
            path: start.path,
            id: start.id,
            started: start.started,
            bytes: 0,
            in_flight: start.in_flight,
        }
    }
}

/// What the access line and the request metrics say, emitted on drop.
struct AccessRecord {
    /// The request metrics (and the in-flight count, until dropped).
    in_flight: InFlight,
    started: Instant,
    method: Method,
    path: String,
    id: HeaderValue,
    bucket: Arc<str>,
    /// The S3 call (`GetObject`...), `-` when no bucket was routed to.
    operation: &'static str,
    status: u16,
    replica: Option<HeaderValue>,
    cache: Option<HeaderValue>,
    /// `won` / `lost` when a hedge was sent, `-` otherwise.
    hedge: &'static str,
    identity: Option<String>,
    bytes: u64,
    /// `Content-Length`, when known: the body is complete once it is sent.
    expected: Option<u64>,
    complete: bool,
    /// The request's duration in microseconds, set when it ends.
    duration_us: u64,
    /// The request's trace (issue 16), when tracing is on.
    trace_id: Option<opentelemetry::trace::TraceId>,
    /// The request span, ended with this record (`Span::none()` when off).
    span: tracing::Span,
}

/// A response header's value as logged (`-` when absent or not text).
fn text(v: &Option<HeaderValue>) -> &str {
    v.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-")
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        self.duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let metrics = self.in_flight.metrics();
        metrics.request_done(
            &self.bucket,
            self.method.as_str(),
            self.operation,
            self.status,
            text(&self.cache),
            duration,
        );
        if self.bytes > 0 {
            metrics.bytes_sent(&self.bucket, self.bytes);
        }
        // Every subscriber sees the event's fields; the binary's log layer
        // writes the line from the record instead (issue 13: visiting the
        // fields through `Debug` was most of the line's cost).
        EMITTING.set(self, || self.emit());
        if !self.span.is_none() {
            self.span.record("http.response.body.size", self.bytes);
        }
    }
}

scoped_tls::scoped_thread_local!(
    /// The record whose access event this thread is emitting, for the log
    /// layer to write from ([`format`]).
    static EMITTING: AccessRecord
);

/// One value of an access line, typed as its field is given to the event
/// (see [`AccessRecord::values`]).
#[derive(Debug, Clone, Copy)]
enum LineValue<'a> {
    /// The `message` (a `str`).
    Message(&'a str),
    /// `%LogSafe(value)`: a client-controlled value, escaped.
    Safe(&'a str),
    /// `%value`: written as it is.
    Plain(&'a str),
    /// A `&str` field.
    Str(&'a str),
    U64(u64),
    Bool(bool),
    /// `micros as f64 / 1000.0`: milliseconds.
    Millis(u64),
    /// `%TraceIdField(id)`.
    Trace(Option<opentelemetry::trace::TraceId>),
}

/// The number of fields of the access event.
const LINE_FIELDS: usize = 15;

impl AccessRecord {
    /// The access event. Its fields are [`Self::values`], in the same order.
    fn emit(&self) {
        tracing::info!(
            target: TARGET,
            // A `str` rather than a format string (issue 13): it reaches
            // `record_str`, not `core::fmt`, and prints the same.
            message = "request",
            request_id = %LogSafe(self.id.to_str().unwrap_or_default()),
            method = %LogSafe(self.method.as_str()),
            path = %LogSafe(&self.path),
            bucket = %self.bucket,
            operation = self.operation,
            status = self.status,
            bytes = self.bytes,
            complete = self.complete,
            replica = %text(&self.replica),
            cache = %text(&self.cache),
            hedge = self.hedge,
            identity = %LogSafe(self.identity.as_deref().unwrap_or("-")),
            trace_id = %TraceIdField(self.trace_id),
            // Milliseconds to the microsecond (as nginx's `$request_time`
            // is seconds to the millisecond): 3 decimals at most.
            duration_ms = self.duration_us as f64 / 1000.0,
        );
    }

    /// The values of [`Self::emit`]'s fields, in its order, as the log
    /// layer writes them.
    fn values(&self) -> [LineValue<'_>; LINE_FIELDS] {
        use LineValue::*;
        [
            Message("request"),
            Safe(self.id.to_str().unwrap_or_default()),
            Safe(self.method.as_str()),
            Safe(&self.path),
            Plain(&self.bucket),
            Str(self.operation),
            U64(u64::from(self.status)),
            U64(self.bytes),
            Bool(self.complete),
            Plain(text(&self.replica)),
            Plain(text(&self.cache)),
            Str(self.hedge),
            Safe(self.identity.as_deref().unwrap_or("-")),
            Trace(self.trace_id),
            Millis(self.duration_us),
        ]
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes into its [`AccessRecord`].
    struct LoggedBody {
        #[pin]
        inner: Body,
        record: AccessRecord,
    }
}

impl http_body::Body for LoggedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(data) = f.data_ref() {
                    this.record.bytes += data.len() as u64;
                }
                // A sized body is not necessarily polled to its end.
                if this.record.expected == Some(this.record.bytes) || this.inner.is_end_stream() {
                    this.record.complete = true;
                }
            }
            Poll::Ready(None) => this.record.complete = true,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client-controlled value as it goes into a log line: bytes outside a
/// safe set (space, `"`, `=`, `\\`, control and non-ASCII bytes...) are
/// percent-escaped and long values cut, so that no value can forge another
/// field or line of the text format.
pub struct LogSafe<'a>(pub &'a str);

/// The longest value written, in bytes.
const LOG_VALUE_MAX: usize = 1024;

/// The bytes a value keeps as they are: `SAFE[byte]`.
const SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~:/@!$&'()*+,;%?[]|^`{}<>#";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// `0x01` in each byte of a `u64`.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// `0x80` in each byte of a `u64`.
const HIGHS: u64 = ONES * 0x80;

/// The bytes of `word` that may be unsafe, as their high bit: none for a
/// word of [`SAFE`] bytes; a word holding an unsafe byte always has one
/// (others may be marked too). The safe bytes are `!`..=`~` but `"`, `=`
/// and `\\` (a test holds this to [`SAFE`]).
const fn unsafe_bytes(word: u64) -> u64 {
    // Some byte is zero: exact as a whole, not byte by byte.
    const fn zero(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    let below = word.wrapping_sub(ONES * 0x21) & !word & HIGHS;
    let above = (word.wrapping_add(ONES) | word) & HIGHS;
    below | above | zero(word ^ (ONES * 0x22)) | zero(word ^ (ONES * 0x3d)) | zero(word ^ (ONES * 0x5c))
}

/// Whether every byte of `bytes` is [`SAFE`], eight at a time (issue 13:
/// most values are, and the check is most of their cost).
fn all_safe(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let mut marked = 0;
    for word in &mut words {
        let word: [u8; 8] = word.try_into().unwrap_or_default();
        marked |= unsafe_bytes(u64::from_ne_bytes(word));
    }
    marked == 0 && words.remainder().iter().all(|&b| SAFE[usize::from(b)])
}

impl LogSafe<'_> {
    /// The escaped value, written into `f` (a `String` writes it without
    /// `core::fmt`).
    fn write_into<W: std::fmt::Write + ?Sized>(&self, f: &mut W) -> std::fmt::Result {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let bytes = self.0.as_bytes();
        let end = bytes.len().min(LOG_VALUE_MAX);
        if all_safe(&bytes[..end]) {
            // Safe bytes are ASCII: `end` is a character boundary.
            f.write_str(&self.0[..end])?;
            if end < bytes.len() {
                f.write_str("...")?;
            }
            return Ok(());
        }
        // Runs of safe bytes are written whole (most values are one run),
        // anything else byte by byte, escaped.
        let mut i = 0;
        while i < end {
            let run = bytes[i..end].iter().take_while(|&&b| SAFE[usize::from(b)]).count();
            if run > 0 {
                // Safe bytes are ASCII: the run is valid UTF-8 on its own.
                f.write_str(&self.0[i..i + run])?;
                i += run;
            } else {
                let b = usize::from(bytes[i]);
                f.write_char('%')?;
                f.write_char(char::from(HEX[b >> 4]))?;
                f.write_char(char::from(HEX[b & 15]))?;
                i += 1;
            }
        }
        if bytes.len() > LOG_VALUE_MAX {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.write_into(f)
    }
}

#[cfg(test)]
mod tests;
