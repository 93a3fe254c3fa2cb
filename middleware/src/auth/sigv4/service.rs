//! [`SigV4`]: the service that verifies each request before its inner one.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use http::{Method, Request, Response};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::{is_sigv4, strip_credentials, SigV4Verifier};
use crate::auth::future::ResponseFuture;
use crate::auth::stats::{AuthOutcome, AuthStats};
use crate::auth::verify::Identity;
use crate::routing::OriginalUri;

/// SigV4 authentication in front of a service (see the [module](super) docs).
/// Rejections are S3 XML answers; the inner error passes through. The
/// caller's [`Identity`] is a request extension for the inner service and a
/// response extension for the request log, as with [`Auth`](crate::auth::Auth).
#[derive(Clone, Debug)]
pub struct SigV4<S> {
    pub(super) inner: S,
    pub(super) unsigned: Option<S>,
    pub(super) verifier: Arc<SigV4Verifier>,
    pub(super) stats: Arc<AuthStats>,
}

impl<S> SigV4<S> {
    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for SigV4<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<Oneshot<S, Request<B>>, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The service called is picked per request; it is driven to readiness by `oneshot`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !is_sigv4(&req) {
            if let Some(unsigned) = &self.unsigned {
                return ResponseFuture::passthrough(unsigned.clone().oneshot(req));
            }
        }
        let uri = req
            .extensions()
            .get::<OriginalUri>()
            .map_or_else(|| req.uri().clone(), |o| o.0.clone());
        match self
            .verifier
            .verify(req.method(), &uri, req.headers(), SystemTime::now())
        {
            Ok(access_key) => {
                self.stats.record(AuthOutcome::Success);
                strip_credentials(&mut req);
                let identity = Identity {
                    subject: Some(access_key.clone()),
                    claims: serde_json::json!({ "access_key_id": access_key, "auth": "sigv4" }),
                };
                req.extensions_mut().insert(identity.clone());
                ResponseFuture::inner(self.inner.clone().oneshot(req), identity)
            }
            Err(err) => {
                self.stats.record(err.outcome());
                let id = crate::auth::service::request_id(&req);
                tracing::debug!(reason = %err, request_id = %id, "SigV4 authentication failed");
                let mut res = err.to_s3_error().with_request_id(id).into_response();
                if req.method() == Method::HEAD {
                    *res.body_mut() = Body::empty();
                }
                res.extensions_mut().insert(err.outcome());
                ResponseFuture::rejected(res)
            }
        }
    }
}
