//! Actuators: how the actions the governor dispatches are carried out.
//!
//! An [`Actuator`] runs **one attempt** of one action and reports an
//! [`Outcome`]; [`perform`] wraps attempts in the per-attempt timeout
//! (`timeout_ms`) and the retries (`retries`, capped exponential backoff with
//! jitter). The [`Dispatcher`] runs dispatches off the request path with
//! bounded concurrency and feeds each final result back to the registry as an
//! `action_result` input.
//!
//! Adapters, one file each: [`log`] (records what it would do), [`webhook`]
//! (signed HTTP POST), [`command`] (a program with templated arguments, never
//! a shell).
//!
//! Choices where DESIGN.md is silent:
//! - the per-attempt timeout is enforced here, around every adapter, so a
//!   misbehaving adapter cannot hold a tenant; dropping the attempt cancels
//!   the HTTP request or kills the child process;
//! - retryable failures (5xx, 408, 429, connection errors, timeouts, a
//!   non-zero exit) are retried; permanent ones (other 4xx, invalid params, a
//!   program that cannot be started) end the action at once;
//! - the backoff before retry `n` (1-based) is `min(cap, base · 2^(n-1))`,
//!   of which the upper half is jitter drawn from a SplitMix64 generator
//!   seeded by the idempotency key (so one key's schedule is reproducible).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::clock::Timestamp;
use crate::registry::Dispatch;
use crate::sku::{ActionDef, Sku};
use crate::tenant::TenantId;

pub mod command;
mod dispatcher;
mod lanes;
pub mod log;
mod turns;
pub mod webhook;

pub use dispatcher::{
    ActionResults, ActuatorMode, Actuators, Clock, DispatchStats, Dispatcher, DispatcherOptions,
};

/// Errors of the actuator module.
#[derive(Debug, thiserror::Error)]
pub enum ActuatorError {
    /// An action's `params` are not valid JSON.
    #[error("params of action `{action}` are not valid json")]
    Params {
        /// The action.
        action: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An action's `params` are JSON but not an object.
    #[error("params of action `{action}` must be a json object")]
    ParamsNotObject {
        /// The action.
        action: &'static str,
    },
    /// The HTTP client for webhooks could not be built.
    #[error("webhook http client could not be built")]
    Client(#[source] reqwest::Error),
    /// [`Dispatcher::drain`] reached its deadline with actions still running.
    #[error("`{pending}` actions still in flight after the drain deadline")]
    DrainTimeout {
        /// Actions queued or running at the deadline.
        pending: usize,
    },
}

/// A boxed, sendable future (what [`Actuator::attempt`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything an adapter needs to run one dispatched action.
#[derive(Debug, Clone)]
pub struct ActionCall {
    /// The SKU's id.
    pub sku: &'static str,
    /// The tenant the action acts on.
    pub tenant: TenantId,
    /// The action's static definition.
    pub action: &'static ActionDef,
    /// `{tenant}:{seq}:{action}`: the same on every attempt.
    pub idempotency_key: String,
    /// Whether the action undoes an earlier one.
    pub undo: bool,
    /// When the action was dispatched: the same on every attempt.
    pub at: Timestamp,
    /// `action.params`, parsed (always an object).
    pub params: Map<String, Value>,
}

impl ActionCall {
    /// The call for `dispatch` of `sku`, dispatched at `at`; parses the params.
    pub fn new(
        sku: &'static Sku,
        dispatch: &Dispatch,
        at: Timestamp,
    ) -> Result<Self, ActuatorError> {
        let action = sku.action(dispatch.key.action);
        let params = match serde_json::from_str(action.params) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return Err(ActuatorError::ParamsNotObject {
                    action: action.name,
                });
            }
            Err(source) => {
                return Err(ActuatorError::Params {
                    action: action.name,
                    source,
                });
            }
        };
        Ok(ActionCall {
            sku: sku.id,
            tenant: dispatch.key.tenant.clone(),
            action,
            idempotency_key: dispatch.key.to_string(),
            undo: dispatch.undo,
            at,
            params,
        })
    }

    /// The per-attempt timeout (`timeout_ms`, at least 1 ms).
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.action.timeout_ms.max(1)))
    }
}

/// What one attempt of an action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The action succeeded.
    Ok {
        /// What the target said (status, exit code).
        detail: String,
    },
    /// The action failed.
    Failed {
        /// Why (status, error, exit code).
        detail: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// The attempt did not finish within `timeout_ms` (retryable).
    TimedOut,
}

impl Outcome {
    /// A permanent failure.
    pub fn permanent(detail: impl Into<String>) -> Outcome {
        Outcome::Failed {
            detail: detail.into(),
            retryable: false,
        }
    }

