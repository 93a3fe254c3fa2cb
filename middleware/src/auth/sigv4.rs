//! SigV4 authentication of S3 clients with keys the proxy issues to them:
//! [`SigV4Layer`] / [`SigV4`].
//!
//! Both forms S3 accepts are verified: the `Authorization: AWS4-HMAC-SHA256`
//! header (the payload hash is the `x-amz-content-sha256` header, including
//! `UNSIGNED-PAYLOAD`) and presigned URLs (`X-Amz-Algorithm`, `X-Amz-Expires`
//! honoured). Requests signed more than 15 minutes away from the proxy's clock
//! are refused. The canonical request is built from the URI the client sent
//! (before the prefix router stripped it: [`OriginalUri`]).
//!
//! On success the client's `Authorization` header and `X-Amz-*` query
//! parameters are removed before the inner service is called (they never go
//! upstream nor into a log), and the [`Identity`] names the access key.
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

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

use super::config::{AuthConfigError, Secret, SigV4Config};
use super::stats::{AuthOutcome, AuthStats};
use super::verify::Identity;
use crate::error::S3Error;
use crate::routing::OriginalUri;

type HmacSha256 = Hmac<Sha256>;

/// The clock skew S3 tolerates, and so the proxy.
pub const MAX_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest `X-Amz-Expires` S3 accepts (7 days).
pub const MAX_EXPIRES_SECONDS: u64 = 604_800;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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

    fn outcome(&self) -> AuthOutcome {
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

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
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

/// The keys the proxy issued, and how to check a request against them.
pub struct SigV4Verifier {
    keys: HashMap<String, Secret>,
}

impl std::fmt::Debug for SigV4Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4Verifier")
            .field("access_keys", &self.keys.len())
            .finish()
    }
}

/// The parts of a signature, from the header or the query.
struct Signed<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    amz_date: &'a str,
    presigned_expires: Option<u64>,
    payload: String,
}

impl SigV4Verifier {
    /// Checks a `sigv4:` block: at least one key, none empty nor repeated.
    pub fn from_config(cfg: &SigV4Config) -> Result<Self, AuthConfigError> {
        if cfg.credentials.is_empty() {
            return Err(AuthConfigError::SigV4("sigv4.credentials: empty list".into()));
        }
        let mut keys = HashMap::new();
        for (i, c) in cfg.credentials.iter().enumerate() {
            if c.access_key_id.is_empty() || c.secret_access_key.expose().is_empty() {
                return Err(AuthConfigError::SigV4(format!(
                    "sigv4.credentials[{i}]: access_key_id and secret_access_key are required"
                )));
            }
            if keys
                .insert(c.access_key_id.clone(), c.secret_access_key.clone())
                .is_some()
            {
                return Err(AuthConfigError::SigV4(format!(
                    "sigv4.credentials[{i}].access_key_id: listed twice"
                )));
            }
        }
        Ok(Self { keys })
    }

