//! The group-commit thread: takes every pending receipt (up to a batch) and
//! commits them with their tenants' new heads in one statement, then
//! publishes how far the log is committed. While one batch commits, the
//! next accumulates, so the commits per second, not the receipts, are
//! bounded by the round trip.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use postgres::Client;

use super::{Pending, Shared, position};
use crate::ledger::Head;
use crate::tenant::TenantId;

/// The receipts, then each touched tenant's last (seq, hash, position),
/// from parallel arrays: one statement, one implicit transaction.
const COMMIT: &str = "
    WITH receipts AS (
        INSERT INTO ggen_receipts (position, tenant, seq, hash, bytes)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::bytea[])
    )
    INSERT INTO ggen_heads (tenant, seq, hash, position)
    SELECT * FROM unnest($6::text[], $7::bigint[], $8::bytea[], $9::bigint[])
    ON CONFLICT (tenant) DO UPDATE
        SET seq = excluded.seq, hash = excluded.hash, position = excluded.position";

/// Starts the writer on its own connection (which holds the writer lock).
pub(super) fn spawn(
    shared: Arc<Shared>,
    client: Client,
    max_batch: usize,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ledger-pg-writer".to_owned())
        .spawn(move || run(&shared, client, max_batch.max(1)))
}

fn run(shared: &Shared, mut client: Client, max_batch: usize) {
    let statement = match client.prepare(COMMIT) {
        Ok(statement) => statement,
        Err(error) => return fail(shared, error),
    };
    loop {
        let batch = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closing {
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.pending.is_empty() {
                return;
            }
            let take = state.pending.len().min(max_batch);
            state.pending.drain(..take).collect::<Vec<Pending>>()
        };
        let Some(last) = batch.last().map(|p| p.position) else {
            continue;
        };
        let mut heads: HashMap<&TenantId, (Head, u64)> = HashMap::new();
        for p in &batch {
            heads.insert(
                &p.tenant,
                (
                    Head {
                        seq: p.seq,
                        hash: p.hash,
                    },
                    p.position,
                ),
            );
        }
        let positions: Vec<i64> = batch.iter().map(|p| position(p.position)).collect();
        let tenants: Vec<&str> = batch.iter().map(|p| p.tenant.as_str()).collect();
        let seqs: Vec<i64> = batch.iter().map(|p| position(p.seq)).collect();
        let hashes: Vec<&[u8]> = batch.iter().map(|p| &p.hash[..]).collect();
        let bytes: Vec<&[u8]> = batch.iter().map(|p| &p.bytes[..]).collect();
        let head_tenants: Vec<&str> = heads.keys().map(|t| t.as_str()).collect();
        let head_seqs: Vec<i64> = heads.values().map(|(h, _)| position(h.seq)).collect();
        let head_hashes: Vec<&[u8]> = heads.values().map(|(h, _)| &h.hash[..]).collect();
        let head_positions: Vec<i64> = heads.values().map(|(_, p)| position(*p)).collect();
        let committed = client.execute(
            &statement,
            &[
                &positions,
                &tenants,
                &seqs,
                &hashes,
                &bytes,
                &head_tenants,
                &head_seqs,
                &head_hashes,
                &head_positions,
            ],
        );
        match committed {
            Ok(_) => shared.sync.publish(last, last),
            Err(error) => return fail(shared, error),
        }
    }
}

/// Stops the ledger: every pending and later ticket gets the error.
fn fail(shared: &Shared, error: postgres::Error) {
    tracing::error!(target = %shared.target, error = %crate::report::error_chain(&error), "ledger commit failed: the ledger has stopped");
    shared.sync.fail(
        PathBuf::from(&shared.target),
        Arc::new(std::io::Error::other(error)),
    );
}
