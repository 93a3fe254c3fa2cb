//! The Yatagarasu binary's parts: configuration, composition of the
//! middleware layers, the server loop, and the embedded demo.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod edge;
pub mod healthcheck;
pub mod metrics;
pub mod readiness;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod tls;
#[cfg(target_os = "linux")]
pub mod zero_copy;
