//! Composes the layers of `middleware/` from a [`Config`]: one object stack
//! per bucket behind the prefix router, plus `/health` and `/ready` ([`build`]).
//! The edge every request crosses first, whatever config is live, is in
//! [`crate::edge`]; the access log in [`crate::access_log`].
//!
//! A build may inherit from the running app ([`Inherited`]): the circuit
//! breaker and health of every replica whose settings did not change, the
//! cache store when `cache:` did not change, the drain flag and the auth
//! counters. That is what lets a reload keep state (`inherit`). The
//! upstream HTTP clients are in `client`; a bucket's CORS layer in `cors`.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower::retry::budget::TpsBudget;
use tower::util::Either;
use tower::{Layer, Service, ServiceBuilder};
use tower_http::cors::CorsLayer;
use yatagarasu_middleware::auth::{AuthLayer, AuthStats, SigV4Layer};
use yatagarasu_middleware::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer, SystemClock, TransitionHook};
use yatagarasu_middleware::bulkhead::BulkheadLayer;
use yatagarasu_middleware::cache::{CacheLayer, CacheStore};
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::failover::{Failover, Replica};
use yatagarasu_middleware::health::{Health, HealthCheck, ProbeObserver, ReplicaHealth};
use yatagarasu_middleware::routing::{PrefixError, PrefixRouter};
use yatagarasu_middleware::s3api::{ListBuckets, S3Api, TokenKey};

use crate::config::{CacheConfig, Config};
pub use crate::edge::edge;
use crate::metrics::Metrics;

mod client;
mod cors;
mod inherit;
mod list_buckets;

pub use client::http_client;
use client::upstream;
use cors::BucketsCors;
pub use cors::CorsAnswer;
pub use inherit::{Inherited, ReplicaKey, ReplicaSlot};

/// Why the service could not be assembled from a (validated) config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The HTTP client could not be created.
    #[error("cannot create the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// A replica's URL could not be formed.
    #[error("buckets[{bucket}] replica '{replica}': {message}")]
    Replica {
        /// Bucket index.
        bucket: usize,
        /// Replica name.
        replica: String,
        /// What went wrong.
        message: String,
    },
    /// A block of the config cannot be used (message names the key).
    #[error("{0}")]
    Config(String),
    /// A prefix could not be mounted.
    #[error("buckets[{0}].path_prefix: {1}")]
    Prefix(usize, String),
}

pub use crate::readiness::ReadyState;
use crate::readiness::{BucketReadiness, ReplicaReadiness};

/// The assembled service.
pub struct App {
    /// The proxy's HTTP service for this config: `/health`, `/ready` and the
    /// buckets (without the edge layers of [`edge`]).
    pub router: Router,
    /// The buckets alone (what `router` falls back to), for the request
    /// path: called directly, it saves axum's routing and boxing.
    pub buckets: PrefixRouter,
    /// What `/ready` reads; drained on shutdown.
    pub ready: Arc<ReadyState>,
    /// The shared cache, when configured (for purges).
    pub cache: Option<CacheStore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Every replica, in config order.
    pub replicas: Vec<ReplicaSlot>,
    auth_stats: Arc<AuthStats>,
    cache_config: Option<CacheConfig>,
    /// The CORS of the edge's own answers, per bucket with a `cors` block.
    cors: BucketsCors,
}

impl App {
    /// The bucket `req` goes to and, for a browser's request to a bucket
    /// with a `cors` block, the CORS headers of the answers the edge makes
    /// for it (see [`crate::edge::Buckets`]).
    pub fn matched(&self, req: &Request<Body>) -> crate::edge::Matched {
        let bucket = self.buckets.matched(req);
        let cors = self.cors.answer(bucket.as_ref(), req);
        crate::edge::Matched { bucket, cors }
    }

    /// What a build of the next config may take over from this one.
    pub fn inherited(&self) -> Inherited {
        Inherited {
            draining: self.ready.draining_flag(),
            auth_stats: self.auth_stats.clone(),
            replicas: self.replicas.iter().map(|r| (r.key.clone(), r.clone())).collect(),
            cache: self.cache_config.clone().zip(self.cache.clone()),
        }
    }
}

