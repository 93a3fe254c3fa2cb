//! Composes the layers of `middleware/` from a [`Config`]: one object stack
//! per bucket behind the prefix router, plus `/health` and `/ready` ([`build`]).
//! The edge every request crosses first, whatever config is live, is in
//! [`crate::edge`]; the access log in [`crate::access_log`].
//!
//! A build may inherit from the running app ([`Inherited`]): the circuit
//! breaker and health of every replica whose settings did not change, the
//! cache store when `cache:` did not change, the drain flag and the auth
//! counters. That is what lets a reload keep state.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusty_s3::Credentials;
use serde_json::json;
use std::convert::Infallible;
use tokio::task::JoinHandle;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder};
use yatagarasu_middleware::auth::{AuthLayer, AuthStats};
use yatagarasu_middleware::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer, SystemClock, TransitionHook};
use yatagarasu_middleware::bulkhead::BulkheadLayer;
use yatagarasu_middleware::cache::{CacheLayer, CacheStore};
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::failover::{Failover, Replica};
use yatagarasu_middleware::health::{Health, HealthCheck, ProbeObserver, ReplicaHealth};
use yatagarasu_middleware::object::{ObjectRequest, ObjectService};
use yatagarasu_middleware::routing::PrefixRouter;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};

use crate::config::{CacheConfig, Config, HealthCheckConfig, ResolvedReplica};
pub use crate::edge::edge;
use crate::metrics::Metrics;

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

/// What `/ready` reports on.
#[derive(Debug, Default)]
pub struct ReadyState {
    buckets: Vec<BucketReadiness>,
    /// Shared by every app built from one process: a drain started on one
    /// config holds for the configs reloaded after it.
    draining: Arc<AtomicBool>,
}

#[derive(Debug)]
struct BucketReadiness {
    name: String,
    replicas: Vec<ReplicaReadiness>,
}

#[derive(Debug)]
struct ReplicaReadiness {
    name: String,
    health: Arc<ReplicaHealth>,
    breaker: Arc<CircuitBreaker>,
    checked: bool,
}

impl ReadyState {
    /// Makes `/ready` answer 503 from now on (graceful drain).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn replica_usable(r: &ReplicaReadiness) -> bool {
        if r.breaker.state() == BreakerState::Open {
            return false;
        }
        match r.health.health() {
            Health::Healthy => true,
            Health::Unhealthy => false,
            Health::Unknown => !r.checked,
        }
    }

    /// Whether every bucket has a usable replica and no drain is under way.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst)
            && self.buckets.iter().all(|b| b.replicas.iter().any(Self::replica_usable))
    }

    fn report(&self) -> serde_json::Value {
        let buckets: serde_json::Map<String, serde_json::Value> = self
            .buckets
            .iter()
            .map(|b| {
                let replicas: Vec<_> = b
                    .replicas
                    .iter()
                    .map(|r| {
                        json!({
                            "name": r.name,
                            "health": if r.checked { r.health.health().as_str() } else { "unchecked" },
                            "circuit_breaker": r.breaker.state().as_str(),
                            "last_latency_ms": r.health.last_latency().map(|d| d.as_secs_f64() * 1000.0),
                        })
                    })
                    .collect();
                let ready = b.replicas.iter().any(Self::replica_usable);
                (b.name.clone(), json!({ "ready": ready, "replicas": replicas }))
            })
            .collect();
        json!({
            "status": if self.is_ready() { "ready" } else { "not_ready" },
            "draining": self.draining.load(Ordering::SeqCst),
            "buckets": buckets,
        })
    }
}

/// A replica's identity across reloads: same bucket, same name, and the same
/// settings that its breaker and health depend on (endpoint, bucket, region,
/// credentials, timeouts, bulkhead, breaker and health-check settings).
/// Priority and weight may change without losing state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaKey {
    /// The bucket's name.
    pub bucket: String,
    /// The replica's name.
    pub replica: String,
    fingerprint: u64,
}

