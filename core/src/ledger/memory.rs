//! The in-memory ledger, for tests: every ticket is ready at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{
    Appended, Entry, Head, Ledger, LedgerError, Mark, Record, Recovered, StoredCheckpoint, Ticket,
    Verifier, VerifyOptions, VerifyReport, chain_hash, check_extends, check_mark,
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

impl State {
    /// Every tenant's head as of the first `at` records of the log.
    fn heads_at(&self, at: usize) -> BTreeMap<TenantId, Head> {
        self.chains
            .iter()
            .filter_map(|(tenant, chain)| {
                let covered = chain.positions.partition_point(|&i| i < at);
                let last = &self.log[*chain.positions.get(covered.checked_sub(1)?)?];
                Some((
                    tenant.clone(),
                    Head {
                        seq: last.seq,
                        hash: last.hash,
                    },
                ))
            })
            .collect()
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
        let (checkpoint, at) = {
            let state = self.lock();
            match &state.checkpoint {
                Some((blob, at)) => (
                    Some(StoredCheckpoint {
                        records: *at as u64,
                        blob: Arc::clone(blob),
                        heads: state.heads_at(*at),
                    }),
                    *at,
                ),
                None => (None, 0),
            }
        };
        if let Some(checkpoint) = &checkpoint {
            visit(Recovered::Checkpoint(checkpoint))?;
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

    fn verify_with(&self, options: &VerifyOptions<'_>) -> Result<VerifyReport, LedgerError> {
        let (log, checkpoint) = {
            let state = self.lock();
            (state.log.clone(), state.checkpoint.clone())
        };
        let mut verifier = Verifier::new().expecting(options);
        for (i, record) in log.iter().enumerate() {
            if let Some((blob, _)) = checkpoint.as_ref().filter(|(_, at)| *at == i) {
                verifier.at_mark(options, i as u64, blob);
            }
            if options.cancelled() {
                return Err(LedgerError::Cancelled {
                    visited: verifier.receipts(),
                });
            }
            verifier.feed(record);
        }
        if let Some((blob, _)) = checkpoint.as_ref().filter(|(_, at)| *at == log.len()) {
            verifier.at_mark(options, log.len() as u64, blob);
        }
        Ok(verifier.report())
    }

    fn flushed(&self) -> Ticket {
        Ticket::ready()
    }
}
