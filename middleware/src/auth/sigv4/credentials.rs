//! Where a client's credentials sit in a request: whether it carries any,
//! and taking them out before the request goes on.

use http::{header, Request, Uri};
use percent_encoding::percent_decode_str;

use super::ALGORITHM;

/// Whether a request carries S3 credentials: SigV4 (header or presigned
/// form), or SigV2 (refused with a clear error rather than taken as anonymous).
pub fn is_sigv4<B>(req: &Request<B>) -> bool {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(ALGORITHM) || v.starts_with("AWS "));
    header || query_pairs(req.uri().query()).any(|(k, _)| k == "X-Amz-Algorithm" || k == "AWSAccessKeyId")
}

pub(super) fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
}

/// Removes the client's SigV4 credentials (the `Authorization` header and the
/// `X-Amz-*` signing parameters) from a request.
pub fn strip_credentials<B>(req: &mut Request<B>) {
    req.headers_mut().remove(header::AUTHORIZATION);
    if let Some(query) = req.uri().query() {
        const SIGNING: [&str; 7] = [
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
            "X-Amz-Security-Token",
        ];
        let kept: Vec<&str> = query
            .split('&')
            .filter(|p| {
                let name = p.split('=').next().unwrap_or_default();
                !SIGNING.iter().any(|s| s.eq_ignore_ascii_case(name))
            })
            .collect();
        let pq = if kept.is_empty() {
            req.uri().path().to_owned()
        } else {
            format!("{}?{}", req.uri().path(), kept.join("&"))
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = uri.into_parts().path_and_query;
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}
