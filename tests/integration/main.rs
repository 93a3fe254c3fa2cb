//! Integration tests: the real binary against real S3 servers.

mod auth;
mod cache;
mod common;
mod config;
mod demo;
mod edge;
mod failover;
mod ops;
mod redis;
mod request_path;
mod soak;
