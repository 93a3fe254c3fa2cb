//! [`TlsListener`]: accepts connections from a listener, runs their
//! handshakes concurrently, and hands the TLS streams to `axum::serve`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;

use super::TlsReloader;

/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that hands out TLS streams once their handshake is done.
/// Handshakes run in their own tasks; failed ones are logged at debug level.
/// It takes connections from any axum listener (`IO` is its connection
/// type): under a [`Capped`](crate::server::Capped) one, a connection holds
/// its slot from before its handshake until it closes.
pub struct TlsListener<IO = TcpStream> {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<IO>, SocketAddr)>,
    accept_task: JoinHandle<()>,
}

impl<IO> TlsListener<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves TLS on `listener` with `reloader`'s current config.
    pub fn new<L>(listener: L, reloader: Arc<TlsReloader>) -> std::io::Result<Self>
    where
        L: Listener<Io = IO, Addr = SocketAddr>,
    {
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

impl<IO> Drop for TlsListener<IO> {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop<L, IO>(mut listener: L, reloader: Arc<TlsReloader>, tx: mpsc::Sender<(TlsStream<IO>, SocketAddr)>)
where
    L: Listener<Io = IO, Addr = SocketAddr>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    loop {
        // Out of file descriptors and the like: the listener waits, as axum does.
        let (io, peer) = listener.accept().await;
        let acceptor = tokio_rustls::TlsAcceptor::from(reloader.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
}

impl<IO> Listener for TlsListener<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Io = TlsStream<IO>;
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

impl<IO> TlsListener<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Serves `router` on this listener until the process stops (the metrics listener).
    pub async fn serve(self, router: axum::Router) -> std::io::Result<()> {
        axum::serve(self, router).await
    }
}
