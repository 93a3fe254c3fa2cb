//! `redis-server` child processes on free loopback ports: one server
//! ([`Redis`], standalone, cluster node, TLS, password or sentinel, as
//! [`RedisBuilder`] options), a 3-primary [`Cluster`] and a [`SentinelSet`].
//! Nothing is persisted; a server is killed (SIGKILL) and reaped on drop.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port_pair;

/// How to start a [`Redis`]. The default: a standalone server on a free
/// port, bound to 127.0.0.1, no persistence, in a temp dir, output dropped.
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    args: Vec<String>,
    tls: Option<[String; 3]>,
    sentinel_conf: Option<PathBuf>,
    dir: Option<PathBuf>,
    log: Option<PathBuf>,
}

impl RedisBuilder {
    /// Adds command-line arguments (`--requirepass`, `PASSWORD`, ...).
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// A cluster node (`--cluster-enabled yes`, `nodes.conf` in its
    /// directory, a 1 s node timeout, replicas that always stand for
    /// election).
    pub fn cluster(self) -> Self {
        self.args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            // A replica always stands for election, however long since it
            // heard from its primary (a loaded test machine can make that
            // look like stale data).
            "--cluster-replica-validity-factor",
            "0",
        ])
    }

    /// A replica of the server on `port`.
    pub fn replica_of(self, port: u16) -> Self {
        self.args(["--replicaof".to_owned(), "127.0.0.1".to_owned(), port.to_string()])
    }

    /// Requires this password (`--requirepass`).
    pub fn password(self, password: &str) -> Self {
        self.args(["--requirepass", password])
    }

    /// Allows the `DEBUG` command (`DEBUG SLEEP` makes a slow server).
    pub fn debug_command(self) -> Self {
        self.args(["--enable-debug-command", "yes"])
    }

    /// TLS only: the plain port is off and the free port found is the
    /// `--tls-port`, serving `cert` and `key`; clients are not asked for a
    /// certificate.
    pub fn tls(mut self, cert: &str, key: &str, ca: &str) -> Self {
        self.tls = Some([cert.to_owned(), key.to_owned(), ca.to_owned()]);
        self
    }

    /// A sentinel with this config file (`redis-server CONF --sentinel`).
    pub fn sentinel(mut self, conf: &Path) -> Self {
        self.sentinel_conf = Some(conf.to_path_buf());
        self
    }

    /// Runs in `dir` (a cluster node's `nodes.conf` goes there) instead of a
    /// temp dir of its own.
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Writes the server's output to `log` instead of dropping it.
    pub fn log(mut self, log: &Path) -> Self {
        self.log = Some(log.to_path_buf());
        self
    }

    /// Starts the server; panics if it does not start.
    pub fn start(self) -> Redis {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the server on a free port; a port taken meanwhile by someone
    /// else (the server exits) makes it try another.
    pub fn try_start(self) -> Result<Redis, String> {
        let temp = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                None
            }
            None => Some(tempfile::tempdir().map_err(|e| e.to_string())?),
        };
        let mut redis = Redis {
            port: 0,
            spec: self,
            child: None,
            _temp: temp,
        };
        for _ in 0..10 {
            redis.port = free_port_pair();
            if redis.spawn()? {
                return Ok(redis);
            }
        }
        Err("redis-server did not start (every port tried was taken)".into())
    }

    fn command(&self, port: u16, dir: &Path) -> Result<Command, String> {
        let mut cmd = Command::new("redis-server");
        let port = port.to_string();
        if let Some(conf) = &self.sentinel_conf {
            cmd.arg(conf).args(["--sentinel", "--port", &port]);
        } else {
            match &self.tls {
                None => cmd.args(["--port", &port]),
                Some([cert, key, ca]) => cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-cert-file",
                    cert,
                    "--tls-key-file",
                    key,
                    "--tls-ca-cert-file",
                    ca,
                    "--tls-auth-clients",
                    "no",
                ]),
            };
            cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        }
        cmd.args(&self.args).current_dir(dir).stdin(Stdio::null());
        match &self.log {
            Some(log) => {
                let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
                let err = out.try_clone().map_err(|e| e.to_string())?;
                cmd.stdout(out).stderr(err);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        Ok(cmd)
    }
}

/// One `redis-server` (or sentinel) child process on a loopback port.
pub struct Redis {
    /// The port it listens on (the TLS port with [`RedisBuilder::tls`]); the
    /// same across [`restart`](Self::restart)s.
    pub port: u16,
    spec: RedisBuilder,
    child: Option<Child>,
    _temp: Option<tempfile::TempDir>,
}

impl Redis {
    /// Options for a server to start.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// A standalone server on a free port; panics if it does not start.
    pub fn start() -> Redis {
        Self::builder().start()
    }

