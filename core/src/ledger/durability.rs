//! Durability tickets: a caller waits (blocking or async) until the writer
//! has published a durable position covering its record, or has failed.
//!
//! Async waiters are kept in a list with the record count each waits for;
//! a publish wakes exactly the waiters it satisfies, all at once after the
//! lock is released. (A broadcast channel would wake every waiter on every
//! publish, and each wake from the writer thread can cost the runtime a
//! futex call, so under load the difference shows in throughput.)

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use super::{LedgerError, Rejection};

/// How far the log is durable, and whether the writer has stopped.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Number of records (in append order) known durable.
    pub records: u64,
    /// Packed log position (segment, offset) up to which the log is durable.
    pub position: u64,
    /// Set once a write or sync failed: nothing after `records` will ever be durable.
    pub failure: Option<(PathBuf, Arc<std::io::Error>)>,
    /// Set while writes wait for disk space: waiters not yet satisfied are
    /// refused ([`LedgerError::Full`]); cleared when a write succeeds again.
    pub stalled: Option<(PathBuf, Arc<std::io::Error>)>,
}

impl Progress {
    /// The error every waiter not yet satisfied gets: after a failure, or
    /// while writes wait for space.
    pub fn error(&self) -> Option<LedgerError> {
        match (&self.failure, &self.stalled) {
            (Some(failure), _) => Some(poisoned(failure)),
            (None, Some((path, source))) => Some(LedgerError::Full {
                path: path.clone(),
                source: Arc::clone(source),
            }),
            (None, None) => None,
        }
    }
}

/// Held by a ledger's writer thread: should the thread panic (a bug), the
/// closure it holds stops the ledger as a failed write does, rather than
/// leaving every waiter without an answer.
pub struct FailOnPanic<F: FnMut()>(pub F);

impl<F: FnMut()> std::fmt::Debug for FailOnPanic<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailOnPanic")
    }
}

impl<F: FnMut()> Drop for FailOnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}

/// The error of a ledger stopped by `failed` (the file, or database, whose
/// write failed, and why): what every later operation gets.
pub fn poisoned(failed: &(PathBuf, Arc<std::io::Error>)) -> LedgerError {
    LedgerError::Poisoned {
        path: failed.0.clone(),
        source: Arc::clone(&failed.1),
    }
}

/// An async waiter: the record count it needs, and how to wake it.
#[derive(Debug)]
struct Waiter {
    records: u64,
    id: u64,
    waker: Waker,
}

#[derive(Debug, Default)]
struct Inner {
    progress: Progress,
    /// Async waiters not satisfied yet, in no particular order.
    waiters: Vec<Waiter>,
    next_id: u64,
    /// Threads blocked in [`SyncPoint::wait_until`].
    blocked: usize,
}

impl Inner {
    /// Removes and returns the wakers of every waiter `progress` satisfies
    /// (all of them after a failure).
    fn take_ready(&mut self, wakers: &mut Vec<Waker>) {
        let records = self.progress.records;
        let all = self.progress.failure.is_some() || self.progress.stalled.is_some();
        let mut i = 0;
        while i < self.waiters.len() {
            if all || self.waiters[i].records <= records {
                wakers.push(self.waiters.swap_remove(i).waker);
            } else {
                i += 1;
            }
        }
    }
}

/// Where the writer publishes [`Progress`]; tickets wait on it.
#[derive(Debug)]
pub struct SyncPoint {
    inner: Mutex<Inner>,
    changed: Condvar,
    /// `progress.records`, readable without the lock (set under it).
    durable: AtomicU64,
}

