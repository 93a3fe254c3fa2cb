//! A local S3-compatible server (s3s + s3s-fs over a directory) that checks
//! SigV4 signatures, for the demo, the `serve-s3` command and the tests.
//!
//! Faults can be injected for real: the server can be stopped (connections
//! refused, open ones cut) and restarted on the same port, answer 500 or
//! `503 SlowDown`, stall (accept and never answer), or reset the connection
//! part-way through a body. The signature is checked first in every mode, as
//! S3 does: a wrongly signed request gets its `403` whatever the fault.
//!
//! Objects can be written straight to disk ([`LocalS3::put_object`]) or
//! through the S3 API ([`LocalS3::put_object_with`], a signed `PutObject`
//! that stores `Content-Type`, `Cache-Control` and `x-amz-meta-*`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serves normally.
    #[default]
    None,
    /// Answers every correctly signed request with `500 InternalError`.
    Error500,
    /// Answers every correctly signed request with `503 SlowDown`.
    SlowDown,
    /// Never answers a correctly signed request.
    Stall,
    /// Sends the headers and this many body bytes, then resets the connection.
    ResetAfter(u64),
    /// Sends the headers and this many body bytes, then sends nothing more
    /// (the connection stays open): a body that stalls mid-way.
    StallAfter(u64),
    /// Answers the next this many requests with `500 InternalError` (after
    /// their signature check), then serves normally (the mode turns to
    /// [`Fault::None`]).
    FailNext(u32),
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A running local S3 server.
pub struct LocalS3 {
    root: PathBuf,
    addr: SocketAddr,
    service: S3Service,
    shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
    access_key: String,
    secret_key: String,
}

#[derive(Default)]
struct Shared {
    fault: Mutex<Fault>,
    requests: AtomicU64,
    received: Mutex<std::collections::VecDeque<ReceivedRequest>>,
}

/// How many requests [`LocalS3::received`] keeps (the newest).
const RECEIVED_KEPT: usize = 256;

/// A request as the server received it, before the signature check: what a
/// client (the proxy) really sent upstream.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The method.
    pub method: http::Method,
    /// The path and query, as sent.
    pub uri: http::Uri,
    /// Every header, as sent.
    pub headers: http::HeaderMap,
}

impl LocalS3 {
    /// Serves the buckets under `root` (one directory per bucket, one file per
    /// key) on `listen` (port 0 picks a free one), requiring SigV4 with this key
    /// pair.
    pub async fn start(root: &Path, listen: SocketAddr, access_key: &str, secret_key: &str) -> std::io::Result<Self> {
        let mut server = Self::start_with_auth(root, listen, SimpleAuth::from_single(access_key, secret_key)).await?;
        server.access_key = access_key.to_owned();
        server.secret_key = secret_key.to_owned();
        Ok(server)
    }

    /// [`start`](Self::start) with any s3s authentication provider (several
    /// key pairs, keys that change while it runs, a record of the keys used).
    /// Such a server has no key of its own for [`put_object_with`](Self::put_object_with).
    pub async fn start_with_auth(
        root: &Path,
        listen: SocketAddr,
        auth: impl s3s::auth::S3Auth + 'static,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(auth);
        let mut server = Self {
            root: root.to_path_buf(),
            addr: listen,
            service: builder.build(),
            shared: Arc::default(),
            tasks: None,
            access_key: String::new(),
            secret_key: String::new(),
        };
        server.start_listening().await?;
        Ok(server)
    }

    async fn start_listening(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        let service = self.service.clone();
        let shared = self.shared.clone();
        tasks.spawn(accept_loop(listener, service, shared));
        self.tasks = Some(tasks);
        Ok(())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding the buckets.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes an object (creating its bucket).
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) -> std::io::Result<()> {
        let path = self.root.join(bucket).join(key);
        std::fs::create_dir_all(path.parent().expect("has a parent"))?;
        std::fs::write(path, body)
    }

