//! The HTTP clients an [`S3Upstream`](super::S3Upstream) sends through: one
//! reqwest client (and so one connection pool) per event loop.
//!
//! A pooled upstream connection is driven by a task on the runtime that
//! opened it. When a request served on one thread reads a connection driven
//! by another, every chunk of the body wakes a thread across: a long stream
//! then costs about 1.7 times the CPU (`bench/README.md`). A server that runs
//! its own event loop per thread (the binary's `server.connection_threads`)
//! marks each thread with [`UpstreamClients::enter_lane`], and every request
//! made on it takes that lane's client, so its connections stay on the
//! thread. Threads that never entered a lane (a shared multi-threaded
//! runtime, background work) use lane 0.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use super::direct::DirectConfig;

thread_local! {
    static LANE: Cell<usize> = const { Cell::new(0) };
}

/// One reqwest client per lane (lane 0 first). Cloning is cheap (an `Arc`).
/// A single client, `From<reqwest::Client>`, is one lane that every thread
/// shares.
#[derive(Clone, Debug)]
pub struct UpstreamClients {
    lanes: Arc<[reqwest::Client]>,
    /// [`with_direct_http`](Self::with_direct_http)'s read timeout, when on.
    direct: Option<Option<Duration>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl UpstreamClients {
    /// `first` serves lane 0 (and any thread of a lane past the end), `rest`
    /// lanes 1, 2...
    pub fn new(first: reqwest::Client, rest: impl IntoIterator<Item = reqwest::Client>) -> Self {
        Self {
            lanes: std::iter::once(first).chain(rest).collect(),
            direct: None,
            tls: None,
        }
    }

    /// Sends `GET`s and `HEAD`s to plain-`http://` replicas (and `https://`
    /// ones with [`with_direct_tls`](Self::with_direct_tls)) over hyper's
    /// HTTP/1 connections, kept per lane by each replica, rather than
    /// through reqwest (a fraction of reqwest's CPU per request; issue 13).
    /// Health probes still use the reqwest clients. Turn it on only when
    /// those clients use no HTTP proxy: this path connects to the replica
    /// itself. `read_timeout` bounds each wait for more of a response body,
    /// as reqwest's `read_timeout` does.
    pub fn with_direct_http(mut self, read_timeout: Option<Duration>) -> Self {
        self.direct = Some(read_timeout);
        self
    }

    /// With [`with_direct_http`](Self::with_direct_http), sends to
    /// `https://` replicas the same way, over TLS with `config` (give it the
    /// roots reqwest's clients trust, and `http/1.1` as its only ALPN
    /// protocol: these connections speak HTTP/1.1).
    pub fn with_direct_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// How replicas send without reqwest; `None` when they do not.
    pub(crate) fn direct(&self) -> Option<DirectConfig> {
        self.direct.map(|read_timeout| DirectConfig {
            read_timeout,
            tls: self.tls.clone(),
        })
    }

    /// Marks the calling thread as lane `lane`: requests made on it from now
    /// on take that lane's client.
    pub fn enter_lane(lane: usize) {
        LANE.with(|l| l.set(lane));
    }

    /// How many lanes there are (at least one).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The client for the calling thread's lane.
    pub fn current(&self) -> &reqwest::Client {
        &self.lanes[self.lane()]
    }

    /// The calling thread's lane (0 for a lane past the end).
    pub(crate) fn lane(&self) -> usize {
        let lane = LANE.with(Cell::get);
        if lane < self.lanes.len() {
            lane
        } else {
            0
        }
    }
}

impl From<reqwest::Client> for UpstreamClients {
    fn from(client: reqwest::Client) -> Self {
        Self::new(client, [])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_takes_its_lanes_client_and_unknown_lanes_take_the_first() {
        let clients = UpstreamClients::new(reqwest::Client::new(), [reqwest::Client::new(), reqwest::Client::new()]);
        assert_eq!(clients.lanes(), 3);
        // reqwest clients have no identity; compare the Arc'd inner by address.
        let addr = |c: &reqwest::Client| format!("{c:p}");
        let on_lane = |lane: Option<usize>| {
            let clients = clients.clone();
            std::thread::spawn(move || {
                if let Some(lane) = lane {
                    UpstreamClients::enter_lane(lane);
                }
                addr(clients.current())
            })
            .join()
            .unwrap()
        };
        assert_eq!(on_lane(None), addr(&clients.lanes[0]));
        assert_eq!(on_lane(Some(1)), addr(&clients.lanes[1]));
        assert_eq!(on_lane(Some(2)), addr(&clients.lanes[2]));
        assert_eq!(on_lane(Some(7)), addr(&clients.lanes[0]));
    }
}
