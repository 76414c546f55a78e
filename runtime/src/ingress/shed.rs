//! Admission, as a tower layer over each group of API routes: a request is
//! first authenticated from its headers alone ([`Guard`]: 401/403 at once,
//! before its body is read), then takes an in-flight slot or is refused at
//! once (503), and holds its slot for at most the request timeout (408),
//! body upload included. So unauthenticated clients can neither take slots
//! nor make the service read their bodies, and slow authenticated clients
//! cannot starve the others for long.
//!
//! Hand-written rather than `middleware::from_fn`: this sits on every
//! request's path, and a plain future costs no boxing or service clone.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Timeout;
use tower::{Layer, Service};

use super::auth::Guard;
use super::error::{AuthReason, IngressError};
use super::state::{AppState, Slots};

/// Wraps a service in [`Shed`].
#[derive(Clone, Debug)]
pub(crate) struct ShedLayer {
    state: AppState,
    guard: Guard,
    /// The SKU's Pub/Sub audience (fixed for the service's life).
    audience: Option<&'static str>,
}

impl ShedLayer {
    /// Admission for routes whose credential `guard` names.
    pub(crate) fn new(state: AppState, guard: Guard) -> ShedLayer {
        let audience = state.registry.pack().sku().ingress.pubsub_audience;
        ShedLayer {
            state,
            guard,
            audience,
        }
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            state: self.state.clone(),
            guard: self.guard,
            audience: self.audience,
        }
    }
}

/// Header authentication, the in-flight limit and the request deadline in front of `inner`.
#[derive(Clone, Debug)]
pub(crate) struct Shed<S> {
    inner: S,
    state: AppState,
    guard: Guard,
    audience: Option<&'static str>,
}

impl<S> Service<Request> for Shed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ShedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let admitted = if self.guard == Guard::PubSub && self.state.no_pubsub {
            Err(IngressError::Forbidden {
                reason: AuthReason::Disabled,
                detail: "`/pubsub/push` is disabled: the service runs with `--no-pubsub`"
                    .to_owned(),
            })
        } else {
            self.state
                .auth
                .admit(self.guard, request.headers(), self.audience)
        };
        // Marketplace events and notifications have slots of their own,
        // and so do read tokens only the database can check. A read token
        // is checked here when that needs no database query.
        let admitted = admitted.and_then(|()| match self.guard {
            Guard::TenantRead => super::access::admit(&self.state, &mut request),
            Guard::Marketplace | Guard::MarketplacePush => Ok(Slots::Signed),
            _ => Ok(Slots::General),
        });
        let slots = match admitted {
            Ok(slots) => slots,
            Err(refusal) => {
                // Dropping the request drops its unread body.
                return ShedFuture::Refused {
                    response: std::future::ready(Ok(refusal.into_response())),
                };
            }
        };
        match self.state.admit_request(slots) {
            Ok(permit) => ShedFuture::Admitted {
                inner: tokio::time::timeout(self.state.request_timeout, self.inner.call(request)),
                _permit: permit,
                seconds: self.state.request_timeout.as_secs(),
            },
            Err(refusal) => ShedFuture::Refused {
                response: std::future::ready(Ok(refusal.into_response())),
            },
        }
    }
}

pin_project! {
    /// The response of [`Shed`]: the inner one, a timeout, or a refusal.
    #[project = Projected]
    pub(crate) enum ShedFuture<F> {
        /// Holding a slot (released when the future is dropped).
        Admitted {
            #[pin]
            inner: Timeout<F>,
            _permit: OwnedSemaphorePermit,
            seconds: u64,
        },
        /// Refused: unauthenticated, or every slot was taken.
        Refused {
            #[pin]
            response: std::future::Ready<Result<Response, Infallible>>,
        },
    }
}

impl<F> Future for ShedFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Admitted { inner, seconds, .. } => {
                Poll::Ready(ready!(inner.poll(cx)).unwrap_or_else(|_elapsed| {
                    Ok(IngressError::Timeout { seconds: *seconds }.into_response())
                }))
            }
            Projected::Refused { response } => response.poll(cx),
        }
    }
}
