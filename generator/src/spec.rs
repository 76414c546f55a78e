//! The SKU spec as written (spec_version 1): raw serde types, no checks
//! beyond shape. `validate` turns a [`Spec`] into errors or a checked spec;
//! `model` lowers it.
//!
//! Unknown keys are rejected (`deny_unknown_fields`) so typos never pass.
//! Maps are `BTreeMap`s: their order can reach generated output.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A whole spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Editors' schema hint; ignored.
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    /// Format version; validation accepts only `SPEC_VERSION`.
    pub spec_version: u32,
    /// What the product is.
    pub sku: SkuInfo,
    /// How tenants are named and how many one deployment holds.
    pub tenancy: Tenancy,
    /// The signals, names unique (at least one).
    pub signals: Vec<Signal>,
    /// The actions, names unique.
    pub actions: Vec<Action>,
    /// Profiles of rules and which one is the default.
    pub policy: Policy,
    /// Timing of the governor state machine.
    pub governor: Governor,
    /// Whether tenants need an entitlement (default: not required).
    #[serde(default)]
    pub entitlement: Entitlement,
    /// How signals arrive (default: no Pub/Sub audience, 1 MiB bodies).
    #[serde(default)]
    pub ingress: Ingress,
    /// Container and Kubernetes settings (defaults in [`Deploy`]).
    #[serde(default)]
    pub deploy: Deploy,
}

/// The `sku` section: identity of the product.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuInfo {
    /// `^[a-z][a-z0-9_]{1,39}$`; names the crate and the output folder.
    pub id: String,
    /// Human name of the product.
    pub name: String,
    /// Semver of the SKU.
    pub version: String,
    /// Who publishes it.
    pub publisher: String,
    /// One paragraph (may be empty).
    #[serde(default)]
    pub description: String,
}

/// The `tenancy` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenancy {
    /// Pub/Sub message attribute carrying the tenant id.
    pub tenant_attribute: String,
    /// Upper bound on tenants per deployment (≥ 1).
    pub max_tenants: u32,
}

/// Which side of a threshold is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Higher is worse (the default).
    #[default]
    Above,
    /// Lower is worse (e.g. availability).
    Below,
}

/// One entry of `signals`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    /// snake_case, unique among signals.
    pub name: String,
    /// Free text, shown in docs and metrics.
    pub unit: String,
    /// Free text (may be empty).
    #[serde(default)]
    pub description: String,
    /// Smallest value accepted at ingress (≤ `max`).
    pub min: Option<f64>,
    /// Largest value accepted at ingress.
    pub max: Option<f64>,
    /// Which side is worse (default `above`).
    #[serde(default)]
    pub direction: Direction,
}

/// How an action is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    /// Records what it would do.
    Log,
    /// HTTP POST of the action as JSON.
    Webhook,
    /// Runs a program with templated arguments.
    Command,
}

/// One entry of `actions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Unique among actions.
    pub name: String,
    /// How it is carried out.
    pub adapter: Adapter,
    /// Another action's name, run when the governor steps back to stable.
    pub undo: Option<String>,
    /// Adapter-specific, passed through untouched.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Per-attempt timeout (default 5000).
    pub timeout_ms: Option<u32>,
    /// Retries after the first attempt (default 0).
    pub retries: Option<u32>,
}

/// The `policy` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// A key of `profiles`.
    pub default_profile: String,
    /// Profiles by snake_case name, in name order.
    pub profiles: BTreeMap<String, Profile>,
}

/// One profile as written (before flattening `extends`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The parent profile; chains are acyclic.
    pub extends: Option<String>,
    /// At most one rule per signal; overrides the parent's rule for it.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Seconds before an action may run again for a tenant (inherited if absent).
    pub cooldown_s: Option<u32>,
    /// Dispatch budget per tenant and hour (inherited if absent).
    pub max_actions_per_hour: Option<u32>,
}

/// One rule of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A declared signal.
    pub signal: String,
    /// Warn threshold (at least one of `warn`, `intervene`, `refuse` is set).
    pub warn: Option<f64>,
    /// Intervene threshold, not milder than `warn`.
    pub intervene: Option<f64>,
    /// Refuse threshold, not milder than `intervene`.
    pub refuse: Option<f64>,
    /// Hysteresis exit threshold, not past the mildest threshold (defaults to it).
    pub clear: Option<f64>,
    /// Consecutive breaching evaluations before escalating (default 1).
    pub dwell: Option<u16>,
    /// Declared actions run on `intervene`.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The `governor` section: timing of the state machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governor {
    /// Seconds before an unconfirmed intervention degrades.
    pub intervention_timeout_s: u32,
    /// Cleared evaluations in a row needed to return to stable.
    pub recovery_evaluations: u16,
    /// Seconds `degraded` waits before dispatching again.
    pub degraded_retry_s: u32,
}