impl SyncPoint {
    /// A sync point at `progress`.
    pub fn new(progress: Progress) -> SyncPoint {
        SyncPoint {
            durable: AtomicU64::new(progress.records),
            inner: Mutex::new(Inner {
                progress,
                ..Inner::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current progress.
    pub fn progress(&self) -> Progress {
        self.lock().progress.clone()
    }

    /// Applies `update` to the progress, then wakes whoever it satisfies.
    fn advance(&self, update: impl FnOnce(&mut Progress)) {
        let mut wakers = Vec::new();
        let blocked = {
            let mut inner = self.lock();
            // Room for every waiter at once: a publish often wakes dozens.
            wakers.reserve_exact(inner.waiters.len());
            update(&mut inner.progress);
            inner.take_ready(&mut wakers);
            self.durable
                .store(inner.progress.records, Ordering::Release);
            inner.blocked > 0
        };
        if blocked {
            self.changed.notify_all();
        }
        for waker in wakers {
            waker.wake();
        }
    }

    /// Publishes that everything up to `records` / `position` is durable.
    pub fn publish(&self, records: u64, position: u64) {
        self.advance(|progress| {
            progress.records = progress.records.max(records);
            progress.position = progress.position.max(position);
        });
    }

    /// Publishes a failure: every pending and future wait errors.
    pub fn fail(&self, path: PathBuf, source: Arc<std::io::Error>) {
        self.advance(|progress| {
            if progress.failure.is_none() {
                progress.failure = Some((path, source));
            }
        });
    }

    /// Publishes that writes wait for disk space (`Some`), or no longer do
    /// (`None`): meanwhile every wait not yet satisfied is refused.
    pub fn stall(&self, stalled: Option<(PathBuf, Arc<std::io::Error>)>) {
        self.advance(|progress| progress.stalled = stalled);
    }

    /// Blocks until `done(progress)` or a failure.
    pub fn wait_until(&self, done: impl Fn(&Progress) -> bool) -> Result<(), LedgerError> {
        let mut inner = self.lock();
        loop {
            if done(&inner.progress) {
                return Ok(());
            }
            if let Some(err) = inner.progress.error() {
                return Err(err);
            }
            inner.blocked += 1;
            inner = self
                .changed
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
            inner.blocked -= 1;
        }
    }
}

/// The future behind [`Ticket::durable`]: resolves once `records` records
/// are durable at `sync`. Dropping it unregisters its waker.
#[derive(Debug)]
struct Durable {
    records: u64,
    sync: Arc<SyncPoint>,
    /// Set while a waker is registered.
    id: Option<u64>,
}

impl Future for Durable {
    type Output = Result<(), LedgerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        // Usually durable by the time the task is polled again: no lock then.
        if this.sync.durable.load(Ordering::Acquire) >= this.records {
            this.id = None;
            return Poll::Ready(Ok(()));
        }
        let mut inner = this.sync.lock();
        if inner.progress.records >= this.records {
            // A publish that satisfied us also removed our waiter.
            this.id = None;
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = inner.progress.error() {
            this.id = None;
            return Poll::Ready(Err(error));
        }
        let registered = this
            .id
            .and_then(|id| inner.waiters.iter_mut().find(|w| w.id == id));
        match registered {
            Some(waiter) => waiter.waker.clone_from(cx.waker()),
            None => {
                let id = inner.next_id;
                inner.next_id += 1;
                inner.waiters.push(Waiter {
                    records: this.records,
                    id,
                    waker: cx.waker().clone(),
                });
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let mut inner = self.sync.lock();
            if let Some(i) = inner.waiters.iter().position(|w| w.id == id) {
                inner.waiters.swap_remove(i);
            }
        }
    }
}

/// Resolves once the appended receipt is durable (file: after the fdatasync covering it). Cheap to create and to clone.
///
/// A shared ledger (several writers on one database) may also refuse the
/// receipt when it commits: its ticket then resolves to
/// [`LedgerError::Rejected`] (nothing of it was written).
#[derive(Debug, Clone)]
#[must_use = "a receipt is not durable until its ticket resolves"]
pub struct Ticket {
    pending: Option<(u64, Arc<SyncPoint>)>,
    /// Set by a shared ledger's writer before it publishes the receipt as
    /// settled, when the receipt was refused.
    verdict: Option<Arc<Verdict>>,
}

/// Where a shared ledger's writer records that it refused an append, or
/// committed another decision in its place (taken again on the latest
/// state: what the caller gets back is its taker's, opaque here).
#[derive(Debug, Default)]
pub struct Verdict {
    rejection: OnceLock<Rejection>,
    retaken: OnceLock<Retaken>,
}

/// What a decision taken again in the writer hands its caller.
pub type Retaken = Arc<dyn std::any::Any + Send + Sync>;

impl Verdict {
    /// Records the refusal (the first one counts).
    pub fn reject(&self, why: Rejection) {
        let _ = self.rejection.set(why);
    }

    /// The refusal, if there was one.
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejection.get().copied()
    }

    /// Records that another decision was committed in the appended one's
    /// place, and what its taker reported.
    pub fn retake(&self, outcome: Retaken) {
        let _ = self.retaken.set(outcome);
    }

    fn outcome(this: Option<&Arc<Verdict>>) -> Result<(), LedgerError> {
        match this.and_then(|v| v.rejection()) {
            Some(why) => Err(LedgerError::Rejected(why)),
            None => Ok(()),
        }
    }
}

impl Ticket {
    /// A ticket for a record that is already durable.
    pub fn ready() -> Ticket {
        Ticket {
            pending: None,
            verdict: None,
        }
    }

    /// A ticket that resolves once `records` records are durable at `sync`.
    pub fn pending(records: u64, sync: Arc<SyncPoint>) -> Ticket {
        Ticket {
            pending: Some((records, sync)),
            verdict: None,
        }
    }

    /// A ticket that resolves once `records` records are settled at
    /// `sync`: committed, unless `verdict` says they were refused (set
    /// before the publish that settles them).
    pub fn judged(records: u64, sync: Arc<SyncPoint>, verdict: Arc<Verdict>) -> Ticket {
        Ticket {
            pending: Some((records, sync)),
            verdict: Some(verdict),
        }
    }

    /// Blocks until the receipt is durable; errors if the ledger failed first.
    pub fn wait(self) -> Result<(), LedgerError> {
        if let Some((records, sync)) = &self.pending {
            sync.wait_until(|p| p.records >= *records)?;
        }
        Verdict::outcome(self.verdict.as_ref())
    }

    /// Waits asynchronously until the receipt is durable; errors if the ledger failed first.
    pub async fn durable(self) -> Result<(), LedgerError> {
        if let Some((records, sync)) = self.pending {
            Durable {
                records,
                sync,
                id: None,
            }
            .await?;
        }
        Verdict::outcome(self.verdict.as_ref())
    }

    /// After the ticket resolved: what the decision taken in its place
    /// reported, if the ledger took it again (see [`Verdict`]).
    pub fn retaken(&self) -> Option<Retaken> {
        self.verdict.as_ref().and_then(|v| v.retaken.get().cloned())
    }

    /// Whether the receipt is durable right now (never blocks; a refused
    /// receipt counts as settled).
    pub fn is_durable(&self) -> bool {
        match &self.pending {
            None => true,
            Some((records, sync)) => sync.durable.load(Ordering::Acquire) >= *records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_resolve_on_publish_and_fail_on_failure() {
        let sync = Arc::new(SyncPoint::new(Progress::default()));
        let first = Ticket::pending(1, Arc::clone(&sync));
        let second = Ticket::pending(2, Arc::clone(&sync));
        assert!(!first.is_durable());
        let waiter = std::thread::spawn(move || first.wait());
        sync.publish(1, 10);
        waiter.join().unwrap().unwrap();
        sync.fail(
            PathBuf::from("seg"),
            Arc::new(std::io::Error::other("disk on fire")),
        );
        assert!(matches!(second.wait(), Err(LedgerError::Poisoned { .. })));
        // Already durable before the failure: still fine.
        Ticket::pending(1, Arc::clone(&sync)).wait().unwrap();
        assert!(Ticket::ready().wait().is_ok());
    }

    #[test]
    fn async_tickets_resolve() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let sync = Arc::new(SyncPoint::new(Progress::default()));
        let ticket = Ticket::pending(3, Arc::clone(&sync));
        let publisher = {
            let sync = Arc::clone(&sync);
            std::thread::spawn(move || sync.publish(3, 30))
        };
        rt.block_on(ticket.durable()).unwrap();
        publisher.join().unwrap();
        let doomed = Ticket::pending(4, Arc::clone(&sync));
        sync.fail(
            PathBuf::from("seg"),
            Arc::new(std::io::Error::other("gone")),
        );
        assert!(rt.block_on(doomed.durable()).is_err());
    }

    /// Counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn wakes(counter: &Arc<Counter>) -> usize {
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn publish_wakes_only_the_waiters_it_satisfies() {
        let sync = Arc::new(SyncPoint::new(Progress::default()));
        let durable = |records| Durable {
            records,
            sync: Arc::clone(&sync),
            id: None,
        };
        let (mut first, mut second, mut third) = (durable(1), durable(2), durable(3));
        let counters: Vec<Arc<Counter>> = (0..3).map(|_| Arc::new(Counter(0.into()))).collect();
        let wakers: Vec<Waker> = counters
            .iter()
            .map(|c| Waker::from(Arc::clone(c)))
            .collect();
        for (future, waker) in [&mut first, &mut second, &mut third]
            .into_iter()
            .zip(&wakers)
        {
            let mut cx = Context::from_waker(waker);
            assert!(Pin::new(future).poll(&mut cx).is_pending());
        }
        assert_eq!(sync.lock().waiters.len(), 3);

        sync.publish(1, 10);
        assert_eq!(counters.iter().map(wakes).collect::<Vec<_>>(), [1, 0, 0]);
        let mut cx = Context::from_waker(&wakers[0]);
        assert!(matches!(
            Pin::new(&mut first).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));

        // A cancelled waiter leaves nothing behind.
        drop(second);
        assert_eq!(sync.lock().waiters.len(), 1);

        sync.fail(
            PathBuf::from("seg"),
            Arc::new(std::io::Error::other("gone")),
        );
        assert_eq!(counters.iter().map(wakes).collect::<Vec<_>>(), [1, 0, 1]);
        let mut cx = Context::from_waker(&wakers[2]);
        assert!(matches!(
            Pin::new(&mut third).poll(&mut cx),
            Poll::Ready(Err(_))
        ));
        assert!(sync.lock().waiters.is_empty());
    }
}
