use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use futures_util::future::BoxFuture;
use http::Response;
use pin_project_lite::pin_project;

use super::verify::Identity;

pin_project! {
    /// Response future of [`Auth`](super::Auth) and [`SigV4`](super::SigV4): the inner
    /// service's answer (tagged with the caller's [`Identity`]), or a 401/403 of our own.
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        Inner { #[pin] fut: F, identity: Option<Identity> },
        // The JWKS had to be fetched again before the inner call could be made.
        Fetching { fut: BoxFuture<'static, Result<Response<Body>, E>> },
        Rejected { res: Option<Response<Body>> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn inner(fut: F, identity: Identity) -> Self {
        Self {
            kind: Kind::Inner {
                fut,
                identity: Some(identity),
            },
        }
    }

    /// The inner service's answer as it is (a request this layer does not authenticate).
    pub(crate) fn passthrough(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut, identity: None },
        }
    }

    pub(crate) fn fetching(fut: BoxFuture<'static, Result<Response<Body>, E>>) -> Self {
        Self {
            kind: Kind::Fetching { fut },
        }
    }

    pub(crate) fn rejected(res: Response<Body>) -> Self {
        Self {
            kind: Kind::Rejected { res: Some(res) },
        }
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut, identity } => {
                let mut res = ready!(fut.poll(cx))?;
                if let Some(identity) = identity.take() {
                    res.extensions_mut().insert(identity);
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Fetching { fut } => fut.as_mut().poll(cx),
            KindProj::Rejected { res } => Poll::Ready(Ok(res.take().expect("polled after completion"))),
        }
    }
}
