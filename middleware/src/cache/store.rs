//! The state one proxy shares between all its buckets' cache layers: the
//! memory tier, the Redis tier, the counters and the in-flight fills.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mini_moka::sync::Cache as MokaCache;
use tokio::sync::watch;

use super::config::{CacheConfig, CacheConfigError};
use super::entry::{now_ms, CachedObject};
use super::redis::{glob_escape, RedisFailure, RedisTier};
use super::stats::{CacheStats, CacheStatsSnapshot};

/// A memory-tier value; one dropped without being retired (capacity
/// eviction, admission refusal, expiry) counts as an eviction.
struct MemEntry {
    obj: Arc<CachedObject>,
    retired: AtomicBool,
    stats: Arc<CacheStats>,
}

impl Drop for MemEntry {
    fn drop(&mut self) {
        if !self.retired.load(Ordering::Relaxed) {
            CacheStats::inc(&self.stats.memory_evictions);
        }
    }
}

/// Where a lookup found a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Memory,
    Redis,
}

/// A copy found by a lookup: fresh, or past its TTL but inside the stale window.
pub(crate) enum Found {
    Fresh(Arc<CachedObject>, Tier),
    Stale(Arc<CachedObject>),
    None,
}

/// The right to fetch one object while concurrent misses wait for it.
/// Dropping it (fill done or given up) wakes them.
pub(crate) struct FillGuard {
    store: CacheStore,
    key: Arc<str>,
    _done: watch::Sender<()>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let mut map = self.store.inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&self.key);
    }
}

pub(crate) enum Join {
    Leader(FillGuard),
    Follower(watch::Receiver<()>),
}

/// Why a purge did not reach Redis (the memory tier is always purged).
#[derive(Debug, thiserror::Error)]
#[error("memory tier purged, Redis tier not: {0}")]
pub struct PurgeError(#[source] Box<dyn std::error::Error + Send + Sync>);

struct Inner {
    memory: Option<MokaCache<Arc<str>, Arc<MemEntry>>>,
    memory_ttl: Duration,
    memory_max_item: u64,
    redis: Option<RedisTier>,
    redis_ttl: Duration,
    redis_max_item: u64,
    key_prefix: String,
    stale: Duration,
    coalesce_timeout: Duration,
    inflight: Mutex<HashMap<Arc<str>, watch::Receiver<()>>>,
    epoch: AtomicU64,
    stats: Arc<CacheStats>,
}

/// The cache shared by every bucket of a proxy: build one from the `cache:`
/// config and give it to each bucket's [`CacheLayer`](super::CacheLayer).
///
/// Cheap to clone (an `Arc`). Also the purge API.
#[derive(Clone)]
pub struct CacheStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore")
            .field("memory", &self.inner.memory.is_some())
            .field("redis", &self.inner.redis)
            .field("key_prefix", &self.inner.key_prefix)
            .finish()
    }
}

