//! Cache hits from the shared tier: a Redis Cluster (3 primaries, 3
//! replicas, `redis-cli --cluster create`) against one Redis, with the
//! memory tier off so that every hit is a Redis `GET`. Figure: req/s of 4 KiB
//! hits under wrk at every `--connections` count, and their ratio (cluster /
//! standalone) from one run.

use std::time::{Duration, Instant};

use yatagarasu_testkit::redis::{Cluster, Redis};

use crate::data::{self, human_size};
use crate::measure::{client, fmt_ratio, get};
use crate::servers::{bucket_block, config, Proxy, S3Server};
use crate::suite::{Env, Outcome, Scenario};
use crate::wrk;

/// Redis Cluster vs standalone Redis, hits from the shared tier.
pub const SCENARIO: Scenario = Scenario {
    name: "cache-cluster",
    about: "4 KiB hits from the shared tier (memory tier off): Redis Cluster vs one Redis, req/s and ratio",
    needs_bin: true,
    run,
};

/// The proxy's `cache:` section: memory tier off, the shared tier as given.
fn cache_section(redis: &str) -> String {
    format!("cache:\n  memory:\n    max_capacity: 0\n  redis:\n    enabled: true\n    ttl_seconds: 3600\n    pool_size: 16\n    timeout_ms: 1000\n{redis}")
}

/// Waits until `url` answers `HIT-REDIS` (the fill is written in the background).
async fn expect_redis_hit(url: &str, len: u64) -> Result<(), String> {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = None;
    while Instant::now() < deadline {
        let got = get(&client, url).await?;
        if got.status == 200 && got.len as u64 == len && got.x_cache.as_deref() == Some("HIT-REDIS") {
            return Ok(());
        }
        last = got.x_cache;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{url}: never HIT-REDIS (last X-Cache: {last:?})"))
}

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let object = data::SMALL;
    data::write(&env.root, object, opts.etag_sidecar())?;
    let size = human_size(object.size);
    let s3 = S3Server::start(&opts, "s3-cache-cluster", &env.root, &env.logs)?;

    let single = Redis::builder()
        .dir(&env.logs.join("redis-standalone"))
        .log(&env.logs.join("redis-standalone.log"))
        .try_start();
    let single = match single {
        Ok(node) => node,
        Err(e) => return Ok(Outcome::Skipped(e)),
    };
    let cluster = Cluster::try_start_in(&env.logs.join("redis-cluster"))?;
    let seeds = cluster
        .seed_urls()
        .iter()
        .map(|url| format!("\"{url}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let tiers = [
        ("cluster", format!("    mode: cluster\n    urls: [{seeds}]\n")),
        ("standalone", format!("    url: \"{}\"\n", single.url())),
    ];
    let mut proxies = Vec::new();
    for (name, redis) in &tiers {
        let proxy = Proxy::start(
            &opts,
            &format!("proxy-redis-{name}"),
            &config(&bucket_block(&s3.endpoint, ""), &cache_section(redis)),
            &env.logs,
        )?;
        let url = proxy.url(object.key);
        env.rt
            .block_on(expect_redis_hit(&url, object.size))
            .map_err(|e| format!("{name}: {e}"))?;
        proxies.push((proxy, url));
    }

    let mut summary = Vec::new();
    for &c in &opts.connections {
        let cluster = wrk::measured(&opts, &proxies[0].1, c, proxies[0].0.proc.pid())?;
        let single = wrk::measured(&opts, &proxies[1].1, c, proxies[1].0.proc.pid())?;
        let ratio = cluster.wrk.rps / single.wrk.rps;
        env.row([
            &format!("redis hit {size}, cluster vs standalone, -c{c}"),
            "req/s",
            &format!("{:.0}", cluster.wrk.rps),
            &format!("{:.0}", single.wrk.rps),
            &fmt_ratio(ratio),
            "",
        ]);
        summary.push(format!(
            "-c{c}: cluster {:.0} req/s, standalone {:.0} req/s ({})",
            cluster.wrk.rps,
            single.wrk.rps,
            fmt_ratio(ratio)
        ));
    }
    Ok(Outcome::Done(summary.join("; ")))
}
