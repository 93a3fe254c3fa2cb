use std::sync::Arc;

use crate::failover::Attempt;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};

/// The request headers passed upstream: ranges and preconditions, nothing else.
///
/// The client's `Authorization`, cookies and query string never leave the proxy.
pub const FORWARDED_REQUEST_HEADERS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
];

/// `GET` or `HEAD`: the only methods an object stack serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectMethod {
    /// Fetch the object.
    Get,
    /// Fetch only its headers.
    Head,
}

impl ObjectMethod {
    /// `GET` and `HEAD` map to themselves; anything else is `None`.
    pub fn from_http(method: &Method) -> Option<Self> {
        match *method {
            Method::GET => Some(Self::Get),
            Method::HEAD => Some(Self::Head),
            _ => None,
        }
    }
}

/// What an [`ObjectRequest`] reads: an object (the default), a page of the
/// bucket's listing, or the bucket's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operation {
    /// `GetObject` / `HeadObject` of the request's key.
    #[default]
    Object,
    /// `ListObjectsV2` of the bucket (the key is empty; the query holds its parameters).
    ListObjectsV2,
    /// `HeadBucket` (the key is empty).
    HeadBucket,
}

/// The S3 query parameters of an object read that are passed upstream
/// (signed into the presigned URL); any other client parameter stays at the proxy.
pub const FORWARDED_OBJECT_PARAMS: [&str; 8] = [
    "versionId",
    "partNumber",
    "response-content-type",
    "response-content-disposition",
    "response-cache-control",
    "response-content-encoding",
    "response-content-language",
    "response-expires",
];

/// A read of one object of one bucket, as it travels through the layers.
///
/// Cheap to clone (the key is shared), so failover and retries replay it.
#[derive(Debug, Clone)]
pub struct ObjectRequest {
    method: ObjectMethod,
    key: Arc<str>,
    headers: HeaderMap,
    operation: Operation,
    query: Vec<(String, String)>,
    extensions: http::Extensions,
    request_id: Option<HeaderValue>,
    attempt: Option<Attempt>,
}

impl ObjectRequest {
    /// A `GET` of `key` (the decoded object key, without leading `/`).
    pub fn get(key: impl Into<Arc<str>>) -> Self {
        Self::new(ObjectMethod::Get, key)
    }

    /// A `HEAD` of `key`.
    pub fn head(key: impl Into<Arc<str>>) -> Self {
        Self::new(ObjectMethod::Head, key)
    }

    /// A request with this method and key, and no headers.
    pub fn new(method: ObjectMethod, key: impl Into<Arc<str>>) -> Self {
        Self {
            method,
            key: key.into(),
            headers: HeaderMap::new(),
            operation: Operation::Object,
            query: Vec::new(),
            extensions: http::Extensions::new(),
            request_id: None,
            attempt: None,
        }
    }

    /// A `ListObjectsV2` page of the bucket, with these upstream parameters
    /// (`prefix`, `delimiter`, `max-keys`, `start-after`, `fetch-owner`).
    pub fn list_objects_v2(query: Vec<(String, String)>) -> Self {
        Self {
            operation: Operation::ListObjectsV2,
            query,
            ..Self::new(ObjectMethod::Get, "")
        }
    }

    /// A `HeadBucket`.
    pub fn head_bucket() -> Self {
        Self {
            operation: Operation::HeadBucket,
            ..Self::new(ObjectMethod::Head, "")
        }
    }

    /// Adds one query parameter signed into the upstream request (e.g.
    /// `versionId`, `response-content-type`).
    pub fn with_query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Carries the client request's id ([`REQUEST_ID`](crate::object::REQUEST_ID),
    /// as a layer in front set it): answers made without the inner service,
    /// such as cache hits, send it back. Not sent upstream.
    pub fn with_request_id(mut self, id: Option<HeaderValue>) -> Self {
        self.request_id = id;
        self
    }

    /// The client request's id, when it had one (see [`Self::with_request_id`]).
    pub fn request_id(&self) -> Option<&HeaderValue> {
        self.request_id.as_ref()
    }

    /// Marks this request as the failover's attempt `attempt` (a field, not
    /// an extension: an extension map per attempt cost ~600 instructions;
    /// issue 13).
    pub fn with_attempt(mut self, attempt: Attempt) -> Self {
        self.attempt = Some(attempt);
        self
    }

    /// Which attempt of the failover this request is, once it sent it to a
    /// replica (see [`Attempt`]).
    pub fn attempt(&self) -> Option<Attempt> {
        self.attempt
    }

    /// What is read: an object, a listing page, the bucket.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The query parameters signed into the upstream request.
    pub fn query(&self) -> &[(String, String)] {
        &self.query
    }

