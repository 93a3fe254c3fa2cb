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
/// `cache.redis.url` when none is given.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// 10 MiB: objects above this stream through uncached.
pub const DEFAULT_MAX_ITEM_SIZE: u64 = 10 * 1024 * 1024;
/// 64 KiB: memory-tier bodies from this size are sent with `sendfile(2)`.
pub const DEFAULT_SENDFILE_MIN_SIZE: u64 = 64 * 1024;

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
///   slice_size: 8388608          # large objects cached in 8 MiB slices (off: 0)
/// ```
///
/// The shared tier may also be a Redis/Valkey Cluster or a Sentinel-managed
/// primary/replica set:
///
/// ```yaml
/// cache:
///   redis:
///     enabled: true
///     mode: cluster                # standalone (default) | cluster | sentinel
///     urls: ["redis://valkey-0:6379", "redis://valkey-1:6379", "redis://valkey-2:6379"]
///     # sentinel_master: mymaster  # sentinel mode: urls are the sentinels
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
    /// Objects larger than the tiers' `max_item_size` are cached as aligned
    /// slices of this many bytes, fetched with `Range`. 0 (the default)
    /// turns slicing off: such objects stream through uncached.
    pub slice_size: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: MemoryCacheConfig::default(),
            redis: RedisCacheConfig::default(),
            stale_seconds: 300,
            coalesce_timeout_ms: 10_000,
            slice_size: 0,
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
    /// Bodies of at least this many bytes are kept where a connection can
    /// send them without copying them (the binary's sealed memfds and
    /// `sendfile(2)`, Linux, plain TCP; see
    /// [`BodyPlacement`](super::BodyPlacement)); 0 keeps every body on the heap.
    /// Not used by the library itself.
    pub sendfile_min_size: u64,
}

impl Default for MemoryCacheConfig {
    fn default() -> Self {
        Self {
            max_capacity: DEFAULT_MEMORY_CAPACITY,
            ttl_seconds: 1800,
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            sendfile_min_size: DEFAULT_SENDFILE_MIN_SIZE,
        }
    }
}

/// How the shared tier is deployed (`cache.redis.mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One Redis/Valkey at `url`.
    #[default]
    Standalone,
    /// A Redis/Valkey Cluster; `urls` are seed nodes, the topology is discovered.
    Cluster,
    /// A primary/replica set managed by Sentinel; `urls` are the sentinels.
    Sentinel,
}

