//! The in-memory ledger, for tests: every ticket is ready at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    Appended, Entry, Head, Ledger, LedgerError, Mark, Record, Recovered, Ticket, Verifier,
    VerifyReport, chain_hash, check_extends, check_mark,
};
use crate::tenant::TenantId;

/// One tenant's chain: its head and the log positions of its records.
#[derive(Debug, Default)]
struct Chain {
    head: Option<Head>,
    /// Index into the log of seq `i + 1`.
    positions: Vec<usize>,
}

#[derive(Debug, Default)]
struct State {
    /// Every record in append order.
    log: Vec<Record>,
    chains: HashMap<TenantId, Chain>,
    /// The latest checkpoint blob and the log length at its mark.
    checkpoint: Option<(Arc<[u8]>, usize)>,
}

/// Everything in memory; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    state: Mutex<State>,
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the log, so visitors run without the lock held.
    fn records_from(&self, start: usize) -> Vec<Record> {
        self.lock().log.get(start..).unwrap_or_default().to_vec()
    }
}

impl Ledger for MemoryLedger {
    fn append(&self, entry: Entry) -> Result<Appended, LedgerError> {
        // Hash outside the lock; the chain check below makes it the right one.
        let hash = chain_hash(&entry.prev, &entry.bytes);
        let mut state = self.lock();
        let index = state.log.len();
        let chain = match state.chains.get_mut(&entry.tenant) {
            Some(chain) => chain,
            None => state.chains.entry(entry.tenant.clone()).or_default(),
        };
        check_extends(&chain.head.unwrap_or(Head::EMPTY), &entry)?;
        chain.head = Some(Head {
            seq: entry.seq,
            hash,
        });
        chain.positions.push(index);
        state.log.push(Record {
            tenant: entry.tenant,
            seq: entry.seq,
            hash,
            bytes: Arc::from(entry.bytes),
        });
        Ok(Appended {
            hash,
            ticket: Ticket::ready(),
        })
    }

    fn head(&self, tenant: &TenantId) -> Head {
        self.lock()
            .chains
            .get(tenant)
            .and_then(|c| c.head)
            .unwrap_or(Head::EMPTY)
    }

    fn read(
        &self,
        tenant: &TenantId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Record>, LedgerError> {
        let state = self.lock();
        let Some(chain) = state.chains.get(tenant) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(chain
            .positions
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take(limit)
            .map(|&i| state.log[i].clone())
            .collect())
    }

    fn mark(&self) -> Result<Mark, LedgerError> {
        let records = self.lock().log.len() as u64;
        Ok(Mark {
            records,
            position: records,
        })
    }

    fn checkpoint(&self, mark: Mark, blob: &[u8]) -> Result<(), LedgerError> {
        let mut state = self.lock();
        let stored = state.checkpoint.as_ref().map_or(0, |(_, at)| *at as u64);
        check_mark(&mark, stored, state.log.len() as u64)?;
        // `check_mark` bounds it by the log length, a `usize`.
        let at = mark.position as usize;
        state.checkpoint = Some((Arc::from(blob), at));
        Ok(())
    }

    fn recover(
        &self,
        visit: &mut dyn FnMut(Recovered<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let (blob, at) = match &self.lock().checkpoint {
            Some((blob, at)) => (Some(Arc::clone(blob)), *at),
            None => (None, 0),
        };
        if let Some(blob) = &blob {
            visit(Recovered::Checkpoint(blob))?;
        }
        for record in &self.records_from(at) {
            visit(Recovered::Record(record))?;
        }
        Ok(())
    }

    fn scan(
        &self,
        visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        for record in &self.records_from(0) {
            visit(record)?;
        }
        Ok(())
    }

    fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let state = self.lock();
        let mut verifier = Verifier::new();
        for record in &state.log {
            verifier.feed(record);
        }
        Ok(verifier.report())
    }

    fn flush(&self) -> Result<(), LedgerError> {
        Ok(())
    }
}
