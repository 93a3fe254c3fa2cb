//! Connection threads (`server.connection_threads`): client connections
//! are shared out, as they are accepted, among threads that each run their
//! own single-threaded event loop, as nginx's workers do. A connection and
//! every request on it stay on one thread: no wake-up crosses threads and no
//! task is stolen between them, which costs less CPU per cache hit than the
//! shared multi-threaded runtime (`bench/README.md`). Upstream connections
//! stay on the thread too: thread `conn-N` is lane N+1 of the upstream
//! clients ([`UpstreamClients`]), one connection pool per thread. Background
//! work (health checks, reloads, the metrics listener) stays on the main
//! runtime (lane 0). The threads are named `conn-0`, `conn-1`... (as
//! `top -H` shows them).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;
use yatagarasu_middleware::upstream::UpstreamClients;

/// The event loops that serve client connections, in turn. Dropping it
/// ends the threads and waits for them: connections still open on them are
/// closed, and their last log lines written.
pub(super) struct ConnectionThreads {
    loops: Vec<Handle>,
    next: AtomicUsize,
    stop: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ConnectionThreads {
    /// Starts `count` threads (at least one), each with its own
    /// current-thread runtime, running until this is dropped.
    pub(super) fn start(count: usize) -> std::io::Result<Self> {
        let count = count.max(1);
        let mut loops = Vec::with_capacity(count);
        let mut stop = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        // Each thread says when it runs (with its name set), so the
        // listener opens only once every thread is up.
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        for n in 0..count {
            let runtime = Builder::new_current_thread()
                .enable_all()
                // Its log lines leave in one write whenever it idles.
                .on_thread_park(crate::access_log::output::idle)
                .build()?;
            let (tx, rx) = oneshot::channel::<()>();
            loops.push(runtime.handle().clone());
            stop.push(tx);
            let started = started_tx.clone();
            threads.push(std::thread::Builder::new().name(format!("conn-{n}")).spawn(move || {
                UpstreamClients::enter_lane(n + 1);
                let _ = started.send(());
                // Until the sender is dropped; then the runtime drops
                // the tasks still on it.
                let _ = runtime.block_on(rx);
            })?);
        }
        drop(started_tx);
        for _ in 0..count {
            // A thread that died before it ran ends the wait early too.
            if started_rx.recv().is_err() {
                break;
            }
        }
        Ok(Self {
            loops,
            next: AtomicUsize::new(0),
            stop,
            threads,
        })
    }

    /// How many threads serve connections.
    pub(super) fn len(&self) -> usize {
        self.loops.len()
    }

    /// Runs `task` (a connection) on the next thread in turn.
    pub(super) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.loops.len();
        self.loops[n].spawn(task);
    }
}

impl Drop for ConnectionThreads {
    fn drop(&mut self) {
        self.stop.clear();
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            // Dropped on one of its own threads: that one cannot be waited for.
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}
