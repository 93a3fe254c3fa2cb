//! The timestamp of every log line: the stock timer's format, written
//! without its formatting machinery.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

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
pub(super) fn rfc3339(secs: u64, nanos: u32) -> Option<[u8; 27]> {
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
