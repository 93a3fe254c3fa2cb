//! The log output: tracing-subscriber's `fmt` layer in the text or JSON
//! format (`logging.format`), as the binary installs it.
//!
//! Access lines (target [`TARGET`], one per request) are the bulk of the
//! log, so [`AccessFormat`] writes them itself, in the bytes the stock
//! formatter writes, in one pass: no ANSI styling machinery (off when the
//! output is not a terminal, but still run per field by the stock text
//! formatter), no serde serializer, and a timestamp from [`Rfc3339`]. Every
//! other event, and an access line in a span or on a terminal, goes to the
//! stock formatter. The tests in this module hold the two to the same bytes.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::TARGET;

/// The `fmt` layer writing to `writer`: JSON objects with the event's fields
/// at the top level when `json`, otherwise text lines (with ANSI colours
/// when `ansi`). Events are printed without their target.
pub fn layer<S, W>(json: bool, ansi: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    layer_with_timer(json, ansi, writer, Rfc3339)
}

/// [`layer`] with the timer `timer` (the tests' is fixed).
fn layer_with_timer<S, W, T>(json: bool, ansi: bool, writer: W, timer: T) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    T: FormatTime + Clone + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_target(false).with_writer(writer);
    let stock = format().with_timer(timer.clone());
    if json {
        let stock = stock.json().flatten_event(true);
        fmt.json().event_format(AccessFormat::json(stock, timer)).boxed()
    } else {
        fmt.with_ansi(ansi)
            .event_format(AccessFormat::text(stock, timer))
            .boxed()
    }
}

/// The stock event format of [`layer`], before its timer is chosen.
fn format() -> format::Format {
    format::format().with_target(false)
}

/// An event formatter that writes access lines itself and hands every other
/// event to `inner`, the stock formatter it copies: tracing-subscriber's
/// `Format<Full>` (text) or `Format<Json>` with `flatten_event(true)` (JSON),
/// both without the target, with the timer `T`.
#[derive(Debug)]
pub struct AccessFormat<F, T> {
    inner: F,
    timer: T,
    json: bool,
    /// The field prefixes of the first access callsite seen (the access
    /// lines come from one).
    prefixes: OnceLock<Prefixes>,
}

/// What goes before each field of one callsite's events, worked out once:
/// ` name=` (text; ` ` for the message) or `,"name":` (JSON), by field index.
/// `None` when a name is one the stock text formatter treats specially.
#[derive(Debug)]
struct Prefixes {
    callsite: Identifier,
    fields: Option<Vec<(Box<str>, bool)>>,
}

impl Prefixes {
    fn new(json: bool, event: &Event<'_>) -> Self {
        let names = event.metadata().fields();
        let usual = json
            || names
                .iter()
                .all(|f| !f.name().starts_with("log.") && !f.name().starts_with("r#"));
        let fields = usual.then(|| {
            names
                .iter()
                .map(|f| {
                    let (name, message) = (f.name(), f.name() == "message");
                    let prefix = if json {
                        let mut p = String::from(",\"");
                        p.push_str(name);
                        escape_json_from(&mut p, 1);
                        p.push_str("\":");
                        p
                    } else if message {
                        " ".to_owned()
                    } else {
                        format!(" {name}=")
                    };
                    (prefix.into_boxed_str(), message)
                })
                .collect()
        });
        Self {
            callsite: event.metadata().callsite(),
            fields,
        }
    }

    /// The prefixes for `event`, when it comes from this callsite.
    fn of(&self, event: &Event<'_>) -> Option<&[(Box<str>, bool)]> {
        if event.metadata().callsite() == self.callsite {
            self.fields.as_deref()
        } else {
            None
        }
    }
}

impl<F, T> AccessFormat<F, T> {
    /// Access lines in the text format of `inner`, a `Format<Full, T>`.
    pub fn text(inner: F, timer: T) -> Self {
        Self {
            inner,
            timer,
            json: false,
            prefixes: OnceLock::new(),
        }
    }

    /// Access lines in the JSON format of `inner`, a `Format<Json, T>` with
    /// `flatten_event(true)`.
    pub fn json(inner: F, timer: T) -> Self {
        Self {
            inner,
            timer,
            json: true,
            prefixes: OnceLock::new(),
        }
    }
}

