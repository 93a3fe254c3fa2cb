//! The per-replica series recorded on every attempt sent to a replica:
//! `yatagarasu_replica_requests_total`, `yatagarasu_replica_failures_total`
//! and `yatagarasu_replica_request_duration_seconds`.
//!
//! Like the per-request series ([`super::requests`]), they are Prometheus
//! collectors registered in the OpenTelemetry exporter's registry, one copy
//! per thread shard ([`super::shards`]), with each replica's handles
//! resolved once and kept: an attempt costs two lookups by `&str` (foldhash)
//! under its shard's read lock and an atomic add. The OpenTelemetry
//! instruments they replace copied the bucket and replica names into a
//! `KeyValue` set and sorted and hashed it (SipHash, `ValueMap::measure`) on
//! every attempt (issue 13): `bench/ir.sh pass` went from ~120.9k to
//! ~118.0k instructions per pass-through request with this change.
//!
//! Names, labels, help texts and buckets are the ones the OpenTelemetry
//! instruments exported, and a series appears when it did then: the counters
//! at [`ReplicaSeries::init`] (at zero) or at their first add, the histogram
//! at its first observation.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

/// Keyed by configured bucket and replica names (not the client's): foldhash,
/// not SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One bucket's replicas, by name.
type BucketReplicas = FastMap<Box<str>, ReplicaHandles>;

/// The per-replica series of every bucket.
pub(crate) struct ReplicaSeries {
    requests: IntCounterVec,
    failures: IntCounterVec,
    duration: HistogramVec,
    /// Bucket -> replica -> its handles, looked up by `&str` on every attempt.
    replicas: RwLock<FastMap<Box<str>, BucketReplicas>>,
}

/// One replica's series, each resolved (and so exported) on first use.
#[derive(Default)]
struct ReplicaHandles {
    requests: OnceLock<IntCounter>,
    failures: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
}

impl ReplicaSeries {
    /// The three collectors, unregistered (see [`super::shards`]: one per
    /// shard, registered as one); `duration_buckets` are the histogram's
    /// upper bounds, in seconds.
    pub(crate) fn new(duration_buckets: &[f64]) -> prometheus::Result<Self> {
        let labels = ["bucket", "replica"];
        let requests = IntCounterVec::new(
            Opts::new("yatagarasu_replica_requests_total", "Requests sent to a replica."),
            &labels,
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "yatagarasu_replica_failures_total",
                "Requests a replica failed (before or after its headers).",
            ),
            &labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "yatagarasu_replica_request_duration_seconds",
                "Time from sending a request to a replica to its response headers (or its failure).",
            )
            .buckets(duration_buckets.to_vec()),
            &labels,
        )?;
        Ok(Self {
            requests,
            failures,
            duration,
            replicas: RwLock::default(),
        })
    }

    /// Runs `f` on the handles of `replica` of `bucket`, added on first use.
    fn with<R>(&self, bucket: &str, replica: &str, f: impl FnOnce(&ReplicaHandles) -> R) -> R {
        {
            let map = self.replicas.read().unwrap_or_else(|e| e.into_inner());
            if let Some(handles) = map.get(bucket).and_then(|replicas| replicas.get(replica)) {
                return f(handles);
            }
        }
        // First use of this replica (or another thread added it meanwhile).
        let mut map = self.replicas.write().unwrap_or_else(|e| e.into_inner());
        let handles = map
            .entry(Box::from(bucket))
            .or_default()
            .entry(Box::from(replica))
            .or_default();
        f(handles)
    }

    /// `yatagarasu_replica_requests_total{bucket,replica}`.
    fn requests<'h>(&self, handles: &'h ReplicaHandles, bucket: &str, replica: &str) -> &'h IntCounter {
        handles
            .requests
            .get_or_init(|| self.requests.with_label_values(&[bucket, replica]))
    }

    /// `yatagarasu_replica_failures_total{bucket,replica}`.
    fn failures<'h>(&self, handles: &'h ReplicaHandles, bucket: &str, replica: &str) -> &'h IntCounter {
        handles
            .failures
            .get_or_init(|| self.failures.with_label_values(&[bucket, replica]))
    }

    /// Creates the request and failure counters of these replicas of `bucket`
    /// at zero (not the histogram: it appears at its first observation).
    pub(crate) fn init(&self, bucket: &str, replicas: &[&str]) {
        for replica in replicas {
            self.with(bucket, replica, |h| {
                self.requests(h, bucket, replica);
                self.failures(h, bucket, replica);
            });
        }
    }

    /// An attempt sent to `replica` of `bucket`.
    pub(crate) fn request(&self, bucket: &str, replica: &str) {
        self.with(bucket, replica, |h| self.requests(h, bucket, replica).inc());
    }

    /// An attempt `replica` of `bucket` failed.
    pub(crate) fn failure(&self, bucket: &str, replica: &str) {
        self.with(bucket, replica, |h| self.failures(h, bucket, replica).inc());
    }

    /// An attempt on `replica` of `bucket` got its headers (or failed) after `elapsed`.
    pub(crate) fn answered(&self, bucket: &str, replica: &str, elapsed: Duration) {
        self.with(bucket, replica, |h| {
            h.duration
                .get_or_init(|| self.duration.with_label_values(&[bucket, replica]))
                .observe(elapsed.as_secs_f64())
        });
    }
}

impl Collector for ReplicaSeries {
    fn desc(&self) -> Vec<&Desc> {
        [self.requests.desc(), self.failures.desc(), self.duration.desc()].concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        [
            self.requests.collect(),
            self.failures.collect(),
            self.duration.collect(),
        ]
        .concat()
    }
}