impl ReplicaKey {
    fn new(config: &Config, bucket: usize, r: &ResolvedReplica, hc: &HealthCheckConfig) -> Self {
        let b = &config.buckets[bucket];
        let mut h = DefaultHasher::new();
        r.endpoint.as_ref().map(url::Url::as_str).hash(&mut h);
        (&r.bucket, &r.region, r.timeout_seconds, r.max_concurrent_requests).hash(&mut h);
        r.credentials
            .as_ref()
            .map(|(a, s)| (a.expose(), s.expose()))
            .hash(&mut h);
        let cb = &b.s3.circuit_breaker;
        (
            cb.failure_threshold,
            cb.success_threshold,
            cb.timeout_seconds,
            cb.half_open_requests,
        )
            .hash(&mut h);
        (hc.enabled, hc.interval_seconds, hc.timeout_seconds, &hc.path).hash(&mut h);
        Self {
            bucket: b.name.clone(),
            replica: r.name.clone(),
            fingerprint: h.finish(),
        }
    }
}

/// One replica of a built app: its shared state and its (not yet started) probe.
#[derive(Debug, Clone)]
pub struct ReplicaSlot {
    /// Its identity across reloads.
    pub key: ReplicaKey,
    /// Its circuit breaker (inherited when the key did not change).
    pub breaker: Arc<CircuitBreaker>,
    /// Its health (inherited when the key did not change).
    pub health: Arc<ReplicaHealth>,
    /// Its background probe, when health checks are on.
    pub check: Option<HealthCheck>,
    retired: Arc<AtomicBool>,
}

impl ReplicaSlot {
    /// Marks the replica as gone from the live config: its breaker (still
    /// used by requests in flight on the old config) stops reporting into the
    /// gauges, which now belong to its successor or are removed.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

/// What a new build takes over from the running app.
#[derive(Debug, Clone, Default)]
pub struct Inherited {
    draining: Arc<AtomicBool>,
    auth_stats: Arc<AuthStats>,
    replicas: HashMap<ReplicaKey, ReplicaSlot>,
    cache: Option<(CacheConfig, CacheStore)>,
}

/// The assembled service.
pub struct App {
    /// The proxy's HTTP service for this config: `/health`, `/ready` and the
    /// buckets (without the edge layers of [`edge`]).
    pub router: Router,
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
}

impl App {
    /// Starts the background health checks; they stop when the handles are aborted.
    pub fn spawn_health_checks(&self) -> Vec<JoinHandle<()>> {
        self.replicas
            .iter()
            .filter_map(|r| r.check.clone())
            .map(HealthCheck::spawn)
            .collect()
    }

    /// What a build of the next config may take over from this one.
    pub fn inherited(&self) -> Inherited {
        Inherited {
            draining: self.ready.draining.clone(),
            auth_stats: self.auth_stats.clone(),
            replicas: self.replicas.iter().map(|r| (r.key.clone(), r.clone())).collect(),
            cache: self.cache_config.clone().zip(self.cache.clone()),
        }
    }
}

/// The shared upstream HTTP client: one connection pool for every replica.
pub fn http_client(config: &Config) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .read_timeout(Duration::from_secs(config.server.upstream_read_timeout_seconds.max(1)))
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(BuildError::Client)
}

type ObjectStack = BoxCloneSyncService<ObjectRequest, Response<Body>, FetchError>;
type HttpStack = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

fn upstream(client: &reqwest::Client, bucket: usize, r: &ResolvedReplica) -> Result<S3Upstream, BuildError> {
    let s3 = s3_bucket(r.endpoint.as_ref(), &r.bucket, &r.region).map_err(|e| BuildError::Replica {
        bucket,
        replica: r.name.clone(),
        message: e.to_string(),
    })?;
    let mut up =
        S3Upstream::new(r.name.clone(), s3, client.clone()).with_timeout(Duration::from_secs(r.timeout_seconds));
    if let Some((access, secret)) = &r.credentials {
        up = up.with_credentials(Credentials::new(access.expose(), secret.expose()));
    }
    Ok(up)
}

