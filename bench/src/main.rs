//! `yatagarasu-bench`: the benchmark suite of the Yatagarasu S3 proxy.
//!
//! Orchestrates real processes on loopback: `yatagarasu serve-s3` (s3s-fs)
//! servers over temp dirs, the release `yatagarasu` proxy with generated
//! configs, nginx, and wrk. It builds nothing: run `bench/run.sh` (or build
//! `target/release/yatagarasu` first). See `bench/README.md`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use yatagarasu_bench as micro;

mod listing;

const ACCESS_KEY: &str = "AKIABENCHPROXY001";
const SECRET_KEY: &str = "bench-secret-5e4d3c2b1a";
const BUCKET: &str = "bench";
const SMALL_KEY: &str = "small-4k.bin";
const SMALL_SIZE: usize = 4096;
const BIG_KEY: &str = "stream.bin";
const MIB: u64 = 1024 * 1024;
const GIB: f64 = (1u64 << 30) as f64;

const SCENARIOS: [&str; 6] = ["cache-hit", "pass-through", "stream", "failover", "micro", "listing"];

const USAGE: &str = "\
yatagarasu-bench [--quick] [--only LIST] [--bin PATH] [--connections N] [--threads N]
                 [--duration SECS] [--stream-mib N] [--no-etag-sidecar] [--no-access-log]

Scenarios (--only takes a comma-separated subset):
  cache-hit     4 KiB cache hits through the proxy vs nginx serving the file (wrk)
  pass-through  4 KiB with the cache off vs a presigned GET straight to S3
  stream        a 1 GiB object through the proxy vs straight from S3; proxy peak RSS
  failover      breaker-open added latency; primary death to first backup answer
  micro         routing, SigV4 presign, HS256 JWT, cache hit (in-binary timing;
                `cargo bench -p yatagarasu-bench` runs the criterion version)
  listing       a paginated ListObjectsV2 of 10,000 keys through the proxy vs direct

Options:
  --quick            short runs: everything in under two minutes
  --bin PATH         the proxy binary (default: $YATAGARASU_BIN, else
                     <target dir>/release/yatagarasu)
  --connections N    wrk connections (default 32)
  --threads N        wrk threads (default 2)
  --duration SECS    wrk run length (default 15, quick 5)
  --stream-mib N     size of the streamed object (default 1024)
  --no-etag-sidecar  let s3s-fs compute the MD5 of each object on every GET
  --no-access-log    run the proxy with its access log off
";

#[derive(Debug, Clone)]
struct Opts {
    quick: bool,
    only: Vec<String>,
    bin: PathBuf,
    connections: u32,
    threads: u32,
    duration: u64,
    stream_mib: u64,
    etag_sidecar: bool,
    access_log: bool,
}

impl Opts {
    fn parse() -> Result<Self, String> {
        let mut args = std::env::args().skip(1);
        let mut o = Opts {
            quick: false,
            only: SCENARIOS.iter().map(|s| s.to_string()).collect(),
            bin: default_bin(),
            connections: 32,
            threads: 2,
            duration: 0,
            stream_mib: 1024,
            etag_sidecar: true,
            access_log: true,
        };
        fn num<T: std::str::FromStr>(v: Option<String>, name: &str) -> Result<T, String> {
            v.and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        }
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--only" => {
                    let list = args.next().ok_or("--only needs a list")?;
                    o.only = list.split(',').map(|s| s.trim().to_owned()).collect();
                    for s in &o.only {
                        if !SCENARIOS.contains(&s.as_str()) {
                            return Err(format!("unknown scenario '{s}' (known: {})", SCENARIOS.join(", ")));
                        }
                    }
                }
                "--bin" => o.bin = PathBuf::from(args.next().ok_or("--bin needs a path")?),
                "--connections" => o.connections = num(args.next(), "--connections")?,
                "--threads" => o.threads = num(args.next(), "--threads")?,
                "--duration" => o.duration = num(args.next(), "--duration")?,
                "--stream-mib" => o.stream_mib = num(args.next(), "--stream-mib")?,
                "--no-etag-sidecar" => o.etag_sidecar = false,
                "--no-access-log" => o.access_log = false,
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument '{other}'\n\n{USAGE}")),
            }
        }
        if o.duration == 0 {
            o.duration = if o.quick { 5 } else { 15 };
        }
        o.threads = o.threads.clamp(1, o.connections.max(1));
        Ok(o)
    }

    fn runs(&self, name: &str) -> bool {
        self.only.iter().any(|s| s == name)
    }
}

