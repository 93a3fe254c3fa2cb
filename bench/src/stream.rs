//! Streaming: one large object (`--stream-mib`) over one connection from the
//! S3 server: straight (presigned), through the proxy (cache off), and
//! through nginx `proxy_pass` (a URL presigned for nginx). MiB/s (best of
//! the runs), CPU seconds per GiB of the S3 server, of the proxy or nginx in
//! the middle, and of the client; the proxy's peak RSS. Then the same with
//! nginx serving the file as a much faster origin (s3s-fs caps both middles
//! at its own speed): direct, through the proxy, through nginx `proxy_pass`.

use std::time::{Duration, Instant};

use crate::data::{self, human_size, BIG_KEY, GIB, MIB};
use crate::measure::{client, fmt_ratio, stream_once};
use crate::nginx::{Nginx, Site};
use crate::procs::{cpu_secs, cpu_tree};
use crate::servers::{bucket_block, config, Proxy, S3Server, NO_CACHE};
use crate::suite::{Env, Outcome, Scenario};

/// The streaming scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "stream",
    about: "one large object, one connection: vs nginx proxy_pass and direct; MiB/s, CPU per GiB, proxy peak RSS",
    needs_bin: true,
    run,
};

/// One way to the object: a URL and the process in the middle, if any.
pub struct Way {
    url: String,
    middle: Option<u32>,
}

impl Way {
    /// `url`, served through the process `middle` (its CPU is measured).
    pub fn new(url: String, middle: Option<u32>) -> Self {
        Self { url, middle }
    }
}

/// What streaming one way measured.
#[derive(Debug, Clone, Copy)]
pub struct WayFigures {
    /// Best of the runs.
    pub mibs: f64,
    /// CPU seconds per GiB (mean over the runs): origin, middle, client.
    pub cpu: [f64; 3],
}

/// Streams the object `runs` times each way (alternating) and keeps the best
/// time of each, and the mean CPU time per GiB of the origin, the middle
/// process and this process.
pub fn measure(
    env: &Env,
    client: &reqwest::Client,
    ways: &[Way],
    origin_pid: u32,
    size: u64,
    runs: usize,
) -> Result<Vec<WayFigures>, String> {
    let gib = size as f64 / GIB;
    let cpu_now = |middle: Option<u32>| [cpu_tree(origin_pid), middle.map_or(0.0, cpu_tree), cpu_secs("self")];
    env.rt.block_on(async {
        let mut out = vec![
            WayFigures {
                mibs: 0.0,
                cpu: [0.0; 3]
            };
            ways.len()
        ];
        for _ in 0..runs {
            for (way, fig) in ways.iter().zip(out.iter_mut()) {
                let c0 = cpu_now(way.middle);
                let (n, secs) = stream_once(client, &way.url).await?;
                if n != size {
                    return Err(format!("{}: {n} of {size} bytes", way.url));
                }
                let c1 = cpu_now(way.middle);
                for i in 0..3 {
                    fig.cpu[i] += (c1[i] - c0[i]) / gib / runs as f64;
                }
                fig.mibs = fig.mibs.max(size as f64 / MIB as f64 / secs);
            }
        }
        Ok(out)
    })
}

/// `s3s 5.10 + proxy 0.30 + client 0.80` (no middle term when `middle` is empty).
fn fmt_cpu(origin: &str, middle: &str, c: [f64; 3]) -> String {
    if middle.is_empty() {
        format!("{origin} {:.2} + client {:.2}", c[0], c[2])
    } else {
        format!("{origin} {:.2} + {middle} {:.2} + client {:.2}", c[0], c[1], c[2])
    }
}

