//! Purging: one object, a bucket or everything, from both tiers; a purge
//! also bumps the epoch so that fills in flight are not stored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::super::redis::{glob_escape, RedisFailure};
use super::super::stats::CacheStats;
use super::{CacheStore, PurgeError};

impl CacheStore {
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
        for k in &keys {
            self.memory_remove(k);
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
        let hashes: Vec<u64> = mem
            .iter()
            .filter(|e| matches(&e.value().key))
            .map(|e| {
                e.value().retired.store(true, Ordering::Relaxed);
                *e.key()
            })
            .collect();
        for h in hashes {
            mem.invalidate(&h);
        }
    }
}

fn purge_error(e: RedisFailure) -> PurgeError {
    PurgeError(Box::new(e))
}
