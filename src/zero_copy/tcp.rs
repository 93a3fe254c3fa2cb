//! A client TCP connection that sends placed bodies with `sendfile(2)`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::net::{SendAncillaryBuffer, SendFlags};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::regions;

/// Slices shorter than this are copied even from a placed body: one
/// syscall with the bytes before them beats two. Above HTTP/2's usual
/// frame size (16 KiB), so that an h2c answer keeps one `writev` per frame.
pub(super) const MIN_SENDFILE: usize = 32 * 1024;

/// A [`TcpStream`] whose writes send any slice lying in a placed body
/// (see [`MemfdPlacement`](super::MemfdPlacement)) with `sendfile(2)`, and
/// the bytes before it (a response head) with `MSG_MORE`, so that both
/// leave in full segments.
#[derive(Debug)]
pub struct SendfileTcp {
    inner: TcpStream,
}

impl SendfileTcp {
    /// Wraps an accepted connection.
    pub fn new(inner: TcpStream) -> Self {
        Self { inner }
    }

    /// Runs `send` once the socket is writable, until it does not block.
    fn poll_send(&self, cx: &mut Context<'_>, mut send: impl FnMut() -> io::Result<usize>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, &mut send) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

/// Where `buf` lies in a placed body, when it is worth a `sendfile`.
fn placed(buf: &[u8]) -> Option<(std::sync::Arc<std::fs::File>, u64)> {
    if buf.len() < MIN_SENDFILE {
        return None;
    }
    regions::find(buf)
}

impl AsyncRead for SendfileTcp {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileTcp {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match placed(buf) {
            Some((file, mut offset)) => self.poll_send(cx, || {
                Ok(rustix::fs::sendfile(&self.inner, &*file, Some(&mut offset), buf.len())?)
            }),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some((at, (file, offset))) = bufs.iter().enumerate().find_map(|(i, b)| placed(b).map(|p| (i, p))) else {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        };
        if at == 0 {
            let len = bufs[0].len();
            let mut offset = offset;
            return self.poll_send(cx, || {
                Ok(rustix::fs::sendfile(&self.inner, &*file, Some(&mut offset), len)?)
            });
        }
        // The bytes before the placed slice, held back until it follows.
        let head = &bufs[..at];
        self.poll_send(cx, || {
            Ok(rustix::net::sendmsg(
                &self.inner,
                head,
                &mut SendAncillaryBuffer::default(),
                SendFlags::MORE | SendFlags::NOSIGNAL,
            )?)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpSocket};
    use yatagarasu_middleware::cache::BodyPlacement;

    use super::*;
    use crate::zero_copy::MemfdPlacement;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 + i / 509) as u8).collect()
    }

    /// Writes all of `bufs` as hyper does: vectored, resumed after each
    /// partial write.
    async fn write_all_vectored(io: &mut SendfileTcp, bufs: &[Bytes]) {
        let mut bufs: Vec<Bytes> = bufs.to_vec();
        while !bufs.is_empty() {
            let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = io.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            while n > 0 {
                let take = n.min(bufs[0].len());
                let _ = bufs[0].split_to(take);
                n -= take;
                if bufs[0].is_empty() {
                    bufs.remove(0);
                }
            }
        }
    }

    /// A client with a small receive buffer that reads in small pieces,
    /// pausing now and then: the sender meets a full socket many times.
    async fn slow_reader(addr: std::net::SocketAddr, len: usize) -> Vec<u8> {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8 * 1024).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        let mut got = Vec::with_capacity(len);
        let mut buf = [0u8; 4096];
        while got.len() < len {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed after {} of {len} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            if got.len() % (256 * 1024) < 4096 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        got
    }

    #[tokio::test]
    async fn placed_bodies_go_out_whole_and_in_order_to_a_slow_reader() {
        let placement = MemfdPlacement::new(64 * 1024).with_max_files(4);
        let data = pattern(3 << 20);
        let mut writer = placement.writer(data.len()).unwrap();
        writer.write(&data).unwrap();
        let body = writer.finish().unwrap();
        let slice = body.slice(1000..(2 << 20));
        assert!(placed(&slice).is_some(), "the slices must take the sendfile path");
        let heap_tail = Bytes::from(pattern(70_000));
        assert!(placed(&heap_tail).is_none());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let total = 19 + data.len() + 2 + slice.len() + heap_tail.len() + data.len();
        let reader = tokio::spawn(slow_reader(addr, total));
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = SendfileTcp::new(tcp);
        // A head and a whole body (the head with MSG_MORE, the body with
        // sendfile); a slice after a short buffer; a heap buffer; then the
        // whole body through `poll_write`.
        write_all_vectored(&mut io, &[Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n"), body.clone()]).await;
        write_all_vectored(
            &mut io,
            &[Bytes::from_static(b"\r\n"), slice.clone(), heap_tail.clone()],
        )
        .await;
        // The cache lets go of its copy meanwhile: the write keeps the file.
        let last = body.clone();
        drop(body);
        io.write_all(&last).await.unwrap();
        io.flush().await.unwrap();

        let got = reader.await.unwrap();
        let mut want = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        want.extend_from_slice(&data);
        want.extend_from_slice(b"\r\n");
        want.extend_from_slice(&data[1000..(2 << 20)]);
        want.extend_from_slice(&heap_tail);
        want.extend_from_slice(&data);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes differ");
    }

    #[tokio::test]
    async fn a_client_gone_mid_body_is_an_error_not_a_signal() {
        let placement = MemfdPlacement::new(1).with_max_files(4);
        let mut writer = placement.writer(8 << 20).unwrap();
        writer.write(&pattern(8 << 20)).unwrap();
        let body = writer.finish().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap();
            // Closed with unread bytes: the kernel resets the connection.
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut io = SendfileTcp::new(tcp);
        let writer = tokio::spawn(async move {
            loop {
                io.write_all(&body).await?;
            }
        });
        client.await.unwrap();
        let res: std::io::Result<()> = tokio::time::timeout(std::time::Duration::from_secs(30), writer)
            .await
            .expect("the writer never saw the client go")
            .unwrap();
        let err = res.unwrap_err();
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{err}"
        );
    }
}
