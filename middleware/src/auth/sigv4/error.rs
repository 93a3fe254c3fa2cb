//! [`SigV4Error`]: why a request is refused, as S3's error and as an auth outcome.

use http::StatusCode;

use crate::auth::stats::AuthOutcome;
use crate::error::S3Error;

/// Why a request is refused; each maps to S3's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor presigned parameters.
    #[error("no credentials")]
    Missing,
    /// The access key is not one the proxy issued.
    #[error("unknown access key")]
    UnknownAccessKey,
    /// The signature does not verify.
    #[error("signature mismatch")]
    SignatureMismatch,
    /// A presigned URL past its expiry.
    #[error("request has expired")]
    Expired,
    /// A presigned URL dated in the future (beyond the skew window).
    #[error("request is not yet valid")]
    NotYetValid,
    /// A header-signed request dated too far from now.
    #[error("request time too skewed")]
    Skewed,
    /// A malformed `Authorization` header or `x-amz-date`.
    #[error("malformed authorization header: {0}")]
    MalformedHeader(&'static str),
    /// Signature Version 2 (`AWS key:sig`, `AWSAccessKeyId=`): not accepted.
    #[error("signature version 2")]
    SigV2,
    /// Malformed presigned query parameters.
    #[error("malformed presigned parameters: {0}")]
    MalformedQuery(&'static str),
}

impl SigV4Error {
    /// The client's S3 error.
    pub fn to_s3_error(&self) -> S3Error {
        let forbidden = StatusCode::FORBIDDEN;
        match self {
            SigV4Error::Missing => S3Error::new(forbidden, "AccessDenied", "Access Denied"),
            SigV4Error::UnknownAccessKey => S3Error::new(
                forbidden,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
            ),
            SigV4Error::SignatureMismatch => S3Error::new(
                forbidden,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
            ),
            SigV4Error::Expired => S3Error::new(forbidden, "AccessDenied", "Request has expired"),
            SigV4Error::NotYetValid => S3Error::new(forbidden, "AccessDenied", "Request is not valid yet"),
            SigV4Error::Skewed => S3Error::new(
                forbidden,
                "RequestTimeTooSkewed",
                "The difference between the request time and the current time is too large.",
            ),
            SigV4Error::SigV2 => S3Error::new(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.",
            ),
            SigV4Error::MalformedHeader(why) => S3Error::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationHeaderMalformed",
                format!("The authorization header is malformed; {why}."),
            ),
            SigV4Error::MalformedQuery(why) => S3Error::new(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                format!("The presigned URL is malformed; {why}."),
            ),
        }
    }

    pub(super) fn outcome(&self) -> AuthOutcome {
        match self {
            SigV4Error::Missing => AuthOutcome::Missing,
            SigV4Error::UnknownAccessKey => AuthOutcome::UnknownKey,
            SigV4Error::SignatureMismatch => AuthOutcome::BadSignature,
            SigV4Error::Expired => AuthOutcome::Expired,
            SigV4Error::NotYetValid | SigV4Error::Skewed => AuthOutcome::NotYetValid,
            SigV4Error::MalformedHeader(_) | SigV4Error::MalformedQuery(_) | SigV4Error::SigV2 => {
                AuthOutcome::Malformed
            }
        }
    }
}
