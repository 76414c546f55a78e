//! A tenant's action and its undo never overtake each other.
//!
//! The FSM dispatches an undo (`unthrottle`) when a tenant recovers, even
//! while the action it undoes (`throttle`) is still being tried: a retry
//! that lands after the undo would leave the workload throttled while the
//! governor says `stable`, with nothing left to undo it. So the dispatcher
//! puts each dispatch in its tenant's lane ([`Lanes::join`]): a dispatch
//! tells its earlier *counterparts* (the action it undoes, or an undo of
//! the action it repeats) to make no further attempt, and waits until the
//! attempt they have under way ends (a request already sent may act on the
//! target; it cannot be recalled). A dispatch whose counterpart was decided
//! later does not run at all. Dispatches that are not counterparts run
//! side by side as before.
//!
//! This orders the actions one process runs; on a shared ledger the undo
//! may be decided on another replica than the action, and
//! [`turns`](super::turns) keeps the same order across replicas.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::registry::Dispatch;
use crate::sku::{ActionId, Sku};
use crate::tenant::TenantId;

/// Why a dispatch makes no further attempt (or none at all).
pub(crate) type StopReason = Option<String>;

/// The dispatches of each tenant queued or running.
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    tenants: Mutex<HashMap<TenantId, Vec<Running>>>,
    next: AtomicU64,
}

/// One dispatch in its tenant's lane.
#[derive(Debug)]
struct Running {
    id: u64,
    seq: u64,
    dispatch: (ActionId, bool),
    /// Tells it to make no further attempt.
    stop: watch::Sender<StopReason>,
    /// Changes never; closed when it ended.
    ended: watch::Receiver<()>,
}

/// What a dispatch that joined its lane does.
#[derive(Debug)]
pub(crate) enum Turn {
    /// Runs once every one of `after` ended (each was told to stop).
    Run {
        after: Vec<watch::Receiver<()>>,
        /// Set when a later counterpart joins.
        stop: watch::Receiver<StopReason>,
        /// Leaves the lane when dropped.
        place: Place,
    },
    /// Does not run: a counterpart decided later is in the lane.
    Superseded(String),
}

/// A dispatch's place in its lane; leaving it (drop) ends it for those
/// waiting on it.
#[derive(Debug)]
pub(crate) struct Place {
    lanes: Arc<Lanes>,
    tenant: TenantId,
    id: u64,
    _ended: watch::Sender<()>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut tenants = self
            .lanes
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(lane) = tenants.get_mut(&self.tenant) {
            lane.retain(|r| r.id != self.id);
            if lane.is_empty() {
                tenants.remove(&self.tenant);
            }
        }
    }
}

/// Whether `a` and `b` are an action and its undo (either way round).
pub(super) fn counterparts(sku: &Sku, a: (ActionId, bool), b: (ActionId, bool)) -> bool {
    match (a, b) {
        ((done, false), (undo, true)) | ((undo, true), (done, false)) => {
            sku.action(done).undo == Some(undo)
        }
        _ => false,
    }
}

/// How the dispatch of `(action, undo)` decided at `seq` names itself to
/// those it stops or supersedes.
fn reason(sku: &Sku, (action, undo): (ActionId, bool), seq: u64) -> String {
    superseded_by(sku.action(action).name, undo, seq)
}

/// Why a dispatch stops: the dispatch of `action` (an undo, or not)
/// decided at `seq` superseded it (in this process, or on another replica).
pub(super) fn superseded_by(action: &str, undo: bool, seq: u64) -> String {
    let what = if undo { "undo" } else { "action" };
    format!("superseded by the {what} `{action}` decided at seq {seq}")
}

impl Lanes {
    /// Puts `dispatch` in its tenant's lane (call in the order the tenant's
    /// decisions are spawned; a race between two is settled by their seqs).
    pub(crate) fn join(self: &Arc<Self>, sku: &Sku, dispatch: &Dispatch) -> Turn {
        let me = (dispatch.key.action, dispatch.undo);
        let seq = dispatch.key.seq;
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let lane = tenants.entry(dispatch.key.tenant.clone()).or_default();
        let related = || lane.iter().filter(|r| counterparts(sku, r.dispatch, me));
        if let Some(later) = related().find(|r| r.seq > seq) {
            return Turn::Superseded(reason(sku, later.dispatch, later.seq));
        }
        let why = reason(sku, me, seq);
        let after = related()
            .map(|running| {
                running.stop.send_replace(Some(why.clone()));
                running.ended.clone()
            })
            .collect();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (stop_tx, stop) = watch::channel(None);
        let (ended_tx, ended) = watch::channel(());
        lane.push(Running {
            id,
            seq,
            dispatch: me,
            stop: stop_tx,
            ended,
        });
        Turn::Run {
            after,
            stop,
            place: Place {
                lanes: Arc::clone(self),
                tenant: dispatch.key.tenant.clone(),
                id,
                _ended: ended_tx,
            },
        }
    }
}

/// Waits until a dispatch `ended` (its place was left).
pub(crate) async fn ended(mut ended: watch::Receiver<()>) {
    // Nothing is ever sent: `changed` returns once the sender is dropped.
    while ended.changed().await.is_ok() {}
}

/// Waits until `stop` holds a reason; never, once no one can set it.
pub(crate) async fn stopped(stop: &mut watch::Receiver<StopReason>) {
    if stop.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}
