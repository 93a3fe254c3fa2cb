//! The access log: one structured line per request, written when its
//! response body ends (or is dropped), with the request metrics recorded at
//! the same moment.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request};
use axum::response::Response;
use yatagarasu_middleware::auth::{AuthOutcome, Identity};
use yatagarasu_middleware::cache::X_CACHE;
use yatagarasu_middleware::failover::HedgeOutcome;
use yatagarasu_middleware::http::headers::content_length;
use yatagarasu_middleware::routing::MatchedBucket;
use yatagarasu_middleware::s3api::S3Operation;
use yatagarasu_middleware::upstream::REPLICA_HEADER;

use crate::metrics::{InFlight, Metrics};
use crate::telemetry::{self, TraceIdField};

pub mod format;

/// The target of the access lines: `RUST_LOG=info,yatagarasu::access=off`
/// turns them off.
pub const TARGET: &str = "yatagarasu::access";

/// What the access line needs from a request, taken when it arrives (see
/// [`begin`] and [`finish`]).
pub(crate) struct AccessStart {
    metrics: Arc<Metrics>,
    in_flight: InFlight,
    started: Instant,
    method: Method,
    path: String,
    id: HeaderValue,
    /// The request span (issue 16): `Span::none()` when tracing is off.
    pub(crate) span: tracing::Span,
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// A request arrived with request id `id`: the clock starts, it counts as in flight.
pub(crate) fn begin(metrics: &Arc<Metrics>, req: &Request<Body>, id: &HeaderValue) -> AccessStart {
    let span = telemetry::request_span(req, id.to_str().unwrap_or_default());
    let trace_id = telemetry::trace_id(&span);
    AccessStart {
        span,
        trace_id,
        metrics: metrics.clone(),
        in_flight: metrics.in_flight(),
        started: Instant::now(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        id: id.clone(),
    }
}

/// One structured line per request, written when the body of `res` ends (or
/// is dropped: `complete=false` for a download the client abandoned), with
/// the bytes sent; the request metrics are recorded at the same moment.
pub(crate) fn finish(start: AccessStart, res: Response) -> Response {
    let header = |name: HeaderName| res.headers().get(name).cloned();
    let record = AccessRecord {
        replica: header(REPLICA_HEADER),
        cache: header(X_CACHE),
        hedge: res.extensions().get::<HedgeOutcome>().map_or("-", |h| h.as_str()),
        bucket: res
            .extensions()
            .get::<MatchedBucket>()
            .map_or_else(|| Arc::from("-"), |b| b.0.clone()),
        operation: res.extensions().get::<S3Operation>().map_or("-", |op| op.as_str()),
        identity: res.extensions().get::<Identity>().and_then(|i| i.subject.clone()),
        status: res.status().as_u16(),
        expected: content_length(res.headers()),
        complete: start.method == Method::HEAD,
        trace_id: start.trace_id,
        span: start.span,
        method: start.method,
        path: start.path,
        id: start.id,
        started: start.started,
        bytes: 0,
        metrics: start.metrics,
        _in_flight: start.in_flight,
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

/// What the access line and the request metrics say, emitted on drop.
struct AccessRecord {
    metrics: Arc<Metrics>,
    _in_flight: InFlight,
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
        let cache = text(&self.cache);
        self.metrics.request_done(
            &self.bucket,
            self.method.as_str(),
            self.operation,
            self.status,
            cache,
            duration,
        );
        if self.bytes > 0 {
            self.metrics.bytes_sent(&self.bucket, self.bytes);
        }
        tracing::info!(
            target: TARGET,
            request_id = %LogSafe(self.id.to_str().unwrap_or_default()),
            method = %LogSafe(self.method.as_str()),
            path = %LogSafe(&self.path),
            bucket = %self.bucket,
            operation = self.operation,
            status = self.status,
            bytes = self.bytes,
            complete = self.complete,
            replica = %text(&self.replica),
            cache = %cache,
            hedge = self.hedge,
            identity = %LogSafe(self.identity.as_deref().unwrap_or("-")),
            trace_id = %TraceIdField(self.trace_id),
            duration_ms = duration.as_secs_f64() * 1000.0,
            "request"
        );
        if !self.span.is_none() {
            self.span.record("http.response.body.size", self.bytes);
        }
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

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let bytes = self.0.as_bytes();
        let end = bytes.len().min(LOG_VALUE_MAX);
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use axum::http::{HeaderValue, Method};
    use opentelemetry::trace::TraceId;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{EnvFilter, Layer};

    use super::{AccessRecord, LogSafe};
    use crate::metrics::Metrics;

    /// What the log layer wrote, line by line.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// An access record with every field set, `hostile` ones included.
    fn full_record(metrics: &Arc<Metrics>) -> AccessRecord {
        AccessRecord {
            metrics: metrics.clone(),
            _in_flight: metrics.in_flight(),
            started: Instant::now() - Duration::from_micros(1500),
            method: Method::GET,
            path: "/b/a b\"c=d\n\u{e9}".into(),
            id: HeaderValue::from_static("req-1"),
            bucket: Arc::from("media"),
            operation: "GetObject",
            status: 206,
            replica: Some(HeaderValue::from_static("eu-west")),
            cache: Some(HeaderValue::from_static("HIT")),
            hedge: "won",
            identity: Some("alice x=1".into()),
            bytes: 4096,
            expected: Some(4096),
            complete: true,
            trace_id: Some(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()),
            span: tracing::Span::none(),
        }
    }

    /// An access record with the optional fields absent.
    fn bare_record(metrics: &Arc<Metrics>) -> AccessRecord {
        AccessRecord {
            metrics: metrics.clone(),
            _in_flight: metrics.in_flight(),
            started: Instant::now(),
            method: Method::HEAD,
            path: "/nowhere".into(),
            id: HeaderValue::from_static("0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0"),
            bucket: Arc::from("-"),
            operation: "-",
            status: 404,
            replica: None,
            cache: None,
            hedge: "-",
            identity: None,
            bytes: 0,
            expected: None,
            complete: false,
            trace_id: None,
            span: tracing::Span::none(),
        }
    }

    /// The lines the binary's log layer writes for `emit`, with the filter `directives`.
    fn logged(json: bool, directives: &str, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let layer = super::format::layer(json, false, out.clone()).with_filter(EnvFilter::new(directives));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        out.text()
    }

    /// `line` with its timestamp replaced by `<ts>` and the value of
    /// `duration_ms` by `<ms>`, once both are checked to be in the format
    /// of the log (RFC 3339 UTC with microseconds; a float as `{:?}`
    /// prints it in text, as serde_json does in JSON).
    fn masked(line: &str, json: bool) -> String {
        let at = usize::from(json) * "{\"timestamp\":\"".len();
        let ts = &line[at..at + 27];
        let shape = ts.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'.',
            26 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
        assert!(shape, "timestamp {ts:?} in {line}");
        let (head, ms) = line.split_once("duration_ms").unwrap();
        let ms = ms.trim_start_matches(['=', '"', ':']);
        let end = ms.find(['}', '\n']).unwrap();
        let (ms, tail) = ms.split_at(end);
        let value: f64 = ms.parse().unwrap();
        let printed = if json {
            serde_json::to_string(&value).unwrap()
        } else {
            format!("{value:?}")
        };
        assert_eq!(ms, printed, "{line}");
        assert!(value >= 0.0, "{line}");
        let sep = if json { "\":" } else { "=" };
        format!("{}<ts>{}duration_ms{sep}<ms>{tail}", &line[..at], &head[at + 27..])
    }

    #[test]
    fn text_access_lines_are_pinned() {
        let metrics = Metrics::new();
        let out = logged(false, "info", || {
            drop(full_record(&metrics));
            drop(bare_record(&metrics));
        });
        let lines: Vec<_> = out.split_inclusive('\n').map(|l| masked(l, false)).collect();
        assert_eq!(
            lines,
            [
                "<ts>  INFO request request_id=req-1 method=GET path=/b/a%20b%22c%3Dd%0A%C3%A9 \
                 bucket=media operation=\"GetObject\" status=206 bytes=4096 complete=true \
                 replica=eu-west cache=HIT hedge=\"won\" identity=alice%20x%3D1 \
                 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 duration_ms=<ms>\n",
                "<ts>  INFO request request_id=0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0 method=HEAD \
                 path=/nowhere bucket=- operation=\"-\" status=404 bytes=0 complete=false \
                 replica=- cache=- hedge=\"-\" identity=- trace_id=- duration_ms=<ms>\n",
            ]
        );
    }

    #[test]
    fn json_access_lines_are_pinned() {
        let metrics = Metrics::new();
        let out = logged(true, "info", || {
            drop(full_record(&metrics));
            drop(bare_record(&metrics));
        });
        let lines: Vec<_> = out.split_inclusive('\n').map(|l| masked(l, true)).collect();
        assert_eq!(
            lines,
            [
                "{\"timestamp\":\"<ts>\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":\"req-1\",\
                 \"method\":\"GET\",\"path\":\"/b/a%20b%22c%3Dd%0A%C3%A9\",\"bucket\":\"media\",\
                 \"operation\":\"GetObject\",\"status\":206,\"bytes\":4096,\"complete\":true,\
                 \"replica\":\"eu-west\",\"cache\":\"HIT\",\"hedge\":\"won\",\"identity\":\"alice%20x%3D1\",\
                 \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"duration_ms\":<ms>}\n",
                "{\"timestamp\":\"<ts>\",\"level\":\"INFO\",\"message\":\"request\",\
                 \"request_id\":\"0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0\",\"method\":\"HEAD\",\
                 \"path\":\"/nowhere\",\"bucket\":\"-\",\"operation\":\"-\",\"status\":404,\"bytes\":0,\
                 \"complete\":false,\"replica\":\"-\",\"cache\":\"-\",\"hedge\":\"-\",\"identity\":\"-\",\
                 \"trace_id\":\"-\",\"duration_ms\":<ms>}\n",
            ]
        );
    }

    #[test]
    fn the_access_target_can_be_turned_off() {
        let metrics = Metrics::new();
        for json in [false, true] {
            let out = logged(json, "info,yatagarasu::access=off", || {
                tracing::info!(target: "yatagarasu::server", "other line");
                drop(full_record(&metrics));
            });
            assert_eq!(out.lines().count(), 1, "{out}");
            assert!(out.contains("other line") && !out.contains("req-1"), "{out}");
            let out = logged(json, "warn", || drop(full_record(&metrics)));
            assert_eq!(out, "");
        }
    }

    #[test]
    fn client_values_cannot_forge_fields() {
        assert_eq!(LogSafe("/data/a.txt").to_string(), "/data/a.txt");
        assert_eq!(
            LogSafe("x status=200 path=\"/y\"\nnext").to_string(),
            "x%20status%3D200%20path%3D%22/y%22%0Anext"
        );
        assert_eq!(LogSafe("caf\u{e9}\\").to_string(), "caf%C3%A9%5C");
        assert!(LogSafe(&"a".repeat(5000)).to_string().len() <= 1027);
    }
}