    /// Writes an object through the S3 API: a SigV4-signed `PutObject` with
    /// `headers` (lowercase names: `content-type`, `cache-control`,
    /// `x-amz-meta-*`, … — all signed), stored as S3 stores them. Creates the
    /// bucket. Fails unless the server answers 2xx.
    pub async fn put_object_with(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<()> {
        use rusty_s3::S3Action;
        self.create_bucket(bucket)?;
        let endpoint: url::Url = self.endpoint().parse().map_err(std::io::Error::other)?;
        let s3 = rusty_s3::Bucket::new(
            endpoint,
            rusty_s3::UrlStyle::Path,
            bucket.to_owned(),
            "us-east-1".to_owned(),
        )
        .map_err(std::io::Error::other)?;
        let creds = rusty_s3::Credentials::new(self.access_key.clone(), self.secret_key.clone());
        let mut action = s3.put_object(Some(&creds), key);
        for (name, value) in headers {
            action.headers_mut().insert(name.to_ascii_lowercase(), *value);
        }
        let url = action.sign(std::time::Duration::from_secs(60));
        let mut req = reqwest::Client::new().put(url).body(body.into());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.map_err(|e| std::io::Error::other(e.without_url()))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(std::io::Error::other(format!("PutObject answered {status}: {text}")));
        }
        Ok(())
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))
    }

    /// Sets the fault mode (applies to new requests).
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().expect("not poisoned") = fault;
    }

    /// Requests received since start (every fault mode counts).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The last requests received (up to 256, oldest first), in every fault
    /// mode, signed correctly or not.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared
            .received
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.tasks.is_some()
    }

    /// Stops listening and cuts every open connection, like a killed process.
    pub async fn stop(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        if self.tasks.is_none() {
            self.start_listening().await?;
        }
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, service: S3Service, shared: Arc<Shared>) {
    // Connections live in this set: dropping it (on stop) aborts them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((socket, _)) = accepted else { continue };
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, service.clone(), shared.clone()));
                    let _ = ConnBuilder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    service: S3Service,
    shared: Arc<Shared>,
) -> Result<Response<BoxBody>, s3s::HttpError> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    {
        let mut received = shared.received.lock().expect("not poisoned");
        if received.len() == RECEIVED_KEPT {
            received.pop_front();
        }
        received.push_back(ReceivedRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        });
    }
    let fault = {
        let mut mode = shared.fault.lock().expect("not poisoned");
        let now = *mode;
        match now {
            Fault::FailNext(0) => {
                *mode = Fault::None;
                Fault::None
            }
            Fault::FailNext(n) => {
                *mode = if n > 1 { Fault::FailNext(n - 1) } else { Fault::None };
                now
            }
            _ => now,
        }
    };
    if matches!(
        fault,
        Fault::Error500 | Fault::SlowDown | Fault::Stall | Fault::FailNext(_)
    ) {
        // The signature first, as S3 does: s3s checks it before the operation;
        // a refusal passes through, any other answer is replaced by the fault.
        let res = hyper::service::Service::call(&service, req).await?;
        if matches!(res.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let (parts, body) = res.into_parts();
            return Ok(Response::from_parts(parts, body.boxed_unsync()));
        }
        drop(res);
        return match fault {
            Fault::Error500 | Fault::FailNext(_) => {
                Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"))
            }
            Fault::SlowDown => Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")),
            _ => match std::future::pending::<std::convert::Infallible>().await {},
        };
    }
    let res = hyper::service::Service::call(&service, req).await?;
    let (parts, body) = res.into_parts();
    let body: BoxBody = match fault {
        Fault::ResetAfter(limit) | Fault::StallAfter(limit) => {
            let reset = matches!(fault, Fault::ResetAfter(_));
            let mut sent = 0u64;
            let hit = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let hit_at_end = hit.clone();
            let stream = http_body_util::BodyDataStream::new(body)
                .map(move |chunk| {
                    let chunk = chunk?;
                    if sent + chunk.len() as u64 > limit {
                        let keep = (limit - sent) as usize;
                        sent = limit;
                        hit.store(true, Ordering::Relaxed);
                        return Ok(chunk.slice(..keep));
                    }
                    sent += chunk.len() as u64;
                    Ok(chunk)
                })
                .take_while(|r: &Result<Bytes, Box<dyn std::error::Error + Send + Sync>>| {
                    std::future::ready(!r.as_ref().is_ok_and(|c| c.is_empty()))
                });
            // After the limit: an error (hyper resets the connection) or silence.
            // A reset comes at the limit or at the end; a stall only at the limit.
            let after = futures_util::stream::once(async move {
                if reset {
                    return Some(Err::<Bytes, Box<dyn std::error::Error + Send + Sync>>(
                        "injected reset".into(),
                    ));
                }
                if hit_at_end.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
                None
            })
            .filter_map(std::future::ready);
            let stream = stream.chain(after);
            http_body_util::StreamBody::new(stream.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync()
        }
        _ => body.boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
}

fn error_response(status: StatusCode, code: &str) -> Response<BoxBody> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let body = http_body_util::Full::new(Bytes::from(xml))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res
}
