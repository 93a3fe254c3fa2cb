//! Failover: two S3 servers as the `primary` and `backup` replicas of one
//! bucket. Sequential latency with the primary healthy; `SIGKILL` the
//! primary and time the first answer served by the backup; then the latency
//! with the primary's breaker open.

use std::time::{Duration, Instant};

use crate::data::{self, SMALL};
use crate::measure::{client, fmt_signed_us, fmt_us, get, interleaved_latency};
use crate::servers::{bucket_block, config, Proxy, S3Server};
use crate::suite::{Env, Outcome, Scenario};

/// The failover scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "failover",
    about: "breaker-open added latency; primary death to first backup answer",
    needs_bin: true,
    run,
};

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let primary_root = env.scratch().join("primary");
    let backup_root = env.scratch().join("backup");
    for r in [&primary_root, &backup_root] {
        data::write(r, SMALL, opts.etag_sidecar())?;
    }
    let mut primary = S3Server::start(&opts, "s3-primary", &primary_root, &env.logs)?;
    let backup = S3Server::start(&opts, "s3-backup", &backup_root, &env.logs)?;
    let replicas = format!(
        r#"      replicas:
        - {{ name: "primary", endpoint: "{}", priority: 1, timeout_seconds: 2 }}
        - {{ name: "backup", endpoint: "{}", priority: 2, timeout_seconds: 2 }}
      circuit_breaker:
        failure_threshold: 3
        success_threshold: 1
        timeout_seconds: 600
        half_open_requests: 1
      health_check:
        interval_seconds: 1
        timeout_seconds: 1
    cache:
      enabled: false
"#,
        primary.endpoint, backup.endpoint
    );
    let cfg = config(&bucket_block(&primary.endpoint, &replicas), "");
    let proxy = Proxy::start(&opts, "proxy-failover", &cfg, &env.logs)?;
    let client = client();
    let url = proxy.url(SMALL.key);
    let n = if opts.quick { 500 } else { 3000 };
    let healthy = env.rt.block_on(async {
        let first = get(&client, &url).await?;
        if first.status != 200 {
            return Err(format!("GET through the proxy: status {}", first.status));
        }
        if first.replica.as_deref() != Some("primary") {
            return Err(format!(
                "served by replica {:?}, expected primary",
                first.replica.as_deref().unwrap_or("none")
            ));
        }
        let s = interleaved_latency(&client, std::slice::from_ref(&url), SMALL.size as usize, 100, n).await?;
        Ok::<_, String>(s.into_iter().next().expect("one"))
    })?;
    // Kill the primary (SIGKILL: connections cut, port refused), then GET
    // until an answer comes from the backup.
    let died = Instant::now();
    primary.proc.kill();
    let limit = Duration::from_secs(if opts.quick { 8 } else { 15 });
    let (first_backup, errors) = env.rt.block_on(async {
        let mut errors = 0u32;
        while died.elapsed() < limit {
            match get(&client, &url).await {
                Ok(g) if g.status == 200 && g.replica.as_deref() == Some("backup") => {
                    return (Some(died.elapsed()), errors);
                }
                _ => errors += 1,
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (None, errors)
    });
    let Some(first_backup) = first_backup else {
        env.row(["failover", "death to first backup answer", "skipped", "", "", ""]);
        return Ok(Outcome::Skipped(format!(
            "failover not wired in this build (no answer from the backup within {}s of the primary's death; {errors} failed GETs)",
            limit.as_secs()
        )));
    };
    // Make sure the breaker is open (the threshold is 3 failures), then measure.
    let open = env.rt.block_on(async {
        for _ in 0..10 {
            let _ = get(&client, &url).await;
        }
        let s = interleaved_latency(&client, std::slice::from_ref(&url), SMALL.size as usize, 100, n).await?;
        Ok::<_, String>(s.into_iter().next().expect("one"))
    })?;
    drop(backup);
    let (h50, h99, o50, o99) = (healthy.pct(50.0), healthy.pct(99.0), open.pct(50.0), open.pct(99.0));
    env.row([
        "failover",
        "p50 / p99, primary's breaker open",
        &format!("{} / {}", fmt_us(o50), fmt_us(o99)),
        &format!("{} / {} (primary healthy)", fmt_us(h50), fmt_us(h99)),
        &format!("added {} / {}", fmt_signed_us(o50 - h50), fmt_signed_us(o99 - h99)),
        "",
    ]);
    env.row([
        "failover",
        "primary death to first backup answer",
        &fmt_us(first_backup.as_secs_f64() * 1e6),
        "",
        &format!("{errors} failed GETs before"),
        "",
    ]);
    Ok(Outcome::Done(format!(
        "breaker open p50 {} p99 {} vs primary healthy p50 {} p99 {}: added p50 {} p99 {}; primary death to first backup-served response {} ({errors} failed GETs before) [{n} sequential GETs each]",
        fmt_us(o50),
        fmt_us(o99),
        fmt_us(h50),
        fmt_us(h99),
        fmt_signed_us(o50 - h50),
        fmt_signed_us(o99 - h99),
        fmt_us(first_backup.as_secs_f64() * 1e6),
    )))
}
