//! Two-tier object cache: an in-process memory tier per proxy instance, and a
//! Redis/Valkey tier shared by all instances.
//!
//! [`CacheLayer`] wraps an object-level service (the replicas, a failover) in
//! a [`Cache`], itself an object-level service. A request is answered from
//! memory, else from Redis (whose copy then fills memory), else by the inner
//! service, whose `200` answer is stored *while it streams* to the client.
//!
//! - **What is stored**: complete `200` answers to plain `GET`s, up to
//!   `max_item_size`, not marked `Cache-Control: no-store`, `private` or
//!   `no-cache`; the body and [`STORED_HEADERS`] (plus `x-amz-meta-*`).
//!   Anything else streams through (`X-Cache: BYPASS`).
//! - **From a cached object** the cache answers `HEAD`, single byte ranges
//!   (`206`, or `416` with `Content-Range: bytes */len`), `If-Range` and the
//!   RFC 9110 preconditions, as S3 would.
//! - **On a miss**, `Range` and `HEAD` requests, and requests with
//!   preconditions, go to the inner service unchanged; only a `200` answer
//!   to a plain or conditional `GET` is stored (a `304`/`206` never is).
//! - **Revalidating clients warm the cache**: when a conditional `GET`
//!   (no `Range`) misses and its answer is a `304` or `412` (or a `200` that
//!   fails the preconditions, from a replica that ignores them: the cache
//!   then answers the `304`/`412` itself), the object is filled in the
//!   background: fetched again without the preconditions, or the `200`'s
//!   body read to its end. That fill is the object's fill in flight
//!   (concurrent plain misses wait for it), obeys every rule of a fill, and
//!   at most 8 run at once per store (a revalidation finding them busy
//!   starts none). Counted in `revalidation_fills` and
//!   `revalidation_fills_skipped`.
//! - **`X-Cache`** on every answer: `HIT-MEMORY`, `HIT-REDIS`, `MISS`,
//!   `STALE` (inner service failed, copy past its TTL but within
//!   `stale_seconds`), `BYPASS`.
//! - **Coalescing**: concurrent plain `GET` misses of one object make one
//!   upstream request; the others wait (up to `coalesce_timeout_ms`) and are
//!   served from the stored copy, or fetch for themselves if the fill failed.
//! - **Redis never fails a request**: each operation has a short timeout and
//!   a small breaker; errors, timeouts and foreign values are misses. The
//!   pool reconnects by itself. The shared tier is one server, a Redis/Valkey
//!   Cluster or a Sentinel-managed set (`cache.redis.mode`).
//! - **Integrity**: every Redis value carries an XXH3 checksum, verified on
//!   read; a flipped bit or a truncated value is a miss, deleted and counted
//!   (`redis_corrupt`).
//! - **Keys**: `key_prefix` + `{hash tag}` + bucket length + `:` + bucket +
//!   `/` + kind + `:` + key; one object's entries share the hash tag.
//! - **Where bodies live**: on the heap, or in memory a [`BodyPlacement`]
//!   provides ([`CacheStore::with_body_placement`]): the binary keeps large
//!   ones in sealed memfds that its connections send with `sendfile(2)`.
//! - **Purge** with [`CacheStore::purge_object`], [`CacheStore::purge_bucket`],
//!   [`CacheStore::purge_all`]; with Redis, a purge is announced to every
//!   instance sharing it, which purges its own memory tier ([`Broadcast`]);
//!   counters in [`CacheStats`].
//!
//! # Example
//!
//! ```no_run
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::cache::{CacheConfig, CacheLayer, CacheStore};
//! use yatagarasu_middleware::object::ObjectService;
//! # use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let endpoint = "http://127.0.0.1:9000".parse()?;
//! # let replica = S3Upstream::new("minio", s3_bucket(Some(&endpoint), "data", "us-east-1")?, reqwest::Client::new());
//! let mut config = CacheConfig::default();
//! config.redis.enabled = true;
//! config.redis.url = Some("redis://127.0.0.1:6379".into());
//! let store = CacheStore::new(&config)?; // one per process, shared by buckets
//!
//! let objects = ServiceBuilder::new()
//!     .layer(CacheLayer::new(store.clone(), "data"))
//!     .service(replica);
//! let app: axum::Router = axum::Router::new().nest_service("/data", ObjectService::new(objects));
//!
//! // Admin: purge one object, a bucket, or everything (both tiers).
//! # async fn purge(store: CacheStore) -> Result<(), Box<dyn std::error::Error>> {
//! store.purge_object("data", "reports/2024.pdf").await?;
//! store.purge_bucket("data").await?;
//! store.purge_all().await?;
//! println!("{:?}", store.snapshot());
//! # Ok(()) }
//! # Ok(()) }
//! ```

mod body;
pub mod config;
mod entry;
mod future;
mod layer;
mod placement;
mod redis;
mod revalidate;
mod serve;
mod service;
mod slice;
mod stats;
mod store;

pub use crate::http::headers::X_CACHE;
pub use body::TeeBody;
pub use config::{BucketCacheConfig, CacheConfig, CacheConfigError, MemoryCacheConfig, RedisCacheConfig, RedisMode};
pub use entry::{CachedObject, STORED_HEADERS};
pub use future::ResponseFuture;
pub use layer::CacheLayer;
pub use placement::{BodyPlacement, PlacedBodyWriter};
pub use redis::RedisHealth;
pub use service::Cache;
pub use stats::{CacheStats, CacheStatsSnapshot};
pub use store::{Broadcast, CacheStore, PurgeError};
