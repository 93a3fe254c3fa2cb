//! Answering a request from a cached object exactly as S3 would: `HEAD`,
//! single byte ranges (206, or 416 with `Content-Range: bytes */len`),
//! `If-Range`, and the RFC 9110 preconditions of [`crate::conditional`].

use axum::body::Body;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::entry::{now_ms, CachedObject};
use crate::conditional::{self, Precondition};
use crate::error::S3Error;
use crate::object::{not_modified, ObjectMethod, ObjectRequest};

/// The response header saying how the cache took part.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A byte range of an object of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// No range, several ranges or an unparsable one: the whole object.
    Full,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
    /// No byte of the object is in the range.
    Unsatisfiable,
}

/// Parses a `Range` header against an object of `len` bytes (RFC 9110 14.2).
pub(crate) fn parse_range(value: &str, len: u64) -> RangeSpec {
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
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeSpec::Full;
        };
        if suffix == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Bytes(len.saturating_sub(suffix), len - 1);
    }
    let Ok(first) = first.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let last = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= first => l,
            _ => return RangeSpec::Full,
        }
    };
    if first >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(first, last.min(len - 1))
}

/// Whether `If-Range` (if any) still matches the object, so `Range` applies.
fn if_range_holds(req: &HeaderMap, obj: &HeaderMap) -> bool {
    let Some(cond) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        let etag = obj.get(header::ETAG).and_then(|v| v.to_str().ok());
        return conditional::etag_list_matches(cond, etag, true) && !cond.starts_with("W/");
    }
    let modified = obj
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    match (httpdate::parse_http_date(cond).ok(), modified) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The answer to `req` from `obj`, marked with `X-Cache: x_cache`.
pub(crate) fn respond(obj: &CachedObject, req: &ObjectRequest, x_cache: &'static str) -> Response<Body> {
    let mut res = answer(obj, req);
    let headers = res.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
    let age = now_ms().saturating_sub(obj.stored_at_ms()) / 1000;
    headers.insert(header::AGE, HeaderValue::from(age));
    res
}

fn answer(obj: &CachedObject, req: &ObjectRequest) -> Response<Body> {
    let stored = obj.headers();
    let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
    let modified = stored.get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok());
    match conditional::evaluate(req.headers(), etag, modified) {
        Precondition::Pass => {}
        Precondition::NotModified => return not_modified(stored),
        Precondition::Failed => return S3Error::precondition_failed().into_response(),
    }

    let len = obj.body().len() as u64;
    let range = match req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_holds(req.headers(), stored) => parse_range(v, len),
        _ => RangeSpec::Full,
    };
    let (status, body, content_range) = match range {
        RangeSpec::Full => (StatusCode::OK, obj.body().clone(), None),
        RangeSpec::Bytes(first, last) => (
            StatusCode::PARTIAL_CONTENT,
            obj.body().slice(first as usize..=last as usize),
            Some(format!("bytes {first}-{last}/{len}")),
        ),
        RangeSpec::Unsatisfiable => {
            let mut res = S3Error::invalid_range().into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return res;
        }
    };
    let content_length = body.len();
    let body = match req.method() {
        ObjectMethod::Get => Body::from(body),
        ObjectMethod::Head => Body::empty(),
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    let headers = res.headers_mut();
    for (name, value) in stored.iter() {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content_length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, cr);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn ranges_like_s3() {
        assert_eq!(parse_range("bytes=0-4", 10), RangeSpec::Bytes(0, 4));
        assert_eq!(parse_range("bytes=5-", 10), RangeSpec::Bytes(5, 9));
        assert_eq!(parse_range("bytes=-3", 10), RangeSpec::Bytes(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=0-999", 10), RangeSpec::Bytes(0, 9));
        assert_eq!(parse_range("bytes=10-", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=4-2", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), RangeSpec::Full);
        assert_eq!(parse_range("items=0-1", 10), RangeSpec::Full);
        assert_eq!(parse_range("bytes=x-", 10), RangeSpec::Full);
    }

    fn obj() -> CachedObject {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        CachedObject::new(&h, Bytes::from_static(b"0123456789"), Duration::from_secs(60))
    }

    fn req(pairs: &[(HeaderName, &'static str)]) -> ObjectRequest {
        let mut r = ObjectRequest::get("k");
        for (k, v) in pairs {
            r = r.with_header(k.clone(), HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn if_range_mismatch_serves_the_whole_object() {
        let r = req(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(respond(&obj(), &r, "HIT").status(), StatusCode::OK);
        let r = req(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"v1\"")]);
        let res = respond(&obj(), &r, "HIT");
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes 0-1/10");
        let r = req(&[
            (header::RANGE, "bytes=0-1"),
            (header::IF_RANGE, "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(respond(&obj(), &r, "HIT").status(), StatusCode::PARTIAL_CONTENT);
    }

    #[test]
    fn preconditions_before_ranges() {
        let r = req(&[(header::RANGE, "bytes=50-"), (header::IF_NONE_MATCH, "W/\"v1\"")]);
        assert_eq!(respond(&obj(), &r, "HIT").status(), StatusCode::NOT_MODIFIED);
        let r = req(&[(header::IF_MATCH, "\"v2\"")]);
        assert_eq!(respond(&obj(), &r, "HIT").status(), StatusCode::PRECONDITION_FAILED);
        let r = req(&[(header::RANGE, "bytes=50-")]);
        let res = respond(&obj(), &r, "HIT");
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(res.headers()[header::CONTENT_RANGE], "bytes */10");
    }
}
