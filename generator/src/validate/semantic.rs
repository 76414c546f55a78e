//! The semantic layer: rules a JSON Schema cannot express. A new spec rule
//! belongs here (or in the schema), never in `model::lower`.
//!
//! Works on the raw `serde_json::Value` and skips anything of the wrong
//! shape (the schema layer reports that), so it runs on any document and
//! one run reports every violation.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};
use thiserror::Error;

use super::{SPEC_VERSION, closest, cut, plain};
use crate::diagnostic::{Diagnostic, join_pointer};
use crate::load::{self, Source};
use crate::names;

/// A semantic rule broken by a spec.
#[derive(Debug, Error, PartialEq)]
pub enum Violation {
    /// `spec_version` is not one this ggen reads.
    #[error("unsupported spec_version `{found}`: this ggen reads spec_version `{SPEC_VERSION}`")]
    UnsupportedSpecVersion {
        /// The version in the spec.
        found: String,
    },
    /// Two entries of one list share a name.
    #[error("duplicate {kind} name `{name}` (first defined at `{first}`)")]
    DuplicateName {
        /// `signal` or `action`.
        kind: &'static str,
        /// The repeated name.
        name: String,
        /// Pointer of the first definition.
        first: String,
    },
    /// Two distinct names become the same Rust identifier.
    #[error(
        "{kind} names `{first}` and `{second}` both become the Rust identifier `{ident}`; rename one"
    )]
    IdentCollision {
        /// `signal`, `action` or `profile`.
        kind: &'static str,
        /// The name defined first.
        first: String,
        /// The name defined later.
        second: String,
        /// The shared identifier.
        ident: String,
    },
    /// A reference names nothing.
    #[error("unknown {kind} `{name}`{hint}")]
    Unknown {
        /// `signal`, `action` or `profile`.
        kind: &'static str,
        /// The name referenced.
        name: String,
        /// A "did you mean" suffix, or empty.
        hint: String,
    },
    /// An action names itself as its undo.
    #[error("action `{name}` cannot be its own `undo`")]
    SelfUndo {
        /// The action.
        name: String,
    },
    /// A chain of `extends` returns to its start.
    #[error("`extends` cycle: {cycle}")]
    ExtendsCycle {
        /// The profiles of the cycle, `a` → `b` → `a`.
        cycle: String,
    },
    /// A profile has two rules for one signal.
    #[error("second rule for signal `{signal}` in profile `{profile}` (first at `{first}`)")]
    DuplicateRule {
        /// The signal.
        signal: String,
        /// The profile.
        profile: String,
        /// Pointer of the first rule.
        first: String,
    },
    /// A rule has none of `warn`, `intervene`, `refuse`.
    #[error("rule for signal `{signal}` needs at least one of `warn`, `intervene`, `refuse`")]
    NoThreshold {
        /// The signal.
        signal: String,
    },
    /// Two thresholds are in the wrong order for the signal's direction.
    #[error(
        "thresholds out of order: `{later}` `{later_value}` is {side} `{earlier}` `{earlier_value}`, but signal `{signal}` has direction `{direction}` ({rule})"
    )]
    ThresholdsOutOfOrder {
        /// The signal.
        signal: String,
        /// `above` or `below`.
        direction: &'static str,
        /// The milder threshold's key.
        earlier: &'static str,
        /// Its value as written.
        earlier_value: String,
        /// The more severe threshold's key.
        later: &'static str,
        /// Its value as written.
        later_value: String,
        /// `below` or `above`: where the severe one wrongly lies.
        side: &'static str,
        /// The order the direction requires.
        rule: &'static str,
    },
    /// `clear` lies past the mildest threshold.
    #[error(
        "`clear` `{clear}` is past `{threshold}` `{value}`: for direction `{direction}` it must be {side} `{threshold}`"
    )]
    ClearPastWarn {
        /// `clear` as written.
        clear: String,
        /// The threshold compared with (`warn`, or the mildest present).
        threshold: &'static str,
        /// Its value as written.
        value: String,
        /// `above` or `below`.
        direction: &'static str,
        /// `at or below` / `at or above`.
        side: &'static str,
    },
    /// A threshold no accepted reading of its signal can reach.
    #[error(
        "`{key}` `{value}` can never be reached: signal `{signal}` accepts no reading past its `{bound}` `{bound_value}`"
    )]
    ThresholdUnreachable {
        /// `warn`, `intervene` or `refuse`.
        key: &'static str,
        /// Its value as written.
        value: String,
        /// The rule's signal.
        signal: String,
        /// `max` (direction `above`) or `min` (direction `below`).
        bound: &'static str,
        /// The bound as written.
        bound_value: String,
    },
    /// A `clear` no accepted reading of its signal can meet, so a tenant
    /// past a threshold of the rule would never recover.
    #[error(
        "{clear} can never be met: a reading clears only {side} `clear`, and signal `{signal}` accepts no reading {side} its `{bound}` `{bound_value}`"
    )]
    ClearUnreachable {
        /// `clear` as written, or the threshold it defaults to.
        clear: String,
        /// `below` (direction `above`) or `above` (direction `below`).
        side: &'static str,
        /// The rule's signal.
        signal: String,
        /// `min` (direction `above`) or `max` (direction `below`).
        bound: &'static str,
        /// The bound as written.
        bound_value: String,
    },
    /// A number is not finite.
    #[error("`{key}` must be a finite number")]
    NotFinite {
        /// The key.
        key: String,
    },
    /// More entries than the generated code can number (ids are `u16`).
    #[error("too many {kind}: `{count}` (at most `{MAX_ENTRIES}`)")]
    TooMany {
        /// `signals`, `actions` or `profiles`.
        kind: &'static str,
        /// How many the spec has.
        count: usize,
    },
    /// A version too long to label Kubernetes objects with.
    #[error(
        "a version of `{len}` characters: it labels the Kubernetes objects (`app.kubernetes.io/version`), which allow at most `{MAX_VERSION_CHARS}`"
    )]
    VersionTooLong {
        /// Its length.
        len: usize,
    },
    /// More profile × signal pairs than a generated crate should hold: it
    /// has a threshold table (and a test) for every pair.
    #[error(
        "`{profiles}` profiles × `{signals}` signals make `{}` threshold tables (at most `{MAX_PAIRS}`): the generated crate holds one per pair",
        profiles * signals
    )]
    TooManyPairs {
        /// How many profiles the spec has.
        profiles: usize,
        /// How many signals.
        signals: usize,
    },
    /// A `command` action's `params.env` is not a list of variable names the
    /// runtime would pass on (the runtime's own check, run at build time).
    #[error("{message}")]
    CommandEnv {
        /// What the runtime says is wrong.
        message: String,
    },
    /// The file ledger asked for with several replicas.
    #[error(
        "`replicas` `{replicas}` needs the PostgreSQL ledger: the file ledger has one writer (set `ledger` to `postgres`, or `replicas` to 1)"
    )]
    FileLedgerReplicas {
        /// The replica count.
        replicas: u64,
    },
    /// `max_replicas` without the autoscaled (PostgreSQL) deployment, or below `replicas`.
    #[error("{message}")]
    MaxReplicas {
        /// What is wrong.
        message: String,
    },
    /// `retain` with the PostgreSQL ledger but no bucket to archive to.
    #[error(
        "`retain` with the `postgres` ledger needs `archive`: its replicas share no volume, so set `deploy.archive` to a bucket every replica reaches (`gs://bucket/prefix` or `s3://bucket/prefix`; one replica archives at a time), or remove `retain`"
    )]
    PostgresRetainWithoutArchive,
    /// `archive` without `retain`: nothing would be archived.
    #[error(
        "`archive` `{archive}` is where `retain` moves old ledger data, but `retain` is not set: add `retain` (such as `7d` or `20GiB`) or remove `archive`"
    )]
    ArchiveWithoutRetain {
        /// The bucket URL as written.
        archive: String,
    },
    /// `archive_storage` sizes a volume a bucket archive does not have.
    #[error(
        "`archive_storage` sizes the archive volume, but `archive` `{archive}` is a bucket, which has no volume to size: remove `archive_storage`"
    )]
    ArchiveStorageWithBucket {
        /// The bucket URL as written.
        archive: String,
    },
    /// A rule dispatches more actions at once than its profile's hourly
    /// budget admits: the budget admits a rule's set whole or not at all.
    #[error(
        "rule for signal `{signal}` dispatches `{actions}` actions at once, but profile `{profile}` allows `{budget}` per hour (`max_actions_per_hour`): a set is admitted whole or not at all, so this one never is; raise the budget to at least `{actions}` or give the rule fewer actions"
    )]
    ActionsOverBudget {
        /// The rule's signal.
        signal: String,
        /// The profile whose budget it is.
        profile: String,
        /// Distinct actions in the rule.
        actions: usize,
        /// The profile's `max_actions_per_hour`.
        budget: u64,
    },
    /// Marketplace entitlements configured for a SKU that does not require one.
    #[error(
        "`marketplace` entitlements gate tenants only when `required` is `true`: set `entitlement.required` to `true`, or remove `marketplace`"
    )]
    MarketplaceNotRequired,
    /// A signal's `min` exceeds its `max`.
    #[error("`min` `{min}` is greater than `max` `{max}`")]
    MinAboveMax {
        /// `min` as written.
        min: String,
        /// `max` as written.
        max: String,
    },
}

