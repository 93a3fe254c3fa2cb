//! The YAML configuration: plain serde structs with their defaults, loading
//! with `${VAR}` substitution, and validation that reports every problem at
//! once, each naming its key path (`buckets[1].path_prefix`).
//!
//! One file per section: the root [`Config`] here, `server:` in `server`,
//! `buckets:` in `bucket` (its `cors` block in `cors`, its replicas in
//! `replica`, hedging and latency-aware choice in `latency`), `metrics:` /
//! `logging:` / `tracing:` in `observability`; reading the file in `load`, `yaml`, `json`, `tree`,
//! `env` and `overrides`, and the checks in `validate`.

mod bucket;
mod cors;
mod de;
mod env;
mod json;
mod latency;
mod load;
mod observability;
mod overrides;
mod replica;
mod server;
mod tree;
mod validate;
mod yaml;

use std::net::SocketAddr;

use serde::Deserialize;
pub use yatagarasu_middleware::auth::{AuthConfig, JwtConfig, Secret};
pub use yatagarasu_middleware::cache::{BucketCacheConfig, CacheConfig};

pub use bucket::{BucketConfig, CircuitBreakerConfig, HealthCheckConfig, RetryConfig, S3Config};
pub use cors::{is_wildcard, CorsConfig, CORS_METHODS, DEFAULT_ALLOWED_HEADERS, DEFAULT_EXPOSE_HEADERS};
pub use latency::{HedgeConfig, HedgeDelayMs, LatencyAwareConfig};
pub use load::{load, load_file, load_str, ConfigError, ConfigErrors, Format};
pub use observability::{LoggingConfig, MetricsConfig, TracingConfig};
pub use overrides::ENV_PREFIX;
pub use replica::{ReplicaConfig, ReplicaHedgeConfig, ResolvedReplica, RoleConfig};
pub use server::{
    ConnectionThreadsSetting, PerIpRateLimitConfig, RateLimitConfig, ReadinessConfig, S3ApiConfig, ServerConfig,
    TlsConfig,
};

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
