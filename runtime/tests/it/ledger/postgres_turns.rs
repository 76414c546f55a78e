//! Action turns on a shared PostgreSQL ledger against a model: any
//! interleaving of decisions, asks and attempts on two replicas answers as
//! the model says, and no attempt of a dispatch ever follows an attempt of
//! a counterpart decided later.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use ggen_runtime::ledger::{ActionTurn, HeldTurn, SharedLedger, TurnTaken};
use ggen_runtime::pg::PgOptions;
use ggen_runtime::pg::shared::SharedPgLedger;
use ggen_runtime::tenant::TenantId;
use proptest::prelude::*;

use super::postgres::fresh_schema;

/// Two replicas on one schema, shared by every case (each case has a
/// tenant of its own); `None` when PostgreSQL tests are skipped.
fn replicas() -> Option<&'static [SharedPgLedger; 2]> {
    static REPLICAS: OnceLock<Option<[SharedPgLedger; 2]>> = OnceLock::new();
    REPLICAS
        .get_or_init(|| {
            let url = fresh_schema()?;
            let open = || SharedPgLedger::open(&url, PgOptions::default()).unwrap();
            Some([open(), open()])
        })
        .as_ref()
}

/// `url` naming its sessions for [`end_turn_sessions`], and that name.
pub(crate) fn named(url: &str) -> (String, String) {
    let name = format!("turns-{}", url.rsplit("%3D").next().unwrap());
    (format!("{url}&application_name={name}"), name)
}

/// Ends the sessions named `name` (see [`named`]) that hold an action
/// turn, as a database restart would; how many it ended.
pub(crate) fn end_turn_sessions(url: &str, name: &str) -> u64 {
    let mut admin = ::postgres::Client::connect(url, ::postgres::NoTls).unwrap();
    admin
        .execute(
            "SELECT pg_terminate_backend(l.pid)
             FROM pg_locks l JOIN pg_stat_activity s ON s.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.mode = 'ExclusiveLock'
               AND l.granted AND s.application_name = $1",
            &[&name],
        )
        .unwrap()
}

/// `tenant`'s `throttle` (or its undo `unthrottle`) decided at `seq`,
/// asking for its turn; an attempt may last a minute (a turn whose holder
/// is gone stays taken that long).
pub(crate) fn throttle_turn(tenant: &TenantId, undo: bool, seq: u64) -> ActionTurn {
    let (action, counterpart) = if undo {
        ("unthrottle", "throttle")
    } else {
        ("throttle", "unthrottle")
    };
    ActionTurn {
        tenant: tenant.clone(),
        pair: "unthrottle",
        action,
        undo,
        seq,
        counterparts: vec![counterpart],
        attempt_ms: 60_000,
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// A replica decides the action (or its undo): a new dispatch.
    Decide { replica: usize, undo: bool },
    /// A dispatch not yet ended asks for its turn.
    Ask(prop::sample::Index),
    /// A dispatch holding its turn ends its attempt: done, or to be tried
    /// again.
    Finish(prop::sample::Index, bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..2, any::<bool>()).prop_map(|(replica, undo)| Op::Decide { replica, undo }),
        any::<prop::sample::Index>().prop_map(Op::Ask),
        any::<prop::sample::Index>().prop_map(Op::Ask),
        (any::<prop::sample::Index>(), any::<bool>()).prop_map(|(i, again)| Op::Finish(i, again)),
    ]
}

#[derive(Debug)]
struct Dispatch {
    replica: usize,
    undo: bool,
    seq: u64,
    recorded: bool,
    ended: bool,
    held: Option<HeldTurn>,
}

