//! The timestamp of every log line: the stock timer's format, written by
//! humantime without the stock timer's formatting machinery, once a second.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// The stock timer's format (`fmt::time::SystemTime`: RFC 3339 in UTC with
/// microseconds, `2026-11-28T02:35:51.123456Z`), written by humantime, whose
/// digits go into a buffer written at once (the stock timer formats each
/// part through `core::fmt`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339;

thread_local! {
    /// This thread's last timestamp (issue 13): lines come many a second,
    /// and within one only the microseconds change.
    static LAST: RefCell<Stamp> = const { RefCell::new(Stamp::new()) };
}

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        if let Ok(since) = SystemTime::now().duration_since(UNIX_EPOCH) {
            let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
            let written = LAST.try_with(|last| {
                let mut last = last.try_borrow_mut().ok()?;
                last.at(secs, nanos).map(|text| w.write_str(text))
            });
            if let Ok(Some(result)) = written {
                return result;
            }
            if let Some(text) = rfc3339(secs, nanos) {
                return write!(w, "{text}");
            }
        }
        // Before 1970 or after 9999: the stock timer's (rarer) formats.
        tracing_subscriber::fmt::time::SystemTime.format_time(w)
    }
}

/// A timestamp's text kept for its second (issue 13): humantime formats the
/// date and time once a second, each line writes only its microseconds.
pub(super) struct Stamp {
    /// The second of `text`, `u64::MAX` before the first.
    secs: u64,
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    text: String,
}

/// Where the microseconds start in a [`Stamp`]'s text.
const MICROS_AT: usize = "YYYY-MM-DDTHH:MM:SS.".len();

impl Stamp {
    pub(super) const fn new() -> Self {
        Self {
            secs: u64::MAX,
            text: String::new(),
        }
    }

    /// The text of `secs` and `nanos` after the Unix epoch, as [`rfc3339`]
    /// writes it; `None` when it does not (after the year 9999).
    pub(super) fn at(&mut self, secs: u64, nanos: u32) -> Option<&str> {
        if nanos >= 1_000_000_000 {
            return None;
        }
        if secs != self.secs {
            let text = rfc3339(secs, 0)?;
            self.text.clear();
            fmt::Write::write_fmt(&mut self.text, format_args!("{text}")).ok()?;
            self.secs = secs;
        }
        self.text.truncate(MICROS_AT);
        let micros = nanos / 1_000;
        for unit in [100_000, 10_000, 1_000, 100, 10, 1] {
            // A digit: `micros / unit % 10` is below 10.
            self.text.push(char::from(b'0' + (micros / unit % 10) as u8));
        }
        self.text.push('Z');
        Some(&self.text)
    }
}

/// The last second humantime formats (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

/// `secs` and `nanos` after the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`;
/// `None` after the year 9999, which the stock timer writes differently.
pub(super) fn rfc3339(secs: u64, nanos: u32) -> Option<humantime::Rfc3339Timestamp> {
    (secs <= LAST_SECOND).then(|| humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::new(secs, nanos)))
}
