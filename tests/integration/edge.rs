//! The edge against misbehaving clients, over raw sockets to the real
//! binary: idle and trickling connections are closed, a client that stops
//! reading frees its request slot, the connection limit refuses, and the
//! protocol edges (Host, `OPTIONS *`, `CONNECT`, request ids, HTTP/2 header
//! sizes) are answered as RFC 9110/9112 say; plain HTTP on the TLS port gets
//! a 400 that says so, and what is refused before the edge is counted.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Upper bound for anything the proxy must do on its own; reaching it fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

fn config(endpoint: &str, server_extra: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  shutdown_grace_seconds: 1
{server_extra}
buckets:
  - name: main
    path_prefix: /data
    s3: {{ bucket: bucket-a, endpoint: "{endpoint}", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY}, timeout_seconds: 30 }}
health_check: {{ enabled: false }}
metrics: {{ enabled: true, address: 127.0.0.1, port: 0 }}
"#
    )
}

async fn setup(server_extra: &str) -> (S3, Proxy) {
    let s3 = s3().await;
    s3.put_object("bucket-a", "small.txt", b"hello, yatagarasu\n").unwrap();
    s3.put_object("bucket-a", "large.bin", &pattern(32 * 1024 * 1024, 7))
        .unwrap();
    let proxy = Proxy::start(&config(&s3.endpoint(), server_extra));
    (s3, proxy)
}

/// Reads one response (headers, then `Content-Length` bytes): status, head, body.
async fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).await.unwrap();
        assert!(
            n == 1,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.unwrap();
    (status, head, body)
}

/// Waits until the peer closes `s` (EOF or reset), reading and discarding
/// whatever arrives; false when it is still open after [`PATIENCE`].
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let wait = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.is_ok()
}

/// Sends `request` on a new connection and reads the start of its `200`
/// answer, then never reads again: the connection, for the caller to hold.
async fn stalled_reader(proxy: &Proxy, request: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 100];
    s.read_exact(&mut first).await.unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    s
}

/// Whether at least `n` client connections were closed by `send_timeout`
/// within [`PATIENCE`].
async fn cut_by_send_timeout(proxy: &Proxy, n: f64) -> bool {
    eventually(PATIENCE, || async {
        metric(
            proxy,
            "yatagarasu_client_connections_closed_total{reason=\"send_timeout\"}",
        )
        .await
            >= n
    })
    .await
}

