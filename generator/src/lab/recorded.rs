//! Recorded inputs for `ggen backtest`: a signals file in the replay
//! format, or a governor's own ledger — a directory or PostgreSQL — whose
//! signal and entitlement receipts carry the inputs it decided on, so "what
//! would this spec have done last week" is answered from the audit trail.
//!
//! A ledger is read as `ledger show` reads it: read-only, beside a running
//! governor, each chain verified as it is read (a receipt that does not link
//! stops the backtest rather than feeding it altered inputs). The checks
//! that need the rest of the ledger — the checkpoint against the chains'
//! ends, PostgreSQL's heads and positions — are `ledger verify`'s. After
//! retention only the local part is read: the archived receipts are
//! `ledger verify --archive`'s.

use std::io::BufReader;
use std::path::PathBuf;

use ggen_runtime_core::clock::Timestamp;
use ggen_runtime_core::ledger::{Ledger, LedgerError, Record, inspect};
use ggen_runtime_core::replay::{self, Line, Lines, ReplayError};
use serde_json::Value;

/// Where the recorded inputs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A JSON Lines file in the replay format.
    Signals(PathBuf),
    /// A governor's file ledger directory.
    Ledger(PathBuf),
    /// A governor's PostgreSQL ledger (its URL).
    Database(String),
}

impl Recorded {
    /// What it is, for reports (a database URL without its password).
    pub fn describe(&self) -> String {
        match self {
            Recorded::Signals(path) => format!("signals `{}`", crate::load::display_path(path)),
            Recorded::Ledger(dir) => format!("ledger `{}`", crate::load::display_path(dir)),
            Recorded::Database(url) => format!("ledger `{}`", ggen_runtime::pg::redacted(url)),
        }
    }

    /// What one input is called in reports: a file's `line`, a ledger's `receipt`.
    pub fn unit(&self) -> &'static str {
        match self {
            Recorded::Signals(_) => "line",
            Recorded::Ledger(_) | Recorded::Database(_) => "receipt",
        }
    }
}

/// Why the recorded inputs could not be read to their end.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    /// The signals file could not be opened.
    #[error("cannot open `{path}`")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The signals file could not be read.
    #[error(transparent)]
    Read(#[from] ReplayError),
    /// The ledger could not be read, or does not verify.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Visits every recorded input in order: its number (the file's line, or
/// the receipt's place in the log, from 1) and the line, or why it cannot
/// be replayed. A ledger's receipts of the governor's own doing (actions,
/// results, timers, resets) are not inputs and are not visited.
pub fn each(
    recorded: &Recorded,
    visit: &mut dyn FnMut(usize, Result<Line, String>),
) -> Result<(), RecordedError> {
    match recorded {
        Recorded::Signals(path) => {
            let file = fs_err::File::open(path).map_err(|source| RecordedError::Open {
                path: crate::load::display_path(path),
                source,
            })?;
            let mut lines = Lines::new(BufReader::with_capacity(1 << 16, file));
            while let Some((number, text)) = lines.next_line()? {
                match text {
                    Ok(text) if text.trim().is_empty() => {}
                    Ok(text) => visit(
                        number,
                        replay::parse_line(number, text).map_err(|e| e.message),
                    ),
                    Err(e) => visit(
                        number,
                        Err(format!("not UTF-8 at byte `{}`", e.valid_up_to() + 1)),
                    ),
                }
            }
            Ok(())
        }
        Recorded::Ledger(dir) => Ok(inspect::scan_local(dir, &mut receipts(visit))?),
        Recorded::Database(url) => {
            let ledger = ggen_runtime::pg::PgLedger::open_read_only(url)?;
            Ok(ledger.scan(&mut receipts(visit))?)
        }
    }
}

/// A ledger scan's visitor: each receipt that carries an input, numbered by
/// its place in the log, handed to `visit`.
fn receipts(
    visit: &mut dyn FnMut(usize, Result<Line, String>),
) -> impl FnMut(&Record) -> Result<(), LedgerError> + '_ {
    let mut number = 0;
    move |record| {
        number += 1;
        if let Some(line) = receipt_line(record) {
            visit(number, line);
        }
        Ok(())
    }
}

/// The input a receipt carries, as a replay line: a signal (its value as
/// recorded, a decimal that round-trips), an entitlement event, or a
/// rejected reading whose request named a signal and a value (a new spec
/// may know the signal). `None` for receipts of the governor's own doing.
fn receipt_line(record: &Record) -> Option<Result<Line, String>> {
    let doc: Value = match serde_json::from_slice(&record.bytes) {
        Ok(doc) => doc,
        Err(e) => return Some(Err(format!("receipt is not JSON: {e}"))),
    };
    let tenant = record.tenant.to_string();
    let at = match doc["at"].as_str().map(Timestamp::parse) {
        Some(Ok(at)) => at,
        _ => return Some(Err("receipt without a valid `at`".to_owned())),
    };
    let event = &doc["event"];
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match doc["kind"].as_str()? {
        "signal" => {
            let (Some(signal), Some(value)) = (text(&event["signal"]), event["value"].as_str())
            else {
                return Some(Err("signal receipt without `signal` and `value`".to_owned()));
            };
            let value = match value.parse::<f64>() {
                Ok(number) => Value::from(number),
                Err(_) => Value::String(value.to_owned()),
            };
            Some(Ok(Line::Signal {
                tenant,
                signal,
                value,
                at,
                id: text(&event["id"]),
            }))
        }
        "entitlement" => {
            let Some(entitlement) = text(&event["entitlement"]) else {
                return Some(Err("entitlement receipt without `entitlement`".to_owned()));
            };
            Some(Ok(Line::Entitlement {
                tenant,
                event: entitlement,
                plan: text(&event["plan"]),
                at,
                id: text(&event["id"]),
            }))
        }
        "rejected" => {
            let input = &event["input"];
            let signal = text(&input["signal"])?;
            let value = input.get("value")?.clone();
            Some(Ok(Line::Signal {
                tenant,
                signal,
                value,
                at,
                id: text(&event["id"]),
            }))
        }
        _ => None,
    }
}
