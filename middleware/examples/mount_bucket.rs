//! Another axum app that serves objects of an S3 bucket under its own
//! `/files` route, next to its own handlers.
//!
//! ```sh
//! S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=data-bucket \
//! S3_ACCESS_KEY=minioadmin S3_SECRET_KEY=minioadmin \
//!   cargo run -p yatagarasu-middleware --example mount_bucket
//! curl http://127.0.0.1:3000/files/test.txt
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use yatagarasu_middleware::object::ObjectService;
// Re-exported by the crate: no rusty-s3 or reqwest dependency of the app's own.
use yatagarasu_middleware::reqwest;
use yatagarasu_middleware::rusty_s3::Credentials;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let endpoint = var("S3_ENDPOINT", "http://127.0.0.1:9000").parse()?;
    let bucket = s3_bucket(
        Some(&endpoint),
        &var("S3_BUCKET", "data-bucket"),
        &var("S3_REGION", "us-east-1"),
    )?;

    // One shared client: one connection pool for every request.
    let client = reqwest::Client::builder()
        .read_timeout(Duration::from_secs(30))
        .build()?;
    let replica = S3Upstream::new("minio", bucket, client)
        .with_credentials(Credentials::new(
            var("S3_ACCESS_KEY", "minioadmin"),
            var("S3_SECRET_KEY", "minioadmin"),
        ))
        .with_timeout(Duration::from_secs(5));

    let app = Router::new()
        .route("/", get(|| async { "my app: objects are under /files/" }))
        .route("/about", get(|| async { "an axum app reusing Yatagarasu's layers" }))
        .nest_service("/files", ObjectService::new(replica));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
