//! Purging: one object, a bucket or everything, from both tiers; a purge
//! also bumps the epoch so that fills in flight are not stored.
//!
//! With Redis, a purge is also announced to the other instances sharing it
//! (their memory tiers hold copies too), twice: before the Redis tier is
//! purged, so that their fills in flight are not stored (nor written to
//! Redis behind the purge), and after, so that what they read from Redis
//! meanwhile is dropped. This instance does the same around its Redis purge.
//! Each instance listens on the channel with one connection; when it
//! subscribes after a gap (again after losing the connection, or Redis was
//! down at start) and the purge mark in Redis moved meanwhile (or cannot be
//! read), it clears its memory tier, since a purge sent meanwhile was
//! missed. A gap in which nothing was announced keeps the memory tier.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::super::redis::{glob_escape, ListenerEvent, PurgeMessage, PurgeScope};
use super::super::stats::CacheStats;
use super::{Broadcast, CacheStore, PurgeError};

impl CacheStore {
    fn bump_epoch(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Removes one object of one bucket from both tiers, on every instance
    /// sharing the Redis tier.
    /// (A sliced object loses its index; its slices are then unreachable
    /// and expire with their TTL.)
    pub async fn purge_object(&self, bucket: &str, key: &str) -> Result<Broadcast, PurgeError> {
        self.purge(PurgeScope::Object {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
        .await
    }

    /// Removes every object of one bucket from both tiers, on every
    /// instance sharing the Redis tier.
    pub async fn purge_bucket(&self, bucket: &str) -> Result<Broadcast, PurgeError> {
        self.purge(PurgeScope::Bucket {
            bucket: bucket.to_owned(),
        })
        .await
    }

    /// Removes every object this proxy cached, from both tiers (only keys
    /// under `key_prefix` are touched in Redis), on every instance sharing
    /// the Redis tier.
    pub async fn purge_all(&self) -> Result<Broadcast, PurgeError> {
        self.purge(PurgeScope::All).await
    }

    async fn purge(&self, scope: PurgeScope) -> Result<Broadcast, PurgeError> {
        CacheStats::inc(&self.inner.stats.purges);
        self.purge_here(&scope);
        let Some(redis) = &self.inner.redis else {
            return Ok(Broadcast::NoRedis);
        };
        let me = &self.inner.instance;
        let before = redis.publish(PurgeMessage::new(me, scope.clone(), false)).await;
        let deleted = match &scope {
            // Both keys share one hash tag: one multi-key UNLINK in a cluster too.
            PurgeScope::Object { bucket, key } => redis.del(&self.object_keys(bucket, key)).await,
            PurgeScope::Bucket { bucket } => redis.purge_pattern(&self.bucket_pattern(bucket)).await.map(|_| ()),
            PurgeScope::All => redis
                .purge_pattern(&format!("{}*", glob_escape(&self.inner.key_prefix)))
                .await
                .map(|_| ()),
        };
        // What was read from Redis while it was purged.
        self.purge_here(&scope);
        let after = redis.publish(PurgeMessage::new(me, scope, true)).await;
        let broadcast = match (before, after) {
            (Ok(subscribers), _) | (Err(_), Ok(subscribers)) => Broadcast::Published { subscribers },
            (Err(e), Err(_)) => Broadcast::Failed(e.to_string()),
        };
        match deleted {
            Ok(()) => Ok(broadcast),
            Err(e) => Err(PurgeError {
                source: Box::new(e),
                broadcast,
            }),
        }
    }

    /// The memory and Redis keys of one object: the object and its slice index.
    fn object_keys(&self, bucket: &str, key: &str) -> Vec<String> {
        vec![self.cache_key(bucket, key), self.entry_key(bucket, key, "m")]
    }

    /// Applies a purge to this instance: the epoch (fills in flight are not
    /// stored) and the memory tier.
    fn purge_here(&self, scope: &PurgeScope) {
        self.bump_epoch();
        match scope {
            PurgeScope::Object { bucket, key } => {
                for k in self.object_keys(bucket, key) {
                    self.memory_remove(&k);
                }
            }
            PurgeScope::Bucket { bucket } => {
                let scoped = format!("{}:{}/", bucket.len(), bucket);
                self.memory_purge(|k| self.scoped_part(k).is_some_and(|p| p.starts_with(scoped.as_str())));
            }
            PurgeScope::All => self.memory_purge(|_| true),
        }
    }

    /// Starts listening for the purges of the other instances sharing the
    /// Redis tier (one pub/sub connection, reconnecting with backoff), until
    /// the store is dropped. Does nothing without Redis, outside a Tokio
    /// runtime, or when already listening. [`Self::new`] calls it when
    /// built inside a runtime.
    pub fn listen_for_purges(&self) {
        let Some(redis) = &self.inner.redis else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (stop_tx, stop) = oneshot::channel();
        if self.inner.listener.set(stop_tx).is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let read_mark = {
            let weak = weak.clone();
            move || {
                let inner = weak.upgrade();
                async move {
                    match inner.as_ref().and_then(|i| i.redis.as_ref()) {
                        Some(redis) => redis.purge_mark().await.map_err(|e| e.to_string()),
                        None => Err("the store is gone".to_owned()),
                    }
                }
            }
        };
        let listen = redis
            .purge_channel()
            .listen(self.inner.instance.clone(), stop, read_mark, move |event| {
                let Some(inner) = weak.upgrade() else {
                    return false;
                };
                CacheStore { inner }.heard(event);
                true
            });
        rt.spawn(listen);
    }

    /// What the purge listener heard.
    fn heard(&self, event: ListenerEvent<'_>) {
        match event {
            ListenerEvent::Purge { scope, first } => {
                if first {
                    CacheStats::inc(&self.inner.stats.purges_received);
                    tracing::info!(purge = ?scope, "cache purge received from another instance");
                }
                self.purge_here(scope);
            }
            ListenerEvent::Subscribed { missed: true, .. } => {
                tracing::info!("cache purge channel subscribed after a gap in which a purge may have been announced: memory tier cleared");
                self.purge_here(&PurgeScope::All);
            }
            ListenerEvent::Subscribed { missed: false, .. } => {}
            ListenerEvent::Unreadable => {
                tracing::warn!("unreadable message on the cache purge channel (another version?): memory tier cleared");
                self.purge_here(&PurgeScope::All);
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use yatagarasu_testkit::redis::Redis;

    use super::super::{Broadcast, CacheStore, Found};
    use crate::cache::config::CacheConfig;

    /// Polls `f` a bounded number of times; whether it held.
    async fn until(mut f: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    /// Two stores (two instances) sharing one real redis-server: A's purge
    /// removes B's memory copy, and a fill that was in flight on B when A
    /// purged is neither kept in B's memory nor written to Redis.
    #[tokio::test]
    async fn a_purge_on_one_store_reaches_the_other_and_stops_its_fills_in_flight() {
        let redis = Redis::start();
        let mut config = CacheConfig::default();
        config.redis.enabled = true;
        config.redis.url = Some(redis.url());
        let (a, b) = (CacheStore::new(&config).unwrap(), CacheStore::new(&config).unwrap());
        let channel = format!("{}purge", config.redis.key_prefix);
        let subscribers = || redis.cli(&["PUBSUB", "NUMSUB", &channel]).lines().nth(1) == Some("2");
        assert!(until(subscribers).await, "the stores never subscribed");

        let cached: Arc<str> = b.cache_key("bkt", "cached").into();
        b.insert(
            &cached,
            &http::HeaderMap::new(),
            Bytes::from_static(b"old"),
            None,
            b.epoch(),
        );
        assert!(
            until(|| redis.cli(&["DBSIZE"]).trim() == "1").await,
            "B's write never landed"
        );
        // A fill of another object of the bucket begins on B.
        let in_flight = b.epoch();

        let broadcast = a.purge_bucket("bkt").await.unwrap();
        assert_eq!(broadcast, Broadcast::Published { subscribers: 2 });
        assert!(
            until(|| b.stats().snapshot().purges_received == 1).await,
            "B never heard the purge"
        );
        assert!(matches!(b.memory_get(&cached), Found::None), "B kept its copy");
        let filled: Arc<str> = b.cache_key("bkt", "filled").into();
        b.insert(
            &filled,
            &http::HeaderMap::new(),
            Bytes::from_static(b"old"),
            None,
            in_flight,
        );
        assert!(
            matches!(b.memory_get(&filled), Found::None),
            "B stored a fill the purge overtook"
        );
        // Only the mark of the last announcement is left.
        let mark = format!("{}purge:last", config.redis.key_prefix);
        assert_eq!(redis.cli(&["KEYS", "*"]).trim(), mark);
        assert_eq!(a.stats().snapshot().purges_received, 0, "A heard its own purge");
        assert_eq!(a.stats().snapshot().purges, 1);
    }
}
