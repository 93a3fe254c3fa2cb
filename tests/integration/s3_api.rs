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
    BucketConfig::new("ha-data", "/data")
        .s3("      retry: { max_attempts: 1 }")
        .replica("primary", &p.primary.endpoint(), "priority: 1, timeout_seconds: 60")
        .replica("backup", &p.backup.endpoint(), "priority: 2, timeout_seconds: 60")
        .then(auth)
        .then("metrics: { enabled: false }")
        .render()
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
    // Parallel ranged GETs of 1 MiB (13 ranges, four threads). Each thread
    // waits at its first bytes until the primary is dead, so at least nine
    // ranges are asked for after the kill.
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
    // The ranges in flight at the kill end from the socket buffers or are
    // resumed from the backup mid-body; the first range asked for after it
    // fails over (later ones may skip the primary quietly once its breaker
    // is open).
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("Replica 'primary' failed, trying 'backup'")
            || logs.contains("Replica 'primary' failed mid-body, resuming from byte"),
        "no failover from the killed primary in the logs:\n{logs}"
    );
}

/// Keys with `+`, `%`, a space, XML's specials and non-ASCII list back
/// exactly, one key a page, through the proxy, with boto3's paginator and
/// aws-cli (both ask for `encoding-type=url`; the proxy pages with its own
/// tokens). With a replica that sent such keys raw while claiming to have
/// encoded them, `a+b.txt` came back as `a b.txt` and aws-cli stopped on
/// "the same next token was received twice".
#[tokio::test]
async fn odd_keys_list_back_exactly_one_page_at_a_time() {
    let Some(venv) = tools() else { return };
    let (primary, backup) = (s3().await, s3().await);
    let mut keys = [
        "odd/100%.txt",
        "odd/a+b.txt",
        "odd/sp ace.txt",
        "odd/uni-\u{e9}.txt",
        "odd/x&y<z>.txt",
    ];
    keys.sort_unstable();
    for s3 in [&primary, &backup] {
        for k in keys {
            s3.put_object("data-bucket", k, b"x").unwrap();
        }
    }
    let p = Pair { primary, backup };
    let proxy = Proxy::start(&config(&p, ""));
    let clients = Clients::new(venv);
    let base = proxy.base.clone();
    let v = clients
        .boto3_json(
            &[
                "paginate",
                "--endpoint",
                &base,
                "--bucket",
                "data",
                "--prefix",
                "odd/",
                "--page-size",
                "1",
                "--unsigned",
            ],
            None,
        )
        .await;
    assert_eq!(v["keys"], serde_json::json!(keys), "{v}");
    let out = clients
        .aws(
            &[
                "s3api",
                "list-objects-v2",
                "--endpoint-url",
                &base,
                "--no-sign-request",
                "--bucket",
                "data",
                "--prefix",
                "odd/",
                "--page-size",
                "1",
            ],
            None,
        )
        .await;
    let listed: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<&str> = listed["Contents"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|c| c["Key"].as_str().unwrap())
        .collect();
    assert_eq!(got, keys, "{out}");
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
    // Object APIs the proxy does not serve get S3's 501, not the object's bytes.
    for api in ["get_object_tagging", "get_object_acl"] {
        let args = [&["object-api"][..], &common, &["--key", "test.txt", "--api", api]].concat();
        let v = clients.boto3_json(&args, good).await;
        assert_eq!(
            (v["error"].as_str(), v["status"].as_u64()),
            (Some("NotImplemented"), Some(501)),
            "{api}: {v}"
        );
    }
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

/// One S3 server holding `data-bucket` with `test.txt` and `n` keys `k/key-NNN`.
async fn small_s3(n: usize) -> S3 {
    let s3 = s3().await;
    for i in 0..n {
        s3.put_object("data-bucket", &format!("k/key-{i:03}"), b"x").unwrap();
    }
    s3.put_object("data-bucket", "test.txt", b"hello\n").unwrap();
    s3
}

/// `buckets` over one S3 server, health checks off (so only clients' calls
/// reach it); `server` and `metrics` lines are added as given.
fn one_server_config(s3: &S3, server: &str, buckets: &[(&str, &str, &str)], metrics: bool) -> String {
    let mut out = format!(
        "server:\n  address: \"127.0.0.1:0\"\n  shutdown_grace_seconds: 2\n{server}\nhealth_check: {{ enabled: false }}\nbuckets:\n"
    );
    for (name, prefix, extra) in buckets {
        out.push_str(&format!(
            r#"  - name: {name}
    path_prefix: {prefix}
    s3:
      bucket: data-bucket
      endpoint: "{}"
      access_key: "{ACCESS_KEY}"
      secret_key: "{SECRET_KEY}"
{extra}
"#,
            s3.endpoint()
        ));
    }
    out.push_str(if metrics {
        "metrics: { enabled: true, address: 127.0.0.1, port: 0 }\n"
    } else {
        "metrics: { enabled: false }\n"
    });
    out
}

/// Listing calls the S3 server received.
fn upstream_listings(s3: &S3) -> usize {
    s3.received()
        .iter()
        .filter(|r| r.uri.query().is_some_and(|q| q.contains("list-type=2")))
        .count()
}

/// The value of the exact series `name{labels}` in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn request_metrics_carry_the_s3_operation() {
    let s3 = small_s3(3).await;
    let proxy = Proxy::start(&one_server_config(&s3, "", &[("ha-data", "/data", "")], true));
    let c = client();
    for (method, path, status) in [
        ("GET", "/data/test.txt", 200),
        ("HEAD", "/data/test.txt", 200),
        ("GET", "/data?list-type=2", 200),
        ("GET", "/data/?prefix=k/", 200),
        ("HEAD", "/data", 200),
        ("GET", "/data?location", 200),
        ("PUT", "/data/new.txt", 405),
        ("DELETE", "/data", 405),
        ("GET", "/data?versioning", 501),
        ("GET", "/data/test.txt?tagging", 501),
        ("GET", "/nowhere/x", 404),
    ] {
        let res = c
            .request(method.parse().unwrap(), proxy.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{method} {path}");
        res.bytes().await.unwrap();
    }
    let expected = [
        r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="GetObject",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="HEAD",operation="HeadObject",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="ListObjectsV2",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="ListObjects",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="HEAD",operation="HeadBucket",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="GetBucketLocation",status_class="2xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="PUT",operation="Refused",status_class="4xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="DELETE",operation="Refused",status_class="4xx"} 1"#,
        r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="Unsupported",status_class="5xx"} 2"#,
        r#"yatagarasu_requests_total{bucket="-",method="GET",operation="-",status_class="4xx"} 1"#,
        r#"yatagarasu_request_duration_seconds_count{bucket="ha-data",cache="-",operation="ListObjectsV2",status_class="2xx"} 1"#,
        r#"yatagarasu_request_duration_seconds_count{bucket="ha-data",cache="-",operation="HeadBucket",status_class="2xx"} 1"#,
    ];
    let scrape = || async {
        let res = client().get(proxy.metrics_url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    };
    // Counted when each response body ends: wait for the last ones.
    let all = eventually(Duration::from_secs(10), || async {
        let text = scrape().await;
        expected.iter().all(|line| text.lines().any(|l| l == *line))
    })
    .await;
    let text = scrape().await;
    for line in expected {
        assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
    }
    assert!(all);
    assert_eq!(
        sample(
            &text,
            r#"yatagarasu_requests_total{bucket="ha-data",method="GET",operation="GetObject",status_class="2xx"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn listing_cache_is_opt_in_keyed_by_every_parameter_and_expires() {
    let s3 = small_s3(12).await;
    let cached = format!("      listing_cache_ttl_seconds: 2\n{SIGV4_AUTH}");
    let proxy = Proxy::start(&one_server_config(
        &s3,
        "",
        &[("cached", "/cached", &cached), ("plain", "/data", "")],
        false,
    ));
    // Presigned listing URLs with a proxy-issued key (the bucket has SigV4 auth).
    let bucket = rusty_s3::Bucket::new(
        reqwest::Url::parse(&proxy.base).unwrap(),
        rusty_s3::UrlStyle::Path,
        "cached",
        "us-east-1",
    )
    .unwrap();
    let creds = rusty_s3::Credentials::new(CLIENT_KEY, CLIENT_SECRET);
    let signed = |extra: &[(&str, &str)]| {
        use rusty_s3::S3Action;
        let mut action = bucket.list_objects_v2(Some(&creds));
        action.with_prefix("k/");
        for (k, v) in extra {
            action.query_mut().insert(*k, *v);
        }
        action.sign(Duration::from_secs(600))
    };
    let get = |url: reqwest::Url| async move {
        let res = client().get(url).send().await.unwrap();
        let status = res.status().as_u16();
        let x_cache = res.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
        (status, x_cache, res.text().await.unwrap())
    };
    let n0 = upstream_listings(&s3);
    let (status, x_cache, first) = get(signed(&[])).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")), "{first}");
    assert_eq!(elements(&first, "Key").len(), 12, "{first}");
    assert_eq!(upstream_listings(&s3), n0 + 1);
    // Again within the TTL (a new signature, the same listing): nothing upstream.
    let (status, x_cache, again) = get(signed(&[])).await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("HIT-MEMORY")));
    assert_eq!(again, first);
    assert_eq!(upstream_listings(&s3), n0 + 1);
    // A client that fails the bucket's auth gets no cached page.
    let mut unsigned = signed(&[]);
    unsigned.set_query(Some("list-type=2&prefix=k%2F"));
    let (status, _, body) = get(unsigned).await;
    assert_eq!(status, 403, "{body}");
    // Any other parameter is another page.
    for extra in [
        &[("max-keys", "5")][..],
        &[("start-after", "k/key-003")],
        &[("delimiter", "/")],
    ] {
        let (status, x_cache, _) = get(signed(extra)).await;
        assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")), "{extra:?}");
    }
    assert_eq!(upstream_listings(&s3), n0 + 4);
    // Off by default: every listing of the other bucket goes upstream.
    for _ in 0..2 {
        let (status, x_cache, _) = get(reqwest::Url::parse(&proxy.url("/data?list-type=2&prefix=k/")).unwrap()).await;
        assert_eq!((status, x_cache), (200, None));
    }
    assert_eq!(upstream_listings(&s3), n0 + 6);
    // Past the TTL the page is asked of the replica again.
    let refreshed = eventually(Duration::from_secs(20), || async {
        let (_, x_cache, _) = get(signed(&[])).await;
        x_cache.as_deref() == Some("MISS")
    })
    .await;
    assert!(refreshed, "the cached page never expired");
    assert_eq!(upstream_listings(&s3), n0 + 7);
}

