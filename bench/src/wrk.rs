//! Load runs with `wrk`, and the CPU the server under load spent on them.

use std::process::Command;

use crate::measure::fmt_us;
use crate::Opts;

/// What one wrk run reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// A wrk run and the CPU seconds the server (its process tree) used during it.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// wrk's figures.
    pub wrk: WrkResult,
    /// Server CPU seconds (user + system) during the run.
    pub cpu_s: f64,
}

impl Load {
    /// Server CPU seconds per 100,000 requests.
    pub fn cpu_per_100k(&self) -> f64 {
        self.cpu_s / self.wrk.requests.max(1) as f64 * 1e5
    }

    /// MiB/s for responses of `size` bytes.
    pub fn mibs(&self, size: u64) -> f64 {
        self.wrk.rps * size as f64 / crate::data::MIB as f64
    }
}

/// `1.5ms`, `230.00us`, `2.01s`, `1.2m` as µs.
fn parse_time(s: &str) -> Option<f64> {
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

/// Parses wrk's `--latency` output.
pub fn parse(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult {
        rps: f64::NAN,
        requests: 0,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        errors: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["50%", v] => r.p50_us = parse_time(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_us = parse_time(v).unwrap_or(f64::NAN),
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

/// Runs wrk against `url` with `connections` connections (`--threads`,
/// `--duration` from the options).
pub fn run(opts: &Opts, url: &str, connections: u32) -> Result<WrkResult, String> {
    let threads = opts.threads.clamp(1, connections.max(1));
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", opts.duration()))
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
    parse(&text)
}

/// Runs wrk against `url` and reads the CPU time of the server process
/// tree `server_pid` before and after.
pub fn measured(opts: &Opts, url: &str, connections: u32, server_pid: u32) -> Result<Load, String> {
    let before = crate::procs::cpu_tree(server_pid);
    let wrk = run(opts, url, connections)?;
    let cpu_s = crate::procs::cpu_tree(server_pid) - before;
    Ok(Load { wrk, cpu_s })
}

/// `61234 req/s (p50 …, p99 …)`.
pub fn fmt(r: &WrkResult) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 2s test @ http://127.0.0.1:8080/bench/small-4k.bin
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   520.11us  310.20us   8.01ms   91.00%
    Req/Sec    61.50k     2.10k   64.00k    80.00%
  Latency Distribution
     50%  480.00us
     75%  600.00us
     90%  750.00us
     99%    1.50ms
  122400 requests in 2.00s, 520.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  61200.00
Transfer/sec:    260.00MB
";

    #[test]
    fn parses_wrk_latency_output() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!(r.requests, 122_400);
        assert_eq!(r.rps, 61_200.0);
        assert_eq!(r.p50_us, 480.0);
        assert_eq!(r.p99_us, 1500.0);
        assert_eq!(r.errors, 6);
        let load = Load { wrk: r, cpu_s: 2.448 };
        assert!((load.cpu_per_100k() - 2.0).abs() < 1e-9);
        assert!(parse("wrk: connection refused").is_err());
    }
}
