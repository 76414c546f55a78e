//! The template context: typed views of a [`Model`], one struct per thing a
//! template iterates over, holding model data plus text already escaped for
//! each output language (see [`crate::escape`]) and pieces computed rather
//! than templated.
//!
//! Templates only ever see a serialized [`Context`], so a field renamed or
//! removed here is a compile error at every place that builds it, and the
//! `{# context: … #}` note at the top of each template names fields of these
//! structs. Keys are serialized exactly as the field names.

use proc_macro2::{Literal, TokenStream};
use quote::quote;
use serde::Serialize;

use crate::escape;
use crate::explain;
use crate::model::{self, LedgerKind, Model, Side};
use crate::spec::{Adapter, Direction};
use crate::workspace::PackageSettings;

/// Why the view of a model could not be built (names should have prevented it).
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A computed identifier is not a Rust identifier.
    #[error("`{ident}` is not a rust identifier")]
    Ident {
        /// The identifier.
        ident: String,
        /// syn's error.
        #[source]
        source: syn::Error,
    },
}

/// Everything a template may read.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    /// The SKU as a whole.
    pub sku: SkuView,
    /// Signals in spec order (`signals[i].id == i`).
    pub signals: Vec<SignalView>,
    /// Actions in spec order (`actions[i].id == i`).
    pub actions: Vec<ActionView>,
    /// Every `(action, undo)` pair, in spec order of the action.
    pub undo_pairs: Vec<UndoPairView>,
    /// Profiles in id order, flattened.
    pub profiles: Vec<ProfileView>,
    /// Rust built with `quote` and handed over as text.
    pub pieces: Pieces,
    /// Markdown and Mermaid shared with `ggen explain`.
    pub docs: Docs,
    /// What the crate's `Cargo.toml` writes itself and what it inherits.
    pub cargo: CargoView,
    /// The generator and the runtime interface the crate is generated for.
    pub target: TargetView,
}

/// The package settings of the generated `Cargo.toml` (see
/// [`PackageSettings`]): a `None` is inherited from the workspace.
#[derive(Debug, Clone, Serialize)]
pub struct CargoView {
    /// `edition`, quoted for TOML, or `None` to inherit.
    pub edition: Option<String>,
    /// `rust-version`, quoted for TOML, or `None` to inherit.
    pub rust_version: Option<String>,
    /// Whether to write the crate's own `[lints]` tables.
    pub own_lints: bool,
    /// The `ggen-runtime` dependency's inline TOML, or `None` to inherit.
    pub runtime: Option<String>,
}

/// Versions named by the generated `API_LEVEL` assertion.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// This ggen's version.
    pub ggen_version: &'static str,
    /// The `ggen_runtime::API_LEVEL` generated for.
    pub api_level: u32,
    /// The `ggen-runtime` version generated for.
    pub runtime_version: &'static str,
}

/// SKU-wide values.
#[derive(Debug, Clone, Serialize)]
pub struct SkuView {
    /// `sku.id` (snake_case).
    pub id: String,
    /// Semver of the SKU, as written (only semver characters).
    pub version: String,
    /// Package and binary name.
    pub crate_name: String,
    /// The library's Rust name.
    pub lib_name: String,
    /// The spec's project-relative path.
    pub spec_path: String,
    /// SHA-256 (hex) of the spec file.
    pub spec_sha256: String,
    /// Upper bound on tenants.
    pub max_tenants: u32,
    /// Seconds before an unconfirmed intervention degrades.
    pub intervention_timeout_s: u32,
    /// Cleared evaluations in a row needed to return to stable.
    pub recovery_evaluations: u16,
    /// Seconds `degraded` waits before dispatching again.
    pub degraded_retry_s: u32,
    /// Whether signals need an active entitlement.
    pub entitlement_required: bool,
    /// The product on Google Cloud Marketplace, as Rust literals.
    pub marketplace: Option<MarketplaceView>,
    /// Whether the spec names a Pub/Sub audience (`/pubsub/push` then takes OIDC only).
    pub pubsub_oidc: bool,
    /// Largest accepted request body.
    pub max_body_bytes: u64,
    /// `enum Profile` variant of the default profile.
    pub default_variant: String,
    /// Port the service listens on.
    pub port: u16,
    /// Replica count.
    pub replicas: u32,
    /// The tenant attribute as Markdown text.
    pub tenant_attribute_md: String,
    /// Doc-comment lines.
    pub doc: SkuDoc,
    /// Rust literals.
    pub lit: SkuLit,
    /// Markdown text.
    pub md: SkuMd,
    /// TOML strings.
    pub toml: SkuToml,
    /// YAML strings.
    pub yaml: SkuYaml,
    /// Containerfile label values.
    pub containerfile: SkuContainerfile,
    /// The deployment's shape and wiring.
    pub deploy: DeployView,
}