/// A config whose proxies share `server.s3_api.token_key` from `${TOKEN_KEY}`.
fn token_config(s3: &S3, keyed: bool) -> String {
    let server = if keyed {
        "  s3_api: { token_key: \"${TOKEN_KEY}\" }"
    } else {
        ""
    };
    one_server_config(s3, server, &[("ha-data", "/data", "")], false)
}

#[tokio::test]
async fn continuation_tokens_are_valid_on_every_instance_sharing_the_key() {
    let s3 = small_s3(25).await;
    let env = [("TOKEN_KEY", "fleet-wide-listing-secret-0123")];
    let a = Proxy::start_with_env(&token_config(&s3, true), &env);
    let b = Proxy::start_with_env(&token_config(&s3, true), &env);
    let lonely = Proxy::start(&token_config(&s3, false));
    let page = |proxy: &Proxy, token: Option<&str>| {
        let mut url = reqwest::Url::parse(&proxy.url("/data")).unwrap();
        url.query_pairs_mut()
            .append_pair("list-type", "2")
            .append_pair("prefix", "k/")
            .append_pair("max-keys", "10");
        if let Some(t) = token {
            url.query_pairs_mut().append_pair("continuation-token", t);
        }
        async move {
            let res = client().get(url).send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    // Pages 1 and 3 from one instance, page 2 from the other.
    let mut keys = Vec::new();
    let mut token = None;
    for proxy in [&a, &b, &a] {
        let (status, xml) = page(proxy, token.as_deref()).await;
        assert_eq!(status, 200, "{xml}");
        keys.extend(elements(&xml, "Key"));
        token = elements(&xml, "NextContinuationToken").pop();
        if keys.len() < 25 {
            let t = token.as_deref().expect("a next page");
            // Tampered with: refused on every instance.
            let mut forged = t.to_owned();
            let last = forged.pop().unwrap();
            forged.push(if last == 'A' { 'B' } else { 'A' });
            for p in [&a, &b] {
                let (status, body) = page(p, Some(&forged)).await;
                assert_eq!(status, 400, "{body}");
                assert!(body.contains("<Code>InvalidArgument</Code>"), "{body}");
            }
            // An instance with its own random key cannot continue it.
            let (status, body) = page(&lonely, Some(t)).await;
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("<Code>InvalidArgument</Code>"), "{body}");
        }
    }
    assert!(token.is_none());
    let expected: Vec<String> = (0..25).map(|i| format!("k/key-{i:03}")).collect();
    assert_eq!(keys, expected, "every key once, in order");
    let warning = "server.s3_api.token_key is not set";
    assert!(lonely.settled_logs().await.contains(warning));
    assert!(!a.settled_logs().await.contains(warning));
}

#[tokio::test]
async fn virtual_hosted_style_names_the_bucket_in_the_host() {
    let Some(venv) = tools() else { return };
    let s3 = small_s3(3).await;
    let server = "  s3_domain: s3.localhost";
    let proxy = Proxy::start(&one_server_config(
        &s3,
        server,
        &[("ha-data", "/data", SIGV4_AUTH)],
        false,
    ));
    let port = proxy.addr().rsplit(':').next().unwrap().to_owned();
    let clients = Clients::new(venv);
    // boto3 with virtual-hosted addressing: it signs for host data.s3.localhost;
    // its HTTP proxy setting reaches the proxy without DNS for that name.
    let endpoint = format!("http://s3.localhost:{port}");
    let common = [
        "--endpoint",
        endpoint.as_str(),
        "--bucket",
        "data",
        "--addressing",
        "virtual",
        "--http-proxy",
        proxy.base.as_str(),
    ];
    let good = Some((CLIENT_KEY, CLIENT_SECRET));
    let v = clients.boto3_json(&[&["list"][..], &common].concat(), good).await;
    assert_eq!(
        v["keys"],
        serde_json::json!(["k/key-000", "k/key-001", "k/key-002", "test.txt"]),
        "{v}"
    );
    let v = clients
        .boto3_json(&[&["get"][..], &common, &["--key", "test.txt"]].concat(), good)
        .await;
    assert_eq!(v["sha256"], sha256(b"hello\n"), "{v}");
    let v = clients
        .boto3_json(
            &[&["get"][..], &common, &["--key", "test.txt"]].concat(),
            Some((CLIENT_KEY, "wrong")),
        )
        .await;
    assert_eq!(v["error"], "SignatureDoesNotMatch", "{v}");
    // A presigned virtual-hosted link, fetched by curl with the name resolved to loopback.
    let v = clients
        .boto3_json(&[&["presign"][..], &common, &["--key", "test.txt"]].concat(), good)
        .await;
    let url = v["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://data.s3.localhost:{port}/test.txt?")),
        "{url}"
    );
    let curl = |url: String| {
        let resolve = format!("data.s3.localhost:{port}:127.0.0.1");
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "--resolve", &resolve, "-w", "\n%{http_code}", &url])
                .output()
                .await
                .expect("curl");
            String::from_utf8(out.stdout).unwrap()
        }
    };
    assert_eq!(curl(url.to_owned()).await, "hello\n\n200");
    // The same host without a signature: the bucket's auth answers, not NoSuchBucket.
    let out = curl(format!("http://data.s3.localhost:{port}/test.txt")).await;
    assert!(out.contains("AccessDenied") && out.ends_with("403"), "{out}");
    // Path style keeps working beside it.
    let v = clients
        .boto3_json(
            &[
                "get",
                "--endpoint",
                &proxy.base,
                "--bucket",
                "data",
                "--key",
                "test.txt",
            ],
            good,
        )
        .await;
    assert_eq!(v["sha256"], sha256(b"hello\n"), "{v}");
}

