//! Helpers for the cache tests: a private `redis-server` child process and
//! an in-process S3 server (s3s-fs, SigV4 checked) as the origin.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use tower::util::BoxCloneService;
use yatagarasu_middleware::object::ObjectRequest;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
use yatagarasu_middleware::FetchError;

/// A `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts one on a free port; a port taken meanwhile (the server exits)
    /// makes it try another.
    pub async fn start() -> Self {
        for _ in 0..10 {
            let mut server = Self {
                port: free_port(),
                child: None,
            };
            if server.spawn().await {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    /// Spawns the server; false if it exited (port taken).
    async fn spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--enable-debug-command",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install -y redis-server)");
        for _ in 0..400 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if self.ping().await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        panic!("redis-server on port {} does not answer", self.port);
    }

    /// Waits (bounded) until the server answers `PING`.
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} does not answer", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(client) = deadpool_redis::redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(Duration::from_millis(500), client.get_multiplexed_async_connection()).await
        else {
            return false;
        };
        deadpool_redis::redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is lost: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port.
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "port {} was taken while redis was down", self.port);
    }

    /// Runs one raw command.
    pub async fn cmd<T: deadpool_redis::redis::FromRedisValue>(&self, cmd: &deadpool_redis::redis::Cmd) -> T {
        let client = deadpool_redis::redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real S3 server for the cache tests: s3s-fs over a temp dir, checking
/// SigV4 on every request (faults are applied only after the signature
/// passed), with a request counter, a gate that holds requests until
/// released, and a failing mode (`503 SlowDown`).
pub struct TestS3 {
    endpoint: String,
    shared: Arc<S3Shared>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct S3Shared {
    requests: AtomicU64,
    failing: AtomicBool,
    waiting: AtomicU64,
    gate: Mutex<Option<tokio::sync::watch::Receiver<bool>>>,
    gate_tx: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
}

pub const BUCKET: &str = "cache-test-bkt";
pub const AK: &str = "cache-test-ak";
pub const SK: &str = "cache-test-sk-0123456789";

impl TestS3 {
    /// Starts the server on a free loopback port with an empty bucket.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(BUCKET)).unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
        let s3 = builder.build();
        let shared = Arc::new(S3Shared::default());
        let state = shared.clone();
        let app = axum::Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
            let mut s3 = s3.clone();
            let state = state.clone();
            async move {
                let is_get = req.method() == http::Method::GET;
                if is_get {
                    state.requests.fetch_add(1, Ordering::SeqCst);
                    let gate = state.gate.lock().unwrap().clone();
                    if let Some(mut gate) = gate {
                        state.waiting.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.wait_for(|open| *open).await;
                        state.waiting.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                let res = match tower::Service::call(&mut s3, req).await {
                    Ok(res) => res.map(Body::new),
                    Err(_) => status_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
                };
                // The signature was checked: a bad one stays a 403.
                if is_get && res.status().is_success() && state.failing.load(Ordering::SeqCst) {
                    return Ok::<_, Infallible>(status_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
                }
                Ok::<_, Infallible>(res)
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            shared,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn bucket(&self) -> rusty_s3::Bucket {
        s3_bucket(Some(&self.endpoint.parse().unwrap()), BUCKET, "us-east-1").unwrap()
    }

    /// The replica in front of this server: a real S3 client signing with SigV4.
    pub fn replica(&self) -> S3Upstream {
        S3Upstream::new("test-s3", self.bucket(), reqwest::Client::new())
            .with_credentials(rusty_s3::Credentials::new(AK, SK))
    }

    /// The replica as a boxed service (the type the tests layer the cache on).
    pub fn service(&self) -> BoxCloneService<ObjectRequest, Response<Body>, FetchError> {
        BoxCloneService::new(self.replica())
    }

    /// Writes an object through the S3 API (a presigned `PUT`).
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) -> String {
        self.put_with(key, body, &[]).await
    }

    /// Writes an object with extra headers (`Cache-Control`, `x-amz-meta-*`);
    /// returns its ETag.
    pub async fn put_with(&self, key: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> String {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(AK, SK);
        let bucket = self.bucket();
        let url = bucket.put_object(Some(&creds), key).sign(Duration::from_secs(600));
        let mut req = reqwest::Client::new().put(url).body(body.into());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        assert!(res.status().is_success(), "PUT {key}: {}", res.status());
        res.headers()["etag"].to_str().unwrap().to_owned()
    }

    /// `GET` requests received (each counted once, held or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// While on, signed `GET`s that would succeed answer `503 SlowDown`.
    pub fn fail(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }

    /// From now on `GET`s wait at a gate until [`release`](Self::release).
    pub fn hold(&self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        *self.shared.gate.lock().unwrap() = Some(rx);
        *self.shared.gate_tx.lock().unwrap() = Some(tx);
    }

    /// Opens the gate: held requests go on, new ones pass.
    pub fn release(&self) {
        *self.shared.gate.lock().unwrap() = None;
        if let Some(tx) = self.shared.gate_tx.lock().unwrap().take() {
            let _ = tx.send(true);
        }
    }

    /// Requests waiting at the gate now.
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::SeqCst)
    }
}

fn status_response(status: StatusCode, code: &str) -> Response<Body> {
    let xml =
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>test</Message></Error>");
    let mut res = Response::new(Body::from(xml));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    res
}

/// Reads a whole body (driving a fill to its end).
pub async fn body_of(res: Response<Body>) -> Bytes {
    axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap()
}

/// The `X-Cache` header.
pub fn x_cache(res: &Response<Body>) -> String {
    res.headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}
