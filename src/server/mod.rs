//! Serving the composed app: the proxy listener behind the [`edge`] layers,
//! the metrics/admin listener, hot reload on SIGHUP, and a graceful drain on
//! SIGTERM/SIGINT.
//!
//! Each client connection is served by [`serve_connection`] under a
//! watchdog that closes it when idle, when a request head trickles in, or
//! when the client stops taking a response; past
//! `server.max_client_connections` new connections are refused at once.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::serve::ListenerExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::config::ServerConfig;
use crate::edge::{edge, EdgeService};
use crate::metrics::Metrics;
use crate::reload::Live;
pub use capped::{Capped, Slotted};
use signals::{reload_on_sighup, shutdown_signal, sighup, terminate};
use threads::ConnectionThreads;
use watchdog::{nudge_waker, ConnState, Nudge, TrackedBody, Verdict, Watched, WATCHDOG_TICK};

mod capped;
#[cfg(unix)]
mod linger;
mod signals;
mod threads;
mod watchdog;

/// Longest TLS handshake a client connection may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves a [`Live`] app on `listener` until SIGTERM or SIGINT (or `shutdown`
/// resolves), then stops accepting, turns `/ready` to 503 and lets in-flight
/// requests finish for up to `grace`; with the metrics/admin listener when
/// given, and a reload of the config file on every SIGHUP.
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
    let edge_conf = Arc::new(ConnectionLimits::from_config(
        &app.config.server,
        sendfile_files(&app.config),
    ));
    let metrics = app.metrics.clone();
    let threads = match app.config.server.connection_threads.threads() {
        0 => None,
        n => Some(Arc::new(ConnectionThreads::start(n)?)),
    };
    drop(app);
    let scheme = crate::tls::scheme(tls.server.is_some());
    tracing::info!(
        connection_threads = threads.as_ref().map_or(0, |t| t.len()),
        "Yatagarasu listening on {scheme}://{addr}"
    );
    let metrics_task = match metrics_listener {
        Some(l) => {
            let maddr = l.local_addr()?;
            let mscheme = crate::tls::scheme(tls.metrics.is_some());
            tracing::info!("metrics listening on {mscheme}://{maddr}");
            let router = crate::admin::router(live.clone());
            let metrics_tls = tls.metrics.clone();
            Some(tokio::spawn(async move {
                let l = Capped::new(
                    l.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    }),
                    METRICS_MAX_CONNECTIONS,
                    METRICS_IDLE_TIMEOUT,
                );
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let connections = Arc::new(Semaphore::new(edge_conf.max_connections));
    let accept = tokio::spawn(accept_loop(
        listener,
        Accepting {
            service,
            limits: edge_conf.clone(),
            metrics,
            connections: connections.clone(),
            tls: tls.server.clone(),
            threads: threads.clone(),
        },
        stop_rx,
    ));
    tokio::select! {
        _ = shutdown_signal(term) => {}
        _ = shutdown => {}
    }
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    live.app().ready.start_draining();
    // Stop accepting; every connection finishes its requests and closes.
    let _ = stop_tx.send(true);
    let _ = accept.await;
    // The listener is closed: a new connection is refused from here on.
    tracing::info!("stopped accepting connections");
    let all = u32::try_from(edge_conf.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over: closing the remaining connections");
    }
    // Ends the connection threads (and closes what is left on them).
    drop(threads);
    reload_task.abort();
    tls.stop();
    if let Some(task) = metrics_task {
        task.abort();
    }
    live.stop();
    tracing::info!("stopped");
    Ok(())
}

/// The connection-level settings of `server:` (timeouts and limits).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// `server.header_read_timeout_seconds`.
    pub header_read_timeout: Duration,
    /// `server.keepalive_idle_timeout_seconds`.
    pub idle_timeout: Duration,
    /// `server.send_timeout_seconds`.
    pub send_timeout: Duration,
    /// `server.max_client_connections`, lowered to fit the open-file limit.
    pub max_connections: usize,
    /// `server.http2_keepalive_interval_seconds` (`None`: no pings).
    pub http2_keepalive_interval: Option<Duration>,
    /// `server.http2_keepalive_timeout_seconds`.
    pub http2_keepalive_timeout: Duration,
    /// `server.http2_max_concurrent_streams`.
    pub http2_max_concurrent_streams: u32,
    /// The HTTP/2 header list size advertised: above `server.max_header_bytes`,
    /// so that the edge's own check (431 with an S3 error body) is the one
    /// that applies, as for HTTP/1.1.
    pub http2_max_header_list_size: u32,
    /// hyper's HTTP/1.1 buffer limit: room for a request head of
    /// `server.max_header_bytes` and `server.max_uri_length` (and never
    /// below hyper's default, ~408 KiB), so that the edge's own check (431
    /// or 414 with an S3 error body) is the one that applies.
    pub http1_max_buf_size: usize,
    /// Whether requests carry the client's address as `ConnectInfo` (only
    /// `server.rate_limit.per_ip` reads it; the edge is built once, so a
    /// reload cannot turn it on later): an allocation per request saved.
    pub connect_info: bool,
}

/// hyper's default HTTP/1.1 buffer limit (`8192 + 4096 * 100`).
const HYPER_DEFAULT_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;

/// File descriptors kept for everything but client connections (upstream
/// connections, Redis, the metrics listener, logs).
const FD_RESERVE: u64 = 256;

/// The most connections the metrics/admin listener holds open (over TLS:
/// handshaking or served): scrapers, probes and admin calls need a few,
/// and this keeps what clients opening connections and sending nothing can
/// take well within `FD_RESERVE`. Past it a new connection is closed at once
/// ([`Capped`]).
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// How long a metrics/admin connection may go without a byte written to it
/// (an idle keep-alive, a request trickled in, an answer not read) before
/// it is closed ([`Capped`]). It also bounds one admin call: hyper watches
/// the connection while a request is served, so a call that answers after
/// more than this (a purge scanning a huge Redis) is cut; five minutes is
/// far above a reload's or a purge's usual time, and a scraper whose
/// keep-alive connection was closed just reconnects.
pub const METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// File descriptors a client connection holds.
const FDS_PER_CONNECTION: u64 = if cfg!(unix) { 2 } else { 1 };

impl ConnectionLimits {
    /// From `server:`, with the connection limit fitted to the open-file
    /// limit (raised to its hard limit first), less the files the memory
    /// tier may hold for `sendfile` when `sendfile_files`.
    pub fn from_config(server: &ServerConfig, sendfile_files: bool) -> Self {
        let mut max_connections = server.max_client_connections.max(1);
        if let Some(nofile) = raise_nofile_limit() {
            let reserve = FD_RESERVE + if sendfile_files { memory_tier_files(nofile) } else { 0 };
            // Two descriptors per connection: its socket, and the second
            // handle its lingering close needs ([`linger`]).
            let fits =
                usize::try_from((nofile.saturating_sub(reserve) / FDS_PER_CONNECTION).max(16)).unwrap_or(usize::MAX);
            if max_connections > fits {
                tracing::warn!(
                    configured = max_connections,
                    open_file_limit = nofile,
                    using = fits,
                    "server.max_client_connections is above what the open-file limit allows: lowered"
                );
                max_connections = fits;
            }
        }
        let secs = Duration::from_secs;
        Self {
            header_read_timeout: secs(server.header_read_timeout_seconds),
            idle_timeout: secs(server.keepalive_idle_timeout_seconds),
            send_timeout: secs(server.send_timeout_seconds),
            max_connections: max_connections.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize),
            http2_keepalive_interval: (server.http2_keepalive_interval_seconds > 0)
                .then(|| secs(server.http2_keepalive_interval_seconds)),
            http2_keepalive_timeout: secs(server.http2_keepalive_timeout_seconds),
            http2_max_concurrent_streams: server.http2_max_concurrent_streams,
            http2_max_header_list_size: u32::try_from(server.max_header_bytes.saturating_mul(2).max(16 * 1024))
                .unwrap_or(u32::MAX),
            http1_max_buf_size: (server.max_header_bytes + server.max_uri_length + 16 * 1024)
                .max(HYPER_DEFAULT_MAX_BUF_SIZE),
            connect_info: server.rate_limit.per_ip.enabled,
        }
    }
}

