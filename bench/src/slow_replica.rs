//! Slow replica: two S3 servers as equal-priority twins of one bucket, one
//! behind a loopback TCP proxy that holds every request 200 ms. Sequential
//! GETs with hedging and latency-aware choice off, then on: p50 / p99 and
//! the share of requests the slow twin served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::data::{self, SMALL};
use crate::measure::{client, fmt_us, get, Samples};
use crate::servers::{bucket_block, config, Proxy, S3Server};
use crate::suite::{Env, Outcome, Scenario};

/// The slow-replica scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "slow_replica",
    about: "one twin 200 ms slower: p50/p99 and its share, hedging + latency-aware off vs on",
    needs_bin: true,
    run,
};

const DELAY: Duration = Duration::from_millis(200);

/// A TCP proxy in front of `upstream` holding each chunk from the client
/// `DELAY` before forwarding it (one small GET is one chunk).
async fn delaying_proxy(upstream: String) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        tokio::time::sleep(DELAY).await;
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! {
                    () = up => {}
                    () = down => {}
                }
            });
        }
    });
    Ok(format!("http://{addr}"))
}

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let (fast_root, slow_root) = (env.scratch().join("fast"), env.scratch().join("slow"));
    for r in [&fast_root, &slow_root] {
        data::write(r, SMALL, opts.etag_sidecar())?;
    }
    let fast = S3Server::start(&opts, "s3-fast", &fast_root, &env.logs)?;
    let slow = S3Server::start(&opts, "s3-slow", &slow_root, &env.logs)?;
    let slow_endpoint = env.rt.block_on(delaying_proxy(slow.endpoint.clone()))?;
    let n = if opts.quick { 100 } else { 500 };
    let mut results = Vec::new();
    for (label, extra) in [
        ("off", ""),
        (
            "on",
            "      hedge: { enabled: true, delay_ms: \"p95\", max_extra_percent: 10 }\n      latency_aware: { enabled: true }\n",
        ),
    ] {
        let replicas = format!(
            "{extra}      replicas:\n        - {{ name: \"fast\", endpoint: \"{}\", priority: 1 }}\n        - {{ name: \"slow\", endpoint: \"{slow_endpoint}\", priority: 1 }}\n    cache:\n      enabled: false\n",
            fast.endpoint
        );
        let cfg = config(&bucket_block(&fast.endpoint, &replicas), "");
        let proxy = Proxy::start(&opts, &format!("proxy-slow-replica-{label}"), &cfg, &env.logs)?;
        let url = proxy.url(SMALL.key);
        let (samples, to_slow) = env.rt.block_on(async {
            let client = client();
            let mut samples = Samples::default();
            let mut to_slow = 0usize;
            for _ in 0..n {
                let started = Instant::now();
                let got = get(&client, &url).await?;
                if got.status != 200 {
                    return Err(format!("GET through the proxy: status {}", got.status));
                }
                samples.push(started.elapsed());
                to_slow += usize::from(got.replica.as_deref() == Some("slow"));
            }
            Ok::<_, String>((samples, to_slow))
        })?;
        drop(proxy);
        let share = 100.0 * to_slow as f64 / n as f64;
        env.row([
            "slow_replica",
            &format!("p50 / p99, slow twin's share, hedging + latency-aware {label}"),
            &format!("{} / {}", fmt_us(samples.pct(50.0)), fmt_us(samples.pct(99.0))),
            "",
            &format!("{share:.0}% to the slow twin"),
            "",
        ]);
        results.push(format!(
            "{label}: p50 {} p99 {}, {share:.0}% served by the slow twin",
            fmt_us(samples.pct(50.0)),
            fmt_us(samples.pct(99.0))
        ));
    }
    drop((fast, slow));
    Ok(Outcome::Done(format!(
        "{} [{n} sequential GETs each, one twin behind +{} ms]",
        results.join("; "),
        DELAY.as_millis()
    )))
}
