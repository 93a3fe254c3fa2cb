//! HTTPS listeners (rustls) whose certificate is reloaded without a restart.
//!
//! [`TlsListener`] wraps a bound TCP listener: connections are accepted and
//! their handshakes run concurrently (a slow client never holds up another),
//! and the finished TLS streams are handed to `axum::serve`. ALPN offers `h2`
//! and `http/1.1`; the lowest version is TLS 1.2 or 1.3 (`min_version`);
//! with `client_ca_file` every client must present a certificate signed by
//! that CA (mTLS).
//!
//! [`TlsReloader`] holds the current `rustls::ServerConfig`. Each new
//! connection takes the config current when it arrives, so connections
//! already open keep their session. The files are read again on SIGHUP, on
//! `POST /admin/reload` ([`request_reload`]) and when their content changes
//! (checked every `reload_interval_seconds`, which covers cert-manager
//! rewriting a mounted Secret in place). A new certificate that does not load
//! (unreadable, not PEM, key not matching) is refused with a log line and the
//! old one stays.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use crate::config::TlsConfig;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a TLS block cannot be used; `key` is the offending key under the block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct TlsError {
    /// `cert_file`, `key_file`, `min_version` or `client_ca_file`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

/// The crypto provider every TLS config of the process uses (the one reqwest
/// already links), so no process-wide default has to be installed.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Every problem of a TLS block, as `(key, message)`: used by config validation.
pub fn check(config: &TlsConfig) -> Vec<(String, String)> {
    match load(config) {
        Ok(_) => Vec::new(),
        Err(e) => vec![(e.key.to_owned(), e.message)],
    }
}

/// The certificates of a PEM CA bundle (at least one), or why not.
pub fn read_ca_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read '{path}': {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("'{path}' is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("'{path}' holds no PEM certificate"));
    }
    Ok(certs)
}

/// The files of a TLS block, read at one moment.
#[derive(Clone, PartialEq, Eq)]
struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read_files(config: &TlsConfig) -> Result<Files, TlsError> {
    let read = |key: &'static str, path: &str| {
        if path.trim().is_empty() {
            return Err(TlsError::new(key, "is required"));
        }
        std::fs::read(Path::new(path)).map_err(|e| TlsError::new(key, format!("cannot read '{path}': {e}")))
    };
    Ok(Files {
        cert: read("cert_file", &config.cert_file)?,
        key: read("key_file", &config.key_file)?,
        client_ca: match &config.client_ca_file {
            Some(path) => Some(read("client_ca_file", path)?),
            None => None,
        },
    })
}

fn load(config: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let files = read_files(config)?;
    build(config, &files)
}

