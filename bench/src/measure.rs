//! Client-side measuring: single GETs, sequential latency samples, streams,
//! and how figures are printed.

use std::time::{Duration, Instant};

/// A keep-alive HTTP client without proxy or redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(4)
        .build()
        .expect("client")
}

/// One GET's answer.
#[derive(Debug)]
pub struct Got {
    /// Status code.
    pub status: u16,
    /// Body length.
    pub len: usize,
    /// The proxy's `X-Cache`, or nginx's `X-Cache-Status`.
    pub x_cache: Option<String>,
    /// `X-Yatagarasu-Replica`.
    pub replica: Option<String>,
}

/// GETs `url` and reads the body.
pub async fn get(client: &reqwest::Client, url: &str) -> Result<Got, String> {
    let res = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let header = |n: &str| res.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let x_cache = header("x-cache").or_else(|| header("x-cache-status"));
    let replica = header("x-yatagarasu-replica");
    let body = res.bytes().await.map_err(|e| e.to_string())?;
    Ok(Got {
        status,
        len: body.len(),
        x_cache,
        replica,
    })
}

/// GETs `url` twice (a short pause between, for a background cache fill)
/// and checks that the second answer is a cache hit of `len` bytes.
pub async fn expect_hit(client: &reqwest::Client, url: &str, len: u64) -> Result<(), String> {
    let first = get(client, url).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = get(client, url).await?;
    if second.status != 200 || second.len as u64 != len {
        return Err(format!("{url}: status {} with {} bytes", second.status, second.len));
    }
    match second.x_cache.as_deref() {
        Some(x) if x.starts_with("HIT") => Ok(()),
        other => Err(format!(
            "{url}: no cache hit (X-Cache on 1st GET: {}, 2nd GET: {})",
            first.x_cache.as_deref().unwrap_or("none"),
            other.unwrap_or("none")
        )),
    }
}

/// Latency samples in µs.
#[derive(Default, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    /// The `p`th percentile, µs (NaN when empty).
    pub fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// Sequential GETs of `urls` (interleaved, one at a time, keep-alive), after
/// a warm-up; every answer must be a 200 of `len` bytes.
pub async fn interleaved_latency(
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

/// Streams `url` to the end; returns (bytes, seconds).
pub async fn stream_once(client: &reqwest::Client, url: &str) -> Result<(u64, f64), String> {
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

/// `830 µs`, `1.52 ms`.
pub fn fmt_us(us: f64) -> String {
    if us.abs() >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// `+830 µs`, `-1.52 ms`.
pub fn fmt_signed_us(us: f64) -> String {
    if us >= 0.0 {
        format!("+{}", fmt_us(us))
    } else {
        format!("-{}", fmt_us(-us))
    }
}

/// `82 ns`, `3.51 µs`.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

/// A ratio with two decimals, `–` when undefined.
pub fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "–".to_owned()
    }
}
