//! Answering a request from a cached object exactly as S3 would: `HEAD`,
//! single byte ranges (206, or 416 with `Content-Range: bytes */len`),
//! `If-Range`, and the RFC 9110 preconditions, all by the rules of [`crate::http`].

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body::{Frame, SizeHint};

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
        ObjectMethod::Get => hit_body(body),
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

/// The largest frame of a body served from the cache.
///
/// A cached body handed to hyper as one frame is taken at once: the access
/// log and `yatagarasu_response_bytes_total` counted all of it as sent, and
/// the connection's watchdog saw the request end (no `send_timeout`, only
/// the idle timeout) while hyper was still writing it to a client that
/// might never read. In frames of this size, the body is taken as the
/// client reads it (hyper takes the next frame once less than ~400 KiB is
/// left to write), at the cost of a poll per frame. Each frame is a slice
/// of the cached bytes: no copy, and a memfd-placed body is still sent with
/// `sendfile(2)`. 1 MiB keeps bodies up to 1 MiB in one frame, as before
/// (256 KiB frames cost no CPU per GiB of 1 MiB hits that the benchmark
/// could tell from its noise, but there is no reason to pay the polls).
pub(crate) const HIT_FRAME: usize = 1024 * 1024;

/// `bytes` as a response body of frames of at most [`HIT_FRAME`] bytes.
pub(crate) fn hit_body(bytes: Bytes) -> Body {
    if bytes.len() <= HIT_FRAME {
        Body::from(bytes)
    } else {
        Body::new(Framed { rest: bytes })
    }
}

/// A cached body given out [`HIT_FRAME`] bytes at a time.
struct Framed {
    rest: Bytes,
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(HIT_FRAME);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
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

    #[tokio::test]
    async fn large_hit_bodies_go_out_in_slices_of_the_cached_bytes() {
        use http_body_util::BodyExt;
        let bytes = Bytes::from((0..HIT_FRAME * 2 + 7).map(|i| i as u8).collect::<Vec<_>>());
        let mut body = hit_body(bytes.clone());
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(bytes.len() as u64));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        let lens: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(lens, [HIT_FRAME, HIT_FRAME, 7]);
        // Slices of the cached body, not copies.
        assert_eq!(frames[1].as_ptr(), bytes[HIT_FRAME..].as_ptr());
        assert_eq!(frames.concat(), bytes);
        // A small body stays one frame.
        let small = hit_body(Bytes::from_static(b"0123"));
        assert_eq!(small.collect().await.unwrap().to_bytes(), "0123");
    }
}
