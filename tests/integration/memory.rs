//! Memory is a bound too: streaming a large object through the proxy must
//! not grow the proxy's resident set with the object, whatever pace the
//! client reads at. The proxy is the real binary (a child process; its RSS is
//! read from `/proc/PID/status`, never the test process's), the origin the
//! s3s-fs server that checks SigV4, the objects real files in a temp dir.
//!
//! The objects are 1 MiB blocks of one pseudo-random block, each stamped
//! with its index in its first 8 bytes: the whole body is checked against
//! them as it arrives (slice comparisons, cheap in a debug build), so a
//! reordered, repeated or spliced chunk fails. Each object also gets an ETag
//! sidecar, so s3s-fs does not hash the whole file on every `GET`.
//!
//! No timing is asserted: the RSS bound is in bytes; the waits are on
//! conditions (the RSS and the bytes the origin sent no longer moving).

#![cfg(target_os = "linux")]

use std::io::Write;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{client, pattern, s3, BucketConfig, Proxy, StartProxy, S3};

const MIB: u64 = 1 << 20;
/// The block the objects are made of.
const BLOCK: usize = 1 << 20;
/// How much the proxy's RSS may grow while it streams an object (or holds
/// one back from a stalled client): far below the objects' sizes.
const BOUND: u64 = 64 * MIB;
const BUCKET: &str = "data-bucket";

/// The proxy with one bucket at `/data` over two replicas (the same s3s-fs
/// server: the failover and its mid-body resume wrapper are on the path, the
/// object on disk once), the cache in `cache` (a top-level `cache:` block).
fn config(s3: &S3, cache: &str) -> String {
    BucketConfig::new("data", "/data")
        .replica("primary", &s3.endpoint(), "priority: 1")
        .replica("backup", &s3.endpoint(), "priority: 2")
        .then("metrics: { enabled: false }")
        .then(cache)
        .render()
}

/// The cache of the README's example config, with the default
/// `max_item_size` (10 MiB) spelled out: the objects here are far larger, so
/// the cache looks them up, decides not to store them and lets them stream
/// (`X-Cache: BYPASS`).
const DEFAULT_CACHE: &str = "cache:\n  memory: { max_capacity: 268435456, ttl_seconds: 1800, max_item_size: 10485760 }";

/// Writes `key` (`size` bytes of blocks made from `seed`) into the server's
/// bucket, in blocks (never whole in memory), with an ETag sidecar.
fn write_object(s3: &S3, key: &str, size: u64, seed: u64) {
    s3.create_bucket(BUCKET).unwrap();
    let file = std::fs::File::create(s3.root().join(BUCKET).join(key)).unwrap();
    let mut w = std::io::BufWriter::with_capacity(BLOCK, file);
    let base = pattern(BLOCK, seed);
    let mut left = size;
    for i in 0u64.. {
        if left == 0 {
            break;
        }
        let n = left.min(BLOCK as u64) as usize;
        let stamp = i.to_le_bytes();
        w.write_all(&stamp[..n.min(8)]).unwrap();
        if n > 8 {
            w.write_all(&base[8..n]).unwrap();
        }
        left -= n as u64;
    }
    w.flush().unwrap();
    s3.set_etag(BUCKET, key, &format!("{seed:016x}{size:016x}")).unwrap();
}

/// Checks a body against the blocks of [`write_object`] as it arrives.
struct Body {
    base: Vec<u8>,
    /// Bytes checked so far.
    len: u64,
    /// The first offset that differed.
    bad_at: Option<u64>,
}

impl Body {
    fn new(seed: u64) -> Self {
        Self {
            base: pattern(BLOCK, seed),
            len: 0,
            bad_at: None,
        }
    }

    fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let stamp = (self.len / BLOCK as u64).to_le_bytes();
            let at = (self.len % BLOCK as u64) as usize;
            let n = chunk.len().min(BLOCK - at);
            let end = at + n;
            let stamp_ok = (at..end.min(8)).all(|i| chunk[i - at] == stamp[i]);
            let from = at.max(8);
            let rest_ok = from >= end || chunk[from - at..n] == self.base[from..end];
            if !(stamp_ok && rest_ok) && self.bad_at.is_none() {
                self.bad_at = Some(self.len);
            }
            self.len += n as u64;
            chunk = &chunk[n..];
        }
    }

    /// Panics unless exactly `size` bytes arrived, all as written.
    fn check(&self, size: u64) {
        assert_eq!(self.len, size, "body length");
        assert_eq!(self.bad_at, None, "the body differs from the object at this offset");
    }
}

