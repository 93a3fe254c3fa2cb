//! The process signals: SIGHUP reloads the config, SIGTERM/SIGINT start
//! the graceful drain.

use std::sync::Arc;

use crate::reload::Live;

#[cfg(unix)]
pub(super) type Sighup = std::io::Result<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(super) type Sighup = ();

#[cfg(unix)]
pub(super) fn sighup() -> Sighup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
pub(super) fn sighup() -> Sighup {}

pub(super) async fn reload_on_sighup(live: Arc<Live>, hup: Sighup) {
    #[cfg(unix)]
    {
        let mut hup = match hup {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: reload with POST /admin/reload only");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            let _ = live.reload_from_file().await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (live, hup);
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
pub(super) type Terminate = tokio::signal::unix::Signal;
#[cfg(not(unix))]
pub(super) type Terminate = ();

#[cfg(unix)]
pub(super) fn terminate() -> Terminate {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::terminate()).expect("SIGTERM handler")
}

#[cfg(not(unix))]
pub(super) fn terminate() -> Terminate {}

#[allow(unused_mut, clippy::let_unit_value)]
pub(super) async fn shutdown_signal(mut term: Terminate) {
    #[cfg(unix)]
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    #[cfg(not(unix))]
    {
        let _ = term;
        let _ = tokio::signal::ctrl_c().await;
    }
}
