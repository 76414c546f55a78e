//! The checked, resolved model of one spec: what the templates need and
//! nothing more.
//!
//! [`lower`] turns a [`Checked`] spec into a
//! [`Model`]: profiles flattened through `extends` (a child's rule replaces
//! the parent's rule for the same signal, other rules are inherited, and so
//! are `cooldown_s` / `max_actions_per_hour` unless the child sets them),
//! `clear` and `dwell` defaulted, names converted to Rust identifiers and ids
//! assigned in spec order (profiles in the spec's map order, which is by
//! name). Lowering takes only a [`Checked`] spec and holds no rules of its
//! own (they all live in [`crate::validate`]); if a guarantee of validation
//! is ever broken it returns an internal error, never panics.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::canonical;
use crate::names;
pub use crate::spec::LedgerKind;
use crate::spec::{self, Adapter, Direction};
use crate::validate::Checked;

/// Per-attempt action timeout when the spec sets none.
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// A [`Checked`] spec broke a guarantee of validation: a bug in ggen, never
/// a problem of the spec (those are all reported by [`crate::validate`]).
#[derive(Debug, Error)]
pub enum LowerError {
    /// Something validation guarantees to exist was not found.
    #[error("internal error: validation let through an unresolved {what} `{name}`")]
    Unresolved {
        /// What was looked up (`signal`, `action`, `profile`, …).
        what: &'static str,
        /// The name (or index) looked up.
        name: String,
    },
}

/// How bad a reading is, mildest first (the generator's own copy of the
/// runtime's semantics, used to compute the expected levels of generated tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// No threshold reached.
    Normal,
    /// `warn` reached.
    Warn,
    /// `intervene` reached.
    Intervene,
    /// `refuse` reached.
    Refuse,
}

impl Level {
    /// The runtime's variant name (`::ggen_runtime::policy::Level::<this>`).
    pub const fn variant(self) -> &'static str {
        match self {
            Level::Normal => "Normal",
            Level::Warn => "Warn",
            Level::Intervene => "Intervene",
            Level::Refuse => "Refuse",
        }
    }
}

/// One spec, checked and resolved.
#[derive(Debug, Clone)]
pub struct Model {
    /// The spec's path relative to the project root, `/`-separated.
    pub spec_path: String,
    /// SHA-256 (hex) of the spec file's bytes.
    pub spec_sha256: String,
    /// `sku.id`: snake_case, names the output folder.
    pub id: String,
    /// Human name of the product.
    pub name: String,
    /// Semver of the SKU (and of the generated crate).
    pub version: String,
    /// Who publishes the SKU.
    pub publisher: String,
    /// One-paragraph description (may be empty).
    pub description: String,
    /// Package and binary name: `<id with ->-governor`.
    pub crate_name: String,
    /// The library's Rust name: `<id>_governor`.
    pub lib_name: String,
    /// Pub/Sub attribute naming the tenant.
    pub tenant_attribute: String,
    /// Upper bound on tenants (≥ 1).
    pub max_tenants: u32,
    /// Signals in spec order; `signals[i].id == i`.
    pub signals: Vec<Signal>,
    /// Actions in spec order; `actions[i].id == i`.
    pub actions: Vec<Action>,
    /// Profiles in map order (by name), flattened; `profiles[i].id == i`.
    pub profiles: Vec<Profile>,
    /// Index into `profiles`.
    pub default_profile: usize,
    /// Seconds before an unconfirmed intervention degrades.
    pub intervention_timeout_s: u32,
    /// Cleared evaluations in a row needed to return to stable.
    pub recovery_evaluations: u16,
    /// Seconds `degraded` waits before dispatching again.
    pub degraded_retry_s: u32,
    /// Whether signals need an active entitlement.
    pub entitlement_required: bool,
    /// The product on Google Cloud Marketplace, if it is sold there.
    pub marketplace: Option<Marketplace>,
    /// OIDC audience of Pub/Sub push tokens, if any.
    pub pubsub_audience: Option<String>,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// Container and Kubernetes settings.
    pub deploy: Deploy,
}

