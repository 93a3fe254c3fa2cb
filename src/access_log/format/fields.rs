//! The fields of an access line, written as the stock text and JSON
//! formatters write them (see [`super`]).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use super::Unusual;
use crate::access_log::{LineValue, LogSafe};
use crate::telemetry::TraceIdField;

/// The fields as tracing-subscriber's `DefaultFields` writes them with ANSI
/// off: `message` bare (with terminal controls escaped), then ` name=value`
/// with the value's `Debug`.
pub(super) struct TextFields<'a> {
    pub(super) line: &'a mut String,
    pub(super) first: bool,
    /// Escape terminal controls in the message (the layer's default).
    pub(super) sanitize: bool,
    pub(super) prefixes: Option<&'a [(Box<str>, bool)]>,
    pub(super) result: Result<(), Unusual>,
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

    pub(super) fn debug(&mut self, field: &Field, value: &dyn fmt::Debug) -> Result<(), Unusual> {
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

    pub(super) fn record(&mut self, f: impl FnOnce(&mut Self) -> Result<(), Unusual>) {
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
            if s.name(field)? {
                // The message as a `str` (issue 13: the access line's, not
                // through `core::fmt`): bare, as `{value}`.
                let at = s.line.len();
                s.line.push_str(value);
                if s.sanitize {
                    escape_terminal_from(s.line, at);
                }
                return Ok(());
            }
            debug_str(s.line, value)
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
            debug_f64(s.line, value)
        });
    }

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        self.result = Err(Unusual);
    }
}

/// `{:?}` of a `str`: quoted, with `"`, `\\` and non-printable characters escaped.
fn debug_str(line: &mut String, value: &str) -> Result<(), Unusual> {
    if value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        line.push('"');
        line.push_str(value);
        line.push('"');
    } else {
        write!(line, "{value:?}")?;
    }
    Ok(())
}

/// `{:?}` of an `f64`.
pub(super) fn debug_f64(line: &mut String, value: f64) -> Result<(), Unusual> {
    // In this range (a duration in ms up to 11 days) `{:?}` writes the
    // shortest digits that read back as `value`, without an exponent, as
    // ryu does. Outside it `{:?}` may use an exponent where ryu does not,
    // and from 2^34 on the two can break a tie between two shortest digit
    // strings differently.
    if (RYU_FROM..RYU_UNTIL).contains(&value) {
        line.push_str(ryu::Buffer::new().format_finite(value));
    } else {
        write!(line, "{value:?}")?;
    }
    Ok(())
}

/// serde_json's own float format; `null` when not finite.
pub(super) fn json_f64(line: &mut String, value: f64) -> Result<(), Unusual> {
    match serde_json::Number::from_f64(value) {
        Some(n) => write!(line, "{n}")?,
        None => line.push_str("null"),
    }
    Ok(())
}

/// `micros as f64 / 1000.0` as `{:?}` (and serde_json) write it, from its
/// digits: below 10^15 the quotient is the double nearest to the decimal
/// `micros / 1000`, and a decimal of at most 15 significant digits is the
/// shortest that reads back as its nearest double (`DBL_DIG`). Issue 13:
/// cheaper than finding the shortest digits of a double. `float`, the
/// format of the value as an `f64`, writes it beyond that.
pub(super) fn millis(
    line: &mut String,
    micros: u64,
    float: fn(&mut String, f64) -> Result<(), Unusual>,
) -> Result<(), Unusual> {
    if micros >= 1_000_000_000_000_000 {
        return float(line, micros as f64 / 1000.0);
    }
    line.push_str(itoa::Buffer::new().format(micros / 1000));
    line.push('.');
    let mut fraction = micros % 1000;
    if fraction == 0 {
        line.push('0');
        return Ok(());
    }
    let mut unit = 100;
    while fraction > 0 {
        // A digit: `fraction / unit` is below 10.
        line.push(char::from(b'0' + (fraction / unit) as u8));
        fraction %= unit;
        unit /= 10;
    }
    Ok(())
}

/// A value given as it is, written as `Display` (`%value`) writes it.
fn display(line: &mut String, value: &LineValue<'_>) -> Result<(), Unusual> {
    match *value {
        LineValue::Message(v) | LineValue::Plain(v) | LineValue::Str(v) => line.push_str(v),
        LineValue::Safe(v) => LogSafe(v).write_into(line)?,
        LineValue::Trace(id) => write!(line, "{}", TraceIdField(id))?,
        LineValue::U64(v) => line.push_str(itoa::Buffer::new().format(v)),
        LineValue::Bool(v) => line.push_str(if v { "true" } else { "false" }),
        LineValue::Millis(micros) => millis(line, micros, debug_f64)?,
    }
    Ok(())
}

/// An access record's `values` (in the order of its event's fields, whose
/// `prefixes` these are), as [`TextFields`] writes the event.
pub(in crate::access_log) fn text_values(
    line: &mut String,
    prefixes: &[(Box<str>, bool)],
    values: &[LineValue<'_>],
    sanitize: bool,
) -> Result<(), Unusual> {
    if prefixes.len() != values.len() {
        return Err(Unusual);
    }
    for (i, ((prefix, message), value)) in prefixes.iter().zip(values).enumerate() {
        // Without its leading space before the first field.
        line.push_str(&prefix[usize::from(i == 0)..]);
        let at = line.len();
        match *value {
            LineValue::Str(v) if !message => debug_str(line, v)?,
            _ => display(line, value)?,
        }
        if *message && sanitize {
            escape_terminal_from(line, at);
        }
    }
    Ok(())
}

/// An access record's `values`, as [`JsonFields`] writes the event.
pub(in crate::access_log) fn json_values(
    line: &mut String,
    prefixes: &[(Box<str>, bool)],
    values: &[LineValue<'_>],
) -> Result<(), Unusual> {
    if prefixes.len() != values.len() {
        return Err(Unusual);
    }
    for ((prefix, _), value) in prefixes.iter().zip(values) {
        line.push_str(prefix);
        match *value {
            LineValue::U64(_) | LineValue::Bool(_) => display(line, value)?,
            LineValue::Millis(micros) => millis(line, micros, json_f64)?,
            _ => {
                line.push('"');
                let at = line.len();
                display(line, value)?;
                escape_json_from(line, at - 1);
                line.push('"');
            }
        }
    }
    Ok(())
}

/// Where ryu writes what `{:?}` writes for an `f64` (see `record_f64`).
pub(super) const RYU_FROM: f64 = 1e-4;
pub(super) const RYU_UNTIL: f64 = 1e9;

/// The characters tracing-subscriber escapes in a message (terminal
/// controls), escaped from `line[at..]` on.
pub(super) fn escape_terminal_from(line: &mut String, at: usize) {
    let unsafe_char = |c: char| matches!(c, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}');
    // Bytes first (issue 13): U+0080..U+009F are 0xC2 0x80..0x9F in UTF-8.
    if !line.as_bytes()[at..]
        .iter()
        .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        || !line[at..].chars().any(unsafe_char)
    {
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
pub(super) struct JsonFields<'a> {
    pub(super) line: &'a mut String,
    pub(super) prefixes: Option<&'a [(Box<str>, bool)]>,
    pub(super) result: Result<(), Unusual>,
}

impl JsonFields<'_> {
    pub(super) fn record(&mut self, field: &Field, f: impl FnOnce(&mut String) -> Result<(), Unusual>) {
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
        self.record(field, |line| json_f64(line, value));
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
pub(super) fn escape_json_from(line: &mut String, quote: usize) {
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
