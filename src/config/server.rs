//! `server:`: the proxy listener, its TLS, rate limits, readiness and S3 API face.

use std::net::SocketAddr;

use serde::Deserialize;

use super::de;
use super::Secret;

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
    /// Threads that serve client connections, each with its own event loop
    /// and upstream connection pool (`"auto"`, the default: one per CPU the
    /// process may use; `0`: connections share the main multi-threaded
    /// runtime). Read at start only.
    pub connection_threads: ConnectionThreadsSetting,
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
            connection_threads: ConnectionThreadsSetting::Auto,
        }
    }
}

impl ServerConfig {
    /// The parsed listen address (validated at load).
    pub fn socket_addr(&self) -> SocketAddr {
        self.address.parse().expect("validated at load")
    }
}

/// Most connection threads accepted (a larger number is a typo, not a machine).
pub const MAX_CONNECTION_THREADS: usize = 1024;

/// `server.connection_threads`: `"auto"` or a number of threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionThreadsSetting {
    /// One per CPU the process may use (`std::thread::available_parallelism`,
    /// which follows cgroup CPU quotas and affinity).
    Auto,
    /// This many (`0`: none, connections run on the main runtime).
    Count(usize),
}

impl ConnectionThreadsSetting {
    /// The number of connection threads to start (0: none).
    pub fn threads(self) -> usize {
        match self {
            Self::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Self::Count(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for ConnectionThreadsSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ConnectionThreadsSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of threads or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match usize::try_from(v) {
                    Ok(n) if n <= MAX_CONNECTION_THREADS => Ok(ConnectionThreadsSetting::Count(n)),
                    _ => Err(E::custom(format!(
                        "at most {MAX_CONNECTION_THREADS} threads, or \"auto\""
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("must not be negative"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v.trim() {
                    "auto" => Ok(ConnectionThreadsSetting::Auto),
                    n => n
                        .parse::<u64>()
                        .map_err(|_| E::custom("expected a number of threads or \"auto\""))
                        .and_then(|n| self.visit_u64(n)),
                }
            }
        }
        d.deserialize_any(V)
    }
}
