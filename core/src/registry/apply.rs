//! Feeding inputs and timers: [`Registry::apply`] and [`Registry::tick`]
//! step a tenant and append its receipts; [`Applied`] says what happened.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::{Dispatch, Registry, RegistryError, Remember, Tenant, seen};
use crate::clock::Timestamp;
use crate::entitlement::EntitlementError;
use crate::fsm::{Dispatched, Event, State};
use crate::ledger::{Entry, Head, LedgerError, Ticket, chain_hash};
use crate::policy::Level;
use crate::receipt::{Body, IdempotencyKey, Input, Receipt};
use crate::tenant::TenantId;

/// What [`Registry::apply`] (or a timer) did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The tenant.
    pub tenant: TenantId,
    /// Its state before (before a due timer fired, too).
    pub from: State,
    /// Its state afterwards.
    pub state: State,
    /// Its level afterwards: the worst effective level over its rules.
    pub level: Level,
    /// Receipts appended (0 for a duplicate).
    pub receipts: u32,
    /// Seq of the tenant's last receipt afterwards.
    pub last_seq: u64,
    /// Actions to run, in order.
    pub dispatches: Vec<Dispatch>,
    /// Whether the input was a duplicate (dropped before the step).
    pub duplicate: bool,
    /// Why an entitlement event was refused (receipted; HTTP 409).
    pub refused: Option<EntitlementError>,
    /// The last append's ticket (durability is monotonic); wait on it before
    /// acknowledging. `None` when nothing was appended. On a shared ledger
    /// it may resolve to [`LedgerError::Rejected`]: then nothing of the
    /// decision was written, and [`Registry::apply_again`] takes it again.
    pub ticket: Option<Ticket>,
    /// Which load of the tenant decided (for [`Registry::apply_again`]).
    pub epoch: u64,
    /// On a shared ledger: the receipts decided, not yet handed to the
    /// ledger (they go together, with the tenant's state, at the end).
    pub(super) staged: Vec<Entry>,
    /// On a shared ledger: the input's event id, recorded with the receipts.
    pub(super) id: Option<super::Seen>,
}

impl Applied {
    /// Nothing done yet to `t`.
    pub(super) fn before(tenant: &TenantId, t: &Tenant) -> Applied {
        Applied {
            tenant: tenant.clone(),
            from: t.governor.state(),
            state: t.governor.state(),
            level: t.governor.level(),
            receipts: 0,
            last_seq: t.head.seq,
            dispatches: Vec::new(),
            duplicate: false,
            refused: None,
            ticket: None,
            epoch: t.epoch,
            staged: Vec::new(),
            id: None,
        }
    }

    /// Records where `t` ended up.
    fn settle(&mut self, t: &Tenant) {
        self.state = t.governor.state();
        self.level = t.governor.level();
        self.last_seq = t.head.seq;
    }
}

/// How far a tenant's last decision may lie ahead of the deciding clock and
/// still hold it back: a server clock stepping back by less keeps the chain's
/// times monotonic; a last decision further ahead means that clock jumped
/// (or a ledger was replayed with future times), and decisions follow the
/// clock again rather than freeze the tenant at that future time (its
/// cooldowns, budget and timers would never come due).
pub const MAX_CLOCK_LEAD_MS: i64 = 5 * 60 * 1000;

/// The time `tenant` decides at, given its last decision and the clock.
pub(super) fn decision_time(tenant: &TenantId, last: Timestamp, clock: Timestamp) -> Timestamp {
    if last.as_millis().saturating_sub(clock.as_millis()) > MAX_CLOCK_LEAD_MS {
        tracing::error!(
            %tenant,
            last = %last,
            clock = %clock,
            "the tenant's last decision lies far ahead of the clock: deciding at the clock"
        );
        clock
    } else {
        clock.max(last)
    }
}

