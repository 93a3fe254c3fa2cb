//! Replica credentials (issue 14) through the real binary: the AWS SDK's
//! provider chain (environment, profile files, a container credentials
//! endpoint served by the test) against S3 servers that check SigV4 and
//! record which access key signed each request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use s3s::auth::{S3Auth, SecretKey};
use s3s::S3Result;

use crate::common::*;

/// Several key pairs, changeable while the server runs, and a count of the
/// requests each access key signed.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<Mutex<HashMap<String, String>>>,
    seen: Arc<Mutex<HashMap<String, u64>>>,
    /// A moto server whose assumed-role keys are accepted too.
    moto: Option<String>,
}

impl KeyRing {
    pub fn add(&self, access: &str, secret: &str) {
        self.keys.lock().unwrap().insert(access.into(), secret.into());
    }

    pub fn seen(&self, access: &str) -> u64 {
        self.seen.lock().unwrap().get(access).copied().unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl S3Auth for KeyRing {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        *self.seen.lock().unwrap().entry(access_key.to_owned()).or_default() += 1;
        let known = self.keys.lock().unwrap().get(access_key).cloned();
        if let Some(secret) = known {
            return Ok(SecretKey::from(secret));
        }
        if let Some(moto) = &self.moto {
            let roles = Moto::assumed_roles_at(moto).await;
            if let Some(role) = roles.iter().find(|r| r["access_key_id"] == access_key) {
                return Ok(SecretKey::from(role["secret_access_key"].as_str().unwrap().to_owned()));
            }
        }
        Err(s3s::s3_error!(InvalidAccessKeyId))
    }
}

pub struct KeyRingS3 {
    pub server: LocalS3,
    pub ring: KeyRing,
    _dir: tempfile::TempDir,
}

pub async fn keyring_s3() -> KeyRingS3 {
    keyring_s3_with(KeyRing::default()).await
}

pub async fn keyring_s3_with(ring: KeyRing) -> KeyRingS3 {
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = LocalS3::start_with_auth(dir.path(), any, ring.clone()).await.unwrap();
    server.put_object("data", "hello.txt", b"signed by the chain").unwrap();
    KeyRingS3 {
        server,
        ring,
        _dir: dir,
    }
}

/// RFC 3339 in UTC, as the container credentials endpoint writes `Expiration`.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The keys a container credentials endpoint hands out now.
#[derive(Clone)]
pub struct Issued {
    access: String,
    secret: String,
    token: String,
    expires: SystemTime,
}

/// A container credentials endpoint (ECS / EKS Pod Identity protocol) on a
/// loopback port, serving whatever [`Issued`] is set; it can be stopped.
pub struct CredentialsEndpoint {
    pub url: String,
    issued: Arc<Mutex<Issued>>,
    pub calls: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CredentialsEndpoint {
    pub async fn start(first: Issued) -> Self {
        let issued = Arc::new(Mutex::new(first));
        let calls = Arc::new(AtomicU64::new(0));
        let (i, c) = (issued.clone(), calls.clone());
        let app = axum::Router::new().route(
            "/creds",
            axum::routing::get(move || {
                let (i, c) = (i.clone(), c.clone());
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let k = i.lock().unwrap().clone();
                    axum::Json(serde_json::json!({
                        "AccessKeyId": k.access,
                        "SecretAccessKey": k.secret,
                        "Token": k.token,
                        "Expiration": rfc3339(k.expires),
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/creds", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            issued,
            calls,
            task,
        }
    }

    pub fn set(&self, next: Issued) {
        *self.issued.lock().unwrap() = next;
    }

    /// Stops answering (connections refused).
    pub fn stop(&self) {
        self.task.abort();
    }
}

pub fn issued(access: &str, secret: &str, life: Duration) -> Issued {
    Issued {
        access: access.into(),
        secret: secret.into(),
        token: format!("token-of-{access}"),
        expires: SystemTime::now() + life,
    }
}

/// One bucket, one replica per `(name, endpoint, extra YAML keys)`.
pub fn chain_config(replicas: &[(&str, &str, &str)]) -> String {
    let mut list = String::new();
    for (i, (name, endpoint, extra)) in replicas.iter().enumerate() {
        list.push_str(&format!(
            "        - {{ name: {name}, endpoint: \"{endpoint}\", priority: {}{extra} }}\n",
            i + 1
        ));
    }
    format!(
        r#"
server:
  address: "127.0.0.1:0"
buckets:
  - name: "main"
    path_prefix: "/files"
    s3:
      bucket: "data"
      region: "us-east-1"
      timeout_seconds: 5
      retry: {{ max_attempts: 1 }}
      replicas:
{list}health_check:
  enabled: false
metrics:
  enabled: true
  address: "127.0.0.1"
  port: 0
"#
    )
}

/// The environment of a container whose only credential source is the endpoint.
fn container_env<'a>(url: &'a str, home: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", url),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials"),
        ("HOME", home),
    ]
}

/// Requests from 4 workers until stopped: (ok, failed) counts.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers = (0..4)
            .map(|_| {
                let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = client();
                    while !stop.load(Ordering::SeqCst) {
                        let good = match client.get(&url).send().await {
                            Ok(res) if res.status() == 200 => {
                                res.text().await.is_ok_and(|t| t == "signed by the chain")
                            }
                            _ => false,
                        };
                        if good { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            workers,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    async fn wait_ok(&self, more_than: u64) -> bool {
        eventually(Duration::from_secs(30), || async { self.ok() > more_than }).await
    }

    /// Stops and returns (ok, failed).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers {
            w.await.unwrap();
        }
        (self.ok.load(Ordering::SeqCst), self.failed.load(Ordering::SeqCst))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_credentials_rotate_with_no_failed_request_and_outlive_the_endpoint() {
    let s3 = keyring_s3().await;
    s3.ring.add("ASIAFIRSTKEY000001", "first-secret");
    s3.ring.add("ASIASECONDKEY00002", "second-secret");
    // The first keys expire soon: the proxy must fetch the next ones in time.
    let endpoint =
        CredentialsEndpoint::start(issued("ASIAFIRSTKEY000001", "first-secret", Duration::from_secs(12))).await;
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let proxy = Proxy::start_clean_with_env(
        &chain_config(&[("chain", &s3.server.endpoint(), "")]),
        &container_env(&endpoint.url, &home_path),
    );
    let load = Load::start(proxy.url("/files/hello.txt"));
    assert!(load.wait_ok(10).await, "{}", proxy.logs());
    assert!(s3.ring.seen("ASIAFIRSTKEY000001") > 0);

    // The endpoint now hands out the next keys, valid for an hour.
    endpoint.set(issued("ASIASECONDKEY00002", "second-secret", Duration::from_secs(3600)));
    assert!(
        eventually(Duration::from_secs(30), || async {
            s3.ring.seen("ASIASECONDKEY00002") > 20
        })
        .await,
        "the proxy never switched keys; logs:\n{}",
        proxy.logs()
    );
    // The first keys are no longer used once the second are in.
    let first_uses = s3.ring.seen("ASIAFIRSTKEY000001");

    // Fetched at start, then refreshed before expiry (at least once).
    assert!(endpoint.calls.load(Ordering::SeqCst) >= 2);
    // The endpoint goes away: nothing changes until the keys expire.
    endpoint.stop();
    let after_stop = load.ok();
    assert!(load.wait_ok(after_stop + 100).await);
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    let (ok, failed) = load.finish().await;
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed; logs:\n{}",
        ok + failed,
        proxy.logs()
    );
    assert_eq!(
        s3.ring.seen("ASIAFIRSTKEY000001"),
        first_uses,
        "the first keys were used after the switch"
    );
    // Fresh keys are not refreshed: the dead endpoint was not even tried.
    let logs = proxy.logs();
    assert!(!logs.contains("credential refresh failed"), "{logs}");
    assert!(!logs.contains("second-secret") && !logs.contains("token-of-"), "{logs}");
    // The expiry gauge shows the second keys' hour.
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("yatagarasu_credentials_expiry_seconds{") && l.contains("replica=\"chain\""))
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    let secs: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 3000.0 && secs <= 3600.0, "{gauge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_credentials_are_that_replicas_failure_and_the_next_replica_serves() {
    let primary = keyring_s3().await;
    primary.ring.add("ASIASHORTLIVED0001", "short-secret");
    let backup = s3().await;
    backup.put_object("data", "hello.txt", b"signed by the chain").unwrap();
    let endpoint =
        CredentialsEndpoint::start(issued("ASIASHORTLIVED0001", "short-secret", Duration::from_secs(6))).await;
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let static_keys = format!(", access_key: \"{ACCESS_KEY}\", secret_key: \"{SECRET_KEY}\"");
    let proxy = Proxy::start_clean_with_env(
        &chain_config(&[
            ("chain", &primary.server.endpoint(), ""),
            ("static", &backup.endpoint(), &static_keys),
        ]),
        &container_env(&endpoint.url, &home_path),
    );
    let url = proxy.url("/files/hello.txt");
    let served_by = || async {
        let res = client().get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        res.headers()["x-yatagarasu-replica"].to_str().unwrap().to_owned()
    };
    assert_eq!(served_by().await, "chain");
    // The endpoint dies before the keys expire: once they do, the backup serves.
    endpoint.stop();
    assert!(
        eventually(Duration::from_secs(30), || async { served_by().await == "static" }).await,
        "{}",
        proxy.logs()
    );
    assert!(
        proxy
            .wait_for_log("credentials expired and cannot be refreshed", Duration::from_secs(20))
            .await,
        "{}",
        proxy.logs()
    );
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("yatagarasu_credentials_expiry_seconds{") && l.contains("replica=\"chain\""))
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    assert!(
        gauge.rsplit(' ').next().unwrap().parse::<f64>().unwrap() <= 0.0,
        "{gauge}"
    );
    // No secret in the logs.
    let logs = proxy.logs();
    assert!(!logs.contains("short-secret") && !logs.contains(SECRET_KEY), "{logs}");
}

/// A reload while the credential source is down keeps the running, valid keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_the_credentials_endpoint_is_down_keeps_the_valid_keys() {
    let s3 = keyring_s3().await;
    s3.ring.add("ASIARELOADKEY00001", "reload-secret");
    let endpoint =
        CredentialsEndpoint::start(issued("ASIARELOADKEY00001", "reload-secret", Duration::from_secs(3600))).await;
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let proxy = Proxy::start_clean_with_env(
        &chain_config(&[("chain", &s3.server.endpoint(), "")]),
        &container_env(&endpoint.url, &home_path),
    );
    let url = proxy.url("/files/hello.txt");
    let get = || async {
        let res = client().get(&url).send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    assert_eq!(get().await, (200, "signed by the chain".to_owned()), "{}", proxy.logs());
    // The endpoint goes away for a moment, and the config is reloaded then.
    endpoint.stop();
    proxy.signal("HUP");
    assert!(
        proxy.wait_for_log("config reloaded", Duration::from_secs(30)).await,
        "{}",
        proxy.logs()
    );
    for _ in 0..5 {
        assert_eq!(get().await, (200, "signed by the chain".to_owned()), "{}", proxy.logs());
    }
    let metrics = get_text(proxy.metrics_url("/metrics")).await;
    let gauge = metrics
        .lines()
        .find(|l| l.starts_with("yatagarasu_credentials_expiry_seconds{") && l.contains("replica=\"chain\""))
        .unwrap_or_else(|| panic!("no expiry gauge:\n{metrics}"));
    let secs: f64 = gauge.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs > 3000.0, "{gauge}");
    let logs = proxy.logs();
    assert!(!logs.contains("reload-secret") && !logs.contains("token-of-"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_and_profile_sources_sign_requests() {
    let s3 = s3().await;
    s3.put_object("data", "hello.txt", b"signed by the chain").unwrap();
    let config = chain_config(&[("chain", &s3.endpoint(), "")]);
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let no_imds = ("AWS_EC2_METADATA_DISABLED", "true");

    // Environment variables.
    let proxy = Proxy::start_clean_with_env(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("HOME", &home_path),
            no_imds,
        ],
    );
    assert_eq!(get_text(proxy.url("/files/hello.txt")).await, "signed by the chain");
    drop(proxy);

    // A named profile in a shared credentials file.
    let creds = home.path().join("credentials");
    std::fs::write(
        &creds,
        format!("[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n\n[proxy]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
    )
    .unwrap();
    let creds = creds.to_str().unwrap();
    let env = [
        ("AWS_SHARED_CREDENTIALS_FILE", creds),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        ("AWS_PROFILE", "proxy"),
        ("HOME", &home_path),
        no_imds,
    ];
    let proxy = Proxy::start_clean_with_env(&config, &env);
    assert_eq!(get_text(proxy.url("/files/hello.txt")).await, "signed by the chain");
    // The SDK's own INFO lines at each fetch are not logged.
    let logs = proxy.logs();
    assert!(
        !logs.contains("constructed abstract provider") && !logs.contains("loaded base credentials"),
        "{logs}"
    );

    // `check` names the source, never a secret.
    let out = check(&config, &env);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("main/chain: credentials: AWS default chain"), "{text}");
    assert!(text.contains("shared config/credentials files"), "{text}");
    assert!(!text.contains(SECRET_KEY));
}

#[test]
fn check_names_each_replicas_source() {
    let config = r#"
buckets:
  - name: b
    path_prefix: /b
    s3:
      bucket: x
      endpoint: "http://127.0.0.1:9"
      replicas:
        - { name: fixed, access_key: AKIAFIXED, secret_key: "fixed-secret", session_token: "tok-secret" }
        - { name: public, anonymous: true }
        - { name: other-account, role_arn: "arn:aws:iam::123456789012:role/reader", external_id: "ext-secret" }
"#;
    let out = check(
        config,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/x"),
            ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("b/fixed: credentials: static keys from the config, with a session token"),
        "{text}"
    );
    assert!(text.contains("b/public: credentials: anonymous"), "{text}");
    assert!(
        text.contains("b/other-account: credentials: AWS default chain (would use: web identity")
            && text.contains("then STS AssumeRole arn:aws:iam::123456789012:role/reader"),
        "{text}"
    );
    for secret in ["fixed-secret", "tok-secret", "ext-secret"] {
        assert!(!text.contains(secret), "{text}");
    }
    // Anonymous excludes keys; a token needs keys.
    let bad = r#"
buckets:
  - name: b
    path_prefix: /b
    s3: { bucket: x, anonymous: true, access_key: a, secret_key: s }
  - name: c
    path_prefix: /c
    s3: { bucket: x, session_token: t }
"#;
    let out = check(bad, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("buckets[0].s3.anonymous"), "{err}");
    assert!(err.contains("buckets[1].s3.session_token"), "{err}");
}

/// moto's server mode (PyPI `moto[server]`, installed by scripts/test.sh):
/// a real STS on a loopback port. Killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub async fn start() -> Moto {
        let bin = std::env::var("YATAGARASU_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} (PyPI moto[server]; scripts/test.sh installs it): {e}"));
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let data = format!("{}/moto-api/data.json", moto.url);
        assert!(
            eventually(Duration::from_secs(30), || async {
                client().get(&data).send().await.is_ok_and(|r| r.status() == 200)
            })
            .await,
            "moto_server did not start"
        );
        moto
    }

    /// The roles assumed so far, as moto records them.
    pub async fn assumed_roles_at(url: &str) -> Vec<serde_json::Value> {
        let text = get_text(format!("{url}/moto-api/data.json")).await;
        let data: serde_json::Value = serde_json::from_str(&text).unwrap();
        data["sts"]["AssumedRole"].as_array().cloned().unwrap_or_default()
    }
}

/// A plain TCP front that records every request byte it forwards.
async fn recording_front(backend: SocketAddr) -> (String, Arc<Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_arn_and_web_identity_are_assumed_through_sts_and_the_session_token_goes_upstream() {
    let moto = Moto::start().await;
    let s3 = keyring_s3_with(KeyRing {
        moto: Some(moto.url.clone()),
        ..KeyRing::default()
    })
    .await;
    let (endpoint, sent) = recording_front(s3.server.addr()).await;
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_str().unwrap().to_owned();
    let token_file = home.path().join("token");
    std::fs::write(&token_file, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln").unwrap();
    let base_env = [
        ("AWS_ENDPOINT_URL_STS", moto.url.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials"),
        ("HOME", home_path.as_str()),
    ];

    // role_arn with static base keys, an external id and a session name.
    let role = ", access_key: \"AKIABASEKEY0000001\", secret_key: \"base-secret\", \
                role_arn: \"arn:aws:iam::123456789012:role/reader\", external_id: \"ext-id-42\", \
                session_name: \"yatagarasu-test\"";
    let proxy = Proxy::start_clean_with_env(&chain_config(&[("assumed", &endpoint, role)]), &base_env);
    let res = client().get(proxy.url("/files/hello.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", proxy.logs());
    let roles = Moto::assumed_roles_at(&moto.url).await;
    let assumed = roles
        .iter()
        .find(|r| r["role_arn"] == "arn:aws:iam::123456789012:role/reader")
        .unwrap_or_else(|| panic!("no AssumeRole at STS: {roles:?}"));
    assert_eq!(assumed["external_id"], "ext-id-42");
    assert_eq!(assumed["session_name"], "yatagarasu-test");
    let key = assumed["access_key_id"].as_str().unwrap();
    assert!(s3.ring.seen(key) > 0, "S3 never saw the assumed role's key");
    assert_eq!(s3.ring.seen("AKIABASEKEY0000001"), 0, "the base keys went to S3");
    let request = String::from_utf8_lossy(&sent.lock().unwrap()).into_owned();
    assert!(
        request.contains("X-Amz-Security-Token="),
        "no session token upstream: {request}"
    );
    drop(proxy);

    // Web identity (EKS IRSA): no keys in the config, the chain finds the token file.
    let mut env = base_env.to_vec();
    let token_path = token_file.to_str().unwrap();
    env.extend([
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path),
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
        ("AWS_ROLE_SESSION_NAME", "irsa-session"),
        ("AWS_REGION", "us-east-1"),
    ]);
    let proxy = Proxy::start_clean_with_env(&chain_config(&[("irsa", &endpoint, "")]), &env);
    let res = client().get(proxy.url("/files/hello.txt")).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", proxy.logs());
    let roles = Moto::assumed_roles_at(&moto.url).await;
    let irsa = roles
        .iter()
        .find(|r| r["role_arn"] == "arn:aws:iam::123456789012:role/irsa")
        .unwrap_or_else(|| panic!("no AssumeRoleWithWebIdentity at STS: {roles:?}"));
    assert!(s3.ring.seen(irsa["access_key_id"].as_str().unwrap()) > 0);
}