/// `entitlement.marketplace`, lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marketplace {
    /// The provider (partner) id.
    pub provider_id: String,
    /// The product's `productExternalName`, if the spec names it.
    pub product: Option<String>,
    /// Whether requests and plan changes are approved as they arrive.
    pub auto_approve: bool,
    /// Marketplace plan → profile index, by plan name.
    pub plans: Vec<(String, usize)>,
}

/// A signal, with its Rust names.
#[derive(Debug, Clone)]
pub struct Signal {
    /// Position in spec order.
    pub id: u16,
    /// snake_case spec name.
    pub name: String,
    /// `enum Signal` variant.
    pub variant: String,
    /// Module / function name (keyword-safe).
    pub module: String,
    /// Free-text unit.
    pub unit: String,
    /// Free-text description (may be empty).
    pub description: String,
    /// Smallest accepted value.
    pub min: Option<f64>,
    /// Largest accepted value.
    pub max: Option<f64>,
    /// Which side is worse.
    pub direction: Direction,
}

/// An action, with its Rust name and resolved undo.
#[derive(Debug, Clone)]
pub struct Action {
    /// Position in spec order.
    pub id: u16,
    /// Spec name.
    pub name: String,
    /// `enum Action` variant.
    pub variant: String,
    /// How the action is carried out.
    pub adapter: Adapter,
    /// Index of the undo action.
    pub undo: Option<usize>,
    /// Adapter parameters as canonical JSON (`{}` when absent).
    pub params: String,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Retries after the first attempt.
    pub retries: u32,
}

/// A profile after flattening its `extends` chain.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Position in map order.
    pub id: u16,
    /// snake_case spec name.
    pub name: String,
    /// `enum Profile` variant.
    pub variant: String,
    /// Module name (keyword-safe).
    pub module: String,
    /// The parent profile's name, if any.
    pub extends: Option<String>,
    /// At most one rule per signal, ordered by signal id.
    pub rules: Vec<Rule>,
    /// Cooldown in seconds (0: none).
    pub cooldown_s: u32,
    /// Dispatch budget per hour (`None`: unlimited).
    pub max_actions_per_hour: Option<u32>,
}

impl Profile {
    /// The rule for signal `signal`, if this profile has one.
    pub fn rule(&self, signal: usize) -> Option<&Rule> {
        self.rules.iter().find(|r| r.signal == signal)
    }
}

/// One resolved rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Index into [`Model::signals`].
    pub signal: usize,
    /// Copied from the signal.
    pub direction: Direction,
    /// Warn threshold.
    pub warn: Option<f64>,
    /// Intervene threshold.
    pub intervene: Option<f64>,
    /// Refuse threshold.
    pub refuse: Option<f64>,
    /// Hysteresis exit threshold (defaulted to the mildest threshold set).
    pub clear: f64,
    /// Consecutive breaching evaluations before escalating (≥ 1).
    pub dwell: u16,
    /// Indices into [`Model::actions`], in spec order.
    pub actions: Vec<usize>,
    /// The profile whose spec text defines this rule.
    pub defined_in: String,
}

/// Where an [`Edge`]'s reading sits relative to its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Exactly at the threshold (which is reached there).
    At,
    /// The nearest representable value on the good side of the threshold.
    Good,
}

/// A threshold edge a generated test pins: `raw_level(rule, value) == level`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// The threshold this edge probes (one of the rule's `warn`, `intervene`, `refuse`).
    pub threshold: f64,
    /// Whether the reading is at the threshold or just on its good side.
    pub side: Side,
    /// The reading: `threshold` itself, or [`Rule::good_side`] of it.
    pub value: f64,
    /// The level the runtime must assign to `value`.
    pub level: Level,
}

impl Rule {
    fn breaches(&self, value: f64, threshold: f64) -> bool {
        match self.direction {
            Direction::Above => value >= threshold,
            Direction::Below => value <= threshold,
        }
    }

    /// The level of `value` (a threshold is reached *at* its value).
    pub fn level(&self, value: f64) -> Level {
        let past = |t: Option<f64>| t.is_some_and(|t| self.breaches(value, t));
        if past(self.refuse) {
            Level::Refuse
        } else if past(self.intervene) {
            Level::Intervene
        } else if past(self.warn) {
            Level::Warn
        } else {
            Level::Normal
        }
    }