/// What the model expects an ask to answer.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Held,
    Busy,
    Superseded(u64),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn turns_answer_as_the_model_and_no_attempt_follows_a_later_counterpart(
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let Some(replicas) = replicas() else { return Ok(()) };
        static CASE: AtomicUsize = AtomicUsize::new(0);
        let tenant = TenantId::new(&format!("case-{}", CASE.fetch_add(1, Ordering::Relaxed))).unwrap();
        let mut dispatches: Vec<Dispatch> = Vec::new();
        // The highest seq recorded each way round (index: undo).
        let mut recorded_max = [0_u64; 2];
        // Attempts in the order they started: (seq, undo).
        let mut attempts: Vec<(u64, bool)> = Vec::new();
        // Each way round (index: undo): whether two attempts overlapped,
        // which leaves their mark to run out (a minute: the rest of the
        // case), keeping the counterparts out.
        let mut lingering = [false; 2];
        let mut next_seq = 1;
        for op in ops {
            match op {
                Op::Decide { replica, undo } => {
                    dispatches.push(Dispatch { replica, undo, seq: next_seq, recorded: false, ended: false, held: None });
                    next_seq += 1;
                }
                Op::Ask(pick) => {
                    let open: Vec<usize> = (0..dispatches.len())
                        .filter(|&i| !dispatches[i].ended && dispatches[i].held.is_none())
                        .collect();
                    if open.is_empty() {
                        continue;
                    }
                    let i = open[pick.index(open.len())];
                    let (replica, undo, seq, recorded) = {
                        let d = &dispatches[i];
                        (d.replica, d.undo, d.seq, d.recorded)
                    };
                    let holders = |same: bool| dispatches.iter().filter(move |d| d.held.is_some() && (d.replica == replica) == same);
                    // One process's lanes never let counterparts overlap.
                    if holders(true).any(|d| d.undo != undo) {
                        continue;
                    }
                    let elsewhere = holders(false).count() > 0;
                    let overlapping = holders(true).any(|d| d.undo == undo);
                    let later = recorded_max[usize::from(!undo)];
                    let expected = if recorded && elsewhere {
                        Expected::Busy
                    } else if later > seq {
                        Expected::Superseded(later)
                    } else if elsewhere || lingering[usize::from(!undo)] {
                        Expected::Busy
                    } else {
                        Expected::Held
                    };
                    let answer = replicas[replica].take_action_turn(&throttle_turn(&tenant, undo, seq), recorded).unwrap();
                    let got = match &answer {
                        TurnTaken::Held(_) => Expected::Held,
                        TurnTaken::Busy => Expected::Busy,
                        TurnTaken::Superseded { seq, .. } => Expected::Superseded(*seq),
                    };
                    prop_assert_eq!(&got, &expected, "dispatch {:?}", &dispatches[i]);
                    let d = &mut dispatches[i];
                    if !d.recorded && !matches!(got, Expected::Superseded(_)) {
                        d.recorded = true;
                        recorded_max[usize::from(undo)] = recorded_max[usize::from(undo)].max(seq);
                    }
                    match answer {
                        TurnTaken::Held(held) => {
                            // The attempt starts: no counterpart decided
                            // later may have attempted before it.
                            prop_assert!(
                                !attempts.iter().any(|&(s, u)| u != undo && s > seq),
                                "attempt of {seq} ({undo}) after {attempts:?}"
                            );
                            attempts.push((seq, undo));
                            if overlapping {
                                lingering[usize::from(undo)] = true;
                            }
                            d.held = Some(held);
                        }
                        TurnTaken::Superseded { .. } => d.ended = true,
                        TurnTaken::Busy => {}
                    }
                }
                Op::Finish(pick, again) => {
                    let holding: Vec<usize> = (0..dispatches.len()).filter(|&i| dispatches[i].held.is_some()).collect();
                    if holding.is_empty() {
                        continue;
                    }
                    let d = &mut dispatches[holding[pick.index(holding.len())]];
                    if let Some(held) = d.held.take() {
                        held.finish();
                    }
                    d.ended = !again;
                    // The give-back runs on the replica's thread before its
                    // next ask: one ask (another tenant's) settles it.
                    let other = TenantId::new("settle").unwrap();
                    let _ = replicas[d.replica].take_action_turn(&throttle_turn(&other, false, 1), true).unwrap();
                }
            }
        }
        // Held turns go back before the next case's tenant needs nothing
        // of them (each case's tenant is its own).
        for held in dispatches.iter_mut().filter_map(|d| d.held.take()) {
            held.finish();
        }
    }
}
