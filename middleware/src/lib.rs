//! Tower layers of the Yatagarasu S3 proxy, each usable on its own in any axum app.
//!
//! A request flows through small services, outermost first:
//!
//! - [`routing::PrefixRouter`]: picks the bucket by path prefix;
//! - [`object::ObjectService`]: turns `GET`/`HEAD /{key}` into an
//!   [`ObjectRequest`](object::ObjectRequest), and every failure into the
//!   S3-style XML answer a client expects ([`error`]);
//! - [`upstream::S3Upstream`]: presigns the request for one replica with
//!   rusty-s3, sends it with reqwest, and streams the body back as it arrives.
//!
//! # Mounting an S3 bucket in your own axum app
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use rusty_s3::Credentials;
//! use yatagarasu_middleware::object::ObjectService;
//! use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = "http://127.0.0.1:9000".parse()?;
//! let bucket = s3_bucket(Some(&endpoint), "data-bucket", "us-east-1")?;
//! let replica = S3Upstream::new("minio", bucket, reqwest::Client::new())
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
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod breaker;
pub mod bulkhead;
pub mod cache;
pub mod conditional;
pub mod error;
pub mod failover;
pub mod health;
pub mod object;
pub mod protect;
pub mod routing;
pub mod upstream;

pub use error::{FetchError, S3Error};
