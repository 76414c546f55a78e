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
    pub spec_version: u32,
    pub sku: SkuInfo,
    pub tenancy: Tenancy,
    pub signals: Vec<Signal>,
    pub actions: Vec<Action>,
    pub policy: Policy,
    pub governor: Governor,
    #[serde(default)]
    pub entitlement: Entitlement,
    #[serde(default)]
    pub ingress: Ingress,
    #[serde(default)]
    pub deploy: Deploy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuInfo {
    pub id: String,
    pub name: String,
    pub version: String,
    pub publisher: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenancy {
    pub tenant_attribute: String,
    pub max_tenants: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Above,
    Below,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub name: String,
    pub unit: String,
    #[serde(default)]
    pub description: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(default)]
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Adapter {
    Log,
    Webhook,
    Command,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub name: String,
    pub adapter: Adapter,
    pub undo: Option<String>,
    /// Adapter-specific, passed through untouched.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    pub timeout_ms: Option<u32>,
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub default_profile: String,
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub extends: Option<String>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    pub cooldown_s: Option<u32>,
    pub max_actions_per_hour: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub signal: String,
    pub warn: Option<f64>,
    pub intervene: Option<f64>,
    pub refuse: Option<f64>,
    pub clear: Option<f64>,
    pub dwell: Option<u16>,
    #[serde(default)]
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governor {
    pub intervention_timeout_s: u32,
    pub recovery_evaluations: u16,
    pub degraded_retry_s: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    pub pubsub: Option<PubSub>,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubSub {
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    #[serde(default = "default_cpu")]
    pub cpu: String,
    #[serde(default = "default_memory")]
    pub memory: String,
    pub image: Option<String>,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            port: default_port(),
            replicas: default_replicas(),
            cpu: default_cpu(),
            memory: default_memory(),
            image: None,
        }
    }
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