/// The proxy child's memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// `VmRSS`, bytes.
    rss: u64,
    /// `VmHWM` (the peak RSS), bytes.
    hwm: u64,
}

impl Memory {
    fn of(proxy: &Proxy) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{}/status", proxy.pid()))
                * 1024
        };
        Self {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        }
    }

    /// Resets the proxy's peak RSS to its current RSS (`5` into
    /// `/proc/PID/clear_refs`, Linux 4.0+), so that `VmHWM` afterwards is the
    /// peak of what follows, between samples too. False if refused.
    fn reset_peak(proxy: &Proxy) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", proxy.pid()), "5").is_ok()
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// What the proxy's memory did while an object streamed.
struct Trace {
    before: Memory,
    /// The highest sampled `VmRSS`.
    peak_sampled: u64,
    /// `VmHWM` at the end: the true peak if the reset worked.
    hwm_after: u64,
    hwm_reset: bool,
    samples: usize,
}

impl Trace {
    fn start(proxy: &Proxy) -> Self {
        let hwm_reset = Memory::reset_peak(proxy);
        let before = Memory::of(proxy);
        Self {
            before,
            peak_sampled: before.rss,
            hwm_after: before.hwm,
            hwm_reset,
            samples: 0,
        }
    }

    fn sample(&mut self, proxy: &Proxy) -> Memory {
        let now = Memory::of(proxy);
        self.peak_sampled = self.peak_sampled.max(now.rss);
        self.hwm_after = now.hwm;
        self.samples += 1;
        now
    }

    /// The growth over the RSS before: the sampled peak's, or `VmHWM`'s when
    /// the peak could be reset (it also sees between samples).
    fn growth(&self) -> u64 {
        let peak = if self.hwm_reset {
            self.peak_sampled.max(self.hwm_after)
        } else {
            self.peak_sampled
        };
        peak.saturating_sub(self.before.rss)
    }

    /// The figures, for `what`, with the `bound` asserted on the growth.
    fn report(&self, what: &str, bound: u64) -> String {
        format!(
            "{what}: proxy RSS {} before, sampled peak {} ({} samples), VmHWM {} ({}): growth {} (bound {})",
            mib(self.before.rss),
            mib(self.peak_sampled),
            self.samples,
            mib(self.hwm_after),
            if self.hwm_reset {
                "reset before the request"
            } else {
                "since start: clear_refs refused"
            },
            mib(self.growth()),
            mib(bound),
        )
    }
}

/// `GET path` through the proxy with reqwest, sampling the proxy's memory
/// every 4 MiB received; checks the body against the object of `seed`.
async fn stream(proxy: &Proxy, path: &str, size: u64, seed: u64) -> (Trace, String) {
    let mut trace = Trace::start(proxy);
    let mut res = client().get(proxy.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", proxy.logs());
    assert_eq!(res.content_length(), Some(size));
    let x_cache = res
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut body = Body::new(seed);
    let mut next_sample = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        body.feed(&chunk);
        if body.len >= next_sample {
            trace.sample(proxy);
            next_sample += 4 * MIB;
        }
    }
    trace.sample(proxy);
    body.check(size);
    (trace, x_cache)
}

/// 1 GiB, the bar's own figure: a debug-build run of the test takes 12.6 s
/// alone, 19-31 s beside the suite and other builds on the 2-core dev machine (the
/// object written at disk speed, then streamed by s3s-fs, the proxy and
/// reqwest, all unoptimised), within the ~30 s that allow the full size.
const LARGE: u64 = 1024 * MIB;

/// The bar: "streaming a 1 GiB object must not grow RSS". The cache is on as
/// in the README's config, and the object is far over its `max_item_size`
/// (10 MiB), so the path tested is the one where the cache looks, decides
/// not to store and lets the body stream (`X-Cache: BYPASS`). The proxy's
/// `VmRSS` is sampled every 4 MiB received and its `VmHWM` reset before the
/// request: the growth over the RSS before must stay under [`BOUND`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_large_object_keeps_rss_flat() {
    let s3 = s3().await;
    write_object(&s3, "large.bin", LARGE, 1);
    s3.put_object(BUCKET, "small.bin", &pattern(64 * 1024, 2)).unwrap();
    let proxy = Proxy::start(&config(&s3, DEFAULT_CACHE));
    // One small object first: what the first request of a process allocates
    // (connection pools, lazy statics) is not the stream's.
    let small = client().get(proxy.url("/data/small.bin")).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.bytes().await.unwrap().len(), 64 * 1024);

    let (trace, x_cache) = stream(&proxy, "/data/large.bin", LARGE, 1).await;
    let report = trace.report(&format!("streaming {} (X-Cache: {x_cache})", mib(LARGE)), BOUND);
    eprintln!("{report}");
    assert!(trace.growth() < BOUND, "{report}");
    assert_eq!(x_cache, "BYPASS", "over max_item_size: streamed, not stored");
}

