//! [`TlsReloader`]: a listener's current certificate, read again on SIGHUP,
//! on an admin reload and when the files change; [`reloaders`] for a config.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{build, read_files, Files, TlsError};
use crate::config::TlsConfig;

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
        super::expiry::loaded(name, &config.cert_file, &files.cert);
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
        super::expiry::loaded(self.name, &self.config.cert_file, &files.cert);
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
