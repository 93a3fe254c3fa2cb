//! Prometheus metrics (`yatagarasu_*`): OpenTelemetry instruments exported in
//! the Prometheus text format by `opentelemetry-prometheus`.
//!
//! The exporter is configured so that the names are exactly the ones of the
//! deployment guide (no unit or `_total` suffix added, no `otel_scope_*`
//! labels, no `target_info`): every counter is created with its full name.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `yatagarasu_requests_total` | counter | `bucket`, `method`, `operation`, `status_class` |
//! | `yatagarasu_request_duration_seconds` | histogram | `bucket`, `operation`, `status_class`, `cache` |
//! | `yatagarasu_response_bytes_total` | counter | `bucket` |
//! | `yatagarasu_requests_in_flight` | gauge | |
//! | `yatagarasu_replica_health` | gauge (1 healthy, 0 not) | `bucket`, `replica` |
//! | `yatagarasu_circuit_breaker_state` | gauge (0 closed, 1 open, 2 half-open) | `bucket`, `replica` |
//! | `yatagarasu_replica_requests_total` | counter | `bucket`, `replica` |
//! | `yatagarasu_replica_failures_total` | counter | `bucket`, `replica` |
//! | `yatagarasu_replica_failover_total` | counter | `bucket`, `from`, `to` |
//! | `yatagarasu_replica_request_duration_seconds` | histogram (time to the replica's headers) | `bucket`, `replica` |
//! | `yatagarasu_hedges_total` | counter (`sent`; `won`: the hedge answered first) | `bucket`, `replica` (the hedge's), `outcome` |
//! | `yatagarasu_replica_latency_demotions_total` | counter | `bucket`, `replica` |
//! | `yatagarasu_cache_*_total`, `yatagarasu_cache_memory_{entries,bytes}` | counters, gauges | |
//! | `yatagarasu_cache_redis_up` | gauge (1 answering, 0 not) | `mode` |
//! | `yatagarasu_auth_total` | counter | `reason` |
//! | `yatagarasu_config_reloads_total` | counter | `result` (`success`, `failure`) |
//! | `yatagarasu_credentials_expiry_seconds` | gauge (keys that never expire: 100 years; 0 or negative: none usable) | `bucket`, `replica` |
//! | `yatagarasu_client_connections_open` | gauge | |
//! | `yatagarasu_client_connections_refused_total` | counter | |
//! | `yatagarasu_client_connections_closed_total` | counter | `reason` (`idle`, `header_timeout`, `send_timeout`, `tls_handshake_timeout`, `tls_handshake_failed`, `plain_http`, `malformed_request`) |
//!
//! The series recorded on every request or replica attempt are Prometheus
//! collectors with their label sets resolved once (`requests`, `replicas`),
//! registered in the exporter's registry: same names, help texts, labels
//! and buckets as the instruments they replaced (issue 13). Each thread
//! records into its own copy, and a scrape sums the copies (`shards`).
//!
//! Label values come from the config (bucket and replica names) or from small
//! fixed sets, so cardinality is bounded; the gauges, and the request, failure
//! and duration series, of replicas removed by a reload are dropped
//! ([`Metrics::retain_replicas`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Counter, MeterProvider, UpDownCounter};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use yatagarasu_middleware::auth::AuthStats;
use yatagarasu_middleware::breaker::BreakerState;
use yatagarasu_middleware::cache::CacheStore;
use yatagarasu_middleware::credentials::ReplicaCredentials;
use yatagarasu_middleware::error::FetchError;
use yatagarasu_middleware::failover::{FailoverEvents, HedgeEvent};

/// Histogram buckets of request durations, in seconds (long downloads included).
const DURATION_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Histogram buckets of a replica's time to response headers, in seconds
/// (up to the longest replica timeout of the deployment guide).
const REPLICA_DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0,
];

/// Replica gauges: `(bucket, replica)` -> `(health, breaker state)`.
type ReplicaGauges = BTreeMap<(String, String), (i64, i64)>;

