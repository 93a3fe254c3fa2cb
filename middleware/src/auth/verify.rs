//! Finding the token in a request, removing the client's credentials, and
//! verifying the token into an [`Identity`] or an [`AuthOutcome`].

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use http::uri::PathAndQuery;
use http::{header, HeaderName, Request, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::claims;
use super::config::{AuthConfigError, ClaimRule, JwtConfig, TokenSource};
use super::keys::Keys;
use super::stats::AuthOutcome;

/// The authenticated caller, inserted as a request extension (for inner
/// layers) and a response extension (for the request log).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The token's `sub` claim, when it is a string.
    pub subject: Option<String>,
    /// All claims of the verified token (a JSON object).
    pub claims: Value,
}

/// A token source with its header name parsed once.
#[derive(Debug, Clone)]
enum Source {
    Bearer,
    Header { name: HeaderName, prefix: Option<String> },
    Query { name: String },
}

/// Everything needed to check one request; shared by all clones of a service.
pub(crate) struct Verifier {
    algorithm: Algorithm,
    validation: Validation,
    pub(crate) keys: Keys,
    rules: Vec<ClaimRule>,
    sources: Vec<Source>,
}

/// What the synchronous check decided.
pub(crate) enum Check {
    /// Done: an identity or a rejection.
    Done(Result<Identity, AuthOutcome>),
    /// The token names a key not cached yet: fetch the JWKS, then [`Verifier::finish`].
    NeedKeys {
        /// The token.
        token: String,
        /// The token's `kid`.
        kid: Option<String>,
    },
}

impl Verifier {
    /// Checks `cfg` and builds the verifier (without fetching a JWKS).
    pub(crate) fn from_config(cfg: &JwtConfig) -> Result<Self, AuthConfigError> {
        if cfg.algorithm.is_empty() {
            return Err(AuthConfigError::MissingAlgorithm);
        }
        let algorithm = Algorithm::from_str(&cfg.algorithm)
            .map_err(|_| AuthConfigError::UnknownAlgorithm(cfg.algorithm.clone()))?;
        let keys = Keys::from_config(cfg, algorithm)?;
        claims::validate_rules(&cfg.claims)?;
        let sources = parse_sources(&cfg.token_sources)?;

        let mut validation = Validation::new(algorithm);
        validation.leeway = cfg.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &cfg.audience {
            Some(audience) => {
                let list = audience.to_vec();
                if list.is_empty() {
                    return Err(AuthConfigError::EmptyAudience);
                }
                validation.set_audience(&list);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            algorithm,
            validation,
            keys,
            rules: cfg.claims.clone(),
            sources,
        })
    }

    /// Finds the token (sources in order), then removes every configured
    /// credential from the request: the `Authorization` header, the token
    /// headers and the token query parameters.
    pub(crate) fn take_token<B>(&self, req: &mut Request<B>) -> Option<String> {
        let token = self.sources.iter().find_map(|source| find_token(source, req));
        req.headers_mut().remove(header::AUTHORIZATION);
        let mut query_names = Vec::new();
        for source in &self.sources {
            match source {
                Source::Bearer => {}
                Source::Header { name, .. } => {
                    req.headers_mut().remove(name);
                }
                Source::Query { name } => query_names.push(name.as_str()),
            }
        }
        if !query_names.is_empty() {
            if let Some(uri) = strip_query(req.uri(), &query_names) {
                *req.uri_mut() = uri;
            }
        }
        token
    }

    /// Verifies a token as far as possible without I/O.
    pub(crate) fn check(&self, token: String) -> Check {
        let header = match jsonwebtoken::decode_header(&token) {
            Ok(header) => header,
            Err(_) => return Check::Done(Err(classify_bad_header(&token))),
        };
        if header.alg != self.algorithm {
            return Check::Done(Err(AuthOutcome::BadAlgorithm));
        }
        // RFC 7515 §4.1.11: a critical extension we do not implement (we
        // implement none) makes the token invalid, as does an empty list.
        if header.crit.is_some() {
            return Check::Done(Err(AuthOutcome::Malformed));
        }
        match &self.keys {
            Keys::Static(key) => Check::Done(self.verify(&token, key)),
            Keys::Jwks(cache) => {
                cache.ensure_refresher();
                match cache.find(header.kid.as_deref()) {
                    Some(key) => Check::Done(self.verify(&token, &key)),
                    None => Check::NeedKeys { token, kid: header.kid },
                }
            }
        }
    }

    /// Verifies a token after the JWKS was (maybe) fetched again.
    pub(crate) async fn finish(self: Arc<Self>, token: String, kid: Option<String>) -> Result<Identity, AuthOutcome> {
        let Keys::Jwks(cache) = &self.keys else {
            return Err(AuthOutcome::UnknownKey);
        };
        cache.refetch_if_allowed().await;
        match cache.find(kid.as_deref()) {
            Some(key) => self.verify(&token, &key),
            None if cache.is_empty() => Err(AuthOutcome::KeysUnavailable),
            None => Err(AuthOutcome::UnknownKey),
        }
    }

    fn verify(&self, token: &str, key: &DecodingKey) -> Result<Identity, AuthOutcome> {
        let data = jsonwebtoken::decode::<Value>(token, key, &self.validation).map_err(|e| classify(e.kind()))?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(AuthOutcome::Malformed);
        }
        if let Some(rule) = claims::first_failed(&self.rules, &claims) {
            tracing::debug!(claim = %rule.claim, "token claims fail a rule");
            return Err(AuthOutcome::Forbidden);
        }
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Identity { subject, claims })
    }
}