impl RedisMode {
    /// `standalone`, `cluster` or `sentinel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

/// `cache.redis`: the tier shared by every proxy instance.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RedisCacheConfig {
    /// Whether the Redis tier is used at all.
    pub enabled: bool,
    /// `standalone` (uses `url`), `cluster` or `sentinel` (use `urls`).
    pub mode: RedisMode,
    /// Standalone: `redis://[user:password@]host:port[/db]` (or `rediss://`;
    /// `redis://127.0.0.1:6379` when neither `url` nor `urls` is set). The
    /// password never appears in `Debug` output, logs, errors or `/ready`.
    pub url: Option<String>,
    /// Cluster: seed nodes. Sentinel: the sentinels (their user/password,
    /// if any, also authenticate to the primary). Standalone: one URL, as
    /// an alternative to `url`.
    pub urls: Vec<String>,
    /// Sentinel mode: the name the sentinels monitor the primary under.
    pub sentinel_master: Option<String>,
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
            mode: RedisMode::Standalone,
            url: None,
            urls: Vec::new(),
            sentinel_master: None,
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
            .field("mode", &self.mode)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("urls", &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("sentinel_master", &self.sentinel_master)
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
#[error("cache.{key}: {message}")]
pub struct CacheConfigError {
    /// The offending key under `cache:`, e.g. `redis.url` (`cache.redis.url`).
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
            return Err(CacheConfigError::new("memory.max_item_size", "must be below 2 GiB"));
        }
        if self.redis.max_item_size > 512 * 1024 * 1024 {
            return Err(CacheConfigError::new(
                "redis.max_item_size",
                "must be at most 512 MiB (Redis' value limit)",
            ));
        }
        if self.redis.enabled {
            if self.redis.pool_size == 0 {
                return Err(CacheConfigError::new("redis.pool_size", "must be at least 1"));
            }
            if self.redis.timeout_ms == 0 {
                return Err(CacheConfigError::new("redis.timeout_ms", "must be at least 1"));
            }
            if self.redis.key_prefix.is_empty() {
                return Err(CacheConfigError::new(
                    "redis.key_prefix",
                    "must not be empty (purges match on it)",
                ));
            }
            if self.redis.key_prefix.contains(['{', '}']) {
                return Err(CacheConfigError::new(
                    "redis.key_prefix",
                    "must not contain '{' or '}' (the cache sets its own cluster hash tags)",
                ));
            }
            self.redis.validate_endpoints()?;
        }
        if self.slice_size > 0 {
            if self.slice_size < 64 * 1024 {
                return Err(CacheConfigError::new(
                    "slice_size",
                    "must be at least 64 KiB (65536), or 0 for off",
                ));
            }
            let tiers = [
                (self.memory.max_capacity > 0, self.memory.max_item_size),
                (self.redis.enabled, self.redis.max_item_size),
            ];
            if !tiers.iter().any(|(on, max)| *on && self.slice_size <= *max) {
                return Err(CacheConfigError::new(
                    "slice_size",
                    "must fit a tier's max_item_size (slices live in the tiers under their limits)",
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

impl RedisCacheConfig {
    /// The URLs to dial: standalone, the one server; cluster, the seed
    /// nodes; sentinel, the sentinels.
    pub fn endpoints(&self) -> Vec<String> {
        match (&self.url, self.urls.is_empty()) {
            (Some(url), _) => vec![url.clone()],
            (None, false) => self.urls.clone(),
            (None, true) => vec![DEFAULT_REDIS_URL.to_owned()],
        }
    }

    fn validate_endpoints(&self) -> Result<(), CacheConfigError> {
        if self.url.is_some() && !self.urls.is_empty() {
            return Err(CacheConfigError::new(
                "redis.urls",
                "set either redis.url or redis.urls, not both",
            ));
        }
        match self.mode {
            RedisMode::Standalone if self.urls.len() > 1 => {
                return Err(CacheConfigError::new(
                    "redis.urls",
                    "standalone mode takes one URL (use mode: cluster or sentinel for several)",
                ));
            }
            RedisMode::Cluster | RedisMode::Sentinel if self.urls.is_empty() => {
                return Err(CacheConfigError::new(
                    "redis.urls",
                    format!(
                        "{} mode needs redis.urls (redis.url is for standalone)",
                        self.mode.as_str()
                    ),
                ));
            }
            _ => {}
        }
        match (self.mode, &self.sentinel_master) {
            (RedisMode::Sentinel, None) => {
                return Err(CacheConfigError::new(
                    "redis.sentinel_master",
                    "is required in sentinel mode (the name the sentinels monitor)",
                ));
            }
            (RedisMode::Sentinel, Some(name)) if name.trim().is_empty() => {
                return Err(CacheConfigError::new("redis.sentinel_master", "must not be empty"));
            }
            (RedisMode::Standalone | RedisMode::Cluster, Some(_)) => {
                return Err(CacheConfigError::new(
                    "redis.sentinel_master",
                    "is only used in sentinel mode",
                ));
            }
            _ => {}
        }
        let key = if self.url.is_some() { "redis.url" } else { "redis.urls" };
        for raw in self.endpoints() {
            // The parser's message never echoes the URL (and so its password).
            let url =
                url::Url::parse(&raw).map_err(|e| CacheConfigError::new(key, format!("{}: {e}", redact_url(&raw))))?;
            if !matches!(
                url.scheme(),
                "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "unix"
            ) {
                return Err(CacheConfigError::new(
                    key,
                    format!("unsupported scheme '{}' in {}", url.scheme(), redact_url(&raw)),
                ));
            }
            if self.mode != RedisMode::Standalone && matches!(url.scheme(), "redis+unix" | "unix") {
                return Err(CacheConfigError::new(
                    key,
                    format!("{} mode needs TCP URLs", self.mode.as_str()),
                ));
            }
        }
        Ok(())
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
mod tests;
