//! Offline replay: recorded signals (JSON Lines) through the live code path.
//!
//! A line is a signal
//! `{"tenant":"acme","signal":"spend_rate","value":120.5,"at":"…","id":"m-1"}`
//! or an entitlement event
//! `{"tenant":"acme","entitlement":"approved","at":"…"}` (`plan` optional).
//! The clock is taken from the lines; a bad line is reported with its line
//! number and skipped. Actions go through the `log` adapter ([`run`]) unless
//! they are to run for real (the service's `run_live`, `replay --live-actions`).

use std::collections::{BTreeSet, VecDeque};
use std::io::BufRead;
use std::str::Utf8Error;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::entitlement::EntitlementEvent;
use crate::reading;
use crate::receipt::Input;
use crate::registry::{Applied, Registry, RegistryError};
use crate::sku::PolicyPack;
use crate::tenant::TenantId;

/// One parsed replay line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A signal reading.
    Signal {
        /// The tenant, as written (validated when fed).
        tenant: String,
        /// The signal name, as written.
        signal: String,
        /// The value as written (classified like the service's: a value
        /// that is not a number is receipted as `rejected`).
        value: serde_json::Value,
        /// The line's time: the replay's clock.
        at: Timestamp,
        /// Dedupe id.
        id: Option<String>,
    },
    /// A marketplace entitlement event.
    Entitlement {
        /// The tenant, as written (validated when fed).
        tenant: String,
        /// The event name (`created`, `approved`, …).
        event: String,
        /// The plan (a profile name), if any.
        plan: Option<String>,
        /// The line's time: the replay's clock.
        at: Timestamp,
        /// Dedupe id.
        id: Option<String>,
    },
}

impl Line {
    /// The tenant the line is about, as written (not yet validated).
    pub fn tenant(&self) -> &str {
        match self {
            Line::Signal { tenant, .. } | Line::Entitlement { tenant, .. } => tenant,
        }
    }

    /// When the line happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Line::Signal { at, .. } | Line::Entitlement { at, .. } => *at,
        }
    }
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    /// 1-based line number in the replay file.
    pub line: usize,
    /// Why, for people.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    tenant: String,
    at: Timestamp,
    signal: Option<String>,
    /// Present (even `null`) or absent: a present value is classified
    /// like the service's, so `null` is receipted as `rejected` there too.
    #[serde(default, deserialize_with = "present")]
    value: Option<serde_json::Value>,
    entitlement: Option<String>,
    plan: Option<String>,
    id: Option<String>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// Parses one line of a replay file (`number` is 1-based, for messages).
pub fn parse_line(number: usize, text: &str) -> Result<Line, LineError> {
    let err = |message: String| LineError {
        line: number,
        message,
    };
    let raw: RawLine =
        serde_json::from_str(text).map_err(|e| err(format!("invalid replay line: {e}")))?;
    match (raw.signal, raw.entitlement) {
        (Some(signal), None) => {
            if raw.plan.is_some() {
                return Err(err("`plan` belongs to entitlement lines".to_owned()));
            }
            let value = raw
                .value
                .ok_or_else(|| err(format!("signal `{signal}` needs a `value`")))?;
            Ok(Line::Signal {
                tenant: raw.tenant,
                signal,
                value,
                at: raw.at,
                id: raw.id,
            })
        }
        (None, Some(event)) => {
            if raw.value.is_some() {
                return Err(err("`value` belongs to signal lines".to_owned()));
            }
            Ok(Line::Entitlement {
                tenant: raw.tenant,
                event,
                plan: raw.plan,
                at: raw.at,
                id: raw.id,
            })
        }
        (Some(_), Some(_)) => Err(err(
            "a line has either `signal` or `entitlement`, not both".to_owned()
        )),
        (None, None) => Err(err(
            "a line needs `signal` (with `value`) or `entitlement`".to_owned()
        )),
    }
}