thread_local! {
    /// The line being written, reused: it reaches the output only whole.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, N, F, T> FormatEvent<S, N> for AccessFormat<F, T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
    T: FormatTime,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // The stock formatters print the event's spans (and ANSI styles):
        // those lines are theirs to write.
        if event.metadata().target() != TARGET
            || (!self.json && writer.has_ansi_escapes())
            || ctx.event_scope().is_some()
        {
            return self.inner.format_event(ctx, writer, event);
        }
        let written = LINE.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return None;
            };
            line.clear();
            let done = if self.json {
                self.json_line(&mut line, event)
            } else {
                self.text_line(&mut line, event, writer.sanitizes_ansi_escapes())
            };
            done.ok().map(|()| writer.write_str(&line))
        });
        match written {
            Ok(Some(result)) => result,
            // An unusual field, or the line buffer in use: the stock format.
            Ok(None) | Err(_) => self.inner.format_event(ctx, writer, event),
        }
    }
}

/// A field the copy does not write as the stock formatter would (an error
/// value, a raw identifier, a `log.` field...): the stock formatter writes
/// the line instead. Also the error of a failed write.
#[derive(Debug)]
struct Unusual;

impl From<fmt::Error> for Unusual {
    fn from(_: fmt::Error) -> Self {
        Unusual
    }
}

impl<F, T: FormatTime> AccessFormat<F, T> {
    /// `Format<Full>`: `<time> <level padded to 5> <fields>`.
    fn text_line(&self, line: &mut String, event: &Event<'_>, sanitize: bool) -> Result<(), Unusual> {
        if self.timer.format_time(&mut Writer::new(line)).is_err() {
            line.push_str("<unknown time>");
        }
        line.push(' ');
        line.push_str(match *event.metadata().level() {
            Level::TRACE => "TRACE",
            Level::DEBUG => "DEBUG",
            Level::INFO => " INFO",
            Level::WARN => " WARN",
            Level::ERROR => "ERROR",
        });
        line.push(' ');
        let prefixes = self.prefixes.get_or_init(|| Prefixes::new(false, event)).of(event);
        let mut fields = TextFields {
            line,
            first: true,
            sanitize,
            prefixes,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push('\n');
        Ok(())
    }

    /// `Format<Json>`, flattened: `{"timestamp":..,"level":..,<fields>}`.
    fn json_line(&self, line: &mut String, event: &Event<'_>) -> Result<(), Unusual> {
        line.push_str("{\"timestamp\":\"");
        let at = line.len();
        // The stock JSON format writes no line when the time is unknown.
        self.timer.format_time(&mut Writer::new(line))?;
        escape_json_from(line, at - 1);
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        let prefixes = self.prefixes.get_or_init(|| Prefixes::new(true, event)).of(event);
        let mut fields = JsonFields {
            line,
            prefixes,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        line.push_str("}\n");
        Ok(())
    }
}

/// The fields as tracing-subscriber's `DefaultFields` writes them with ANSI
/// off: `message` bare (with terminal controls escaped), then ` name=value`
/// with the value's `Debug`.
struct TextFields<'a> {
    line: &'a mut String,
    first: bool,
    /// Escape terminal controls in the message (the layer's default).
    sanitize: bool,
    prefixes: Option<&'a [(Box<str>, bool)]>,
    result: Result<(), Unusual>,
}

impl TextFields<'_> {
    /// The separator before a field and its name; `Err` for a name the stock
    /// formatter treats specially.
    fn name(&mut self, field: &Field) -> Result<bool, Unusual> {
        if let Some((prefix, message)) = self.prefixes.and_then(|p| p.get(field.index())) {
            // Without its leading space before the first field.
            self.line
                .push_str(&prefix[usize::from(std::mem::take(&mut self.first))..]);
            return Ok(*message);
        }
        let name = field.name();
        if name.starts_with("log.") || name.starts_with("r#") {
            return Err(Unusual);
        }
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if name == "message" {
            return Ok(true);
        }
        self.line.push_str(name);
        self.line.push('=');
        Ok(false)
    }

    fn debug(&mut self, field: &Field, value: &dyn fmt::Debug) -> Result<(), Unusual> {
        if self.name(field)? {
            let at = self.line.len();
            write!(self.line, "{value:?}")?;
            if self.sanitize {
                escape_terminal_from(self.line, at);
            }
        } else {
            write!(self.line, "{value:?}")?;
        }
        Ok(())
    }