const JWT_SECRET: &str = "list-buckets-jwt-secret-0123456789";

/// A bucket's own JWT block (HS256 with [`JWT_SECRET`], role `reader` required).
const JWT_AUTH: &str = r#"    auth:
      enabled: true
      jwt:
        algorithm: HS256
        secret: "list-buckets-jwt-secret-0123456789"
        claims:
          - { claim: "role", equals: "reader" }"#;

const BOTH_AUTH: &str = r#"    auth:
      enabled: true
      sigv4:
        credentials:
          - access_key_id: "AKIAPROXYCLIENT0001"
            secret_access_key: "client-secret-1a2b3c4d5e"
      jwt:
        algorithm: HS256
        secret: "list-buckets-jwt-secret-0123456789"
        claims:
          - { claim: "role", equals: "reader" }"#;

fn jwt(role: &str) -> String {
    hs256_token(JWT_SECRET, serde_json::json!({ "sub": "lister", "role": role }))
}

#[tokio::test]
async fn list_buckets_shows_each_caller_the_buckets_its_credentials_open() {
    let Some(venv) = tools() else { return };
    let s3 = small_s3(1).await;
    let buckets = [
        ("open-data", "/open", ""),
        ("signed-data", "/signed", SIGV4_AUTH),
        ("token-data", "/tokens", JWT_AUTH),
        ("both-data", "/both", BOTH_AUTH),
        // Two segments: no S3 client can name it, so it is not listed.
        ("nested-data", "/team/nested", ""),
    ];
    let proxy = Proxy::start(&one_server_config(&s3, "", &buckets, true));
    let clients = Clients::new(venv);
    let base = proxy.base.clone();
    let good = Some((CLIENT_KEY, CLIENT_SECRET));
    let names = |out: &str| -> Vec<String> {
        out.lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    };

    // aws-cli, anonymous and signed with a proxy-issued key.
    let anon = clients
        .aws(&["s3", "ls", "--endpoint-url", &base, "--no-sign-request"], None)
        .await;
    assert_eq!(names(&anon), ["open"], "{anon}");
    let signed = clients.aws(&["s3", "ls", "--endpoint-url", &base], good).await;
    assert_eq!(names(&signed), ["both", "open", "signed"], "{signed}");

    // boto3's list_buckets parses the whole answer (dates included).
    let v = clients
        .boto3_json(&["list-buckets", "--endpoint", &base, "--bucket", "-"], good)
        .await;
    assert_eq!(v["buckets"], serde_json::json!(["both", "open", "signed"]), "{v}");
    assert_eq!(v["owner"], "yatagarasu", "{v}");
    assert!(v["dates"][0].as_str().unwrap().starts_with("20"), "{v}");

    // A bearer token opens the JWT buckets whose claim rules it passes.
    let get = |auth: Option<String>| {
        let mut req = client().get(format!("{base}/"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let (status, xml) = get(Some(format!("Bearer {}", jwt("reader")))).await;
    assert_eq!(status, 200, "{xml}");
    assert_eq!(elements(&xml, "Name"), ["both", "open", "tokens"], "{xml}");
    let (_, xml) = get(Some(format!("Bearer {}", jwt("intern")))).await;
    assert_eq!(elements(&xml, "Name"), ["open"], "{xml}");

    // rclone's `lsd` (bucket list) with the proxy-issued key.
    if crate::rclone::rclone_present() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, out, err) = crate::rclone::rclone(dir.path(), &base, good, &["lsd", "yg:"]).await;
        assert!(ok, "{err}");
        let listed: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().last()).collect();
        assert_eq!(listed, ["both", "open", "signed"], "{out}");
    }

    // Paging and prefixes as the S3 API has them.
    let (_, xml) = get(None).await;
    assert!(!xml.contains("ContinuationToken"), "{xml}");
    let res = client().get(format!("{base}/?max-buckets=0")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("InvalidArgument"));

    // Counted under its own operation; no credential in the logs.
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("yatagarasu_requests_total{") && l.contains("operation=\"ListBuckets\"")),
        "{metrics}"
    );
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("operation=\"ListBuckets\"") || logs.contains("\"operation\":\"ListBuckets\""),
        "{logs}"
    );
    assert!(!logs.contains(CLIENT_SECRET) && !logs.contains(JWT_SECRET), "{logs}");
}

