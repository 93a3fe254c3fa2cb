//! The timestamp of every log line: the stock timer's format, written by
//! humantime without the stock timer's formatting machinery.

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

impl FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = SystemTime::now();
        match now.duration_since(UNIX_EPOCH) {
            Ok(since) => match rfc3339(since.as_secs(), since.subsec_nanos()) {
                Some(text) => write!(w, "{text}"),
                None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
            },
            // Before 1970: the stock timer's (rarer) formats.
            Err(_) => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// The last second humantime formats (9999-12-31T23:59:59Z).
const LAST_SECOND: u64 = 253_402_300_799;

/// `secs` and `nanos` after the Unix epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`;
/// `None` after the year 9999, which the stock timer writes differently.
pub(super) fn rfc3339(secs: u64, nanos: u32) -> Option<humantime::Rfc3339Timestamp> {
    (secs <= LAST_SECOND).then(|| humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::new(secs, nanos)))
}
