//! The outermost layer of [`router`](super::router): every answer is
//! counted by route template and status class
//! (`governor_http_requests_total`), refusals by admission (401/403/503/408)
//! and the fallbacks' 404/405 included; and every authentication refusal
//! is logged with its route and reason ([`RefusalLog`]: at most one line
//! per route and reason per interval, with the count of those suppressed
//! since the last; never the credential).
//!
//! It sits outside every route's own layers, so it sees what they answer;
//! only requests hyper refuses before routing (a header-read timeout, a
//! malformed request line) never reach it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::ROUTES;
use super::error::{AuthReason, AuthRefused};
use super::state::AppState;

/// The `route` of a request no route matched.
const OTHER_ROUTE: &str = "other";

/// The route template at `route` in [`ROUTES`], or `other`.
fn route_name(route: Option<usize>) -> &'static str {
    route
        .and_then(|r| ROUTES.get(r).copied())
        .unwrap_or(OTHER_ROUTE)
}

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
            started: Instant::now(),
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
        started: Instant,
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
        this.state
            .metrics()
            .http(*this.route, response.status(), this.started.elapsed());
        if let Some(refused) = response.extensions().get::<AuthRefused>() {
            this.state
                .refusals()
                .refused(*this.route, response.status(), refused);
        }
        Poll::Ready(Ok(response))
    }
}

/// One route and reason's window of [`RefusalLog`].
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    /// When the last line was written.
    logged: Option<Instant>,
    /// Refusals not written since then.
    suppressed: u64,
}

/// Authentication refusals as log lines: at most one per route and reason
/// per `interval`, so that a client hammering with a bad credential cannot
/// flood the log; each line counts the refusals suppressed before it.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    interval: Duration,
    /// `[route][reason]` flattened, routes indexed like [`ROUTES`], then `other`.
    windows: Box<[Mutex<Window>]>,
}

impl RefusalLog {
    /// A log writing at most one line per route and reason per `interval`.
    pub(crate) fn new(interval: Duration) -> RefusalLog {
        let slots = (ROUTES.len() + 1) * AuthReason::ALL.len();
        RefusalLog {
            interval,
            windows: (0..slots).map(|_| Mutex::default()).collect(),
        }
    }

    /// Whether a refusal at `now` on `route` for `reason` is written: the
    /// count suppressed since the last line, or `None` to suppress this one.
    fn admit(&self, route: Option<usize>, reason: AuthReason, now: Instant) -> Option<u64> {
        let row = route.map_or(ROUTES.len(), |r| r.min(ROUTES.len()));
        let slot = self
            .windows
            .get(row * AuthReason::ALL.len() + reason.index())?;
        let mut window = slot.lock().unwrap_or_else(PoisonError::into_inner);
        let due = window
            .logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if due {
            let suppressed = std::mem::take(&mut window.suppressed);
            window.logged = Some(now);
            Some(suppressed)
        } else {
            window.suppressed += 1;
            None
        }
    }

    /// Logs `refused` on `route` (answered `status`) unless its window
    /// already has a line.
    pub(crate) fn refused(&self, route: Option<usize>, status: StatusCode, refused: &AuthRefused) {
        let Some(suppressed) = self.admit(route, refused.reason, Instant::now()) else {
            return;
        };
        tracing::warn!(
            route = route_name(route),
            reason = refused.reason.as_str(),
            status = status.as_u16(),
            detail = %refused.detail,
            suppressed,
            interval_s = self.interval.as_secs_f64(),
            "authentication refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_route_and_reason_per_interval_counting_the_suppressed() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let signals = Some(3);
        assert_eq!(log.admit(signals, AuthReason::WrongToken, at(0)), Some(0));
        for s in 1..10 {
            assert_eq!(log.admit(signals, AuthReason::WrongToken, at(s)), None);
        }
        // Another reason, another route, and an unmatched route have windows of their own.
        assert_eq!(log.admit(signals, AuthReason::Missing, at(1)), Some(0));
        assert_eq!(log.admit(Some(9), AuthReason::WrongToken, at(1)), Some(0));
        assert_eq!(log.admit(None, AuthReason::WrongToken, at(1)), Some(0));
        assert_eq!(log.admit(None, AuthReason::WrongToken, at(2)), None);
        // The interval over: a line again, counting the nine held back.
        assert_eq!(log.admit(signals, AuthReason::WrongToken, at(10)), Some(9));
        assert_eq!(log.admit(signals, AuthReason::WrongToken, at(11)), None);
        assert_eq!(log.admit(signals, AuthReason::WrongToken, at(25)), Some(1));
        // A route index past the list counts as `other`.
        assert_eq!(log.admit(Some(99), AuthReason::WrongToken, at(3)), None);
    }
}