    fn dir(&self) -> &Path {
        match (&self.spec.dir, &self._temp) {
            (Some(dir), _) => dir,
            (None, Some(temp)) => temp.path(),
            (None, None) => Path::new("."),
        }
    }

    /// Spawns the server on `self.port`; false if it exited (port taken).
    fn spawn(&mut self) -> Result<bool, String> {
        let mut child = self
            .spec
            .command(self.port, self.dir())?
            .spawn()
            .map_err(|e| format!("cannot run redis-server (scripts/test.sh installs it): {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(false);
            }
            if self.answers() {
                self.child = Some(child);
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("redis-server on port {} does not answer", self.port))
    }

    /// Whether the server answers: listening, and (on a plain port) any
    /// reply to `PING` (`+PONG`, or an error when a password is needed).
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200))
        else {
            return false;
        };
        if self.spec.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 1];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut reply)
                .is_ok_and(|n| n == 1 && matches!(reply[0], b'+' | b'-'))
    }

    /// Waits (up to 10 s) until the server answers again (after a
    /// `DEBUG SLEEP`); panics if it does not.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {} does not answer", self.port);
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, like a crash; its data is lost).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it again on the same port (killing it first if it runs) and
    /// waits until it answers; panics if the port was taken meanwhile.
    pub fn restart(&mut self) {
        self.kill();
        let started = self.spawn().unwrap_or_else(|e| panic!("{e}"));
        assert!(started, "port {} was taken while redis was down", self.port);
    }

    /// `redis-cli -p PORT args...` output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli` against a loopback port; its stdout (empty on failure).
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A 3-primary, 3-replica Redis Cluster on loopback ports
/// (`redis-cli --cluster create ... --cluster-replicas 1`).
pub struct Cluster {
    /// The six nodes (the first three were made primaries).
    pub nodes: Vec<Redis>,
    _dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts one in a temp dir; panics if it does not form.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut cluster = Self::try_start_in(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        cluster._dir = Some(dir);
        cluster
    }

    /// Starts one whose nodes run in `dir/node-N` and log to `dir/node-N.log`;
    /// returns once every node reports `cluster_state:ok`.
    pub fn try_start_in(dir: &Path) -> Result<Cluster, String> {
        let nodes = (0..6)
            .map(|i| {
                Redis::builder()
                    .cluster()
                    .dir(&dir.join(format!("node-{i}")))
                    .log(&dir.join(format!("node-{i}.log")))
                    .try_start()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!("cluster create: {}", String::from_utf8_lossy(&out.stdout)));
        }
        let cluster = Cluster { nodes, _dir: None };
        if !cluster.reaches_ok(Duration::from_secs(30)) {
            return Err("the cluster never reached cluster_state:ok".into());
        }
        Ok(cluster)
    }

    fn reaches_ok(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_size:3")
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees
    /// on three primaries; panics after `timeout`.
    pub fn wait_ok(&self, timeout: Duration) {
        assert!(self.reaches_ok(timeout), "the cluster never reached cluster_state:ok");
    }

    /// Waits until three running nodes are primaries again (a replica was
    /// promoted after a primary died); panics after `timeout`.
    pub fn wait_promoted(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.primaries().len() == 3 {
                return self.wait_ok(timeout);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis never promoted a replica of the killed primary");
    }

    /// `redis://` URLs of the first three nodes (seeds for a client).
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().take(3).map(Redis::url).collect()
    }

    /// Indexes of the running nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running() && self.nodes[i].cli(&["ROLE"]).starts_with("master"))
            .collect()
    }
}

/// A Sentinel-managed set: a primary, a replica and three sentinels
/// monitoring it as `mymaster` (quorum 2).
pub struct SentinelSet {
    /// The primary at start.
    pub primary: Redis,
    /// Its replica.
    pub replica: Redis,
    /// The three sentinels.
    pub sentinels: Vec<Redis>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Starts the set; panics if a server does not start.
    pub fn start() -> SentinelSet {
        let dir = tempfile::tempdir().expect("a temp dir");
        let primary = Redis::builder().dir(dir.path()).start();
        let replica = Redis::builder().dir(dir.path()).replica_of(primary.port).start();
        let sentinels = (0..3)
            .map(|i| {
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "bind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 5000\n\
                         sentinel parallel-syncs mymaster 1\n",
                        primary.port
                    ),
                )
                .expect("write the sentinel config");
                Redis::builder().dir(dir.path()).sentinel(&conf).start()
            })
            .collect();
        SentinelSet {
            primary,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    /// `redis://` URLs of the sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Redis::url).collect()
    }

    /// The primary's port according to the sentinels (first that answers).
    pub fn current_primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }
}