/// How the deploy assets run the governor (`sku.deploy`).
#[derive(Debug, Clone, Serialize)]
pub struct DeployView {
    /// The ledger backend, `file` or `postgres`.
    pub ledger: &'static str,
    /// Whether the ledger is PostgreSQL (a Deployment with an autoscaler).
    pub postgres: bool,
    /// The autoscaler's maximum (PostgreSQL ledger).
    pub max_replicas: u32,
    /// Numeric user and group the image and the pod run as.
    pub uid: u32,
    /// `image:tag` as the manifest pulls it (the spec's image grammar makes it safe as is).
    pub image_ref: String,
    /// Some action is a webhook.
    pub webhook: bool,
    /// Some webhook action relies on `GOVERNOR_WEBHOOK_URL`.
    pub webhook_default_url: bool,
    /// TCP ports the pod connects out to over HTTPS/HTTP (webhooks, JWKS,
    /// the archive bucket).
    pub egress_ports: Vec<u16>,
    /// The archive is a bucket (`deploy.archive`): no archive volume.
    pub bucket_archive: bool,
    /// The bucket is GCS (`gs://`): its token comes from the metadata server.
    pub archive_gcs: bool,
    /// The spec is sold on Google Cloud Marketplace (`entitlement.marketplace`):
    /// `/marketplace/pubsub` and the Procurement API's settings.
    pub marketplace: bool,
    /// The pod gets Google access tokens from GKE's metadata server (a GCS
    /// archive, the Procurement API).
    pub metadata_server: bool,
    /// The bucket is S3 (`s3://`): optional `AWS_*` keys from the Secret.
    pub archive_s3: bool,
    /// The programs `command` actions run, as one Containerfile label value.
    pub programs_label: Option<String>,
    /// The same programs, as Markdown text.
    pub programs_md: Vec<String>,
}

/// SKU text as doc-comment lines.
#[derive(Debug, Clone, Serialize)]
pub struct SkuDoc {
    /// The product name (the id when empty).
    pub name: String,
    /// The description (a fixed sentence when empty).
    pub description: String,
}

/// SKU values as Rust literals.
#[derive(Debug, Clone, Serialize)]
pub struct SkuLit {
    /// `"cost_guard"`.
    pub id: String,
    /// The product name.
    pub name: String,
    /// The version.
    pub version: String,
    /// The tenant attribute.
    pub tenant_attribute: String,
    /// `Some("…")` or `None`.
    pub pubsub_audience: String,
}

/// `entitlement.marketplace` for the `SKU` static.
#[derive(Debug, Clone, Serialize)]
pub struct MarketplaceView {
    /// The provider id, as a Rust string literal.
    pub provider_id: String,
    /// The product, as `Some("…")` or `None`.
    pub product: String,
    /// Whether requests are approved as they arrive.
    pub auto_approve: bool,
    /// Every plan, sorted by name.
    pub plans: Vec<MarketplacePlanView>,
}

/// One Marketplace plan for the `SKU` static.
#[derive(Debug, Clone, Serialize)]
pub struct MarketplacePlanView {
    /// The plan id, as a Rust string literal.
    pub name: String,
    /// The `enum Profile` variant its tenants get.
    pub variant: String,
}

/// SKU text as Markdown.
#[derive(Debug, Clone, Serialize)]
pub struct SkuMd {
    /// The product name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The publisher.
    pub publisher: String,
}

/// SKU text as TOML strings (quotes included).
#[derive(Debug, Clone, Serialize)]
pub struct SkuToml {
    /// One-line package description.
    pub description: String,
}

