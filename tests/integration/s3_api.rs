//! The S3 API for SDK clients through the real binary: aws-cli and boto3
//! (from the venv `scripts/test.sh` makes) against two real S3 servers.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

const CLIENT_KEY: &str = "AKIAPROXYCLIENT0001";
const CLIENT_SECRET: &str = "client-secret-1a2b3c4d5e";
const KEYS: usize = 2500;

/// The aws-cli/boto3 venv: `$YATAGARASU_TOOLS_VENV`, else `.venv-tools/`.
/// Missing: a failure in CI, a loud skip elsewhere.
fn tools() -> Option<PathBuf> {
    let venv = std::env::var_os("YATAGARASU_TOOLS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools"));
    if venv.join("bin/aws").exists() && venv.join("bin/python").exists() {
        return Some(venv);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "no aws-cli/boto3 venv at {}: scripts/test.sh creates it",
            venv.display()
        );
    }
    eprintln!(
        "\n!!!!! SKIPPED: no aws-cli/boto3 venv at {} (run scripts/test.sh once to create it) !!!!!\n",
        venv.display()
    );
    None
}

/// A client process with the machine's `AWS_*` variables removed, path-style
/// addressing, and `creds` (or none).
struct Clients {
    venv: PathBuf,
    dir: tempfile::TempDir,
}