/// Whether the memory tier keeps bodies in files (see [`crate::zero_copy`]).
fn sendfile_files(config: &crate::config::Config) -> bool {
    config.cache.as_ref().is_some_and(crate::app::sendfile_on)
}

/// Files the memory tier may hold for `sendfile` (see [`crate::zero_copy`]).
fn memory_tier_files(nofile: u64) -> u64 {
    #[cfg(target_os = "linux")]
    return crate::zero_copy::file_budget(nofile);
    #[cfg(not(target_os = "linux"))]
    return 0;
}

/// Raises the soft open-file limit to the hard one; the limit now in force.
fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// What a connection refused past the limit gets, written without waiting.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 116\r\n\r\n<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Too many connections.</Message></Error>\n";

/// What the accept loop hands each connection.
struct Accepting {
    service: EdgeService,
    limits: Arc<ConnectionLimits>,
    metrics: Arc<Metrics>,
    connections: Arc<Semaphore>,
    tls: Option<Arc<crate::tls::TlsReloader>>,
    threads: Option<Arc<ConnectionThreads>>,
}

/// Accepts client connections until `stop`, each served by
/// [`serve_connection`] while it holds a permit of `connections`, on the
/// next of the connection `threads` (or on this runtime without them); past
/// the limit a connection is answered 503 (best effort) and closed at once.
async fn accept_loop(listener: TcpListener, accepting: Accepting, mut stop: watch::Receiver<bool>) {
    let Accepting {
        service,
        limits,
        metrics,
        connections,
        tls,
        threads,
    } = accepting;
    let builder = Arc::new(http_builder(&limits));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.connection_refused();
            // Plain HTTP only: on a TLS listener these bytes would reach the
            // client's handshake ("wrong version number"); it is just closed.
            if tls.is_none() {
                let _ = tcp.try_write(REFUSED);
            }
            continue;
        };
        // TCP_NODELAY: a streamed body goes out in a write after the headers,
        // which would otherwise wait for the client's delayed ACK (40 ms).
        let _ = tcp.set_nodelay(true);
        let conn = ConnectionContext {
            peer,
            service: service.clone(),
            limits: limits.clone(),
            metrics: metrics.clone(),
            builder: builder.clone(),
            stop: stop.clone(),
        };
        let acceptor = tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
        let Some(threads) = &threads else {
            tokio::spawn(async move {
                connection(tcp, conn, acceptor).await;
                drop(permit);
            });
            continue;
        };
        // The socket moves to the other thread's event loop.
        match tcp.into_std() {
            Ok(tcp) => threads.spawn(async move {
                match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => connection(tcp, conn, acceptor).await,
                    Err(e) => tracing::debug!(peer = %peer, error = %e, "connection lost on its way to its thread"),
                }
                drop(permit);
            }),
            Err(e) => tracing::debug!(peer = %peer, error = %e, "connection lost on its way to its thread"),
        }
    }
}

