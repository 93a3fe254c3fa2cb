//! The access log's lines, pinned in both formats, and its filter.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Method};
use opentelemetry::trace::TraceId;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::{all_safe, AccessRecord, LogSafe, SAFE};
use crate::metrics::Metrics;

/// What the log layer wrote, line by line (the format tests use it too).
#[derive(Clone, Default)]
pub(super) struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Captured {
        self.clone()
    }
}

impl Captured {
    pub(super) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// An access record with every field set, `hostile` ones included.
fn full_record(metrics: &Arc<Metrics>) -> AccessRecord {
    AccessRecord {
        in_flight: metrics.in_flight(),
        started: Instant::now() - Duration::from_micros(1500),
        method: Method::GET,
        path: "/b/a b\"c=d\n\u{e9}".into(),
        id: HeaderValue::from_static("req-1"),
        bucket: Arc::from("media"),
        operation: "GetObject",
        status: 206,
        replica: Some(HeaderValue::from_static("eu-west")),
        cache: Some(HeaderValue::from_static("HIT")),
        hedge: "won",
        identity: Some("alice x=1".into()),
        bytes: 4096,
        expected: Some(4096),
        complete: true,
        duration_us: 0,
        trace_id: Some(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()),
        span: tracing::Span::none(),
    }
}

/// An access record with the optional fields absent.
fn bare_record(metrics: &Arc<Metrics>) -> AccessRecord {
    AccessRecord {
        in_flight: metrics.in_flight(),
        started: Instant::now(),
        method: Method::HEAD,
        path: "/nowhere".into(),
        id: HeaderValue::from_static("0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0"),
        bucket: Arc::from("-"),
        operation: "-",
        status: 404,
        replica: None,
        cache: None,
        hedge: "-",
        identity: None,
        bytes: 0,
        expected: None,
        complete: false,
        duration_us: 0,
        trace_id: None,
        span: tracing::Span::none(),
    }
}

/// The lines the binary's log layer writes for `emit`, with the filter `directives`.
fn logged(json: bool, directives: &str, emit: impl FnOnce()) -> String {
    let out = Captured::default();
    let layer = super::format::layer(json, false, out.clone()).with_filter(EnvFilter::new(directives));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
    out.text()
}

/// `line` with its timestamp replaced by `<ts>` and the value of
/// `duration_ms` by `<ms>`, once both are checked to be in the format
/// of the log (RFC 3339 UTC with microseconds; a float as `{:?}`
/// prints it in text, as serde_json does in JSON).
fn masked(line: &str, json: bool) -> String {
    let at = usize::from(json) * "{\"timestamp\":\"".len();
    let ts = &line[at..at + 27];
    let shape = ts.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        26 => b == b'Z',
        _ => b.is_ascii_digit(),
    });
    assert!(shape, "timestamp {ts:?} in {line}");
    let (head, ms) = line.split_once("duration_ms").unwrap();
    let ms = ms.trim_start_matches(['=', '"', ':']);
    let end = ms.find(['}', '\n']).unwrap();
    let (ms, tail) = ms.split_at(end);
    let value: f64 = ms.parse().unwrap();
    let printed = if json {
        serde_json::to_string(&value).unwrap()
    } else {
        format!("{value:?}")
    };
    assert_eq!(ms, printed, "{line}");
    assert!(value >= 0.0, "{line}");
    let sep = if json { "\":" } else { "=" };
    format!("{}<ts>{}duration_ms{sep}<ms>{tail}", &line[..at], &head[at + 27..])
}

#[test]
fn text_access_lines_are_pinned() {
    let metrics = Metrics::new();
    let out = logged(false, "info", || {
        drop(full_record(&metrics));
        drop(bare_record(&metrics));
    });
    let lines: Vec<_> = out.split_inclusive('\n').map(|l| masked(l, false)).collect();
    assert_eq!(
        lines,
        [
            "<ts>  INFO request request_id=req-1 method=GET path=/b/a%20b%22c%3Dd%0A%C3%A9 \
             bucket=media operation=\"GetObject\" status=206 bytes=4096 complete=true \
             replica=eu-west cache=HIT hedge=\"won\" identity=alice%20x%3D1 \
             trace_id=4bf92f3577b34da6a3ce929d0e0e4736 duration_ms=<ms>\n",
            "<ts>  INFO request request_id=0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0 method=HEAD \
             path=/nowhere bucket=- operation=\"-\" status=404 bytes=0 complete=false \
             replica=- cache=- hedge=\"-\" identity=- trace_id=- duration_ms=<ms>\n",
        ]
    );
}

