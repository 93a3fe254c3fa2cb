//! Serde configuration of the cache: the `cache:` section and `buckets[].cache`.
//!
//! Every key has defaults here, in one place; unknown keys are left to the
//! binary's loader, which reports them itself.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// 256 MiB: the default byte budget of the in-process tier.
pub const DEFAULT_MEMORY_CAPACITY: u64 = 256 * 1024 * 1024;
/// 2 GiB: the default byte budget of the Redis tier.
pub const DEFAULT_REDIS_CAPACITY: u64 = 2 * 1024 * 1024 * 1024;
/// 10 MiB: objects above this stream through uncached.
pub const DEFAULT_MAX_ITEM_SIZE: u64 = 10 * 1024 * 1024;

/// The `cache:` section.
///
/// ```yaml
/// cache:
///   memory: { max_capacity: 268435456, ttl_seconds: 1800, max_item_size: 10485760 }
///   redis:
///     enabled: true
///     url: "redis://valkey:6379"
///     max_capacity: 2147483648
///     ttl_seconds: 7200
///     pool_size: 20
///   stale_seconds: 300
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CacheConfig {
    /// The in-process tier, one per proxy instance.
    pub memory: MemoryCacheConfig,
    /// The shared Redis/Valkey tier.
    pub redis: RedisCacheConfig,
    /// How long past its TTL a copy may still be served (`X-Cache: STALE`)
    /// when no replica can answer. 0 turns serve-stale off.
    pub stale_seconds: u64,
    /// How long concurrent misses of one object wait for the request already
    /// fetching it before fetching themselves.
    pub coalesce_timeout_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: MemoryCacheConfig::default(),
            redis: RedisCacheConfig::default(),
            stale_seconds: 300,
            coalesce_timeout_ms: 10_000,
        }
    }
}

/// `cache.memory`: the in-process tier.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct MemoryCacheConfig {
    /// Byte budget (bodies plus headers); least valuable entries are evicted
    /// above it. 0 turns the memory tier off.
    pub max_capacity: u64,
    /// How long an entry is fresh.
    pub ttl_seconds: u64,
    /// Larger objects are not kept in memory.
    pub max_item_size: u64,
}

impl Default for MemoryCacheConfig {
    fn default() -> Self {
        Self {
            max_capacity: DEFAULT_MEMORY_CAPACITY,
            ttl_seconds: 1800,
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
        }
    }
}

/// `cache.redis`: the tier shared by every proxy instance.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisCacheConfig {
    /// Whether the Redis tier is used at all.
    pub enabled: bool,
    /// `redis://[user:password@]host:port[/db]` (or `rediss://`). The
    /// password never appears in `Debug` output or logs.
    pub url: String,
    /// Byte budget: a write is refused while Redis' own `used_memory`
    /// (from `INFO memory`, re-read at most every few seconds) plus the value
    /// would exceed it. 0 turns the check off (rely on Redis' `maxmemory`).
    pub max_capacity: u64,
    /// How long an entry is fresh; Redis expires it `stale_seconds` later.
    pub ttl_seconds: u64,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Prefix of every key this proxy writes (purges only touch these).
    pub key_prefix: String,
    /// Larger objects are not written to Redis.
    pub max_item_size: u64,
    /// Bound on one Redis operation (connect, `GET`, `SET`); past it the
    /// operation counts as failed and the request goes on without Redis.
    pub timeout_ms: u64,
    /// Consecutive failures that open Redis' circuit breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before Redis is tried again.
    pub cooldown_ms: u64,
}

impl Default for RedisCacheConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "redis://127.0.0.1:6379".to_owned(),
            max_capacity: DEFAULT_REDIS_CAPACITY,
            ttl_seconds: 7200,
            pool_size: 20,
            key_prefix: "yatagarasu:cache:".to_owned(),
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            timeout_ms: 250,
            failure_threshold: 3,
            cooldown_ms: 5_000,
        }
    }
}

impl fmt::Debug for RedisCacheConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheConfig")
            .field("enabled", &self.enabled)
            .field("url", &redact_url(&self.url))
            .field("max_capacity", &self.max_capacity)
            .field("ttl_seconds", &self.ttl_seconds)
            .field("pool_size", &self.pool_size)
            .field("key_prefix", &self.key_prefix)
            .field("max_item_size", &self.max_item_size)
            .field("timeout_ms", &self.timeout_ms)
            .field("failure_threshold", &self.failure_threshold)
            .field("cooldown_ms", &self.cooldown_ms)
            .finish()
    }
}

/// `buckets[].cache`: a bucket's own cache settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct BucketCacheConfig {
    /// `false`: the bucket's objects are never cached (`X-Cache: BYPASS`).
    pub enabled: bool,
    /// Freshness of this bucket's objects in both tiers, instead of the
    /// tiers' own `ttl_seconds`.
    pub ttl_seconds: Option<u64>,
}

impl Default for BucketCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl_seconds: None,
        }
    }
}

/// A cache setting that cannot work, naming its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CacheConfigError {
    /// The offending key, e.g. `cache.redis.url`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl CacheConfigError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl CacheConfig {
    /// Checks the values that would make the cache misbehave.
    pub fn validate(&self) -> Result<(), CacheConfigError> {
        // Entry weights are u32 in the memory tier.
        if self.memory.max_item_size > u64::from(u32::MAX) / 2 {
            return Err(CacheConfigError::new(
                "cache.memory.max_item_size",
                "must be below 2 GiB",
            ));
        }
        if self.redis.max_item_size > 512 * 1024 * 1024 {
            return Err(CacheConfigError::new(
                "cache.redis.max_item_size",
                "must be at most 512 MiB (Redis' value limit)",
            ));
        }
        if self.redis.enabled {
            if self.redis.pool_size == 0 {
                return Err(CacheConfigError::new("cache.redis.pool_size", "must be at least 1"));
            }
            if self.redis.timeout_ms == 0 {
                return Err(CacheConfigError::new("cache.redis.timeout_ms", "must be at least 1"));
            }
            if self.redis.key_prefix.is_empty() {
                return Err(CacheConfigError::new(
                    "cache.redis.key_prefix",
                    "must not be empty (purges match on it)",
                ));
            }
            let url = url::Url::parse(&self.redis.url)
                .map_err(|e| CacheConfigError::new("cache.redis.url", e.to_string()))?;
            if !matches!(
                url.scheme(),
                "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "unix"
            ) {
                return Err(CacheConfigError::new(
                    "cache.redis.url",
                    format!("unsupported scheme '{}'", url.scheme()),
                ));
            }
        }
        Ok(())
    }

    /// `stale_seconds` as a duration.
    pub fn stale_window(&self) -> Duration {
        Duration::from_secs(self.stale_seconds)
    }
}

/// The URL with its password replaced by `***`, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable url>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let cfg = RedisCacheConfig {
            url: "redis://user:hunter2@valkey:6379/0".into(),
            ..Default::default()
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("valkey:6379"), "{dbg}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = CacheConfig::default();
        cfg.redis.enabled = true;
        cfg.redis.pool_size = 0;
        assert_eq!(cfg.validate().unwrap_err().key, "cache.redis.pool_size");
        cfg.redis.pool_size = 2;
        cfg.redis.url = "http://x".into();
        assert_eq!(cfg.validate().unwrap_err().key, "cache.redis.url");
        cfg.redis.url = "redis://valkey:6379".into();
        assert!(cfg.validate().is_ok());
    }
}
