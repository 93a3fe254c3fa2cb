//! The Redis/Valkey tier: every operation bounded by a short timeout and gated
//! by a small circuit breaker, so a slow, down or restarting Redis costs
//! requests nothing but a miss. Connections are pooled by deadpool, which
//! drops broken ones and dials again: Redis coming back is picked up by itself.
//!
//! Three deployments: one server (`standalone`), a Redis/Valkey Cluster
//! (`cluster`: the redis crate's cluster client follows `MOVED`/`ASK` and
//! topology changes) and a Sentinel-managed primary/replica set (`sentinel`:
//! each new connection asks the sentinels for the current primary). Reads and
//! writes go to primaries in every mode.
//!
//! Here: the tier and its breaker-gated operations; `pool`: the connection
//! pool of each mode; `capacity`: the `max_capacity` check; `purge`: purging
//! keys by pattern; `pubsub`: the purge broadcast to the other instances.

mod capacity;
mod pool;
mod pubsub;
mod purge;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_redis::redis::{self, RedisError};
use serde::Serialize;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker, SystemClock, TransitionHook};

use super::config::{redact_url, CacheConfigError, RedisCacheConfig, RedisMode};
use super::stats::CacheStats;
use pool::Backend;
pub(crate) use pubsub::{ListenerEvent, PurgeChannel, PurgeMessage, PurgeScope};
pub(crate) use purge::glob_escape;

/// Stores the mark (`ARGV[1]`) in the mark key and publishes the message
/// (`ARGV[3]`, carrying that mark) on the channel (`ARGV[2]`), as one step:
/// no listener can read the mark without the message having been sent.
const MARK_AND_PUBLISH: &str = "redis.call('SET', KEYS[1], ARGV[1]) return redis.call('PUBLISH', ARGV[2], ARGV[3])";

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
    #[error("redis cluster: {0}")]
    Topology(String),
}

/// What `/ready` and the metrics say about the shared tier.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RedisHealth {
    /// `standalone`, `cluster` or `sentinel`.
    pub mode: &'static str,
    /// Whether the tier answered (a `PING`, or `CLUSTER INFO` with
    /// `cluster_state:ok`) within `timeout_ms`.
    pub reachable: bool,
    /// The redacted URLs dialled.
    pub endpoints: Vec<String>,
    /// Cluster: primaries serving slots (`cluster_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primaries: Option<u64>,
    /// Cluster: whether every slot is served (`cluster_state:ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_state_ok: Option<bool>,
    /// Whether the tier's breaker is open (operations skipped).
    pub breaker_open: bool,
}

/// The tier's circuit breaker (the proxy's one breaker type): after
/// `failure_threshold` failures in a row operations are skipped for
/// `cooldown_ms`; then a few trial operations go through, one success closes
/// it and a failure re-opens it. Each opening is counted.
fn tier_breaker(cfg: &RedisCacheConfig, stats: Arc<CacheStats>) -> Arc<CircuitBreaker> {
    let hook: TransitionHook = Arc::new(move |to| {
        if to == BreakerState::Open {
            CacheStats::inc(&stats.redis_breaker_opened);
        }
    });
    CircuitBreaker::with_clock(
        BreakerConfig {
            failure_threshold: cfg.failure_threshold.max(1),
            success_threshold: 1,
            open_timeout: Duration::from_millis(cfg.cooldown_ms),
            half_open_requests: cfg.pool_size.max(1) as u32,
        },
        Arc::new(SystemClock),
        Some(hook),
    )
}

pub(crate) struct RedisTier {
    backend: Backend,
    mode: RedisMode,
    /// The configured URLs (with passwords): cluster purges dial each
    /// primary with the seed's scheme and credentials.
    seeds: Vec<String>,
    /// Whether the last operation succeeded (for the metrics).
    up: AtomicBool,
    timeout: Duration,
    breaker: Arc<CircuitBreaker>,
    max_capacity: u64,
    used_memory: AtomicU64,
    used_checked: Mutex<Option<Instant>>,
    stats: Arc<CacheStats>,
    urls: Vec<String>,
    /// Where purges are announced.
    channel: PurgeChannel,
    /// Whether `EVAL` was refused: purges are then marked and published in
    /// two steps.
    scripts_refused: AtomicBool,
}

impl std::fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTier")
            .field("mode", &self.mode)
            .field("urls", &self.urls)
            .field("timeout", &self.timeout)
            .field("max_capacity", &self.max_capacity)
            .finish()
    }
}

impl RedisTier {
    pub(crate) fn new(cfg: &RedisCacheConfig, stats: Arc<CacheStats>) -> Result<Self, CacheConfigError> {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let seeds = cfg.endpoints();
        let backend = Backend::connect(cfg, &seeds, timeout)?;
        Ok(Self {
            backend,
            mode: cfg.mode,
            up: AtomicBool::new(false),
            timeout,
            breaker: tier_breaker(cfg, stats.clone()),
            max_capacity: cfg.max_capacity,
            used_memory: AtomicU64::new(0),
            used_checked: Mutex::new(None),
            stats,
            urls: seeds.iter().map(|u| redact_url(u)).collect(),
            channel: PurgeChannel::new(cfg, &seeds),
            scripts_refused: AtomicBool::new(false),
            seeds,
        })
    }

