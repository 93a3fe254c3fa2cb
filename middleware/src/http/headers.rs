//! The proxy's own headers (request id, cache and replica markers), and
//! `Content-Length` read once.

use http::{header, HeaderMap, HeaderName, Response};

/// The response header saying how the cache took part (`HIT-MEMORY`,
/// `HIT-REDIS`, `MISS`, `BYPASS`, `STALE`, ...).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The response header naming the replica that served a request.
pub const REPLICA_HEADER: HeaderName = HeaderName::from_static("x-yatagarasu-replica");

/// The request-id header read from requests to name them in error bodies and logs.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id (the [`REQUEST_ID`] header), when a layer in front set one.
pub fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The `Content-Length` of a message, when it has one that parses
/// (RFC 9110 §8.6: one non-negative decimal number).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    // One pass over the bytes (a `to_str`, a digit check and `parse` were
    // three, ~300 instructions a pass-through; issue 13).
    let value = headers.get(header::CONTENT_LENGTH)?.as_bytes().trim_ascii();
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// The body bytes a response will send: the body's exact size when it knows
/// it (an in-memory body: a cache hit, an error), else the `Content-Length`.
pub fn body_length<B: http_body::Body>(res: &Response<B>) -> Option<u64> {
    res.body().size_hint().exact().or_else(|| content_length(res.headers()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn content_length_is_one_decimal_number() {
        assert_eq!(content_length(&HeaderMap::new()), None);
        assert_eq!(content_length(&with("0")), Some(0));
        assert_eq!(content_length(&with("1234")), Some(1234));
        assert_eq!(content_length(&with(" 7 ")), Some(7));
        assert_eq!(content_length(&with("+7")), None);
        assert_eq!(content_length(&with("-1")), None);
        assert_eq!(content_length(&with("7, 7")), None);
        assert_eq!(content_length(&with("")), None);
        assert_eq!(content_length(&with("99999999999999999999999")), None);
    }
}
