//! The cost of TLS (issue 14): the same work over HTTPS and over plain HTTP,
//! for the proxy and for nginx with the same certificate, in one run.
//!
//! - Cache hits (4 KiB, memory tier) under wrk at every `--connections`
//!   count: the proxy over HTTP and over HTTPS, nginx `proxy_cache` over HTTP
//!   and over HTTPS, all in front of the same S3 server. wrk keeps its
//!   connections open, so this is the cost of record encryption, not of
//!   handshakes.
//! - One large object (`--stream-mib`, at most 128 MiB with `--quick`) over
//!   one connection: the proxy (cache off) and nginx `proxy_pass`, each over
//!   HTTP and HTTPS, in front of nginx serving the file (an origin much faster
//!   than s3s-fs, so the middle's TLS cost is what shows); best of the runs,
//!   and the middle's CPU seconds per GiB.
//!
//! The certificate (ECDSA P-256, signed by a CA made for the run) is made
//! with the `openssl` command line at run time (the test kit's `Pki`); the
//! bench's HTTPS client trusts that CA and speaks HTTP/1.1 only, like wrk.

use std::path::{Path, PathBuf};

use yatagarasu_testkit::pki::Pki;

use crate::data::{self, human_size, GIB, MIB};
use crate::measure::{expect_hit, fmt_ratio, fmt_us};
use crate::nginx::{Nginx, Site};
use crate::servers::{bucket_block, config, with_tls, Proxy, S3Server, MEMORY_CACHE, NO_CACHE};
use crate::stream::{measure as stream, Way};
use crate::suite::{Env, Outcome, Scenario};
use crate::wrk::{self, Load};

/// The TLS cost scenario.
pub const SCENARIO: Scenario = Scenario {
    name: "tls",
    about: "HTTPS vs HTTP, proxy and nginx with the same certificate: 4 KiB cache-hit req/s, large stream MiB/s, CPU",
    needs_bin: true,
    run,
};

/// The key the stream part reads.
const STREAM_KEY: &str = "tls-stream.bin";