    /// A failure another attempt may fix.
    pub fn transient(detail: impl Into<String>) -> Outcome {
        Outcome::Failed {
            detail: detail.into(),
            retryable: true,
        }
    }
}

/// Runs single attempts of actions of one adapter kind.
pub trait Actuator: Send + Sync + fmt::Debug {
    /// Runs attempt number `attempt` (1-based) of `call`.
    ///
    /// The caller bounds it by `call.timeout()` and drops the future on
    /// timeout, so an adapter must release what it holds on drop.
    fn attempt<'a>(&'a self, call: &'a ActionCall, attempt: u32) -> BoxFuture<'a, Outcome>;
}

/// Capped exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before retry `retry` (1-based): `min(cap, base · 2^(retry-1))`,
    /// its upper half replaced by jitter from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut Jitter) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1 << exp).min(self.cap);
        let half = full / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 {
            0
        } else {
            rng.next_u64() % (nanos + 1)
        };
        (full - half) + Duration::from_nanos(jitter)
    }

    /// The longest `action` can take over all its attempts and backoffs.
    pub fn worst_case(&self, action: &ActionDef) -> Duration {
        let attempt = Duration::from_millis(u64::from(action.timeout_ms.max(1)));
        let attempts = action.retries.saturating_add(1);
        attempt.saturating_mul(attempts) + self.cap.saturating_mul(action.retries)
    }
}

/// A tiny PRNG (SplitMix64) for backoff jitter; not for anything secret.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded by the FNV-1a hash of `key` (an idempotency key).
    pub fn for_key(key: &str) -> Jitter {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        Jitter(hash)
    }

    /// The next pseudo-random number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The final result of an action after all its attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the last attempt succeeded.
    pub ok: bool,
    /// Attempts made (at least 1).
    pub attempts: u32,
    /// The last attempt's detail, with the attempt count.
    pub detail: String,
}

/// Runs `call` through `actuator`: up to `1 + retries` attempts, each bounded
/// by `timeout_ms`, with `backoff` between retryable failures.
pub async fn perform(actuator: &dyn Actuator, call: &ActionCall, backoff: Backoff) -> Report {
    // The sender is dropped at once: nothing ever stops these attempts.
    let (_, mut never) = tokio::sync::watch::channel(None);
    perform_until(actuator, call, backoff, &mut never, None, None).await
}

/// The report of a dispatch stopped (or superseded) for `why` after `made`
/// of its `attempts`.
fn stopped_report(why: &str, made: u32, attempts: u32) -> Report {
    Report {
        ok: false,
        attempts: made,
        detail: if made == 0 {
            format!("{why}: not run")
        } else {
            format!("{why}: not tried again after attempt {made}/{attempts}")
        },
    }
}

/// One of `permits`, if given.
async fn permit(
    permits: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    // The semaphore is never closed, so acquiring only waits.
    std::sync::Arc::clone(permits?).acquire_owned().await.ok()
}

