//! Lingering close: a connection the server ends is shut down for writing,
//! then read (and the bytes dropped) until the client closes its side or
//! [`LINGER`] passes, and only then closed.
//!
//! A socket closed while unread bytes sit in its receive queue (a request
//! body nobody read, a pipelined request, an HTTP/2 client's
//! `WINDOW_UPDATE`s during a drain) makes the kernel send a reset instead of
//! a FIN, and a reset makes the client's kernel drop what it received but the
//! client has not read yet: the tail of the last response is lost although
//! it was all written. nginx does the same (`lingering_close`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a closed connection is read, at most, for the client's FIN.
pub(super) const LINGER: Duration = Duration::from_secs(5);

/// A second handle on an accepted socket, kept while the connection is
/// served, for [`Linger::close`] once the server's handle is gone.
pub(super) struct Linger(std::os::fd::OwnedFd);

impl Linger {
    /// Duplicates the socket's descriptor; `None` when the process is out of
    /// descriptors (the connection then closes as before).
    pub(super) fn of(tcp: &tokio::net::TcpStream) -> Option<Self> {
        use std::os::fd::AsFd;
        tcp.as_fd().try_clone_to_owned().ok().map(Self)
    }

    /// Once the connection's own handle is dropped: shuts the socket down
    /// for writing (a FIN after whatever is still queued), reads until the
    /// client's FIN, an error or [`LINGER`], then closes it.
    pub(super) async fn close(self) {
        let std = std::net::TcpStream::from(self.0);
        // The descriptor shares the accepted socket's file status flags
        // (non-blocking), but set it anyway: tokio requires it.
        if std.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(mut tcp) = tokio::net::TcpStream::from_std(std) else {
            return;
        };
        let _ = tcp.shutdown().await;
        let mut sink = [0u8; 4096];
        let drained = async {
            while let Ok(n) = tcp.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drained).await;
    }
}
