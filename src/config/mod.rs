//! The YAML configuration: plain serde structs with their defaults, loading
//! with `${VAR}` substitution, and validation that reports every problem at
//! once, each naming its key path (`buckets[1].path_prefix`).

mod env;
mod load;
mod overrides;
mod tree;
mod validate;
mod yaml;

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
pub use yatagarasu_middleware::auth::{AuthConfig, JwtConfig, Secret};
pub use yatagarasu_middleware::cache::{BucketCacheConfig, CacheConfig};

pub use load::{load, load_file, load_str, ConfigError, ConfigErrors, Format};
pub use overrides::ENV_PREFIX;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Config {
    /// The proxy listener.
    pub server: ServerConfig,
    /// The buckets served, each under its own path prefix.
    pub buckets: Vec<BucketConfig>,
    /// Default active health checks for buckets that set none.
    pub health_check: HealthCheckConfig,
    /// The two-tier cache (memory, then Redis/Valkey); off when absent.
    pub cache: Option<CacheConfig>,
    /// Default JWT settings for buckets that enable auth without their own.
    pub jwt: Option<JwtConfig>,
    /// The Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Logging.
    pub logging: LoggingConfig,
    /// OpenTelemetry traces (see `docs/tracing.md`); off without `otlp_endpoint`.
    pub tracing: TracingConfig,
}

/// `server:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Listen address, `host:port`.
    pub address: String,
    /// How long in-flight requests may run after SIGTERM before exit.
    pub shutdown_grace_seconds: u64,
    /// Longest wait for the next chunk of an upstream body before the
    /// transfer counts as failed.
    pub upstream_read_timeout_seconds: u64,
    /// Requests in flight (until their body ends) before new ones get
    /// `503 SlowDown` with `Retry-After` (load shedding).
    pub max_concurrent_requests: usize,
    /// Largest request header block, in bytes (name + value + 4 per header); 431 past it.
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes; 414 past it.
    pub max_uri_length: usize,
    /// Rate limiting; off by default.
    pub rate_limit: RateLimitConfig,
    /// Once a client sends the first byte of a request, the whole header
    /// block must arrive within this time, or the connection is closed.
    pub header_read_timeout_seconds: u64,
    /// A connection with no request in progress is closed after this time.
    pub keepalive_idle_timeout_seconds: u64,
    /// A response body the client takes nothing of for this long is aborted
    /// (its connection closed), which frees its request slot.
    pub send_timeout_seconds: u64,
    /// Client connections open at once; past it new ones are refused (closed
    /// at once). Lowered at start to fit the open-file limit.
    pub max_client_connections: usize,
    /// Interval of HTTP/2 keep-alive pings on a connection (0: none).
    pub http2_keepalive_interval_seconds: u64,
    /// An HTTP/2 keep-alive ping unanswered for this long closes the connection.
    pub http2_keepalive_timeout_seconds: u64,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTPS on the listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// What `/ready` requires.
    pub readiness: ReadinessConfig,
    /// The S3 API for SDK clients (listings).
    pub s3_api: S3ApiConfig,
    /// Virtual-hosted-style addressing: host `NAME.<s3_domain>` is the
    /// bucket whose `path_prefix` is `/NAME` (path style keeps working).
    #[serde(deserialize_with = "de::opt_string")]
    pub s3_domain: Option<String>,
}

/// `server.s3_api` (see `docs/s3-tools.md`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct S3ApiConfig {
    /// The HMAC key of the proxy's listing continuation tokens. Set the same
    /// secret on every instance behind a load balancer so that a token one
    /// minted is honoured by all; unset: a random key per process.
    #[serde(deserialize_with = "de::opt_secret")]
    pub token_key: Option<Secret>,
}

/// `server.readiness` (see `docs/readiness.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReadinessConfig {
    /// `true` (default): `/ready` answers 503 while a bucket has no usable
    /// replica. `false`: it reports that in its JSON (`"status": "degraded"`)
    /// and stays 200, so a full S3 outage keeps pods (and their cache) in the
    /// Service.
    pub require_replicas: bool,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        Self { require_replicas: true }
    }
}

