//! Verification keys: one static key (secret or PEM file), or a JWKS fetched
//! over HTTP, cached, refreshed in the background and on unknown `kid`s.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use tokio::time::Instant;

use super::config::{AuthConfigError, JwtConfig};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Where the verification key comes from.
pub(crate) enum Keys {
    /// One key for every token.
    Static(Arc<DecodingKey>),
    /// Keys of a JWKS, picked by `kid`.
    Jwks(Arc<JwksCache>),
}

impl Keys {
    /// Builds the key source named by `cfg` (without fetching a JWKS).
    pub(crate) fn from_config(cfg: &JwtConfig, algorithm: Algorithm) -> Result<Self, AuthConfigError> {
        let sources = [
            cfg.secret.is_some(),
            cfg.public_key_file.is_some(),
            cfg.jwks_url.is_some(),
        ];
        match sources.iter().filter(|s| **s).count() {
            0 => return Err(AuthConfigError::NoKey),
            1 => {}
            _ => return Err(AuthConfigError::ConflictingKeys),
        }
        let family = algorithm.family();
        if let Some(secret) = &cfg.secret {
            if family != AlgorithmFamily::Hmac {
                return Err(AuthConfigError::KeyAlgorithmMismatch {
                    key: "secret",
                    algorithm: cfg.algorithm.clone(),
                });
            }
            if secret.expose().is_empty() {
                return Err(AuthConfigError::EmptySecret);
            }
            return Ok(Keys::Static(Arc::new(DecodingKey::from_secret(
                secret.expose().as_bytes(),
            ))));
        }
        if let Some(path) = &cfg.public_key_file {
            let pem = std::fs::read(path).map_err(|source| AuthConfigError::ReadKeyFile {
                path: path.clone(),
                source,
            })?;
            let (kind, key) = match family {
                AlgorithmFamily::Rsa => ("RSA", DecodingKey::from_rsa_pem(&pem)),
                AlgorithmFamily::Ec => ("EC", DecodingKey::from_ec_pem(&pem)),
                AlgorithmFamily::Ed => ("Ed25519", DecodingKey::from_ed_pem(&pem)),
                _ => {
                    return Err(AuthConfigError::KeyAlgorithmMismatch {
                        key: "public_key_file",
                        algorithm: cfg.algorithm.clone(),
                    })
                }
            };
            let key = key.map_err(|e| AuthConfigError::BadKeyFile {
                path: path.clone(),
                kind,
                reason: e.to_string(),
            })?;
            return Ok(Keys::Static(Arc::new(key)));
        }
        let url = cfg.jwks_url.as_deref().unwrap_or_default();
        let parsed = url::Url::parse(url).map_err(|e| AuthConfigError::Jwks(format!("invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(AuthConfigError::Jwks("the URL must be http or https".into()));
        }
        for (name, secs) in [
            ("jwks_refresh_seconds", cfg.jwks_refresh_seconds),
            ("jwks_timeout_seconds", cfg.jwks_timeout_seconds),
        ] {
            if secs == 0 {
                return Err(AuthConfigError::ZeroDuration(name));
            }
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.jwks_timeout_seconds))
            .build()
            .map_err(|e| AuthConfigError::Jwks(format!("cannot build HTTP client: {e}")))?;
        Ok(Keys::Jwks(Arc::new(JwksCache {
            url: parsed.to_string(),
            client,
            algorithm,
            refresh: Duration::from_secs(cfg.jwks_refresh_seconds),
            min_refetch: Duration::from_secs(cfg.jwks_min_refetch_seconds),
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: tokio::sync::Mutex::new(None),
            refresher_started: AtomicBool::new(false),
        })))
    }
}

/// Usable keys of one JWKS document.
#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<DecodingKey>>,
    without_kid: Vec<Arc<DecodingKey>>,
}

impl KeySet {
    fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }
}

/// A cached JWKS.
///
/// Fetches are serialized and spaced at least `min_refetch` apart when caused
/// by unknown `kid`s; a failed fetch keeps the keys already cached.
pub(crate) struct JwksCache {
    url: String,
    client: reqwest::Client,
    algorithm: Algorithm,
    refresh: Duration,
    min_refetch: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch started; held while fetching.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refresher_started: AtomicBool,
}

impl JwksCache {
    /// The cached key for `kid`; a token without `kid` gets the only key of a
    /// one-key set.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<Arc<DecodingKey>> {
        let set = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        match kid {
            Some(kid) => set.by_kid.get(kid).cloned(),
            None if set.len() == 1 => set.by_kid.values().chain(&set.without_kid).next().cloned(),
            None => None,
        }
    }

    /// Whether no key is cached.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len() == 0
    }

    /// Fetches the JWKS again unless a fetch started less than `min_refetch` ago.
    pub(crate) async fn refetch_if_allowed(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(reason) = self.fetch().await {
            tracing::warn!(url = %self.url, %reason, "JWKS fetch failed; keeping cached keys");
        }
    }

    /// Fetches now (used at start-up): the number of usable keys, or why none.
    pub(crate) async fn fetch_now(&self) -> Result<usize, String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch().await
    }

    async fn fetch(&self) -> Result<usize, String> {
        let res = self
            .client
            .get(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !res.status().is_success() {
            return Err(format!("server answered {}", res.status()));
        }
        if res.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err("document too large".into());
        }
        let body = res.bytes().await.map_err(|e| e.without_url().to_string())?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("document too large".into());
        }
        let set = parse_jwks(&body, self.algorithm)?;
        let n = set.len();
        if n == 0 {
            return Err(format!("no usable {:?} key in the JWKS", self.algorithm));
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        tracing::debug!(url = %self.url, keys = n, "JWKS loaded");
        Ok(n)
    }

    /// Starts the background refresh task once (needs a Tokio runtime). It
    /// stops when the last layer or service holding the cache is dropped.
    pub(crate) fn ensure_refresher(self: &Arc<Self>) {
        if self.refresher_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let period = self.refresh;
        handle.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(cache) = weak.upgrade() else { break };
                let mut last = cache.last_fetch.lock().await;
                *last = Some(Instant::now());
                if let Err(reason) = cache.fetch().await {
                    tracing::warn!(url = %cache.url, %reason, "JWKS refresh failed; keeping cached keys");
                }
            }
        });
    }
}

/// The keys of a JWKS document usable with `algorithm`; other keys are skipped.
fn parse_jwks(body: &[u8], algorithm: Algorithm) -> Result<KeySet, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(entries) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err("no \"keys\" array".into());
    };
    let mut set = KeySet::default();
    for entry in entries {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if let Some(alg) = jwk.common.key_algorithm {
            if Algorithm::from_str(&alg.to_string()).ok() != Some(algorithm) {
                continue;
            }
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if key.family() != algorithm.family() {
            continue;
        }
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, Arc::new(key));
            }
            None => set.without_kid.push(Arc::new(key)),
        }
    }
    Ok(set)
}
