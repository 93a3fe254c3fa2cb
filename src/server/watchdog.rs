//! The watchdog of one client connection: what it reads (requests in
//! progress, idle time, a request head in progress, the progress of every
//! response body) and the wrappers that feed it (the transport, each
//! response body).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use axum::body::Body;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnectionLimits;

/// How often each connection's timeouts are checked (their resolution).
pub(super) const WATCHDOG_TICK: Duration = Duration::from_millis(500);

/// The waker of a connection's watchdog tick and stop signal: it marks that
/// one of them woke, then wakes the connection's task. The task polls them
/// only when marked, instead of beside the connection on every wake (~500
/// instructions per poll, 2% of a cache hit's; issue 13).
#[derive(Debug)]
pub(super) struct Nudge {
    task: AtomicWaker,
    woke: AtomicBool,
}

impl Nudge {
    /// Marked, so that the first poll arms the tick and the stop signal.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            task: AtomicWaker::new(),
            woke: AtomicBool::new(true),
        })
    }

    /// Whether the tick or the stop signal woke since the last call; the
    /// task of `cx` is woken by the next of them.
    pub(super) fn take(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        self.woke.swap(false, Ordering::SeqCst)
    }
}

impl Wake for Nudge {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woke.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

/// A waker for the tick and the stop signal of a connection.
pub(super) fn nudge_waker(nudge: &Arc<Nudge>) -> Waker {
    Waker::from(nudge.clone())
}

/// What the watchdog of one connection reads: requests in progress, when the
/// connection last became idle, when a request head started, and the
/// progress of every response body.
#[derive(Debug)]
pub(super) struct ConnState {
    /// The coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux, a few
    /// ms of resolution, far finer than [`WATCHDOG_TICK`]): it is read up to four
    /// times per request and once per body frame, and a precise read costs
    /// more (issue 13).
    epoch: coarsetime::Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch`.
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` + 1 of the first byte of a request head; 0: none.
    head_started: AtomicU64,
    /// Set once the client spoke HTTP/2 (no head timer: frames arrive while idle).
    http2: AtomicBool,
    /// The progress of one response body, kept here: the body of every
    /// HTTP/1.1 request (one at a time) and of the first of concurrent
    /// HTTP/2 streams. [`SLOT_FREE`], [`SLOT_CLAIMED`] or [`SLOT_RESPONDING`].
    slot: AtomicU8,
    /// Milliseconds since `epoch` of the slot body's last poll.
    slot_progress: AtomicU64,
    /// The progress of the other bodies (concurrent HTTP/2 streams).
    bodies: Mutex<Vec<Weak<AtomicU64>>>,
}

/// [`ConnState::slot`]: no request holds it.
const SLOT_FREE: u8 = 0;
/// A request holds it; its response is not ready yet.
const SLOT_CLAIMED: u8 = 1;
/// A request holds it and the client must take its body.
const SLOT_RESPONDING: u8 = 2;

impl ConnState {
    pub(super) fn new() -> Self {
        Self {
            epoch: coarsetime::Instant::now_without_cache_update(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first request head from the start.
            head_started: AtomicU64::new(1),
            http2: AtomicBool::new(false),
            slot: AtomicU8::new(SLOT_FREE),
            slot_progress: AtomicU64::new(0),
            bodies: Mutex::new(Vec::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        coarsetime::Instant::now_without_cache_update()
            .duration_since(self.epoch)
            .as_millis()
    }

    pub(super) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        // The connection's own slot when free: no allocation and no lock
        // per request (issue 13).
        let claimed = self
            .slot
            .compare_exchange(SLOT_FREE, SLOT_CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        RequestGuard {
            state: self.clone(),
            progress: if claimed {
                Progress::Slot
            } else {
                Progress::Own(Arc::new(AtomicU64::new(0)))
            },
        }
    }

    fn on_read(&self, bytes: &[u8]) {
        if self.in_flight.load(Ordering::SeqCst) != 0 {
            return;
        }
        // Only the first bytes of a connection can be the HTTP/2 preface.
        if bytes.starts_with(b"PRI * HTTP/2") {
            self.http2.store(true, Ordering::SeqCst);
        }
        if self.head_started.load(Ordering::SeqCst) == 0 {
            self.head_started.store(self.now_ms() + 1, Ordering::SeqCst);
        }
    }

    /// What the watchdog does with the connection now.
    pub(super) fn verdict(&self, limits: &ConnectionLimits) -> Verdict {
        let now = self.now_ms();
        let over = |since: u64, limit: Duration| Duration::from_millis(now.saturating_sub(since)) >= limit;
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        if in_flight == 0 {
            let head = self.head_started.load(Ordering::SeqCst);
            if head != 0 && !self.http2.load(Ordering::SeqCst) && over(head - 1, limits.header_read_timeout) {
                return Verdict::Close("header_timeout");
            }
            if (head == 0 || self.http2.load(Ordering::SeqCst))
                && over(self.idle_since.load(Ordering::SeqCst), limits.idle_timeout)
            {
                return Verdict::Close("idle");
            }
            return Verdict::Keep;
        }
        let mut stalled = usize::from(
            self.slot.load(Ordering::SeqCst) == SLOT_RESPONDING
                && over(self.slot_progress.load(Ordering::SeqCst), limits.send_timeout),
        );
        let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        stalled += bodies
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| over(p.load(Ordering::SeqCst), limits.send_timeout))
            .count();
        match stalled {
            0 => Verdict::Keep,
            // Nothing else in progress (an HTTP/1.1 connection has one
            // request at a time).
            n if n >= in_flight => Verdict::Close("send_timeout"),
            // HTTP/2 streams beside the stalled one still make progress, or
            // wait for their replica: they finish first (a browser holds a
            // paused video's stream at a zero window while it downloads
            // other files on the same connection).
            _ => Verdict::Drain,
        }
    }
}

/// What [`ConnState::verdict`] says to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nothing to do.
    Keep,
    /// A response body has been stalled for `send_timeout` while other
    /// requests of the connection are still in progress: no new requests
    /// (HTTP/2 `GOAWAY`); once only stalled bodies are left, it is closed.
    Drain,
    /// Close it now, for this reason (a label of
    /// `yatagarasu_client_connections_closed_total`).
    Close(&'static str),
}

/// A request in progress on its connection, until its response body is
/// dropped; the body's last poll is its progress.
#[derive(Debug)]
pub(super) struct RequestGuard {
    state: Arc<ConnState>,
    progress: Progress,
}

/// Where a request's body progress is kept.
#[derive(Debug)]
enum Progress {
    /// In [`ConnState::slot_progress`].
    Slot,
    /// In a cell of its own, watched through [`ConnState::bodies`].
    Own(Arc<AtomicU64>),
}

impl RequestGuard {
    /// The response is ready: from now on the client must take its body.
    pub(super) fn responding(&self) {
        self.record_progress();
        match &self.progress {
            Progress::Slot => self.state.slot.store(SLOT_RESPONDING, Ordering::SeqCst),
            Progress::Own(cell) => {
                let mut bodies = self.state.bodies.lock().unwrap_or_else(|e| e.into_inner());
                bodies.retain(|b| b.strong_count() > 0);
                bodies.push(Arc::downgrade(cell));
            }
        }
    }

    /// The client asked for more of the body now.
    fn record_progress(&self) {
        let now = self.state.now_ms();
        match &self.progress {
            Progress::Slot => self.state.slot_progress.store(now, Ordering::SeqCst),
            Progress::Own(cell) => cell.store(now, Ordering::SeqCst),
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Progress::Slot = self.progress {
            self.state.slot.store(SLOT_FREE, Ordering::SeqCst);
        }
        let now = self.state.now_ms();
        if self.state.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.state.idle_since.store(now, Ordering::SeqCst);
            self.state.head_started.store(0, Ordering::SeqCst);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that records when the connection last asked for more.
    pub(super) struct TrackedBody {
        #[pin]
        pub(super) inner: Body,
        pub(super) request: RequestGuard,
    }
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.project();
        this.request.record_progress();
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The client transport, reporting the bytes that start a request head.
    pub(super) struct Watched<IO> {
        #[pin]
        pub(super) inner: IO,
        pub(super) state: Arc<ConnState>,
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.on_read(&buf.filled()[before..]);
        }
        res
    }
}

impl<IO: AsyncWrite> AsyncWrite for Watched<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(send_timeout: Duration) -> ConnectionLimits {
        let mut limits = ConnectionLimits::from_config(&crate::config::ServerConfig::default(), false);
        limits.send_timeout = send_timeout;
        limits
    }

    /// The connection's slot serves one request at a time; a request
    /// beside it (an HTTP/2 stream) gets a cell of its own. A stalled body
    /// counts either way, and only once it is responding: beside a request
    /// still in progress it drains the connection, alone it closes it.
    #[test]
    fn every_body_is_watched_in_the_slot_or_a_cell_of_its_own() {
        let state = Arc::new(ConnState::new());
        let zero = limits(Duration::ZERO);
        let first = state.request_started();
        let second = state.request_started();
        assert!(matches!(first.progress, Progress::Slot));
        assert!(matches!(second.progress, Progress::Own(_)));
        assert_eq!(state.verdict(&zero), Verdict::Keep, "no response is ready yet");
        first.responding();
        assert_eq!(
            state.verdict(&zero),
            Verdict::Drain,
            "the slot body, while the second request waits for its replica"
        );
        assert_eq!(state.verdict(&limits(Duration::from_secs(60))), Verdict::Keep);
        second.responding();
        assert_eq!(state.verdict(&zero), Verdict::Close("send_timeout"), "both stalled");
        drop(first);
        assert_eq!(
            state.verdict(&zero),
            Verdict::Close("send_timeout"),
            "the body in its own cell"
        );
        drop(second);
        assert_eq!(state.verdict(&zero), Verdict::Keep, "nothing in flight");
        let third = state.request_started();
        assert!(matches!(third.progress, Progress::Slot), "the slot is taken again");
    }
}
