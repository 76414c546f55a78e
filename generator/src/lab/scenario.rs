//! `ggen test`: the scenario file beside a spec (`x.json` → `x.test.json`,
//! schema `ggen schema test`), run on the spec's interpreted pack.
//!
//! A scenario feeds one tenant inputs in the replay format (plus action
//! results and clock moves) and states expectations after chosen inputs.
//! The file is checked like a spec (syntax, duplicate keys, schema, then
//! names against the spec), every problem located; then every scenario
//! runs to its end, so one run reports every failed expectation, each at
//! the place in the file that states it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ggen_runtime_core::clock::Timestamp;
use ggen_runtime_core::entitlement::EntitlementEvent;
use ggen_runtime_core::ledger::memory::MemoryLedger;
use ggen_runtime_core::ledger::{Ledger, LedgerError};
use ggen_runtime_core::receipt::Input;
use ggen_runtime_core::registry::RegistryError;
use ggen_runtime_core::replay::{self, Line};
use ggen_runtime_core::sku::{ActionId, PolicyPack, ProfileId};
use ggen_runtime_core::tenant::TenantId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Settle, Sim, SimError};
use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, Source};
use crate::validate::{self, EmbeddedSchema, ValidateError};

/// The JSON Schema of a scenario file, as printed by `ggen schema test`.
pub const SCENARIOS_SCHEMA: &str = include_str!("../../schema/scenarios.schema.json");

static SCHEMA: EmbeddedSchema = EmbeddedSchema::new(SCENARIOS_SCHEMA);

/// What a scenario file's name ends with.
const SUFFIX: &str = ".test.json";

/// The clock before a scenario's first input, unless it sets `start`.
const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// The tenant of a scenario that names none.
const DEFAULT_TENANT: &str = "acme";

/// Receipts of a failed scenario's trail shown on a terminal (JSON has all).
const TRAIL_SHOWN: usize = 40;

/// The scenario file of `spec`: `specs/x.json` → `specs/x.test.json`.
pub fn scenario_path(spec: &Path) -> PathBuf {
    let name = spec.file_name().map(|n| n.to_string_lossy().into_owned());
    let stem = name
        .as_deref()
        .map(|n| n.strip_suffix(".json").unwrap_or(n))
        .unwrap_or_default();
    spec.with_file_name(format!("{stem}{SUFFIX}"))
}

/// The spec a scenario file belongs to: `specs/x.test.json` → `specs/x.json`.
pub fn spec_path(scenarios: &Path) -> Option<PathBuf> {
    let name = scenarios.file_name()?.to_str()?;
    let stem = name.strip_suffix(SUFFIX)?;
    Some(scenarios.with_file_name(format!("{stem}.json")))
}

/// Whether `path` names a scenario file (`*.test.json`), which is never a spec.
pub fn is_scenario_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(SUFFIX))
}

// ---- the file, as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    scenarios: Vec<ScenarioDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioDoc {
    name: String,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for people")]
    description: Option<String>,
    tenant: Option<String>,
    profile: Option<String>,
    approved: Option<bool>,
    start: Option<String>,
    #[serde(default)]
    actions: Settle,
    inputs: Vec<InputDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputDoc {
    signal: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    entitlement: Option<String>,
    plan: Option<String>,
    result: Option<String>,
    ok: Option<bool>,
    id: Option<String>,
    at: Option<String>,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation for people")]
    note: Option<String>,
    expect: Option<Expect>,
}

/// What must hold after one input; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The tenant's FSM state.
    pub state: Option<String>,
    /// Its entitlement state.
    pub entitlement: Option<String>,
    /// Its profile.
    pub profile: Option<String>,
    /// Its level (worst rule).
    pub level: Option<String>,
    /// Exactly the actions the input dispatched, in any order.
    pub dispatched: Option<Vec<String>>,
    /// Actions the input must not have dispatched.
    pub not_dispatched: Option<Vec<String>>,
    /// Exactly the actions in flight afterwards, in any order.
    pub in_flight: Option<Vec<String>>,
    /// Receipts of each named kind the input wrote.
    pub receipts: Option<BTreeMap<String, u64>>,
    /// The reason of the input's own decision.
    pub reason: Option<String>,
    /// What blocked a dispatch (`Some(None)`: nothing may have).
    #[serde(default, deserialize_with = "present_option")]
    pub blocked: Option<Option<String>>,
    /// Whether the input was refused.
    pub refused: Option<bool>,
}

