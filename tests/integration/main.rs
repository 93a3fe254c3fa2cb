//! Integration tests: the real binary against real S3 servers.

mod common;
mod config;
mod failover;
mod request_path;
