//! RFC 9110 preconditions (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since`) evaluated against an object's `ETag` and
//! `Last-Modified`, in the order section 13.2.2 gives.
//!
//! Used on upstream answers (some S3-compatible servers ignore preconditions)
//! and on cached objects; [`not_modified`] builds the `304` both send.

use std::time::SystemTime;

use axum::body::Body;
use http::{header, HeaderMap, Response, StatusCode};

use super::headers::{REPLICA_HEADER, X_CACHE};

/// What the preconditions of a request say about an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the object.
    Pass,
    /// Answer `304 Not Modified`.
    NotModified,
    /// Answer `412 Precondition Failed`.
    Failed,
}

/// Evaluates the request's preconditions for a `GET`/`HEAD` of an object with
/// these `ETag` and `Last-Modified` header values.
pub fn evaluate(request: &HeaderMap, etag: Option<&str>, last_modified: Option<&str>) -> Precondition {
    let modified = last_modified.and_then(|v| httpdate::parse_http_date(v).ok());

    if let Some(if_match) = joined(request, &header::IF_MATCH) {
        if !etag_list_matches(&if_match, etag, true) {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) = (date(request, &header::IF_UNMODIFIED_SINCE), modified) {
        if modified > since {
            return Precondition::Failed;
        }
    }

    if let Some(if_none_match) = joined(request, &header::IF_NONE_MATCH) {
        if etag_list_matches(&if_none_match, etag, false) {
            return Precondition::NotModified;
        }
    } else if let (Some(since), Some(modified)) = (date(request, &header::IF_MODIFIED_SINCE), modified) {
        if modified <= since {
            return Precondition::NotModified;
        }
    }
    Precondition::Pass
}

/// Whether the request's `If-Range` (RFC 9110 §13.1.5), if any, holds for
/// an object with these validators, so that its `Range` applies: an entity
/// tag compares strongly (a weak one never matches), a date must equal
/// `Last-Modified` exactly. Anything else, or a missing validator, fails.
pub fn if_range_holds(request: &HeaderMap, etag: Option<&str>, last_modified: Option<&str>) -> bool {
    let Some(cond) = request.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(cond) = cond.to_str() else { return false };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        return !cond.starts_with("W/") && !cond.contains(',') && etag_list_matches(cond, etag, true);
    }
    let modified = last_modified.and_then(|v| httpdate::parse_http_date(v).ok());
    match (httpdate::parse_http_date(cond).ok(), modified) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A `304 Not Modified` carrying the validators and caching headers of
/// `from` (RFC 9110 §15.4.5), and the replica that answered and the
/// cache's `X-Cache`, if named.
pub fn not_modified(from: &HeaderMap) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NOT_MODIFIED;
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CACHE_CONTROL,
        header::EXPIRES,
        REPLICA_HEADER,
        X_CACHE,
    ] {
        if let Some(v) = from.get(&name) {
            res.headers_mut().insert(name, v.clone());
        }
    }
    res
}

/// Whether the request carries any precondition header.
pub fn has_preconditions(request: &HeaderMap) -> bool {
    [
        &header::IF_MATCH,
        &header::IF_NONE_MATCH,
        &header::IF_MODIFIED_SINCE,
        &header::IF_UNMODIFIED_SINCE,
    ]
    .iter()
    .any(|h| request.contains_key(*h))
}

fn joined(headers: &HeaderMap, name: &header::HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).peekable();
    values.peek()?;
    Some(values.collect::<Vec<_>>().join(","))
}

fn date(headers: &HeaderMap, name: &header::HeaderName) -> Option<SystemTime> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// Whether a comma-separated list of entity tags (or `*`) matches the
/// current representation, whose entity tag is `etag` (if it has one);
/// `strong` selects strong comparison (`If-Match`), otherwise weak.
///
/// `*` matches any current representation, with or without an entity tag
/// (RFC 9110 §13.1.1, §13.1.2): callers ask only about an object that
/// exists.
pub fn etag_list_matches(list: &str, etag: Option<&str>, strong: bool) -> bool {
    let list = list.trim();
    if list == "*" {
        return true;
    }
    let Some(etag) = etag else {
        return false;
    };
    let (current_weak, current) = split_weak(etag.trim());
    if strong && current_weak {
        return false;
    }
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .any(|candidate| {
            let (weak, tag) = split_weak(candidate);
            if strong && weak {
                return false;
            }
            unquote(tag) == unquote(current)
        })
}

fn split_weak(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    }
}

