//! JWT authentication ([`AuthLayer`]) in front of an app's own handlers, with
//! no S3 behind it: `/public` is open, `/api/*` needs a bearer token.
//!
//! ```sh
//! JWT_SECRET=change-me cargo run -p yatagarasu-middleware --example jwt_auth
//! # it prints a token for sub=alice, role=reader
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3001/api/whoami
//! curl -i http://127.0.0.1:3001/api/whoami           # 401 AccessDenied
//! curl -i -H 'Authorization: Bearer x.y.z' http://127.0.0.1:3001/api/whoami  # 401 InvalidToken
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::get;
use axum::{Extension, Json, Router};
use yatagarasu_middleware::auth::{AuthLayer, ClaimRule, Identity, JwtConfig, Secret};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "change-me".to_owned());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".to_owned());

    // The config as plain Rust (a serde struct: it also reads from YAML/JSON).
    let role_rule: ClaimRule = serde_json::from_value(serde_json::json!({
        "claim": "role", "in": ["reader", "admin"]
    }))?;
    let cfg = JwtConfig {
        algorithm: "HS256".to_owned(),
        secret: Some(Secret::new(secret.clone())),
        claims: vec![role_rule],
        ..JwtConfig::default()
    };
    let auth = AuthLayer::from_config_async(&cfg).await?;
    let stats = auth.stats().clone();

    // Only the routes of `api` are authenticated (`Router::layer` wraps the
    // routes added before it); `/public` and `/stats` are merged afterwards.
    let api =
        Router::new()
            .route(
                "/api/whoami",
                get(|Extension(id): Extension<Identity>| async move {
                    format!("hello {}\n", id.subject.unwrap_or_default())
                }),
            )
            .route(
                "/api/claims",
                get(|Extension(id): Extension<Identity>| async move { Json(id.claims) }),
            )
            .layer(auth);
    let app = Router::new()
        .route("/public", get(|| async { "open to all\n" }))
        .route(
            "/stats",
            get(move || {
                let stats = stats.clone();
                async move {
                    // One counter per outcome, e.g. for `auth_total{reason="expired"}`.
                    let lines: Vec<String> = stats.snapshot().iter().map(|(o, n)| format!("{o} {n}\n")).collect();
                    lines.concat()
                }
            }),
        )
        .merge(api);

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mint = |sub: &str, role: &str, exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": sub, "role": role, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
    };
    println!("reader token:  {}", mint("alice", "reader", now + 3600)?);
    println!("guest token:   {}", mint("bob", "guest", now + 3600)?);
    println!("expired token: {}", mint("carol", "reader", now - 3600)?);

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