/// The key of listing continuation tokens: `server.s3_api.token_key`, else
/// the process's random key (with a warning, once: behind a load balancer,
/// page 2 of a listing must then reach the instance that served page 1).
fn listing_token_key(config: &Config) -> TokenKey {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match &config.server.s3_api.token_key {
        Some(key) => TokenKey::new(key.expose().trim().as_bytes()),
        None => {
            WARNED.call_once(|| {
                tracing::warn!(
                    "server.s3_api.token_key is not set: listing continuation tokens use a random key of this \
                     process, so a paginated listing fails (InvalidArgument) when its next page reaches another \
                     instance or this one after a restart; set the same secret on every instance"
                )
            });
            TokenKey::process()
        }
    }
}

/// Whether the memory tier keeps large bodies in sealed memfds, sent with
/// `sendfile(2)` (`cache.memory.sendfile_min_size`; Linux only).
pub fn sendfile_on(cache: &CacheConfig) -> bool {
    cfg!(target_os = "linux") && cache.memory.max_capacity > 0 && cache.memory.sendfile_min_size > 0
}

/// `store` with the memfd placement when [`sendfile_on`].
fn with_sendfile(store: CacheStore, cache: &CacheConfig) -> CacheStore {
    #[cfg(target_os = "linux")]
    if sendfile_on(cache) {
        let min = crate::zero_copy::placed_min_size(cache.memory.sendfile_min_size);
        return store.with_body_placement(Arc::new(crate::zero_copy::MemfdPlacement::new(min)));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cache;
    store
}

/// Mounts a bucket's stack under `prefix`, behind its CORS layer if any.
fn mount<S>(
    router: PrefixRouter,
    prefix: &str,
    name: String,
    cors: Option<CorsLayer>,
    stack: S,
) -> Result<PrefixRouter, PrefixError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    // Two mounts rather than `option_layer`: its `Either` would cost every
    // request of a bucket without CORS a branch and a bigger future (issue 13).
    match cors {
        Some(cors) => router.mount(prefix, name, cors.layer(stack)),
        None => router.mount(prefix, name, stack),
    }
}

/// Builds the proxy from a validated config: per bucket, CORS -> auth -> cache ->
/// failover over per-replica (breaker -> bulkhead -> presigned fetch) stacks.
pub async fn build(config: &Config, metrics: Arc<Metrics>) -> Result<App, BuildError> {
    build_with(config, metrics, Inherited::default()).await
}

