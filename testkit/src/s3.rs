//! A local S3-compatible server (s3s + s3s-fs over a directory) that checks
//! SigV4 signatures, for the demo, the `serve-s3` command, the tests and the
//! bench.
//!
//! The server can be stopped (connections refused, open ones cut) and
//! restarted on the same port; objects can be written straight to disk
//! ([`LocalS3::put_object`]). That is all the binary uses.
//!
//! With the `harness` feature (the default; tests and the bench) faults can be
//! injected for real: answer 500 or `503 SlowDown`, stall (accept and never
//! answer), reset the connection part-way through a body, or hold `GET`s at a
//! gate. The signature is checked first in every mode, as S3 does: a wrongly
//! signed request gets its `403` whatever the fault. Objects can also be
//! written through the S3 API (`LocalS3::put_object_with`, a signed
//! `PutObject` that stores `Content-Type`, `Cache-Control` and
//! `x-amz-meta-*`), and the requests received are counted and kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

mod fidelity;

#[cfg(feature = "harness")]
mod faults;
#[cfg(feature = "harness")]
pub use faults::{Fault, ReceivedRequest};

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the connections share: with the harness, the fault mode, the gate
/// and the record of requests; nothing without it.
#[cfg(feature = "harness")]
type Shared = faults::State;
#[cfg(not(feature = "harness"))]
#[derive(Default)]
struct Shared;

/// A running local S3 server.
pub struct LocalS3 {
    root: PathBuf,
    addr: SocketAddr,
    service: S3Service,
    shared: Arc<Shared>,
    tasks: Option<JoinSet<()>>,
    /// The key pair of [`start`](Self::start), for `put_object_with`.
    #[cfg(feature = "harness")]
    keys: Option<(String, String)>,
}

impl LocalS3 {
    /// Serves the buckets under `root` (one directory per bucket, one file per
    /// key) on `listen` (port 0 picks a free one), requiring SigV4 with this key
    /// pair.
    pub async fn start(root: &Path, listen: SocketAddr, access_key: &str, secret_key: &str) -> std::io::Result<Self> {
        #[allow(unused_mut)]
        let mut server = Self::start_with_auth(root, listen, SimpleAuth::from_single(access_key, secret_key)).await?;
        #[cfg(feature = "harness")]
        {
            server.keys = Some((access_key.to_owned(), secret_key.to_owned()));
        }
        Ok(server)
    }

    /// [`start`](Self::start) with any s3s authentication provider (several
    /// key pairs, keys that change while it runs, a record of the keys used).
    /// Such a server has no key of its own for `put_object_with`.
    pub async fn start_with_auth(
        root: &Path,
        listen: SocketAddr,
        auth: impl s3s::auth::S3Auth + 'static,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut builder = S3ServiceBuilder::new(fidelity::Fidelity::new(fs, root));
        builder.set_auth(auth);
        let mut server = Self {
            root: root.to_path_buf(),
            addr: listen,
            service: builder.build(),
            shared: Arc::default(),
            tasks: None,
            #[cfg(feature = "harness")]
            keys: None,
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
                #[cfg(feature = "harness")]
                shared.connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

#[cfg(feature = "harness")]
async fn handle(
    req: Request<Incoming>,
    service: S3Service,
    shared: Arc<Shared>,
) -> Result<Response<BoxBody>, s3s::HttpError> {
    faults::handle(req, service, &shared).await
}

#[cfg(not(feature = "harness"))]
async fn handle(
    req: Request<Incoming>,
    service: S3Service,
    _shared: Arc<Shared>,
) -> Result<Response<BoxBody>, s3s::HttpError> {
    use http_body_util::BodyExt;
    let res = hyper::service::Service::call(&service, req).await?;
    Ok(res.map(|body| body.boxed_unsync()))
}