/// `server.tls` / `metrics.tls`: a rustls listener whose certificate is
/// reloaded without a restart (see `crate::tls`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(deserialize_with = "de::string")]
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "de::string")]
    pub key_file: String,
    /// Lowest protocol version accepted: `"1.2"` or `"1.3"`.
    #[serde(deserialize_with = "de::string")]
    pub min_version: String,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mTLS).
    #[serde(deserialize_with = "de::opt_string")]
    pub client_ca_file: Option<String>,
    /// How often the files are checked for a new certificate.
    pub reload_interval_seconds: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            min_version: "1.2".into(),
            client_ca_file: None,
            reload_interval_seconds: 10,
        }
    }
}

/// `server.rate_limit`: token buckets, refusals answered `429 SlowDown`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimitConfig {
    /// Whether the global bucket applies.
    pub enabled: bool,
    /// Sustained requests per second for the whole process.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// One bucket per client IP (the TCP peer, or the forwarded client behind `trusted_proxies`).
    pub per_ip: PerIpRateLimitConfig,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_second: 1000,
            burst: 2000,
            per_ip: PerIpRateLimitConfig::default(),
        }
    }
}

/// `server.rate_limit.per_ip`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PerIpRateLimitConfig {
    /// Whether each client IP has its own bucket.
    pub enabled: bool,
    /// Sustained requests per second per client IP.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Load balancers (IPs or CIDRs) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
}

impl Default for PerIpRateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            requests_per_second: 100,
            burst: 200,
            trusted_proxies: Vec::new(),
        }
    }
}

impl PerIpRateLimitConfig {
    /// The trusted proxies as networks (a bare IP is a /32 or /128); `Err` names the bad entry.
    pub fn trusted_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| s.clone())
            })
            .collect()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: "0.0.0.0:8080".into(),
            shutdown_grace_seconds: 30,
            upstream_read_timeout_seconds: 30,
            max_concurrent_requests: 10_000,
            max_header_bytes: 64 * 1024,
            max_uri_length: 16 * 1024,
            rate_limit: RateLimitConfig::default(),
            tls: None,
            readiness: ReadinessConfig::default(),
            s3_api: S3ApiConfig::default(),
            s3_domain: None,
            header_read_timeout_seconds: 10,
            keepalive_idle_timeout_seconds: 60,
            send_timeout_seconds: 60,
            max_client_connections: 10_000,
            http2_keepalive_interval_seconds: 30,
            http2_keepalive_timeout_seconds: 20,
            http2_max_concurrent_streams: 128,
        }
    }
}

impl Config {
    /// The metrics listener's address: `metrics.address` (an IP), or the host
    /// of `server.address` when unset; `None` when either does not parse.
    pub fn metrics_socket_addr(&self) -> Option<SocketAddr> {
        let ip = if self.metrics.address.trim().is_empty() {
            self.server.address.parse::<SocketAddr>().ok()?.ip()
        } else {
            self.metrics.address.trim().parse().ok()?
        };
        Some(SocketAddr::new(ip, self.metrics.port))
    }
}

impl ServerConfig {
    /// The parsed listen address (validated at load).
    pub fn socket_addr(&self) -> SocketAddr {
        self.address.parse().expect("validated at load")
    }
}

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

/// `s3.hedge`: a `GET`/`HEAD` without response headers after `delay_ms` is
/// also sent to the next admitted replica; the first answer wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HedgeConfig {
    /// Whether requests are hedged.
    pub enabled: bool,
    /// Milliseconds without headers before hedging, or `"p95"`.
    pub delay_ms: HedgeDelayMs,
    /// Hedges allowed, as a percentage of requests (a budget over 10 s).
    pub max_extra_percent: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            delay_ms: HedgeDelayMs::Fixed(50),
            max_extra_percent: 10,
        }
    }
}

impl HedgeConfig {
    /// The middleware's hedge settings: `None` when hedging is off for the
    /// bucket and no replica (`replicas[].hedge.enabled: true`) turns it on.
    pub fn to_hedge(&self, replicas: &[ReplicaConfig]) -> Option<yatagarasu_middleware::failover::HedgeConfig> {
        let any_replica = replicas.iter().any(|r| r.hedge.enabled == Some(true));
        (self.enabled || any_replica).then(|| yatagarasu_middleware::failover::HedgeConfig {
            delay: self.delay_ms.to_delay(),
            max_extra_percent: self.max_extra_percent as f32,
            enabled_by_default: self.enabled,
        })
    }
}

