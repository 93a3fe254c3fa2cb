//! [`Capped`]: an axum listener that holds at most so many connections open
//! at once; past that a new connection is closed at once, without a byte.
//!
//! The metrics/admin listener is served by `axum::serve`, which sets no
//! limit and no idle timeout of its own: without a cap, clients opening
//! connections and sending nothing (or stalling a TLS handshake) would take
//! every file descriptor of the process. Under a TLS listener the slot is
//! taken before the handshake and rides inside the TLS stream.
//!
//! ```
//! # async fn f(router: axum::Router) -> std::io::Result<()> {
//! use yatagarasu::server::Capped;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(Capped::new(tcp, 64), router).await
//! # }
//! ```

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that hands out at most `max` connections open at once.
#[derive(Debug)]
pub struct Capped<L> {
    inner: L,
    slots: Arc<Semaphore>,
}

impl<L> Capped<L> {
    /// `inner`, with at most `max` (at least one) connections open at once.
    pub fn new(inner: L, max: usize) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// The listener wrapped.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }
}

impl<L: Listener> Listener for Capped<L> {
    type Io = Slotted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => return (Slotted { io, _slot: slot }, addr),
                // Closed without a word: on a TLS port, bytes written here
                // would reach the client's handshake as garbage.
                Err(_) => tracing::debug!("connection refused: too many open on this listener"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`Capped`] listener, holding its slot until dropped.
#[derive(Debug)]
pub struct Slotted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

impl<IO> Slotted<IO> {
    /// The connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The connection, mutably (to set socket options).
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Slotted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Slotted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
