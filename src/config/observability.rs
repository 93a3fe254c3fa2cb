//! `metrics:`, `logging:` and `tracing:`: how the proxy reports on itself.

use serde::Deserialize;

use super::de;
use super::{Secret, TlsConfig};

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
