//! Cache hits: an object served from the proxy's memory tier, against nginx
//! `proxy_cache` in front of the same S3 server (and, for the small object,
//! nginx serving the file itself and `hyper-floor`, a bare hyper server
//! answering from memory), under wrk at every `--connections` count.
//! Figures: req/s (MiB/s for the 1 MiB object), p99, and the server's CPU
//! seconds per 100k hits (per GiB served for the 1 MiB object).

use crate::data::{self, human_size, Object, GIB, MIB};
use crate::measure::{client, expect_hit, fmt_ratio, fmt_us, get};
use crate::nginx::{Nginx, Site};
use crate::procs::Proc;
use crate::servers::{bucket_block, config, Floor, Proxy, S3Server, MEMORY_CACHE};
use crate::suite::{Env, Outcome, Scenario};
use crate::wrk::{self, Load};

/// 4 KiB hits vs nginx `proxy_cache` and nginx static.
pub const SMALL: Scenario = Scenario {
    name: "cache-hit",
    about: "4 KiB cache hits (memory tier) vs nginx proxy_cache and nginx static: req/s, p99, CPU per 100k hits",
    needs_bin: true,
    run: small,
};

/// 1 MiB hits vs nginx `proxy_cache`.
pub const MEDIUM: Scenario = Scenario {
    name: "cache-hit-1mib",
    about: "1 MiB cache hits (memory tier) vs nginx proxy_cache: MiB/s, p99, CPU per GiB",
    needs_bin: true,
    run: medium,
};

fn small(env: &mut Env) -> Result<Outcome, String> {
    run(env, data::SMALL, true)
}

fn medium(env: &mut Env) -> Result<Outcome, String> {
    run(env, data::MEDIUM, false)
}

/// A server the proxy is measured against.
enum Server {
    Nginx(Nginx),
    /// `hyper-floor`: a reference (no goal), with the access log off only.
    Floor(Floor),
}

/// A peer and the URL a client asks it for.
struct Peer {
    server: Server,
    url: String,
}

impl Peer {
    fn label(&self) -> &'static str {
        match &self.server {
            Server::Nginx(n) => n.site.label(),
            Server::Floor(_) => "hyper floor",
        }
    }

    fn proc(&self) -> &Proc {
        match &self.server {
            Server::Nginx(n) => &n.proc,
            Server::Floor(f) => &f.proc,
        }
    }

    /// The goal of the proxy's throughput against this peer.
    fn goal(&self, big: bool) -> &'static str {
        match (&self.server, big) {
            (
                Server::Nginx(Nginx {
                    site: Site::Proxy { .. },
                    ..
                }),
                true,
            ) => ">= 1.2",
            (Server::Nginx(_), false) => ">= 1.0",
            _ => "",
        }
    }
}

/// The CPU figure for `object`: per 100k hits, or per GiB served for large objects.
fn cpu_name(object: Object) -> &'static str {
    if object.size >= MIB {
        "CPU s / GiB served"
    } else {
        "CPU s / 100k hits"
    }
}

/// The server's CPU seconds per unit of [`cpu_name`].
fn cpu_figure(load: &Load, object: Object) -> f64 {
    if object.size >= MIB {
        let gib = load.wrk.requests as f64 * object.size as f64 / GIB;
        load.cpu_s / gib.max(f64::MIN_POSITIVE)
    } else {
        load.cpu_per_100k()
    }
}

