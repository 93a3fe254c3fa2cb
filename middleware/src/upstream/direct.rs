//! Requests to a replica sent over hyper's HTTP/1 client connections (over
//! TLS with the caller's rustls config for `https://`), pooled per lane
//! (event loop) by each replica, instead of through reqwest (issue 13).
//!
//! reqwest wraps hyper in a redirect layer, a retry layer, a URL to `Uri`
//! conversion, hyper-util's pool (a keyed map behind a lock, a task spawned
//! per request to return the connection) and a timeout per read. Measured
//! on a loopback client, a 4 KiB `GET` cost 54k instructions through
//! reqwest and 20k on a hyper connection; in the proxy, a pass-through
//! request went from 78k to 51k (`bench/README.md`, twelfth round). A
//! replica has one authority, so its pool is a list per lane, not a map.
//! Replicas behind an HTTP proxy still go through reqwest, and so do health
//! probes.

use std::future::Future as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use url::{Host, Url};

use crate::error::FetchError;

/// The request body of a `GET` or `HEAD`.
type Sender = SendRequest<Empty<Bytes>>;

/// The most idle connections kept per lane (reqwest's
/// `pool_max_idle_per_host` in the binary).
const MAX_IDLE_PER_LANE: usize = 256;

/// How long an idle connection is kept (reqwest's `pool_idle_timeout` in the
/// binary).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a [`DirectHttp`] pool sends: set on
/// [`UpstreamClients::with_direct_http`](super::UpstreamClients::with_direct_http)
/// and [`with_direct_tls`](super::UpstreamClients::with_direct_tls).
#[derive(Clone, Debug, Default)]
pub(crate) struct DirectConfig {
    /// The longest wait for the next bytes of a response body.
    pub(crate) read_timeout: Option<Duration>,
    /// TLS for `https://` replicas (without it they use reqwest).
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

/// TLS to one replica: the connector and the name its certificate must hold.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// One replica's connections: where it is and an idle list per lane.
pub(crate) struct DirectHttp {
    host: String,
    port: u16,
    read_timeout: Option<Duration>,
    tls: Option<Tls>,
    lanes: Box<[Mutex<Vec<Idle>>]>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl std::fmt::Debug for DirectHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectHttp")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DirectHttp {
    /// A pool for the replica at `base` (its bucket's URL) with `lanes`
    /// lanes; `None` unless `base` has a host and is `http://`, or
    /// `https://` with a TLS config.
    pub(crate) fn for_url(base: &Url, lanes: usize, config: DirectConfig) -> Option<Self> {
        let (host, name) = match base.host()? {
            Host::Domain(name) => (name.to_owned(), ServerName::try_from(name.to_owned()).ok()),
            Host::Ipv4(ip) => (ip.to_string(), Some(ServerName::IpAddress(IpAddr::V4(ip).into()))),
            Host::Ipv6(ip) => (ip.to_string(), Some(ServerName::IpAddress(IpAddr::V6(ip).into()))),
        };
        let tls = match base.scheme() {
            "http" => None,
            "https" => Some(Tls {
                connector: tokio_rustls::TlsConnector::from(config.tls?),
                name: name?,
            }),
            _ => return None,
        };
        Some(Self {
            host,
            port: base.port_or_known_default()?,
            read_timeout: config.read_timeout,
            tls,
            lanes: (0..lanes.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// Sends `req` (origin-form `Uri`, `Host` set) on lane `lane`: on an idle
    /// connection when one is alive, else on a new one. A request that an
    /// idle connection did not take (it was closing) goes out on the next;
    /// one that an idle connection took but the replica had closed under it
    /// (no answer came back: see [`closed_under`]) goes out once more, on a
    /// new connection. Both are a `GET` or a `HEAD`: sending again is safe.
    pub(crate) async fn send(
        self: Arc<Self>,
        lane: usize,
        mut req: Request<Empty<Bytes>>,
    ) -> Result<Response<Body>, FetchError> {
        let lane = lane.min(self.lanes.len() - 1);
        let mut resent = false;
        loop {
            let pooled = if resent { None } else { self.checkout(lane) };
            let (mut sender, pooled, idle_for) = match pooled {
                Some((sender, idle_for)) => (sender, true, idle_for),
                None => (self.connect().await?, false, Duration::ZERO),
            };
            if pooled && sender.ready().await.is_err() {
                continue;
            }
            // Kept to send again if the connection turns out closed: only
            // after an idle time a replica's keep-alive timeout could end
            // (a copy of the headers costs every request ~1.7% of a
            // pass-through's instructions, issue 13).
            let copy = (pooled && idle_for >= RESEND_AFTER_IDLE).then(|| copy_of(&req));
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(self.response(res, sender, lane)),
                Err(mut e) => match (e.take_message(), copy) {
                    (Some(back), _) if pooled => req = back,
                    (_, Some(copy)) if closed_under(e.error()) => {
                        tracing::debug!(host = %self.host, error = %e.error(),
                            "the replica closed a pooled connection under a request: sending it on a new one");
                        req = copy;
                        resent = true;
                    }
                    _ => return Err(FetchError::Transport(e.into_error().into())),
                },
            }
        }
    }

    /// The newest idle connection of `lane` that is not closed; drops the
    /// closed ones it passes, and every connection idle for longer than
    /// [`IDLE_TIMEOUT`].
    /// Also returns how long it sat idle.
    fn checkout(&self, lane: usize) -> Option<(Sender, Duration)> {
        let mut idle = self.lanes[lane].lock().unwrap_or_else(|p| p.into_inner());
        while let Some(entry) = idle.pop() {
            let idle_for = entry.since.elapsed();
            if idle_for > IDLE_TIMEOUT {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if !entry.sender.is_closed() {
                return Some((entry.sender, idle_for));
            }
        }
        None
    }

    fn put(&self, lane: usize, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lanes[lane].lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_LANE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Sender, FetchError> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| FetchError::Connect(e.into()))?;
        // As reqwest's `tcp_nodelay(true)`: a request head is one small write.
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => handshake(stream).await,
            Some(tls) => {
                let stream = tls
                    .connector
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| FetchError::Connect(e.into()))?;
                handshake(stream).await
            }
        }
    }

    fn response(self: &Arc<Self>, res: Response<Incoming>, sender: Sender, lane: usize) -> Response<Body> {
        let (parts, body) = res.into_parts();
        let mut body = PooledBody {
            body,
            back: Some((self.clone(), lane, sender)),
            read_timeout: self.read_timeout,
            sleep: None,
            progressed: false,
        };
        // A `HEAD` answer or an empty body may never be polled.
        if body.body.is_end_stream() {
            body.release();
        }
        Response::from_parts(parts, Body::new(body))
    }
}

/// How long a pooled connection must have sat idle for its request to be
/// kept, to send again if the replica closed the connection under it. A
/// replica closes an idle keep-alive connection after its timeout (seconds:
/// Apache 5 s, S3 and MinIO tens of seconds, nginx 75 s); one that ends a
/// connection after some number of requests says `Connection: close` on the
/// last answer, so the connection is never reused. A connection that crossed
/// a replica's shutdown after a shorter idle time fails over, as any other
/// transport failure.
pub(crate) const RESEND_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A copy of a bodiless request, to send again.
fn copy_of(req: &Request<Empty<Bytes>>) -> Request<Empty<Bytes>> {
    let mut copy = Request::new(Empty::new());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// Whether a request sent on a pooled connection failed because the
/// replica had closed that connection (its idle timeout or its shutdown
/// crossing the request on the wire): the connection ended, or was reset,
/// before any answer. Such a connection looked alive when it was taken; the
/// replica never saw the request, or dropped it unanswered. `e` is hyper's
/// error, or one that has it among its causes (reqwest's).
pub(super) fn closed_under(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind;
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
                    | ErrorKind::UnexpectedEof
            );
        }
        cause = e.source();
    }
    false
}

