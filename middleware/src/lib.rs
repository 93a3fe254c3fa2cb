//! Tower layers of the Yatagarasu S3 proxy, each usable on its own in any axum app.
//!
//! A request flows through small services, outermost first:
//!
//! - [`routing::PrefixRouter`]: picks the bucket by path prefix (or, with
//!   axum's own `nest_service`, [`routing::OriginalUriLayer`] keeps the path
//!   the client signed for SigV4);
//! - [`auth::AuthLayer`] and [`auth::SigV4Layer`]: JWT and S3 SigV4 client
//!   authentication (401/403 as S3 XML), in front of the object and bucket services;
//! - [`s3api::S3Api`]: bucket calls (`ListObjectsV2`/V1 with the proxy's own
//!   continuation tokens, `HeadBucket`, `GetBucketLocation`) beside objects;
//! - [`object::ObjectService`]: turns `GET`/`HEAD /{key}` into an
//!   [`ObjectRequest`](object::ObjectRequest), and every failure into the
//!   S3-style XML answer a client expects ([`error`]);
//! - [`cache::CacheLayer`]: the two-tier cache (memory, then Redis/Valkey);
//! - [`failover::Failover`]: picks the first replica, in priority order,
//!   whose breaker admits the request, moves on when one fails, resumes a
//!   body cut mid-way from another replica;
//! - per replica: [`breaker::CircuitBreakerLayer`] → [`bulkhead::BulkheadLayer`] →
//!   [`upstream::S3Upstream`], which presigns with rusty-s3, sends with
//!   reqwest (or, with
//!   [`UpstreamClients::with_direct_http`](upstream::UpstreamClients::with_direct_http)
//!   on, over hyper HTTP/1 connections it pools per replica) and streams the
//!   body back as it arrives, signing with the
//!   replica's current [`credentials::ReplicaCredentials`] (fixed, anonymous,
//!   or temporary keys refreshed in the background);
//! - beside them, [`health::HealthCheck`] probes replicas in the background;
//! - in front of everything, [`protect`] bounds request size, rate and
//!   concurrency (414/431, 429 and 503 with `Retry-After`);
//! - [`builder::ServiceBuilderExt`] stacks these layers on a `ServiceBuilder`;
//! - [`http`]: the RFC 9110 rules they share (preconditions, ranges, `304`s).
//!
//! # Mounting an S3 bucket in your own axum app
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! // Re-exported: the app needs no rusty-s3 or reqwest of its own.
//! use yatagarasu_middleware::rusty_s3::Credentials;
//! use yatagarasu_middleware::object::ObjectService;
//! use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = "http://127.0.0.1:9000".parse()?;
//! let bucket = s3_bucket(Some(&endpoint), "data-bucket", "us-east-1")?;
//! let client = yatagarasu_middleware::reqwest::Client::new();
//! let replica = S3Upstream::new("minio", bucket, client)
//!     .with_credentials(Credentials::new("minioadmin", "minioadmin"));
//!
//! // `GET /files/report.pdf` streams `report.pdf` of `data-bucket`.
//! let app = Router::new()
//!     .route("/", get(|| async { "my app" }))
//!     .nest_service("/files", ObjectService::new(replica));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! Runnable apps that each use one concern alone are in `middleware/examples/`
//! (`cargo run -p yatagarasu-middleware --example NAME`): `mount_bucket`
//! (objects under an app's route), `jwt_auth` (JWT on the app's own
//! handlers), `sigv4_bucket` (an S3 face for aws-cli and SDKs), `failover`
//! (two replicas behind breakers, their state on `/status`), `memory_cache`
//! (the memory tier and its purges) and `protect` (size, rate and
//! concurrency limits).
//!
//! # Request ids
//!
//! Every error body names a `RequestId`: the request's `x-request-id` header
//! ([`object::REQUEST_ID`]) when a layer in front set one, else a new UUID for
//! that body alone. The binary's edge sets the header on each request and
//! echoes it on the response; that edge is not part of this crate, so an app
//! that wants one id in its logs, responses and error bodies sets the header
//! in front of these layers itself (for example with tower-http's
//! `SetRequestIdLayer::x_request_id` and `PropagateRequestIdLayer`).
//!
//! # The whole stack: auth, cache, failover over breaker-gated replicas
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::Router;
//! use tower::{Layer, ServiceBuilder};
//! use yatagarasu_middleware::auth::{AuthLayer, JwtConfig};
//! use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
//! use yatagarasu_middleware::bulkhead::BulkheadLayer;
//! use yatagarasu_middleware::cache::{CacheConfig, CacheLayer, CacheStore};
//! use yatagarasu_middleware::failover::{Failover, Replica};
//! use yatagarasu_middleware::health::{HealthCheck, ReplicaHealth};
//! use yatagarasu_middleware::object::ObjectService;
//! use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = reqwest::Client::new();
//! let mut replicas = Vec::new();
//! for (priority, endpoint) in ["http://10.0.0.1:9000", "http://10.0.0.2:9000"].into_iter().enumerate() {
//!     let name = format!("replica-{priority}");
//!     let fetch = S3Upstream::new(name.clone(), s3_bucket(Some(&endpoint.parse()?), "data", "us-east-1")?, client.clone())
//!         .with_timeout(Duration::from_secs(5));
//!     let breaker = CircuitBreaker::new(BreakerConfig::default());
//!     let health = ReplicaHealth::new();
//!     HealthCheck::new(fetch.clone(), health.clone()).spawn();
//!     let stack = ServiceBuilder::new()
//!         .layer(CircuitBreakerLayer::new(breaker.clone()))
//!         .layer(BulkheadLayer::new(256))
//!         .service(fetch);
//!     replicas.push(Replica::new(name, stack, breaker, health).with_priority(priority as u32));
//! }
//! let store = CacheStore::new(&CacheConfig::default())?;
//! let objects = CacheLayer::new(store, "data").layer(Failover::new("data", replicas));
//! let jwt: JwtConfig = serde_json::from_value(serde_json::json!({"algorithm": "HS256", "secret": "change-me"}))?;
//! let files = AuthLayer::from_config(&jwt)?.layer(ObjectService::new(objects));
//! let app: Router = Router::new().nest_service("/files", files);
//! # let _ = app; Ok(()) }
//! ```
#![warn(missing_docs)]
#![deny(unsafe_code)]

#[macro_use]
mod macros;

pub mod auth;
pub mod breaker;
pub mod builder;
pub mod bulkhead;
pub mod cache;
pub mod credentials;
pub mod error;
pub mod failover;
pub mod health;
pub mod http;
pub mod object;
pub mod protect;
pub mod routing;
pub mod s3api;
pub mod upstream;

/// The HTTP client crate [`upstream::S3Upstream`] sends with (its `Client`),
/// re-exported for the same reason.
pub use reqwest;
/// The S3 signing crate whose `Bucket` and `Credentials` the [`upstream`] API
/// takes, re-exported so an app uses the same version without depending on it.
pub use rusty_s3;

/// Preconditions, now part of [`crate::http`]; kept at this path for existing users.
pub use crate::http::conditional;
pub use error::{FetchError, S3Error};
