//! [`SigV4Layer`]: checks the keys once, and wraps services in [`SigV4`].

use std::sync::Arc;

use tower::Layer;

use super::{SigV4, SigV4Verifier};
use crate::auth::config::{AuthConfigError, SigV4Config};
use crate::auth::stats::AuthStats;

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
