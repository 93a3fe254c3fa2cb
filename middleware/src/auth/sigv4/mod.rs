//! SigV4 authentication of S3 clients with keys the proxy issues to them:
//! [`SigV4Layer`] / [`SigV4`].
//!
//! Both forms S3 accepts are verified: the `Authorization: AWS4-HMAC-SHA256`
//! header (the payload hash is the `x-amz-content-sha256` header, including
//! `UNSIGNED-PAYLOAD`) and presigned URLs (`X-Amz-Algorithm`, `X-Amz-Expires`
//! honoured). Requests signed more than 15 minutes away from the proxy's clock
//! are refused. The canonical request is built from the URI the client sent
//! (before the prefix router stripped it:
//! [`OriginalUri`](crate::routing::OriginalUri)). Behind axum's own
//! `Router::nest_service` or `Router::nest`, add
//! [`OriginalUriLayer`](crate::routing::OriginalUriLayer) to the nesting
//! router: without it SigV4 sees the path with the prefix stripped, and every
//! signature fails (`SignatureDoesNotMatch`).
//!
//! On success the client's `Authorization` header and `X-Amz-*` query
//! parameters are removed before the inner service is called (they never go
//! upstream nor into a log), and the [`Identity`](crate::auth::Identity)
//! names the access key.
//!
//! | outcome | answer |
//! |---|---|
//! | no credentials (and no fallback) | 403 `AccessDenied` |
//! | unknown access key | 403 `InvalidAccessKeyId` |
//! | wrong signature | 403 `SignatureDoesNotMatch` |
//! | presigned URL past `X-Amz-Expires`, or not valid yet | 403 `AccessDenied` |
//! | header-signed more than 15 min off | 403 `RequestTimeTooSkewed` |
//! | malformed `Authorization` | 400 `AuthorizationHeaderMalformed` |
//! | malformed presigned parameters | 400 `AuthorizationQueryParametersError` |

mod credentials;
mod error;
mod layer;
mod service;
mod signed;
#[cfg(test)]
mod tests;
mod verifier;

use std::time::Duration;

pub use credentials::{is_sigv4, strip_credentials};
pub use error::SigV4Error;
pub use layer::SigV4Layer;
pub use service::SigV4;
pub use verifier::SigV4Verifier;

/// The clock skew S3 tolerates, and so the proxy.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest `X-Amz-Expires` S3 accepts (7 days).
pub const MAX_EXPIRES_SECONDS: u64 = 604_800;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