fn run(env: &mut Env, object: Object, with_static: bool) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    data::write(&env.root, object, opts.etag_sidecar())?;
    let size = human_size(object.size);
    let tag = size.replace(' ', "");
    let big = object.size >= MIB;
    let s3 = S3Server::start(&opts, &format!("s3-cache-{tag}"), &env.root, &env.logs)?;
    let proxy = Proxy::start(
        &opts,
        &format!("proxy-cache-{tag}"),
        &config(&bucket_block(&s3.endpoint, ""), MEMORY_CACHE),
        &env.logs,
    )?;
    let client = client();
    let url = proxy.url(object.key);
    if let Err(e) = env.rt.block_on(expect_hit(&client, &url, object.size)) {
        env.row([&format!("cache hit {size}"), "req/s", "skipped", "", "", ""]);
        return Ok(Outcome::Skipped(format!("through the proxy: {e}")));
    }

    let mut sites = vec![Site::Proxy {
        upstream: s3.endpoint.clone(),
        cache: true,
    }];
    if with_static {
        sites.push(Site::Static { root: env.root.clone() });
    }
    let mut peers = Vec::new();
    for (i, site) in sites.into_iter().enumerate() {
        let nginx = Nginx::start(
            env.scratch(),
            &format!("nginx-cache-{tag}-{i}"),
            site,
            opts.access_log(),
        )?;
        let url = nginx.url(object.key);
        match nginx.site {
            Site::Proxy { .. } => env
                .rt
                .block_on(expect_hit(&client, &url, object.size))
                .map_err(|e| format!("{}: {e}", nginx.site.label()))?,
            Site::Static { .. } => whole_object(env, &client, &url, object, "nginx static")?,
        }
        peers.push(Peer {
            server: Server::Nginx(nginx),
            url,
        });
    }
    // The floor logs nothing: like for like only with the access log off.
    if with_static && !opts.access_log() {
        let file = env.root.join(data::BUCKET).join(object.key);
        match Floor::start(&format!("hyper-floor-{tag}"), &file, &env.logs)? {
            Some(floor) => {
                let url = floor.url(object.key);
                whole_object(env, &client, &url, object, "hyper floor")?;
                peers.push(Peer {
                    server: Server::Floor(floor),
                    url,
                });
            }
            None => {
                let label = format!("cache hit {size}");
                let why = "hyper floor not built (bench/run.sh builds it)";
                env.row([&label, "req/s", "skipped", why, "", ""]);
            }
        }
    }

    let mut summary = Vec::new();
    for &c in &opts.connections {
        let label = format!("cache hit {size}, -c{c}");
        let ours = wrk::measured(&opts, &url, c, proxy.proc.pid())?;
        let mut theirs = Vec::new();
        for p in &peers {
            theirs.push(wrk::measured(&opts, &p.url, c, p.proc().pid())?);
        }
        let our_cpu = cpu_figure(&ours, object);
        let mut line = format!("-c{c}: yatagarasu {}, CPU {our_cpu:.2} s", throughput(&ours, object),);
        for (p, t) in peers.iter().zip(&theirs) {
            let peer = p.label();
            let their_cpu = cpu_figure(t, object);
            let ratio = ours.wrk.rps / t.wrk.rps;
            let goal = p.goal(big);
            let reference = goal.is_empty() && !big;
            let (figure, ours_cell, theirs_cell) = if big {
                (
                    "MiB/s",
                    format!("{:.0}", ours.mibs(object.size)),
                    format!("{:.0}", t.mibs(object.size)),
                )
            } else {
                ("req/s", format!("{:.0}", ours.wrk.rps), format!("{:.0}", t.wrk.rps))
            };
            env.row([
                &label,
                figure,
                &ours_cell,
                &format!("{theirs_cell} ({peer})"),
                &fmt_ratio(ratio),
                goal,
            ]);
            env.row([
                &label,
                "p99 latency",
                &fmt_us(ours.wrk.p99_us),
                &format!("{} ({peer})", fmt_us(t.wrk.p99_us)),
                &fmt_ratio(ours.wrk.p99_us / t.wrk.p99_us),
                if c == 32 && !reference { "<= 1.0" } else { "" },
            ]);
            env.row([
                &label,
                cpu_name(object),
                &format!("{our_cpu:.2}"),
                &format!("{their_cpu:.2} ({peer})"),
                &fmt_ratio(our_cpu / their_cpu),
                if reference { "" } else { "<= 1.0" },
            ]);
            line.push_str(&format!(
                "; {peer} {}, CPU {their_cpu:.2} s, ratio {ratio:.2}",
                throughput(t, object)
            ));
        }
        summary.push(line);
    }
    drop(peers);
    let (hwm, _) = proxy.proc.memory_kib().unwrap_or((0, 0));
    Ok(Outcome::Done(format!(
        "{} [CPU = {} of the server; proxy peak RSS {} MiB]",
        summary.join("\n  "),
        cpu_name(object),
        hwm / 1024
    )))
}

/// Checks that `url` answers `object` whole (a peer serving the file itself).
fn whole_object(env: &Env, client: &reqwest::Client, url: &str, object: Object, peer: &str) -> Result<(), String> {
    let got = env.rt.block_on(get(client, url))?;
    if got.status != 200 || got.len as u64 != object.size {
        return Err(format!("{peer}: status {} with {} bytes", got.status, got.len));
    }
    Ok(())
}

/// `61234 req/s (p99 1.20 ms)` or `2930 MiB/s (p99 …)`, plus errors if any.
fn throughput(load: &Load, object: Object) -> String {
    let errors = if load.wrk.errors > 0 {
        format!(", {} ERRORS", load.wrk.errors)
    } else {
        String::new()
    };
    if object.size >= MIB {
        format!(
            "{:.0} MiB/s (p99 {}{errors})",
            load.mibs(object.size),
            fmt_us(load.wrk.p99_us)
        )
    } else {
        format!("{:.0} req/s (p99 {}{errors})", load.wrk.rps, fmt_us(load.wrk.p99_us))
    }
}