impl Registry {
    /// Feeds `input` for `tenant`, deciding at `at` (the caller's clock: the
    /// server's in the service, the line's in a replay), or at the tenant's
    /// last decision time if `at` is earlier: fires a due timer first, then
    /// steps, appends the receipts and returns what to dispatch.
    ///
    /// A duplicate id (seen inside the dedupe window) appends nothing; a new
    /// signal id for a tenant whose window is full is refused with
    /// [`RegistryError::DedupeFull`] before anything is decided.
    pub fn apply(
        &self,
        tenant: &TenantId,
        input: Input,
        at: Timestamp,
    ) -> Result<Applied, RegistryError> {
        // A disk that is full refuses the decision before it starts.
        self.ledger
            .check_writable()
            .map_err(RegistryError::Ledger)?;
        if let Some(reason) = self.quarantined(tenant) {
            return Err(RegistryError::Quarantined {
                tenant: tenant.clone(),
                reason,
            });
        }
        let Some(shared) = self.ledger.shared() else {
            let mut shard = self.shard(tenant);
            let entry = match shard.get_mut(tenant) {
                Some(t) => t,
                None => {
                    self.reserve(tenant)?;
                    let head = self.ledger.head(tenant);
                    shard
                        .entry(tenant.clone())
                        .or_insert_with(|| Box::new(Tenant::new(self.pack, head)))
                }
            };
            return self.decide_input(tenant, entry, input, at);
        };
        let mut shard = self.cached(shared, tenant)?;
        let t = shard
            .get_mut(tenant)
            .expect("`cached` returns the shard holding the tenant");
        let redo = crate::ledger::Redo {
            input: input.clone(),
            at,
        };
        let outcome = self
            .decide_input(tenant, t, input, at)
            .and_then(|mut applied| {
                self.submit(shared, tenant, t, &mut applied, Some(redo))?;
                Ok(applied)
            });
        if outcome.is_err() {
            // The cache may hold a decision that was never handed over.
            self.evict(&mut shard, tenant);
        }
        outcome
    }

    /// [`Registry::apply`] on the tenant `entry`.
    pub(super) fn decide_input(
        &self,
        tenant: &TenantId,
        entry: &mut Tenant,
        input: Input,
        at: Timestamp,
    ) -> Result<Applied, RegistryError> {
        let at = decision_time(tenant, entry.last_at, at);
        let seen = seen(&input, at);
        if let Some(seen) = &seen {
            // `check` also forgets the tenant's expired ids.
            let remember = self.with_recent(entry, |recent| {
                recent.check(&seen.key, seen.entitlement, at, &self.dedupe)
            });
            let total = self.dedupe_ids.load(Ordering::Relaxed);
            let over_total = !seen.entitlement && total >= self.dedupe.max_total;
            match remember {
                Remember::New if over_total => {
                    return Err(RegistryError::DedupeTotalFull {
                        capacity: self.dedupe.max_total,
                        retry_after: std::time::Duration::from_secs(1),
                    });
                }
                Remember::New => {}
                Remember::Duplicate => {
                    let mut applied = Applied::before(tenant, entry);
                    applied.duplicate = true;
                    return Ok(applied);
                }
                Remember::Full {
                    capacity,
                    retry_after,
                } => {
                    return Err(RegistryError::DedupeFull {
                        tenant: tenant.clone(),
                        capacity,
                        retry_after,
                    });
                }
            }
        }
        let mut applied = Applied::before(tenant, entry);
        if let Some(due) = entry.governor.due()
            && at >= due
        {
            self.fire(tenant, entry, at, &mut applied)?;
        }
        let seq = entry.head.seq + 1;
        let decided = self.decide(entry, tenant, &input, at, seq);
        let prev = entry.head.hash;
        let start = applied.dispatches.len();
        let receipt = Receipt {
            tenant,
            seq,
            at,
            prev: &prev,
            from: entry.governor.state(),
            to: decided.governor.state(),
            level: decided.governor.level(),
            actions: &[],
            body: Body::Input {
                input: &input,
                decision: decided.step.as_ref().map(|s| &s.decision),
                entitlement: decided.transition,
                refused: decided.refused.as_ref(),
            },
        };
        let dispatch = decided.step.as_ref().map_or(&[][..], |s| &s.dispatch[..]);
        self.commit(entry, receipt, dispatch, &mut applied)?;
        entry.governor = decided.governor;
        if let Some(entitlement) = decided.entitlement {
            entry.entitlement = entitlement;
        }
        entry.note_access(&input);
        if let Some(seen) = seen {
            self.with_recent(entry, |recent| recent.push_checked(seen));
            applied.id = Some(seen);
        }
        applied.refused = decided.refused;
        self.append_actions(entry, tenant, at, start, &mut applied)?;
        applied.settle(entry);
        Ok(applied)
    }

