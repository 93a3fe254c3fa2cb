//! The `auth:` / `jwt:` configuration blocks, as plain serde structs.
//!
//! Defaults live here, in one place. Unknown keys are not rejected by serde
//! (the binary's loader reports them); every value is checked by
//! [`AuthLayer::from_config`](super::AuthLayer::from_config), whose errors
//! name the offending key.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Default for [`JwtConfig::leeway_seconds`]: tolerated clock skew for `exp`/`nbf`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// Default for [`JwtConfig::jwks_refresh_seconds`].
pub const DEFAULT_JWKS_REFRESH_SECONDS: u64 = 300;
/// Default for [`JwtConfig::jwks_min_refetch_seconds`].
pub const DEFAULT_JWKS_MIN_REFETCH_SECONDS: u64 = 10;
/// Default for [`JwtConfig::jwks_timeout_seconds`].
pub const DEFAULT_JWKS_TIMEOUT_SECONDS: u64 = 10;

/// A bucket's `auth:` block: `{enabled, jwt}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Whether requests to the bucket must carry a valid JWT.
    pub enabled: bool,
    /// The bucket's own JWT settings; the top-level `jwt:` block when absent.
    pub jwt: Option<JwtConfig>,
    /// SigV4-signed S3 clients, with keys the proxy issues to them.
    pub sigv4: Option<SigV4Config>,
}

/// A `sigv4:` block: the access keys the proxy issues to its S3 clients
/// (never the replicas' keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SigV4Config {
    /// The accepted keys.
    pub credentials: Vec<SigV4Credential>,
}

/// One client key pair of a [`SigV4Config`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SigV4Credential {
    /// The access key id clients sign with.
    pub access_key_id: String,
    /// Its secret. Never printed by `Debug`.
    pub secret_access_key: Secret,
}

impl AuthConfig {
    /// The JWT settings to enforce: `None` when auth is disabled, the bucket's
    /// own block, else `default` (the top-level `jwt:` block).
    ///
    /// Fails closed: auth enabled with no block anywhere is an error, unless
    /// the bucket has a `sigv4:` block (then JWT is optional).
    pub fn effective<'a>(&'a self, default: Option<&'a JwtConfig>) -> Result<Option<&'a JwtConfig>, AuthConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        match (self.jwt.as_ref().or(default), &self.sigv4) {
            (Some(jwt), _) => Ok(Some(jwt)),
            (None, Some(_)) => Ok(None),
            (None, None) => Err(AuthConfigError::MissingJwt),
        }
    }

    /// The SigV4 settings to enforce: `None` when auth is disabled or the
    /// bucket has no `sigv4:` block.
    pub fn effective_sigv4(&self) -> Option<&SigV4Config> {
        self.sigv4.as_ref().filter(|_| self.enabled)
    }
}

/// A `jwt:` block: how tokens are found, verified and authorized.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct JwtConfig {
    /// The only accepted signing algorithm: `HS256/384/512`, `RS256/384/512`,
    /// `PS256/384/512`, `ES256/384` or `EdDSA`. Required; `none` is never accepted.
    pub algorithm: String,
    /// HMAC secret (HS* only). Never printed by `Debug`.
    pub secret: Option<Secret>,
    /// PEM public key file (RS*/PS*: RSA, ES*: EC, EdDSA: Ed25519).
    pub public_key_file: Option<PathBuf>,
    /// URL of a JWKS document; keys are picked by the token's `kid`.
    pub jwks_url: Option<String>,
    /// Required `iss` claim, when set.
    pub issuer: Option<String>,
    /// Accepted `aud` values (a string or a list); the token must name one, when set.
    pub audience: Option<Audience>,
    /// Clock skew tolerated for `exp` and `nbf`, in seconds (default 60).
    pub leeway_seconds: u64,
    /// Where the token is looked for, tried in order (default: `[{type: bearer}]`).
    pub token_sources: Vec<TokenSource>,
    /// Rules every authenticated token's claims must pass (else 403).
    pub claims: Vec<ClaimRule>,
    /// How often the JWKS is fetched again in the background (default 300 s).
    pub jwks_refresh_seconds: u64,
    /// Minimum time between two fetches caused by unknown `kid`s (default 10 s).
    pub jwks_min_refetch_seconds: u64,
    /// Timeout of one JWKS fetch (default 10 s).
    pub jwks_timeout_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: String::new(),
            secret: None,
            public_key_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            token_sources: vec![TokenSource::Bearer],
            claims: Vec::new(),
            jwks_refresh_seconds: DEFAULT_JWKS_REFRESH_SECONDS,
            jwks_min_refetch_seconds: DEFAULT_JWKS_MIN_REFETCH_SECONDS,
            jwks_timeout_seconds: DEFAULT_JWKS_TIMEOUT_SECONDS,
        }
    }
}