    fn record(&mut self, f: impl FnOnce(&mut Self) -> Result<(), Unusual>) {
        if self.result.is_ok() {
            self.result = f(self);
        }
    }
}

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(|s| s.debug(field, value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(|s| {
            if field.name() == "message" {
                return s.debug(field, &format_args!("{value}"));
            }
            s.name(field)?;
            // `{:?}` of a str: quoted, with `"`, `\` and non-printable characters escaped.
            if value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            {
                s.line.push('"');
                s.line.push_str(value);
                s.line.push('"');
            } else {
                write!(s.line, "{value:?}")?;
            }
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(|s| {
            s.name(field)?;
            s.line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(|s| {
            s.name(field)?;
            s.line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(|s| {
            s.name(field)?;
            s.line.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(|s| {
            s.name(field)?;
            // In this range (a duration in ms up to 11 days) `{:?}` writes
            // the shortest digits that read back as `value`, without an
            // exponent, as ryu does. Outside it `{:?}` may use an exponent
            // where ryu does not, and from 2^34 on the two can break a tie
            // between two shortest digit strings differently.
            if (RYU_FROM..RYU_UNTIL).contains(&value) {
                s.line.push_str(ryu::Buffer::new().format_finite(value));
            } else {
                write!(s.line, "{value:?}")?;
            }
            Ok(())
        });
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.result = Err(Unusual);
    }
}

/// Where ryu writes what `{:?}` writes for an `f64` (see `record_f64`).
const RYU_FROM: f64 = 1e-4;
const RYU_UNTIL: f64 = 1e9;

/// The characters tracing-subscriber escapes in a message (terminal
/// controls), escaped from `line[at..]` on.
fn escape_terminal_from(line: &mut String, at: usize) {
    let unsafe_char = |c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
    if !line[at..].chars().any(unsafe_char) {
        return;
    }
    let raw = line.split_off(at);
    for c in raw.chars() {
        match c {
            '\x1b' => line.push_str("\\x1b"),
            '\x07' => line.push_str("\\x07"),
            '\x08' => line.push_str("\\x08"),
            '\x0c' => line.push_str("\\x0c"),
            '\x7f' => line.push_str("\\x7f"),
            c if unsafe_char(c) => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
}

/// The fields as `tracing_serde::SerdeMapVisitor` serializes them with
/// serde_json: `,"name":value`, `Debug` values as JSON strings.
struct JsonFields<'a> {
    line: &'a mut String,
    prefixes: Option<&'a [(Box<str>, bool)]>,
    result: Result<(), Unusual>,
}

impl JsonFields<'_> {
    fn record(&mut self, field: &Field, f: impl FnOnce(&mut String) -> Result<(), Unusual>) {
        if self.result.is_ok() {
            if let Some((prefix, _)) = self.prefixes.and_then(|p| p.get(field.index())) {
                self.line.push_str(prefix);
            } else {
                self.line.push_str(",\"");
                let at = self.line.len();
                self.line.push_str(field.name());
                escape_json_from(self.line, at - 1);
                self.line.push_str("\":");
            }
            self.result = f(self.line);
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |line| {
            line.push('"');
            let at = line.len();
            write!(line, "{value:?}")?;
            escape_json_from(line, at - 1);
            line.push('"');
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, |line| {
            line.push('"');
            let at = line.len();
            line.push_str(value);
            escape_json_from(line, at - 1);
            line.push('"');
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |line| {
            line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |line| {
            line.push_str(itoa::Buffer::new().format(value));
            Ok(())
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, |line| {
            // serde_json's own float format; `null` when not finite.
            match serde_json::Number::from_f64(value) {
                Some(n) => write!(line, "{n}")?,
                None => line.push_str("null"),
            }
            Ok(())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |line| {
            line.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }
}

/// `line[quote + 1..]`, the contents of a JSON string opened by the `"` at
/// `quote`, escaped as serde_json escapes strings (most values need nothing).
fn escape_json_from(line: &mut String, quote: usize) {
    let at = quote + 1;
    if !line.as_bytes()[at..]
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        return;
    }
    let raw = line.split_off(at);
    let escaped = serde_json::to_string(&raw).unwrap_or_default();
    // serde_json's string includes its quotes: `"` .. `"`.
    line.push_str(&escaped[1..escaped.len() - 1]);
}

/// The stock timer's format (`fmt::time::SystemTime`: RFC 3339 in UTC with
/// microseconds, `2026-11-28T02:35:51.123456Z`) without its formatting
/// machinery: the digits are written straight into a buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339;

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(since) => match rfc3339(since.as_secs(), since.subsec_nanos()) {
                Some(text) => w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?),
                None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
            },
            // Before 1970: the stock timer's (rarer) formats.
            Err(_) => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// `secs` and `nanos` after the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`;
/// `None` after the year 9999, which the stock timer writes differently.
fn rfc3339(secs: u64, nanos: u32) -> Option<[u8; 27]> {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days to a civil date (H. Hinnant, "chrono-Compatible Low-Level Date
    // Algorithms", civil_from_days), for days after 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9999 {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(nanos / 1000));
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use axum::http::{HeaderValue, Method};
    use opentelemetry::trace::TraceId;
    use proptest::prelude::*;
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    use super::super::{AccessRecord, TARGET};
    use super::{format, layer_with_timer, rfc3339, Rfc3339, RYU_FROM, RYU_UNTIL};
    use crate::metrics::Metrics;

    /// One instant for both formatters.
    #[derive(Clone)]
    struct Fixed;

    impl FormatTime for Fixed {
        fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
            w.write_str("2026-11-28T02:35:51.123456Z")
        }
    }

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

    /// What the stock tracing-subscriber layer (as the binary built it
    /// before [`super::AccessFormat`]) and ours write for the same events.
    fn both(json: bool, ansi: bool, emit: impl FnOnce()) -> (String, String) {
        let (stock_out, ours_out) = (Captured::default(), Captured::default());
        let fmt = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(stock_out.clone())
            .event_format(format().with_timer(Fixed));
        let stock = if json {
            fmt.json().flatten_event(true).boxed()
        } else {
            fmt.with_ansi(ansi).boxed()
        };
        let ours = layer_with_timer(json, ansi, ours_out.clone(), Fixed);
        let subscriber = tracing_subscriber::registry().with(stock).with(ours);
        tracing::subscriber::with_default(subscriber, emit);
        (stock_out.text(), ours_out.text())
    }

    fn record(metrics: &Arc<Metrics>, v: &Values) -> AccessRecord {
        AccessRecord {
            metrics: metrics.clone(),
            _in_flight: metrics.in_flight(),
            started: Instant::now() - Duration::from_nanos(v.nanos),
            method: Method::from_bytes(v.method.as_bytes()).unwrap(),
            path: v.path.clone(),
            id: HeaderValue::from_str(&v.id).unwrap(),
            bucket: Arc::from(v.bucket.as_str()),
            operation: "GetObject",
            status: v.status,
            replica: v.replica.as_deref().map(|r| HeaderValue::from_str(r).unwrap()),
            cache: Some(HeaderValue::from_static("MISS")),
            hedge: "lost",
            identity: v.identity.clone(),
            bytes: v.bytes,
            expected: None,
            complete: v.bytes.is_multiple_of(2),
            trace_id: v.trace.map(TraceId::from),
            span: tracing::Span::none(),
        }
    }

    #[derive(Debug, Clone)]
    struct Values {
        method: String,
        path: String,
        id: String,
        bucket: String,
        status: u16,
        replica: Option<String>,
        identity: Option<String>,
        bytes: u64,
        trace: Option<u128>,
        nanos: u64,
    }

    fn values() -> impl Strategy<Value = Values> {
        (
            "[A-Z]{1,8}",
            any::<String>(),
            "[ -~]{0,40}",
            any::<String>(),
            100u16..600,
            proptest::option::of("[!-~]{1,20}"),
            proptest::option::of(any::<String>()),
            any::<u64>(),
            proptest::option::of(1u128..),
            0u64..100_000_000_000,
        )
            .prop_map(
                |(method, path, id, bucket, status, replica, identity, bytes, trace, nanos)| Values {
                    method,
                    path,
                    id,
                    bucket,
                    status,
                    replica,
                    identity,
                    bytes,
                    trace,
                    nanos,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn access_lines_are_the_stock_formatters_bytes(v in values(), json in any::<bool>()) {
            let metrics = Metrics::new();
            let (stock, ours) = both(json, false, || drop(record(&metrics, &v)));
            prop_assert!(stock.contains("request"));
            prop_assert_eq!(stock, ours);
        }
    }

    #[test]
    fn unusual_access_events_are_the_stock_formatters_bytes() {
        let error = io::Error::other("disk \"full\"");
        let emit = || {
            tracing::info!(target: TARGET, s = "a\"b\\c\u{1}\u{e9}\u{200b}", m = "x", "bell\x07 \x1b[31m \u{85}");
            tracing::info!(target: TARGET, neg = -5i64, big = u128::MAX, f = 1e-7, g = 1e16, h = f64::NAN, i = f64::INFINITY, j = -0.0);
            tracing::warn!(target: TARGET, message = "as a field", k = 1u64);
            tracing::error!(target: TARGET, e = &error as &(dyn std::error::Error + 'static), "with an error");
            tracing::info!(target: TARGET, r#type = "raw", "raw name");
            tracing::info!(target: TARGET, ok = true, dbg = ?Some("q\"uote"), "debug");
            let span = tracing::info_span!("outer", k = 1);
            span.in_scope(|| tracing::info!(target: TARGET, in_span = 1u64, "in a span"));
            tracing::info!(target: "yatagarasu::server", other = 1u64, "not an access line");
        };
        for (json, ansi) in [(false, false), (true, false), (false, true)] {
            let (stock, ours) = both(json, ansi, emit);
            assert_eq!(stock.lines().count(), 8, "{stock}");
            assert_eq!(stock, ours, "json={json} ansi={ansi}");
        }
    }

    /// The date and time of `secs` as `httpdate` writes it (IMF-fixdate),
    /// rearranged into RFC 3339.
    fn reference(secs: u64, nanos: u32) -> String {
        let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::new(secs, nanos));
        // "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == parts[2])
        .unwrap()
            + 1;
        format!("{}-{month:02}-{}T{}.{:06}Z", parts[3], parts[1], parts[4], nanos / 1000)
    }

    fn text(secs: u64, nanos: u32) -> String {
        String::from_utf8(rfc3339(secs, nanos).unwrap().to_vec()).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]
        #[test]
        fn floats_in_the_ryu_range_print_as_debug(
            // Every float in the range equally likely (positive floats
            // order as their bits), and durations of 0.1 µs to 1 min.
            bits in RYU_FROM.to_bits()..RYU_UNTIL.to_bits(),
            ms in RYU_FROM..60_000.0,
        ) {
            for v in [f64::from_bits(bits), ms] {
                let mut buffer = ryu::Buffer::new();
                prop_assert_eq!(buffer.format_finite(v), format!("{v:?}"));
            }
        }
    }

    #[test]
    fn ryu_and_debug_break_ties_differently_above_the_range() {
        // 1117621402692120.25, exactly halfway between the two shortest
        // digit strings.
        let v = f64::from_bits(4_832_296_172_135_338_178);
        assert_eq!(format!("{v:?}"), "1117621402692120.3");
        assert_eq!(ryu::Buffer::new().format_finite(v), "1117621402692120.2");
        assert!(v >= RYU_UNTIL);
    }

    #[test]
    fn dates_at_the_edges() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
            (253_402_300_799, "9999-12-31T23:59:59.000000Z"),
        ] {
            assert_eq!(text(secs, 0), want);
            assert_eq!(text(secs, 0), reference(secs, 0));
        }
        assert_eq!(text(1_795_314_951, 123_456_789), "2026-11-22T02:35:51.123456Z");
        assert_eq!(rfc3339(253_402_300_800, 0), None);
    }

    proptest! {
        #[test]
        fn dates_agree_with_httpdate(secs in 0u64..253_402_300_800, nanos in 0u32..1_000_000_000) {
            prop_assert_eq!(text(secs, nanos), reference(secs, nanos));
        }
    }

    #[test]
    fn the_timer_writes_what_the_stock_timer_writes() {
        // Same instants cannot be had: the stock timer reads the clock
        // itself. Ours must fall between two stock readings, in the same shape.
        let now = |timer: &dyn FormatTime| {
            let mut s = String::new();
            timer.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        };
        let before = now(&tracing_subscriber::fmt::time::SystemTime);
        let ours = now(&Rfc3339);
        let after = now(&tracing_subscriber::fmt::time::SystemTime);
        assert_eq!(ours.len(), before.len());
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
    }
}