    /// Whether `value` is strictly on the good side of `clear`.
    pub fn is_clear(&self, value: f64) -> bool {
        !self.breaches(value, self.clear)
    }

    /// The nearest representable value on the good side of `value`.
    pub fn good_side(&self, value: f64) -> f64 {
        match self.direction {
            Direction::Above => value.next_down(),
            Direction::Below => value.next_up(),
        }
    }

    /// Every threshold exactly at, and just on the good side, with the
    /// expected level: two edges per threshold set, mildest threshold first.
    pub fn edges(&self) -> Vec<Edge> {
        [self.warn, self.intervene, self.refuse]
            .into_iter()
            .flatten()
            .flat_map(|threshold| {
                [
                    (Side::At, threshold),
                    (Side::Good, self.good_side(threshold)),
                ]
                .map(|(side, value)| Edge {
                    threshold,
                    side,
                    value,
                    level: self.level(value),
                })
            })
            .collect()
    }
}

/// What a deployment must provide for the spec's actions to work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wiring {
    /// Some action is a webhook (the Secret's `webhook-url` and `webhook-secret` apply).
    pub webhook: bool,
    /// Some webhook action names no `params.url`: `GOVERNOR_WEBHOOK_URL` is required.
    pub webhook_default_url: bool,
    /// TCP ports the webhook URLs of the spec name (443 for the default URL).
    pub webhook_ports: BTreeSet<u16>,
    /// The programs `command` actions run, which the image must contain.
    pub programs: BTreeSet<String>,
}

impl Wiring {
    /// Reads the actions' adapters and parameters.
    fn of(actions: &[spec::Action]) -> Wiring {
        let mut wiring = Wiring::default();
        for action in actions {
            match action.adapter {
                Adapter::Log => {}
                Adapter::Webhook => {
                    wiring.webhook = true;
                    match action.params.get("url").and_then(serde_json::Value::as_str) {
                        Some(url) => {
                            wiring.webhook_ports.extend(url_port(url));
                        }
                        None => {
                            wiring.webhook_default_url = true;
                            wiring.webhook_ports.insert(443);
                        }
                    }
                }
                Adapter::Command => {
                    if let Some(program) = action
                        .params
                        .get("program")
                        .and_then(serde_json::Value::as_str)
                    {
                        wiring.programs.insert(program.to_owned());
                    }
                }
            }
        }
        wiring
    }
}

/// The TCP port an `http(s)://` URL connects to, if it names one the
/// scheme implies or spells out.
fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let port = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").map(|(_, port)| port),
        None => host.rsplit_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port {
        return port.parse().ok();
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// Container and Kubernetes settings.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// Port the service listens on.
    pub port: u16,
    /// Replica count (and the HPA's minimum).
    pub replicas: u32,
    /// Where the ledger lives.
    pub ledger: LedgerKind,
    /// The HPA's maximum (PostgreSQL ledger).
    pub max_replicas: u32,
    /// What the actions need from the deployment.
    pub wiring: Wiring,
    /// CPU request/limit (Kubernetes quantity).
    pub cpu: String,
    /// Memory request/limit (Kubernetes quantity): the spec's, raised to
    /// what its tenants need (see [`crate::sizing::memory`]).
    pub memory: String,
    /// Image repository (defaults to the crate name).
    pub image: String,
    /// The retention bound as the spec gives it (`--retain`), if any.
    pub retain: Option<String>,
    /// The bucket `retain` archives to (`gs://…` or `s3://…`, as the schema
    /// admits), if any; set only with `retain`. None with `retain`: the
    /// file ledger's archive volume.
    pub archive: Option<String>,
    /// The ledger volume, in GiB (see [`crate::sizing`]).
    pub volume_gi: u64,
    /// The archive volume (Kubernetes quantity), used with `retain` and no
    /// `archive`.
    pub archive_storage: String,
}

fn id_of(index: usize, what: &'static str) -> Result<u16, LowerError> {
    u16::try_from(index).map_err(|_| LowerError::Unresolved {
        what,
        name: index.to_string(),
    })
}

