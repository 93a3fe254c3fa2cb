use std::sync::Arc;

use tower::Layer;

use super::config::{AuthConfigError, JwtConfig};
use super::keys::Keys;
use super::service::Auth;
use super::stats::AuthStats;
use super::verify::Verifier;

/// Applies [`Auth`] to a service: JWT authentication with the settings of one
/// `jwt:` block. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct AuthLayer {
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) stats: Arc<AuthStats>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").finish_non_exhaustive()
    }
}

impl AuthLayer {
    /// Checks `cfg` and builds the layer, without network I/O.
    ///
    /// With `jwks_url`, the JWKS is fetched on the first request (and the
    /// background refresh starts then); prefer [`AuthLayer::from_config_async`],
    /// which fails at start when the JWKS cannot be loaded.
    pub fn from_config(cfg: &JwtConfig) -> Result<Self, AuthConfigError> {
        Ok(Self {
            verifier: Arc::new(Verifier::from_config(cfg)?),
            stats: Arc::new(AuthStats::new()),
        })
    }

    /// Like [`AuthLayer::from_config`], and with `jwks_url` also fetches the
    /// JWKS now (an error if it cannot be fetched or has no key usable with
    /// `algorithm`) and starts refreshing it every `jwks_refresh_seconds`.
    pub async fn from_config_async(cfg: &JwtConfig) -> Result<Self, AuthConfigError> {
        let layer = Self::from_config(cfg)?;
        if let Keys::Jwks(cache) = &layer.verifier.keys {
            cache.fetch_now().await.map_err(AuthConfigError::Jwks)?;
            cache.ensure_refresher();
        }
        Ok(layer)
    }

    /// Counts outcomes into `stats` (e.g. one set shared by every bucket).
    pub fn with_stats(mut self, stats: Arc<AuthStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The outcome counters of this layer.
    pub fn stats(&self) -> &Arc<AuthStats> {
        &self.stats
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            verifier: self.verifier.clone(),
            stats: self.stats.clone(),
        }
    }
}