/// SKU values as YAML strings (quotes included).
#[derive(Debug, Clone, Serialize)]
pub struct SkuYaml {
    /// The version.
    pub version: String,
    /// The description.
    pub description: String,
    /// `image:version`.
    pub image_ref: String,
    /// CPU quantity.
    pub cpu: String,
    /// Memory quantity.
    pub memory: String,
    /// The ledger volume's size, e.g. `10Gi`.
    pub volume: String,
    /// The retention bound (`--retain`), when the spec sets one.
    pub retain: Option<String>,
    /// The bucket URL (`--archive`), when the spec sets one.
    pub archive: Option<String>,
    /// The archive volume's size (with `retain` and no `archive`).
    pub archive_storage: String,
}

/// SKU text as Containerfile label values.
#[derive(Debug, Clone, Serialize)]
pub struct SkuContainerfile {
    /// The product name.
    pub name: String,
    /// The description.
    pub description: String,
    /// The version.
    pub version: String,
}

/// One signal.
#[derive(Debug, Clone, Serialize)]
pub struct SignalView {
    /// Runtime id (position in spec order).
    pub id: u16,
    /// Spec name (snake_case, so safe in any output as is).
    pub name: String,
    /// `enum Signal` variant.
    pub variant: String,
    /// Module / function name.
    pub module: String,
    /// `above` or `below`.
    pub direction: &'static str,
    /// `::ggen_runtime::sku::Direction` variant.
    pub direction_variant: &'static str,
    /// Doc-comment lines.
    pub doc: SignalDoc,
    /// Rust literals.
    pub lit: SignalLit,
    /// Markdown text.
    pub md: SignalMd,
}

/// Signal text as doc-comment lines.
#[derive(Debug, Clone, Serialize)]
pub struct SignalDoc {
    /// The unit (`no unit` when empty).
    pub unit: String,
    /// The description (`no description` when empty).
    pub description: String,
}

/// Signal values as Rust literals.
#[derive(Debug, Clone, Serialize)]
pub struct SignalLit {
    /// The name.
    pub name: String,
    /// The unit.
    pub unit: String,
    /// The description.
    pub description: String,
    /// `Some(<f64>)` or `None`.
    pub min: String,
    /// `Some(<f64>)` or `None`.
    pub max: String,
}

/// Signal text as Markdown.
#[derive(Debug, Clone, Serialize)]
pub struct SignalMd {
    /// The unit.
    pub unit: String,
    /// The description.
    pub description: String,
    /// The accepted range (`≥ 0`, `0 … 100`, `any`).
    pub range: String,
}

/// One action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    /// Runtime id (position in spec order).
    pub id: u16,
    /// Spec name.
    pub name: String,
    /// `enum Action` variant.
    pub variant: String,
    /// Adapter name (`log`, `webhook`, `command`).
    pub adapter: &'static str,
    /// `::ggen_runtime::sku::Adapter` variant.
    pub adapter_variant: &'static str,
    /// Spec name of the undo action, if any.
    pub undo_name: Option<String>,
    /// `enum Action` variant of the undo action, if any.
    pub undo_variant: Option<String>,
    /// Per-attempt timeout.
    pub timeout_ms: u32,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Rust literals.
    pub lit: ActionLit,
    /// Markdown text.
    pub md: ActionMd,
}

/// Action values as Rust literals.
#[derive(Debug, Clone, Serialize)]
pub struct ActionLit {
    /// The name.
    pub name: String,
    /// The params as a canonical JSON string literal.
    pub params: String,
}

/// Action text as Markdown.
#[derive(Debug, Clone, Serialize)]
pub struct ActionMd {
    /// The params in a `<code>` span.
    pub params: String,
}

/// An action and the action that undoes it, as `enum Action` variants
/// (serialized as a two-element array: `p.0`, `p.1` in templates).
#[derive(Debug, Clone, Serialize)]
pub struct UndoPairView(pub String, pub String);

/// One profile, flattened.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    /// Runtime id (position in map order).
    pub id: u16,
    /// Spec name (snake_case).
    pub name: String,
    /// `enum Profile` variant.
    pub variant: String,
    /// Module name.
    pub module: String,
    /// The parent profile's name, if any.
    pub extends: Option<String>,
    /// Whether this is the spec's default profile.
    pub is_default: bool,
    /// Cooldown in seconds.
    pub cooldown_s: u32,
    /// `enum Signal` variants this profile has a rule for.
    pub covered: Vec<String>,
    /// One rule per covered signal, ordered by signal id.
    pub rules: Vec<RuleView>,
    /// Rust literals.
    pub lit: ProfileLit,
}