    /// Verifies a request signed at most [`MAX_SKEW`] from `now`: `uri` is the
    /// URI the client sent. Returns the access key id.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<String, SigV4Error> {
        let query: Vec<(String, String)> = query_pairs(uri.query()).collect();
        let auth_header = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let presigned = query.iter().any(|(k, _)| k == "X-Amz-Algorithm");
        let signed = match (auth_header, presigned) {
            (Some(h), _) if h.starts_with(ALGORITHM) => parse_header(h, headers)?,
            (_, true) => parse_query(&query)?,
            (Some(h), _) if h.starts_with("AWS ") => return Err(SigV4Error::SigV2),
            _ if query.iter().any(|(k, _)| k == "AWSAccessKeyId") => return Err(SigV4Error::SigV2),
            _ => return Err(SigV4Error::Missing),
        };
        let secret = self.keys.get(signed.access_key).ok_or(SigV4Error::UnknownAccessKey)?;
        let malformed = |why| match signed.presigned_expires {
            Some(_) => SigV4Error::MalformedQuery(why),
            None => SigV4Error::MalformedHeader(why),
        };
        if signed.service != "s3" {
            return Err(malformed("the credential scope's service must be 's3'"));
        }
        let time =
            parse_amz_date(signed.amz_date).ok_or_else(|| malformed("X-Amz-Date is not YYYYMMDD'T'HHMMSS'Z'"))?;
        if !signed.amz_date.starts_with(signed.date) {
            return Err(malformed("the credential scope's date is not the request's date"));
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let skew = MAX_SKEW.as_secs() as i64;
        match signed.presigned_expires {
            Some(expires) => {
                if time - now > skew {
                    return Err(SigV4Error::NotYetValid);
                }
                if now > time + expires as i64 {
                    return Err(SigV4Error::Expired);
                }
            }
            None => {
                if (time - now).abs() > skew {
                    return Err(SigV4Error::Skewed);
                }
            }
        }
        let canonical = canonical_request(method, uri.path(), &query, headers, &signed);
        let scope = format!("{}/{}/{}/aws4_request", signed.date, signed.region, signed.service);
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            signed.amz_date,
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let expected = hex::decode(signed.signature).map_err(|_| malformed("the signature is not hex"))?;
        let mut mac = signing_key(secret, signed.date, signed.region, signed.service);
        mac.update(string_to_sign.as_bytes());
        mac.verify_slice(&expected).map_err(|_| SigV4Error::SignatureMismatch)?;
        Ok(signed.access_key.to_owned())
    }
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The HMAC keyed with the SigV4 signing key of this scope.
fn signing_key(secret: &Secret, date: &str, region: &str, service: &str) -> HmacSha256 {
    let k = hmac(format!("AWS4{}", secret.expose()).as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    let k = hmac(&k, "aws4_request");
    HmacSha256::new_from_slice(&k).expect("HMAC takes keys of any length")
}

fn parse_credential(credential: &str) -> Option<(&str, &str, &str, &str)> {
    let mut parts = credential.rsplitn(5, '/');
    let terminator = parts.next()?;
    let service = parts.next()?;
    let region = parts.next()?;
    let date = parts.next()?;
    let key = parts.next()?;
    let date_ok = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    (terminator == "aws4_request" && date_ok && !key.is_empty()).then_some((key, date, region, service))
}

fn parse_header<'a>(value: &'a str, headers: &'a HeaderMap) -> Result<Signed<'a>, SigV4Error> {
    let rest = value[ALGORITHM.len()..].trim_start();
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(SigV4Error::MalformedHeader("unexpected component")),
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(SigV4Error::MalformedHeader(
            "Credential, SignedHeaders and Signature are required",
        ));
    };
    let (access_key, date, region, service) = parse_credential(credential).ok_or(SigV4Error::MalformedHeader(
        "the Credential is not KEY/DATE/REGION/s3/aws4_request",
    ))?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or(SigV4Error::MalformedHeader("the x-amz-date header is required"))?;
    let payload = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or(EMPTY_SHA256)
        .to_owned();
    Ok(Signed {
        access_key,
        date,
        region,
        service,
        signed_headers,
        signature,
        amz_date,
        presigned_expires: None,
        payload,
    })
}

fn parse_query(query: &[(String, String)]) -> Result<Signed<'_>, SigV4Error> {
    let get = |name: &'static str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or(SigV4Error::MalformedQuery(
                "X-Amz-Credential, -Date, -Expires, -SignedHeaders and -Signature are required",
            ))
    };
    if get("X-Amz-Algorithm")? != ALGORITHM {
        return Err(SigV4Error::MalformedQuery("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
    }
    let (access_key, date, region, service) = parse_credential(get("X-Amz-Credential")?).ok_or(
        SigV4Error::MalformedQuery("the X-Amz-Credential is not KEY/DATE/REGION/s3/aws4_request"),
    )?;
    let expires: u64 = get("X-Amz-Expires")?
        .parse()
        .map_err(|_| SigV4Error::MalformedQuery("X-Amz-Expires must be a number of seconds"))?;
    if expires == 0 || expires > MAX_EXPIRES_SECONDS {
        return Err(SigV4Error::MalformedQuery(
            "X-Amz-Expires must be between 1 and 604800 seconds",
        ));
    }
    let payload = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Content-Sha256"))
        .map_or_else(|| "UNSIGNED-PAYLOAD".to_owned(), |(_, v)| v.clone());
    Ok(Signed {
        access_key,
        date,
        region,
        service,
        signed_headers: get("X-Amz-SignedHeaders")?,
        signature: get("X-Amz-Signature")?,
        amz_date: get("X-Amz-Date")?,
        presigned_expires: Some(expires),
        payload,
    })
}

/// Seconds since the epoch of an ISO 8601 basic UTC time (`20130524T000000Z`).
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes().all(|c| c.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// SigV4's URI encoding: everything but `A-Za-z0-9-_.~` (and `/` in paths).
const SIGV4_QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
const SIGV4_PATH: &AsciiSet = &SIGV4_QUERY.remove(b'/');

fn canonical_request(
    method: &Method,
    path: &str,
    query: &[(String, String)],
    headers: &HeaderMap,
    s: &Signed<'_>,
) -> String {
    let decoded = percent_decode_str(path).decode_utf8_lossy();
    let mut uri = utf8_percent_encode(&decoded, SIGV4_PATH).to_string();
    if uri.is_empty() {
        uri.push('/');
    }
    let mut params: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(s.presigned_expires.is_some() && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(k, SIGV4_QUERY).to_string(),
                utf8_percent_encode(v, SIGV4_QUERY).to_string(),
            )
        })
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in s.signed_headers.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{}\n{}",
        s.signed_headers, s.payload
    )
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

