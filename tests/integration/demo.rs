//! The README's run command: `yatagarasu demo` serves at once, and its
//! `stop primary` / `start primary` commands show failover and recovery.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn the_demo_serves_at_once_and_shows_failover() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for marker in ["proxy on http://", "metrics listening on http://"] {
                if let Some(i) = line.find(marker) {
                    let addr: String = line[i + marker.len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != ',')
                        .collect();
                    let _ = tx.send((marker, addr));
                }
            }
        }
    });
    let (mut proxy, mut metrics) = (String::new(), String::new());
    while proxy.is_empty() || metrics.is_empty() {
        let (marker, addr) = rx.recv_timeout(Duration::from_secs(30)).expect("demo started");
        if marker.starts_with("proxy") {
            proxy = addr;
        } else {
            metrics = addr;
        }
    }
    let get = |path: &'static str| get_text(format!("http://{proxy}{path}"));
    assert_eq!(get("/data/test.txt").await, "Primary data!\n");
    assert!(get("/data/missing.txt").await.contains("<Code>NoSuchKey</Code>"));

    writeln!(stdin, "stop primary").unwrap();
    let failed_over = eventually(Duration::from_secs(10), || async {
        get("/data/test.txt").await == "Backup data!\n"
    })
    .await;
    assert!(failed_over);
    for _ in 0..5 {
        assert_eq!(get("/data/test.txt").await, "Backup data!\n");
    }
    let scrape = get_text(format!("http://{metrics}/metrics")).await;
    assert!(
        scrape.contains("yatagarasu_replica_health{bucket=\"ha-data\",replica=\"primary\"}"),
        "{scrape}"
    );

    writeln!(stdin, "start primary").unwrap();
    let back = eventually(Duration::from_secs(20), || async {
        get("/data/test.txt").await == "Primary data!\n"
    })
    .await;
    assert!(back, "the primary never came back");
    let _ = child.kill();
    let _ = child.wait();
}
