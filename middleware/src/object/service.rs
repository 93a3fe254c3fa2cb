use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use http::{header, HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{Service, ServiceExt};

use super::key::decode_shared_key;
use super::{KeyError, ObjectMethod, ObjectRequest};
use crate::error::{FetchError, S3Error};
use crate::http::conditional::{self, not_modified, Precondition};
use crate::http::headers::{REPLICA_HEADER, REQUEST_ID, X_CACHE};

/// The client-facing end of an object stack.
///
/// Takes `GET`/`HEAD` requests whose path is the object key (`/dir/file.txt`,
/// percent-encoded), calls the inner object service (a replica, a failover, a
/// cache...) with an [`ObjectRequest`], streams its answer back, and maps every
/// failure to the S3-style response a client expects: 405 with `Allow` for
/// other methods, 400 for paths that cannot be keys, 404/403/412/416 as the
/// upstream said, 502/503/504 when the upstream failed. It never fails itself
/// (`Error = Infallible`), so it can be mounted in any axum `Router`.
///
/// It reads objects only: the query parameters S3 defines for a read
/// ([`FORWARDED_OBJECT_PARAMS`](super::FORWARDED_OBJECT_PARAMS): `versionId`,
/// `response-content-type`...) are signed into the upstream request and the
/// rest are dropped, so a sub-resource call such as
/// `GET /key?tagging` or `?acl` is answered with the object itself. For S3
/// SDK clients, mount [`S3Api`](crate::s3api::S3Api) instead: it wraps an
/// `ObjectService`, answers bucket calls (listings) and refuses the object
/// APIs it does not serve with `501 NotImplemented`.
///
/// Preconditions are evaluated again on the upstream's `ETag`/`Last-Modified`,
/// so `304`/`412` come out right even from S3-compatible servers that ignore them.
/// So is `If-Range`: a `206` whose validators do not match it (an upstream that
/// ignores `If-Range`, as S3 itself does) is dropped and the whole object is
/// fetched and sent with `200`, so a resuming client never splices two versions.
#[derive(Debug, Clone)]
pub struct ObjectService<S> {
    inner: S,
}

impl<S> ObjectService<S> {
    /// Wraps an object-level service.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for ObjectService<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness of the inner service is awaited per request (in `call`),
        // so that its errors become responses rather than service errors.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Set by a request-id layer in front (the binary's); minted otherwise
        // when an error body needs one.
        let request_id = req.headers().get(REQUEST_ID).cloned();
        let object = match to_object_request(&req, request_id.clone()) {
            Ok(object) => object,
            Err(err) => {
                return ResponseFuture {
                    state: State::Answered {
                        res: Some(err.with_request_id(id_text(request_id.as_ref())).into_response()),
                    },
                }
            }
        };
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let conditional_range =
            object.headers().contains_key(header::RANGE) && object.headers().contains_key(header::IF_RANGE);
        // The request itself is kept only when its answer depends on its
        // headers (preconditions, `If-Range`); else its method and key do.
        let conditions =
            (conditional_range || conditional::has_preconditions(object.headers())).then(|| object.clone());
        let kept = Kept::new(&object, conditions);
        ResponseFuture {
            state: State::Fetching {
                fut: inner.oneshot(object),
                whole: conditional_range.then(|| self.inner.clone()),
                kept,
                request_id,
            },
        }
    }
}

/// What the answer needs of a request sent to the inner service.
struct Kept {
    method: ObjectMethod,
    key: Arc<str>,
    /// The whole request, when it carries preconditions or `If-Range`.
    conditions: Option<ObjectRequest>,
}

impl Kept {
    fn new(object: &ObjectRequest, conditions: Option<ObjectRequest>) -> Self {
        Self {
            method: object.method(),
            key: object.shared_key(),
            conditions,
        }
    }
}

/// The request id for an error body: the request's, or a new one.
fn id_text(id: Option<&http::HeaderValue>) -> String {
    match id.and_then(|v| v.to_str().ok()) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

pin_project! {
    /// The response future of [`ObjectService`]: answered at once (a request
    /// that names no object), or waiting on the inner service.
    pub struct ResponseFuture<S>
    where
        S: Service<ObjectRequest>,
    {
        #[pin]
        state: State<S>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: Service<ObjectRequest>,
    {
        Answered { res: Option<Response<Body>> },
        Fetching {
            #[pin]
            fut: Oneshot<S, ObjectRequest>,
            kept: Kept,
            request_id: Option<http::HeaderValue>,
            // For a second, whole-object fetch when `If-Range` does not hold.
            whole: Option<S>,
        },
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<ObjectRequest, Response = Response<Body>, Error = FetchError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Answered { res } => return Poll::Ready(Ok(res.take().expect("polled after completion"))),
                StateProj::Fetching {
                    fut,
                    kept,
                    request_id,
                    whole,
                } => {
                    let result = ready!(fut.poll(cx));
                    match (result, whole.take(), kept.conditions.as_ref()) {
                        (Ok(res), Some(svc), Some(object)) if !range_applies(object.headers(), &res) => {
                            tracing::debug!(key = %object.key(), "If-Range does not match the upstream's answer: fetching the whole object");
                            let mut whole_object = object.clone();
                            whole_object.headers_mut().remove(header::RANGE);
                            whole_object.headers_mut().remove(header::IF_RANGE);
                            State::Fetching {
                                fut: svc.oneshot(whole_object.clone()),
                                // Same method and key; the headers without the range.
                                kept: Kept {
                                    method: kept.method,
                                    key: kept.key.clone(),
                                    conditions: Some(whole_object),
                                },
                                request_id: request_id.take(),
                                whole: None,
                            }
                        }
                        (result, _, _) => {
                            return Poll::Ready(Ok(finish(result, kept, request_id.as_ref())));
                        }
                    }
                }
            };
            state.set(next);
        }
    }
}

