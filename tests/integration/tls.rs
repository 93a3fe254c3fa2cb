//! HTTPS on the listener (issue 14): certificates made by the test with the
//! openssl CLI, real clients (curl, openssl s_client, reqwest), the real binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

/// A proxy config with one bucket served from `s3`, and `tls` as the
/// `server.tls` block (YAML flow mapping).
pub fn tls_config(s3: &S3, tls: &str) -> String {
    format!(
        r#"
server:
  address: "127.0.0.1:0"
  tls: {tls}
buckets:
  - name: "main"
    path_prefix: "/files"
    s3:
      bucket: "data"
      region: "us-east-1"
      endpoint: "{}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
health_check:
  enabled: false
metrics:
  enabled: false
"#,
        s3.endpoint()
    )
}

async fn s3_with_object() -> S3 {
    let s3 = s3().await;
    s3.put_object("data", "hello.txt", b"hello over tls").unwrap();
    s3
}

/// A proxy serving `hello.txt` over TLS with a certificate for `CN=first`
/// issued by a new CA; `extra` is added inside the `server.tls` block.
async fn tls_proxy(extra: &str) -> (S3, Pki, Proxy) {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let proxy = Proxy::start_clean(&tls_config(
        &s3,
        &format!("{{ cert_file: {cert:?}, key_file: {key:?}{extra} }}"),
    ));
    (s3, pki, proxy)
}

/// `curl` with these arguments: (exit code, stdout, stderr).
pub async fn curl(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The subject of the certificate the server presents now.
async fn served_subject(addr: &str, ca: &Path) -> String {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn curl_gets_objects_over_http1_and_http2() {
    let (_s3, pki, proxy) = tls_proxy("").await;
    let ca = pki.ca();
    let url = proxy.url("/files/hello.txt");
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out, err) = curl(&[flag, "--cacert", ca.to_str().unwrap(), "-w", "\n%{http_version}", &url]).await;
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(out, format!("hello over tls\n{version}"), "{flag}");
    }
    // Plain HTTP on the TLS port is not served (a 400 that says so).
    let (code, _, _) = curl(&["--fail", &url.replace("https://", "http://")]).await;
    assert_ne!(code, 0);
}

#[tokio::test]
async fn tls_1_1_is_refused_by_the_server() {
    let (_s3, pki, proxy) = tls_proxy("").await;
    // SECLEVEL=0 lets the client offer TLS 1.1, so a refusal is the server's:
    // it answers the ClientHello with a handshake-failure alert.
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let url = proxy.url("/files/hello.txt");
    let (code, _, err) = curl(&[
        "--tlsv1.1",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT@SECLEVEL=0",
        "--cacert",
        ca,
        &url,
    ])
    .await;
    assert_eq!(code, 35, "{err}");
    assert!(err.contains("alert"), "the server did not refuse: {err}");
    let (code, out, err) = curl(&["--tls-max", "1.2", "--cacert", ca, &url]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "hello over tls"),
        "TLS 1.2 is accepted by default: {err}"
    );
}

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2() {
    let (_s3, pki, proxy) = tls_proxy(", min_version: \"1.3\"").await;
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let url = proxy.url("/files/hello.txt");
    let (code, _, err) = curl(&["--tls-max", "1.2", "--cacert", ca, &url]).await;
    assert_eq!(code, 35, "{err}");
    assert!(err.contains("alert"), "the server did not refuse: {err}");
    let (code, out, err) = curl(&["--tlsv1.3", "--cacert", ca, &url]).await;
    assert_eq!((code, out.as_str()), (0, "hello over tls"), "{err}");
}

#[tokio::test]
async fn mtls_rejects_a_client_without_a_certificate() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let (client_cert, client_key) = pki.issue("client", "a client", true);
    let ca = pki.ca();
    let proxy = Proxy::start_clean(&tls_config(
        &s3,
        &format!("{{ cert_file: {cert:?}, key_file: {key:?}, client_ca_file: {ca:?} }}"),
    ));
    let url = proxy.url("/files/hello.txt");
    let ca = ca.to_str().unwrap();
    let (code, out, err) = curl(&["--cacert", ca, &url]).await;
    assert_ne!(code, 0, "served without a client certificate: {out}");
    // A certificate from another CA is refused too.
    let other = Pki::new();
    let (other_cert, other_key) = other.issue("client", "stranger", true);
    let (code, _, _) = curl(&[
        "--cacert",
        ca,
        "--cert",
        other_cert.to_str().unwrap(),
        "--key",
        other_key.to_str().unwrap(),
        &url,
    ])
    .await;
    assert_ne!(code, 0, "served a client certificate of another CA");
    let (code, out, err2) = curl(&[
        "--cacert",
        ca,
        "--cert",
        client_cert.to_str().unwrap(),
        "--key",
        client_key.to_str().unwrap(),
        &url,
    ])
    .await;
    assert_eq!((code, out.as_str()), (0, "hello over tls"), "{err} / {err2}");
}

