//! rclone (Debian's, installed by `scripts/test.sh`) through the real binary:
//! recursive listings, copies and `cat`, anonymous and with proxy-issued
//! SigV4 keys.

use std::path::Path;

use crate::common::*;

const CLIENT_KEY: &str = "AKIARCLONECLIENT01";
const CLIENT_SECRET: &str = "rclone-client-secret-5f6e";

/// Whether rclone can run. Missing: a failure, or a loud skip when
/// `YATAGARASU_ALLOW_MISSING_TOOLS` is set.
pub(crate) fn rclone_present() -> bool {
    let found = std::process::Command::new("rclone")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    if std::env::var_os("YATAGARASU_ALLOW_MISSING_TOOLS").is_some() {
        eprintln!("\n!!!!! SKIPPED: rclone is not installed (scripts/test.sh installs it) !!!!!\n");
        return false;
    }
    panic!("rclone is not installed: run scripts/test.sh (or set YATAGARASU_ALLOW_MISSING_TOOLS to skip)");
}

/// `rclone ARGS` with remote `yg:` pointing at the proxy (path style), the
/// machine's `AWS_*` variables removed and no config file of the user read.
pub(crate) async fn rclone(
    dir: &Path,
    base: &str,
    creds: Option<(&str, &str)>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("rclone");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("RCLONE_") {
            cmd.env_remove(k);
        }
    }
    let (key, secret) = creds.unwrap_or(("", ""));
    cmd.env("RCLONE_CONFIG", dir.join("rclone.conf"))
        .env("RCLONE_CONFIG_YG_TYPE", "s3")
        .env("RCLONE_CONFIG_YG_PROVIDER", "Other")
        .env("RCLONE_CONFIG_YG_ENDPOINT", base)
        .env("RCLONE_CONFIG_YG_REGION", "us-east-1")
        .env("RCLONE_CONFIG_YG_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG_YG_ACCESS_KEY_ID", key)
        .env("RCLONE_CONFIG_YG_SECRET_ACCESS_KEY", secret)
        .args(["--retries", "1", "--low-level-retries", "1"])
        .args(args)
        .kill_on_drop(true);
    let out = cmd.output().await.expect("run rclone");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(primary: &S3, backup: &S3, auth: &str) -> String {
    BucketConfig::new("ha-data", "/data")
        .replica("primary", &primary.endpoint(), "priority: 1")
        .replica("backup", &backup.endpoint(), "priority: 2")
        .then(auth)
        .then("metrics: { enabled: false }")
        .render()
}

const SIGV4: &str = r#"    auth:
      enabled: true
      sigv4:
        credentials:
          - access_key_id: "AKIARCLONECLIENT01"
            secret_access_key: "rclone-client-secret-5f6e""#;

fn key(i: usize) -> String {
    format!("dir{}/sub/file-{i:03}.txt", i % 3)
}

async fn replicas(big: &[u8]) -> (S3, S3) {
    let (primary, backup) = (s3().await, s3().await);
    for s3 in [&primary, &backup] {
        for i in 0..40 {
            s3.put_object("data-bucket", &key(i), format!("body {i}\n").as_bytes())
                .unwrap();
        }
        s3.put_object("data-bucket", "test.txt", b"hello\n").unwrap();
        s3.put_object("data-bucket", "dir1/big.bin", big).unwrap();
    }
    (primary, backup)
}

/// Lists, copies and cats through the proxy, stopping the primary between
/// the listings and the copies.
async fn exercise(proxy: &Proxy, primary: &mut S3, creds: Option<(&str, &str)>, big: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (ok, out, err) = rclone(d, &proxy.base, creds, &["lsf", "-R", "--files-only", "yg:data"]).await;
    assert!(ok, "rclone lsf: {err}\n{}", proxy.logs());
    let mut listed: Vec<&str> = out.lines().collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = (0..40).map(key).collect();
    expected.extend(["test.txt".to_owned(), "dir1/big.bin".to_owned()]);
    expected.sort_unstable();
    assert_eq!(listed, expected);
    // Directories through filters, not `yg:data/dir2`: rclone first HEADs such
    // a path as a possible file, which s3s-fs answers 500 (not S3's 404) when
    // it is a directory on its disk; that would trip the breakers.
    let (ok, out, err) = rclone(d, &proxy.base, creds, &["ls", "yg:data", "--include", "dir2/**"]).await;
    assert!(ok, "rclone ls: {err}");
    assert_eq!(out.lines().count(), 13, "{out}");
    assert!(out.contains("       7 dir2/sub/file-002.txt"), "{out}");
    // The primary dies: copies and cat are served by the backup.
    primary.stop().await;
    let local = d.join("copy");
    let (ok, _, err) = rclone(
        d,
        &proxy.base,
        creds,
        &["copy", "yg:data", local.to_str().unwrap(), "--include", "dir1/**"],
    )
    .await;
    assert!(ok, "rclone copy: {err}\n{}", proxy.logs());
    let local = local.join("dir1");
    assert_eq!(sha256(&std::fs::read(local.join("big.bin")).unwrap()), sha256(big));
    assert_eq!(std::fs::read(local.join("sub/file-001.txt")).unwrap(), b"body 1\n");
    assert_eq!(std::fs::read_dir(local.join("sub")).unwrap().count(), 13);
    let (ok, out, err) = rclone(d, &proxy.base, creds, &["cat", "yg:data/test.txt"]).await;
    assert!(ok, "rclone cat: {err}");
    assert_eq!(out, "hello\n");
}

#[tokio::test]
async fn rclone_lists_copies_and_cats_anonymously_across_a_primary_kill() {
    if !rclone_present() {
        return;
    }
    let big = pattern(3 * 1024 * 1024 + 17, 5);
    let (mut primary, backup) = replicas(&big).await;
    let proxy = Proxy::start(&config(&primary, &backup, ""));
    exercise(&proxy, &mut primary, None, &big).await;
}

#[tokio::test]
async fn rclone_signs_with_proxy_issued_keys() {
    if !rclone_present() {
        return;
    }
    let big = pattern(1024 * 1024 + 3, 6);
    let (mut primary, backup) = replicas(&big).await;
    let proxy = Proxy::start(&config(&primary, &backup, SIGV4));
    // A wrong secret is refused.
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = rclone(
        dir.path(),
        &proxy.base,
        Some((CLIENT_KEY, "not-the-secret")),
        &["lsf", "yg:data"],
    )
    .await;
    assert!(!ok && err.contains("SignatureDoesNotMatch"), "{err}");
    exercise(&proxy, &mut primary, Some((CLIENT_KEY, CLIENT_SECRET)), &big).await;
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains(CLIENT_SECRET), "{logs}");
}