#[tokio::test]
async fn list_buckets_with_only_guarded_buckets_refuses_bad_credentials_as_s3_does() {
    let Some(venv) = tools() else { return };
    let s3 = small_s3(1).await;
    let proxy = Proxy::start(&one_server_config(
        &s3,
        "",
        &[("signed-data", "/signed", SIGV4_AUTH)],
        false,
    ));
    let clients = Clients::new(venv);
    let v = clients
        .boto3_json(
            &["list-buckets", "--endpoint", &proxy.base, "--bucket", "-"],
            Some((CLIENT_KEY, "wrong-secret")),
        )
        .await;
    assert_eq!(
        (v["error"].as_str(), v["status"].as_u64()),
        (Some("SignatureDoesNotMatch"), Some(403)),
        "{v}"
    );
    let v = clients
        .boto3_json(
            &["list-buckets", "--endpoint", &proxy.base, "--bucket", "-", "--unsigned"],
            None,
        )
        .await;
    assert_eq!(
        (v["error"].as_str(), v["status"].as_u64()),
        (Some("AccessDenied"), Some(403)),
        "{v}"
    );
    let v = clients
        .boto3_json(
            &["list-buckets", "--endpoint", &proxy.base, "--bucket", "-"],
            Some((CLIENT_KEY, CLIENT_SECRET)),
        )
        .await;
    assert_eq!(v["buckets"], serde_json::json!(["signed"]), "{v}");
    // Other methods on the root are still no bucket's.
    let res = client().delete(format!("{}/", proxy.base)).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

/// What one s3cmd run did.
struct S3cmdRun {
    ok: bool,
    out: String,
    err: String,
}

/// s3cmd as a user configures it for the proxy: a config file with
/// `host_base` and `host_bucket` at the proxy's address (path style), plain
/// HTTP, a key pair (s3cmd wants one even for open buckets) and SigV4 or
/// SigV2; `HOME` a temp dir and the machine's `AWS_*` variables removed.
struct S3cmd {
    dir: tempfile::TempDir,
}

impl S3cmd {
    fn new(proxy: &Proxy, (key, secret): (&str, &str), signature_v2: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = proxy.addr();
        std::fs::write(
            dir.path().join("s3cfg"),
            format!(
                "[default]\naccess_key = {key}\nsecret_key = {secret}\nhost_base = {addr}\nhost_bucket = {addr}\n\
                 use_https = False\nsignature_v2 = {}\n",
                if signature_v2 { "True" } else { "False" }
            ),
        )
        .unwrap();
        Self { dir }
    }

    /// A path in the run's temp dir.
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn run(&self, args: &[&str]) -> S3cmdRun {
        let mut cmd = tokio::process::Command::new("s3cmd");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .env("HOME", self.dir.path())
            .arg("-c")
            .arg(self.path("s3cfg"))
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .expect("s3cmd");
        S3cmdRun {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `s3cmd ARGS`, which must succeed: its output.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.ok, "s3cmd {args:?} failed:\n{}\n{}", run.out, run.err);
        run.out
    }

    /// `s3cmd ARGS`, which must fail: its error output.
    async fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(!run.ok, "s3cmd {args:?} succeeded:\n{}", run.out);
        run.err
    }
}

