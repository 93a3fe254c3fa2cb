//! Per-thread copies of the collectors recorded on every request, summed at
//! scrape (issue 13).
//!
//! A Prometheus counter, gauge or histogram is a set of atomics shared by
//! every thread. With one connection thread per core, each add on one core
//! pulled the counter's cache line away from the other. In `perf record` of
//! 4 KiB cache hits (`wrk -c32`, 2 cores), the locked adds of the request
//! series took 2.4% of the proxy's CPU, most of it on the instruction after
//! the `lock` (`perf annotate`).
//!
//! [`Shards`] keeps one copy of a collector per shard. A thread records into
//! its own shard ([`Shards::local`]); [`Shards::collect`] sums the shards'
//! samples by label set, so a scrape reads what one collector would have.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Counter, Gauge, Histogram, Metric, MetricFamily, MetricType};
use prometheus::Registry;

/// The next thread's shard number (modulo the shard count).
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The calling thread's number, taken at its first record.
    static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// How many shards: two per core (the connection threads and the runtime's
/// workers), at most 64.
fn shard_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 2).clamp(2, 64)
}

/// One copy of a collector per shard, the threads spread over them.
pub(crate) struct Shards<T> {
    shards: Box<[Padded<T>]>,
}

/// A shard on cache lines of its own (128 bytes: adjacent-line prefetch
/// pairs 64-byte lines). A shard's lock is written on every request; on a
/// line shared with the next shard it would move between cores as the
/// unsharded counters did.
#[repr(align(128))]
struct Padded<T>(T);

impl<T: Collector> Shards<T> {
    /// [`shard_count`] copies, each made by `make`.
    pub(crate) fn new<E>(make: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        Self::with_count(shard_count(), make)
    }

    fn with_count<E>(count: usize, mut make: impl FnMut() -> Result<T, E>) -> Result<Self, E> {
        let shards = std::iter::repeat_with(|| make().map(Padded))
            .take(count.max(1))
            .collect::<Result<_, E>>()?;
        Ok(Self { shards })
    }

    /// The calling thread's copy.
    pub(crate) fn local(&self) -> &T {
        self.of_thread(THREAD.with(|t| *t))
    }

    /// The copy of thread number `thread`.
    fn of_thread(&self, thread: usize) -> &T {
        &self.shards[thread % self.shards.len()].0
    }
}

impl<T: Collector + 'static> Shards<T> {
    /// Registers the shards in `registry` (as one collector) and returns them.
    pub(crate) fn register(self, registry: &Registry) -> prometheus::Result<Arc<Self>> {
        let shards = Arc::new(self);
        registry.register(Box::new(Registered(shards.clone())))?;
        Ok(shards)
    }
}

/// Shards as the registry holds them.
struct Registered<T>(Arc<Shards<T>>);

impl<T: Collector> Collector for Registered<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

impl<T: Collector> Collector for Shards<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.shards[0].0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        merge(self.shards.iter().flat_map(|shard| shard.0.collect()))
    }
}

/// Families of the same name merged into one, their metrics with the same
/// label values summed: counters and gauges by value, histograms bucket by
/// bucket with their counts and sums. Families keep their first order.
fn merge(families: impl IntoIterator<Item = MetricFamily>) -> Vec<MetricFamily> {
    let mut merged: Vec<(MetricFamily, HashMap<Vec<String>, usize>)> = Vec::new();
    for mut family in families {
        let metrics = family.take_metric();
        let at = match merged.iter().position(|(f, _)| f.name() == family.name()) {
            Some(at) => at,
            None => {
                merged.push((family, HashMap::new()));
                merged.len() - 1
            }
        };
        add_all(&mut merged[at], metrics);
    }
    merged.into_iter().map(|(family, _)| family).collect()
}

/// Adds `metrics` to `family`: each to the one with its label values, or as
/// a new one.
fn add_all((family, by_labels): &mut (MetricFamily, HashMap<Vec<String>, usize>), metrics: Vec<Metric>) {
    let kind = family.get_field_type();
    for metric in metrics {
        let labels: Vec<String> = metric.get_label().iter().map(|l| l.value().to_owned()).collect();
        match by_labels.get(&labels) {
            Some(&i) => add(kind, &mut family.mut_metric()[i], &metric),
            None => {
                by_labels.insert(labels, family.get_metric().len());
                family.mut_metric().push(metric);
            }
        }
    }
}

