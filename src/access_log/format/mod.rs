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
//!
//! An access line emitted by an `AccessRecord` (see [`super`]) is
//! written from the record's values (set beside the event in `EMITTING`),
//! not by visiting the event's fields through `Debug` (issue 13).

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::{LineValue, EMITTING, TARGET};
use fields::{escape_json_from, json_values, text_values, JsonFields, TextFields};
pub use timer::Rfc3339;

mod fields;
#[cfg(test)]
mod tests;
mod timer;

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
            // The access record emitting this event, when there is one: its
            // values as they are, rather than visited through the event.
            let sanitize = writer.sanitizes_ansi_escapes();
            let mut write = |values: Option<&[LineValue<'_>]>| {
                if self.json {
                    self.json_line(&mut line, event, values)
                } else {
                    self.text_line(&mut line, event, sanitize, values)
                }
            };
            let done = if EMITTING.is_set() {
                EMITTING.with(|record| write(Some(&record.values())))
            } else {
                write(None)
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
    /// `Format<Full>`: `<time> <level padded to 5> <fields>`, the fields
    /// from `values` (an access record's, in the order of the event's
    /// fields) when given.
    fn text_line(
        &self,
        line: &mut String,
        event: &Event<'_>,
        sanitize: bool,
        values: Option<&[LineValue<'_>]>,
    ) -> Result<(), Unusual> {
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
        if let (Some(prefixes), Some(values)) = (prefixes, values) {
            text_values(line, prefixes, values, sanitize)?;
        } else {
            let mut fields = TextFields {
                line,
                first: true,
                sanitize,
                prefixes,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        }
        line.push('\n');
        Ok(())
    }

    /// `Format<Json>`, flattened: `{"timestamp":..,"level":..,<fields>}`,
    /// the fields from `values` when given (as [`Self::text_line`]).
    fn json_line(&self, line: &mut String, event: &Event<'_>, values: Option<&[LineValue<'_>]>) -> Result<(), Unusual> {
        line.push_str("{\"timestamp\":\"");
        let at = line.len();
        // The stock JSON format writes no line when the time is unknown.
        self.timer.format_time(&mut Writer::new(line))?;
        escape_json_from(line, at - 1);
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        let prefixes = self.prefixes.get_or_init(|| Prefixes::new(true, event)).of(event);
        if let (Some(prefixes), Some(values)) = (prefixes, values) {
            json_values(line, prefixes, values)?;
        } else {
            let mut fields = JsonFields {
                line,
                prefixes,
                result: Ok(()),
            };
            event.record(&mut fields);
            fields.result?;
        }
        line.push_str("}\n");
        Ok(())
    }
}