/// The `s3://...` names of an `s3cmd ls` output (the last field; keys
/// with spaces kept whole).
fn s3cmd_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.find("s3://").map(|i| l[i..].to_owned()))
        .collect()
}

/// The object reads (a `GET` of a key: not the bucket's listing) among the
/// requests `s3` received after its `since`-th.
fn object_gets(s3: &S3, since: u64) -> Vec<String> {
    let new = usize::try_from(s3.requests() - since).unwrap();
    let received = s3.received();
    assert!(new <= received.len(), "more requests than the server keeps");
    received[received.len() - new..]
        .iter()
        .filter(|r| r.method == http::Method::GET)
        .map(|r| r.uri.path().to_owned())
        .filter(|p| p.trim_end_matches('/') != "/data-bucket")
        .collect()
}

/// Keys `+`, `%`, a space and non-ASCII mean something else in URLs, query
/// strings or the signature's canonical path.
const S3CMD_ODD_KEYS: [&str; 4] = ["odd/100%.txt", "odd/a+b.txt", "odd/sp ace.txt", "odd/uni-\u{e9}.txt"];

/// Two replicas holding `test.txt`, `big.bin` (`size` bytes), `dir/one.txt`,
/// `dir/two.txt` and [`S3CMD_ODD_KEYS`] (each holding its own name). The
/// ETags are s3s-fs's own MD5s, which s3cmd checks every download against.
async fn s3cmd_pair(size: usize) -> Pair {
    let (primary, backup) = (s3().await, s3().await);
    for s3 in [&primary, &backup] {
        s3.put_object("data-bucket", "test.txt", b"hello\n").unwrap();
        s3.put_object("data-bucket", "big.bin", &pattern(size, 7)).unwrap();
        s3.put_object("data-bucket", "dir/one.txt", b"one\n").unwrap();
        s3.put_object("data-bucket", "dir/two.txt", b"two\n").unwrap();
        for k in S3CMD_ODD_KEYS {
            s3.put_object("data-bucket", k, k.as_bytes()).unwrap();
        }
    }
    Pair { primary, backup }
}