/// Most signals, actions or profiles one spec may have: their ids are `u16`.
const MAX_ENTRIES: usize = u16::MAX as usize + 1;
/// The longest `sku.version`: a Kubernetes label value's bound.
const MAX_VERSION_CHARS: usize = 63;
/// Most profile × signal pairs (generated threshold tables) one spec may
/// have: far past any real governor, short of a crate rustc cannot take.
const MAX_PAIRS: usize = 65_536;

/// Every semantic violation in `value`, located in `source`.
pub fn check(source: &Source, value: &Value) -> Vec<Diagnostic> {
    let mut checker = Checker {
        source,
        found: Vec::new(),
    };
    checker.spec_version(value);
    checker.version(value);
    let signals = checker.signals(value);
    let actions = checker.actions(value);
    checker.policy(value, &signals, &actions);
    checker.marketplace(value);
    checker.deploy(value);
    checker.found
}

/// The Rust identifiers the names seen so far of one kind become, each
/// with the first name that took it: a collision is found by lookup, not
/// by comparing every pair (65,536 names are allowed).
#[derive(Default)]
struct Idents {
    /// By form (type, const, value), as [`names::collision`] orders them:
    /// the identifier, the index and the name that took it first.
    taken: [BTreeMap<String, (usize, String)>; 3],
    seen: usize,
}

