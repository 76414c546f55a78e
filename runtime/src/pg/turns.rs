//! Action turns across replicas ([`SharedLedger::take_action_turn`]).
//!
//! On one process, a tenant's action and its undo never overtake each
//! other (`actuator::lanes`). Replicas sharing a ledger decide them
//! wherever the input lands, so the order is kept in the database:
//!
//! - a *turn* is a session-level advisory lock, one per tenant and undo
//!   action (an action and its undo share it), held by one replica's
//!   connection for one attempt and given back after it. A replica that
//!   dies gives it back with its session;
//! - `ggen_action_turns` holds the seq of the latest dispatch of each
//!   tenant's action each way round (an action, or an undo) that took its
//!   turn. A dispatch taking the turn after a counterpart decided later
//!   makes no attempt; otherwise its own seq is recorded (committed
//!   before its attempt starts), which stops its earlier counterparts'
//!   further attempts.
//!
//! A counterpart decided later whose dispatch has not taken the turn yet
//! comes after the attempt under way, which is the order the decisions
//! were taken in.
//!
//! One thread with its own connection holds every turn of the process
//! and answers without waiting on the server (`pg_try_advisory_lock`), so
//! a turn held elsewhere never blocks another tenant's.

use std::sync::mpsc;

use postgres::Client;
use postgres::types::Type;

use super::{connect, database};
use crate::ledger::{ActionTurn, HeldTurn, LedgerError, TurnTaken};

/// Records the dispatch unless a counterpart decided later is recorded;
/// answers that counterpart (no row: recorded). `$1` tenant, `$2` action,
/// `$3` undo, `$4` seq, `$5` the counterparts' names.
const TAKE: &str = "
    WITH later AS (
        SELECT action, seq FROM ggen_action_turns
        WHERE tenant = $1 AND undo = NOT $3 AND action = ANY($5) AND seq > $4
        ORDER BY seq DESC LIMIT 1
    ), mine AS (
        INSERT INTO ggen_action_turns (tenant, action, undo, seq)
        SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM later)
        ON CONFLICT (tenant, action, undo)
        DO UPDATE SET seq = greatest(ggen_action_turns.seq, excluded.seq)
    )
    SELECT action, seq FROM later";

/// What the turns thread is asked.
enum Job {
    Take {
        turn: ActionTurn,
        reply: mpsc::SyncSender<Result<Reply, LedgerError>>,
    },
    /// Gives back `key`, taken on the connection numbered `session`.
    Release { key: (i32, i32), session: u64 },
}

/// What the turns thread answers a [`Job::Take`].
enum Reply {
    /// Taken on the connection numbered `session`.
    Held {
        key: (i32, i32),
        session: u64,
    },
    Busy,
    Superseded {
        action: String,
        seq: u64,
    },
}

/// The thread holding this process's action turns.
#[derive(Debug)]
pub(super) struct Turns {
    /// Every held turn keeps a clone: the thread ends (its session
    /// closes, giving back what it still holds) once all are dropped.
    jobs: mpsc::Sender<Job>,
    target: String,
}

impl Turns {
    /// Starts the thread; it connects when first asked.
    pub(super) fn start(url: &str, target: &str, oid: i64) -> std::io::Result<Turns> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (url, owner) = (url.to_owned(), target.to_owned());
        std::thread::Builder::new()
            .name("ledger-pg-turns".to_owned())
            .spawn(move || run(&url, &owner, oid, &queue))?;
        Ok(Turns {
            jobs,
            target: target.to_owned(),
        })
    }

    /// [`SharedLedger::take_action_turn`](crate::ledger::SharedLedger::take_action_turn).
    pub(super) fn take(&self, turn: &ActionTurn) -> Result<TurnTaken, LedgerError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job::Take {
            turn: turn.clone(),
            reply,
        };
        let answer = match self.jobs.send(job) {
            Ok(()) => answer.recv().ok(),
            Err(_) => None,
        };
        let answer = answer.unwrap_or_else(|| {
            Err(LedgerError::Database {
                target: self.target.clone(),
                what: "the action turns' thread has ended".to_owned(),
                source: None,
            })
        })?;
        Ok(match answer {
            Reply::Held { key, session } => {
                let jobs = self.jobs.clone();
                TurnTaken::Held(HeldTurn::new(move || {
                    let _ = jobs.send(Job::Release { key, session });
                }))
            }
            Reply::Busy => TurnTaken::Busy,
            Reply::Superseded { action, seq } => TurnTaken::Superseded { action, seq },
        })
    }
}

