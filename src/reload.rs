//! The live app and hot reload.
//!
//! [`Live`] holds the app built from the current config in an [`ArcSwap`]:
//! each request loads it once and keeps it (and every layer it holds) for its
//! whole life, so a reload never touches requests in flight, and new requests
//! get the new app at once. A reload re-reads and validates the config file,
//! builds the new app inheriting the state of unchanged replicas (see
//! [`crate::app::Inherited`]), then swaps. On any failure the current app
//! stays and the reason is logged.
//!
//! Reloaded: buckets, replicas, credentials, auth, CORS, cache settings, health
//! checks, `server.upstream_read_timeout_seconds`, `server.readiness`,
//! `server.s3_api`, `server.s3_domain`, `metrics.admin_token`. Not reloaded (a
//! restart applies them, and a reload that changes one warns by its key): the
//! other `server.*` keys (listen address, TLS block, limits, rate limits,
//! timeouts), the rest of `metrics.*`, `logging.*`, `tracing.*`.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::future::Either;
use tokio::task::JoinHandle;
use tower::Service;
use yatagarasu_middleware::health::HealthCheck;
use yatagarasu_middleware::routing::RouteFuture as BucketFuture;

use crate::app::{build_with, App, BuildError, ReplicaKey, ReplicaSlot};
use crate::config::{self, Config, ConfigErrors};

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The process was started without a config file (demo).
    #[error("no config file to reload")]
    NoFile,
    /// The new config is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// The new config is valid but could not be assembled.
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Buckets now served.
    pub buckets: usize,
    /// Replicas whose breaker and health were kept.
    pub replicas_kept: usize,
    /// Replicas started afresh (new or changed).
    pub replicas_new: usize,
    /// Replicas stopped (removed or changed).
    pub replicas_removed: usize,
}

/// A replica of the live config and its probe task.
struct Running {
    slot: ReplicaSlot,
    task: Option<JoinHandle<()>>,
}

impl Running {
    fn stop(self) {
        self.slot.retire();
        if let Some(task) = self.task {
            task.abort();
        }
    }
}

/// The app serving now, its health-check tasks, and how to reload it.
pub struct Live {
    current: ArcSwap<App>,
    tasks: Mutex<HashMap<ReplicaKey, Running>>,
    reloading: tokio::sync::Mutex<()>,
    config_path: Option<PathBuf>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Starts serving `app` (its health checks start now); reloads re-read
    /// `config_path` when given.
    pub fn new(app: App, config_path: Option<PathBuf>) -> Arc<Self> {
        let live = Arc::new(Self {
            current: ArcSwap::from_pointee(app),
            tasks: Mutex::default(),
            reloading: tokio::sync::Mutex::new(()),
            config_path,
        });
        let app = live.current.load_full();
        live.start(&app);
        live
    }

    /// The app serving now.
    pub fn app(&self) -> Arc<App> {
        self.current.load_full()
    }

    /// A service that hands each request to the app serving when it arrives.
    pub fn service(self: &Arc<Self>) -> LiveService {
        LiveService(self.clone())
    }

    /// Starts the probes of replicas not running yet, sets their initial
    /// gauges, and stops those no longer in `app`. Returns (kept, new, removed).
    fn start(&self, app: &App) -> (usize, usize, usize) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(app.replicas.len());
        let (mut kept, mut new) = (0, 0);
        for slot in &app.replicas {
            // Every build has its own credentials: export the new ones' expiry.
            app.metrics
                .watch_credentials(&slot.key.bucket, &slot.key.replica, &slot.credentials);
            match tasks.remove(&slot.key) {
                Some(task) => {
                    kept += 1;
                    next.insert(slot.key.clone(), task);
                }
                None => {
                    new += 1;
                    let (b, r) = (&slot.key.bucket, &slot.key.replica);
                    app.metrics.breaker_state(b, r, slot.breaker.state());
                    app.metrics.replica_health(b, r, true);
                    let running = Running {
                        slot: slot.clone(),
                        task: slot.check.clone().map(HealthCheck::spawn),
                    };
                    next.insert(slot.key.clone(), running);
                }
            }
        }
        for bucket in &app.config.buckets {
            let names: Vec<&str> = app
                .replicas
                .iter()
                .filter(|s| s.key.bucket == bucket.name)
                .map(|s| s.key.replica.as_str())
                .collect();
            app.metrics.init_replicas(&bucket.name, &names);
        }
        let removed = tasks.len();
        for (_, running) in tasks.drain() {
            running.stop();
        }
        *tasks = next;
        let live: HashSet<(String, String)> = app
            .replicas
            .iter()
            .map(|s| (s.key.bucket.clone(), s.key.replica.clone()))
            .collect();
        app.metrics.retain_replicas(&live);
        (kept, new, removed)
    }

    /// Re-reads the config file and swaps it in; logs the outcome.
    pub async fn reload_from_file(&self) -> Result<ReloadReport, ReloadError> {
        let result = match &self.config_path {
            None => Err(ReloadError::NoFile),
            Some(path) => match config::load_file(path) {
                Ok(config) => self.reload(config).await,
                Err(errors) => Err(errors.into()),
            },
        };
        self.app().metrics.reload(result.is_ok());
        match &result {
            Ok(report) => tracing::info!(
                buckets = report.buckets,
                replicas_kept = report.replicas_kept,
                replicas_new = report.replicas_new,
                replicas_removed = report.replicas_removed,
                "config reloaded"
            ),
            Err(e) => tracing::error!(
                error = %e.to_string().trim_end().replace('\n', "; "),
                "config reload failed; keeping the current config"
            ),
        }
        result
    }

    /// Builds `config` inheriting the current app's state and swaps it in.
    pub async fn reload(&self, mut config: Config) -> Result<ReloadReport, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.app();
        warn_restart_only(&current.config, &config);
        // The connection threads started with the process stay: the new
        // upstream clients get one lane per running thread.
        config.server.connection_threads = current.config.server.connection_threads;
        let app = build_with(&config, current.metrics.clone(), current.inherited()).await?;
        let (replicas_kept, replicas_new, replicas_removed) = self.start(&app);
        self.current.store(Arc::new(app));
        Ok(ReloadReport {
            buckets: config.buckets.len(),
            replicas_kept,
            replicas_new,
            replicas_removed,
        })
    }

    /// Stops every health check (at exit).
    pub fn stop(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for (_, running) in tasks.drain() {
            running.stop();
        }
    }
}

