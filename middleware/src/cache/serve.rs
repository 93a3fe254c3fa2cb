//! Answering a request from a cached object exactly as S3 would: `HEAD`,
//! single byte ranges (206, or 416 with `Content-Range: bytes */len`),
//! `If-Range`, and the RFC 9110 preconditions, all by the rules of [`crate::http`].

use axum::body::Body;
use http::{header, HeaderValue, Response, StatusCode};

use super::entry::{now_ms, CachedObject};
use crate::error::S3Error;
use crate::http::conditional::{self, not_modified, Precondition};
use crate::http::headers::X_CACHE;
use crate::http::range::{self, parse_range, RangeSpec};
use crate::object::{ObjectMethod, ObjectRequest};

/// The answer to `req` from `obj`, marked with `X-Cache: x_cache`.
pub(crate) fn respond(obj: &CachedObject, req: &ObjectRequest, x_cache: &'static str) -> Response<Body> {
    let mut res = answer(obj, req);
    let headers = res.headers_mut();
    headers.insert(X_CACHE, HeaderValue::from_static(x_cache));
    let age = now_ms().saturating_sub(obj.stored_at_ms()) / 1000;
    headers.insert(header::AGE, super::entry::age_value(age));
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
        Some(v) if conditional::if_range_holds(req.headers(), etag, modified) => parse_range(v, len),
        _ => RangeSpec::Full,
    };
    let (status, body, content_range) = match range {
        RangeSpec::Full => (StatusCode::OK, obj.body().clone(), None),
        RangeSpec::Bytes(first, last) => (
            StatusCode::PARTIAL_CONTENT,
            obj.body().slice(first as usize..=last as usize),
            Some(range::content_range(first, last, len)),
        ),
        RangeSpec::Unsatisfiable => {
            let mut res = S3Error::invalid_range().into_response();
            res.headers_mut()
                .insert(header::CONTENT_RANGE, range::unsatisfied_range(len));
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
    if let Some(cr) = content_range {
        headers.insert(header::CONTENT_RANGE, cr);
    }
    res
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use http::{HeaderMap, HeaderName};

    use super::*;

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