impl CacheStore {
    /// Builds the tiers. Redis is not contacted here: the pool dials on first
    /// use, so a Redis that is down at startup only means misses.
    pub fn new(config: &CacheConfig) -> Result<Self, CacheConfigError> {
        config.validate()?;
        let stats = Arc::new(CacheStats::default());
        let memory = (config.memory.max_capacity > 0).then(|| {
            MokaCache::builder()
                .max_capacity(config.memory.max_capacity)
                .weigher(|_k: &Arc<str>, v: &Arc<MemEntry>| v.obj.weight().min(u64::from(u32::MAX)) as u32)
                .build()
        });
        let redis = if config.redis.enabled {
            Some(RedisTier::new(&config.redis, stats.clone())?)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                memory,
                memory_ttl: Duration::from_secs(config.memory.ttl_seconds),
                memory_max_item: config.memory.max_item_size,
                redis,
                redis_ttl: Duration::from_secs(config.redis.ttl_seconds),
                redis_max_item: config.redis.max_item_size,
                key_prefix: config.redis.key_prefix.clone(),
                stale: config.stale_window(),
                coalesce_timeout: Duration::from_millis(config.coalesce_timeout_ms),
                inflight: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                stats,
            }),
        })
    }

    /// The live counters.
    pub fn stats(&self) -> &CacheStats {
        &self.inner.stats
    }

    /// The counters now, with the memory tier's size.
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        let mut snap = self.inner.stats.snapshot();
        if let Some(mem) = &self.inner.memory {
            snap.memory_entries = mem.entry_count();
            snap.memory_bytes = mem.weighted_size();
        }
        snap
    }

    /// Whether the Redis tier is configured.
    pub fn has_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// The cache key of an object: prefix, length-prefixed bucket, key. The
    /// same key in two buckets never collides, whatever the names contain.
    /// Only bucket and key vary a cached answer: ranges and preconditions are
    /// answered from the full object.
    pub fn cache_key(&self, bucket: &str, key: &str) -> String {
        format!("{}{}:{}/{}", self.inner.key_prefix, bucket.len(), bucket, key)
    }

    fn bucket_prefix(&self, bucket: &str) -> String {
        format!("{}{}:{}/", self.inner.key_prefix, bucket.len(), bucket)
    }

    pub(crate) fn coalesce_timeout(&self) -> Duration {
        self.inner.coalesce_timeout
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    /// Bytes a fill may buffer before giving up: the larger tier limit.
    pub(crate) fn fill_limit(&self) -> u64 {
        let mem = self.inner.memory.as_ref().map_or(0, |_| self.inner.memory_max_item);
        let redis = self.inner.redis.as_ref().map_or(0, |_| self.inner.redis_max_item);
        mem.max(redis)
    }

    /// Looks in memory.
    pub(crate) fn memory_get(&self, key: &Arc<str>) -> Found {
        let Some(mem) = &self.inner.memory else {
            return Found::None;
        };
        let Some(entry) = mem.get(key) else {
            return Found::None;
        };
        let now = now_ms();
        if entry.obj.is_fresh(now) {
            return Found::Fresh(entry.obj.clone(), Tier::Memory);
        }
        if now
            < entry
                .obj
                .fresh_until_ms()
                .saturating_add(self.inner.stale.as_millis() as u64)
        {
            return Found::Stale(entry.obj.clone());
        }
        mem.invalidate(key);
        Found::None
    }

    /// Looks in Redis; a fresh copy fills memory.
    pub(crate) async fn redis_get(&self, key: &Arc<str>) -> Found {
        let Some(redis) = &self.inner.redis else {
            return Found::None;
        };
        let Some(value) = redis.get(key).await else {
            return Found::None;
        };
        let Some(obj) = CachedObject::decode(value) else {
            CacheStats::inc(&self.inner.stats.redis_corrupt);
            tracing::debug!("foreign or corrupt value in the redis cache, ignored");
            return Found::None;
        };
        let now = now_ms();
        if obj.is_fresh(now) {
            let obj = Arc::new(obj);
            let mem_until = now.saturating_add(self.inner.memory_ttl.as_millis() as u64);
            self.memory_put(key, Arc::new(obj.capped(mem_until)));
            return Found::Fresh(obj, Tier::Redis);
        }
        if now < obj.fresh_until_ms().saturating_add(self.inner.stale.as_millis() as u64) {
            return Found::Stale(Arc::new(obj));
        }
        Found::None
    }

    fn memory_put(&self, key: &Arc<str>, obj: Arc<CachedObject>) {
        let Some(mem) = &self.inner.memory else {
            return;
        };
        if obj.body().len() as u64 > self.inner.memory_max_item {
            return;
        }
        if let Some(old) = mem.get(key) {
            old.retired.store(true, Ordering::Relaxed);
        }
        mem.insert(
            key.clone(),
            Arc::new(MemEntry {
                obj,
                retired: AtomicBool::new(false),
                stats: self.inner.stats.clone(),
            }),
        );
        CacheStats::inc(&self.inner.stats.memory_inserts);
    }

    /// Stores a fetched object in both tiers (Redis in the background), unless
    /// a purge happened since the fetch began (`epoch`).
    pub(crate) fn insert(
        &self,
        key: &Arc<str>,
        headers: &http::HeaderMap,
        body: Bytes,
        ttl: Option<Duration>,
        epoch: u64,
    ) {
        if self.epoch() != epoch {
            return;
        }
        let len = body.len() as u64;
        CacheStats::add(&self.inner.stats.bytes_stored, len);
        let mem_ttl = ttl.unwrap_or(self.inner.memory_ttl);
        let redis_ttl = ttl.unwrap_or(self.inner.redis_ttl);
        let obj = CachedObject::new(headers, body, mem_ttl);
        if len <= self.inner.memory_max_item {
            self.memory_put(key, Arc::new(obj.clone()));
        }
        if self.inner.redis.is_some() && len <= self.inner.redis_max_item {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let store = self.clone();
            let key = key.clone();
            let expire = redis_ttl + self.inner.stale;
            rt.spawn(async move {
                let mut obj = obj;
                obj.set_ttl(redis_ttl);
                let value = obj.encode();
                let Some(redis) = &store.inner.redis else { return };
                if store.epoch() == epoch && redis.set(&key, value, expire).await {
                    CacheStats::inc(&store.inner.stats.redis_writes);
                }
            });
        }
    }

    /// Joins the fill of `key` in flight, or becomes its leader.
    pub(crate) fn join(&self, key: &Arc<str>) -> Join {
        let mut map = self.inner.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.clone(), rx);
        Join::Leader(FillGuard {
            store: self.clone(),
            key: key.clone(),
            _done: tx,
        })
    }

    fn bump_epoch(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        CacheStats::inc(&self.inner.stats.purges);
    }

    /// Removes one object of one bucket from both tiers.
    pub async fn purge_object(&self, bucket: &str, key: &str) -> Result<(), PurgeError> {
        self.bump_epoch();
        let k: Arc<str> = Arc::from(self.cache_key(bucket, key));
        if let Some(mem) = &self.inner.memory {
            if let Some(old) = mem.get(&k) {
                old.retired.store(true, Ordering::Relaxed);
            }
            mem.invalidate(&k);
        }
        match &self.inner.redis {
            Some(redis) => redis.del(&[k.to_string()]).await.map_err(purge_error),
            None => Ok(()),
        }
    }

    /// Removes every object of one bucket from both tiers.
    pub async fn purge_bucket(&self, bucket: &str) -> Result<(), PurgeError> {
        self.bump_epoch();
        let prefix = self.bucket_prefix(bucket);
        self.memory_purge(|k| k.starts_with(prefix.as_str()));
        match &self.inner.redis {
            Some(redis) => redis
                .purge_pattern(&format!("{}*", glob_escape(&prefix)))
                .await
                .map(|_| ())
                .map_err(purge_error),
            None => Ok(()),
        }
    }

    /// Removes every object this proxy cached, from both tiers (only keys
    /// under `key_prefix` are touched in Redis).
    pub async fn purge_all(&self) -> Result<(), PurgeError> {
        self.bump_epoch();
        self.memory_purge(|_| true);
        match &self.inner.redis {
            Some(redis) => redis
                .purge_pattern(&format!("{}*", glob_escape(&self.inner.key_prefix)))
                .await
                .map(|_| ())
                .map_err(purge_error),
            None => Ok(()),
        }
    }

    fn memory_purge(&self, matches: impl Fn(&str) -> bool) {
        let Some(mem) = &self.inner.memory else {
            return;
        };
        let keys: Vec<Arc<str>> = mem
            .iter()
            .filter(|e| matches(e.key()))
            .map(|e| {
                e.value().retired.store(true, Ordering::Relaxed);
                e.key().clone()
            })
            .collect();
        for k in keys {
            mem.invalidate(&k);
        }
    }
}

fn purge_error(e: RedisFailure) -> PurgeError {
    PurgeError(Box::new(e))
}
