//! Stateless JWT authentication: [`AuthLayer`] / [`Auth`]; SigV4-signed S3
//! clients: [`SigV4Layer`] / [`SigV4`] (see [`sigv4`]).
//!
//! One layer enforces one `jwt:` block ([`JwtConfig`]):
//!
//! - the token is looked for in the configured [`TokenSource`]s, in order
//!   (`Authorization: Bearer`, a header with an optional prefix, a query
//!   parameter);
//! - every client credential is then removed from the request (the
//!   `Authorization` header, the token headers, the token query parameters),
//!   so nothing of it reaches inner layers, logs or the upstream;
//! - the token must be signed with the one configured algorithm (`none` and
//!   any other `alg` are rejected) by the configured key: an HMAC `secret`, a
//!   PEM `public_key_file`, or a key of a JWKS (`jwks_url`, picked by `kid`,
//!   fetched at start, refreshed in the background and again on an unknown
//!   `kid`, at most every `jwks_min_refetch_seconds`);
//! - `exp` is required; `exp`, `nbf`, `iss` and `aud` are checked (with
//!   `leeway_seconds` of clock skew);
//! - the claims must pass every [`ClaimRule`].
//!
//! | outcome | answer |
//! |---|---|
//! | no token | 401 `AccessDenied`, `WWW-Authenticate: Bearer` |
//! | malformed, bad signature, wrong `alg`, expired, not yet valid, wrong `iss`/`aud`, unknown `kid` | 401 `InvalidToken`/`ExpiredToken`, `WWW-Authenticate: Bearer error="invalid_token"` |
//! | claims fail a rule | 403 `AccessDenied` |
//! | JWKS never loaded | 503 `ServiceUnavailable`, `Retry-After: 1` |
//! | valid | the inner service's answer |
//!
//! Bodies are S3-style XML naming the `x-request-id`; the token is never
//! echoed nor logged. On success the [`Identity`] (`sub` and all claims) is a
//! request extension for inner layers and a response extension for the
//! request log; on failure the response carries the [`AuthOutcome`] as an
//! extension. Every outcome is counted in [`AuthStats`].
//!
//! # Example
//!
//! ```no_run
//! use axum::{routing::get, Extension, Router};
//! use tower::ServiceBuilder;
//! use yatagarasu_middleware::auth::{AuthLayer, Identity, JwtConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg: JwtConfig = serde_json::from_str(
//!     r#"{"algorithm": "HS256", "secret": "change-me", "issuer": "https://idp.example",
//!         "claims": [{"claim": "role", "in": ["reader", "admin"]}]}"#,
//! )?;
//! let auth = AuthLayer::from_config_async(&cfg).await?;
//! let stats = auth.stats().clone(); // export these counters as metrics
//!
//! let app: Router = Router::new()
//!     .route("/whoami", get(|Extension(id): Extension<Identity>| async move {
//!         id.subject.unwrap_or_default()
//!     }))
//!     .layer(ServiceBuilder::new().layer(auth));
//! # let _ = stats;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

mod claims;
mod config;
mod future;
mod keys;
mod layer;
mod service;
pub mod sigv4;
mod stats;
mod verify;

pub use config::{
    Audience, AuthConfig, AuthConfigError, ClaimRule, JwtConfig, Secret, SigV4Config, SigV4Credential, TokenSource,
    DEFAULT_JWKS_MIN_REFETCH_SECONDS, DEFAULT_JWKS_REFRESH_SECONDS, DEFAULT_JWKS_TIMEOUT_SECONDS,
    DEFAULT_LEEWAY_SECONDS,
};
pub use future::ResponseFuture;
pub use layer::AuthLayer;
pub use service::Auth;
pub use sigv4::{SigV4, SigV4Layer};
pub use stats::{AuthOutcome, AuthStats};
pub use verify::Identity;
