//! HTTP semantics shared by every layer that answers from an object (RFC 9110
//! sections 8, 13 and 14), in one place with one set of tests:
//!
//! - [`conditional`]: preconditions (`If-Match`, `If-None-Match`,
//!   `If-Modified-Since`, `If-Unmodified-Since`), `If-Range`, and the `304`
//!   answer;
//! - [`range`]: `Range` against an object's length, `Content-Range` written
//!   and read, the byte range a response body carries;
//! - [`headers`]: the proxy's own response headers and `Content-Length`.
//!
//! The cache answers hits with them, the object face re-checks upstream
//! answers with them, and failover resumes a cut body with them.
//!
//! They are hand-written rather than taken from the `headers` crate because
//! S3 clients and servers bend the grammar (an unquoted `ETag` in
//! `If-None-Match`, a multi-range `Range` answered with the whole object),
//! and the strict typed parsers of `headers` reject what S3 accepts.

pub mod conditional;
pub mod headers;
pub mod range;
