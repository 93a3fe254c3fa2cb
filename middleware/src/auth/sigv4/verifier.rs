//! [`SigV4Verifier`]: the keys the proxy issued, and the check of a
//! request's signature against them (scope, date, skew, HMAC).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{header, HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};

use super::credentials::query_pairs;
use super::signed::{canonical_request, parse_amz_date, parse_header, parse_query};
use super::{SigV4Error, ALGORITHM, MAX_SKEW};
use crate::auth::config::{AuthConfigError, Secret, SigV4Config};

type HmacSha256 = Hmac<Sha256>;

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
        let canonical = canonical_request(
            method,
            uri.path(),
            uri.authority().map(|a| a.as_str()),
            &query,
            headers,
            &signed,
        );
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
