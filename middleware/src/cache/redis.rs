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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_redis::redis::{self, RedisError};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use serde::Serialize;
use tokio::time::timeout_at;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker, SystemClock, TransitionHook};

use super::config::{redact_url, CacheConfigError, RedisCacheConfig, RedisMode};
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
    #[error("redis cluster: {0}")]
    Topology(String),
}

/// The pool of one deployment mode.
enum Backend {
    Standalone(deadpool_redis::Pool),
    Cluster(deadpool::managed::Pool<ClusterManager>),
    Sentinel(deadpool_redis::sentinel::Pool),
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

/// deadpool's manager of cluster connections, built on a [`ClusterClient`]
/// of our own. deadpool-redis's manager cannot be given one, and its
/// recycle check sends `PING`, which the cluster client fans out to every
/// primary of its slot map: after a primary dies, the client keeps that node
/// in its map (an I/O error only makes it reconnect to the node, and reads of
/// the node's slots go on to the promoted replica without a `MOVED`), so every
/// recycle failed, every pooled connection was thrown away, and each new one
/// needed a full cluster handshake within the operation timeout, which a
/// loaded host does not make: the tier answered nothing but misses.
///
/// [`ClusterClient`]: redis::cluster::ClusterClient
struct ClusterManager {
    client: redis::cluster::ClusterClient,
}

impl deadpool::managed::Manager for ClusterManager {
    type Type = redis::cluster_async::ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<Self::Type, RedisError> {
        self.client.get_async_connection().await
    }

