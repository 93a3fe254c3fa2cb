//! A bucket's `cors` block as a [`CorsLayer`] (tower-http), mounted outside
//! the bucket's auth and cache: a preflight `OPTIONS` carries no credentials
//! and is answered here, before auth could refuse it; every other answer of
//! the bucket (a cache hit, a 404, the auth's 401/403, a 502/503) gets the
//! headers on its way out, so a browser app can read it.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::config::{is_wildcard, CorsConfig};

/// The layer of a validated `cors` block.
pub(super) fn layer(cors: &CorsConfig) -> CorsLayer {
    let names = |list: &[String]| -> Vec<HeaderName> {
        list.iter()
            .filter_map(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
            .collect()
    };
    let origin = if is_wildcard(&cors.allowed_origins) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            cors.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    // `*` for headers: whatever the preflight asks is allowed (a literal `*`
    // would not cover `Authorization`, and not work with credentials).
    let headers = if is_wildcard(&cors.allowed_headers) {
        AllowHeaders::mirror_request()
    } else {
        AllowHeaders::list(names(&cors.allowed_headers))
    };
    let expose = if is_wildcard(&cors.expose_headers) {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(names(&cors.expose_headers))
    };
    let methods: Vec<Method> = cors
        .allowed_methods
        .iter()
        .filter_map(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .max_age(Duration::from_secs(cors.max_age_seconds))
        .allow_credentials(cors.allow_credentials)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use axum::body::Body;
    use axum::http::{header, Request, Response, StatusCode};
    use tower::{service_fn, Layer, ServiceExt};

    use super::*;

    fn config(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            ..CorsConfig::default()
        }
    }

    /// An inner service that refuses everything, as auth does without a token.
    fn refusing() -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone {
        service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::builder().status(401).body(Body::empty()).unwrap())
        })
    }

    #[tokio::test]
    async fn a_preflight_is_answered_before_the_inner_service() {
        let svc = layer(&config(&["https://app.example.com"])).layer(refusing());
        let req = Request::options("/b/k")
            .header(header::ORIGIN, "https://app.example.com")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, range")
            .body(Body::empty())
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let h = res.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,HEAD");
        assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap()
            .contains("authorization"));
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
    }

    #[tokio::test]
    async fn a_refusal_carries_the_headers_and_a_stranger_gets_no_origin() {
        let svc = layer(&config(&["https://app.example.com"])).layer(refusing());
        let get = |origin: &'static str| {
            Request::get("/b/k")
                .header(header::ORIGIN, origin)
                .body(Body::empty())
                .unwrap()
        };
        let res = svc.clone().oneshot(get("https://app.example.com")).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        let exposed = res.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            exposed.contains("etag") && exposed.contains("content-range"),
            "{exposed}"
        );
        let res = svc.oneshot(get("https://evil.example")).await.unwrap();
        assert!(res.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[tokio::test]
    async fn a_wildcard_header_list_mirrors_the_preflight() {
        let mut c = config(&["*"]);
        c.allowed_headers = vec!["*".into()];
        let req = Request::options("/b/k")
            .header(header::ORIGIN, "https://any.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, x-custom")
            .body(Body::empty())
            .unwrap();
        let res = layer(&c).layer(refusing()).oneshot(req).await.unwrap();
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, x-custom"
        );
    }
}
