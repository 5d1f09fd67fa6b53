//! The response future of [`JwtAuth`](crate::JwtAuth).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use http::Response;
use pin_project_lite::pin_project;

/// What the wait for keys ends in: the inner service's future, or a rejection.
pub(crate) type AfterKeys<F, B> = Result<F, Response<B>>;

pin_project! {
    /// Response future of [`JwtAuth`](crate::JwtAuth).
    ///
    /// No allocation when the keys are at hand: it is either the inner service's future
    /// or a ready rejection. Only a request that must wait for a key fetch boxes.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<B>> },
        Waiting { future: BoxFuture<'static, AfterKeys<F, B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn waiting(future: BoxFuture<'static, AfterKeys<F, B>>) -> Self {
        Self {
            state: State::Waiting { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let next = match self.as_mut().project().state.project() {
                StateProj::Inner { future } => return future.poll(cx),
                StateProj::Rejected { response } => {
                    return Poll::Ready(Ok(response
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                StateProj::Waiting { future } => ready!(future.as_mut().poll(cx)),
            };
            match next {
                Ok(future) => self.as_mut().project().state.set(State::Inner { future }),
                Err(response) => self.as_mut().project().state.set(State::Rejected {
                    response: Some(response),
                }),
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
