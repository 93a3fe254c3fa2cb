//! The S3 API for SDK clients: path-style bucket calls (`ListObjectsV2`,
//! `ListObjects`, `HeadBucket`, `GetBucketLocation`) next to object reads,
//! and [`ListBuckets`] for the root.
//!
//! Mounted under the prefix router, [`S3Api`] sees `/` for the bucket and
//! `/key` for objects. Listings are asked of the replicas through the same
//! failover (breakers, bulkheads, retry budget) as objects, one page at a
//! time with `start-after`; the client gets the proxy's own authenticated
//! continuation token ([`TokenKey`]), so a listing continues on the backup
//! after the primary died between two pages.
//!
//! ```no_run
//! use axum::body::Body;
//! use http::Response;
//! use tower::util::BoxCloneSyncService;
//! use yatagarasu_middleware::error::FetchError;
//! use yatagarasu_middleware::object::ObjectRequest;
//! use yatagarasu_middleware::routing::PrefixRouter;
//! use yatagarasu_middleware::s3api::S3Api;
//!
//! # fn stack() -> BoxCloneSyncService<ObjectRequest, Response<Body>, FetchError> { unimplemented!() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let failover = stack(); // e.g. a Failover over the replicas
//! let cached = stack(); // e.g. the cache in front of it
//! let api = S3Api::new("data", cached, failover).with_region("eu-west-1");
//! let router = PrefixRouter::new().mount("/data", "data", api)?;
//! # let _ = router; Ok(()) }
//! ```

mod buckets;
mod listing;
mod operation;
mod service;
mod token;

pub use buckets::{Admit, ListBuckets, MAX_BUCKETS};
pub use listing::{render, ListParams, ListVersion, MAX_KEYS};
pub use operation::S3Operation;
pub use service::{ResponseFuture, S3Api};
pub use token::TokenKey;