/// A field that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A field that is present, as `Some(None)` when it is `null`.
fn present_option<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

// ---- the file, checked against its spec ----

/// A checked scenario file, ready to run.
#[derive(Debug)]
pub struct Scenarios {
    /// The file as the user named it.
    pub file: String,
    source: Source,
    scenarios: Vec<Scenario>,
}

impl Scenarios {
    /// How many scenarios the file has.
    pub fn len(&self) -> usize {
        self.scenarios.len()
    }

    /// Whether the file has none (the schema requires one).
    pub fn is_empty(&self) -> bool {
        self.scenarios.is_empty()
    }
}

#[derive(Debug)]
struct Scenario {
    name: String,
    tenant: TenantId,
    settle: Settle,
    start: Timestamp,
    /// The `approved` event before the first input, on this plan.
    approval: Option<Option<ProfileId>>,
    steps: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    /// 1-based.
    number: usize,
    /// JSON pointer of the input.
    pointer: String,
    at: Timestamp,
    what: What,
    expect: Option<Expect>,
}

#[derive(Debug)]
enum What {
    /// A replay line (signal or entitlement event).
    Line(Line),
    /// An action's result.
    Result { action: ActionId, ok: bool },
    /// The clock moves; due timers fire.
    Clock,
}

/// Reads and checks the scenario file `path` against `pack`: the scenarios,
/// or every problem, located.
pub fn load(path: &Path, pack: &'static dyn PolicyPack) -> Result<Scenarios, ValidateError> {
    let source = load::read(path).map_err(|d| ValidateError::Invalid(vec![d]))?;
    check(source, pack)
}

/// Checks scenario text (`source`) against `pack`.
pub fn check(source: Source, pack: &'static dyn PolicyPack) -> Result<Scenarios, ValidateError> {
    let (value, mut found) = validate::check_document(&source, &SCHEMA)?;
    let doc = if found.is_empty() {
        match FileDoc::deserialize(&value) {
            Ok(doc) => Some(doc),
            Err(e) => {
                // The schema mirrors the types; this is what it cannot say.
                let located = serde_json::from_str::<FileDoc>(&source.text)
                    .err()
                    .map_or_else(
                        || Diagnostic::whole_file(&source.path, e.to_string()),
                        |e| validate::json_error(&source, &e),
                    );
                found.push(located);
                None
            }
        }
    } else {
        None
    };
    let mut scenarios = Vec::new();
    if let Some(doc) = doc {
        let mut checker = Checker {
            source: &source,
            pack,
            found: &mut found,
        };
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for (i, scenario) in doc.scenarios.into_iter().enumerate() {
            let pointer = format!("/scenarios/{i}");
            if let Some(first) = names.insert(scenario.name.clone(), i) {
                checker.problem(
                    &format!("{pointer}/name"),
                    format!(
                        "scenario `{}` is named twice (first at /scenarios/{first})",
                        scenario.name
                    ),
                );
            }
            if let Some(scenario) = checker.scenario(&pointer, scenario) {
                scenarios.push(scenario);
            }
        }
    }
    if !found.is_empty() {
        diagnostic::sort(&mut found);
        return Err(ValidateError::Invalid(found));
    }
    Ok(Scenarios {
        file: source.path.clone(),
        source,
        scenarios,
    })
}