/// Builds the proxy from a validated config: per bucket, auth -> cache ->
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
        (Some(cache), _) => Some(CacheStore::new(cache).map_err(|e| {
            BuildError::Config(format!(
                "cache.{}: {}",
                e.key.strip_prefix("cache.").unwrap_or(e.key),
                e.message
            ))
        })?),
        (None, _) => None,
    };
    let auth_stats = inherited.auth_stats;
    // One retry budget for the process: a full outage cannot multiply load.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2));
    let mut router = PrefixRouter::new();
    let mut ready = ReadyState {
        buckets: Vec::new(),
        draining: inherited.draining,
    };
    let mut slots = Vec::new();
    for (i, bucket) in config.buckets.iter().enumerate() {
        let hc = bucket.s3.health_check.as_ref().unwrap_or(&config.health_check);
        let bucket_name: Arc<str> = bucket.name.clone().into();
        let mut replicas = Vec::new();
        let mut readiness = Vec::new();
        for r in bucket.s3.resolved_replicas() {
            let up = upstream(&client, i, &r)?;
            let key = ReplicaKey::new(config, i, &r, hc);
            let previous = inherited.replicas.get(&key);
            let health = previous.map_or_else(ReplicaHealth::new, |p| p.health.clone());
            let retired = previous.map_or_else(Arc::default, |p| p.retired.clone());
            let hook = {
                let (metrics, b, name) = (metrics.clone(), bucket_name.clone(), r.name.clone());
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
                let (metrics, b, breaker) = (metrics.clone(), bucket_name.clone(), breaker.clone());
                let observer: ProbeObserver = Arc::new(
                    move |replica: &str, previous: Health, result: &Result<Duration, FetchError>| {
                        // Probes feed the breaker: a dead replica is skipped before
                        // a client hits it, a recovered one comes back.
                        match result {
                            Ok(_) => breaker.record_success(),
                            Err(_) => breaker.record_failure(),
                        }
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
                        .with_observer(observer),
                );
            }
            slots.push(ReplicaSlot {
                key,
                breaker: breaker.clone(),
                health: health.clone(),
                check,
                retired,
            });
            readiness.push(ReplicaReadiness {
                name: r.name.clone(),
                health: health.clone(),
                breaker: breaker.clone(),
                checked: hc.enabled,
            });
            let stack: ObjectStack = BoxCloneSyncService::new(
                ServiceBuilder::new()
                    .layer(CircuitBreakerLayer::new(breaker.clone()))
                    .layer(BulkheadLayer::new(r.max_concurrent_requests))
                    .service(up),
            );
            replicas.push(
                Replica::new(r.name.clone(), stack, breaker, health)
                    .with_priority(r.priority)
                    .with_weight(r.weight),
            );
        }
        let retry = &bucket.s3.retry;
        let failover = Failover::new(bucket_name.clone(), replicas)
            .with_events(metrics.clone())
            .with_budget(budget.clone())
            .with_retries(
                retry.max_attempts.saturating_sub(1),
                Duration::from_millis(retry.initial_interval),
                Duration::from_millis(retry.max_interval),
            );
        let bucket_cache = bucket.cache.clone().unwrap_or_default();
        let objects: ObjectStack = match &cache_store {
            Some(store) => BoxCloneSyncService::new(
                CacheLayer::new(store.clone(), bucket_name.clone())
                    .with_bucket_config(&bucket_cache)
                    .layer(failover),
            ),
            None => BoxCloneSyncService::new(failover),
        };
        let http = ObjectService::new(objects);
        let auth = bucket.auth.clone().unwrap_or_default();
        let jwt = auth
            .effective(config.jwt.as_ref())
            .map_err(|e| BuildError::Config(format!("buckets[{i}].{e}")))?;
        let http: HttpStack = match jwt {
            Some(jwt) => {
                let layer = AuthLayer::from_config_async(jwt)
                    .await
                    .map_err(|e| BuildError::Config(format!("buckets[{i}].auth.{e}")))?
                    .with_stats(auth_stats.clone());
                BoxCloneSyncService::new(layer.layer(http))
            }
            None => BoxCloneSyncService::new(http),
        };
        router = router
            .mount(&bucket.path_prefix, bucket.name.clone(), http)
            .map_err(|e| BuildError::Prefix(i, e.to_string()))?;
        ready.buckets.push(BucketReadiness {
            name: bucket.name.clone(),
            replicas: readiness,
        });
    }
    if let Some(store) = &cache_store {
        metrics.watch_cache(store.clone());
    }
    metrics.watch_auth(auth_stats.clone());
    let ready = Arc::new(ready);
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready_handler))
        .with_state(ready.clone())
        .fallback_service(router);
    Ok(App {
        router: app,
        ready,
        cache: cache_store,
        metrics,
        config: Arc::new(config.clone()),
        replicas: slots,
        auth_stats,
        cache_config: config.cache.clone(),
    })
}

async fn ready_handler(State(ready): State<Arc<ReadyState>>) -> impl IntoResponse {
    let status = if ready.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ready.report()))
}
