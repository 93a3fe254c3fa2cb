//! Serving the composed app: the proxy listener behind the [`edge`] layers,
//! the metrics/admin listener, hot reload on SIGHUP, and a graceful drain on
//! SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::{edge, App};
use crate::reload::Live;

/// Serves `app` on `listener` until SIGTERM or SIGINT (or `shutdown`
/// resolves), then stops accepting, turns `/ready` to 503 and lets in-flight
/// requests finish for up to `grace`. No metrics listener, no reload.
pub async fn serve(
    app: App,
    listener: TcpListener,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(Live::new(app, None), listener, None, grace, shutdown).await
}

/// [`serve`] for a [`Live`] app, with the metrics/admin listener when given,
/// and a reload of the config file on every SIGHUP.
pub async fn run(
    live: Arc<Live>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    // Handlers first: a signal that arrives once the "listening" line is out
    // must find them (SIGHUP would otherwise end the process).
    let reload_task = tokio::spawn(reload_on_sighup(live.clone(), sighup()));
    let term = terminate();
    let app = live.app();
    let service = edge(live.service(), app.metrics.clone(), &app.config.server);
    // TLS (issue 14): certificates loaded now, then watched for rotation.
    let tls = crate::tls::reloaders(&app.config)?;
    drop(app);
    let scheme = crate::tls::scheme(tls.server.is_some());
    tracing::info!("Yatagarasu listening on {scheme}://{addr}");
    let metrics_task = match metrics_listener {
        Some(l) => {
            let maddr = l.local_addr()?;
            let mscheme = crate::tls::scheme(tls.metrics.is_some());
            tracing::info!("metrics listening on {mscheme}://{maddr}");
            let router = crate::admin::router(live.clone());
            let metrics_tls = tls.metrics.clone();
            Some(tokio::spawn(async move {
                let served = match metrics_tls {
                    Some(t) => crate::tls::TlsListener::new(l, t)?.serve(router).await,
                    None => axum::serve(l, router).await,
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "metrics listener failed");
                }
                Ok::<(), std::io::Error>(())
            }))
        }
        None => None,
    };
    let ready_live = live.clone();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = shutdown_signal(term) => {}
            _ = shutdown => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        ready_live.app().ready.start_draining();
        let _ = drained_tx.send(());
    };
    // TCP_NODELAY on every client connection: a streamed body goes out in a
    // write after the headers, which would otherwise wait for the client's
    // delayed ACK (40 ms on Linux).
    // (The TLS listener sets it itself.)
    let make = service.into_make_service_with_connect_info::<SocketAddr>();
    let server = match tls.server.clone() {
        Some(t) => {
            let listener = axum::serve::ListenerExt::tap_io(crate::tls::TlsListener::new(listener, t)?, |_| {});
            let server = axum::serve(listener, make).with_graceful_shutdown(signal);
            tokio::spawn(async move { server.await })
        }
        None => {
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(listener, make).with_graceful_shutdown(signal);
            tokio::spawn(async move { server.await })
        }
    };
    let _ = drained_rx.await;
    // Once the signal fired, the server drains; bound it by the grace period.
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(std::io::Error::other)??,
        Err(_) => tracing::warn!("grace period over: closing the remaining connections"),
    }
    reload_task.abort();
    tls.stop();
    if let Some(task) = metrics_task {
        task.abort();
    }
    live.stop();
    tracing::info!("stopped");
    Ok(())
}

#[cfg(unix)]
type Sighup = std::io::Result<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Sighup = ();

#[cfg(unix)]
fn sighup() -> Sighup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

#[cfg(not(unix))]
fn sighup() -> Sighup {}

async fn reload_on_sighup(live: Arc<Live>, hup: Sighup) {
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
type Terminate = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Terminate = ();

#[cfg(unix)]
fn terminate() -> Terminate {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::terminate()).expect("SIGTERM handler")
}

#[cfg(not(unix))]
fn terminate() -> Terminate {}

#[allow(unused_mut, clippy::let_unit_value)]
async fn shutdown_signal(mut term: Terminate) {
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