struct Checker<'a> {
    source: &'a Source,
    pack: &'static dyn PolicyPack,
    found: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    fn problem(&mut self, pointer: &str, message: String) {
        let (line, column) = load::position(self.source, pointer);
        self.found.push(Diagnostic::new(
            &self.source.path,
            line,
            column,
            pointer,
            message,
        ));
    }

    fn profile(&mut self, pointer: &str, name: &str) -> Option<ProfileId> {
        let found = self.pack.profile_by_name(name);
        if found.is_none() {
            let known: Vec<&str> = self.pack.sku().profiles.iter().map(|p| p.name).collect();
            self.problem(pointer, unknown("profile", name, &known));
        }
        found
    }

    fn action(&mut self, pointer: &str, name: &str) -> Option<ActionId> {
        let actions = self.pack.sku().actions;
        let found = actions.iter().position(|a| a.name == name);
        if found.is_none() {
            let known: Vec<&str> = actions.iter().map(|a| a.name).collect();
            self.problem(pointer, unknown("action", name, &known));
        }
        found.map(|i| ActionId(u16::try_from(i).unwrap_or(u16::MAX)))
    }

    fn scenario(&mut self, pointer: &str, doc: ScenarioDoc) -> Option<Scenario> {
        let mut ok = true;
        let tenant_text = doc.tenant.as_deref().unwrap_or(DEFAULT_TENANT);
        let tenant = match TenantId::new(tenant_text) {
            Ok(tenant) => Some(tenant),
            Err(e) => {
                self.problem(&format!("{pointer}/tenant"), e.to_string());
                None
            }
        };
        let profile = match &doc.profile {
            Some(name) => {
                let found = self.profile(&format!("{pointer}/profile"), name);
                ok &= found.is_some();
                found
            }
            None => None,
        };
        let approved = doc
            .approved
            .unwrap_or(profile.is_some() || self.pack.sku().entitlement_required);
        if !approved && doc.profile.is_some() {
            self.problem(
                &format!("{pointer}/approved"),
                "a `profile` is set by the approval before the first input; without it, write the entitlement inputs that choose the plan".to_owned(),
            );
            ok = false;
        }
        let start = match Timestamp::parse(doc.start.as_deref().unwrap_or(DEFAULT_START)) {
            Ok(start) => Some(start),
            Err(e) => {
                self.problem(&format!("{pointer}/start"), format!("{e}"));
                None
            }
        };
        let mut now = start.unwrap_or_default();
        let mut steps = Vec::new();
        for (j, input) in doc.inputs.into_iter().enumerate() {
            let at_pointer = format!("{pointer}/inputs/{j}");
            match self.step(
                &at_pointer,
                j + 1,
                input,
                &mut now,
                doc.actions,
                tenant_text,
            ) {
                Some(step) => steps.push(step),
                None => ok = false,
            }
        }
        Some(Scenario {
            name: doc.name,
            tenant: tenant?,
            settle: doc.actions,
            start: start?,
            approval: approved.then_some(profile),
            steps,
        })
        .filter(|_| ok)
    }

    fn step(
        &mut self,
        pointer: &str,
        number: usize,
        doc: InputDoc,
        now: &mut Timestamp,
        settle: Settle,
        tenant: &str,
    ) -> Option<Step> {
        let mut ok = true;
        let at = match doc.at.as_deref().map(|text| time(text, *now)) {
            None => *now,
            Some(Ok(at)) if at >= *now => at,
            Some(Ok(at)) => {
                self.problem(
                    &format!("{pointer}/at"),
                    if number == 1 {
                        format!("`{at}` is before the scenario's start `{now}`")
                    } else {
                        format!("`{at}` is before the previous input's time `{now}`")
                    },
                );
                ok = false;
                *now
            }
            Some(Err(message)) => {
                self.problem(&format!("{pointer}/at"), message);
                ok = false;
                *now
            }
        };
        *now = at;
        let kinds = [
            doc.signal.is_some(),
            doc.entitlement.is_some(),
            doc.result.is_some(),
        ];
        let what = match (&doc.signal, &doc.entitlement, &doc.result) {
            _ if kinds.iter().filter(|k| **k).count() > 1 => {
                self.problem(
                    pointer,
                    "an input has one of `signal`, `entitlement` and `result`".to_owned(),
                );
                None
            }
            (Some(signal), None, None) => {
                if self.pack.signal_by_name(signal).is_none() {
                    let known: Vec<&str> = self.pack.sku().signals.iter().map(|s| s.name).collect();
                    self.problem(
                        &format!("{pointer}/signal"),
                        unknown("signal", signal, &known),
                    );
                    ok = false;
                }
                self.misplaced(pointer, &doc, &["plan", "ok"]);
                match doc.value.clone() {
                    Some(value) => Some(What::Line(Line::Signal {
                        tenant: tenant.to_owned(),
                        signal: signal.clone(),
                        value,
                        at,
                        id: doc.id.clone(),
                    })),
                    None => {
                        self.problem(pointer, format!("signal `{signal}` needs a `value`"));
                        None
                    }
                }
            }
            (None, Some(event), None) => {
                if let Some(plan) = &doc.plan {
                    ok &= self.profile(&format!("{pointer}/plan"), plan).is_some();
                }
                ok &= event.parse::<EntitlementEvent>().is_ok();
                self.misplaced(pointer, &doc, &["value", "ok"]);
                Some(What::Line(Line::Entitlement {
                    tenant: tenant.to_owned(),
                    event: event.clone(),
                    plan: doc.plan.clone(),
                    at,
                    id: doc.id.clone(),
                }))
            }
            (None, None, Some(action)) => {
                let action = self.action(&format!("{pointer}/result"), action);
                if settle != Settle::Manual {
                    self.problem(
                        &format!("{pointer}/result"),
                        format!(
                            "actions are settled at once in this scenario (`actions: {}`); `result` inputs need `\"actions\": \"manual\"`",
                            settle_name(settle)
                        ),
                    );
                    ok = false;
                }
                let Some(result) = doc.ok else {
                    self.problem(pointer, "a `result` needs `ok` (true or false)".to_owned());
                    return None;
                };
                self.misplaced(pointer, &doc, &["value", "plan", "id"]);
                action.map(|action| What::Result { action, ok: result })
            }
            (None, None, None) => {
                if doc.at.is_none() {
                    self.problem(
                        pointer,
                        "an input needs `signal`, `entitlement` or `result`, or only `at` to move the clock".to_owned(),
                    );
                    ok = false;
                }
                self.misplaced(pointer, &doc, &["value", "plan", "ok", "id"]);
                Some(What::Clock)
            }
            _ => None,
        };
        if let Some(expect) = &doc.expect {
            ok &= self.expect(&format!("{pointer}/expect"), expect);
        }
        let before = self.found.len();
        let what = what?;
        (ok && self.found.len() == before).then_some(Step {
            number,
            pointer: pointer.to_owned(),
            at,
            what,
            expect: doc.expect,
        })
    }

    /// Reports the keys of `doc` among `keys`, which this kind of input has no use for.
    fn misplaced(&mut self, pointer: &str, doc: &InputDoc, keys: &[&str]) {
        for key in keys {
            let present = match *key {
                "value" => doc.value.is_some(),
                "plan" => doc.plan.is_some(),
                "ok" => doc.ok.is_some(),
                "id" => doc.id.is_some(),
                _ => false,
            };
            if present {
                let kind = if doc.signal.is_some() {
                    "a signal"
                } else if doc.entitlement.is_some() {
                    "an entitlement event"
                } else if doc.result.is_some() {
                    "a result"
                } else {
                    "a clock move"
                };
                self.problem(
                    &diagnostic::join_pointer(pointer, key),
                    format!("`{key}` has no meaning for {kind}"),
                );
            }
        }
    }

    fn expect(&mut self, pointer: &str, expect: &Expect) -> bool {
        let before = self.found.len();
        if let Some(profile) = &expect.profile {
            self.profile(&format!("{pointer}/profile"), profile);
        }
        for (key, names) in [
            ("dispatched", &expect.dispatched),
            ("not_dispatched", &expect.not_dispatched),
            ("in_flight", &expect.in_flight),
        ] {
            for (i, name) in names.iter().flatten().enumerate() {
                self.action(&format!("{pointer}/{key}/{i}"), name);
            }
        }
        self.found.len() == before
    }
}

