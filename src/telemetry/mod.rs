//! OpenTelemetry traces (issue 16; see `docs/tracing.md`): `tracing` spans
//! of target [`TARGET`] are exported over OTLP HTTP/protobuf by a batch
//! processor (a bounded queue: a full one drops spans, requests never wait).
//!
//! - A span per request ([`request_span`], made by the access log), which
//!   continues the client's W3C `traceparent` / `tracestate`.
//! - A child span per replica attempt ([`ReplicaSpanLayer`]), whose context
//!   goes to the replica in `traceparent` / `tracestate`.
//! - A span per Redis lookup (in the middleware's cache store).
//!
//! With tracing off ([`enabled`] is false) no span is made and no header
//! added: the request path pays one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TracingConfig;

mod replica;

pub use replica::{AttemptFuture, ReplicaSpan, ReplicaSpanLayer};

/// The `tracing` target of the spans that are exported (and kept out of the
/// log lines). The middleware's Redis lookup span uses it too.
pub const TARGET: &str = "yatagarasu::trace";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported (the process was started with `tracing.otlp_endpoint`).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter of a process that traces: flush it on shutdown.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (bounded by
    /// `tracing.export_timeout_seconds`). Call it from outside the runtime's
    /// worker threads: it blocks until the export is done.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("warning: traces not all exported at shutdown: {e}");
        }
    }
}

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp_endpoint: {0}")]
pub struct TelemetryError(String);

/// The OpenTelemetry layer for the subscriber and its exporter, when
/// `config` has an endpoint. Export requests run on `runtime` (the span
/// processor's own thread only waits for them).
pub fn layer<S>(
    config: &TracingConfig,
    runtime: tokio::runtime::Handle,
) -> Result<Option<(impl tracing_subscriber::Layer<S>, Telemetry)>, TelemetryError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let Some(url) = config.traces_url() else {
        return Ok(None);
    };
    let timeout = Duration::from_secs(config.export_timeout_seconds);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient { client, runtime })
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| TelemetryError(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue_spans)
        .with_max_export_batch_size(config.max_batch_spans)
        .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("yatagarasu");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        // Our spans, and warnings or errors logged inside them (as span events).
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target(TARGET, tracing::Level::INFO)
                .with_default(tracing::Level::WARN),
        );
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, Telemetry { provider })))
}

/// Sends the export requests with the proxy's reqwest on its tokio runtime:
/// the batch processor runs on a thread of its own, outside the runtime.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeClient {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let res = client.execute(request).await?;
            let status = res.status();
            let body = res.bytes().await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            Ok::<_, reqwest::Error>(out)
        });
        Ok(task.await??)
    }
}

/// The buckets' path prefixes, longest first, for `http.route`.
static ROUTES: std::sync::LazyLock<arc_swap::ArcSwap<Vec<Arc<str>>>> = std::sync::LazyLock::new(Default::default);

/// Names the routes (`http.route`): the buckets' path prefixes. Set by
/// every build of the app (a no-op with tracing off).
pub fn set_routes<'a>(prefixes: impl Iterator<Item = &'a str>) {
    if enabled() {
        let mut routes: Vec<Arc<str>> = prefixes.map(Arc::from).collect();
        routes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        ROUTES.store(Arc::new(routes));
    }
}

/// The route of a request path: `/health`, `/ready`, or the longest bucket
/// prefix it falls under (as the router matches them).
fn route_of(path: &str) -> Option<Arc<str>> {
    if path == "/health" || path == "/ready" {
        return Some(path.into());
    }
    ROUTES
        .load()
        .iter()
        .find(|p| yatagarasu_middleware::routing::prefix_matches(p, path))
        .cloned()
}

/// The span of one request, a child of the client's `traceparent` when it
/// sends one; [`Span::none`] when tracing is off.
pub fn request_span(req: &Request<Body>, request_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let method = req.method().as_str();
    let route = route_of(req.uri().path());
    // The name is fixed once the span starts (for its trace id, at once).
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        url.path = req.uri().path(),
        http.route = route.as_deref(),
        http.response.status_code = Empty,
        http.response.body.size = Empty,
        yatagarasu.request_id = request_id,
        yatagarasu.bucket = Empty,
        yatagarasu.cache = Empty,
        yatagarasu.auth = Empty,
        yatagarasu.replica = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// What the request span records once the response headers are known.
pub struct RequestOutcome<'a> {
    /// The bucket routed to.
    pub bucket: &'a str,
    /// `X-Cache` (`HIT`, `MISS`, `STALE`...).
    pub cache: &'a str,
    /// `success`, the auth failure (`missing`, `expired`...), or `none`.
    pub auth: &'a str,
    /// The replica that answered (`X-Yatagarasu-Replica`).
    pub replica: &'a str,
    /// The response status.
    pub status: u16,
}

/// Records `outcome` on a request span.
pub fn record_outcome(span: &Span, outcome: &RequestOutcome<'_>) {
    if span.is_none() {
        return;
    }
    span.record("yatagarasu.bucket", outcome.bucket);
    span.record("yatagarasu.cache", outcome.cache);
    span.record("yatagarasu.auth", outcome.auth);
    span.record("yatagarasu.replica", outcome.replica);
    span.record("http.response.status_code", outcome.status);
    if outcome.status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The trace id of a span, when it has a valid one.
pub fn trace_id(span: &Span) -> Option<TraceId> {
    if span.is_none() {
        return None;
    }
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then_some(id)
}

/// A trace id as the access log writes it: 32 hex digits, `-` without one.
pub struct TraceIdField(pub Option<TraceId>);

impl std::fmt::Display for TraceIdField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("-"),
        }
    }
}

/// Adds the W3C trace context of `span` (`traceparent`, `tracestate`) to `headers`.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
}
