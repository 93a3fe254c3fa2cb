//! `buckets[].cors`: the Cross-Origin Resource Sharing answers of one bucket,
//! so a web app on another origin can `fetch()` its objects (absent: no CORS
//! headers, and `OPTIONS` is refused as before). Applied by
//! `tower_http::cors::CorsLayer` outside the bucket's auth and cache (see
//! `crate::app::cors`).

use serde::Deserialize;

/// Request headers a browser app may send by default: the token, ranges,
/// conditionals, and what the AWS SDK for JavaScript adds to a signed request
/// (`x-amz-checksum-mode`: v3 sends it on every `GetObject` since 3.729, and a
/// preflight that does not allow it fails the whole read).
pub const DEFAULT_ALLOWED_HEADERS: [&str; 14] = [
    "authorization",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "x-amz-user-agent",
    "x-amz-checksum-mode",
    "amz-sdk-invocation-id",
    "amz-sdk-request",
];

/// Response headers a browser app may read by default (beyond the
/// CORS-safelisted ones, `ETag` and `Content-Range` are hidden otherwise;
/// `Retry-After`, so an app can back off when a 429 or 503 says how long).
pub const DEFAULT_EXPOSE_HEADERS: [&str; 10] = [
    "etag",
    "content-length",
    "content-range",
    "accept-ranges",
    "last-modified",
    "x-cache",
    "x-request-id",
    "x-amz-request-id",
    "x-amz-version-id",
    "retry-after",
];

/// `buckets[].cors`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins allowed to read (`https://app.example.com`), or `["*"]` for any.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight allows: `GET`, `HEAD`, `OPTIONS`.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight allows, or `["*"]` for whatever it asks.
    pub allowed_headers: Vec<String>,
    /// Response headers the browser lets the app read, or `["*"]`.
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer.
    pub max_age_seconds: u64,
    /// Whether cookies and HTTP auth go with requests (`Access-Control-Allow-Credentials`).
    pub allow_credentials: bool,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allowed_methods: vec!["GET".into(), "HEAD".into()],
            allowed_headers: DEFAULT_ALLOWED_HEADERS.map(String::from).to_vec(),
            expose_headers: DEFAULT_EXPOSE_HEADERS.map(String::from).to_vec(),
            max_age_seconds: 600,
            allow_credentials: false,
        }
    }
}

/// The methods `allowed_methods` may name: the proxy only reads.
pub const CORS_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// Whether a list is the wildcard alone (`["*"]`).
pub fn is_wildcard(list: &[String]) -> bool {
    matches!(list, [only] if only.trim() == "*")
}
