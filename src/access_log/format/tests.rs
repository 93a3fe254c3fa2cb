//! The formatter against the stock one, byte for byte.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::http::{HeaderValue, Method};
use opentelemetry::trace::TraceId;
use proptest::prelude::*;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use super::super::{AccessRecord, TARGET};
use super::fields::{debug_f64, json_f64, millis, RYU_FROM, RYU_UNTIL};
use super::timer::{rfc3339, Stamp};
use super::{format, layer_with_timer, Rfc3339};
use crate::access_log::tests::Captured;
use crate::metrics::Metrics;

/// One instant for both formatters.
#[derive(Clone)]
struct Fixed;

impl FormatTime for Fixed {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        w.write_str("2026-11-28T02:35:51.123456Z")
    }
}

/// What the stock tracing-subscriber layer (as the binary built it
/// before [`super::AccessFormat`]) and ours write for the same events.
fn both(json: bool, ansi: bool, emit: impl FnOnce()) -> (String, String) {
    let (stock_out, ours_out) = (Captured::default(), Captured::default());
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(stock_out.clone())
        .event_format(format().with_timer(Fixed));
    let stock = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.with_ansi(ansi).boxed()
    };
    let ours = layer_with_timer(json, ansi, ours_out.clone(), Fixed);
    let subscriber = tracing_subscriber::registry().with(stock).with(ours);
    tracing::subscriber::with_default(subscriber, emit);
    (stock_out.text(), ours_out.text())
}

fn record(metrics: &Arc<Metrics>, v: &Values) -> AccessRecord {
    AccessRecord {
        in_flight: metrics.in_flight(),
        started: Instant::now() - Duration::from_nanos(v.nanos),
        method: Method::from_bytes(v.method.as_bytes()).unwrap(),
        path: v.path.clone(),
        id: HeaderValue::from_str(&v.id).unwrap(),
        bucket: Arc::from(v.bucket.as_str()),
        operation: "GetObject",
        status: v.status,
        replica: v.replica.as_deref().map(|r| HeaderValue::from_str(r).unwrap()),
        cache: Some(HeaderValue::from_static("MISS")),
        hedge: "lost",
        identity: v.identity.clone(),
        bytes: v.bytes,
        expected: None,
        complete: v.bytes.is_multiple_of(2),
        duration_us: 0,
        trace_id: v.trace.map(TraceId::from),
        span: tracing::Span::none(),
    }
}

#[derive(Debug, Clone)]
struct Values {
    method: String,
    path: String,
    id: String,
    bucket: String,
    status: u16,
    replica: Option<String>,
    identity: Option<String>,
    bytes: u64,
    trace: Option<u128>,
    nanos: u64,
}