impl HedgeDelayMs {
    /// The middleware's delay.
    pub fn to_delay(self) -> yatagarasu_middleware::failover::HedgeDelay {
        use yatagarasu_middleware::failover::HedgeDelay;
        match self {
            HedgeDelayMs::Fixed(ms) => HedgeDelay::Fixed(std::time::Duration::from_millis(ms)),
            HedgeDelayMs::P95 => HedgeDelay::P95,
        }
    }
}

/// `s3.hedge.delay_ms`: a number of milliseconds, or `"p95"` (the
/// replica's own observed p95 time to headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeDelayMs {
    /// This many milliseconds.
    Fixed(u64),
    /// The replica's observed p95.
    P95,
}

impl<'de> Deserialize<'de> for HedgeDelayMs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HedgeDelayMs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of milliseconds or \"p95\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<HedgeDelayMs, E> {
                Ok(HedgeDelayMs::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<HedgeDelayMs, E> {
                u64::try_from(v)
                    .map(HedgeDelayMs::Fixed)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HedgeDelayMs, E> {
                match v.trim() {
                    "p95" => Ok(HedgeDelayMs::P95),
                    n => n
                        .parse()
                        .map(HedgeDelayMs::Fixed)
                        .map_err(|_| E::custom("expected a number of milliseconds or \"p95\"")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `s3.latency_aware`: replicas of equal priority share requests by weight
/// divided by their peak-EWMA latency; a latency outlier is demoted.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LatencyAwareConfig {
    /// Whether the choice among equal priorities uses latency.
    pub enabled: bool,
    /// How fast the latency estimate forgets, in seconds.
    pub decay_seconds: u64,
    /// An outlier is this many times slower than its best equal-priority peer...
    pub outlier_factor: f64,
    /// ...on this many consecutive answers...
    pub outlier_consecutive: u32,
    /// ...and is then tried after its peers for this many seconds.
    pub outlier_demotion_seconds: u64,
}

impl Default for LatencyAwareConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decay_seconds: 10,
            outlier_factor: 3.0,
            outlier_consecutive: 5,
            outlier_demotion_seconds: 30,
        }
    }
}

impl LatencyAwareConfig {
    /// The middleware's settings (`None` when disabled).
    pub fn to_latency(&self) -> Option<yatagarasu_middleware::failover::LatencyConfig> {
        self.enabled.then(|| yatagarasu_middleware::failover::LatencyConfig {
            decay: std::time::Duration::from_secs(self.decay_seconds),
            outlier_factor: self.outlier_factor,
            outlier_consecutive: self.outlier_consecutive,
            demotion: std::time::Duration::from_secs(self.outlier_demotion_seconds),
        })
    }
}

/// One entry of `s3.replicas`; unset fields inherit from the `s3` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ReplicaConfig {
    /// Name in logs, metrics and `X-Yatagarasu-Replica`.
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// Endpoint URL.
    #[serde(deserialize_with = "de::opt_string")]
    pub endpoint: Option<String>,
    /// Bucket name.
    #[serde(deserialize_with = "de::opt_string")]
    pub bucket: Option<String>,
    /// Region.
    #[serde(deserialize_with = "de::opt_string")]
    pub region: Option<String>,
    /// Access key id.
    #[serde(deserialize_with = "de::opt_secret")]
    pub access_key: Option<Secret>,
    /// Secret access key.
    #[serde(deserialize_with = "de::opt_secret")]
    pub secret_key: Option<Secret>,
    /// Session token.
    #[serde(deserialize_with = "de::opt_secret")]
    pub session_token: Option<Secret>,
    /// Role to assume.
    #[serde(deserialize_with = "de::opt_string")]
    pub role_arn: Option<String>,
    /// External id for the role.
    #[serde(deserialize_with = "de::opt_secret")]
    pub external_id: Option<Secret>,
    /// Role session name.
    #[serde(deserialize_with = "de::opt_string")]
    pub session_name: Option<String>,
    /// Unsigned requests.
    pub anonymous: Option<bool>,
    /// PEM CA bundle for the endpoint's certificate.
    #[serde(deserialize_with = "de::opt_string")]
    pub ca_file: Option<String>,
    /// Lower is tried first; unique within a bucket.
    pub priority: u32,
    /// Connect plus time to response headers.
    pub timeout_seconds: Option<u64>,
    /// Share of load among replicas of equal priority.
    pub weight: u32,
    /// Requests in flight before this replica is skipped (default: the `s3` block's).
    pub max_concurrent_requests: Option<usize>,
    /// This replica's override of `s3.hedge` (`enabled`, `delay_ms`).
    pub hedge: ReplicaHedgeConfig,
}

