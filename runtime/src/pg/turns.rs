//! Action turns across replicas ([`SharedLedger::take_action_turn`]).
//!
//! On one process, a tenant's action and its undo never overtake each
//! other (`actuator::lanes`). Replicas sharing a ledger decide them
//! wherever the input lands, so the order is kept in the database:
//!
//! - a *turn* is a session-level advisory lock, one per tenant and undo
//!   action (an action and its undo share it), held by one replica's
//!   connection for one attempt and given back after it. A replica that
//!   dies gives it back with its session (a dead machine's session within
//!   about half a minute: the session's TCP keepalives);
//! - taking it also marks the attempt under way (`attempt_until`, by the
//!   database's clock, for the attempt's longest time), and a counterpart
//!   is busy while such a mark lies ahead, so an attempt whose holder is
//!   gone (its session lost, its process killed) while its request may
//!   still land is still waited for. An attempt that ended clears its mark;
//! - `ggen_action_turns` holds the seq of the latest dispatch of each
//!   tenant's action each way round (an action, or an undo) that asked
//!   for its turn, recorded (committed) at its first ask, before any
//!   attempt, even while the turn is held elsewhere: that stops its
//!   earlier counterparts' further attempts. A dispatch that finds a
//!   counterpart decided later recorded, with the turn held, makes no
//!   attempt.
//!
//! A counterpart decided later whose dispatch has not taken the turn yet
//! comes after the attempt under way, which is the order the decisions
//! were taken in.
//!
//! One thread with its own connection holds every turn of the process
//! and answers without waiting on the server (`pg_try_advisory_lock`), so
//! a turn held elsewhere never blocks another tenant's.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use postgres::Client;
use postgres::types::{ToSql, Type};

use super::{connect, database};
use crate::ledger::{ActionTurn, HeldTurn, LedgerError, TurnTaken};

/// The counterpart decided latest after the dispatch, if any: `$1`
/// tenant, `$2` undo, `$3` the counterparts' names, `$4` seq.
macro_rules! later {
    () => {
        "SELECT action, seq FROM ggen_action_turns
         WHERE tenant = $1 AND undo = NOT $2 AND action = ANY($3) AND seq > $4
         ORDER BY seq DESC LIMIT 1"
    };
}

/// For a dispatch already recorded: only the counterpart decided later.
const CHECK: &str = later!();

/// Records the dispatch (`$5`: its action) unless a counterpart decided
/// later is recorded, and answers that counterpart (no row: recorded).
const TAKE: &str = concat!(
    "WITH later AS (",
    later!(),
    "), mine AS (
        INSERT INTO ggen_action_turns (tenant, action, undo, seq)
        SELECT $1, $5, $2, $4 WHERE NOT EXISTS (SELECT 1 FROM later)
        ON CONFLICT (tenant, action, undo)
        DO UPDATE SET seq = excluded.seq WHERE ggen_action_turns.seq < excluded.seq
    )
    SELECT action, seq FROM later"
);

/// The database's clock, in microseconds since the epoch.
macro_rules! now_us {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}

/// With the turn held and no counterpart decided later recorded: busy
/// while a counterpart's attempt may still be under way (its holder gone
/// without giving the turn back), or else marks the dispatch's attempt
/// under way for `$6` ms and answers until when, and whether another
/// attempt of the same action was marked under way already (no row:
/// busy). `$1` tenant, `$2` undo, `$3` the counterparts' names, `$4`
/// action, `$5` seq.
const START: &str = concat!(
    "WITH busy AS (
        SELECT 1 FROM ggen_action_turns
        WHERE tenant = $1 AND undo = NOT $2 AND action = ANY($3) AND attempt_until > ",
    now_us!(),
    "), prior AS (
        SELECT attempt_until > ",
    now_us!(),
    " AS live FROM ggen_action_turns WHERE tenant = $1 AND action = $4 AND undo = $2
    ), stamp AS (SELECT ",
    now_us!(),
    " + $6 * 1000 AS until), mine AS (
        INSERT INTO ggen_action_turns AS t (tenant, action, undo, seq, attempt_until)
        SELECT $1, $4, $2, $5, stamp.until FROM stamp WHERE NOT EXISTS (SELECT 1 FROM busy)
        ON CONFLICT (tenant, action, undo)
        DO UPDATE SET attempt_until = GREATEST(t.attempt_until, excluded.attempt_until)
    )
    SELECT until, coalesce((SELECT live FROM prior), false)
    FROM stamp WHERE NOT EXISTS (SELECT 1 FROM busy)"
);