fn settle_name(settle: Settle) -> &'static str {
    match settle {
        Settle::Succeed => "succeed",
        Settle::Fail => "fail",
        Settle::Manual => "manual",
    }
}

/// `unknown signal `x`; the spec has `a`, `b``.
fn unknown(what: &str, name: &str, known: &[&str]) -> String {
    let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    format!(
        "unknown {what} `{name}`; the spec has {}",
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// An input's time: RFC 3339, or `+` and a duration after `previous`.
fn time(text: &str, previous: Timestamp) -> Result<Timestamp, String> {
    match text.strip_prefix('+') {
        Some(duration) => {
            let ms = duration_ms(duration).ok_or_else(|| {
                format!(
                    "`{text}` is not a time: expected RFC 3339 or `+` and a duration such as `+90s`, `+5m`, `+1h30m`, `+2d`, `+250ms`"
                )
            })?;
            previous
                .as_millis()
                .checked_add(ms)
                .map(Timestamp::from_millis)
                .ok_or_else(|| format!("`{text}` is too far after `{previous}`"))
        }
        None => Timestamp::parse(text).map_err(|e| {
            format!("`{text}` is not a time ({e}): expected RFC 3339 or `+` and a duration such as `+90s`")
        }),
    }
}

/// Milliseconds of `1h30m`, `90s`, `250ms`, `2d` (units in any order, at least one).
fn duration_ms(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, tail) = ["ms", "s", "m", "h", "d"]
            .iter()
            .find_map(|u| rest.strip_prefix(u).map(|tail| (*u, tail)))?;
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => 86_400_000,
        };
        total = total.checked_add(number.checked_mul(scale)?)?;
        rest = tail;
    }
    Some(total)
}

