//! Child processes of the bench: started with their output in a log file,
//! killed and reaped on drop; their CPU time and memory read from `/proc`.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat` (`USER_HZ`,
/// 100 on every Linux architecture the bench runs on).
const TICKS_PER_SEC: f64 = 100.0;

/// A child process killed (SIGKILL) and reaped on drop; its stdout and
/// stderr go to a log file.
pub struct Proc {
    name: String,
    child: Option<std::process::Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout + stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Proc, String> {
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

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for `needle` in the log and returns the word after it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
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

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after `grace`: for nginx, whose workers outlive
    /// a SIGKILLed master but exit with a terminated one.
    pub fn terminate(&mut self, grace: Duration) {
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
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
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

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The fields of a `/proc/PID/stat` line after `(comm)` (which may hold
/// spaces): index 0 is field 3, `state`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// `utime + stime` in seconds from a `/proc/PID/stat` line (fields 14 and
/// 15; for a process, the sum over all its threads).
fn stat_cpu_secs(stat: &str) -> f64 {
    let f = stat_fields(stat);
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / TICKS_PER_SEC
}

/// The parent pid (field 4) of a `/proc/PID/stat` line.
fn stat_ppid(stat: &str) -> Option<u32> {
    stat_fields(stat).get(1).and_then(|v| v.parse().ok())
}

/// User + system CPU seconds of a process (`pid` may be `self`), all its
/// threads included.
pub fn cpu_secs(pid: &str) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU seconds of a process and of its descendants that are alive (nginx's
/// master and workers; the proxy, whose threads its own line covers).
/// Read before and after a load run; the difference is the work's cost.
pub fn cpu_tree(pid: u32) -> f64 {
    let mut parents = std::collections::HashMap::<u32, Vec<(u32, f64)>>::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            if let Some(ppid) = stat_ppid(&stat) {
                parents.entry(ppid).or_default().push((child, stat_cpu_secs(&stat)));
            }
        }
    }
    let mut total = cpu_secs(&pid.to_string());
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for &(child, secs) in parents.get(&p).map(Vec::as_slice).unwrap_or_default() {
            total += secs;
            todo.push(child);
        }
    }
    total
}

/// The last `n` bytes of `text` (on a char boundary).
pub fn tail(text: &str, n: usize) -> &str {
    let start = text.len().saturating_sub(n);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[start..]
}

/// A port free on 127.0.0.1 right now (for nginx, which cannot report the
/// port it bound).
pub fn free_port() -> Result<u16, String> {
    Ok(yatagarasu_testkit::ports::free_port())
}

pub use yatagarasu_testkit::ports::wait_port;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_with_spaces_in_comm() {
        // pid (comm) state ppid ... utime(14) stime(15)
        let line = "4242 (nginx: worker process) S 4241 4241 4241 0 -1 4194624 10 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(stat_ppid(line), Some(4241));
        assert!((stat_cpu_secs(line) - 3.25).abs() < 1e-9);
    }

    #[test]
    fn own_cpu_time_is_read() {
        // Spin until the kernel has charged at least one tick to this process.
        let t = Instant::now();
        let mut x = 0u64;
        while cpu_secs("self") == 0.0 && t.elapsed() < Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        assert!(cpu_secs("self") > 0.0);
        assert!(cpu_tree(std::process::id()) >= cpu_secs("self"));
    }
}
