//! The response future shared by the protection layers.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use http::Response;
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;

use super::shed::PermitBody;

pin_project! {
    /// Either the inner service's response (holding a load-shed permit until
    /// the body ends, when there is one) or a refusal answered at once.
    #[project = Proj]
    pub enum ResponseFuture<F> {
        /// The request went on.
        Inner {
            /// The inner service's future.
            #[pin]
            future: F,
            /// The load-shed slot, moved into the body.
            permit: Option<OwnedSemaphorePermit>,
        },
        /// The request was refused.
        Refused {
            /// The refusal, taken when polled.
            response: Option<Response<Body>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self::Inner { future, permit }
    }

    pub(crate) fn refused(response: Response<Body>) -> Self {
        Self::Refused {
            response: Some(response),
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner { future, permit } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(match permit.take() {
                    Some(permit) => res.map(|body| Body::new(PermitBody::new(body, permit))),
                    None => res,
                }))
            }
            Proj::Refused { response } => Poll::Ready(Ok(response.take().expect("polled after completion"))),
        }
    }
}