/// The object of the slow-client and sliced tests: large enough that a
/// proxy reading its origin ahead of a stalled client, or keeping every
/// slice, would pass [`BOUND`] several times.
const MEDIUM: u64 = 256 * MIB;

/// An HTTP/1.1 `GET` on a raw socket with a 16 KiB receive buffer: a client
/// that reads only when told to.
struct SlowClient {
    socket: tokio::net::TcpStream,
    body: Body,
    status: u16,
    content_length: Option<u64>,
    x_cache: String,
}

impl SlowClient {
    async fn get(proxy: &Proxy, path: &str, seed: u64) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let mut socket = socket.connect(proxy.addr().parse().unwrap()).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        socket.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "the proxy closed before the head ended: {}",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
        let header = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        let mut client = Self {
            socket,
            body: Body::new(seed),
            status: text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0),
            content_length: header("content-length").and_then(|v| v.parse().ok()),
            x_cache: header("x-cache").unwrap_or_default().to_ascii_uppercase(),
        };
        client.body.feed(&head[end..]);
        client
    }

    /// Reads until `total` body bytes arrived (or the end), `chunk` bytes
    /// at a time.
    async fn read_until(&mut self, total: u64, chunk: usize) {
        let mut buf = vec![0u8; chunk];
        while self.body.len < total {
            let n = self.socket.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            self.body.feed(&buf[..n]);
        }
    }
}

/// Backpressure, not a queue: a client that reads 1 MiB a few KiB at a
/// time through a 16 KiB receive buffer, then stops, while the origin could
/// send the rest at once. The proxy must stop pulling from the origin (what
/// the origin handed to its connections stays within [`BOUND`] of what the
/// client read: socket buffers and a few chunks) and its RSS must stay
/// within [`BOUND`]; then the client reads on and gets the whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_make_the_proxy_buffer() {
    let s3 = s3().await;
    write_object(&s3, "slow.bin", MEDIUM, 3);
    let proxy = Proxy::start(&config(&s3, DEFAULT_CACHE));
    let mut trace = Trace::start(&proxy);
    let sent_before = s3.body_bytes_sent();

    let mut client = SlowClient::get(&proxy, "/data/slow.bin", 3).await;
    assert_eq!(client.status, 200, "{}", proxy.logs());
    assert_eq!(client.content_length, Some(MEDIUM));
    assert_eq!(client.x_cache, "BYPASS");
    // The first MiB a few KiB at a time, then nothing: the client stalls
    // with the origin able to send the other 255 MiB at once.
    client.read_until(MIB, 4096).await;
    trace.sample(&proxy);

    // Wait until the origin's bytes sent and the proxy's RSS stop moving
    // (less than 64 KiB each over 10 samples 100 ms apart: what a health
    // probe may add), for 30 s at most. A proxy that reads ahead without
    // bound only stops at the object's end.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut still, mut last) = (0, (s3.body_bytes_sent(), Memory::of(&proxy).rss));
    while still < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (s3.body_bytes_sent(), trace.sample(&proxy).rss);
        let moved = now.0 - last.0 > 64 * 1024 || now.1.abs_diff(last.1) > 64 * 1024;
        still = if moved { 0 } else { still + 1 };
        last = now;
    }
    let pulled = s3.body_bytes_sent() - sent_before;
    let ahead = pulled - client.body.len;
    let report = format!(
        "{}; the client stalled after {}: the origin had sent {} ({} ahead of the client){}",
        trace.report(&format!("a client stalled on {}", mib(MEDIUM)), BOUND),
        mib(client.body.len),
        mib(pulled),
        mib(ahead),
        if still < 10 { ", still moving after 30 s" } else { "" },
    );
    eprintln!("{report}");
    assert!(ahead < BOUND, "the proxy read ahead of the client: {report}");
    assert!(trace.growth() < BOUND, "{report}");

    // The client reads on: the rest arrives, whole.
    client.read_until(MEDIUM, 64 * 1024).await;
    client.body.check(MEDIUM);
}

