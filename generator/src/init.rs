//! `ggen init ID`: a starter spec that validates as written.
//!
//! JSON has no comments, so the starter explains itself through its
//! `description` fields; `docs/spec.md` documents every key.

use thiserror::Error;

use crate::diagnostic::Diagnostic;

/// Why no starter spec could be made.
#[derive(Debug, Error)]
pub enum InitError {
    /// The id does not match `^[a-z][a-z0-9_]{1,39}$`.
    #[error(
        "`{0}` is not a valid sku id: use 2 to 40 lowercase letters, digits or `_`, starting with a letter"
    )]
    BadId(String),
}

/// The starter text; `{id}` and `{name}` are filled in.
const STARTER: &str = r#"{
  "$schema": "./schema/sku.schema.json",
  "spec_version": 1,
  "sku": {
    "id": "{id}",
    "name": "{name}",
    "version": "0.1.0",
    "publisher": "Your team",
    "description": "What this governor protects. Replace the example signal, action and thresholds below with your own; docs/spec.md describes every key."
  },
  "tenancy": { "tenant_attribute": "tenant_id", "max_tenants": 10000 },
  "signals": [
    {
      "name": "error_rate",
      "unit": "percent",
      "min": 0,
      "max": 100,
      "description": "Example signal: share of failed requests over the last minute (higher is worse)."
    }
  ],
  "actions": [
    {
      "name": "notify",
      "adapter": "log",
      "params": { "message": "error rate is past its intervene threshold" }
    }
  ],
  "policy": {
    "default_profile": "standard",
    "profiles": {
      "standard": {
        "rules": [
          { "signal": "error_rate", "warn": 2, "intervene": 5, "refuse": 20, "clear": 1, "dwell": 2, "actions": ["notify"] }
        ],
        "cooldown_s": 300,
        "max_actions_per_hour": 6
      }
    }
  },
  "governor": { "intervention_timeout_s": 120, "recovery_evaluations": 3, "degraded_retry_s": 600 },
  "entitlement": { "required": false },
  "deploy": { "port": 8080, "replicas": 1 }
}
"#;

/// A starter spec for `id` that passes `validate::check`; rejects a bad id.
pub fn starter_spec(id: &str) -> Result<String, Diagnostic> {
    if !valid_id(id) {
        let message = InitError::BadId(id.to_owned()).to_string();
        return Err(Diagnostic::new("<init>", 1, 1, "/sku/id", message));
    }
    Ok(STARTER
        .replace("{id}", id)
        .replace("{name}", &display_name(id)))
}

/// Whether `id` matches `^[a-z][a-z0-9_]{1,39}$`.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && (2..=40).contains(&id.len())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `cost_guard` → `Cost Guard`.
fn display_name(id: &str) -> String {
    id.split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Source;
    use crate::validate;

    #[test]
    fn starter_passes_validation() {
        let text = starter_spec("queue_valve").unwrap();
        let spec = validate::check(&Source::from_text("specs/queue_valve.json", text))
            .unwrap_or_else(|all| panic!("{all:#?}"));
        assert_eq!(spec.sku.id, "queue_valve");
        assert_eq!(spec.sku.name, "Queue Valve");
    }

    #[test]
    fn bad_ids_are_rejected() {
        for id in [
            "",
            "a",
            "Cost",
            "9lives",
            "cost-guard",
            &"x".repeat(41),
            "ünï",
        ] {
            assert!(starter_spec(id).is_err(), "`{id}` accepted");
        }
        assert!(starter_spec(&"x".repeat(40)).is_ok());
        assert!(starter_spec("a_").is_ok());
    }

    #[test]
    fn display_names_are_title_cased() {
        assert_eq!(display_name("cost_guard"), "Cost Guard");
        assert_eq!(display_name("a__b2"), "A B2");
    }
}