fn unquote(tag: &str) -> &str {
    tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(pairs: &[(&header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const ETAG: Option<&str> = Some("\"abc\"");
    const LM: Option<&str> = Some("Wed, 21 Oct 2015 07:28:00 GMT");

    #[test]
    fn if_range_needs_a_strong_match_or_the_exact_date() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let r = |v: &str| req(&[(&header::IF_RANGE, v)]);
        assert!(if_range_holds(&HeaderMap::new(), None, None));
        assert!(if_range_holds(&r("\"v1\""), Some("\"v1\""), None));
        assert!(!if_range_holds(&r("\"v0\""), Some("\"v1\""), None));
        assert!(!if_range_holds(&r("W/\"v1\""), Some("\"v1\""), None));
        assert!(!if_range_holds(&r("\"v1\""), Some("W/\"v1\""), None));
        assert!(!if_range_holds(&r("\"v1\""), None, Some(date)));
        assert!(if_range_holds(&r(date), None, Some(date)));
        assert!(!if_range_holds(&r("Thu, 22 Oct 2015 07:28:00 GMT"), None, Some(date)));
        assert!(!if_range_holds(&r("garbage"), Some("\"v1\""), Some(date)));
    }

    #[test]
    fn if_none_match_quoted_weak_list_and_star() {
        for v in ["\"abc\"", "W/\"abc\"", "\"x\", \"abc\"", "*", "abc"] {
            let h = req(&[(&header::IF_NONE_MATCH, v)]);
            assert_eq!(evaluate(&h, ETAG, LM), Precondition::NotModified, "{v}");
        }
        let h = req(&[(&header::IF_NONE_MATCH, "\"zzz\"")]);
        assert_eq!(evaluate(&h, ETAG, LM), Precondition::Pass);
    }

    #[test]
    fn if_match_is_strong() {
        assert_eq!(
            evaluate(&req(&[(&header::IF_MATCH, "\"abc\"")]), ETAG, LM),
            Precondition::Pass
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_MATCH, "W/\"abc\"")]), ETAG, LM),
            Precondition::Failed
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_MATCH, "\"no\"")]), ETAG, LM),
            Precondition::Failed
        );
    }

    /// `If-Match: *` holds, and `If-None-Match: *` fails, for any current
    /// representation, whatever its ETag or the lack of one (RFC 9110
    /// §13.1.1, §13.1.2). An object without an ETag failed `If-Match: *`
    /// with 412 and passed `If-None-Match: *` with its body.
    #[test]
    fn star_matches_an_object_without_an_etag() {
        for etag in [None, ETAG, Some("W/\"weak\"")] {
            assert_eq!(
                evaluate(&req(&[(&header::IF_MATCH, "*")]), etag, LM),
                Precondition::Pass,
                "If-Match: * with {etag:?}"
            );
            assert_eq!(
                evaluate(&req(&[(&header::IF_NONE_MATCH, "*")]), etag, None),
                Precondition::NotModified,
                "If-None-Match: * with {etag:?}"
            );
        }
        // A list is not `*`: with no ETag to compare, nothing matches.
        let h = req(&[(&header::IF_MATCH, "\"abc\"")]);
        assert_eq!(evaluate(&h, None, LM), Precondition::Failed);
        let h = req(&[(&header::IF_NONE_MATCH, "\"abc\"")]);
        assert_eq!(evaluate(&h, None, LM), Precondition::Pass);
    }

    #[test]
    fn dates_compare_as_dates() {
        let later = "Thu, 22 Oct 2015 07:28:00 GMT";
        let earlier = "Tue, 20 Oct 2015 07:28:00 GMT";
        assert_eq!(
            evaluate(&req(&[(&header::IF_MODIFIED_SINCE, later)]), ETAG, LM),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_MODIFIED_SINCE, LM.unwrap())]), ETAG, LM),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_MODIFIED_SINCE, earlier)]), ETAG, LM),
            Precondition::Pass
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_UNMODIFIED_SINCE, earlier)]), ETAG, LM),
            Precondition::Failed
        );
        assert_eq!(
            evaluate(&req(&[(&header::IF_MODIFIED_SINCE, "garbage")]), ETAG, LM),
            Precondition::Pass
        );
    }

    #[test]
    fn not_modified_keeps_validators_and_drops_the_rest() {
        let from = req(&[
            (&header::ETAG, "\"abc\""),
            (&header::LAST_MODIFIED, LM.unwrap()),
            (&header::CACHE_CONTROL, "max-age=60"),
            (&header::CONTENT_TYPE, "text/plain"),
            (&header::CONTENT_LENGTH, "10"),
            (&REPLICA_HEADER, "r1"),
            (&X_CACHE, "MISS"),
        ]);
        let res = not_modified(&from);
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let h = res.headers();
        assert_eq!(h[header::ETAG], "\"abc\"");
        assert_eq!(h[header::LAST_MODIFIED], LM.unwrap());
        assert_eq!(h[header::CACHE_CONTROL], "max-age=60");
        assert_eq!(h[REPLICA_HEADER], "r1");
        assert_eq!(h[X_CACHE], "MISS");
        assert!(!h.contains_key(header::CONTENT_TYPE));
        assert!(!h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let h = req(&[
            (&header::IF_NONE_MATCH, "\"zzz\""),
            (&header::IF_MODIFIED_SINCE, "Thu, 22 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(evaluate(&h, ETAG, LM), Precondition::Pass);
    }
}