/// Why a replay stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The replay file could not be read.
    #[error("reading replay line {line} failed")]
    Read {
        /// 1-based line number.
        line: usize,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The registry (ledger) failed: nothing more can be recorded.
    #[error("recording replay line {line} failed")]
    Registry {
        /// 1-based line number.
        line: usize,
        /// The cause.
        #[source]
        source: RegistryError,
    },
}

/// Final state of one tenant after a replay: one JSON line of `replay`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantSummary {
    /// The tenant id.
    pub tenant: String,
    /// Its FSM state name.
    pub state: &'static str,
    /// Its entitlement state name.
    pub entitlement: &'static str,
    /// Receipts in the tenant's chain (its head seq).
    pub receipts: u64,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Lines read (blank lines excluded).
    pub lines: usize,
    /// Lines skipped, with why; the process exits 1 if there are any.
    pub bad_lines: Vec<LineError>,
    /// Every tenant the replay touched, sorted by id.
    pub tenants: Vec<TenantSummary>,
    /// Live actions still running when the replay gave up waiting (always 0 for `log`).
    pub unsettled: usize,
}

/// Feeds every line of `input` through `registry`, the same code path as the
/// live service, with the clock taken from the lines.
///
/// Actions go through the `log` adapter: each dispatch is confirmed at once
/// (at the time of the line that caused it), so no side effect leaves the
/// process. Returns after the ledger is flushed.
pub fn run(registry: &Registry, input: impl BufRead) -> Result<Summary, ReplayError> {
    let mut replay = Replay::default();
    let mut lines = Lines::new(input);
    while let Some((number, text)) = lines.next_line()? {
        replay.line(registry, number, text, &mut confirm_dispatches)?;
    }
    replay.finish(registry)
}

/// One line of a replay file: its 1-based number and its text (`Err` when
/// the bytes are not UTF-8).
pub type NumberedLine<'a> = (usize, Result<&'a str, Utf8Error>);

/// The lines of a replay file as raw bytes, so that a line that is not UTF-8
/// is one bad line rather than the end of the replay (`BufRead::lines`
/// fails the whole read on it).
#[derive(Debug)]
pub struct Lines<R> {
    input: R,
    buf: Vec<u8>,
    number: usize,
}

impl<R: BufRead> Lines<R> {
    /// Lines of `input`.
    pub fn new(input: R) -> Self {
        Lines {
            input,
            buf: Vec::new(),
            number: 0,
        }
    }

    /// The next line's 1-based number and text without its `\n` or `\r\n`
    /// (`Err` when the text is not UTF-8), or `None` at the end.
    pub fn next_line(&mut self) -> Result<Option<NumberedLine<'_>>, ReplayError> {
        self.buf.clear();
        let number = self.number + 1;
        let read = self
            .input
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| ReplayError::Read {
                line: number,
                source,
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.number = number;
        let mut line = self.buf.as_slice();
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        // A UTF-8 byte order mark (some editors write one) is not text.
        if number == 1 {
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        Ok(Some((number, std::str::from_utf8(line))))
    }
}

/// What happens to the dispatches of one line: confirmed by the `log`
/// adapter, or handed to the live dispatcher.
pub type Settle<'a> = dyn FnMut(&Registry, Applied, Timestamp) -> Result<(), RegistryError> + 'a;

/// A replay in progress: feed it lines ([`Replay::line`]), then
/// [`Replay::finish`]. [`run`] drives it with the `log` adapter; the service
/// drives it with live actions.
#[derive(Debug, Default)]
pub struct Replay {
    summary: Summary,
    touched: BTreeSet<TenantId>,
}

impl Replay {
    /// Feeds line `number` (blank lines are skipped; one that is not UTF-8 is bad).
    pub fn line(
        &mut self,
        registry: &Registry,
        number: usize,
        text: Result<&str, Utf8Error>,
        settle: &mut Settle<'_>,
    ) -> Result<(), ReplayError> {
        let text = match text {
            Ok(text) if text.trim().is_empty() => return Ok(()),
            Ok(text) => text,
            Err(e) => {
                self.summary.lines += 1;
                self.summary.bad_lines.push(LineError {
                    line: number,
                    message: format!(
                        "invalid replay line: not UTF-8 at byte `{}`",
                        e.valid_up_to() + 1
                    ),
                });
                return Ok(());
            }
        };
        self.summary.lines += 1;
        match feed(registry, number, text, settle) {
            Ok(Fed { tenant, bad }) => {
                self.touched.insert(tenant);
                self.summary.bad_lines.extend(bad);
            }
            Err(Failure::Bad(e)) => self.summary.bad_lines.push(e),
            Err(Failure::Fatal(source)) => {
                return Err(ReplayError::Registry {
                    line: number,
                    source,
                });
            }
        }
        Ok(())
    }

