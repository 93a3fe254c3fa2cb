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
    state: Mutex<State>,
}

/// The files in use, and the last ones refused.
struct State {
    loaded: Files,
    refused: Option<Refusal>,
}

/// Files that did not load (or the error reading them): remembered so that
/// the same refusal is warned about once, not at every file check.
struct Refusal {
    seen: Result<Files, TlsError>,
    warned: bool,
}

/// What made the reloader look at its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The periodic check (`reload_interval_seconds`).
    FileCheck,
    /// `SIGHUP`.
    Sighup,
    /// `POST /admin/reload` ([`request_reload`]).
    Admin,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::FileCheck => "file check",
            Self::Sighup => "SIGHUP",
            Self::Admin => "admin reload",
        }
    }
}

/// What a look at the files did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files are those in use (or those already refused and warned about
    /// by a file check).
    Unchanged,
    /// A new certificate is in use.
    Reloaded,
    /// New files that do not load, seen once by a file check: they may be
    /// half-copied (a certificate written before its key), so they are
    /// looked at again at the next check before being warned about.
    Pending(TlsError),
    /// New files refused (seen by two checks in a row, or asked for by
    /// SIGHUP or the admin endpoint): the current certificate stays.
    Refused(TlsError),
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
            state: Mutex::new(State {
                loaded: files,
                refused: None,
            }),
        }))
    }

    /// The config a new connection uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; a changed and valid certificate replaces the
    /// current one, a bad one is refused and the current one stays. A
    /// refusal is reported once per distinct content ([`Reload`]): files
    /// that a file check finds bad are [`Reload::Pending`] the first time,
    /// [`Reload::Refused`] at the next check if still the same, and
    /// [`Reload::Unchanged`] after that until they change; SIGHUP and the
    /// admin reload always get the answer.
    pub fn reload(&self, trigger: Trigger) -> Reload {
        let read = read_files(&self.config);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, error) = match read {
            Ok(files) if files == state.loaded => {
                state.refused = None;
                return Reload::Unchanged;
            }
            Ok(files) => match build(&self.config, &files) {
                Ok(server) => {
                    super::expiry::loaded(self.name, &self.config.cert_file, &files.cert);
                    self.current.store(Arc::new(server));
                    state.loaded = files;
                    state.refused = None;
                    return Reload::Reloaded;
                }
                Err(e) => (Ok(files), e),
            },
            Err(e) => (Err(e.clone()), e),
        };
        let before = state.refused.take().filter(|r| r.seen == seen);
        let outcome = match (trigger, &before) {
            (Trigger::FileCheck, None) => Reload::Pending(error),
            (Trigger::FileCheck, Some(r)) if r.warned => Reload::Unchanged,
            _ => Reload::Refused(error),
        };
        state.refused = Some(Refusal {
            seen,
            warned: matches!(outcome, Reload::Refused(_)) || before.is_some_and(|r| r.warned),
        });
        outcome
    }

    fn reload_logged(&self, trigger: Trigger) {
        let why = trigger.as_str();
        match self.reload(trigger) {
            Reload::Unchanged => {}
            Reload::Reloaded => tracing::info!(listener = self.name, trigger = why, "TLS certificate reloaded"),
            Reload::Pending(e) => tracing::debug!(
                listener = self.name,
                trigger = why,
                error = %format!("{}.{e}", self.name),
                "new TLS files do not load (yet): looked at again at the next check"
            ),
            Reload::Refused(e) => tracing::warn!(
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
                let trigger = tokio::select! {
                    _ = tokio::time::sleep(interval) => Trigger::FileCheck,
                    _ = hangup => Trigger::Sighup,
                    r = requests.changed() => match r {
                        Ok(()) => Trigger::Admin,
                        Err(_) => Trigger::FileCheck,
                    },
                };
                this.reload_logged(trigger);
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