/// A credential (a JWT HMAC key, an S3 secret key, an admin token...): its
/// `Debug` output never shows the value.
///
/// It deserializes from any scalar, so a secret made of digits written
/// without quotes stays that text (`123456` becomes `"123456"`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Scalar;
        impl serde::de::Visitor<'_> for Scalar {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
        }
        deserializer.deserialize_any(Scalar)
    }
}

/// Accepted audiences: `audience: api` or `audience: [api, web]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One accepted audience.
    One(String),
    /// Several accepted audiences; the token must name at least one.
    Many(Vec<String>),
}

impl Audience {
    /// The accepted audiences as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(v) => v.clone(),
        }
    }
}

/// One place a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>` (scheme matched case-insensitively).
    Bearer,
    /// A request header, with an optional prefix stripped (`prefix: "Token "`).
    Header {
        /// The header name.
        name: String,
        /// A prefix the value must start with, removed before verification.
        #[serde(default)]
        prefix: Option<String>,
    },
    /// A query parameter. It is removed from the URI before the request goes on.
    Query {
        /// The parameter name.
        name: String,
    },
}

/// A rule on one claim; its one operator must hold (else 403).
///
/// `claim` is a path: each `.` goes one object deeper (`realm_access.roles`);
/// a URL-shaped name (`https://example.com/roles`) is one top-level claim.
/// A missing claim fails every rule. One operator per rule (`gt`/`gte` and
/// `lt`/`lte` together make one range).
///
/// - `equals`: the claim equals the value (numbers compare numerically);
/// - `in`: the claim equals one of the values;
/// - `contains`: the claim is an array holding the value, or a string of
///   space-separated words (OAuth `scope`) one of which is the value;
/// - `gt`, `gte`, `lt`, `lte`: the claim is a number and compares so.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClaimRule {
    /// The claim's name or dotted path.
    pub claim: String,
    /// The claim must equal this value.
    pub equals: Option<serde_json::Value>,
    /// The claim must equal one of these values.
    #[serde(rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// The claim (array or space-separated string) must contain this value.
    pub contains: Option<serde_json::Value>,
    /// The claim must be a number greater than this.
    pub gt: Option<f64>,
    /// The claim must be a number greater than or equal to this.
    pub gte: Option<f64>,
    /// The claim must be a number less than this.
    pub lt: Option<f64>,
    /// The claim must be a number less than or equal to this.
    pub lte: Option<f64>,
}