    /// Flushes the ledger and summarizes every touched tenant.
    pub fn finish(self, registry: &Registry) -> Result<Summary, ReplayError> {
        let mut summary = self.summary;
        registry
            .ledger()
            .flush()
            .map_err(|e| ReplayError::Registry {
                line: summary.lines,
                source: RegistryError::Ledger(e),
            })?;
        summary.tenants = self
            .touched
            .into_iter()
            .filter_map(|tenant| registry.view(&tenant))
            .map(|view| TenantSummary {
                tenant: view.tenant.to_string(),
                state: view.state.name(),
                entitlement: view.entitlement.as_str(),
                receipts: view.seq,
            })
            .collect();
        Ok(summary)
    }
}

struct Fed {
    tenant: TenantId,
    /// Set when the line was recorded but refused (as `rejected` or a refused entitlement event).
    bad: Option<LineError>,
}

enum Failure {
    /// The line is skipped and reported.
    Bad(LineError),
    /// The registry failed; the replay stops.
    Fatal(RegistryError),
}

/// A parsed line made ready for [`Registry::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The tenant, validated.
    pub tenant: TenantId,
    /// The line's time.
    pub at: Timestamp,
    /// What to apply: the signal or entitlement event, or the `rejected`
    /// receipt of a reading the service would refuse.
    pub input: Input,
    /// Why the reading was rejected, if it was (it is still applied, so
    /// the refusal is receipted as the service would).
    pub rejected: Option<String>,
}

/// Turns `line` into the registry's input the way the service classifies a
/// request: an unknown signal or a value that is not a number becomes a
/// `rejected` input; an unknown tenant id, entitlement event or plan is an
/// error (`Err` says why), since the service refuses those before deciding.
pub fn prepare(pack: &dyn PolicyPack, line: &Line) -> Result<Prepared, String> {
    let tenant = TenantId::new(line.tenant()).map_err(|e| e.to_string())?;
    let at = line.at();
    let (input, rejected) = match line {
        Line::Signal {
            signal, value, id, ..
        } => {
            let classified = reading::classify(
                pack,
                &reading::Reading {
                    signal,
                    value,
                    id: id.as_deref(),
                    // The line's time is the replay's clock, not an observation.
                    observed: None,
                    via: crate::receipt::Via::Api,
                },
            );
            (classified.input, classified.rejected)
        }
        Line::Entitlement {
            event, plan, id, ..
        } => {
            let Ok(parsed) = event.parse::<EntitlementEvent>() else {
                return Err(format!("unknown entitlement event `{event}`"));
            };
            let profile = match plan.as_deref().map(|p| (p, pack.profile_by_name(p))) {
                None => None,
                Some((_, Some(profile))) => Some(profile),
                Some((name, None)) => return Err(format!("unknown plan `{name}`")),
            };
            (
                Input::Entitlement {
                    event: parsed,
                    id: id.clone(),
                    plan: profile,
                    observed: None,
                    marketplace: None,
                },
                None,
            )
        }
    };
    Ok(Prepared {
        tenant,
        at,
        input,
        rejected,
    })
}

