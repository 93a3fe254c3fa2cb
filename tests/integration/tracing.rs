//! OpenTelemetry traces (issue 16), through the real binary: a loopback OTLP
//! receiver (an HTTP server of the test decoding the protobuf export) gets
//! the request span and a child span per replica attempt; the replicas (real
//! S3 servers) receive the trace context; the access log names the trace;
//! with tracing off nothing is exported and no trace header goes upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use crate::common::{client, eventually, s3, BucketConfig, Fault, Proxy, StartProxy};

/// The client's trace: its id and the span the proxy's request span continues.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver on a free loopback port: `POST /v1/traces` with a
/// protobuf `ExportTraceServiceRequest`.
struct Receiver {
    endpoint: String,
    exports: Arc<Mutex<u32>>,
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let exports = Arc::new(Mutex::new(0));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (e, s) = (exports.clone(), spans.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let (exports, spans) = (e.clone(), s.clone());
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    *exports.lock().unwrap() += 1;
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            spans
                                .lock()
                                .unwrap()
                                .extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        // On a thread of its own: the test blocks its runtime while it waits
        // for the proxy to exit, which is when the last export arrives.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver {
            endpoint,
            exports,
            spans,
        }
    }

    fn exports(&self) -> u32 {
        *self.exports.lock().unwrap()
    }

    /// The spans received so far of trace `trace` (hex).
    fn trace(&self, trace: &str) -> Vec<Span> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex::encode(&s.trace_id) == trace)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn services(&self) -> Vec<String> {
        self.spans.lock().unwrap().iter().map(|(svc, _)| svc.clone()).collect()
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// A span's attributes, as text.
fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

/// The first of `spans` for which `is` holds; panics naming `what`.
fn find_span<'a>(spans: &'a [Span], what: &str, is: impl Fn(&Span) -> bool) -> &'a Span {
    spans
        .iter()
        .find(|s| is(s))
        .unwrap_or_else(|| panic!("no {what} span among {spans:#?}"))
}

/// Whether `span` has attribute `key` with text `value`.
fn has_attr(span: &Span, key: &str, value: &str) -> bool {
    attrs(span).get(key).map(String::as_str) == Some(value)
}

impl Receiver {
    /// The spans of `trace` once at least `n` arrived (up to 15 s).
    async fn wait_for(&self, trace: &str, n: usize) -> Vec<Span> {
        let exported = eventually(Duration::from_secs(15), || {
            let spans = self.trace(trace);
            async move { spans.len() >= n }
        })
        .await;
        let spans = self.trace(trace);
        assert!(exported, "spans of {trace} not exported: {spans:#?}");
        spans
    }
}

/// `GET path` in the client's sampled trace ([`CLIENT_TRACE`], parent
/// [`CLIENT_SPAN`]) with a vendor `tracestate`.
async fn get_in_client_trace(proxy: &Proxy, path: &str) -> reqwest::Response {
    client()
        .get(proxy.url(path))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("tracestate", "vendor=opaque")
        .send()
        .await
        .unwrap()
}

/// `SIGTERM`: the proxy exits cleanly (flushing its traces).
fn terminate(proxy: &mut Proxy) {
    proxy.signal("TERM");
    assert_eq!(proxy.wait_exit(Duration::from_secs(20)), Some(0), "{}", proxy.logs());
}

/// Two replicas of `data-bucket`: `primary` first (no health checks: a
/// failing primary is still tried, then the backup).
fn config(primary: &str, backup: &str, extra: &str) -> String {
    BucketConfig::new("traced", "/t")
        .s3("      retry: { max_attempts: 1 }")
        .replica("primary", primary, "priority: 1, timeout_seconds: 2")
        .replica("backup", backup, "priority: 2, timeout_seconds: 2")
        .then("health_check: { enabled: false }")
        .then("metrics: { enabled: false }")
        .then(extra)
        .render()
}

/// The `traceparent` a replica received, split: (trace id, parent span id).
fn traceparent(headers: &http::HeaderMap) -> Option<(String, String)> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v}");
    Some((parts[1].to_owned(), parts[2].to_owned()))
}