/// [`perform`], making no further attempt once `stop` holds a reason (an
/// attempt under way runs to its end: the target may already act on it),
/// each attempt made in `turn` when the dispatch has one (replicas on a
/// shared ledger) and holding one of `permits`, if given (only while it
/// asks for its turn and runs: not between asks or in its backoff).
pub(crate) async fn perform_until(
    actuator: &dyn Actuator,
    call: &ActionCall,
    backoff: Backoff,
    stop: &mut tokio::sync::watch::Receiver<lanes::StopReason>,
    turn: Option<&turns::Turn>,
    permits: Option<&std::sync::Arc<tokio::sync::Semaphore>>,
) -> Report {
    let attempts = call.action.retries.saturating_add(1);
    let mut rng = Jitter::for_key(&call.idempotency_key);
    let timeout = call.timeout();
    let mut attempt = 1;
    loop {
        if let Some(why) = stop.borrow().clone() {
            return stopped_report(&why, attempt - 1, attempts);
        }
        let attempt_now = || async {
            tokio::time::timeout(timeout, actuator.attempt(call, attempt))
                .await
                .unwrap_or(Outcome::TimedOut)
        };
        let outcome = match turn {
            None => {
                let _permit = permit(permits).await;
                attempt_now().await
            }
            Some(turn) => match turn.take(stop, permits).await {
                turns::Taken::Held(held, _permit) => {
                    let outcome = attempt_now().await;
                    // Given back before the backoff: a counterpart may go.
                    // (Dropped with the attempt, it keeps them out until
                    // the attempt's time is up.)
                    held.finish();
                    outcome
                }
                turns::Taken::Superseded(why) => {
                    return stopped_report(&why, attempt - 1, attempts);
                }
                // Reported at the top of the loop.
                turns::Taken::Stopped => continue,
                turns::Taken::Failed(detail) => Outcome::Failed {
                    detail,
                    retryable: true,
                },
            },
        };
        let (detail, retryable) = match outcome {
            Outcome::Ok { detail } => {
                return Report {
                    ok: true,
                    attempts: attempt,
                    detail: format!("{detail} (attempt {attempt}/{attempts})"),
                };
            }
            Outcome::Failed { detail, retryable } => (detail, retryable),
            Outcome::TimedOut => (format!("timed out after {} ms", timeout.as_millis()), true),
        };
        ::tracing::debug!(
            tenant = %call.tenant,
            action = call.action.name,
            key = %call.idempotency_key,
            attempt,
            %detail,
            "action attempt failed"
        );
        if !retryable || attempt >= attempts {
            return Report {
                ok: false,
                attempts: attempt,
                detail: format!("{detail} (attempt {attempt}/{attempts})"),
            };
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.delay(attempt, &mut rng)) => {}
            () = lanes::stopped(stop) => {}
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::sku::Adapter;
    use crate::tenant::TenantId;

    /// Answers attempts from a script; `None` hangs.
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Option<Outcome>>>);

    impl Actuator for Scripted {
        fn attempt<'a>(&'a self, _: &'a ActionCall, _: u32) -> BoxFuture<'a, Outcome> {
            let next = self.0.lock().unwrap().remove(0);
            Box::pin(async move {
                match next {
                    Some(outcome) => outcome,
                    None => std::future::pending().await,
                }
            })
        }
    }

    static ACTION: ActionDef = ActionDef {
        name: "throttle",
        adapter: Adapter::Log,
        undo: None,
        params: "{}",
        timeout_ms: 20,
        retries: 3,
    };

    async fn perform_script(script: Vec<Option<Outcome>>) -> (Report, usize) {
        let actuator = Scripted(Mutex::new(script));
        let call = ActionCall {
            sku: "s",
            tenant: TenantId::new("acme").unwrap(),
            action: &ACTION,
            idempotency_key: "acme:1:throttle".into(),
            undo: false,
            at: Timestamp(0),
            params: Map::new(),
        };
        let backoff = Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        };
        let report = perform(&actuator, &call, backoff).await;
        let left = actuator.0.lock().unwrap().len();
        (report, left)
    }

    #[tokio::test]
    async fn perform_retries_transient_failures_and_timeouts_until_ok() {
        let ok = Outcome::Ok {
            detail: "fine".into(),
        };
        let script = vec![Some(Outcome::transient("503")), None, Some(ok), None];
        let (report, left) = perform_script(script).await;
        assert!(report.ok);
        assert_eq!(report.attempts, 3);
        assert_eq!(report.detail, "fine (attempt 3/4)");
        assert_eq!(left, 1);
    }

    #[tokio::test]
    async fn perform_stops_at_a_permanent_failure() {
        let script = vec![Some(Outcome::permanent("400")), None];
        let (report, left) = perform_script(script).await;
        assert!(!report.ok);
        assert_eq!(report.detail, "400 (attempt 1/4)");
        assert_eq!(left, 1);
    }

    #[tokio::test]
    async fn perform_gives_up_after_every_retry() {
        let (report, left) = perform_script(vec![None, None, None, None]).await;
        assert!(!report.ok);
        assert_eq!(report.attempts, 4);
        assert_eq!(report.detail, "timed out after 20 ms (attempt 4/4)");
        assert_eq!(left, 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let backoff = Backoff::default();
        let mut rng = Jitter::for_key("acme:3:throttle");
        for (retry, full_ms) in [(1, 100), (2, 200), (3, 400), (7, 5000), (40, 5000)] {
            let full = Duration::from_millis(full_ms);
            for _ in 0..50 {
                let d = backoff.delay(retry, &mut rng);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn jitter_is_seeded_by_the_key() {
        let a: Vec<u64> = (0..4)
            .scan(Jitter::for_key("k1"), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(Jitter::for_key("k1"), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(Jitter::for_key("k2"), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn zero_base_means_no_delay() {
        let backoff = Backoff {
            base: Duration::ZERO,
            cap: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(3, &mut Jitter::for_key("x")), Duration::ZERO);
    }

    #[test]
    fn worst_case_counts_every_attempt_and_backoff() {
        let action = ActionDef {
            name: "a",
            adapter: Adapter::Log,
            undo: None,
            params: "{}",
            timeout_ms: 1000,
            retries: 2,
        };
        assert_eq!(
            Backoff::default().worst_case(&action),
            Duration::from_secs(3 + 10)
        );
    }
}
