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
use super::redis::{glob_escape, RedisFailure, RedisHealth, RedisTier};
use super::stats::{CacheStats, CacheStatsSnapshot};

/// `{` + 16 hex digits + `}`: the hash tag after the key prefix.
const TAG_LEN: usize = 18;

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
    /// Keyed with foldhash (randomly seeded per process) rather than the
    /// default SipHash, which was ~1.5% of a cache hit's CPU (issue 13).
    memory: Option<MokaCache<Arc<str>, Arc<MemEntry>, foldhash::fast::RandomState>>,
    memory_ttl: Duration,
    memory_max_item: u64,
    redis: Option<RedisTier>,
    redis_ttl: Duration,
    redis_max_item: u64,
    key_prefix: String,
    stale: Duration,
    coalesce_timeout: Duration,
    slice_size: Option<u64>,
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
                .build_with_hasher(foldhash::fast::RandomState::default())
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
                slice_size: (config.slice_size > 0).then_some(config.slice_size),
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

    /// The shared tier's mode (`standalone`, `cluster`, `sentinel`), if any.
    pub fn redis_mode(&self) -> Option<&'static str> {
        self.inner.redis.as_ref().map(|r| r.mode().as_str())
    }

    /// Whether the shared tier's last operation succeeded (and its breaker
    /// is closed); `None` without a shared tier. Cheap: for metrics.
    pub fn redis_up(&self) -> Option<bool> {
        self.inner.redis.as_ref().map(|r| r.is_up())
    }

    /// Asks the shared tier now (bounded by `redis.timeout_ms`), for
    /// `/ready`: mode, reachability, and in cluster mode the primaries
    /// serving slots. A dead cache never makes the proxy unready: this is
    /// information, not a readiness condition.
    pub async fn redis_health(&self) -> Option<RedisHealth> {
        match &self.inner.redis {
            Some(r) => Some(r.health().await),
            None => None,
        }
    }

    /// The cache key of an object: prefix, a cluster hash tag of bucket and
    /// key, length-prefixed bucket, `o:`, key. The same key in two buckets
    /// never collides, whatever the names contain. Every entry of one object
    /// (the object, or its slices and their index) carries the same hash tag,
    /// so in a Redis Cluster one object lives on one shard.
    /// Only bucket and key vary a cached answer: ranges and preconditions are
    /// answered from the full object.
    pub fn cache_key(&self, bucket: &str, key: &str) -> String {
        self.entry_key(bucket, key, "o")
    }

    /// The key of one entry of an object; `kind` is `o` (whole object), `m`
    /// (index of a sliced object) or `s<size>.<n>` (slice `n`).
    pub(crate) fn entry_key(&self, bucket: &str, key: &str, kind: &str) -> String {
        use std::fmt::Write;
        // Built in one buffer (this runs on every lookup): the hash tag covers
        // `<len>:<bucket>/<key>`, as `{scoped}{key}` did.
        let len = bucket.len().to_string();
        let mut tag = xxhash_rust::xxh3::Xxh3Default::new();
        for part in [len.as_str(), ":", bucket, "/", key] {
            tag.update(part.as_bytes());
        }
        let prefix = &self.inner.key_prefix;
        let mut out =
            String::with_capacity(prefix.len() + TAG_LEN + len.len() + bucket.len() + kind.len() + key.len() + 3);
        out.push_str(prefix);
        let _ = write!(out, "{{{:016x}}}", tag.digest());
        for part in [len.as_str(), ":", bucket, "/", kind, ":", key] {
            out.push_str(part);
        }
        out
    }

    /// The object key inside the cache key of a whole object of `bucket`.
    pub(crate) fn object_name<'k>(&self, bucket: &str, cache_key: &'k str) -> Option<&'k str> {
        let scoped = format!("{}:{}/o:", bucket.len(), bucket);
        self.scoped_part(cache_key)?.strip_prefix(scoped.as_str())
    }

    /// The part of a key after prefix and hash tag (`<len>:<bucket>/...`).
    fn scoped_part<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.inner.key_prefix.as_str())?.get(TAG_LEN..)
    }

    /// The `SCAN MATCH` pattern of every entry of `bucket`.
    fn bucket_pattern(&self, bucket: &str) -> String {
        format!(
            "{}{{{}}}{}*",
            glob_escape(&self.inner.key_prefix),
            "?".repeat(16),
            glob_escape(&format!("{}:{}/", bucket.len(), bucket))
        )
    }

    /// `cache.slice_size`, when slicing is on.
    pub(crate) fn slice_size(&self) -> Option<u64> {
        self.inner.slice_size
    }

    /// Drops entries from both tiers (no epoch change: not a purge).
    pub(crate) async fn forget(&self, keys: &[Arc<str>]) {
        if let Some(mem) = &self.inner.memory {
            for k in keys {
                if let Some(old) = mem.get(k) {
                    old.retired.store(true, Ordering::Relaxed);
                }
                mem.invalidate(k);
            }
        }
        if let Some(redis) = &self.inner.redis {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let _ = redis.del(&keys).await;
        }
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
        // Exported as a trace span when the binary traces (issue 16).
        let span = tracing::info_span!(
            target: "yatagarasu::trace",
            "redis.get",
            otel.kind = "client",
            db.system.name = "redis",
            db.operation.name = "GET",
            yatagarasu.found = tracing::field::Empty,
        );
        let value = tracing::Instrument::instrument(redis.get(key), span.clone()).await;
        span.record("yatagarasu.found", value.is_some());
        let Some(value) = value else {
            return Found::None;
        };
        let Some(obj) = CachedObject::decode(value) else {
            // A flipped bit, a truncated or foreign value: never served, and
            // deleted so the next fill replaces it.
            CacheStats::inc(&self.inner.stats.redis_corrupt);
            tracing::warn!("corrupt or foreign value in the redis cache (checksum or format), deleted");
            let _ = redis.del(&[key.to_string()]).await;
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
    /// (A sliced object loses its index; its slices are then unreachable
    /// and expire with their TTL.)
    pub async fn purge_object(&self, bucket: &str, key: &str) -> Result<(), PurgeError> {
        self.bump_epoch();
        // Both keys share one hash tag: one multi-key UNLINK in a cluster too.
        let keys: [Arc<str>; 2] = [
            Arc::from(self.cache_key(bucket, key)),
            Arc::from(self.entry_key(bucket, key, "m")),
        ];
        if let Some(mem) = &self.inner.memory {
            for k in &keys {
                if let Some(old) = mem.get(k) {
                    old.retired.store(true, Ordering::Relaxed);
                }
                mem.invalidate(k);
            }
        }
        match &self.inner.redis {
            Some(redis) => redis
                .del(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>())
                .await
                .map_err(purge_error),
            None => Ok(()),
        }
    }

    /// Removes every object of one bucket from both tiers.
    pub async fn purge_bucket(&self, bucket: &str) -> Result<(), PurgeError> {
        self.bump_epoch();
        let scoped = format!("{}:{}/", bucket.len(), bucket);
        self.memory_purge(|k| self.scoped_part(k).is_some_and(|p| p.starts_with(scoped.as_str())));
        match &self.inner.redis {
            Some(redis) => redis
                .purge_pattern(&self.bucket_pattern(bucket))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys are shared with other instances through Redis: the
    /// one-buffer builder must give exactly the keys of the original
    /// `format!` chain.
    #[test]
    fn entry_keys_keep_their_format() {
        let store = CacheStore::new(&CacheConfig::default()).unwrap();
        for (bucket, key, kind) in [
            ("b", "k", "o"),
            ("assets", "dir/a b.png", "m"),
            ("x:y", "", "s1048576.3"),
        ] {
            let scoped = format!("{}:{}/", bucket.len(), bucket);
            let tag = xxhash_rust::xxh3::xxh3_64(format!("{scoped}{key}").as_bytes());
            let expected = format!("{}{{{tag:016x}}}{scoped}{kind}:{key}", store.inner.key_prefix);
            assert_eq!(store.entry_key(bucket, key, kind), expected);
        }
        assert_eq!(
            store.object_name("assets", &store.cache_key("assets", "a/b")),
            Some("a/b")
        );
    }
}
