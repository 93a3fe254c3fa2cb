//! Integration tests: the real binary against real S3 servers.

mod auth;
mod browser;
mod cache;
mod cache_revalidation;
mod common;
mod config;
mod config_reference;
mod cors;
mod credentials;
mod demo;
mod edge;
mod failover;
mod faults;
mod healthcheck;
mod hedge;
mod memory;
mod ops;
mod purge_broadcast;
mod rclone;
mod redis_cluster;
mod request_path;
mod s3_api;
mod soak;
mod tls;
mod tracing;
