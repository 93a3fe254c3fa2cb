use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use tower::{Service, ServiceExt};

use super::future::ResponseFuture;
use super::layer::AuthLayer;
use super::stats::{AuthOutcome, AuthStats};
use super::verify::{Check, Verifier};
use crate::error::S3Error;

/// JWT authentication in front of a service.
///
/// Takes the token from the configured sources, removes every client
/// credential from the request, verifies the token, checks the claim rules,
/// and calls the inner service with the caller's [`Identity`](super::Identity) as a request
/// extension (also copied to the response's extensions, for the request log).
/// Rejections are answered here as S3-style XML: 401 (with
/// `WWW-Authenticate: Bearer`) or 403, 503 if no JWKS could ever be loaded.
/// The inner error type passes through unchanged.
#[derive(Clone)]
pub struct Auth<S> {
    pub(crate) inner: S,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) stats: Arc<AuthStats>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Auth<S> {
    /// Wraps `inner` with the settings of `layer` (same as `layer.layer(inner)`).
    pub fn layer(layer: &AuthLayer, inner: S) -> Self {
        tower::Layer::layer(layer, inner)
    }

    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let token = self.verifier.take_token(&mut req);
        let Some(token) = token else {
            return self.reject(AuthOutcome::Missing, &req);
        };
        match self.verifier.check(token) {
            Check::Done(Ok(identity)) => {
                self.stats.record(AuthOutcome::Success);
                tracing::debug!(subject = identity.subject.as_deref(), "authenticated");
                req.extensions_mut().insert(identity.clone());
                ResponseFuture::inner(self.inner.call(req), identity)
            }
            Check::Done(Err(outcome)) => self.reject(outcome, &req),
            Check::NeedKeys { token, kid } => {
                // The ready inner service goes into the future; a clone stays.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let verifier = self.verifier.clone();
                let stats = self.stats.clone();
                let request_id = request_id(&req);
                ResponseFuture::fetching(Box::pin(async move {
                    match verifier.finish(token, kid).await {
                        Ok(identity) => {
                            stats.record(AuthOutcome::Success);
                            tracing::debug!(subject = identity.subject.as_deref(), "authenticated");
                            req.extensions_mut().insert(identity.clone());
                            let mut res = inner.oneshot(req).await?;
                            res.extensions_mut().insert(identity);
                            Ok(res)
                        }
                        Err(outcome) => {
                            stats.record(outcome);
                            Ok(rejection(outcome, request_id))
                        }
                    }
                }))
            }
        }
    }
}

impl<S> Auth<S> {
    fn reject<B, F, E>(&self, outcome: AuthOutcome, req: &Request<B>) -> ResponseFuture<F, E> {
        self.stats.record(outcome);
        ResponseFuture::rejected(rejection(outcome, request_id(req)))
    }
}

/// The request's `x-request-id`, or a new id when no layer in front set one,
/// so that every rejection names its request.
pub(crate) fn request_id<B>(req: &Request<B>) -> String {
    match crate::object::request_id(req.headers()) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// The client's answer for a failed authentication. Never contains the token.
pub(crate) fn rejection(outcome: AuthOutcome, request_id: String) -> Response<Body> {
    tracing::debug!(reason = outcome.as_str(), request_id = %request_id, "authentication failed");
    let (err, challenge) = match outcome {
        AuthOutcome::Forbidden | AuthOutcome::Success => (S3Error::access_denied(), None),
        AuthOutcome::Missing => (
            S3Error::new(
                StatusCode::UNAUTHORIZED,
                "AccessDenied",
                "Authentication required: no bearer token was provided.",
            ),
            Some("Bearer"),
        ),
        AuthOutcome::KeysUnavailable => (
            S3Error::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The token verification keys are unavailable. Please retry.",
            )
            .with_retry_after(1),
            None,
        ),
        AuthOutcome::Expired => (
            S3Error::new(
                StatusCode::UNAUTHORIZED,
                "ExpiredToken",
                "The provided token has expired.",
            ),
            Some("Bearer error=\"invalid_token\""),
        ),
        _ => (
            S3Error::new(
                StatusCode::UNAUTHORIZED,
                "InvalidToken",
                "The provided token is malformed or otherwise invalid.",
            ),
            Some("Bearer error=\"invalid_token\""),
        ),
    };
    let mut res = err.with_request_id(request_id).into_response();
    if let Some(challenge) = challenge {
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    }
    res.extensions_mut().insert(outcome);
    res
}

#[cfg(test)]
pub(crate) mod tests {
    use std::convert::Infallible;

    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::auth::{JwtConfig, Secret};

    /// The `RequestId` of an S3 XML error body.
    pub(crate) async fn request_id_in(res: Response<Body>) -> String {
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        let xml = String::from_utf8(body.to_vec()).unwrap();
        let start = xml.find("<RequestId>").expect("a RequestId element") + "<RequestId>".len();
        xml[start..xml.find("</RequestId>").unwrap()].to_owned()
    }

    #[tokio::test]
    async fn rejections_name_a_request_id_even_without_one_from_a_layer_in_front() {
        let cfg = JwtConfig {
            algorithm: "HS256".into(),
            secret: Some(Secret::new("a-test-secret-of-at-least-32-bytes!!")),
            ..JwtConfig::default()
        };
        let auth = AuthLayer::from_config(&cfg)
            .unwrap()
            .layer(tower::service_fn(|_req: Request<Body>| async {
                Ok::<_, Infallible>(Response::new(Body::empty()))
            }));
        for req in [
            Request::get("/k").body(Body::empty()).unwrap(),
            Request::get("/k")
                .header("authorization", "Bearer x.y.z")
                .body(Body::empty())
                .unwrap(),
        ] {
            let res = auth.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            assert!(!request_id_in(res).await.is_empty());
        }
        // The id of a layer in front is kept.
        let req = Request::get("/k")
            .header("x-request-id", "rid-7")
            .body(Body::empty())
            .unwrap();
        assert_eq!(request_id_in(auth.oneshot(req).await.unwrap()).await, "rid-7");
    }
}
