//! The protection layers ([`protect`](yatagarasu_middleware::protect)) on an
//! app's own routes, no S3 involved: request size limits, a per-client-IP
//! rate limit and a bound on requests in flight.
//!
//! ```sh
//! cargo run -p yatagarasu-middleware --example protect
//! for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code}\n' http://127.0.0.1:3004/; done  # 200 200 200 429
//! curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:3004/$(head -c 300 /dev/zero | tr '\0' a)"  # 414
//! curl -s http://127.0.0.1:3004/slow & curl -si http://127.0.0.1:3004/slow   # 503 while the first one runs
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tower::ServiceBuilder;
use yatagarasu_middleware::protect::{LoadShedLayer, RateLimitLayer, RequestLimitsLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shed = LoadShedLayer::new(1).with_retry_after(2);
    let in_flight = shed.clone();

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "done\n"
            }),
        )
        .route("/{*rest}", get(|| async { "anything\n" }))
        .layer(
            ServiceBuilder::new()
                .layer(RequestLimitsLayer::new(256, 16 * 1024))
                // 1 request per second per client IP, bursts of 3.
                .layer(RateLimitLayer::new().with_per_ip(1, 3))
                .layer(shed),
        )
        // Outside the layers: never limited.
        .route(
            "/in-flight",
            get(move || {
                let n = in_flight.in_flight();
                async move { format!("{n}\n") }
            }),
        );

    let listener =
        tokio::net::TcpListener::bind(std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3004".into())).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // The per-IP limit needs the peer address: serve with connect info.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