/// The `reason`s of `yatagarasu_client_connections_closed_total`: timeouts
/// (`idle`, `header_timeout`, `send_timeout`, `tls_handshake_timeout`), a
/// failed TLS handshake, plain HTTP sent to the TLS port, and a request
/// hyper refused before the edge (`malformed_request`: its bare 400/414/431).
pub const CLOSE_REASONS: [&str; 7] = [
    "idle",
    "header_timeout",
    "send_timeout",
    "tls_handshake_timeout",
    "tls_handshake_failed",
    "plain_http",
    "malformed_request",
];

/// Every metric of the process.
pub struct Metrics {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
    /// The series recorded on every request and attempt, one copy per
    /// thread shard ([`shards`]).
    requests: Arc<Shards<RequestSeries>>,
    replica_series: Arc<Shards<ReplicaSeries>>,
    /// Prometheus gauges, not an OpenTelemetry instrument: it moves twice per
    /// request, and an instrument's `add` looks up its (empty) attribute set
    /// each time (issue 13). One per thread shard, summed at scrape. A
    /// request counts up and down on its connection's thread; on the shared
    /// runtime its task may end on another thread, and a scrape reading the
    /// shards while a whole request starts and ends between two reads is
    /// off by that request.
    in_flight: Arc<Shards<prometheus::IntGauge>>,
    failovers: Counter<u64>,
    hedges: Counter<u64>,
    demotions: Counter<u64>,
    reloads: Counter<u64>,
    connections_open: UpDownCounter<i64>,
    connections_refused: Counter<u64>,
    connections_closed: Counter<u64>,
    replicas: Arc<Mutex<ReplicaGauges>>,
    cache: Arc<Mutex<Option<CacheStore>>>,
    auth: Arc<Mutex<Option<Arc<AuthStats>>>>,
    credentials: Arc<Mutex<CredentialGauges>>,
}

/// What `yatagarasu_credentials_expiry_seconds` reports for keys that never
/// expire: 100 years (OpenTelemetry drops `+Inf`, and the series must exist
/// from the start for the alert rules).
pub const NEVER_EXPIRES: f64 = 100.0 * 365.0 * 86_400.0;

/// Replica credentials whose expiry is exported: `(bucket, replica)` -> keys.
type CredentialGauges = BTreeMap<(String, String), ReplicaCredentials>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::build()
    }
}

use observers::{register_credentials_gauge, register_observers};
use replicas::ReplicaSeries;
pub use requests::status_class;
use requests::RequestSeries;
use shards::Shards;

