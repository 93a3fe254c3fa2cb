use std::sync::Arc;

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

/// A read of one object of one bucket, as it travels through the layers.
///
/// Cheap to clone (the key is shared), so failover and retries replay it.
#[derive(Debug, Clone)]
pub struct ObjectRequest {
    method: ObjectMethod,
    key: Arc<str>,
    headers: HeaderMap,
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
        }
    }

    /// Copies the [`FORWARDED_REQUEST_HEADERS`] of a client request.
    pub fn with_forwarded_headers(mut self, client: &HeaderMap) -> Self {
        for name in FORWARDED_REQUEST_HEADERS.iter() {
            for value in client.get_all(name) {
                self.headers.append(name.clone(), value.clone());
            }
        }
        self
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

    /// The headers sent upstream.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Mutable access to the headers sent upstream.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        &mut self.headers
    }
}