/// One accepted connection: its TLS handshake, when there is TLS (bounded,
/// so a silent client cannot hold a slot, with the certificate current at
/// accept time; a plain HTTP request gets a plain `400` instead, see
/// [`crate::tls::accept`]), then [`serve_connection`], then a lingering close
/// ([`linger`]), all while it holds its connection slot and counts as open.
async fn connection(tcp: tokio::net::TcpStream, conn: ConnectionContext, acceptor: Option<tokio_rustls::TlsAcceptor>) {
    let peer = conn.peer;
    // From accept to close: a handshake and a lingering close hold a slot of
    // `max_client_connections` too, so they count as open.
    let _open = conn.metrics.connection_open();
    #[cfg(unix)]
    let linger = linger::Linger::of(&tcp);
    let ended = match acceptor {
        #[cfg(target_os = "linux")]
        None => serve_connection(crate::zero_copy::SendfileTcp::new(tcp), conn).await,
        #[cfg(not(target_os = "linux"))]
        None => serve_connection(tcp, conn).await,
        Some(acceptor) => {
            let metrics = conn.metrics.clone();
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, crate::tls::accept(&acceptor, tcp)).await {
                Ok(Ok(crate::tls::Accepted::Tls(stream))) => serve_connection(*stream, conn).await,
                Ok(Ok(crate::tls::Accepted::PlainHttp)) => {
                    tracing::debug!(peer = %peer, "plain HTTP on the TLS listener: answered 400");
                    metrics.connection_closed("plain_http");
                    // Answered: closed lingering, after the client's request.
                    Ended::Served
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    metrics.connection_closed("tls_handshake_failed");
                    Ended::Cut
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    metrics.connection_closed("tls_handshake_timeout");
                    Ended::Cut
                }
            }
        }
    };
    // The connection dropped its handle on the socket; this one closes it,
    // lingering after an answer, not after a cut (a client cut for being
    // slow or silent gets no more time).
    #[cfg(unix)]
    if let (Some(linger), Ended::Served) = (linger, ended) {
        linger.close().await;
    }
    #[cfg(not(unix))]
    let _ = ended;
}