fn build(config: &TlsConfig, files: &Files) -> Result<ServerConfig, TlsError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match config.min_version.trim() {
        "1.2" | "" => &[&rustls::version::TLS13, &rustls::version::TLS12],
        "1.3" => &[&rustls::version::TLS13],
        other => {
            return Err(TlsError::new(
                "min_version",
                format!("'{other}' is not supported (use \"1.2\" or \"1.3\")"),
            ))
        }
    };
    let certs = CertificateDer::pem_slice_iter(&files.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new("cert_file", format!("'{}' is not PEM: {e}", config.cert_file)))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            "cert_file",
            format!("'{}' holds no PEM certificate", config.cert_file),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|e| {
        TlsError::new(
            "key_file",
            format!("'{}' holds no usable private key: {e}", config.key_file),
        )
    })?;
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::new("min_version", e.to_string()))?;
    let builder = match &files.client_ca {
        Some(pem) => {
            let path = config.client_ca_file.as_deref().unwrap_or_default();
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError::new("client_ca_file", format!("'{path}' is not PEM: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(cas);
            if added == 0 {
                return Err(TlsError::new("client_ca_file", format!("'{path}' holds no usable CA")));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::new("client_ca_file", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::new("key_file", format!("does not match the certificate: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// Asks every [`TlsReloader`] of the process to read its files again (the
/// admin reload calls this).
pub fn request_reload() {
    RELOADS.send_modify(|n| *n = n.wrapping_add(1));
}

static RELOADS: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// The current server config of one listener, and how to renew it.
pub struct TlsReloader {
    name: &'static str,
    config: TlsConfig,
    current: ArcSwap<ServerConfig>,
    loaded: Mutex<Files>,
}

impl std::fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsReloader")
            .field("name", &self.name)
            .field("cert_file", &self.config.cert_file)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    /// Loads the block `name` (`server.tls`, `metrics.tls`); the error names the key.
    pub fn new(name: &'static str, config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let files = read_files(config)?;
        let server = build(config, &files)?;
        Ok(Arc::new(Self {
            name,
            config: config.clone(),
            current: ArcSwap::from_pointee(server),
            loaded: Mutex::new(files),
        }))
    }

    /// The config a new connection uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; a changed and valid certificate replaces the
    /// current one (`Ok(true)`), unchanged files do nothing (`Ok(false)`), a
    /// bad one is refused and the current one stays (`Err`).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.config)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == files {
            return Ok(false);
        }
        let server = build(&self.config, &files)?;
        self.current.store(Arc::new(server));
        *loaded = files;
        Ok(true)
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(true) => tracing::info!(listener = self.name, trigger = why, "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                listener = self.name,
                trigger = why,
                error = %format!("{}.{e}", self.name),
                "new TLS certificate refused: the current one stays"
            ),
        }
    }

    /// Watches for a new certificate: file changes (polled), SIGHUP and
    /// [`request_reload`]. Stops when the handle is aborted.
    pub fn spawn_watch(self: &Arc<Self>) -> JoinHandle<()> {
        let this = self.clone();
        let interval = Duration::from_secs(this.config.reload_interval_seconds.max(1));
        tokio::spawn(async move {
            let mut requests = RELOADS.subscribe();
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => {
                            h.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                let why = tokio::select! {
                    _ = tokio::time::sleep(interval) => "file check",
                    _ = hangup => "SIGHUP",
                    r = requests.changed() => match r {
                        Ok(()) => "admin reload",
                        Err(_) => "file check",
                    },
                };
                this.reload_logged(why);
            }
        })
    }
}

/// A TCP listener that hands out TLS streams once their handshake is done.
/// Handshakes run in their own tasks; failed ones are logged at debug level.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accept_task: JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS on `listener` with `reloader`'s current config.
    pub fn new(listener: TcpListener, reloader: Arc<TlsReloader>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let accept_task = tokio::spawn(accept_loop(listener, reloader, tx));
        Ok(Self {
            local,
            ready,
            accept_task,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    reloader: Arc<TlsReloader>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait, as axum does.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(reloader.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The scheme a listener serves: `https` with TLS.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

impl TlsListener {
    /// Serves `router` on this listener until the process stops (the metrics listener).
    pub async fn serve(self, router: axum::Router) -> std::io::Result<()> {
        axum::serve(self, router).await
    }
}

/// The reloaders of a config's listeners and their watch tasks.
#[derive(Debug, Default)]
pub struct Reloaders {
    /// `server.tls`.
    pub server: Option<Arc<TlsReloader>>,
    /// `metrics.tls`.
    pub metrics: Option<Arc<TlsReloader>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Reloaders {
    /// Stops watching the files.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Loads the TLS blocks of `config` and starts watching them; the error names
/// the key (`server.tls.cert_file: ...`).
pub fn reloaders(config: &crate::config::Config) -> std::io::Result<Reloaders> {
    let mut out = Reloaders::default();
    for (name, block) in [("server.tls", &config.server.tls), ("metrics.tls", &config.metrics.tls)] {
        let Some(block) = block else { continue };
        let reloader = TlsReloader::new(name, block)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{name}.{e}")))?;
        out.tasks.push(reloader.spawn_watch());
        if name == "server.tls" {
            out.server = Some(reloader);
        } else {
            out.metrics = Some(reloader);
        }
    }
    Ok(out)
}