/// `into += from`, for a metric of type `kind`.
fn add(kind: MetricType, into: &mut Metric, from: &Metric) {
    match kind {
        MetricType::COUNTER => {
            let mut sum = Counter::default();
            sum.set_value(into.get_counter().get_value() + from.get_counter().get_value());
            into.set_counter(sum);
        }
        MetricType::GAUGE => {
            let mut sum = Gauge::default();
            sum.set_value(into.get_gauge().get_value() + from.get_gauge().get_value());
            into.set_gauge(sum);
        }
        MetricType::HISTOGRAM => {
            let (a, b) = (into.get_histogram(), from.get_histogram());
            let mut sum = Histogram::default();
            sum.set_sample_count(a.get_sample_count() + b.get_sample_count());
            sum.set_sample_sum(a.get_sample_sum() + b.get_sample_sum());
            sum.set_bucket(
                a.get_bucket()
                    .iter()
                    .zip(b.get_bucket())
                    .map(|(x, y)| {
                        let mut bucket = Bucket::default();
                        bucket.set_upper_bound(x.upper_bound());
                        bucket.set_cumulative_count(x.cumulative_count() + y.cumulative_count());
                        bucket
                    })
                    .collect(),
            );
            into.set_histogram(sum);
        }
        // Not sharded here (summaries, untyped): the first copy's stands.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, TextEncoder};

    use super::*;

    /// A counter vec, a histogram vec and a gauge: what the request series hold.
    struct Series {
        count: IntCounterVec,
        time: HistogramVec,
        live: IntGauge,
    }

    impl Series {
        fn new() -> prometheus::Result<Self> {
            Ok(Self {
                count: IntCounterVec::new(Opts::new("t_count_total", "Counted."), &["bucket", "method"])?,
                time: HistogramVec::new(
                    HistogramOpts::new("t_seconds", "Timed.").buckets(vec![0.01, 0.1, 1.0]),
                    &["bucket"],
                )?,
                live: IntGauge::new("t_live", "Alive.")?,
            })
        }

        fn record(&self, bucket: &str, method: &str, seconds: f64, live: i64) {
            self.count.with_label_values(&[bucket, method]).inc();
            self.time.with_label_values(&[bucket]).observe(seconds);
            self.live.add(live);
        }
    }

    impl Collector for Series {
        fn desc(&self) -> Vec<&Desc> {
            [self.count.desc(), self.time.desc(), self.live.desc()].concat()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            [self.count.collect(), self.time.collect(), self.live.collect()].concat()
        }
    }

    fn render(collector: impl Collector + 'static) -> String {
        let registry = Registry::new();
        registry.register(Box::new(collector)).unwrap();
        let mut out = Vec::new();
        TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Threads take different numbers, so different shards while there are
    /// fewer threads than shards.
    #[test]
    fn threads_take_different_numbers() {
        let numbers: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(|| THREAD.with(|t| *t)).join().unwrap())
            .collect();
        let mut distinct = numbers.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{numbers:?}");
        assert_eq!(THREAD.with(|t| *t), THREAD.with(|t| *t));
    }

    /// The same records spread over four shards and kept in one collector
    /// render the same text (sums exact: the durations are binary fractions).
    #[test]
    fn shards_render_what_one_collector_would() {
        let records: Vec<(&str, &str, f64, i64)> = (0..400)
            .map(|i| {
                let bucket = ["assets", "media", "logs"][i % 3];
                let method = ["GET", "HEAD"][i % 2];
                (bucket, method, f64::from(i as u32 % 9) / 8.0, [1, -1, 1][i % 3])
            })
            .collect();
        let one = Series::new().unwrap();
        for &(b, m, s, l) in &records {
            one.record(b, m, s, l);
        }
        let shards = Shards::with_count(4, Series::new).unwrap();
        for (i, &(b, m, s, l)) in records.iter().enumerate() {
            shards.of_thread(i / 7).record(b, m, s, l);
        }
        // Every shard has records of its own.
        assert!(shards
            .shards
            .iter()
            .all(|s| s.0.count.collect()[0].get_metric().len() == 6));
        let expected = render(one);
        assert!(
            expected.contains(r#"t_count_total{bucket="assets",method="GET"} 67"#),
            "{expected}"
        );
        assert_eq!(render(shards), expected);
    }

    /// A label set seen by one shard only is kept as it is; families are
    /// not mixed up by name.
    #[test]
    fn merge_keeps_label_sets_and_families_apart() {
        let a = Series::new().unwrap();
        let b = Series::new().unwrap();
        a.record("assets", "GET", 0.5, 2);
        b.record("media", "GET", 0.05, 3);
        b.record("assets", "GET", 2.0, 0);
        let merged = merge(a.collect().into_iter().chain(b.collect()));
        let names: Vec<&str> = merged.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["t_count_total", "t_seconds", "t_live"]);
        assert_eq!(merged[0].get_metric().len(), 2);
        let assets = merged[1]
            .get_metric()
            .iter()
            .find(|m| m.get_label()[0].value() == "assets")
            .unwrap()
            .get_histogram();
        assert_eq!(assets.get_sample_count(), 2);
        assert_eq!(assets.get_sample_sum(), 2.5);
        let counts: Vec<u64> = assets.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        assert_eq!(counts, [0, 0, 1]);
        assert_eq!(merged[2].get_metric()[0].get_gauge().get_value(), 5.0);
    }
}