impl Clients {
    fn new(venv: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[default]\ns3 =\n    addressing_style = path\n    signature_version = s3v4\n",
        )
        .unwrap();
        Self { venv, dir }
    }

    fn command(&self, program: &Path, creds: Option<(&str, &str)>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_CONFIG_FILE", self.dir.path().join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("none"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .kill_on_drop(true);
        if let Some((key, secret)) = creds {
            cmd.env("AWS_ACCESS_KEY_ID", key).env("AWS_SECRET_ACCESS_KEY", secret);
        }
        cmd
    }

    async fn aws(&self, args: &[&str], creds: Option<(&str, &str)>) -> String {
        let out = self
            .command(&self.venv.join("bin/aws"), creds)
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "aws {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn boto3(&self, args: &[&str], creds: Option<(&str, &str)>) -> tokio::process::Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/s3_client.py");
        let mut cmd = self.command(&self.venv.join("bin/python"), creds);
        cmd.arg(script).args(args);
        cmd
    }

    async fn boto3_json(&self, args: &[&str], creds: Option<(&str, &str)>) -> Value {
        let out = self.boto3(args, creds).output().await.unwrap();
        assert!(
            out.status.success(),
            "boto3 {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

fn key(i: usize) -> String {
    format!("k/dir{}/key-{i:05}.txt", i % 5)
}

struct Pair {
    primary: S3,
    backup: S3,
}

async fn pair(big: usize) -> Pair {
    let (primary, backup) = (s3().await, s3().await);
    for s3 in [&primary, &backup] {
        for i in 0..KEYS {
            s3.put_object("data-bucket", &key(i), b"x").unwrap();
        }
        if big > 0 {
            s3.put_object("data-bucket", "big.bin", &pattern(big, 11)).unwrap();
            // s3s-fs's ETag sidecar (as in bench/): no MD5 of the whole file on
            // every ranged GET; the same ETag on both replicas.
            std::fs::write(
                s3.root()
                    .join(".bucket-ZGF0YS1idWNrZXQ.object-YmlnLmJpbg.internal.json"),
                format!("{{\"e_tag\":\"{:032x}\"}}", big),
            )
            .unwrap();
        }
        s3.put_object("data-bucket", "test.txt", b"hello\n").unwrap();
    }
    Pair { primary, backup }
}

/// Generous header timeouts: s3s-fs hashes whole objects per ranged GET in
/// debug builds, and several run at once.
fn config(p: &Pair, auth: &str) -> String {
    format!(
        r#"
server: {{ address: "127.0.0.1:0", shutdown_grace_seconds: 2 }}
buckets:
  - name: ha-data
    path_prefix: /data
    s3:
      bucket: data-bucket
      region: us-east-1
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
      retry: {{ max_attempts: 1 }}
      replicas:
        - {{ name: primary, endpoint: "{}", priority: 1, timeout_seconds: 60 }}
        - {{ name: backup, endpoint: "{}", priority: 2, timeout_seconds: 60 }}
{auth}
metrics: {{ enabled: false }}
"#,
        p.primary.endpoint(),
        p.backup.endpoint(),
    )
}

const SIGV4_AUTH: &str = r#"    auth:
      enabled: true
      sigv4:
        credentials:
          - access_key_id: "AKIAPROXYCLIENT0001"
            secret_access_key: "client-secret-1a2b3c4d5e""#;

/// Every `<tag>value</tag>` in an XML text.
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    xml.split(&open)
        .skip(1)
        .map(|s| s.split(&format!("</{tag}>")).next().unwrap().replace("&amp;", "&"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_cli_lists_every_key_and_copies_a_50_mib_object() {
    let Some(venv) = tools() else { return };
    let big = 50 * 1024 * 1024;
    let p = pair(big).await;
    let proxy = Proxy::start(&config(&p, ""));
    let clients = Clients::new(venv);
    let listing = clients
        .aws(
            &[
                "s3",
                "ls",
                "s3://data",
                "--recursive",
                "--endpoint-url",
                &proxy.base,
                "--no-sign-request",
            ],
            None,
        )
        .await;
    let keys: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
    let unique: HashSet<&str> = keys.iter().copied().collect();
    assert_eq!(keys.len(), KEYS + 2, "{listing}");
    assert_eq!(unique.len(), KEYS + 2);
    assert!(unique.contains(key(KEYS - 1).as_str()));
    let out = clients.dir.path().join("big.bin");
    let out_s = out.to_str().unwrap();
    let cp = clients
        .command(&clients.venv.join("bin/aws"), None)
        .args([
            "s3",
            "cp",
            "s3://data/big.bin",
            out_s,
            "--endpoint-url",
            &proxy.base,
            "--no-sign-request",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        cp.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&cp.stderr),
        proxy.settled_logs().await
    );
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&pattern(big, 11)));
}

#[tokio::test]
async fn listing_pages_continue_on_the_backup_after_the_primary_dies() {
    let mut p = pair(0).await;
    let proxy = Proxy::start(&config(&p, ""));
    let mut seen = Vec::new();
    let mut replicas = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = reqwest::Url::parse(&proxy.url("/data")).unwrap();
        url.query_pairs_mut()
            .append_pair("list-type", "2")
            .append_pair("prefix", "k/");
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("continuation-token", t);
        }
        let res = client().get(url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        replicas.push(res.headers()["x-yatagarasu-replica"].to_str().unwrap().to_owned());
        let xml = res.text().await.unwrap();
        assert_eq!(elements(&xml, "Name"), ["data"], "{xml}");
        seen.extend(elements(&xml, "Key"));
        token = elements(&xml, "NextContinuationToken").pop();
        if token.is_none() {
            break;
        }
        if p.primary.is_running() {
            p.primary.stop().await;
        }
    }
    assert_eq!(replicas, ["primary", "backup", "backup"]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (KEYS, KEYS), "no key lost, none repeated");
    // A token the proxy did not mint is refused.
    let res = client()
        .get(proxy.url("/data?list-type=2&continuation-token=forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("InvalidArgument"));
}

#[tokio::test]
async fn bucket_calls_answer_as_s3_does() {
    let p = pair(0).await;
    let proxy = Proxy::start(&config(&p, ""));
    // V1 with a marker and a delimiter; the trailing-slash form of V2.
    let xml = get_text(proxy.url("/data?prefix=k/&delimiter=/&marker=k/dir1/")).await;
    assert_eq!(
        elements(&xml, "Prefix")[1..],
        ["k/dir2/", "k/dir3/", "k/dir4/"],
        "{xml}"
    );
    let xml = get_text(proxy.url("/data/?list-type=2&prefix=k/dir0/&max-keys=3&encoding-type=url")).await;
    assert_eq!(
        elements(&xml, "Key"),
        ["k/dir0/key-00000.txt", "k/dir0/key-00005.txt", "k/dir0/key-00010.txt"]
    );
    assert_eq!(elements(&xml, "KeyCount"), ["3"]);
    assert_eq!(elements(&xml, "IsTruncated"), ["true"]);
    let xml = get_text(proxy.url("/data?location")).await;
    assert!(xml.contains("<LocationConstraint"), "{xml}");
    let res = client().head(proxy.url("/data")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    for (method, path) in [
        ("PUT", "/data"),
        ("DELETE", "/data"),
        ("POST", "/data?delete"),
        ("PUT", "/data/new.txt"),
    ] {
        let res = client()
            .request(method.parse().unwrap(), proxy.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{method} {path}");
        assert!(res.text().await.unwrap().contains("MethodNotAllowed"));
    }
    let res = client().get(proxy.url("/data?versioning")).send().await.unwrap();
    assert_eq!(res.status(), 501);
    // Response overrides are signed upstream and answered.
    let res = client()
        .get(proxy.url("/data/test.txt?response-content-type=text%2Fx-custom&response-content-disposition=attachment"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/x-custom");
    let res = client().get(proxy.url("/data/test.txt")).send().await.unwrap();
    assert_ne!(
        res.headers().get("content-type").map(|v| v.to_str().unwrap()),
        Some("text/x-custom"),
        "one client's override is never another's answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_paginates_prefixes_and_downloads_ranges_across_a_primary_kill() {
    let Some(venv) = tools() else { return };
    let size = 12 * 1024 * 1024 + 5;
    let mut p = pair(size).await;
    let proxy = Proxy::start(&config(&p, ""));
    let clients = Clients::new(venv);
    let base = proxy.base.clone();
    let common = ["--endpoint", base.as_str(), "--bucket", "data", "--unsigned"];
    let v = clients
        .boto3_json(
            &[
                &["paginate"][..],
                &common,
                &["--prefix", "k/", "--delimiter", "/", "--page-size", "2"],
            ]
            .concat(),
            None,
        )
        .await;
    assert_eq!(
        v["prefixes"],
        serde_json::json!(["k/dir0/", "k/dir1/", "k/dir2/", "k/dir3/", "k/dir4/"]),
        "{v}"
    );
    assert_eq!(v["keys"], serde_json::json!([]));
    let v = clients
        .boto3_json(&[&["paginate"][..], &common, &["--prefix", "k/dir3/"]].concat(), None)
        .await;
    assert_eq!(v["keys"].as_array().unwrap().len(), KEYS / 5);
    // With auth disabled, a signed request is served as an anonymous one.
    let v = clients
        .boto3_json(
            &["get", "--endpoint", &base, "--bucket", "data", "--key", "test.txt"],
            Some((CLIENT_KEY, CLIENT_SECRET)),
        )
        .await;
    assert_eq!(v["sha256"], sha256(b"hello\n"), "{v}");
    // Parallel ranged GETs of 1 MiB; the primary dies after the first chunk.
    let (pause, go) = (clients.dir.path().join("paused"), clients.dir.path().join("go"));
    let out = clients.dir.path().join("big.bin");
    let child = clients
        .boto3(
            &[
                &["download"][..],
                &common,
                &["--key", "big.bin", "--chunk", "1048576"],
                &["--out", out.to_str().unwrap()],
                &[
                    "--pause-file",
                    pause.to_str().unwrap(),
                    "--go-file",
                    go.to_str().unwrap(),
                ],
            ]
            .concat(),
            None,
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async { pause.exists() }).await,
        "download never started"
    );
    p.primary.stop().await;
    std::fs::write(&go, b"").unwrap();
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(v["sha256"], sha256(&pattern(size, 11)), "{v}");
    assert!(proxy
        .settled_logs()
        .await
        .contains("Replica 'primary' failed, trying 'backup'"));
}

#[tokio::test]
async fn sigv4_clients_sign_with_proxy_keys_and_get_s3_errors() {
    let Some(venv) = tools() else { return };
    let p = pair(0).await;
    let proxy = Proxy::start(&config(&p, SIGV4_AUTH));
    let clients = Clients::new(venv);
    let base = proxy.base.clone();
    let common = ["--endpoint", base.as_str(), "--bucket", "data"];
    let good = Some((CLIENT_KEY, CLIENT_SECRET));
    let v = clients.boto3_json(&[&["list"][..], &common].concat(), good).await;
    assert_eq!(v["keys"].as_array().unwrap().len(), 5, "{v}");
    let v = clients
        .boto3_json(&[&["get"][..], &common, &["--key", "test.txt"]].concat(), good)
        .await;
    assert_eq!(v["sha256"], sha256(b"hello\n"), "{v}");
    let v = clients
        .boto3_json(&[&["head-bucket"][..], &common].concat(), good)
        .await;
    assert_eq!(v["ok"], true, "{v}");
    // A paginated listing past 1,000 keys, signed.
    let v = clients.boto3_json(&[&["paginate"][..], &common].concat(), good).await;
    assert_eq!(v["keys"].as_array().unwrap().len(), KEYS + 1);

    let get = [&["get"][..], &common, &["--key", "test.txt"]].concat();
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a str, u64);
    let cases: [Case; 4] = [
        (&[], Some((CLIENT_KEY, "wrong-secret")), "SignatureDoesNotMatch", 403),
        (
            &[],
            Some(("AKIAUNKNOWN00000", CLIENT_SECRET)),
            "InvalidAccessKeyId",
            403,
        ),
        (&["--skew-minutes", "-30"], good, "RequestTimeTooSkewed", 403),
        (&["--unsigned"], None, "AccessDenied", 403),
    ];
    for (extra, creds, code, status) in cases {
        let v = clients.boto3_json(&[&get[..], extra].concat(), creds).await;
        assert_eq!(
            (v["error"].as_str(), v["status"].as_u64()),
            (Some(code), Some(status)),
            "{extra:?}: {v}"
        );
    }

    // Presigned links: boto3's and aws-cli's work; an expired one is refused.
    let v = clients
        .boto3_json(&[&["presign"][..], &common, &["--key", "test.txt"]].concat(), good)
        .await;
    let res = client().get(v["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello\n");
    let url = clients
        .aws(&["s3", "presign", "s3://data/test.txt", "--endpoint-url", &base], good)
        .await;
    let res = client().get(url.trim()).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v = clients
        .boto3_json(
            &[
                &["presign"][..],
                &common,
                &["--key", "test.txt", "--expires", "60", "--skew-minutes", "-10"],
            ]
            .concat(),
            good,
        )
        .await;
    let res = client().get(v["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<Code>AccessDenied</Code>") && body.contains("Request has expired"),
        "{body}"
    );

    let logs = proxy.settled_logs().await;
    assert!(
        !logs.contains(CLIENT_SECRET) && !logs.contains("X-Amz-Signature"),
        "{logs}"
    );
}