/// The object of the cache-fill test: cacheable (under its `max_item_size`)
/// and large enough to stand out of the proxy's noise (~2 MiB).
const CACHED: u64 = 96 * MIB;

/// A memory tier that stores objects up to 128 MiB.
const LARGE_ITEMS_CACHE: &str =
    "cache:\n  memory: { max_capacity: 268435456, ttl_seconds: 1800, max_item_size: 134217728 }";

/// The other streaming path: a cacheable miss streams to the client while
/// the cache copies its chunks aside (`TeeBody`), storing the object at the
/// end. Holding one copy is the point of a cache; more is waste: the fill
/// may grow the RSS by the object plus [`BOUND`], no more (keeping the
/// chunks themselves, which pinned hyper's larger read buffers, and joining
/// them at the end grew it by 202.9 MiB for this 96 MiB object). A hit then
/// answers from the stored copy without another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_fill_holds_one_copy_of_the_object() {
    let s3 = s3().await;
    write_object(&s3, "cached.bin", CACHED, 4);
    s3.put_object(BUCKET, "small.bin", &pattern(64 * 1024, 2)).unwrap();
    let proxy = Proxy::start(&config(&s3, LARGE_ITEMS_CACHE));
    let small = client().get(proxy.url("/data/small.bin")).send().await.unwrap();
    assert_eq!(small.bytes().await.unwrap().len(), 64 * 1024);

    let (fill, x_cache) = stream(&proxy, "/data/cached.bin", CACHED, 4).await;
    let report = fill.report(
        &format!("filling the cache with {} (X-Cache: {x_cache})", mib(CACHED)),
        CACHED + BOUND,
    );
    eprintln!("{report}");
    assert_eq!(x_cache, "MISS");
    assert!(fill.growth() < CACHED + BOUND, "more than one copy: {report}");

    let (hit, x_cache) = stream(&proxy, "/data/cached.bin", CACHED, 4).await;
    let report = hit.report(&format!("a hit on {} (X-Cache: {x_cache})", mib(CACHED)), BOUND);
    eprintln!("{report}");
    assert_eq!(x_cache, "HIT-MEMORY");
    assert!(hit.growth() < BOUND, "{report}");
}

/// The memory tier of the sliced-object test: 32 MiB in 8 MiB slices.
const SLICED_CACHE: &str =
    "cache:\n  memory: { max_capacity: 33554432, ttl_seconds: 1800, max_item_size: 8388608 }\n  slice_size: 8388608";

/// A third path: with `slice_size`, a large object's first `GET` streams
/// through and indexes it; the next streams slice after slice, each fetched
/// whole with `Range`, stored in the memory tier and sent. The RSS may grow
/// by the tier's budget (32 MiB) plus [`BOUND`], far below the 256 MiB object:
/// slices are evicted as the stream moves on (with mini-moka's own lazy
/// eviction schedule every slice stayed: +270.5 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sliced_object_streams_within_the_cache_budget() {
    let s3 = s3().await;
    write_object(&s3, "sliced.bin", MEDIUM, 5);
    let proxy = Proxy::start(&config(&s3, SLICED_CACHE));
    let (first, x_cache) = stream(&proxy, "/data/sliced.bin", MEDIUM, 5).await;
    let report = first.report(&format!("first GET of {} (X-Cache: {x_cache})", mib(MEDIUM)), BOUND);
    eprintln!("{report}");
    assert_eq!(x_cache, "BYPASS");
    assert!(first.growth() < BOUND, "{report}");

    let gets = s3.gets();
    let (sliced, x_cache) = stream(&proxy, "/data/sliced.bin", MEDIUM, 5).await;
    let budget = 32 * MIB;
    let report = sliced.report(
        &format!("{} from 8 MiB slices (X-Cache: {x_cache})", mib(MEDIUM)),
        budget + BOUND,
    );
    eprintln!("{report}");
    assert_eq!(x_cache, "SLICE");
    assert_eq!(s3.gets() - gets, MEDIUM / (8 * MIB), "one Range GET per slice");
    assert!(sliced.growth() < budget + BOUND, "{report}");
}
