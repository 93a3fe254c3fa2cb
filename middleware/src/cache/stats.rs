//! Counters of the cache, shared by every bucket using one store.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Monotonic counters of a [`CacheStore`](super::CacheStore); read them
        /// one by one or all at once with [`snapshot`](Self::snapshot).
        #[derive(Debug, Default)]
        pub struct CacheStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of the counters at one moment, for export (JSON, Prometheus).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct CacheStatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
            /// Entries in the memory tier now (approximate).
            pub memory_entries: u64,
            /// Bytes held by the memory tier now (approximate).
            pub memory_bytes: u64,
        }

        impl CacheStats {
            fn load_all(&self) -> CacheStatsSnapshot {
                CacheStatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    memory_entries: 0,
                    memory_bytes: 0,
                }
            }
        }
    };
}

counters! {
    /// Requests answered from the memory tier.
    memory_hits,
    /// Memory lookups that found no fresh copy.
    memory_misses,
    /// Requests answered from Redis (the copy then fills memory).
    redis_hits,
    /// Redis lookups that found no fresh, valid copy.
    redis_misses,
    /// Requests answered with a copy past its TTL because no replica could serve.
    stale_hits,
    /// Requests answered from the copy another, concurrent request fetched.
    coalesced_hits,
    /// Misses that waited for a concurrent request fetching the same object
    /// (or slice).
    coalesced_waits,
    /// Responses that went through without being cached (bucket off,
    /// not cacheable, too large).
    bypasses,
    /// Requests that went to the replicas after a miss.
    upstream_fetches,
    /// Objects written to the memory tier.
    memory_inserts,
    /// Memory entries that left the tier without a purge (capacity evictions
    /// and refusals, expiry past the stale window).
    memory_evictions,
    /// Objects written to Redis.
    redis_writes,
    /// Redis writes refused because `redis.max_capacity` was reached.
    redis_writes_refused,
    /// Fills given up (object over `max_item_size`, body error, client gone;
    /// a background fill whose fetch failed or whose answer may not be stored).
    fills_abandoned,
    /// Fills run in the background after a conditional `GET` miss answered
    /// `304`/`412` (a plain `GET` of the object, or the rest of a `200` the
    /// replica sent anyway), so that revalidating clients warm the cache.
    revalidation_fills,
    /// Such fills not started because `BACKGROUND_FILLS` (8) were running.
    revalidation_fills_skipped,
    /// Body bytes answered from the memory tier.
    memory_bytes_served,
    /// Body bytes answered from Redis.
    redis_bytes_served,
    /// Body bytes stored (each fill counted once).
    bytes_stored,
    /// Failed Redis operations (connection refused, protocol error, timeout).
    redis_errors,
    /// Redis operations that hit `redis.timeout_ms` (also in `redis_errors`).
    redis_timeouts,
    /// Redis values that were not a valid cache entry (treated as misses).
    redis_corrupt,
    /// Redis operations skipped because its breaker was open.
    redis_skipped,
    /// Times Redis' breaker opened.
    redis_breaker_opened,
    /// Objects, buckets or whole caches purged.
    purges,
    /// Purges announced by other instances on the Redis purge channel and
    /// applied to this instance's memory tier.
    purges_received,
    /// Answers made from the slices of a large object (`X-Cache: SLICE`).
    slice_answers,
    /// Slices requested from the replicas (one `Range` request each).
    slice_fetches,
    /// Sliced objects dropped because their ETag changed upstream.
    slice_invalidations,
}

impl CacheStats {
    /// Adds one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// All counters now (the memory gauges are filled in by the store).
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        self.load_all()
    }
}
