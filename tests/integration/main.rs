//! Integration tests: the real binary against real S3 servers.

mod common;
mod config;
mod request_path;