#[allow(clippy::result_large_err)] // built once per request, mapped to a response at once
fn to_object_request<B>(req: &Request<B>, request_id: Option<http::HeaderValue>) -> Result<ObjectRequest, S3Error> {
    let method = ObjectMethod::from_http(req.method()).ok_or_else(S3Error::method_not_allowed)?;
    let key = decode_shared_key(req.uri().path()).map_err(|e| match e {
        KeyError::Empty => S3Error::no_such_key(),
        other => S3Error::invalid_uri(other.to_string()),
    })?;
    Ok(ObjectRequest::new(method, key)
        .with_forwarded_headers(req.headers())
        .with_forwarded_query(req.uri().query())
        .with_request_id(request_id))
}

/// Whether a partial answer may be sent as is: it is not a `206`, or the
/// request's `If-Range` matches the answer's own validators.
fn range_applies(req: &HeaderMap, res: &Response<Body>) -> bool {
    if res.status() != StatusCode::PARTIAL_CONTENT {
        return true;
    }
    let etag = res.headers().get(header::ETAG).and_then(|v| v.to_str().ok());
    let modified = res.headers().get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok());
    conditional::if_range_holds(req, etag, modified)
}

/// Turns the inner service's result into the client's response.
fn finish(
    result: Result<Response<Body>, FetchError>,
    req: &Kept,
    request_id: Option<&http::HeaderValue>,
) -> Response<Body> {
    let res = match result {
        Ok(res) => res,
        Err(err) => {
            tracing::warn!(key = %req.key, error = %err, "object request failed");
            return S3Error::from_fetch_error(&err)
                .with_request_id(id_text(request_id))
                .into_response();
        }
    };
    let status = res.status();
    let conditions = req.conditions.as_ref().map(ObjectRequest::headers);
    if let Some(conditions) = conditions.filter(|h| status.is_success() && conditional::has_preconditions(h)) {
        let etag = res.headers().get(header::ETAG).and_then(|v| v.to_str().ok());
        let modified = res.headers().get(header::LAST_MODIFIED).and_then(|v| v.to_str().ok());
        match conditional::evaluate(conditions, etag, modified) {
            Precondition::Pass => {}
            Precondition::NotModified => return not_modified(res.headers()),
            Precondition::Failed => {
                let mut err = S3Error::precondition_failed()
                    .with_request_id(id_text(request_id))
                    .into_response();
                for name in [X_CACHE, header::AGE, REPLICA_HEADER] {
                    if let Some(v) = res.headers().get(&name) {
                        err.headers_mut().insert(name, v.clone());
                    }
                }
                return err;
            }
        }
    }
    if status.is_client_error() || status.is_server_error() {
        let mut err = S3Error::from_upstream_status(status)
            .with_request_id(id_text(request_id))
            .into_response();
        // What a cache hit's `412`/`416` says of the copy it came from, as
        // its `304` does.
        for name in [header::CONTENT_RANGE, X_CACHE, header::AGE, REPLICA_HEADER] {
            if let Some(v) = res.headers().get(&name) {
                err.headers_mut().insert(name, v.clone());
            }
        }
        return err;
    }
    if req.method == ObjectMethod::Head {
        let (parts, _body) = res.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn upstream_ok() -> tower::util::BoxCloneService<ObjectRequest, Response<Body>, FetchError> {
        tower::util::BoxCloneService::new(tower::service_fn(|req: ObjectRequest| async move {
            if req.key() == "missing" {
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::NOT_FOUND;
                return Ok(res);
            }
            if req.key() == "down" {
                return Err(FetchError::NoReplica);
            }
            let mut res = Response::new(Body::from(req.key().to_owned()));
            res.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static("\"e1\""));
            Ok(res)
        }))
    }

    async fn send(method: &str, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        ObjectService::new(upstream_ok())
            .oneshot(b.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn maps_methods_keys_and_upstream_answers() {
        assert_eq!(send("GET", "/a%20b", &[]).await.status(), StatusCode::OK);
        let res = send("PUT", "/a", &[]).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(send("GET", "/%2e%2e/x", &[]).await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(send("GET", "/missing", &[]).await.status(), StatusCode::NOT_FOUND);
        let res = send("GET", "/down", &[("x-request-id", "rid-7")]).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("<RequestId>rid-7</RequestId>"));
    }

    #[tokio::test]
    async fn evaluates_preconditions_on_upstream_answers() {
        let res = send("GET", "/k", &[("if-none-match", "\"e1\"")]).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()[header::ETAG], "\"e1\"");
        let res = send("GET", "/k", &[("if-match", "\"other\"")]).await;
        assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    }

    #[tokio::test]
    async fn head_has_no_body() {
        let res = send("HEAD", "/k", &[]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = axum::body::to_bytes(res.into_body(), 1 << 16).await.unwrap();
        assert!(body.is_empty());
    }
}