/// Profile values as Rust literals.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileLit {
    /// The name.
    pub name: String,
    /// `Some(<u32>)` or `None`.
    pub max_actions_per_hour: String,
}

/// One rule of a profile.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// The signal's spec name.
    pub signal_name: String,
    /// The signal's `enum Signal` variant.
    pub signal_variant: String,
    /// The signal's module name.
    pub signal_module: String,
    /// `::ggen_runtime::sku::Direction` variant.
    pub direction_variant: &'static str,
    /// The profile whose spec text defines the rule.
    pub defined_in: String,
    /// Consecutive breaching evaluations before escalating (≥ 1).
    pub dwell: u16,
    /// The signal's unit as a doc-comment line.
    pub doc_unit: String,
    /// `enum Action` variants run on `intervene`, in spec order.
    pub action_variants: Vec<String>,
    /// Rust literals.
    pub lit: RuleLit,
    /// Every threshold edge: at each threshold and just on its good side.
    pub edges: Vec<EdgeView>,
    /// The `clear` edge.
    pub clear_edge: ClearEdge,
}

/// Rule thresholds as Rust `f64` literals.
#[derive(Debug, Clone, Serialize)]
pub struct RuleLit {
    /// Warn threshold, if set.
    pub warn: Option<String>,
    /// Intervene threshold, if set.
    pub intervene: Option<String>,
    /// Refuse threshold, if set.
    pub refuse: Option<String>,
    /// Clear threshold.
    pub clear: String,
}

/// A reading a generated test feeds to `raw_level`, and the level it must get.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeView {
    /// The reading as a Rust `f64` expression (a literal, or
    /// `f64::next_down(<threshold>)` / `f64::next_up(<threshold>)`).
    pub value: String,
    /// `::ggen_runtime::policy::Level` variant.
    pub level: &'static str,
}

/// The `clear` threshold and the nearest value on its good side, as Rust expressions.
#[derive(Debug, Clone, Serialize)]
pub struct ClearEdge {
    /// `clear` itself (not clear).
    pub at: String,
    /// Just on the good side (clear).
    pub good: String,
}

/// Rust built with `quote`.
#[derive(Debug, Clone, Serialize)]
pub struct Pieces {
    /// The exhaustive `match (profile, signal) { … }` of `policy::rule`.
    pub rule_match: String,
}

/// Documentation shared with `ggen explain`.
#[derive(Debug, Clone, Serialize)]
pub struct Docs {
    /// Thresholds per profile, as Markdown tables.
    pub thresholds: String,
    /// The FSM as a Mermaid diagram.
    pub fsm: String,
}

impl Context {
    /// The context of `model`'s templates.
    pub fn new(model: &Model, settings: &PackageSettings) -> Result<Context, ViewError> {
        Ok(Context {
            cargo: CargoView {
                edition: settings.edition.as_deref().map(escape::quoted),
                rust_version: settings.rust_version.as_deref().map(escape::quoted),
                own_lints: settings.own_lints,
                runtime: settings.runtime.clone(),
            },
            target: TargetView {
                ggen_version: crate::manifest::VERSION,
                api_level: ggen_runtime_core::API_LEVEL,
                runtime_version: ggen_runtime_core::VERSION,
            },
            sku: SkuView::new(model),
            signals: model.signals.iter().map(SignalView::new).collect(),
            actions: model
                .actions
                .iter()
                .map(|a| ActionView::new(model, a))
                .collect(),
            undo_pairs: model
                .actions
                .iter()
                .filter_map(|a| {
                    a.undo
                        .map(|u| UndoPairView(a.variant.clone(), model.actions[u].variant.clone()))
                })
                .collect(),
            profiles: model
                .profiles
                .iter()
                .map(|p| ProfileView::new(model, p))
                .collect(),
            pieces: Pieces {
                rule_match: rule_match(model)?.to_string(),
            },
            docs: Docs {
                thresholds: explain::thresholds_markdown(model),
                fsm: explain::fsm_mermaid(model),
            },
        })
    }
}