/// HTTP/1 over `io`; the connection is driven by a task on the runtime that
/// opened it (this lane's event loop), which ends when the socket closes or
/// every sender is dropped.
async fn handshake<IO>(io: IO) -> Result<Sender, FetchError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| FetchError::Connect(e.into()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// No bytes of a replica's response body within the read timeout (the
/// field): the body's error, as reqwest's read timeout was.
#[derive(Debug, thiserror::Error)]
#[error("no response body bytes from the replica within {0:?}")]
pub struct BodyReadTimeout(pub Duration);

/// A response body that gives its connection back to the lane's idle list
/// once read to the end, and fails when the replica sends nothing for the
/// read timeout. Dropped before its end, it drops the connection (hyper
/// closes it: the rest of the body is still on the wire).
struct PooledBody {
    body: Incoming,
    back: Option<(Arc<DirectHttp>, usize, Sender)>,
    read_timeout: Option<Duration>,
    /// Armed on the first wait for bytes, reset on the first wait after
    /// each frame.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame came since `sleep` was last armed.
    progressed: bool,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((pool, lane, sender)) = self.back.take() {
            pool.put(lane, sender);
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                this.release();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.progressed = true;
                if this.body.is_end_stream() {
                    this.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.back = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                let Some(limit) = this.read_timeout else {
                    return Poll::Pending;
                };
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if std::mem::take(&mut this.progressed) {
                            sleep.as_mut().reset(tokio::time::Instant::now() + limit);
                        }
                        sleep
                    }
                    None => this.sleep.insert(Box::pin(tokio::time::sleep(limit))),
                };
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.back = None;
                        Poll::Ready(Some(Err(BodyReadTimeout(limit).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