/// [`build`], taking over what `inherited` holds for unchanged replicas and
/// an unchanged cache. Nothing is started and no gauge is set: the caller
/// does that once it decides to use the app.
pub async fn build_with(config: &Config, metrics: Arc<Metrics>, inherited: Inherited) -> Result<App, BuildError> {
    let client = http_client(config)?;
    let cache_store = match (&config.cache, inherited.cache) {
        (Some(cache), Some((old, store))) if *cache == old => Some(store),
        (Some(cache), _) => Some(with_sendfile(
            CacheStore::new(cache).map_err(|e| {
                BuildError::Config(format!(
                    "cache.{}: {}",
                    e.key.strip_prefix("cache.").unwrap_or(e.key),
                    e.message
                ))
            })?,
            cache,
        )),
        (None, _) => None,
    };
    let auth_stats = inherited.auth_stats;
    // One retry budget for every bucket of this config (a reload builds a new
    // one): a full outage cannot multiply load.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2));
    let mut router = PrefixRouter::new();
    // `GET /`: the buckets S3 clients can name (`aws s3 ls`), each behind its own auth.
    let mut listing = ListBuckets::new();
    // Whether a bucket verifies SigV4, the only reader of `OriginalUri`.
    let mut any_sigv4 = false;
    if let Some(domain) = &config.server.s3_domain {
        router = router.with_s3_domain(domain);
    }
    let tokens = listing_token_key(config);
    let mut ready = ReadyState::new(inherited.draining)
        .with_require_replicas(config.server.readiness.require_replicas)
        .with_cache(cache_store.clone());
    let mut slots = Vec::new();
    let mut edge_cors = BucketsCors::default();
    for (i, bucket) in config.buckets.iter().enumerate() {
        let hc = bucket.s3.health_check.as_ref().unwrap_or(&config.health_check);
        let bucket_name: Arc<str> = bucket.name.clone().into();
        let mut replicas = Vec::new();
        let mut readiness = Vec::new();
        for r in bucket.s3.resolved_replicas() {
            let up = upstream(config, &client, i, &r).await?;
            let key = ReplicaKey::new(config, i, &r, hc);
            let previous = inherited.replicas.get(&key);
            let health = previous.map_or_else(ReplicaHealth::new, |p| p.health.clone());
            let retired = previous.map_or_else(Arc::default, |p| p.retired.clone());
            let hook = {
                // Shared, not copied per attempt.
                let (metrics, b, name): (_, Arc<str>, Arc<str>) =
                    (metrics.clone(), Arc::from(&*bucket_name), Arc::from(&*r.name));
                let retired = retired.clone();
                Arc::new(move |state: BreakerState| {
                    if !retired.load(Ordering::SeqCst) {
                        metrics.breaker_state(&b, &name, state);
                    }
                    match state {
                        BreakerState::Open => tracing::warn!(bucket = %b, replica = %name, "circuit breaker opened"),
                        BreakerState::HalfOpen => {
                            tracing::info!(bucket = %b, replica = %name, "circuit breaker half-open")
                        }
                        BreakerState::Closed => tracing::info!(bucket = %b, replica = %name, "circuit breaker closed"),
                    }
                }) as TransitionHook
            };
            let breaker = match previous {
                Some(p) => p.breaker.clone(),
                None => CircuitBreaker::with_clock(
                    bucket.s3.circuit_breaker.to_breaker(),
                    Arc::new(SystemClock),
                    Some(hook),
                ),
            };
            let mut check = None;
            if hc.enabled {
                let (metrics, b) = (metrics.clone(), bucket_name.clone());
                let observer: ProbeObserver = Arc::new(
                    move |replica: &str, previous: Health, result: &Result<Duration, FetchError>| {
                        let healthy = result.is_ok();
                        if previous == Health::Unknown || (previous == Health::Healthy) != healthy {
                            metrics.replica_health(&b, replica, healthy);
                        }
                    },
                );
                check = Some(
                    HealthCheck::new(up.clone(), health.clone())
                        .with_interval(Duration::from_secs(hc.interval_seconds))
                        .with_timeout(Duration::from_secs(hc.timeout_seconds))
                        .with_path(&hc.path)
                        .with_breaker(breaker.clone())
                        .with_observer(observer),
                );
            }
            slots.push(ReplicaSlot {
                key,
                breaker: breaker.clone(),
                health: health.clone(),
                check,
                credentials: up.credentials().clone(),
                retired,
            });
            readiness.push(ReplicaReadiness {
                name: r.name.clone(),
                health: health.clone(),
                breaker: breaker.clone(),
                checked: hc.enabled,
            });
            // Innermost, so only attempts that reach the replica are timed
            // (not those the breaker or the bulkhead turn away).
            let timed = {
                let (metrics, b, name) = (metrics.clone(), bucket_name.clone(), r.name.clone());
                move |answer| {
                    let (metrics, b, name, start) = (metrics.clone(), b.clone(), name.clone(), Instant::now());
                    async move {
                        let answer = answer.await;
                        metrics.replica_answered(&b, &name, start.elapsed());
                        answer
                    }
                }
            };
            // One concrete type for every replica (no box per attempt).
            let stack = ServiceBuilder::new()
                .layer(CircuitBreakerLayer::new(breaker.clone()))
                .layer(BulkheadLayer::new(r.max_concurrent_requests))
                // A trace span per attempt, its context sent upstream (issue 16).
                .layer(crate::telemetry::ReplicaSpanLayer::new(
                    bucket_name.clone(),
                    r.name.clone(),
                ))
                .map_future(timed)
                .service(up);
            replicas.push(
                Replica::new(r.name.clone(), stack, breaker, health)
                    .with_priority(r.priority)
                    .with_weight(r.weight)
                    .with_hedge(r.hedge),
            );
        }
        let retry = &bucket.s3.retry;
        let failover = Failover::builder(bucket_name.clone(), replicas)
            .events(metrics.clone())
            .budget(budget.clone())
            .retries(
                retry.max_attempts.saturating_sub(1),
                Duration::from_millis(retry.initial_interval),
                Duration::from_millis(retry.max_interval),
            )
            .failover_on_404(bucket.s3.failover_on_404)
            .hedge(bucket.s3.hedge.to_hedge(&bucket.s3.replicas))
            .latency_aware(bucket.s3.latency_aware.to_latency())
            .build();
        let bucket_cache = bucket.cache.clone().unwrap_or_default();
        let uncached = failover.clone();
        // Concrete types down to the replicas: the cache is an optional layer.
        let objects = ServiceBuilder::new()
            .option_layer(
                cache_store
                    .as_ref()
                    .map(|store| CacheLayer::new(store.clone(), bucket_name.clone()).with_bucket_config(&bucket_cache)),
            )
            .service(failover);
        // The S3 API: listings and bucket calls, object reads (see docs/s3-tools.md).
        let s3_name = bucket
            .path_prefix
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&bucket.name);
        let region = bucket.s3.resolved_replicas().first().map(|r| r.region.clone());
        let http = S3Api::new(s3_name, objects, uncached)
            .with_region(region.unwrap_or_else(|| "us-east-1".into()))
            .with_token_key(tokens.clone())
            .with_listing_cache(Duration::from_secs(bucket.s3.listing_cache_ttl_seconds));
        let auth = bucket.auth.clone().unwrap_or_default();
        let jwt = auth
            .effective(config.jwt.as_ref())
            .map_err(|e| BuildError::Config(format!("buckets[{i}].{e}")))?;
        // Each bucket mounts its own concrete stack (the router boxes it once).
        let plain = http;
        let jwt_layer = match jwt {
            Some(jwt) => Some(
                AuthLayer::from_config_async(jwt)
                    .await
                    .map_err(|e| BuildError::Config(format!("buckets[{i}].auth.{e}")))?
                    .with_stats(auth_stats.clone()),
            ),
            None => None,
        };
        let sigv4_layer = match auth.effective_sigv4() {
            Some(sigv4) => Some(
                SigV4Layer::from_config(sigv4)
                    .map_err(|e| BuildError::Config(format!("buckets[{i}].{e}")))?
                    .with_stats(auth_stats.clone()),
            ),
            None => None,
        };
        let (prefix, name) = (&bucket.path_prefix, bucket.name.clone());
        any_sigv4 |= sigv4_layer.is_some();
        listing = list_buckets::add(listing, prefix, sigv4_layer.as_ref(), jwt_layer.as_ref());
        // CORS outside auth and the cache: preflights carry no credentials,
        // and every answer (a hit, a 401, a 404, a 502) gets the headers.
        let token_headers = cors::token_headers(jwt);
        let cors = bucket.cors.as_ref().map(|block| cors::layer(block, &token_headers));
        if let Some(block) = &bucket.cors {
            // The same headers on the edge's 429/503/414/431 for this bucket.
            edge_cors.push(&bucket.name, block);
        }
        router = match (sigv4_layer, jwt_layer) {
            (None, None) => mount(router, prefix, name, cors, plain),
            (None, Some(jwt)) => mount(router, prefix, name, cors, jwt.layer(plain)),
            (Some(sigv4), None) => mount(router, prefix, name, cors, sigv4.layer(plain)),
            // SigV4-signed clients; a Bearer token still goes to the JWT layer.
            (Some(sigv4), Some(jwt)) => {
                let bearer = Either::Right(jwt.layer(plain.clone()));
                mount(
                    router,
                    prefix,
                    name,
                    cors,
                    sigv4.with_unsigned(Either::Left(plain), bearer),
                )
            }
        }
        .map_err(|e| BuildError::Prefix(i, e.to_string()))?;
        ready.push_bucket(BucketReadiness {
            name: bucket.name.clone(),
            replicas: readiness,
        });
    }
    // No bucket layer of the binary reads `MatchedBucket`; the edge asks
    // the router for it (`PrefixRouter::matched`) for the access log.
    let router = router
        .with_list_buckets(listing)
        .with_original_uri(any_sigv4)
        .with_matched_bucket_on_requests(false)
        .with_matched_bucket_on_responses(false);
    crate::telemetry::set_routes(config.buckets.iter().map(|b| b.path_prefix.as_str()));
    if let Some(store) = &cache_store {
        metrics.watch_cache(store.clone());
    }
    metrics.watch_auth(auth_stats.clone());
    let ready = Arc::new(ready);
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(crate::readiness::ready_handler))
        // A wrong method on them gets a body saying so (axum's is empty).
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({ "error": "method not allowed: /health and /ready answer GET and HEAD" })),
            )
        })
        .with_state(ready.clone())
        .fallback_service(router.clone());
    Ok(App {
        router: app,
        buckets: router,
        ready,
        cache: cache_store,
        metrics,
        config: Arc::new(config.clone()),
        replicas: slots,
        auth_stats,
        cache_config: config.cache.clone(),
        cors: edge_cors,
    })
}
