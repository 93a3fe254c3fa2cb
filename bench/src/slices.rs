//! Range reads over a large object (`--stream-mib`, 1 GiB by default):
//! random 1 MiB `Range` requests, 8 at a time, through a proxy with slice
//! caching on (`cache.slice_size` 8 MiB, memory tier large enough for the
//! object) and one with it off (ranges pass through). Figures: req/s, and the
//! bytes asked of the replica, computed from the proxy's own counters:
//! `yatagarasu_cache_slice_fetches_total` x 8 MiB with slices on (an upper
//! bound: the last slice may be short), `yatagarasu_replica_requests_total`
//! x 1 MiB with them off.

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use crate::data::{write_object, MIB};
use crate::measure::{client, fmt_ratio};
use crate::procs::free_port;
use crate::servers::{bucket_block, Proxy, S3Server};
use crate::suite::{Env, Outcome, Scenario};

/// Slice caching on vs off under random 1 MiB ranges.
pub const SCENARIO: Scenario = Scenario {
    name: "slices",
    about:
        "random 1 MiB ranges over a --stream-mib object: slice caching on vs off, req/s and bytes asked of the replica",
    needs_bin: true,
    run,
};

const KEY: &str = "ranges.bin";
const SLICE: u64 = 8 * MIB;
const RANGE: u64 = MIB;
const CONCURRENCY: usize = 8;

/// A proxy config with metrics on `metrics_port` and `cache` as given.
fn proxy_config(endpoint: &str, metrics_port: u16, cache: &str) -> String {
    format!(
        "server:\n  address: \"127.0.0.1:0\"\n  shutdown_grace_seconds: 1\nmetrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: {metrics_port}\nhealth_check:\n  interval_seconds: 30\n  timeout_seconds: 2\n{cache}buckets:\n{}",
        bucket_block(endpoint, "")
    )
}

/// The value of an unlabelled counter in a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `requests` random 1 MiB ranges; returns req/s, checking every answer is a
/// 206 of 1 MiB.
async fn load(url: &str, size: u64, requests: usize) -> Result<f64, String> {
    let client = client();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ranges: Vec<u64> = (0..requests)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % (size - RANGE)
        })
        .collect();
    let t = Instant::now();
    let results: Vec<Result<(), String>> = stream::iter(ranges)
        .map(|first| {
            let client = client.clone();
            async move {
                let res = client
                    .get(url)
                    .header("range", format!("bytes={first}-{}", first + RANGE - 1))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = res.status().as_u16();
                let len = res.bytes().await.map_err(|e| e.to_string())?.len() as u64;
                if status != 206 || len != RANGE {
                    return Err(format!("range at {first}: status {status} with {len} bytes"));
                }
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), String>>()?;
    Ok(requests as f64 / t.elapsed().as_secs_f64())
}

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let size = opts.stream_mib() * MIB;
    if size < 2 * SLICE {
        return Ok(Outcome::Skipped(format!(
            "--stream-mib must be at least {}",
            2 * SLICE / MIB
        )));
    }
    write_object(&env.root, KEY, size, opts.etag_sidecar(), 0x5_1ce)?;
    let requests = if opts.quick { 200 } else { 2_000 };
    let s3 = S3Server::start(&opts, "s3-slices", &env.root, &env.logs)?;
    let on = format!(
        "cache:\n  slice_size: {SLICE}\n  memory:\n    max_capacity: {}\n    ttl_seconds: 3600\n",
        size + 64 * MIB
    );
    let off = "cache:\n  memory:\n    max_capacity: 67108864\n".to_owned();
    let mut figures = Vec::new();
    for (name, cache, counter_name, unit) in [
        ("on", on, "yatagarasu_cache_slice_fetches_total", SLICE),
        ("off", off, "yatagarasu_replica_requests_total", RANGE),
    ] {
        let port = free_port()?;
        let proxy = Proxy::start(
            &opts,
            &format!("proxy-slices-{name}"),
            &proxy_config(&s3.endpoint, port, &cache),
            &env.logs,
        )?;
        let rps = env.rt.block_on(load(&proxy.url(KEY), size, requests))?;
        let page = env.rt.block_on(async {
            let res = client()
                .get(format!("http://127.0.0.1:{port}/metrics"))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            res.text().await.map_err(|e| e.to_string())
        })?;
        let upstream = counter(&page, counter_name) * unit as f64;
        figures.push((rps, upstream));
    }
    let [(on_rps, on_bytes), (off_rps, off_bytes)] = [figures[0], figures[1]];
    let label = format!("{requests} random 1 MiB ranges of {} MiB, slices on vs off", size / MIB);
    env.row([
        &label,
        "req/s",
        &format!("{on_rps:.0}"),
        &format!("{off_rps:.0}"),
        &fmt_ratio(on_rps / off_rps),
        "",
    ]);
    env.row([
        &label,
        "MiB asked of the replica",
        &format!("{:.0}", on_bytes / MIB as f64),
        &format!("{:.0}", off_bytes / MIB as f64),
        &fmt_ratio(on_bytes / off_bytes.max(1.0)),
        "",
    ]);
    Ok(Outcome::Done(format!(
        "slices on {on_rps:.0} req/s, {:.0} MiB upstream; off {off_rps:.0} req/s, {:.0} MiB upstream",
        on_bytes / MIB as f64,
        off_bytes / MIB as f64
    )))
}