fn http_builder(limits: &ConnectionLimits) -> AutoBuilder<TokioExecutor> {
    let mut builder = AutoBuilder::new(TokioExecutor::new());
    // The header timeout is the watchdog's (hyper's own would also close
    // idle keep-alive connections at the header timeout).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // No EOF check while a request is in flight: hyper's check reserves
        // read-buffer room while the request head still holds the buffer,
        // so every request reallocated it (8 KiB; bench/README.md). A
        // client that half-closes after its request is answered as well.
        .half_close(true)
        .max_buf_size(limits.http1_max_buf_size)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(limits.http2_max_header_list_size);
    builder
}

/// How [`serve_connection`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The HTTP connection ended: the client closed it, or the server did
    /// after an answer (`Connection: close`, an unread request body, a
    /// graceful shutdown).
    Served,
    /// A timeout cut it (idle, a request head too slow, a client not
    /// reading), or its TLS handshake failed.
    Cut,
}

/// What [`serve_connection`] needs besides the connection itself.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The client's address (per-IP rate limits, logs).
    pub peer: SocketAddr,
    /// The edge service.
    pub service: EdgeService,
    /// Timeouts and limits.
    pub limits: Arc<ConnectionLimits>,
    /// Connection metrics.
    pub metrics: Arc<Metrics>,
    builder: Arc<AutoBuilder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
}

/// Serves one accepted connection, HTTP/1.1 or HTTP/2 (h2c or, over TLS,
/// h2), until it ends, the server stops (graceful), or a timeout closes it:
/// no request for `keepalive_idle_timeout` (idle), a request head not
/// complete `header_read_timeout` after its first byte or after the
/// connection opened (HTTP/1.1), or a
/// response body not taken by the client for `send_timeout` (an HTTP/2
/// connection whose other streams are still in progress is drained first:
/// `GOAWAY`, and closed once only stalled streams are left). Generic over the
/// transport so that a TLS acceptor can hand over its stream. Says whether
/// it ended or was cut ([`Ended`]).
pub async fn serve_connection<IO>(io: IO, ctx: ConnectionContext) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let svc = {
        let (state, service, peer) = (state.clone(), ctx.service.clone(), ctx.peer);
        let connect_info = ctx.limits.connect_info;
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            if connect_info {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            let request = state.request_started();
            // A request without a body (most: `GET`, `HEAD`) gets an empty
            // one, which is not boxed: one allocation fewer per request.
            let fut = service.clone().oneshot(req.map(|body| {
                if http_body::Body::is_end_stream(&body) {
                    Body::empty()
                } else {
                    Body::new(body)
                }
            }));
            async move {
                let res = match fut.await {
                    Ok(res) => res,
                    Err(never) => match never {},
                };
                request.responding();
                // Not boxed again: hyper takes the wrapper as it is.
                Ok::<_, Infallible>(res.map(|inner| TrackedBody { inner, request }))
            }
        })
    };
    let conn = ctx.builder.serve_connection(io, svc).into_owned();
    tokio::pin!(conn);
    let mut stop = ctx.stop.clone();
    let mut stop = std::pin::pin!(stop.wait_for(|s| *s));
    let mut stopping = false;
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The tick and the stop signal wake the task through `nudge`, and are
    // polled only after they did (see `Nudge`).
    let nudge = Nudge::new();
    let nudge_waker = nudge_waker(&nudge);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            if let Err(e) = result {
                // A request head hyper could not parse (malformed, over 100
                // header fields, over its buffer): hyper answered it on its
                // own (400, 414 or 431, without a body) and closed. No
                // request reached the edge, so it has no access line: it is
                // counted here.
                if e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse) {
                    ctx.metrics.connection_closed("malformed_request");
                }
                tracing::debug!(error = %e, peer = %ctx.peer, "client connection ended with an error");
            }
            return Poll::Ready(Ended::Served);
        }
        if !nudge.take(cx) {
            return Poll::Pending;
        }
        let mut side = Context::from_waker(&nudge_waker);
        if !stopping && stop.as_mut().poll(&mut side).is_ready() {
            stopping = true;
            conn.as_mut().graceful_shutdown();
            // The connection acts on it when polled again.
            cx.waker().wake_by_ref();
        }
        while tick.poll_tick(&mut side).is_ready() {
            match state.verdict(&ctx.limits) {
                Verdict::Keep => {}
                Verdict::Drain => {
                    if !stopping {
                        tracing::debug!(peer = %ctx.peer, "a stalled stream beside others: draining the connection");
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                        cx.waker().wake_by_ref();
                    }
                }
                Verdict::Close(reason) => {
                    tracing::debug!(peer = %ctx.peer, reason, "closing the client connection");
                    ctx.metrics.connection_closed(reason);
                    return Poll::Ready(Ended::Cut);
                }
            }
        }
        Poll::Pending
    })
    .await
}