fn default_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("YATAGARASU_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("release").join("yatagarasu")
}

// ---------------------------------------------------------------------------
// Child processes

/// A child process killed (SIGKILL) and reaped on drop; its stdout and
/// stderr go to a log file.
struct Proc {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc, String> {
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for `needle` in the log and returns the word after it.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(i) = text.find(needle) {
                let word = text[i + needle.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches('"')
                    .to_owned();
                return Ok(word);
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("{} exited ({status}); log:\n{}", self.name, tail(&text, 2000)));
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not start; log:\n{}", self.name, tail(&text, 2000)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`: for nginx, whose workers outlive
    /// a SIGKILLed master but exit with a terminated one.
    fn terminate(&mut self, grace: Duration) {
        if let Some(c) = self.child.as_mut() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// `VmHWM` (peak resident set) and `VmRSS` from /proc, in KiB.
    fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

/// User + system CPU seconds of a process, from /proc/PID/stat (clock ticks
/// of 10 ms, the Linux default).
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds of a process and its direct children (nginx's workers).
fn cpu_tree(pid: u32) -> f64 {
    let mut total = cpu_secs(&pid.to_string());
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(child) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(pid) {
                total += cpu_secs(child);
            }
        }
    }
    total
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(text: &str, n: usize) -> &str {
    let start = text.len().saturating_sub(n);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[start..]
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A `yatagarasu serve-s3` process over a root directory.
struct S3Server {
    proc: Proc,
    endpoint: String,
}

impl S3Server {
    fn start(opts: &Opts, name: &str, root: &Path, logs: &Path) -> Result<S3Server, String> {
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("serve-s3")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--root")
            .arg(root)
            .arg("--access-key")
            .arg(ACCESS_KEY)
            .arg("--secret-key")
            .arg(SECRET_KEY)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1");
        let mut proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
        let endpoint = proc.wait_for("S3 listening on ", Duration::from_secs(30))?;
        Ok(S3Server { proc, endpoint })
    }

    /// A presigned `GET` URL of `key`, valid for `ttl`.
    fn presign(&self, key: &str, ttl: Duration) -> String {
        let bucket = Bucket::new(
            self.endpoint.parse().expect("endpoint url"),
            UrlStyle::Path,
            BUCKET.to_owned(),
            "us-east-1".to_owned(),
        )
        .expect("bucket");
        let creds = Credentials::new(ACCESS_KEY, SECRET_KEY);
        bucket.get_object(Some(&creds), key).sign(ttl).to_string()
    }
}

/// The proxy binary with a generated config.
struct Proxy {
    proc: Proc,
    base: String,
}

impl Proxy {
    fn start(opts: &Opts, name: &str, config: &str, logs: &Path) -> Result<Proxy, String> {
        let path = logs.join(format!("{name}.yaml"));
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("-c").arg(&path).env("NO_COLOR", "1");
        if opts.access_log {
            cmd.env_remove("RUST_LOG");
        } else {
            cmd.env("RUST_LOG", "info,yatagarasu::access=off");
        }
        let mut proc = Proc::spawn(name, cmd, logs.join(format!("{name}.log")))?;
        let addr = proc.wait_for("listening on http://", Duration::from_secs(30))?;
        Ok(Proxy {
            proc,
            base: format!("http://{addr}"),
        })
    }

    fn url(&self, key: &str) -> String {
        format!("{}/{BUCKET}/{key}", self.base)
    }
}

/// nginx serving the S3 root directory as static files.
struct Nginx {
    proc: Proc,
    base: String,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.proc.terminate(Duration::from_secs(5));
    }
}

impl Nginx {
    /// The master's pid (CPU accounting covers the workers: see `cpu_secs`).
    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    fn start(root: &Path, dir: &Path, workers: usize) -> Result<Nginx, String> {
        let bin = ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or("nginx is not installed (apt-get install -y nginx-light)")?;
        let prefix = dir.join("nginx");
        for sub in ["", "tmp", "logs"] {
            std::fs::create_dir_all(prefix.join(sub)).map_err(|e| e.to_string())?;
        }
        let port = free_port()?;
        let p = prefix.display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {p}/logs/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"#,
            root = root.display()
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("-p")
            .arg(&prefix)
            .arg("-e")
            .arg(prefix.join("logs/error.log"))
            .arg("-c")
            .arg(&conf_path);
        let mut proc = Proc::spawn("nginx", cmd, prefix.join("logs/stdout.log"))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        if !wait_port(addr, Duration::from_secs(10)) {
            proc.terminate(Duration::from_secs(5));
            let err = std::fs::read_to_string(prefix.join("logs/error.log")).unwrap_or_default();
            return Err(format!("nginx did not start: {}", tail(&err, 1000)));
        }
        Ok(Nginx {
            proc,
            base: format!("http://{addr}"),
        })
    }
}

// ---------------------------------------------------------------------------
// Test data

/// Deterministic pseudo-random bytes.
fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    for b in buf.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
}

fn base64_url_nopad(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Writes s3s-fs's internal-info sidecar holding the object's ETag, so that
/// s3s-fs does not compute an MD5 of the whole file on every GET.
fn write_etag_sidecar(root: &Path, key: &str, etag: &str) -> std::io::Result<()> {
    let name = format!(
        ".bucket-{}.object-{}.internal.json",
        base64_url_nopad(BUCKET.as_bytes()),
        base64_url_nopad(key.as_bytes())
    );
    std::fs::write(root.join(name), format!("{{\"e_tag\":\"{etag}\"}}"))
}

fn write_small(root: &Path, sidecar: bool) -> Result<Vec<u8>, String> {
    let mut body = vec![0u8; SMALL_SIZE];
    fill_pattern(&mut body, 4);
    let dir = root.join(BUCKET);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(SMALL_KEY), &body).map_err(|e| e.to_string())?;
    if sidecar {
        write_etag_sidecar(root, SMALL_KEY, "5ma11000000000000000000000004096").map_err(|e| e.to_string())?;
    }
    Ok(body)
}

/// Writes the streamed object in 1 MiB chunks (never whole in memory).
fn write_big(root: &Path, mib: u64, sidecar: bool) -> Result<u64, String> {
    let dir = root.join(BUCKET);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = File::create(dir.join(BIG_KEY)).map_err(|e| e.to_string())?;
    let mut w = BufWriter::with_capacity(MIB as usize, file);
    let mut chunk = vec![0u8; MIB as usize];
    fill_pattern(&mut chunk, 1);
    for i in 0..mib {
        chunk[..8].copy_from_slice(&i.to_le_bytes());
        w.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    if sidecar {
        write_etag_sidecar(root, BIG_KEY, &format!("{:032x}", 0xb16_0000_u64 + mib)).map_err(|e| e.to_string())?;
    }
    Ok(mib * MIB)
}

// ---------------------------------------------------------------------------
// Configs

fn bucket_block(endpoint: &str, extra: &str) -> String {
    format!(
        r#"  - name: "bench"
    path_prefix: "/{BUCKET}"
    s3:
      bucket: "{BUCKET}"
      region: "us-east-1"
      endpoint: "{endpoint}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
      timeout_seconds: 10
{extra}"#
    )
}

fn config(buckets: &str, top_extra: &str) -> String {
    format!(
        r#"server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 1
metrics:
  enabled: false
health_check:
  interval_seconds: 30
  timeout_seconds: 2
{top_extra}buckets:
{buckets}"#
    )
}

// ---------------------------------------------------------------------------
// Measuring

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(4)
        .build()
        .expect("client")
}

struct Got {
    status: u16,
    len: usize,
    x_cache: Option<String>,
    replica: Option<String>,
}

async fn get(client: &reqwest::Client, url: &str) -> Result<Got, String> {
    let res = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let x_cache = header("x-cache");
    let replica = header("x-yatagarasu-replica");
    let body = res.bytes().await.map_err(|e| e.to_string())?;
    Ok(Got {
        status,
        len: body.len(),
        x_cache,
        replica,
    })
}

/// Latency samples in µs, sorted on demand.
#[derive(Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

fn fmt_us(us: f64) -> String {
    if us.abs() >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_signed_us(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", fmt_us(us))
    } else {
        format!("-{}", fmt_us(-us))
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Sequential GETs of `urls` (interleaved, one at a time, keep-alive), after
/// a warm-up; every answer must be a 200 of `len` bytes.
async fn interleaved_latency(
    client: &reqwest::Client,
    urls: &[String],
    len: usize,
    warmup: usize,
    n: usize,
) -> Result<Vec<Samples>, String> {
    let mut out = vec![Samples::default(); urls.len()];
    for i in 0..warmup + n {
        for (j, url) in urls.iter().enumerate() {
            let t = Instant::now();
            let got = get(client, url).await?;
            let d = t.elapsed();
            if got.status != 200 || got.len != len {
                return Err(format!("{url}: status {} with {} bytes", got.status, got.len));
            }
            if i >= warmup {
                out[j].push(d);
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct WrkResult {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
}

fn parse_wrk_time(s: &str) -> Option<f64> {
    let (num, mul) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mul)
}

fn wrk(opts: &Opts, url: &str) -> Result<WrkResult, String> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", opts.threads))
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{}s", opts.duration))
        .arg("--timeout")
        .arg("5s")
        .arg("--latency")
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run wrk (apt-get install -y wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let mut r = WrkResult {
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(f64::NAN),
            ["50%", v] => r.p50_us = parse_wrk_time(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_us = parse_wrk_time(v).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse::<u64>().unwrap_or(1),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    if r.rps.is_nan() {
        return Err(format!("cannot parse wrk output: {text}"));
    }
    Ok(r)
}

fn fmt_wrk(r: &WrkResult) -> String {
    let errors = if r.errors > 0 {
        format!(", {} errors", r.errors)
    } else {
        String::new()
    };
    format!(
        "{:.0} req/s (p50 {}, p99 {}{errors})",
        r.rps,
        fmt_us(r.p50_us),
        fmt_us(r.p99_us)
    )
}

// ---------------------------------------------------------------------------
// Scenarios

struct Env {
    opts: Opts,
    dir: tempfile::TempDir,
    root: PathBuf,
    logs: PathBuf,
    small: Vec<u8>,
    rt: tokio::runtime::Runtime,
    /// One row per scenario figure: (scenario, figure, ours, baseline, ratio/added, goal).
    table: Vec<[String; 6]>,
}

impl Env {
    fn row(&mut self, cells: [&str; 6]) {
        self.table.push(cells.map(str::to_owned));
    }
}

/// Outcome of a scenario: its one-line summary, or why it was skipped.
enum Outcome {
    Done(String),
    Skipped(String),
}

fn scenario_cache_hit(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let s3 = S3Server::start(&opts, "s3-cache", &env.root, &env.logs)?;
    let cfg = config(
        &bucket_block(&s3.endpoint, ""),
        "cache:\n  memory:\n    max_capacity: 67108864\n    ttl_seconds: 3600\n",
    );
    let proxy = Proxy::start(&opts, "proxy-cache", &cfg, &env.logs)?;
    let url = proxy.url(SMALL_KEY);
    let client = client();
    let (first, second) = env.rt.block_on(async {
        let a = get(&client, &url).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = get(&client, &url).await?;
        Ok::<_, String>((a, b))
    })?;
    if second.status != 200 || second.len != SMALL_SIZE {
        return Err(format!(
            "GET through the proxy: status {} with {} bytes",
            second.status, second.len
        ));
    }
    let hit = second.x_cache.as_deref().unwrap_or("").starts_with("HIT");
    if !hit {
        env.row(["cache-hit 4 KiB", "req/s", "skipped", "", "", ">= 1.0"]);
        return Ok(Outcome::Skipped(format!(
            "cache not wired in this build (X-Cache on 1st GET: {}, 2nd GET: {})",
            first.x_cache.as_deref().unwrap_or("none"),
            second.x_cache.as_deref().unwrap_or("none")
        )));
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let nginx = Nginx::start(&env.root, env.dir.path(), workers)?;
    let nginx_url = format!("{}/{BUCKET}/{SMALL_KEY}", nginx.base);
    let check = env.rt.block_on(get(&client, &nginx_url))?;
    if check.status != 200 || check.len != SMALL_SIZE {
        return Err(format!("nginx: status {} with {} bytes", check.status, check.len));
    }
    let n = wrk(&opts, &nginx_url)?;
    drop(nginx);
    let y = wrk(&opts, &url)?;
    let (hwm, _) = proxy.proc.memory_kib().unwrap_or((0, 0));
    let ratio = y.rps / n.rps;
    env.row([
        "cache-hit 4 KiB",
        "req/s",
        &format!("{:.0}", y.rps),
        &format!("{:.0} (nginx static)", n.rps),
        &format!("{ratio:.2}"),
        ">= 1.0",
    ]);
    env.row([
        "cache-hit 4 KiB",
        "p50 / p99 under load",
        &format!("{} / {}", fmt_us(y.p50_us), fmt_us(y.p99_us)),
        &format!("{} / {}", fmt_us(n.p50_us), fmt_us(n.p99_us)),
        "",
        "",
    ]);
    Ok(Outcome::Done(format!(
        "nginx {}, yatagarasu {}, ratio {ratio:.2} (goal >= 1.0) [wrk -t{} -c{} -d{}s, proxy peak RSS {} MiB]",
        fmt_wrk(&n),
        fmt_wrk(&y),
        opts.threads,
        opts.connections,
        opts.duration,
        hwm / 1024
    )))
}

fn scenario_pass_through(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let s3 = S3Server::start(&opts, "s3-pass", &env.root, &env.logs)?;
    let cfg = config(&bucket_block(&s3.endpoint, "    cache:\n      enabled: false\n"), "");
    let proxy = Proxy::start(&opts, "proxy-pass", &cfg, &env.logs)?;
    let client = client();
    let direct = s3.presign(SMALL_KEY, Duration::from_secs(3600));
    let via = proxy.url(SMALL_KEY);
    let n = if opts.quick { 1000 } else { 5000 };
    let (samples, cache_note) = env.rt.block_on(async {
        let probe = get(&client, &via).await?;
        let probe2 = get(&client, &via).await?;
        let note = match probe2.x_cache.as_deref() {
            Some(x) if x.starts_with("HIT") => format!(
                " (WARNING: X-Cache {x} with the cache off; {probe:?})",
                probe = probe.x_cache
            ),
            _ => String::new(),
        };
        let s = interleaved_latency(&client, &[direct.clone(), via.clone()], SMALL_SIZE, 100, n).await?;
        Ok::<_, String>((s, note))
    })?;
    let (d, p) = (&samples[0], &samples[1]);
    let (d50, d99, p50, p99) = (d.pct(50.0), d.pct(99.0), p.pct(50.0), p.pct(99.0));
    env.row([
        "pass-through 4 KiB",
        "p50 latency, 1 connection",
        &fmt_us(p50),
        &format!("{} (presigned, direct)", fmt_us(d50)),
        &format!("added {}", fmt_signed_us(p50 - d50)),
        "< 1 ms added",
    ]);
    env.row([
        "pass-through 4 KiB",
        "p99 latency, 1 connection",
        &fmt_us(p99),
        &format!("{} (presigned, direct)", fmt_us(d99)),
        &format!("added {}", fmt_signed_us(p99 - d99)),
        "< 1 ms added",
    ]);
    let mut line = format!(
        "direct p50 {} p99 {}, proxy p50 {} p99 {}, added p50 {} p99 {} (goal < 1 ms), ratio p50 {:.2} [{n} sequential GETs each, interleaved]{cache_note}",
        fmt_us(d50),
        fmt_us(d99),
        fmt_us(p50),
        fmt_us(p99),
        fmt_signed_us(p50 - d50),
        fmt_signed_us(p99 - d99),
        p50 / d50,
    );
    // The same object under load, both ways (the presigned URL stays valid).
    let wd = wrk(&opts, &direct)?;
    let wp = wrk(&opts, &via)?;
    let ratio = wp.rps / wd.rps;
    env.row([
        "pass-through 4 KiB",
        "req/s under load",
        &format!("{:.0}", wp.rps),
        &format!("{:.0} (direct)", wd.rps),
        &format!("{ratio:.2}"),
        "",
    ]);
    write!(
        line,
        "\npass-through-4KiB-load: direct {}, proxy {}, ratio {ratio:.2} [wrk -t{} -c{} -d{}s]",
        fmt_wrk(&wd),
        fmt_wrk(&wp),
        opts.threads,
        opts.connections,
        opts.duration
    )
    .expect("write to string");
    Ok(Outcome::Done(line))
}

/// Streams `url` to the end; returns (bytes, seconds).
async fn stream_once(client: &reqwest::Client, url: &str) -> Result<(u64, f64), String> {
    let t = Instant::now();
    let mut res = client.get(url).send().await.map_err(|e| e.to_string())?;
    if res.status() != 200 {
        return Err(format!("status {}", res.status()));
    }
    let mut n = 0u64;
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        n += chunk.len() as u64;
    }
    Ok((n, t.elapsed().as_secs_f64()))
}

struct StreamFigures {
    direct_gibs: f64,
    proxy_gibs: f64,
    hwm_start_kib: u64,
    hwm_kib: u64,
    rss_kib: u64,
    /// CPU s/GiB of [origin, proxy, client], direct runs then proxied runs.
    cpu: [[f64; 3]; 2],
}

/// Streams the object `runs` times each way (alternating) and keeps the best
/// time of each; CPU time of the origin, the proxy and this process per GiB.
fn measure_stream(
    env: &Env,
    direct: &str,
    proxy: &Proxy,
    origin_pid: u32,
    size: u64,
    runs: usize,
) -> Result<StreamFigures, String> {
    let client = client();
    let via = proxy.url(BIG_KEY);
    let (hwm_start_kib, _) = proxy.proc.memory_kib().ok_or("cannot read the proxy's /proc status")?;
    let proxy_pid = proxy.proc.pid();
    let cpu_now = || [cpu_tree(origin_pid), cpu_tree(proxy_pid), cpu_secs("self")];
    let gib = size as f64 / GIB;
    let mut cpu = [[0.0f64; 3]; 2];
    let (best_d, best_p) = env.rt.block_on(async {
        let (mut best_d, mut best_p) = (f64::MAX, f64::MAX);
        for _ in 0..runs {
            for (way, url) in [direct, via.as_str()].into_iter().enumerate() {
                let c0 = cpu_now();
                let (n, secs) = stream_once(&client, url).await?;
                if n != size {
                    return Err(format!("{url}: {n} of {size} bytes"));
                }
                let c1 = cpu_now();
                for i in 0..3 {
                    cpu[way][i] += (c1[i] - c0[i]) / gib / runs as f64;
                }
                if way == 0 {
                    best_d = best_d.min(secs);
                } else {
                    best_p = best_p.min(secs);
                }
            }
        }
        Ok::<_, String>((best_d, best_p))
    })?;
    let (hwm_kib, rss_kib) = proxy.proc.memory_kib().ok_or("cannot read the proxy's /proc status")?;
    Ok(StreamFigures {
        direct_gibs: gib / best_d,
        proxy_gibs: gib / best_p,
        hwm_start_kib,
        hwm_kib,
        rss_kib,
        cpu,
    })
}

fn fmt_cpu(origin: &str, c: [f64; 3]) -> String {
    format!("{origin} {:.2} + proxy {:.2} + client {:.2}", c[0], c[1], c[2])
}

fn scenario_stream(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let t = Instant::now();
    let size = write_big(&env.root, opts.stream_mib, opts.etag_sidecar)?;
    let wrote = t.elapsed().as_secs_f64();
    let runs = if opts.quick { 2 } else { 3 };
    let no_cache = "    cache:\n      enabled: false\n";
    let label = format!("stream {}", human_size(size));

    // The S3 server as origin.
    let s3 = S3Server::start(&opts, "s3-stream", &env.root, &env.logs)?;
    let proxy = Proxy::start(
        &opts,
        "proxy-stream",
        &config(&bucket_block(&s3.endpoint, no_cache), ""),
        &env.logs,
    )?;
    let direct = s3.presign(BIG_KEY, Duration::from_secs(3600));
    let f = measure_stream(env, &direct, &proxy, s3.proc.pid(), size, runs)?;
    drop(proxy);
    drop(s3);
    let ratio = f.proxy_gibs / f.direct_gibs;
    env.row([
        &label,
        "throughput, S3 server (s3s-fs) origin",
        &format!("{:.2} GiB/s", f.proxy_gibs),
        &format!("{:.2} GiB/s (direct)", f.direct_gibs),
        &format!("{ratio:.2}"),
        ">= 0.9",
    ]);
    env.row([
        &label,
        "proxy peak RSS (VmHWM)",
        &format!("{:.1} MiB", f.hwm_kib as f64 / 1024.0),
        &format!("{:.1} MiB at start", f.hwm_start_kib as f64 / 1024.0),
        "",
        "< 64 MiB",
    ]);
    let mut line = format!(
        "direct {:.2} GiB/s, proxy {:.2} GiB/s, ratio {ratio:.2} (goal >= 0.9), proxy peak RSS {:.1} MiB (goal < 64 MiB; {:.1} MiB after start, {:.1} MiB now) [best of {runs}, 1 connection; CPU s/GiB direct: {}, proxied: {}; object written in {wrote:.1}s; s3s-fs MD5 per GET: {}]",
        f.direct_gibs,
        f.proxy_gibs,
        f.hwm_kib as f64 / 1024.0,
        f.hwm_start_kib as f64 / 1024.0,
        f.rss_kib as f64 / 1024.0,
        fmt_cpu("s3s", f.cpu[0]),
        fmt_cpu("s3s", f.cpu[1]),
        if opts.etag_sidecar { "no (etag sidecar)" } else { "yes, both paths" },
    );

    // nginx as origin: the proxy's own ceiling, with an origin much faster
    // than s3s-fs (nginx ignores the signature; the proxy signs all the same).
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    match Nginx::start(&env.root, env.dir.path(), workers) {
        Ok(nginx) => {
            let proxy = Proxy::start(
                &opts,
                "proxy-stream-nginx",
                &config(&bucket_block(&nginx.base, no_cache), ""),
                &env.logs,
            )?;
            let direct = format!("{}/{BUCKET}/{BIG_KEY}", nginx.base);
            let g = measure_stream(env, &direct, &proxy, nginx.pid(), size, runs)?;
            let ratio = g.proxy_gibs / g.direct_gibs;
            env.row([
                &label,
                "throughput, nginx origin (proxy ceiling)",
                &format!("{:.2} GiB/s", g.proxy_gibs),
                &format!("{:.2} GiB/s (direct)", g.direct_gibs),
                &format!("{ratio:.2}"),
                "",
            ]);
            env.row([
                &label,
                "proxy peak RSS (VmHWM), nginx origin",
                &format!("{:.1} MiB", g.hwm_kib as f64 / 1024.0),
                &format!("{:.1} MiB at start", g.hwm_start_kib as f64 / 1024.0),
                "",
                "< 64 MiB",
            ]);
            write!(
                line,
                "\n{}-nginx-origin: direct {:.2} GiB/s, proxy {:.2} GiB/s, ratio {ratio:.2}, proxy peak RSS {:.1} MiB [CPU s/GiB direct: {}, proxied: {}]",
                label.replace(' ', "-").replace("-GiB", "GiB").replace("-MiB", "MiB"),
                g.direct_gibs,
                g.proxy_gibs,
                g.hwm_kib as f64 / 1024.0,
                fmt_cpu("nginx", g.cpu[0]),
                fmt_cpu("nginx", g.cpu[1]),
            )
            .expect("write to string");
        }
        Err(e) => write!(line, "\n(nginx-origin variant skipped: {e})").expect("write to string"),
    }
    Ok(Outcome::Done(line))
}

fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes / MIB)
    }
}

fn scenario_failover(env: &mut Env) -> Result<Outcome, String> {
    let opts = env.opts.clone();
    let primary_root = env.dir.path().join("primary");
    let backup_root = env.dir.path().join("backup");
    for r in [&primary_root, &backup_root] {
        write_small(r, opts.etag_sidecar)?;
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
    let url = proxy.url(SMALL_KEY);
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
        let s = interleaved_latency(&client, std::slice::from_ref(&url), SMALL_SIZE, 100, n).await?;
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
        let s = interleaved_latency(&client, std::slice::from_ref(&url), SMALL_SIZE, 100, n).await?;
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

fn scenario_micro(env: &mut Env) -> Result<Outcome, String> {
    let budget = Duration::from_millis(if env.opts.quick { 400 } else { 2000 });
    let mut parts = Vec::new();
    let mut record = |env: &mut Env, name: &str, ns: Result<f64, String>, upstream: f64| match ns {
        Ok(ns) if upstream.is_nan() => {
            env.row(["micro", name, &fmt_ns(ns), "", "", ""]);
            parts.push(format!("{name} {}", fmt_ns(ns)));
        }
        Ok(ns) => {
            let ratio = upstream / ns;
            env.row([
                "micro",
                name,
                &fmt_ns(ns),
                &format!("{} (upstream)", fmt_ns(upstream)),
                &format!("{ratio:.2}"),
                "",
            ]);
            parts.push(format!(
                "{name} {} (upstream {}, ratio {ratio:.2})",
                fmt_ns(ns),
                fmt_ns(upstream)
            ));
        }
        Err(e) => {
            env.row(["micro", name, "skipped", "", "", ""]);
            parts.push(format!("{name} SKIPPED ({e})"));
        }
    };
    let routing = micro::Routing::new();
    record(
        env,
        "routing",
        Ok(micro::time_per_call(budget, || routing.run())),
        micro::UPSTREAM_ROUTING_NS,
    );
    record(
        env,
        "routing+decode_key",
        Ok(micro::time_per_call(budget, || routing.run_with_key())),
        f64::NAN,
    );
    let presign = micro::Presign::new();
    record(
        env,
        "sigv4-presign",
        Ok(micro::time_per_call(budget, || presign.run())),
        micro::UPSTREAM_SIGV4_NS,
    );
    let jwt = micro::Jwt::new().map(|j| micro::time_per_call(budget, || j.run()));
    record(env, "jwt-hs256", jwt, micro::UPSTREAM_JWT_NS);
    let cache = micro::CacheHit::new().map(|c| micro::time_per_call(budget, || c.run()));
    record(env, "cache-hit", cache, micro::UPSTREAM_CACHE_HIT_NS);
    Ok(Outcome::Done(format!(
        "{} [ratio = upstream / ours, >= 1 is faster; in-binary loop, {} ms each; criterion: cargo bench -p yatagarasu-bench]",
        parts.join(", "),
        budget.as_millis()
    )))
}

fn main() {
    let opts = match Opts::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let needs_bin = opts.only.iter().any(|s| s != "micro");
    if needs_bin && !opts.bin.exists() {
        eprintln!(
            "error: no proxy binary at {} (run `cargo build --release --bins` first, or pass --bin)",
            opts.bin.display()
        );
        std::process::exit(2);
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("yatagarasu-bench-")
        .tempdir()
        .expect("temp dir");
    let root = dir.path().join("s3");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let small = write_small(&root, opts.etag_sidecar).expect("small object");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "yatagarasu-bench{}: proxy {}, {} CPUs, loopback; temp dir {}",
        if opts.quick { " --quick" } else { "" },
        opts.bin.display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        dir.path().display()
    );
    let mut env = Env {
        opts: opts.clone(),
        dir,
        root,
        logs,
        small,
        rt,
        table: Vec::new(),
    };
    debug_assert_eq!(env.small.len(), SMALL_SIZE);
    type Scenario = fn(&mut Env) -> Result<Outcome, String>;
    let scenarios: [(&str, &str, Scenario); 6] = [
        ("cache-hit", "cache-hit-4KiB", scenario_cache_hit),
        ("pass-through", "pass-through-4KiB", scenario_pass_through),
        ("stream", "stream", scenario_stream),
        ("failover", "failover", scenario_failover),
        ("micro", "micro", scenario_micro),
        ("listing", "listing-10k", listing::scenario_listing),
    ];
    let mut failed = false;
    for (name, label, run) in scenarios {
        if !opts.runs(name) {
            continue;
        }
        let label = if name == "stream" {
            format!("stream-{}", human_size(opts.stream_mib * MIB).replace(' ', ""))
        } else {
            label.to_owned()
        };
        let t = Instant::now();
        match run(&mut env) {
            Ok(Outcome::Done(line)) => println!("{label}: {line} ({:.1}s)", t.elapsed().as_secs_f64()),
            Ok(Outcome::Skipped(why)) => println!("{label}: SKIPPED ({why})"),
            Err(e) => {
                failed = true;
                println!("{label}: FAILED ({e})");
            }
        }
    }
    println!("\n| scenario | figure | yatagarasu | baseline | ratio / added | goal |");
    println!("|---|---|---|---|---|---|");
    for r in &env.table {
        println!("| {} |", r.join(" | "));
    }
    println!("\ntotal {:.1}s", started.elapsed().as_secs_f64());
    if failed {
        std::process::exit(1);
    }
}
