//! A bucket's `cors` block as a [`CorsLayer`] (tower-http), mounted outside
//! the bucket's auth and cache: a preflight `OPTIONS` carries no credentials
//! and is answered here, before auth could refuse it; every other answer of
//! the bucket (a cache hit, a 404, the auth's 401/403, a 502/503) gets the
//! headers on its way out, so a browser app can read it.
//!
//! The answers the edge makes before the bucket's stack runs (429 rate
//! limits, 503 load shedding, 414/431 request limits) get the same headers
//! from [`EdgeCors`]: the bucket is known from the path, so a browser app can
//! read a 429 and its `Retry-After` and back off instead of seeing an opaque
//! network error.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request};
use tower_http::cors::{preflight_request_headers, AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
use yatagarasu_middleware::auth::{JwtConfig, TokenSource};
use yatagarasu_middleware::routing::MatchedBucket;

use crate::config::{is_wildcard, CorsConfig};

/// The header names of a list (names that do not parse were refused by
/// validation).
fn names(list: &[String]) -> Vec<HeaderName> {
    list.iter()
        .filter_map(|h| HeaderName::from_bytes(h.trim().as_bytes()).ok())
        .collect()
}

/// The allowed origins, `None` for any (`["*"]`).
fn origins(cors: &CorsConfig) -> Option<Vec<HeaderValue>> {
    (!is_wildcard(&cors.allowed_origins)).then(|| {
        cors.allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
            .collect()
    })
}

/// The request headers the bucket's JWT auth reads a token from
/// (`token_sources: [{type: header, name}]`): a browser app can only send
/// one if the preflight allows it, so [`layer`] always does.
pub(super) fn token_headers(jwt: Option<&JwtConfig>) -> Vec<HeaderName> {
    jwt.map_or(&[][..], |jwt| &jwt.token_sources)
        .iter()
        .filter_map(|source| match source {
            TokenSource::Header { name, .. } => HeaderName::from_bytes(name.trim().as_bytes()).ok(),
            TokenSource::Bearer | TokenSource::Query { .. } => None,
        })
        .collect()
}

/// The layer of a validated `cors` block, for a bucket that reads tokens
/// from `token_headers` (allowed in preflights beside `allowed_headers`).
pub(super) fn layer(cors: &CorsConfig, token_headers: &[HeaderName]) -> CorsLayer {
    let origin = match origins(cors) {
        None => AllowOrigin::any(),
        Some(list) => AllowOrigin::list(list),
    };
    // `*` for headers: whatever the preflight asks is allowed (a literal `*`
    // would not cover `Authorization`, and not work with credentials).
    let headers = if is_wildcard(&cors.allowed_headers) {
        AllowHeaders::mirror_request()
    } else {
        let mut list = names(&cors.allowed_headers);
        for name in token_headers {
            if !list.contains(name) {
                list.push(name.clone());
            }
        }
        AllowHeaders::list(list)
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

/// What a bucket's [`CorsLayer`] adds to an actual (non-preflight) request,
/// for the answers the edge makes for that bucket before its stack runs.
/// Built once per bucket with a `cors` block; asked per request only for
/// requests carrying an `Origin` ([`BucketsCors::answer`]).
#[derive(Debug)]
pub struct EdgeCors {
    /// The allowed origins, `None` for any (`*`).
    origins: Option<Vec<HeaderValue>>,
    /// `Access-Control-Expose-Headers`, as the layer writes it.
    expose: Option<HeaderValue>,
    /// `Access-Control-Allow-Credentials: true`.
    credentials: bool,
    /// `Vary`, as the layer writes it.
    vary: HeaderValue,
}

impl EdgeCors {
    fn new(cors: &CorsConfig) -> Self {
        let expose = if is_wildcard(&cors.expose_headers) {
            Some(HeaderValue::from_static("*"))
        } else {
            let list = names(&cors.expose_headers);
            (!list.is_empty()).then(|| join(list, ","))
        };
        Self {
            origins: origins(cors),
            expose,
            credentials: cors.allow_credentials,
            vary: join(preflight_request_headers(), ", "),
        }
    }
}

/// `items` joined by `sep`, as one header value.
fn join(names: impl IntoIterator<Item = HeaderName>, sep: &str) -> HeaderValue {
    let text: Vec<HeaderName> = names.into_iter().collect();
    let text: Vec<&str> = text.iter().map(HeaderName::as_str).collect();
    HeaderValue::from_str(&text.join(sep)).expect("header names joined are a header value")
}

/// The [`EdgeCors`] of every bucket with a `cors` block, by bucket name
/// (names are unique); empty when no bucket has one.
#[derive(Debug, Default)]
pub struct BucketsCors(Vec<(Arc<str>, Arc<EdgeCors>)>);

impl BucketsCors {
    /// Adds bucket `name`'s block.
    pub(super) fn push(&mut self, name: &str, cors: &CorsConfig) {
        self.0.push((name.into(), Arc::new(EdgeCors::new(cors))));
    }

    /// The CORS of the edge's own answers to `req`, routed to `bucket`:
    /// `None` unless that bucket has a `cors` block and `req` an `Origin`
    /// (without one it is no browser's cross-origin request). With no `cors`
    /// block anywhere, one length check.
    pub fn answer(&self, bucket: Option<&MatchedBucket>, req: &Request<Body>) -> Option<CorsAnswer> {
        if self.0.is_empty() {
            return None;
        }
        let bucket = bucket?;
        let (_, cors) = self.0.iter().find(|(name, _)| **name == *bucket.name)?;
        let origin = req.headers().get(header::ORIGIN)?;
        Some(CorsAnswer {
            cors: cors.clone(),
            origin: origin.clone(),
        })
    }
}

/// The CORS headers of the edge's own answers to one request from a
/// browser: see [`BucketsCors::answer`].
#[derive(Debug, Clone)]
pub struct CorsAnswer {
    cors: Arc<EdgeCors>,
    origin: HeaderValue,
}

impl CorsAnswer {
    /// Adds what the bucket's [`CorsLayer`] would to an actual request from
    /// this origin: `Access-Control-Allow-Origin` (only for an allowed
    /// origin), `Access-Control-Allow-Credentials` when configured,
    /// `Vary` and `Access-Control-Expose-Headers`.
    pub fn add_to(&self, headers: &mut HeaderMap) {
        let cors = &self.cors;
        let allowed = match &cors.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(list) => list.contains(&self.origin).then(|| self.origin.clone()),
        };
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if cors.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.append(header::VARY, cors.vary.clone());
        if let Some(expose) = &cors.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
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
        let svc = layer(&config(&["https://app.example.com"]), &[]).layer(refusing());
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
        let svc = layer(&config(&["https://app.example.com"]), &[]).layer(refusing());
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

    /// The CORS headers of a response, sorted, to compare.
    fn cors_headers(h: &axum::http::HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = h
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("access-control-") || *n == header::VARY)
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        v.sort();
        v
    }

    /// The edge's own answers get exactly what the bucket's layer adds to an
    /// actual request (whatever the block and the origin), and the layer
    /// always sets `Vary`, which is how the edge tells its answers apart.
    #[tokio::test]
    async fn edge_answers_get_the_headers_of_the_layer() {
        let mut credentials = config(&["https://app.example.com", "https://b.example"]);
        credentials.allow_credentials = true;
        let mut own_list = config(&["*"]);
        own_list.expose_headers = vec!["etag".into(), " Retry-After ".into()];
        let mut all = config(&["https://app.example.com"]);
        all.expose_headers = vec!["*".into()];
        for block in [
            config(&["https://app.example.com"]),
            config(&["*"]),
            credentials,
            own_list,
            all,
        ] {
            let mut table = BucketsCors::default();
            table.push("b", &block);
            for origin in ["https://app.example.com", "https://b.example", "https://evil.example"] {
                let req = || {
                    Request::get("/b/k")
                        .header(header::ORIGIN, origin)
                        .body(Body::empty())
                        .unwrap()
                };
                let layered = layer(&block, &[]).layer(refusing()).oneshot(req()).await.unwrap();
                assert!(layered.headers().contains_key(header::VARY), "{block:?} {origin}");
                let bucket = MatchedBucket {
                    name: "b".into(),
                    operation: yatagarasu_middleware::s3api::S3Operation::GetObject,
                };
                let answer = table.answer(Some(&bucket), &req()).expect("a block and an origin");
                let mut edge = axum::http::HeaderMap::new();
                answer.add_to(&mut edge);
                assert_eq!(
                    cors_headers(&edge),
                    cors_headers(layered.headers()),
                    "{block:?} {origin}"
                );
            }
        }
    }

    #[test]
    fn no_answer_without_a_block_or_an_origin() {
        let bucket = |name: &str| MatchedBucket {
            name: name.into(),
            operation: yatagarasu_middleware::s3api::S3Operation::GetObject,
        };
        let with_origin = Request::get("/a/k")
            .header(header::ORIGIN, "https://app.example.com")
            .body(Body::empty())
            .unwrap();
        assert!(BucketsCors::default()
            .answer(Some(&bucket("a")), &with_origin)
            .is_none());
        let mut table = BucketsCors::default();
        table.push("a", &config(&["*"]));
        assert!(table.answer(Some(&bucket("a")), &with_origin).is_some());
        assert!(table.answer(Some(&bucket("other")), &with_origin).is_none());
        assert!(table.answer(None, &with_origin).is_none());
        let without = Request::get("/a/k").body(Body::empty()).unwrap();
        assert!(table.answer(Some(&bucket("a")), &without).is_none());
    }

    /// A bucket that reads its token from a header of its own allows that
    /// header in preflights, beside the list (default or not).
    #[tokio::test]
    async fn a_token_header_is_allowed_in_preflights() {
        let jwt: JwtConfig = serde_json::from_value(serde_json::json!({
            "algorithm": "HS256",
            "secret": "0123456789abcdef0123456789abcdef",
            "token_sources": [
                {"type": "query", "name": "token"},
                {"type": "header", "name": "X-Api-Token", "prefix": "T "},
                {"type": "bearer"},
                {"type": "header", "name": "authorization"}
            ]
        }))
        .unwrap();
        let tokens = token_headers(Some(&jwt));
        assert_eq!(tokens, ["x-api-token", "authorization"]);
        assert!(token_headers(None).is_empty());
        let mut own = config(&["https://app.example.com"]);
        own.allowed_headers = vec!["range".into()];
        for block in [config(&["https://app.example.com"]), own] {
            let req = Request::options("/b/k")
                .header(header::ORIGIN, "https://app.example.com")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-api-token,range")
                .body(Body::empty())
                .unwrap();
            let res = layer(&block, &tokens).layer(refusing()).oneshot(req).await.unwrap();
            let allowed: Vec<&str> = res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .split(',')
                .collect();
            assert!(allowed.contains(&"x-api-token"), "{block:?}: {allowed:?}");
            assert!(allowed.contains(&"range"), "{block:?}: {allowed:?}");
            // Named twice (a list's and a token source's), allowed once.
            assert_eq!(
                allowed.iter().filter(|h| **h == "authorization").count(),
                1,
                "{allowed:?}"
            );
        }
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
        let res = layer(&c, &[]).layer(refusing()).oneshot(req).await.unwrap();
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, x-custom"
        );
    }
}
