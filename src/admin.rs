//! The metrics listener: `GET /metrics` (Prometheus text), `GET /health` and
//! `GET /ready` (as on the proxy's port), and the admin
//! endpoints, which need `Authorization: Bearer <metrics.admin_token>` and
//! answer 404 when no token is configured:
//!
//! - `POST /admin/reload`: re-read the config file (as SIGHUP does);
//! - `DELETE /admin/cache`, `DELETE /admin/cache/{bucket}`,
//!   `DELETE /admin/cache/{bucket}/{*key}`: purge the cache, on every
//!   instance sharing its Redis tier (the answer's `broadcast` says whether
//!   the purge was announced to them).

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use yatagarasu_middleware::cache::{Broadcast, CacheStore, PurgeError};

use crate::reload::{Live, ReloadError};

/// The router of the metrics listener.
pub fn router(live: Arc<Live>) -> Router {
    let admin = Router::new()
        .route("/admin/reload", post(reload))
        .route("/admin/cache", delete(purge_all))
        .route("/admin/cache/{bucket}", delete(purge_bucket))
        .route("/admin/cache/{bucket}/{*key}", delete(purge_object))
        .route_layer(middleware::from_fn_with_state(live.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        // As on the proxy's port, for probes that cannot reach it (a
        // `client_ca_file` there needs a client certificate probes lack).
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
        .merge(admin)
        // Bodies for what axum answers empty: a wrong method (with `Allow`), an unknown path.
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({ "error": "method not allowed: see the Allow header" })),
            )
        })
        .fallback(|| async {
            not_found(
                "no such endpoint: GET /metrics, GET /health, GET /ready, POST /admin/reload, DELETE /admin/cache[/{bucket}[/{key}]]".into(),
            )
        })
        .with_state(live)
}

/// The proxy's `/ready`, answered from the running config's state.
async fn ready(State(live): State<Arc<Live>>) -> impl IntoResponse {
    crate::readiness::ready_handler(State(live.app().ready.clone())).await
}

async fn metrics(State(live): State<Arc<Live>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        live.app().metrics.render(),
    )
}

/// Equal lengths and bytes, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(State(live): State<Arc<Live>>, req: Request, next: Next) -> Response {
    let app = live.app();
    let Some(token) = app.config.metrics.admin_token.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "admin endpoints are disabled: set metrics.admin_token" })),
        )
            .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            // The scheme is case-insensitive (RFC 9110 §11.1), as in the JWT layer.
            let (scheme, token) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .unwrap_or_default();
    // Trimmed on both sides: a token from a Secret file often ends with a
    // newline, which no Authorization header can carry.
    if !same(given.trim().as_bytes(), token.expose().trim().as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({ "error": "a valid bearer token is required" })),
        )
            .into_response();
    }
    next.run(req).await
}

async fn reload(State(live): State<Arc<Live>>) -> Response {
    // The listeners' TLS certificates are read again too (issue 14).
    crate::tls::request_reload();
    match live.reload_from_file().await {
        Ok(report) => (StatusCode::OK, Json(json!({ "status": "reloaded", "report": report }))).into_response(),
        Err(e) => {
            let status = match e {
                ReloadError::NoFile => StatusCode::CONFLICT,
                ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadError::Build(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let errors: Vec<String> = match &e {
                ReloadError::Invalid(errors) => errors.errors.iter().map(ToString::to_string).collect(),
                other => vec![other.to_string()],
            };
            (status, Json(json!({ "status": "failed", "errors": errors }))).into_response()
        }
    }
}

fn purged(what: String, result: Result<Broadcast, PurgeError>) -> Response {
    match result {
        Ok(broadcast) => {
            tracing::info!(what = %what, broadcast = ?broadcast, "cache purged");
            (
                StatusCode::OK,
                Json(json!({ "status": "purged", "what": what, "broadcast": broadcast_json(&broadcast) })),
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "status": "failed", "error": e.to_string(), "broadcast": broadcast_json(e.broadcast()) })),
        )
            .into_response(),
    }
}

/// Whether the other instances sharing the Redis tier were told:
/// `{"published": true, "subscribers": N}` (this instance included), or
/// `{"published": false, "reason": ...}`.
fn broadcast_json(broadcast: &Broadcast) -> serde_json::Value {
    match broadcast {
        Broadcast::Published { subscribers } => json!({ "published": true, "subscribers": subscribers }),
        Broadcast::NoRedis => json!({
            "published": false,
            "reason": "no shared redis tier: purge each instance on its own",
        }),
        Broadcast::Failed(error) => {
            tracing::warn!(%error, "cache purge not announced to the other instances");
            json!({ "published": false, "reason": error })
        }
    }
}

/// The cache, when one is configured and `bucket` (if given) is a bucket of the live config.
fn cache_of(live: &Live, bucket: Option<&str>) -> Result<CacheStore, String> {
    let app = live.app();
    if let Some(bucket) = bucket {
        if !app.config.buckets.iter().any(|b| b.name == bucket) {
            return Err(format!("no bucket named '{bucket}'"));
        }
    }
    app.cache.clone().ok_or_else(|| "no cache is configured".into())
}

fn not_found(error: String) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": error }))).into_response()
}

async fn purge_all(State(live): State<Arc<Live>>) -> Response {
    match cache_of(&live, None) {
        Ok(cache) => purged("all".into(), cache.purge_all().await),
        Err(e) => not_found(e),
    }
}

async fn purge_bucket(State(live): State<Arc<Live>>, Path(bucket): Path<String>) -> Response {
    match cache_of(&live, Some(&bucket)) {
        Ok(cache) => purged(format!("bucket {bucket}"), cache.purge_bucket(&bucket).await),
        Err(e) => not_found(e),
    }
}

async fn purge_object(State(live): State<Arc<Live>>, Path((bucket, key)): Path<(String, String)>) -> Response {
    match cache_of(&live, Some(&bucket)) {
        Ok(cache) => purged(format!("{bucket}/{key}"), cache.purge_object(&bucket, &key).await),
        Err(e) => not_found(e),
    }
}
