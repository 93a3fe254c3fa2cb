//! Serving the composed app, with a graceful drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::App;

/// Serves `app` on `listener` until SIGTERM or SIGINT (or `shutdown`
/// resolves), then stops accepting, turns `/ready` to 503 and lets in-flight
/// requests finish for up to `grace`.
pub async fn serve(
    app: App,
    listener: TcpListener,
    grace: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!("Yatagarasu listening on http://{addr}");
    let health_tasks = app.spawn_health_checks();
    let ready = app.ready.clone();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = shutdown => {}
        }
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        ready.start_draining();
        let _ = drained_tx.send(());
    };
    let server = axum::serve(listener, app.router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(signal);
    let server = tokio::spawn(async move { server.await });
    let _ = drained_rx.await;
    // Once the signal fired, the server drains; bound it by the grace period.
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(std::io::Error::other)??,
        Err(_) => tracing::warn!("grace period over: closing the remaining connections"),
    }
    for task in health_tasks {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