fn values() -> impl Strategy<Value = Values> {
    (
        "[A-Z]{1,8}",
        any::<String>(),
        "[ -~]{0,40}",
        any::<String>(),
        100u16..600,
        proptest::option::of("[!-~]{1,20}"),
        proptest::option::of(any::<String>()),
        any::<u64>(),
        proptest::option::of(1u128..),
        0u64..100_000_000_000,
    )
        .prop_map(
            |(method, path, id, bucket, status, replica, identity, bytes, trace, nanos)| Values {
                method,
                path,
                id,
                bucket,
                status,
                replica,
                identity,
                bytes,
                trace,
                nanos,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn access_lines_are_the_stock_formatters_bytes(v in values(), json in any::<bool>()) {
        let metrics = Metrics::new();
        let (stock, ours) = both(json, false, || drop(record(&metrics, &v)));
        prop_assert!(stock.contains("request"));
        prop_assert_eq!(stock, ours);
    }
}

#[test]
fn an_access_records_line_is_written_from_the_record() {
    // The event of a record's callsite, emitted with other values while the
    // record is set: the stock formatter writes the event's, ours the
    // record's (had ours visited the event, the lines would be equal).
    let metrics = Metrics::new();
    let v = Values {
        method: "GET".into(),
        path: "/from/the/record".into(),
        id: "rec".into(),
        bucket: "b".into(),
        status: 200,
        replica: None,
        identity: None,
        bytes: 1,
        trace: None,
        nanos: 0,
    };
    let set = record(&metrics, &v);
    let mut emitted = record(&metrics, &v);
    emitted.path = "/from/the/event".into();
    let (stock, ours) = both(false, false, || super::super::EMITTING.set(&set, || emitted.emit()));
    assert!(stock.contains(" path=/from/the/event "), "{stock}");
    assert!(ours.contains(" path=/from/the/record "), "{ours}");
}

#[test]
fn unusual_access_events_are_the_stock_formatters_bytes() {
    let error = io::Error::other("disk \"full\"");
    let emit = || {
        tracing::info!(target: TARGET, s = "a\"b\\c\u{1}\u{e9}\u{200b}", m = "x", "bell\x07 \x1b[31m \u{85}");
        tracing::info!(target: TARGET, neg = -5i64, big = u128::MAX, f = 1e-7, g = 1e16, h = f64::NAN, i = f64::INFINITY, j = -0.0);
        tracing::warn!(target: TARGET, message = "as a field", k = 1u64);
        tracing::info!(target: TARGET, message = "a str\x07 \x1b[31m \u{85}\u{e9}", k = 2u64);
        tracing::error!(target: TARGET, e = &error as &(dyn std::error::Error + 'static), "with an error");
        tracing::info!(target: TARGET, r#type = "raw", "raw name");
        tracing::info!(target: TARGET, ok = true, dbg = ?Some("q\"uote"), "debug");
        let span = tracing::info_span!("outer", k = 1);
        span.in_scope(|| tracing::info!(target: TARGET, in_span = 1u64, "in a span"));
        tracing::info!(target: "yatagarasu::server", other = 1u64, "not an access line");
    };
    for (json, ansi) in [(false, false), (true, false), (false, true)] {
        let (stock, ours) = both(json, ansi, emit);
        assert_eq!(stock.lines().count(), 9, "{stock}");
        assert_eq!(stock, ours, "json={json} ansi={ansi}");
    }
}

/// The date and time of `secs` as `httpdate` writes it (IMF-fixdate),
/// rearranged into RFC 3339.
fn reference(secs: u64, nanos: u32) -> String {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::new(secs, nanos));
    // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])
    .unwrap()
        + 1;
    format!("{}-{month:02}-{}T{}.{:06}Z", parts[3], parts[1], parts[4], nanos / 1000)
}

fn text(secs: u64, nanos: u32) -> String {
    rfc3339(secs, nanos).unwrap().to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn floats_in_the_ryu_range_print_as_debug(
        // Every float in the range equally likely (positive floats
        // order as their bits), and durations of 0.1 µs to 1 min.
        bits in RYU_FROM.to_bits()..RYU_UNTIL.to_bits(),
        ms in RYU_FROM..60_000.0,
    ) {
        for v in [f64::from_bits(bits), ms] {
            let mut buffer = ryu::Buffer::new();
            prop_assert_eq!(buffer.format_finite(v), format!("{v:?}"));
        }
    }
}

/// `millis` of `micros` with the `{:?}` and the JSON float formats, and
/// what `{:?}` and serde_json write for the same `f64`.
fn millis_both_ways(micros: u64) -> [(String, String); 2] {
    let value = micros as f64 / 1000.0;
    let (mut text, mut json) = (String::new(), String::new());
    millis(&mut text, micros, debug_f64).unwrap();
    millis(&mut json, micros, json_f64).unwrap();
    [
        (text, format!("{value:?}")),
        (json, serde_json::to_string(&value).unwrap()),
    ]
}

#[test]
fn milliseconds_from_their_digits_at_the_edges() {
    for micros in [
        0,
        1,
        10,
        100,
        999,
        1000,
        1001,
        1010,
        1100,
        12_000,
        123_456_789,
        999_999_999_999_999,
        1_000_000_000_000_000,
        u64::MAX,
    ] {
        for (ours, want) in millis_both_ways(micros) {
            assert_eq!(ours, want, "{micros} µs");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]
    #[test]
    fn milliseconds_from_their_digits(micros in 0u64..1_000_000_000_000_000, short in 0u64..100_000_000) {
        for m in [micros, short] {
            for (ours, want) in millis_both_ways(m) {
                prop_assert_eq!(ours, want);
            }
        }
    }
}

#[test]
fn ryu_and_debug_break_ties_differently_above_the_range() {
    // 1117621402692120.25, exactly halfway between the two shortest
    // digit strings.
    let v = f64::from_bits(4_832_296_172_135_338_178);
    assert_eq!(format!("{v:?}"), "1117621402692120.3");
    assert_eq!(ryu::Buffer::new().format_finite(v), "1117621402692120.2");
    assert!(v >= RYU_UNTIL);
}

#[test]
fn dates_at_the_edges() {
    for (secs, want) in [
        (0, "1970-01-01T00:00:00.000000Z"),
        (951_782_400, "2000-02-29T00:00:00.000000Z"),
        (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
        (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
        (253_402_300_799, "9999-12-31T23:59:59.000000Z"),
    ] {
        assert_eq!(text(secs, 0), want);
        assert_eq!(text(secs, 0), reference(secs, 0));
    }
    assert_eq!(text(1_795_314_951, 123_456_789), "2026-11-22T02:35:51.123456Z");
    assert_eq!(rfc3339(253_402_300_800, 0).map(|t| t.to_string()), None);
}

proptest! {
    #[test]
    fn dates_agree_with_httpdate(secs in 0u64..253_402_300_800, nanos in 0u32..1_000_000_000) {
        prop_assert_eq!(text(secs, nanos), reference(secs, nanos));
    }
}

#[test]
fn a_kept_second_is_written_as_without_it() {
    let mut stamp = Stamp::new();
    // Within a second, across a boundary, back (the clock stepped), and
    // past the last second humantime writes.
    for (secs, nanos) in [
        (1_795_314_951, 123_456_789),
        (1_795_314_951, 999_999_999),
        (1_795_314_951, 0),
        (1_795_314_952, 7_000),
        (1_795_314_952, 999_999),
        (1_795_314_950, 500_000_000),
        (253_402_300_799, 999_999_999),
        (1_795_314_950, 1_000),
    ] {
        assert_eq!(stamp.at(secs, nanos), Some(text(secs, nanos).as_str()));
    }
    assert_eq!(stamp.at(253_402_300_800, 0), None);
    assert_eq!(stamp.at(1_795_314_950, 1_000_000_000), None);
    assert_eq!(stamp.at(1_795_314_950, 2_000), Some("2026-11-22T02:35:50.000002Z"));
}

proptest! {
    #[test]
    fn kept_seconds_agree_with_humantime(
        start in 0u64..253_402_300_000,
        steps in proptest::collection::vec((0u64..3, 0u32..1_000_000_000), 1..20),
    ) {
        let mut stamp = Stamp::new();
        for (step, nanos) in steps {
            let secs = start + step;
            let want = text(secs, nanos);
            prop_assert_eq!(stamp.at(secs, nanos), Some(want.as_str()));
        }
    }
}

#[test]
fn the_timer_writes_what_the_stock_timer_writes() {
    // Same instants cannot be had: the stock timer reads the clock
    // itself. Ours must fall between two stock readings, in the same shape.
    let now = |timer: &dyn FormatTime| {
        let mut s = String::new();
        timer.format_time(&mut Writer::new(&mut s)).unwrap();
        s
    };
    // Twice: the second time from the thread's kept second.
    for _ in 0..2 {
        let before = now(&tracing_subscriber::fmt::time::SystemTime);
        let ours = now(&Rfc3339);
        let after = now(&tracing_subscriber::fmt::time::SystemTime);
        assert_eq!(ours.len(), before.len());
        assert!(before <= ours && ours <= after, "{before} {ours} {after}");
    }
}
