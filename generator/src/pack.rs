//! A spec's policy pack without compiling it: the [`Model`] lowered to
//! the runtime's [`Sku`] tables, answered by a [`TablePack`] that the
//! runtime evaluates directly (what `ggen test` and `ggen backtest` run).
//!
//! The generated crate renders the same tables as Rust statics and answers
//! the lookups with exhaustive matches; a property test drives both packs
//! with the same inputs and compares their receipts byte for byte
//! (`generator/tests/it/pack.rs`), so the interpreted pack means exactly
//! what the generated crate does.
//!
//! The runtime's tables are `'static`: a pack lives as long as the process
//! (one per spec a command reads, so the memory is bounded by the specs).

use ggen_runtime_core::sku::{
    ActionDef, ActionId, Adapter, Direction, GovernorTiming, IngressDef, MarketplaceDef,
    MarketplacePlan, ProfileDef, ProfileId, Rule, SignalDef, SignalId, Sku, TablePack,
};

use crate::model::{self, Model};
use crate::spec;

/// Keeps `value` for the rest of the process.
fn keep<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

fn text(value: &str) -> &'static str {
    Box::leak(value.to_owned().into_boxed_str())
}

fn slice<T>(values: Vec<T>) -> &'static [T] {
    Box::leak(values.into_boxed_slice())
}

/// An id as the runtime's `u16` (the validator bounds every list far below).
fn id(index: usize) -> u16 {
    u16::try_from(index).unwrap_or(u16::MAX)
}

fn direction(direction: spec::Direction) -> Direction {
    match direction {
        spec::Direction::Above => Direction::Above,
        spec::Direction::Below => Direction::Below,
    }
}

fn rule(rule: &model::Rule) -> Rule {
    Rule {
        signal: SignalId(id(rule.signal)),
        direction: direction(rule.direction),
        warn: rule.warn,
        intervene: rule.intervene,
        refuse: rule.refuse,
        clear: rule.clear,
        dwell: rule.dwell,
        actions: slice(rule.actions.iter().map(|&a| ActionId(id(a))).collect()),
    }
}

/// The runtime's tables for `model`: the values the generated crate's
/// `SKU` static holds.
pub fn sku(model: &Model) -> &'static Sku {
    let signals = model
        .signals
        .iter()
        .map(|s| SignalDef {
            name: text(&s.name),
            unit: text(&s.unit),
            description: text(&s.description),
            min: s.min,
            max: s.max,
            direction: direction(s.direction),
        })
        .collect();
    let actions = model
        .actions
        .iter()
        .map(|a| ActionDef {
            name: text(&a.name),
            adapter: match a.adapter {
                spec::Adapter::Log => Adapter::Log,
                spec::Adapter::Webhook => Adapter::Webhook,
                spec::Adapter::Command => Adapter::Command,
            },
            undo: a.undo.map(|u| ActionId(id(u))),
            params: text(&a.params),
            timeout_ms: a.timeout_ms,
            retries: a.retries,
        })
        .collect();
    let profiles = model
        .profiles
        .iter()
        .map(|p| ProfileDef {
            name: text(&p.name),
            rules: slice(p.rules.iter().map(rule).collect()),
            cooldown_s: p.cooldown_s,
            max_actions_per_hour: p.max_actions_per_hour,
        })
        .collect();
    keep(Sku {
        id: text(&model.id),
        name: text(&model.name),
        version: text(&model.version),
        spec_sha256: text(&model.spec_sha256),
        tenant_attribute: text(&model.tenant_attribute),
        max_tenants: model.max_tenants,
        signals: slice(signals),
        actions: slice(actions),
        profiles: slice(profiles),
        default_profile: ProfileId(id(model.default_profile)),
        governor: GovernorTiming {
            intervention_timeout_s: model.intervention_timeout_s,
            recovery_evaluations: model.recovery_evaluations,
            degraded_retry_s: model.degraded_retry_s,
        },
        entitlement_required: model.entitlement_required,
        marketplace: model.marketplace.as_ref().map(|m| MarketplaceDef {
            provider_id: text(&m.provider_id),
            product: m.product.as_deref().map(text),
            auto_approve: m.auto_approve,
            plans: slice(
                m.plans
                    .iter()
                    .map(|(plan, profile)| MarketplacePlan {
                        name: text(plan),
                        profile: ProfileId(id(*profile)),
                    })
                    .collect(),
            ),
        }),
        ingress: IngressDef {
            pubsub_audience: model.pubsub_audience.as_deref().map(text),
            max_body_bytes: usize::try_from(model.max_body_bytes).unwrap_or(usize::MAX),
        },
    })
}

/// The interpreted policy pack of `model`.
pub fn interpreted(model: &Model) -> &'static TablePack {
    keep(TablePack(sku(model)))
}