impl Idents {
    /// The earliest name `name` collides with and the identifier they
    /// share (the first form that matches, as [`names::collision`]
    /// reports it); then records `name`'s identifiers where still free.
    fn take(&mut self, name: &str) -> Option<(String, String)> {
        let forms = names::forms(name);
        let earliest = forms
            .iter()
            .zip(&self.taken)
            .filter_map(|(ident, taken)| taken.get(ident))
            .filter(|(_, other)| other != name)
            .min_by_key(|(at, _)| *at)
            .map(|(_, other)| other.clone());
        let hit =
            earliest.and_then(|other| names::collision(&other, name).map(|ident| (other, ident)));
        for (ident, taken) in forms.into_iter().zip(&mut self.taken) {
            taken
                .entry(ident)
                .or_insert_with(|| (self.seen, name.to_owned()));
        }
        self.seen += 1;
        hit
    }
}

/// A declared signal: which direction it runs, and the readings it accepts.
struct SignalInfo {
    below: bool,
    /// `min` and `max`, the number and the text as written.
    min: Option<(f64, String)>,
    max: Option<(f64, String)>,
}

struct Checker<'a> {
    source: &'a Source,
    found: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, pointer: &str, violation: Violation) {
        let (line, column) = load::position(self.source, pointer);
        self.found.push(Diagnostic::from_error(
            &self.source.path,
            line,
            column,
            pointer,
            violation,
        ));
    }

    /// `sku.version` labels Kubernetes objects and tags the image: a label
    /// value has at most 63 characters.
    fn version(&mut self, value: &Value) {
        if let Some(version) = value.pointer("/sku/version").and_then(Value::as_str)
            && version.len() > MAX_VERSION_CHARS
        {
            self.report(
                "/sku/version",
                Violation::VersionTooLong { len: version.len() },
            );
        }
    }

    fn spec_version(&mut self, value: &Value) {
        if let Some(version) = value.get("spec_version").filter(|v| v.is_number())
            && version.as_u64() != Some(SPEC_VERSION)
        {
            self.report(
                "/spec_version",
                Violation::UnsupportedSpecVersion {
                    found: plain(version),
                },
            );
        }
    }

    /// Checks `signals` and returns the declared ones by name.
    fn signals(&mut self, value: &Value) -> BTreeMap<String, SignalInfo> {
        let mut declared = BTreeMap::new();
        let entries = self.named_entries(value, "signals", "signal");
        for (name, pointer, entry) in entries {
            if let (Some(min), Some(max)) = (
                entry.get("min").and_then(Value::as_f64),
                entry.get("max").and_then(Value::as_f64),
            ) && min > max
            {
                self.report(
                    &format!("{pointer}/min"),
                    Violation::MinAboveMax {
                        min: plain(&entry["min"]),
                        max: plain(&entry["max"]),
                    },
                );
            }
            let below = entry.get("direction").and_then(Value::as_str) == Some("below");
            let bound = |key: &str| Some((entry.get(key)?.as_f64()?, plain(&entry[key])));
            declared.entry(name).or_insert(SignalInfo {
                below,
                min: bound("min"),
                max: bound("max"),
            });
        }
        declared
    }

    /// Checks `actions` and returns the declared names.
    fn actions(&mut self, value: &Value) -> BTreeSet<String> {
        let entries = self.named_entries(value, "actions", "action");
        let names: BTreeSet<String> = entries.iter().map(|(n, _, _)| n.clone()).collect();
        for (name, pointer, entry) in &entries {
            if entry.get("adapter").and_then(Value::as_str) == Some("command")
                && let Some(params) = entry.get("params").and_then(Value::as_object)
                && params.contains_key("env")
                && let Err(message) = ggen_runtime_core::sku::command_env_names(params)
            {
                self.report(
                    &format!("{pointer}/params/env"),
                    Violation::CommandEnv { message },
                );
            }
            let Some(undo) = entry.get("undo").and_then(Value::as_str) else {
                continue;
            };
            let undo_pointer = format!("{pointer}/undo");
            if undo == name {
                self.report(&undo_pointer, Violation::SelfUndo { name: name.clone() });
            } else if !names.contains(undo) {
                self.unknown(&undo_pointer, "action", undo, &names);
            }
        }
        names
    }

    /// The ledger backend against the replica count, the autoscaler,
    /// retention and its archive.
    fn deploy(&mut self, value: &Value) {
        let Some(deploy) = value.get("deploy").and_then(Value::as_object) else {
            return;
        };
        let replicas = deploy.get("replicas").and_then(Value::as_u64).unwrap_or(1);
        let postgres = match deploy.get("ledger").and_then(Value::as_str) {
            Some("file") => {
                if replicas > 1 {
                    self.report(
                        "/deploy/replicas",
                        Violation::FileLedgerReplicas { replicas },
                    );
                }
                false
            }
            Some(_) => true,
            None => replicas > 1,
        };
        if let Some(max) = deploy.get("max_replicas").and_then(Value::as_u64) {
            let message = if !postgres {
                Some("`max_replicas` sizes the autoscaler of the `postgres` ledger; the file ledger runs one replica".to_owned())
            } else if max < replicas {
                Some(format!(
                    "`max_replicas` `{max}` is below `replicas` `{replicas}`"
                ))
            } else {
                None
            };
            if let Some(message) = message {
                self.report("/deploy/max_replicas", Violation::MaxReplicas { message });
            }
        }
        let retain = deploy.contains_key("retain");
        // Any `archive` counts as given here: a malformed URL is the schema's finding.
        match deploy.get("archive") {
            None if postgres && retain => {
                self.report("/deploy/retain", Violation::PostgresRetainWithoutArchive);
            }
            None => {}
            Some(archive) => {
                let archive = plain(archive);
                if !retain {
                    self.report(
                        "/deploy/archive",
                        Violation::ArchiveWithoutRetain {
                            archive: archive.clone(),
                        },
                    );
                }
                if deploy.contains_key("archive_storage") {
                    self.report(
                        "/deploy/archive_storage",
                        Violation::ArchiveStorageWithBucket { archive },
                    );
                }
            }
        }
    }

    /// The `(name, pointer, entry)` of each entry of the list `key` that has a
    /// string name; reports duplicate names and identifier collisions.
    fn named_entries<'v>(
        &mut self,
        value: &'v Value,
        key: &'static str,
        kind: &'static str,
    ) -> Vec<(String, String, &'v Map<String, Value>)> {
        let Some(items) = value.get(key).and_then(Value::as_array) else {
            return Vec::new();
        };
        self.count(&format!("/{key}"), key, items.len());
        let mut entries: Vec<(String, String, &Map<String, Value>)> = Vec::new();
        // Where each name was first seen, and the identifiers taken.
        let mut first: BTreeMap<&str, usize> = BTreeMap::new();
        let mut idents = Idents::default();
        for (i, item) in items.iter().enumerate() {
            let pointer = format!("/{key}/{i}");
            let Some(entry) = item.as_object() else {
                continue;
            };
            let Some(name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            if let Some(&at) = first.get(name) {
                let first = format!("{}/name", entries[at].1);
                self.report(
                    &format!("{pointer}/name"),
                    Violation::DuplicateName {
                        kind,
                        name: name.to_owned(),
                        first,
                    },
                );
                continue;
            }
            self.collisions(kind, name, &mut idents, &format!("{pointer}/name"));
            first.insert(name, entries.len());
            entries.push((name.to_owned(), pointer, entry));
        }
        entries
    }

    /// Reports `name` if it collides with an earlier name (in `idents`) as
    /// a Rust identifier, then takes its identifiers.
    fn collisions(&mut self, kind: &'static str, name: &str, idents: &mut Idents, pointer: &str) {
        if let Some((first, ident)) = idents.take(name) {
            self.report(
                pointer,
                Violation::IdentCollision {
                    kind,
                    first,
                    second: name.to_owned(),
                    ident,
                },
            );
        }
    }

    /// Reports a list or map with more entries than ids can number.
    fn count(&mut self, pointer: &str, kind: &'static str, count: usize) {
        if count > MAX_ENTRIES {
            self.report(pointer, Violation::TooMany { kind, count });
        }
    }

    fn unknown(&mut self, pointer: &str, kind: &'static str, name: &str, known: &BTreeSet<String>) {
        let hint = closest(name, known.iter().map(String::as_str))
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        self.report(
            pointer,
            Violation::Unknown {
                kind,
                name: cut(name),
                hint,
            },
        );
    }

    /// `entitlement.marketplace`: every plan names a profile, and the
    /// entitlement is required.
    fn marketplace(&mut self, value: &Value) {
        let Some(entitlement) = value.get("entitlement") else {
            return;
        };
        let Some(marketplace) = entitlement.get("marketplace").and_then(Value::as_object) else {
            return;
        };
        if entitlement.get("required").and_then(Value::as_bool) != Some(true) {
            self.report(
                "/entitlement/marketplace",
                Violation::MarketplaceNotRequired,
            );
        }
        let profiles: BTreeSet<String> = value
            .pointer("/policy/profiles")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        let Some(plans) = marketplace.get("plans").and_then(Value::as_object) else {
            return;
        };
        for (plan, profile) in plans {
            if let Some(profile) = profile.as_str()
                && !profiles.is_empty()
                && !profiles.contains(profile)
            {
                self.unknown(
                    &join_pointer("/entitlement/marketplace/plans", plan),
                    "profile",
                    profile,
                    &profiles,
                );
            }
        }
    }

    fn policy(
        &mut self,
        value: &Value,
        signals: &BTreeMap<String, SignalInfo>,
        actions: &BTreeSet<String>,
    ) {
        let Some(policy) = value.get("policy").and_then(Value::as_object) else {
            return;
        };
        let profiles = policy.get("profiles").and_then(Value::as_object);
        let profile_names: BTreeSet<String> = profiles
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(default) = policy.get("default_profile").and_then(Value::as_str)
            && profiles.is_some()
            && !profile_names.contains(default)
        {
            self.unknown(
                "/policy/default_profile",
                "profile",
                default,
                &profile_names,
            );
        }
        let Some(profiles) = profiles else {
            return;
        };
        self.count("/policy/profiles", "profiles", profiles.len());
        if profiles.len().saturating_mul(signals.len()) > MAX_PAIRS {
            self.report(
                "/policy/profiles",
                Violation::TooManyPairs {
                    profiles: profiles.len(),
                    signals: signals.len(),
                },
            );
        }
        let mut idents = Idents::default();
        for (name, profile) in profiles {
            let pointer = join_pointer("/policy/profiles", name);
            self.collisions("profile", name, &mut idents, &pointer);
            let Some(profile) = profile.as_object() else {
                continue;
            };
            if let Some(parent) = profile.get("extends").and_then(Value::as_str)
                && !profile_names.contains(parent)
            {
                self.unknown(
                    &format!("{pointer}/extends"),
                    "profile",
                    parent,
                    &profile_names,
                );
            }
            self.rules(name, &pointer, profile, signals, actions);
        }
        if self.extends_cycles(profiles) {
            self.budgets(profiles);
        }
    }

    fn rules(
        &mut self,
        profile: &str,
        profile_pointer: &str,
        body: &Map<String, Value>,
        signals: &BTreeMap<String, SignalInfo>,
        actions: &BTreeSet<String>,
    ) {
        let Some(rules) = body.get("rules").and_then(Value::as_array) else {
            return;
        };
        let signal_names: BTreeSet<String> = signals.keys().cloned().collect();
        let mut first_rule: BTreeMap<&str, String> = BTreeMap::new();
        for (i, rule) in rules.iter().enumerate() {
            let pointer = format!("{profile_pointer}/rules/{i}");
            let Some(rule) = rule.as_object() else {
                continue;
            };
            if let Some(list) = rule.get("actions").and_then(Value::as_array) {
                for (j, action) in list.iter().enumerate() {
                    if let Some(action) = action.as_str()
                        && !actions.contains(action)
                    {
                        self.unknown(&format!("{pointer}/actions/{j}"), "action", action, actions);
                    }
                }
            }
            let signal = rule.get("signal").and_then(Value::as_str);
            let info = match signal {
                Some(signal) => {
                    if let Some(first) = first_rule.get(signal) {
                        self.report(
                            &format!("{pointer}/signal"),
                            Violation::DuplicateRule {
                                signal: signal.to_owned(),
                                profile: profile.to_owned(),
                                first: first.clone(),
                            },
                        );
                    } else {
                        first_rule.insert(signal, pointer.clone());
                    }
                    let info = signals.get(signal);
                    if info.is_none() && !signal_names.is_empty() {
                        self.unknown(
                            &format!("{pointer}/signal"),
                            "signal",
                            signal,
                            &signal_names,
                        );
                    }
                    info
                }
                None => None,
            };
            self.thresholds(&pointer, rule, signal.unwrap_or("?"), info);
        }
    }

    fn thresholds(
        &mut self,
        pointer: &str,
        rule: &Map<String, Value>,
        signal: &str,
        info: Option<&SignalInfo>,
    ) {
        const LEVELS: [&str; 3] = ["warn", "intervene", "refuse"];
        if LEVELS.iter().all(|key| !rule.contains_key(*key)) {
            self.report(
                pointer,
                Violation::NoThreshold {
                    signal: signal.to_owned(),
                },
            );
        }
        for key in LEVELS.iter().chain(&["clear"]) {
            if let Some(v) = rule.get(*key).and_then(Value::as_f64)
                && !v.is_finite()
            {
                self.report(
                    &format!("{pointer}/{key}"),
                    Violation::NotFinite {
                        key: (*key).to_owned(),
                    },
                );
            }
        }
        // The order depends on the signal's direction: unknown signal, no verdict.
        let Some(info) = info else {
            return;
        };
        let (direction, worse_side, rule_text) = if info.below {
            ("below", "above", "each threshold at or below the previous")
        } else {
            ("above", "below", "each threshold at or above the previous")
        };
        let present: Vec<(&'static str, f64)> = LEVELS
            .iter()
            .filter_map(|key| Some((*key, rule.get(*key)?.as_f64()?)))
            .collect();
        for pair in present.windows(2) {
            let ((earlier, a), (later, b)) = (pair[0], pair[1]);
            let wrong = if info.below { b > a } else { b < a };
            if wrong {
                self.report(
                    &format!("{pointer}/{later}"),
                    Violation::ThresholdsOutOfOrder {
                        signal: signal.to_owned(),
                        direction,
                        earlier,
                        earlier_value: plain(&rule[earlier]),
                        later,
                        later_value: plain(&rule[later]),
                        side: worse_side,
                        rule: rule_text,
                    },
                );
            }
        }
        self.reachable(pointer, rule, signal, info, &present);
        if let (Some(clear), Some(&(mildest, reference))) =
            (rule.get("clear").and_then(Value::as_f64), present.first())
        {
            let past = if info.below {
                clear < reference
            } else {
                clear > reference
            };
            if past {
                self.report(
                    &format!("{pointer}/clear"),
                    Violation::ClearPastWarn {
                        clear: plain(&rule["clear"]),
                        threshold: mildest,
                        value: plain(&rule[mildest]),
                        direction,
                        side: if info.below {
                            "at or above"
                        } else {
                            "at or below"
                        },
                    },
                );
            }
        }
    }

    /// Reports thresholds and a `clear` that no reading the signal accepts
    /// can reach (see the comment inside).
    fn reachable(
        &mut self,
        pointer: &str,
        rule: &Map<String, Value>,
        signal: &str,
        info: &SignalInfo,
        present: &[(&'static str, f64)],
    ) {
        // Readings past `max` (or short of `min`) are refused at ingress: a
        // threshold beyond that bound never fires, and a `clear` that only
        // readings beyond the other bound could meet never lets a tenant
        // recover. (A reading reaches a threshold at its value; it clears
        // only strictly on the good side of `clear`.)
        // (Not judged when `min` > `max`, which is reported already.)
        if let (Some((min, _)), Some((max, _))) = (&info.min, &info.max)
            && min > max
        {
            return;
        }
        let (far, near) = if info.below {
            (&info.min, &info.max)
        } else {
            (&info.max, &info.min)
        };
        let (far_name, near_name) = if info.below {
            ("min", "max")
        } else {
            ("max", "min")
        };
        if let Some((bound, bound_text)) = far {
            for &(key, value) in present {
                let unreachable = if info.below {
                    value < *bound
                } else {
                    value > *bound
                };
                if unreachable {
                    self.report(
                        &format!("{pointer}/{key}"),
                        Violation::ThresholdUnreachable {
                            key,
                            value: plain(&rule[key]),
                            signal: signal.to_owned(),
                            bound: far_name,
                            bound_value: bound_text.clone(),
                        },
                    );
                }
            }
        }
        // Without `clear`, the mildest threshold present is the clear line.
        let clear = match rule.get("clear").and_then(Value::as_f64) {
            Some(clear) => Some((
                clear,
                "clear",
                format!("`clear` `{}`", plain(&rule["clear"])),
            )),
            None => present.first().map(|&(key, value)| {
                (
                    value,
                    key,
                    format!("`clear` (by default `{key}` `{}`)", plain(&rule[key])),
                )
            }),
        };
        if let (Some((clear, key, text)), Some((bound, bound_text))) = (clear, near) {
            let unreachable = if info.below {
                clear >= *bound
            } else {
                clear <= *bound
            };
            if unreachable {
                self.report(
                    &format!("{pointer}/{key}"),
                    Violation::ClearUnreachable {
                        clear: text,
                        side: if info.below { "above" } else { "below" },
                        signal: signal.to_owned(),
                        bound: near_name,
                        bound_value: bound_text.clone(),
                    },
                );
            }
        }
    }

    /// Reports each `extends` cycle once, at the `extends` of its smallest member.
    /// Reports every rule, own or inherited, whose distinct actions outnumber
    /// its profile's budget (own or inherited). Each is reported once, in
    /// the profile that defines the rule or the budget, at that place.
    fn budgets(&mut self, profiles: &Map<String, Value>) {
        for name in profiles.keys() {
            // The profile, then its parents (no cycle: checked first).
            let mut chain: Vec<(&str, &Map<String, Value>)> = Vec::new();
            let mut current = Some(name.as_str());
            while let Some(profile) = current {
                let Some(body) = profiles.get(profile).and_then(Value::as_object) else {
                    break;
                };
                chain.push((profile, body));
                current = body.get("extends").and_then(Value::as_str);
            }
            let Some((budget, budget_home)) = chain.iter().find_map(|(profile, body)| {
                Some((body.get("max_actions_per_hour")?.as_u64()?, *profile))
            }) else {
                continue;
            };
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for (home, body) in &chain {
                let rules = body.get("rules").and_then(Value::as_array);
                for (i, rule) in rules.into_iter().flatten().enumerate() {
                    let Some(signal) = rule.get("signal").and_then(Value::as_str) else {
                        continue;
                    };
                    if !seen.insert(signal) {
                        continue;
                    }
                    let actions: BTreeSet<&str> = rule
                        .get("actions")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    if actions.len() as u64 <= budget {
                        continue;
                    }
                    // A rule and a budget both inherited were reported in
                    // the parent that has them.
                    let pointer = if home == name {
                        format!(
                            "{}/rules/{i}/actions",
                            join_pointer("/policy/profiles", home)
                        )
                    } else if budget_home == name {
                        format!(
                            "{}/max_actions_per_hour",
                            join_pointer("/policy/profiles", name)
                        )
                    } else {
                        continue;
                    };
                    self.report(
                        &pointer,
                        Violation::ActionsOverBudget {
                            signal: signal.to_owned(),
                            profile: name.clone(),
                            actions: actions.len(),
                            budget,
                        },
                    );
                }
            }
        }
    }

    /// Reports every `extends` cycle; `true` when there is none.
    fn extends_cycles(&mut self, profiles: &Map<String, Value>) -> bool {
        let before = self.found.len();
        let parent = |name: &str| -> Option<&str> { profiles.get(name)?.get("extends")?.as_str() };
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in profiles.keys() {
            let mut path: Vec<&str> = Vec::new();
            let mut current = Some(start.as_str());
            while let Some(name) = current {
                if done.contains(name) || !profiles.contains_key(name) {
                    break;
                }
                if let Some(i) = path.iter().position(|p| *p == name) {
                    let cycle = &path[i..];
                    let smallest = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| **n)
                        .map_or(0, |(k, _)| k);
                    let mut order: Vec<&str> = cycle[smallest..]
                        .iter()
                        .chain(&cycle[..smallest])
                        .copied()
                        .collect();
                    order.push(order[0]);
                    let text = order
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(" → ");
                    let pointer = format!("{}/extends", join_pointer("/policy/profiles", order[0]));
                    self.report(&pointer, Violation::ExtendsCycle { cycle: text });
                    break;
                }
                path.push(name);
                current = parent(name);
            }
            done.extend(path);
        }
        self.found.len() == before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_entries_than_ids_is_a_violation() {
        let source = Source::from_text("a.json", "{\"signals\": []}");
        let mut checker = Checker {
            source: &source,
            found: Vec::new(),
        };
        checker.count("/signals", "signals", MAX_ENTRIES);
        assert!(checker.found.is_empty(), "{:?}", checker.found);
        checker.count("/signals", "signals", MAX_ENTRIES + 1);
        let [found] = checker.found.as_slice() else {
            panic!("{:?}", checker.found);
        };
        assert_eq!(
            found.to_string(),
            "a.json:1:13: /signals: too many signals: `65537` (at most `65536`)"
        );
        assert!(matches!(
            found.cause_as::<Violation>(),
            Some(Violation::TooMany { count: 65537, .. })
        ));
    }
}