#[test]
fn a_bad_certificate_is_a_config_error_naming_its_key() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let (_, other_key) = pki.issue("other", "other", false);
    let base = |tls: String| {
        format!(
            r#"
server:
  address: "127.0.0.1:0"
  tls: {tls}
buckets:
  - name: a
    path_prefix: /a
    s3: {{ bucket: x, endpoint: "http://127.0.0.1:9", access_key: k, secret_key: s }}
"#
        )
    };
    let cases = [
        (
            format!("{{ cert_file: /nonexistent/tls.crt, key_file: {key:?} }}"),
            "server.tls.cert_file",
        ),
        (
            format!("{{ cert_file: {key:?}, key_file: {key:?} }}"),
            "server.tls.cert_file",
        ),
        (
            format!("{{ cert_file: {cert:?}, key_file: {cert:?} }}"),
            "server.tls.key_file",
        ),
        (
            format!("{{ cert_file: {cert:?}, key_file: {other_key:?} }}"),
            "server.tls.key_file",
        ),
        (
            format!("{{ cert_file: {cert:?}, key_file: {key:?}, min_version: \"1.1\" }}"),
            "server.tls.min_version",
        ),
    ];
    for (tls, key_path) in cases {
        let out = check(&base(tls.clone()), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tls}: {err}");
        assert!(err.contains(key_path), "{tls}: {err}");
    }
    let out = check(&base(format!("{{ cert_file: {cert:?}, key_file: {key:?} }}")), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Common mistakes with the PEM files are named by the file to fix and say
/// what is wrong: a chain with the CA before the server's certificate (the
/// key "did not match" and key_file was blamed), an encrypted key, a
/// certificate given as the key.
#[test]
fn tls_file_mistakes_name_the_file_to_fix_and_why() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let dir = tempfile::tempdir().unwrap();
    let ca_first = dir.path().join("ca-first.crt");
    let chain = [std::fs::read(pki.ca()).unwrap(), std::fs::read(&cert).unwrap()].concat();
    std::fs::write(&ca_first, chain).unwrap();
    let encrypted = dir.path().join("encrypted.key");
    let made = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-passout", "pass:secret", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(made.success());
    let config = |c: &Path, k: &Path| {
        format!(
            "server:\n  address: \"127.0.0.1:0\"\n  tls: {{ cert_file: {c:?}, key_file: {k:?} }}\n\
             buckets:\n  - name: a\n    path_prefix: /a\n    s3: {{ bucket: x, endpoint: \"http://127.0.0.1:9\", access_key: k, secret_key: s }}\n"
        )
    };
    for (c, k, want) in [
        (&ca_first, &key, "server.tls.cert_file: "),
        (&ca_first, &key, "does not start with the server's own certificate"),
        (&cert, &encrypted, "server.tls.key_file: "),
        (&cert, &encrypted, "the key is encrypted"),
        (&cert, &cert, "it holds a certificate, not a private key"),
    ] {
        let out = check(&config(c, k), &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// Points `dir/current` at `dir/<version>` atomically, as the kubelet updates
/// a mounted Secret (a symlink swapped by rename).
fn publish(dir: &Path, version: &str, cert: &Path, key: &Path) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::copy(cert, v.join("tls.crt")).unwrap();
    std::fs::copy(key, v.join("tls.key")).unwrap();
    let tmp = dir.join(format!("tmp-{version}"));
    std::os::unix::fs::symlink(&v, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("current")).unwrap();
}

#[tokio::test]
async fn certificate_rotation_under_load_drops_no_request_and_a_bad_one_is_refused() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert1, key1) = pki.issue("first", "first", false);
    let (cert2, key2) = pki.issue("second", "second", false);
    let mount = tempfile::tempdir().unwrap();
    publish(mount.path(), "v1", &cert1, &key1);
    let crt = mount.path().join("current/tls.crt");
    let key = mount.path().join("current/tls.key");
    let proxy = Proxy::start_clean(&tls_config(
        &s3,
        &format!("{{ cert_file: {crt:?}, key_file: {key:?}, reload_interval_seconds: 1 }}"),
    ));
    let ca = pki.ca();
    let addr = proxy.addr();
    assert!(served_subject(&addr, &ca).await.contains("first"));

    // Continuous requests, each on a new connection (a new handshake).
    let ca_pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, ok, failed) = (
            client.clone(),
            proxy.url("/files/hello.txt"),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let good = match client.get(&url).send().await {
                    Ok(res) if res.status() == 200 => res.text().await.is_ok_and(|t| t == "hello over tls"),
                    _ => false,
                };
                if good { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    assert!(eventually(Duration::from_secs(10), || async { ok.load(Ordering::SeqCst) > 20 }).await);

    // The file changes: the new certificate is served without a restart.
    publish(mount.path(), "v2", &cert2, &key2);
    assert!(
        eventually(Duration::from_secs(20), || async {
            served_subject(&addr, &ca).await.contains("second")
        })
        .await,
        "the new certificate was never served; logs:\n{}",
        proxy.logs()
    );
    assert!(
        proxy
            .wait_for_log("TLS certificate reloaded", Duration::from_secs(20))
            .await
    );
    let before_bad = ok.load(Ordering::SeqCst);

    // A broken certificate is refused on SIGHUP: the current one stays.
    let broken = mount.path().join("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    publish(mount.path(), "v3", &broken, &key2);
    proxy.signal("HUP");
    assert!(
        proxy
            .wait_for_log("new TLS certificate refused", Duration::from_secs(20))
            .await,
        "{}",
        proxy.logs()
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            ok.load(Ordering::SeqCst) > before_bad + 20
        })
        .await
    );
    assert!(served_subject(&addr, &ca).await.contains("second"));

    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{} of {} requests failed",
        failed.load(Ordering::SeqCst),
        ok.load(Ordering::SeqCst)
    );
}