/// Ends the attempt `$4` marked (a later one of the same action keeps its
/// own mark): `$1` tenant, `$2` action, `$3` undo.
const END: &str = "UPDATE ggen_action_turns SET attempt_until = NULL
     WHERE tenant = $1 AND action = $2 AND undo = $3 AND attempt_until = $4";

/// The turns session: the writers' settings, and keepalives short enough
/// that the server ends the session of a replica whose machine died (and
/// gives back its locks) within about half a minute instead of the
/// system's two hours.
const SESSION: &str = "SET tcp_keepalives_idle = 10;
     SET tcp_keepalives_interval = 5;
     SET tcp_keepalives_count = 3;
     SET tcp_user_timeout = 30000";

/// How long a failed connection attempt answers every ask at once with
/// its error, instead of each ask waiting for a connection attempt of its
/// own.
const DOWN_FOR: Duration = Duration::from_secs(1);

/// How often give-backs that failed are tried again while no job comes.
const UNSTICK_EVERY: Duration = Duration::from_millis(100);

/// Longest an ask waits for the thread's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// What the turns thread is asked.
enum Job {
    Take {
        turn: ActionTurn,
        recorded: bool,
        reply: mpsc::SyncSender<Result<Reply, LedgerError>>,
    },
    /// Gives back `key`, taken on the connection numbered `session`, and
    /// ends the attempt's mark if the attempt `ended`.
    Release {
        key: Key,
        session: u64,
        attempt: Attempt,
        ended: bool,
    },
    /// The answer channel of a [`Job::Take`] whose asker stopped waiting
    /// (after the take, in queue order): a turn answered there is given
    /// back.
    Abandoned(mpsc::Receiver<Result<Reply, LedgerError>>),
}

/// A turn's advisory-lock key (the two-key space).
type Key = (i32, i32);

/// An attempt marked under way in `ggen_action_turns`, until `until`
/// (µs since the epoch, by the database's clock).
#[derive(Clone, Debug)]
struct Attempt {
    tenant: String,
    action: &'static str,
    undo: bool,
    until: i64,
    /// Another attempt of the same action (one mark per action and
    /// direction) was marked under way when this one started: its end
    /// leaves the mark to run out, which still covers the other.
    shared: bool,
}

/// What the turns thread answers a [`Job::Take`].
enum Reply {
    /// Taken on the connection numbered `session`, its attempt marked.
    Held {
        key: Key,
        session: u64,
        attempt: Attempt,
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
        let mut thread = Thread {
            url: url.to_owned(),
            target: target.to_owned(),
            oid,
            client: None,
            session: 0,
            stuck: Vec::new(),
            down: None,
        };
        std::thread::Builder::new()
            .name("ledger-pg-turns".to_owned())
            .spawn(move || thread.run(&queue))?;
        Ok(Turns {
            jobs,
            target: target.to_owned(),
        })
    }

    /// [`SharedLedger::take_action_turn`](crate::ledger::SharedLedger::take_action_turn).
    pub(super) fn take(&self, turn: &ActionTurn, recorded: bool) -> Result<TurnTaken, LedgerError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job::Take {
            turn: turn.clone(),
            recorded,
            reply,
        };
        let answer = match self.jobs.send(job) {
            Ok(()) => match answer.recv_timeout(ANSWER_WITHIN) {
                Ok(answer) => Ok(answer),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // A turn answered from now on is given back by the thread.
                    let _ = self.jobs.send(Job::Abandoned(answer));
                    Err("no answer from the action turns' thread")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err("the action turns' thread has ended")
                }
            },
            Err(_) => Err("the action turns' thread has ended"),
        };
        let answer = answer.map_err(|what| failure(&self.target, what))??;
        Ok(match answer {
            Reply::Held {
                key,
                session,
                attempt,
            } => {
                let jobs = self.jobs.clone();
                TurnTaken::Held(HeldTurn::new(move |ended| {
                    let _ = jobs.send(Job::Release {
                        key,
                        session,
                        attempt,
                        ended,
                    });
                }))
            }
            Reply::Busy => TurnTaken::Busy,
            Reply::Superseded { action, seq } => TurnTaken::Superseded { action, seq },
        })
    }
}

/// A database failure with no error of the driver's behind it.
fn failure(target: &str, what: impl Into<String>) -> LedgerError {
    LedgerError::Database {
        target: target.to_owned(),
        what: what.into(),
        source: None,
    }
}