fn warn_restart_only(old: &Config, new: &Config) {
    for key in restart_only_changes(old, new) {
        tracing::warn!(key, "changes under this key take effect on restart only");
    }
}

/// The keys changed from `old` to `new` that a reload does not apply. The
/// `server.*` keys the new app is built from (`upstream_read_timeout_seconds`,
/// `readiness`, `s3_api`, `s3_domain`) and `metrics.admin_token` apply at once.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    // Every field named, so that a new one has to be sorted here.
    let config::ServerConfig {
        address,
        shutdown_grace_seconds,
        upstream_read_timeout_seconds: _,
        max_concurrent_requests,
        max_header_bytes,
        max_uri_length,
        rate_limit,
        header_read_timeout_seconds,
        keepalive_idle_timeout_seconds,
        send_timeout_seconds,
        max_client_connections,
        http2_keepalive_interval_seconds,
        http2_keepalive_timeout_seconds,
        http2_max_concurrent_streams,
        connection_threads,
        tls,
        readiness: _,
        s3_api: _,
        s3_domain: _,
    } = &old.server;
    let s = &new.server;
    let (m, n) = (&old.metrics, &new.metrics);
    [
        ("server.address", differs(address, &s.address)),
        (
            "server.shutdown_grace_seconds",
            differs(shutdown_grace_seconds, &s.shutdown_grace_seconds),
        ),
        (
            "server.max_concurrent_requests",
            differs(max_concurrent_requests, &s.max_concurrent_requests),
        ),
        (
            "server.max_header_bytes",
            differs(max_header_bytes, &s.max_header_bytes),
        ),
        ("server.max_uri_length", differs(max_uri_length, &s.max_uri_length)),
        ("server.rate_limit", differs(rate_limit, &s.rate_limit)),
        (
            "server.header_read_timeout_seconds",
            differs(header_read_timeout_seconds, &s.header_read_timeout_seconds),
        ),
        (
            "server.keepalive_idle_timeout_seconds",
            differs(keepalive_idle_timeout_seconds, &s.keepalive_idle_timeout_seconds),
        ),
        (
            "server.send_timeout_seconds",
            differs(send_timeout_seconds, &s.send_timeout_seconds),
        ),
        (
            "server.max_client_connections",
            differs(max_client_connections, &s.max_client_connections),
        ),
        (
            "server.http2_keepalive_interval_seconds",
            differs(http2_keepalive_interval_seconds, &s.http2_keepalive_interval_seconds),
        ),
        (
            "server.http2_keepalive_timeout_seconds",
            differs(http2_keepalive_timeout_seconds, &s.http2_keepalive_timeout_seconds),
        ),
        (
            "server.http2_max_concurrent_streams",
            differs(http2_max_concurrent_streams, &s.http2_max_concurrent_streams),
        ),
        (
            "server.connection_threads",
            differs(connection_threads, &s.connection_threads),
        ),
        // The files of the block are re-read on reload; the block itself is not.
        ("server.tls", differs(tls, &s.tls)),
        ("metrics.enabled", m.enabled != n.enabled),
        ("metrics.address", m.address != n.address),
        ("metrics.port", m.port != n.port),
        ("metrics.tls", m.tls != n.tls),
        ("logging", differs(&old.logging, &new.logging)),
        ("tracing", differs(&old.tracing, &new.tracing)),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// The service of [`Live::service`].
#[derive(Debug, Clone)]
pub struct LiveService(Arc<Live>);

impl crate::edge::Buckets for LiveService {
    fn matched(&self, req: &Request<Body>) -> crate::edge::Matched {
        self.0.current.load().matched(req)
    }
}

impl Service<Request<Body>> for LiveService {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, BucketFuture>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let app = self.0.current.load();
        match req.uri().path() {
            "/health" | "/ready" => Either::Left(app.router.clone().call(req)),
            // The buckets directly: what `router` would fall back to.
            _ => Either::Right(app.buckets.route(req)),
        }
    }
}