/// Replaces `to` with a copy of `from` at once (a rename), as `cp` then `mv`
/// would: a check never reads a half-written file.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

/// The log lines that contain every one of `needles`.
fn log_lines(logs: &str, needles: &[&str]) -> usize {
    logs.lines().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// A certificate and its key copied one after the other (not swapped as
/// one) are not warned about in between: the first check that sees a new
/// certificate with the old key waits for the next. New files that stay
/// bad are warned about once, not at every check; SIGHUP always gets the
/// answer.
#[tokio::test]
async fn a_refused_certificate_is_warned_about_once_and_a_half_copied_pair_not_at_all() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert1, key1) = pki.issue("first", "first", false);
    let (cert2, key2) = pki.issue("second", "second", false);
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    replace_file(&cert1, &crt);
    replace_file(&key1, &key);
    let proxy = Proxy::start_clean_with_env(
        &tls_config(
            &s3,
            &format!("{{ cert_file: {crt:?}, key_file: {key:?}, reload_interval_seconds: 2 }}"),
        ),
        &[("RUST_LOG", "info,yatagarasu::tls=debug")],
    );
    let (ca, addr) = (pki.ca(), proxy.addr());
    assert!(served_subject(&addr, &ca).await.contains("first"));

    // The new certificate first; the key once a check has seen the pair
    // mismatch.
    replace_file(&cert2, &crt);
    assert!(
        eventually(Duration::from_secs(20), || async {
            let logs = proxy.logs();
            logs.contains("new TLS files do not load (yet)") || logs.contains("new TLS certificate refused")
        })
        .await,
        "{}",
        proxy.logs()
    );
    replace_file(&key2, &key);
    assert!(
        proxy
            .wait_for_log("TLS certificate reloaded", Duration::from_secs(20))
            .await,
        "{}",
        proxy.logs()
    );
    assert!(served_subject(&addr, &ca).await.contains("second"));
    assert!(
        !proxy.logs().contains("new TLS certificate refused"),
        "a half-copied pair was warned about:\n{}",
        proxy.logs()
    );

    // A certificate that stays bad: one warning, however many checks.
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    replace_file(&dir.path().join("broken.pem"), &crt);
    assert!(
        proxy
            .wait_for_log("new TLS certificate refused", Duration::from_secs(20))
            .await,
        "{}",
        proxy.logs()
    );
    // Room for more checks (every 2 s) of the same files.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // SIGHUP is answered even for files already refused; the checks before
    // it are logged before its answer (one task does both).
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(20), || async {
            log_lines(&proxy.logs(), &["new TLS certificate refused", "SIGHUP"]) == 1
        })
        .await,
        "{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    assert_eq!(
        log_lines(&logs, &["new TLS certificate refused", "file check"]),
        1,
        "the same refused files were warned about at every check:\n{logs}"
    );
    assert!(served_subject(&addr, &ca).await.contains("second"));
}