    /// Runs one command within the timeout, through the breaker.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, RedisFailure> {
        let Some(permit) = self.breaker.try_acquire() else {
            CacheStats::inc(&self.stats.redis_skipped);
            return Err(RedisFailure::BreakerOpen);
        };
        let result = self.backend.query::<T>(cmd, timeout).await;
        self.up.store(result.is_ok(), Ordering::Relaxed);
        match &result {
            Ok(_) => permit.success(),
            Err(err) => {
                if matches!(err, RedisFailure::Timeout) {
                    CacheStats::inc(&self.stats.redis_timeouts);
                }
                CacheStats::inc(&self.stats.redis_errors);
                permit.failure();
                if self.breaker.state() == BreakerState::Open {
                    tracing::warn!(redis = ?self.urls, mode = self.mode.as_str(), error = %scrub(err, &self.seeds), "redis cache unavailable, breaker open");
                } else {
                    tracing::debug!(redis = ?self.urls, error = %scrub(err, &self.seeds), "redis cache operation failed");
                }
            }
        }
        result
    }
    /// The deployment mode.
    pub(crate) fn mode(&self) -> RedisMode {
        self.mode
    }

    /// Whether the last operation succeeded and the breaker is closed.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed) && self.breaker.is_usable()
    }

    /// Asks the tier now (bypassing the breaker, within the timeout): a
    /// `PING`, or `CLUSTER INFO` in cluster mode.
    pub(crate) async fn health(&self) -> RedisHealth {
        let mut health = RedisHealth {
            mode: self.mode.as_str(),
            reachable: false,
            endpoints: self.urls.clone(),
            primaries: None,
            cluster_state_ok: None,
            breaker_open: !self.breaker.is_usable(),
        };
        match self.mode {
            RedisMode::Cluster => {
                let info = self
                    .backend
                    .query::<String>(&redis::cmd("CLUSTER").arg("INFO").to_owned(), self.timeout)
                    .await;
                if let Ok(info) = info {
                    let field = |name: &str| {
                        info.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_owned())
                    };
                    let ok = field("cluster_state:").as_deref() == Some("ok");
                    health.cluster_state_ok = Some(ok);
                    health.primaries = field("cluster_size:").and_then(|v| v.parse().ok());
                    health.reachable = true;
                }
            }
            RedisMode::Standalone | RedisMode::Sentinel => {
                let pong = self.backend.query::<String>(&redis::cmd("PING"), self.timeout).await;
                health.reachable = pong.is_ok();
            }
        }
        self.up.store(health.reachable, Ordering::Relaxed);
        health
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

    /// The purge channel, for a listener.
    pub(crate) fn purge_channel(&self) -> PurgeChannel {
        self.channel.clone()
    }

    /// Publishes `message` on the purge channel, marked: one script stores
    /// a new random token in the mark key and publishes the message carrying
    /// it, so a listener that reads the key after a gap sees whether anything
    /// was announced meanwhile. Where scripts are refused (an ACL without
    /// `@scripting`), the key is set, then the message published: two steps.
    /// Returns how many instances were subscribed (this one included). A
    /// cluster forwards a `PUBLISH` to every node but answers with the
    /// subscribers of the node that took it: there the count is
    /// `PUBSUB NUMSUB` summed over every node.
    pub(crate) async fn publish(&self, message: PurgeMessage) -> Result<u64, RedisFailure> {
        let mark = format!("{:032x}", fastrand::u128(..));
        let payload = message.marked(mark.clone()).encode();
        let channel = &self.channel;
        let received: u64 = if self.scripts_refused.load(Ordering::Relaxed) {
            self.set_then_publish(&mark, payload).await?
        } else {
            let eval = redis::cmd("EVAL")
                .arg(MARK_AND_PUBLISH)
                .arg(1)
                .arg(&channel.mark_key)
                .arg(&mark)
                .arg(&channel.name)
                .arg(&payload)
                .to_owned();
            match self.run(&eval, self.timeout).await {
                Ok(n) => n,
                Err(RedisFailure::Redis(e)) if refuses_scripts(&e) => {
                    tracing::warn!(error = %e, "redis refuses scripts: cache purges are marked and published in two steps");
                    self.scripts_refused.store(true, Ordering::Relaxed);
                    self.set_then_publish(&mark, payload).await?
                }
                Err(e) => return Err(e),
            }
        };
        if self.mode != RedisMode::Cluster {
            return Ok(received);
        }
        let numsub = redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel.name).to_owned();
        let counts: std::collections::HashMap<String, u64> = self.run(&numsub, self.timeout).await?;
        Ok(counts.values().sum())
    }

    /// The mark key set, then `payload` published: the order that keeps a
    /// listener from reading the new mark without hearing the message, save
    /// for one subscription lasting less than the time between the two.
    async fn set_then_publish(&self, mark: &str, payload: Vec<u8>) -> Result<u64, RedisFailure> {
        self.run::<()>(redis::cmd("SET").arg(&self.channel.mark_key).arg(mark), self.timeout)
            .await?;
        self.run(redis::cmd("PUBLISH").arg(&self.channel.name).arg(payload), self.timeout)
            .await
    }

    /// The mark of the last purge announced (`None`: none since this Redis
    /// started, or its data was lost), for the purge listener: within the
    /// timeout but past the breaker (a breaker still open after an outage
    /// must not make every instance clear its memory tier).
    pub(crate) async fn purge_mark(&self) -> Result<Option<String>, RedisFailure> {
        self.backend
            .query(redis::cmd("GET").arg(&self.channel.mark_key), self.timeout)
            .await
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
}