/// The two 32-bit halves of the lock key of `turn` in the schema `oid`
/// (the two-key space, apart from the tenant locks' single keys).
fn key(oid: i64, turn: &ActionTurn) -> (i32, i32) {
    let mut name = Vec::with_capacity(turn.tenant.as_str().len() + turn.pair.len() + 20);
    name.extend_from_slice(b"\0ggen-action-turn\0");
    name.extend_from_slice(turn.tenant.as_str().as_bytes());
    name.push(0);
    name.extend_from_slice(turn.pair.as_bytes());
    let [a, b, c, d, e, f, g, h] = super::shared::lock_key(oid, &name).to_be_bytes();
    (
        i32::from_be_bytes([a, b, c, d]),
        i32::from_be_bytes([e, f, g, h]),
    )
}

/// The thread: one connection, numbered by `session` (a lost connection
/// gave back every turn it held, so those turns' releases are dropped),
/// jobs in order.
fn run(url: &str, target: &str, oid: i64, queue: &mpsc::Receiver<Job>) {
    let mut client: Option<Client> = None;
    let mut session = 0_u64;
    for job in queue {
        match job {
            Job::Release {
                key,
                session: taken,
            } => {
                let current = client.as_mut().filter(|c| !c.is_closed());
                if let Some(client) = current.filter(|_| taken == session) {
                    let unlocked =
                        client.execute("SELECT pg_advisory_unlock($1, $2)", &[&key.0, &key.1]);
                    if let Err(error) = unlocked {
                        tracing::warn!(target = %target, %error, "giving back an action turn failed");
                    }
                }
            }
            Job::Take { turn, reply } => {
                // A connection found lost by the first try is made again
                // for a second (what it held is given back already).
                let mut answer = None;
                for _ in 0..2 {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        match session_for_turns(url, target) {
                            Ok(connected) => {
                                client = Some(connected);
                                session += 1;
                            }
                            Err(error) => {
                                answer = Some(Err(error));
                                break;
                            }
                        }
                    }
                    let Some(open) = client.as_mut() else { break };
                    answer = Some(take(open, target, &turn, key(oid, &turn), session));
                    if !open.is_closed() {
                        break;
                    }
                }
                if let Some(answer) = answer {
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// A new session for the turns thread.
fn session_for_turns(url: &str, target: &str) -> Result<Client, LedgerError> {
    let mut client = connect(url, target)?;
    client
        .batch_execute(super::shared::WRITING_SESSION)
        .map_err(database(target, "setting up the action turns' session"))?;
    Ok(client)
}

/// Tries `key`, then records `turn` or finds the counterpart that
/// supersedes it (giving the turn back if it was taken). Recorded while
/// the turn is held elsewhere too: the earlier counterpart holding it
/// then makes no further attempt, as one process's lanes have it; only
/// the check that lets an attempt go needs the turn held.
fn take(
    client: &mut Client,
    target: &str,
    turn: &ActionTurn,
    key: (i32, i32),
    session: u64,
) -> Result<Reply, LedgerError> {
    let failed = || database(target, "taking an action's turn");
    let held: bool = client
        .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key.0, &key.1])
        .map_err(failed())?
        .get(0);
    let unlock = |client: &mut Client| {
        if held {
            client.execute("SELECT pg_advisory_unlock($1, $2)", &[&key.0, &key.1])?;
        }
        Ok(())
    };
    let seq = i64::try_from(turn.seq).map_err(|_| LedgerError::Database {
        target: target.to_owned(),
        what: format!("seq {} is past the database's range", turn.seq),
        source: None,
    });
    let later = seq.and_then(|seq| {
        client
            .query_typed_opt(
                TAKE,
                &[
                    (&turn.tenant.as_str(), Type::TEXT),
                    (&turn.action, Type::TEXT),
                    (&turn.undo, Type::BOOL),
                    (&seq, Type::INT8),
                    (&turn.counterparts, Type::TEXT_ARRAY),
                ],
            )
            .map_err(failed())
    });
    let later = match later {
        Ok(later) => later,
        Err(error) => {
            let _ = unlock(client);
            return Err(error);
        }
    };
    let Some(row) = later else {
        return Ok(if held {
            Reply::Held { key, session }
        } else {
            Reply::Busy
        });
    };
    unlock(client).map_err(failed())?;
    let action: String = row.get(0);
    let seq: i64 = row.get(1);
    Ok(Reply::Superseded {
        action,
        seq: u64::try_from(seq).unwrap_or_default(),
    })
}