/// A client's trace continued: the request span is the child of the
/// client's span; one replica span per attempt (the failed primary, the
/// backup), each a child of the request span whose id the replica received
/// in `traceparent`; the access log names the trace. Export on graceful
/// shutdown (the export interval is far longer than the test).
#[tokio::test]
async fn client_trace_is_continued_exported_and_sent_to_every_attempt() {
    let primary = s3().await;
    let backup = s3().await;
    for s in [&primary, &backup] {
        s.put_object("data-bucket", "a.txt", b"traced object\n").unwrap();
    }
    primary.set_fault(Fault::Error500);
    let receiver = Receiver::start();
    let mut proxy = Proxy::start(&config(
        &primary.endpoint(),
        &backup.endpoint(),
        &format!(
            "tracing: {{ otlp_endpoint: \"{}\", sample_ratio: 0.0, service_name: traced-proxy, export_interval_ms: 600000 }}",
            receiver.endpoint
        ),
    ));
    // sample_ratio 0 records no new trace: the client's sampled flag decides.
    let res = get_in_client_trace(&proxy, "/t/a.txt").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-yatagarasu-replica"], "backup");
    assert_eq!(res.text().await.unwrap(), "traced object\n");

    let needle = format!("trace_id={CLIENT_TRACE}");
    assert!(
        proxy.wait_for_log(&needle, Duration::from_secs(10)).await,
        "no access line with {needle}:\n{}",
        proxy.logs()
    );

    terminate(&mut proxy);
    let spans = receiver.trace(CLIENT_TRACE);
    assert!(receiver.services().iter().all(|s| s == "traced-proxy"));
    let request = find_span(&spans, "request", |s| has_attr(s, "url.path", "/t/a.txt"));
    assert_eq!(hex::encode(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(request.name, "GET /t");
    let a = attrs(request);
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.route"], "/t");
    assert_eq!(a["http.response.status_code"], "200");
    assert_eq!(a["http.response.body.size"], "14");
    assert_eq!(a["yatagarasu.bucket"], "traced");
    assert_eq!(a["yatagarasu.replica"], "backup");
    assert_eq!(a["yatagarasu.cache"], "-");
    assert_eq!(a["yatagarasu.auth"], "none");

    let attempts: Vec<&Span> = spans.iter().filter(|s| s.parent_span_id == request.span_id).collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for (replica, server, status, attempt) in [
        ("primary", &primary, None, ("1", "primary")),
        ("backup", &backup, Some("200"), ("2", "failover")),
    ] {
        let span = attempts
            .iter()
            .find(|s| has_attr(s, "yatagarasu.replica", replica))
            .unwrap_or_else(|| panic!("no span for {replica}: {attempts:#?}"));
        let a = attrs(span);
        assert_eq!(a["yatagarasu.bucket"], "traced");
        // The failover's attempt number and kind.
        assert_eq!(
            (a["yatagarasu.attempt"].as_str(), a["yatagarasu.attempt_kind"].as_str()),
            attempt,
            "{a:?}"
        );
        assert_eq!(a.get("http.response.status_code").map(String::as_str), status, "{a:?}");
        if status.is_some() {
            assert_eq!(a["http.response.body.size"], "14");
        } else {
            assert!(a.contains_key("error.type"), "{a:?}");
        }
        // The replica got this attempt's span as the parent, in the client's trace.
        let got = server
            .received()
            .iter()
            .find_map(|r| traceparent(&r.headers))
            .unwrap_or_else(|| panic!("{replica} received no traceparent"));
        assert_eq!(got, (CLIENT_TRACE.to_owned(), hex::encode(&span.span_id)));
        let state = server
            .received()
            .iter()
            .find_map(|r| r.headers.get("tracestate").cloned());
        assert_eq!(state.as_ref().and_then(|v| v.to_str().ok()), Some("vendor=opaque"));
    }
}

/// A request without a trace starts one (sampled at ratio 1); spans go out
/// on the export interval, before any shutdown; the JSON access line
/// carries the trace id the replica received.
#[tokio::test]
async fn new_trace_is_exported_and_logged_in_json() {
    let primary = s3().await;
    let backup = s3().await;
    primary.put_object("data-bucket", "b.txt", b"bee\n").unwrap();
    let receiver = Receiver::start();
    let proxy = Proxy::start(&config(
        &primary.endpoint(),
        &backup.endpoint(),
        &format!(
            "logging: {{ format: json }}\ntracing: {{ otlp_endpoint: \"{}/\", export_interval_ms: 100 }}",
            receiver.endpoint
        ),
    ));
    let res = client().get(proxy.url("/t/b.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let x_cache = res
        .headers()
        .get("x-cache")
        .map_or("-".to_owned(), |v| v.to_str().unwrap().to_owned());
    assert_eq!(res.text().await.unwrap(), "bee\n");

    let (trace, _) = primary
        .received()
        .iter()
        .find_map(|r| traceparent(&r.headers))
        .expect("the replica received a traceparent");
    let spans = receiver.wait_for(&trace, 2).await;
    let request = find_span(&spans, "root request", |s| s.parent_span_id.is_empty());
    assert_eq!(attrs(request)["yatagarasu.request_id"], id);
    assert!(spans
        .iter()
        .any(|s| s.parent_span_id == request.span_id && has_attr(s, "yatagarasu.replica", "primary")));
    assert!(receiver.services().iter().all(|s| s == "yatagarasu"));

    let logs = proxy.settled_logs().await;
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no JSON access line for {id}:\n{logs}"));
    assert_eq!(line["trace_id"], trace.as_str(), "{line}");
    // What the router, the failover and the cache told the edge.
    assert_eq!(line["bucket"], "traced", "{line}");
    assert_eq!(line["operation"], "GetObject", "{line}");
    assert_eq!(line["replica"], "primary", "{line}");
    assert_eq!(line["cache"], x_cache.as_str(), "{line}");
}

/// Tracing off (no `tracing.otlp_endpoint`, even with the OpenTelemetry
/// SDK's environment variables pointing at the receiver): nothing is
/// exported, up to and after a graceful exit, no trace header goes to the
/// replica although the client sent one, and the access line has no trace.
#[tokio::test]
async fn tracing_off_exports_nothing_and_adds_no_header() {
    let primary = s3().await;
    let backup = s3().await;
    primary.put_object("data-bucket", "c.txt", b"sea\n").unwrap();
    let receiver = Receiver::start();
    let mut proxy = Proxy::start_with_env(
        &config(&primary.endpoint(), &backup.endpoint(), ""),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint),
            ("OTEL_TRACES_EXPORTER", "otlp"),
        ],
    );
    let res = get_in_client_trace(&proxy, "/t/c.txt").await;
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let received = primary.received();
    assert!(!received.is_empty());
    for r in &received {
        assert!(r.headers.get("traceparent").is_none(), "{:?}", r.headers);
        assert!(r.headers.get("tracestate").is_none(), "{:?}", r.headers);
    }
    let logs = proxy.settled_logs().await;
    let line = logs
        .lines()
        .find(|l| l.contains(&id) && l.contains("status=200"))
        .unwrap_or_else(|| panic!("no access line for {id}:\n{logs}"));
    assert!(line.contains("trace_id=-"), "{line}");
    assert!(!logs.contains(CLIENT_TRACE), "{logs}");

    terminate(&mut proxy);
    assert_eq!(receiver.exports(), 0, "the receiver got an export");
}

/// `sample_ratio: 0` and no client trace: the request is not recorded, yet
/// it has a trace id, in its access line and in the `traceparent` the
/// replica gets (sampled flag off); nothing of it is exported, up to and
/// after a graceful exit (which flushes whatever was queued).
#[tokio::test]
async fn unsampled_request_keeps_its_trace_id_and_exports_nothing() {
    let primary = s3().await;
    let backup = s3().await;
    primary.put_object("data-bucket", "d.txt", b"dee\n").unwrap();
    let receiver = Receiver::start();
    let mut proxy = Proxy::start(&config(
        &primary.endpoint(),
        &backup.endpoint(),
        &format!(
            "tracing: {{ otlp_endpoint: \"{}\", sample_ratio: 0, export_interval_ms: 100 }}",
            receiver.endpoint
        ),
    ));
    let res = client().get(proxy.url("/t/d.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let sent = primary
        .received()
        .iter()
        .find_map(|r| r.headers.get("traceparent").cloned())
        .expect("the replica received a traceparent");
    let sent = sent.to_str().unwrap().to_owned();
    assert!(sent.starts_with("00-") && sent.ends_with("-00"), "{sent}");
    let (trace, _) = traceparent(&primary.received()[primary.received().len() - 1].headers).unwrap();
    let needle = format!("trace_id={trace}");
    assert!(
        proxy.wait_for_log(&needle, Duration::from_secs(10)).await,
        "no access line with {needle}:\n{}",
        proxy.logs()
    );
    terminate(&mut proxy);
    assert!(receiver.trace(&trace).is_empty(), "{:#?}", receiver.trace(&trace));
}

/// With the two-tier cache on a real redis-server: the Redis lookup of a
/// miss is a child span of the request, beside the replica attempt, and the
/// request span names the cache outcome.
#[tokio::test]
async fn redis_lookup_is_a_child_span_of_the_request() {
    let primary = s3().await;
    let backup = s3().await;
    primary.put_object("data-bucket", "e.txt", b"cached\n").unwrap();
    let redis = crate::common::Redis::start();
    let receiver = Receiver::start();
    let proxy = Proxy::start_with_env(
        &config(
            &primary.endpoint(),
            &backup.endpoint(),
            &format!(
                r#"cache:
  memory: {{ max_capacity: 1048576, ttl_seconds: 60 }}
  redis: {{ enabled: true, url: "${{REDIS_URL}}", ttl_seconds: 60, pool_size: 2 }}
tracing: {{ otlp_endpoint: "{}", export_interval_ms: 100 }}"#,
                receiver.endpoint
            ),
        ),
        &[("REDIS_URL", &redis.url())],
    );
    let res = client()
        .get(proxy.url("/t/e.txt"))
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "cached\n");
    let spans = receiver.wait_for(CLIENT_TRACE, 3).await;
    let request = find_span(&spans, "request", |s| hex::encode(&s.parent_span_id) == CLIENT_SPAN);
    assert_eq!(attrs(request)["yatagarasu.cache"], "MISS");
    let lookup = find_span(&spans, "redis.get", |s| s.name == "redis.get");
    assert_eq!(lookup.parent_span_id, request.span_id);
    let a = attrs(lookup);
    assert_eq!(a["db.system.name"], "redis");
    assert_eq!(a["yatagarasu.found"], "false");
    assert!(spans
        .iter()
        .any(|s| s.parent_span_id == request.span_id && s.name == "replica primary"));
}
