//! Failover over two replicas of one bucket, each gated by its own circuit
//! breaker ([`CircuitBreakerLayer`]) and bulkhead, with the public API only.
//! `/status` shows what the app can observe: breaker states, health probes,
//! and the failures and failovers reported through [`FailoverEvents`].
//!
//! ```sh
//! S3_ENDPOINTS=http://127.0.0.1:9000,http://127.0.0.1:9001 S3_BUCKET=data-bucket \
//! S3_ACCESS_KEY=minioadmin S3_SECRET_KEY=minioadmin \
//!   cargo run -p yatagarasu-middleware --example failover
//! curl -i http://127.0.0.1:3002/files/test.txt   # x-yatagarasu-replica: replica-0
//! # stop the first S3 server, then:
//! curl -i http://127.0.0.1:3002/files/test.txt   # x-yatagarasu-replica: replica-1
//! curl http://127.0.0.1:3002/status
//! ```

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rusty_s3::Credentials;
use tower::ServiceBuilder;
use yatagarasu_middleware::breaker::{BreakerConfig, CircuitBreaker, CircuitBreakerLayer};
use yatagarasu_middleware::bulkhead::BulkheadLayer;
use yatagarasu_middleware::failover::{Failover, FailoverEvents, Replica};
use yatagarasu_middleware::health::{HealthCheck, ReplicaHealth};
use yatagarasu_middleware::object::ObjectService;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};
use yatagarasu_middleware::FetchError;

/// Keeps the last events the failover reported (a real app would count them).
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl Log {
    fn push(&self, line: String) {
        let mut lines = self.0.lock().unwrap();
        if lines.len() == 20 {
            lines.remove(0);
        }
        lines.push(line);
    }
}

impl FailoverEvents for Log {
    fn failure(&self, bucket: &str, replica: &str, error: &FetchError) {
        self.push(format!("{bucket}: {replica} failed: {error}"));
    }
    fn failover(&self, bucket: &str, from: &str, to: &str) {
        self.push(format!("{bucket}: {from} -> {to}"));
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let endpoints = var("S3_ENDPOINTS", "http://127.0.0.1:9000,http://127.0.0.1:9001");
    let bucket_name = var("S3_BUCKET", "data-bucket");
    let region = var("S3_REGION", "us-east-1");
    let credentials = Credentials::new(var("S3_ACCESS_KEY", "minioadmin"), var("S3_SECRET_KEY", "minioadmin"));

    let client = reqwest::Client::new();
    let mut replicas = Vec::new();
    for (priority, endpoint) in endpoints.split(',').enumerate() {
        let name = format!("replica-{priority}");
        let bucket = s3_bucket(Some(&endpoint.parse()?), &bucket_name, &region)?;
        let fetch = S3Upstream::new(name.clone(), bucket, client.clone())
            .with_credentials(credentials.clone())
            .with_timeout(Duration::from_secs(2));
        let config = BreakerConfig {
            failure_threshold: 2,
            open_timeout: Duration::from_secs(10),
            ..BreakerConfig::default()
        };
        let replica = name.clone();
        let breaker = CircuitBreaker::with_hook(
            config,
            Arc::new(move |to| println!("{replica}: breaker {}", to.as_str())),
        );
        let health = ReplicaHealth::new();
        // Probes feed the health and the breaker, in the background.
        HealthCheck::new(fetch.clone(), health.clone())
            .with_breaker(breaker.clone())
            .with_interval(Duration::from_secs(5))
            .spawn();
        let stack = ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(breaker.clone()))
            .layer(BulkheadLayer::new(64))
            .service(fetch);
        replicas.push(Replica::new(name, stack, breaker, health).with_priority(priority as u32));
    }

    let log = Arc::new(Log::default());
    let failover = Failover::builder(bucket_name.clone(), replicas)
        .events(log.clone())
        .build();

    // The app keeps a clone of the failover to read each replica's state.
    let observed = failover.clone();
    let status = move || {
        let (observed, log) = (observed.clone(), log.clone());
        async move {
            let mut out = String::new();
            for r in observed.replicas() {
                let health = r.health();
                let _ = writeln!(
                    out,
                    "{} priority={} breaker={} failures={} health={} last_latency={:?} last_error={:?}",
                    r.name(),
                    r.priority(),
                    r.breaker().state().as_str(),
                    r.breaker().consecutive_failures(),
                    health.health().as_str(),
                    health.last_latency(),
                    health.last_error(),
                );
            }
            for line in log.0.lock().unwrap().iter() {
                let _ = writeln!(out, "event: {line}");
            }
            out
        }
    };

    let app = Router::new()
        .route("/status", get(status))
        .nest_service("/files", ObjectService::new(failover));

    let listener = tokio::net::TcpListener::bind(var("LISTEN", "127.0.0.1:3002")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
