//! The test kit of the Yatagarasu workspace: the real servers and processes
//! the tests and the bench run against, in one place.
//!
//! - [`s3::LocalS3`]: an in-process S3 server (s3s over s3s-fs) that checks
//!   SigV4, can be stopped and restarted on its port and, with the `harness`
//!   feature, injects faults.
//! - [`redis::Redis`]: a `redis-server` child process on a free port
//!   (standalone, cluster node, TLS, password, sentinel), [`redis::Cluster`]
//!   and [`redis::SentinelSet`].
//! - [`proxy::Proxy`]: the `yatagarasu` binary as a child process, its logs
//!   captured, its listening addresses read from them.
//! - [`pki::Pki`]: a test CA and the certificates it issues (openssl CLI).
//! - [`ports`] and [`util`]: free ports, waiting on conditions, a
//!   redirect-free client, raw requests, deterministic test data.
//!
//! Without the default `harness` feature only the plain [`s3::LocalS3`] is
//! built: that is what the binary's `demo` and `serve-s3` commands use.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod s3;

#[cfg(feature = "harness")]
pub mod pki;
#[cfg(feature = "harness")]
pub mod ports;
#[cfg(feature = "harness")]
pub mod proxy;
#[cfg(feature = "harness")]
pub mod redis;
#[cfg(feature = "harness")]
pub mod util;
