//! The connection pool of each deployment mode (one server, a Cluster, a
//! Sentinel-managed set), and one command run on a pooled connection.

use std::time::Duration;

use deadpool_redis::redis::{self, RedisError};
use deadpool_redis::{PoolConfig, Runtime, Timeouts};
use tokio::time::timeout_at;

use super::RedisFailure;
use crate::cache::config::{redact_url, CacheConfigError, RedisCacheConfig, RedisMode};

/// The pool of one deployment mode.
pub(super) enum Backend {
    Standalone(deadpool_redis::Pool),
    Cluster(deadpool::managed::Pool<ClusterManager>),
    Sentinel(deadpool::managed::Pool<SentinelManager>),
}

impl Backend {
    /// The pool of `cfg.mode` over `seeds`; waiting for, creating and
    /// recycling a connection each give up after `timeout`.
    pub(super) fn connect(
        cfg: &RedisCacheConfig,
        seeds: &[String],
        timeout: Duration,
    ) -> Result<Self, CacheConfigError> {
        let mut pc = PoolConfig::new(cfg.pool_size.max(1));
        pc.timeouts = Timeouts {
            wait: Some(timeout),
            create: Some(timeout),
            recycle: Some(timeout),
        };
        let key = if cfg.url.is_some() { "redis.url" } else { "redis.urls" };
        // Errors may quote a URL: never with its password.
        let scrub = |e: String| seeds.iter().fold(e, |e, url| e.replace(url.as_str(), &redact_url(url)));
        let backend = match cfg.mode {
            RedisMode::Standalone => {
                // The redis crate cuts every answer at 500 ms and every
                // connect at 1 s by default, under a longer `timeout_ms`
                // (and a large value's extra time): such an operation failed
                // as an error, not a timeout. The pool's timeouts and
                // `query`'s deadline bound each operation instead.
                let manager = deadpool_redis::Manager::new_with_config(seeds[0].as_str(), unbounded_connection())
                    .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?;
                Backend::Standalone(
                    deadpool_redis::Pool::builder(manager)
                        .config(pc)
                        .runtime(Runtime::Tokio1)
                        .build()
                        .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?,
                )
            }
            RedisMode::Cluster => {
                let client =
                    cluster_client(seeds, timeout).map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?;
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
                let client = redis::sentinel::SentinelClient::build(
                    seeds.to_vec(),
                    master,
                    Some(node_connection_info(&seeds[0]).into()),
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?;
                let manager = SentinelManager {
                    client: tokio::sync::Mutex::new(client),
                };
                Backend::Sentinel(
                    deadpool::managed::Pool::builder(manager)
                        .config(pc)
                        .runtime(deadpool::Runtime::Tokio1)
                        .build()
                        .map_err(|e| CacheConfigError::new(key, scrub(e.to_string())))?,
                )
            }
        };
        Ok(backend)
    }

    /// One command on a pooled connection of the mode's pool, within
    /// `timeout` (waiting for the connection included). A connection whose
    /// command failed or timed out is detached rather than returned: after a
    /// Sentinel failover one still open to the demoted primary would answer
    /// `READONLY` for ever, and one stuck on a dead node would be handed to
    /// the next operation. (A cluster connection repairs itself after an
    /// ordinary error; it is only replaced when broken or stuck.)
    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, RedisFailure> {
        fn pool_error<E: std::fmt::Display>(e: deadpool::managed::PoolError<E>) -> RedisFailure {
            match e {
                deadpool::managed::PoolError::Timeout(_) => RedisFailure::Timeout,
                other => RedisFailure::Pool(other.to_string()),
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        match self {
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
                let r = timeout_at(deadline, cmd.query_async::<T>(&mut *conn)).await;
                if !matches!(r, Ok(Ok(_))) {
                    drop(deadpool::managed::Object::take(conn));
                }
                Ok(r.map_err(|_| RedisFailure::Timeout)??)
            }
        }
    }
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
pub(super) struct ClusterManager {
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
    /// detached by [`Backend::query`] instead of coming back here.
    async fn recycle(
        &self,
        _: &mut Self::Type,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        Ok(())
    }
}

/// Connections without the redis crate's own answer (500 ms) and connect
/// (1 s) timeouts, which cut an operation under a longer `timeout_ms` (or a
/// large value's extra time) as an error rather than a timeout: the pool's
/// timeouts and [`Backend::query`]'s deadline bound each operation instead.
fn unbounded_connection() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(None)
        .set_response_timeout(None)
}

/// deadpool's manager of connections to the primary the sentinels name: as
/// deadpool-redis' own (a new connection asks the sentinels, a pooled one is
/// checked with a `PING`), with [`unbounded_connection`]s.
pub(super) struct SentinelManager {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
}

impl deadpool::managed::Manager for SentinelManager {
    type Type = redis::aio::MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<Self::Type, RedisError> {
        let mut client = self.client.lock().await;
        client.get_async_connection_with_config(&unbounded_connection()).await
    }

    async fn recycle(
        &self,
        conn: &mut Self::Type,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<RedisError> {
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(deadpool::managed::RecycleError::message("unexpected answer to PING"))
        }
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

/// Sentinel mode: the data nodes take the user, password and database of the
/// first sentinel URL, and TLS when it is `rediss://`.
pub(super) fn node_connection_info(url: &str) -> deadpool_redis::sentinel::SentinelNodeConnectionInfo {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_client_is_bounded_by_the_operation_timeout() {
        let seeds = vec![
            "redis://127.0.0.1:7001".to_owned(),
            "redis://:pw@127.0.0.1:7002".to_owned(),
        ];
        assert!(cluster_client(&seeds, Duration::from_millis(300)).is_ok());
    }
}