/// A TLS front for a plain S3 server, with `cert`/`key` (as a MinIO with its
/// own certificate would be): bytes are copied both ways after the handshake.
async fn tls_front(backend: SocketAddr, cert: &Path, key: &Path) -> (String, tokio::task::JoinHandle<()>) {
    use axum::serve::Listener;
    let config = yatagarasu::config::TlsConfig {
        cert_file: cert.to_str().unwrap().into(),
        key_file: key.to_str().unwrap().into(),
        ..Default::default()
    };
    let reloader = yatagarasu::tls::TlsReloader::new("test.tls", &config).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let mut listener = yatagarasu::tls::TlsListener::new(tcp, reloader).unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut tls, _) = listener.accept().await;
            tokio::spawn(async move {
                if let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_replica_behind_tls_with_a_private_ca_is_trusted_through_ca_file_only() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("minio", "minio", false);
    let (endpoint, _front) = tls_front(s3.addr(), &cert, &key).await;
    let ca = pki.ca();
    let config = format!(
        r#"
server:
  address: "127.0.0.1:0"
buckets:
  - name: "private-ca"
    path_prefix: "/trusted"
    s3: {{ bucket: data, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", ca_file: {ca:?}, retry: {{ max_attempts: 1 }} }}
  - name: "system-roots"
    path_prefix: "/untrusted"
    s3: {{ bucket: data, endpoint: "{endpoint}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}", retry: {{ max_attempts: 1 }} }}
health_check:
  enabled: false
metrics:
  enabled: false
"#
    );
    let proxy = Proxy::start_clean(&config);
    let res = client().get(proxy.url("/trusted/hello.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello over tls");
    // Without ca_file the private CA is not trusted: no silent fallback.
    let res = client().get(proxy.url("/untrusted/hello.txt")).send().await.unwrap();
    assert_eq!(res.status(), 502, "{}", proxy.logs());

    // A missing bundle is a config error naming the key.
    let out = check(&config.replace(ca.to_str().unwrap(), "/nonexistent/ca.pem"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("buckets[0].s3.ca_file"), "{err}");
}

#[tokio::test]
async fn the_metrics_port_serves_https_from_its_own_block() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let block = format!("{{ cert_file: {cert:?}, key_file: {key:?} }}");
    let config = tls_config(&s3, &block).replace(
        "metrics:\n  enabled: false\n",
        &format!("metrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: 0\n  tls: {block}\n"),
    );
    let proxy = Proxy::start_clean(&config);
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let (code, _, err) = curl(&["--cacert", ca, &proxy.url("/files/hello.txt")]).await;
    assert_eq!(code, 0, "{err}");
    let url = proxy.metrics_url("/metrics");
    assert!(url.starts_with("https://"), "{url}");
    let (code, out, err) = curl(&["--cacert", ca, &url]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("yatagarasu_requests_total"), "{out}");
    // Each listener's certificate expiry (the test CA issues for 2 days),
    // and a warning that it is near.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for listener in ["server.tls", "metrics.tls"] {
        let series = format!("yatagarasu_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}} ");
        let at: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no {series}in {out}"))
            .trim()
            .parse()
            .unwrap();
        assert!(
            at > now + 86_400 && at < now + 3 * 86_400,
            "{listener}: {at} (now {now})"
        );
    }
    assert!(
        proxy.logs().contains("the TLS certificate expires soon"),
        "{}",
        proxy.logs()
    );
    let (code, _, _) = curl(&[&url.replace("https://", "http://")]).await;
    assert_ne!(code, 0, "plain HTTP served on the metrics TLS port");
}

/// Connections that send nothing to the metrics port (a TLS handshake never
/// started, or no request) hold at most `METRICS_MAX_CONNECTIONS`
/// descriptors: one past them is closed before it is served, and scrapes
/// work again once they are gone.
#[tokio::test]
async fn stalled_connections_on_the_metrics_port_are_capped_with_or_without_tls() {
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let block = format!("{{ cert_file: {cert:?}, key_file: {key:?} }}");
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    for tls in [true, false] {
        let metrics_tls = if tls {
            format!("  tls: {block}\n")
        } else {
            String::new()
        };
        let config = tls_config(&s3, &block).replace(
            "metrics:\n  enabled: false\n",
            &format!("metrics:\n  enabled: true\n  address: \"127.0.0.1\"\n  port: 0\n{metrics_tls}"),
        );
        let proxy = Proxy::start_clean(&config);
        let url = proxy.metrics_url("/metrics");
        assert_eq!(url.starts_with("https://"), tls, "{url}");
        let addr = url.split("://").nth(1).unwrap().trim_end_matches("/metrics").to_owned();
        // Connected, never a byte sent (over TLS each has 10 s before the
        // server gives up on it, without TLS no limit); accepted in order,
        // so they take every slot.
        let mut stalled = Vec::new();
        for _ in 0..yatagarasu::server::METRICS_MAX_CONNECTIONS {
            stalled.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        let (code, _, err) = curl(&["--cacert", ca, &url]).await;
        assert_ne!(code, 0, "tls: {tls}: a connection past the limit was served");
        assert!(
            !err.contains("wrong version number"),
            "plain bytes on the TLS port: {err}"
        );
        // Gone: their slots come back, and a scrape works.
        drop(stalled);
        assert!(
            eventually(Duration::from_secs(20), || async {
                curl(&["--cacert", ca, &url]).await.0 == 0
            })
            .await,
            "tls: {tls}: {}",
            proxy.logs()
        );
        let (code, scraped, err) = curl(&["--cacert", ca, &url]).await;
        assert_eq!(code, 0, "{err}");
        assert!(scraped.contains("# TYPE yatagarasu_"), "{scraped}");
    }
}

#[tokio::test]
async fn large_cached_objects_over_https_are_read_from_their_memfd() {
    let s3 = s3().await;
    let object = pattern(2 * 1024 * 1024 + 17, 5);
    s3.put_object("data", "big.bin", &object).unwrap();
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let config = tls_config(&s3, &format!("{{ cert_file: {cert:?}, key_file: {key:?} }}"))
        + "cache:\n  memory: { max_capacity: 33554432, ttl_seconds: 60 }\n";
    let proxy = Proxy::start_clean(&config);
    let ca = pki.ca();
    let url = proxy.url("/files/big.bin");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    // The miss fills a memfd; the hits over TLS (HTTP/1.1, HTTP/2, a range)
    // are encrypted from its read-only mapping.
    for (i, (flag, range)) in [
        ("--http1.1", None),
        ("--http1.1", None),
        ("--http2", None),
        ("--http2", Some("100-1999999")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut args = vec![
            flag,
            "--cacert",
            ca.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            &url,
        ];
        if let Some(r) = range {
            args.extend(["-r", r]);
        }
        let (code, _, err) = curl(&args).await;
        assert_eq!(code, 0, "request {i}: {err}");
        let got = std::fs::read(&out).unwrap();
        let want = match range {
            Some(_) => &object[100..2_000_000],
            None => &object[..],
        };
        assert!(
            got == want,
            "request {i} ({flag}): {} bytes, the body differs",
            got.len()
        );
    }
    assert_eq!(memfds(proxy.pid()), 1, "the body is not in a memfd");
}

/// Past `server.max_client_connections` a TLS listener closes the new
/// connection: the plain-HTTP 503 it used to write reached the client's
/// handshake as garbage (curl: "wrong version number").
#[tokio::test]
async fn a_connection_past_the_limit_on_tls_is_closed_without_plaintext() {
    use tokio::io::AsyncReadExt;
    let s3 = s3_with_object().await;
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", "first", false);
    let config = tls_config(&s3, &format!("{{ cert_file: {cert:?}, key_file: {key:?} }}")).replace(
        "  address: \"127.0.0.1:0\"\n",
        "  address: \"127.0.0.1:0\"\n  max_client_connections: 1\n",
    );
    let proxy = Proxy::start_clean(&config);
    // Holds the only slot (its handshake has 10 s to start); connections are
    // accepted in order, so the second one is past the limit.
    let _first = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), second.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection past the limit was not closed");
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1 503"),
        "plain HTTP on the TLS port: {:?}",
        String::from_utf8_lossy(&got)
    );
}