impl SkuView {
    fn new(model: &Model) -> SkuView {
        SkuView {
            id: model.id.clone(),
            version: model.version.clone(),
            crate_name: model.crate_name.clone(),
            lib_name: model.lib_name.clone(),
            spec_path: model.spec_path.clone(),
            spec_sha256: model.spec_sha256.clone(),
            max_tenants: model.max_tenants,
            intervention_timeout_s: model.intervention_timeout_s,
            recovery_evaluations: model.recovery_evaluations,
            degraded_retry_s: model.degraded_retry_s,
            entitlement_required: model.entitlement_required,
            marketplace: model.marketplace.as_ref().map(|m| MarketplaceView {
                provider_id: escape::rust_str(&m.provider_id),
                product: m.product.as_deref().map_or_else(
                    || "None".to_owned(),
                    |p| format!("Some({})", escape::rust_str(p)),
                ),
                auto_approve: m.auto_approve,
                plans: m
                    .plans
                    .iter()
                    .map(|(plan, profile)| MarketplacePlanView {
                        name: escape::rust_str(plan),
                        variant: model.profiles[*profile].variant.clone(),
                    })
                    .collect(),
            }),
            pubsub_oidc: model.pubsub_audience.is_some(),
            max_body_bytes: model.max_body_bytes,
            default_variant: model
                .profiles
                .get(model.default_profile)
                .map(|p| p.variant.clone())
                .unwrap_or_default(),
            port: model.deploy.port,
            replicas: model.deploy.replicas,
            tenant_attribute_md: escape::md(&model.tenant_attribute),
            doc: SkuDoc {
                name: escape::doc_line(&model.name, &model.id),
                description: escape::doc_line(&model.description, "No description in the spec."),
            },
            lit: SkuLit {
                id: escape::rust_str(&model.id),
                name: escape::rust_str(&model.name),
                version: escape::rust_str(&model.version),
                tenant_attribute: escape::rust_str(&model.tenant_attribute),
                pubsub_audience: model.pubsub_audience.as_deref().map_or_else(
                    || "None".to_owned(),
                    |a| format!("Some({})", escape::rust_str(a)),
                ),
            },
            md: SkuMd {
                name: escape::md(&model.name),
                description: escape::md(&model.description),
                publisher: escape::md(&model.publisher),
            },
            toml: SkuToml {
                description: escape::quoted(&escape::doc_line(&model.description, &model.name)),
            },
            yaml: SkuYaml {
                // A label value: `+` is not allowed there (as in the tag).
                version: escape::quoted(&model.image_tag()),
                description: escape::quoted(&model.description),
                image_ref: escape::quoted(&format!("{}:{}", model.deploy.image, model.image_tag())),
                cpu: escape::quoted(&model.deploy.cpu),
                memory: escape::quoted(&model.deploy.memory),
                volume: escape::quoted(&format!("{}Gi", model.deploy.volume_gi)),
                retain: model.deploy.retain.as_deref().map(escape::quoted),
                archive: model.deploy.archive.as_deref().map(escape::quoted),
                archive_storage: escape::quoted(&model.deploy.archive_storage),
            },
            deploy: DeployView::new(model),
            containerfile: SkuContainerfile {
                name: escape::containerfile(&model.name),
                description: escape::containerfile(&model.description),
                version: escape::containerfile(&model.version),
            },
        }
    }
}

/// The user the image declares and the pod runs as (distroless `nonroot`).
const NONROOT_UID: u32 = 65_532;