#[test]
fn json_access_lines_are_pinned() {
    let metrics = Metrics::new();
    let out = logged(true, "info", || {
        drop(full_record(&metrics));
        drop(bare_record(&metrics));
    });
    let lines: Vec<_> = out.split_inclusive('\n').map(|l| masked(l, true)).collect();
    assert_eq!(
        lines,
        [
            "{\"timestamp\":\"<ts>\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":\"req-1\",\
             \"method\":\"GET\",\"path\":\"/b/a%20b%22c%3Dd%0A%C3%A9\",\"bucket\":\"media\",\
             \"operation\":\"GetObject\",\"status\":206,\"bytes\":4096,\"complete\":true,\
             \"replica\":\"eu-west\",\"cache\":\"HIT\",\"hedge\":\"won\",\"identity\":\"alice%20x%3D1\",\
             \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\",\"duration_ms\":<ms>}\n",
            "{\"timestamp\":\"<ts>\",\"level\":\"INFO\",\"message\":\"request\",\
             \"request_id\":\"0b3e7a52-5d0c-4b8e-9a51-2f1d93c4e6a0\",\"method\":\"HEAD\",\
             \"path\":\"/nowhere\",\"bucket\":\"-\",\"operation\":\"-\",\"status\":404,\"bytes\":0,\
             \"complete\":false,\"replica\":\"-\",\"cache\":\"-\",\"hedge\":\"-\",\"identity\":\"-\",\
             \"trace_id\":\"-\",\"duration_ms\":<ms>}\n",
        ]
    );
}

#[test]
fn the_access_target_can_be_turned_off() {
    let metrics = Metrics::new();
    for json in [false, true] {
        let out = logged(json, "info,yatagarasu::access=off", || {
            tracing::info!(target: "yatagarasu::server", "other line");
            drop(full_record(&metrics));
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("other line") && !out.contains("req-1"), "{out}");
        let out = logged(json, "warn", || drop(full_record(&metrics)));
        assert_eq!(out, "");
    }
}

#[test]
fn client_values_cannot_forge_fields() {
    assert_eq!(LogSafe("/data/a.txt").to_string(), "/data/a.txt");
    assert_eq!(
        LogSafe("x status=200 path=\"/y\"\nnext").to_string(),
        "x%20status%3D200%20path%3D%22/y%22%0Anext"
    );
    assert_eq!(LogSafe("caf\u{e9}\\").to_string(), "caf%C3%A9%5C");
    assert!(LogSafe(&"a".repeat(5000)).to_string().len() <= 1027);
    assert_eq!(LogSafe(&"a".repeat(5000)).to_string(), "a".repeat(1024) + "...");
    assert_eq!(LogSafe(&"a".repeat(1024)).to_string(), "a".repeat(1024));
    let cut = "a".repeat(1020) + "\u{e9}\u{e9}\u{e9}";
    assert_eq!(LogSafe(&cut).to_string(), "a".repeat(1020) + "%C3%A9%C3%A9...");
}

#[test]
fn the_word_check_agrees_with_the_table() {
    // Each byte value at each place of a word, beside the safe bytes
    // nearest the unsafe ones, then in the bytes left after the words.
    for len in [8, 16, 19] {
        for at in 0..len {
            for b in 0..=255u8 {
                for beside in [b'a', b'!', b'~', b'<', b'>', b'[', b']'] {
                    let mut v = vec![beside; len];
                    v[at] = b;
                    assert_eq!(all_safe(&v), SAFE[usize::from(b)], "{v:?}");
                }
            }
        }
    }
    let mut pair = [b'a'; 8];
    for b in 0..=255u8 {
        for c in 0..=255u8 {
            pair[3] = b;
            pair[4] = c;
            let want = SAFE[usize::from(b)] && SAFE[usize::from(c)];
            assert_eq!(all_safe(&pair), want, "{b} {c}");
        }
    }
}

proptest::proptest! {
    #[test]
    fn safe_values_are_written_whole(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
        proptest::prop_assert_eq!(all_safe(&bytes), bytes.iter().all(|&b| SAFE[usize::from(b)]));
    }
}
