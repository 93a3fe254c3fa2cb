//! `yatagarasu-bench`: the benchmark suite of the Yatagarasu S3 proxy.
//!
//! Orchestrates real processes on loopback: `yatagarasu serve-s3` (s3s-fs)
//! servers over temp dirs, the release `yatagarasu` proxy with generated
//! configs, nginx as the peer, and wrk. It builds nothing: run `bench/run.sh`
//! (or build `target/release/yatagarasu` first). See `bench/README.md`.
//!
//! One module per scenario; each exports a [`suite::Scenario`] that
//! [`SCENARIOS`] lists, so adding a scenario is a module and one line there.

mod cache_cluster;
mod cache_hit;
mod data;
mod failover;
mod listing;
mod measure;
mod micro;
mod nginx;
mod pass_through;
mod procs;
mod servers;
mod slices;
mod slow_replica;
mod stream;
mod suite;
mod tls;
mod wrk;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::Parser;

use suite::{Env, Outcome, Scenario};

/// Every scenario, in the order they run.
const SCENARIOS: &[Scenario] = &[
    cache_hit::SMALL,
    cache_hit::MEDIUM,
    pass_through::SCENARIO,
    stream::SCENARIO,
    failover::SCENARIO,
    micro::SCENARIO,
    tls::SCENARIO,
    listing::SCENARIO,
    cache_cluster::SCENARIO,
    slices::SCENARIO,
    slow_replica::SCENARIO,
];

fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(SCENARIOS.iter().map(|s| PossibleValue::new(s.name).help(s.about)))
}

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "yatagarasu-bench",
    about = "The Yatagarasu benchmark suite: the proxy against nginx and direct S3, on loopback",
    after_help = "Prints one line per scenario, then one Markdown table with every figure and ratio, \
                  the date and the commit. See bench/README.md."
)]
pub struct Opts {
    /// Short runs: 5 s per wrk run, fewer samples, a 256 MiB stream.
    #[arg(long)]
    pub quick: bool,
    /// Scenarios to run, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_parser = scenario_names())]
    pub only: Vec<String>,
    /// The proxy binary [default: <target dir>/release/yatagarasu].
    #[arg(long, env = "YATAGARASU_BIN")]
    bin: Option<PathBuf>,
    /// wrk connection counts, comma-separated: every load figure is measured at each.
    #[arg(long, value_delimiter = ',', default_value = "32,256", value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: Vec<u32>,
    /// wrk threads (at most one per connection).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// Seconds per wrk run [default: 15, 5 with --quick].
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Size of the streamed object in MiB [default: 1024, 256 with --quick].
    #[arg(long, value_name = "N")]
    stream_mib: Option<u64>,
    /// Let s3s-fs compute the MD5 of each object on every GET (no ETag sidecar).
    #[arg(long)]
    no_etag_sidecar: bool,
    /// Access log on, on both sides: the proxy's default format and nginx's `combined`.
    #[arg(long)]
    access_log: bool,
    /// Access log off on both sides (the default; kept for old scripts).
    #[arg(long, conflicts_with = "access_log")]
    no_access_log: bool,
    /// Keep the temp dir (generated configs, process logs, access logs) after the run.
    #[arg(long)]
    keep: bool,
}

impl Opts {
    /// Whether `--only` selects `name` (everything when empty).
    pub fn runs(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == name)
    }

    /// The proxy binary: `--bin`, `$YATAGARASU_BIN`, else the release build.
    pub fn bin(&self) -> PathBuf {
        self.bin.clone().unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
            target.join("release").join("yatagarasu")
        })
    }

    /// Seconds per wrk run.
    pub fn duration(&self) -> u64 {
        self.duration.unwrap_or(if self.quick { 5 } else { 15 })
    }

    /// Size of the streamed object in MiB.
    pub fn stream_mib(&self) -> u64 {
        self.stream_mib.unwrap_or(if self.quick { 256 } else { 1024 })
    }

    /// Whether objects get an s3s-fs ETag sidecar.
    pub fn etag_sidecar(&self) -> bool {
        !self.no_etag_sidecar
    }

    /// Whether the proxy and nginx write an access log.
    pub fn access_log(&self) -> bool {
        self.access_log
    }
}

fn main() {
    let opts = Opts::parse();
    let selected: Vec<&Scenario> = SCENARIOS.iter().filter(|s| opts.runs(s.name)).collect();
    if selected.iter().any(|s| s.needs_bin) && !opts.bin().exists() {
        eprintln!(
            "error: no proxy binary at {} (run `cargo build --release -p yatagarasu` first, or pass --bin)",
            opts.bin().display()
        );
        std::process::exit(2);
    }
    let started = Instant::now();
    let mut env = match Env::new(opts.clone()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "yatagarasu-bench{}: proxy {}, {} CPUs, loopback; temp dir {}",
        if opts.quick { " --quick" } else { "" },
        opts.bin().display(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        env.scratch().display()
    );
    let mut failed = false;
    for scenario in selected {
        let t = Instant::now();
        match (scenario.run)(&mut env) {
            Ok(Outcome::Done(line)) => println!("{}: {line} ({:.1}s)", scenario.name, t.elapsed().as_secs_f64()),
            Ok(Outcome::Skipped(why)) => println!("{}: SKIPPED ({why})", scenario.name),
            Err(e) => {
                failed = true;
                println!("{}: FAILED ({e})", scenario.name);
            }
        }
    }
    println!("\n{}", suite::report(&env));
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    if opts.keep {
        println!("kept {}", env.dir.keep().display());
    }
    if failed {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn old_flags_still_parse() {
        let o = Opts::try_parse_from([
            "yatagarasu-bench",
            "--quick",
            "--only",
            "cache-hit,stream",
            "--connections",
            "64",
            "--threads",
            "2",
            "--duration",
            "2",
            "--stream-mib",
            "16",
            "--no-etag-sidecar",
            "--no-access-log",
            "--bin",
            "/x/yatagarasu",
        ])
        .unwrap();
        assert!(o.runs("cache-hit") && o.runs("stream") && !o.runs("micro"));
        assert_eq!(o.connections, [64]);
        assert_eq!((o.threads, o.duration(), o.stream_mib()), (2, 2, 16));
        assert!(!o.etag_sidecar() && !o.access_log());
        assert_eq!(o.bin(), PathBuf::from("/x/yatagarasu"));
    }

    #[test]
    fn defaults_and_rejections() {
        let o = Opts::try_parse_from(["yatagarasu-bench"]).unwrap();
        assert_eq!(o.connections, [32, 256]);
        assert!(!o.access_log() && o.runs("micro") && o.runs("cache-hit-1mib"));
        assert_eq!((o.duration(), o.stream_mib()), (15, 1024));
        assert!(Opts::try_parse_from(["yatagarasu-bench", "--only", "nope"]).is_err());
        assert!(Opts::try_parse_from(["yatagarasu-bench", "--access-log", "--no-access-log"]).is_err());
        assert!(Opts::try_parse_from(["yatagarasu-bench", "--connections", "0"]).is_err());
    }

    #[test]
    fn scenario_names_are_unique() {
        let mut names: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), SCENARIOS.len());
    }
}
