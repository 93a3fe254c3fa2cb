//! The object cache ([`CacheLayer`]) with its memory tier only (no Redis) in
//! front of one S3 replica, and an admin route that purges it through the
//! [`CacheStore`] API.
//!
//! ```sh
//! S3_ENDPOINT=http://127.0.0.1:9000 S3_BUCKET=data-bucket \
//! S3_ACCESS_KEY=minioadmin S3_SECRET_KEY=minioadmin \
//!   cargo run -p yatagarasu-middleware --example memory_cache
//! curl -i http://127.0.0.1:3003/files/test.txt          # X-Cache: MISS
//! curl -i http://127.0.0.1:3003/files/test.txt          # X-Cache: HIT-MEMORY
//! curl -X POST http://127.0.0.1:3003/purge/test.txt     # purge one object
//! curl -X POST http://127.0.0.1:3003/purge              # purge the bucket
//! curl http://127.0.0.1:3003/stats
//! ```

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use rusty_s3::Credentials;
use tower::ServiceBuilder;
use yatagarasu_middleware::cache::{CacheConfig, CacheLayer, CacheStore};
use yatagarasu_middleware::object::ObjectService;
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

    // The defaults: a 256 MiB memory tier, 30 min TTL, Redis off.
    let mut config = CacheConfig::default();
    config.memory.ttl_seconds = 60;
    let store = CacheStore::new(&config)?;

    let objects = ServiceBuilder::new()
        .layer(CacheLayer::new(store.clone(), bucket.clone()))
        .service(replica);

    let admin = Router::new()
        .route("/purge", post(purge_bucket))
        .route("/purge/{*key}", post(purge_object))
        .route(
            "/stats",
            get(|State((store, _)): State<(CacheStore, String)>| async move { format!("{:#?}\n", store.snapshot()) }),
        )
        .with_state((store, bucket));

    let app = Router::new()
        .nest_service("/files", ObjectService::new(objects))
        .merge(admin);

    let listener = tokio::net::TcpListener::bind(var("LISTEN", "127.0.0.1:3003")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn purge_bucket(State((store, bucket)): State<(CacheStore, String)>) -> (StatusCode, String) {
    match store.purge_bucket(&bucket).await {
        Ok(broadcast) => (StatusCode::OK, format!("purged {bucket} ({broadcast:?})\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn purge_object(
    State((store, bucket)): State<(CacheStore, String)>,
    Path(key): Path<String>,
) -> (StatusCode, String) {
    match store.purge_object(&bucket, &key).await {
        Ok(broadcast) => (StatusCode::OK, format!("purged {bucket}/{key} ({broadcast:?})\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