/// `replicas[].hedge`: overrides the bucket's `s3.hedge` for requests sent
/// to this replica. Unset keys follow the bucket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReplicaHedgeConfig {
    /// `false`: requests to this replica are never hedged; `true`: they are,
    /// even when the bucket's `hedge.enabled` is off (with its budget).
    pub enabled: Option<bool>,
    /// Milliseconds without headers before hedging, or `"p95"`.
    pub delay_ms: Option<HedgeDelayMs>,
}

impl ReplicaHedgeConfig {
    /// The middleware's per-replica override.
    pub fn to_replica_hedge(&self) -> yatagarasu_middleware::failover::ReplicaHedge {
        yatagarasu_middleware::failover::ReplicaHedge {
            enabled: self.enabled,
            delay: self.delay_ms.map(HedgeDelayMs::to_delay),
        }
    }
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            endpoint: None,
            bucket: None,
            region: None,
            access_key: None,
            secret_key: None,
            session_token: None,
            role_arn: None,
            external_id: None,
            session_name: None,
            anonymous: None,
            ca_file: None,
            priority: 0,
            timeout_seconds: None,
            weight: 100,
            max_concurrent_requests: None,
            hedge: ReplicaHedgeConfig::default(),
        }
    }
}

/// A replica with everything inherited from its `s3` block filled in.
#[derive(Debug, Clone)]
pub struct ResolvedReplica {
    /// Name.
    pub name: String,
    /// Endpoint (AWS when `None`).
    pub endpoint: Option<url::Url>,
    /// Bucket name.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// Credentials, when both keys are set.
    pub credentials: Option<(Secret, Secret)>,
    /// Session token for the static keys.
    pub session_token: Option<Secret>,
    /// The role assumed through STS, when set.
    pub role: Option<RoleConfig>,
    /// Unsigned requests.
    pub anonymous: bool,
    /// PEM CA bundle for the endpoint's certificate.
    pub ca_file: Option<String>,
    /// Priority.
    pub priority: u32,
    /// Header timeout.
    pub timeout_seconds: u64,
    /// Weight.
    pub weight: u32,
    /// Bulkhead size.
    pub max_concurrent_requests: usize,
    /// Override of the bucket's hedge settings.
    pub hedge: yatagarasu_middleware::failover::ReplicaHedge,
}

/// A role a replica assumes through STS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleConfig {
    /// The role's ARN.
    pub arn: String,
    /// Its external id, when the trust policy asks for one.
    pub external_id: Option<Secret>,
    /// The role session name.
    pub session_name: String,
}

