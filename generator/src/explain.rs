//! Human views of a model: the thresholds of every profile as Markdown tables
//! and the governor state machine as a Mermaid diagram. `ggen explain`
//! prints them; the generated README embeds the same text.

use std::fmt::Write as _;

use crate::escape::md;
use crate::model::{Model, Profile};
use crate::spec::Direction;

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn profile_heading(model: &Model, profile: &Profile) -> String {
    let mut notes = Vec::new();
    if profile.id == u16::try_from(model.default_profile).unwrap_or(u16::MAX) {
        notes.push("default".to_owned());
    }
    if let Some(parent) = &profile.extends {
        notes.push(format!("extends `{parent}`"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    format!("### Profile `{}`{notes}", profile.name)
}

/// The thresholds of every profile as Markdown: one heading and table per profile.
pub fn thresholds_markdown(model: &Model) -> String {
    let mut out = String::new();
    for (i, profile) in model.profiles.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}\n", profile_heading(model, profile));
        let budget = profile
            .max_actions_per_hour
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "Cooldown {} s; at most {budget} actions per tenant per hour.\n",
            profile.cooldown_s
        );
        if profile.rules.is_empty() {
            out.push_str("No rules: signals never escalate under this profile.\n");
            continue;
        }
        out.push_str(
            "| signal | worse when | warn | intervene | refuse | clear | dwell | actions on intervene | from |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---|---|\n");
        for rule in &profile.rules {
            let signal = &model.signals[rule.signal];
            let actions: Vec<String> = rule
                .actions
                .iter()
                .map(|a| format!("`{}`", model.actions[*a].name))
                .collect();
            let _ = writeln!(
                out,
                "| `{}` | {} {} | {} | {} | {} | {} | {} | {} | `{}` |",
                signal.name,
                match rule.direction {
                    Direction::Above => "above",
                    Direction::Below => "below",
                },
                md(&signal.unit),
                number(rule.warn),
                number(rule.intervene),
                number(rule.refuse),
                rule.clear,
                rule.dwell,
                if actions.is_empty() {
                    "–".to_owned()
                } else {
                    actions.join(", ")
                },
                rule.defined_in,
            );
        }
    }
    out
}

/// The governor state machine (DESIGN §5) with this SKU's timings, as a
/// fenced Mermaid `stateDiagram-v2` block.
pub fn fsm_mermaid(model: &Model) -> String {
    let n = model.recovery_evaluations;
    let mut out = String::from("```mermaid\nstateDiagram-v2\n");
    let mut edge = |from: &str, to: &str, label: &str| {
        let _ = writeln!(out, "    {from} --> {to}: {label}");
    };
    edge("[*]", "boot", "start");
    edge("boot", "stable", "ledger recovered");
    edge("stable", "warning", "warn, dwell met");
    edge(
        "stable",
        "intervening",
        "intervene, dwell met / dispatch actions",
    );
    edge(
        "warning",
        "intervening",
        "intervene, dwell met / dispatch actions",
    );
    edge(
        "warning",
        "warning",
        "intervene blocked by cooldown or hourly budget",
    );
    edge("intervening", "warning", "all actions confirmed");
    edge(
        "intervening",
        "degraded",
        &format!(
            "action failed or no confirmation in {} s",
            model.intervention_timeout_s
        ),
    );
    edge(
        "degraded",
        "intervening",
        &format!(
            "still breaching after {} s / dispatch again",
            model.degraded_retry_s
        ),
    );
    edge(
        "warning",
        "stable",
        &format!("{n} evaluations past clear / undo actions"),
    );
    edge(
        "degraded",
        "stable",
        &format!("{n} evaluations past clear / undo actions"),
    );
    for state in ["stable", "warning", "intervening", "degraded"] {
        edge(state, "refusing", "refuse level");
    }
    if model.entitlement_required {
        edge("stable", "refusing", "entitlement not active");
        edge("refusing", "stable", "entitlement active and below refuse");
    } else {
        edge("refusing", "stable", "below refuse");
    }
    out.push_str("```\n");
    out
}

/// What `ggen explain` prints: a title, the thresholds and the FSM diagram.
pub fn explain(model: &Model) -> String {
    format!(
        "# {} {} (`{}`, from `{}`)\n\n## Thresholds\n\n{}\n## State machine\n\n{}",
        md(&model.name),
        model.version,
        model.id,
        model.spec_path,
        thresholds_markdown(model),
        fsm_mermaid(model),
    )
}