/// A configuration the auth layer cannot enforce. Messages name the key and
/// never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// `auth.enabled: true` but no `jwt:` block for the bucket nor at the top level.
    #[error("auth.jwt: auth is enabled but neither the bucket nor the top level has a jwt block (nor the bucket a sigv4 block)")]
    MissingJwt,
    /// A `sigv4:` block that cannot be used (the message names the key).
    #[error("auth.{0}")]
    SigV4(String),
    /// `jwt.algorithm` is empty.
    #[error("jwt.algorithm: not set (one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)")]
    MissingAlgorithm,
    /// `jwt.algorithm` names no supported algorithm.
    #[error("jwt.algorithm: unknown algorithm '{0}'")]
    UnknownAlgorithm(String),
    /// No key source is configured.
    #[error("jwt: no key: set secret, public_key_file or jwks_url")]
    NoKey,
    /// More than one key source is configured.
    #[error("jwt: set only one of secret, public_key_file or jwks_url")]
    ConflictingKeys,
    /// A key source that does not fit the algorithm (a secret with RS256...).
    #[error("jwt.{key}: cannot be used with algorithm {algorithm}")]
    KeyAlgorithmMismatch {
        /// The key source (`secret`, `public_key_file`).
        key: &'static str,
        /// The configured algorithm.
        algorithm: String,
    },
    /// `jwt.audience` is an empty list.
    #[error("jwt.audience: empty list")]
    EmptyAudience,
    /// `jwt.secret` is empty.
    #[error("jwt.secret: empty")]
    EmptySecret,
    /// `jwt.public_key_file` cannot be read.
    #[error("jwt.public_key_file: cannot read {path}: {source}")]
    ReadKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `jwt.public_key_file` is not a PEM public key of the algorithm's type.
    #[error("jwt.public_key_file: {path} is not a valid {kind} public key PEM: {reason}")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// The expected key type.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// `jwt.jwks_url` is invalid, or the JWKS cannot be fetched or has no usable key.
    #[error("jwt.jwks_url: {0}")]
    Jwks(String),
    /// A `jwt.token_sources` entry is invalid.
    #[error("jwt.token_sources[{index}]: {reason}")]
    BadTokenSource {
        /// Position in the list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A `jwt.claims` rule is invalid.
    #[error("jwt.claims[{index}]: {reason}")]
    BadClaimRule {
        /// Position in the list.
        index: usize,
        /// Why.
        reason: &'static str,
    },
    /// A `jwt.*_seconds` value is out of range.
    #[error("jwt.{0}: must be greater than 0")]
    ZeroDuration(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_redacted_and_defaults_apply() {
        let cfg: JwtConfig = serde_json::from_value(serde_json::json!({
            "algorithm": "HS256",
            "secret": "s3cr3t-value",
            "audience": ["a", "b"],
            "token_sources": [{"type": "query", "name": "token"}, {"type": "header", "name": "x-token", "prefix": "T "}],
            "claims": [{"claim": "role", "in": ["admin"]}],
            "some_unknown_key": true,
        }))
        .unwrap();
        assert!(!format!("{cfg:?}").contains("s3cr3t"));
        assert_eq!(cfg.leeway_seconds, DEFAULT_LEEWAY_SECONDS);
        assert_eq!(cfg.audience.unwrap().to_vec(), ["a", "b"]);
        assert_eq!(cfg.token_sources.len(), 2);
        assert_eq!(cfg.claims[0].one_of.as_deref(), Some(&[serde_json::json!("admin")][..]));
        let def: JwtConfig = serde_json::from_value(serde_json::json!({"algorithm": "RS256"})).unwrap();
        assert_eq!(def.token_sources, [TokenSource::Bearer]);
    }

    #[test]
    fn effective_block_falls_back_to_top_level_and_fails_closed() {
        let top = JwtConfig {
            algorithm: "HS256".into(),
            ..Default::default()
        };
        let off = AuthConfig::default();
        assert!(off.effective(Some(&top)).unwrap().is_none());
        let on = AuthConfig {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(on.effective(Some(&top)).unwrap().unwrap().algorithm, "HS256");
        assert!(matches!(on.effective(None), Err(AuthConfigError::MissingJwt)));
    }

    #[test]
    fn a_secret_is_any_scalar_as_text_and_never_debug_printed() {
        let secret = |v: serde_json::Value| serde_json::from_value::<Secret>(v);
        assert_eq!(secret(serde_json::json!("0123")).unwrap().expose(), "0123");
        assert_eq!(secret(serde_json::json!(123456)).unwrap().expose(), "123456");
        assert_eq!(secret(serde_json::json!(true)).unwrap().expose(), "true");
        assert!(secret(serde_json::json!({"a": 1}))
            .unwrap_err()
            .to_string()
            .contains("expected a string"));
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(<redacted>)");
    }
}
