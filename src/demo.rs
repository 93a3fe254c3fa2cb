//! `yatagarasu demo`: two local S3 replicas (s3s-fs over a temp dir) with
//! sample objects, and the proxy in front of them. No cloud account, no Docker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use yatagarasu_testkit::s3::LocalS3;

use crate::config::{self, Config};

/// The demo's key pair (local only).
pub const DEMO_ACCESS_KEY: &str = "yatagarasu-demo";
const DEMO_SECRET_KEY: &str = "yatagarasu-demo-secret";

/// The config the demo serves, pointing at the two local replicas.
pub fn demo_config(listen: SocketAddr, primary: &str, backup: &str) -> String {
    format!(
        r#"
server:
  address: "{listen}"
  shutdown_grace_seconds: 5
  # One instance: any fixed key keeps listing tokens valid across its restarts.
  s3_api: {{ token_key: "yatagarasu-demo-listing-tokens" }}
buckets:
  - name: "ha-data"
    path_prefix: "/data"
    s3:
      bucket: "data-bucket"
      region: "us-east-1"
      access_key: "${{DEMO_ACCESS_KEY:-{DEMO_ACCESS_KEY}}}"
      secret_key: "${{DEMO_SECRET_KEY:-{DEMO_SECRET_KEY}}}"
      replicas:
        - name: "primary"
          endpoint: "{primary}"
          priority: 1
          timeout_seconds: 2
        - name: "backup"
          endpoint: "{backup}"
          priority: 2
          timeout_seconds: 5
      circuit_breaker:
        failure_threshold: 3
        success_threshold: 2
        timeout_seconds: 10
        half_open_requests: 1
      health_check:
        enabled: true
        interval_seconds: 2
        timeout_seconds: 1
        path: "/"
    auth:
      enabled: false
metrics:
  enabled: false
logging:
  level: "info"
"#
    )
}

fn seed(s3: &LocalS3, which: &str) -> std::io::Result<()> {
    let label = if which == "primary" { "Primary" } else { "Backup" };
    s3.put_object("data-bucket", "test.txt", format!("{label} data!\n").as_bytes())?;
    s3.put_object(
        "data-bucket",
        "hello.txt",
        b"Hello from Yatagarasu, the three-legged crow!\n",
    )?;
    s3.put_object(
        "data-bucket",
        "docs/readme.md",
        b"# Sample\n\nObjects under nested keys work too.\n",
    )?;
    let big: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    s3.put_object("data-bucket", "big.bin", &big)?;
    Ok(())
}

/// Runs the demo until Ctrl-C.
pub async fn run(listen: SocketAddr, metrics_listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let primary = LocalS3::start(&dir.path().join("primary"), any, DEMO_ACCESS_KEY, DEMO_SECRET_KEY).await?;
    let backup = LocalS3::start(&dir.path().join("backup"), any, DEMO_ACCESS_KEY, DEMO_SECRET_KEY).await?;
    seed(&primary, "primary")?;
    seed(&backup, "backup")?;

    let text = demo_config(listen, &primary.endpoint(), &backup.endpoint());
    let config: Config = config::load_str(&text, "<demo>", &|v| std::env::var(v).ok())?;
    let app = crate::app::build(&config, crate::metrics::Metrics::new()).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e} (try `yatagarasu demo --listen 127.0.0.1:8081`)"))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match tokio::net::TcpListener::bind(metrics_listen).await {
        Ok(l) => Some(l),
        Err(e) => {
            println!("(metrics off: cannot listen on {metrics_listen}: {e}; try --metrics-listen 127.0.0.1:0)");
            None
        }
    };
    let metrics_line = match &metrics_listener {
        Some(l) => format!("curl -s http://{}/metrics | grep replica", l.local_addr()?),
        None => "(metrics off)".into(),
    };
    println!(
        "\nYatagarasu demo: proxy on http://{addr}, replicas 'primary' ({}) and 'backup' ({})\n\
         Try:\n  \
           curl http://{addr}/data/test.txt                 # Primary data!\n  \
           curl -I http://{addr}/data/hello.txt\n  \
           curl -H 'Range: bytes=0-4' http://{addr}/data/hello.txt\n  \
           curl http://{addr}/data/missing.txt              # 404 NoSuchKey (XML)\n  \
           curl http://{addr}/ready\n  \
           {metrics_line}\n\
         Type `stop primary` / `start primary` (or `backup`) and Enter to simulate an outage;\n\
         watch /data/test.txt switch to 'Backup data!' and back. Ctrl-C to quit.\n",
        primary.endpoint(),
        backup.endpoint()
    );
    let replicas = Arc::new(Mutex::new([("primary", primary), ("backup", backup)]));
    tokio::spawn(control_loop(replicas.clone()));
    let live = crate::reload::Live::new(app, None);
    crate::server::run(
        live,
        listener,
        metrics_listener,
        Duration::from_secs(5),
        std::future::pending(),
    )
    .await?;
    drop(replicas);
    Ok(())
}

/// Reads the commands on a thread of its own: a read of `tokio::io::stdin`
/// runs on the runtime's blocking pool, which the runtime waits for as it
/// shuts down, so Ctrl-C would hang until Enter (and the temp dir stay).
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn control_loop(replicas: Arc<Mutex<[(&'static str, LocalS3); 2]>>) {
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let mut words = line.split_whitespace();
        let (Some(cmd), Some(name)) = (words.next(), words.next()) else {
            continue;
        };
        let mut replicas = replicas.lock().await;
        let Some((_, s3)) = replicas.iter_mut().find(|(n, _)| *n == name) else {
            println!("unknown replica '{name}' (primary, backup)");
            continue;
        };
        match cmd {
            "stop" => {
                s3.stop().await;
                println!("replica '{name}' stopped");
            }
            "start" => match s3.restart().await {
                Ok(()) => println!("replica '{name}' started on {}", s3.endpoint()),
                Err(e) => println!("cannot restart '{name}': {e}"),
            },
            _ => println!("commands: stop NAME, start NAME"),
        }
    }
}
