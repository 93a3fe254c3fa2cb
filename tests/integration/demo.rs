//! The README's run command: `yatagarasu demo` serves at once, and its
//! `stop primary` / `start primary` commands show failover and recovery, and
//! it leaves nothing behind in the temp dir when stopped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn the_demo_serves_at_once_and_shows_failover() {
    // The demo's replicas keep their objects under the temp dir: give it one
    // of its own, to see that it is cleaned up.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .env("TMPDIR", tmp.path())
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
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_some(),
        "the demo keeps its replicas' data elsewhere than TMPDIR"
    );

    // Ctrl-C or SIGTERM: the demo drains, exits 0 and removes its data dir.
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let exited = eventually(Duration::from_secs(15), || {
        let done = matches!(child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(
        exited && status.success(),
        "demo did not exit cleanly on SIGTERM: {status}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the demo left {left:?} behind");
}