/// The two 32-bit halves of the lock key of `turn` in the schema `oid`
/// (the two-key space, apart from the tenant locks' single keys).
fn key(oid: i64, turn: &ActionTurn) -> Key {
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

/// The turns thread's connection and what it remembers.
struct Thread {
    url: String,
    target: String,
    oid: i64,
    client: Option<Client>,
    /// Counts connections: a lost one gave back every lock it held, so
    /// the unlocks of those turns are dropped (their marks still end).
    session: u64,
    /// Turns of this session whose give-back failed, tried again before
    /// every job (a turn left held would stall the other replicas).
    stuck: Vec<Key>,
    /// Until when a failed connection attempt answers for the next ones,
    /// and its error.
    down: Option<(Instant, String)>,
}

impl Thread {
    /// Runs jobs until every sender is gone, give-backs first (the rest
    /// in queue order); failed give-backs are tried again every
    /// [`UNSTICK_EVERY`] while no job comes.
    fn run(&mut self, queue: &mpsc::Receiver<Job>) {
        let mut jobs = VecDeque::new();
        loop {
            let job = if self.stuck.is_empty() {
                queue
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                queue.recv_timeout(UNSTICK_EVERY)
            };
            let job = match job {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.unstick();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            };
            jobs.push_back(job);
            jobs.extend(queue.try_iter());
            jobs.make_contiguous()
                .sort_by_key(|job| !matches!(job, Job::Release { .. }));
            while let Some(job) = jobs.pop_front() {
                self.unstick();
                match job {
                    Job::Abandoned(answer) => {
                        if let Ok(Ok(Reply::Held {
                            key,
                            session,
                            attempt,
                        })) = answer.try_recv()
                        {
                            // No attempt was made under it.
                            self.give_back(key, session, &attempt, true);
                        }
                    }
                    Job::Release {
                        key,
                        session,
                        attempt,
                        ended,
                    } => self.give_back(key, session, &attempt, ended),
                    Job::Take {
                        turn,
                        recorded,
                        reply,
                    } => {
                        let answer = self.take(&turn, recorded);
                        if let Err(mpsc::SendError(Ok(Reply::Held {
                            key,
                            session,
                            attempt,
                        }))) = reply.send(answer)
                        {
                            // The asker gave up waiting: nobody attempts.
                            self.give_back(key, session, &attempt, true);
                        }
                    }
                }
            }
        }
    }

    /// The open connection, made again if it was lost.
    fn connection(&mut self) -> Result<&mut Client, LedgerError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.stuck.clear();
            if let Some((until, error)) = &self.down
                && Instant::now() < *until
            {
                return Err(failure(
                    &self.target,
                    format!("cannot connect for action turns: {error}"),
                ));
            }
            let connected = connect(&self.url, &self.target).and_then(|mut client| {
                client
                    .batch_execute(super::shared::WRITING_SESSION)
                    .and_then(|()| client.batch_execute(SESSION))
                    .map_err(database(
                        &self.target,
                        "setting up the action turns' session",
                    ))?;
                Ok(client)
            });
            match connected {
                Ok(client) => {
                    self.down = None;
                    self.session += 1;
                    self.client = Some(client);
                }
                Err(error) => {
                    let what = crate::report::error_chain(&error);
                    self.down = Some((Instant::now() + DOWN_FOR, what));
                    return Err(error);
                }
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| failure(&self.target, "no connection for action turns"))
    }

    /// Ends `attempt`'s mark if the attempt `ended` and its mark is its
    /// own (on a new connection if this one is found lost), then gives
    /// back `key` if the connection numbered `session` still holds it (a
    /// lost one gave it back). A mark not ended runs out.
    fn give_back(&mut self, key: Key, session: u64, attempt: &Attempt, ended: bool) {
        if ended
            && !attempt.shared
            && let Err(error) = self.retried(|thread| thread.end(attempt))
        {
            let error = crate::report::error_chain(&error);
            tracing::warn!(target = %self.target, %error, "ending an action's attempt failed: its counterparts wait until it runs out");
        }
        if session == self.session {
            self.unlock(key);
        }
    }

    /// Clears `attempt`'s mark ([`END`]).
    fn end(&mut self, attempt: &Attempt) -> Result<(), LedgerError> {
        let target = self.target.clone();
        let client = self.connection()?;
        client
            .query_typed(
                END,
                &[
                    (&attempt.tenant, Type::TEXT),
                    (&attempt.action, Type::TEXT),
                    (&attempt.undo, Type::BOOL),
                    (&attempt.until, Type::INT8),
                ],
            )
            .map(drop)
            .map_err(database(&target, "ending an action's attempt"))
    }

    /// Gives back `key` (this session's); kept to try again if that fails.
    fn unlock(&mut self, key: Key) {
        let Some(client) = self.client.as_mut().filter(|c| !c.is_closed()) else {
            return;
        };
        match client.query_one("SELECT pg_advisory_unlock($1, $2)", &[&key.0, &key.1]) {
            Ok(row) if row.get::<_, bool>(0) => {}
            Ok(_) => {
                tracing::warn!(target = %self.target, "an action turn given back was not held")
            }
            Err(error) => {
                tracing::warn!(target = %self.target, %error, "giving back an action turn failed: tried again");
                // Each take counts: a key taken twice is given back twice.
                self.stuck.push(key);
            }
        }
    }

    /// Tries again the give-backs that failed.
    fn unstick(&mut self) {
        for key in std::mem::take(&mut self.stuck) {
            self.unlock(key);
        }
    }

    /// Asks for `turn`; a connection found lost is made again once (what
    /// it held is given back already).
    fn take(&mut self, turn: &ActionTurn, recorded: bool) -> Result<Reply, LedgerError> {
        let key = key(self.oid, turn);
        self.retried(|thread| thread.take_once(turn, recorded, key))
    }

    /// `op`, made once more (on a new connection) if it failed on a
    /// connection it found lost, whose locks were given back with it.
    fn retried<T>(
        &mut self,
        mut op: impl FnMut(&mut Self) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let answer = op(self);
        if answer.is_err() && self.client.as_ref().is_some_and(Client::is_closed) {
            return op(self);
        }
        answer
    }

    /// Marks `turn`'s attempt under way, on the connection holding its
    /// turn: `None` while a counterpart's attempt may still be ([`START`]).
    fn start(&mut self, turn: &ActionTurn, seq: i64) -> Result<Option<Attempt>, LedgerError> {
        let failed = database(&self.target, "starting an action's attempt");
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| failure(&self.target, "the action turns' connection was lost"))?;
        let row = client
            .query_typed_opt(
                START,
                &[
                    (&turn.tenant.as_str(), Type::TEXT),
                    (&turn.undo, Type::BOOL),
                    (&turn.counterparts, Type::TEXT_ARRAY),
                    (&turn.action, Type::TEXT),
                    (&seq, Type::INT8),
                    (&i64::from(turn.attempt_ms), Type::INT8),
                ],
            )
            .map_err(failed)?;
        Ok(row.map(|row| Attempt {
            tenant: turn.tenant.as_str().to_owned(),
            action: turn.action,
            undo: turn.undo,
            until: row.get(0),
            shared: row.get(1),
        }))
    }

    /// Tries `key`, then records `turn` (unless `recorded`) or finds the
    /// counterpart that supersedes it, giving the turn back if it was
    /// taken. Recorded while the turn is held elsewhere too: the earlier
    /// counterpart holding it then makes no further attempt, as one
    /// process's lanes have it; only the check that lets an attempt go
    /// needs the turn held.
    fn take_once(
        &mut self,
        turn: &ActionTurn,
        recorded: bool,
        key: Key,
    ) -> Result<Reply, LedgerError> {
        let target = self.target.clone();
        let seq = i64::try_from(turn.seq).map_err(|_| {
            failure(
                &target,
                format!("seq {} is past the database's range", turn.seq),
            )
        })?;
        let client = self.connection()?;
        let failed = || database(&target, "taking an action's turn");
        let held: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&key.0, &key.1])
            .map_err(failed())?
            .get(0);
        if recorded && !held {
            return Ok(Reply::Busy);
        }
        let tenant = turn.tenant.as_str();
        let params: [(&(dyn ToSql + Sync), Type); 5] = [
            (&tenant, Type::TEXT),
            (&turn.undo, Type::BOOL),
            (&turn.counterparts, Type::TEXT_ARRAY),
            (&seq, Type::INT8),
            (&turn.action, Type::TEXT),
        ];
        let (sql, params) = if recorded {
            (CHECK, &params[..4])
        } else {
            (TAKE, &params[..])
        };
        let later = client.query_typed_opt(sql, params).map_err(failed());
        let reply = match later {
            Ok(Some(row)) => Reply::Superseded {
                action: row.get(0),
                seq: u64::try_from(row.get::<_, i64>(1)).unwrap_or_default(),
            },
            Ok(None) if held => match self.start(turn, seq) {
                Ok(Some(attempt)) => Reply::Held {
                    key,
                    session: self.session,
                    attempt,
                },
                // A counterpart's attempt may still be under way.
                Ok(None) => Reply::Busy,
                Err(error) => {
                    self.unlock(key);
                    return Err(error);
                }
            },
            Ok(None) => Reply::Busy,
            Err(error) => {
                if held {
                    self.unlock(key);
                }
                return Err(error);
            }
        };
        if held && !matches!(reply, Reply::Held { .. }) {
            self.unlock(key);
        }
        Ok(reply)
    }
}
