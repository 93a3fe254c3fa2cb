//! Injected faults, the `GET` gate and the record of requests of
//! [`LocalS3`] (the `harness` feature).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::service::S3Service;
use tokio::sync::watch;

use super::{BoxBody, LocalS3};

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serves normally.
    #[default]
    None,
    /// Answers every correctly signed request with `500 InternalError`.
    Error500,
    /// Answers every correctly signed request with `503 SlowDown`.
    SlowDown,
    /// Answers `503 SlowDown` in place of every `GET` that would succeed
    /// (2xx); other answers (304, 404, 403) and other methods pass.
    SlowDownGets,
    /// Never answers a correctly signed request.
    Stall,
    /// Sends the headers and this many body bytes, then resets the connection.
    ResetAfter(u64),
    /// As [`Fault::ResetAfter`], with no `ETag` in the answer: a body a
    /// client cannot resume (no `If-Match` to guard a ranged rest).
    ResetAfterWithoutEtag(u64),
    /// Sends the headers and this many body bytes, then sends nothing more
    /// (the connection stays open): a body that stalls mid-way.
    StallAfter(u64),
    /// Answers the next this many requests with `500 InternalError` (after
    /// their signature check), then serves normally (the mode turns to
    /// [`Fault::None`]).
    FailNext(u32),
}

/// How many requests [`LocalS3::received`] keeps (the newest).
const RECEIVED_KEPT: usize = 256;

/// A request as the server received it, before the signature check: what a
/// client (the proxy) really sent upstream.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The method.
    pub method: http::Method,
    /// The path and query, as sent.
    pub uri: http::Uri,
    /// Every header, as sent.
    pub headers: http::HeaderMap,
}

/// The state the connections share.
#[derive(Default)]
pub(super) struct State {
    fault: Mutex<Fault>,
    requests: AtomicU64,
    gets: AtomicU64,
    received: Mutex<VecDeque<ReceivedRequest>>,
    /// While set, `GET`s wait until the value turns true.
    gate: Mutex<Option<watch::Sender<bool>>>,
    waiting: AtomicU64,
    /// Connections accepted (see [`LocalS3::connections`]).
    pub(super) connections: AtomicU64,
    /// Body bytes handed to the connections (see [`LocalS3::body_bytes_sent`]).
    sent: Arc<AtomicU64>,
}

impl LocalS3 {
    /// Writes an object through the S3 API: a SigV4-signed `PutObject` with
    /// `headers` (lowercase names: `content-type`, `cache-control`,
    /// `x-amz-meta-*`, … — all signed), stored as S3 stores them. Creates the
    /// bucket. Fails unless the server answers 2xx; returns the `ETag`.
    pub async fn put_object_with(
        &self,
        bucket: &str,
        key: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<String> {
        use rusty_s3::S3Action;
        let Some((access_key, secret_key)) = &self.keys else {
            return Err(std::io::Error::other(
                "a server started with_auth has no key of its own",
            ));
        };
        self.create_bucket(bucket)?;
        let endpoint: url::Url = self.endpoint().parse().map_err(std::io::Error::other)?;
        let s3 = rusty_s3::Bucket::new(
            endpoint,
            rusty_s3::UrlStyle::Path,
            bucket.to_owned(),
            "us-east-1".to_owned(),
        )
        .map_err(std::io::Error::other)?;
        let creds = rusty_s3::Credentials::new(access_key.clone(), secret_key.clone());
        let mut action = s3.put_object(Some(&creds), key);
        for (name, value) in headers {
            action.headers_mut().insert(name.to_ascii_lowercase(), *value);
        }
        let url = action.sign(std::time::Duration::from_secs(60));
        let mut req = reqwest::Client::new().put(url).body(body.into());
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.map_err(|e| std::io::Error::other(e.without_url()))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            return Err(std::io::Error::other(format!("PutObject answered {status}: {text}")));
        }
        let etag = res.headers().get(header::ETAG).and_then(|v| v.to_str().ok());
        Ok(etag.unwrap_or_default().to_owned())
    }

    /// Creates an empty bucket.
    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))
    }

    /// Sets the fault mode (applies to new requests).
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().expect("not poisoned") = fault;
    }

    /// TCP connections accepted since start (across restarts): how a test
    /// sees whether a client reused its connections.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Requests received since start (every fault mode counts).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// `GET` requests received since start (each counted once, held at the
    /// gate or not).
    pub fn gets(&self) -> u64 {
        self.shared.gets.load(Ordering::SeqCst)
    }

    /// The last requests received (up to 256, oldest first), in every fault
    /// mode, signed correctly or not.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.shared
            .received
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Whether the server is listening.
    pub fn is_running(&self) -> bool {
        self.tasks.is_some()
    }

    /// From now on `GET`s wait at a gate until [`release`](Self::release).
    pub fn hold(&self) {
        *self.shared.gate.lock().expect("not poisoned") = Some(watch::channel(false).0);
    }

    /// Opens the gate: held `GET`s go on, new ones pass.
    pub fn release(&self) {
        if let Some(gate) = self.shared.gate.lock().expect("not poisoned").take() {
            gate.send_replace(true);
        }
    }

    /// `GET`s waiting at the gate now.
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// Body bytes of the answers in the default mode ([`Fault::None`],
    /// [`Fault::SlowDownGets`]) handed to the connections since start: what
    /// a client (the proxy) has pulled, up to what hyper holds to write.
    pub fn body_bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// Records `etag` as the object's ETag in s3s-fs's internal-info sidecar
    /// (`.bucket-B.object-K.internal.json`, names in unpadded base64url), so
    /// that s3s-fs does not compute the MD5 of the whole file on every `GET`
    /// and `HEAD` (seconds per GiB in a debug build). Write the object first.
    pub fn set_etag(&self, bucket: &str, key: &str, etag: &str) -> std::io::Result<()> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let name = format!(
            ".bucket-{}.object-{}.internal.json",
            URL_SAFE_NO_PAD.encode(bucket),
            URL_SAFE_NO_PAD.encode(key)
        );
        std::fs::write(self.root.join(name), format!("{{\"e_tag\":\"{etag}\"}}"))
    }
}

