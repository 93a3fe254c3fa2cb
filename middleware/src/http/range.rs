//! Byte ranges (RFC 9110 §14): a `Range` request against an object of known
//! length, the `Content-Range` of a `206`/`416`, and the absolute byte range
//! a `200`/`206` body carries.
//!
//! S3's rules where the RFC leaves a choice: a single range only (several
//! ranges, or one that does not parse, get the whole object), and a range
//! covering the whole object still answers `206`.

use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::headers::content_length;

/// A byte range of an object of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No range, several ranges or an unparsable one: the whole object.
    Full,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
    /// No byte of the object is in the range.
    Unsatisfiable,
}

/// Parses a `Range` header against an object of `len` bytes (RFC 9110 §14.2).
pub fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        // S3 does not serve multipart ranges; it answers with the whole object.
        return RangeSpec::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Some(suffix) = digits(last) else {
            return RangeSpec::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Bytes(len.saturating_sub(suffix), len - 1);
    }
    let Some(first) = digits(first) else {
        return RangeSpec::Full;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match digits(last) {
            Some(l) if l >= first => l,
            _ => return RangeSpec::Full,
        }
    };
    if first >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(first, last.min(len - 1))
}

/// A number as RFC 9110 writes one in a range: ASCII digits only (`u64`'s
/// parser also takes a leading `+`).
fn digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// The `Content-Range` of a `206` carrying bytes `first..=last` of `len`.
pub fn content_range(first: u64, last: u64, len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")).expect("digits and ASCII")
}

/// The `Content-Range` of a `416` for an object of `len` bytes (`bytes */len`).
pub fn unsatisfied_range(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{len}")).expect("digits and ASCII")
}

/// Reads a `Content-Range` of the form `bytes first-last/len` (or
/// `bytes first-last/*`): first and last byte, and the complete length when
/// known. A range that runs backwards, or anything else, is `None`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, len) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (digits(first)?, digits(last)?);
    let len = match len {
        "*" => None,
        len => Some(digits(len)?),
    };
    (first <= last && len.is_none_or(|len| last < len)).then_some((first, last, len))
}

/// The absolute byte range `first..=last` a response body carries: all of a
/// `200` with a non-zero `Content-Length`, the `Content-Range` of a `206`.
pub fn body_range(status: StatusCode, headers: &HeaderMap) -> Option<(u64, u64)> {
    match status {
        StatusCode::OK => {
            let len = content_length(headers)?;
            (len > 0).then(|| (0, len - 1))
        }
        StatusCode::PARTIAL_CONTENT => {
            let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
            parse_content_range(value).map(|(first, last, _)| (first, last))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_like_s3() {
        assert_eq!(parse_range("bytes=0-4", 10), RangeSpec::Bytes(0, 4));
        assert_eq!(parse_range("bytes=5-", 10), RangeSpec::Bytes(5, 9));
        assert_eq!(parse_range("bytes=-3", 10), RangeSpec::Bytes(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=0-999", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=0-9", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=4-2", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), RangeSpec::Full);
        assert_eq!(parse_range("items=0-1", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=x-", 10), RangeSpec::Full);
        // Digits only: `u64`'s parser takes a sign.
        assert_eq!(parse_range("bytes=+1-3", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=1-+3", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=-+3", 10), RangeSpec::Full);
    }

    #[test]
    fn content_range_written_and_read_back() {
        assert_eq!(content_range(0, 4, 10), "bytes 0-4/10");
        assert_eq!(unsatisfied_range(10), "bytes */10");
        assert_eq!(parse_content_range("bytes 0-4/10"), Some((0, 4, Some(10))));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 5-4/10"), None);
        assert_eq!(parse_content_range("bytes 5-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-x/10"), None);
        assert_eq!(parse_content_range("bytes +0-4/10"), None);
        assert_eq!(parse_content_range("bytes 0-4/+10"), None);
    }

    #[test]
    fn body_range_of_200_and_206() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert_eq!(body_range(StatusCode::OK, &h), Some((0, 9)));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        assert_eq!(body_range(StatusCode::OK, &h), None);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes 3-5/10"));
        assert_eq!(body_range(StatusCode::PARTIAL_CONTENT, &h), Some((3, 5)));
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("bytes 5-3/10"));
        assert_eq!(body_range(StatusCode::PARTIAL_CONTENT, &h), None);
        assert_eq!(body_range(StatusCode::NOT_FOUND, &h), None);
    }
}
