//! What every scenario shares: the run's environment ([`Env`]), the
//! scenario registry entry ([`Scenario`]) and the Markdown report.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Opts;

/// A scenario of the suite: one entry of `SCENARIOS` in `main.rs`.
pub struct Scenario {
    /// Its name for `--only`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Whether it runs the proxy binary (all but `micro`).
    pub needs_bin: bool,
    /// Runs it, adding rows to the report.
    pub run: fn(&mut Env) -> Result<Outcome, String>,
}

/// How a scenario ended: its summary (printed after its name), or why it
/// was skipped.
pub enum Outcome {
    /// Measured; the text summarises the figures.
    Done(String),
    /// Not measured, and why.
    Skipped(String),
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// `scenario | figure | yatagarasu | peer | ratio | goal | access log`.
    pub cells: [String; 7],
}

/// The run's shared state: options, temp dir, S3 root, async runtime, report.
pub struct Env {
    /// The command line.
    pub opts: Opts,
    /// Everything the run writes (removed at the end unless `--keep`).
    pub dir: tempfile::TempDir,
    /// The S3 server's root directory (`<root>/bench/<key>`).
    pub root: PathBuf,
    /// Child process logs and generated configs.
    pub logs: PathBuf,
    /// A current-thread runtime for the client side.
    pub rt: tokio::runtime::Runtime,
    /// The report's rows, in order.
    pub table: Vec<Row>,
}

impl Env {
    /// A temp dir with `s3/` and `logs/`, and a runtime.
    pub fn new(opts: Opts) -> Result<Env, String> {
        let dir = tempfile::Builder::new()
            .prefix("yatagarasu-bench-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let root = dir.path().join("s3");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Env {
            opts,
            dir,
            root,
            logs,
            rt,
            table: Vec::new(),
        })
    }

    /// Adds a row: (scenario, figure, yatagarasu, peer, ratio, goal); the
    /// access-log column says what the proxy and nginx logged.
    pub fn row(&mut self, cells: [&str; 6]) {
        let logs = if self.opts.access_log() { "on / on" } else { "off / off" };
        self.row_with_logs(cells, logs);
    }

    /// Adds a row with its own access-log cell (`–` where nothing logs).
    pub fn row_with_logs(&mut self, cells: [&str; 6], logs: &str) {
        let [a, b, c, d, e, f] = cells.map(str::to_owned);
        self.table.push(Row {
            cells: [a, b, c, d, e, f, logs.to_owned()],
        });
    }

    /// Where this run's scratch files go.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }
}

/// The first line of a command's stdout or stderr, if it ran.
fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(str::to_owned)
}

/// The commit the bench was built from (`abc1234`, `+ changes` when the work
/// tree differs from it).
pub fn commit() -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let Some(sha) = first_line(
        Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["rev-parse", "--short", "HEAD"]),
    ) else {
        return "unknown".to_owned();
    };
    let dirty = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("`{sha}` + uncommitted changes")
    } else {
        format!("`{sha}`")
    }
}

/// The Markdown report: when, where and how it was measured, then one
/// table with every figure and ratio.
pub fn report(env: &Env) -> String {
    let opts = &env.opts;
    let nginx = first_line(Command::new("/usr/sbin/nginx").arg("-v"))
        .map(|l| l.replace("nginx version: ", ""))
        .unwrap_or_else(|| "nginx not found".to_owned());
    let wrk = first_line(Command::new("wrk").arg("-v"))
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "wrk not found".to_owned());
    let logs = if opts.access_log() {
        "access log ON on both sides (the proxy's default text format to a file, nginx `combined` to a file)"
    } else {
        "access log OFF on both sides (the proxy with `yatagarasu::access=off`, nginx `access_log off`)"
    };
    let mut out = format!(
        "Measured {} at commit {}{}: {} CPUs, loopback, {nginx} (`worker_processes auto`), {wrk} \
         (`-t{} -d{}s`), {logs}.\n\
         ratio = yatagarasu / peer: higher is better for req/s and MiB/s, lower for p99 and CPU seconds.\n\n\
         | scenario | figure | yatagarasu | peer | ratio | goal | access log (proxy / peer) |\n\
         |---|---|---|---|---|---|---|\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        commit(),
        if opts.quick { " (`--quick`)" } else { "" },
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        opts.threads,
        opts.duration(),
    );
    for r in &env.table {
        out.push_str(&format!("| {} |\n", r.cells.join(" | ")));
    }
    out
}