/// Whether `EVAL` failed because this user may not run scripts (an ACL
/// without `@scripting`, scripting disabled), not because of what the
/// script does: a user refused the purge channel gets `ERR ... can't
/// publish to the channel` from the script, which two steps would not
/// change (their `PUBLISH` is refused too), so that is reported as is.
fn refuses_scripts(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("ERR" | "NOPERM" | "NOSCRIPT")) && !e.to_string().contains("channel")
}

/// An error's text with every configured URL redacted.
fn scrub(err: &RedisFailure, urls: &[String]) -> String {
    urls.iter()
        .fold(err.to_string(), |e, url| e.replace(url.as_str(), &redact_url(url)))
}

#[cfg(test)]
mod tests {
    use yatagarasu_testkit::redis::Redis;

    use super::*;

    /// Every announcement stores a new mark, read back past the breaker and
    /// kept by purges; a user refused scripts gets the same in two steps.
    #[tokio::test]
    async fn a_publish_stores_a_new_mark_with_or_without_scripts() {
        let server = Redis::start();
        let user = server.cli(&[
            "ACL",
            "SETUSER",
            "noscript",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ]);
        assert_eq!(user.trim(), "OK", "{user}");
        for (url, refused) in [
            (server.url(), false),
            (format!("redis://noscript:pw@127.0.0.1:{}", server.port), true),
        ] {
            let cfg = RedisCacheConfig {
                enabled: true,
                url: Some(url),
                ..RedisCacheConfig::default()
            };
            let tier = RedisTier::new(&cfg, Arc::new(CacheStats::default())).unwrap();
            let message = || PurgeMessage::new("me", super::pubsub::PurgeScope::All, false);
            tier.publish(message()).await.unwrap();
            let first = tier.purge_mark().await.unwrap().expect("no mark stored");
            assert_eq!(first.len(), 32, "{first}");
            assert_eq!(tier.scripts_refused.load(Ordering::Relaxed), refused);
            tier.publish(message()).await.unwrap();
            let second = tier.purge_mark().await.unwrap().expect("no mark stored");
            assert_ne!(first, second);
            assert_eq!(server.cli(&["GET", "yatagarasu:cache:purge:last"]).trim(), second);
            // Under the prefix, but no purge deletes it.
            server.cli(&["SET", "yatagarasu:cache:{0123456789abcdef}1:b/o:k", "x"]);
            assert_eq!(tier.purge_pattern("yatagarasu:cache:*").await.unwrap(), 1);
            assert_eq!(tier.purge_mark().await.unwrap(), Some(second));
        }
    }

    /// A user refused the purge channel (a Redis 7 ACL user gets no
    /// channels unless given `&...`) is told so, and scripts are not
    /// mistaken for the cause.
    #[tokio::test]
    async fn a_user_refused_the_channel_is_not_taken_for_one_refused_scripts() {
        let server = Redis::start();
        let user = server.cli(&["ACL", "SETUSER", "nochan", "on", ">pw", "~*", "resetchannels", "+@all"]);
        assert_eq!(user.trim(), "OK", "{user}");
        let cfg = RedisCacheConfig {
            enabled: true,
            url: Some(format!("redis://nochan:pw@127.0.0.1:{}", server.port)),
            ..RedisCacheConfig::default()
        };
        let tier = RedisTier::new(&cfg, Arc::new(CacheStats::default())).unwrap();
        let err = tier
            .publish(PurgeMessage::new("me", super::pubsub::PurgeScope::All, false))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("channel"), "{err}");
        assert!(
            !tier.scripts_refused.load(Ordering::Relaxed),
            "took a channel refusal for a scripts one"
        );
    }

    #[test]
    fn the_tier_breaker_opens_after_threshold_counts_it_and_closes_on_success() {
        let stats = Arc::new(CacheStats::default());
        let cfg = RedisCacheConfig {
            failure_threshold: 2,
            cooldown_ms: 0,
            ..RedisCacheConfig::default()
        };
        let b = tier_breaker(&cfg, stats.clone());
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(stats.redis_breaker_opened.load(Ordering::Relaxed), 1);
        // cooldown 0: the next operation is a trial; its success closes it.
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
