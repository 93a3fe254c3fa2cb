//! The Redis/Valkey tier: every operation bounded by a short timeout and gated
//! by a small circuit breaker, so a slow, down or restarting Redis costs
//! requests nothing but a miss. Connections are pooled by deadpool, which
//! drops broken ones and dials again: Redis coming back is picked up by itself.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_redis::redis::{self, RedisError};
use deadpool_redis::{Pool, PoolConfig, PoolError, Runtime, Timeouts};

use super::config::{redact_url, CacheConfigError, RedisCacheConfig};
use super::stats::CacheStats;

/// How often `INFO memory` is read for the capacity check.
const USED_MEMORY_REFRESH: Duration = Duration::from_secs(5);
/// Keys deleted per `UNLINK` while purging.
const PURGE_BATCH: usize = 500;

/// Why a Redis operation did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RedisFailure {
    #[error("redis breaker open")]
    BreakerOpen,
    #[error("redis timed out")]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("redis pool: {0}")]
    Pool(String),
}

/// A consecutive-failure breaker: `threshold` failures in a row open it for
/// `cooldown`; after that operations are tried again, and one failure
/// re-opens it.
#[derive(Debug)]
struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    open_until: Mutex<Option<Instant>>,
}

impl Breaker {
    fn allows(&self) -> bool {
        let guard = self.open_until.lock().unwrap_or_else(|e| e.into_inner());
        match *guard {
            Some(until) => Instant::now() >= until,
            None => true,
        }
    }

    fn success(&self) {
        if self.failures.swap(0, Ordering::Relaxed) != 0 {
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Records a failure; true when it opened the breaker.
    fn failure(&self) -> bool {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.threshold {
            *self.open_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + self.cooldown);
            return true;
        }
        false
    }
}

pub(crate) struct RedisTier {
    pool: Pool,
    timeout: Duration,
    breaker: Breaker,
    max_capacity: u64,
    used_memory: AtomicU64,
    used_checked: Mutex<Option<Instant>>,
    stats: Arc<CacheStats>,
    url: String,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("max_capacity", &self.max_capacity)
            .finish()
    }
}

impl RedisTier {
    pub(crate) fn new(cfg: &RedisCacheConfig, stats: Arc<CacheStats>) -> Result<Self, CacheConfigError> {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let mut pool_cfg = deadpool_redis::Config::from_url(cfg.url.clone());
        let mut pc = PoolConfig::new(cfg.pool_size.max(1));
        pc.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        pool_cfg.pool = Some(pc);
        let pool = pool_cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheConfigError::new("cache.redis.url", e.to_string().replace(&cfg.url, "<url>")))?;
        Ok(Self {
            pool,
            timeout,
            breaker: Breaker {
                threshold: cfg.failure_threshold.max(1),
                cooldown: Duration::from_millis(cfg.cooldown_ms),
                failures: AtomicU32::new(0),
                open_until: Mutex::new(None),
            },
            max_capacity: cfg.max_capacity,
            used_memory: AtomicU64::new(0),
            used_checked: Mutex::new(None),
            stats,
            url: redact_url(&cfg.url),
        })
    }

    /// Runs one command within the timeout, through the breaker.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, RedisFailure> {
        if !self.breaker.allows() {
            CacheStats::inc(&self.stats.redis_skipped);
            return Err(RedisFailure::BreakerOpen);
        }
        let op = async {
            let mut conn = self.pool.get().await.map_err(|e| match e {
                PoolError::Timeout(_) => RedisFailure::Timeout,
                other => RedisFailure::Pool(other.to_string()),
            })?;
            Ok::<T, RedisFailure>(cmd.query_async::<T>(&mut conn).await?)
        };
        let result = tokio::time::timeout(timeout, op)
            .await
            .unwrap_or(Err(RedisFailure::Timeout));
        match &result {
            Ok(_) => self.breaker.success(),
            Err(err) => {
                if matches!(err, RedisFailure::Timeout) {
                    CacheStats::inc(&self.stats.redis_timeouts);
                }
                CacheStats::inc(&self.stats.redis_errors);
                if self.breaker.failure() {
                    CacheStats::inc(&self.stats.redis_breaker_opened);
                    tracing::warn!(redis = %self.url, error = %err, "redis cache unavailable, breaker open");
                } else {
                    tracing::debug!(redis = %self.url, error = %err, "redis cache operation failed");
                }
            }
        }
        result
    }

    /// The value at `key`; `None` on a miss and on any failure.
    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        self.run::<Option<Bytes>>(redis::cmd("GET").arg(key), self.timeout)
            .await
            .ok()
            .flatten()
    }

    /// Stores `value` at `key` for `ttl`, unless `max_capacity` is reached.
    pub(crate) async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> bool {
        if !self.has_room(value.len() as u64).await {
            CacheStats::inc(&self.stats.redis_writes_refused);
            return false;
        }
        let ms = ttl.as_millis().max(1) as u64;
        let len = value.len() as u64;
        let cmd = redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ms).to_owned();
        // A large value takes longer to send: allow 1 ms per 64 KiB on top.
        let timeout = self.timeout + Duration::from_millis(len / 65_536);
        let ok = self.run::<()>(&cmd, timeout).await.is_ok();
        if ok {
            self.used_memory.fetch_add(len, Ordering::Relaxed);
        }
        ok
    }

    /// Whether Redis' own `used_memory`, read at most every few seconds,
    /// leaves room for `len` more bytes under `max_capacity`.
    async fn has_room(&self, len: u64) -> bool {
        if self.max_capacity == 0 {
            return true;
        }
        let refresh = {
            let mut checked = self.used_checked.lock().unwrap_or_else(|e| e.into_inner());
            match *checked {
                Some(at) if at.elapsed() < USED_MEMORY_REFRESH => false,
                _ => {
                    *checked = Some(Instant::now());
                    true
                }
            }
        };
        if refresh {
            if let Ok(info) = self.run::<String>(redis::cmd("INFO").arg("memory"), self.timeout).await {
                if let Some(used) = parse_used_memory(&info) {
                    self.used_memory.store(used, Ordering::Relaxed);
                }
            }
        }
        self.used_memory.load(Ordering::Relaxed).saturating_add(len) <= self.max_capacity
    }

    /// Deletes keys.
    pub(crate) async fn del(&self, keys: &[String]) -> Result<(), RedisFailure> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("UNLINK");
        for k in keys {
            cmd.arg(k);
        }
        self.run::<i64>(&cmd, self.timeout * 4).await.map(|_| ())
    }

    /// Deletes every key matching a glob pattern (SCAN + UNLINK, never FLUSHDB:
    /// the Redis may hold other data). Returns how many were deleted.
    pub(crate) async fn purge_pattern(&self, pattern: &str) -> Result<u64, RedisFailure> {
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PURGE_BATCH),
                    self.timeout * 4,
                )
                .await?;
            deleted += keys.len() as u64;
            self.del(&keys).await?;
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Escapes glob metacharacters for `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_memory() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info), Some(1_048_576));
    }

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let b = Breaker {
            threshold: 2,
            cooldown: Duration::from_secs(60),
            failures: AtomicU32::new(0),
            open_until: Mutex::new(None),
        };
        assert!(!b.failure());
        assert!(b.allows());
        assert!(b.failure());
        assert!(!b.allows());
        b.success();
        assert!(b.allows());
    }

    #[test]
    fn escapes_glob() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