/// A certificate for `127.0.0.1` / `localhost` and the CA that signed it.
pub struct Cert {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// Makes a CA and a server certificate signed by it in `dir`.
pub fn make_cert(dir: &Path) -> Result<Cert, String> {
    let pki = Pki::try_in(dir)?;
    let (cert, key) = pki.try_issue("tls", "localhost", false)?;
    Ok(Cert {
        ca: pki.ca(),
        cert,
        key,
    })
}

/// A keep-alive HTTP/1.1 client (as wrk) trusting the run's CA.
fn client(cert: &Cert) -> Result<reqwest::Client, String> {
    let pem = std::fs::read(&cert.ca).map_err(|e| e.to_string())?;
    let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .pool_max_idle_per_host(4)
        .add_root_certificate(ca)
        .build()
        .map_err(|e| e.to_string())
}

/// The three rows every part of the scenario has, from the rates (req/s or
/// MiB/s) of the proxy over HTTPS and HTTP and of `peer` over HTTPS and
/// HTTP: each protocol side by side, then HTTPS / HTTP for both. Returns
/// that last pair (proxy, peer).
fn https_and_http_rows(env: &mut Env, label: &str, unit: &str, peer: &str, rates: [f64; 4]) -> (f64, f64) {
    let [ps, ph, ns, nh] = rates;
    env.row([
        label,
        &format!("{unit} over HTTPS"),
        &format!("{ps:.0}"),
        &format!("{ns:.0} ({peer}, HTTPS)"),
        &fmt_ratio(ps / ns),
        "",
    ]);
    env.row([
        label,
        &format!("{unit} over HTTP (same run)"),
        &format!("{ph:.0}"),
        &format!("{nh:.0} ({peer}, HTTP)"),
        &fmt_ratio(ph / nh),
        "",
    ]);
    let (ours, theirs) = (ps / ph, ns / nh);
    env.row([
        label,
        &format!("HTTPS {unit} / HTTP {unit}"),
        &fmt_ratio(ours),
        &format!("{} (nginx)", fmt_ratio(theirs)),
        &fmt_ratio(ours / theirs),
        "",
    ]);
    (ours, theirs)
}

fn run(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let cert = make_cert(&env.scratch().join("tls"))?;
    let client = client(&cert)?;
    let files = Some((cert.cert.as_path(), cert.key.as_path()));

    // Cache hits.
    let object = data::SMALL;
    data::write(&env.root, object, opts.etag_sidecar())?;
    let size = human_size(object.size);
    let s3 = S3Server::start(&opts, "s3-tls", &env.root, &env.logs)?;
    let plain = config(&bucket_block(&s3.endpoint, ""), MEMORY_CACHE);
    let proxy_http = Proxy::start(&opts, "proxy-tls-http", &plain, &env.logs)?;
    let proxy_https = Proxy::start_tls(
        &opts,
        "proxy-tls-https",
        &with_tls(&plain, &cert.cert, &cert.key),
        &env.logs,
    )?;
    let site = Site::Proxy {
        upstream: s3.endpoint.clone(),
        cache: true,
    };
    let nginx_http = Nginx::start(env.scratch(), "nginx-tls-http", site.clone(), opts.access_log())?;
    let nginx_https = Nginx::start_tls(env.scratch(), "nginx-tls-https", site, opts.access_log(), files)?;
    // Order: proxy HTTPS, proxy HTTP, nginx HTTPS, nginx HTTP.
    let targets = [
        (proxy_https.url(object.key), proxy_https.proc.pid()),
        (proxy_http.url(object.key), proxy_http.proc.pid()),
        (nginx_https.url(object.key), nginx_https.proc.pid()),
        (nginx_http.url(object.key), nginx_http.proc.pid()),
    ];
    for (url, _) in &targets {
        if let Err(e) = env.rt.block_on(expect_hit(&client, url, object.size)) {
            env.row(["TLS", "", "skipped", "", "", ""]);
            return Ok(Outcome::Skipped(e));
        }
    }
    let mut lines = Vec::new();
    for &c in &opts.connections {
        let label = format!("TLS: cache hit {size}, -c{c}");
        let mut loads: Vec<Load> = Vec::new();
        for (url, pid) in &targets {
            loads.push(wrk::measured(&opts, url, c, *pid)?);
        }
        let [ps, ph, ns, nh] = [loads[0], loads[1], loads[2], loads[3]];
        let rates = [ps, ph, ns, nh].map(|l| l.wrk.rps);
        let (ours, theirs) = https_and_http_rows(env, &label, "req/s", "nginx proxy_cache", rates);
        env.row([
            &label,
            "p99 latency over HTTPS",
            &fmt_us(ps.wrk.p99_us),
            &format!("{} (nginx, HTTPS)", fmt_us(ns.wrk.p99_us)),
            &fmt_ratio(ps.wrk.p99_us / ns.wrk.p99_us),
            "",
        ]);
        env.row([
            &label,
            "CPU s / 100k hits over HTTPS (HTTP)",
            &format!("{:.2} ({:.2})", ps.cpu_per_100k(), ph.cpu_per_100k()),
            &format!("{:.2} ({:.2}) (nginx)", ns.cpu_per_100k(), nh.cpu_per_100k()),
            &fmt_ratio(ps.cpu_per_100k() / ns.cpu_per_100k()),
            "",
        ]);
        let errors: u64 = loads.iter().map(|l| l.wrk.errors).sum();
        lines.push(format!(
            "-c{c}: yatagarasu {:.0} req/s HTTPS / {:.0} HTTP ({ours:.2}), nginx {:.0} / {:.0} ({theirs:.2}); HTTPS ratio {:.2}{}",
            ps.wrk.rps,
            ph.wrk.rps,
            ns.wrk.rps,
            nh.wrk.rps,
            ps.wrk.rps / ns.wrk.rps,
            if errors > 0 { format!(", {errors} ERRORS") } else { String::new() },
        ));
    }
    drop((proxy_http, proxy_https, nginx_http, nginx_https, s3));

    // One large object, nginx static as the origin.
    let mib = if opts.quick {
        opts.stream_mib().min(128)
    } else {
        opts.stream_mib()
    };
    let size = data::write_object(&env.root, STREAM_KEY, mib * MIB, opts.etag_sidecar(), 7)?;
    let origin = Nginx::start(
        env.scratch(),
        "nginx-tls-origin",
        Site::Static { root: env.root.clone() },
        false,
    )?;
    let plain = config(&bucket_block(&origin.base, NO_CACHE), "");
    let proxy_http = Proxy::start(&opts, "proxy-tls-stream-http", &plain, &env.logs)?;
    let proxy_https = Proxy::start_tls(
        &opts,
        "proxy-tls-stream-https",
        &with_tls(&plain, &cert.cert, &cert.key),
        &env.logs,
    )?;
    let site = Site::Proxy {
        upstream: origin.base.clone(),
        cache: false,
    };
    let nginx_http = Nginx::start(env.scratch(), "nginx-tls-pass-http", site.clone(), opts.access_log())?;
    let nginx_https = Nginx::start_tls(env.scratch(), "nginx-tls-pass-https", site, opts.access_log(), files)?;
    let ways = [
        Way::new(proxy_https.url(STREAM_KEY), Some(proxy_https.proc.pid())),
        Way::new(proxy_http.url(STREAM_KEY), Some(proxy_http.proc.pid())),
        Way::new(nginx_https.url(STREAM_KEY), Some(nginx_https.proc.pid())),
        Way::new(nginx_http.url(STREAM_KEY), Some(nginx_http.proc.pid())),
    ];
    let runs = if opts.quick { 2 } else { 3 };
    let f = stream(env, &client, &ways, origin.proc.pid(), size, runs)?;
    let [ps, ph, ns, nh] = [f[0], f[1], f[2], f[3]];
    let label = format!("TLS: stream {}, 1 connection, nginx static origin", human_size(size));
    let rates = [ps, ph, ns, nh].map(|f| f.mibs);
    let (ours, theirs) = https_and_http_rows(env, &label, "MiB/s", "nginx proxy_pass", rates);
    env.row([
        &label,
        "CPU s / GiB streamed over HTTPS (HTTP)",
        &format!("{:.2} ({:.2})", ps.cpu[1], ph.cpu[1]),
        &format!("{:.2} ({:.2}) (nginx)", ns.cpu[1], nh.cpu[1]),
        &fmt_ratio(ps.cpu[1] / ns.cpu[1]),
        "",
    ]);
    lines.push(format!(
        "stream {}: yatagarasu {:.0} MiB/s HTTPS / {:.0} HTTP ({ours:.2}), nginx {:.0} / {:.0} ({theirs:.2}); CPU s/GiB HTTPS yatagarasu {:.2}, nginx {:.2} [best of {runs}; {:.2} GiB each]",
        human_size(size),
        ps.mibs,
        ph.mibs,
        ns.mibs,
        nh.mibs,
        ps.cpu[1],
        ns.cpu[1],
        size as f64 / GIB,
    ));
    Ok(Outcome::Done(lines.join("\n  ")))
}
