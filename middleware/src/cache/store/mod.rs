//! The state one proxy shares between all its buckets' cache layers: the
//! memory tier, the Redis tier, the counters and the in-flight fills.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use mini_moka::sync::{Cache as MokaCache, ConcurrentCacheExt as _};
use tokio::sync::{oneshot, watch};

use super::config::{CacheConfig, CacheConfigError};
use super::entry::{now_ms, CachedObject};
use super::placement::{self, BodyPlacement, PlacedBodyWriter};
use super::redis::{RedisHealth, RedisTier};
use super::stats::{CacheStats, CacheStatsSnapshot};

mod keys;
mod purge;

/// A memory-tier value; one dropped without being retired (capacity
/// eviction, admission refusal, expiry) counts as an eviction.
struct MemEntry {
    /// The full entry key: the tier is keyed by its hash, so a lookup
    /// checks this before it serves.
    key: Arc<str>,
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
#[error("memory tier purged, Redis tier not: {source}")]
pub struct PurgeError {
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
    broadcast: Broadcast,
}

impl PurgeError {
    /// Whether the purge was announced to the other instances all the same.
    pub fn broadcast(&self) -> &Broadcast {
        &self.broadcast
    }
}

/// Whether a purge was announced to the other instances sharing the Redis
/// tier (each purges its own memory tier when it hears it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// No Redis tier, so no channel to announce it on: each instance must be
    /// purged on its own.
    NoRedis,
    /// Published on the purge channel; `subscribers` instances (this one
    /// included) were listening.
    Published {
        /// Instances subscribed when the purge was announced.
        subscribers: u64,
    },
    /// Not published (Redis down or its breaker open): the other instances
    /// keep their memory copies until these expire, or until they
    /// subscribe again (which clears their memory tier).
    Failed(String),
}