mod observers;
mod replicas;
mod requests;
mod shards;

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::build())
    }

    fn build() -> Self {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("the Prometheus exporter registers into a fresh registry");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("yatagarasu");
        let replicas: Arc<Mutex<ReplicaGauges>> = Arc::default();
        let cache: Arc<Mutex<Option<CacheStore>>> = Arc::default();
        let auth: Arc<Mutex<Option<Arc<AuthStats>>>> = Arc::default();
        register_observers(&meter, &replicas, &cache, &auth);
        let credentials: Arc<Mutex<CredentialGauges>> = Arc::default();
        register_credentials_gauge(&meter, &credentials);
        let reloads = meter
            .u64_counter("yatagarasu_config_reloads_total")
            .with_description("Configuration reloads, by result.")
            .build();
        // Both series from startup (at 0), so `increase()` sees the first reload.
        for result in ["success", "failure"] {
            reloads.add(0, &[KeyValue::new("result", result)]);
        }
        let this = Self {
            requests: Shards::new(|| RequestSeries::new(&DURATION_BUCKETS))
                .and_then(|s| s.register(&registry))
                .expect("the request series register into a fresh registry"),
            in_flight: Shards::new(|| {
                prometheus::IntGauge::new(
                    "yatagarasu_requests_in_flight",
                    "Requests whose response has not ended yet.",
                )
            })
            .and_then(|s| s.register(&registry))
            .expect("the in-flight gauge registers into a fresh registry"),
            replica_series: Shards::new(|| ReplicaSeries::new(&REPLICA_DURATION_BUCKETS))
                .and_then(|s| s.register(&registry))
                .expect("the replica series register into a fresh registry"),
            failovers: meter
                .u64_counter("yatagarasu_replica_failover_total")
                .with_description("Requests moved from one replica to the next (a response body resumed mid-way from another replica included).")
                .build(),
            hedges: meter
                .u64_counter("yatagarasu_hedges_total")
                .with_description("Hedged requests sent to a replica, and those that answered first.")
                .build(),
            demotions: meter
                .u64_counter("yatagarasu_replica_latency_demotions_total")
                .with_description("Replicas demoted as latency outliers (tried after their peers for a while).")
                .build(),
            reloads,
            connections_open: meter
                .i64_up_down_counter("yatagarasu_client_connections_open")
                .with_description("Client connections open now.")
                .build(),
            connections_refused: meter
                .u64_counter("yatagarasu_client_connections_refused_total")
                .with_description("Client connections refused past server.max_client_connections.")
                .build(),
            connections_closed: meter
                .u64_counter("yatagarasu_client_connections_closed_total")
                .with_description("Client connections the proxy closed, by reason (a timeout, a failed TLS handshake, plain HTTP on the TLS port, a request hyper refused).")
                .build(),
            registry,
            _provider: provider,
            replicas,
            cache,
            auth,
            credentials,
        };
        // The connection series exist from the start, at zero.
        this.connections_open.add(0, &[]);
        this.connections_refused.add(0, &[]);
        for reason in CLOSE_REASONS {
            this.connections_closed.add(0, &[KeyValue::new("reason", reason)]);
        }
        this
    }

    /// Exports `yatagarasu_credentials_expiry_seconds{bucket,replica}` for
    /// these credentials (replacing the previous ones of that replica):
    /// seconds left, [`NEVER_EXPIRES`] for keys that never expire (static, anonymous),
    /// 0 for keys never obtained, negative once expired.
    pub fn watch_credentials(&self, bucket: &str, replica: &str, credentials: &ReplicaCredentials) {
        let mut map = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        map.insert((bucket.to_owned(), replica.to_owned()), credentials.clone());
    }

    /// `yatagarasu_replica_health{bucket,replica}`: 1 healthy, 0 not.
    pub fn replica_health(&self, bucket: &str, replica: &str, healthy: bool) {
        let mut map = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((bucket.to_owned(), replica.to_owned())).or_insert((1, 0)).0 = healthy as i64;
    }

    /// `yatagarasu_circuit_breaker_state{bucket,replica}`: 0 closed, 1 open, 2 half-open.
    pub fn breaker_state(&self, bucket: &str, replica: &str, state: BreakerState) {
        let mut map = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((bucket.to_owned(), replica.to_owned())).or_insert((1, 0)).1 = state.as_metric();
    }

    /// Creates the per-replica counters of one bucket at zero, so that they
    /// (and the alert rules reading them) exist before the first failure:
    /// requests and failures per replica, and failovers per ordered pair.
    pub fn init_replicas(&self, bucket: &str, replicas: &[&str]) {
        self.replica_series.local().init(bucket, replicas);
        for (i, from) in replicas.iter().enumerate() {
            self.demotions.add(0, &replica_labels(bucket, from));
            for outcome in [HedgeEvent::Sent, HedgeEvent::Won] {
                let [b, r] = replica_labels(bucket, from);
                self.hedges.add(0, &[b, r, KeyValue::new("outcome", outcome.as_str())]);
            }
            for (j, to) in replicas.iter().enumerate() {
                if i != j {
                    self.failovers.add(0, &failover_labels(bucket, from, to));
                }
            }
        }
    }

    /// Drops the gauges of every replica not in `live` (after a reload).
    /// Counters and histograms stay until restart, as counters do
    /// (docs/metrics.md).
    pub fn retain_replicas(&self, live: &HashSet<(String, String)>) {
        let mut map = self.replicas.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| live.contains(k));
        let mut creds = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        creds.retain(|k, _| live.contains(k));
    }

    /// A finished request (its response body ended or was dropped):
    /// `yatagarasu_requests_total` and `yatagarasu_request_duration_seconds`.
    /// `operation` is the S3 call (`GetObject`, `ListObjectsV2`..., a fixed set).
    pub fn request_done(
        &self,
        bucket: &str,
        method: &str,
        operation: &'static str,
        status: u16,
        cache: &str,
        duration: Duration,
    ) {
        self.requests
            .local()
            .done(bucket, method, operation, status, cache, duration);
    }

    /// One attempt on `replica` ended with its response headers (or failed)
    /// after `elapsed`: `yatagarasu_replica_request_duration_seconds`.
    pub fn replica_answered(&self, bucket: &str, replica: &str, elapsed: Duration) {
        self.replica_series.local().answered(bucket, replica, elapsed);
    }

    /// Body bytes sent for a request of `bucket`.
    pub fn bytes_sent(&self, bucket: &str, bytes: u64) {
        self.requests.local().bytes_sent(bucket, bytes);
    }

    /// One more request in flight until the guard drops.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.local().inc();
        InFlight(self.clone())
    }

    /// One more open client connection until the guard drops.
    pub fn connection_open(self: &Arc<Self>) -> OpenConnection {
        self.connections_open.add(1, &[]);
        OpenConnection(self.clone())
    }

    /// A client connection refused past the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.add(1, &[]);
    }

    /// A client connection the proxy closed, for one of [`CLOSE_REASONS`].
    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A configuration reload, successful or not.
    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.add(1, &[KeyValue::new("result", result)]);
    }

    /// Exports the cache's counters at scrape time (the latest store given).
    pub fn watch_cache(&self, store: CacheStore) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    /// Exports the auth counters at scrape time.
    pub fn watch_auth(&self, stats: Arc<AuthStats>) {
        *self.auth.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Counts a request in `yatagarasu_requests_in_flight` while alive.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl InFlight {
    /// The metrics the request counts in.
    pub fn metrics(&self) -> &Metrics {
        &self.0
    }
}

/// An open client connection, counted in `yatagarasu_client_connections_open` until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.add(-1, &[]);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.local().dec();
    }
}

