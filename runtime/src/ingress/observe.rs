//! The outermost layer of [`router`](super::router): every answer is
//! counted by route template and status class
//! (`governor_http_requests_total`), refusals by admission (401/403/503/408)
//! and the fallbacks' 404/405 included.
//!
//! It sits outside every route's own layers, so it sees what they answer;
//! only requests hyper refuses before routing (a header-read timeout, a
//! malformed request line) never reach it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::ROUTES;
use super::state::AppState;

/// The index in [`ROUTES`] of the route template `path` (`None`: no route
/// matched, counted as `other`).
pub(crate) fn route_index(path: Option<&MatchedPath>) -> Option<usize> {
    let path = path?.as_str();
    ROUTES.iter().position(|route| *route == path)
}

/// Wraps a service in [`Observe`].
#[derive(Clone, Debug)]
pub(crate) struct ObserveLayer {
    state: AppState,
}

impl ObserveLayer {
    /// Counts into `state`'s metrics.
    pub(crate) fn new(state: AppState) -> ObserveLayer {
        ObserveLayer { state }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.state.clone(),
        }
    }
}

/// Counts the answers of `inner`.
#[derive(Clone, Debug)]
pub(crate) struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The router puts the matched template in the request before the
        // route's layers run, this one included.
        let route = route_index(request.extensions().get::<MatchedPath>());
        ObserveFuture {
            inner: self.inner.call(request),
            state: self.state.clone(),
            route,
        }
    }
}

pin_project! {
    /// The inner answer, counted once it is ready.
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: F,
        state: AppState,
        route: Option<usize>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        this.state.metrics().http(*this.route, response.status());
        Poll::Ready(Ok(response))
    }
}