/// The `entitlement` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    /// Whether a tenant needs an active entitlement before signals count.
    #[serde(default)]
    pub required: bool,
    /// Google Cloud Marketplace: where entitlements come from, if there.
    pub marketplace: Option<Marketplace>,
}

/// The `entitlement.marketplace` section: the governor's product on
/// Google Cloud Marketplace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marketplace {
    /// The provider (partner) id: `providers/{provider_id}/…` in the
    /// Procurement API, `providerId` in its notifications.
    pub provider_id: String,
    /// The product's `productExternalName`: entitlements of the provider's
    /// other products are left alone (none: every entitlement is this
    /// product's).
    pub product: Option<String>,
    /// Whether entitlement requests and plan changes are approved as they
    /// arrive (default false: the provider approves them itself).
    #[serde(default)]
    pub auto_approve: bool,
    /// Marketplace plan → the profile its tenants get.
    pub plans: std::collections::BTreeMap<String, String>,
}

/// The `ingress` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    /// Pub/Sub push settings, if any.
    pub pubsub: Option<PubSub>,
    /// Largest accepted request body (default 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

impl Default for Ingress {
    fn default() -> Self {
        Ingress {
            pubsub: None,
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

fn default_max_body_bytes() -> u64 {
    1024 * 1024
}

/// Pub/Sub push settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubSub {
    /// OIDC audience of push tokens; without one, a bearer token is required.
    pub audience: Option<String>,
}

/// The `deploy` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Port the service listens on (default 8080).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Replica count (default 1).
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Where the ledger lives: `file` (one replica) or `postgres`
    /// (default: `file` for one replica, `postgres` for more).
    pub ledger: Option<LedgerKind>,
    /// The autoscaler's ceiling with the PostgreSQL ledger (default twice `replicas`).
    pub max_replicas: Option<u32>,
    /// CPU request/limit as a Kubernetes quantity (default `500m`).
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory request/limit as a Kubernetes quantity (default `256Mi`).
    #[serde(default = "default_memory")]
    pub memory: String,
    /// Image repository (default: the crate name).
    pub image: Option<String>,
    /// Expected steady load, for sizing the volume (default 1000).
    #[serde(default = "default_signals_per_second")]
    pub signals_per_second: u64,
    /// How much of the ledger stays local (`7d`, `20GiB`); older segments
    /// (a PostgreSQL ledger: full partitions) go to the archive. None: the
    /// ledger is never trimmed.
    pub retain: Option<String>,
    /// The bucket the archive goes to (`gs://bucket/prefix`,
    /// `s3://bucket/prefix`; only with `retain`). None: the file ledger's
    /// archive volume.
    pub archive: Option<String>,
    /// The archive volume's size, a Kubernetes quantity (default `100Gi`;
    /// set only without `archive`).
    #[serde(default = "default_archive_storage")]
    pub archive_storage: String,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            port: default_port(),
            replicas: default_replicas(),
            ledger: None,
            max_replicas: None,
            cpu: default_cpu(),
            memory: default_memory(),
            image: None,
            signals_per_second: default_signals_per_second(),
            retain: None,
            archive: None,
            archive_storage: default_archive_storage(),
        }
    }
}

/// The ledger backend a deployment uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// The embedded file ledger on the pod's volume: one writer, one replica.
    File,
    /// A PostgreSQL database shared by every replica (`DATABASE_URL`).
    Postgres,
}

impl LedgerKind {
    /// The spec's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            LedgerKind::File => "file",
            LedgerKind::Postgres => "postgres",
        }
    }
}

fn default_signals_per_second() -> u64 {
    1000
}
fn default_archive_storage() -> String {
    "100Gi".to_owned()
}

fn default_port() -> u16 {
    8080
}
fn default_replicas() -> u32 {
    1
}
fn default_cpu() -> String {
    "500m".to_owned()
}
fn default_memory() -> String {
    "256Mi".to_owned()
}
