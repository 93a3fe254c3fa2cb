use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::config::BucketCacheConfig;
use super::future::Policy;
use super::service::Cache;
use super::store::CacheStore;

/// Puts one bucket's object stack behind the shared [`CacheStore`].
#[derive(Debug, Clone)]
pub struct CacheLayer {
    policy: Arc<Policy>,
}

impl CacheLayer {
    /// Caches the objects of `bucket` (its name keys the entries) in `store`,
    /// with the tiers' own TTLs.
    pub fn new(store: CacheStore, bucket: impl Into<Arc<str>>) -> Self {
        Self {
            policy: Arc::new(Policy {
                store,
                bucket: bucket.into(),
                enabled: true,
                ttl: None,
            }),
        }
    }

    /// Applies a bucket's `cache:` settings (`enabled`, `ttl_seconds`).
    pub fn with_bucket_config(self, config: &BucketCacheConfig) -> Self {
        let layer = self.with_enabled(config.enabled);
        match config.ttl_seconds {
            Some(secs) => layer.with_ttl(Duration::from_secs(secs)),
            None => layer,
        }
    }

    /// Freshness of this bucket's objects in both tiers.
    pub fn with_ttl(self, ttl: Duration) -> Self {
        self.update(|p| p.ttl = Some(ttl))
    }

    /// `false`: nothing is looked up or stored; responses say `X-Cache: BYPASS`.
    pub fn with_enabled(self, enabled: bool) -> Self {
        self.update(|p| p.enabled = enabled)
    }

    fn update(self, f: impl FnOnce(&mut Policy)) -> Self {
        let mut policy = Arc::try_unwrap(self.policy).unwrap_or_else(|p| Policy {
            store: p.store.clone(),
            bucket: p.bucket.clone(),
            enabled: p.enabled,
            ttl: p.ttl,
        });
        f(&mut policy);
        Self {
            policy: Arc::new(policy),
        }
    }

    /// The shared store.
    pub fn store(&self) -> &CacheStore {
        &self.policy.store
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::from_policy(inner, self.policy.clone())
    }
}
