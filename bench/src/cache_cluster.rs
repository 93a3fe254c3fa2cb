//! Cache hits from the shared tier: a Redis Cluster (3 primaries, 3
//! replicas, `redis-cli --cluster create`) against one Redis, with the
//! memory tier off so that every hit is a Redis `GET`. Figure: req/s of 4 KiB
//! hits under wrk at every `--connections` count, and their ratio (cluster /
//! standalone) from one run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::data::{self, human_size};
use crate::measure::{client, fmt_ratio, get};
use crate::procs::{free_port, wait_port, Proc};
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

/// One `redis-server` on a free loopback port, in its own directory.
fn redis_node(logs: &Path, name: &str, cluster: bool) -> Result<(Proc, u16), String> {
    let port = free_port()?;
    let dir = logs.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .current_dir(&dir);
    if cluster {
        cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
    }
    let proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
    if !wait_port(([127, 0, 0, 1], port).into(), Duration::from_secs(10)) {
        return Err(format!("{name} did not listen on {port} (is redis-server installed?)"));
    }
    Ok((proc, port))
}

/// `redis-cli -p PORT args...` stdout.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Six cluster nodes joined as 3 primaries with one replica each; returns
/// the processes and the ports once every node reports `cluster_state:ok`.
fn start_cluster(logs: &Path) -> Result<(Vec<Proc>, Vec<u16>), String> {
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for i in 0..6 {
        let (p, port) = redis_node(logs, &format!("redis-cluster-{i}"), true)?;
        procs.push(p);
        ports.push(port);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    if !out.status.success() {
        return Err(format!("cluster create: {}", String::from_utf8_lossy(&out.stdout)));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ports
            .iter()
            .all(|&p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            return Ok((procs, ports));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("the cluster never reached cluster_state:ok".into())
}

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

    let (_single, single_port) = match redis_node(&env.logs, "redis-standalone", false) {
        Ok(node) => node,
        Err(e) => return Ok(Outcome::Skipped(e)),
    };
    let (_cluster, ports) = start_cluster(&env.logs)?;
    let seeds = ports
        .iter()
        .take(3)
        .map(|p| format!("\"redis://127.0.0.1:{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let tiers = [
        ("cluster", format!("    mode: cluster\n    urls: [{seeds}]\n")),
        ("standalone", format!("    url: \"redis://127.0.0.1:{single_port}\"\n")),
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
