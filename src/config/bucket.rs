//! `buckets:`: each bucket's path prefix and upstream `s3` block, with its
//! retry, circuit-breaker and health-check settings.

use serde::Deserialize;

use super::de;
use super::{AuthConfig, BucketCacheConfig, CorsConfig, HedgeConfig, LatencyAwareConfig, ReplicaConfig, Secret};

/// One entry of `buckets:`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct BucketConfig {
    /// The bucket's name in logs and metrics.
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// The URL path it is served under (`/assets`).
    #[serde(deserialize_with = "de::string")]
    pub path_prefix: String,
    /// Where the objects live.
    pub s3: S3Config,
    /// JWT authentication.
    pub auth: Option<AuthConfig>,
    /// Per-bucket cache switch and TTL.
    pub cache: Option<BucketCacheConfig>,
    /// CORS answers for browser apps on other origins; none when absent.
    pub cors: Option<CorsConfig>,
}

/// `buckets[].s3`: the upstream S3 bucket, and its replicas.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// The S3 bucket name.
    #[serde(deserialize_with = "de::string")]
    pub bucket: String,
    /// The S3 region.
    #[serde(deserialize_with = "de::string")]
    pub region: String,
    /// A custom endpoint (MinIO, R2...); AWS when unset.
    #[serde(deserialize_with = "de::opt_string")]
    pub endpoint: Option<String>,
    /// Access key id; anonymous requests when both keys are unset.
    #[serde(deserialize_with = "de::opt_secret")]
    pub access_key: Option<Secret>,
    /// Secret access key.
    #[serde(deserialize_with = "de::opt_secret")]
    pub secret_key: Option<Secret>,
    /// Session token sent with static temporary keys.
    #[serde(deserialize_with = "de::opt_secret")]
    pub session_token: Option<Secret>,
    /// A role to assume through STS with the credentials above (or the AWS chain's).
    #[serde(deserialize_with = "de::opt_string")]
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    #[serde(deserialize_with = "de::opt_secret")]
    pub external_id: Option<Secret>,
    /// The role session name (default `yatagarasu`).
    #[serde(deserialize_with = "de::opt_string")]
    pub session_name: Option<String>,
    /// Unsigned requests (public buckets): no credentials are looked up.
    pub anonymous: bool,
    /// PEM CA bundle trusted for the endpoint's TLS certificate (system roots otherwise).
    #[serde(deserialize_with = "de::opt_string")]
    pub ca_file: Option<String>,
    /// Time to response headers for replicas that set none.
    pub timeout_seconds: u64,
    /// Requests in flight per replica before it is skipped (bulkhead).
    pub max_concurrent_requests: usize,
    /// Retry rounds when every replica failed.
    pub retry: RetryConfig,
    /// Replicas tried in priority order; when empty this block is the single upstream.
    pub replicas: Vec<ReplicaConfig>,
    /// Per-replica circuit breaker settings.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Active health checks for this bucket's replicas (top-level default when unset).
    pub health_check: Option<HealthCheckConfig>,
    /// Whether a 404 tries the next replica (for replicas behind
    /// asynchronous replication); off: a 404 is an answer.
    pub failover_on_404: bool,
    /// Hedged requests (off by default).
    pub hedge: HedgeConfig,
    /// Latency-aware choice among equal priorities (off by default).
    pub latency_aware: LatencyAwareConfig,
    /// How long a listing page is kept in memory and answered again without
    /// a replica (0, the default: listings are never cached).
    pub listing_cache_ttl_seconds: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            role_arn: None,
            external_id: None,
            session_name: None,
            anonymous: false,
            ca_file: None,
            timeout_seconds: 30,
            max_concurrent_requests: 512,
            retry: RetryConfig::default(),
            replicas: Vec::new(),
            circuit_breaker: CircuitBreakerConfig::default(),
            health_check: None,
            failover_on_404: false,
            hedge: HedgeConfig::default(),
            latency_aware: LatencyAwareConfig::default(),
            listing_cache_ttl_seconds: 0,
        }
    }
}

/// `s3.retry`: when every replica failed, the whole pass is tried again after
/// an exponential backoff with full jitter, within a process-wide retry budget
/// (20% of requests over 10 s, at least 5 per second).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Passes over the replicas in all (1 = no retry).
    pub max_attempts: u32,
    /// First backoff, in milliseconds.
    pub initial_interval: u64,
    /// Longest backoff, in milliseconds.
    pub max_interval: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 2,
            initial_interval: 50,
            max_interval: 500,
        }
    }
}

/// `s3.circuit_breaker`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Successes in half-open that close it.
    pub success_threshold: u32,
    /// Time open before half-open trials.
    pub timeout_seconds: u64,
    /// Concurrent trial requests allowed in half-open.
    pub half_open_requests: u32,
}

impl CircuitBreakerConfig {
    /// The middleware's breaker thresholds.
    pub fn to_breaker(&self) -> yatagarasu_middleware::breaker::BreakerConfig {
        yatagarasu_middleware::breaker::BreakerConfig {
            failure_threshold: self.failure_threshold,
            success_threshold: self.success_threshold,
            open_timeout: std::time::Duration::from_secs(self.timeout_seconds),
            half_open_requests: self.half_open_requests,
        }
    }
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            success_threshold: 2,
            timeout_seconds: 60,
            half_open_requests: 1,
        }
    }
}

/// `health_check` (top level, or per bucket under `s3`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HealthCheckConfig {
    /// Whether replicas are probed in the background.
    pub enabled: bool,
    /// Time between probes.
    pub interval_seconds: u64,
    /// Time allowed for one probe.
    pub timeout_seconds: u64,
    /// What to `HEAD`: `/` for the bucket, or `/some/key`.
    #[serde(deserialize_with = "de::string")]
    pub path: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 10,
            timeout_seconds: 5,
            path: "/".into(),
        }
    }
}
