//! An action and its undo decided on different replicas never overtake
//! each other either.
//!
//! [`lanes`](super::lanes) orders the dispatches of one process. On a
//! shared ledger, each attempt of an action that has counterparts first
//! takes its turn in the database ([`SharedLedger::take_action_turn`]):
//! it waits while another replica's counterpart attempt is under way, and
//! makes no attempt once a counterpart decided later has taken the turn.
//!
//! [`SharedLedger::take_action_turn`]: crate::ledger::SharedLedger::take_action_turn

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::lanes::{self, StopReason};
use crate::ledger::{ActionTurn, HeldTurn, TurnTaken};
use crate::registry::{Dispatch, Registry};
use crate::sku::ActionId;

/// How often a turn held elsewhere is asked for again.
const POLL: Duration = Duration::from_millis(20);
/// How much longer than its timeout an attempt's turn stays taken when its
/// holder is gone before giving it back (the time to send the request
/// once the turn is taken, and to hear that it ended), in ms.
const MARK_MARGIN_MS: u32 = 500;
/// How much longer than the slowest attempt of the actions sharing a turn
/// it is waited for, in ms: past [`MARK_MARGIN_MS`], so that a waiter that
/// asked as the holder took the turn still finds its mark run out.
const WAIT_MARGIN_MS: u32 = 1_000;

/// A dispatch's turn on a shared ledger.
#[derive(Debug)]
pub(crate) struct Turn {
    registry: Arc<Registry>,
    ask: ActionTurn,
    /// Set once an ask recorded the dispatch (later asks only check).
    recorded: AtomicBool,
    /// Longest wait while the turn is held elsewhere (or the database
    /// fails), per attempt: one attempt of the slowest action sharing the
    /// turn, and a margin.
    wait: Duration,
}

/// What waiting for a turn came to.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Held (until finished or dropped), with the dispatcher's permit if
    /// it has them: make the attempt.
    Held(HeldTurn, Option<OwnedSemaphorePermit>),
    /// A counterpart decided later asked first: no attempt, ever.
    Superseded(String),
    /// The dispatch was told to stop while it waited.
    Stopped,
    /// No turn (it stayed held elsewhere, or the database kept failing):
    /// counts as a failed attempt, which may be tried again.
    Failed(String),
}

impl Turn {
    /// The turn of `dispatch`, if `registry`'s ledger is shared and the
    /// action has counterparts (an undo, or actions it undoes), as
    /// [`lanes::counterparts`] has them.
    pub(crate) fn of(registry: &Arc<Registry>, dispatch: &Dispatch) -> Option<Turn> {
        registry.ledger().shared()?;
        let sku = registry.pack().sku();
        let action = dispatch.key.action;
        // The undo names the turn; every action it undoes shares it.
        let pair = if dispatch.undo {
            action
        } else {
            sku.action(action).undo?
        };
        let ids = (0..sku.actions.len()).filter_map(|i| u16::try_from(i).ok().map(ActionId));
        let counterparts_of = move |me: (ActionId, bool)| {
            ids.clone()
                .filter(move |&id| lanes::counterparts(sku, me, (id, !me.1)))
        };
        let slowest = counterparts_of((pair, true))
            .chain([pair])
            .map(|id| sku.action(id).timeout_ms)
            .max()
            .unwrap_or_default();
        Some(Turn {
            registry: Arc::clone(registry),
            ask: ActionTurn {
                tenant: dispatch.key.tenant.clone(),
                pair: sku.action(pair).name,
                action: sku.action(action).name,
                undo: dispatch.undo,
                seq: dispatch.key.seq,
                counterparts: counterparts_of((action, dispatch.undo))
                    .map(|id| sku.action(id).name)
                    .collect(),
                attempt_ms: sku.action(action).timeout_ms.saturating_add(MARK_MARGIN_MS),
            },
            recorded: AtomicBool::new(false),
            wait: Duration::from_millis(u64::from(slowest) + u64::from(WAIT_MARGIN_MS)),
        })
    }

    /// Waits for the turn, at most [`Turn::wait`], or until `stop`. Each
    /// ask holds one of `permits` (if given), kept with a turn taken: the
    /// attempt's mark starts when its turn is taken, so the attempt must
    /// not wait for a permit after that.
    pub(crate) async fn take(
        &self,
        stop: &mut watch::Receiver<StopReason>,
        permits: Option<&Arc<Semaphore>>,
    ) -> Taken {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            let permit = super::permit(permits).await;
            let (registry, ask) = (Arc::clone(&self.registry), self.ask.clone());
            let recorded = self.recorded.load(Ordering::Acquire);
            let taken = tokio::task::spawn_blocking(move || {
                registry
                    .ledger()
                    .shared()
                    .map(|shared| shared.take_action_turn(&ask, recorded))
            })
            .await;
            let why_not = match taken {
                Ok(Some(Ok(taken))) => {
                    self.recorded.store(true, Ordering::Release);
                    match taken {
                        // A stop that came while it asked: no attempt.
                        TurnTaken::Held(_) if stop.borrow().is_some() => return Taken::Stopped,
                        TurnTaken::Held(held) => return Taken::Held(held, permit),
                        TurnTaken::Superseded { action, seq } => {
                            return Taken::Superseded(lanes::superseded_by(
                                &action,
                                !self.ask.undo,
                                seq,
                            ));
                        }
                        TurnTaken::Busy => format!(
                            "a counterpart's attempt on another replica held the turn of `{}`",
                            self.ask.pair
                        ),
                    }
                }
                // Tried again until the deadline, as a turn held elsewhere.
                Ok(Some(Err(error))) => format!(
                    "the shared ledger could not give the turn of `{}`: {}",
                    self.ask.pair,
                    crate::report::error_chain(&error)
                ),
                // The ledger is built once: it stays shared. A panic in
                // the blocking task is a failed attempt too.
                Ok(None) | Err(_) => {
                    return Taken::Failed("not tried: taking its turn failed".to_owned());
                }
            };
            drop(permit);
            if tokio::time::Instant::now() + POLL > deadline {
                return Taken::Failed(format!(
                    "not tried: {why_not} for {} ms",
                    self.wait.as_millis()
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = lanes::stopped(stop) => return Taken::Stopped,
            }
        }
    }
}