struct Inner {
    /// Keyed by [`Self::key_hasher`]'s hash of the entry key's scoped part,
    /// so a hit builds and allocates no key (issue 13); the entry holds the
    /// full key, checked on every lookup. Hashed again with foldhash
    /// rather than the default SipHash, which was ~1.5% of a hit's CPU.
    memory: Option<MokaCache<u64, Arc<MemEntry>, foldhash::fast::RandomState>>,
    /// Randomly seeded per process: which keys share a hash is not
    /// predictable from outside (and a shared hash only means a miss).
    key_hasher: foldhash::fast::RandomState,
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
    /// Where large memory-tier bodies live (the heap without one).
    placement: OnceLock<Arc<dyn BodyPlacement>>,
    /// Places for fills run in the background (`super::revalidate`).
    background: Arc<tokio::sync::Semaphore>,
    /// This store's id in purge messages (its own are skipped).
    instance: String,
    /// Stops the purge listener when the store is dropped.
    listener: OnceLock<oneshot::Sender<()>>,
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
    /// use, so a Redis that is down at startup only means misses. Inside a
    /// Tokio runtime, with Redis, the purge listener starts
    /// ([`Self::listen_for_purges`]).
    pub fn new(config: &CacheConfig) -> Result<Self, CacheConfigError> {
        config.validate()?;
        let stats = Arc::new(CacheStats::default());
        let memory = (config.memory.max_capacity > 0).then(|| {
            MokaCache::builder()
                .max_capacity(config.memory.max_capacity)
                .weigher(|_k: &u64, v: &Arc<MemEntry>| v.obj.weight().min(u64::from(u32::MAX)) as u32)
                .build_with_hasher(foldhash::fast::RandomState::default())
        });
        let redis = if config.redis.enabled {
            Some(RedisTier::new(&config.redis, stats.clone())?)
        } else {
            None
        };
        let store = Self {
            inner: Arc::new(Inner {
                memory,
                key_hasher: foldhash::fast::RandomState::default(),
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
                placement: OnceLock::new(),
                background: Arc::new(tokio::sync::Semaphore::new(super::revalidate::BACKGROUND_FILLS)),
                instance: uuid::Uuid::new_v4().to_string(),
                listener: OnceLock::new(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            store.listen_for_purges();
        }
        Ok(store)
    }

    /// Keeps the memory tier's bodies in `placement`'s memory (those it
    /// accepts) instead of the heap. Set once: a second placement is ignored.
    pub fn with_body_placement(self, placement: Arc<dyn BodyPlacement>) -> Self {
        let _ = self.inner.placement.set(placement);
        self
    }

    /// A writer in the body placement for a fill of `len` bytes, when the
    /// memory tier would keep it and the placement takes it.
    pub(crate) fn placed_writer(&self, len: u64) -> Option<Box<dyn PlacedBodyWriter>> {
        self.inner.memory.as_ref()?;
        if len > self.inner.memory_max_item {
            return None;
        }
        self.inner.placement.get()?.writer(usize::try_from(len).ok()?)
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

    /// `cache.slice_size`, when slicing is on.
    pub(crate) fn slice_size(&self) -> Option<u64> {
        self.inner.slice_size
    }

    /// Drops entries from both tiers (no epoch change: not a purge).
    pub(crate) async fn forget(&self, keys: &[Arc<str>]) {
        for k in keys {
            self.memory_remove(k);
        }
        if let Some(redis) = &self.inner.redis {
            let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            let _ = redis.del(&keys).await;
        }
    }

    /// A place for a fill in the background, if one is free.
    pub(crate) fn background_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.background.clone().try_acquire_owned().ok()
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
    pub(crate) fn memory_get(&self, key: &str) -> Found {
        let hash = self.memory_hash(key);
        self.memory_found(hash, |entry| *entry.key == *key)
    }

    /// Looks in memory for the whole object `key` of `bucket`
    /// ([`Self::cache_key`]) without building its key: a cache hit's lookup.
    pub(crate) fn memory_get_object(&self, bucket: &str, key: &str) -> Found {
        if self.inner.memory.is_none() {
            return Found::None;
        }
        self.with_scoped_key(bucket, key, "o", |scoped| {
            let hash = self.inner.key_hasher.hash_one(scoped);
            self.memory_found(hash, |entry| self.scoped_part(&entry.key) == Some(scoped))
        })
    }

    /// The memory tier's key of an entry key: the hash of its scoped part.
    fn memory_hash(&self, key: &str) -> u64 {
        self.inner.key_hasher.hash_one(self.scoped_part(key).unwrap_or(key))
    }

    fn memory_found(&self, hash: u64, is_key: impl FnOnce(&MemEntry) -> bool) -> Found {
        let Some(mem) = &self.inner.memory else {
            return Found::None;
        };
        let Some(entry) = mem.get(&hash).filter(|e| is_key(e)) else {
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
        mem.invalidate(&hash);
        Found::None
    }

    /// Drops `key`'s memory entry, counted as retired (not an eviction).
    fn memory_remove(&self, key: &str) {
        let Some(mem) = &self.inner.memory else {
            return;
        };
        let hash = self.memory_hash(key);
        if let Some(old) = mem.get(&hash).filter(|e| *e.key == *key) {
            old.retired.store(true, Ordering::Relaxed);
            mem.invalidate(&hash);
        }
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
        // A purge while the GET is on its way: the copy is answered, not kept.
        let epoch = self.epoch();
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
            if self.epoch() == epoch {
                self.memory_put(key, Arc::new(obj.capped(mem_until)));
            }
            return Found::Fresh(obj, Tier::Redis);
        }
        if now < obj.fresh_until_ms().saturating_add(self.inner.stale.as_millis() as u64) {
            return Found::Stale(Arc::new(obj));
        }
        Found::None
    }

    /// Puts `obj` in the memory tier; whether the tier holds it afterwards
    /// (it may refuse or at once evict an entry too heavy for its budget).
    fn memory_put(&self, key: &Arc<str>, obj: Arc<CachedObject>) -> bool {
        let Some(mem) = &self.inner.memory else {
            return false;
        };
        if obj.body().len() as u64 > self.inner.memory_max_item {
            return false;
        }
        let obj = match self.inner.placement.get() {
            Some(p) => match placement::place(p.as_ref(), obj.body()) {
                Some(body) => Arc::new(obj.with_body(body)),
                None => obj,
            },
            None => obj,
        };
        let hash = self.memory_hash(key);
        // The entry it replaces: the same key's, or (rarely) another key's
        // with the same hash.
        if let Some(old) = mem.get(&hash) {
            old.retired.store(true, Ordering::Relaxed);
        }
        mem.insert(
            hash,
            Arc::new(MemEntry {
                key: key.clone(),
                obj,
                retired: AtomicBool::new(false),
                stats: self.inner.stats.clone(),
            }),
        );
        // mini-moka evicts in batches on its own schedule: once traffic has
        // paused for 0.5 s it waits for 64 queued operations, and the tier
        // overshoots its budget meanwhile (a 256 MiB object streamed from
        // 8 MiB slices through a 32 MiB tier kept every slice). Evict now: an
        // insert follows an upstream fetch, never on a hit's path.
        mem.sync();
        CacheStats::inc(&self.inner.stats.memory_inserts);
        mem.contains_key(&hash)
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
        self.insert_and_release(key, headers, body, ttl, epoch, None);
    }

    /// [`Self::insert`], then drops `guard` (waking the requests waiting for
    /// this fill) once a copy can be found: right after the memory insert,
    /// or, when memory does not keep the object (tier off, object over its
    /// `max_item_size`), once the Redis write has ended. Woken before it, the
    /// waiting requests found nothing in Redis yet and each fetched the
    /// object from the replicas.
    pub(crate) fn insert_and_release(
        &self,
        key: &Arc<str>,
        headers: &http::HeaderMap,
        body: Bytes,
        ttl: Option<Duration>,
        epoch: u64,
        guard: Option<FillGuard>,
    ) {
        if self.epoch() != epoch {
            return;
        }
        let len = body.len() as u64;
        CacheStats::add(&self.inner.stats.bytes_stored, len);
        let mem_ttl = ttl.unwrap_or(self.inner.memory_ttl);
        let redis_ttl = ttl.unwrap_or(self.inner.redis_ttl);
        let obj = CachedObject::new(headers, body, mem_ttl);
        let mut guard = guard;
        if len <= self.inner.memory_max_item && self.memory_put(key, Arc::new(obj.clone())) {
            if self.epoch() != epoch {
                // Purged meanwhile: not kept, and not written to Redis.
                self.memory_remove(key);
                return;
            }
            drop(guard.take());
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
                    // A purge that began while the write was on its way may
                    // have scanned before it landed: the purged object would
                    // be back in the shared tier. Take it out again.
                    if store.epoch() != epoch {
                        let _ = redis.del(&[key.to_string()]).await;
                    }
                    CacheStats::inc(&store.inner.stats.redis_writes);
                }
                drop(guard);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the memory tier really holds: entries evicted but not yet
    /// dropped count (they are what the RSS sees).
    fn held(store: &CacheStore) -> u64 {
        let mem = store.inner.memory.as_ref().expect("a memory tier");
        mem.iter().map(|e| e.value().obj.weight()).sum()
    }

    #[test]
    fn the_memory_tier_keeps_its_budget_right_after_each_insert() {
        let mut config = CacheConfig::default();
        config.memory.max_capacity = 1 << 20;
        config.memory.max_item_size = 256 << 10;
        let store = CacheStore::new(&config).unwrap();
        for i in 0..16 {
            let key: Arc<str> = Arc::from(format!("k{i}"));
            let body = Bytes::from(vec![7u8; 200 << 10]);
            store.insert(&key, &http::HeaderMap::new(), body, None, store.epoch());
            assert!(
                held(&store) <= 1 << 20,
                "after {} inserts: {} bytes held",
                i + 1,
                held(&store)
            );
        }
    }

    fn store() -> CacheStore {
        CacheStore::new(&CacheConfig::default()).unwrap()
    }

    fn put(store: &CacheStore, key: &Arc<str>, body: &'static [u8]) {
        store.insert(
            key,
            &http::HeaderMap::new(),
            Bytes::from_static(body),
            None,
            store.epoch(),
        );
    }

    fn body(found: Found) -> Option<Bytes> {
        match found {
            Found::Fresh(obj, Tier::Memory) => Some(obj.body().clone()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn an_object_is_found_by_bucket_and_key_as_by_its_cache_key() {
        let store = store();
        let key: Arc<str> = store.cache_key("b", "dir/a.txt").into();
        put(&store, &key, b"A");
        assert_eq!(
            body(store.memory_get_object("b", "dir/a.txt")).as_deref(),
            Some(&b"A"[..])
        );
        assert_eq!(body(store.memory_get(&key)).as_deref(), Some(&b"A"[..]));
        // Another key, another bucket, a slice index of the same object.
        assert!(body(store.memory_get_object("b", "dir/a.tx")).is_none());
        assert!(body(store.memory_get_object("bb", "dir/a.txt")).is_none());
        assert!(body(store.memory_get(&store.entry_key("b", "dir/a.txt", "m"))).is_none());
        // Gone once forgotten or purged.
        let other: Arc<str> = store.cache_key("c", "x").into();
        put(&store, &other, b"X");
        store.forget(std::slice::from_ref(&key)).await;
        assert!(body(store.memory_get_object("b", "dir/a.txt")).is_none());
        assert_eq!(body(store.memory_get_object("c", "x")).as_deref(), Some(&b"X"[..]));
        store.purge_bucket("c").await.unwrap();
        assert!(body(store.memory_get_object("c", "x")).is_none());
        assert_eq!(store.stats().snapshot().memory_evictions, 0);
    }

    /// The tier is keyed by a hash: an entry whose hash is another key's
    /// (a collision, made here by hand) is never served for that key, and
    /// removing that key leaves it alone.
    #[test]
    fn an_entry_under_another_keys_hash_is_not_served() {
        let store = store();
        let mine: Arc<str> = store.cache_key("b", "mine").into();
        let theirs: Arc<str> = store.cache_key("b", "theirs").into();
        let mem = store.inner.memory.as_ref().unwrap();
        let obj = Arc::new(CachedObject::new(
            &http::HeaderMap::new(),
            Bytes::from_static(b"theirs"),
            Duration::from_secs(60),
        ));
        mem.insert(
            store.memory_hash(&mine),
            Arc::new(MemEntry {
                key: theirs.clone(),
                obj,
                retired: AtomicBool::new(false),
                stats: store.inner.stats.clone(),
            }),
        );
        assert!(mem.get(&store.memory_hash(&mine)).is_some());
        assert!(body(store.memory_get_object("b", "mine")).is_none());
        assert!(body(store.memory_get(&mine)).is_none());
        store.memory_remove(&mine);
        assert!(
            mem.get(&store.memory_hash(&mine)).is_some(),
            "removed another key's entry"
        );
        // The key that shares the hash takes the slot over when stored.
        put(&store, &mine, b"mine");
        assert_eq!(
            body(store.memory_get_object("b", "mine")).as_deref(),
            Some(&b"mine"[..])
        );
    }
}