    /// Counts a new tenant in, unless that passes `max_tenants`.
    pub(super) fn reserve(&self, tenant: &TenantId) -> Result<(), RegistryError> {
        let max = self.pack.sku().max_tenants;
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| self.tenant_limit(tenant))
    }

    /// The refusal of `tenant`, new past `max_tenants`.
    pub(super) fn tenant_limit(&self, tenant: &TenantId) -> RegistryError {
        RegistryError::TooManyTenants {
            max: self.pack.sku().max_tenants,
            tenant: tenant.clone(),
        }
    }

    /// Appends `receipt` (and nothing else); updates the head and `applied`.
    fn commit(
        &self,
        t: &mut Tenant,
        receipt: Receipt<'_>,
        dispatch: &[Dispatched],
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        let tenant = receipt.tenant;
        let seq = receipt.seq;
        let sku = self.pack.sku();
        let keys: Vec<IdempotencyKey> = dispatch
            .iter()
            .map(|d| IdempotencyKey::new(sku, tenant.clone(), seq, d.action))
            .collect();
        let receipt = Receipt {
            actions: &keys,
            ..receipt
        };
        let bytes = receipt
            .encode(self.pack.sku())
            .map_err(|source| RegistryError::Receipt {
                tenant: tenant.clone(),
                seq,
                source,
            })?;
        let entry = Entry {
            tenant: tenant.clone(),
            seq,
            prev: t.head.hash,
            bytes,
        };
        let hash = if self.ledger.shared().is_some() {
            // Handed to the ledger with the rest of the decision (`submit`).
            let hash = chain_hash(&entry.prev, &entry.bytes);
            applied.staged.push(entry);
            hash
        } else {
            let appended = self.ledger.append(entry).map_err(|error| match error {
                // Refused before anything was written: this tenant's problem only.
                LedgerError::ChainMismatch { .. } => RegistryError::ChainMismatch {
                    tenant: tenant.clone(),
                    source: error,
                },
                other => RegistryError::Ledger(other),
            })?;
            applied.ticket = Some(appended.ticket);
            appended.hash
        };
        t.head = Head { seq, hash };
        t.last_at = receipt.at;
        self.appended.fetch_add(1, Ordering::Relaxed);
        let (from, to) = (receipt.from.index(), receipt.to.index());
        if from != to {
            self.transitions[from][to].fetch_add(1, Ordering::Relaxed);
        }
        applied.receipts += 1;
        for (d, key) in dispatch.iter().zip(keys) {
            applied.dispatches.push(Dispatch { key, undo: d.undo });
        }
        Ok(())
    }

    /// Appends one `action` receipt per dispatch from `applied.dispatches[start..]`
    /// (their keys name the deciding receipt).
    fn append_actions(
        &self,
        t: &mut Tenant,
        tenant: &TenantId,
        at: Timestamp,
        start: usize,
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        for index in start..applied.dispatches.len() {
            let d = &applied.dispatches[index];
            let (undo, key) = (d.undo, d.key.clone());
            let state = t.governor.state();
            let prev = t.head.hash;
            let receipt = Receipt {
                tenant,
                seq: t.head.seq + 1,
                at,
                prev: &prev,
                from: state,
                to: state,
                level: t.governor.level(),
                actions: &[],
                body: Body::Action { key: &key, undo },
            };
            self.commit(t, receipt, &[], applied)?;
        }
        Ok(())
    }

    /// Fires `t`'s timer at `now` (a decision time: see [`decision_time`])
    /// if it is due; appends its receipts.
    pub(super) fn fire(
        &self,
        tenant: &TenantId,
        t: &mut Tenant,
        now: Timestamp,
        applied: &mut Applied,
    ) -> Result<(), RegistryError> {
        let Some(due) = t.governor.due() else {
            return Ok(());
        };
        let seq = t.head.seq + 1;
        let mut governor = t.governor.clone();
        let Some(step) = governor.step(self.pack, Event::Timer, now, seq) else {
            return Ok(());
        };
        let prev = t.head.hash;
        let start = applied.dispatches.len();
        let receipt = Receipt {
            tenant,
            seq,
            at: now,
            prev: &prev,
            from: step.from,
            to: step.to,
            level: governor.level(),
            actions: &[],
            body: Body::Timer {
                due,
                decision: &step.decision,
            },
        };
        self.commit(t, receipt, &step.dispatch, applied)?;
        t.governor = governor;
        self.append_actions(t, tenant, now, start, applied)?;
        applied.settle(t);
        Ok(())
    }

    /// Fires the due timers of every tenant at `now`. A tenant that is
    /// quarantined, or whose chain refuses the timer's receipt, is passed
    /// over (with a warning for the latter): the others still fire.
    ///
    /// On a shared ledger the due tenants come from the ledger instead
    /// (claimed for a lease), so a timer fires once across replicas and
    /// whichever replica is alive fires it.
    pub fn tick(&self, now: Timestamp) -> Result<Vec<Applied>, RegistryError> {
        // Due timers wait while the disk is full (they fire once it is not).
        self.ledger
            .check_writable()
            .map_err(RegistryError::Ledger)?;
        if let Some(shared) = self.ledger.shared() {
            return self.tick_shared(shared, now);
        }
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (tenant, t) in shard.iter_mut() {
                // Idle tenants give their expired ids back here (and to the
                // service-wide bound), not only at their next input.
                self.with_recent(t, |recent| recent.expire(now, &self.dedupe));
                if t.governor.due().is_some_and(|due| now >= due)
                    && self.quarantined(tenant).is_none()
                {
                    let mut applied = Applied::before(tenant, t);
                    let at = decision_time(tenant, t.last_at, now);
                    match self.fire(tenant, t, at, &mut applied) {
                        Ok(()) => {}
                        Err(error @ RegistryError::ChainMismatch { .. }) => {
                            tracing::warn!(
                                error = &error as &dyn std::error::Error,
                                "timer not fired"
                            );
                            continue;
                        }
                        Err(error) => return Err(error),
                    }
                    if applied.receipts > 0 {
                        out.push(applied);
                    }
                }
            }
        }
        Ok(out)
    }

    /// When `tenant`'s timer falls due (`None`: it has none, or the tenant
    /// is unknown). For a caller that keeps its own schedule, as a
    /// simulation over many tenants does, instead of scanning them all with
    /// [`Registry::next_due`].
    pub fn due(&self, tenant: &TenantId) -> Option<Timestamp> {
        self.shard(tenant).get(tenant)?.governor.due()
    }

    /// Fires `tenant`'s timer if it is due at `now`: one tenant's part of
    /// [`Registry::tick`] (`None` when nothing was due). Local ledgers only:
    /// on a shared ledger due timers are claimed through [`Registry::tick`].
    pub fn tick_tenant(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<Option<Applied>, RegistryError> {
        if self.ledger.shared().is_some() {
            return Ok(None);
        }
        self.ledger
            .check_writable()
            .map_err(RegistryError::Ledger)?;
        if self.quarantined(tenant).is_some() {
            return Ok(None);
        }
        let mut shard = self.shard(tenant);
        let Some(t) = shard.get_mut(tenant) else {
            return Ok(None);
        };
        if t.governor.due().is_none_or(|due| now < due) {
            return Ok(None);
        }
        let mut applied = Applied::before(tenant, t);
        let at = decision_time(tenant, t.last_at, now);
        self.fire(tenant, t, at, &mut applied)?;
        Ok((applied.receipts > 0).then_some(applied))
    }

    /// The earliest due timer over all tenants (for a scheduler).
    pub fn next_due(&self) -> Option<Timestamp> {
        self.shards
            .iter()
            .filter_map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.values().filter_map(|t| t.governor.due()).min()
            })
            .min()
    }
}