/// Every key of [`s3cmd_pair`], in order.
fn s3cmd_keys() -> Vec<String> {
    let mut keys: Vec<String> = ["big.bin", "dir/one.txt", "dir/two.txt", "test.txt"]
        .iter()
        .chain(S3CMD_ODD_KEYS.iter())
        .map(|k| k.to_string())
        .collect();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3cmd_lists_gets_and_syncs_an_open_bucket() {
    if !tool_present("s3cmd") {
        return;
    }
    let size = 6 * 1024 * 1024 + 5;
    let p = s3cmd_pair(size).await;
    let proxy = Proxy::start(&config(&p, ""));
    // s3cmd signs with some key even for an open bucket: served as anonymous.
    let s3cmd = S3cmd::new(&proxy, ("AKIAANYKEY000000", "any-secret"), false);

    // `s3cmd ls` is ListBuckets; `ls s3://data/` a V1 listing with `/`.
    assert_eq!(s3cmd_names(&s3cmd.ok(&["ls"]).await), ["s3://data"]);
    let top = s3cmd.ok(&["ls", "s3://data/"]).await;
    assert_eq!(
        s3cmd_names(&top),
        [
            "s3://data/dir/",
            "s3://data/odd/",
            "s3://data/big.bin",
            "s3://data/test.txt"
        ],
        "{top}"
    );
    assert!(top.contains(&format!(" {size}  s3://data/big.bin")), "{top}");
    let every: Vec<String> = s3cmd_keys().iter().map(|k| format!("s3://data/{k}")).collect();
    let all = s3cmd.ok(&["ls", "--recursive", "s3://data"]).await;
    assert_eq!(s3cmd_names(&all), every, "{all}");
    let la = s3cmd.ok(&["la"]).await;
    assert!(s3cmd_names(&la).contains(&"s3://data/test.txt".to_owned()), "{la}");

    // Downloads, checked against the ETag (MD5) by s3cmd and by SHA-256 here.
    let big = s3cmd.path("big.bin");
    s3cmd.ok(&["get", "s3://data/big.bin", big.to_str().unwrap()]).await;
    assert_eq!(sha256(&std::fs::read(&big).unwrap()), sha256(&pattern(size, 7)));
    // `--continue` asks for the rest of a partial file (`Range: bytes=N-`).
    let part = s3cmd.path("part.bin");
    std::fs::write(&part, &pattern(size, 7)[..1 << 20]).unwrap();
    s3cmd
        .ok(&["get", "--continue", "s3://data/big.bin", part.to_str().unwrap()])
        .await;
    assert_eq!(sha256(&std::fs::read(&part).unwrap()), sha256(&pattern(size, 7)));
    for (i, k) in S3CMD_ODD_KEYS.iter().enumerate() {
        let out = s3cmd.path(&format!("odd-{i}"));
        s3cmd
            .ok(&["get", &format!("s3://data/{k}"), out.to_str().unwrap()])
            .await;
        assert_eq!(std::fs::read(&out).unwrap(), k.as_bytes(), "{k}");
    }
    let tree = s3cmd.path("tree");
    std::fs::create_dir(&tree).unwrap();
    let tree_arg = format!("{}/", tree.display());
    s3cmd.ok(&["get", "--recursive", "s3://data/odd/", &tree_arg]).await;
    for k in S3CMD_ODD_KEYS {
        let name = k.strip_prefix("odd/").unwrap();
        assert_eq!(std::fs::read(tree.join(name)).unwrap(), k.as_bytes(), "{k}");
    }

    // `sync` twice: the second finds everything in place and downloads nothing.
    let mirror = s3cmd.path("mirror");
    let mirror_arg = format!("{}/", mirror.display());
    let first = s3cmd.ok(&["sync", "s3://data/", &mirror_arg]).await;
    for k in s3cmd_keys() {
        let expected = match k.as_str() {
            "big.bin" => pattern(size, 7),
            "test.txt" => b"hello\n".to_vec(),
            "dir/one.txt" => b"one\n".to_vec(),
            "dir/two.txt" => b"two\n".to_vec(),
            odd => odd.as_bytes().to_vec(),
        };
        let got = std::fs::read(mirror.join(&k)).unwrap_or_else(|e| panic!("{k}: {e}\n{first}"));
        assert_eq!(sha256(&got), sha256(&expected), "{k}");
    }
    let (before_p, before_b) = (p.primary.requests(), p.backup.requests());
    let again = s3cmd.ok(&["sync", "s3://data/", &mirror_arg]).await;
    assert!(!again.contains("download:"), "{again}");
    assert_eq!(object_gets(&p.primary, before_p), Vec::<String>::new());
    assert_eq!(object_gets(&p.backup, before_b), Vec::<String>::new());

    // `info` also asks for the policy, CORS and ACL: the proxy's 501s are
    // read as "none", as s3cmd reads them from S3-compatible stores.
    let info = s3cmd.ok(&["info", "s3://data/test.txt"]).await;
    for line in [
        "File size: 6",
        "MD5 sum:   b1946ac92492d2347c6235b4d2611184",
        "Policy:    none",
        "CORS:      none",
        "ACL:       none",
    ] {
        assert!(info.contains(line), "{line}:\n{info}");
    }
    let info = s3cmd.ok(&["info", "s3://data"]).await;
    assert!(info.contains("Location:  us-east-1"), "{info}");
    let du = s3cmd.ok(&["du", "s3://data"]).await;
    let total = size + 6 + 4 + 4 + S3CMD_ODD_KEYS.iter().map(|k| k.len()).sum::<usize>();
    assert!(
        du.split_whitespace().collect::<Vec<_>>()[..3] == [total.to_string().as_str(), "8", "objects"],
        "{du}"
    );

    // `signurl` signs with SigV2 only: an open bucket serves the link as an
    // anonymous read.
    let url = s3cmd.ok(&["signurl", "s3://data/odd/sp ace.txt", "+600"]).await;
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", url.trim()])
        .output()
        .await
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "odd/sp ace.txt\n200", "{url}");

    // Writes are refused with an S3 error s3cmd prints.
    let err = s3cmd
        .fails(&["put", s3cmd.path("s3cfg").to_str().unwrap(), "s3://data/new.txt"])
        .await;
    assert!(err.contains("405 (MethodNotAllowed)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3cmd_signs_with_proxy_keys_in_sigv4_and_falls_back_from_sigv2() {
    if !tool_present("s3cmd") {
        return;
    }
    let s3 = small_s3(3).await;
    let buckets = [("open-data", "/open", ""), ("signed-data", "/signed", SIGV4_AUTH)];
    let proxy = Proxy::start(&one_server_config(&s3, "", &buckets, false));
    let good = (CLIENT_KEY, CLIENT_SECRET);
    let v4 = S3cmd::new(&proxy, good, false);
    assert_eq!(s3cmd_names(&v4.ok(&["ls"]).await), ["s3://open", "s3://signed"]);
    let listed = v4.ok(&["ls", "--recursive", "s3://signed"]).await;
    assert_eq!(
        s3cmd_names(&listed),
        [
            "s3://signed/k/key-000",
            "s3://signed/k/key-001",
            "s3://signed/k/key-002",
            "s3://signed/test.txt"
        ],
        "{listed}"
    );
    let out = v4.path("test.txt");
    v4.ok(&["get", "s3://signed/test.txt", out.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(&out).unwrap(), b"hello\n");
    // Odd keys, signed: s3cmd's canonical path is the proxy's.
    // (No `[`: s3cmd reads it as a wildcard.)
    let punctuated = "odd/t~i(l)d*e!'=&;:@,$.txt";
    for (i, k) in S3CMD_ODD_KEYS.iter().chain([&punctuated]).enumerate() {
        s3.put_object("data-bucket", k, k.as_bytes()).unwrap();
        let out = v4.path(&format!("odd-{i}"));
        v4.ok(&["get", &format!("s3://signed/{k}"), out.to_str().unwrap()])
            .await;
        assert_eq!(std::fs::read(&out).unwrap(), k.as_bytes(), "{k}");
    }
    let info = v4.ok(&["info", "s3://signed/test.txt"]).await;
    assert!(info.contains("MD5 sum:   b1946ac92492d2347c6235b4d2611184"), "{info}");

    // `signature_v2 = True`: the proxy refuses SigV2 with S3's own
    // InvalidRequest, on which s3cmd signs again with SigV4. The bucket list
    // is that refusal too, not the open buckets alone.
    let v2 = S3cmd::new(&proxy, good, true);
    let buckets = v2.ok(&["ls"]).await;
    assert_eq!(s3cmd_names(&buckets), ["s3://open", "s3://signed"], "{buckets}");
    let listed = v2.ok(&["ls", "s3://signed/k/"]).await;
    assert_eq!(s3cmd_names(&listed).len(), 3, "{listed}");
    // A first call that is a HEAD (`get`, `info` of one object) gets the 400
    // with no body to read, as from S3 itself: s3cmd cannot tell why.
    let err = v2
        .fails(&["get", "s3://signed/test.txt", v2.path("v2.txt").to_str().unwrap()])
        .await;
    assert!(err.contains("400 (Bad Request)"), "{err}");
    // Its presigned links are SigV2 only: refused, saying what to use.
    let url = v4.ok(&["signurl", "s3://signed/test.txt", "+600"]).await;
    let res = client().get(url.trim()).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body = res.text().await.unwrap();
    assert!(
        body.contains("<Code>InvalidRequest</Code>") && body.contains("Please use AWS4-HMAC-SHA256"),
        "{body}"
    );

    // Wrong keys get S3's error codes, printed by s3cmd.
    for (creds, code) in [
        ((CLIENT_KEY, "wrong-secret"), "SignatureDoesNotMatch"),
        (("AKIAUNKNOWN00000", CLIENT_SECRET), "InvalidAccessKeyId"),
    ] {
        let err = S3cmd::new(&proxy, creds, false).fails(&["ls", "s3://signed/"]).await;
        assert!(err.contains(&format!("403 ({code})")), "{err}");
    }
    let logs = proxy.settled_logs().await;
    assert!(!logs.contains(CLIENT_SECRET), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3cmd_keeps_working_when_the_primary_dies_mid_get_and_between_commands() {
    if !tool_present("s3cmd") {
        return;
    }
    let size = 8 * 1024 * 1024 + 5;
    let mut p = s3cmd_pair(size).await;
    let proxy = Proxy::start(&config(&p, ""));
    let s3cmd = S3cmd::new(&proxy, ("AKIAANYKEY000000", "any-secret"), false);
    let mirror = s3cmd.path("mirror");
    let mirror_arg = format!("{}/", mirror.display());
    s3cmd.ok(&["sync", "s3://data/dir/", &mirror_arg]).await;

    // The primary's connection is cut 3 MiB into the body: the proxy goes on
    // from the backup, and s3cmd's MD5 check passes.
    p.primary.set_fault(Fault::ResetAfter(3 << 20));
    let big = s3cmd.path("big.bin");
    s3cmd.ok(&["get", "s3://data/big.bin", big.to_str().unwrap()]).await;
    assert_eq!(sha256(&std::fs::read(&big).unwrap()), sha256(&pattern(size, 7)));
    let logs = proxy.settled_logs().await;
    assert!(
        logs.contains("Replica 'primary' failed mid-body, resuming from byte"),
        "{logs}"
    );

    // Killed between two commands: the next ones are served by the backup.
    p.primary.set_fault(Fault::None);
    p.primary.stop().await;
    let before = p.backup.requests();
    let listed = s3cmd.ok(&["ls", "--recursive", "s3://data"]).await;
    assert_eq!(s3cmd_names(&listed).len(), s3cmd_keys().len(), "{listed}");
    let out = s3cmd.path("test.txt");
    s3cmd.ok(&["get", "s3://data/test.txt", out.to_str().unwrap()]).await;
    assert_eq!(std::fs::read(&out).unwrap(), b"hello\n");
    let again = s3cmd.ok(&["sync", "s3://data/dir/", &mirror_arg]).await;
    assert!(!again.contains("download:"), "{again}");
    assert_eq!(object_gets(&p.backup, before), ["/data-bucket/test.txt"]);
}