/// Applies [`SigV4`]: requests without SigV4 credentials are refused.
#[derive(Clone, Debug)]
pub struct SigV4Layer {
    verifier: Arc<SigV4Verifier>,
    stats: Arc<AuthStats>,
}

impl SigV4Layer {
    /// Checks `cfg` and builds the layer.
    pub fn from_config(cfg: &SigV4Config) -> Result<Self, AuthConfigError> {
        Ok(Self {
            verifier: Arc::new(SigV4Verifier::from_config(cfg)?),
            stats: Arc::new(AuthStats::new()),
        })
    }

    /// Counts outcomes into `stats` (shared with the JWT layers).
    pub fn with_stats(mut self, stats: Arc<AuthStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Wraps `inner`, sending requests without SigV4 credentials to `unsigned`
    /// (e.g. `inner` behind the JWT layer) instead of refusing them.
    pub fn with_unsigned<S>(&self, inner: S, unsigned: S) -> SigV4<S> {
        SigV4 {
            inner,
            unsigned: Some(unsigned),
            verifier: self.verifier.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl<S> Layer<S> for SigV4Layer {
    type Service = SigV4<S>;

    fn layer(&self, inner: S) -> SigV4<S> {
        SigV4 {
            inner,
            unsigned: None,
            verifier: self.verifier.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// SigV4 authentication in front of a service (see the [module](self) docs).
/// Rejections are S3 XML answers; the inner error passes through.
#[derive(Clone, Debug)]
pub struct SigV4<S> {
    inner: S,
    unsigned: Option<S>,
    verifier: Arc<SigV4Verifier>,
    stats: Arc<AuthStats>,
}

impl<S> SigV4<S> {
    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for SigV4<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future =
        futures_util::future::Either<Oneshot<S, Request<B>>, std::future::Ready<Result<Response<Body>, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The service called is picked per request; it is driven to readiness by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        use futures_util::future::Either;
        if !is_sigv4(&req) {
            if let Some(unsigned) = &self.unsigned {
                return Either::Left(unsigned.clone().oneshot(req));
            }
        }
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |o| o.0.clone());
        match self
            .verifier
            .verify(req.method(), &uri, req.headers(), SystemTime::now())
        {
            Ok(access_key) => {
                self.stats.record(AuthOutcome::Success);
                strip_credentials(&mut req);
                req.extensions_mut().insert(Identity {
                    subject: Some(access_key.clone()),
                    claims: serde_json::json!({ "access_key_id": access_key, "auth": "sigv4" }),
                });
                Either::Left(self.inner.clone().oneshot(req))
            }
            Err(err) => {
                self.stats.record(err.outcome());
                let id = crate::object::request_id(req.headers()).unwrap_or_default().to_owned();
                tracing::debug!(reason = %err, request_id = %id, "SigV4 authentication failed");
                let mut res = err.to_s3_error().with_request_id(id).into_response();
                if req.method() == Method::HEAD {
                    *res.body_mut() = Body::empty();
                }
                res.extensions_mut().insert(err.outcome());
                Either::Right(std::future::ready(Ok(res)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::SigV4Credential;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn verifier() -> SigV4Verifier {
        SigV4Verifier::from_config(&SigV4Config {
            credentials: vec![SigV4Credential {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: Secret::new(SECRET),
            }],
        })
        .unwrap()
    }

    fn at(amz: &str) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(parse_amz_date(amz).unwrap() as u64)
    }

    /// AWS's published example: "GET Object" with a range, header form
    /// (S3 API reference, "Signature Calculations for the Authorization Header").
    fn example_get() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        h.insert("range", "bytes=0-9".parse().unwrap());
        h.insert("x-amz-content-sha256", EMPTY_SHA256.parse().unwrap());
        h.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
                .parse()
                .unwrap(),
        );
        h
    }

    #[test]
    fn published_header_vector_verifies() {
        let uri: Uri = "/test.txt".parse().unwrap();
        let v = verifier();
        let now = at("20130524T000500Z");
        assert_eq!(
            v.verify(&Method::GET, &uri, &example_get(), now).unwrap(),
            "AKIAIOSFODNN7EXAMPLE"
        );
        let mut tampered = example_get();
        tampered.insert("range", "bytes=0-10".parse().unwrap());
        assert_eq!(
            v.verify(&Method::GET, &uri, &tampered, now),
            Err(SigV4Error::SignatureMismatch)
        );
        let other: Uri = "/test2.txt".parse().unwrap();
        assert_eq!(
            v.verify(&Method::GET, &other, &example_get(), now),
            Err(SigV4Error::SignatureMismatch)
        );
        assert_eq!(
            v.verify(&Method::GET, &uri, &example_get(), at("20130524T001600Z")),
            Err(SigV4Error::Skewed)
        );
    }

    /// AWS's published presigned example ("Authenticating Requests: Using Query Parameters").
    #[test]
    fn published_presigned_vector_verifies_and_expires() {
        let uri: Uri = "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "examplebucket.s3.amazonaws.com".parse().unwrap());
        let v = verifier();
        assert!(v.verify(&Method::GET, &uri, &h, at("20130524T120000Z")).is_ok());
        assert_eq!(
            v.verify(&Method::GET, &uri, &h, at("20130525T000001Z")),
            Err(SigV4Error::Expired)
        );
        assert_eq!(
            v.verify(&Method::GET, &uri, &h, at("20130523T000000Z")),
            Err(SigV4Error::NotYetValid)
        );
        assert_eq!(
            v.verify(&Method::HEAD, &uri, &h, at("20130524T120000Z")),
            Err(SigV4Error::SignatureMismatch)
        );
    }

    #[test]
    fn errors_map_to_s3_codes() {
        let v = verifier();
        let uri: Uri = "/test.txt".parse().unwrap();
        let now = at("20130524T000000Z");
        assert_eq!(
            v.verify(&Method::GET, &uri, &HeaderMap::new(), now),
            Err(SigV4Error::Missing)
        );
        let mut h = example_get();
        let auth = h["authorization"]
            .to_str()
            .unwrap()
            .replace("AKIAIOSFODNN7EXAMPLE", "AKIAUNKNOWN");
        h.insert("authorization", auth.parse().unwrap());
        assert_eq!(v.verify(&Method::GET, &uri, &h, now), Err(SigV4Error::UnknownAccessKey));
        h.insert("authorization", "AWS4-HMAC-SHA256 Credential=x".parse().unwrap());
        let err = v.verify(&Method::GET, &uri, &h, now).unwrap_err();
        assert_eq!(err.to_s3_error().code(), "AuthorizationHeaderMalformed");
        assert_eq!(err.to_s3_error().status(), StatusCode::BAD_REQUEST);
        assert_eq!(SigV4Error::Skewed.to_s3_error().code(), "RequestTimeTooSkewed");
        assert_eq!(SigV4Error::Expired.to_s3_error().code(), "AccessDenied");
        assert_eq!(
            SigV4Error::SignatureMismatch.to_s3_error().code(),
            "SignatureDoesNotMatch"
        );
        assert_eq!(SigV4Error::UnknownAccessKey.to_s3_error().code(), "InvalidAccessKeyId");
    }

    #[test]
    fn amz_dates_parse_to_epoch_seconds() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20130524T000000Z"), Some(1_369_353_600));
        assert_eq!(parse_amz_date("20130524T000000"), None);
        assert_eq!(parse_amz_date("2013052xT000000Z"), None);
    }

    #[tokio::test]
    async fn unsigned_requests_go_to_the_fallback_signed_ones_are_checked() {
        let echo = |tag: &'static str| {
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| async move {
                let who = req.extensions().get::<Identity>().and_then(|i| i.subject.clone());
                let auth = req.headers().contains_key(header::AUTHORIZATION);
                Ok::<_, Infallible>(Response::new(Body::from(format!("{tag} {who:?} {auth}"))))
            }))
        };
        let layer = SigV4Layer::from_config(&SigV4Config {
            credentials: vec![SigV4Credential {
                access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                secret_access_key: Secret::new(SECRET),
            }],
        })
        .unwrap();
        let both = layer.with_unsigned(echo("signed"), echo("jwt"));
        let bearer = Request::get("/k")
            .header("authorization", "Bearer x")
            .body(Body::empty())
            .unwrap();
        let res = both.clone().oneshot(bearer).await.unwrap();
        let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"jwt None true");
        let only = layer.layer(echo("signed"));
        let res = only
            .clone()
            .oneshot(Request::get("/k").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        let sigv2 = Request::get("/k?AWSAccessKeyId=A&Signature=s&Expires=1")
            .body(Body::empty())
            .unwrap();
        let res = both.oneshot(sigv2).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn credentials_are_stripped() {
        let mut req = Request::get("/k?versionId=3&X-Amz-Signature=abc&X-Amz-Credential=A%2Fb")
            .header("authorization", "AWS4-HMAC-SHA256 x")
            .body(())
            .unwrap();
        strip_credentials(&mut req);
        assert_eq!(req.uri(), "/k?versionId=3");
        assert!(req.headers().get("authorization").is_none());
    }
}
