//! Pass-through: a 4 KiB object with the bucket's cache off, so every
//! request reaches the S3 server, which verifies a SigV4 signature each
//! time on every path: the proxy presigns its own request; nginx
//! `proxy_pass` forwards a URL the client presigned for nginx's address
//! (with the client's `Host`); the direct path is a URL presigned for the
//! S3 server. Sequential latency (one connection, interleaved), then wrk at
//! every `--connections` count with the server's CPU per 100k requests.

use std::time::Duration;

use crate::data::{self, SMALL};
use crate::measure::{client, fmt_ratio, fmt_signed_us, fmt_us, get, interleaved_latency};
use crate::nginx::{Nginx, Site};
use crate::servers::{bucket_block, config, Proxy, S3Server, NO_CACHE};
use crate::suite::{Env, Outcome, Scenario};
use crate::wrk;

/// The pass-through scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "pass-through",
    about: "4 KiB, cache off, presigned on every path: vs nginx proxy_pass and direct; latency, req/s, CPU per 100k",
    needs_bin: true,
    run,
};

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    data::write(&env.root, SMALL, opts.etag_sidecar())?;
    let len = SMALL.size as usize;
    let s3 = S3Server::start(&opts, "s3-pass", &env.root, &env.logs)?;
    let proxy = Proxy::start(
        &opts,
        "proxy-pass",
        &config(&bucket_block(&s3.endpoint, NO_CACHE), ""),
        &env.logs,
    )?;
    let nginx = Nginx::start(
        env.scratch(),
        "nginx-pass",
        Site::Proxy {
            upstream: s3.endpoint.clone(),
            cache: false,
        },
        opts.access_log(),
    )?;
    let client = client();
    let direct = s3.presign(SMALL.key, Duration::from_secs(6 * 3600));
    let via = proxy.url(SMALL.key);
    let peer = nginx.url(SMALL.key);
    let n = if opts.quick { 1000 } else { 5000 };
    let (samples, cache_note) = env.rt.block_on(async {
        let probe = get(&client, &via).await?;
        let probe2 = get(&client, &via).await?;
        let note = match probe2.x_cache.as_deref() {
            Some(x) if x.starts_with("HIT") => format!(
                " (WARNING: X-Cache {x} with the cache off; first GET: {:?})",
                probe.x_cache
            ),
            _ => String::new(),
        };
        let s = interleaved_latency(&client, &[direct.clone(), via.clone(), peer.clone()], len, 100, n).await?;
        Ok::<_, String>((s, note))
    })?;
    let (d, p, g) = (&samples[0], &samples[1], &samples[2]);
    let label = "pass-through 4 KiB, 1 connection";
    for (name, pct) in [("p50 latency", 50.0), ("p99 latency", 99.0)] {
        let (dv, pv, gv) = (d.pct(pct), p.pct(pct), g.pct(pct));
        env.row([
            label,
            name,
            &fmt_us(pv),
            &format!("{} (nginx proxy_pass)", fmt_us(gv)),
            &fmt_ratio(pv / gv),
            "<= 1.0",
        ]);
        env.row([
            label,
            name,
            &fmt_us(pv),
            &format!("{} (direct)", fmt_us(dv)),
            &format!("added {}", fmt_signed_us(pv - dv)),
            "< 1 ms added",
        ]);
    }
    let mut lines = vec![format!(
        "1 connection p50/p99: direct {} / {}, nginx proxy_pass {} / {}, yatagarasu {} / {} [{n} sequential GETs each, interleaved]{cache_note}",
        fmt_us(d.pct(50.0)),
        fmt_us(d.pct(99.0)),
        fmt_us(g.pct(50.0)),
        fmt_us(g.pct(99.0)),
        fmt_us(p.pct(50.0)),
        fmt_us(p.pct(99.0)),
    )];

    for &c in &opts.connections {
        let label = format!("pass-through 4 KiB, -c{c}");
        let wd = wrk::measured(&opts, &direct, c, s3.proc.pid())?;
        let wg = wrk::measured(&opts, &peer, c, nginx.proc.pid())?;
        let wp = wrk::measured(&opts, &via, c, proxy.proc.pid())?;
        env.row([
            &label,
            "req/s",
            &format!("{:.0}", wp.wrk.rps),
            &format!("{:.0} (nginx proxy_pass)", wg.wrk.rps),
            &fmt_ratio(wp.wrk.rps / wg.wrk.rps),
            ">= 1.0",
        ]);
        env.row([
            &label,
            "req/s",
            &format!("{:.0}", wp.wrk.rps),
            &format!("{:.0} (direct)", wd.wrk.rps),
            &fmt_ratio(wp.wrk.rps / wd.wrk.rps),
            "",
        ]);
        env.row([
            &label,
            "CPU s / 100k requests",
            &format!("{:.2}", wp.cpu_per_100k()),
            &format!("{:.2} (nginx proxy_pass)", wg.cpu_per_100k()),
            &fmt_ratio(wp.cpu_per_100k() / wg.cpu_per_100k()),
            "<= 1.0",
        ]);
        lines.push(format!(
            "-c{c}: direct {}, nginx proxy_pass {} (CPU {:.2} s/100k), yatagarasu {} (CPU {:.2} s/100k); ratio to nginx {:.2}, to direct {:.2}",
            wrk::fmt(&wd.wrk),
            wrk::fmt(&wg.wrk),
            wg.cpu_per_100k(),
            wrk::fmt(&wp.wrk),
            wp.cpu_per_100k(),
            wp.wrk.rps / wg.wrk.rps,
            wp.wrk.rps / wd.wrk.rps,
        ));
    }
    Ok(Outcome::Done(lines.join("\n  ")))
}
