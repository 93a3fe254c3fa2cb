//! Helpers for the cache tests: a private `redis-server` child process, a
//! counting in-memory upstream, and an in-process S3 (s3s-fs).

#![allow(dead_code)]

use std::collections::HashMap;
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
    pub async fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
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
        self.child = Some(child);
        self.wait_ready().await;
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
        self.spawn().await;
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

/// An object the fake upstream serves.
#[derive(Clone)]
pub struct FakeObject {
    pub body: Bytes,
    pub etag: &'static str,
    pub cache_control: Option<&'static str>,
    pub status: StatusCode,
    /// Stream the body in 1 KiB frames.
    pub chunked: bool,
}

impl FakeObject {
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            etag: "\"etag-1\"",
            cache_control: None,
            status: StatusCode::OK,
            chunked: false,
        }
    }
}

pub const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";

/// An in-memory upstream that counts its calls and can be made to fail.
#[derive(Clone, Default)]
pub struct FakeUpstream {
    objects: Arc<Mutex<HashMap<String, FakeObject>>>,
    pub calls: Arc<AtomicU64>,
    pub failing: Arc<AtomicBool>,
    delay: Arc<Mutex<Duration>>,
}

impl FakeUpstream {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&self, key: &str, obj: FakeObject) {
        self.objects.lock().unwrap().insert(key.to_owned(), obj);
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn service(&self) -> BoxCloneService<ObjectRequest, Response<Body>, FetchError> {
        let this = self.clone();
        BoxCloneService::new(tower::service_fn(move |req: ObjectRequest| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let delay = *this.delay.lock().unwrap();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if this.failing.load(Ordering::SeqCst) {
                    return Err(FetchError::NoReplica);
                }
                let obj = this.objects.lock().unwrap().get(req.key()).cloned();
                let Some(obj) = obj else {
                    let mut res = Response::new(Body::empty());
                    *res.status_mut() = StatusCode::NOT_FOUND;
                    return Ok(res);
                };
                let body = if obj.chunked {
                    let chunks: Vec<Result<Bytes, std::io::Error>> =
                        obj.body.chunks(1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
                    Body::from_stream(futures_util::stream::iter(chunks))
                } else {
                    Body::from(obj.body.clone())
                };
                let mut res = Response::new(body);
                *res.status_mut() = obj.status;
                let h = res.headers_mut();
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(obj.body.len()));
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                h.insert(header::ETAG, HeaderValue::from_static(obj.etag));
                h.insert(header::LAST_MODIFIED, HeaderValue::from_static(LAST_MODIFIED));
                if let Some(cc) = obj.cache_control {
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
                }
                Ok(res)
            }
        }))
    }
}

/// An in-process S3 (s3s-fs) serving `root/bucket/key` files, with SigV4
/// auth for `AK`/`SK`. Returns its endpoint.
pub async fn start_s3(root: &std::path::Path) -> String {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(AK, SK));
    let s3 = builder.build();
    let app = axum::Router::new().fallback_service(tower::service_fn(move |req: axum::extract::Request| {
        let mut s3 = s3.clone();
        async move {
            let res = match tower::Service::call(&mut s3, req).await {
                Ok(res) => res.map(Body::new),
                Err(_) => {
                    let mut res = Response::new(Body::empty());
                    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    res
                }
            };
            Ok::<_, Infallible>(res)
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

pub const AK: &str = "cache-test-ak";
pub const SK: &str = "cache-test-sk-0123456789";

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
