//! A real `redis-server` child process on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback port whose cluster-bus twin (+10000) is free too.
fn free_port_pair() -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 55_535 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` (or sentinel) child process.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    /// Starts `redis-server` with `args` on a free port (`--port` added), in
    /// `dir`; a port taken meanwhile by someone else makes it try another.
    pub fn spawn(dir: &std::path::Path, args: &dyn Fn(u16) -> Vec<String>) -> Node {
        for _ in 0..10 {
            let port = free_port_pair();
            let mut child = Command::new("redis-server")
                .args(args(port))
                .current_dir(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is installed (scripts/test.sh installs it)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken
                }
                // Listening means ready (whether the port speaks TLS or asks for a password).
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Node {
                        port,
                        child: Some(child),
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p PORT args...` output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for Node {
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
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let sub = dir.path().join(format!("n{i}"));
                std::fs::create_dir_all(&sub).unwrap();
                Node::spawn(&sub, &|port| {
                    [
                        "--port",
                        &port.to_string(),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // A replica always stands for election, however long
                        // since it heard from its primary (a loaded test
                        // machine can make that look like stale data).
                        "--cluster-replica-validity-factor",
                        "0",
                    ]
                    .map(String::from)
                    .to_vec()
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and agrees
    /// on three primaries.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_size:3")
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster never reached cluster_state:ok");
    }

    /// Waits until three running nodes are primaries again (a replica was
    /// promoted after a primary died).
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

    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().take(3).map(Node::url).collect()
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
    pub primary: Node,
    pub replica: Node,
    pub sentinels: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    pub fn start() -> SentinelSet {
        let dir = tempfile::tempdir().unwrap();
        let base = |port: u16| {
            [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(String::from)
            .to_vec()
        };
        let primary = Node::spawn(dir.path(), &base);
        let primary_port = primary.port.to_string();
        let replica = Node::spawn(dir.path(), &|port| {
            let mut args = base(port);
            args.extend(["--replicaof".into(), "127.0.0.1".into(), primary_port.clone()]);
            args
        });
        let sentinels = (0..3)
            .map(|i| {
                let conf = dir.path().join(format!("sentinel-{i}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "bind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {primary_port} 2\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 5000\n\
                         sentinel parallel-syncs mymaster 1\n"
                    ),
                )
                .unwrap();
                let conf = conf.to_string_lossy().into_owned();
                Node::spawn(dir.path(), &|port| {
                    vec![conf.clone(), "--sentinel".into(), "--port".into(), port.to_string()]
                })
            })
            .collect();
        SentinelSet {
            primary,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::url).collect()
    }

    /// The primary's port according to the sentinels (first that answers).
    pub fn current_primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "get-master-addr-by-name", "mymaster"]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }
}
