//! The fields of an access line, written as the stock text and JSON
//! formatters write them (see [`super`]).

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};

use super::Unusual;

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
