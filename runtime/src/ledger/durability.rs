//! Durability tickets: a caller waits (blocking or async) until the writer
//! has published a durable position covering its record, or has failed.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use super::LedgerError;

/// How far the log is durable, and whether the writer has stopped.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Number of records (in append order) known durable.
    pub(crate) records: u64,
    /// Packed log position (segment, offset) up to which the log is durable.
    pub(crate) position: u64,
    /// Set once a write or sync failed: nothing after `records` will ever be durable.
    pub(crate) failure: Option<(PathBuf, Arc<std::io::Error>)>,
}

impl Progress {
    /// The error every waiter gets after a failure.
    pub(crate) fn error(&self) -> Option<LedgerError> {
        self.failure
            .as_ref()
            .map(|(path, source)| LedgerError::Poisoned {
                path: path.clone(),
                source: Arc::clone(source),
            })
    }
}

/// Where the writer publishes [`Progress`]; tickets wait on it.
#[derive(Debug)]
pub(crate) struct SyncPoint {
    state: Mutex<Progress>,
    changed: Condvar,
    watch: watch::Sender<Progress>,
}

impl SyncPoint {
    /// A sync point at `progress`.
    pub(crate) fn new(progress: Progress) -> SyncPoint {
        SyncPoint {
            state: Mutex::new(progress.clone()),
            changed: Condvar::new(),
            watch: watch::Sender::new(progress),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current progress.
    pub(crate) fn progress(&self) -> Progress {
        self.lock().clone()
    }

    /// Publishes that everything up to `records` / `position` is durable.
    pub(crate) fn publish(&self, records: u64, position: u64) {
        let snapshot = {
            let mut state = self.lock();
            state.records = state.records.max(records);
            state.position = state.position.max(position);
            state.clone()
        };
        self.changed.notify_all();
        self.watch.send_replace(snapshot);
    }

    /// Publishes a failure: every pending and future wait errors.
    pub(crate) fn fail(&self, path: PathBuf, source: Arc<std::io::Error>) {
        let snapshot = {
            let mut state = self.lock();
            if state.failure.is_none() {
                state.failure = Some((path, source));
            }
            state.clone()
        };
        self.changed.notify_all();
        self.watch.send_replace(snapshot);
    }

    /// Blocks until `done(progress)` or a failure.
    pub(crate) fn wait_until(&self, done: impl Fn(&Progress) -> bool) -> Result<(), LedgerError> {
        let mut state = self.lock();
        loop {
            if done(&state) {
                return Ok(());
            }
            if let Some(err) = state.error() {
                return Err(err);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits asynchronously until `done(progress)` or a failure.
    pub(crate) async fn wait_until_async(
        &self,
        done: impl Fn(&Progress) -> bool,
    ) -> Result<(), LedgerError> {
        let mut rx = self.watch.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot see it closed.
        let progress = rx
            .wait_for(|p| done(p) || p.failure.is_some())
            .await
            .map_err(|_| LedgerError::Closed)?;
        if done(&progress) {
            return Ok(());
        }
        Err(progress.error().unwrap_or(LedgerError::Closed))
    }
}

/// Resolves once the appended receipt is durable (file: after the fdatasync covering it). Cheap to create.
#[derive(Debug)]
#[must_use = "a receipt is not durable until its ticket resolves"]
pub struct Ticket {
    pending: Option<(u64, Arc<SyncPoint>)>,
}

impl Ticket {
    /// A ticket for a record that is already durable.
    pub fn ready() -> Ticket {
        Ticket { pending: None }
    }

    /// A ticket that resolves once `records` records are durable at `sync`.
    pub(crate) fn pending(records: u64, sync: Arc<SyncPoint>) -> Ticket {
        Ticket {
            pending: Some((records, sync)),
        }
    }

    /// Blocks until the receipt is durable; errors if the ledger failed first.
    pub fn wait(self) -> Result<(), LedgerError> {
        match self.pending {
            None => Ok(()),
            Some((records, sync)) => sync.wait_until(|p| p.records >= records),
        }
    }

    /// Waits asynchronously until the receipt is durable; errors if the ledger failed first.
    pub async fn durable(self) -> Result<(), LedgerError> {
        match self.pending {
            None => Ok(()),
            Some((records, sync)) => sync.wait_until_async(|p| p.records >= records).await,
        }
    }

    /// Whether the receipt is durable right now (never blocks).
    pub fn is_durable(&self) -> bool {
        match &self.pending {
            None => true,
            Some((records, sync)) => sync.progress().records >= *records,
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
}