/// A body that counts the data it yields into `sent`; its size hint and end
/// are the inner body's (hyper still sends `Content-Length`).
struct Counted {
    inner: BoxBody,
    sent: Arc<AtomicU64>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(|f| f.data_ref()) {
            self.sent.fetch_add(data.len() as u64, Ordering::SeqCst);
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one request under the current fault mode.
pub(super) async fn handle(
    req: Request<Incoming>,
    service: S3Service,
    shared: &State,
) -> Result<Response<BoxBody>, s3s::HttpError> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut received = shared.received.lock().expect("not poisoned");
        if received.len() == RECEIVED_KEPT {
            received.pop_front();
        }
        received.push_back(ReceivedRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        });
    }
    let is_get = req.method() == http::Method::GET;
    if is_get {
        shared.gets.fetch_add(1, Ordering::SeqCst);
        let gate = shared
            .gate
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(watch::Sender::subscribe);
        if let Some(mut gate) = gate {
            shared.waiting.fetch_add(1, Ordering::SeqCst);
            let _ = gate.wait_for(|open| *open).await;
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let fault = {
        let mut mode = shared.fault.lock().expect("not poisoned");
        let now = *mode;
        match now {
            Fault::FailNext(0) => {
                *mode = Fault::None;
                Fault::None
            }
            Fault::FailNext(n) => {
                *mode = if n > 1 { Fault::FailNext(n - 1) } else { Fault::None };
                now
            }
            _ => now,
        }
    };
    if matches!(
        fault,
        Fault::Error500 | Fault::SlowDown | Fault::Stall | Fault::FailNext(_)
    ) {
        // The signature first, as S3 does: s3s checks it before the operation;
        // a refusal passes through, any other answer is replaced by the fault.
        let res = hyper::service::Service::call(&service, req).await?;
        if matches!(res.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let (parts, body) = res.into_parts();
            return Ok(Response::from_parts(parts, body.boxed_unsync()));
        }
        drop(res);
        return match fault {
            Fault::Error500 | Fault::FailNext(_) => {
                Ok(error_response(StatusCode::INTERNAL_SERVER_ERROR, "InternalError"))
            }
            Fault::SlowDown => Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")),
            _ => match std::future::pending::<std::convert::Infallible>().await {},
        };
    }
    let res = hyper::service::Service::call(&service, req).await?;
    if fault == Fault::SlowDownGets && is_get && res.status().is_success() {
        return Ok(error_response(StatusCode::SERVICE_UNAVAILABLE, "SlowDown"));
    }
    let (mut parts, body) = res.into_parts();
    if matches!(fault, Fault::ResetAfterWithoutEtag(_)) {
        parts.headers.remove(header::ETAG);
    }
    let body: BoxBody = match fault {
        Fault::ResetAfter(limit) | Fault::ResetAfterWithoutEtag(limit) | Fault::StallAfter(limit) => {
            let reset = !matches!(fault, Fault::StallAfter(_));
            let mut sent = 0u64;
            let hit = Arc::new(AtomicBool::new(false));
            let hit_at_end = hit.clone();
            let stream = http_body_util::BodyDataStream::new(body)
                .map(move |chunk| {
                    let chunk = chunk?;
                    if sent + chunk.len() as u64 > limit {
                        let keep = (limit - sent) as usize;
                        sent = limit;
                        hit.store(true, Ordering::Relaxed);
                        return Ok(chunk.slice(..keep));
                    }
                    sent += chunk.len() as u64;
                    Ok(chunk)
                })
                .take_while(|r: &Result<Bytes, Box<dyn std::error::Error + Send + Sync>>| {
                    std::future::ready(!r.as_ref().is_ok_and(|c| c.is_empty()))
                });
            // After the limit: an error (hyper resets the connection) or silence.
            // A reset comes at the limit or at the end; a stall only at the limit.
            let after = futures_util::stream::once(async move {
                if reset {
                    return Some(Err::<Bytes, Box<dyn std::error::Error + Send + Sync>>(
                        "injected reset".into(),
                    ));
                }
                if hit_at_end.load(Ordering::Relaxed) {
                    std::future::pending::<()>().await;
                }
                None
            })
            .filter_map(std::future::ready);
            let stream = stream.chain(after);
            http_body_util::StreamBody::new(stream.map(|r| r.map(hyper::body::Frame::data))).boxed_unsync()
        }
        _ => Counted {
            inner: body.boxed_unsync(),
            sent: shared.sent.clone(),
        }
        .boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
}

/// An S3 error document with this status and code.
fn error_response(status: StatusCode, code: &str) -> Response<BoxBody> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let body = http_body_util::Full::new(Bytes::from(xml))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    res
}