/// Lowers a checked spec. `spec_path` is relative to the project root,
/// `/`-separated; `spec_sha256` is the hex digest of the file's bytes.
///
/// Every rule lives in [`crate::validate`]; lowering only follows what the
/// An image tag for a semantic version (tags admit `[A-Za-z0-9_.-]`).
fn image_tag(version: &str) -> String {
    version.replace('+', "_")
}

impl Model {
    /// The image tag: the version, with semver's `+` (not allowed in tags)
    /// written `_`, as Helm does for OCI tags.
    pub fn image_tag(&self) -> String {
        image_tag(&self.version)
    }
}

/// [`Checked`] spec guarantees, and a broken guarantee is an internal error.
pub fn lower(checked: &Checked, spec_path: &str, spec_sha256: &str) -> Result<Model, LowerError> {
    let spec = checked.spec();
    let signals = spec
        .signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Signal {
                id: id_of(i, "signal id")?,
                name: s.name.clone(),
                variant: names::type_ident(&s.name),
                module: names::value_ident(&s.name),
                unit: s.unit.clone(),
                description: s.description.clone(),
                min: s.min,
                max: s.max,
                direction: s.direction,
            })
        })
        .collect::<Result<Vec<_>, LowerError>>()?;
    let index = Index {
        signals: spec
            .signals
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect(),
        actions: spec
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i))
            .collect(),
    };

    let actions = spec
        .actions
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let params = serde_json::Value::Object(a.params.clone().into_iter().collect());
            Ok(Action {
                id: id_of(i, "action id")?,
                name: a.name.clone(),
                variant: names::type_ident(&a.name),
                adapter: a.adapter,
                undo: a.undo.as_deref().map(|u| index.action(u)).transpose()?,
                params: canonical::to_string(&params),
                timeout_ms: a.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
                retries: a.retries.unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, LowerError>>()?;

    let mut flat = flatten(spec, &index)?;
    let mut profiles = Vec::with_capacity(spec.policy.profiles.len());
    for (i, (name, profile)) in spec.policy.profiles.iter().enumerate() {
        let flat = flat
            .remove(name.as_str())
            .ok_or_else(|| LowerError::Unresolved {
                what: "profile",
                name: name.clone(),
            })?;
        profiles.push(Profile {
            id: id_of(i, "profile id")?,
            name: name.clone(),
            variant: names::type_ident(name),
            module: names::value_ident(name),
            extends: profile.extends.clone(),
            rules: flat.rules.into_values().collect(),
            cooldown_s: flat.cooldown_s.unwrap_or(0),
            max_actions_per_hour: flat.max_actions_per_hour,
        });
    }
    let default_profile = profiles
        .iter()
        .position(|p| p.name == spec.policy.default_profile)
        .ok_or_else(|| LowerError::Unresolved {
            what: "profile",
            name: spec.policy.default_profile.clone(),
        })?;

    let marketplace = match &spec.entitlement.marketplace {
        None => None,
        Some(m) => Some(Marketplace {
            provider_id: m.provider_id.clone(),
            product: m.product.clone(),
            auto_approve: m.auto_approve,
            plans: m
                .plans
                .iter()
                .map(|(plan, profile)| {
                    profiles
                        .iter()
                        .position(|p| p.name == *profile)
                        .map(|id| (plan.clone(), id))
                        .ok_or_else(|| LowerError::Unresolved {
                            what: "profile",
                            name: profile.clone(),
                        })
                })
                .collect::<Result<_, _>>()?,
        }),
    };

    let crate_name = format!("{}-governor", spec.sku.id.replace('_', "-"));
    Ok(Model {
        spec_path: spec_path.to_owned(),
        spec_sha256: spec_sha256.to_owned(),
        id: spec.sku.id.clone(),
        name: spec.sku.name.clone(),
        version: spec.sku.version.clone(),
        publisher: spec.sku.publisher.clone(),
        description: spec.sku.description.clone(),
        lib_name: crate_name.replace('-', "_"),
        deploy: Deploy {
            port: spec.deploy.port,
            replicas: spec.deploy.replicas,
            ledger: spec.deploy.ledger.unwrap_or(if spec.deploy.replicas > 1 {
                LedgerKind::Postgres
            } else {
                LedgerKind::File
            }),
            max_replicas: spec
                .deploy
                .max_replicas
                .unwrap_or(spec.deploy.replicas.saturating_mul(2)),
            wiring: Wiring::of(&spec.actions),
            cpu: spec.deploy.cpu.clone(),
            memory: crate::sizing::memory(spec.tenancy.max_tenants, &spec.deploy.memory),
            image: spec
                .deploy
                .image
                .clone()
                .unwrap_or_else(|| crate_name.clone()),
            retain: spec.deploy.retain.clone(),
            archive: spec.deploy.archive.clone(),
            volume_gi: crate::sizing::volume_gi(
                spec.deploy
                    .retain
                    .as_deref()
                    .and_then(crate::sizing::Retain::parse),
                spec.deploy.signals_per_second,
            ),
            archive_storage: spec.deploy.archive_storage.clone(),
        },
        crate_name,
        tenant_attribute: spec.tenancy.tenant_attribute.clone(),
        max_tenants: spec.tenancy.max_tenants,
        signals,
        actions,
        profiles,
        default_profile,
        intervention_timeout_s: spec.governor.intervention_timeout_s,
        recovery_evaluations: spec.governor.recovery_evaluations,
        degraded_retry_s: spec.governor.degraded_retry_s,
        entitlement_required: spec.entitlement.required,
        marketplace,
        pubsub_audience: spec
            .ingress
            .pubsub
            .as_ref()
            .and_then(|p| p.audience.clone()),
        max_body_bytes: spec.ingress.max_body_bytes,
    })
}

/// Signal and action indices by name.
struct Index<'a> {
    signals: BTreeMap<&'a str, usize>,
    actions: BTreeMap<&'a str, usize>,
}