fn feed(
    registry: &Registry,
    number: usize,
    text: &str,
    settle: &mut Settle<'_>,
) -> Result<Fed, Failure> {
    let bad = |message: String| LineError {
        line: number,
        message,
    };
    let line = parse_line(number, text).map_err(Failure::Bad)?;
    let Prepared {
        tenant,
        at,
        input,
        rejected: refusal,
    } = prepare(registry.pack(), &line).map_err(|e| Failure::Bad(bad(e)))?;
    let applied = match registry.apply(&tenant, input, at) {
        Ok(applied) => applied,
        // One tenant's refusal is a bad line; the other tenants go on.
        Err(
            e @ (RegistryError::TooManyTenants { .. }
            | RegistryError::DedupeFull { .. }
            | RegistryError::DedupeTotalFull { .. }
            | RegistryError::ChainMismatch { .. }
            | RegistryError::Quarantined { .. }),
        ) => {
            return Err(Failure::Bad(bad(crate::report::error_chain(&e))));
        }
        Err(e) => return Err(Failure::Fatal(e)),
    };
    let refused = applied.refused.as_ref().map(|e| e.to_string());
    settle(registry, applied, at).map_err(Failure::Fatal)?;
    Ok(Fed {
        tenant,
        bad: refusal.or(refused).map(bad),
    })
}

/// The `log` adapter: every dispatched action succeeds at once. A result can
/// dispatch more (undo on recovery), so this runs until nothing is left.
fn confirm_dispatches(
    registry: &Registry,
    applied: Applied,
    at: Timestamp,
) -> Result<(), RegistryError> {
    let mut queue: VecDeque<_> = applied.dispatches.into();
    while let Some(dispatch) = queue.pop_front() {
        let result = Input::ActionResult {
            key: dispatch.key.clone(),
            ok: true,
            detail: Some("log adapter (replay)".to_owned()),
        };
        let next = registry.apply(&dispatch.key.tenant, result, at)?;
        queue.extend(next.dispatches);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_lines() {
        let line = parse_line(
            1,
            r#"{"tenant":"acme","signal":"spend_rate","value":120.5,"at":"2026-01-01T00:00:00Z","id":"m-1"}"#,
        )
        .unwrap();
        assert_eq!(
            line,
            Line::Signal {
                tenant: "acme".into(),
                signal: "spend_rate".into(),
                value: serde_json::json!(120.5),
                at: Timestamp::parse("2026-01-01T00:00:00Z").unwrap(),
                id: Some("m-1".into()),
            }
        );
    }

    #[test]
    fn parses_entitlement_lines() {
        let line = parse_line(
            2,
            r#"{"tenant":"acme","entitlement":"approved","at":"2026-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert!(matches!(line, Line::Entitlement { ref event, .. } if event == "approved"));
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let text = "\u{feff}{\"a\":1}\r\n\u{feff}x\n";
        let mut lines = Lines::new(text.as_bytes());
        let (n, first) = lines.next_line().unwrap().unwrap();
        assert_eq!((n, first.unwrap()), (1, "{\"a\":1}"));
        // Only at the start of the file.
        let (n, second) = lines.next_line().unwrap().unwrap();
        assert_eq!((n, second.unwrap()), (2, "\u{feff}x"));
    }

    #[test]
    fn reports_bad_lines_with_their_number() {
        let cases = [
            "not json",
            r#"{"tenant":"acme","signal":"s","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"at":"soon"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"entitlement":"approved","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"tenant":"acme","signal":"s","value":1,"at":"2026-01-01T00:00:00Z","extra":1}"#,
        ];
        for (i, text) in cases.iter().enumerate() {
            let e = parse_line(i + 7, text).unwrap_err();
            assert_eq!(e.line, i + 7, "{text}");
            assert!(e.to_string().starts_with(&format!("line {}: ", i + 7)));
        }
    }
}