    /// No check: the cluster client reconnects node by node and refreshes
    /// its slot map by itself; a connection that timed out or broke is
    /// detached by [`RedisTier::query`] instead of coming back here.
    async fn recycle(
        &self,
        _: &mut Self::Type,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        Ok(())
    }
}

/// The cluster client, bounded by the operation `timeout`: each attempt
/// (connect or answer) gives up within it, and retries wait milliseconds,
/// not the crate's default of 1.28 s or more, so a request routed to a dead
/// node fails (and makes the client refresh its slots) before the operation
/// times out, instead of sleeping past it.
fn cluster_client(seeds: &[String], timeout: Duration) -> Result<redis::cluster::ClusterClient, RedisError> {
    let wait_ms = (timeout.as_millis() as u64 / 4).max(2);
    redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(2)
        .min_retry_wait(1)
        .max_retry_wait(wait_ms)
        .build()
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
        let mut pc = PoolConfig::new(cfg.pool_size.max(1));
        pc.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        let seeds = cfg.endpoints();
        let key = if cfg.url.is_some() { "redis.url" } else { "redis.urls" };
        // Errors may quote a URL: never with its password.
        let scrub = |e: String| seeds.iter().fold(e, |e, url| e.replace(url.as_str(), &redact_url(url)));
        let backend = match cfg.mode {
            RedisMode::Standalone => {
                let mut c = deadpool_redis::Config::from_url(seeds[0].clone());
                c.pool = Some(pc);
                Backend::Standalone(
                    c.create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?,
                )
            }
            RedisMode::Cluster => {
                let client =
                    cluster_client(&seeds, timeout).map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?;
                Backend::Cluster(
                    deadpool::managed::Pool::builder(ClusterManager { client })
                        .config(pc)
                        .runtime(deadpool::Runtime::Tokio1)
                        .build()
                        .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?,
                )
            }
            RedisMode::Sentinel => {
                let master = cfg.sentinel_master.clone().unwrap_or_default();
                let mut c = deadpool_redis::sentinel::Config::from_urls(
                    seeds.clone(),
                    master,
                    deadpool_redis::sentinel::SentinelServerType::Master,
                )
                .with_node_connection_info(Some(node_connection_info(&seeds[0])));
                c.pool = Some(pc);
                Backend::Sentinel(
                    c.create_pool(Some(Runtime::Tokio1))
                        .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?,
                )
            }
        };
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
            seeds,
        })
    }

    /// Runs one command within the timeout, through the breaker.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, RedisFailure> {
        let Some(permit) = self.breaker.try_acquire() else {
            CacheStats::inc(&self.stats.redis_skipped);
            return Err(RedisFailure::BreakerOpen);
        };
        let result = self.query::<T>(cmd, timeout).await;
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

    /// One command on a pooled connection of the mode's pool, within
    /// `timeout` (waiting for the connection included). A connection whose
    /// command failed or timed out is detached rather than returned: after a
    /// Sentinel failover one still open to the demoted primary would answer
    /// `READONLY` for ever, and one stuck on a dead node would be handed to
    /// the next operation. (A cluster connection repairs itself after an
    /// ordinary error; it is only replaced when broken or stuck.)
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, RedisFailure> {
        fn pool_error<E: std::fmt::Display>(e: deadpool::managed::PoolError<E>) -> RedisFailure {
            match e {
                deadpool::managed::PoolError::Timeout(_) => RedisFailure::Timeout,
                other => RedisFailure::Pool(other.to_string()),
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match &self.backend {
            Backend::Standalone(pool) => {
                let mut conn = timeout_at(deadline, pool.get())
                    .await
                    .map_err(|_| RedisFailure::Timeout)?
                    .map_err(pool_error)?;
                let r = timeout_at(deadline, cmd.query_async::<T>(&mut conn)).await;
                if !matches!(r, Ok(Ok(_))) {
                    drop(deadpool_redis::Connection::take(conn));
                }
                Ok(r.map_err(|_| RedisFailure::Timeout)??)
            }
            Backend::Cluster(pool) => {
                let mut conn = timeout_at(deadline, pool.get())
                    .await
                    .map_err(|_| RedisFailure::Timeout)?
                    .map_err(pool_error)?;
                let r = timeout_at(deadline, cmd.query_async::<T>(&mut *conn)).await;
                let stuck = match &r {
                    Ok(Ok(_)) => false,
                    Ok(Err(e)) => e.is_unrecoverable_error(),
                    Err(_) => true,
                };
                if stuck {
                    drop(deadpool::managed::Object::take(conn));
                }
                Ok(r.map_err(|_| RedisFailure::Timeout)??)
            }
            Backend::Sentinel(pool) => {
                let mut conn = timeout_at(deadline, pool.get())
                    .await
                    .map_err(|_| RedisFailure::Timeout)?
                    .map_err(pool_error)?;
                let r = timeout_at(deadline, cmd.query_async::<T>(&mut conn)).await;
                if !matches!(r, Ok(Ok(_))) {
                    drop(deadpool_redis::sentinel::Connection::take(conn));
                }
                Ok(r.map_err(|_| RedisFailure::Timeout)??)
            }
        }
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
                let pong = self.query::<String>(&redis::cmd("PING"), self.timeout).await;
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
            if let Ok(info) = self
                .run::<redis::Value>(redis::cmd("INFO").arg("memory"), self.timeout)
                .await
            {
                if let Some(used) = used_memory_of(&info) {
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
        if self.mode == RedisMode::Cluster {
            return self.purge_cluster(pattern).await;
        }
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

impl RedisTier {
    /// Cluster purge: `SCAN` runs per node, so every primary listed by
    /// `CLUSTER NODES` is dialled directly (with the seed's scheme and
    /// credentials) and scanned; keys go one `UNLINK` each (keys of
    /// different slots cannot share one), pipelined.
    async fn purge_cluster(&self, pattern: &str) -> Result<u64, RedisFailure> {
        let nodes: String = self.run(redis::cmd("CLUSTER").arg("NODES"), self.timeout * 4).await?;
        let primaries = cluster_primaries(&nodes);
        if primaries.is_empty() {
            return Err(RedisFailure::Topology("no primary in CLUSTER NODES".into()));
        }
        let seed = url::Url::parse(&self.seeds[0]).map_err(|e| RedisFailure::Topology(e.to_string()))?;
        let mut deleted = 0;
        for (host, port) in primaries {
            let mut url = seed.clone();
            if url.set_host(Some(&host)).is_err() || url.set_port(Some(port)).is_err() {
                return Err(RedisFailure::Topology(format!("bad node address {host}:{port}")));
            }
            let op = async {
                let client = redis::Client::open(url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let mut cursor: u64 = 0;
                let mut n = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PURGE_BATCH)
                        .query_async(&mut conn)
                        .await?;
                    if !keys.is_empty() {
                        let mut pipe = redis::pipe();
                        for k in &keys {
                            pipe.cmd("UNLINK").arg(k).ignore();
                        }
                        pipe.query_async::<()>(&mut conn).await?;
                        n += keys.len() as u64;
                    }
                    if next == 0 {
                        return Ok::<u64, RedisError>(n);
                    }
                    cursor = next;
                }
            };
            deleted += tokio::time::timeout(self.timeout * 40, op)
                .await
                .map_err(|_| RedisFailure::Timeout)??;
        }
        Ok(deleted)
    }
}

/// `(host, port)` of every primary in `CLUSTER NODES` output that is not
/// marked failed.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail") || *f == "noaddr") {
                return None;
            }
            // ip:port@cport[,hostname]
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Sentinel mode: the data nodes take the user, password and database of the
/// first sentinel URL, and TLS when it is `rediss://`.
fn node_connection_info(url: &str) -> deadpool_redis::sentinel::SentinelNodeConnectionInfo {
    let parsed = url::Url::parse(url).ok();
    let redis_info = parsed.as_ref().map(|u| {
        let db = u.path().trim_start_matches('/').parse().unwrap_or(0);
        deadpool_redis::RedisConnectionInfo {
            db,
            username: (!u.username().is_empty()).then(|| decode(u.username())),
            password: u.password().map(decode),
            protocol: deadpool_redis::ProtocolVersion::RESP2,
        }
    });
    let tls = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "rediss" | "valkeys"))
        .then_some(deadpool_redis::sentinel::TlsMode::Secure);
    deadpool_redis::sentinel::SentinelNodeConnectionInfo {
        tls_mode: tls,
        redis_connection_info: redis_info,
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// An error's text with every configured URL redacted.
fn scrub(err: &RedisFailure, urls: &[String]) -> String {
    urls.iter()
        .fold(err.to_string(), |e, url| e.replace(url.as_str(), &redact_url(url)))
}

/// `used_memory` from an `INFO memory` reply: one node's text, or (cluster
/// mode, where `INFO` goes to every primary) the sum over the per-node map.
fn used_memory_of(info: &redis::Value) -> Option<u64> {
    match info {
        redis::Value::BulkString(b) => parse_used_memory(&String::from_utf8_lossy(b)),
        redis::Value::SimpleString(s) => parse_used_memory(s),
        redis::Value::VerbatimString { text, .. } => parse_used_memory(text),
        redis::Value::Map(nodes) => nodes
            .iter()
            .map(|(_, v)| used_memory_of(v))
            .try_fold(0u64, |sum, n| n.map(|n| sum.saturating_add(n))),
        _ => None,
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
        let node = |n: &str| redis::Value::BulkString(format!("# Memory\r\nused_memory:{n}\r\n").into_bytes());
        let cluster = redis::Value::Map(vec![
            (redis::Value::SimpleString("127.0.0.1:7001".into()), node("100")),
            (redis::Value::SimpleString("127.0.0.1:7002".into()), node("23")),
        ]);
        assert_eq!(used_memory_of(&cluster), Some(123));
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

    #[test]
    fn the_cluster_client_is_bounded_by_the_operation_timeout() {
        let seeds = vec![
            "redis://127.0.0.1:7001".to_owned(),
            "redis://:pw@127.0.0.1:7002".to_owned(),
        ];
        assert!(cluster_client(&seeds, Duration::from_millis(300)).is_ok());
    }

    #[test]
    fn finds_live_primaries_in_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003,host-c master,fail - 0 0 3 connected
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
";
        assert_eq!(
            cluster_primaries(nodes),
            vec![("127.0.0.1".to_owned(), 7001), ("127.0.0.1".to_owned(), 7002)]
        );
    }

    #[test]
    fn escapes_glob() {
        assert_eq!(glob_escape("a*b?[c]"), "a\\*b\\?\\[c\\]");
    }
}