impl DeployView {
    fn new(model: &Model) -> DeployView {
        let deploy = &model.deploy;
        let wiring = &deploy.wiring;
        let mut egress_ports = wiring.webhook_ports.clone();
        if model.pubsub_audience.is_some() {
            // The JWKS of Google's OIDC keys, fetched over HTTPS.
            egress_ports.insert(443);
        }
        let marketplace = model.marketplace.is_some();
        if marketplace {
            // The Procurement API and the JWKS of Google's OIDC keys.
            egress_ports.insert(443);
        }
        let archive = deploy.archive.as_deref();
        if archive.is_some() {
            // GCS and S3 (and the S3 token service of IRSA) answer on HTTPS.
            egress_ports.insert(443);
        }
        let programs: Vec<&str> = wiring.programs.iter().map(String::as_str).collect();
        DeployView {
            ledger: deploy.ledger.as_str(),
            postgres: deploy.ledger == LedgerKind::Postgres,
            max_replicas: deploy.max_replicas,
            uid: NONROOT_UID,
            image_ref: format!("{}:{}", deploy.image, model.image_tag()),
            webhook: wiring.webhook,
            webhook_default_url: wiring.webhook_default_url,
            egress_ports: egress_ports.into_iter().collect(),
            bucket_archive: archive.is_some(),
            archive_gcs: archive.is_some_and(|url| url.starts_with("gs://")),
            marketplace,
            metadata_server: marketplace || archive.is_some_and(|url| url.starts_with("gs://")),
            archive_s3: archive.is_some_and(|url| url.starts_with("s3://")),
            programs_label: (!programs.is_empty())
                .then(|| escape::containerfile(&programs.join(" "))),
            programs_md: programs.iter().map(|p| escape::md(p)).collect(),
        }
    }
}

impl SignalView {
    fn new(s: &model::Signal) -> SignalView {
        SignalView {
            id: s.id,
            name: s.name.clone(),
            variant: s.variant.clone(),
            module: s.module.clone(),
            direction: direction_name(s.direction),
            direction_variant: direction_variant(s.direction),
            doc: SignalDoc {
                unit: escape::doc_line(&s.unit, "no unit"),
                description: escape::doc_line(&s.description, "no description"),
            },
            lit: SignalLit {
                name: escape::rust_str(&s.name),
                unit: escape::rust_str(&s.unit),
                description: escape::rust_str(&s.description),
                min: escape::rust_opt_f64(s.min),
                max: escape::rust_opt_f64(s.max),
            },
            md: SignalMd {
                unit: escape::md(&s.unit),
                description: escape::md(&s.description),
                range: range_md(s.min, s.max),
            },
        }
    }
}

impl ActionView {
    fn new(model: &Model, a: &model::Action) -> ActionView {
        let undo = a.undo.map(|u| &model.actions[u]);
        ActionView {
            id: a.id,
            name: a.name.clone(),
            variant: a.variant.clone(),
            adapter: adapter_name(a.adapter),
            adapter_variant: adapter_variant(a.adapter),
            undo_name: undo.map(|u| u.name.clone()),
            undo_variant: undo.map(|u| u.variant.clone()),
            timeout_ms: a.timeout_ms,
            retries: a.retries,
            lit: ActionLit {
                name: escape::rust_str(&a.name),
                params: escape::rust_str(&a.params),
            },
            md: ActionMd {
                params: format!("<code>{}</code>", escape::md(&a.params)),
            },
        }
    }
}

impl ProfileView {
    fn new(model: &Model, p: &model::Profile) -> ProfileView {
        ProfileView {
            id: p.id,
            name: p.name.clone(),
            variant: p.variant.clone(),
            module: p.module.clone(),
            extends: p.extends.clone(),
            is_default: usize::from(p.id) == model.default_profile,
            cooldown_s: p.cooldown_s,
            covered: p
                .rules
                .iter()
                .map(|r| model.signals[r.signal].variant.clone())
                .collect(),
            rules: p.rules.iter().map(|r| RuleView::new(model, r)).collect(),
            lit: ProfileLit {
                name: escape::rust_str(&p.name),
                max_actions_per_hour: p
                    .max_actions_per_hour
                    .map_or_else(|| "None".to_owned(), |n| format!("Some({n})")),
            },
        }
    }
}

impl RuleView {
    fn new(model: &Model, r: &model::Rule) -> RuleView {
        let signal = &model.signals[r.signal];
        RuleView {
            signal_name: signal.name.clone(),
            signal_variant: signal.variant.clone(),
            signal_module: signal.module.clone(),
            direction_variant: direction_variant(r.direction),
            defined_in: r.defined_in.clone(),
            dwell: r.dwell,
            doc_unit: escape::doc_line(&signal.unit, "no unit"),
            action_variants: r
                .actions
                .iter()
                .map(|a| model.actions[*a].variant.clone())
                .collect(),
            lit: RuleLit {
                warn: r.warn.map(escape::rust_f64),
                intervene: r.intervene.map(escape::rust_f64),
                refuse: r.refuse.map(escape::rust_f64),
                clear: escape::rust_f64(r.clear),
            },
            edges: edge_views(r),
            clear_edge: ClearEdge {
                at: escape::rust_f64(r.clear),
                good: good_side_expr(r.direction, r.clear),
            },
        }
    }
}

