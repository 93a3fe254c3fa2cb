//! Helpers for the cache tests: a private `redis-server` child process and
//! an in-process S3 server (s3s-fs, SigV4 checked) as the origin, both from
//! the workspace's test kit (`testkit/`); what is here knows the middleware
//! (the replica in front of the server).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::Response;
use tower::util::BoxCloneService;
use yatagarasu_middleware::object::ObjectRequest;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
use yatagarasu_middleware::FetchError;
pub use yatagarasu_testkit::redis::Redis;
use yatagarasu_testkit::s3::{Fault, LocalS3};

/// A `redis-server` on a free loopback port that allows `DEBUG SLEEP`,
/// killed on drop.
pub fn redis_server() -> Redis {
    Redis::builder().debug_command().start()
}

/// Raw commands on a [`Redis`].
pub trait RedisCmd {
    /// Runs one raw command.
    fn cmd<T: deadpool_redis::redis::FromRedisValue>(
        &self,
        cmd: &deadpool_redis::redis::Cmd,
    ) -> impl Future<Output = T>;
}

impl RedisCmd for Redis {
    async fn cmd<T: deadpool_redis::redis::FromRedisValue>(&self, cmd: &deadpool_redis::redis::Cmd) -> T {
        let client = deadpool_redis::redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }
}

/// A real S3 server for the cache tests: s3s-fs over a temp dir, checking
/// SigV4 on every request (faults are applied only after the signature
/// passed), with a `GET` counter, a gate that holds `GET`s until released,
/// and a failing mode (`503 SlowDown`).
pub struct TestS3 {
    server: LocalS3,
    endpoint: String,
    _dir: tempfile::TempDir,
}

pub const BUCKET: &str = "cache-test-bkt";
pub const AK: &str = "cache-test-ak";
pub const SK: &str = "cache-test-sk-0123456789";

impl TestS3 {
    /// Starts the server on a free loopback port with an empty bucket.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let server = LocalS3::start(dir.path(), any, AK, SK).await.unwrap();
        server.create_bucket(BUCKET).unwrap();
        Self {
            endpoint: server.endpoint(),
            server,
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

    /// Writes an object through the S3 API (a signed `PutObject`).
    pub async fn put(&self, key: &str, body: impl Into<Bytes>) -> String {
        self.put_with(key, body, &[]).await
    }

    /// Writes an object with extra headers (`Cache-Control`, `x-amz-meta-*`);
    /// returns its ETag.
    pub async fn put_with(&self, key: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> String {
        self.server
            .put_object_with(BUCKET, key, body, headers)
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"))
    }

    /// `GET` requests received (each counted once, held or not).
    pub fn requests(&self) -> u64 {
        self.server.gets()
    }

    /// While on, signed `GET`s that would succeed answer `503 SlowDown`.
    pub fn fail(&self, on: bool) {
        self.server
            .set_fault(if on { Fault::SlowDownGets } else { Fault::None });
    }

    /// From now on `GET`s wait at a gate until [`release`](Self::release).
    pub fn hold(&self) {
        self.server.hold();
    }

    /// Opens the gate: held requests go on, new ones pass.
    pub fn release(&self) {
        self.server.release();
    }

    /// Requests waiting at the gate now.
    pub fn waiting(&self) -> u64 {
        self.server.waiting()
    }
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