fn parse_sources(sources: &[TokenSource]) -> Result<Vec<Source>, AuthConfigError> {
    if sources.is_empty() {
        return Err(AuthConfigError::BadTokenSource {
            index: 0,
            reason: "empty list: set at least one source, e.g. {type: bearer}".into(),
        });
    }
    sources
        .iter()
        .enumerate()
        .map(|(index, source)| match source {
            TokenSource::Bearer => Ok(Source::Bearer),
            TokenSource::Header { name, prefix } => {
                let name = HeaderName::from_str(name).map_err(|_| AuthConfigError::BadTokenSource {
                    index,
                    reason: format!("name: '{name}' is not a valid header name"),
                })?;
                Ok(Source::Header {
                    name,
                    prefix: prefix.clone().filter(|p| !p.is_empty()),
                })
            }
            TokenSource::Query { name } => {
                if name.is_empty() {
                    return Err(AuthConfigError::BadTokenSource {
                        index,
                        reason: "name: empty".into(),
                    });
                }
                Ok(Source::Query { name: name.clone() })
            }
        })
        .collect()
}

fn find_token<B>(source: &Source, req: &Request<B>) -> Option<String> {
    let token = match source {
        Source::Bearer => {
            let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
            let (scheme, rest) = value.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            rest.trim().to_owned()
        }
        Source::Header { name, prefix } => {
            let value = req.headers().get(name)?.to_str().ok()?;
            let value = match prefix {
                Some(prefix) => value.strip_prefix(prefix.as_str())?,
                None => value,
            };
            value.trim().to_owned()
        }
        Source::Query { name } => {
            let query = req.uri().query()?;
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())?
        }
    };
    (!token.is_empty()).then_some(token)
}

/// `uri` without the query parameters named in `names`; `None` if none is there.
fn strip_query(uri: &Uri, names: &[&str]) -> Option<Uri> {
    let query = uri.query()?;
    let mut removed = false;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = url::form_urlencoded::parse(pair.as_bytes()).next().map(|(k, _)| k);
            let drop = name.is_some_and(|k| names.iter().any(|n| *n == k));
            removed |= drop;
            !drop
        })
        .collect();
    if !removed {
        return None;
    }
    let mut pq = uri.path().to_owned();
    let kept = kept.join("&");
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::from_str(&pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// Why the header could not be parsed: in a three-part token, an `alg` we do
/// not know (`none`) is a wrong algorithm; anything else is malformed.
fn classify_bad_header(token: &str) -> AuthOutcome {
    if token.split('.').count() != 3 {
        return AuthOutcome::Malformed;
    }
    let first = token.split('.').next().unwrap_or_default();
    let alg = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(first.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .and_then(|h| h.get("alg").cloned());
    match alg {
        Some(Value::String(alg)) if Algorithm::from_str(&alg).is_err() => AuthOutcome::BadAlgorithm,
        _ => AuthOutcome::Malformed,
    }
}

fn classify(kind: &ErrorKind) -> AuthOutcome {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthOutcome::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            AuthOutcome::BadAlgorithm
        }
        ErrorKind::ExpiredSignature => AuthOutcome::Expired,
        ErrorKind::ImmatureSignature => AuthOutcome::NotYetValid,
        ErrorKind::InvalidIssuer => AuthOutcome::BadIssuer,
        ErrorKind::InvalidAudience => AuthOutcome::BadAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthOutcome::BadIssuer,
            "aud" => AuthOutcome::BadAudience,
            _ => AuthOutcome::Malformed,
        },
        _ => AuthOutcome::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_named_query_params() {
        let uri: Uri = "/k/a.txt?x=1&token=abc&y=%20&to%6Ben=d".parse().unwrap();
        assert_eq!(strip_query(&uri, &["token"]).unwrap(), "/k/a.txt?x=1&y=%20");
        let uri: Uri = "/k?token=abc".parse().unwrap();
        assert_eq!(strip_query(&uri, &["token"]).unwrap(), "/k");
        let uri: Uri = "/k?x=1".parse().unwrap();
        assert!(strip_query(&uri, &["token"]).is_none());
    }

    #[test]
    fn unknown_header_alg_is_a_wrong_algorithm() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(r#"{"sub":"a"}"#));
        assert_eq!(classify_bad_header(&none), AuthOutcome::BadAlgorithm);
        assert_eq!(classify_bad_header("not-a-jwt"), AuthOutcome::Malformed);
    }

    #[test]
    fn a_critical_extension_is_refused() {
        let cfg: JwtConfig = serde_json::from_value(serde_json::json!({
            "algorithm": "HS256", "secret": "a-test-secret-of-32-bytes-length!"
        }))
        .unwrap();
        let verifier = Verifier::from_config(&cfg).unwrap();
        let key = jsonwebtoken::EncodingKey::from_secret(b"a-test-secret-of-32-bytes-length!");
        let claims = serde_json::json!({"sub": "a", "exp": 4_000_000_000u64});
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        let plain = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(matches!(verifier.check(plain), Check::Done(Ok(_))));
        header.crit = Some(vec!["exp-ext".into()]);
        let critical = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(matches!(
            verifier.check(critical),
            Check::Done(Err(AuthOutcome::Malformed))
        ));
    }
}