// ---- running ----

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The scenario file.
    pub file: String,
    /// 1-based line of the expectation.
    pub line: usize,
    /// 1-based column of the expectation.
    pub column: usize,
    /// JSON pointer of the expectation.
    pub pointer: String,
    /// The scenario's name.
    pub scenario: String,
    /// The input (1-based) after which it was checked.
    pub input: usize,
    /// What was checked (`state`, `dispatched`, `timeout receipts`, …).
    pub what: String,
    /// What the file expects.
    pub expected: Value,
    /// What happened.
    pub got: Value,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: scenario \"{}\": after input {} expected {} {}, got {}",
            self.file,
            self.line,
            self.column,
            self.scenario.escape_debug(),
            self.input,
            self.what,
            shown(&self.expected),
            shown(&self.got)
        )
    }
}

/// A value as a failure shows it: strings bare, lists in brackets, `null` as `none`.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "none".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(shown).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// One receipt of a failed scenario's tenant, with the input that wrote it
/// (0: the approval before the first input).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrailEntry {
    /// The input, 1-based (0: before the first).
    pub input: usize,
    /// The receipt as stored.
    pub receipt: Value,
}

/// What one scenario did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioReport {
    /// Its name.
    pub name: String,
    /// Its inputs.
    pub inputs: usize,
    /// Expectations checked.
    pub checks: usize,
    /// Every expectation that did not hold, in file order.
    pub failures: Vec<Failure>,
    /// When it failed: the tenant's receipts up to its last failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trail: Vec<TrailEntry>,
}

impl ScenarioReport {
    /// Whether every expectation held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failed scenario's decision trail, one receipt per line (the last
    /// 40 receipts).
    pub fn trail_text(&self) -> String {
        let mut text = String::new();
        let skipped = self.trail.len().saturating_sub(TRAIL_SHOWN);
        if skipped > 0 {
            let _ = writeln!(text, "    … {skipped} earlier receipt(s)");
        }
        for entry in &self.trail[skipped..] {
            let _ = writeln!(
                text,
                "    input {:>3}  {}",
                entry.input,
                trail_line(&entry.receipt)
            );
        }
        text
    }
}

/// `#5 2026-01-01T00:02:00Z signal spend_rate=120: stable → intervening (dispatched) → throttle`.
fn trail_line(receipt: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let event = &receipt["event"];
    let kind = s(&receipt["kind"]);
    let detail = match kind.as_str() {
        "signal" => format!("{}={}", s(&event["signal"]), s(&event["value"])),
        "entitlement" => match event["plan"].as_str() {
            Some(plan) => format!("{} (plan {plan})", s(&event["entitlement"])),
            None => s(&event["entitlement"]),
        },
        "action" => {
            let undo = if receipt["action"]["undo"] == Value::Bool(true) {
                " (undo)"
            } else {
                ""
            };
            format!("{}{undo}", s(&receipt["action"]["name"]))
        }
        "action_result" => format!(
            "{} {}",
            s(&event["action"]),
            if event["ok"] == Value::Bool(true) {
                "ok"
            } else {
                "failed"
            }
        ),
        "timeout" => event["timer"].as_str().unwrap_or("timer").to_owned(),
        "rejected" => event["reason"].as_str().unwrap_or("").to_owned(),
        _ => String::new(),
    };
    let mut line = format!("#{} {} {kind}", receipt["seq"], s(&receipt["at"]));
    if !detail.is_empty() {
        line.push(' ');
        line.push_str(&detail);
    }
    let _ = write!(
        line,
        ": {} → {} ({})",
        s(&receipt["from"]),
        s(&receipt["to"]),
        s(&receipt["decision"]["reason"])
    );
    if let Some(block) = receipt["decision"]["block"]["kind"].as_str() {
        let _ = write!(line, " blocked by {block}");
    }
    let actions: Vec<String> = receipt["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| s(&a["name"]))
        .collect();
    if !actions.is_empty() {
        let _ = write!(line, " dispatches {}", actions.join(", "));
    }
    line
}

/// Why a scenario could not run to its end (the ledger failed: internal).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The registry refused what the lab fed it.
    #[error("scenario \"{scenario}\": input {input}")]
    Registry {
        /// The scenario.
        scenario: String,
        /// The input.
        input: usize,
        /// The cause.
        #[source]
        source: Box<RegistryError>,
    },
    /// An input the file check let through was refused (a broken guarantee).
    #[error("scenario \"{scenario}\": input {input}: {message}")]
    Input {
        /// The scenario.
        scenario: String,
        /// The input.
        input: usize,
        /// Why.
        message: String,
    },
    /// A receipt could not be read back.
    #[error("scenario \"{scenario}\": reading its receipts")]
    Ledger {
        /// The scenario.
        scenario: String,
        /// The cause.
        #[source]
        source: Box<LedgerError>,
    },
}