    /// Copies the [`FORWARDED_REQUEST_HEADERS`] of a client request, but
    /// not the ones S3 ignores (RFC 9110 says to): a `Range` that is not one
    /// `bytes=` range (several, backwards, or unparsable: the whole object),
    /// and an `If-Modified-Since` or `If-Unmodified-Since` that is not an
    /// HTTP date. Some S3-compatible servers refuse those with `400` or
    /// `416`; left out, every replica answers as S3 and a cache hit do.
    pub fn with_forwarded_headers(mut self, client: &HeaderMap) -> Self {
        // One pass over the client's few headers (no lookup per name).
        for (name, value) in client {
            if FORWARDED_REQUEST_HEADERS.contains(name) && s3_heeds(name, value) {
                self.headers.append(name.clone(), value.clone());
            }
        }
        self
    }

    /// Copies the [`FORWARDED_OBJECT_PARAMS`] of a client query string
    /// (percent-decoded; other parameters, such as SigV4's, are left out).
    pub fn with_forwarded_query(mut self, query: Option<&str>) -> Self {
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if FORWARDED_OBJECT_PARAMS.contains(&name.as_ref()) {
                self.query.push((name.into_owned(), value.into_owned()));
            }
        }
        self
    }

    /// Whether a client query string holds any of the [`FORWARDED_OBJECT_PARAMS`]
    /// (such reads vary by more than the key: the cache must not serve them).
    pub fn query_has_forwarded_params(query: Option<&str>) -> bool {
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .any(|(name, _)| FORWARDED_OBJECT_PARAMS.contains(&name.as_ref()))
    }

    /// Sets one upstream header (e.g. `Range`).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// `GET` or `HEAD`.
    pub fn method(&self) -> ObjectMethod {
        self.method
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object key, shared (a reference count, no copy).
    pub fn shared_key(&self) -> Arc<str> {
        self.key.clone()
    }

    /// The headers sent upstream.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Mutable access to the headers sent upstream.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }

    /// Typed values the layers attach for the layers below; never sent
    /// upstream.
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    /// Mutable access to the extensions.
    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }
}

/// Whether S3 acts on this forwarded header (see
/// [`ObjectRequest::with_forwarded_headers`]).
fn s3_heeds(name: &HeaderName, value: &HeaderValue) -> bool {
    let text = || value.to_str().unwrap_or_default();
    if name == header::RANGE {
        // Against the largest length, only a range that is not one is `Full`.
        crate::http::range::parse_range(text(), u64::MAX) != crate::http::range::RangeSpec::Full
    } else if name == header::IF_MODIFIED_SINCE || name == header::IF_UNMODIFIED_SINCE {
        httpdate::parse_http_date(text()).is_ok()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_only_the_range_and_precondition_headers_with_every_value() {
        let mut client = HeaderMap::new();
        client.insert(header::HOST, HeaderValue::from_static("proxy.example"));
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        client.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        client.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""));
        client.append(header::IF_NONE_MATCH, HeaderValue::from_static("\"b\""));
        client.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Sat, 28 Nov 2026 07:00:00 GMT"),
        );
        let req = ObjectRequest::new(ObjectMethod::Get, "k").with_forwarded_headers(&client);
        let h = req.headers();
        assert_eq!(h.len(), 4);
        assert_eq!(h.get(header::RANGE).unwrap(), "bytes=0-9");
        let etags: Vec<_> = h.get_all(header::IF_NONE_MATCH).iter().collect();
        assert_eq!(etags, ["\"a\"", "\"b\""]);
        assert!(h.contains_key(header::IF_MODIFIED_SINCE));
        assert!(!h.contains_key(header::HOST) && !h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn leaves_out_what_s3_ignores() {
        let forwarded = |name: HeaderName, value: &'static str| {
            let mut client = HeaderMap::new();
            client.insert(name.clone(), HeaderValue::from_static(value));
            let req = ObjectRequest::get("k").with_forwarded_headers(&client);
            req.headers().contains_key(name)
        };
        for range in ["bytes=0-9", "bytes=5-", "bytes=-3", "bytes=-0", "bytes=99999999999-"] {
            assert!(forwarded(header::RANGE, range), "{range}");
        }
        for range in [
            "bytes=x-",
            "bytes=4-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=+1-3",
            "0-9",
        ] {
            assert!(!forwarded(header::RANGE, range), "{range}");
        }
        let date = "Sat, 28 Nov 2026 07:00:00 GMT";
        for name in [header::IF_MODIFIED_SINCE, header::IF_UNMODIFIED_SINCE] {
            assert!(forwarded(name.clone(), date));
            assert!(!forwarded(name.clone(), "yesterday"));
            assert!(!forwarded(name, "2026-11-28"));
        }
        assert!(forwarded(header::IF_NONE_MATCH, "whatever"));
    }
}
