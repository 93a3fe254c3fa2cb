//! [`Capped`]: an axum listener that holds at most so many connections open
//! at once; past that a new connection is closed at once, without a byte.
//! A connection to which nothing has been written for the idle timeout is
//! closed too.
//!
//! The metrics/admin listener is served by `axum::serve`, which sets no
//! limit and no idle timeout of its own: without a cap, clients opening
//! connections and sending nothing (or stalling a TLS handshake) would take
//! every file descriptor of the process; with a cap and no timeout, they
//! would keep the scrapers out for as long as they held their connections.
//! The timeout counts from the last byte *written*: an idle keep-alive
//! connection, a request trickled in a byte at a time (no answer is ever
//! written) and a client that stops reading its answer all run it out,
//! while a scraper gets an answer each scrape. Under a TLS listener the
//! slot is taken before the handshake and rides inside the TLS stream.
//!
//! ```
//! # async fn f(router: axum::Router) -> std::io::Result<()> {
//! use std::time::Duration;
//! use yatagarasu::server::Capped;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! axum::serve(Capped::new(tcp, 64, Duration::from_secs(60)), router).await
//! # }
//! ```

use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// A listener that hands out at most `max` connections open at once, each
/// closed when nothing has been written to it for `idle`.
#[derive(Debug)]
pub struct Capped<L> {
    inner: L,
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl<L> Capped<L> {
    /// `inner`, with at most `max` (at least one) connections open at once,
    /// each closed after `idle` without a byte written to it.
    pub fn new(inner: L, max: usize, idle: Duration) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            idle,
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
                Ok(slot) => {
                    let deadline = Box::pin(tokio::time::sleep(self.idle));
                    let idle = self.idle;
                    return (
                        Slotted {
                            io,
                            _slot: slot,
                            idle,
                            deadline,
                        },
                        addr,
                    );
                }
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

/// A connection of a [`Capped`] listener, holding its slot until dropped;
/// reads and writes fail with `TimedOut` once nothing has been written to
/// it for the listener's idle timeout (hyper then closes it).
#[derive(Debug)]
pub struct Slotted<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
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

impl<IO> Slotted<IO> {
    /// `TimedOut` once the idle deadline has passed (registering the waker
    /// otherwise), for an operation that is pending.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "nothing written to the connection within its idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// What a write returned; bytes written push the idle deadline back.
    fn wrote(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        match r {
            Poll::Ready(Ok(n)) if n > 0 => {
                let next = Instant::now() + self.idle;
                self.deadline.as_mut().reset(next);
                Poll::Ready(Ok(n))
            }
            Poll::Pending => self.pending(cx),
            other => other,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Slotted<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Pending => self.pending(cx),
            ready => ready,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Slotted<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(cx, r)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::Capped;

    const IDLE: Duration = Duration::from_millis(300);

    async fn serve() -> std::net::SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(Capped::new(tcp, 4, IDLE), app).await });
        addr
    }

    /// Reads until the server closes; `None` if it has not within 20 s
    /// (an upper bound, not a timing assertion).
    async fn until_closed(c: &mut TcpStream) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got))
            .await
            .ok()
            .map(|r| r.map(|_| got).unwrap_or_default())
    }

    #[tokio::test]
    async fn a_silent_or_trickling_connection_is_closed_after_the_idle_timeout() {
        let addr = serve().await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            until_closed(&mut silent).await,
            Some(Vec::new()),
            "a silent connection was kept"
        );

        // A request trickled in, a byte per third of the timeout: no
        // answer is ever written, so the trickle does not keep it.
        let mut trickle = TcpStream::connect(addr).await.unwrap();
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        trickle.write_all(head).await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                tokio::time::sleep(IDLE / 3).await;
                if trickle.write_all(b"a").await.is_err() {
                    return;
                }
                let mut b = [0u8; 64];
                if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), trickle.read(&mut b)).await {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a trickled request kept its connection");
    }

    #[tokio::test]
    async fn a_connection_that_gets_answers_stays_open_past_the_idle_timeout() {
        let addr = serve().await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        // Six answers a half timeout apart: three timeouts in all.
        for _ in 0..6 {
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = c.read(&mut buf).await.unwrap();
            assert!(
                n > 0 && buf.starts_with(b"HTTP/1.1 200"),
                "{:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            tokio::time::sleep(IDLE / 2).await;
        }
        // Then silence: closed.
        assert_eq!(until_closed(&mut c).await, Some(Vec::new()));
    }
}