/// Runs every scenario of `file` on `pack`.
pub fn run(
    file: &Scenarios,
    pack: &'static dyn PolicyPack,
) -> Result<Vec<ScenarioReport>, RunError> {
    file.scenarios
        .iter()
        .map(|scenario| run_one(file, scenario, pack))
        .collect()
}

/// What one step wrote and left, as the expectations see it.
struct Observed {
    receipts: Vec<Value>,
    /// Index in `receipts` of the input's own receipt.
    own: Option<usize>,
    refused: bool,
}

/// Most timers one input may fire (a scenario is about a few hours or days).
const MAX_TIMERS: usize = 10_000;

/// What the lab refused in a step, reported as a failure of the scenario.
enum Refusal {
    /// The clock moved too far for the timers due.
    Timers(String),
    /// The registry refused the input (a bound of the service).
    Input(String),
}

fn run_one(
    file: &Scenarios,
    scenario: &Scenario,
    pack: &'static dyn PolicyPack,
) -> Result<ScenarioReport, RunError> {
    let ledger = Arc::new(MemoryLedger::new());
    let mut sim = Sim::new(
        pack,
        Arc::clone(&ledger) as Arc<dyn Ledger>,
        scenario.settle,
    );
    sim.limit_timers(MAX_TIMERS);
    let tenant = &scenario.tenant;
    // A refusal is the scenario's failure; anything else is internal.
    let refusal = |input: usize, error: SimError| match error {
        SimError::Timers { .. } => Ok(Refusal::Timers(error.to_string())),
        SimError::Registry(e) if super::refuses_input(&e) => {
            Ok(Refusal::Input(crate::diagnostic::error_chain(&e)))
        }
        SimError::Registry(source) => Err(RunError::Registry {
            scenario: scenario.name.clone(),
            input,
            source: Box::new(source),
        }),
    };
    let mut ignore = |_| {};
    // Which input wrote each receipt (index seq - 1).
    let mut writers: Vec<usize> = Vec::new();
    let head = |ledger: &MemoryLedger| ledger.head(tenant).seq;
    let mut report = ScenarioReport {
        name: scenario.name.clone(),
        inputs: scenario.steps.len(),
        checks: 0,
        failures: Vec::new(),
        trail: Vec::new(),
    };
    if let Some(plan) = scenario.approval {
        let input = Input::Entitlement {
            event: EntitlementEvent::Approved,
            id: None,
            plan,
            observed: None,
            marketplace: None,
        };
        if let Err(error) = sim.apply(tenant, input, scenario.start, &mut ignore) {
            refusal(0, error)?;
        }
    }
    writers.resize(usize::try_from(head(&ledger)).unwrap_or(usize::MAX), 0);
    let mut last_failed_seq = None;
    for step in &scenario.steps {
        let before = head(&ledger);
        let failed_before = report.failures.len();
        let mut refused = false;
        let mut stopped = None;
        let timers = match sim.advance(step.at, &mut ignore) {
            Ok(()) => head(&ledger),
            Err(error) => {
                stopped = Some(refusal(step.number, error)?);
                head(&ledger)
            }
        };
        match (&step.what, &stopped) {
            (_, Some(_)) | (What::Clock, None) => {}
            (What::Line(line), None) => {
                // Checked against the pack when the file was loaded.
                let prepared = replay::prepare(pack, line).map_err(|message| RunError::Input {
                    scenario: scenario.name.clone(),
                    input: step.number,
                    message,
                })?;
                refused |= prepared.rejected.is_some();
                match sim.apply(tenant, prepared.input, step.at, &mut ignore) {
                    Ok(entitlement) => refused |= entitlement.is_some(),
                    Err(error) => stopped = Some(refusal(step.number, error)?),
                }
            }
            (What::Result { action, ok }, None) => {
                report.checks += 1;
                match sim.result(tenant, *action, *ok, step.at, &mut ignore) {
                    Ok(true) => {}
                    Ok(false) => {
                        // Nothing waits for this result: a failure of the
                        // scenario, reported like an expectation.
                        let name = pack.sku().action(*action).name;
                        report.failures.push(failure(
                            file,
                            scenario,
                            step,
                            &format!("{}/result", step.pointer),
                            "a dispatch of",
                            Value::String(name.to_owned()),
                            Value::String("none waiting for a result".to_owned()),
                        ));
                    }
                    Err(error) => stopped = Some(refusal(step.number, error)?),
                }
            }
        }
        let after = head(&ledger);
        writers.resize(usize::try_from(after).unwrap_or(usize::MAX), step.number);
        let timed_out = matches!(stopped, Some(Refusal::Timers(_)));
        if let Some(stopped) = stopped {
            let (pointer, what, expected, got) = match stopped {
                Refusal::Timers(message) => (
                    format!("{}/at", step.pointer),
                    "a clock move that fires at most",
                    Value::from(MAX_TIMERS),
                    Value::String(message),
                ),
                Refusal::Input(message) => (
                    step.pointer.clone(),
                    "the input",
                    Value::String("accepted".to_owned()),
                    Value::String(format!("refused: {message}")),
                ),
            };
            report.checks += 1;
            report
                .failures
                .push(failure(file, scenario, step, &pointer, what, expected, got));
        }
        if timed_out {
            // The rest of the scenario would run on a clock it never reached.
            last_failed_seq = Some(after);
            break;
        }
        let receipts: Vec<Value> = ledger
            .read(tenant, before, usize::MAX)
            .map_err(|source| RunError::Ledger {
                scenario: scenario.name.clone(),
                source: Box::new(source),
            })?
            .iter()
            .map(|r| serde_json::from_slice(&r.bytes).unwrap_or(Value::Null))
            .collect();
        let own = match step.what {
            // A clock move's own decision is its last timer's.
            What::Clock => receipts.iter().rposition(|r| r["kind"] == "timeout"),
            _ if after > timers => usize::try_from(timers - before).ok(),
            _ => None,
        };
        let observed = Observed {
            receipts,
            own,
            refused,
        };
        if let Some(expect) = &step.expect {
            let expected_from = report.failures.len();
            check_step(file, scenario, step, expect, &observed, &sim, &mut report);
            // In file order, whatever order the keys were checked in.
            report.failures[expected_from..].sort_by_key(|f| (f.line, f.column));
        }
        if report.failures.len() > failed_before {
            last_failed_seq = Some(after);
        }
    }
    if let Some(through) = last_failed_seq {
        let limit = usize::try_from(through).unwrap_or(usize::MAX);
        report.trail = ledger
            .read(tenant, 0, limit)
            .map_err(|source| RunError::Ledger {
                scenario: scenario.name.clone(),
                source: Box::new(source),
            })?
            .iter()
            .map(|r| TrailEntry {
                input: writers
                    .get(usize::try_from(r.seq - 1).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(0),
                receipt: serde_json::from_slice(&r.bytes).unwrap_or(Value::Null),
            })
            .collect();
    }
    Ok(report)
}

fn failure(
    file: &Scenarios,
    scenario: &Scenario,
    step: &Step,
    pointer: &str,
    what: &str,
    expected: Value,
    got: Value,
) -> Failure {
    let (line, column) = load::position(&file.source, pointer);
    Failure {
        file: file.file.clone(),
        line,
        column,
        pointer: pointer.to_owned(),
        scenario: scenario.name.clone(),
        input: step.number,
        what: what.to_owned(),
        expected,
        got,
    }
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut names = names.to_vec();
    names.sort();
    names
}

fn check_step(
    file: &Scenarios,
    scenario: &Scenario,
    step: &Step,
    expect: &Expect,
    observed: &Observed,
    sim: &Sim,
    report: &mut ScenarioReport,
) {
    let base = format!("{}/expect", step.pointer);
    let view = sim.registry().view(&scenario.tenant);
    let mut check = |key: &str, what: &str, expected: Value, got: Value| {
        report.checks += 1;
        if expected != got {
            report.failures.push(failure(
                file,
                scenario,
                step,
                &format!("{base}/{key}"),
                what,
                expected,
                got,
            ));
        }
    };
    let text = |s: &str| Value::String(s.to_owned());
    let names = |names: Vec<String>| Value::Array(names.into_iter().map(Value::String).collect());
    if let Some(state) = &expect.state {
        let got = view.as_ref().map_or("boot", |v| v.state.name());
        check("state", "state", text(state), text(got));
    }
    if let Some(entitlement) = &expect.entitlement {
        let got = view.as_ref().map_or("pending", |v| v.entitlement.as_str());
        check("entitlement", "entitlement", text(entitlement), text(got));
    }
    if let Some(profile) = &expect.profile {
        let default = sim.registry().pack().sku().default_profile;
        let got = view.as_ref().map_or_else(
            || sim.registry().pack().sku().profile(default).name,
            |v| v.profile,
        );
        check("profile", "profile", text(profile), text(got));
    }
    if let Some(level) = &expect.level {
        let got = view.as_ref().map_or("normal", |v| v.level.as_str());
        check("level", "level", text(level), text(got));
    }
    let dispatched: Vec<String> = observed
        .receipts
        .iter()
        .filter(|r| r["kind"] == "action")
        .filter_map(|r| r["action"]["name"].as_str().map(str::to_owned))
        .collect();
    if let Some(expected) = &expect.dispatched {
        check(
            "dispatched",
            "dispatched",
            names(sorted(expected)),
            names(sorted(&dispatched)),
        );
    }
    if let Some(forbidden) = &expect.not_dispatched {
        for (i, name) in forbidden.iter().enumerate() {
            let got = dispatched.iter().filter(|d| *d == name).count();
            check(
                &format!("not_dispatched/{i}"),
                &format!("dispatches of {name}"),
                Value::from(0),
                Value::from(got),
            );
        }
    }
    if let Some(expected) = &expect.in_flight {
        let got: Vec<String> = view
            .as_ref()
            .map(|v| v.in_flight.iter().map(|f| f.action.to_owned()).collect())
            .unwrap_or_default();
        check(
            "in_flight",
            "in flight",
            names(sorted(expected)),
            names(sorted(&got)),
        );
    }
    for (kind, count) in expect.receipts.iter().flatten() {
        let got = observed
            .receipts
            .iter()
            .filter(|r| r["kind"] == kind.as_str())
            .count();
        check(
            &format!("receipts/{}", diagnostic::escape_token(kind)),
            &format!("{kind} receipts"),
            Value::from(*count),
            Value::from(got),
        );
    }
    if let Some(reason) = &expect.reason {
        let got = observed
            .own
            .and_then(|i| observed.receipts[i]["decision"]["reason"].as_str())
            .map_or(Value::Null, text);
        check("reason", "reason", text(reason), got);
    }
    if let Some(blocked) = &expect.blocked {
        let got = observed
            .receipts
            .iter()
            .find_map(|r| r["decision"]["block"]["kind"].as_str())
            .map_or(Value::Null, text);
        check(
            "blocked",
            "blocked by",
            blocked.as_deref().map_or(Value::Null, text),
            got,
        );
    }
    if let Some(refused) = expect.refused {
        check(
            "refused",
            "refused",
            Value::Bool(refused),
            Value::Bool(observed.refused),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_every_unit_and_refuse_the_rest() {
        assert_eq!(duration_ms("90s"), Some(90_000));
        assert_eq!(duration_ms("1h30m"), Some(5_400_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("2d"), Some(172_800_000));
        assert_eq!(duration_ms("0s"), Some(0));
        for bad in ["", "5", "m", "5x", "1h 30m", "-5s", "99999999999999999999d"] {
            assert_eq!(duration_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn scenario_files_sit_beside_their_specs() {
        let spec = Path::new("specs/cost_guard.json");
        assert_eq!(scenario_path(spec), Path::new("specs/cost_guard.test.json"));
        assert_eq!(spec_path(&scenario_path(spec)).as_deref(), Some(spec));
        assert!(is_scenario_file(Path::new("a/b.test.json")));
        assert!(!is_scenario_file(Path::new("a/b.json")));
        assert!(!is_scenario_file(Path::new("a/test.json")));
    }
}
