//! Composes the layers of `middleware/` from a [`Config`]: one object stack
//! per bucket behind the prefix router, plus `/health` and `/ready`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rusty_s3::Credentials;
use serde_json::json;
use tokio::task::JoinHandle;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use std::convert::Infallible;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder};
use yatagarasu_middleware::auth::{AuthLayer, AuthStats, Identity};
use yatagarasu_middleware::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer, SystemClock, TransitionHook};
use yatagarasu_middleware::bulkhead::BulkheadLayer;
use yatagarasu_middleware::cache::{CacheLayer, CacheStore, X_CACHE};
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::failover::{Failover, Replica};
use yatagarasu_middleware::health::{Health, HealthCheck, ProbeObserver, ReplicaHealth};
use yatagarasu_middleware::object::{ObjectRequest, ObjectService, REQUEST_ID};
use yatagarasu_middleware::routing::{MatchedBucket, PrefixRouter};
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream, REPLICA_HEADER};

use crate::config::{Config, ResolvedReplica};
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
    draining: AtomicBool,
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

/// The assembled service.
pub struct App {
    /// The proxy's HTTP service.
    pub router: Router,
    /// What `/ready` reads; drained on shutdown.
    pub ready: Arc<ReadyState>,
    health_checks: Vec<HealthCheck>,
    /// The shared cache, when configured (for purges).
    pub cache: Option<CacheStore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl App {
    /// Starts the background health checks; they stop when the handles are aborted.
    pub fn spawn_health_checks(&self) -> Vec<JoinHandle<()>> {
        self.health_checks.iter().cloned().map(HealthCheck::spawn).collect()
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
    let client = http_client(config)?;
    let cache_store = match &config.cache {
        Some(cache) => {
            let store = CacheStore::new(cache).map_err(|e| BuildError::Config(format!("cache.{}: {}", e.key, e.message)))?;
            metrics.watch_cache(store.clone());
            Some(store)
        }
        None => None,
    };
    let auth_stats = Arc::new(AuthStats::new());
    metrics.watch_auth(auth_stats.clone());
    // One retry budget for the process: a full outage cannot multiply load.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2));
    let mut router = PrefixRouter::new();
    let mut ready = ReadyState::default();
    let mut health_checks = Vec::new();
    for (i, bucket) in config.buckets.iter().enumerate() {
        let hc = bucket.s3.health_check.as_ref().unwrap_or(&config.health_check);
        let bucket_name: Arc<str> = bucket.name.clone().into();
        let mut replicas = Vec::new();
        let mut readiness = Vec::new();
        for r in bucket.s3.resolved_replicas() {
            let up = upstream(&client, i, &r)?;
            let health = ReplicaHealth::new();
            let hook = {
                let (metrics, b, name) = (metrics.clone(), bucket_name.clone(), r.name.clone());
                Arc::new(move |state: BreakerState| {
                    metrics.breaker_state(&b, &name, state);
                    match state {
                        BreakerState::Open => tracing::warn!(bucket = %b, replica = %name, "circuit breaker opened"),
                        BreakerState::HalfOpen => tracing::info!(bucket = %b, replica = %name, "circuit breaker half-open"),
                        BreakerState::Closed => tracing::info!(bucket = %b, replica = %name, "circuit breaker closed"),
                    }
                }) as TransitionHook
            };
            let breaker = CircuitBreaker::with_clock(
                bucket.s3.circuit_breaker.to_breaker(),
                Arc::new(SystemClock),
                Some(hook),
            );
            metrics.breaker_state(&bucket_name, &r.name, BreakerState::Closed);
            metrics.replica_health(&bucket_name, &r.name, true);
            if hc.enabled {
                let (metrics, b, breaker) = (metrics.clone(), bucket_name.clone(), breaker.clone());
                let observer: ProbeObserver = Arc::new(move |replica: &str, previous: Health, result: &Result<Duration, FetchError>| {
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
                });
                health_checks.push(
                    HealthCheck::new(up.clone(), health.clone())
                        .with_interval(Duration::from_secs(hc.interval_seconds))
                        .with_timeout(Duration::from_secs(hc.timeout_seconds))
                        .with_path(&hc.path)
                        .with_observer(observer),
                );
            }
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
    let ready = Arc::new(ready);
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready_handler))
        .with_state(ready.clone())
        .fallback_service(router)
        .layer(middleware::from_fn_with_state(metrics.clone(), log_request))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid));
    Ok(App {
        router: app,
        ready,
        health_checks,
        cache: cache_store,
        metrics,
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

/// One structured line per request, when its response headers are sent.
async fn log_request(State(metrics): State<Arc<Metrics>>, req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let res = next.run(req).await;
    let replica = res
        .headers()
        .get(REPLICA_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let bucket = res.extensions().get::<MatchedBucket>().map(|b| b.0.as_ref()).unwrap_or("-");
    let cache = res.headers().get(X_CACHE).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let identity = res
        .extensions()
        .get::<Identity>()
        .and_then(|i| i.subject.as_deref())
        .unwrap_or("-");
    let duration = started.elapsed();
    metrics.request_done(bucket, method.as_str(), res.status().as_u16(), cache, duration);
    tracing::info!(
        target: "yatagarasu::access",
        request_id = %id,
        method = %method,
        path = %path,
        bucket = %bucket,
        status = res.status().as_u16(),
        replica = %replica,
        cache = %cache,
        identity = %identity,
        duration_ms = duration.as_secs_f64() * 1000.0,
        "request"
    );
    res
}