fn ident(text: &str) -> Result<syn::Ident, ViewError> {
    syn::parse_str::<syn::Ident>(text).map_err(|source| ViewError::Ident {
        ident: text.to_owned(),
        source,
    })
}

/// The body of `policy::rule`: `match (profile, signal) { … }` with one arm
/// per pair and no wildcard, so a new signal or profile cannot be forgotten.
fn rule_match(model: &Model) -> Result<TokenStream, ViewError> {
    let mut arms = Vec::new();
    for profile in &model.profiles {
        let pv = ident(&profile.variant)?;
        let pm = ident(&profile.module)?;
        for signal in &model.signals {
            let sv = ident(&signal.variant)?;
            let target = match profile
                .rules
                .iter()
                .position(|r| r.signal == usize::from(signal.id))
            {
                Some(i) => {
                    let i = Literal::usize_unsuffixed(i);
                    quote! { Some(&#pm::RULES[#i]) }
                }
                None => quote! { None },
            };
            arms.push(quote! {
                (Profile::#pv, crate::signals::Signal::#sv) => #target
            });
        }
    }
    Ok(quote! {
        match (profile, signal) {
            #(#arms,)*
        }
    })
}

fn direction_variant(direction: Direction) -> &'static str {
    match direction {
        Direction::Above => "Above",
        Direction::Below => "Below",
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Above => "above",
        Direction::Below => "below",
    }
}

fn adapter_name(adapter: Adapter) -> &'static str {
    match adapter {
        Adapter::Log => "log",
        Adapter::Webhook => "webhook",
        Adapter::Command => "command",
    }
}

fn adapter_variant(adapter: Adapter) -> &'static str {
    match adapter {
        Adapter::Log => "Log",
        Adapter::Webhook => "Webhook",
        Adapter::Command => "Command",
    }
}

fn range_md(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{min} … {max}"),
        (Some(min), None) => format!("≥ {min}"),
        (None, Some(max)) => format!("≤ {max}"),
        (None, None) => "any".to_owned(),
    }
}

/// The threshold edges of `r` as the policy tests write them.
fn edge_views(r: &model::Rule) -> Vec<EdgeView> {
    r.edges()
        .into_iter()
        .map(|e| EdgeView {
            value: match e.side {
                Side::At => escape::rust_f64(e.threshold),
                Side::Good => good_side_expr(r.direction, e.threshold),
            },
            level: e.level.variant(),
        })
        .collect()
}

/// `f64::next_down(v)` / `f64::next_up(v)` as a Rust expression: the
/// nearest value on the good side of `value`.
fn good_side_expr(direction: Direction, value: f64) -> String {
    let step = match direction {
        Direction::Above => "next_down",
        Direction::Below => "next_up",
    };
    format!("f64::{step}({})", escape::rust_f64(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Rule;
    use crate::model::tests::rule;

    fn edges(r: &Rule) -> Vec<(String, &'static str)> {
        edge_views(r)
            .into_iter()
            .map(|e| (e.value, e.level))
            .collect()
    }

    #[test]
    fn each_edge_steps_from_its_own_threshold() {
        let r = rule(Direction::Above, 30.0, 80.0, Some(95.5));
        assert_eq!(
            edges(&r),
            [
                ("30.0".to_owned(), "Warn"),
                ("f64::next_down(30.0)".to_owned(), "Normal"),
                ("80.0".to_owned(), "Intervene"),
                ("f64::next_down(80.0)".to_owned(), "Warn"),
                ("95.5".to_owned(), "Refuse"),
                ("f64::next_down(95.5)".to_owned(), "Intervene"),
            ]
        );
        // Without a warn threshold the first edge is `intervene`'s, not `warn`'s.
        let r = Rule {
            warn: None,
            ..rule(Direction::Below, 99.0, 90.0, None)
        };
        assert_eq!(
            edges(&r),
            [
                ("90.0".to_owned(), "Intervene"),
                ("f64::next_up(90.0)".to_owned(), "Normal"),
            ]
        );
    }
}