/// The goal rows of one origin: MiB/s against nginx `proxy_pass` and against
/// direct (`direct`: that row's figure and the peer's name), CPU per GiB
/// against nginx; the figures are direct's, the proxy's and nginx's.
fn goal_rows(env: &mut Env, label: &str, [direct, ours, theirs]: [WayFigures; 3], direct_row: (&str, &str)) {
    let (figure, name) = direct_row;
    env.row([
        label,
        "MiB/s",
        &format!("{:.0}", ours.mibs),
        &format!("{:.0} (nginx proxy_pass)", theirs.mibs),
        &fmt_ratio(ours.mibs / theirs.mibs),
        ">= 1.5",
    ]);
    env.row([
        label,
        figure,
        &format!("{:.0}", ours.mibs),
        &format!("{:.0} ({name})", direct.mibs),
        &fmt_ratio(ours.mibs / direct.mibs),
        ">= 0.9",
    ]);
    env.row([
        label,
        "CPU s / GiB streamed",
        &format!("{:.2}", ours.cpu[1]),
        &format!("{:.2} (nginx proxy_pass)", theirs.cpu[1]),
        &fmt_ratio(ours.cpu[1] / theirs.cpu[1]),
        "<= 1.0",
    ]);
}

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let t = Instant::now();
    let size = data::write_object(&env.root, BIG_KEY, opts.stream_mib() * MIB, opts.etag_sidecar(), 1)?;
    let wrote = t.elapsed().as_secs_f64();
    let runs = if opts.quick { 2 } else { 3 };
    let label = format!("stream {}, 1 connection", human_size(size));
    let ttl = Duration::from_secs(6 * 3600);

    let s3 = S3Server::start(&opts, "s3-stream", &env.root, &env.logs)?;
    let proxy = Proxy::start(
        &opts,
        "proxy-stream",
        &config(&bucket_block(&s3.endpoint, NO_CACHE), ""),
        &env.logs,
    )?;
    let nginx = Nginx::start(
        env.scratch(),
        "nginx-stream",
        Site::Proxy {
            upstream: s3.endpoint.clone(),
            cache: false,
        },
        opts.access_log(),
    )?;
    let (hwm_start_kib, _) = proxy.proc.memory_kib().ok_or("cannot read the proxy's /proc status")?;
    let ways = [
        Way {
            url: s3.presign(BIG_KEY, ttl),
            middle: None,
        },
        Way {
            url: proxy.url(BIG_KEY),
            middle: Some(proxy.proc.pid()),
        },
        Way {
            url: nginx.url(BIG_KEY),
            middle: Some(nginx.proc.pid()),
        },
    ];
    let f = measure(env, &client(), &ways, s3.proc.pid(), size, runs)?;
    let (hwm_kib, rss_kib) = proxy.proc.memory_kib().ok_or("cannot read the proxy's /proc status")?;
    drop(nginx);
    drop(proxy);
    drop(s3);
    let [direct, ours, theirs] = [f[0], f[1], f[2]];
    goal_rows(env, &label, [direct, ours, theirs], ("MiB/s", "direct"));
    env.row([
        &label,
        "proxy peak RSS (VmHWM)",
        &format!("{:.1} MiB", hwm_kib as f64 / 1024.0),
        &format!("{:.1} MiB at start", hwm_start_kib as f64 / 1024.0),
        "",
        "flat, < 64 MiB",
    ]);
    let mut lines = vec![format!(
        "direct {:.0} MiB/s, nginx proxy_pass {:.0} MiB/s, yatagarasu {:.0} MiB/s: ratio to nginx {:.2} (goal >= 1.5), to direct {:.2} (goal >= 0.9); proxy peak RSS {:.1} MiB ({:.1} at start, {:.1} now) [best of {runs}; CPU s/GiB direct: {}; nginx: {}; proxy: {}; object written in {wrote:.1}s; s3s-fs MD5 per GET: {}]",
        direct.mibs,
        theirs.mibs,
        ours.mibs,
        ours.mibs / theirs.mibs,
        ours.mibs / direct.mibs,
        hwm_kib as f64 / 1024.0,
        hwm_start_kib as f64 / 1024.0,
        rss_kib as f64 / 1024.0,
        fmt_cpu("s3s", "", direct.cpu),
        fmt_cpu("s3s", "nginx", theirs.cpu),
        fmt_cpu("s3s", "proxy", ours.cpu),
        if opts.etag_sidecar() { "no (etag sidecar)" } else { "yes, every path" },
    )];

    // nginx serving the file as the origin: the proxy's own ceiling, with
    // an origin much faster than s3s-fs (nginx ignores the signature; the
    // proxy signs all the same).
    let origin = Nginx::start(
        env.scratch(),
        "nginx-stream-origin",
        Site::Static { root: env.root.clone() },
        false,
    )?;
    let proxy = Proxy::start(
        &opts,
        "proxy-stream-nginx",
        &config(&bucket_block(&origin.base, NO_CACHE), ""),
        &env.logs,
    )?;
    // nginx `proxy_pass` in front of the same fast origin: the peer where
    // the origin does not cap both paths (s3s-fs above does).
    let peer = Nginx::start(
        env.scratch(),
        "nginx-stream-peer",
        Site::Proxy {
            upstream: origin.base.clone(),
            cache: false,
        },
        opts.access_log(),
    )?;
    let ways = [
        Way {
            url: origin.url(BIG_KEY),
            middle: None,
        },
        Way {
            url: proxy.url(BIG_KEY),
            middle: Some(proxy.proc.pid()),
        },
        Way {
            url: peer.url(BIG_KEY),
            middle: Some(peer.proc.pid()),
        },
    ];
    let g = measure(env, &client(), &ways, origin.proc.pid(), size, runs)?;
    drop(peer);
    goal_rows(
        env,
        &format!("{label}, nginx static origin"),
        [g[0], g[1], g[2]],
        ("MiB/s (the proxy's ceiling)", "direct from nginx"),
    );
    lines.push(format!(
        "nginx static origin: direct {:.0} MiB/s, nginx proxy_pass {:.0} MiB/s, yatagarasu {:.0} MiB/s: ratio to nginx {:.2}, to direct {:.2} [CPU s/GiB direct: {}; nginx: {}; proxied: {}]",
        g[0].mibs,
        g[2].mibs,
        g[1].mibs,
        g[1].mibs / g[2].mibs,
        g[1].mibs / g[0].mibs,
        fmt_cpu("nginx", "", g[0].cpu),
        fmt_cpu("nginx", "nginx", g[2].cpu),
        fmt_cpu("nginx", "proxy", g[1].cpu),
    ));
    Ok(Outcome::Done(lines.join("\n  ")))
}
