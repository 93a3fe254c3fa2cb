//! An axum app that S3 clients (aws-cli, SDKs) can read a bucket from with
//! keys the app issues ([`SigV4Layer`]), while the app signs its own
//! requests to the real S3 server with other keys. [`S3Api`] answers the
//! bucket calls (`ListObjectsV2`, `HeadBucket`, `GetBucketLocation`) beside
//! object reads, so `aws s3 ls` and `aws s3 sync` work too.
//!
//! ```sh
//! S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=data-bucket \
//! S3_ACCESS_KEY=minioadmin S3_SECRET_KEY=minioadmin \
//!   cargo run -p yatagarasu-middleware --example sigv4_bucket
//! AWS_ACCESS_KEY_ID=client AWS_SECRET_ACCESS_KEY=client-secret AWS_DEFAULT_REGION=us-east-1 \
//!   aws --endpoint-url http://127.0.0.1:3005 s3api get-object --bucket data-bucket --key test.txt out.txt
//! # with the same variables: aws --endpoint-url http://127.0.0.1:3005 s3 ls s3://data-bucket/
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rusty_s3::Credentials;
use tower::Layer;
use yatagarasu_middleware::auth::{Secret, SigV4Config, SigV4Credential, SigV4Layer};
use yatagarasu_middleware::routing::OriginalUriLayer;
use yatagarasu_middleware::s3api::S3Api;
use yatagarasu_middleware::upstream::{s3_bucket, S3Upstream};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let endpoint = var("S3_ENDPOINT", "http://127.0.0.1:9000").parse()?;
    let bucket = var("S3_BUCKET", "data-bucket");
    let replica = S3Upstream::new(
        "s3",
        s3_bucket(Some(&endpoint), &bucket, &var("S3_REGION", "us-east-1"))?,
        reqwest::Client::new(),
    )
    .with_credentials(Credentials::new(
        var("S3_ACCESS_KEY", "minioadmin"),
        var("S3_SECRET_KEY", "minioadmin"),
    ))
    .with_timeout(Duration::from_secs(5));

    // The keys this app gives its own clients (never the upstream's).
    let sigv4 = SigV4Layer::from_config(&SigV4Config {
        credentials: vec![SigV4Credential {
            access_key_id: var("CLIENT_ACCESS_KEY", "client"),
            secret_access_key: Secret::new(var("CLIENT_SECRET_KEY", "client-secret")),
        }],
    })?;

    // Path-style S3 addressing: the bucket is the first path segment. The
    // client signed `/{bucket}/{key}`: `OriginalUriLayer` keeps that path
    // for SigV4 before `nest_service` strips the prefix.
    let app = Router::new()
        .route("/", get(|| async { "an S3 face for one bucket\n" }))
        .nest_service(
            &format!("/{bucket}"),
            sigv4.layer(S3Api::new(bucket.clone(), replica.clone(), replica)),
        )
        // Without it SigV4 would check `/{key}`: every signature would fail.
        .layer(OriginalUriLayer::new());

    let listener = tokio::net::TcpListener::bind(var("LISTEN", "127.0.0.1:3005")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
