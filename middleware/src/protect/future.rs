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
    /// Either the inner service's response (holding a load-shed slot until
    /// the body ends, when there is one) or a refusal answered at once.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner {
            #[pin]
            future: F,
            permit: Option<OwnedSemaphorePermit>,
        },
        Refused {
            response: Option<Response<Body>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, permit: Option<OwnedSemaphorePermit>) -> Self {
        Self {
            state: State::Inner { future, permit },
        }
    }

    pub(crate) fn refused(response: Response<Body>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future, permit } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(match permit.take() {
                    Some(permit) => res.map(|body| Body::new(PermitBody::new(body, permit))),
                    None => res,
                }))
            }
            StateProj::Refused { response } => Poll::Ready(Ok(response.take().expect("polled after completion"))),
        }
    }
}