fn replica_labels(bucket: &str, replica: &str) -> [KeyValue; 2] {
    [
        KeyValue::new("bucket", bucket.to_owned()),
        KeyValue::new("replica", replica.to_owned()),
    ]
}

fn failover_labels(bucket: &str, from: &str, to: &str) -> [KeyValue; 3] {
    [
        KeyValue::new("bucket", bucket.to_owned()),
        KeyValue::new("from", from.to_owned()),
        KeyValue::new("to", to.to_owned()),
    ]
}

impl FailoverEvents for Metrics {
    fn request(&self, bucket: &str, replica: &str) {
        self.replica_series.local().request(bucket, replica);
    }

    fn failure(&self, bucket: &str, replica: &str, _error: &FetchError) {
        self.replica_series.local().failure(bucket, replica);
    }

    fn failover(&self, bucket: &str, from: &str, to: &str) {
        self.failovers.add(1, &failover_labels(bucket, from, to));
    }

    fn hedge(&self, bucket: &str, replica: &str, event: HedgeEvent) {
        let [b, r] = replica_labels(bucket, replica);
        self.hedges.add(1, &[b, r, KeyValue::new("outcome", event.as_str())]);
    }

    fn demoted(&self, bucket: &str, replica: &str) {
        self.demotions.add(1, &replica_labels(bucket, replica));
    }
}

#[cfg(test)]
mod tests;