impl Index<'_> {
    fn signal(&self, name: &str) -> Result<usize, LowerError> {
        self.signals
            .get(name)
            .copied()
            .ok_or_else(|| LowerError::Unresolved {
                what: "signal",
                name: name.to_owned(),
            })
    }

    fn action(&self, name: &str) -> Result<usize, LowerError> {
        self.actions
            .get(name)
            .copied()
            .ok_or_else(|| LowerError::Unresolved {
                what: "action",
                name: name.to_owned(),
            })
    }
}

/// A profile's settings after applying its ancestors, rules keyed by signal index.
#[derive(Clone, Default)]
struct Flat {
    rules: BTreeMap<usize, Rule>,
    cooldown_s: Option<u32>,
    max_actions_per_hour: Option<u32>,
}

/// Every profile flattened, parents before children. Validation guarantees
/// that `extends` chains end; a round that flattens nothing means they do
/// not, which is reported as an internal error rather than looped on.
fn flatten<'s>(
    spec: &'s spec::Spec,
    index: &Index<'_>,
) -> Result<BTreeMap<&'s str, Flat>, LowerError> {
    let profiles = &spec.policy.profiles;
    let mut done: BTreeMap<&str, Flat> = BTreeMap::new();
    while done.len() < profiles.len() {
        let before = done.len();
        for (name, profile) in profiles {
            if done.contains_key(name.as_str()) {
                continue;
            }
            let mut flat = match profile.extends.as_deref() {
                None => Flat::default(),
                Some(parent) => match done.get(parent) {
                    Some(base) => base.clone(),
                    None => continue,
                },
            };
            flat.cooldown_s = profile.cooldown_s.or(flat.cooldown_s);
            flat.max_actions_per_hour = profile.max_actions_per_hour.or(flat.max_actions_per_hour);
            for rule in &profile.rules {
                let signal = index.signal(&rule.signal)?;
                let mildest = rule
                    .warn
                    .or(rule.intervene)
                    .or(rule.refuse)
                    .ok_or_else(|| LowerError::Unresolved {
                        what: "threshold of the rule for signal",
                        name: rule.signal.clone(),
                    })?;
                flat.rules.insert(
                    signal,
                    Rule {
                        signal,
                        direction: spec.signals[signal].direction,
                        warn: rule.warn,
                        intervene: rule.intervene,
                        refuse: rule.refuse,
                        clear: rule.clear.unwrap_or(mildest),
                        dwell: rule.dwell.unwrap_or(1).max(1),
                        actions: rule
                            .actions
                            .iter()
                            .map(|a| index.action(a))
                            .collect::<Result<_, _>>()?,
                        defined_in: name.clone(),
                    },
                );
            }
            done.insert(name, flat);
        }
        if done.len() == before {
            let stuck = profiles
                .keys()
                .find(|name| !done.contains_key(name.as_str()))
                .cloned()
                .unwrap_or_default();
            return Err(LowerError::Unresolved {
                what: "`extends` chain of profile",
                name: stuck,
            });
        }
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rule on signal 0 with the given thresholds, `clear` at `warn`,
    /// dwell 1 and no actions.
    pub(crate) fn rule(
        direction: Direction,
        warn: f64,
        intervene: f64,
        refuse: Option<f64>,
    ) -> Rule {
        Rule {
            signal: 0,
            direction,
            warn: Some(warn),
            intervene: Some(intervene),
            refuse,
            clear: warn,
            dwell: 1,
            actions: vec![],
            defined_in: "p".to_owned(),
        }
    }

    #[test]
    fn levels_are_reached_at_the_threshold() {
        let r = rule(Direction::Above, 50.0, 100.0, Some(500.0));
        assert_eq!(r.level(50.0), Level::Warn);
        assert_eq!(r.level(49.999), Level::Normal);
        assert_eq!(r.level(100.0), Level::Intervene);
        assert_eq!(r.level(500.0), Level::Refuse);
        assert!(!r.is_clear(50.0));
        assert!(r.is_clear(49.0));
    }

    #[test]
    fn below_rules_mirror() {
        let r = rule(Direction::Below, 99.9, 99.5, None);
        assert_eq!(r.level(99.9), Level::Warn);
        assert_eq!(r.level(99.91), Level::Normal);
        assert_eq!(r.level(99.0), Level::Intervene);
        assert!(r.is_clear(99.95));
    }

    #[test]
    fn edges_step_one_ulp_to_the_good_side() {
        let r = rule(Direction::Above, 30.0, 80.0, None);
        let edges = r.edges();
        assert_eq!(edges.len(), 4);
        assert_eq!(edges[0].level, Level::Warn);
        assert_eq!(edges[1].value, 30.0f64.next_down());
        assert_eq!(edges[1].level, Level::Normal);
        assert_eq!(edges[3].level, Level::Warn);
        // Each edge names its own threshold and side.
        assert_eq!(
            edges
                .iter()
                .map(|e| (e.threshold, e.side))
                .collect::<Vec<_>>(),
            [
                (30.0, Side::At),
                (30.0, Side::Good),
                (80.0, Side::At),
                (80.0, Side::Good)
            ]
        );
        // Equal thresholds: just below both is the level below both.
        let r = rule(Direction::Above, 10.0, 10.0, None);
        assert_eq!(r.edges()[1].level, Level::Normal);
        assert_eq!(r.edges()[0].level, Level::Intervene);
    }

    #[test]
    fn build_metadata_becomes_a_valid_tag() {
        assert_eq!(image_tag("1.2.0"), "1.2.0");
        assert_eq!(image_tag("1.2.0-rc.1+build.7"), "1.2.0-rc.1_build.7");
    }

    #[test]
    fn url_ports_follow_the_scheme_or_the_authority() {
        assert_eq!(url_port("https://hooks.example.com/x"), Some(443));
        assert_eq!(url_port("http://hooks.example.com"), Some(80));
        assert_eq!(
            url_port("HTTP://user:pw@hooks.example.com:8081/a?b"),
            Some(8081)
        );
        assert_eq!(url_port("https://[::1]:9443/x"), Some(9443));
        assert_eq!(url_port("https://[::1]/x"), Some(443));
        assert_eq!(url_port("ftp://x"), None);
        assert_eq!(url_port("not a url"), None);
    }
}