impl S3Config {
    /// The replicas in priority order, inheriting from this block; the block
    /// itself (named `default`) when no replica is listed.
    pub fn resolved_replicas(&self) -> Vec<ResolvedReplica> {
        let parent = ReplicaConfig {
            name: "default".into(),
            ..ReplicaConfig::default()
        };
        let list: Vec<&ReplicaConfig> = if self.replicas.is_empty() {
            vec![&parent]
        } else {
            self.replicas.iter().collect()
        };
        let mut out: Vec<ResolvedReplica> = list
            .into_iter()
            .map(|r| {
                let access = r.access_key.clone().or_else(|| self.access_key.clone());
                let secret = r.secret_key.clone().or_else(|| self.secret_key.clone());
                ResolvedReplica {
                    name: r.name.clone(),
                    endpoint: r
                        .endpoint
                        .as_ref()
                        .or(self.endpoint.as_ref())
                        .and_then(|e| e.parse().ok()),
                    bucket: r.bucket.clone().unwrap_or_else(|| self.bucket.clone()),
                    region: r.region.clone().unwrap_or_else(|| self.region.clone()),
                    credentials: access.zip(secret),
                    session_token: r.session_token.clone().or_else(|| self.session_token.clone()),
                    role: r.role_arn.as_ref().or(self.role_arn.as_ref()).map(|arn| RoleConfig {
                        arn: arn.clone(),
                        external_id: r.external_id.clone().or_else(|| self.external_id.clone()),
                        session_name: r
                            .session_name
                            .clone()
                            .or_else(|| self.session_name.clone())
                            .unwrap_or_else(|| "yatagarasu".into()),
                    }),
                    anonymous: r.anonymous.unwrap_or(self.anonymous),
                    ca_file: r.ca_file.clone().or_else(|| self.ca_file.clone()),
                    priority: r.priority,
                    timeout_seconds: r.timeout_seconds.unwrap_or(self.timeout_seconds),
                    weight: r.weight.max(1),
                    max_concurrent_requests: r.max_concurrent_requests.unwrap_or(self.max_concurrent_requests),
                    hedge: r.hedge.to_replica_hedge(),
                }
            })
            .collect();
        out.sort_by_key(|r| r.priority);
        out
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

/// `metrics:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MetricsConfig {
    /// Whether the metrics listener runs.
    pub enabled: bool,
    /// Its port.
    pub port: u16,
    /// Its bind address (host part); by default the host of `server.address`,
    /// so a proxy bound to loopback does not expose its metrics and admin
    /// endpoints on every interface.
    #[serde(deserialize_with = "de::string")]
    pub address: String,
    /// Bearer token for the admin endpoints on this listener (`POST
    /// /admin/reload`, `DELETE /admin/cache...`); they answer 404 without one.
    #[serde(deserialize_with = "de::opt_secret")]
    pub admin_token: Option<Secret>,
    /// HTTPS on the metrics listener (same keys as `server.tls`).
    pub tls: Option<TlsConfig>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 9090,
            address: String::new(),
            admin_token: None,
            tls: None,
        }
    }
}

/// `logging:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// `trace`, `debug`, `info`, `warn` or `error` (or any `RUST_LOG`-style filter).
    #[serde(deserialize_with = "de::string")]
    pub level: String,
    /// `text` or `json`.
    #[serde(deserialize_with = "de::string")]
    pub format: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// `tracing:`: OpenTelemetry traces exported over OTLP (HTTP/protobuf).
/// Nothing is exported, and no trace header added, without `otlp_endpoint`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`);
    /// spans go to `{otlp_endpoint}/v1/traces` (kept as is when it already
    /// ends so). Tracing is off when absent.
    #[serde(deserialize_with = "de::opt_string")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0; a client's sampled flag
    /// (`traceparent`) is followed (parent-based sampling).
    pub sample_ratio: f64,
    /// `service.name` of the exported spans.
    #[serde(deserialize_with = "de::string")]
    pub service_name: String,
    /// Longest wait before a batch of finished spans is sent.
    pub export_interval_ms: u64,
    /// Longest wait for the collector to accept a batch.
    pub export_timeout_seconds: u64,
    /// Finished spans waiting for export; past it new ones are dropped
    /// (requests never wait for the exporter).
    pub max_queue_spans: usize,
    /// Most spans sent in one export request.
    pub max_batch_spans: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "yatagarasu".into(),
            export_interval_ms: 5000,
            export_timeout_seconds: 10,
            max_queue_spans: 2048,
            max_batch_spans: 512,
        }
    }
}

impl TracingConfig {
    /// Where spans are sent (`{otlp_endpoint}/v1/traces`); `None` when
    /// tracing is off (no endpoint, or an empty one).
    pub fn traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty())?;
        if base.trim_end_matches('/').ends_with("/v1/traces") {
            return Some(base.to_owned());
        }
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

mod de {
    //! Strings that may arrive as YAML numbers or booleans after `${VAR}`
    //! substitution (a secret of digits must stay a string).
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    use super::Secret;

    fn scalar(v: Value) -> Result<Option<String>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            _ => Err("expected a string".into()),
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        scalar(Value::deserialize(d)?)
            .map(Option::unwrap_or_default)
            .map_err(serde::de::Error::custom)
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        scalar(Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    pub fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        opt_string(d).map(|o| o.map(Secret::new))
    }
}
