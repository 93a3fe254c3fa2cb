//! The series recorded on every request: `yatagarasu_requests_total`,
//! `yatagarasu_request_duration_seconds` and `yatagarasu_response_bytes_total`.
//!
//! They are Prometheus collectors registered in the same registry as the
//! OpenTelemetry exporter, one copy per thread shard ([`super::shards`]),
//! with each label set resolved once per bucket and kept: a request costs a
//! lookup of its bucket under its shard's lock and a few atomic adds. The
//! OpenTelemetry instruments they replace built, sorted and hashed a
//! `KeyValue` set on every request (`ValueMap::measure`, ~5% of a cache hit's
//! CPU in `perf record -g`; issue 13). Names, labels, help texts and buckets
//! are the ones the OpenTelemetry instruments exported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// Methods a request can have, pre-resolved (any other is resolved per request).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// S3 operations the proxy names (`S3Operation::as_str`, `-` when no bucket matched).
const OPERATIONS: [&str; 10] = [
    "GetObject",
    "HeadObject",
    "ListObjectsV2",
    "ListObjects",
    "HeadBucket",
    "GetBucketLocation",
    "ListBuckets",
    "Unsupported",
    "Refused",
    "-",
];

/// `2xx`, `4xx`...: the status label.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `X-Cache` values the cache sends (`-` without a cache).
const CACHE_VALUES: [&str; 8] = [
    "-",
    "HIT-MEMORY",
    "HIT-REDIS",
    "SLICE",
    "MISS",
    "BYPASS",
    "STALE",
    "REVALIDATED",
];

/// `2xx`, `4xx`...: the status label, bounded whatever the upstream answers.
pub fn status_class(status: u16) -> &'static str {
    CLASSES[class_index(status)]
}

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

fn index(set: &[&str], value: &str) -> Option<usize> {
    set.iter().position(|k| *k == value)
}

/// The per-request series of every bucket (of one shard: see
/// [`super::shards`]).
pub(crate) struct RequestSeries {
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes: IntCounterVec,
    /// Looked up twice per request: foldhash, not SipHash (the names are
    /// the configured buckets', not the client's). A mutex, not a read
    /// lock: the shard's threads are few, and one lock covers the lookups.
    buckets: Mutex<FastMap<Arc<str>, BucketSeries>>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One bucket's series, each label set resolved on first use and kept by
/// its index in the fixed sets (only the label sets seen take memory: a
/// shard per thread made dense arrays ~12 KiB per bucket and thread).
#[derive(Default)]
struct BucketSeries {
    requests: FastMap<u16, IntCounter>,
    duration: FastMap<u16, Histogram>,
    bytes: Option<IntCounter>,
}

impl RequestSeries {
    /// The three collectors, unregistered (see [`super::shards`]: one per
    /// shard, registered as one).
    pub(crate) fn new(duration_buckets: &[f64]) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("yatagarasu_requests_total", "Requests answered by the proxy."),
            &["bucket", "method", "operation", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "yatagarasu_request_duration_seconds",
                "Time from request to the end of the response body.",
            )
            .buckets(duration_buckets.to_vec()),
            &["bucket", "operation", "status_class", "cache"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new(
                "yatagarasu_response_bytes_total",
                "Response body bytes sent to clients.",
            ),
            &["bucket"],
        )?;
        Ok(Self {
            requests,
            duration,
            bytes,
            buckets: Mutex::default(),
        })
    }

    /// Runs `f` on the series of `bucket`, added on first use.
    fn with_bucket<R>(&self, bucket: &str, f: impl FnOnce(&mut BucketSeries) -> R) -> R {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = buckets.get_mut(bucket) {
            return f(series);
        }
        f(buckets.entry(Arc::from(bucket)).or_default())
    }

    /// A finished request.
    pub(crate) fn done(
        &self,
        bucket: &str,
        method: &str,
        operation: &str,
        status: u16,
        cache: &str,
        elapsed: Duration,
    ) {
        self.with_bucket(bucket, |series| {
            let class = class_index(status);
            let op = index(&OPERATIONS, operation);
            match (index(&METHODS, method), op) {
                (Some(m), Some(o)) => series
                    .requests
                    .entry(((m * OPERATIONS.len() + o) * CLASSES.len() + class) as u16)
                    .or_insert_with(|| {
                        self.requests
                            .with_label_values(&[bucket, METHODS[m], OPERATIONS[o], CLASSES[class]])
                    })
                    .inc(),
                // A label value outside the fixed sets: resolved now.
                _ => self
                    .requests
                    .with_label_values(&[bucket, method, operation, CLASSES[class]])
                    .inc(),
            }
            let seconds = elapsed.as_secs_f64();
            match (op, index(&CACHE_VALUES, cache)) {
                (Some(o), Some(c)) => series
                    .duration
                    .entry(((o * CLASSES.len() + class) * CACHE_VALUES.len() + c) as u16)
                    .or_insert_with(|| {
                        self.duration
                            .with_label_values(&[bucket, OPERATIONS[o], CLASSES[class], CACHE_VALUES[c]])
                    })
                    .observe(seconds),
                _ => self
                    .duration
                    .with_label_values(&[bucket, operation, CLASSES[class], cache])
                    .observe(seconds),
            }
        });
    }

    /// Body bytes sent for a request of `bucket`.
    pub(crate) fn bytes_sent(&self, bucket: &str, bytes: u64) {
        self.with_bucket(bucket, |series| {
            series
                .bytes
                .get_or_insert_with(|| self.bytes.with_label_values(&[bucket]))
                .inc_by(bytes)
        });
    }
}

impl Collector for RequestSeries {
    fn desc(&self) -> Vec<&Desc> {
        [self.requests.desc(), self.duration.desc(), self.bytes.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        [self.requests.collect(), self.duration.collect(), self.bytes.collect()].concat()
    }
}