/// A metric's value from the metrics listener (0 when absent).
async fn metric(proxy: &Proxy, series: &str) -> f64 {
    let text = get_text(proxy.metrics_url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (_s3, proxy) = setup("  header_read_timeout_seconds: 1\n  keepalive_idle_timeout_seconds: 300").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(closed_by_peer(&mut s).await, "a silent connection stayed open");
    assert!(
        metric(
            &proxy,
            "yatagarasu_client_connections_closed_total{reason=\"header_timeout\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_s3, proxy) = setup("  header_read_timeout_seconds: 300\n  keepalive_idle_timeout_seconds: 1").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /data/small.txt HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!((status, body.as_slice()), (200, &b"hello, yatagarasu\n"[..]));
    assert!(
        closed_by_peer(&mut s).await,
        "an idle keep-alive connection stayed open"
    );
    assert!(metric(&proxy, "yatagarasu_client_connections_closed_total{reason=\"idle\"}").await >= 1.0);
}

#[tokio::test]
async fn headers_trickled_byte_by_byte_are_cut_off() {
    let (_s3, proxy) = setup("  header_read_timeout_seconds: 2\n  keepalive_idle_timeout_seconds: 300").await;
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // A header block far longer than what a byte every 50 ms sends before the timeout.
    let head = format!(
        "GET /data/small.txt HTTP/1.1\r\nHost: test\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(4000)
    );
    let writer = tokio::spawn(async move {
        for b in head.bytes() {
            if wr.write_all(&[b]).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    });
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickling client was still being read");
    writer.abort();
    assert!(
        !writer.await.unwrap_or(false),
        "the whole trickled header block was accepted"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_frees_its_slot() {
    let (_s3, proxy) = setup("  max_concurrent_requests: 2\n  send_timeout_seconds: 2").await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(stalled_reader(&proxy, "GET /data/large.bin HTTP/1.1\r\nHost: test\r\n\r\n").await);
    }
    // With both slots held for ever, this would stay 503 SlowDown.
    let served = eventually(PATIENCE, || async {
        client()
            .get(proxy.url("/data/small.txt"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(served, "the stalled readers kept every slot");
    // Both are aborted (reading them before would let them go on).
    assert!(
        cut_by_send_timeout(&proxy, 2.0).await,
        "a stalled reader was not aborted"
    );
    for mut s in stalled {
        assert!(
            closed_by_peer(&mut s).await,
            "a stalled reader's connection stayed open"
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_a_cache_hit_is_cut_and_logged_incomplete() {
    let s3 = s3().await;
    let size = 32 * 1024 * 1024;
    s3.put_object("bucket-a", "large.bin", &pattern(size, 7)).unwrap();
    let config = config(
        &s3.endpoint(),
        "  send_timeout_seconds: 2\n  keepalive_idle_timeout_seconds: 300",
    ) + "cache:\n  memory: { max_capacity: 134217728, max_item_size: 67108864 }\n";
    let proxy = Proxy::start(&config);
    // The first read stores the object; the next is a memory hit.
    let hit = eventually(PATIENCE, || async {
        let res = client().get(proxy.url("/data/large.bin")).send().await.unwrap();
        let x_cache = res.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(res.bytes().await.unwrap().len(), size);
        x_cache.as_deref() == Some("HIT-MEMORY")
    })
    .await;
    assert!(hit, "the object was never served from memory");

    let request = "GET /data/large.bin HTTP/1.1\r\nHost: test\r\nX-Request-Id: stalled-hit\r\n\r\n";
    let mut s = stalled_reader(&proxy, request).await;
    // The hit is cut by `send_timeout` as a stream would be (not left to
    // the idle timeout of 300 s) ...
    assert!(
        cut_by_send_timeout(&proxy, 1.0).await,
        "the stalled reader of a hit was not cut by send_timeout"
    );
    assert!(closed_by_peer(&mut s).await, "its connection stayed open");
    // ... and the access log counts what was taken, not the whole object.
    let line = eventually(PATIENCE, || async {
        proxy
            .logs()
            .lines()
            .any(|l| l.contains("stalled-hit") && l.contains("complete="))
    })
    .await;
    assert!(line, "no access line: {}", proxy.logs());
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("stalled-hit") && l.contains("complete="))
        .unwrap();
    assert!(line.contains("complete=false"), "{line}");
    let bytes: usize = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("bytes="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line}"));
    assert!(bytes < size, "{line}");
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_with_503() {
    let (_s3, proxy) = setup("  max_client_connections: 3").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await.0, 200);
        held.push(s);
    }
    let (status, text) = raw_get(&proxy.addr(), "/data/small.txt").await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("<Code>SlowDown</Code>"), "{text}");
    assert!(metric(&proxy, "yatagarasu_client_connections_refused_total").await >= 1.0);
    assert_eq!(metric(&proxy, "yatagarasu_client_connections_open").await, 3.0);
    // A freed connection makes room again.
    drop(held.pop());
    let served = eventually(PATIENCE, || async {
        raw_get(&proxy.addr(), "/data/small.txt").await.0 == 200
    })
    .await;
    assert!(served, "a closed connection did not free its place");
}

/// Sends `request` as written and reads one response: status and text.
async fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut s).await;
    (status, format!("{head}{}", String::from_utf8_lossy(&body)))
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_its_answer() {
    // `printf 'GET ...' | nc -N`, some health checkers: the request, then
    // FIN, while the object is still being fetched from the replica.
    let (_s3, proxy) = setup("").await;
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(b"GET /data/small.txt HTTP/1.1\r\nHost: proxy\r\n\r\n")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let (status, _, body) = tokio::time::timeout(PATIENCE, read_response(&mut s)).await.unwrap();
    assert_eq!((status, body.as_slice()), (200, b"hello, yatagarasu\n".as_slice()));
    assert!(
        closed_by_peer(&mut s).await,
        "the proxy closes a half-closed connection once it has answered"
    );
}

#[tokio::test]
async fn protocol_edges_get_their_statuses_with_s3_errors() {
    let (_s3, proxy) = setup("").await;
    let addr = proxy.addr();
    let cases = [
        ("GET /data/small.txt HTTP/1.1\r\n\r\n", 400, "InvalidRequest"),
        (
            "GET /data/small.txt HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            "InvalidRequest",
        ),
        ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 405, "MethodNotAllowed"),
        (
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            405,
            "MethodNotAllowed",
        ),
        (
            "GET /data/dir%5c..%5csmall.txt HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "InvalidURI",
        ),
        (
            "GET /data/..%5Csmall.txt HTTP/1.1\r\nHost: a\r\n\r\n",
            400,
            "InvalidURI",
        ),
    ];
    for (request, status, code) in cases {
        let (got, text) = raw(&addr, request).await;
        assert_eq!(got, status, "{request:?}: {text}");
        assert!(text.contains(&format!("<Code>{code}</Code>")), "{request:?}: {text}");
    }
    // HTTP/1.0 needs no Host.
    let (got, _) = raw(&addr, "GET /data/small.txt HTTP/1.0\r\n\r\n").await;
    assert_eq!(got, 200);
}

#[tokio::test]
async fn only_short_safe_request_ids_are_kept_and_logs_cannot_be_forged() {
    let (_s3, proxy) = setup("").await;
    let id_of = |id: String| {
        let url = proxy.url("/data/small.txt");
        async move {
            let res = client().get(url).header("x-request-id", id).send().await.unwrap();
            res.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(id_of("trace-0123.abc:9_x".into()).await, "trace-0123.abc:9_x");
    for bad in [
        "a".repeat(129),
        "x status=599 bucket=forged".into(),
        "\"quoted\"".into(),
    ] {
        let got = id_of(bad.clone()).await;
        assert_ne!(got, bad);
        assert!(uuid::Uuid::parse_str(&got).is_ok(), "{got}");
    }
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains("status=599"), "a forged field in:\n{logs}");
    assert!(!logs.contains("bucket=forged"), "a forged field in:\n{logs}");
}

#[tokio::test]
async fn http2_allows_the_same_header_size_as_http1() {
    let (_s3, proxy) = setup("").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let big = "t".repeat(20 * 1024);
    for client in [client(), h2.clone()] {
        let res = client
            .get(proxy.url("/data/small.txt"))
            .header("x-big", &big)
            .send()
            .await
            .unwrap();
        assert_eq!((res.version(), res.status().as_u16()).1, 200, "{:?}", res.version());
    }
    let res = h2
        .get(proxy.url("/data/small.txt"))
        .header("x-big", "t".repeat(70 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status().as_u16(), 431);
    assert!(res.text().await.unwrap().contains("<Error>"));
}

#[tokio::test]
async fn the_admin_bearer_scheme_is_case_insensitive() {
    let s3 = s3().await;
    let config = config(&s3.endpoint(), "").replace("port: 0 }", "port: 0, admin_token: t0ken-for-admin }");
    let proxy = Proxy::start(&config);
    let purge = proxy.metrics_url("/admin/reload");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let res = client()
            .post(&purge)
            .header("authorization", format!("{scheme} t0ken-for-admin"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{scheme}");
    }
    let res = client()
        .post(&purge)
        .header("authorization", "Basic t0ken-for-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
}

/// The names of the proxy's threads that serve connections (`/proc`).
#[cfg(target_os = "linux")]
fn connection_threads(proxy: &Proxy) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("conn-"))
        .collect();
    names.sort();
    names
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn connections_are_served_on_their_own_threads_or_on_the_shared_runtime() {
    for (setting, expected) in [("3", 3), ("0", 0)] {
        let (_s3, proxy) = setup(&format!("  connection_threads: {setting}")).await;
        assert_eq!(
            connection_threads(&proxy),
            (0..expected).map(|n| format!("conn-{n}")).collect::<Vec<_>>(),
            "connection_threads: {setting}"
        );
        // Several keep-alive connections (more than threads), two requests
        // each, and a 32 MiB body streamed while the others are served.
        let mut large = TcpStream::connect(proxy.addr()).await.unwrap();
        large
            .write_all(b"GET /data/large.bin HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut conns = Vec::new();
        for _ in 0..7 {
            conns.push(TcpStream::connect(proxy.addr()).await.unwrap());
        }
        for _ in 0..2 {
            for s in &mut conns {
                s.write_all(b"GET /data/small.txt HTTP/1.1\r\nHost: test\r\n\r\n")
                    .await
                    .unwrap();
                let (status, _, body) = read_response(s).await;
                assert_eq!(
                    (status, body.as_slice()),
                    (200, &b"hello, yatagarasu\n"[..]),
                    "{setting}"
                );
            }
        }
        let (status, _, body) = read_response(&mut large).await;
        assert_eq!((status, body.len()), (200, 32 * 1024 * 1024), "{setting}");
        assert_eq!(body, pattern(32 * 1024 * 1024, 7), "{setting}");
        assert!(
            proxy
                .wait_for_log(&format!("connection_threads={expected}"), PATIENCE)
                .await,
            "{}",
            proxy.logs()
        );
    }
}

/// The proxy's open connections to `port` (ESTABLISHED, from `/proc/net/tcp`).
#[cfg(target_os = "linux")]
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = cols[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && cols[3] == "01"
        })
        .count()
}

/// Two keep-alive client connections (so, with two connection threads, one
/// on each) `GET` `path` in turn, twice each, never at once; each answer is
/// `body`.
async fn take_turns(proxy: &Proxy, path: &str, body: &[u8]) {
    let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    for _ in 0..2 {
        for s in [&mut a, &mut b] {
            s.write_all(request.as_bytes()).await.unwrap();
            let (status, _, got) = read_response(s).await;
            assert_eq!((status, got.as_slice()), (200, body));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn each_connection_thread_keeps_its_own_upstream_connections() {
    // Two client connections, served on two threads, take turns (never at
    // once). One pool shared by the threads would hand the second the
    // first's idle upstream connection (1 in all); a pool per thread opens
    // one per thread (2), so that no thread reads a connection that another
    // drives.
    let (s3, proxy) = setup("  connection_threads: 2").await;
    take_turns(&proxy, "/data/small.txt", b"hello, yatagarasu\n").await;
    assert_eq!(established_to(s3.addr().port()), 2);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_reload_keeps_one_upstream_pool_per_running_connection_thread() {
    // The threads start once; a reload that asks for another count (a
    // restart-only key) must still give a new replica one pool per running
    // thread, or the threads past the new count would share one.
    let (first, proxy) = setup("  connection_threads: 2").await;
    let other = s3().await;
    other.put_object("bucket-b", "b.txt", b"from the added bucket").unwrap();
    let added = format!(
        "  - name: added\n    path_prefix: /added\n    s3: {{ bucket: bucket-b, endpoint: \"{}\", access_key: {ACCESS_KEY}, secret_key: {SECRET_KEY} }}\nhealth_check:",
        other.endpoint()
    );
    let reloaded = config(&first.endpoint(), "  connection_threads: 0").replace("health_check:", &added);
    proxy.rewrite_config(&reloaded);
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("config reloaded", PATIENCE).await,
        "{}",
        proxy.logs()
    );
    take_turns(&proxy, "/added/b.txt", b"from the added bucket").await;
    assert_eq!(established_to(other.addr().port()), 2);
}

#[tokio::test]
async fn a_response_the_proxy_closes_after_reaches_the_client_whole() {
    // A GET with a body the proxy never reads: after the answer, hyper closes
    // the connection with those bytes still in its receive queue. Closed
    // then, the socket would send a reset, and the client's kernel would drop
    // the end of the answer it had not read yet (a lingering close waits for
    // the client's FIN instead).
    let (_s3, proxy) = setup("").await;
    let unread = 4 * 1024 * 1024;
    let s = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    let head = format!("GET /data/large.bin HTTP/1.1\r\nHost: x\r\nContent-Length: {unread}\r\n\r\n");
    tx.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        // Blocks once the proxy's receive queue is full; the proxy's close
        // ends it.
        let _ = tx.write_all(&vec![b'x'; unread]).await;
        tx
    });
    // Let the proxy write ahead and finish while nothing is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let read = async {
        loop {
            match rx.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    // A slow reader: the end of the answer is still queued
                    // when the proxy closes.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    let ended = tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the proxy never closed");
    sender.abort();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&got[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        ended.is_ok() && got.len() - split == 32 * 1024 * 1024,
        "{ended:?}: {} of {} body bytes",
        got.len() - split,
        32 * 1024 * 1024
    );
    assert_eq!(sha256(&got[split..]), sha256(&pattern(32 * 1024 * 1024, 7)));
}

/// The proxy of [`setup`] serving HTTPS with a certificate for `CN=proxy`.
async fn tls_setup() -> (S3, Pki, Proxy) {
    let s3 = s3().await;
    s3.put_object("bucket-a", "small.txt", b"hello, yatagarasu\n").unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "proxy", false);
    let tls = format!("  tls: {{ cert_file: {cert:?}, key_file: {key:?} }}");
    let proxy = Proxy::start(&config(&s3.endpoint(), &tls));
    (s3, pki, proxy)
}

#[tokio::test]
async fn plain_http_sent_to_the_tls_port_gets_a_400_that_says_so() {
    let (_s3, pki, proxy) = tls_setup().await;
    // curl with `http://` where `https://` was meant: it read the TLS alert
    // as "Received HTTP/0.9 when not allowed".
    let url = format!("http://{}/data/small.txt", proxy.addr());
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}", &url])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.ends_with("\n400"),
        "curl: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("<Code>InvalidRequest</Code>"), "{stdout}");
    assert!(stdout.contains("https://"), "{stdout}");
    // A raw request with a body the proxy never reads still gets the whole
    // answer, then a close (lingering: no reset that would drop the answer).
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = format!(
        "PUT /data/x HTTP/1.1\r\nHost: proxy\r\nContent-Length: 65536\r\n\r\n{}",
        "x".repeat(65536)
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = tokio::time::timeout(PATIENCE, read_response(&mut s)).await.unwrap();
    assert_eq!(status, 400, "{head}");
    assert!(String::from_utf8_lossy(&body).contains("https://"));
    assert!(closed_by_peer(&mut s).await, "the connection stayed open after the 400");
    assert_eq!(
        metric(
            &proxy,
            "yatagarasu_client_connections_closed_total{reason=\"plain_http\"}"
        )
        .await,
        2.0
    );
    // TLS clients are served as before.
    let ca = pki.ca();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert", ca.to_str().unwrap()])
        .arg(proxy.url("/data/small.txt"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, yatagarasu\n");
}

#[tokio::test]
async fn a_tls_handshake_counts_as_an_open_connection_until_its_timeout_closes_it() {
    let (_s3, _pki, proxy) = tls_setup().await;
    // A client that connects and never sends its ClientHello holds a slot
    // of `max_client_connections`: it shows among the open connections,
    // and the handshake timeout that closes it is counted.
    let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
    let open = eventually(PATIENCE, || async {
        metric(&proxy, "yatagarasu_client_connections_open").await == 1.0
    })
    .await;
    assert!(open, "a connection in its TLS handshake is not counted as open");
    assert!(
        closed_by_peer(&mut silent).await,
        "a silent TLS client stayed connected"
    );
    let counted = eventually(PATIENCE, || async {
        metric(
            &proxy,
            "yatagarasu_client_connections_closed_total{reason=\"tls_handshake_timeout\"}",
        )
        .await
            == 1.0
            && metric(&proxy, "yatagarasu_client_connections_open").await == 0.0
    })
    .await;
    assert!(counted, "the handshake timeout was not counted");
}

#[tokio::test]
async fn requests_hyper_refuses_before_the_edge_are_counted() {
    // Over 100 header fields, or a head hyper cannot parse: hyper answers
    // on its own (431/400, no body) and closes; no request reaches the edge
    // (no access line), so the refusal is counted with the connection.
    let (_s3, proxy) = setup("").await;
    let many: String = (0..101).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, text) = raw(
        &proxy.addr(),
        &format!("GET /data/small.txt HTTP/1.1\r\nHost: a\r\n{many}\r\n"),
    )
    .await;
    assert_eq!(status, 431, "{text}");
    let (status, text) = raw(
        &proxy.addr(),
        "GET /data/small.txt HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let counted = eventually(PATIENCE, || async {
        metric(
            &proxy,
            "yatagarasu_client_connections_closed_total{reason=\"malformed_request\"}",
        )
        .await
            == 2.0
    })
    .await;
    assert!(counted, "hyper's own refusals are not counted");
}

#[tokio::test]
async fn per_ip_limits_hold_for_an_ipv6_client_changing_its_address() {
    // One IPv6 host is given a whole /64 and may send each request from
    // another of its addresses: the limit holds for the /64. (Seen here
    // behind a trusted load balancer, the client address taken from
    // X-Forwarded-For: the loopback test client has only ::1.)
    let (_s3, proxy) = setup(
        "  rate_limit: { per_ip: { enabled: true, requests_per_second: 1, burst: 1, trusted_proxies: [\"127.0.0.0/8\"] } }",
    )
    .await;
    let c = client();
    let get = |from: String| {
        c.get(proxy.url("/data/small.txt"))
            .header("x-forwarded-for", from)
            .send()
    };
    let mut limited = false;
    for n in 1..=10 {
        let status = get(format!("2001:db8:1:2::{n:x}")).await.unwrap().status();
        if status == 429 {
            limited = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(limited, "a new address of the same /64 got a new bucket every time");
    // Another /64 is another client.
    assert_eq!(get("2001:db8:1:3::1".into()).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_stalled_http2_stream_does_not_cut_the_downloads_beside_it() {
    // A browser holds a paused video's stream at a zero window while it
    // keeps downloading other files on the same HTTP/2 connection: those
    // finish; the stalled stream is cut once it is the only one left.
    let (_s3, proxy) = setup("  send_timeout_seconds: 1").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    // One connection, made before the two downloads share it.
    let res = h2.get(proxy.url("/data/small.txt")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    res.bytes().await.unwrap();
    let stalled = h2.get(proxy.url("/data/large.bin")).send().await.unwrap();
    assert_eq!(stalled.status(), 200);
    let mut moving = h2.get(proxy.url("/data/large.bin")).send().await.unwrap();
    assert_eq!(moving.status(), 200);
    // Read at a few MB/s: the download takes several send timeouts, while
    // the other stream takes nothing.
    let mut got = Vec::with_capacity(32 * 1024 * 1024);
    let mut paced = 0;
    while let Some(chunk) = moving.chunk().await.unwrap_or_else(|e| {
        panic!(
            "the download beside a stalled stream was cut after {} bytes: {e}",
            got.len()
        )
    }) {
        got.extend_from_slice(&chunk);
        paced += chunk.len();
        if paced >= 512 * 1024 {
            paced = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(got.len(), 32 * 1024 * 1024);
    assert!(got == pattern(32 * 1024 * 1024, 7), "the download is not byte-exact");
    // Then the stalled stream, alone, is cut.
    let rest = tokio::time::timeout(PATIENCE, stalled.bytes())
        .await
        .expect("never cut");
    assert!(rest.is_err(), "the stalled stream was served whole");
    assert!(cut_by_send_timeout(&proxy, 1.0).await);
}
